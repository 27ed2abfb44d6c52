//! Checks on the paths the container orchestrator hands us.
//!
//! Staging and target paths must be absolute and already normalised: no `.` or `..` segment, no
//! empty segment (`//`), no control character. When `--kubelet-dir` is set they must lie strictly
//! under it. The staging path is also passed to the `mount.glusterfs` helper, a shell script
//! that splits its arguments on white space, so it is restricted further to characters that
//! survive that script unchanged.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Longest path accepted (the kernel's PATH_MAX is 4096 including the NUL).
const MAX_PATH: usize = 4095;

/// Whether `p` is absolute and normalised: it starts with `/`, and no segment is empty, `.` or
/// `..` (a single trailing `/` is tolerated).
pub fn is_normalised(p: &Path) -> bool {
    let bytes = p.as_os_str().as_bytes();
    let Some(rest) = bytes.strip_prefix(b"/") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    rest.split(|b| *b == b'/')
        .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..")
}

/// Characters the `mount.glusterfs` script passes through unchanged: no white space, no quote,
/// no glob or other shell-special character.
pub fn is_shell_inert(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b'.' | b'_' | b'-' | b'~' | b'+' | b'@' | b':' | b'=' | b'%'
        )
}

/// Which request field a path came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `staging_target_path`.
    Staging,
    /// `target_path`.
    Target,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Staging => "staging_target_path",
            Self::Target => "target_path",
        }
    }
}

/// Validates a path field of a request and returns it without a trailing `/`.
pub fn validate(field: Field, raw: &str, kubelet_dir: Option<&Path>) -> Result<PathBuf, Error> {
    let name = field.name();
    if raw.is_empty() {
        return Err(Error::InvalidArgument(format!("{name} is required")));
    }
    if raw.len() > MAX_PATH {
        return Err(Error::InvalidArgument(format!(
            "{name} is longer than {MAX_PATH} bytes"
        )));
    }
    if raw.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::InvalidArgument(format!(
            "{name} {raw:?} contains a control character"
        )));
    }
    let trimmed = if raw.len() > 1 {
        raw.strip_suffix('/').unwrap_or(raw)
    } else {
        raw
    };
    let path = Path::new(trimmed);
    if !is_normalised(path) || path == Path::new("/") {
        return Err(Error::InvalidArgument(format!(
            "{name} {raw:?} must be an absolute, normalised path (no '.', '..' or empty segments)"
        )));
    }
    if field == Field::Staging
        && let Some(bad) = raw.bytes().find(|b| !is_shell_inert(*b))
    {
        return Err(Error::InvalidArgument(format!(
            "{name} {raw:?} contains {:?}, which the mount.glusterfs helper cannot take; use \
                 letters, digits and / . _ - ~ + @ : = %",
            char::from(bad)
        )));
    }
    if let Some(root) = kubelet_dir
        && (path == root || !path.starts_with(root))
    {
        return Err(Error::InvalidArgument(format!(
            "{name} {raw:?} is not under the kubelet directory {}",
            root.display()
        )));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_paths() {
        for ok in [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/a/.hidden",
            "/a/..b",
            "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount",
        ] {
            assert!(is_normalised(Path::new(ok)), "{ok}");
        }
        for bad in [
            "", "a", "a/b", "/a/../b", "/a/./b", "/a//b", "/..", "/.", "/a/..", "//a", "./a",
        ] {
            assert!(!is_normalised(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn validate_table() {
        let kubelet = Path::new("/var/lib/kubelet");
        type Case<'a> = (Field, &'a str, Option<&'a Path>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (Field::Target, "", None, Err("target_path is required")),
            (
                Field::Staging,
                "",
                None,
                Err("staging_target_path is required"),
            ),
            (
                Field::Target,
                "relative/dir",
                None,
                Err("absolute, normalised"),
            ),
            (
                Field::Target,
                "/a/../etc",
                None,
                Err("absolute, normalised"),
            ),
            (Field::Target, "/a/./b", None, Err("absolute, normalised")),
            (Field::Target, "/", None, Err("absolute, normalised")),
            (Field::Target, "/a/b\n", None, Err("control character")),
            (Field::Target, "/a/b/", None, Ok("/a/b")),
            (
                Field::Target,
                "/tmp/with space/x",
                None,
                Ok("/tmp/with space/x"),
            ),
            (
                Field::Staging,
                "/tmp/with space/x",
                None,
                Err("mount.glusterfs"),
            ),
            (Field::Staging, "/tmp/a;b", None, Err("mount.glusterfs")),
            (Field::Staging, "/tmp/a$b", None, Err("mount.glusterfs")),
            (Field::Staging, "/tmp/a,b", None, Err("mount.glusterfs")),
            (Field::Staging, "/tmp/a*", None, Err("mount.glusterfs")),
            (
                Field::Staging,
                "/var/lib/kubelet/plugins/kubernetes.io/csi/gluster.heketi.csi/0ab/globalmount",
                Some(kubelet),
                Ok("/var/lib/kubelet/plugins/kubernetes.io/csi/gluster.heketi.csi/0ab/globalmount"),
            ),
            (
                Field::Target,
                "/var/lib/kubelet",
                Some(kubelet),
                Err("not under the kubelet directory"),
            ),
            (
                Field::Target,
                "/var/lib/kubelet-other/x",
                Some(kubelet),
                Err("not under the kubelet directory"),
            ),
            (
                Field::Target,
                "/tmp/x",
                Some(kubelet),
                Err("not under the kubelet directory"),
            ),
        ];
        for (field, raw, root, want) in cases {
            let got = validate(*field, raw, *root);
            match (want, got) {
                (Ok(p), Ok(got)) => assert_eq!(got, Path::new(p), "{raw}"),
                (Err(fragment), Err(Error::InvalidArgument(msg))) => {
                    assert!(msg.contains(fragment), "{raw}: {msg}")
                }
                (want, got) => panic!("{raw}: want {want:?}, got {got:?}"),
            }
        }
    }
}
