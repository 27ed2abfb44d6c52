//! Heketi's asynchronous operations: `202 Accepted` → poll the `/queue` location while
//! `X-Pending: true` → `303 See Other` → GET the result (or `204`: there is none), and the check
//! on every `Location` (it must name the same server: a token goes with the next request).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::backoff;
use crate::client::Client;
use crate::error::{Error, Result, api_error};
use crate::transport::{Body, Reply};

/// Redirects followed after an operation finished.
const MAX_REDIRECTS: usize = 5;
/// Header Heketi sets on `/queue` replies while an operation runs.
const X_PENDING: &str = "x-pending";
/// RFC 7240: a `/queue` poll asks the server to hold it up to this many seconds while the
/// operation runs (heketi-server does; Heketi ignores it and answers at once).
const PREFER: &str = "prefer";
/// RFC 7240: the server says it honoured `Prefer: wait`.
const PREFERENCE_APPLIED: &str = "preference-applied";
/// Longest a `/queue` poll asks to be held; also at most half the request timeout.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(5);

impl Reply {
    /// Whether the server says it held this `/queue` poll for the `wait` asked
    /// (`Preference-Applied: wait=…`) and it really took at least half of it; a server that
    /// claims it and answers at once is polled on the normal schedule.
    fn held_for(&self, wait: Option<Duration>, took: Duration) -> bool {
        let Some(wait) = wait else {
            return false;
        };
        let applied = self
            .headers
            .get_all(PREFERENCE_APPLIED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split([',', ';'])
                    .any(|p| p.trim().to_ascii_lowercase().starts_with("wait"))
            });
        applied && took >= wait / 2
    }

    fn is_pending(&self) -> bool {
        self.headers
            .get(X_PENDING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

impl Client {
    /// An asynchronous operation whose result is a resource (create, expand, clone, node add).
    pub(crate) async fn operation_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        self.bounded(|deadline| async move {
            match self.operation(method.clone(), path, body, deadline).await? {
                Some(r) => r.json(),
                None => Err(Error::Protocol(format!(
                    "{method} {path} finished without naming its result"
                ))),
            }
        })
        .await
    }

    /// An asynchronous operation without a result (delete, state change, device add).
    pub(crate) async fn operation_empty(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<()> {
        self.bounded(|deadline| async move {
            self.operation(method, path, body, deadline)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Start an asynchronous operation and wait for it: 202 → poll `Location` while
    /// `X-Pending` → 303 → GET the result, or 204 → `None`, or the error.
    async fn operation(
        &self,
        method: Method,
        path: &str,
        body: Body,
        deadline: Instant,
    ) -> Result<Option<Reply>> {
        let first = self
            .send(method.clone(), self.url(path)?, body.as_deref(), deadline)
            .await?;
        match first.status {
            StatusCode::ACCEPTED => {}
            s if s.is_success() || s.is_redirection() => {
                return Err(Error::Protocol(format!(
                    "{method} {path} answered {s}; 202 Accepted was expected"
                )));
            }
            s => return Err(api_error(s.as_u16(), &first.body)),
        }
        let queue = self.location(&first)?;
        tracing::debug!(%method, path, queue = queue.path(), "operation accepted");
        let wait = self.queue_wait(deadline);
        let mut prefer = HeaderMap::new();
        if let Some(w) = wait
            && let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs()))
        {
            prefer.insert(PREFER, v);
        }
        let mut polls = 0u32;
        loop {
            let asked = Instant::now();
            let r = self
                .send_with_headers(Method::GET, queue.clone(), None, deadline, &prefer)
                .await?;
            if r.is_pending() {
                if r.status != StatusCode::OK {
                    return Err(api_error(r.status.as_u16(), &r.body));
                }
                // A server that held the poll (our heketi-server) has already waited: ask
                // again at once. Heketi answers at once: wait before the next poll.
                if !r.held_for(wait, asked.elapsed()) {
                    tokio::time::sleep(backoff::poll_delay(polls)).await;
                    polls = polls.saturating_add(1);
                }
                continue;
            }
            return match r.status {
                StatusCode::SEE_OTHER => self.follow(r, deadline).await.map(Some),
                StatusCode::NO_CONTENT => Ok(None),
                // Something between us and Heketi already followed the redirect.
                StatusCode::OK => Ok(Some(r)),
                StatusCode::NOT_FOUND => Err(Error::OperationLost {
                    location: queue.path().to_owned(),
                    message: match api_error(404, &r.body) {
                        Error::Api { message, .. } => message,
                        other => other.to_string(),
                    },
                }),
                s => Err(api_error(s.as_u16(), &r.body)),
            };
        }
    }

    /// How long a `/queue` poll asks to be held: [`QUEUE_WAIT`], at most half the request
    /// timeout and what is left before `deadline`, in whole seconds; `None` below one second.
    fn queue_wait(&self, deadline: Instant) -> Option<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        let w = QUEUE_WAIT.min(self.inner.request_timeout / 2).min(left / 2);
        (w.as_secs() > 0).then(|| Duration::from_secs(w.as_secs()))
    }

    /// Follow the redirect in `r` (with a new token for the new path) to a 200.
    async fn follow(&self, mut r: Reply, deadline: Instant) -> Result<Reply> {
        for _ in 0..MAX_REDIRECTS {
            let target = self.location(&r)?;
            r = self.send(Method::GET, target, None, deadline).await?;
            match r.status {
                s if s.is_redirection() => continue,
                s if s.is_success() => return Ok(r),
                s => return Err(api_error(s.as_u16(), &r.body)),
            }
        }
        Err(Error::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects after an operation"
        )))
    }

    /// The `Location` of `r`, resolved against the base URL. A location on another server is
    /// refused: the client would otherwise hand it a token.
    fn location(&self, r: &Reply) -> Result<Url> {
        let raw = r
            .headers
            .get(LOCATION)
            .ok_or_else(|| Error::Protocol(format!("{} without a Location header", r.status)))?
            .to_str()
            .map_err(|_| Error::Protocol("Location header is not text".into()))?
            .trim();
        resolve_location(&self.inner.base, &self.inner.base_str, raw)
    }
}

