//! The controller's error type and its one mapping to gRPC status codes.
//!
//! Every RPC returns [`Error`]; the conversion to [`tonic::Status`] is the only place where a
//! CSI code is chosen, by meaning (STYLE.md, "Errors"). Heketi failures are classified through
//! `heketi_client::Error`'s helpers, never by reading Heketi's text.

use std::time::Duration;

/// What went wrong while serving a Controller RPC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field or StorageClass parameter is missing or unusable. The message names it
    /// and says how to fix it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The volume (or clone source) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A volume with the requested name exists with other parameters.
    #[error("{0}")]
    AlreadyExists(String),
    /// Another operation on the same volume or name is running; retry later.
    #[error("{0}")]
    Aborted(String),
    /// The requested size cannot be satisfied within the given limit.
    #[error("{0}")]
    OutOfRange(String),
    /// The request asks for something this driver does not offer.
    #[error("{0}")]
    Unimplemented(String),
    /// The controller's configuration cannot serve this request (e.g. the volume lives on the
    /// default backend and none is configured).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No space, or no free gid in the StorageClass's range.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too many operations against one backend: nothing was sent, retry later.
    #[error("{0}")]
    Busy(String),
    /// Our own time limit passed before the backend finished; the outcome is unknown and a
    /// retry of the same call finds it.
    #[error("{what} did not finish within {after:?}; retry the call")]
    Deadline {
        /// The operation.
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    /// A Heketi call failed.
    #[error("{context}: {source}")]
    Heketi {
        /// What we were doing, with the backend URL.
        context: String,
        /// The client's error.
        source: heketi_client::Error,
    },
    /// The backend answered, but not in a way that confirms the result (e.g. a 404 on delete
    /// from a server that may not be the volume's Heketi). INTERNAL: the sidecar retries and
    /// nothing is recorded as done. The message names the backend and the reason.
    #[error("{0}")]
    Unconfirmed(String),
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for the controller's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `InvalidArgument` with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// Wraps a Heketi error with what we were doing.
    pub fn heketi(context: impl Into<String>, source: heketi_client::Error) -> Self {
        Self::Heketi {
            context: context.into(),
            source,
        }
    }

    /// The volume does not exist: a Heketi 404 (or an id Heketi could not hold).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound(_) => true,
            Self::Heketi { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Aborted(_) => Code::Aborted,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Busy(_) => Code::Unavailable,
            Self::Deadline { .. } => Code::DeadlineExceeded,
            Self::Heketi { source, .. } => heketi_code(source),
            Self::Unconfirmed(_) | Self::Internal(_) => Code::Internal,
        }
    }
}

/// The CSI meaning of a Heketi failure.
fn heketi_code(e: &heketi_client::Error) -> tonic::Code {
    use heketi_client::Error as H;
    use tonic::Code;
    if e.is_no_space() {
        return Code::ResourceExhausted;
    }
    if e.is_not_found() {
        return Code::NotFound;
    }
    if e.is_unavailable() {
        return Code::Unavailable;
    }
    match e {
        // Our operation deadline: the outcome on the server is unknown, a retry finds it.
        H::Timeout { .. } => Code::DeadlineExceeded,
        // Heketi restarted while running our operation: retrying finds out what happened.
        H::OperationLost { .. } => Code::Unavailable,
        // A `resturl` that cannot be used.
        H::Config(_) => Code::InvalidArgument,
        H::Api { status, .. } => match status {
            // Heketi's validation (bad durability, unknown cluster id, bad gid …).
            400 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            409 => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        let mut message = e.to_string();
        if code == tonic::Code::Unauthenticated {
            message.push_str(
                "; check the `key` (and `user`) of the provisioner/controller-expand secret, \
                 or restuserkey, against Heketi's jwt keys",
            );
        }
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn api(status: u16, message: &str) -> heketi_client::Error {
        heketi_client::Error::Api {
            status,
            message: message.into(),
        }
    }

    #[test]
    fn status_mapping_table() {
        let cases: Vec<(Error, Code)> = vec![
            (Error::invalid("x"), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::Aborted("x".into()), Code::Aborted),
            (Error::OutOfRange("x".into()), Code::OutOfRange),
            (Error::Unimplemented("x".into()), Code::Unimplemented),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Busy("x".into()), Code::Unavailable),
            (
                Error::Deadline {
                    what: "x".into(),
                    after: Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (Error::Internal("x".into()), Code::Internal),
            (Error::Unconfirmed("x".into()), Code::Internal),
            (
                Error::heketi("c", api(500, "Failed to allocate new volume: No space")),
                Code::ResourceExhausted,
            ),
            (
                Error::heketi("c", api(429, "Server busy. Retry operation later.")),
                Code::Unavailable,
            ),
            (
                Error::heketi("c", api(503, "Service disabled for maintenance")),
                Code::Unavailable,
            ),
            (
                Error::heketi("c", api(502, "bad gateway")),
                Code::Unavailable,
            ),
            (Error::heketi("c", api(404, "Id not found")), Code::NotFound),
            (
                Error::heketi("c", api(400, "Invalid dispersion combination: 3+1")),
                Code::InvalidArgument,
            ),
            (
                Error::heketi("c", api(401, "Invalid JWT token")),
                Code::Unauthenticated,
            ),
            (
                Error::heketi("c", api(409, "cannot delete")),
                Code::FailedPrecondition,
            ),
            (Error::heketi("c", api(500, "boom")), Code::Internal),
            (
                Error::heketi(
                    "c",
                    heketi_client::Error::Timeout {
                        after: Duration::from_secs(3),
                    },
                ),
                Code::DeadlineExceeded,
            ),
            (
                Error::heketi(
                    "c",
                    heketi_client::Error::OperationLost {
                        location: "/queue/1".into(),
                        message: "Id not found".into(),
                    },
                ),
                Code::Unavailable,
            ),
            (
                Error::heketi("c", heketi_client::Error::Config("bad url".into())),
                Code::InvalidArgument,
            ),
            (
                Error::heketi("c", heketi_client::Error::Protocol("odd".into())),
                Code::Internal,
            ),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            let status = tonic::Status::from(e);
            assert_eq!(status.code(), want, "{shown}");
            assert!(status.message().starts_with(&shown), "{shown}");
        }
    }

    #[test]
    fn heketi_errors_keep_context_and_cause() {
        let e = Error::heketi(
            "creating volume csi_x on http://h:8080",
            api(500, "Failed to allocate new volume: No space"),
        );
        let s = tonic::Status::from(e);
        assert!(
            s.message()
                .contains("creating volume csi_x on http://h:8080")
        );
        assert!(s.message().contains("No space"));
    }

    #[test]
    fn unauthenticated_says_where_the_key_comes_from() {
        let s = tonic::Status::from(Error::heketi("c", api(401, "Invalid JWT token")));
        assert!(s.message().contains("controller-expand secret"), "{s:?}");
    }
}
