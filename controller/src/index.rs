//! What a backend holds: an in-memory index of its volumes, kept current incrementally.
//!
//! Heketi has no get-by-name and no gid query, and `GET /volumes` returns ids only. The index
//! maps every completed volume id to a [`Summary`] (name, size, type, gid, volume context). A
//! catch-up ([`VolumeIndex::catch_up`]) costs one `GET /volumes` plus one `GET /volumes/{id}`
//! per volume not seen before, so after the first load a CreateVolume retry costs a constant
//! number of Heketi requests however many volumes exist. Volumes gone from the list are
//! dropped. Sizes changed outside this controller are picked up by a full reload every
//! [`FULL_RELOAD`], which runs in a background task and swaps its result in
//! ([`VolumeIndex::reload_in_background`]). Callers that act on an entry (idempotent create,
//! expand) read the volume again first.
//!
//! Nothing that reads or changes the index waits for Heketi: the map sits behind a plain mutex
//! held for a few map operations, and refreshes do their reading without it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use heketi_client::types::VolumeInfoResponse;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::params::VolumeType;

/// How often the whole index is read again by default (`--index-reload-seconds`).
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

/// What the index holds, behind a plain mutex that is never held across an `.await`.
#[derive(Default)]
struct IndexState {
    volumes: BTreeMap<String, Summary>,
    /// When the last full reload finished.
    loaded_at: Option<Instant>,
    /// Counts inserts and removes.
    generation: u64,
    /// The generation of the last insert or remove of each id, kept while a refresh that
    /// started before it may still swap its result in.
    touched: HashMap<String, u64>,
    /// The generations at which the refreshes still running started (start → how many).
    running: BTreeMap<u64, usize>,
}

impl IndexState {
    fn touch(&mut self, id: &str) {
        self.generation += 1;
        if !self.running.is_empty() {
            self.touched.insert(id.to_owned(), self.generation);
        }
    }

    fn start(&mut self) -> u64 {
        *self.running.entry(self.generation).or_default() += 1;
        self.generation
    }

    /// Forgets a finished refresh that started at `start`, and the changes no running refresh
    /// needs any more.
    fn finish(&mut self, start: u64) {
        if let Some(n) = self.running.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&start);
            }
        }
        match self.running.keys().next().copied() {
            None => self.touched.clear(),
            Some(oldest) => self.touched.retain(|_, g| *g > oldest),
        }
    }

    /// Whether `id` was inserted or removed after a refresh started at `start`: then what the
    /// controller did is newer than what that refresh read.
    fn changed_since(&self, id: &str, start: u64) -> bool {
        self.touched.get(id).is_some_and(|g| *g > start)
    }
}

/// The index of one backend's volumes.
///
/// Lookups, inserts and removes take a plain mutex for a few map operations and never wait for
/// Heketi. Refreshes read Heketi without holding it and merge their result at the end; an
/// insert or remove made meanwhile is newer than what the refresh read and is kept (each
/// change is stamped with a generation number, and a refresh skips ids changed after it
/// started).
#[derive(Default)]
pub struct VolumeIndex {
    state: Mutex<IndexState>,
    /// Set while a full reload runs in the background, so that only one does.
    reloading: AtomicBool,
}

