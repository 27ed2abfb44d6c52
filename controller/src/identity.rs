//! What "ready" means for the controller: the process serves.
//!
//! The livenessprobe sidecar turns a not-ready `Probe` into a failed liveness check, and the
//! kubelet restarts the container. That is right only for faults a restart repairs. An
//! unreachable Heketi is not one: the controller keeps serving (calls that need Heketi answer
//! UNAVAILABLE and the sidecars retry them), and restarts would add CrashLoopBackOff delays to
//! the outage. So `Probe` is ready whenever it is answered at all, and Heketi's reachability is
//! reported by [`crate::health`] (a metric and a log line on change) instead.

use gluster_csi_runtime::identity::{CheckFuture, Readiness};

/// Always ready: answering `Probe` is the proof that the process serves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serving;

impl Readiness for Serving {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_without_asking_any_backend() {
        assert_eq!(Serving.check().await, Ok(()));
    }
}
