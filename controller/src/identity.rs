//! What "ready" means for the controller: its default Heketi answers `/hello`.

use csi_proto::identity::{CheckFuture, Readiness};

use crate::config::Backend;

/// Ready when the default backend answers `/hello`, or always when no default backend is
/// configured (every StorageClass then names its own `resturl`).
pub struct HeketiReadiness {
    client: Option<heketi_client::Client>,
}

impl HeketiReadiness {
    /// Probes `backend` when there is one.
    pub fn new(backend: Option<heketi_client::Client>) -> Self {
        Self { client: backend }
    }

    /// Probes `backend`, each probe bounded by a few seconds so the liveness sidecar gets an
    /// answer in time.
    pub fn for_backend(backend: Option<&Backend>) -> Self {
        let timeout = std::time::Duration::from_secs(5);
        Self::new(backend.and_then(|b| b.client_with(timeout, timeout).ok()))
    }
}

impl Readiness for HeketiReadiness {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let Some(client) = &self.client else {
                return Ok(());
            };
            client.hello().await.map(|_| ()).map_err(|e| {
                format!(
                    "default Heketi {} does not answer /hello: {e}",
                    client.base_url()
                )
            })
        })
    }
}
