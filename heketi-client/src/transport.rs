//! Sending one request to Heketi: a fresh token on every attempt, the reply read whole (up to a
//! size limit), and the retries of 429, 503 and of transport failures of GETs, within the
//! operation deadline, the attempt limit and the retry budget, each retry reported to the
//! observer.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::auth;
use crate::backoff;
use crate::client::Client;
use crate::error::{Error, MAX_MESSAGE_BYTES, Result, api_error, truncate_utf8};
use crate::retry::{RetryEvent, RetryReason, route_class};

/// Largest reply body read, in bytes.
const MAX_BODY_BYTES: usize = 64 << 20;

/// A reply, read completely.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            body: truncate_utf8(&String::from_utf8_lossy(&self.body), MAX_MESSAGE_BYTES).to_owned(),
            source,
        })
    }
}

/// What a request that is not a GET carries.
pub(crate) type Body = Option<Vec<u8>>;

impl Client {
    /// Send one request, retrying 429 and 503 (honouring `Retry-After`) and transport failures
    /// of GETs, within `deadline` and the retry budget. Each attempt carries a fresh token.
    /// Returns any reply that is not retried, whatever its status.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Reply> {
        self.send_with_headers(method, url, body, deadline, &HeaderMap::new())
            .await
    }

    /// [`Client::send`] with `extra` header fields on every attempt.
    pub(crate) async fn send_with_headers(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
        deadline: Instant,
        extra: &HeaderMap,
    ) -> Result<Reply> {
        let replayable = method == Method::GET || method == Method::HEAD;
        let mut budget = backoff::RetryBudget::new(self.inner.retry_budget);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last_attempt = attempt >= self.inner.max_attempts;
            let result = self.send_once(&method, &url, body, extra).await;
            let request_timeout = self.inner.request_timeout;
            let (err, retry_after, reason) = match result {
                Ok(r) if r.status == StatusCode::TOO_MANY_REQUESTS && !last_attempt => (
                    api_error(r.status.as_u16(), &r.body),
                    backoff::parse_retry_after(&r.headers),
                    RetryReason::TooManyRequests,
                ),
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE && !last_attempt => (
                    api_error(r.status.as_u16(), &r.body),
                    backoff::parse_retry_after(&r.headers),
                    RetryReason::ServiceUnavailable,
                ),
                Ok(r) => return Ok(r),
                Err(SendError::Http(e)) if replayable && !last_attempt => {
                    (e.into_error(request_timeout), None, RetryReason::Transport)
                }
                Err(e) => return Err(e.into_error(request_timeout)),
            };
            let wait = backoff::retry_delay(attempt, retry_after, rand::random::<f64>());
            if Instant::now() + wait >= deadline {
                // Waiting would outlast the deadline: report what the server said instead.
                return Err(err);
            }
            if !budget.try_spend(wait) {
                tracing::debug!(
                    %method,
                    path = url.path(),
                    attempt,
                    wait_ms = millis(wait),
                    budget_left_ms = budget.remaining().map_or(u64::MAX, millis),
                    error = %err,
                    "not retrying Heketi request: the wait exceeds the retry budget"
                );
                return Err(err);
            }
            if let Some(observe) = &self.inner.on_retry {
                observe(&RetryEvent {
                    method: method.clone(),
                    route: self.route_of(&url),
                    reason,
                    attempt,
                    wait,
                });
            }
            tracing::info!(
                %method,
                path = url.path(),
                attempt,
                %reason,
                wait_ms = millis(wait),
                error = %err,
                "retrying Heketi request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The route shape of `url`, read below the base URL's own path.
    fn route_of(&self, url: &Url) -> &'static str {
        let prefix = self.inner.base.path().trim_end_matches('/');
        route_class(url.path().strip_prefix(prefix).unwrap_or(url.path()))
    }

    /// One HTTP exchange, body read completely.
    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        extra: &HeaderMap,
    ) -> Result<Reply, SendError> {
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(extra.clone());
        if let Some(key) = &self.inner.key {
            let token = auth::token(
                &self.inner.user,
                key,
                method.as_str(),
                url.path(),
                auth::unix_now(),
            )
            .map_err(SendError::Other)?;
            req = req.header(AUTHORIZATION, format!("bearer {token}"));
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let mut resp = req.send().await.map_err(SendError::http)?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(SendError::http)? {
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(SendError::Other(Error::Protocol(format!(
                    "reply to {method} {} is larger than {MAX_BODY_BYTES} bytes",
                    url.path()
                ))));
            }
            buf.extend_from_slice(&chunk);
        }
        tracing::debug!(%method, path = url.path(), status = status.as_u16(), "Heketi replied");
        Ok(Reply {
            status,
            headers,
            body: buf,
        })
    }
}

