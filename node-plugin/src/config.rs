//! Command line and validated configuration of the node plugin and of its mount agent.
//!
//! `gluster-csi-node [FLAGS]` serves the CSI Identity and Node services ([`Args`]);
//! `gluster-csi-node mount-agent --socket PATH` runs the mount agent ([`AgentArgs`],
//! [`crate::agent`]) instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use gluster_csi_runtime::args::CommonArgs;
use gluster_csi_runtime::logging::LogFormat;
use gluster_csi_runtime::socket::Endpoint;

use crate::agent::AgentConfig;
use crate::spawn::FuseLauncher;

/// The whole command line: the node plugin's flags, or a subcommand.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "gluster-csi-node",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Something else to run instead of the node plugin.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The node plugin's flags (used when no subcommand is given).
    #[command(flatten)]
    pub plugin: Args,
}

/// Subcommands of `gluster-csi-node`.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Run the mount agent: start GlusterFS FUSE clients on behalf of node plugins that run in
    /// a PID namespace of their own (`--fuse-launcher agent:unix://PATH`). Run it on the host,
    /// outside the plugin's PID namespace and cgroup.
    MountAgent(AgentArgs),
}

/// Command line of `gluster-csi-node mount-agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Unix socket to listen on (created with mode 0600; a stale socket is replaced).
    #[arg(long, env = "MOUNT_AGENT_SOCKET")]
    pub socket: PathBuf,
    /// Seconds one `mount -t glusterfs` may take before it is killed.
    #[arg(long, env = "MOUNT_TIMEOUT", default_value_t = 60)]
    pub mount_timeout: u64,
    /// When set, every mount target must lie under this directory (kubelet's root directory).
    #[arg(long, env = "KUBELET_DIR")]
    pub kubelet_dir: Option<PathBuf>,
    /// Log line format; the level is set with RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

impl AgentArgs {
    /// Validates the agent's command line.
    pub fn config(self) -> Result<AgentConfig, ConfigError> {
        if !is_normal_absolute(&self.socket) || self.socket == Path::new("/") {
            return Err(ConfigError::AgentSocket(self.socket));
        }
        if let Some(dir) = &self.kubelet_dir
            && !is_normal_absolute(dir)
        {
            return Err(ConfigError::KubeletDir(dir.clone()));
        }
        check_mount_timeout(self.mount_timeout)?;
        Ok(AgentConfig {
            socket: self.socket,
            mount_timeout: Duration::from_secs(self.mount_timeout),
            kubelet_dir: self.kubelet_dir,
            mount_program: PathBuf::from("mount"),
        })
    }
}

fn check_mount_timeout(secs: u64) -> Result<(), ConfigError> {
    if secs == 0 || secs > 3600 {
        Err(ConfigError::MountTimeout(secs))
    } else {
        Ok(())
    }
}

