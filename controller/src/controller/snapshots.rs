//! CreateSnapshot, DeleteSnapshot and ListSnapshots.
//!
//! A snapshot is a Heketi clone of its source volume (`POST /volumes/{id}/clone`) on the
//! source's Heketi, named as [`names::SnapshotName`] says and asked to be read-only in Gluster
//! (a heketi-server extension; real Heketi ignores it and makes a Gluster snapshot clone on
//! thin LVM). Nothing is kept by the controller: a retried CreateSnapshot finds the snapshot by
//! the prefix of its name, ListSnapshots reads source and creation time off the names. The
//! snapshot is an independent Gluster volume, so deleting its source loses nothing of it.
//! Restoring is a clone of the snapshot's volume (CreateVolume with a snapshot source,
//! [`super::CloneSource`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use csi_proto::prost_types::Timestamp;
use csi_proto::v1::{
    CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    Snapshot, list_snapshots_response,
};
use heketi_client::types::{VolumeCloneRequest, VolumeInfoResponse};

use super::{
    Inner, confirm_gone, delete_unwanted, detached, heketi_delete, no_default_for_volume,
    refresh_index,
};
use crate::backend::Target;
use crate::error::{Error, Result};
use crate::index::Summary;
use crate::names::{self, SnapshotName};
use crate::paging;
use crate::params::Credentials;
use crate::sizes::gib_to_bytes;
use crate::snapshot_id::SnapshotId;
use crate::volume_id::{BackendRef, VolumeId};

/// Parameters the CO may add to every call (the snapshotter's metadata); any other
/// VolumeSnapshotClass parameter is refused.
const CO_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The oldest snapshot whose name starts with `prefix` (the one every retry settles on).
fn oldest_with_prefix(vols: &BTreeMap<String, Summary>, prefix: &str) -> Option<String> {
    vols.values()
        .filter_map(|s| SnapshotName::parse(&s.name).map(|n| (n, s)))
        .filter(|(n, _)| n.prefix == prefix)
        .min_by(|(a, sa), (b, sb)| a.created.cmp(&b.created).then(sa.id.cmp(&sb.id)))
        .map(|(_, s)| s.id.clone())
}

