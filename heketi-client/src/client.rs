//! [`ClientBuilder`] and [`Client`], and the request engine every call goes through:
//! signing, retries, the `/queue` polling of asynchronous operations and redirects.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::auth;
use crate::backoff;
use crate::error::{Error, MAX_MESSAGE_BYTES, Result, api_error, truncate_utf8};
use crate::retry::{RetryEvent, RetryObserver, RetryReason, route_class};

/// Default user (`iss` claim).
///
/// # Example
/// ```no_run
/// assert_eq!(heketi_client::DEFAULT_USER, "admin");
/// ```
pub const DEFAULT_USER: &str = "admin";
/// Default limit for one HTTP exchange.
///
/// # Example
/// ```no_run
/// println!("one exchange may take {:?}", heketi_client::DEFAULT_REQUEST_TIMEOUT);
/// ```
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for opening a connection.
///
/// # Example
/// ```no_run
/// println!("connecting may take {:?}", heketi_client::DEFAULT_CONNECT_TIMEOUT);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for a whole call, retries and `/queue` polling included.
///
/// # Example
/// ```no_run
/// println!("a call gives up after {:?}", heketi_client::DEFAULT_OPERATION_DEADLINE);
/// ```
pub const DEFAULT_OPERATION_DEADLINE: Duration = Duration::from_secs(300);
/// Default number of attempts of one request (the first one included) on 429, 503, or a
/// transport failure of a GET.
///
/// # Example
/// ```no_run
/// println!("{} attempts at most", heketi_client::DEFAULT_MAX_ATTEMPTS);
/// ```
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// Largest reply body read, in bytes.
const MAX_BODY_BYTES: usize = 64 << 20;
/// Redirects followed after an operation finished.
const MAX_REDIRECTS: usize = 5;
/// Header Heketi sets on `/queue` replies while an operation runs.
const X_PENDING: &str = "x-pending";

/// Configures and builds a [`Client`].
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use heketi_client::ClientBuilder;
/// use secrecy::SecretString;
///
/// let client = ClientBuilder::new("https://heketi.storage.svc:8080")
///     .user("admin")
///     .key(SecretString::from("My Secret"))
///     .ca_file("/etc/heketi/ca.pem")
///     .request_timeout(Duration::from_secs(20))
///     .operation_deadline(Duration::from_secs(120))
///     .build()?;
/// # Ok::<(), heketi_client::Error>(())
/// ```
pub struct ClientBuilder {
    base_url: String,
    user: String,
    key: Option<SecretString>,
    auth: bool,
    request_timeout: Duration,
    connect_timeout: Duration,
    operation_deadline: Duration,
    ca_file: Option<PathBuf>,
    ca_pem: Option<Vec<u8>>,
    max_attempts: u32,
    retry_budget: Option<Duration>,
    on_retry: Option<RetryObserver>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("user", &self.user)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_deadline", &self.operation_deadline)
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("max_attempts", &self.max_attempts)
            .field("retry_budget", &self.retry_budget)
            .field("on_retry", &self.on_retry.is_some())
            .finish()
    }
}