impl VolumeIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the volumes as the index holds them now.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<String, Summary>) -> R) -> R {
        f(&self.lock().volumes)
    }

    /// Brings the index up to date with Heketi's list: one `GET /volumes`, one read per id
    /// the index does not hold, ids no longer listed dropped. Nothing is locked while Heketi
    /// is asked; other callers go on meanwhile.
    pub async fn catch_up(
        &self,
        client: &heketi_client::Client,
        metrics: &crate::metrics::Metrics,
    ) -> Result<()> {
        self.refresh(client, metrics, false).await
    }

    /// Whether the last full load is older than `every` ([`FULL_RELOAD`] by default). Before
    /// the first load it is not: the first catch-up reads every volume anyway.
    pub fn reload_due(&self, every: Duration) -> bool {
        self.lock().loaded_at.is_some_and(|t| t.elapsed() >= every)
    }

    /// Reads every volume again (picking up changes made outside this controller) and swaps
    /// the result in, in a task of its own; returns at once. Does nothing while another
    /// reload runs.
    pub fn reload_in_background(
        self: &std::sync::Arc<Self>,
        client: heketi_client::Client,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) {
        if self.reloading.swap(true, Ordering::SeqCst) {
            return;
        }
        let index = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = index.reload(&client, &metrics).await {
                tracing::warn!(error = %e, "cannot reload the volume index; trying again later");
            }
            index.reloading.store(false, Ordering::SeqCst);
        });
    }

    /// Reads every volume again and swaps the result in (what [`Self::reload_in_background`]
    /// runs).
    pub async fn reload(
        &self,
        client: &heketi_client::Client,
        metrics: &crate::metrics::Metrics,
    ) -> Result<()> {
        self.refresh(client, metrics, true).await
    }

    async fn refresh(
        &self,
        client: &heketi_client::Client,
        metrics: &crate::metrics::Metrics,
        full: bool,
    ) -> Result<()> {
        let start = self.lock().start();
        let result = self.read(client, metrics, full, start).await;
        let mut state = self.lock();
        if let Ok(read) = &result {
            let Read { listed, summaries } = read;
            let keep = |state: &IndexState, id: &str| state.changed_since(id, start);
            let mut fresh: BTreeMap<String, Summary> = BTreeMap::new();
            for id in listed {
                if keep(&state, id) {
                    continue;
                }
                let summary = summaries
                    .get(id)
                    .or_else(|| (!full).then(|| state.volumes.get(id)).flatten());
                if let Some(s) = summary {
                    fresh.insert(id.clone(), s.clone());
                }
            }
            // Ids changed by this controller during the refresh keep their current entry
            // (or stay removed).
            let changed: Vec<String> = state
                .touched
                .iter()
                .filter(|(_, g)| **g > start)
                .map(|(id, _)| id.clone())
                .collect();
            for id in changed {
                if let Some(s) = state.volumes.get(&id) {
                    fresh.insert(id, s.clone());
                }
            }
            state.volumes = fresh;
            // A first catch-up read every volume: it counts as a full load.
            if full || state.loaded_at.is_none() {
                state.loaded_at = Some(Instant::now());
            }
        }
        state.finish(start);
        result.map(|_| ())
    }

    /// Lists the volumes and reads those not held (all of them when `full`).
    async fn read(
        &self,
        client: &heketi_client::Client,
        metrics: &crate::metrics::Metrics,
        full: bool,
        start: u64,
    ) -> Result<Read> {
        let listed = metrics
            .heketi("volume_list", client.volume_list())
            .await
            .map_err(|e| Error::heketi(format!("listing volumes on {}", client.base_url()), e))?;
        let listed: Vec<String> = listed
            .volumes
            .into_iter()
            .map(|id| id.to_ascii_lowercase())
            .collect();
        let missing: Vec<String> = {
            let state = self.lock();
            listed
                .iter()
                .filter(|id| full || !state.volumes.contains_key(id.as_str()))
                .filter(|id| !state.changed_since(id, start))
                .cloned()
                .collect()
        };
        let mut reads = stream::iter(missing)
            .map(|id| async move {
                let r = metrics.heketi("volume_info", client.volume_info(&id)).await;
                (r, id)
            })
            .buffer_unordered(READ_CONCURRENCY);
        let mut summaries = HashMap::new();
        while let Some((result, id)) = reads.next().await {
            match result {
                Ok(info) => {
                    let s = Summary::from_info(&info);
                    summaries.insert(s.id.clone(), s);
                }
                // Deleted between the list and the read.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::heketi(
                        format!("reading volume {id} on {}", client.base_url()),
                        e,
                    ));
                }
            }
        }
        Ok(Read { listed, summaries })
    }

    /// Reserves a gid of `range` for a create of the Heketi volume `name`
    /// ([`crate::gid::Reservations::reserve`]): none that an indexed volume uses or a create
    /// holds. Runs under the index lock, and a create records its volume in the index before
    /// it releases its gid, so a gid is always seen in one place or the other.
    pub fn reserve_gid(
        &self,
        reservations: &crate::gid::Reservations,
        range: crate::params::GidRange,
        name: &str,
    ) -> Option<crate::gid::Reservation> {
        let state = self.lock();
        let used: std::collections::HashSet<u32> =
            state.volumes.values().filter_map(|s| s.gid).collect();
        let seen = |n: &str| state.volumes.values().any(|s| s.name == n);
        reservations.reserve(range, name, &used, seen)
    }

    /// Records a volume this controller made or changed.
    pub fn insert(&self, summary: Summary) {
        let mut state = self.lock();
        state.touch(&summary.id);
        state.volumes.insert(summary.id.clone(), summary);
    }

    /// Forgets a volume this controller deleted.
    pub fn remove(&self, id: &str) {
        let mut state = self.lock();
        state.touch(id);
        state.volumes.remove(id);
    }
}

/// What one refresh read from Heketi.
struct Read {
    /// Every id listed.
    listed: Vec<String>,
    /// The volumes read.
    summaries: HashMap<String, Summary>,
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

    #[test]
    fn a_gid_is_either_indexed_or_reserved() {
        let index = VolumeIndex::default();
        let gids = crate::gid::Reservations::default();
        let range = crate::params::GidRange {
            min: 2000,
            max: 2002,
        };
        let name = "csi_0123456789abcdef0123";
        let a = index.reserve_gid(&gids, range, name).expect("2000");
        let b = index.reserve_gid(&gids, range, "b").expect("2001");
        assert_eq!((a.gid, b.gid), (2000, 2001));
        // `a`'s create finishes: indexed first, then released. 2000 stays taken.
        index.insert(Summary::from_info(&info("h:v", &["h"], 2000)));
        a.release();
        let c = index.reserve_gid(&gids, range, "c").expect("2002");
        assert_eq!(c.gid, 2002);
        assert!(index.reserve_gid(&gids, range, "d").is_none());
        // `b`'s create certainly failed: released without a volume; 2001 is free again.
        b.release();
        let d = index.reserve_gid(&gids, range, "d");
        assert_eq!(d.as_ref().map(|r| r.gid), Some(2001));
        // `d`'s outcome is unknown: 2001 stays held while no volume named `d` is listed.
        d.expect("d").keep_unsettled();
        assert!(index.reserve_gid(&gids, range, "e").is_none());
        // The volume with 2000 is deleted.
        index.remove(&"ab".repeat(16));
        assert_eq!(
            index.reserve_gid(&gids, range, "e").map(|r| r.gid),
            Some(2000)
        );
        c.release();
    }

