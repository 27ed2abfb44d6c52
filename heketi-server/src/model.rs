//! The server's persistent state: clusters, nodes, devices, volumes with their bricks, and the
//! operations in flight. It is saved whole to `state.json` (see [`crate::store`]) and turned into
//! Heketi's JSON replies here.

use std::collections::BTreeMap;

use heketi_client::types::{
    BrickInfo, ClusterInfoResponse, DeviceInfoResponse, DurabilityType, EntryState, GlusterFsMount,
    HostAddresses, NodeInfoResponse, SnapshotSettings, StorageSize, VolumeDurabilityInfo,
    VolumeInfoResponse, VolumeMount,
};
use serde::{Deserialize, Serialize};

/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;

/// KiB in one GiB.
pub const GIB_IN_KIB: u64 = 1024 * 1024;

/// Everything the server knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    #[serde(default)]
    pub version: u32,
    /// Clusters by id.
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// Nodes by id.
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
    /// Devices by id.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// Volumes by id, each with its bricks.
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
    /// Creates rolled back while Gluster did not (yet) show their volume: watched for a while
    /// in case a `volume create` already under way in glusterd completes after all.
    #[serde(default)]
    pub tombstones: Vec<Tombstone>,
}

/// A rolled-back create whose Gluster volume might still appear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The volume as it was recorded.
    pub volume: Volume,
    /// Unix time after which it is forgotten.
    pub until: u64,
}

/// A cluster: a set of nodes volumes are placed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Id.
    pub id: String,
    /// Block-hosting volumes allowed (recorded, not used: no block volumes here).
    pub block: bool,
    /// File volumes allowed.
    pub file: bool,
}

/// Where a node or device is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Being added: invisible, not used.
    Adding,
    /// In service.
    #[default]
    Ready,
    /// Being removed: not used for new bricks.
    Removing,
}

/// A glusterd peer of the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Id.
    pub id: String,
    /// Cluster id.
    pub cluster: String,
    /// Failure zone.
    pub zone: i64,
    /// Management addresses.
    pub manage: Vec<String>,
    /// Storage addresses; the first one names the node in brick specs.
    pub storage: Vec<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Administrative state.
    #[serde(default)]
    pub state: EntryState,
    /// Life-cycle stage.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

impl Node {
    /// The address node work (SSH, the gluster CLI) goes to: the first management address,
    /// else the storage address.
    pub fn manage_host(&self) -> &str {
        self.manage
            .first()
            .map(String::as_str)
            .unwrap_or_else(|| self.brick_host())
    }

    /// The address bricks are created with.
    pub fn brick_host(&self) -> &str {
        self.storage.first().map(String::as_str).unwrap_or("")
    }
}

/// A brick root directory on a node, with a declared capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Id.
    pub id: String,
    /// Node id.
    pub node: String,
    /// Absolute path of the directory on the node.
    pub name: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Administrative state.
    #[serde(default)]
    pub state: EntryState,
    /// Declared capacity in KiB.
    pub total_kib: u64,
    /// Life-cycle stage.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// One directory of one device holding part of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brick {
    /// Id.
    pub id: String,
    /// Device id.
    pub device: String,
    /// Node id.
    pub node: String,
    /// Storage address of the node, as given to Gluster.
    pub host: String,
    /// Path of the brick directory (`<device>/brick_<id>/brick`).
    pub path: String,
    /// Space accounted on the device, KiB.
    pub size_kib: u64,
}

impl Brick {
    /// `host:path`, the way Gluster names a brick.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.host, self.path)
    }

    /// The directory the server made for this brick (parent of the brick root); removing it
    /// removes everything of the brick.
    pub fn dir(&self) -> String {
        match self.path.rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => parent.to_owned(),
            _ => self.path.clone(),
        }
    }
}

/// Where a volume is in its life; anything but `Online` is an operation in flight, recorded
/// before its first Gluster step so that a restart can finish it or roll it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VolumeStatus {
    /// Being created (a clone when `clone_of` is set); rolled back after a crash.
    Creating {
        /// Source volume of a clone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clone_of: Option<String>,
        /// Last step done.
        step: String,
    },
    /// Complete.
    Online,
    /// Growing from `from_gib` to `to_gib`; finished after a crash.
    Expanding {
        /// Size before.
        from_gib: u64,
        /// Size after.
        to_gib: u64,
        /// Last step done.
        step: String,
    },
    /// Being deleted; finished after a crash.
    Deleting {
        /// Last step done.
        step: String,
    },
}

