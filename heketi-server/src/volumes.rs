//! Volume operations: create, delete, expand, clone — each validated and allocated before the
//! reply, recorded in the state file before its first Gluster step, and carried out in the
//! background.
//!
//! A volume's size is a Gluster quota limit on its root with `features.quota-deem-statfs` on,
//! so `df` in a mount shows it. Expanding raises the limit (directory bricks have no size of
//! their own). A clone is a new volume with the same size, durability, group and options onto
//! which the source's data is copied through FUSE mounts on this machine (`cp -a`, keeping
//! ownership, modes, times and links): Gluster snapshots need thin-provisioned LVM bricks,
//! which directory bricks are not. A copy counts only if no entry of the source changed while
//! it was made (see `App::copy_data`); a clone asked for `read_only` is made read-only last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use heketi_client::types::{VolumeInfoResponse, VolumeListResponse};

use crate::allocate::{self, AllocError};
use crate::app::{Accepted, App};
use crate::error::{ApiError, Error};
use crate::fuse;
use crate::gluster::VolumeRunState;
use crate::ids::new_id;
use crate::model::{Brick, State, Tombstone, Volume, VolumeStatus, brick_layout, volume_info};
use crate::queue::OpResult;
use crate::store::StoreError;
use crate::validate::{CloneBody, ExpandBody, VolumeCreateBody, parse_volume_option};

/// Step recorded once a create's brick directories exist and just before `gluster volume
/// create` runs: from here until the next step, whether Gluster has the volume is unknown if
/// the server dies.
pub const STEP_BRICKS_MADE: &str = "bricks made";

/// How long a rolled-back create is watched for a late Gluster volume.
pub const TOMBSTONE_SECS: u64 = 180;

/// What [`App::destroy`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destroyed {
    /// Gluster had the volume; it was stopped and deleted.
    Deleted,
    /// Gluster had no volume of that name.
    Absent,
    /// Gluster has a volume of that name with other bricks; it was left alone.
    Foreign,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Heketi refuses to delete the volume holding its own database.
pub const HEKETI_DB_VOLUME: &str = "heketidbstorage";

/// Heketi's limit of volumes per cluster.
pub const MAX_VOLUMES_PER_CLUSTER: usize = 1000;

/// Longest a clone's copy may take; also the bound on each walk of a mount that checks a copy
/// or clears a rejected one.
const COPY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Copies of a clone's source tried before the clone fails because the source kept changing.
pub const COPY_ATTEMPTS: u32 = 3;

/// Step recorded once a clone asked for `read_only` has `features.read-only` on: its last.
pub const STEP_READ_ONLY: &str = "read-only set";

/// Where the bricks of a new volume go, and the volume record.
fn allocate_volume(s: &State, candidates: &[String], vol: &mut Volume) -> Result<(), String> {
    let (count, brick_kib) = brick_layout(&vol.durability, vol.size_gib);
    let mut errors: BTreeMap<String, AllocError> = BTreeMap::new();
    for cluster in candidates {
        match allocate::place(s, cluster, count, brick_kib) {
            Ok(spots) => {
                vol.cluster = cluster.clone();
                vol.bricks = spots
                    .into_iter()
                    .map(|spot| {
                        let id = new_id();
                        let host = s
                            .nodes
                            .get(&spot.node)
                            .map(|n| n.brick_host().to_owned())
                            .unwrap_or_default();
                        let dev = s
                            .devices
                            .get(&spot.device)
                            .map(|d| d.name.clone())
                            .unwrap_or_default();
                        Brick {
                            path: format!("{dev}/brick_{id}/brick"),
                            id,
                            device: spot.device,
                            node: spot.node,
                            host,
                            size_kib: brick_kib,
                        }
                    })
                    .collect();
                return Ok(());
            }
            Err(e) => {
                errors.insert(cluster.clone(), e);
            }
        }
    }
    Err(cluster_errors(
        "Unable to create volume on any cluster:",
        &errors,
    ))
}

