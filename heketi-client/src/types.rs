//! Heketi's request and response bodies, as they travel on the wire.
//!
//! Field names and nesting follow Heketi's JSON exactly (see `pkg/glusterfs/api` in Heketi).
//! Sizes: volume sizes are GiB, device and brick sizes are KiB. Every id is 32 lowercase hex
//! characters. Unknown fields are ignored on input so newer servers stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// State of a node or device.
///
/// # Example
/// ```no_run
/// use heketi_client::types::EntryState;
/// assert_eq!(serde_json::to_string(&EntryState::Offline)?, r#""offline""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Usable for new bricks.
    #[default]
    Online,
    /// Not used for new bricks; existing bricks stay.
    Offline,
    /// Failed; bricks are expected to be moved away.
    Failed,
}

/// Body of `POST /nodes/{id}/state` and `POST /devices/{id}/state`.
///
/// # Example
/// ```no_run
/// use heketi_client::types::{EntryState, StateRequest};
/// let body = serde_json::to_string(&StateRequest { state: EntryState::Failed })?;
/// assert_eq!(body, r#"{"state":"failed"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRequest {
    /// The wanted state.
    pub state: EntryState,
}

/// Storage accounting of a device, in KiB.
///
/// # Example
/// ```no_run
/// # fn demo(d: heketi_client::types::DeviceInfoResponse) {
/// let s = d.storage;
/// println!("{} of {} KiB free", s.free, s.total);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSize {
    /// Declared capacity.
    pub total: u64,
    /// Not yet allocated to bricks.
    pub free: u64,
    /// Allocated to bricks.
    pub used: u64,
}

/// The two address lists of a node.
///
/// # Example
/// ```no_run
/// let h = heketi_client::types::HostAddresses {
///     manage: vec!["gluster-1.example".into()],
///     storage: vec!["10.0.0.1".into()],
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddresses {
    /// Where the management daemon (glusterd) is reached.
    #[serde(default)]
    pub manage: Vec<String>,
    /// Where clients reach the bricks; the first one names the node in brick paths.
    #[serde(default)]
    pub storage: Vec<String>,
}

/// A brick: one directory of one device holding part of a volume.
///
/// # Example
/// ```no_run
/// # fn demo(v: heketi_client::types::VolumeInfoResponse) {
/// for b in &v.bricks {
///     println!("{} on node {} ({} KiB)", b.path, b.node, b.size);
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickInfo {
    /// Brick id.
    pub id: String,
    /// Path of the brick directory on its node.
    pub path: String,
    /// Device id.
    pub device: String,
    /// Node id.
    pub node: String,
    /// Volume id.
    pub volume: String,
    /// Size in KiB.
    pub size: u64,
}

/// Body of `POST /devices`.
///
/// # Example
/// ```no_run
/// let req = heketi_client::types::DeviceAddRequest {
///     name: "/dev/sdb".into(),
///     node_id: "0123456789abcdef0123456789abcdef".into(),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAddRequest {
    /// Device name (`^/[a-zA-Z0-9_.:/-]+$`).
    pub name: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Node the device belongs to.
    #[serde(rename = "node")]
    pub node_id: String,
    /// Wipe what is on the device before use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroydata: bool,
    /// Declared capacity in KiB of a directory device: an extension of our `heketi-server`
    /// (which otherwise uses the size of the directory's file system); Heketi ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_kib: Option<u64>,
}

/// Reply of `GET /devices/{id}`, also nested in node replies.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let d = c.device_info("0123456789abcdef0123456789abcdef").await?;
/// println!("{} holds {} bricks", d.name, d.bricks.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfoResponse {
    /// Device name.
    pub name: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Capacity accounting.
    pub storage: StorageSize,
    /// Device id.
    pub id: String,
    /// Paths naming the device. Heketi v10 records them when it sets a device up (its udev
    /// aliases, or the device name alone), so a device it added has the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// LVM physical volume UUID where there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pv_uuid: String,
    /// Device state.
    #[serde(default)]
    pub state: EntryState,
    /// Bricks on the device.
    #[serde(default)]
    pub bricks: Vec<BrickInfo>,
}

/// Body of `POST /nodes`.
///
/// # Example
/// ```no_run
/// use heketi_client::types::{HostAddresses, NodeAddRequest};
/// let req = NodeAddRequest {
///     zone: 1,
///     hostnames: HostAddresses { manage: vec!["10.0.0.1".into()], storage: vec!["10.0.0.1".into()] },
///     cluster_id: "0123456789abcdef0123456789abcdef".into(),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddRequest {
    /// Failure zone, ≥ 1.
    pub zone: i64,
    /// Management and storage addresses.
    pub hostnames: HostAddresses,
    /// Cluster the node joins.
    #[serde(rename = "cluster")]
    pub cluster_id: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Reply of `GET /nodes/{id}`.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let n = c.node_info("0123456789abcdef0123456789abcdef").await?;
