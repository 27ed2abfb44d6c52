//! Temporary FUSE mounts of volumes on this machine, used to copy a volume's data into its
//! clone, and the walks that check such a copy against its source and clear a rejected one.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use walkdir::WalkDir;

use crate::exec::{self, CommandError};

/// How far before the start of a copy a change still rejects it.
///
/// The ctime a Gluster client reports was stamped by another machine's clock — with
/// `features.ctime` (Gluster's default) the clock of the client that made the change, without
/// it the clock of the brick's server — and is compared here with this server's clock. A
/// change made just after the copy started, by a machine whose clock is `d` behind ours,
/// carries a ctime `d` before the start; it is only caught if the margin is at least `d`.
/// Pools synchronised by NTP or chrony differ by milliseconds; two seconds also cover a
/// loosely synchronised pool and brick file systems with whole-second timestamps. Erring
/// this way costs little: a change made in the two seconds before a copy starts rejects that
/// copy needlessly, and the next attempt begins later. Erring the other way would accept an
/// inconsistent copy silently. Clocks further apart than this are not covered.
pub const CTIME_SKEW_MARGIN: Duration = Duration::from_secs(2);

const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// Mounts `host:/volume` on `dir` (created if needed) with the other hosts as backup volfile
/// servers.
pub async fn mount(
    hosts: &[String],
    volume: &str,
    dir: &Path,
    log_file: &Path,
) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir).map_err(|source| CommandError::Spawn {
        program: format!("mkdir {}", dir.display()),
        source,
    })?;
    let Some((first, rest)) = hosts.split_first() else {
        return Err(CommandError::Failed {
            command: format!("mount {volume}"),
            code: None,
            message: "the volume has no hosts".into(),
        });
    };
    let mut opts = format!("log-file={}", log_file.display());
    if !rest.is_empty() {
        opts.push_str(",backup-volfile-servers=");
        opts.push_str(&rest.join(":"));
    }
    let argv = vec![
        "mount".to_owned(),
        "-t".to_owned(),
        "glusterfs".to_owned(),
        "-o".to_owned(),
        opts,
        format!("{first}:/{volume}"),
        dir.display().to_string(),
    ];
    exec::run(&argv, &format!("mount {first}:/{volume}"), MOUNT_TIMEOUT)
        .await
        .map(drop)
}

/// Unmounts `dir`; falls back to a lazy unmount when the plain one fails, then removes the
/// (empty) directory.
pub async fn unmount(dir: &Path) -> Result<(), CommandError> {
    let d = dir.display().to_string();
    let plain = exec::run(
        &["umount".to_owned(), d.clone()],
        &format!("umount {d}"),
        UNMOUNT_TIMEOUT,
    )
    .await;
    if plain.is_err() {
        exec::run(
            &["umount".to_owned(), "-l".to_owned(), d.clone()],
            &format!("umount -l {d}"),
            UNMOUNT_TIMEOUT,
        )
        .await?;
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Copies the contents of `src` into `dst` preserving ownership, modes, times, links and
/// the attributes of the root directory itself.
pub async fn copy_tree(src: &Path, dst: &Path, timeout: Duration) -> Result<(), CommandError> {
    let from: PathBuf = src.join(".");
    let argv = vec![
        "cp".to_owned(),
        "-a".to_owned(),
        "--".to_owned(),
        from.display().to_string(),
        dst.display().to_string(),
    ];
    exec::run(&argv, "cp -a", timeout).await.map(drop)
}

/// At start: unmounts and removes the temporary mounts a previous run left under `base` (a
/// copy cut short by a crash leaves its FUSE clients running) and their log files. Returns
/// the mount points that were still mounted.
pub async fn unmount_leftovers(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let base_dev = std::fs::metadata(base).map(|m| m.dev()).ok();
    let mut unmounted = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        // A mount point has another device than its parent; a dead FUSE mount fails the
        // `stat` (or hangs it, hence the bound).
        let p = path.clone();
        let dev = blocking(MOUNT_TIMEOUT, move || {
            std::fs::metadata(&p).map(|m| m.dev())
        })
        .await;
        if dev.is_ok() && dev.ok() == base_dev {
            let _ = std::fs::remove_dir(&path);
            continue;
        }
        match unmount(&path).await {
            Ok(()) => unmounted.push(path),
            Err(e) => {
                tracing::warn!(mount = %path.display(), error = %e, "cannot unmount a leftover clone mount")
            }
        }
    }
    unmounted
}

/// When the status of the file `meta` describes last changed (its ctime).
pub fn ctime_of(meta: &std::fs::Metadata) -> SystemTime {
    let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
    match u64::try_from(meta.ctime()) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        // Before 1970: older than any copy.
        Err(_) => UNIX_EPOCH,
    }
}

