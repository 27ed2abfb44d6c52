//! The mount table of the plugin's mount namespace, from `/proc/self/mountinfo`.
//!
//! Every decision of the Node service (is the staging path mounted, with which volume, which
//! targets are bind mounts of it) reads this table afresh, so a newly started plugin adopts
//! whatever an earlier one left mounted without any state of its own.
//!
//! A line looks like (see proc(5)):
//!
//! ```text
//! 199 30 0:48 / /var/lib/kubelet/…/globalmount rw,relatime shared:120 - fuse.glusterfs 10.0.0.11:/vol rw,user_id=0
//! id  parent dev root mount-point     per-mount options  [optional fields] - fstype source super options
//! ```
//!
//! Space, tab, newline and backslash in paths are written as `\040`, `\011`, `\012`, `\134`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The file type of Gluster FUSE mounts.
pub const GLUSTERFS_FSTYPE: &str = "fuse.glusterfs";

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount.
    pub mount_id: u32,
    /// Id of the parent mount.
    pub parent_id: u32,
    /// Device (`major`, `minor`) of the file system; bind mounts share it with their source.
    pub device: (u32, u32),
    /// Directory of the file system that is mounted here (`/` for a whole file system).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`, …).
    pub mount_options: Vec<String>,
    /// Optional fields (`shared:N`, `master:N`, …).
    pub optional_fields: Vec<String>,
    /// File system type, e.g. `fuse.glusterfs`.
    pub fstype: String,
    /// Mount source, e.g. `10.0.0.11:/vol`.
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Whether this is a Gluster FUSE mount.
    pub fn is_glusterfs(&self) -> bool {
        self.fstype == GLUSTERFS_FSTYPE
    }

    /// The Gluster volume of a Gluster mount (`host:/vol` or `host:vol` → `vol`).
    pub fn gluster_volume(&self) -> Option<&str> {
        if !self.is_glusterfs() {
            return None;
        }
        let (_, path) = self.source.split_once(':')?;
        let volume = path.trim_start_matches('/');
        let volume = volume.split('/').next().unwrap_or(volume);
        (!volume.is_empty()).then_some(volume)
    }

    /// Whether the mount is read-only.
    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let mount_id = fields.next()?.parse().ok()?;
        let parent_id = fields.next()?.parse().ok()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let device = (major.parse().ok()?, minor.parse().ok()?);
        let root = PathBuf::from(unescape(fields.next()?));
        let mount_point = PathBuf::from(unescape(fields.next()?));
        let mount_options = split_options(fields.next()?);
        let mut optional_fields = Vec::new();
        loop {
            match fields.next()? {
                "-" => break,
                field => optional_fields.push(field.to_owned()),
            }
        }
        let fstype = fields.next()?.to_owned();
        let source = unescape(fields.next()?).to_string_lossy().into_owned();
        let super_options = split_options(fields.next().unwrap_or_default());
        if fstype.is_empty() || !mount_point.is_absolute() {
            return None;
        }
        Some(Self {
            mount_id,
            parent_id,
            device,
            root,
            mount_point,
            mount_options,
            optional_fields,
            fstype,
            source,
            super_options,
        })
    }
}

fn split_options(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Decodes the `\NNN` octal escapes the kernel writes for special bytes.
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// A snapshot of the mount table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountTable {
    entries: Vec<MountInfo>,
}