/// A Gluster volume made by this server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Id.
    pub id: String,
    /// Gluster volume name.
    pub name: String,
    /// Cluster id.
    pub cluster: String,
    /// Size in GiB (the quota limit).
    pub size_gib: u64,
    /// Redundancy (normalised: replica count filled in).
    pub durability: VolumeDurabilityInfo,
    /// Group owning the volume root (0: none).
    #[serde(default)]
    pub gid: i64,
    /// `gluster volume set` items, `key value`.
    #[serde(default)]
    pub options: Vec<String>,
    /// Snapshot settings as requested (recorded only).
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    /// Made read-only (`features.read-only on`) as the last step of its create: a clone asked
    /// for with the `read_only` extension. Kept apart from `options`, which clones inherit,
    /// so that a clone of this volume is writable. Never part of a reply (Heketi has no such
    /// key).
    #[serde(default)]
    pub read_only: bool,
    /// Bricks in Gluster order (replica sets are consecutive).
    pub bricks: Vec<Brick>,
    /// Life-cycle stage.
    pub status: VolumeStatus,
}

impl Volume {
    /// Complete and not being deleted: listed and readable through the API.
    pub fn visible(&self) -> bool {
        matches!(
            self.status,
            VolumeStatus::Online | VolumeStatus::Expanding { .. }
        )
    }
}

impl State {
    /// A fresh, empty state.
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }

    /// KiB allocated to bricks on device `id`.
    pub fn device_used_kib(&self, id: &str) -> u64 {
        self.volumes
            .values()
            .flat_map(|v| v.bricks.iter())
            .filter(|b| b.device == id)
            .map(|b| b.size_kib)
            .sum()
    }

    /// KiB still free on device `id`.
    pub fn device_free_kib(&self, id: &str) -> u64 {
        self.devices
            .get(id)
            .map(|d| d.total_kib.saturating_sub(self.device_used_kib(id)))
            .unwrap_or(0)
    }

    /// Bricks on device `id`, with their volume ids.
    pub fn device_bricks(&self, id: &str) -> Vec<(&Volume, &Brick)> {
        self.volumes
            .values()
            .flat_map(|v| v.bricks.iter().map(move |b| (v, b)))
            .filter(|(_, b)| b.device == id)
            .collect()
    }

    /// Management addresses of the nodes the gluster CLI may run on (all but those being
    /// removed), nodes being added last.
    pub fn gluster_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.lifecycle != Lifecycle::Removing)
            .collect();
        // Nodes being added go last: the pool may not have them yet.
        nodes.sort_by_key(|n| n.lifecycle == Lifecycle::Adding);
        nodes.iter().map(|n| n.manage_host().to_owned()).collect()
    }

    /// The management address of node `id` (where its bricks' directories are made), or
    /// `fallback` when the node is not known.
    pub fn node_manage_host(&self, id: &str, fallback: &str) -> String {
        self.nodes
            .get(id)
            .map_or(fallback, Node::manage_host)
            .to_owned()
    }

    /// Nodes of cluster `id` that are not being added.
    pub fn cluster_nodes(&self, id: &str) -> Vec<&Node> {
        self.nodes
            .values()
            .filter(|n| n.cluster == id && n.lifecycle != Lifecycle::Adding)
            .collect()
    }

    /// Devices of node `id` that are not being added.
    pub fn node_devices(&self, id: &str) -> Vec<&Device> {
        self.devices
            .values()
            .filter(|d| d.node == id && d.lifecycle != Lifecycle::Adding)
            .collect()
    }

    /// Volume names in use (any cluster, any stage): Gluster names are unique in the pool.
    pub fn name_in_use(&self, name: &str) -> bool {
        self.volumes.values().any(|v| v.name == name)
            || self.tombstones.iter().any(|t| t.volume.name == name)
    }

    /// Volumes of cluster `id` (any stage).
    pub fn cluster_volume_count(&self, id: &str) -> usize {
        self.volumes.values().filter(|v| v.cluster == id).count()
    }

    /// `GET /clusters/{id}` reply.
    pub fn cluster_info(&self, c: &Cluster) -> ClusterInfoResponse {
        ClusterInfoResponse {
            id: c.id.clone(),
            nodes: self
                .cluster_nodes(&c.id)
                .iter()
                .map(|n| n.id.clone())
                .collect(),
            volumes: self
                .volumes
                .values()
                .filter(|v| v.cluster == c.id && v.visible())
                .map(|v| v.id.clone())
                .collect(),
            block: c.block,
            file: c.file,
            blockvolumes: Vec::new(),
        }
    }

    /// `GET /devices/{id}` reply (also nested in node replies).
    pub fn device_info(&self, d: &Device) -> DeviceInfoResponse {
        let used = self.device_used_kib(&d.id);
        DeviceInfoResponse {
            name: d.name.clone(),
            tags: d.tags.clone(),
            storage: StorageSize {
                total: d.total_kib,
                free: d.total_kib.saturating_sub(used),
                used,
            },
            id: d.id.clone(),
            paths: vec![d.name.clone()],
            pv_uuid: String::new(),
            state: d.state,
            bricks: self
                .device_bricks(&d.id)
                .into_iter()
                .map(|(v, b)| brick_info(v, b))
                .collect(),
        }
    }

    /// `GET /nodes/{id}` reply.
    pub fn node_info(&self, n: &Node) -> NodeInfoResponse {
        NodeInfoResponse {
            zone: n.zone,
            hostnames: HostAddresses {
                manage: n.manage.clone(),
                storage: n.storage.clone(),
            },
            cluster_id: n.cluster.clone(),
            tags: n.tags.clone(),
            id: n.id.clone(),
            state: n.state,
            devices: self
                .node_devices(&n.id)
                .into_iter()
                .map(|d| self.device_info(d))
                .collect(),
        }
    }
}

