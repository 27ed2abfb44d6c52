//! The gluster-csi controller: CSI Identity and Controller services that turn StorageClass
//! parameters into Heketi volumes.
//!
//! [`Args`] is the command line, [`Config`] its validated form, [`run`] serves until shutdown.

pub mod backend;
pub mod backends_file;
pub mod config;
pub mod controller;
pub mod error;
pub mod gid;
pub mod health;
pub mod identity;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod names;
pub mod paging;
pub mod params;
pub mod sizes;
pub mod snapshot_id;
pub mod volume_id;

pub use config::{Args, Config};

use std::future::Future;
use std::sync::Arc;

use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use gluster_csi_runtime::identity::{Capability, IdentityService};
use gluster_csi_runtime::serve::serve;
use gluster_csi_runtime::socket;

/// The controller's own configuration or start-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A flag has an unusable value.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] gluster_csi_runtime::ServeError),
    /// `--metrics-address` cannot be bound.
    #[error("--metrics-address {address}: {source}")]
    Metrics {
        /// The address given.
        address: std::net::SocketAddr,
        /// Why it cannot be bound.
        source: std::io::Error,
    },
}

/// The plugin capabilities to advertise. VOLUME_ACCESSIBILITY_CONSTRAINTS only when the
/// backends file places a backend somewhere (`topology:`): with it, external-provisioner
/// (Topology on by default since v5) refuses every claim of a delayed-binding class whose node
/// reports no topology ("no available topology found"), which is every node of an install
/// without zones. The provisioner reads the capabilities when it starts, so placing the first
/// backend takes a restart of the controller pod (docs/multiple-sites.md).
pub fn capabilities(config: &Config) -> Vec<Capability> {
    let mut caps = vec![
        Capability::ControllerService,
        Capability::OnlineVolumeExpansion,
    ];
    if config.backends.iter().any(|b| !b.topology.is_empty()) {
        caps.push(Capability::VolumeAccessibilityConstraints);
    }
    caps
}

/// Validates `args`, binds the socket and serves the Identity and Controller services until
/// `shutdown` resolves.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let annotate_gid = args.gid_annotator.annotate_gid;
    let config = Arc::new(Config::from_args(args)?);
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(address) = config.metrics_address {
        metrics::serve(address, Arc::clone(&metrics))
            .await
            .map_err(|source| StartError::Metrics { address, source })?;
    }
    let listener = socket::bind(&config.endpoint)?;
    let identity = IdentityService::new(
        config.driver_name.clone(),
        env!("CARGO_PKG_VERSION"),
        capabilities(&config),
        Arc::new(identity::Serving),
    );
    let health = Arc::new(health::HeketiHealth::new(Arc::clone(&metrics)));
    for backend in &config.backends {
        health.watch_with_ca(&backend.url, backend.ca.as_deref());
    }
    let checks = health.spawn();
    let controller =
        controller::ControllerService::with_parts(Arc::clone(&config), metrics, health);
    let watcher = config
        .backends_file
        .clone()
        .map(|file| controller.watch_backends_file(file));
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    // Runs beside the CSI services; the Kubernetes client is made on its first use.
    let annotator = annotate_gid.then(|| {
        crate::kube::gid_annotator::spawn(
            crate::kube::LazyClient::infer(),
            config.driver_name.clone(),
        )
    });
    let served = serve(router, listener, &config.endpoint, shutdown).await;
    if let Some(task) = annotator {
        task.abort();
    }
    checks.abort();
    if let Some(task) = watcher {
        task.abort();
    }
    served?;
    Ok(())
}