impl MountTable {
    /// Parses the text of a mountinfo file; lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        Self {
            entries: text.lines().filter_map(MountInfo::parse).collect(),
        }
    }

    /// Reads `/proc/self/mountinfo` (blocking; cheap, it never touches a mounted file system).
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Every mount, in the kernel's order.
    pub fn entries(&self) -> &[MountInfo] {
        &self.entries
    }

    /// The mount visible at `path`: of the mounts stacked there, the one no other mount at the
    /// same path sits on.
    pub fn at(&self, path: &Path) -> Option<&MountInfo> {
        let here: Vec<&MountInfo> = self
            .entries
            .iter()
            .filter(|m| m.mount_point == path)
            .collect();
        here.iter()
            .find(|m| !here.iter().any(|other| other.parent_id == m.mount_id))
            .or(here.last())
            .copied()
    }

    /// How many mounts are stacked at `path`.
    pub fn count_at(&self, path: &Path) -> usize {
        self.entries
            .iter()
            .filter(|m| m.mount_point == path)
            .count()
    }

    /// Mounts of the file system with `device` (the mount itself and its bind mounts).
    pub fn with_device(&self, device: (u32, u32)) -> impl Iterator<Item = &MountInfo> {
        self.entries.iter().filter(move |m| m.device == device)
    }

    /// All Gluster mounts.
    pub fn glusterfs(&self) -> impl Iterator<Item = &MountInfo> {
        self.entries.iter().filter(|m| m.is_glusterfs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = include_str!("fixtures/mountinfo-published.txt");
    const ESCAPES: &str = include_str!("fixtures/mountinfo-escapes.txt");
    const STACKED: &str = include_str!("fixtures/mountinfo-stacked.txt");
    const MALFORMED: &str = include_str!("fixtures/mountinfo-malformed.txt");

    const STAGING: &str =
        "/var/lib/kubelet/plugins/kubernetes.io/csi/gluster.heketi.csi/4c2e/globalmount";

    #[test]
    fn staging_mount_and_its_bind_mounts() {
        let t = MountTable::parse(PUBLISHED);
        assert_eq!(t.entries().len(), 8);
        let staging = t.at(Path::new(STAGING)).expect("staging mounted");
        assert!(staging.is_glusterfs());
        assert_eq!(staging.device, (0, 48));
        assert_eq!(staging.source, "10.0.0.11:/vol_4c2e");
        assert_eq!(staging.gluster_volume(), Some("vol_4c2e"));
        assert_eq!(staging.optional_fields, ["shared:120"]);
        assert!(staging.super_options.iter().any(|o| o == "allow_other"));
        assert!(!staging.read_only());

        let binds: Vec<&Path> = t
            .with_device(staging.device)
            .filter(|m| m.mount_point != staging.mount_point)
            .map(|m| m.mount_point.as_path())
            .collect();
        assert_eq!(
            binds,
            [
                Path::new("/var/lib/kubelet/pods/8f1d/volumes/kubernetes.io~csi/pvc-1/mount"),
                Path::new("/var/lib/kubelet/pods/99aa/volumes/kubernetes.io~csi/pvc-1/mount"),
            ]
        );
        let ro = t
            .at(Path::new(
                "/var/lib/kubelet/pods/99aa/volumes/kubernetes.io~csi/pvc-1/mount",
            ))
            .expect("mounted");
        assert!(ro.read_only());
        assert_eq!(t.glusterfs().count(), 4);
        let other = t
            .at(Path::new(
                "/var/lib/kubelet/pods/77b0/volumes/kubernetes.io~csi/pvc-2/mount",
            ))
            .expect("mounted");
        assert_eq!(other.gluster_volume(), Some("data"));
        let proc = t.at(Path::new("/proc")).expect("proc");
        assert_eq!(proc.gluster_volume(), None);
        assert!(t.at(Path::new("/var/lib/kubelet/pods")).is_none());
        assert_eq!(
            t.at(Path::new("/dev")).map(|m| m.optional_fields.len()),
            Some(2)
        );
    }

    #[test]
    fn octal_escapes_and_optional_fields() {
        let t = MountTable::parse(ESCAPES);
        assert_eq!(t.entries().len(), 5);
        let space = t.at(Path::new("/tmp/with space")).expect("space");
        assert_eq!(space.fstype, "tmpfs");
        let tab = t
            .at(Path::new("/tmp/tab\tand\\backslash"))
            .expect("tab and backslash");
        assert_eq!(tab.root, Path::new("/sub\tdir"));
        assert_eq!(tab.source, "my source");
        assert_eq!(
            tab.optional_fields,
            ["master:4", "propagate_from:2", "unbindable"]
        );
        let newline = t.at(Path::new("/tmp/new\nline")).expect("newline");
        assert_eq!(newline.gluster_volume(), Some("v"));
        let plain = t.at(Path::new("/tmp/no-optional")).expect("plain");
        assert!(plain.optional_fields.is_empty());
        assert_eq!(plain.gluster_volume(), Some("w"));
    }

    #[test]
    fn stacked_mounts_resolve_to_the_top_one() {
        let t = MountTable::parse(STACKED);
        let top = t.at(Path::new("/tmp/stage")).expect("stacked");
        assert_eq!(top.mount_id, 51);
        assert_eq!(top.gluster_volume(), Some("new"));
        assert_eq!(t.count_at(Path::new("/tmp/stage")), 2);
        // The stale target still points at the lower file system.
        let target = t.at(Path::new("/tmp/target")).expect("target");
        assert_ne!(target.device, top.device);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let t = MountTable::parse(MALFORMED);
        let points: Vec<&Path> = t
            .entries()
            .iter()
            .map(|m| m.mount_point.as_path())
            .collect();
        assert_eq!(points, [Path::new("/"), Path::new("/good")]);
    }

    #[test]
    fn unescape_leaves_incomplete_escapes_alone() {
        assert_eq!(unescape("a\\04"), OsString::from("a\\04"));
        assert_eq!(unescape("a\\999b"), OsString::from("a\\999b"));
        assert_eq!(unescape("\\134"), OsString::from("\\"));
        assert_eq!(unescape("end\\"), OsString::from("end\\"));
    }

    #[test]
    fn own_mount_table_has_a_root() {
        let t = MountTable::read().expect("read /proc/self/mountinfo");
        assert!(t.entries().iter().any(|m| m.mount_point == Path::new("/")));
    }
}
