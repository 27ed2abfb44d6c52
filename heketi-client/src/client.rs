//! [`Client`]: the handle every call goes through, its accessors, and the synchronous calls (one
//! request, one answer) the per-resource modules are built on. How a client is configured lives
//! in `builder.rs`, how one request is signed, sent and retried in `transport.rs`, and how an
//! asynchronous operation is followed to its end in `operations.rs`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::builder::ClientBuilder;
use crate::error::{Error, Result, api_error};
use crate::retry::RetryObserver;
use crate::transport::{Body, Reply};

/// What the clones of a [`Client`] share: the connection pool and the settings of requests.
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    /// `base` without a trailing slash; paths are appended to it.
    pub(crate) base_str: String,
    pub(crate) user: String,
    /// `None` when auth is off.
    pub(crate) key: Option<SecretString>,
    pub(crate) request_timeout: Duration,
    pub(crate) max_attempts: u32,
    /// `None`: no limit on the waits of one request besides the attempts and the deadline.
    pub(crate) retry_budget: Option<Duration>,
    pub(crate) on_retry: Option<RetryObserver>,
}

/// A Heketi client. Cheap to clone: clones share one connection pool.
///
/// Every call is bounded by the operation deadline and is safe to cancel by dropping its
/// future: the client starts no background task and holds no lock across an `.await`.
/// A cancelled asynchronous operation keeps running on the server; read the resource again to
/// learn its outcome.
///
/// # Example
/// ```no_run
/// # async fn demo() -> heketi_client::Result<()> {
/// let client = heketi_client::Client::builder("http://heketi:8080")
///     .key(secrecy::SecretString::from("secret"))
///     .build()?;
/// for id in client.volume_list().await?.volumes {
///     let v = client.volume_info(&id).await?;
///     println!("{} {} GiB {}", v.name, v.size, v.mount.glusterfs.device);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) deadline: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_str)
            .field("user", &self.inner.user)
            .field("auth", &self.inner.key.is_some())
            .field("request_timeout", &self.inner.request_timeout)
            .field("operation_deadline", &self.deadline)
            .field("max_attempts", &self.inner.max_attempts)
            .field("retry_budget", &self.inner.retry_budget)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Shorthand for [`ClientBuilder::new`].
    ///
    /// # Example
    /// ```no_run
    /// let client = heketi_client::Client::builder("http://heketi:8080").disable_auth().build()?;
    /// # Ok::<(), heketi_client::Error>(())
    /// ```
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// A client sharing this one's connections and settings but with another operation
    /// deadline, e.g. the deadline of the gRPC call being served.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let quick = client.with_operation_deadline(std::time::Duration::from_secs(10));
    /// quick.hello().await?;
    /// # Ok(()) }
    /// ```
    pub fn with_operation_deadline(&self, deadline: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            deadline,
        }
    }

    /// The base URL, without a trailing slash.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(client: heketi_client::Client) {
    /// println!("talking to {}", client.base_url());
    /// # }
    /// ```
    pub fn base_url(&self) -> &str {
        &self.inner.base_str
    }

    /// The Heketi user tokens are issued for.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(client: heketi_client::Client) {
    /// println!("acting as {}", client.user());
    /// # }
    /// ```
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// The operation deadline of this client.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(client: heketi_client::Client) {
    /// println!("calls give up after {:?}", client.operation_deadline());
    /// # }
    /// ```
    pub fn operation_deadline(&self) -> Duration {
        self.deadline
    }

    /// `GET /hello`: check that Heketi answers. Returns its greeting.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// println!("{}", client.hello().await?);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn hello(&self) -> Result<String> {
        self.bounded(|deadline| async move {
            let r = self
                .send(Method::GET, self.url("/hello")?, None, deadline)
                .await?;
            if !r.status.is_success() {
                return Err(api_error(r.status.as_u16(), &r.body));
            }
            Ok(String::from_utf8_lossy(&r.body).trim().to_owned())
        })
        .await
    }

    // ---- building blocks used by the per-resource modules ----

    /// Run `f` under the operation deadline.
    pub(crate) async fn bounded<T, F>(&self, f: impl FnOnce(Instant) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.deadline;
        match tokio::time::timeout_at(deadline, f(deadline)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                after: self.deadline,
            }),
        }
    }

    /// `base` + `path` (`path` starts with `/`).
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        Url::parse(&format!("{}{path}", self.inner.base_str))
            .map_err(|e| Error::Config(format!("cannot form a URL for {path:?}: {e}")))
    }

    /// Serialize a request body.
    pub(crate) fn body<T: Serialize>(value: &T) -> Result<Body> {
        serde_json::to_vec(value)
            .map(Some)
            .map_err(|e| Error::Config(format!("cannot encode the request: {e}")))
    }

    /// A synchronous call answered with JSON.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        self.bounded(|deadline| async move {
            let r = self.call(method, path, body, deadline).await?;
            r.json()
        })
        .await
    }

    /// A synchronous call whose answer has no body we need.
    pub(crate) async fn call_empty(&self, method: Method, path: &str, body: Body) -> Result<()> {
        self.bounded(
            |deadline| async move { self.call(method, path, body, deadline).await.map(|_| ()) },
        )
        .await
    }

    /// One synchronous call: any 2xx but 202 is success.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
        deadline: Instant,
    ) -> Result<Reply> {
        let r = self
            .send(method.clone(), self.url(path)?, body.as_deref(), deadline)
            .await?;
        match r.status {
            StatusCode::ACCEPTED => Err(Error::Protocol(format!(
                "{method} {path} started an asynchronous operation; a direct answer was expected"
            ))),
            s if s.is_success() => Ok(r),
            s => Err(api_error(s.as_u16(), &r.body)),
        }
    }
}

/// Check that `id` can name a Heketi object (a hex string) so it can go into a path.
pub(crate) fn check_id(id: &str) -> Result<&str> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(Error::InvalidId { id: id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_hex() {
        assert!(check_id("0123456789abcdefABCDEF0123456789").is_ok());
        for bad in ["", "../clusters", "ab/cd", "ab?x=1", "zz", &"a".repeat(65)] {
            let e = check_id(bad).err();
            assert!(e.as_ref().is_some_and(Error::is_not_found), "{bad:?}");
        }
    }
}
