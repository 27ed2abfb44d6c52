//! The one error type of the client, and how Heketi's replies are classified.
//!
//! Heketi reports every failure as plain text with an HTTP status (there is no JSON error
//! envelope). This module is the only place in gluster-csi that looks at that text: the rest of
//! the project asks [`Error::is_not_found`], [`Error::is_no_space`], [`Error::is_name_in_use`],
//! [`Error::is_retryable`], [`Error::is_unavailable`] and [`Error::certainly_not_done`]
//! instead.

use std::time::Duration;

/// Longest error message kept from a Heketi reply, in bytes (Heketi's own client reads 4 KiB).
///
/// # Example
/// ```no_run
/// # fn demo(e: heketi_client::Error) {
/// if let heketi_client::Error::Api { message, .. } = &e {
///     assert!(message.len() <= heketi_client::MAX_MESSAGE_BYTES);
/// }
/// # }
/// ```
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Anything that can go wrong while talking to Heketi.
///
/// # Example
/// ```no_run
/// # async fn demo(client: heketi_client::Client) {
/// match client.volume_info("0123456789abcdef0123456789abcdef").await {
///     Ok(v) => println!("{} is {} GiB", v.name, v.size),
///     Err(e) if e.is_not_found() => println!("no such volume"),
///     Err(e) if e.is_retryable() => println!("try again later: {e}"),
///     Err(e) => println!("failed: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Heketi answered with an error status.
    ///
    /// `message` is Heketi's plain-text body, trimmed and cut to [`MAX_MESSAGE_BYTES`]; an empty
    /// body reads as `server did not provide a message (status N)`.
    #[error("Heketi returned {status}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Heketi's message.
        message: String,
    },

    /// The request did not get an answer: connection refused or reset, TLS failure, DNS, …
    /// A TLS failure says so and gives the TLS library's reason ([`Error::is_tls`]).
    #[error("cannot reach Heketi: {source}{tls}", source = .0, tls = tls_reason(.0))]
    Transport(#[source] reqwest::Error),

    /// Heketi answered 2xx but the body is not the JSON we expected.
    #[error("cannot decode Heketi's reply ({source}); body: {}", preview(body))]
    Decode {
        /// The body as received (lossily converted to UTF-8, cut to [`MAX_MESSAGE_BYTES`]).
        body: String,
        /// What the JSON decoder said.
        #[source]
        source: serde_json::Error,
    },

    /// The JWT for a request could not be built.
    #[error("cannot build the authentication token: {0}")]
    Auth(#[source] jsonwebtoken::errors::Error),

    /// No answer within the request timeout, or the operation did not finish within the
    /// operation deadline. The outcome on the server is unknown.
    #[error("Heketi did not finish the request within {after:?}")]
    Timeout {
        /// The limit that was hit.
        after: Duration,
    },

    /// The client is configured wrongly (bad URL, unreadable CA file, missing key, …).
    #[error("invalid Heketi client configuration: {0}")]
    Config(String),

    /// Heketi's answer does not follow its own protocol (e.g. a 202 without `Location`, or a
    /// redirect to another host).
    #[error("unexpected reply from Heketi: {0}")]
    Protocol(String),

    /// Heketi no longer knows an operation it accepted (its `/queue` entry returned 404, which
    /// happens when Heketi restarts). Whether the operation took effect is unknown: read the
    /// resource again.
    #[error("Heketi lost track of operation {location}: {message}")]
    OperationLost {
        /// The `/queue/…` path that was polled.
        location: String,
        /// Heketi's message.
        message: String,
    },

    /// An id passed to the client cannot name a Heketi object (Heketi ids are hex strings).
    /// Heketi answers 404 for such paths, so [`Error::is_not_found`] is true.
    #[error("{id:?} is not a valid Heketi id")]
    InvalidId {
        /// The rejected id.
        id: String,
    },
}

/// Shorthand for `Result<T, heketi_client::Error>`.
///
/// # Example
/// ```no_run
/// async fn names(client: &heketi_client::Client) -> heketi_client::Result<Vec<String>> {
///     Ok(client.volume_list().await?.volumes)
/// }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn preview(body: &str) -> &str {
    truncate_utf8(body, 512)
}

