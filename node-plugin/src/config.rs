//! Command line and validated configuration of the node plugin.

use std::path::PathBuf;

use clap::Parser;
use csi_proto::serve::{CommonArgs, Endpoint};

/// Command line of `gluster-csi-node`. Every flag has an environment fallback.
#[derive(Clone, Debug, Parser)]
#[command(name = "gluster-csi-node", version, about)]
pub struct Args {
    /// Flags shared with the controller.
    #[command(flatten)]
    pub common: CommonArgs,
    /// This node's id as reported to Kubernetes (usually the node name); the host name when unset.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Directory for the plugin's own files (per-volume client logs).
    #[arg(long, env = "STATE_DIR", default_value = "/var/lib/gluster-csi")]
    pub state_dir: PathBuf,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Socket to serve on.
    pub endpoint: Endpoint,
    /// CSI driver name.
    pub driver_name: String,
    /// Metrics address, if any.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// This node's id.
    pub node_id: String,
    /// The plugin's own directory.
    pub state_dir: PathBuf,
}

/// A flag with an unusable value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `--node-id` and no host name to fall back on.
    #[error(
        "--node-id is not set and the host name cannot be read ({0}); set --node-id or NODE_ID"
    )]
    NodeId(String),
    /// `--node-id` empty or too long.
    #[error("--node-id {0:?} must be 1 to 128 bytes long")]
    NodeIdLength(String),
    /// `--state-dir` is not absolute.
    #[error("--state-dir {0:?} must be an absolute path")]
    StateDir(PathBuf),
}

impl Config {
    /// Validates the command line.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let node_id = match args.node_id {
            Some(id) => id,
            None => nix::unistd::gethostname()
                .map_err(|e| ConfigError::NodeId(e.to_string()))?
                .to_string_lossy()
                .into_owned(),
        };
        if node_id.is_empty() || node_id.len() > 128 {
            return Err(ConfigError::NodeIdLength(node_id));
        }
        if !args.state_dir.is_absolute() {
            return Err(ConfigError::StateDir(args.state_dir));
        }
        Ok(Self {
            endpoint: args.common.endpoint,
            driver_name: args.common.driver_name,
            metrics_address: args.common.metrics_address,
            node_id,
            state_dir: args.state_dir,
        })
    }
}
