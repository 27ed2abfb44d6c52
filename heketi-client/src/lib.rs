//! A typed async client for the Heketi REST API.
//!
//! [`Client`] talks to Heketi (or gluster-csi's own `heketi-server`, which speaks the same
//! API) using only Heketi's documented behaviour:
//!
//! - **Auth**: a fresh HS256 JWT on every HTTP request, `/queue` polls and redirect targets
//!   included ([`auth`]). The key is a [`secrecy::SecretString`] and never appears in `Debug`
//!   output or logs.
//! - **Asynchronous operations** (volume create/expand/clone/delete, node and device changes):
//!   `202 Accepted` → poll `Location` (200 ms growing to 3 s) while `X-Pending: true` →
//!   `303 See Other` → `GET` the result, or `204` when there is none. The whole call is bounded
//!   by the operation deadline; dropping its future is safe.
//! - **Retries**: 429 and 503 are retried honouring `Retry-After` plus jitter, a bounded number
//!   of times within the deadline. Transport failures are retried for GETs only: a POST or
//!   DELETE is never sent twice. [`ClientBuilder::retry_budget`] bounds the total wait of one
//!   request (for callers that retry on their own), and [`ClientBuilder::on_retry`] reports each
//!   retry as a [`RetryEvent`] (for metrics).
//! - **Errors**: one [`Error`] type; Heketi's plain-text messages are classified here and
//!   nowhere else ([`Error::is_not_found`], [`Error::is_no_space`],
//!   [`Error::is_name_in_use`], [`Error::is_retryable`], [`Error::is_unavailable`]), and
//!   [`Error::certainly_not_done`] tells a failed change from one whose outcome is unknown.
//!
//! [`types`] mirrors Heketi's JSON; it is shared with `heketi-server`.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use heketi_client::types::{VolumeCreateRequest, VolumeDurabilityInfo};
//! use heketi_client::Client;
//! use secrecy::SecretString;
//!
//! # async fn demo() -> heketi_client::Result<()> {
//! let client = Client::builder("http://heketi.storage.svc:8080")
//!     .user("admin")
//!     .key(SecretString::from("My Secret"))
//!     .operation_deadline(Duration::from_secs(120))
//!     .build()?;
//!
//! let req = VolumeCreateRequest {
//!     size: 5,
//!     name: "csi_example".into(),
//!     durability: VolumeDurabilityInfo::replicate(3),
//!     ..Default::default()
//! };
//! let volume = match client.volume_create(&req).await {
//!     Ok(v) => v,
//!     Err(e) if e.is_no_space() => {
//!         eprintln!("the cluster is full"); // a CSI driver answers ResourceExhausted
//!         return Err(e);
//!     }
//!     Err(e) => return Err(e),
//! };
//! println!("mount -t glusterfs {} /mnt", volume.mount.glusterfs.device);
//! client.volume_delete(&volume.id).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auth;
mod backoff;
mod builder;
mod client;
mod clusters;
mod devices;
mod error;
mod nodes;
mod operations;
#[cfg(test)]
mod proptests;
mod retry;
mod topology;
mod transport;
pub mod types;
mod volumes;

pub use builder::{
    ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_OPERATION_DEADLINE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER,
};
pub use client::Client;
pub use error::{Error, MAX_MESSAGE_BYTES, Result};
pub use retry::{RetryEvent, RetryObserver, RetryReason, route_class};
