//! A typed async client for the Heketi REST API.
//!
//! [`types`] mirrors Heketi's JSON; it is shared with our own `heketi-server`.

pub mod types;
