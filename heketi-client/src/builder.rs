//! [`ClientBuilder`]: a client's settings and their defaults, checked by `build` (URL, key,
//! timeouts, attempts) before it makes the HTTP client and its TLS roots.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

use crate::client::{Client, Inner};
use crate::error::{Error, Result};
use crate::retry::{RetryEvent, RetryObserver};

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

#[cfg(test)]
mod tests {
    use super::*;

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