    #[test]
    fn an_unsettled_gid_ends_when_the_index_lists_its_volume() {
        let index = VolumeIndex::default();
        let gids = crate::gid::Reservations::default();
        let range = crate::params::GidRange {
            min: 2000,
            max: 2001,
        };
        let name = "csi_0123456789abcdef0123";
        let a = index.reserve_gid(&gids, range, name).expect("a");
        a.keep_unsettled();
        // Heketi finishes the create after all; a refresh indexes it.
        index.insert(Summary::from_info(&info("h:v", &["h"], 2000)));
        let b = index.reserve_gid(&gids, range, "b").expect("b");
        assert_eq!(b.gid, 2001);
        assert_eq!(gids.held(), [2001].into_iter().collect());
    }

    /// A stand-in for Heketi, used only for the concurrency property below (no feature claim
    /// rests on it): `GET /volumes` answers `listed` once `release` is notified, so a refresh
    /// can be held in the middle of its reading; `GET /volumes/{id}` answers at once with a
    /// volume of that id. One request per connection.
    async fn stalling_heketi(
        listed: Vec<String>,
        release: std::sync::Arc<tokio::sync::Notify>,
    ) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let listed = listed.clone();
                let release = std::sync::Arc::clone(&release);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let body = if path == "/volumes" {
                        release.notified().await;
                        serde_json::json!({ "volumes": listed }).to_string()
                    } else {
                        let id = path.trim_start_matches("/volumes/");
                        let mut i = info("h:v", &["h"], 0);
                        i.id = id.to_owned();
                        i.name = format!("vol_{id}");
                        serde_json::to_string(&i).unwrap_or_default()
                    };
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    fn summary(id: &str) -> Summary {
        let mut i = info("h:v", &["h"], 0);
        i.id = id.to_owned();
        i.name = format!("vol_{id}");
        Summary::from_info(&i)
    }

    #[tokio::test]
    async fn lookups_and_changes_do_not_wait_for_a_refresh_and_survive_its_swap() {
        let (a, b, c, d) = (
            "a".repeat(32),
            "b".repeat(32),
            "c".repeat(32),
            "d".repeat(32),
        );
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        // Heketi lists a (held), b (new to the index) and c (removed by the controller while
        // the refresh runs); d is created by the controller meanwhile and not listed yet.
        let url = stalling_heketi(
            vec![a.clone(), b.clone(), c.clone()],
            std::sync::Arc::clone(&release),
        )
        .await;
        let client = heketi_client::Client::builder(&url)
            .disable_auth()
            .build()
            .expect("client");
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let index = std::sync::Arc::new(VolumeIndex::default());
        index.insert(summary(&a));
        index.insert(summary(&c));
        index.reload_in_background(client, std::sync::Arc::clone(&metrics));
        // The reload is now waiting for its list. Everything else goes on at once: these
        // calls are synchronous, and each must finish while the list is still held.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            index.reloading.load(Ordering::SeqCst),
            "the reload is running"
        );
        let quick = tokio::time::timeout(Duration::from_millis(50), async {
            assert_eq!(index.with(|v| v.len()), 2);
            index.insert(summary(&d));
            index.remove(&c);
            assert!(index.with(|v| v.contains_key(&d)));
            let gids = crate::gid::Reservations::default();
            let range = crate::params::GidRange { min: 1, max: 9 };
            assert!(index.reserve_gid(&gids, range, "x").is_some());
        })
        .await;
        assert!(quick.is_ok(), "a lookup or change waited for the refresh");
        release.notify_one();
        for _ in 0..100 {
            if !index.reloading.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !index.reloading.load(Ordering::SeqCst),
            "the reload finished"
        );
        let ids: Vec<String> = index.with(|v| v.keys().cloned().collect());
        assert_eq!(
            ids,
            vec![a, b, d],
            "b read by the refresh; d, inserted during it, kept; c, removed during it, stays gone"
        );
        assert!(!index.reload_due(FULL_RELOAD), "just loaded");
        assert!(index.reload_due(Duration::ZERO));
    }

    #[test]
    fn context_without_device_uses_hosts_and_name() {
        let ctx = volume_context(&info("", &["h1", "h2"], 0));
        assert_eq!(ctx[CTX_SERVERS], "h1,h2");
        assert_eq!(ctx[CTX_VOLUME], "csi_0123456789abcdef0123");
        assert!(!ctx.contains_key(CTX_GID));
    }
}
