//! The CSI Controller service.

use std::sync::Arc;

use csi_proto::v1::controller_server::Controller;

use crate::Config;

/// The Controller service. RPCs not implemented yet answer UNIMPLEMENTED.
pub struct ControllerService {
    #[allow(dead_code)]
    config: Arc<Config>,
}

impl ControllerService {
    /// A controller using `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {}