/// `d` in whole milliseconds, for log fields.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why one exchange failed: the transport (may be retried for GETs) or anything else.
enum SendError {
    Http(reqwest::Error),
    Other(Error),
}

impl SendError {
    fn http(e: reqwest::Error) -> Self {
        SendError::Http(e)
    }

    fn into_error(self, request_timeout: Duration) -> Error {
        match self {
            SendError::Http(e) => e.into_error(request_timeout),
            SendError::Other(e) => e,
        }
    }
}

trait IntoError {
    fn into_error(self, request_timeout: Duration) -> Error;
}

impl IntoError for reqwest::Error {
    fn into_error(self, request_timeout: Duration) -> Error {
        if self.is_timeout() {
            Error::Timeout {
                after: request_timeout,
            }
        } else {
            Error::Transport(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ClientBuilder;

    /// A local address nothing listens on: connections to it are refused.
    fn refusing_address() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
    }

    /// A client of `base` whose retries are collected.
    fn observed(b: ClientBuilder) -> (Client, Arc<std::sync::Mutex<Vec<RetryEvent>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let c = b
            .disable_auth()
            .on_retry(move |e| {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.clone())
            })
            .build()
            .unwrap_or_else(|e| panic!("build: {e}"));
        (c, seen)
    }

    fn events(seen: &std::sync::Mutex<Vec<RetryEvent>>) -> Vec<RetryEvent> {
        seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tokio::test]
    async fn refused_gets_are_retried_within_the_budget_and_each_retry_is_reported() {
        let addr = refusing_address();
        let budget = Duration::from_secs(3);
        let (c, seen) =
            observed(ClientBuilder::new(format!("http://{addr}/heketi/")).retry_budget(budget));
        let r = c.hello().await;
        assert!(matches!(r, Err(Error::Transport(_))), "{r:?}");
        let events = events(&seen);
        // 0.5 s then 1 s (each plus jitter) fit in 3 s; 2 s more never does.
        assert!((1..=2).contains(&events.len()), "{events:?}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.method, Method::GET);
            assert_eq!(e.route, "/hello", "the base path is not part of the route");
            assert_eq!(e.reason, RetryReason::Transport);
            assert_eq!(e.attempt as usize, i + 1);
        }
        let waited: Duration = events.iter().map(|e| e.wait).sum();
        assert!(waited <= budget, "{waited:?} waited of a {budget:?} budget");
    }

    #[tokio::test]
    async fn a_zero_budget_sends_once() {
        let addr = refusing_address();
        let (c, seen) =
            observed(ClientBuilder::new(format!("http://{addr}")).retry_budget(Duration::ZERO));
        let r = c.volume_list().await;
        assert!(matches!(r, Err(Error::Transport(_))), "{r:?}");
        assert_eq!(events(&seen), []);
    }

    #[tokio::test]
    async fn without_a_budget_attempts_bound_the_retries() {
        // The library default is unchanged: no budget, retries until max_attempts.
        let addr = refusing_address();
        let (c, seen) = observed(ClientBuilder::new(format!("http://{addr}")).max_attempts(3));
        let id = "0123456789abcdef0123456789abcdef";
        let r = c.volume_info(id).await;
        assert!(matches!(r, Err(Error::Transport(_))), "{r:?}");
        let events = events(&seen);
        let shapes: Vec<(u32, &str, RetryReason)> = events
            .iter()
            .map(|e| (e.attempt, e.route, e.reason))
            .collect();
        assert_eq!(
            shapes,
            [
                (1, "/volumes/{id}", RetryReason::Transport),
                (2, "/volumes/{id}", RetryReason::Transport)
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_post_is_neither_retried_nor_reported() {
        let addr = refusing_address();
        let (c, seen) = observed(ClientBuilder::new(format!("http://{addr}")));
        let r = c
            .volume_create(&crate::types::VolumeCreateRequest {
                size: 1,
                ..Default::default()
            })
            .await;
        assert!(matches!(r, Err(Error::Transport(_))), "{r:?}");
        assert_eq!(events(&seen), []);
    }
}
