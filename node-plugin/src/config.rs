//! Command line and validated configuration of the node plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Directory for the plugin's own files (per-volume client logs, volume records). Must be
    /// a host directory (hostPath) so that it outlives the container.
    #[arg(long, env = "STATE_DIR", default_value = "/var/lib/gluster-csi")]
    pub state_dir: PathBuf,
    /// When set, every staging and target path must lie under this directory (kubelet's root
    /// directory, usually /var/lib/kubelet).
    #[arg(long, env = "KUBELET_DIR")]
    pub kubelet_dir: Option<PathBuf>,
    /// Seconds a `mount -t glusterfs` may take before it is killed and the call fails.
    #[arg(long, env = "MOUNT_TIMEOUT", default_value_t = 60)]
    pub mount_timeout: u64,
    /// Cgroup directory (on a cgroupfs of the host) that FUSE clients are started in, so that
    /// stopping the plugin's container, which kills every process of the container's cgroup,
    /// leaves them running. Repeat it for each cgroup v1 hierarchy. Created when missing.
    #[arg(long = "fuse-cgroup", env = "FUSE_CGROUP", value_delimiter = ',')]
    pub fuse_cgroups: Vec<PathBuf>,
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
    /// Directory every staging and target path must be under, if any.
    pub kubelet_dir: Option<PathBuf>,
    /// Limit for one `mount -t glusterfs`.
    pub mount_timeout: Duration,
    /// Cgroups FUSE clients are started in (empty: the plugin's own).
    pub fuse_cgroups: Vec<PathBuf>,
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
    /// `--kubelet-dir` is not an absolute, normalised path.
    #[error("--kubelet-dir {0:?} must be an absolute path without '.' or '..' components")]
    KubeletDir(PathBuf),
    /// `--mount-timeout` is zero or absurdly long.
    #[error("--mount-timeout {0} must be between 1 and 3600 seconds")]
    MountTimeout(u64),
    /// A `--fuse-cgroup` is not an absolute path.
    #[error("--fuse-cgroup {0:?} must be an absolute path to a cgroup directory")]
    FuseCgroup(PathBuf),
}

fn is_normal_absolute(p: &Path) -> bool {
    crate::paths::is_normalised(p)
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
        if let Some(dir) = &args.kubelet_dir
            && !is_normal_absolute(dir)
        {
            return Err(ConfigError::KubeletDir(dir.clone()));
        }
        if args.mount_timeout == 0 || args.mount_timeout > 3600 {
            return Err(ConfigError::MountTimeout(args.mount_timeout));
        }
        if let Some(bad) = args.fuse_cgroups.iter().find(|c| !is_normal_absolute(c)) {
            return Err(ConfigError::FuseCgroup(bad.clone()));
        }
        Ok(Self {
            endpoint: args.common.endpoint,
            driver_name: args.common.driver_name,
            metrics_address: args.common.metrics_address,
            node_id,
            state_dir: args.state_dir,
            kubelet_dir: args.kubelet_dir,
            mount_timeout: Duration::from_secs(args.mount_timeout),
            fuse_cgroups: args.fuse_cgroups,
        })
    }
}
