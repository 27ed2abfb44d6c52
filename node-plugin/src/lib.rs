//! The gluster-csi node plugin: CSI Identity and Node services that mount Gluster volumes
//! with the GlusterFS FUSE client, once per volume per node, and bind-mount them into pods.
//!
//! [`Cli`] is the command line: the plugin's flags ([`Args`], validated into [`Config`]; [`run`]
//! serves until shutdown) or the `mount-agent` subcommand ([`AgentArgs`]; [`agent::serve`]).
//!
//! Modules: [`node`] (the CSI Node service), [`context`] (the `volume_context` keys shared with
//! the controller), [`options`] (mount options), [`mountinfo`] (the mount table), [`mounter`]
//! (mount system calls under time limits), [`condition`] (whether a mount is healthy, degraded
//! or dead, and so whether it may be remounted), [`clients`] (the `glusterfs` client processes,
//! found through `/proc`), [`spawn`] (starting FUSE clients that outlive the plugin —
//! `--fuse-launcher` — and what the DaemonSet needs for it), [`agent_protocol`] (what a plugin
//! asks the mount agent and how it answers), [`agent`] (the mount agent that starts clients
//! for a plugin in a PID namespace of its own), [`command`] (running one program under a time
//! limit), [`logs`] (client log rotation and bounded tails), [`paths`] (request path checks),
//! [`records`] (which Gluster volume a CSI volume id was staged from), [`error`].

pub mod agent;
pub mod agent_protocol;
pub mod client_args;
pub mod clients;
pub mod command;
pub mod condition;
pub mod config;
pub mod context;
pub mod error;
pub mod identity;
pub mod logs;
pub mod mounter;
pub mod mountinfo;
pub mod node;
pub mod node_labels;
pub mod options;
pub mod paths;
pub mod records;
pub mod spawn;

pub use config::{AgentArgs, Args, Cli, Command, Config};

use std::future::Future;
use std::sync::Arc;

use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use gluster_csi_runtime::identity::IdentityService;
use gluster_csi_runtime::serve::serve;
use gluster_csi_runtime::socket;

/// The node plugin's configuration or start-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A flag has an unusable value.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] gluster_csi_runtime::ServeError),
}

/// Validates `args`, binds the socket and serves the Identity and Node services until
/// `shutdown` resolves.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(Config::from_args(args)?);
    let listener = socket::bind(&config.endpoint)?;
    let identity = IdentityService::new(
        config.driver_name.clone(),
        env!("CARGO_PKG_VERSION"),
        Vec::new(),
        Arc::new(identity::MountToolsReadiness::default()),
    );
    let node = node::NodeService::new(Arc::clone(&config));
    node.adopt().await;
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node));
    serve(router, listener, &config.endpoint, shutdown).await?;
    Ok(())
}