/// An entry found changed by [`changed_since`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// Its path relative to the root walked (`.` for the root).
    pub path: PathBuf,
    /// Its ctime; now for an entry that disappeared during the walk.
    pub ctime: SystemTime,
}

/// The first entry under `root` (`root` itself included; symbolic links are not followed,
/// their own status counts) whose status changed at or after `since`. An entry that
/// disappears during the walk counts as changed. Blocking: run it through
/// [`source_changed_since`] on a mount.
pub fn changed_since(root: &Path, since: SystemTime) -> io::Result<Option<Changed>> {
    let relative = |p: &Path| match p.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
        Ok(r) => r.to_path_buf(),
        Err(_) => p.to_path_buf(),
    };
    let vanished = |p: &Path| Changed {
        path: relative(p),
        ctime: SystemTime::now(),
    };
    for entry in WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                return Ok(Some(vanished(e.path().unwrap_or(root))));
            }
            Err(e) => return Err(e.into()),
        };
        // `DirEntry::metadata` is an lstat here (links are not followed).
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                return Ok(Some(vanished(entry.path())));
            }
            Err(e) => return Err(e.into()),
        };
        let ctime = ctime_of(&meta);
        if ctime >= since {
            return Ok(Some(Changed {
                path: relative(entry.path()),
                ctime,
            }));
        }
    }
    Ok(None)
}

/// Removes everything under `root` but `root` itself (symbolic links are removed, never
/// followed). Blocking: run it through [`clear`] on a mount.
pub fn empty_dir(root: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Runs blocking file-system work on a FUSE mount off the async threads, bounded by
/// `timeout`: a dead mount can hang a `stat` (the thread is then left behind).
async fn blocking<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(io::Error::other(join)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", timeout.as_secs()),
        )),
    }
}

/// [`changed_since`] on the mount `root`, off the async threads and under `timeout`.
pub async fn source_changed_since(
    root: &Path,
    since: SystemTime,
    timeout: Duration,
) -> io::Result<Option<Changed>> {
    let root = root.to_path_buf();
    blocking(timeout, move || changed_since(&root, since)).await
}

