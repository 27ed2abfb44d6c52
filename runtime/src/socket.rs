//! The unix socket a plugin serves on: [`Endpoint`] parses the `--endpoint` flag
//! (`unix:///absolute/path`), [`bind`] binds it (parent directory created, stale socket removed,
//! mode 0660).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::UnixListener;

use crate::ServeError;

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
