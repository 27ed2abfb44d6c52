//! Whether each Heketi the controller uses answers: the gauge
//! `gluster_csi_controller_heketi_up{backend="<url>"}` and one log line whenever that changes.
//!
//! Liveness does not follow it ([`crate::identity`]). A controller whose Heketi is down still
//! does its job: every call that needs Heketi answers UNAVAILABLE within the retry budget and
//! the sidecars retry it; restarting the controller would not bring Heketi back, and the
//! restart backoff would only delay the first create once it is back.
//!
//! A task checks every watched backend every [`CHECK_EVERY`] with `GET /hello`, which Heketi
//! answers without a token, bounded by [`CHECK_TIMEOUT`] and never retried. No CSI call waits
//! for a check. The default backend is watched from the start; any other Heketi from the first
//! call that names it (a class's `resturl`, a volume id). The checks send no credentials, so a
//! URL taken from a volume id learns nothing from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;

use crate::metrics::Metrics;

/// Time between two checks of a backend.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for one `/hello`; no answer by then counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

struct Watched {
    /// A client without credentials, bounded by [`CHECK_TIMEOUT`], without retries.
    client: heketi_client::Client,
    /// The last answer; `None` before the first check.
    up: Option<bool>,
}

/// The backends watched and what their last check said.
pub struct HeketiHealth {
    metrics: Arc<Metrics>,
    watched: Mutex<BTreeMap<String, Watched>>,
}