/// The CSI snapshot for the Heketi volume `info` (a snapshot named `name`) on `backend`.
fn snapshot(backend: &BackendRef, info: &Summary, name: &SnapshotName) -> Result<Snapshot> {
    let snapshot_id =
        SnapshotId(VolumeId::new(backend.clone(), &info.id).in_cluster(&info.cluster))
            .encode()
            .map_err(|e| Error::invalid(e.to_string()))?;
    // A clone is made in its source's cluster.
    let source_volume_id = VolumeId::new(backend.clone(), &name.source)
        .in_cluster(&info.cluster)
        .encode()
        .map_err(|e| Error::invalid(e.to_string()))?;
    Ok(Snapshot {
        size_bytes: gib_to_bytes(info.size_gib),
        snapshot_id,
        source_volume_id,
        creation_time: Some(Timestamp {
            seconds: name.created,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    })
}

impl Inner {
    // ---- CreateSnapshot ----

    #[tracing::instrument(skip_all, fields(name = %req.name, source = %req.source_volume_id), err)]
    pub(super) async fn create_snapshot(
        self: Arc<Self>,
        req: CreateSnapshotRequest,
    ) -> Result<Snapshot> {
        if req.name.is_empty() {
            return Err(Error::invalid("name is required"));
        }
        if req.source_volume_id.is_empty() {
            return Err(Error::invalid("source_volume_id is required"));
        }
        let mut unknown: Vec<&str> = req
            .parameters
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with(CO_PARAMETER_PREFIX))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Error::invalid(format!(
                "unknown VolumeSnapshotClass parameter(s) {}: this driver takes none (the Heketi \
                 credentials come from csi.storage.k8s.io/snapshotter-secret-name/-namespace); \
                 remove them from the VolumeSnapshotClass",
                unknown.join(", ")
            )));
        }
        let source = VolumeId::parse(&req.source_volume_id).ok_or_else(|| {
            Error::NotFound(format!(
                "source volume {:?} does not exist (not a volume id of this driver)",
                req.source_volume_id
            ))
        })?;
        let (guard, target) = self
            .lock_backend(
                &source.backend,
                &req.secrets,
                &format!("snapshot/{}", req.name),
                &format!("snapshot name {:?}", req.name),
            )
            .await?;
        let this = Arc::clone(&self);
        detached(guard, async move {
            this.create_snapshot_locked(target, req, source).await
        })
        .await
    }

    async fn create_snapshot_locked(
        &self,
        target: Target,
        req: CreateSnapshotRequest,
        source: VolumeId,
    ) -> Result<Snapshot> {
        let prefix = names::snapshot_prefix(&req.name);
        if let Some(found) = self.find_snapshot(&target, &prefix).await? {
            return Self::existing_snapshot(&target, &req, &source, &found);
        }
        let src = self.read_volume(&target, &source).await?;
        let name = SnapshotName::new(&req.name, &src.id, unix_now());
        let request = VolumeCloneRequest {
            name: name.encode(),
            read_only: true,
        };
        let permit = target.permit().await?;
        let made = target
            .heketi(
                "volume_clone",
                target.client.volume_clone(&src.id, &request),
            )
            .await;
        drop(permit);
        let info = match made {
            Ok(info) => info,
            Err(e) => {
                let unknown_outcome = !e.certainly_not_done();
                let failure = Error::heketi(
                    format!(
                        "cloning volume {} as snapshot {} on {}",
                        src.id,
                        request.name,
                        target.url()
                    ),
                    e,
                );
                if unknown_outcome
                    && let Ok(Some(found)) = self.find_snapshot(&target, &prefix).await
                {
                    tracing::info!(heketi_id = %found.id, "the snapshot exists after all");
                    return Self::existing_snapshot(&target, &req, &source, &found);
                }
                return Err(failure);
            }
        };
        let summary = Summary::from_info(&info);
        target.state.index.insert(summary.clone());
        if let Some(kept) = self.drop_if_second(&target, &prefix, &summary).await {
            return Self::existing_snapshot(&target, &req, &source, &kept);
        }
        tracing::info!(
            heketi_id = %info.id,
            heketi_name = %info.name,
            size_gib = info.size,
            backend = %target.url(),
            "snapshot created"
        );
        let snap = snapshot(&target.reference, &summary, &name)?;
        Ok(Snapshot {
            source_volume_id: req.source_volume_id,
            ..snap
        })
    }

    /// A snapshot of the requested name exists: it answers the request when it was taken of
    /// the same source, otherwise the name is taken.
    fn existing_snapshot(
        target: &Target,
        req: &CreateSnapshotRequest,
        source: &VolumeId,
        found: &Summary,
    ) -> Result<Snapshot> {
        let name = SnapshotName::parse(&found.name)
            .ok_or_else(|| Error::Internal(format!("{} is not a snapshot name", found.name)))?;
        if name.source != source.heketi_id {
            return Err(Error::AlreadyExists(format!(
                "a snapshot named {:?} already exists of another volume (Heketi volume {}); use \
                 another name",
                req.name, name.source
            )));
        }
        tracing::info!(heketi_id = %found.id, "snapshot already exists");
        let snap = snapshot(&target.reference, found, &name)?;
        Ok(Snapshot {
            source_volume_id: req.source_volume_id.clone(),
            ..snap
        })
    }

    /// A snapshot `made` just now is a second copy when an older snapshot of the same name
    /// shows up: a call that this controller gave up on (it restarted while Heketi was still
    /// copying) was finished by Heketi after all. The older one is kept (every caller settles
    /// on the oldest) and `made` is deleted; returns the one kept. An older copy that Heketi
    /// finishes only after `made` was returned stays behind as an unused Heketi volume named
    /// like the snapshot (docs/install.md says how to find and delete it).
    async fn drop_if_second(
        &self,
        target: &Target,
        prefix: &str,
        made: &Summary,
    ) -> Option<Summary> {
        let oldest = match self.find_snapshot(target, prefix).await {
            Ok(Some(s)) if s.id != made.id => s,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check for an earlier copy of the snapshot");
                return None;
            }
        };
        tracing::warn!(
            kept = %oldest.id,
            deleted = %made.id,
            "an earlier call made this snapshot after all; deleting the second copy"
        );
        let what = "the second copy of the snapshot";
        match target.permit().await {
            Ok(_permit) => delete_unwanted(target, &made.id, what, "delete it by hand").await,
            Err(e) => tracing::error!(error = %e, "cannot delete {what}; delete it by hand"),
        }
        Some(oldest)
    }

    /// The oldest snapshot whose Heketi name starts with `prefix`, read fresh from Heketi.
    async fn find_snapshot(&self, target: &Target, prefix: &str) -> Result<Option<Summary>> {
        let pick = |vols: &BTreeMap<String, Summary>| oldest_with_prefix(vols, prefix);
        let info = self.find(target, pick).await?;
        Ok(info.as_ref().map(Summary::from_info))
    }

    // ---- DeleteSnapshot ----

    #[tracing::instrument(skip_all, fields(snapshot_id = %req.snapshot_id), err)]
    pub(super) async fn delete_snapshot(self: Arc<Self>, req: DeleteSnapshotRequest) -> Result<()> {
        if req.snapshot_id.is_empty() {
            return Err(Error::invalid("snapshot_id is required"));
        }
        let Some(SnapshotId(id)) = SnapshotId::parse(&req.snapshot_id) else {
            tracing::info!("not a snapshot id of this driver; nothing to delete");
            return Ok(());
        };
        let (guard, target) = self
            .lock_backend(
                &id.backend,
                &req.secrets,
                &format!("volume/{}", req.snapshot_id),
                &format!("snapshot {}", req.snapshot_id),
            )
            .await?;
        detached(guard, async move {
            let info = match target
                .heketi("volume_info", target.client.volume_info(&id.heketi_id))
                .await
            {
                Ok(info) => info,
                Err(e) if e.is_not_found() => {
                    confirm_gone(&target, &id).await?;
                    target.state.index.remove(&id.heketi_id);
                    tracing::info!(heketi_id = %id.heketi_id, "snapshot already gone");
                    return Ok(());
                }
                Err(e) => {
                    return Err(Error::heketi(
                        format!("reading snapshot {} on {}", id.heketi_id, target.url()),
                        e,
                    ));
                }
            };
            if SnapshotName::parse(&info.name).is_none() {
                // The id names a volume that is not a snapshot: never delete a user's volume
                // through DeleteSnapshot.
                return Err(Error::FailedPrecondition(format!(
                    "Heketi volume {} ({}) on {} is not a snapshot of this driver; it is left \
                     alone",
                    info.id,
                    info.name,
                    target.url()
                )));
            }
            let _permit = target.permit().await?;
            if heketi_delete(&target, &info.id, "snapshot").await? {
                tracing::info!(heketi_id = %info.id, "snapshot deleted");
            } else {
                tracing::info!(heketi_id = %info.id, "snapshot already gone");
            }
            target.state.index.remove(&info.id);
            Ok(())
        })
        .await
    }

    // ---- ListSnapshots ----

    #[tracing::instrument(skip_all, fields(max_entries = req.max_entries), err)]
    pub(super) async fn list_snapshots(
        self: Arc<Self>,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse> {
        let max = usize::try_from(req.max_entries)
            .map_err(|_| Error::invalid("max_entries must not be negative"))?;
        let after = paging::decode(&req.starting_token)?;
        let creds = Credentials::from_secrets(&req.secrets)?;
        // Filters naming nothing of ours match nothing.
        let only_id = match req.snapshot_id.as_str() {
            "" => None,
            s => match SnapshotId::parse(s) {
                Some(SnapshotId(id)) => Some(id),
                None => return Ok(ListSnapshotsResponse::default()),
            },
        };
        let only_source = match req.source_volume_id.as_str() {
            "" => None,
            s => match VolumeId::parse(s) {
                Some(id) => Some(id),
                None => return Ok(ListSnapshotsResponse::default()),
            },
        };
        // The backend of the filter's id, else the default one; as ListVolumes, without a
        // default backend there is nothing to list.
        let backend = match only_id.as_ref().or(only_source.as_ref()) {
            Some(id) => id.backend.clone(),
            None if self.backends.has_default() => BackendRef::Default,
            None => return Ok(ListSnapshotsResponse::default()),
        };
        let only_id = only_id.map(|id| id.heketi_id);
        let only_source = only_source.map(|id| id.heketi_id);
        let target = self
            .backends
            .for_volume(&backend, creds, no_default_for_volume)
            .await?;
        refresh_index(&target);
        target
            .state
            .index
            .catch_up(&target.client, &target.metrics)
            .await?;
        let wanted = |s: &Summary| -> Option<SnapshotName> {
            let name = SnapshotName::parse(&s.name)?;
            let id_ok = only_id.as_ref().is_none_or(|id| *id == s.id);
            let source_ok = only_source.as_ref().is_none_or(|src| *src == name.source);
            (id_ok && source_ok).then_some(name)
        };
        let (page, next_token) = target.state.index.with(|vols| {
            paging::page(vols, after.as_deref(), max, |s| {
                wanted(s).map(|n| (s.clone(), n))
            })
        });
        let entries = page
            .iter()
            .map(|(s, n)| {
                Ok(list_snapshots_response::Entry {
                    snapshot: Some(snapshot(&target.reference, s, n)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}

/// A snapshot's volume read for a restore: NOT_FOUND when Heketi does not have it or it is
/// not a snapshot.
pub(super) fn check_is_snapshot(info: &VolumeInfoResponse, snapshot_id: &str) -> Result<()> {
    if SnapshotName::parse(&info.name).is_none() {
        return Err(Error::NotFound(format!(
            "snapshot {snapshot_id:?} does not exist (Heketi volume {} is not a snapshot)",
            info.id
        )));
    }
    Ok(())
}
