//! The CSI Controller service: StorageClass → Heketi volume.
//!
//! Every mutating call follows validate → per-volume guard (busy → ABORTED) → read Heketi →
//! act → record. The work of CreateVolume, DeleteVolume and ControllerExpandVolume runs in a
//! task of its own that keeps its guard: when the caller gives up (its gRPC deadline), the
//! Heketi operation is still followed to its end, a retry meanwhile gets ABORTED, and the retry
//! after it finds the result.

use crate::kube::LazyClient;
use crate::kube::secrets::SecretReader;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use csi_proto::v1::controller_server::Controller;
use csi_proto::v1::controller_service_capability::{Rpc, Type as CapType, rpc};
use csi_proto::v1::volume_capability::{AccessType, access_mode::Mode};
use csi_proto::v1::{
    ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerServiceCapability,
    CreateSnapshotRequest, CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse,
    DeleteSnapshotRequest, DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    GetCapacityRequest, GetCapacityResponse, ListSnapshotsRequest, ListSnapshotsResponse,
    ListVolumesRequest, ListVolumesResponse, ValidateVolumeCapabilitiesRequest,
    ValidateVolumeCapabilitiesResponse, Volume, VolumeCapability, VolumeContentSource,
    controller_get_volume_response, list_volumes_response, validate_volume_capabilities_response,
};
use gluster_csi_runtime::locks::{OperationGuard, OperationLocks};
use heketi_client::types::{EntryState, VolumeExpandRequest, VolumeInfoResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::Config;
use crate::backend::{Backends, Target};
use crate::error::{Error, Result};
use crate::health::HeketiHealth;
use crate::index::Summary;
use crate::metrics::Metrics;
use crate::names;
use crate::paging;
use crate::params::{ClassParams, Credentials};
use crate::sizes::{self, gib_to_bytes};
use crate::volume_id::{BackendRef, VolumeId};

mod create;
mod snapshots;

/// The capabilities this controller advertises. No PUBLISH_UNPUBLISH: there is nothing to
/// attach, the node mounts Gluster directly.
pub const CAPABILITIES: &[rpc::Type] = &[
    rpc::Type::CreateDeleteVolume,
    rpc::Type::ExpandVolume,
    rpc::Type::CloneVolume,
    rpc::Type::CreateDeleteSnapshot,
    rpc::Type::ListSnapshots,
    rpc::Type::ListVolumes,
    rpc::Type::GetCapacity,
    rpc::Type::GetVolume,
    rpc::Type::SingleNodeMultiWriter,
];

/// The Controller service.
#[derive(Clone)]
pub struct ControllerService {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Backends,
    locks: OperationLocks,
    metrics: Arc<Metrics>,
    /// Reads in-tree style `secretName`/`secretNamespace` Secrets and the Secrets of the
    /// backends file (Kubernetes client built on first use).
    secrets: Arc<SecretReader>,
}

impl ControllerService {
    /// A controller using `config`, with metrics of its own.
    pub fn new(config: Arc<Config>) -> Self {
        Self::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// A controller using `config` that records its calls in `metrics`. Nothing checks its
    /// backends in the background.
    pub fn with_metrics(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        let health = Arc::new(HeketiHealth::new(Arc::clone(&metrics)));
        Self::with_parts(config, metrics, health)
    }

    /// A controller using `config` that records its calls in `metrics` and adds every backend
    /// it uses to those `health` checks.
    pub fn with_parts(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        health: Arc<HeketiHealth>,
    ) -> Self {
        let secrets = Arc::new(SecretReader::new(LazyClient::infer()));
        Self {
            inner: Arc::new(Inner {
                backends: Backends::new(
                    &config,
                    Arc::clone(&metrics),
                    health,
                    Arc::clone(&secrets),
                ),
                locks: OperationLocks::default(),
                metrics,
                secrets,
            }),
        }
    }
}

impl ControllerService {
    /// Reads `file` again every [`crate::backend::WATCH_EVERY`] and, when its text changed and
    /// is valid, replaces the controller's backends with it (a ConfigMap update reaches the
    /// controller without a restart). A changed file that is not valid is logged and the
    /// backends stay as they were; a file that disappears changes nothing. Abort the handle to
    /// stop watching.
    pub fn watch_backends_file(
        &self,
        file: crate::config::WatchedFile,
    ) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut last = std::fs::read_to_string(&file.path).ok();
            loop {
                tokio::time::sleep(crate::backend::WATCH_EVERY).await;
                let Ok(text) = std::fs::read_to_string(&file.path) else {
                    continue;
                };
                if last.as_deref() == Some(text.as_str()) {
                    continue;
                }
                match crate::backends_file::parse(&text, file.from_flags.clone()) {
                    Ok(loaded) => {
                        inner.backends.replace(&loaded.backends, loaded.default);
                        tracing::info!(
                            path = %file.path.display(),
                            backends = ?inner.backends.names(),
                            "backends file changed: backends replaced"
                        );
                    }
                    Err(reason) => tracing::warn!(
                        path = %file.path.display(),
                        %reason,
                        "backends file changed but is not valid; keeping the backends as they were"
                    ),
                }
                last = Some(text);
            }
        })
    }
}