impl HeketiHealth {
    /// Nothing watched yet; results go to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            watched: Mutex::default(),
        }
    }

    /// Checks `url` from the next round on; nothing happens when it is watched already or is
    /// not a usable Heketi URL (a call naming it fails on its own).
    pub fn watch(&self, url: &str) {
        self.watch_with_ca(url, None);
    }

    /// [`Self::watch`] for an `https://` backend with its own CA certificates (PEM).
    pub fn watch_with_ca(&self, url: &str, ca: Option<&[u8]>) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if watched.contains_key(url) {
            return;
        }
        let mut builder = heketi_client::ClientBuilder::new(url);
        if let Some(ca) = ca {
            builder = builder.ca_pem(ca.to_vec());
        }
        let client = builder
            .disable_auth()
            .request_timeout(CHECK_TIMEOUT)
            .operation_deadline(CHECK_TIMEOUT)
            .retry_budget(Duration::ZERO)
            .build();
        match client {
            Ok(client) => {
                watched.insert(url.to_owned(), Watched { client, up: None });
            }
            Err(e) => tracing::debug!(backend = url, error = %e, "not watched"),
        }
    }

    /// The URLs watched.
    pub fn watched(&self) -> BTreeSet<String> {
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.keys().cloned().collect()
    }

    /// What the last check of `url` said; `None` before the first or for an unwatched URL.
    pub fn is_up(&self, url: &str) -> Option<bool> {
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.get(url).and_then(|w| w.up)
    }

    /// Records one check of `url`: sets the gauge, and logs when the answer differs from the
    /// previous one (the first answer counts as a change). Returns whether it logged.
    pub fn record(&self, url: &str, outcome: Result<(), String>) -> bool {
        let up = outcome.is_ok();
        let before = {
            let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(w) = watched.get_mut(url) else {
                return false;
            };
            w.up.replace(up)
        };
        self.metrics.set_heketi_up(url, up);
        match (before, outcome) {
            (Some(b), _) if b == up => return false,
            (None, Ok(())) => tracing::info!(backend = url, "Heketi answers"),
            (Some(_), Ok(())) => tracing::info!(backend = url, "Heketi answers again"),
            (None, Err(reason)) => {
                tracing::warn!(backend = url, %reason, "Heketi does not answer");
            }
            (Some(_), Err(reason)) => {
                tracing::warn!(backend = url, %reason, "Heketi stopped answering");
            }
        }
        true
    }

    /// Checks every watched backend once, side by side, and records the answers.
    pub async fn check_all(&self) {
        let clients: Vec<(String, heketi_client::Client)> = {
            let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched
                .iter()
                .map(|(url, w)| (url.clone(), w.client.clone()))
                .collect()
        };
        let checks = clients.into_iter().map(|(url, client)| async move {
            let outcome = client.hello().await.map(|_| ()).map_err(|e| e.to_string());
            (url, outcome)
        });
        for (url, outcome) in join_all(checks).await {
            let _logged = self.record(&url, outcome);
        }
    }

    /// Checks at once, then every [`CHECK_EVERY`], until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                this.check_all().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A local HTTP server on `addr` answering each connection's first request with 200 and
    /// closing it (so no kept-alive connection outlives the server); aborting the task closes
    /// the listener.
    async fn hello_server(addr: &str) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let reply = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\
                            content-length: 5\r\n\r\nHello";
                        let _ = conn.write_all(reply).await;
                        break;
                    }
                }
            }
        });
        Ok((url, task))
    }

    /// A URL on which nothing listens.
    fn refused_url() -> std::io::Result<String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(format!("http://{}", l.local_addr()?))
    }

    fn gauge(m: &Metrics, url: &str) -> Option<String> {
        let series = format!(r#"gluster_csi_controller_heketi_up{{backend="{url}"}} "#);
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(&series).map(str::to_owned))
    }

    #[tokio::test]
    async fn checks_set_the_gauge_per_backend() -> std::io::Result<()> {
        let (up_url, _server) = hello_server("127.0.0.1:0").await?;
        let down_url = refused_url()?;
        let m = Arc::new(Metrics::new());
        let h = HeketiHealth::new(Arc::clone(&m));
        h.watch(&up_url);
        h.watch(&down_url);
        h.watch(&up_url);
        h.watch("not a url");
        assert_eq!(
            h.watched(),
            BTreeSet::from([up_url.clone(), down_url.clone()])
        );
        assert_eq!(gauge(&m, &up_url), None, "no value before the first check");
        let took = std::time::Instant::now();
        h.check_all().await;
        assert!(took.elapsed() < CHECK_TIMEOUT, "{:?}", took.elapsed());
        assert_eq!(h.is_up(&up_url), Some(true));
        assert_eq!(h.is_up(&down_url), Some(false));
        assert_eq!(gauge(&m, &up_url).as_deref(), Some("1"));
        assert_eq!(gauge(&m, &down_url).as_deref(), Some("0"));
        Ok(())
    }

    #[tokio::test]
    async fn a_backend_that_goes_and_returns_is_seen_at_the_next_checks() -> std::io::Result<()> {
        let (url, server) = hello_server("127.0.0.1:0").await?;
        let addr = url.trim_start_matches("http://").to_owned();
        let m = Arc::new(Metrics::new());
        let h = HeketiHealth::new(Arc::clone(&m));
        h.watch(&url);
        h.check_all().await;
        assert_eq!(gauge(&m, &url).as_deref(), Some("1"));
        server.abort();
        let _ = server.await;
        h.check_all().await;
        assert_eq!(gauge(&m, &url).as_deref(), Some("0"));
        let (_, _again) = hello_server(&addr).await?;
        h.check_all().await;
        assert_eq!(gauge(&m, &url).as_deref(), Some("1"));
        Ok(())
    }

    #[test]
    fn only_changes_are_logged() {
        let m = Arc::new(Metrics::new());
        let h = HeketiHealth::new(Arc::clone(&m));
        let url = "http://127.0.0.1:9";
        h.watch(url);
        let refused = || Err("refused".to_owned());
        for (outcome, logged, value) in [
            (Ok(()), true, "1"),
            (Ok(()), false, "1"),
            (refused(), true, "0"),
            (refused(), false, "0"),
            (refused(), false, "0"),
            (Ok(()), true, "1"),
        ] {
            let up = outcome.is_ok();
            assert_eq!(h.record(url, outcome), logged, "up={up}");
            assert_eq!(h.is_up(url), Some(up));
            assert_eq!(gauge(&m, url).as_deref(), Some(value));
        }
        assert!(!h.record("http://unwatched:1", Ok(())));
        assert_eq!(gauge(&m, "http://unwatched:1"), None);
    }
}
