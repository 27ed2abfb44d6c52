//! The node plugin's readers of untrusted text: the mount table (any bytes), and, from the same
//! input read as lines, mount flags, request paths and the volume context. Nothing panics;
//! request values are accepted or refused with InvalidArgument.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use gluster_csi_node::context::{SERVERS_KEY, VOLUME_KEY, VolumeContext};
use gluster_csi_node::error::Error;
use gluster_csi_node::mountinfo::MountTable;
use gluster_csi_node::options::MountFlags;
use gluster_csi_node::paths::{self, Field};
use libfuzzer_sys::fuzz_target;

fn documented<T>(r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::InvalidArgument(_)) => None,
        Err(e) => panic!("not InvalidArgument: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let table = MountTable::parse(&text);
    assert!(table.entries().len() <= text.lines().count());
    for m in table.entries() {
        assert!(m.mount_point.is_absolute());
        let _ = m.gluster_volume();
        let _ = table.at(&m.mount_point);
    }

    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(flags) = documented(MountFlags::parse(&lines)) {
        for o in flags.options() {
            assert!(
                !o.is_empty() && !o.contains([',', ' ', ';', '$', '`', '\n']),
                "{o:?}"
            );
        }
    }
    let kubelet = Path::new("/var/lib/kubelet");
    for line in &lines {
        for field in [Field::Staging, Field::Target] {
            for root in [None, Some(kubelet)] {
                if let Some(p) = documented(paths::validate(field, line, root)) {
                    assert!(paths::is_normalised(&p), "{p:?}");
                    if let Some(r) = root {
                        assert!(p.starts_with(r) && p != r, "{p:?}");
                    }
                }
            }
        }
    }
    let mut map = HashMap::new();
    if let Some(first) = lines.first() {
        map.insert(SERVERS_KEY.to_owned(), first.clone());
    }
    if let Some(second) = lines.get(1) {
        map.insert(VOLUME_KEY.to_owned(), second.clone());
    }
    if let Some(ctx) = documented(VolumeContext::from_map(&map)) {
        assert!(!ctx.servers.is_empty());
        assert!(!ctx.source().contains([' ', ';', '\n']));
    }
});