/// Heketi's way of reporting per-cluster failures: one error alone, else a list.
fn cluster_errors<E: std::fmt::Display>(prefix: &str, errors: &BTreeMap<String, E>) -> String {
    match errors.len() {
        0 => AllocError::NoSpace.to_string(),
        1 => errors
            .values()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default(),
        _ => {
            let mut lines = vec![prefix.to_owned()];
            lines.extend(errors.iter().map(|(c, e)| format!("Cluster {c}: {e}")));
            lines.join("\n")
        }
    }
}

fn failed_alloc(msg: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("Failed to allocate new volume: {msg}"))
}

impl App {
    /// `GET /volumes`: complete volumes only.
    pub async fn volume_list(&self) -> VolumeListResponse {
        VolumeListResponse {
            volumes: self
                .store
                .read(|s| {
                    s.volumes
                        .values()
                        .filter(|v| v.visible())
                        .map(|v| v.id.clone())
                        .collect()
                })
                .await,
        }
    }

    /// `GET /volumes/{id}`; a volume being created or deleted is not found.
    pub async fn volume_info(&self, id: &str) -> Result<VolumeInfoResponse, ApiError> {
        self.store
            .read(|s| s.volumes.get(id).filter(|v| v.visible()).map(volume_info))
            .await
            .ok_or_else(ApiError::id_not_found)
    }

    /// `POST /volumes`.
    pub async fn volume_create(
        self: &Arc<Self>,
        body: VolumeCreateBody,
    ) -> Result<Accepted, ApiError> {
        let spec = body.validate()?;
        self.store
            .read(|s| {
                if s.clusters.is_empty() {
                    return Err(ApiError::bad_request("No clusters configured"));
                }
                for c in &spec.clusters {
                    if !s.clusters.contains_key(c) {
                        return Err(ApiError::bad_request(format!("Cluster id {c} not found")));
                    }
                }
                Ok(())
            })
            .await?;
        let slot = self.slot()?;

        let id = new_id();
        let active = self.mark_active(&id);
        let mut vol = Volume {
            name: spec.name.clone().unwrap_or_else(|| format!("vol_{id}")),
            id,
            cluster: String::new(),
            size_gib: spec.size_gib,
            durability: spec.durability,
            gid: spec.gid,
            options: spec.options.clone(),
            snapshot: spec.snapshot,
            read_only: false,
            bricks: Vec::new(),
            status: VolumeStatus::Creating {
                clone_of: None,
                step: "allocated".into(),
            },
        };
        self.store
            .update(|s| {
                let wanted: Vec<String> = if spec.clusters.is_empty() {
                    s.clusters.keys().cloned().collect()
                } else {
                    spec.clusters.clone()
                };
                let mut errors: BTreeMap<String, String> = BTreeMap::new();
                let mut candidates = Vec::new();
                for c in wanted {
                    let Some(cluster) = s.clusters.get(&c) else {
                        continue;
                    };
                    if !cluster.file {
                        errors.insert(c, "Cluster does not support requested volume type".into());
                    } else if s.name_in_use(&vol.name) {
                        errors.insert(c, format!("Volume name '{}' already in use", vol.name));
                    } else if s.cluster_volume_count(&c) >= MAX_VOLUMES_PER_CLUSTER {
                        errors.insert(
                            c.clone(),
                            format!(
                                "Cluster has {} volumes and limit is {MAX_VOLUMES_PER_CLUSTER}",
                                s.cluster_volume_count(&c)
                            ),
                        );
                    } else {
                        candidates.push(c);
                    }
                }
                if candidates.is_empty() {
                    let msg = if errors.is_empty() {
                        AllocError::NoSpace.to_string()
                    } else {
                        cluster_errors("No eligible cluster for volume", &errors)
                    };
                    return Err(failed_alloc(msg));
                }
                allocate_volume(s, &candidates, &mut vol).map_err(failed_alloc)?;
                s.volumes.insert(vol.id.clone(), vol.clone());
                Ok(())
            })
            .await?;
        tracing::info!(volume = %vol.id, name = %vol.name, size_gib = vol.size_gib, "creating volume");
        let app = Arc::clone(self);
        Ok(self.spawn(Some(slot), async move {
            let _active = active;
            app.run_create(vol.id).await
        }))
    }