/// println!("zone {} {:?}: {} devices", n.zone, n.hostnames.storage, n.devices.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfoResponse {
    /// Failure zone.
    pub zone: i64,
    /// Management and storage addresses.
    pub hostnames: HostAddresses,
    /// Cluster id.
    #[serde(rename = "cluster")]
    pub cluster_id: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Node id.
    pub id: String,
    /// Node state.
    #[serde(default)]
    pub state: EntryState,
    /// Devices of the node.
    #[serde(default, rename = "devices")]
    pub devices: Vec<DeviceInfoResponse>,
}

/// What a cluster may host.
///
/// # Example
/// ```no_run
/// let file_only = heketi_client::types::ClusterFlags { block: false, file: true };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFlags {
    /// Block-hosting volumes allowed.
    #[serde(default)]
    pub block: bool,
    /// File volumes allowed.
    #[serde(default)]
    pub file: bool,
}

impl Default for ClusterFlags {
    fn default() -> Self {
        Self {
            block: true,
            file: true,
        }
    }
}

/// Body of `POST /clusters` (and of `POST /clusters/{id}/flags`).
///
/// # Example
/// ```no_run
/// let req = heketi_client::types::ClusterCreateRequest { block: false, file: true };
/// ```
pub type ClusterCreateRequest = ClusterFlags;

/// Reply of `GET /clusters/{id}`.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let info = c.cluster_info("0123456789abcdef0123456789abcdef").await?;
/// println!("{} nodes, {} volumes", info.nodes.len(), info.volumes.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfoResponse {
    /// Cluster id.
    pub id: String,
    /// Node ids.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Volume ids.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Block-hosting volumes allowed.
    #[serde(default)]
    pub block: bool,
    /// File volumes allowed.
    #[serde(default)]
    pub file: bool,
    /// Block volume ids.
    #[serde(default)]
    pub blockvolumes: Vec<String>,
}

/// Reply of `GET /clusters`.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let ids = c.cluster_list().await?.clusters;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterListResponse {
    /// Cluster ids.
    #[serde(default)]
    pub clusters: Vec<String>,
}

/// One cluster of a topology view, composed by the client (Heketi has no `/topology` route).
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// for cluster in c.topology().await?.clusters {
///     println!("{}: {} nodes", cluster.id, cluster.nodes.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyCluster {
    /// Cluster id.
    pub id: String,
    /// Volumes with their bricks.
    pub volumes: Vec<VolumeInfoResponse>,
    /// Nodes with their devices.
    pub nodes: Vec<NodeInfoResponse>,
    /// Block-hosting volumes allowed.
    pub block: bool,
    /// File volumes allowed.
    pub file: bool,
}

/// The whole topology: every cluster with its nodes, devices and volumes.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let topology = c.topology().await?;
/// println!("{}", serde_json::to_string_pretty(&topology).unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyInfoResponse {
    /// Clusters.
    pub clusters: Vec<TopologyCluster>,
}

/// Kind of redundancy of a volume.
///
/// # Example
/// ```no_run
/// use heketi_client::types::{DurabilityType, VolumeDurabilityInfo};
/// assert_eq!(VolumeDurabilityInfo::replicate(3).kind, DurabilityType::Replicate);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityType {
    /// N full copies.
    Replicate,
    /// Erasure coding with data and redundancy fragments.
    Disperse,
    /// Distribute only: no redundancy. Heketi's default when the type is empty.
    #[default]
    None,
}

/// Replica settings.
///
/// # Example
/// ```no_run
/// let r = heketi_client::types::ReplicaDurability { replica: 3 };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDurability {
    /// Number of copies (0 means Heketi's default of 2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: u32,
}

/// Erasure-coding settings.
///
/// # Example
/// ```no_run
/// let d = heketi_client::types::DisperseDurability { data: 4, redundancy: 2 };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisperseDurability {
    /// Data fragments.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: u32,
    /// Redundancy fragments.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redundancy: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Redundancy of a volume.
///
/// # Example
/// ```no_run
/// use heketi_client::types::VolumeDurabilityInfo;
/// let three_copies = VolumeDurabilityInfo::replicate(3);
/// let erasure = VolumeDurabilityInfo::disperse(4, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDurabilityInfo {
    /// Kind; an empty string on the wire reads as `none`.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "durability_type_or_empty"
    )]
    pub kind: DurabilityType,
    /// Replica settings (used when `kind` is `replicate`).
    #[serde(default)]
    pub replicate: ReplicaDurability,
    /// Disperse settings (used when `kind` is `disperse`).
    #[serde(default)]
    pub disperse: DisperseDurability,
}