fn no_default_for_class() -> Error {
    Error::invalid(
        "the StorageClass has no resturl parameter and the controller runs without \
         --heketi-url; set resturl to Heketi's URL, or start the controller with --heketi-url",
    )
}

fn no_default_for_volume() -> Error {
    Error::FailedPrecondition(
        "the volume lives on the controller's default Heketi backend, but the controller runs \
         without --heketi-url; start it with the --heketi-url the volume was created with"
            .into(),
    )
}

/// Why `cap` cannot be served, or `None` when it can.
fn unsupported(cap: &VolumeCapability) -> Option<String> {
    let mode = cap
        .access_mode
        .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
        .unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Some("access_mode must be set to a known mode".into());
    }
    match &cap.access_type {
        Some(AccessType::Mount(_)) => None,
        Some(AccessType::Block(_)) => Some(
            "block access is not supported: Gluster volumes are file systems; use volumeMode: \
             Filesystem"
                .into(),
        ),
        None => Some("access_type must be mount".into()),
    }
}

fn check_capabilities(caps: &[VolumeCapability]) -> Result<()> {
    if caps.is_empty() {
        return Err(Error::invalid("volume_capabilities must not be empty"));
    }
    for cap in caps {
        if let Some(why) = unsupported(cap) {
            return Err(Error::invalid(format!("volume_capabilities: {why}")));
        }
    }
    Ok(())
}

fn parse_existing_id(volume_id: &str) -> Result<VolumeId> {
    VolumeId::parse(volume_id)
        .ok_or_else(|| Error::NotFound(format!("volume {volume_id:?} does not exist")))
}