fn brick_info(v: &Volume, b: &Brick) -> BrickInfo {
    BrickInfo {
        id: b.id.clone(),
        path: b.path.clone(),
        device: b.device.clone(),
        node: b.node.clone(),
        volume: v.id.clone(),
        size: b.size_kib,
    }
}

/// The mount description of a volume: every brick host once, in brick order; the first is the
/// volfile server, the others its backups.
pub fn mount_info(v: &Volume) -> VolumeMount {
    let mut hosts: Vec<String> = Vec::new();
    for b in &v.bricks {
        if !hosts.contains(&b.host) {
            hosts.push(b.host.clone());
        }
    }
    let mut options = BTreeMap::new();
    if hosts.len() > 1 {
        options.insert("backup-volfile-servers".to_owned(), hosts[1..].join(","));
    }
    VolumeMount {
        glusterfs: GlusterFsMount {
            device: hosts
                .first()
                .map(|h| format!("{h}:{}", v.name))
                .unwrap_or_default(),
            hosts,
            options,
        },
    }
}

/// `GET /volumes/{id}` reply.
pub fn volume_info(v: &Volume) -> VolumeInfoResponse {
    VolumeInfoResponse {
        size: v.size_gib,
        name: v.name.clone(),
        id: v.id.clone(),
        cluster: v.cluster.clone(),
        durability: v.durability,
        gid: v.gid,
        glustervolumeoptions: v.options.clone(),
        snapshot: v.snapshot,
        block: false,
        mount: mount_info(v),
        blockinfo: Default::default(),
        bricks: v.bricks.iter().map(|b| brick_info(v, b)).collect(),
    }
}

