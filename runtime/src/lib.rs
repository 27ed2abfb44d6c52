//! The daemon plumbing the gluster-csi binaries share, kept apart from the CSI bindings
//! (`csi-proto`) so that a daemon that is not a CSI plugin can use it without building the CSI
//! schema, tonic or prost.
//!
//! Always available (heketi-server uses logging, shutdown and command):
//! - [`logging`]: `--log-format plain|json` ([`logging::LogFormat`]) and the `tracing` set-up.
//! - [`shutdown`]: the SIGTERM/SIGINT future; a second signal exits at once.
//! - [`socket`]: the `unix:///path` endpoint ([`socket::Endpoint`]) and binding its socket.
//! - [`locks`]: per-volume operation guards that refuse instead of queueing.
//! - [`command`]: running another program (argv, time limit, process group, capped output).
//! - [`ServeError`]: the crate's error.
//!
//! With feature `csi` (the controller, the node plugin, the testbed):
//! - `serve`: serving a tonic router on the socket until shutdown, with a bounded grace period
//!   for in-flight calls.
//! - `identity`: the CSI Identity service.
//! - `authority`: accepting clients whatever HTTP/2 `:authority` they send (grpcio sends the
//!   socket path), which the HTTP/2 server would otherwise refuse.
//! - `args`: the flags every plugin binary takes (`CommonArgs`) and the driver name rules.
//! - `topology`: the driver's topology keys (`topology.gluster.heketi.csi/…`) and segments.
//! - `OperationLocks::lock_or_aborted`: a held key as the CSI `Aborted` status.
//!
//! With feature `test-support` (implies `csi`): `testing`, running a plugin binary as a child
//! process and writing a gRPC call frame by frame (`raw_unary`).

#[cfg(feature = "csi")]
pub mod args;
#[cfg(feature = "csi")]
pub mod authority;
pub mod command;
mod error;
#[cfg(feature = "csi")]
pub mod identity;
pub mod locks;
pub mod logging;
#[cfg(feature = "csi")]
pub mod serve;
pub mod shutdown;
pub mod socket;
#[cfg(feature = "test-support")]
pub mod testing;
#[cfg(feature = "csi")]
pub mod topology;

pub use error::ServeError;
