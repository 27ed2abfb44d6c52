//! The CSI Identity service, shared by the controller and the node plugin (feature `csi`).
//!
//! Both binaries answer with the same driver name and version; they differ in the capabilities
//! they advertise and in what "ready" means, which each supplies through [`Readiness`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use csi_proto::v1::identity_server::Identity;
use csi_proto::v1::plugin_capability::{self, service, volume_expansion};
use csi_proto::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};

/// Boxed future returned by [`Readiness::check`].
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Whether the process can do its job right now.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok(())` when ready, otherwise the reason, which is logged and returned by `Probe`.
    fn check(&self) -> CheckFuture<'_>;
}

/// A plugin capability advertised by `GetPluginCapabilities`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// The plugin serves the Controller service.
    ControllerService,
    /// Volumes can be expanded while in use.
    OnlineVolumeExpansion,
    /// Volumes may be reachable from some nodes only (`accessible_topology`).
    VolumeAccessibilityConstraints,
}

impl Capability {
    fn to_proto(self) -> PluginCapability {
        let kind = match self {
            Self::ControllerService => {
                plugin_capability::Type::Service(plugin_capability::Service {
                    r#type: service::Type::ControllerService as i32,
                })
            }
            Self::VolumeAccessibilityConstraints => {
                plugin_capability::Type::Service(plugin_capability::Service {
                    r#type: service::Type::VolumeAccessibilityConstraints as i32,
                })
            }
            Self::OnlineVolumeExpansion => {
                plugin_capability::Type::VolumeExpansion(plugin_capability::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })
            }
        };
        PluginCapability { r#type: Some(kind) }
    }
}

/// The Identity service.
pub struct IdentityService {
    name: String,
    version: String,
    capabilities: Vec<Capability>,
    readiness: Arc<dyn Readiness>,
}

impl IdentityService {
    /// An Identity service answering with `name`/`version`, advertising `capabilities`, and
    /// probing with `readiness`.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        capabilities: Vec<Capability>,
        readiness: Arc<dyn Readiness>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            capabilities,
            readiness,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.version.clone(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: self.capabilities.iter().map(|c| c.to_proto()).collect(),
        }))
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let ready = match self.readiness.check().await {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(%reason, "not ready");
                false
            }
        };
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