/// DeleteVolume got 404 for `id`: decides whether that means the volume is gone.
///
/// A 404 says only that whatever answered does not hold the volume. A misrouted request (the
/// wrong Service, a proxy, a heketi-server whose state was emptied, another Heketi behind the
/// same address) answers the same, and taking that for "deleted" would drop a PV whose Gluster
/// volume lives on. So the 404 counts only when the backend shows that it is the one that
/// created the volume:
///
/// 1. It answers `GET /clusters` with at least one cluster. A server that answers 404 there is
///    not a Heketi API; a Heketi without clusters holds no volumes at all, so it cannot be the
///    one that made this one.
/// 2. When the id carries a cluster tag ([`VolumeId::cluster`], every id written since the tag
///    exists, when it fits), one of those clusters has that tag: the volume's own cluster is
///    here. Heketi refuses to delete a cluster that still holds volumes, so a Heketi that has
///    the cluster but not the volume has deleted the volume.
/// 3. `GET /volumes` succeeds and does not list the volume (DELETE's 404 was not a fluke of
///    one route).
///
/// An id without a tag (written before it, a long `resturl`, a migrated PV) gets 1 and 3,
/// which catch a wrong service and an emptied Heketi but not a second populated Heketi behind
/// the address. The clusters are read once per backend and kept; a tag that matches none of
/// them reads them again before it counts as a mismatch. Whatever fails is INTERNAL naming the
/// URL and the reason, so the PV stays and the provisioner retries; a Heketi that cannot be
/// reached is UNAVAILABLE as usual.
async fn confirm_gone(target: &Target, id: &VolumeId) -> Result<()> {
    let url = target.url();
    let unsure = |why: String| {
        Error::Unconfirmed(format!(
            "Heketi {url} answered that volume {} does not exist, but the deletion cannot be \
             confirmed: {why}; the PV is kept and the delete is retried. Check that {url} is \
             the Heketi that created the volume",
            id.heketi_id
        ))
    };
    let context = || format!("confirming that volume {} is gone from {url}", id.heketi_id);
    let clusters = match target.clusters(false).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            return Err(unsure(
                "it answers 404 to GET /clusters, so it is not a Heketi API (a wrong Service \
                 or a proxy?)"
                    .into(),
            ));
        }
        Err(e) => return Err(Error::heketi(context(), e)),
    };
    if clusters.is_empty() {
        return Err(unsure(
            "it has no clusters, so it holds no volumes and cannot be the Heketi that created \
             this one (was its state emptied?)"
                .into(),
        ));
    }
    if let Some(tag) = &id.cluster {
        let has = |c: &std::collections::BTreeSet<String>| c.iter().any(|c| c.starts_with(tag));
        if !has(&clusters) {
            let fresh = target
                .clusters(true)
                .await
                .map_err(|e| Error::heketi(context(), e))?;
            if !has(&fresh) {
                return Err(unsure(format!(
                    "the volume was created in cluster {tag}…, which this Heketi does not have \
                     (its clusters: {})",
                    fresh.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let listed = target
        .heketi("volume_list", target.client.volume_list())
        .await
        .map_err(|e| Error::heketi(context(), e))?;
    if listed
        .volumes
        .iter()
        .any(|v| v.eq_ignore_ascii_case(&id.heketi_id))
    {
        return Err(unsure("GET /volumes still lists it".into()));
    }
    Ok(())
}

/// Starts a full reload of `target`'s index in the background when one is due; the caller
/// does not wait for it.
fn refresh_index(target: &Target) {
    if target.state.index.reload_due(target.index_reload) {
        target
            .state
            .index
            .reload_in_background(target.client.clone(), Arc::clone(&target.metrics));
    }
}

/// Runs `work` in a task of its own, holding `guard` until it ends, and waits for it.
async fn detached<T: Send + 'static>(
    guard: OperationGuard,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    let task = tokio::spawn(
        async move {
            let result = work.await;
            drop(guard);
            result
        }
        .instrument(span),
    );
    task.await
        .map_err(|e| Error::Internal(format!("operation task failed: {e}")))?
}

fn lock(locks: &OperationLocks, key: &str, what: &str) -> Result<OperationGuard> {
    locks.try_lock(key).ok_or_else(|| {
        Error::Aborted(format!(
            "an operation on {what} is already in progress; retry later"
        ))
    })
}

/// Deletes Heketi volume `heketi_id` (a `what`, for messages; the caller holds a permit of
/// `target`): true when Heketi deleted it, false when it answered 404. What a 404 means, and
/// dropping the id from the index, is the caller's.
async fn heketi_delete(target: &Target, heketi_id: &str, what: &str) -> Result<bool> {
    match target
        .heketi("volume_delete", target.client.volume_delete(heketi_id))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(Error::heketi(
            format!("deleting {what} {heketi_id} on {}", target.url()),
            e,
        )),
    }
}

/// Deletes `heketi_id`, a `what` this call made but does not answer with (the caller holds a
/// permit of `target`), and drops it from the index; a failure is logged with `advice`, the
/// call goes on.
async fn delete_unwanted(target: &Target, heketi_id: &str, what: &str, advice: &str) {
    match heketi_delete(target, heketi_id, what).await {
        Ok(_) => target.state.index.remove(heketi_id),
        Err(e) => tracing::error!(%heketi_id, error = %e, "cannot delete {what}; {advice}"),
    }
}

impl Inner {
    /// [`Self::lock_backend`] for a call on the volume `id` (written `volume_id` in the request).
    async fn lock_volume(
        &self,
        id: &VolumeId,
        volume_id: &str,
        secrets: &HashMap<String, String>,
    ) -> Result<(OperationGuard, Target)> {
        let key = format!("volume/{volume_id}");
        self.lock_backend(&id.backend, secrets, &key, &format!("volume {volume_id}"))
            .await
    }

    /// What a call on something that exists takes before it acts: the credentials of its
    /// `secrets`, the operation lock on `key` (held elsewhere: ABORTED naming `what`) and the
    /// backend of `backend`.
    async fn lock_backend(
        &self,
        backend: &BackendRef,
        secrets: &HashMap<String, String>,
        key: &str,
        what: &str,
    ) -> Result<(OperationGuard, Target)> {
        let creds = Credentials::from_secrets(secrets)?;
        let guard = lock(&self.locks, key, what)?;
        let target = self
            .backends
            .for_volume(backend, creds, no_default_for_volume)
            .await?;
        Ok((guard, target))
    }

    fn volume(
        &self,
        reference: &BackendRef,
        info: &VolumeInfoResponse,
        content_source: Option<VolumeContentSource>,
    ) -> Result<Volume> {
        let volume_id = VolumeId::new(reference.clone(), &info.id)
            .in_cluster(&info.cluster)
            .encode()
            .map_err(|e| Error::invalid(e.to_string()))?;
        Ok(Volume {
            capacity_bytes: gib_to_bytes(info.size),
            volume_id,
            volume_context: crate::index::volume_context(info),
            content_source,
            accessible_topology: self.backends.accessible_from(reference),
        })
    }

    /// The volume `pick` chooses from the index (read fresh from Heketi), if any.
    async fn find(
        &self,
        target: &Target,
        pick: impl Fn(&std::collections::BTreeMap<String, Summary>) -> Option<String>,
    ) -> Result<Option<VolumeInfoResponse>> {
        refresh_index(target);
        let found = match target.state.index.with(&pick) {
            Some(id) => Some(id),
            None => {
                // Not known here: perhaps made by an earlier call that timed out, or by
                // another controller. Catch up with Heketi's list (no lock is held meanwhile).
                target
                    .state
                    .index
                    .catch_up(&target.client, &target.metrics)
                    .await?;
                target.state.index.with(&pick)
            }
        };
        let Some(id) = found else {
            return Ok(None);
        };
        match target
            .heketi("volume_info", target.client.volume_info(&id))
            .await
        {
            Ok(info) => {
                target.state.index.insert(Summary::from_info(&info));
                Ok(Some(info))
            }
            Err(e) if e.is_not_found() => {
                target.state.index.remove(&id);
                Ok(None)
            }
            Err(e) => Err(Error::heketi(
                format!("reading volume {id} on {}", target.url()),
                e,
            )),
        }
    }

    /// Grows `info` to `want_gib` (the caller holds a permit).
    async fn expand_to(
        &self,
        target: &Target,
        info: &VolumeInfoResponse,
        want_gib: u64,
    ) -> Result<VolumeInfoResponse> {
        let delta = want_gib.saturating_sub(info.size);
        let request = VolumeExpandRequest { expand_size: delta };
        let grown = target
            .heketi(
                "volume_expand",
                target.client.volume_expand(&info.id, &request),
            )
            .await
            .map_err(|e| {
                Error::heketi(
                    format!(
                        "expanding volume {} by {delta} GiB on {}",
                        info.id,
                        target.url()
                    ),
                    e,
                )
            })?;
        target.state.index.insert(Summary::from_info(&grown));
        Ok(grown)
    }

    // ---- DeleteVolume ----

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id), err)]
    async fn delete_volume(self: Arc<Self>, req: DeleteVolumeRequest) -> Result<()> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id is required"));
        }
        let Some(id) = VolumeId::parse(&req.volume_id) else {
            tracing::info!("not a volume id of this driver; nothing to delete");
            return Ok(());
        };
        let (guard, target) = self.lock_volume(&id, &req.volume_id, &req.secrets).await?;
        detached(guard, async move {
            let _permit = target.permit().await?;
            if heketi_delete(&target, &id.heketi_id, "volume").await? {
                tracing::info!(heketi_id = %id.heketi_id, "volume deleted");
            } else {
                confirm_gone(&target, &id).await?;
                tracing::info!(heketi_id = %id.heketi_id, "volume already gone");
            }
            target.state.index.remove(&id.heketi_id);
            Ok(())
        })
        .await
    }

    // ---- ControllerExpandVolume ----

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id), err)]
    async fn expand_volume(self: Arc<Self>, req: ControllerExpandVolumeRequest) -> Result<i64> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id is required"));
        }
        let range = req
            .capacity_range
            .ok_or_else(|| Error::invalid("capacity_range is required"))?;
        let want_gib = sizes::round_up_gib(range.required_bytes, range.limit_bytes, None)?;
        if let Some(why) = req.volume_capability.as_ref().and_then(unsupported) {
            return Err(Error::invalid(format!("volume_capability: {why}")));
        }
        let id = parse_existing_id(&req.volume_id)?;
        let (guard, target) = self.lock_volume(&id, &req.volume_id, &req.secrets).await?;
        let this = Arc::clone(&self);
        detached(guard, async move {
            let info = this.read_volume(&target, &id).await?;
            if info.size >= want_gib {
                tracing::info!(size_gib = info.size, want_gib, "already large enough");
                return Ok(gib_to_bytes(info.size));
            }
            let _permit = target.permit().await?;
            let grown = this.expand_to(&target, &info, want_gib).await?;
            tracing::info!(from_gib = info.size, to_gib = grown.size, "volume expanded");
            Ok(gib_to_bytes(grown.size))
        })
        .await
    }

    /// The Heketi volume `id`; NOT_FOUND when Heketi does not know it.
    async fn read_volume(&self, target: &Target, id: &VolumeId) -> Result<VolumeInfoResponse> {
        match target
            .heketi("volume_info", target.client.volume_info(&id.heketi_id))
            .await
        {
            Ok(i) => Ok(i),
            Err(e) if e.is_not_found() => Err(Error::NotFound(format!(
                "volume {} does not exist on {}",
                id.heketi_id,
                target.url()
            ))),
            Err(e) => Err(Error::heketi(
                format!("reading volume {} on {}", id.heketi_id, target.url()),
                e,
            )),
        }
    }

    // ---- ValidateVolumeCapabilities / ControllerGetVolume ----

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id), err)]
    async fn validate(
        self: Arc<Self>,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id is required"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(Error::invalid("volume_capabilities must not be empty"));
        }
        let id = parse_existing_id(&req.volume_id)?;
        let creds = Credentials::from_secrets(&req.secrets)?;
        let target = self
            .backends
            .for_volume(&id.backend, creds, no_default_for_volume)
            .await?;
        self.read_volume(&target, &id).await?;
        let refuse = |message: String| ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        };
        if let Some(why) = req.volume_capabilities.iter().find_map(unsupported) {
            return Ok(refuse(why));
        }
        if !req.mutable_parameters.is_empty() {
            return Ok(refuse("mutable parameters are not supported".into()));
        }
        if let Err(e) = ClassParams::parse(&req.parameters) {
            return Ok(refuse(e.to_string()));
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: HashMap::new(),
            }),
            message: String::new(),
        })
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id), err)]
    async fn get_volume(
        self: Arc<Self>,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id is required"));
        }
        let id = parse_existing_id(&req.volume_id)?;
        let target = self
            .backends
            .for_volume(&id.backend, None, no_default_for_volume)
            .await?;
        let info = self.read_volume(&target, &id).await?;
        // The id asked about, as it is: one written before the cluster tag stays without it.
        let volume = Volume {
            volume_id: req.volume_id,
            ..self.volume(&target.reference, &info, None)?
        };
        Ok(ControllerGetVolumeResponse {
            volume: Some(volume),
            status: Some(controller_get_volume_response::VolumeStatus::default()),
        })
    }

    // ---- ListVolumes ----

    #[tracing::instrument(skip_all, fields(max_entries = req.max_entries), err)]
    async fn list_volumes(self: Arc<Self>, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let max = usize::try_from(req.max_entries)
            .map_err(|_| Error::invalid("max_entries must not be negative"))?;
        let after = paging::decode(&req.starting_token)?;
        if !self.backends.has_default() {
            // Volumes of StorageClasses with their own resturl are not listed (there may be
            // many Heketis); without a default backend there is nothing to list.
            return Ok(ListVolumesResponse::default());
        }
        let target = self
            .backends
            .for_volume(&BackendRef::Default, None, no_default_for_volume)
            .await?;
        refresh_index(&target);
        target
            .state
            .index
            .catch_up(&target.client, &target.metrics)
            .await?;
        let (page, next_token) = target.state.index.with(|vols| {
            paging::page(vols, after.as_deref(), max, |s| {
                names::is_driver_volume(&s.name).then(|| s.clone())
            })
        });
        let mut entries = Vec::with_capacity(page.len());
        for s in page {
            let volume_id = VolumeId::new(target.reference.clone(), &s.id)
                .in_cluster(&s.cluster)
                .encode()
                .map_err(|e| Error::Internal(e.to_string()))?;
            entries.push(list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: gib_to_bytes(s.size_gib),
                    volume_id,
                    volume_context: s.context,
                    content_source: None,
                    accessible_topology: Vec::new(),
                }),
                status: None,
            });
        }
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    // ---- GetCapacity ----

    #[tracing::instrument(skip_all, err)]
    async fn get_capacity(self: Arc<Self>, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        if req
            .volume_capabilities
            .iter()
            .any(|c| unsupported(c).is_some())
        {
            // CSI: capacity for capabilities the plugin cannot serve is zero.
            return Ok(GetCapacityResponse::default());
        }
        let params = ClassParams::parse(&req.parameters)?;
        // GetCapacity carries no secrets: use restuserkey, or the backend's own credentials.
        // The only failure without secrets is an unread secretName: then there is nothing to
        // add and the backend's own credentials are used. A resturl of no configured backend
        // is asked only with the class's own key.
        let creds = params.credentials(&HashMap::new()).unwrap_or_default();
        let own = creds.is_some();
        // Capacity per topology segment (CSIStorageCapacity): the backend placed there.
        let topology =
            req.accessible_topology
                .clone()
                .map(|segment| csi_proto::v1::TopologyRequirement {
                    requisite: vec![segment],
                    preferred: Vec::new(),
                });
        let target = match self
            .backends
            .for_class(
                params.resturl.as_deref(),
                topology.as_ref(),
                creds,
                own,
                no_default_for_class,
            )
            .await
        {
            // No backend is placed in that segment: nothing can be made there.
            Err(Error::ResourceExhausted(_)) => return Ok(GetCapacityResponse::default()),
            other => other?,
        };
        let free_kib = self.free_kib(&target, &params.clusters).await?;
        let available = params.volume_type.usable(free_kib.saturating_mul(1024));
        Ok(GetCapacityResponse {
            available_capacity: i64::try_from(available).unwrap_or(i64::MAX),
            maximum_volume_size: None,
            minimum_volume_size: Some(gib_to_bytes(sizes::DEFAULT_GIB)),
        })
    }

    /// Free KiB over the online devices of the online nodes of the file clusters (all, or the
    /// ones of `clusterid`).
    async fn free_kib(&self, target: &Target, only: &[String]) -> Result<u64> {
        let client = &target.client;
        let ctx = |what: String| format!("{what} on {}", target.url());
        let clusters = if only.is_empty() {
            target
                .heketi("cluster_list", client.cluster_list())
                .await
                .map_err(|e| Error::heketi(ctx("listing clusters".into()), e))?
                .clusters
        } else {
            only.to_vec()
        };
        let mut free = 0u64;
        for cid in clusters {
            let cluster = match target
                .heketi("cluster_info", client.cluster_info(&cid))
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(Error::heketi(ctx(format!("reading cluster {cid}")), e)),
            };
            if !cluster.file {
                continue;
            }
            for nid in &cluster.nodes {
                let node = match target.heketi("node_info", client.node_info(nid)).await {
                    Ok(n) => n,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(Error::heketi(ctx(format!("reading node {nid}")), e)),
                };
                if node.state != EntryState::Online {
                    continue;
                }
                free = node
                    .devices
                    .iter()
                    .filter(|d| d.state == EntryState::Online)
                    .fold(free, |acc, d| acc.saturating_add(d.storage.free));
            }
        }
        Ok(free)
    }
}