/// Cut `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Turn an error reply's status and body into [`Error::Api`], the way Heketi's own client does.
pub(crate) fn api_error(status: u16, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    let text = truncate_utf8(&text, MAX_MESSAGE_BYTES).trim();
    let message = if text.is_empty() {
        format!("server did not provide a message (status {status})")
    } else {
        text.to_owned()
    };
    Error::Api { status, message }
}

/// Phrases of Heketi's allocator that mean "the cluster cannot hold this volume"
/// (`ErrNoSpace`, `ErrMaxBricks`, `ErrMinimumBrickSize` and the per-cluster volume limit in
/// `apps/glusterfs`). Heketi folds the first three into "No space" but older releases and
/// multi-cluster replies can carry any of them.
const NO_SPACE_PHRASES: &[&str] = &[
    "no space",
    "out of space",
    "maximum number of bricks reached",
    "volumes and limit is",
];

impl Error {
    /// The object does not exist: a 404, or an id that cannot name a Heketi object.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client, id: &str) -> heketi_client::Result<()> {
    /// match client.volume_delete(id).await {
    ///     Err(e) if e.is_not_found() => Ok(()), // already gone
    ///     other => other,
    /// }
    /// # }
    /// ```
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Api { status: 404, .. } | Error::InvalidId { .. }
        )
    }

    /// Heketi could not allocate the space: no cluster has room for the bricks, the bricks
    /// would be too small or too many, or the cluster reached its volume limit.
    ///
    /// Heketi sends these as `500 Failed to allocate new volume: No space` (or
    /// `… volume expansion: …`); 507 Insufficient Storage is accepted too.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) {
    /// let req = heketi_client::types::VolumeCreateRequest { size: 100_000, ..Default::default() };
    /// if let Err(e) = client.volume_create(&req).await {
    ///     if e.is_no_space() {
    ///         println!("cluster is full");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Api {
                status: 500 | 507,
                message,
            } => {
                let m = message.to_ascii_lowercase();
                NO_SPACE_PHRASES.iter().any(|p| m.contains(p))
            }
            _ => false,
        }
    }

    /// The volume name is already taken in every cluster the request could use
    /// (Heketi: `500 … Volume name '<name>' already in use`; 409 Conflict is accepted too).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) {
    /// let req = heketi_client::types::VolumeCreateRequest {
    ///     size: 1, name: "taken".into(), ..Default::default()
    /// };
    /// if let Err(e) = client.volume_create(&req).await {
    ///     if e.is_name_in_use() {
    ///         println!("look the existing volume up instead");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn is_name_in_use(&self) -> bool {
        match self {
            Error::Api {
                status: 500 | 409,
                message,
            } => {
                let m = message.to_ascii_lowercase();
                m.contains("volume name") && m.contains("already in use")
            }
            _ => false,
        }
    }

    /// Trying again later may succeed: 429 (too many operations in flight), 503 (maintenance)
    /// or a transport failure. The client already retried these a bounded number of times.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(e: heketi_client::Error) {
    /// if e.is_retryable() {
    ///     println!("back off and retry: {e}");
    /// }
    /// # }
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => matches!(status, 429 | 503),
            Error::Transport(_) => true,
            _ => false,
        }
    }

    /// The TLS connection to Heketi failed: the certificate is not trusted (wrong or missing
    /// CA), names another host, or the handshake failed. A CSI driver still maps this to
    /// `Unavailable` (a fixed CA or certificate makes a retry succeed) and names TLS.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(e: heketi_client::Error) {
    /// if e.is_tls() {
    ///     println!("check the CA given for this Heketi: {e}");
    /// }
    /// # }
    /// ```
    pub fn is_tls(&self) -> bool {
        match self {
            Error::Transport(e) => rustls_error(e).is_some(),
            _ => false,
        }
    }

    /// Heketi cannot serve requests now: everything [`Error::is_retryable`] covers, plus 502
    /// and 504 from a proxy in front of Heketi. A CSI driver maps this to `Unavailable`.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(e: heketi_client::Error) {
    /// if e.is_unavailable() {
    ///     println!("Heketi is down or busy");
    /// }
    /// # }
    /// ```
    pub fn is_unavailable(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                Error::Api {
                    status: 502 | 504,
                    ..
                }
            )
    }

    /// For a request that changes something (create, clone, expand, delete): it certainly
    /// took no effect. True when Heketi answered the request, or the operation it started,
    /// with an error of its own, and when nothing was sent (bad id, unusable configuration, no
    /// token). False when the outcome is unknown: no answer in time, a broken or refused
    /// connection (the client cannot tell the request from a later poll), an answer it cannot
    /// read, an operation Heketi lost track of, and the statuses a proxy or a busy Heketi can
    /// give at any step (429, 502, 503, 504). The caller then reads the resource again before
    /// it relies on either outcome.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client, req: heketi_client::types::VolumeCreateRequest) {
    /// if let Err(e) = client.volume_create(&req).await {
    ///     if e.certainly_not_done() {
    ///         println!("nothing was made: {e}");
    ///     } else {
    ///         println!("the volume may still appear: {e}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn certainly_not_done(&self) -> bool {
        match self {
            Error::Api { status, .. } => !matches!(status, 429 | 502 | 503 | 504),
            Error::Auth(_) | Error::Config(_) | Error::InvalidId { .. } => true,
            Error::Transport(_)
            | Error::Decode { .. }
            | Error::Timeout { .. }
            | Error::Protocol(_)
            | Error::OperationLost { .. } => false,
        }
    }

    /// The HTTP status of an [`Error::Api`], `None` for every other kind.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(e: heketi_client::Error) {
    /// if e.status() == Some(409) {
    ///     println!("conflict: {e}");
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The TLS library's error somewhere in the causes of `e`, if any. `io::Error` hides the error
/// it wraps from `source()`, so it is looked into as well.
fn rustls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if let Some(r) = cause.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

