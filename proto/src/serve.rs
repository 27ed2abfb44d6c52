//! Serving a CSI gRPC service on a unix socket, shared by both plugin binaries.
//!
//! [`Endpoint`] parses the `--endpoint` flag, [`serve`] binds the socket (parent directory
//! created, stale socket removed, mode 0660), runs the router until [`shutdown_signal`] fires,
//! lets in-flight calls finish and removes the socket. [`init_logging`] sets up `tracing`.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tracing_subscriber::EnvFilter;

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
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A CSI endpoint: the path of a unix socket, written `unix:///path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    path: PathBuf,
}

impl Endpoint {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl FromStr for Endpoint {
    type Err = ServeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("unix://")
            .ok_or_else(|| ServeError::Endpoint(s.to_owned()))?;
        let path = Path::new(rest);
        let normal = path.is_absolute()
            && path.file_name().is_some()
            && !path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if !normal {
            return Err(ServeError::Endpoint(s.to_owned()));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

/// Log line format, `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), output to
/// stderr in the chosen format. Calling it twice is harmless (the second call does nothing).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on the first SIGTERM or SIGINT. A second signal ends the process at once, for an
/// operator who does not want to wait for in-flight calls.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; the process stops only when killed");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested: finishing in-flight calls");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Binds the socket of `endpoint`: creates its parent directory, removes a stale socket left
/// by an earlier run (but nothing that is not a socket), and restricts the socket to owner and
/// group (0660) so other users of the host cannot call the plugin.
pub fn bind(endpoint: &Endpoint) -> Result<UnixListener, ServeError> {
    let path = endpoint.path();
    let io_err = |source| ServeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io_err)?,
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    Ok(listener)
}

/// How long in-flight calls may run after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves `router` on `listener` (from [`bind`]) until `shutdown` resolves, waits for in-flight
/// calls, then removes the socket file.
pub async fn serve(
    router: Router,
    listener: UnixListener,
    endpoint: &Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tracing::info!(%endpoint, "serving");
    // In-flight calls get a bounded time to finish: one stuck on a dead mount must not keep
    // the process alive until the orchestrator kills it without cleaning up.
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = fired_tx.send(());
    };
    let server = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), signal);
    let grace = async move {
        match fired_rx.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = server => result,
        () = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight calls did not finish in time; stopping anyway");
            Ok(())
        }
    };
    match std::fs::remove_file(endpoint.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the socket"),
    }
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_absolute_unix_paths_only() {
        let ok: Endpoint = "unix:///csi/csi.sock".parse().expect("valid endpoint");
        assert_eq!(ok.path(), Path::new("/csi/csi.sock"));
        assert_eq!(ok.to_string(), "unix:///csi/csi.sock");
        for bad in [
            "/csi/csi.sock",
            "tcp://127.0.0.1:10000",
            "unix://csi.sock",
            "unix:///csi/../etc/x.sock",
            "unix:///",
            "",
        ] {
            let err = bad.parse::<Endpoint>().expect_err(bad);
            assert!(err.to_string().contains("--endpoint"), "{err}");
        }
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("sub/dir/csi.sock");
        let ep: Endpoint = format!("unix://{}", sock.display()).parse().expect("ep");
        let first = bind(&ep).expect("first bind creates the parent directory");
        drop(first);
        assert!(sock.exists(), "a dropped listener leaves a stale socket");
        let _second = bind(&ep).expect("stale socket is replaced");
        let mode = std::fs::metadata(&sock).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"keep me").expect("write");
        let ep: Endpoint = format!("unix://{}", file.display()).parse().expect("ep");
        assert!(matches!(bind(&ep), Err(ServeError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
    }
}

/// Flags every CSI plugin binary of this project takes, following the CSI sidecar conventions.
/// Each has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// CSI endpoint to serve on.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    /// CSI driver name, as in the CSIDriver object and the StorageClass `provisioner`.
    #[arg(long, env = "DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME, value_parser = parse_driver_name)]
    pub driver_name: String,
    /// Log line format; the level is set with RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Address (host:port) to serve Prometheus metrics on; none when unset.
    #[arg(long, env = "METRICS_ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The driver name used when `--driver-name` is not given.
pub const DEFAULT_DRIVER_NAME: &str = "gluster.heketi.csi";

/// Checks a CSI driver name: at most 63 characters, letters, digits, `-`, `.` and `_`, starting
/// and ending with a letter (the CSI spec and the CSIDriver object require this).
pub fn parse_driver_name(name: &str) -> Result<String, String> {
    let bytes = name.as_bytes();
    let fits = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if fits {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a valid CSI driver name: use at most 63 letters, digits, '-', '.' \
             or '_', starting and ending with a letter (e.g. {DEFAULT_DRIVER_NAME})"
        ))
    }
}

#[cfg(test)]
mod driver_name_tests {
    use super::parse_driver_name;

    #[test]
    fn driver_names_follow_the_csi_rules() {
        for ok in ["gluster.heketi.csi", "a", "ab", "x-y_z.w"] {
            assert!(parse_driver_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "abc1",
            "gluster.heketi.csi.",
            "a b",
            long.as_str(),
        ] {
            assert!(parse_driver_name(bad).is_err(), "{bad}");
        }
    }
}