impl ControllerService {
    /// Serves one call: `call` on the shared state, recorded in the metrics as `rpc`, answered
    /// with `wrap` of its result or with the status of its error.
    async fn serve<T, R, F>(
        &self,
        rpc: &'static str,
        call: impl FnOnce(Arc<Inner>) -> F,
        wrap: impl FnOnce(T) -> R,
    ) -> std::result::Result<Response<R>, Status>
    where
        F: Future<Output = Result<T>>,
    {
        let inner = Arc::clone(&self.inner);
        self.inner
            .metrics
            .rpc(rpc, call(inner))
            .await
            .map(|t| Response::new(wrap(t)))
            .map_err(Status::from)
    }
}

/// The answer of a call as it is.
fn same<T>(t: T) -> T {
    t
}

type Answer<T> = std::result::Result<Response<T>, Status>;

/// The tonic trait impl: each listed method hands its request to the `Inner` call named after
/// `=>`, recorded in the metrics under the CSI name, and makes the response with the closure
/// given last; `extra` holds the methods written out in full.
macro_rules! controller_impl {
    (
        extra { $($extra:item)* }
        $( $method:ident($req:ty) -> $resp:ty : $rpc:literal => $call:ident, $wrap:expr; )*
    ) => {
        #[tonic::async_trait]
        impl Controller for ControllerService {
            $(
                async fn $method(&self, request: Request<$req>) -> Answer<$resp> {
                    let req = request.into_inner();
                    self.serve($rpc, |c| c.$call(req), $wrap).await
                }
            )*
            $($extra)*
        }
    };
}