fn tls_reason(e: &reqwest::Error) -> String {
    match rustls_error(e) {
        Some(r) => format!(" (TLS: {r})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_tls_failure_is_told_apart_and_named() {
        use tokio::io::AsyncWriteExt as _;
        // Plain HTTP where TLS is expected: the handshake fails.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            }
        });
        let client = crate::Client::builder(format!("https://{addr}"))
            .disable_auth()
            .max_attempts(1)
            .build()
            .expect("client");
        let e = client.hello().await.expect_err("no TLS there");
        assert!(e.is_tls(), "{e:?}");
        assert!(e.to_string().contains("(TLS: "), "{e}");
        let plain = crate::Client::builder(format!("http://{addr}"))
            .disable_auth()
            .max_attempts(1)
            .build()
            .expect("client");
        let e = plain.hello().await.expect_err("400");
        assert!(!e.is_tls(), "{e:?}");
    }

    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            status,
            message: message.into(),
        }
    }

    #[test]
    fn api_error_trims_and_fills_empty_body() {
        let e = api_error(500, b"Failed to allocate new volume: No space\n");
        assert!(
            matches!(&e, Error::Api { status: 500, message } if message == "Failed to allocate new volume: No space")
        );
        let e = api_error(502, b"  \n");
        assert!(
            matches!(&e, Error::Api { status: 502, message } if message == "server did not provide a message (status 502)")
        );
    }

    #[test]
    fn api_error_keeps_at_most_4k_on_a_char_boundary() {
        let mut body = "x".repeat(MAX_MESSAGE_BYTES - 1).into_bytes();
        body.extend_from_slice("é and more".as_bytes()); // 'é' straddles the limit
        match api_error(500, &body) {
            Error::Api { message, .. } => {
                assert_eq!(message.len(), MAX_MESSAGE_BYTES - 1);
                assert!(message.chars().all(|c| c == 'x'));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classification_table() {
        // (error, not_found, no_space, name_in_use, retryable, unavailable)
        let cases: Vec<(Error, [bool; 5])> = vec![
            (api(404, "Id not found"), [true, false, false, false, false]),
            (
                api(404, "Invalid path or request"),
                [true, false, false, false, false],
            ),
            (
                Error::InvalidId { id: "../x".into() },
                [true, false, false, false, false],
            ),
            (
                api(500, "Failed to allocate new volume: No space"),
                [false, true, false, false, false],
            ),
            (
                api(500, "Failed to allocate volume expansion: No space"),
                [false, true, false, false, false],
            ),
            (
                api(
                    500,
                    "Failed to allocate new volume: Minimum brick size limit reached.  Out of space.",
                ),
                [false, true, false, false, false],
            ),
            (
                api(
                    500,
                    "Failed to allocate new volume: Unable to create volume on any cluster:\nCluster 1: No space\nCluster 2: No space",
                ),
                [false, true, false, false, false],
            ),
            (
                api(
                    500,
                    "Failed to allocate new volume: Cluster has 1000 volumes and limit is 1000",
                ),
                [false, true, false, false, false],
            ),
            (
                api(507, "insufficient storage: no space left"),
                [false, true, false, false, false],
            ),
            // The status matters: a 400 that happens to say "no space" is a validation error.
            (
                api(400, "validation failed: no space allowed in name"),
                [false, false, false, false, false],
            ),
            (
                api(
                    500,
                    "Failed to allocate new volume: Volume name 'csi_1' already in use",
                ),
                [false, false, true, false, false],
            ),
            (
                api(409, "Volume name 'csi_1' already in use"),
                [false, false, true, false, false],
            ),
            (
                api(500, "Device already in use (ID: abc)"),
                [false, false, false, false, false],
            ),
            (
                api(429, "Server busy. Retry operation later."),
                [false, false, false, true, true],
            ),
            (
                api(503, "Service disabled for maintenance"),
                [false, false, false, true, true],
            ),
            (api(502, "bad gateway"), [false, false, false, false, true]),
            (
                Error::Timeout {
                    after: Duration::from_secs(1),
                },
                [false, false, false, false, false],
            ),
            (
                api(401, "Invalid JWT token: signature is invalid"),
                [false, false, false, false, false],
            ),
        ];
        for (e, want) in cases {
            let got = [
                e.is_not_found(),
                e.is_no_space(),
                e.is_name_in_use(),
                e.is_retryable(),
                e.is_unavailable(),
            ];
            assert_eq!(got, want, "{e}");
        }
    }

    #[test]
    fn certainly_not_done_table() {
        let cases: Vec<(Error, bool)> = vec![
            (api(500, "Failed to allocate new volume: No space"), true),
            (api(400, "Invalid dispersion combination"), true),
            (api(401, "Invalid JWT token"), true),
            (api(404, "Id not found"), true),
            (api(500, "Volume name 'x' already in use"), true),
            (api(429, "Server busy. Retry operation later."), false),
            (api(502, "bad gateway"), false),
            (api(503, "Service disabled for maintenance"), false),
            (api(504, "gateway timeout"), false),
            (
                Error::Timeout {
                    after: Duration::from_secs(1),
                },
                false,
            ),
            (
                Error::OperationLost {
                    location: "/queue/1".into(),
                    message: "Id not found".into(),
                },
                false,
            ),
            (
                Error::Protocol("202 without a Location header".into()),
                false,
            ),
            (Error::Config("bad url".into()), true),
            (Error::InvalidId { id: "../x".into() }, true),
        ];
        for (e, want) in cases {
            assert_eq!(e.certainly_not_done(), want, "{e}");
        }
    }

    #[tokio::test]
    async fn a_refused_create_is_not_certainly_undone() {
        // The client cannot tell a refused POST from a refused poll after it: unknown.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string());
        let Ok(addr) = addr else {
            panic!("a free port: {addr:?}");
        };
        let client = crate::ClientBuilder::new(format!("http://{addr}"))
            .disable_auth()
            .retry_budget(Duration::ZERO)
            .build();
        let Ok(client) = client else {
            panic!("client");
        };
        let r = client.volume_create(&Default::default()).await;
        let Err(e) = r else {
            panic!("nothing listens on {addr}");
        };
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        assert!(!e.certainly_not_done(), "{e:?}");
    }

    #[test]
    fn decode_display_shows_a_short_body_preview() {
        let source = serde_json::from_str::<serde_json::Value>("{").err();
        let Some(source) = source else {
            panic!("'{{' must not parse");
        };
        let e = Error::Decode {
            body: "y".repeat(2000),
            source,
        };
        let shown = e.to_string();
        assert!(shown.contains(&"y".repeat(512)));
        assert!(!shown.contains(&"y".repeat(513)));
    }
}