fn durability_type_or_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<DurabilityType, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "" | "none" => Ok(DurabilityType::None),
        "replicate" => Ok(DurabilityType::Replicate),
        "disperse" => Ok(DurabilityType::Disperse),
        other => Err(serde::de::Error::unknown_variant(
            other,
            &["replicate", "disperse", "none"],
        )),
    }
}

impl VolumeDurabilityInfo {
    /// `replicate` with `n` copies.
    ///
    /// # Example
    /// ```no_run
    /// let d = heketi_client::types::VolumeDurabilityInfo::replicate(3);
    /// assert_eq!(d.replicate.replica, 3);
    /// ```
    pub fn replicate(n: u32) -> Self {
        Self {
            kind: DurabilityType::Replicate,
            replicate: ReplicaDurability { replica: n },
            ..Self::default()
        }
    }

    /// `disperse` with `data` + `redundancy` fragments.
    ///
    /// # Example
    /// ```no_run
    /// let d = heketi_client::types::VolumeDurabilityInfo::disperse(4, 2);
    /// assert_eq!((d.disperse.data, d.disperse.redundancy), (4, 2));
    /// ```
    pub fn disperse(data: u32, redundancy: u32) -> Self {
        Self {
            kind: DurabilityType::Disperse,
            disperse: DisperseDurability { data, redundancy },
            ..Self::default()
        }
    }

    /// Distribute only.
    ///
    /// # Example
    /// ```no_run
    /// let d = heketi_client::types::VolumeDurabilityInfo::none();
    /// ```
    pub fn none() -> Self {
        Self::default()
    }
}

/// Snapshot settings of a volume.
///
/// # Example
/// ```no_run
/// let s = heketi_client::types::SnapshotSettings { enable: true, factor: 1.0 };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSettings {
    /// Reserve room for snapshots.
    #[serde(default)]
    pub enable: bool,
    /// Thin-pool size as a multiple of the brick size (1–100).
    #[serde(default)]
    pub factor: f32,
}

/// Body of `POST /volumes`.
///
/// # Example
/// ```no_run
/// use heketi_client::types::{VolumeCreateRequest, VolumeDurabilityInfo};
/// let req = VolumeCreateRequest {
///     size: 10,
///     name: "csi_3f9c".into(),
///     durability: VolumeDurabilityInfo::replicate(3),
///     gid: 2001,
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeCreateRequest {
    /// Size in GiB, ≥ 1.
    pub size: u64,
    /// Clusters to allocate from (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Volume name (`^[a-zA-Z0-9_-]+$`); `vol_<id>` when empty.
    #[serde(default)]
    pub name: String,
    /// Redundancy.
    #[serde(default)]
    pub durability: VolumeDurabilityInfo,
    /// Group owning the volume root (0: none).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub gid: i64,
    /// `gluster volume set` items, each `"<key> <value>"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glustervolumeoptions: Vec<String>,
    /// Block-hosting volume (unsupported by gluster-csi).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block: bool,
    /// Snapshot reserve.
    #[serde(default)]
    pub snapshot: SnapshotSettings,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// How a client mounts a volume with the native GlusterFS client.
///
/// # Example
/// ```no_run
/// # fn demo(v: heketi_client::types::VolumeInfoResponse) {
/// let m = &v.mount.glusterfs;
/// println!("mount -t glusterfs {} /mnt  # backups: {:?}", m.device, m.options.get("backup-volfile-servers"));
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlusterFsMount {
    /// Storage addresses of the nodes serving the volume.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `host:volname` to mount.
    #[serde(default, rename = "device")]
    pub device: String,
    /// Extra mount options, e.g. `backup-volfile-servers`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Mount information of a volume.
///
/// # Example
/// ```no_run
/// # fn demo(v: heketi_client::types::VolumeInfoResponse) {
/// let servers = &v.mount.glusterfs.hosts;
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Native client.
    #[serde(default)]
    pub glusterfs: GlusterFsMount,
}

/// Block-hosting information (empty for file volumes).
///
/// # Example
/// ```no_run
/// # fn demo(v: heketi_client::types::VolumeInfoResponse) {
/// assert!(v.blockinfo.blockvolume.is_empty(), "gluster-csi makes file volumes only");
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Free size in GiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub freesize: u64,
    /// Reserved size in GiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub reservedsize: u64,
    /// Block volumes hosted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockvolume: Vec<String>,
    /// Restriction state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restriction: String,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// Reply of `GET /volumes/{id}`.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let v = c.volume_info("0123456789abcdef0123456789abcdef").await?;
/// println!("{} ({} GiB) in cluster {}", v.name, v.size, v.cluster);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeInfoResponse {
    /// Size in GiB.
    pub size: u64,
    /// Volume name.
    pub name: String,
    /// Volume id.
    pub id: String,
    /// Cluster id.
    pub cluster: String,
    /// Redundancy.
    #[serde(default)]
    pub durability: VolumeDurabilityInfo,
    /// Group owning the volume root (0: none; left out of the JSON then, as Heketi does).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub gid: i64,
    /// Options applied with `gluster volume set` (left out of the JSON when empty, as Heketi
    /// does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glustervolumeoptions: Vec<String>,
    /// Snapshot reserve.
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    /// Block-hosting volume. Heketi sends the key only when true, so a file volume's reply
    /// has no `block`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block: bool,
    /// How to mount it.
    #[serde(default)]
    pub mount: VolumeMount,
    /// Block-hosting details.
    #[serde(default)]
    pub blockinfo: BlockInfo,
    /// Bricks.
    #[serde(default)]
    pub bricks: Vec<BrickInfo>,
}