/// [`empty_dir`] on the mount `root`, off the async threads and under `timeout`.
pub async fn clear(root: &Path, timeout: Duration) -> io::Result<()> {
    let root = root.to_path_buf();
    blocking(timeout, move || empty_dir(&root)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Longer than the coarse clock file systems stamp times with (one jiffy, at most 10 ms).
    const TICK: Duration = Duration::from_millis(50);

    /// A tree with a nested file, a file at the top, a subdirectory and a symbolic link to a
    /// file outside the tree. Returns (tree, outside directory).
    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let t = tempfile::tempdir().expect("tree");
        let out = tempfile::tempdir().expect("outside");
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).expect("mkdir");
        std::fs::write(r.join("a/b/f"), b"one").expect("write");
        std::fs::write(r.join("top"), b"top").expect("write");
        std::fs::create_dir(r.join("empty")).expect("mkdir");
        std::fs::write(out.path().join("target"), b"t").expect("write");
        std::os::unix::fs::symlink(out.path().join("target"), r.join("link")).expect("symlink");
        (t, out)
    }

    fn append(p: &Path) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p)
            .expect("open");
        f.write_all(b"more").expect("append");
    }

    #[test]
    fn changes_after_the_start_are_found() {
        type Change = fn(&Path, &Path);
        // (what happens after the start, where the change is found: None for nowhere, else
        // the entries it may be reported at)
        let cases: [(&str, Change, Option<&[&str]>); 8] = [
            ("nothing", |_, _| {}, None),
            (
                "a nested file is appended to",
                |r, _| append(&r.join("a/b/f")),
                Some(&["a/b/f"]),
            ),
            (
                "a file is created in a subdirectory",
                |r, _| {
                    std::fs::write(r.join("a/b/new"), b"n").expect("write");
                },
                Some(&["a/b", "a/b/new"]),
            ),
            (
                "a file's mode changes",
                |r, _| {
                    std::fs::set_permissions(r.join("top"), std::fs::Permissions::from_mode(0o600))
                        .expect("chmod");
                },
                Some(&["top"]),
            ),
            (
                "a file is removed",
                |r, _| std::fs::remove_file(r.join("top")).expect("rm"),
                Some(&["."]),
            ),
            (
                "a file is renamed",
                |r, _| {
                    std::fs::rename(r.join("a/b/f"), r.join("empty/f")).expect("mv");
                },
                Some(&["a/b", "empty", "empty/f"]),
            ),
            (
                "the link is replaced",
                |r, _| {
                    std::fs::remove_file(r.join("link")).expect("rm");
                    std::os::unix::fs::symlink("top", r.join("link")).expect("symlink");
                },
                Some(&[".", "link"]),
            ),
            // Links are not followed: the file a link points to is not part of the tree.
            (
                "the target of a link outside the tree changes",
                |_, out| {
                    append(&out.join("target"));
                },
                None,
            ),
        ];
        for (what, change, found_at) in cases {
            let (t, out) = tree();
            std::thread::sleep(TICK);
            let start = SystemTime::now();
            std::thread::sleep(TICK);
            change(t.path(), out.path());
            let found = changed_since(t.path(), start)
                .expect("walk")
                .map(|c| c.path);
            match (found_at, &found) {
                (None, None) => {}
                (Some(places), Some(p)) => assert!(
                    places.iter().any(|w| p == Path::new(w)),
                    "{what}: found at {p:?}, wanted one of {places:?}"
                ),
                _ => panic!("{what}: found {found:?}, wanted {found_at:?}"),
            }
        }
    }

    #[test]
    fn the_bound_is_inclusive_and_the_margin_reaches_back() {
        let (t, _out) = tree();
        let newest = WalkDir::new(t.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| ctime_of(&m))
            .max()
            .expect("entries");
        // A change stamped exactly at the bound counts; one a nanosecond before does not.
        assert_eq!(
            changed_since(t.path(), newest)
                .expect("walk")
                .map(|c| c.ctime),
            Some(newest)
        );
        let after = newest + Duration::from_nanos(1);
        assert_eq!(changed_since(t.path(), after).expect("walk"), None);
        // A tree written just now is seen as changing by a copy starting now, through the
        // margin.
        let start = SystemTime::now();
        assert!(
            changed_since(t.path(), start - CTIME_SKEW_MARGIN)
                .expect("walk")
                .is_some()
        );
    }

    #[test]
    fn a_vanished_root_counts_as_changed() {
        let t = tempfile::tempdir().expect("tree");
        let gone = t.path().join("gone");
        assert_eq!(
            changed_since(&gone, SystemTime::now())
                .expect("walk")
                .map(|c| c.path),
            Some(PathBuf::from("."))
        );
    }

    #[test]
    fn emptying_keeps_the_root_and_nothing_else() {
        let (t, out) = tree();
        let r = t.path();
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o2770)).expect("chmod");
        empty_dir(r).expect("empty");
        assert_eq!(std::fs::read_dir(r).expect("list").count(), 0);
        assert_eq!(
            std::fs::metadata(r).expect("stat").mode() & 0o7777,
            0o2770,
            "the root itself is kept as it is"
        );
        // The link was removed, not followed.
        assert!(out.path().join("target").exists());
    }

    #[tokio::test]
    async fn leftovers_that_are_not_mounted_are_just_removed() {
        let base = tempfile::tempdir().expect("base");
        let b = base.path();
        std::fs::create_dir(b.join("x-src")).expect("mkdir");
        std::fs::create_dir(b.join("x-check")).expect("mkdir");
        std::fs::write(b.join("x-src.log"), b"log").expect("write");
        assert!(unmount_leftovers(b).await.is_empty());
        assert_eq!(std::fs::read_dir(b).expect("list").count(), 0);
        // No directory at all (a server that never cloned).
        assert!(unmount_leftovers(&b.join("absent")).await.is_empty());
    }

    #[tokio::test]
    async fn the_mount_walks_run_off_the_async_threads() {
        let (t, _out) = tree();
        let found = source_changed_since(t.path(), UNIX_EPOCH, Duration::from_secs(30))
            .await
            .expect("walk");
        assert_eq!(found.map(|c| c.path), Some(PathBuf::from(".")));
        clear(t.path(), Duration::from_secs(30))
            .await
            .expect("clear");
        assert_eq!(std::fs::read_dir(t.path()).expect("list").count(), 0);
    }

    #[tokio::test]
    async fn copy_keeps_modes_groups_and_links() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        let s = src.path();
        std::fs::create_dir(s.join("sub")).expect("mkdir");
        std::fs::write(s.join("sub/f"), b"data").expect("write");
        std::fs::set_permissions(s.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        std::os::unix::fs::chown(s, None, Some(2001)).expect("chgrp root");
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
        std::os::unix::fs::symlink("sub/f", s.join("link")).expect("symlink");
        copy_tree(s, dst.path(), Duration::from_secs(30))
            .await
            .expect("copy");
        let d = dst.path();
        assert_eq!(std::fs::read(d.join("sub/f")).expect("read"), b"data");
        assert_eq!(
            std::fs::metadata(d.join("sub/f")).expect("stat").mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_link(d.join("link")).expect("link"),
            Path::new("sub/f")
        );
        let root = std::fs::metadata(d).expect("stat root");
        assert_eq!(root.gid(), 2001);
        assert_eq!(root.mode() & 0o7777, 0o2775);
    }
}
