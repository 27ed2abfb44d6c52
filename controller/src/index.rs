//! What a backend holds: an in-memory index of its volumes, kept current incrementally.
//!
//! Heketi has no get-by-name and no gid query, and `GET /volumes` returns ids only. The index
//! maps every completed volume id to a [`Summary`] (name, size, type, gid, volume context). Each
//! refresh costs one `GET /volumes` plus one `GET /volumes/{id}` per volume not seen before, so
//! after the first load a CreateVolume retry costs a constant number of Heketi requests however
//! many volumes exist. Volumes gone from the list are dropped. Sizes changed outside this
//! controller are picked up by a full reload every [`FULL_RELOAD`]. Callers that act on an
//! entry (idempotent create, expand) read the volume again first.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use heketi_client::types::VolumeInfoResponse;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::params::VolumeType;

/// How often the whole index is read again.
pub const FULL_RELOAD: Duration = Duration::from_secs(600);
/// Volume reads in flight during a refresh.
const READ_CONCURRENCY: usize = 8;

/// `volume_context` key: comma-separated Gluster servers, the primary first.
pub const CTX_SERVERS: &str = "glusterServers";
/// `volume_context` key: the Gluster volume name.
pub const CTX_VOLUME: &str = "glusterVolume";
/// `volume_context` key (informational): Heketi's volume id.
pub const CTX_HEKETI_ID: &str = "heketiVolumeId";
/// `volume_context` key (informational): the gid owning the volume root.
pub const CTX_GID: &str = "gid";

/// What the node plugin needs to mount a volume: `glusterServers` (primary first),
/// `glusterVolume`, and informational `heketiVolumeId` and `gid`.
pub fn volume_context(info: &VolumeInfoResponse) -> HashMap<String, String> {
    let mount = &info.mount.glusterfs;
    let (primary, volume) = match mount.device.split_once(':') {
        Some((host, vol)) if !host.is_empty() && !vol.is_empty() => {
            (Some(host.to_owned()), vol.to_owned())
        }
        _ => (mount.hosts.first().cloned(), info.name.clone()),
    };
    let mut servers: Vec<String> = primary.into_iter().collect();
    for h in &mount.hosts {
        if !servers.contains(h) {
            servers.push(h.clone());
        }
    }
    let mut ctx = HashMap::from([
        (CTX_SERVERS.to_owned(), servers.join(",")),
        (CTX_VOLUME.to_owned(), volume),
        (CTX_HEKETI_ID.to_owned(), info.id.clone()),
    ]);
    if info.gid > 0 {
        ctx.insert(CTX_GID.to_owned(), info.gid.to_string());
    }
    ctx
}

/// One volume as the index keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Heketi id.
    pub id: String,
    /// Heketi (and Gluster) name.
    pub name: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Redundancy.
    pub volume_type: VolumeType,
    /// Gid owning the volume root, if any.
    pub gid: Option<u32>,
    /// Id of the Heketi cluster holding the volume.
    pub cluster: String,
    /// The CSI volume context.
    pub context: HashMap<String, String>,
}

impl Summary {
    /// The summary of a Heketi volume.
    pub fn from_info(info: &VolumeInfoResponse) -> Self {
        Self {
            id: info.id.to_ascii_lowercase(),
            name: info.name.clone(),
            size_gib: info.size,
            volume_type: VolumeType::from_durability(&info.durability),
            gid: u32::try_from(info.gid).ok().filter(|g| *g > 0),
            cluster: info.cluster.to_ascii_lowercase(),
            context: volume_context(info),
        }
    }
}

#[derive(Default)]
struct IndexState {
    volumes: BTreeMap<String, Summary>,
    loaded_at: Option<Instant>,
}

/// The index of one backend's volumes. Refreshes are serialised; reads see a consistent map.
#[derive(Default)]
pub struct VolumeIndex {
    state: tokio::sync::Mutex<IndexState>,
}

