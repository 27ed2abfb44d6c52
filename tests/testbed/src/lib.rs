//! The gluster-csi testbed: a real environment on one machine, for people and for tests.
//!
//! [`Testbed::up`] builds, as root:
//! - N Gluster hosts, each a network namespace joined to a bridge in the root namespace, with its
//!   own glusterd (working, run and log directories under the state directory) and a device
//!   directory (brick root); the hosts are peer-probed into one trusted pool;
//! - optionally heketi-server on the bridge address with auth on and the topology loaded, the
//!   controller, and the node plugin (in a pid namespace of its own, like a pod), on unix sockets.
//!
//! Names (namespaces, links), the /24 subnet of 198.18.0.0/15 and every path are derived from the
//! state directory, so testbeds with different state directories run side by side. Everything
//! made is journaled in the state directory before it is made, and [`Testbed::down`] removes it
//! from that record, also after a crash or a failed `up`.
//!
//! Integration tests use [`harness::run`] (libtest-mimic) to get one testbed per test binary.

pub mod calls;
pub mod cmd;
pub mod combined;
pub mod csi;
mod daemon;
pub mod demo;
mod down;
pub mod env;
pub mod gluster;
pub mod harness;
pub mod heketi;
pub mod host;
pub mod install;
pub mod journal;
pub mod k8s;
pub mod layout;
pub mod mounts;
pub mod net;
pub mod procs;
pub mod status;
mod testbed;

use std::path::PathBuf;

use anyhow::{Result, bail};

pub use env::TestbedEnv;
pub use layout::GlusterHost;
pub use testbed::{
    INFO_FILE, Testbed, TestbedInfo, TestbedOptions, check_prerequisites, read_info,
};

/// Environment variable naming the directory that holds the project's binaries.
pub const BIN_DIR_ENV: &str = "GLUSTER_CSI_BIN_DIR";

/// Path of the project binary `name`: in `$GLUSTER_CSI_BIN_DIR` if set, else next to the running
/// executable or in its parent directory (`target/debug/deps/x` → `target/debug`).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(d));
    } else if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
        if let Some(p) = d.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "binary `{name}` not found in {}; build it with `cargo build --workspace --bins` or \
         point {BIN_DIR_ENV} at the directory holding it",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