/// Flags of the node plugin. Every flag has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
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
    /// Applies to `--fuse-launcher direct` only.
    #[arg(long = "fuse-cgroup", env = "FUSE_CGROUP", value_delimiter = ',')]
    pub fuse_cgroups: Vec<PathBuf>,
    /// Who starts the FUSE clients: `direct` (the plugin; for hostPID DaemonSets, with
    /// --fuse-cgroup), `systemd` (`systemd-run --scope` on the host's systemd; needs hostPID,
    /// the host's /run/systemd and /sys/fs/cgroup), or `agent:unix:///path/mount-agent.sock` (a
    /// `gluster-csi-node mount-agent` on the host; for plugins in a PID namespace of their own).
    #[arg(long, env = "FUSE_LAUNCHER", default_value = "direct")]
    pub fuse_launcher: FuseLauncher,
    /// Where this node is, as KEY=VALUE (repeat it, or comma-separate in TOPOLOGY), e.g.
    /// `--topology zone=east`: reported to Kubernetes under `topology.gluster.heketi.csi/KEY`,
    /// so that volumes of a backend placed in that zone are scheduled onto this node.
    #[arg(long, env = "TOPOLOGY", value_delimiter = ',')]
    pub topology: Vec<String>,
    /// Where this node is, read from its Kubernetes labels: KEY=NODE_LABEL (repeat it, or
    /// comma-separate in TOPOLOGY_FROM_NODE_LABELS), e.g.
    /// `--topology-from-node-label zone=topology.kubernetes.io/zone` reports that label's value
    /// under `topology.gluster.heketi.csi/zone`. The Node is read once, at the first
    /// NodeGetInfo; the plugin needs `get` on nodes.
    #[arg(long, env = "TOPOLOGY_FROM_NODE_LABELS", value_delimiter = ',')]
    pub topology_from_node_label: Vec<String>,
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
    /// Who starts the FUSE clients.
    pub fuse_launcher: FuseLauncher,
    /// This node's topology segment (empty: none reported).
    pub topology: gluster_csi_runtime::topology::Segment,
    /// Topology keys whose values come from the node's labels.
    pub topology_from_node_labels: crate::node_labels::LabelMap,
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
    /// `--fuse-cgroup` with a launcher that does not use it.
    #[error("--fuse-cgroup applies to --fuse-launcher direct only, not {0}")]
    FuseCgroupLauncher(String),
    /// A `--topology` or `--topology-from-node-label` item is unusable; the message says which
    /// and why.
    #[error("{0}")]
    Topology(String),
    /// The mount agent's `--socket` is not an absolute path.
    #[error("--socket {0:?} must be an absolute, normalised path")]
    AgentSocket(PathBuf),
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
        check_mount_timeout(args.mount_timeout)?;
        if let Some(bad) = args.fuse_cgroups.iter().find(|c| !is_normal_absolute(c)) {
            return Err(ConfigError::FuseCgroup(bad.clone()));
        }
        if !args.fuse_cgroups.is_empty() && args.fuse_launcher != FuseLauncher::Direct {
            return Err(ConfigError::FuseCgroupLauncher(
                args.fuse_launcher.to_string(),
            ));
        }
        let topology = gluster_csi_runtime::topology::parse_segment(&args.topology, "--topology")
            .map_err(ConfigError::Topology)?;
        let topology_from_node_labels =
            crate::node_labels::LabelMap::parse(&args.topology_from_node_label)
                .map_err(ConfigError::Topology)?;
        if let Some(key) = topology_from_node_labels
            .keys()
            .find(|k| topology.contains_key(*k))
        {
            return Err(ConfigError::Topology(format!(
                "{key} is given by both --topology and --topology-from-node-label: keep one"
            )));
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
            fuse_launcher: args.fuse_launcher,
            topology,
            topology_from_node_labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gluster-csi-node").chain(argv.iter().copied()))
    }

    #[test]
    fn the_plugin_is_the_default_and_mount_agent_a_subcommand() {
        let cli = parse(&["--node-id", "n1", "--state-dir", "/s"]).expect("plugin flags");
        assert!(cli.command.is_none());
        let config = Config::from_args(cli.plugin).expect("valid");
        assert_eq!(config.fuse_launcher, FuseLauncher::Direct);

        let cli = parse(&["mount-agent", "--socket", "/run/gc/agent.sock"]).expect("agent");
        let Some(Command::MountAgent(agent)) = cli.command else {
            panic!("no subcommand: {cli:?}");
        };
        let config = agent.config().expect("valid");
        assert_eq!(config.socket, Path::new("/run/gc/agent.sock"));
        assert_eq!(config.mount_timeout, Duration::from_secs(60));

        assert!(parse(&["--node-id", "n1", "mount-agent", "--socket", "/a"]).is_err());
        assert!(parse(&["mount-agent"]).is_err(), "--socket is required");
    }

    #[test]
    fn launchers_parse_and_fuse_cgroup_needs_direct() {
        let launcher = |v: &str| {
            parse(&["--node-id", "n", "--fuse-launcher", v]).map(|c| c.plugin.fuse_launcher)
        };
        assert_eq!(launcher("direct").ok(), Some(FuseLauncher::Direct));
        assert_eq!(launcher("systemd").ok(), Some(FuseLauncher::Systemd));
        assert_eq!(
            launcher("agent:unix:///run/gc/a.sock").ok(),
            Some(FuseLauncher::Agent(PathBuf::from("/run/gc/a.sock")))
        );
        for bad in [
            "",
            "agent",
            "agent:/run/a.sock",
            "agent:unix://rel/a",
            "agent:unix:///a/../b",
            "agent:unix:///",
            "nsenter",
        ] {
            assert!(launcher(bad).is_err(), "{bad:?} accepted");
        }
        let cli = parse(&[
            "--node-id",
            "n",
            "--fuse-launcher",
            "systemd",
            "--fuse-cgroup",
            "/sys/fs/cgroup/x",
        ])
        .expect("parses");
        assert!(matches!(
            Config::from_args(cli.plugin),
            Err(ConfigError::FuseCgroupLauncher(_))
        ));
        let bad_socket = AgentArgs {
            socket: PathBuf::from("agent.sock"),
            mount_timeout: 60,
            kubelet_dir: None,
            log_format: LogFormat::Plain,
        };
        assert!(matches!(
            bad_socket.config(),
            Err(ConfigError::AgentSocket(_))
        ));
    }
}
