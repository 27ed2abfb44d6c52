//! Errors: [`ApiError`] is what a client sees (a status and Heketi's plain-text message);
//! [`Error`] is what goes wrong inside an operation.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::exec::CommandError;
use crate::store::StoreError;

/// A refused request: Heketi's status code and plain-text message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body text (a newline is added on the wire, as Go's `http.Error` does).
    pub message: String,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 404 `Id not found`, Heketi's reply for an unknown or invisible id.
    pub fn id_not_found() -> Self {
        Self::not_found("Id not found")
    }

    /// 404 `Invalid path or request`, Heketi's reply for a path no route matches.
    pub fn invalid_path() -> Self {
        Self::not_found("Invalid path or request")
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422 `request unable to be parsed`.
    pub fn unparsable() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request unable to be parsed",
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// A plain-text error reply exactly like Go's `http.Error`.
pub fn plain_text(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, format!("{message}\n")).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Seconds a client told "busy" (429) is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = plain_text(self.status, &self.message);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// Something that failed while an operation ran.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An external command (gluster, mount, cp) failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A brick or device directory could not be handled on its node.
    #[error("{what} {path}: {source}")]
    Node {
        /// What was being done.
        what: &'static str,
        /// The brick concerned (`host:path`).
        path: String,
        /// The cause.
        source: crate::host::NodeError,
    },
    /// The state changed under the operation (e.g. the volume disappeared).
    #[error("{0}")]
    Gone(String),
    /// A request the server cannot carry out.
    #[error("{0}")]
    Unsupported(String),
    /// A clone's copy could not be checked against its source, or cleared for another try
    /// (a walk of a FUSE mount failed or timed out).
    #[error("{what}: {source}")]
    Copy {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Every copy of a clone's source was rejected: the source changed while each was made.
    #[error(
        "the source volume {volume} kept changing during every copy ({attempts} attempts), so no \
         consistent copy could be made; retry the clone when writes to the source pause"
    )]
    SourceKeptChanging {
        /// Name of the source volume.
        volume: String,
        /// Copies tried.
        attempts: u32,
    },
}