controller_impl! {
    extra {
        async fn controller_get_capabilities(
            &self,
            _request: Request<ControllerGetCapabilitiesRequest>,
        ) -> Answer<ControllerGetCapabilitiesResponse> {
            let capabilities = CAPABILITIES
                .iter()
                .map(|t| ControllerServiceCapability {
                    r#type: Some(CapType::Rpc(Rpc { r#type: *t as i32 })),
                })
                .collect();
            Ok(Response::new(ControllerGetCapabilitiesResponse {
                capabilities,
            }))
        }
    }
    create_volume(CreateVolumeRequest) -> CreateVolumeResponse : "CreateVolume" => create_volume,
        |v| CreateVolumeResponse { volume: Some(v) };
    delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse : "DeleteVolume" => delete_volume,
        |()| DeleteVolumeResponse {};
    validate_volume_capabilities(ValidateVolumeCapabilitiesRequest)
        -> ValidateVolumeCapabilitiesResponse : "ValidateVolumeCapabilities" => validate, same;
    list_volumes(ListVolumesRequest) -> ListVolumesResponse : "ListVolumes" => list_volumes, same;
    get_capacity(GetCapacityRequest) -> GetCapacityResponse : "GetCapacity" => get_capacity, same;
    controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse
        : "ControllerExpandVolume" => expand_volume,
        |capacity_bytes| ControllerExpandVolumeResponse {
            capacity_bytes,
            node_expansion_required: false,
        };
    create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse
        : "CreateSnapshot" => create_snapshot, |s| CreateSnapshotResponse { snapshot: Some(s) };
    delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse
        : "DeleteSnapshot" => delete_snapshot, |()| DeleteSnapshotResponse {};
    list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse
        : "ListSnapshots" => list_snapshots, same;
    controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse
        : "ControllerGetVolume" => get_volume, same;
}