/// Resolve a `Location` value against the base URL: `/queue/x` is appended to the base (which
/// may carry a path prefix); anything else is resolved the usual way and must stay on the same
/// scheme, host and port.
fn resolve_location(base: &Url, base_str: &str, raw: &str) -> Result<Url> {
    let bad = |why: &str| Error::Protocol(format!("Location {raw:?}: {why}"));
    if raw.is_empty() {
        return Err(bad("empty"));
    }
    let url = if raw.starts_with('/') && !raw.starts_with("//") {
        Url::parse(&format!("{base_str}{raw}")).map_err(|e| bad(&e.to_string()))?
    } else {
        let dir = Url::parse(&format!("{base_str}/")).map_err(|e| bad(&e.to_string()))?;
        dir.join(raw).map_err(|e| bad(&e.to_string()))?
    };
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(bad("points to another server"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(applied: Option<&str>) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(X_PENDING, HeaderValue::from_static("true"));
        if let Some(a) = applied {
            headers.insert(PREFERENCE_APPLIED, HeaderValue::from_str(a).expect("value"));
        }
        Reply {
            status: StatusCode::OK,
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn a_poll_counts_as_held_only_when_the_server_says_so_and_took_the_time() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Heketi: no Preference-Applied, wait on the schedule.
        assert!(!pending(None).held_for(Some(s(5)), s(5)));
        // heketi-server held it.
        assert!(pending(Some("wait=5")).held_for(Some(s(5)), ms(5010)));
        assert!(pending(Some("respond-async, Wait=5")).held_for(Some(s(5)), s(3)));
        // Claimed but answered at once: not trusted, or the client would spin.
        assert!(!pending(Some("wait=5")).held_for(Some(s(5)), ms(20)));
        // Nothing was asked.
        assert!(!pending(Some("wait=5")).held_for(None, s(5)));
        assert!(!pending(Some("return=minimal")).held_for(Some(s(5)), s(5)));
    }

    #[tokio::test]
    async fn the_queue_wait_fits_the_request_timeout_and_the_deadline() {
        let client = |timeout: u64| {
            Client::builder("http://127.0.0.1:1")
                .disable_auth()
                .request_timeout(Duration::from_secs(timeout))
                .build()
                .expect("client")
        };
        let far = Instant::now() + Duration::from_secs(300);
        assert_eq!(client(30).queue_wait(far), Some(QUEUE_WAIT));
        assert_eq!(client(4).queue_wait(far), Some(Duration::from_secs(2)));
        assert_eq!(client(1).queue_wait(far), None);
        let near = Instant::now() + Duration::from_secs(3);
        assert_eq!(client(30).queue_wait(near), Some(Duration::from_secs(1)));
    }

    fn base(s: &str) -> (Url, String) {
        let u = Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let b = u.as_str().trim_end_matches('/').to_owned();
        (u, b)
    }

    #[test]
    fn locations_resolve_against_the_base() {
        let cases = [
            ("http://h:8080", "/queue/ab", Some("http://h:8080/queue/ab")),
            (
                "http://h:8080/heketi/",
                "/queue/ab",
                Some("http://h:8080/heketi/queue/ab"),
            ),
            (
                "https://h",
                "https://h:443/volumes/1",
                Some("https://h/volumes/1"),
            ),
            (
                "http://h:8080",
                "volumes/1",
                Some("http://h:8080/volumes/1"),
            ),
            ("http://h:8080", "http://evil:8080/queue/ab", None),
            ("http://h:8080", "//evil/queue/ab", None),
            ("http://h:8080", "https://h:8080/queue/ab", None),
            ("http://h:8080", "http://h:9090/queue/ab", None),
            ("http://h:8080", "", None),
        ];
        for (b, loc, want) in cases {
            let (u, s) = base(b);
            let got = resolve_location(&u, &s, loc).ok().map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{b} + {loc}");
        }
    }
}
