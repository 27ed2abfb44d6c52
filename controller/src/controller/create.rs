//! CreateVolume: a new volume, a clone of a volume, or a restore of a snapshot.
//!
//! The volume's Heketi name comes from its CSI name ([`names::heketi_name`]), so a retried
//! call finds what an earlier one made, even when that one's caller gave up: an existing volume
//! that matches the request answers it, one that does not is ALREADY_EXISTS. A failed create
//! whose outcome is unknown looks for the name before it reports the failure; a clone that
//! cannot be grown to the requested size is deleted again.

use std::sync::Arc;

use csi_proto::v1::volume_content_source::Type as SourceType;
use csi_proto::v1::{CreateVolumeRequest, Volume, VolumeContentSource};
use heketi_client::types::{
    SnapshotSettings, VolumeCloneRequest, VolumeCreateRequest, VolumeInfoResponse,
};

use super::{
    Inner, check_capabilities, delete_unwanted, detached, lock, no_default_for_class, snapshots,
};
use crate::backend::Target;
use crate::error::{Error, Result};
use crate::index::Summary;
use crate::kube::secrets::class_credentials;
use crate::names;
use crate::params::{ClassParams, VolumeType};
use crate::sizes::{self, GIB};
use crate::snapshot_id::SnapshotId;
use crate::volume_id::{BackendRef, VolumeId};

/// What CreateVolume will make, validated.
struct CreatePlan {
    csi_name: String,
    heketi_name: String,
    want_gib: u64,
    limit_bytes: u64,
    params: ClassParams,
    /// What to clone.
    source: Option<CloneSource>,
    content_source: Option<VolumeContentSource>,
}

/// The volume a new volume is a clone of: a volume, or the volume of a snapshot.
struct CloneSource {
    /// Its Heketi volume.
    id: VolumeId,
    /// What the request called it, for messages.
    what: String,
    /// A snapshot (restore) rather than a volume (clone).
    snapshot: bool,
}

