//! Property tests of the node plugin's parsers: the mount table ([`MountTable::parse`]), mount
//! flags ([`MountFlags::parse`]), request paths ([`paths::validate`]) and the volume context
//! ([`VolumeContext::from_map`]).
//!
//! Whatever the input, nothing panics; the mount table skips what it cannot read and reads back
//! exactly what the kernel would have written; every rejected request value is
//! [`Error::InvalidArgument`]; and what is accepted can never carry shell syntax, a `..` or a
//! path outside the kubelet directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use gluster_csi_node::context::{SERVERS_KEY, VOLUME_KEY, VolumeContext};
use gluster_csi_node::error::Error;
use gluster_csi_node::mountinfo::MountTable;
use gluster_csi_node::options::MountFlags;
use gluster_csi_node::paths::{self, Field};
use proptest::prelude::*;

/// Bytes a shell or the `mount.glusterfs` script reads specially.
const SHELL_SPECIAL: &[char] = &[
    ';', '|', '&', '$', '`', '(', ')', '<', '>', '\'', '"', '\\', '?', '[', ']', '{', '}', '!',
    '#', '\n', '\r', '\t', ' ', '\0', ',',
];

/// Options the plugin sets itself.
const RESERVED: &[&str] = &[
    "log-file",
    "backup-volfile-servers",
    "backupvolfile-server",
    "volume-id",
    "volfile-server",
];

/// How the kernel writes a path field of mountinfo: space, tab, newline and backslash as octal.
fn kernel_escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}

fn invalid_or_ok<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Ok(_) | Err(Error::InvalidArgument(_)))
}

/// A path component of printable ASCII and the bytes the kernel escapes.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => (0x21u8..0x7f).prop_filter("no slash", |b| *b != b'/'),
            1 => prop::sample::select(vec![b' ', b'\t', b'\n', b'\\']),
        ],
        1..12,
    )
}

fn abs_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(component(), 0..5).prop_map(|parts| {
        let mut p = Vec::new();
        for c in parts {
            p.push(b'/');
            p.extend(c);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        p
    })
}

