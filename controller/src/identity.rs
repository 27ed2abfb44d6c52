//! What "ready" means for the controller: its default Heketi answers `/hello`.

use std::time::Instant;

use csi_proto::identity::{CheckFuture, Readiness};
use tokio::sync::Mutex;

use crate::config::Backend;
use crate::metrics::Metrics;

/// Ready when the default backend answers `/hello`, or always when no default backend is
/// configured (every StorageClass then names its own `resturl`).
///
/// One `/hello` is in flight at a time, and probes that arrive while it runs get its answer,
/// so a burst of probes costs Heketi one request. A probe never gets an answer that was
/// complete before it arrived.
pub struct HeketiReadiness {
    client: Option<heketi_client::Client>,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl HeketiReadiness {
    /// Probes `backend` when there is one.
    pub fn new(backend: Option<heketi_client::Client>) -> Self {
        Self {
            client: backend,
            last: Mutex::new(None),
        }
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
            let arrived = Instant::now();
            let mut last = self.last.lock().await;
            if let Some((answered, answer)) = &*last
                && *answered >= arrived
            {
                return answer.clone();
            }
            let answer = client.hello().await.map(|_| ()).map_err(|e| {
                format!(
                    "default Heketi {} does not answer /hello: {e}",
                    client.base_url()
                )
            });
            *last = Some((Instant::now(), answer.clone()));
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A local HTTP server answering every request with 200 and counting them.
    async fn counting_hello_server() -> std::io::Result<(String, Arc<AtomicUsize>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            seen.fetch_add(1, Ordering::SeqCst);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if conn.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok((url, count))
    }

    fn readiness(url: &str) -> HeketiReadiness {
        let client = heketi_client::Client::builder(url)
            .disable_auth()
            .build()
            .ok();
        assert!(client.is_some(), "client for {url}");
        HeketiReadiness::new(client)
    }

    #[tokio::test]
    async fn a_burst_of_probes_shares_the_hello_in_flight() -> std::io::Result<()> {
        let (url, count) = counting_hello_server().await?;
        let r = Arc::new(readiness(&url));
        let probes: Vec<_> = (0..20)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move { r.check().await })
            })
            .collect();
        for p in probes {
            assert_eq!(p.await.ok(), Some(Ok(())));
        }
        // The first probe's /hello is in flight when the other 19 arrive (they are all ready
        // to run before its reply can be read), so they share it; one more at most.
        let hellos = count.load(Ordering::SeqCst);
        assert!(
            hellos <= 2,
            "20 concurrent probes sent {hellos} /hello requests"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_probe_after_an_answer_asks_again() -> std::io::Result<()> {
        let (url, count) = counting_hello_server().await?;
        let r = readiness(&url);
        for _ in 0..3 {
            assert_eq!(r.check().await, Ok(()));
        }
        assert_eq!(count.load(Ordering::SeqCst), 3);
        Ok(())
    }

    #[tokio::test]
    async fn without_a_default_backend_it_is_always_ready() {
        assert_eq!(HeketiReadiness::new(None).check().await, Ok(()));
    }
}
