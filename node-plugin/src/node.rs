//! The CSI Node service.

use std::sync::Arc;

use csi_proto::v1::node_server::Node;

use crate::Config;

/// The Node service. RPCs not implemented yet answer UNIMPLEMENTED.
pub struct NodeService {
    #[allow(dead_code)]
    config: Arc<Config>,
}

impl NodeService {
    /// A node service using `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }
}

#[tonic::async_trait]
impl Node for NodeService {}