fn flag() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_-]{1,12}(=[a-zA-Z0-9/._:+@%~*-]{0,12})?",
        "[a-z]{1,6}(,[a-z_=0-9-]{0,8}){1,3}",
        "(log-file|backup-volfile-servers|volfile-server|volume-id)=[a-z0-9/.]{0,10}",
        ".{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any text as a mount table: no panic, never more entries than lines.
    #[test]
    fn any_text_is_a_mount_table(text in ".{0,400}", lines in prop::collection::vec(".{0,80}", 0..10)) {
        for t in [text, lines.join("\n")] {
            let table = MountTable::parse(&t);
            prop_assert!(table.entries().len() <= t.lines().count());
            for m in table.entries() {
                prop_assert!(m.mount_point.is_absolute());
                let _ = m.gluster_volume();
            }
        }
    }

    /// A line as the kernel writes it reads back to the same fields, whatever bytes the paths
    /// hold, and finds the mount by its real path.
    #[test]
    fn kernel_lines_read_back(
        id in any::<u32>(), parent in any::<u32>(), major in any::<u32>(), minor in any::<u32>(),
        root in abs_path(), mount_point in abs_path(),
        optional in prop::collection::vec("(shared|master|propagate_from):[0-9]{1,4}|unbindable", 0..3),
        fstype in "[a-z0-9.]{1,16}",
        server in "[a-z0-9.]{1,20}", volume in "[A-Za-z0-9_.-]{1,20}",
        ro in any::<bool>(),
    ) {
        let source = format!("{server}:/{volume}");
        let opts = if ro { "ro,relatime" } else { "rw,nosuid" };
        let line = format!(
            "{id} {parent} {major}:{minor} {} {} {opts}{}{} - {fstype} {} rw,user_id=0",
            kernel_escape(&root),
            kernel_escape(&mount_point),
            if optional.is_empty() { "" } else { " " },
            optional.join(" "),
            kernel_escape(source.as_bytes()),
        );
        let noise = "garbage line\n\n1 2 3\n";
        let table = MountTable::parse(&format!("{noise}{line}\n{noise}"));
        prop_assert_eq!(table.entries().len(), 1, "{}", line);
        let m = &table.entries()[0];
        prop_assert_eq!(m.mount_id, id);
        prop_assert_eq!(m.parent_id, parent);
        prop_assert_eq!(m.device, (major, minor));
        prop_assert_eq!(m.root.as_os_str(), OsStr::from_bytes(&root));
        prop_assert_eq!(m.mount_point.as_os_str(), OsStr::from_bytes(&mount_point));
        prop_assert_eq!(&m.optional_fields, &optional);
        prop_assert_eq!(&m.fstype, &fstype);
        prop_assert_eq!(&m.source, &source);
        prop_assert_eq!(m.read_only(), ro);
        prop_assert!(table.at(Path::new(OsStr::from_bytes(&mount_point))).is_some());
        if fstype == "fuse.glusterfs" {
            prop_assert_eq!(m.gluster_volume(), Some(volume.as_str()));
        }
    }

    /// Mount flags: no panic, InvalidArgument or options that carry no shell syntax, no comma
    /// and none of the plugin's own options.
    #[test]
    fn mount_flags_are_inert_or_refused(flags in prop::collection::vec(flag(), 0..5)) {
        let r = MountFlags::parse(&flags);
        prop_assert!(invalid_or_ok(&r), "{r:?}");
        if let Ok(f) = r {
            for o in f.options() {
                prop_assert!(!o.is_empty());
                prop_assert!(!o.contains(SHELL_SPECIAL), "{o:?}");
                let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
                prop_assert!(!RESERVED.contains(&key), "{o:?}");
            }
        }
    }

    /// One shell-special byte (or a comma smuggling a reserved option) in an otherwise good
    /// flag is refused.
    #[test]
    fn shell_syntax_in_mount_flags_is_refused(
        good in "[a-z][a-z_-]{0,10}(=[a-z0-9]{1,6})?",
        bad in prop::sample::select(SHELL_SPECIAL),
        at in any::<prop::sample::Index>(),
        reserved in prop::sample::select(RESERVED),
    ) {
        let mut chars: Vec<char> = good.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad);
        let flag: String = chars.into_iter().collect();
        let r = MountFlags::parse(std::slice::from_ref(&flag));
        if bad == ',' {
            // A comma splits the flag into two options; each is checked on its own, so only
            // an empty piece (a comma at either end) is refused here.
            prop_assert!(invalid_or_ok(&r), "{r:?}");
            let smuggled = format!("{good},{reserved}=/etc/passwd");
            let r = MountFlags::parse(std::slice::from_ref(&smuggled));
            prop_assert!(matches!(r, Err(Error::InvalidArgument(_))), "{smuggled:?}: {r:?}");
        } else {
            prop_assert!(matches!(r, Err(Error::InvalidArgument(_))), "{flag:?}: {r:?}");
        }
    }

    /// Staging and target paths: no panic; accepted paths are absolute, normalised (no `.`,
    /// `..` or empty segment) and strictly under the kubelet directory when one is set.
    #[test]
    fn request_paths_are_normalised_or_refused(
        raw in prop_oneof![
            "(/[a-z.]{0,4}){0,6}/?",
            "/var/lib/kubelet(/[a-z0-9.~ ]{0,6}){0,5}",
            "[^\\x00]{0,40}",
        ],
        kubelet in prop::option::of(Just(PathBuf::from("/var/lib/kubelet"))),
        staging in any::<bool>(),
    ) {
        let field = if staging { Field::Staging } else { Field::Target };
        let r = paths::validate(field, &raw, kubelet.as_deref());
        prop_assert!(invalid_or_ok(&r), "{r:?}");
        if let Ok(p) = r {
            prop_assert!(paths::is_normalised(&p), "{p:?}");
            prop_assert!(!p.components().any(|c| matches!(c, std::path::Component::ParentDir)));
            prop_assert!(p != Path::new("/"));
            if let Some(k) = &kubelet {
                prop_assert!(p.starts_with(k) && p != *k, "{p:?}");
            }
            if staging {
                prop_assert!(p.as_os_str().as_bytes().iter().all(|b| paths::is_shell_inert(*b)), "{p:?}");
            }
        }
    }

    /// A `..` anywhere, or a path outside the kubelet directory, is refused.
    #[test]
    fn dot_dot_and_outside_paths_are_refused(
        inside in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        escape in prop_oneof![Just("/.."), Just("/../.."), Just("/./.."), Just("/../etc")],
        outside in "/(etc|tmp|root|var/lib/kubeletX)(/[a-z]{1,5}){0,2}",
        staging in any::<bool>(),
    ) {
        let field = if staging { Field::Staging } else { Field::Target };
        let kubelet = Path::new("/var/lib/kubelet");
        for raw in [format!("/var/lib/kubelet/{inside}{escape}"), outside.clone()] {
            let r = paths::validate(field, &raw, Some(kubelet));
            prop_assert!(matches!(r, Err(Error::InvalidArgument(_))), "{raw:?}: {r:?}");
        }
        let r = paths::validate(field, &format!("/var/lib/kubelet/{inside}"), Some(kubelet));
        prop_assert!(r.is_ok(), "{r:?}");
    }

    /// The volume context: no panic, InvalidArgument or servers and a volume name that carry
    /// no shell syntax.
    #[test]
    fn volume_context_is_valid_or_refused(
        servers in prop_oneof!["([a-z0-9.-]{1,12}, ?){0,3}[a-z0-9.-]{1,12}", ".{0,40}",
                               "([0-9]{1,3}\\.){3}[0-9]{1,3}(,::1)?"],
        volume in prop_oneof!["[A-Za-z0-9_.-]{1,20}", ".{0,30}"],
        drop_servers in any::<bool>(),
    ) {
        let mut map = HashMap::from([(VOLUME_KEY.to_owned(), volume)]);
        if !drop_servers {
            map.insert(SERVERS_KEY.to_owned(), servers);
        }
        let r = VolumeContext::from_map(&map);
        prop_assert!(invalid_or_ok(&r), "{r:?}");
        if let Ok(c) = r {
            prop_assert!(!c.servers.is_empty());
            prop_assert!(!c.backups().iter().any(|b| b == c.primary()));
            for s in c.servers.iter().chain([&c.volume]) {
                prop_assert!(!s.contains(SHELL_SPECIAL), "{s:?}");
                prop_assert!(!s.starts_with('-'), "{s:?}");
            }
        }
    }
}