impl ClientBuilder {
    /// Start a client for the Heketi at `base_url` (`http://host:8080`, or with a path prefix
    /// when Heketi sits behind a proxy).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://10.0.0.5:8080");
    /// ```
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            user: DEFAULT_USER.to_owned(),
            key: None,
            auth: true,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_deadline: DEFAULT_OPERATION_DEADLINE,
            ca_file: None,
            ca_pem: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_budget: None,
            on_retry: None,
        }
    }

    /// The Heketi user, sent as the `iss` claim: `admin` (the default) or `user`.
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080").user("user");
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The user's secret, used to sign tokens. Never logged or shown by `Debug`.
    ///
    /// # Example
    /// ```no_run
    /// let key = std::fs::read_to_string("/etc/heketi/admin.key")?;
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .key(secrecy::SecretString::from(key.trim()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn key(mut self, key: SecretString) -> Self {
        self.key = Some(key);
        self
    }

    /// Send no `Authorization` header (for a Heketi run with `use_auth: false`).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080").disable_auth();
    /// ```
    pub fn disable_auth(mut self) -> Self {
        self.auth = false;
        self
    }

    /// Limit for one HTTP exchange, body included (default 30 s).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .request_timeout(std::time::Duration::from_secs(10));
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Limit for opening a TCP (and TLS) connection (default 10 s).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .connect_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit for a whole call: retries, `/queue` polling and the final GET included
    /// (default 5 min). When it passes the call fails with [`Error::Timeout`].
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .operation_deadline(std::time::Duration::from_secs(60));
    /// ```
    pub fn operation_deadline(mut self, deadline: Duration) -> Self {
        self.operation_deadline = deadline;
        self
    }

    /// A PEM file of extra CA certificates trusted for `https` (on top of the system roots).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("https://heketi:8080").ca_file("/etc/ssl/heketi-ca.pem");
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// PEM text of extra CA certificates trusted for `https`, like [`Self::ca_file`] but given
    /// in memory; used instead of the file when both are set.
    ///
    /// # Example
    /// ```no_run
    /// let pem = std::fs::read("/etc/ssl/heketi-ca.pem").unwrap_or_default();
    /// let b = heketi_client::ClientBuilder::new("https://heketi:8080").ca_pem(pem);
    /// ```
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// How many times one request is sent at most on 429, 503, or a transport failure of a GET
    /// (default 6; 1 disables retries).
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080").max_attempts(3);
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How long one request may wait in total between its retries (by default there is no
    /// such limit: only [`max_attempts`](Self::max_attempts) and the operation deadline bound
    /// them).
    ///
    /// A retry whose wait does not fit in what is left of the budget is not made: the request
    /// fails at once with the last error (a `Retry-After` longer than the rest, for instance).
    /// Only the waits count, not the exchanges. Each request has a budget of its own; the
    /// polls of an asynchronous operation are requests, not retries, so a long operation still
    /// runs to its deadline. A budget of zero disables waiting retries.
    ///
    /// A caller that retries on its own (a CSI sidecar, a controller loop) can fail fast:
    ///
    /// # Example
    /// ```no_run
    /// let b = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .retry_budget(std::time::Duration::from_secs(3));
    /// ```
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// Call `observer` each time a request is about to be retried, before the wait: for
    /// metrics or logs. It runs on the request's task, so it must be quick and must not block.
    /// A new call replaces the previous observer.
    ///
    /// # Example
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let retries = Arc::new(AtomicU64::new(0));
    /// let seen = Arc::clone(&retries);
    /// let client = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .disable_auth()
    ///     .on_retry(move |e: &heketi_client::RetryEvent| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         eprintln!("{} {} again after {:?} ({})", e.method, e.route, e.wait, e.reason);
    ///     })
    ///     .build()?;
    /// # Ok::<(), heketi_client::Error>(())
    /// ```
    pub fn on_retry(mut self, observer: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(observer));
        self
    }

    /// Check the configuration and build the client.
    ///
    /// Fails with [`Error::Config`] for a URL that is not `http(s)://host[:port][/prefix]`,
    /// a missing key while auth is on, an empty user, a zero timeout or an unreadable CA file.
    ///
    /// # Example
    /// ```no_run
    /// let client = heketi_client::ClientBuilder::new("http://heketi:8080")
    ///     .key(secrecy::SecretString::from("secret"))
    ///     .build()?;
    /// # Ok::<(), heketi_client::Error>(())
    /// ```
    pub fn build(self) -> Result<Client> {
        let base = Url::parse(self.base_url.trim())
            .map_err(|e| Error::Config(format!("Heketi URL {:?}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "Heketi URL {:?}: scheme must be http or https",
                self.base_url
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(Error::Config(format!(
                "Heketi URL {:?} has no host",
                self.base_url
            )));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(Error::Config(format!(
                "Heketi URL {:?} must not carry credentials, a query or a fragment",
                self.base_url
            )));
        }
        let base_str = base.as_str().trim_end_matches('/').to_owned();
        let key = if self.auth {
            if self.user.is_empty() {
                return Err(Error::Config("the Heketi user is empty".into()));
            }
            match self.key {
                Some(k) => Some(k),
                None => {
                    return Err(Error::Config(
                        "no Heketi key given; set one or disable auth".into(),
                    ));
                }
            }
        } else {
            None
        };
        for (what, d) in [
            ("request timeout", self.request_timeout),
            ("connect timeout", self.connect_timeout),
            ("operation deadline", self.operation_deadline),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("the {what} must be above zero")));
            }
        }
        if self.max_attempts == 0 {
            return Err(Error::Config("max attempts must be at least 1".into()));
        }

        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!(
                "gluster-csi-heketi-client/",
                env!("CARGO_PKG_VERSION")
            ));
        let ca = match (&self.ca_pem, &self.ca_file) {
            (Some(pem), _) => Some((pem.clone(), "the CA bundle given".to_owned())),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
                Some((pem, format!("CA file {}", path.display())))
            }
            (None, None) => None,
        };
        if let Some((pem, what)) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("{what}: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config(format!("{what} holds no PEM certificate")));
            }
            http = http.tls_certs_merge(certs);
        } else if base.scheme() == "http" {
            // Plain HTTP, and redirects are never followed: TLS is never used, so the system's
            // CA store is not needed (a minimal image may have none, and loading it would fail).
            http = http.tls_certs_only(Vec::new());
        }
        let http = http.build().map_err(|e| {
            let hint = if base.scheme() == "https" {
                " (an https:// Heketi needs CA certificates: give a CA file, or install the \
                 system's CA bundle)"
            } else {
                ""
            };
            Error::Config(format!("HTTP client: {e}{hint}"))
        })?;

        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                base_str,
                user: self.user,
                key,
                request_timeout: self.request_timeout,
                max_attempts: self.max_attempts,
                retry_budget: self.retry_budget,
                on_retry: self.on_retry,
            }),
            deadline: self.operation_deadline,
        })
    }
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// `base` without a trailing slash; paths are appended to it.
    base_str: String,
    user: String,
    /// `None` when auth is off.
    key: Option<SecretString>,
    request_timeout: Duration,
    max_attempts: u32,
    /// `None`: no limit on the waits of one request besides the attempts and the deadline.
    retry_budget: Option<Duration>,
    on_retry: Option<RetryObserver>,
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
    inner: Arc<Inner>,
    deadline: Duration,
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

    fn is_pending(&self) -> bool {
        self.headers
            .get(X_PENDING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

/// What a request that is not a GET carries.
pub(crate) type Body = Option<Vec<u8>>;

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
        let mut polls = 0u32;
        loop {
            let r = self
                .send(Method::GET, queue.clone(), None, deadline)
                .await?;
            if r.is_pending() {
                if r.status != StatusCode::OK {
                    return Err(api_error(r.status.as_u16(), &r.body));
                }
                tokio::time::sleep(backoff::poll_delay(polls)).await;
                polls = polls.saturating_add(1);
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
        let replayable = method == Method::GET || method == Method::HEAD;
        let mut budget = backoff::RetryBudget::new(self.inner.retry_budget);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last_attempt = attempt >= self.inner.max_attempts;
            let result = self.send_once(&method, &url, body).await;
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
    ) -> Result<Reply, SendError> {
        let mut req = self.inner.http.request(method.clone(), url.clone());
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

    #[test]
    fn ids_must_be_hex() {
        assert!(check_id("0123456789abcdefABCDEF0123456789").is_ok());
        for bad in ["", "../clusters", "ab/cd", "ab?x=1", "zz", &"a".repeat(65)] {
            let e = check_id(bad).err();
            assert!(e.as_ref().is_some_and(Error::is_not_found), "{bad:?}");
        }
    }

    #[test]
    fn builder_rejects_bad_configuration() {
        let key = || SecretString::from("k");
        let cases: Vec<(ClientBuilder, &str)> = vec![
            (ClientBuilder::new("heketi:8080").key(key()), "scheme"),
            (ClientBuilder::new("ftp://h").key(key()), "scheme"),
            (ClientBuilder::new("http://h?x=1").key(key()), "query"),
            (ClientBuilder::new("http://u:p@h").key(key()), "credentials"),
            (ClientBuilder::new("http://h"), "no Heketi key"),
            (ClientBuilder::new("http://h").user("").key(key()), "user"),
            (
                ClientBuilder::new("http://h")
                    .key(key())
                    .operation_deadline(Duration::ZERO),
                "deadline",
            ),
            (
                ClientBuilder::new("http://h").key(key()).max_attempts(0),
                "attempts",
            ),
            (
                ClientBuilder::new("http://h")
                    .key(key())
                    .ca_file("/nonexistent/ca.pem"),
                "CA file",
            ),
        ];
        for (b, want) in cases {
            match b.build() {
                Err(Error::Config(m)) => assert!(m.contains(want), "{m} lacks {want}"),
                other => panic!("{want}: got {other:?}"),
            }
        }
    }

    #[test]
    fn builder_rejects_a_ca_file_without_certificates() {
        let dir = std::env::temp_dir().join(format!("hc-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("empty.pem");
        assert!(std::fs::write(&f, "not a certificate\n").is_ok());
        let r = ClientBuilder::new("https://h")
            .key(SecretString::from("k"))
            .ca_file(&f)
            .build();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("no PEM certificate")));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let b = ClientBuilder::new("http://h:8080/").key(SecretString::from("hunter2-secret"));
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
        let Ok(c) = b.build() else { panic!("build") };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.base_url(), "http://h:8080");
        assert_eq!(c.user(), "admin");
    }

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

    #[test]
    fn debug_shows_the_retry_settings() {
        let b = ClientBuilder::new("http://h")
            .disable_auth()
            .retry_budget(Duration::from_secs(2))
            .on_retry(|_| {});
        let shown = format!("{b:?}");
        assert!(shown.contains("retry_budget: Some(2s)"), "{shown}");
        assert!(shown.contains("on_retry: true"), "{shown}");
        let Ok(c) = b.build() else { panic!("build") };
        assert!(format!("{c:?}").contains("retry_budget: Some(2s)"));
    }

    #[test]
    fn auth_can_be_disabled_without_a_key() {
        let c = ClientBuilder::new("http://h").disable_auth().build();
        assert!(c.is_ok_and(|c| format!("{c:?}").contains("auth: false")));
    }
}
