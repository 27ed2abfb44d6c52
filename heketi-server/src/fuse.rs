//! Temporary FUSE mounts of volumes on this machine, used to copy a volume's data into its
//! clone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::{self, CommandError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