impl VolumeIndex {
    /// Brings the index up to date with Heketi and runs `f` on it.
    pub async fn refreshed<R>(
        &self,
        client: &heketi_client::Client,
        metrics: &crate::metrics::Metrics,
        f: impl FnOnce(&BTreeMap<String, Summary>) -> R,
    ) -> Result<R> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if state
            .loaded_at
            .is_none_or(|t| now.duration_since(t) >= FULL_RELOAD)
        {
            state.volumes.clear();
            state.loaded_at = Some(now);
        }
        let listed = metrics
            .heketi("volume_list", client.volume_list())
            .await
            .map_err(|e| Error::heketi(format!("listing volumes on {}", client.base_url()), e))?;
        let listed: Vec<String> = listed
            .volumes
            .into_iter()
            .map(|id| id.to_ascii_lowercase())
            .collect();
        let present: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        state.volumes.retain(|id, _| present.contains(id.as_str()));
        let missing: Vec<String> = listed
            .iter()
            .filter(|id| !state.volumes.contains_key(id.as_str()))
            .cloned()
            .collect();
        let mut reads = stream::iter(missing)
            .map(|id| async move {
                let r = metrics.heketi("volume_info", client.volume_info(&id)).await;
                (r, id)
            })
            .buffer_unordered(READ_CONCURRENCY);
        let mut failure = None;
        while let Some((result, id)) = reads.next().await {
            match result {
                Ok(info) => {
                    let s = Summary::from_info(&info);
                    state.volumes.insert(s.id.clone(), s);
                }
                // Deleted between the list and the read.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    failure.get_or_insert(Error::heketi(
                        format!("reading volume {id} on {}", client.base_url()),
                        e,
                    ));
                }
            }
        }
        drop(reads);
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(f(&state.volumes))
    }

    /// Reserves a gid of `range` for a create of the Heketi volume `name`
    /// ([`crate::gid::Reservations::reserve`]): none that an indexed volume uses or a create
    /// holds. Runs under the index lock, and a create records its volume in the index before
    /// it releases its gid, so a gid is always seen in one place or the other.
    pub async fn reserve_gid(
        &self,
        reservations: &crate::gid::Reservations,
        range: crate::params::GidRange,
        name: &str,
    ) -> Option<crate::gid::Reservation> {
        let state = self.state.lock().await;
        let used: std::collections::HashSet<u32> =
            state.volumes.values().filter_map(|s| s.gid).collect();
        let seen = |n: &str| state.volumes.values().any(|s| s.name == n);
        reservations.reserve(range, name, &used, seen)
    }

    /// Records a volume this controller made or changed.
    pub async fn insert(&self, summary: Summary) {
        self.state
            .lock()
            .await
            .volumes
            .insert(summary.id.clone(), summary);
    }

    /// Forgets a volume this controller deleted.
    pub async fn remove(&self, id: &str) {
        self.state.lock().await.volumes.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use heketi_client::types::{GlusterFsMount, VolumeDurabilityInfo, VolumeMount};

    use super::*;

    fn info(device: &str, hosts: &[&str], gid: i64) -> VolumeInfoResponse {
        VolumeInfoResponse {
            size: 3,
            name: "csi_0123456789abcdef0123".into(),
            id: "AB".repeat(16),
            gid,
            durability: VolumeDurabilityInfo::replicate(3),
            mount: VolumeMount {
                glusterfs: GlusterFsMount {
                    hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                    device: device.into(),
                    options: Default::default(),
                },
            },
            ..Default::default()
        }
    }

    #[test]
    fn context_puts_the_primary_first() {
        let i = info(
            "10.0.0.2:csi_0123456789abcdef0123",
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            2001,
        );
        let ctx = volume_context(&i);
        assert_eq!(ctx[CTX_SERVERS], "10.0.0.2,10.0.0.1,10.0.0.3");
        assert_eq!(ctx[CTX_VOLUME], "csi_0123456789abcdef0123");
        assert_eq!(ctx[CTX_HEKETI_ID], "AB".repeat(16));
        assert_eq!(ctx[CTX_GID], "2001");

        let s = Summary::from_info(&i);
        assert_eq!(s.id, "ab".repeat(16));
        assert_eq!(s.gid, Some(2001));
        assert_eq!(s.volume_type, VolumeType::Replicate(3));
    }

    #[tokio::test]
    async fn a_gid_is_either_indexed_or_reserved() {
        let index = VolumeIndex::default();
        let gids = crate::gid::Reservations::default();
        let range = crate::params::GidRange {
            min: 2000,
            max: 2002,
        };
        let name = "csi_0123456789abcdef0123";
        let a = index.reserve_gid(&gids, range, name).await.expect("2000");
        let b = index.reserve_gid(&gids, range, "b").await.expect("2001");
        assert_eq!((a.gid, b.gid), (2000, 2001));
        // `a`'s create finishes: indexed first, then released. 2000 stays taken.
        index
            .insert(Summary::from_info(&info("h:v", &["h"], 2000)))
            .await;
        a.release();
        let c = index.reserve_gid(&gids, range, "c").await.expect("2002");
        assert_eq!(c.gid, 2002);
        assert!(index.reserve_gid(&gids, range, "d").await.is_none());
        // `b`'s create certainly failed: released without a volume; 2001 is free again.
        b.release();
        let d = index.reserve_gid(&gids, range, "d").await;
        assert_eq!(d.as_ref().map(|r| r.gid), Some(2001));
        // `d`'s outcome is unknown: 2001 stays held while no volume named `d` is listed.
        d.expect("d").keep_unsettled();
        assert!(index.reserve_gid(&gids, range, "e").await.is_none());
        // The volume with 2000 is deleted.
        index.remove(&"ab".repeat(16)).await;
        assert_eq!(
            index.reserve_gid(&gids, range, "e").await.map(|r| r.gid),
            Some(2000)
        );
        c.release();
    }

    #[tokio::test]
    async fn an_unsettled_gid_ends_when_the_index_lists_its_volume() {
        let index = VolumeIndex::default();
        let gids = crate::gid::Reservations::default();
        let range = crate::params::GidRange {
            min: 2000,
            max: 2001,
        };
        let name = "csi_0123456789abcdef0123";
        let a = index.reserve_gid(&gids, range, name).await.expect("a");
        a.keep_unsettled();
        // Heketi finishes the create after all; a refresh indexes it.
        index
            .insert(Summary::from_info(&info("h:v", &["h"], 2000)))
            .await;
        let b = index.reserve_gid(&gids, range, "b").await.expect("b");
        assert_eq!(b.gid, 2001);
        assert_eq!(gids.held(), [2001].into_iter().collect());
    }

    #[test]
    fn context_without_device_uses_hosts_and_name() {
        let ctx = volume_context(&info("", &["h1", "h2"], 0));
        assert_eq!(ctx[CTX_SERVERS], "h1,h2");
        assert_eq!(ctx[CTX_VOLUME], "csi_0123456789abcdef0123");
        assert!(!ctx.contains_key(CTX_GID));
    }
}
