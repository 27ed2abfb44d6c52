//! Mount-related system calls, each on the blocking pool under a time limit: reading the mount
//! table, bind mounts, remounts, unmounts, directories, and probing a mount with `statvfs`.
//!
//! A dead FUSE mount answers `ENOTCONN`; a hung one (server gone, client waiting for its ping
//! timeout) blocks the caller. [`Prober`] never lets a caller wait longer than its limit and
//! never starts a second probe of a path whose first probe is still stuck.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, blocking};
use crate::mountinfo::MountTable;

/// Limit for one mount-table read, bind mount, unmount or directory operation.
pub const SYSCALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most mounts stacked at one path that an unmount loop removes.
const MAX_STACKED: usize = 16;

/// Reads `/proc/self/mountinfo`.
pub async fn mount_table() -> Result<MountTable, Error> {
    blocking("reading /proc/self/mountinfo", SYSCALL_TIMEOUT, || {
        MountTable::read().map_err(|e| Error::io("read", "/proc/self/mountinfo", e))
    })
    .await
}

/// Bind-mounts `source` on `target`, then applies `flags` (read-only, nosuid, …) with a
/// remount pass: a bind mount ignores them on the first call.
pub async fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), Error> {
    let (source, target) = (source.to_path_buf(), target.to_path_buf());
    let what = format!("bind mount of {} on {}", source.display(), target.display());
    blocking(what, SYSCALL_TIMEOUT, move || {
        nix::mount::mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind mount on", &target, e))?;
        if !flags.is_empty() {
            let remount = nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None::<&str>,
            );
            if let Err(e) = remount {
                // Leave nothing half-done: a read-only publish must never end up writable.
                let _ = nix::mount::umount2(&target, MntFlags::MNT_DETACH);
                return Err(Error::sys("remount (read-only/flags) of", &target, e));
            }
        }
        Ok(())
    })
    .await
}

/// Unmounts everything mounted at `path` (stacked mounts included); lazily when busy. A path
/// that is not a mount point, or does not exist, is fine.
pub async fn unmount_all(path: &Path) -> Result<(), Error> {
    for _ in 0..MAX_STACKED {
        if mount_table().await?.count_at(path) == 0 {
            return Ok(());
        }
        unmount_once(path).await?;
    }
    Err(Error::FailedPrecondition(format!(
        "{} still has mounts after {MAX_STACKED} unmounts",
        path.display()
    )))
}

async fn unmount_once(path: &Path) -> Result<(), Error> {
    let path = path.to_path_buf();
    let what = format!("unmount of {}", path.display());
    blocking(what, SYSCALL_TIMEOUT, move || {
        match nix::mount::umount2(&path, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EBUSY) => {
                tracing::info!(path = %path.display(), "busy; unmounting lazily");
                match nix::mount::umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                    Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(Error::sys("lazy unmount of", &path, e)),
                }
            }
            Err(e) => Err(Error::sys("unmount of", &path, e)),
        }
    })
    .await
}

/// Creates `path` and its parents.
pub async fn create_dir(path: &Path) -> Result<(), Error> {
    let path = path.to_path_buf();
    let what = format!("creating {}", path.display());
    blocking(what, SYSCALL_TIMEOUT, move || {
        std::fs::create_dir_all(&path).map_err(|e| Error::io("cannot create directory", &path, e))
    })
    .await
}

/// Removes the (empty) directory `path`; a missing one is fine. Never removes contents: a
/// directory with files in it after its unmount is reported, not deleted.
pub async fn remove_dir(path: &Path) -> Result<(), Error> {
    let path = path.to_path_buf();
    let what = format!("removing {}", path.display());
    blocking(what, SYSCALL_TIMEOUT, move || {
        match std::fs::remove_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove directory", &path, e)),
        }
    })
    .await
}

/// `path` with its parent directory resolved (symbolic links followed), as it appears in the
/// mount table; the last component is kept as is because it may be a dead mount that cannot be
/// looked at. A parent that does not exist is kept as given.
pub async fn resolve(path: &Path) -> Result<PathBuf, Error> {
    let path = path.to_path_buf();
    let what = format!("resolving {}", path.display());
    blocking(what, SYSCALL_TIMEOUT, move || {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(path);
        };
        match parent.canonicalize() {
            Ok(p) => Ok(p.join(name)),
            Err(_) => Ok(path),
        }
    })
    .await
}

/// What `statvfs` found on a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Total bytes.
    pub bytes_total: u64,
    /// Bytes in use.
    pub bytes_used: u64,
    /// Bytes available to unprivileged users.
    pub bytes_available: u64,
    /// Total inodes.
    pub inodes_total: u64,
    /// Inodes in use.
    pub inodes_used: u64,
    /// Free inodes.
    pub inodes_available: u64,
}

