//! Mounts of the testbed: finding them in the mount table and removing them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub path: PathBuf,
    /// File system type (`fuse.glusterfs`, …).
    pub fstype: String,
    /// Mount source (`198.18.3.11:/vol`, …).
    pub source: String,
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let path = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next().unwrap_or(""));
            Some(MountEntry {
                path: PathBuf::from(path),
                fstype,
                source,
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Current mounts of this process's mount namespace.
pub fn current() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Mounts at or below `dir`, deepest (and latest) first.
pub fn under(dir: &Path) -> Vec<MountEntry> {
    let mut found: Vec<MountEntry> = current()
        .into_iter()
        .filter(|m| m.path.starts_with(dir))
        .collect();
    found.reverse();
    found.sort_by_key(|m| std::cmp::Reverse(m.path.components().count()));
    found
}

/// Whether something is mounted at exactly `path`.
pub fn is_mounted(path: &Path) -> bool {
    current().iter().any(|m| m.path == path)
}

/// Unmounts everything stacked at `path`: a plain unmount first, a lazy (detaching) one when the
/// mount is busy or the call hangs on a dead FUSE server. Not mounted is fine.
pub async fn unmount(path: &Path) -> Result<()> {
    for _ in 0..16 {
        if !is_mounted(path) {
            return Ok(());
        }
        let p = path.to_path_buf();
        let plain = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || umount2(&p, MntFlags::empty())),
        )
        .await;
        match plain {
            Ok(Ok(Ok(()))) | Ok(Ok(Err(Errno::EINVAL | Errno::ENOENT))) => continue,
            _ => {
                let p = path.to_path_buf();
                let lazy =
                    tokio::task::spawn_blocking(move || umount2(&p, MntFlags::MNT_DETACH)).await?;
                match lazy {
                    Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => continue,
                    Err(e) => bail!("cannot unmount {}: {e}", path.display()),
                }
            }
        }
    }
    if is_mounted(path) {
        bail!("{} is still mounted", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw
98 22 0:50 / /tmp/gcsi-x/mnt/r3 rw,relatime shared:60 - fuse.glusterfs 198.18.3.11:/r3 rw,user_id=0
99 98 0:51 / /tmp/gcsi-x/mnt/r3/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].path, PathBuf::from("/tmp/gcsi-x/mnt/r3"));
        assert_eq!(m[1].fstype, "fuse.glusterfs");
        assert_eq!(m[1].source, "198.18.3.11:/r3");
        assert_eq!(m[2].path, PathBuf::from("/tmp/gcsi-x/mnt/r3/with space"));
    }

    #[test]
    fn unescape_leaves_plain_text_alone() {
        assert_eq!(unescape(r"a\040b"), "a b");
        assert_eq!(unescape(r"a\b"), r"a\b");
        assert_eq!(unescape("plain"), "plain");
    }
}