#[cfg(test)]
mod tests {
    use csi_proto::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    use super::*;

    fn cap(mode: Mode, block: bool) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume::default())
            }),
        }
    }

    #[test]
    fn every_mount_access_mode_is_served_and_block_is_not() {
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::MultiNodeReaderOnly,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeMultiWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert_eq!(unsupported(&cap(mode, false)), None, "{mode:?}");
            assert!(
                unsupported(&cap(mode, true)).is_some_and(|m| m.contains("block")),
                "{mode:?}"
            );
        }
        assert!(unsupported(&cap(Mode::Unknown, false)).is_some());
        assert!(
            unsupported(&VolumeCapability {
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter as i32
                }),
                access_type: None,
            })
            .is_some()
        );
        assert!(check_capabilities(&[]).is_err());
        assert!(check_capabilities(&[cap(Mode::MultiNodeMultiWriter, false)]).is_ok());
    }

    #[test]
    fn advertised_capabilities() {
        assert!(!CAPABILITIES.contains(&rpc::Type::PublishUnpublishVolume));
        assert!(CAPABILITIES.contains(&rpc::Type::CreateDeleteSnapshot));
        assert!(CAPABILITIES.contains(&rpc::Type::ListSnapshots));
        assert_eq!(CAPABILITIES.len(), 9);
    }

    #[test]
    fn unparsable_ids_are_not_found() {
        let e = parse_existing_id("fake-vol-id-xxxxxxxxxx").expect_err("garbage");
        assert_eq!(e.code(), tonic::Code::NotFound);
    }

    mod delete_confirmation {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio::net::TcpListener;

        use super::*;
        use crate::config::{BackendAuth, BackendSpec};

        const VOLUME: &str = "0123456789abcdef0123456789abcdef";
        const CLUSTER: &str = "c0ffee00aaaaaaaaaaaaaaaaaaaaaaaa";

        /// What the stub answers, by route.
        #[derive(Clone)]
        struct Answers {
            clusters: (u16, String),
            volumes: (u16, String),
        }

        impl Answers {
            fn heketi(clusters: &[&str], volumes: &[&str]) -> Self {
                Self {
                    clusters: (200, serde_json::json!({ "clusters": clusters }).to_string()),
                    volumes: (200, serde_json::json!({ "volumes": volumes }).to_string()),
                }
            }
        }

        /// An HTTP server standing in for Heketi: DELETE of a volume answers 404 as Heketi does
        /// for an unknown id, `GET /clusters` and `GET /volumes` what `answers` say, anything
        /// else 404. One request per connection. Returns its URL and the count of
        /// `GET /clusters` requests.
        async fn stub(answers: Answers) -> (String, Arc<AtomicUsize>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let cluster_reads = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&cluster_reads);
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let mut first = text.split_whitespace();
                    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                    let (status, body) = match (method, path) {
                        ("GET", "/clusters") => {
                            count.fetch_add(1, Ordering::SeqCst);
                            answers.clusters.clone()
                        }
                        ("GET", "/volumes") => answers.volumes.clone(),
                        _ => (404, "Id not found".to_owned()),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                }
            });
            (url, cluster_reads)
        }

        /// A controller configuration whose default backend is `url`, without a key.
        fn config(url: &str) -> Config {
            Config {
                endpoint: "unix:///tmp/x.sock".parse().expect("endpoint"),
                driver_name: "gluster.heketi.csi".into(),
                metrics_address: None,
                backends: vec![BackendSpec {
                    name: "default".into(),
                    url: url.into(),
                    aliases: Vec::new(),
                    ca: None,
                    auth: BackendAuth::None,
                    topology: Default::default(),
                }],
                default_backend: Some("default".into()),
                request_timeout: Duration::from_secs(2),
                operation_timeout: Duration::from_secs(2),
                retry_budget: Duration::ZERO,
                max_inflight: 2,
                index_reload: crate::index::FULL_RELOAD,
                backends_file: None,
            }
        }

        async fn target(url: &str) -> Target {
            let config = config(url);
            let metrics = Arc::new(Metrics::new());
            let health = Arc::new(HeketiHealth::new(Arc::clone(&metrics)));
            let secrets = Arc::new(SecretReader::new(LazyClient::infer()));
            let backends = Backends::new(&config, metrics, health, secrets);
            backends
                .for_volume(&BackendRef::Default, None, no_default_for_volume)
                .await
                .expect("target")
        }

        fn id(tag: Option<&str>) -> VolumeId {
            let id = VolumeId::new(BackendRef::Default, VOLUME);
            match tag {
                Some(c) => id.in_cluster(c),
                None => id,
            }
        }

        /// Each row: what the backend answers, the id's cluster, and the outcome (`None` for
        /// OK, else the code and a phrase of the message).
        #[tokio::test]
        async fn a_404_counts_only_from_the_volumes_heketi() {
            let foreign = "deadbeef00000000000000000000000";
            let not_heketi = Answers {
                clusters: (404, "404 page not found".into()),
                volumes: (404, "404 page not found".into()),
            };
            let busy = Answers {
                clusters: (503, "maintenance".into()),
                ..Answers::heketi(&[], &[])
            };
            type Want = Option<(tonic::Code, &'static str)>;
            let cases: Vec<(&str, Answers, Option<&str>, Want)> = vec![
                (
                    "healthy, old id",
                    Answers::heketi(&[CLUSTER], &[]),
                    None,
                    None,
                ),
                (
                    "healthy, tagged id",
                    Answers::heketi(&["1111", CLUSTER], &["ffff"]),
                    Some(CLUSTER),
                    None,
                ),
                (
                    "404 everywhere",
                    not_heketi,
                    None,
                    Some((tonic::Code::Internal, "not a Heketi API")),
                ),
                (
                    "no clusters",
                    Answers::heketi(&[], &[]),
                    None,
                    Some((tonic::Code::Internal, "has no clusters")),
                ),
                (
                    "another Heketi",
                    Answers::heketi(&[foreign], &[]),
                    Some(CLUSTER),
                    Some((tonic::Code::Internal, "cluster c0ffee00")),
                ),
                (
                    "still listed",
                    Answers::heketi(&[CLUSTER], &[VOLUME]),
                    None,
                    Some((tonic::Code::Internal, "still lists it")),
                ),
                (
                    "clusters unavailable",
                    busy,
                    None,
                    Some((tonic::Code::Unavailable, "confirming")),
                ),
            ];
            for (what, answers, tag, want) in cases {
                let (url, _) = stub(answers).await;
                let got = confirm_gone(&target(&url).await, &id(tag)).await;
                match (got, want) {
                    (Ok(()), None) => {}
                    (Err(e), Some((code, phrase))) => {
                        let s = tonic::Status::from(e);
                        assert_eq!(s.code(), code, "{what}: {s:?}");
                        assert!(s.message().contains(phrase), "{what}: {s:?}");
                        assert!(s.message().contains(&url), "{what}: {s:?}");
                    }
                    (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
                }
            }
        }

        #[tokio::test]
        async fn clusters_are_read_once_and_again_on_a_tag_miss() {
            let (url, reads) = stub(Answers::heketi(&[CLUSTER], &[])).await;
            let t = target(&url).await;
            for _ in 0..3 {
                confirm_gone(&t, &id(Some(CLUSTER))).await.expect("gone");
            }
            assert_eq!(reads.load(Ordering::SeqCst), 1, "read once, then kept");
            let miss = id(Some("0badc0de00000000000000000000000"));
            let e = confirm_gone(&t, &miss)
                .await
                .expect_err("not this Heketi's");
            assert_eq!(e.code(), tonic::Code::Internal);
            assert_eq!(reads.load(Ordering::SeqCst), 2, "a miss reads them again");
        }

        #[tokio::test]
        async fn an_empty_answer_is_not_kept() {
            let (url, reads) = stub(Answers::heketi(&[], &[])).await;
            let t = target(&url).await;
            for _ in 0..2 {
                assert!(confirm_gone(&t, &id(None)).await.is_err());
            }
            assert_eq!(reads.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn delete_volume_of_a_missing_volume_on_a_backend_without_clusters_is_internal() {
            let (url, _) = stub(Answers::heketi(&[], &[])).await;
            let svc = ControllerService::new(Arc::new(config(&url)));
            let request = |volume_id: String| {
                Request::new(DeleteVolumeRequest {
                    volume_id,
                    secrets: HashMap::new(),
                })
            };
            let encoded = id(None).encode().expect("id");
            let s = Controller::delete_volume(&svc, request(encoded))
                .await
                .expect_err("unconfirmed");
            assert_eq!(s.code(), tonic::Code::Internal, "{s:?}");
            assert!(s.message().contains(&url), "{s:?}");
            // An id that is not ours still deletes nothing and succeeds.
            assert!(
                Controller::delete_volume(&svc, request("pvc-static".into()))
                    .await
                    .is_ok()
            );
        }
    }
}