impl Usage {
    fn from_statvfs(s: &nix::sys::statvfs::Statvfs) -> Self {
        let frsize = s.fragment_size();
        let blocks = s.blocks();
        let free = s.blocks_free();
        let files = s.files();
        let files_free = s.files_free();
        Self {
            bytes_total: blocks.saturating_mul(frsize),
            bytes_used: blocks.saturating_sub(free).saturating_mul(frsize),
            bytes_available: s.blocks_available().saturating_mul(frsize),
            inodes_total: files,
            inodes_used: files.saturating_sub(files_free),
            inodes_available: files_free,
        }
    }
}

/// The state of a mount as seen by `statvfs` alone; [`crate::condition`] says what it means
/// together with the state of the mount's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answered.
    Alive(Usage),
    /// It answered with an error that means its client or its servers are gone (the kernel
    /// answers ENOTCONN for a FUSE connection without a server; a client without bricks
    /// answers ENOTCONN or EIO too).
    Dead(Errno),
    /// It answered with another error.
    Failed(Errno),
    /// It did not answer within the limit (or an earlier probe of it is still stuck).
    Hung(Duration),
}

/// Error numbers that mean a network or FUSE file system lost its server side.
fn means_dead(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOTCONN
            | Errno::EIO
            | Errno::ESTALE
            | Errno::EHOSTDOWN
            | Errno::ECONNABORTED
            | Errno::ECONNRESET
            | Errno::ECONNREFUSED
            | Errno::ETIMEDOUT
    )
}

/// Probes mounts with `statvfs`, at most one stuck probe per path.
#[derive(Clone, Debug)]
pub struct Prober {
    limit: Duration,
    in_flight: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Prober {
    /// A prober giving up after `limit`.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            in_flight: Arc::default(),
        }
    }

    /// Runs `statvfs(path)` and classifies the outcome.
    pub async fn probe(&self, path: &Path) -> Health {
        {
            let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(path.to_path_buf()) {
                return Health::Hung(self.limit);
            }
        }
        let in_flight = Arc::clone(&self.in_flight);
        let owned = path.to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let r = nix::sys::statvfs::statvfs(&owned);
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&owned);
            r
        });
        match tokio::time::timeout(self.limit, task).await {
            Ok(Ok(Ok(s))) => Health::Alive(Usage::from_statvfs(&s)),
            Ok(Ok(Err(e))) if means_dead(e) => Health::Dead(e),
            Ok(Ok(Err(e))) => Health::Failed(e),
            Ok(Err(_join)) => Health::Failed(Errno::EIO),
            Err(_) => Health::Hung(self.limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_of_a_healthy_directory_reports_usage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prober = Prober::new(Duration::from_secs(5));
        match prober.probe(dir.path()).await {
            Health::Alive(u) => {
                assert!(u.bytes_total > 0);
                assert!(u.bytes_used <= u.bytes_total);
                assert!(u.bytes_available <= u.bytes_total);
                assert!(u.inodes_used <= u.inodes_total);
            }
            other => panic!("{other:?}"),
        }
        let missing = dir.path().join("missing");
        assert_eq!(prober.probe(&missing).await, Health::Failed(Errno::ENOENT));
    }

    #[test]
    fn connection_errnos_mean_the_server_side_is_gone() {
        for e in [Errno::ENOTCONN, Errno::EIO, Errno::ESTALE, Errno::ETIMEDOUT] {
            assert!(means_dead(e), "{e}");
        }
        for e in [Errno::ENOENT, Errno::EACCES, Errno::EOVERFLOW] {
            assert!(!means_dead(e), "{e}");
        }
    }

    #[test]
    fn usage_follows_df() {
        // df: size = blocks*frsize, used = (blocks-bfree)*frsize, avail = bavail*frsize.
        let dir = tempfile::tempdir().expect("tempdir");
        let s = nix::sys::statvfs::statvfs(dir.path()).expect("statvfs");
        let u = Usage::from_statvfs(&s);
        let fr = s.fragment_size();
        assert_eq!(u.bytes_total, s.blocks() * fr);
        assert_eq!(u.bytes_available, s.blocks_available() * fr);
        assert_eq!(u.inodes_available, s.files_free());
    }

    #[tokio::test]
    async fn unmounting_a_plain_directory_or_a_missing_path_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        unmount_all(dir.path()).await.expect("not a mount point");
        unmount_all(&dir.path().join("missing"))
            .await
            .expect("missing");
        let sub = dir.path().join("a/b");
        create_dir(&sub).await.expect("create");
        remove_dir(&sub).await.expect("remove");
        remove_dir(&sub).await.expect("remove again");
        std::fs::write(dir.path().join("a/file"), b"x").expect("write");
        assert!(
            remove_dir(&dir.path().join("a")).await.is_err(),
            "never removes contents"
        );
    }
}