/// Reply of `GET /volumes`.
///
/// # Example
/// ```no_run
/// # async fn demo(c: heketi_client::Client) -> heketi_client::Result<()> {
/// let ids = c.volume_list().await?.volumes;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeListResponse {
    /// Volume ids (completed volumes only).
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// Body of `POST /volumes/{id}/expand`.
///
/// # Example
/// ```no_run
/// // Grow by 5 GiB.
/// let req = heketi_client::types::VolumeExpandRequest { expand_size: 5 };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeExpandRequest {
    /// GiB to add (a delta, not the new size).
    pub expand_size: u64,
}

/// Body of `POST /volumes/{id}/clone`.
///
/// # Example
/// ```no_run
/// let req = heketi_client::types::VolumeCloneRequest {
///     name: "csi_clone_1".into(),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCloneRequest {
    /// Name of the clone; Heketi picks one when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// An extension of heketi-server (sent only when true; real Heketi ignores unknown
    /// fields): the clone is made read-only in Gluster (`features.read-only`) once its data
    /// is in place. Clones of it are writable again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_serialises_like_heketi() {
        let req = VolumeCreateRequest {
            size: 10,
            name: "csi_abc".into(),
            durability: VolumeDurabilityInfo::replicate(3),
            gid: 2001,
            snapshot: SnapshotSettings {
                enable: true,
                factor: 1.0,
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&req).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({
                "size": 10, "name": "csi_abc",
                "durability": {"type": "replicate", "replicate": {"replica": 3}, "disperse": {}},
                "gid": 2001, "snapshot": {"enable": true, "factor": 1.0}
            })
        );
    }

    #[test]
    fn empty_durability_type_reads_as_none() {
        let d: VolumeDurabilityInfo =
            serde_json::from_str(r#"{"type":"","replicate":{},"disperse":{}}"#)
                .unwrap_or_else(|_| VolumeDurabilityInfo::replicate(9));
        assert_eq!(d.kind, DurabilityType::None);
    }

    /// Heketi v10 leaves out `gid`, `glustervolumeoptions` and `block` when they are zero, empty
    /// or false (`omitempty`). The whole key sets are checked on heketi-server's replies in the
    /// heketi_server suite.
    #[test]
    fn volume_info_leaves_out_unset_omitempty_keys() {
        let omitempty = ["block", "gid", "glustervolumeoptions"];
        let file = serde_json::to_value(VolumeInfoResponse::default()).unwrap_or_default();
        for k in omitempty {
            assert!(file.get(k).is_none(), "{k} in {file}");
        }
        assert_eq!(file["blockinfo"], serde_json::json!({}));

        let set = VolumeInfoResponse {
            gid: 2001,
            glustervolumeoptions: vec!["network.ping-timeout 20".into()],
            block: true,
            ..Default::default()
        };
        let set = serde_json::to_value(set).unwrap_or_default();
        for k in omitempty {
            assert!(set.get(k).is_some(), "{k} missing from {set}");
        }
    }

    #[test]
    fn volume_info_reads_heketi_reply() {
        let body = r#"{"size":10,"name":"vol_1","durability":{"type":"replicate","replicate":{"replica":3},"disperse":{}},
          "snapshot":{"enable":true,"factor":1},"id":"aa","cluster":"bb",
          "mount":{"glusterfs":{"hosts":["10.0.0.1","10.0.0.2"],"device":"10.0.0.1:vol_1",
          "options":{"backup-volfile-servers":"10.0.0.2"}}},"blockinfo":{},
          "bricks":[{"id":"b1","path":"/p","device":"d","node":"n","volume":"aa","size":10485760}]}"#;
        let v: VolumeInfoResponse = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v.name, "vol_1");
        assert_eq!(v.durability.replicate.replica, 3);
        assert_eq!(
            v.mount.glusterfs.options["backup-volfile-servers"],
            "10.0.0.2"
        );
        assert_eq!(v.bricks[0].size, 10_485_760);
    }
}
