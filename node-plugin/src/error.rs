//! The node plugin's errors and their one mapping to gRPC status codes.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

/// Everything a Node RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The volume or path is not known on this node.
    #[error("{0}")]
    NotFound(String),
    /// The path already holds something incompatible with the request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request conflicts with the node's state (e.g. a single-writer volume already
    /// published elsewhere).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another operation holds the volume or path.
    #[error("an operation on {0} is already in progress; retry later")]
    Busy(String),
    /// The volume's mount is degraded (its client runs but cannot serve it now); it is left
    /// alone and the call can be retried later.
    #[error("{0}")]
    Unavailable(String),
    /// A blocking step did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// `mount -t glusterfs` failed; `detail` holds its output and the client's last log lines.
    #[error("mounting {source_spec} at {target} failed: {detail}")]
    Mount {
        /// `server:/volume`.
        source_spec: String,
        /// Mount point.
        target: PathBuf,
        /// Exit status, stderr and log lines.
        detail: String,
    },
    /// A system call failed.
    #[error("{op} {path}: {errno}", path = .path.display(), errno = .errno.desc())]
    Sys {
        /// What was attempted (`bind mount`, `umount`, …).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error number.
        errno: Errno,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A blocking task panicked or was cancelled (a bug).
    #[error("internal task failed: {0}")]
    Task(String),
    /// The mount agent cannot be reached or could not run the mount.
    #[error("mount agent: {0}")]
    Agent(String),
}

impl Error {
    /// A failed system call on `path`.
    pub fn sys(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Self::Sys {
            op,
            path: path.into(),
            errno,
        }
    }

    /// A failed file operation on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Busy(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Mount { .. } => Code::Internal,
            Error::Sys { errno, .. } => match errno {
                Errno::ETIMEDOUT => Code::DeadlineExceeded,
                Errno::ENOSPC | Errno::EDQUOT => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::TimedOut => Code::DeadlineExceeded,
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    Code::ResourceExhausted
                }
                _ => Code::Internal,
            },
            Error::Task(_) => Code::Internal,
            Error::Agent(_) => Code::Unavailable,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Runs blocking `f` on the blocking pool and gives up waiting after `limit`. The work itself
/// cannot be cancelled: a system call stuck on a dead FUSE mount keeps its thread until the
/// kernel lets go.
pub async fn blocking<T, F>(what: impl Into<String>, limit: Duration, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(Error::Task(join.to_string())),
        Err(_) => Err(Error::Timeout {
            what: what.into(),
            after: limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_maps_to_its_csi_code() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Busy("vol".into()), Code::Aborted),
            (Error::Unavailable("bricks".into()), Code::Unavailable),
            (
                Error::Timeout {
                    what: "statvfs".into(),
                    after: Duration::from_secs(5),
                },
                Code::DeadlineExceeded,
            ),
            (
                Error::Mount {
                    source_spec: "h:/v".into(),
                    target: "/t".into(),
                    detail: "exit 1".into(),
                },
                Code::Internal,
            ),
            (Error::sys("umount", "/t", Errno::EPERM), Code::Internal),
            (
                Error::sys("mkdir", "/t", Errno::ENOSPC),
                Code::ResourceExhausted,
            ),
            (
                Error::io("mkdir", "/t", io::Error::from(io::ErrorKind::TimedOut)),
                Code::DeadlineExceeded,
            ),
            (
                Error::io(
                    "mkdir",
                    "/t",
                    io::Error::from(io::ErrorKind::PermissionDenied),
                ),
                Code::Internal,
            ),
            (Error::Task("panic".into()), Code::Internal),
            (Error::Agent("connection refused".into()), Code::Unavailable),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }

    #[tokio::test]
    async fn blocking_work_that_hangs_times_out() {
        let r: Result<(), Error> = blocking("sleep", Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })
        .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        let r = blocking("add", Duration::from_secs(5), || Ok(1 + 1)).await;
        assert_eq!(r.ok(), Some(2));
    }
}
