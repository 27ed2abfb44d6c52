//! What "ready" means for the controller: its default Heketi answers `/hello`.

use csi_proto::identity::{CheckFuture, Readiness};

use crate::config::Backend;
use crate::metrics::Metrics;

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
    /// answer in time, its retries by `retry_budget` and counted in `metrics`.
    pub fn for_backend(
        backend: Option<&Backend>,
        retry_budget: std::time::Duration,
        metrics: &Metrics,
    ) -> Self {
        let timeout = std::time::Duration::from_secs(5);
        Self::new(backend.and_then(|b| {
            b.builder(timeout, timeout, retry_budget)
                .on_retry(metrics.heketi_retry_observer())
                .build()
                .ok()
        }))
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