/// Number of bricks and the KiB each accounts for, for a volume of `size_gib` GiB.
/// Replicas hold the whole volume each; a disperse brick holds `1/data` of it; a volume without
/// redundancy is one brick.
pub fn brick_layout(d: &VolumeDurabilityInfo, size_gib: u64) -> (usize, u64) {
    let total = size_gib.saturating_mul(GIB_IN_KIB);
    match d.kind {
        DurabilityType::Replicate => (d.replicate.replica.max(1) as usize, total),
        DurabilityType::Disperse => {
            let data = u64::from(d.disperse.data.max(1));
            (
                (d.disperse.data + d.disperse.redundancy) as usize,
                total.div_ceil(data),
            )
        }
        DurabilityType::None => (1, total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(bricks: &[(&str, &str)]) -> Volume {
        Volume {
            id: "v".into(),
            name: "vol_v".into(),
            cluster: "c".into(),
            size_gib: 1,
            durability: VolumeDurabilityInfo::replicate(3),
            gid: 0,
            options: vec![],
            snapshot: Default::default(),
            read_only: false,
            bricks: bricks
                .iter()
                .enumerate()
                .map(|(i, (host, dev))| Brick {
                    id: format!("b{i}"),
                    device: (*dev).into(),
                    node: format!("n{i}"),
                    host: (*host).into(),
                    path: format!("/d/{dev}/brick_b{i}/brick"),
                    size_kib: GIB_IN_KIB,
                })
                .collect(),
            status: VolumeStatus::Online,
        }
    }

    #[test]
    fn mount_lists_primary_and_backups() {
        let m = mount_info(&vol(&[
            ("10.0.0.1", "a"),
            ("10.0.0.2", "b"),
            ("10.0.0.3", "c"),
        ]));
        assert_eq!(m.glusterfs.device, "10.0.0.1:vol_v");
        assert_eq!(m.glusterfs.hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            m.glusterfs
                .options
                .get("backup-volfile-servers")
                .map(String::as_str),
            Some("10.0.0.2,10.0.0.3")
        );
        let single = mount_info(&vol(&[("10.0.0.1", "a")]));
        assert!(single.glusterfs.options.is_empty());
    }

    #[test]
    fn device_accounting_sums_bricks() {
        let mut s = State::new();
        s.devices.insert(
            "a".into(),
            Device {
                id: "a".into(),
                node: "n0".into(),
                name: "/d/a".into(),
                tags: Default::default(),
                state: EntryState::Online,
                total_kib: 3 * GIB_IN_KIB,
                lifecycle: Lifecycle::Ready,
            },
        );
        s.volumes
            .insert("v".into(), vol(&[("10.0.0.1", "a"), ("10.0.0.2", "b")]));
        assert_eq!(s.device_used_kib("a"), GIB_IN_KIB);
        assert_eq!(s.device_free_kib("a"), 2 * GIB_IN_KIB);
        let info = s.device_info(&s.devices["a"]);
        assert_eq!(info.storage.used + info.storage.free, info.storage.total);
        assert_eq!(info.bricks.len(), 1);
    }

    #[test]
    fn tombstones_keep_their_name_reserved() {
        let mut s = State::new();
        assert!(!s.name_in_use("vol_v"));
        s.tombstones.push(Tombstone {
            volume: vol(&[("h", "a")]),
            until: 0,
        });
        assert!(s.name_in_use("vol_v"));
        // Old state files without tombstones still load.
        let old: Result<State, _> = serde_json::from_str(r#"{"version":1,"clusters":{}}"#);
        assert!(old.is_ok_and(|o| o.tombstones.is_empty()));
    }

    #[test]
    fn layouts() {
        assert_eq!(
            brick_layout(&VolumeDurabilityInfo::replicate(3), 2),
            (3, 2 * GIB_IN_KIB)
        );
        assert_eq!(
            brick_layout(&VolumeDurabilityInfo::disperse(4, 2), 4),
            (6, GIB_IN_KIB)
        );
        assert_eq!(
            brick_layout(&VolumeDurabilityInfo::none(), 5),
            (1, 5 * GIB_IN_KIB)
        );
    }

    #[test]
    fn brick_dir_is_parent_of_root() {
        let v = vol(&[("h", "a")]);
        assert_eq!(v.bricks[0].dir(), "/d/a/brick_b0");
        assert_eq!(v.bricks[0].spec(), "h:/d/a/brick_b0/brick");
    }

    #[test]
    fn read_only_is_recorded_but_never_replied() {
        let mut v = vol(&[("h", "a")]);
        v.read_only = true;
        let saved = serde_json::to_string(&v).unwrap_or_default();
        let back: Result<Volume, _> = serde_json::from_str(&saved);
        assert!(back.is_ok_and(|b| b.read_only), "{saved}");
        let reply = serde_json::to_value(volume_info(&v)).unwrap_or_default();
        assert!(reply.get("read_only").is_none(), "{reply}");
        assert!(reply.get("name").is_some(), "{reply}");
        // A state file written before the field existed loads as writable.
        let mut old = serde_json::to_value(vol(&[("h", "a")])).unwrap_or_default();
        if let Some(o) = old.as_object_mut() {
            o.remove("read_only");
        }
        let loaded: Result<Volume, _> = serde_json::from_value(old);
        assert!(loaded.is_ok_and(|l| !l.read_only));
    }

    #[test]
    fn status_round_trips_through_json() {
        let s = VolumeStatus::Expanding {
            from_gib: 1,
            to_gib: 2,
            step: "quota".into(),
        };
        let j = serde_json::to_string(&s).unwrap_or_default();
        assert!(j.contains(r#""op":"expanding""#), "{j}");
        let back: Result<VolumeStatus, _> = serde_json::from_str(&j);
        assert!(back.is_ok_and(|b| b == s));
    }
}