    /// `POST /volumes/{id}/clone`.
    pub async fn volume_clone(
        self: &Arc<Self>,
        src_id: &str,
        body: CloneBody,
    ) -> Result<Accepted, ApiError> {
        let spec = body.validate()?;
        let src = self
            .store
            .read(|s| s.volumes.get(src_id).filter(|v| v.visible()).cloned())
            .await
            .ok_or_else(ApiError::id_not_found)?;
        let slot = self.slot()?;
        let id = new_id();
        let active = self.mark_active(&id);
        let mut vol = Volume {
            name: spec.name.unwrap_or_else(|| format!("vol_{id}")),
            id,
            cluster: src.cluster.clone(),
            size_gib: src.size_gib,
            durability: src.durability,
            gid: src.gid,
            options: src.options.clone(),
            snapshot: src.snapshot,
            // Not the source's: a clone of a read-only volume is writable unless asked.
            read_only: spec.read_only,
            bricks: Vec::new(),
            status: VolumeStatus::Creating {
                clone_of: Some(src.id.clone()),
                step: "allocated".into(),
            },
        };
        let fail = |m: String| ApiError::internal(format!("Failed clone volume {src_id}: {m}"));
        self.store
            .update(|s| {
                if s.name_in_use(&vol.name) {
                    return Err(fail(format!("Volume name '{}' already in use", vol.name)));
                }
                allocate_volume(s, std::slice::from_ref(&src.cluster), &mut vol).map_err(fail)?;
                s.volumes.insert(vol.id.clone(), vol.clone());
                Ok(())
            })
            .await?;
        tracing::info!(volume = %vol.id, name = %vol.name, source = %src.id, read_only = vol.read_only, "cloning volume");
        let app = Arc::clone(self);
        Ok(self.spawn(Some(slot), async move {
            let _active = active;
            app.run_create(vol.id).await
        }))
    }