impl Inner {
    #[tracing::instrument(skip_all, fields(name = %req.name), err)]
    pub(super) async fn create_volume(self: Arc<Self>, req: CreateVolumeRequest) -> Result<Volume> {
        if req.name.is_empty() {
            return Err(Error::invalid("name is required"));
        }
        check_capabilities(&req.volume_capabilities)?;
        if !req.mutable_parameters.is_empty() {
            return Err(Error::invalid(
                "mutable_parameters are not supported (this driver has no ModifyVolume)",
            ));
        }
        let params = ClassParams::parse(&req.parameters)?;
        let range = req.capacity_range.unwrap_or_default();
        let want_gib = sizes::round_up_gib(
            range.required_bytes,
            range.limit_bytes,
            Some(sizes::DEFAULT_GIB),
        )?;
        let want_gib = sizes::at_least(want_gib, params.volume_type.min_gib(), range.limit_bytes)?;
        let source = match req
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref())
        {
            None => None,
            Some(SourceType::Snapshot(s)) if s.snapshot_id.is_empty() => {
                return Err(Error::invalid(
                    "volume_content_source.snapshot.snapshot_id is required",
                ));
            }
            Some(SourceType::Snapshot(s)) => {
                let what = format!("snapshot {:?}", s.snapshot_id);
                let SnapshotId(id) = SnapshotId::parse(&s.snapshot_id)
                    .ok_or_else(|| Error::NotFound(format!("{what} does not exist")))?;
                Some(CloneSource {
                    id,
                    what,
                    snapshot: true,
                })
            }
            Some(SourceType::Volume(v)) if v.volume_id.is_empty() => {
                return Err(Error::invalid(
                    "volume_content_source.volume.volume_id is required",
                ));
            }
            Some(SourceType::Volume(v)) => {
                let what = format!("clone source volume {:?}", v.volume_id);
                let id = VolumeId::parse(&v.volume_id)
                    .ok_or_else(|| Error::NotFound(format!("{what} does not exist")))?;
                Some(CloneSource {
                    id,
                    what,
                    snapshot: false,
                })
            }
        };
        // A resturl of no backend is written into the id: it must fit (checked before the
        // credentials rule, whose advice would not help).
        if let Some(url) = &params.resturl
            && self.backends.name_of_url(url).is_none()
        {
            VolumeId::check_backend(&BackendRef::Url(url.clone()))
                .map_err(|e| Error::invalid(e.to_string()))?;
        }
        let creds = class_credentials(&params, &req.secrets, &self.secrets).await?;
        let target = self
            .backends
            .for_class(
                params.resturl.as_deref(),
                req.accessibility_requirements.as_ref(),
                creds,
                !req.secrets.is_empty(),
                no_default_for_class,
            )
            .await?;
        VolumeId::check_backend(&target.reference).map_err(|e| Error::invalid(e.to_string()))?;
        let heketi_name = names::heketi_name(&req.name, params.name_prefix.as_deref());
        let guard = lock(
            &self.locks,
            &format!("create/{}", req.name),
            &format!("volume name {:?}", req.name),
        )?;
        let plan = CreatePlan {
            csi_name: req.name,
            heketi_name,
            want_gib,
            limit_bytes: u64::try_from(range.limit_bytes).unwrap_or(0),
            params,
            source,
            content_source: req.volume_content_source,
        };
        let this = Arc::clone(&self);
        detached(guard, async move { this.create_locked(target, plan).await }).await
    }

    async fn create_locked(&self, target: Target, plan: CreatePlan) -> Result<Volume> {
        let existing = self.lookup(&target, &plan.heketi_name).await?;
        if let Some(info) = existing {
            let info = self.reuse(&target, &plan, info).await?;
            tracing::info!(
                heketi_id = %info.id,
                heketi_name = %info.name,
                size_gib = info.size,
                "volume already exists"
            );
            return self.volume(&target.reference, &info, plan.content_source);
        }
        let permit = target.permit().await?;
        let info = match &plan.source {
            None => self.make_new(&target, &plan).await?,
            Some(src) => self.make_clone(&target, &plan, src).await?,
        };
        drop(permit);
        tracing::info!(
            heketi_id = %info.id,
            heketi_name = %info.name,
            size_gib = info.size,
            gid = info.gid,
            backend = %target.url(),
            "volume created"
        );
        self.volume(&target.reference, &info, plan.content_source)
    }

    /// The volume named `heketi_name` (read fresh from Heketi) if there is one.
    async fn lookup(
        &self,
        target: &Target,
        heketi_name: &str,
    ) -> Result<Option<VolumeInfoResponse>> {
        let by_name = |vols: &std::collections::BTreeMap<String, Summary>| {
            vols.values()
                .find(|s| s.name == heketi_name)
                .map(|s| s.id.clone())
        };
        self.find(target, by_name).await
    }

    /// An existing volume with the requested name: the same volume when compatible, an
    /// interrupted clone completed, otherwise ALREADY_EXISTS.
    async fn reuse(
        &self,
        target: &Target,
        plan: &CreatePlan,
        info: VolumeInfoResponse,
    ) -> Result<VolumeInfoResponse> {
        let have = VolumeType::from_durability(&info.durability);
        let too_big = plan.limit_bytes > 0 && info.size.saturating_mul(GIB) > plan.limit_bytes;
        let wrong_type = plan.source.is_none() && have != plan.params.volume_type;
        let too_small = info.size < plan.want_gib;
        if too_big || wrong_type || (too_small && plan.source.is_none()) {
            let limit = match plan.limit_bytes {
                0 => String::new(),
                l => format!(" up to {l} bytes"),
            };
            return Err(Error::AlreadyExists(format!(
                "a volume named {:?} already exists (Heketi volume {}, {} GiB, {have}) and does \
                 not match this request ({} GiB{limit}, {}); use another name or the same \
                 parameters",
                plan.csi_name, info.id, info.size, plan.want_gib, plan.params.volume_type
            )));
        }
        if too_small {
            // A clone whose expansion did not happen (the controller stopped in between).
            let _permit = target.permit().await?;
            return self.expand_to(target, &info, plan.want_gib).await;
        }
        Ok(info)
    }

    async fn make_new(&self, target: &Target, plan: &CreatePlan) -> Result<VolumeInfoResponse> {
        let range = plan.params.gid_range;
        let reservation =
            target
                .state
                .index
                .reserve_gid(&target.state.gids, range, &plan.heketi_name);
        let reservation = reservation.ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "no free gid in gidMin..gidMax ({}..{}): every gid is used by a volume on {}; \
                 widen the range in the StorageClass",
                range.min,
                range.max,
                target.url()
            ))
        })?;
        let request = VolumeCreateRequest {
            size: plan.want_gib,
            clusters: plan.params.clusters.clone(),
            name: plan.heketi_name.clone(),
            durability: plan.params.volume_type.durability(),
            gid: i64::from(reservation.gid),
            glustervolumeoptions: plan.params.volume_options.clone(),
            block: false,
            snapshot: SnapshotSettings {
                enable: true,
                factor: plan.params.snap_factor,
            },
        };
        let result = target
            .heketi("volume_create", target.client.volume_create(&request))
            .await;
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                let made_nothing = e.certainly_not_done();
                let failure = Error::heketi(
                    format!(
                        "creating volume {} ({} GiB, {}) on {}",
                        plan.heketi_name,
                        plan.want_gib,
                        plan.params.volume_type,
                        target.url()
                    ),
                    e,
                );
                let outcome = self.after_failed_create(target, plan, failure).await;
                // Found after all, the volume is in the index now; certainly failed, nothing
                // carries the gid. Otherwise Heketi may still make the volume with it.
                if outcome.is_ok() || made_nothing {
                    reservation.release();
                } else {
                    reservation.keep_unsettled();
                }
                return outcome;
            }
        };
        target.state.index.insert(Summary::from_info(&info));
        reservation.release();
        Ok(info)
    }

    /// A create or clone failed: if the name is taken (another controller, or our own earlier
    /// attempt that Heketi finished after all) use that volume; otherwise report the failure.
    async fn after_failed_create(
        &self,
        target: &Target,
        plan: &CreatePlan,
        failure: Error,
    ) -> Result<VolumeInfoResponse> {
        let name_in_use =
            matches!(&failure, Error::Heketi { source, .. } if source.is_name_in_use());
        let outcome_unknown = matches!(
            failure.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Internal
        );
        if !name_in_use && !outcome_unknown {
            return Err(failure);
        }
        match self.lookup(target, &plan.heketi_name).await {
            Ok(Some(info)) => {
                tracing::info!(heketi_id = %info.id, "the volume exists after all");
                self.reuse(target, plan, info).await
            }
            Ok(None) if name_in_use => Err(Error::Aborted(format!(
                "Heketi is still creating volume {} for {:?} (started by an earlier call); \
                 retry later",
                plan.heketi_name, plan.csi_name
            ))),
            Ok(None) => Err(failure),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether the failed create left a volume");
                Err(failure)
            }
        }
    }

    async fn make_clone(
        &self,
        target: &Target,
        plan: &CreatePlan,
        source: &CloneSource,
    ) -> Result<VolumeInfoResponse> {
        let what = &source.what;
        let missing = || Error::NotFound(format!("{what} does not exist"));
        let src = &source.id;
        let src_backend = self.backends.canonical(&src.backend);
        if src_backend.as_ref() != Some(&target.reference) {
            let on = src_backend.unwrap_or_else(|| src.backend.clone());
            return Err(Error::invalid(format!(
                "{what} is on {on}, not on {} where the StorageClass creates volumes; clone \
                 or restore within one Heketi (a StorageClass whose resturl is that backend's)",
                target.reference
            )));
        }
        let src_info = match target
            .heketi("volume_info", target.client.volume_info(&src.heketi_id))
            .await
        {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Err(missing()),
            Err(e) => {
                return Err(Error::heketi(
                    format!("reading {what} ({}) on {}", src.heketi_id, target.url()),
                    e,
                ));
            }
        };
        if source.snapshot {
            snapshots::check_is_snapshot(&src_info, what)?;
        }
        if plan.limit_bytes > 0 && src_info.size.saturating_mul(GIB) > plan.limit_bytes {
            return Err(Error::OutOfRange(format!(
                "{what} is {} GiB, above limit_bytes {}; a clone or restore is at least as \
                 large as its source",
                src_info.size, plan.limit_bytes
            )));
        }
        let request = VolumeCloneRequest {
            name: plan.heketi_name.clone(),
            ..Default::default()
        };
        let clone = match target
            .heketi(
                "volume_clone",
                target.client.volume_clone(&src.heketi_id, &request),
            )
            .await
        {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Err(missing()),
            Err(e) => {
                let failure = Error::heketi(
                    format!(
                        "cloning volume {} as {} on {}",
                        src.heketi_id,
                        plan.heketi_name,
                        target.url()
                    ),
                    e,
                );
                return self.after_failed_create(target, plan, failure).await;
            }
        };
        target.state.index.insert(Summary::from_info(&clone));
        if clone.size >= plan.want_gib {
            return Ok(clone);
        }
        match self.expand_to(target, &clone, plan.want_gib).await {
            Ok(grown) => Ok(grown),
            Err(e) => {
                // Leave nothing behind: the clone is not what was asked for.
                let what = "the clone whose expansion failed";
                delete_unwanted(target, &clone.id, what, "a retry finds it").await;
                Err(e)
            }
        }
    }
}
