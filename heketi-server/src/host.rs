//! File-system work on the nodes: checking device directories, making and removing brick
//! directories.
//!
//! [`LocalBricks`] does this work directly on this machine's file system. That is right when
//! every device path is reachable here under the same name — true for the testbed (namespaced
//! glusterds share the machine's file system) and for a single-host quickstart. A server for
//! remote nodes would implement [`BrickHost`] with a remote runner (e.g. over SSH); nothing
//! else in the server needs to change.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::model::Brick;

/// Brick-directory work on the node that owns a device.
pub trait BrickHost: Send + Sync + 'static {
    /// Checks that `path` on the node at `host` is a directory a brick can be made in and
    /// returns the size of the file system holding it, in KiB.
    fn probe_device(&self, host: &str, path: &str) -> io::Result<u64>;

    /// Makes the brick root `brick.path` (and its parent). With a `gid`, the root is
    /// group-owned by it with mode 2775 (setgid, group-writable); otherwise mode 0755.
    fn create_brick(&self, brick: &Brick, gid: Option<u32>) -> io::Result<()>;

    /// Removes the brick's directory and everything in it; a brick that is already gone is
    /// not an error.
    fn remove_brick(&self, brick: &Brick) -> io::Result<()>;
}

/// [`BrickHost`] acting on this machine's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalBricks;

impl BrickHost for LocalBricks {
    fn probe_device(&self, _host: &str, path: &str) -> io::Result<u64> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let bytes = (st.blocks() as u64).saturating_mul(st.fragment_size() as u64);
        Ok(bytes / 1024)
    }

    fn create_brick(&self, brick: &Brick, gid: Option<u32>) -> io::Result<()> {
        let root = Path::new(&brick.path);
        std::fs::create_dir_all(brick.dir())?;
        match std::fs::create_dir(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match gid {
            Some(g) => {
                std::os::unix::fs::chown(root, None, Some(g))?;
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o2775))
            }
            None => std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)),
        }
    }

    fn remove_brick(&self, brick: &Brick) -> io::Result<()> {
        let dir = brick.dir();
        // Only ever remove a directory this server named.
        let ours = Path::new(&dir)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("brick_"));
        if !ours {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to remove {dir}: not a brick directory"),
            ));
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn brick(dev: &Path, id: &str) -> Brick {
        Brick {
            id: id.into(),
            device: "d".into(),
            node: "n".into(),
            host: "h".into(),
            path: dev
                .join(format!("brick_{id}"))
                .join("brick")
                .display()
                .to_string(),
            size_kib: 1,
        }
    }

    #[test]
    fn bricks_are_made_with_group_and_removed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let b = brick(dev.path(), "abc");
        LocalBricks.create_brick(&b, Some(2001)).expect("create");
        let meta = std::fs::metadata(&b.path).expect("stat");
        assert_eq!(meta.gid(), 2001);
        assert_eq!(meta.mode() & 0o7777, 0o2775);
        std::fs::write(Path::new(&b.path).join("f"), b"x").expect("write");
        LocalBricks.remove_brick(&b).expect("remove");
        assert!(!Path::new(&b.dir()).exists());
        LocalBricks.remove_brick(&b).expect("second remove is fine");
    }

    #[test]
    fn devices_are_probed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let kib = LocalBricks
            .probe_device("h", &dev.path().display().to_string())
            .expect("probe");
        assert!(kib > 0);
        let file = dev.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(
            LocalBricks
                .probe_device("h", &file.display().to_string())
                .is_err()
        );
        assert!(LocalBricks.probe_device("h", "/nonexistent-hs").is_err());
    }

    #[test]
    fn only_brick_directories_are_removed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let mut b = brick(dev.path(), "abc");
        b.path = dev.path().join("precious/brick").display().to_string();
        std::fs::create_dir_all(&b.path).expect("mkdir");
        assert!(LocalBricks.remove_brick(&b).is_err());
        assert!(Path::new(&b.path).exists());
    }
}