    /// `POST /volumes/{id}/expand`.
    pub async fn volume_expand(
        self: &Arc<Self>,
        id: &str,
        body: ExpandBody,
    ) -> Result<Accepted, ApiError> {
        let add_gib = body.validate()?;
        let vol = self
            .store
            .read(|s| s.volumes.get(id).filter(|v| v.visible()).cloned())
            .await
            .ok_or_else(ApiError::id_not_found)?;
        if vol.status != VolumeStatus::Online {
            return Err(busy(id));
        }
        let slot = self.slot()?;
        let active = self.mark_active(id);
        let to_gib = vol.size_gib.saturating_add(add_gib);
        let (_, new_brick_kib) = brick_layout(&vol.durability, to_gib);
        self.store
            .update(|s| {
                let v = s
                    .volumes
                    .get(id)
                    .filter(|v| v.status == VolumeStatus::Online)
                    .cloned()
                    .ok_or_else(|| busy(id))?;
                let extra = v
                    .bricks
                    .iter()
                    .map(|b| new_brick_kib.saturating_sub(b.size_kib))
                    .max()
                    .unwrap_or(0);
                allocate::can_grow(s, &v, extra).map_err(|e| {
                    ApiError::internal(format!("Failed to allocate volume expansion: {e}"))
                })?;
                if let Some(v) = s.volumes.get_mut(id) {
                    for b in &mut v.bricks {
                        b.size_kib = b.size_kib.max(new_brick_kib);
                    }
                    v.status = VolumeStatus::Expanding {
                        from_gib: v.size_gib,
                        to_gib,
                        step: "allocated".into(),
                    };
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        tracing::info!(volume = %id, to_gib, "expanding volume");
        let app = Arc::clone(self);
        let id = id.to_owned();
        Ok(self.spawn(Some(slot), async move {
            let _active = active;
            app.run_expand(id).await
        }))
    }

    /// `DELETE /volumes/{id}`.
    pub async fn volume_delete(self: &Arc<Self>, id: &str) -> Result<Accepted, ApiError> {
        let vol = self
            .store
            .read(|s| s.volumes.get(id).filter(|v| v.visible()).cloned())
            .await
            .ok_or_else(ApiError::id_not_found)?;
        if vol.name == HEKETI_DB_VOLUME {
            return Err(ApiError::conflict(
                "Cannot delete volume containing the Heketi database",
            ));
        }
        if vol.status != VolumeStatus::Online {
            return Err(busy(id));
        }
        let slot = self.slot()?;
        let active = self.mark_active(id);
        self.store
            .update(|s| {
                let being_cloned = s.volumes.values().any(|v| {
                    matches!(&v.status, VolumeStatus::Creating { clone_of: Some(src), .. } if src == id)
                });
                match s.volumes.get_mut(id) {
                    Some(v) if v.status == VolumeStatus::Online && !being_cloned => {
                        v.status = VolumeStatus::Deleting {
                            step: "marked".into(),
                        };
                        Ok(())
                    }
                    Some(_) => Err(busy(id)),
                    None => Err(ApiError::id_not_found()),
                }
            })
            .await?;
        tracing::info!(volume = %id, name = %vol.name, "deleting volume");
        let app = Arc::clone(self);
        let id = id.to_owned();
        Ok(self.spawn(Some(slot), async move {
            let _active = active;
            app.run_delete(id).await
        }))
    }

    // ------------------------------------------------------------------ background parts

    async fn snapshot(&self, id: &str) -> Result<Volume, Error> {
        self.store
            .read(|s| s.volumes.get(id).cloned())
            .await
            .ok_or_else(|| Error::Gone(format!("volume {id} disappeared from the state")))
    }

    /// Records that `step` of the operation on volume `id` is done.
    async fn step(&self, id: &str, done: &str) -> Result<(), Error> {
        self.store
            .update(|s| {
                if let Some(v) = s.volumes.get_mut(id) {
                    match &mut v.status {
                        VolumeStatus::Creating { step, .. }
                        | VolumeStatus::Expanding { step, .. }
                        | VolumeStatus::Deleting { step } => *step = done.to_owned(),
                        VolumeStatus::Online => {}
                    }
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(())
    }

    async fn run_create(self: Arc<Self>, id: String) -> OpResult {
        match self.create_steps(&id).await {
            Ok(()) => {
                self.store
                    .update(|s| {
                        if let Some(v) = s.volumes.get_mut(&id) {
                            v.status = VolumeStatus::Online;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await?;
                tracing::info!(volume = %id, "volume created");
                Ok(Some(format!("/volumes/{id}")))
            }
            Err(e) => {
                tracing::warn!(volume = %id, error = %e, "create failed; rolling back");
                match self.snapshot(&id).await {
                    Ok(vol) => match self.destroy(&vol, true).await {
                        Ok(outcome) => {
                            let uncertain = matches!(
                                e,
                                Error::Command(crate::exec::CommandError::Timeout { .. })
                            );
                            if let Err(se) = self.forget_rolled_back(&vol, outcome, uncertain).await
                            {
                                tracing::error!(volume = %id, error = %se, "cannot record the rollback");
                            }
                        }
                        Err(re) => {
                            // The record stays (invisible); the next start retries the rollback.
                            tracing::error!(volume = %id, error = %re, "rollback failed");
                        }
                    },
                    Err(re) => tracing::error!(volume = %id, error = %re, "rollback impossible"),
                }
                Err(e.to_string())
            }
        }
    }

    async fn create_steps(&self, id: &str) -> Result<(), Error> {
        let vol = self.snapshot(id).await?;
        let gid = u32::try_from(vol.gid).ok().filter(|g| *g != 0);
        for (b, host) in vol.bricks.iter().zip(self.brick_nodes(&vol).await) {
            self.bricks
                .create_brick(&host, b, gid)
                .await
                .map_err(|source| Error::Node {
                    what: "cannot make brick directory",
                    path: b.spec(),
                    source,
                })?;
        }
        self.step(id, STEP_BRICKS_MADE).await?;

        let specs: Vec<String> = vol.bricks.iter().map(Brick::spec).collect();
        self.gluster
            .volume_create(&vol.name, &vol.durability, &specs)
            .await?;
        self.step(id, "gluster volume created").await?;
        self.gluster.volume_start(&vol.name).await?;
        self.step(id, "started").await?;

        if let VolumeStatus::Creating {
            clone_of: Some(src),
            ..
        } = &vol.status
        {
            let source = self.snapshot(src).await?;
            self.copy_data(&source, &vol).await?;
            self.step(id, "data copied").await?;
        }

        self.gluster.quota_enable(&vol.name).await?;
        self.gluster.quota_limit(&vol.name, vol.size_gib).await?;
        self.gluster
            .volume_set(&vol.name, "features.quota-deem-statfs", "on")
            .await?;
        self.step(id, "quota set").await?;

        for item in &vol.options {
            let opt = parse_volume_option(item).map_err(|e| Error::Unsupported(e.message))?;
            self.gluster
                .volume_set(&vol.name, &opt.key, &opt.value)
                .await?;
        }
        self.step(id, "options set").await?;

        // Last, after the data and every option (a `features.read-only off` among the
        // inherited options must not win). A restart before the volume is recorded online
        // rolls the whole create back, as at any other step (src/reconcile.rs).
        if vol.read_only {
            self.gluster
                .volume_set(&vol.name, "features.read-only", "on")
                .await?;
            self.step(id, STEP_READ_ONLY).await?;
        }
        Ok(())
    }

    /// The management address of the node of each brick of `vol`, in brick order.
    async fn brick_nodes(&self, vol: &Volume) -> Vec<String> {
        self.store
            .read(|s| {
                vol.bricks
                    .iter()
                    .map(|b| s.node_manage_host(&b.node, &b.host))
                    .collect()
            })
            .await
    }

    /// Copies the data of `src` into `dst` through two temporary FUSE mounts, as it was at one
    /// moment.
    ///
    /// Writers may change the source during the copy (nothing stops them), so a copy is
    /// verified: the time is noted before it starts, and afterwards every entry of the source
    /// is looked at (lstat). If any changed at or after that time (less
    /// [`fuse::CTIME_SKEW_MARGIN`] for clocks), the copy is rejected, the destination emptied,
    /// and the copy made again (once that change is older than the margin), [`COPY_ATTEMPTS`]
    /// times in all; then the clone fails (and is rolled back like any failed create). An
    /// accepted copy saw no change from its start to the end of the check, so it is the source
    /// as it was when the copy started.
    async fn copy_data(&self, src: &Volume, dst: &Volume) -> Result<(), Error> {
        let base = self.state_dir.join("mnt");
        let src_dir = base.join(format!("{}-src", dst.id));
        let dst_dir = base.join(format!("{}-dst", dst.id));
        let src_hosts = crate::model::mount_info(src).glusterfs.hosts;
        let dst_hosts = crate::model::mount_info(dst).glusterfs.hosts;
        fuse::mount(&src_hosts, &src.name, &src_dir, &log_of(&src_dir)).await?;
        let result = async {
            fuse::mount(&dst_hosts, &dst.name, &dst_dir, &log_of(&dst_dir)).await?;
            let copied = self.copy_verified(src, dst, &src_dir, &dst_dir).await;
            let unmounted = fuse::unmount(&dst_dir).await;
            copied?;
            unmounted.map_err(Error::from)
        }
        .await;
        let unmounted = fuse::unmount(&src_dir).await;
        result?;
        unmounted?;
        let _ = std::fs::remove_file(log_of(&src_dir));
        let _ = std::fs::remove_file(log_of(&dst_dir));
        Ok(())
    }

    /// The attempts of [`Self::copy_data`], between its mounts.
    async fn copy_verified(
        &self,
        src: &Volume,
        dst: &Volume,
        src_dir: &Path,
        dst_dir: &Path,
    ) -> Result<(), Error> {
        for attempt in 1..=COPY_ATTEMPTS {
            let started = SystemTime::now();
            let clock = std::time::Instant::now();
            let copied = fuse::copy_tree(src_dir, dst_dir, COPY_TIMEOUT).await;
            let copy_secs = clock.elapsed().as_secs_f64();
            // Checked even when `cp` failed: a file removed under it makes it fail, and that
            // is a change like any other.
            let since = started
                .checked_sub(fuse::CTIME_SKEW_MARGIN)
                .unwrap_or(std::time::UNIX_EPOCH);
            let changed = self.source_changed(src, dst, since).await?;
            let check_secs = clock.elapsed().as_secs_f64() - copy_secs;
            let Some(changed) = changed else {
                if copied.is_ok() {
                    tracing::info!(
                        volume = %dst.id,
                        source = %src.id,
                        attempt,
                        copy_secs,
                        check_secs,
                        "copy accepted: the source did not change during it"
                    );
                }
                return copied.map_err(Error::from);
            };
            tracing::warn!(
                volume = %dst.id,
                source = %src.id,
                attempt,
                of = COPY_ATTEMPTS,
                changed = %changed.path.display(),
                copy_error = copied.as_ref().err().map(tracing::field::display),
                "the source changed during the copy; copy rejected"
            );
            if attempt == COPY_ATTEMPTS {
                break;
            }
            fuse::clear(dst_dir, COPY_TIMEOUT)
                .await
                .map_err(|source| Error::Copy {
                    what: format!("cannot empty the clone {} after a rejected copy", dst.name),
                    source,
                })?;
            // The next copy starts once the change found is past the margin: a burst of
            // writes that ended just before this copy started (a change within the margin
            // but before the start) then does not reject the next one too.
            let settled = changed.ctime + fuse::CTIME_SKEW_MARGIN;
            if let Ok(wait) = settled.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait.min(fuse::CTIME_SKEW_MARGIN)).await;
            }
        }
        Err(Error::SourceKeptChanging {
            volume: src.name.clone(),
            attempts: COPY_ATTEMPTS,
        })
    }

    /// The first entry of `src` that changed at or after `since`, seen through a mount of its
    /// own made for this check: the copy's mount may answer a `stat` from its caches (the
    /// kernel's FUSE attributes and Gluster's md-cache, each 1 s by default and up to minutes
    /// as an operator sets them), which could hide a change made just after `cp` read an
    /// entry. A fresh mount has nothing cached.
    async fn source_changed(
        &self,
        src: &Volume,
        dst: &Volume,
        since: SystemTime,
    ) -> Result<Option<fuse::Changed>, Error> {
        let dir = self.state_dir.join("mnt").join(format!("{}-check", dst.id));
        let hosts = crate::model::mount_info(src).glusterfs.hosts;
        fuse::mount(&hosts, &src.name, &dir, &log_of(&dir)).await?;
        let found = fuse::source_changed_since(&dir, since, COPY_TIMEOUT).await;
        let unmounted = fuse::unmount(&dir).await;
        let found = found.map_err(|source| Error::Copy {
            what: format!("cannot check the copy against the source {}", src.name),
            source,
        })?;
        unmounted?;
        let _ = std::fs::remove_file(log_of(&dir));
        Ok(found)
    }

    /// Stops and deletes the Gluster volume of `vol` (if Gluster has it) and removes its brick
    /// directories. A Gluster volume of that name whose bricks are not this record's is not
    /// touched: with `foreign_ok` that is fine (a failed create must not delete someone else's
    /// volume), otherwise it is an error.
    pub(crate) async fn destroy(&self, vol: &Volume, foreign_ok: bool) -> Result<Destroyed, Error> {
        let outcome = match self.gluster.volume_facts(&vol.name).await? {
            None => Destroyed::Absent,
            Some(facts) => {
                let ours = facts.bricks.len() == vol.bricks.len()
                    && vol.bricks.iter().all(|b| {
                        let tail = format!("/brick_{}/brick", b.id);
                        facts.bricks.iter().any(|f| f.ends_with(&tail))
                    });
                if ours {
                    if facts.state == VolumeRunState::Started {
                        self.gluster.volume_stop(&vol.name).await?;
                        self.step(&vol.id, "stopped").await?;
                    }
                    self.gluster.volume_delete(&vol.name).await?;
                    self.step(&vol.id, "gluster volume deleted").await?;
                    Destroyed::Deleted
                } else if foreign_ok {
                    Destroyed::Foreign
                } else {
                    return Err(Error::Gone(format!(
                        "Gluster volume {} does not have the bricks recorded for it; not deleting it",
                        vol.name
                    )));
                }
            }
        };
        // Every brick is tried, so that one unreachable node does not keep the others' bricks;
        // the first failure is reported (and the whole removal retried later).
        let mut first_error = None;
        for (b, host) in vol.bricks.iter().zip(self.brick_nodes(vol).await) {
            if let Err(source) = self.bricks.remove_brick(&host, b).await {
                tracing::warn!(volume = %vol.id, brick = %b.spec(), error = %source, "cannot remove brick directory");
                first_error.get_or_insert(Error::Node {
                    what: "cannot remove brick directory",
                    path: b.spec(),
                    source,
                });
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(outcome)
    }

    /// Forgets a rolled-back create. When Gluster did not have its volume although a `volume
    /// create` may have been under way (`uncertain`: its CLI was killed by a timeout or died
    /// with the server), glusterd may still complete it, so the volume is kept as a tombstone
    /// that [`crate::reconcile::sweep`] watches for a while (its name stays reserved).
    pub(crate) async fn forget_rolled_back(
        &self,
        vol: &Volume,
        outcome: Destroyed,
        uncertain: bool,
    ) -> Result<(), StoreError> {
        let until = unix_now() + TOMBSTONE_SECS;
        self.store
            .update(|s| {
                s.volumes.remove(&vol.id);
                if outcome == Destroyed::Absent && uncertain {
                    s.tombstones.push(Tombstone {
                        volume: vol.clone(),
                        until,
                    });
                }
                Ok(())
            })
            .await
    }

    async fn run_delete(self: Arc<Self>, id: String) -> OpResult {
        let vol = self.snapshot(&id).await.map_err(|e| e.to_string())?;
        match self.destroy(&vol, false).await {
            Ok(_) => {
                self.store
                    .update(|s| {
                        s.volumes.remove(&id);
                        Ok::<_, StoreError>(())
                    })
                    .await?;
                tracing::info!(volume = %id, "volume deleted");
                Ok(None)
            }
            Err(e) => {
                // While Gluster still has the volume, it is given back to the user (a new
                // delete retries); once Gluster's volume is gone the record stays hidden and
                // the next start finishes the cleanup.
                let gluster_has_it = matches!(
                    self.gluster.volume_list().await,
                    Ok(names) if names.contains(&vol.name)
                );
                if gluster_has_it {
                    let _ = self
                        .store
                        .update(|s| {
                            if let Some(v) = s.volumes.get_mut(&id) {
                                v.status = VolumeStatus::Online;
                            }
                            Ok::<_, StoreError>(())
                        })
                        .await;
                }
                Err(e.to_string())
            }
        }
    }

    async fn run_expand(self: Arc<Self>, id: String) -> OpResult {
        let result = self.expand_steps(&id).await;
        match result {
            Ok(()) => {
                self.store
                    .update(|s| {
                        if let Some(v) = s.volumes.get_mut(&id)
                            && let VolumeStatus::Expanding { to_gib, .. } = v.status
                        {
                            v.size_gib = to_gib;
                            v.status = VolumeStatus::Online;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await?;
                Ok(Some(format!("/volumes/{id}")))
            }
            Err(e) => {
                let _ = self
                    .store
                    .update(|s| {
                        if let Some(v) = s.volumes.get_mut(&id)
                            && let VolumeStatus::Expanding { from_gib, .. } = v.status
                        {
                            let (_, kib) = brick_layout(&v.durability, from_gib);
                            for b in &mut v.bricks {
                                b.size_kib = kib;
                            }
                            v.status = VolumeStatus::Online;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await;
                Err(e.to_string())
            }
        }
    }

    pub(crate) async fn expand_steps(&self, id: &str) -> Result<(), Error> {
        let vol = self.snapshot(id).await?;
        let VolumeStatus::Expanding { to_gib, .. } = vol.status else {
            return Ok(());
        };
        self.gluster.quota_limit(&vol.name, to_gib).await?;
        self.step(id, "quota raised").await?;
        Ok(())
    }
}

/// The log file of the FUSE client mounted at `dir`.
fn log_of(dir: &Path) -> PathBuf {
    dir.with_extension("log")
}

fn busy(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "Volume {id} is busy with another operation; retry later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cluster_error_is_reported_alone() {
        let mut m = BTreeMap::new();
        m.insert("c1".to_owned(), AllocError::NoSpace);
        assert_eq!(cluster_errors("p", &m), "No space");
        m.insert("c2".to_owned(), AllocError::EmptyCluster);
        assert_eq!(
            cluster_errors("p", &m),
            "p\nCluster c1: No space\nCluster c2: No nodes in cluster"
        );
    }
}
