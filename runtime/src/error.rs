//! [`ServeError`], the error of the serving plumbing.

use std::io;
use std::path::PathBuf;

/// Errors of the serving plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The `--endpoint` value is not a `unix://` URL with an absolute path.
    #[error(
        "--endpoint {0:?} is not supported: use unix:///absolute/path/to/csi.sock (CSI plugins serve on a unix socket)"
    )]
    Endpoint(String),
    /// Something other than a socket already sits at the socket path.
    #[error("--endpoint path {0} exists and is not a socket; remove it or choose another path")]
    NotASocket(PathBuf),
    /// Creating, binding or cleaning up the socket failed.
    #[error("cannot serve on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The gRPC server stopped with an error.
    #[cfg(feature = "csi")]
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}
