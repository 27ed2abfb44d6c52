//! The CSI Node service.
//!
//! - **NodeStageVolume** mounts the Gluster volume once per node at the staging path with the
//!   FUSE client ([`crate::spawn`] keeps that client alive across plugin restarts).
//! - **NodePublishVolume** bind-mounts the staging mount into the pod's target path, read-only
//!   through a remount pass when asked. If the staging mount is dead (no client serves it any
//!   more), it is remounted first and the target rebound: the repair path.
//! - **NodeUnpublishVolume** unmounts (lazily when busy) and removes the directory; a missing or
//!   unmounted path is success.
//! - **NodeUnstageVolume** does the same for the staging path, but refuses (FAILED_PRECONDITION)
//!   while the volume is still mounted elsewhere under kubelet's directory (published targets):
//!   their client would keep running with nothing mounted at the staging path.
//! - **NodeGetVolumeStats** reports bytes and inodes from `statvfs`, and VOLUME_CONDITION
//!   abnormal, with the cause, when the mount is degraded or dead.
//!
//! Healthy, degraded or dead, and what follows from it, is decided in one place,
//! [`crate::condition`] ([`condition::repair`]): a mount whose client still runs is degraded,
//! never remounted nor its client killed; stage and publish then answer UNAVAILABLE.
//!
//! No decision depends on memory: each call reads `/proc/self/mountinfo`, so a restarted plugin
//! carries on with the mounts an earlier one made. Calls on the same volume or path are
//! serialised; a concurrent call gets ABORTED.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use csi_proto::v1::node_server::Node;
use csi_proto::v1::node_service_capability::{self, rpc};
use csi_proto::v1::volume_capability::AccessType;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::{
    NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse, NodeGetInfoRequest,
    NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeServiceCapability,
    NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnpublishVolumeRequest,
    NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
    VolumeCapability, VolumeCondition, VolumeUsage, volume_usage,
};
use gluster_csi_runtime::locks::{OperationGuard, OperationLocks};
use nix::mount::MsFlags;
use tonic::{Request, Response, Status};

use crate::Config;
use crate::clients::{self, ProcessView};
use crate::condition::{self, Condition, Inspector, Repair};
use crate::context::VolumeContext;
use crate::error::Error;
use crate::logs;
use crate::mounter::{self, Prober};
use crate::mountinfo::{MountInfo, MountTable};
use crate::options::{self, MountFlags};
use crate::paths::{self, Field};
use crate::records::Records;
use crate::spawn::ClientLauncher;

/// How long NodeGetVolumeStats (and the health checks of stage/publish) wait for `statvfs`.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dead client's leftover processes get to exit before a remount.
const STALE_CLIENT_WAIT: Duration = Duration::from_secs(3);

/// The Node service.
pub struct NodeService {
    config: Arc<Config>,
    launcher: Arc<ClientLauncher>,
    inspector: Inspector,
    view: ProcessView,
    records: Records,
    locks: OperationLocks,
    /// Cleared once a client rejects `auto_unmount`.
    auto_unmount: AtomicBool,
    /// The part of the topology read from the Node's labels.
    node_labels: crate::node_labels::NodeLabels,
}

/// The parts of a volume capability the node uses.
#[derive(Debug)]
struct Capability {
    mode: Mode,
    flags: MountFlags,
}

impl Capability {
    fn parse(cap: Option<&VolumeCapability>) -> Result<Self, Error> {
        let cap =
            cap.ok_or_else(|| Error::InvalidArgument("volume_capability is required".into()))?;
        let mount = match &cap.access_type {
            Some(AccessType::Mount(m)) => m,
            Some(AccessType::Block(_)) => {
                return Err(Error::InvalidArgument(
                    "block access is not supported: Gluster volumes are file systems".into(),
                ));
            }
            None => {
                return Err(Error::InvalidArgument(
                    "volume_capability.access_type is required".into(),
                ));
            }
        };
        if !matches!(mount.fs_type.as_str(), "" | "glusterfs" | "fuse.glusterfs") {
            return Err(Error::InvalidArgument(format!(
                "fs_type {:?} is not supported: Gluster volumes are mounted as glusterfs",
                mount.fs_type
            )));
        }
        let raw_mode = cap.access_mode.map(|a| a.mode).ok_or_else(|| {
            Error::InvalidArgument("volume_capability.access_mode is required".into())
        })?;
        let mode = match Mode::try_from(raw_mode) {
            Ok(Mode::Unknown) | Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "volume_capability.access_mode {raw_mode} is not a known access mode"
                )));
            }
            Ok(m) => m,
        };
        Ok(Self {
            mode,
            flags: MountFlags::parse(&mount.mount_flags)?,
        })
    }

    fn read_only_mode(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
        )
    }
}

fn require_volume_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        Err(Error::InvalidArgument("volume_id is required".into()))
    } else {
        Ok(())
    }
}

impl NodeService {
    /// A node service using `config`; builds the client launcher (which logs whether FUSE
    /// clients will survive a plugin restart).
    pub fn new(config: Arc<Config>) -> Self {
        let launcher = Arc::new(ClientLauncher::new(
            &config.fuse_launcher,
            &config.fuse_cgroups,
            config.mount_timeout,
        ));
        let view = ProcessView::detect();
        if !view.sees_all {
            tracing::warn!(
                "the plugin cannot see every process of the node (no host PID namespace): a \
                 mount that answers with a connection error is taken as dead, since whether \
                 its client still runs cannot be told"
            );
        }
        Self {
            records: Records::new(&config.state_dir),
            node_labels: crate::node_labels::NodeLabels::new(
                &config.node_id,
                config.topology_from_node_labels.clone(),
            ),
            config,
            launcher,
            inspector: Inspector::new(Prober::new(STATS_TIMEOUT), view),
            view,
            locks: OperationLocks::default(),
            auto_unmount: AtomicBool::new(true),
        }
    }

    /// Logs the Gluster mounts found at start: a new plugin takes them over as they are.
    pub async fn adopt(&self) {
        match mounter::mount_table().await {
            Ok(table) => {
                let mounts: Vec<&MountInfo> = table
                    .glusterfs()
                    .filter(|m| {
                        self.config
                            .kubelet_dir
                            .as_ref()
                            .is_none_or(|k| m.mount_point.starts_with(k))
                    })
                    .collect();
                for m in &mounts {
                    tracing::info!(
                        mount_point = %m.mount_point.display(), source = %m.source,
                        "found an existing Gluster mount"
                    );
                }
                tracing::info!(count = mounts.len(), "existing Gluster mounts adopted");
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the mount table at start"),
        }
    }

    fn lock(&self, keys: &[String]) -> Result<Vec<OperationGuard>, Error> {
        keys.iter()
            .map(|k| self.locks.try_lock(k).ok_or_else(|| Error::Busy(k.clone())))
            .collect()
    }

    fn volume_key(id: &str) -> String {
        format!("volume {id}")
    }

    fn path_key(p: &Path) -> String {
        format!("path {}", p.display())
    }

    // ---- staging ----

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<(), Error> {
        require_volume_id(&req.volume_id)?;
        let staging = paths::validate(
            Field::Staging,
            &req.staging_target_path,
            self.config.kubelet_dir.as_deref(),
        )?;
        let cap = Capability::parse(req.volume_capability.as_ref())?;
        let ctx = VolumeContext::from_map(&req.volume_context)?;
        let _guards = self.lock(&[Self::volume_key(&req.volume_id), Self::path_key(&staging)])?;
        let staging = mounter::resolve(&staging).await?;
        self.ensure_staged(&req.volume_id, &staging, &ctx, &cap.flags)
            .await
            .map(|_| ())
    }

    /// Makes `staging` a live mount of `ctx`'s volume; returns its mount table entry. A dead
    /// mount there is replaced, a degraded one is left alone (UNAVAILABLE).
    async fn ensure_staged(
        &self,
        volume_id: &str,
        staging: &Path,
        ctx: &VolumeContext,
        flags: &MountFlags,
    ) -> Result<MountInfo, Error> {
        let table = mounter::mount_table().await?;
        if let Some(m) = table.at(staging) {
            check_same_volume(m, staging, &ctx.volume)?;
            match condition::repair(self.inspector.assess(&table, m).await, volume_id, m)? {
                Repair::Keep => {
                    tracing::debug!("already staged");
                    self.records.put(volume_id, &ctx.volume).await?;
                    return Ok(m.clone());
                }
                Repair::Remount(cause) => {
                    tracing::warn!(reason = %cause, "staging mount is dead; remounting");
                    mounter::unmount_all(staging).await?;
                }
            }
        }
        self.mount_fresh(volume_id, staging, ctx, flags).await
    }

    /// Mounts `ctx`'s volume at `staging`, where nothing is mounted; returns its entry.
    async fn mount_fresh(
        &self,
        volume_id: &str,
        staging: &Path,
        ctx: &VolumeContext,
        flags: &MountFlags,
    ) -> Result<MountInfo, Error> {
        mounter::create_dir(staging).await?;
        self.mount_volume(ctx, flags, staging).await?;
        let table = mounter::mount_table().await?;
        let m = table
            .at(staging)
            .filter(|m| m.gluster_volume() == Some(ctx.volume.as_str()))
            .cloned()
            .ok_or_else(|| Error::Mount {
                source_spec: ctx.source(),
                target: staging.to_path_buf(),
                detail: "mount reported success but the mount table does not show it".into(),
            })?;
        self.records.put(volume_id, &ctx.volume).await?;
        tracing::info!(source = %m.source, staging = %staging.display(), "staged");
        Ok(m)
    }

    /// Runs the FUSE mount; retries once without `auto_unmount` if the first attempt fails
    /// while using it (clients that do not know the option refuse to mount).
    async fn mount_volume(
        &self,
        ctx: &VolumeContext,
        flags: &MountFlags,
        staging: &Path,
    ) -> Result<(), Error> {
        let log = options::log_file(&self.config.state_dir, &ctx.volume);
        let log_start = logs::prepare(&log).await?;
        clients::retire_stale(staging, STALE_CLIENT_WAIT, self.view).await;
        let auto = self.auto_unmount.load(Ordering::Relaxed) && !flags.has_key("auto_unmount");
        let source = ctx.source();
        let opts = options::stage_options(ctx, flags, &log, auto);
        let first = self
            .launcher
            .mount_glusterfs(&source, staging, &opts)
            .await?;
        if first.command.success {
            return Ok(());
        }
        let last = if auto {
            self.clean_failed_mount(staging).await;
            let opts = options::stage_options(ctx, flags, &log, false);
            let second = self
                .launcher
                .mount_glusterfs(&source, staging, &opts)
                .await?;
            if second.command.success {
                tracing::warn!(
                    "the Gluster client refused auto_unmount; mounting without it from now on"
                );
                self.auto_unmount.store(false, Ordering::Relaxed);
                return Ok(());
            }
            second
        } else {
            first
        };
        self.clean_failed_mount(staging).await;
        let mut tail = logs::tail_async(&log, log_start, logs::TAIL_LINES).await;
        if tail.is_empty() {
            // The mount agent read the log where it ran the mount.
            tail = last.log_tail.clone();
        }
        Err(Error::Mount {
            source_spec: source,
            target: staging.to_path_buf(),
            detail: format!(
                "{}; output: {}; client log {}: {}",
                last.command.status,
                if last.command.output.is_empty() {
                    "(none)"
                } else {
                    &last.command.output
                },
                log.display(),
                if tail.is_empty() {
                    "(nothing logged)".to_owned()
                } else {
                    tail
                },
            ),
        })
    }

    /// After a failed mount: lets the client of the attempt exit (it unmounts what it mounted
    /// when it gives up), then removes any mount it left behind.
    async fn clean_failed_mount(&self, staging: &Path) {
        clients::retire_stale(staging, STALE_CLIENT_WAIT, self.view).await;
        if let Err(e) = mounter::unmount_all(staging).await {
            tracing::warn!(error = %e, "cannot remove what a failed mount left behind");
        }
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<(), Error> {
        require_volume_id(&req.volume_id)?;
        let staging = paths::validate(
            Field::Staging,
            &req.staging_target_path,
            self.config.kubelet_dir.as_deref(),
        )?;
        let _guards = self.lock(&[Self::volume_key(&req.volume_id), Self::path_key(&staging)])?;
        let staging = mounter::resolve(&staging).await?;
        let table = mounter::mount_table().await?;
        if let Some(m) = table.at(&staging) {
            let others = condition::other_mounts(&table, m, self.config.kubelet_dir.as_deref());
            if !others.is_empty() {
                let list: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
                return Err(Error::FailedPrecondition(format!(
                    "volume {} is still mounted at {}; unpublish it there first (unstaging now \
                     would leave its Gluster client serving those mounts with nothing at the \
                     staging path {})",
                    req.volume_id,
                    list.join(", "),
                    staging.display()
                )));
            }
        }
        mounter::unmount_all(&staging).await?;
        mounter::remove_dir(&staging).await?;
        self.records.remove(&req.volume_id).await?;
        tracing::info!(staging = %staging.display(), "unstaged");
        Ok(())
    }

    // ---- publishing ----

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<(), Error> {
        require_volume_id(&req.volume_id)?;
        let kubelet = self.config.kubelet_dir.as_deref();
        let staging = paths::validate(Field::Staging, &req.staging_target_path, kubelet)?;
        let target = paths::validate(Field::Target, &req.target_path, kubelet)?;
        if staging == target {
            return Err(Error::InvalidArgument(
                "target_path must differ from staging_target_path".into(),
            ));
        }
        let cap = Capability::parse(req.volume_capability.as_ref())?;
        let read_only = req.readonly || cap.read_only_mode();
        let _guards = self.lock(&[Self::volume_key(&req.volume_id), Self::path_key(&target)])?;
        let staging = mounter::resolve(&staging).await?;
        let target = mounter::resolve(&target).await?;

        let (staged, table) = self
            .live_staging(&req.volume_id, &staging, &req.volume_context, &cap.flags)
            .await?;

        if let Some(t) = table.at(&target) {
            if t.device == staged.device {
                if t.read_only() != read_only {
                    return Err(Error::AlreadyExists(format!(
                        "{} is already published {}; unpublish it first",
                        target.display(),
                        if t.read_only() {
                            "read-only"
                        } else {
                            "read-write"
                        }
                    )));
                }
                tracing::debug!("already published");
                return Ok(());
            }
            if t.is_glusterfs() && t.gluster_volume() == staged.gluster_volume() {
                // Bound to another FUSE connection of the volume: an earlier mount.
                match condition::repair(self.inspector.assess(&table, t).await, &req.volume_id, t)?
                {
                    Repair::Remount(cause) => {
                        tracing::warn!(
                            target = %target.display(), reason = %cause,
                            "target is bound to an earlier, dead mount of this volume; rebinding"
                        );
                        mounter::unmount_all(&target).await?;
                    }
                    Repair::Keep if t.read_only() == read_only => {
                        tracing::info!(
                            target = %target.display(),
                            "already published from an earlier mount of this volume that still \
                             serves; left as it is"
                        );
                        return Ok(());
                    }
                    Repair::Keep => {
                        return Err(Error::AlreadyExists(format!(
                            "{} is already published {} from an earlier mount of the volume; \
                             unpublish it first",
                            target.display(),
                            if t.read_only() {
                                "read-only"
                            } else {
                                "read-write"
                            }
                        )));
                    }
                }
            } else {
                return Err(Error::AlreadyExists(format!(
                    "{} already holds a {} mount of {}",
                    target.display(),
                    t.fstype,
                    t.source
                )));
            }
        }
        if cap.mode == Mode::SingleNodeSingleWriter {
            let others: Vec<String> = table
                .with_device(staged.device)
                .filter(|m| m.mount_point != staging && m.mount_point != target)
                .map(|m| m.mount_point.display().to_string())
                .collect();
            if !others.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "the volume is SINGLE_NODE_SINGLE_WRITER and already published at {}",
                    others.join(", ")
                )));
            }
        }
        mounter::create_dir(&target).await?;
        let mut flags = cap.flags.bind_flags();
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mounter::bind(&staging, &target, flags).await?;
        let table = mounter::mount_table().await?;
        match table.at(&target) {
            Some(t) if t.device == staged.device && t.read_only() == read_only => {
                tracing::info!(target = %target.display(), read_only, "published");
                Ok(())
            }
            _ => Err(Error::FailedPrecondition(format!(
                "the bind mount on {} is not in the mount table as expected",
                target.display()
            ))),
        }
    }

    /// The live staging mount for a publish, with the mount table it was found in; remounts
    /// it when it is dead (repair), refuses when it is degraded. A staging directory that does
    /// not exist means the volume was never staged.
    async fn live_staging(
        &self,
        volume_id: &str,
        staging: &Path,
        context: &std::collections::HashMap<String, String>,
        flags: &MountFlags,
    ) -> Result<(MountInfo, MountTable), Error> {
        let table = mounter::mount_table().await?;
        if let Some(m) = table.at(staging) {
            if !m.is_glusterfs() {
                return Err(Error::FailedPrecondition(format!(
                    "{} holds a {} mount, not a staged Gluster volume",
                    staging.display(),
                    m.fstype
                )));
            }
            match condition::repair(self.inspector.assess(&table, m).await, volume_id, m)? {
                Repair::Keep => {
                    let m = m.clone();
                    return Ok((m, table));
                }
                Repair::Remount(cause) => {
                    let ctx = VolumeContext::from_map(context)?;
                    check_same_volume(m, staging, &ctx.volume)?;
                    tracing::warn!(reason = %cause, "staging mount is dead; remounting it before publishing");
                    mounter::unmount_all(staging).await?;
                    return self.remounted(volume_id, staging, &ctx, flags).await;
                }
            }
        }
        if !staging_dir_exists(staging).await? {
            return Err(Error::FailedPrecondition(format!(
                "the volume is not staged at {}; call NodeStageVolume first",
                staging.display()
            )));
        }
        tracing::warn!(staging = %staging.display(), "staging path is not mounted (its client may have died); restaging");
        let ctx = VolumeContext::from_map(context)?;
        self.remounted(volume_id, staging, &ctx, flags).await
    }

    /// [`Self::mount_fresh`], with the mount table read after it.
    async fn remounted(
        &self,
        volume_id: &str,
        staging: &Path,
        ctx: &VolumeContext,
        flags: &MountFlags,
    ) -> Result<(MountInfo, MountTable), Error> {
        let m = self.mount_fresh(volume_id, staging, ctx, flags).await?;
        Ok((m, mounter::mount_table().await?))
    }

    async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<(), Error> {
        require_volume_id(&req.volume_id)?;
        let target = paths::validate(
            Field::Target,
            &req.target_path,
            self.config.kubelet_dir.as_deref(),
        )?;
        let _guards = self.lock(&[Self::volume_key(&req.volume_id), Self::path_key(&target)])?;
        let target = mounter::resolve(&target).await?;
        mounter::unmount_all(&target).await?;
        mounter::remove_dir(&target).await?;
        tracing::info!(target = %target.display(), "unpublished");
        Ok(())
    }

    // ---- stats ----

    async fn stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Error> {
        require_volume_id(&req.volume_id)?;
        if req.volume_path.is_empty() {
            return Err(Error::InvalidArgument("volume_path is required".into()));
        }
        let raw = Path::new(&req.volume_path);
        if !paths::is_normalised(raw) {
            return Err(Error::NotFound(format!(
                "{} is not a mount of this plugin (not an absolute, normalised path)",
                req.volume_path
            )));
        }
        let path = mounter::resolve(raw).await?;
        let table = mounter::mount_table().await?;
        let mount = table
            .at(&path)
            .filter(|m| m.is_glusterfs())
            .ok_or_else(|| Error::NotFound(format!("{} is not a Gluster mount", path.display())))?;
        if let Some(recorded) = self.records.get(&req.volume_id).await?
            && mount.gluster_volume() != Some(recorded.as_str())
        {
            return Err(Error::NotFound(format!(
                "{} is a mount of {}, not of volume {}",
                path.display(),
                mount.source,
                req.volume_id
            )));
        }
        let condition = self.inspector.assess(&table, mount).await;
        Ok(stats_response(&condition))
    }
}

fn stats_response(condition: &Condition) -> NodeGetVolumeStatsResponse {
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match condition {
        Condition::Healthy(u) => NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: to_i64(u.bytes_available),
                    total: to_i64(u.bytes_total),
                    used: to_i64(u.bytes_used),
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: to_i64(u.inodes_available),
                    total: to_i64(u.inodes_total),
                    used: to_i64(u.inodes_used),
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(VolumeCondition {
                abnormal: false,
                message: "volume is mounted and answering".into(),
            }),
        },
        Condition::Degraded(cause) | Condition::Dead(cause) => NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: Some(VolumeCondition {
                abnormal: true,
                message: cause.clone(),
            }),
        },
    }
}

/// Refuses a staging path that holds another file system or another Gluster volume.
fn check_same_volume(m: &MountInfo, staging: &Path, volume: &str) -> Result<(), Error> {
    if !m.is_glusterfs() {
        return Err(Error::AlreadyExists(format!(
            "{} already holds a {} mount of {}",
            staging.display(),
            m.fstype,
            m.source
        )));
    }
    if m.gluster_volume() != Some(volume) {
        return Err(Error::AlreadyExists(format!(
            "{} already holds Gluster volume {} (source {}), not {volume}",
            staging.display(),
            m.gluster_volume().unwrap_or("?"),
            m.source
        )));
    }
    Ok(())
}

async fn staging_dir_exists(staging: &Path) -> Result<bool, Error> {
    let p = staging.to_path_buf();
    crate::error::blocking(
        "checking the staging directory",
        mounter::SYSCALL_TIMEOUT,
        move || Ok(std::fs::symlink_metadata(&p).is_ok()),
    )
    .await
}

fn done<T>(what: &'static str, r: Result<T, Error>) -> Result<Response<T>, Status> {
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            tracing::warn!(error = %e, "{what} failed");
            Err(Status::from(e))
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    #[tracing::instrument(name = "NodeStageVolume", skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = self.stage(request.into_inner()).await;
        done("NodeStageVolume", r.map(|()| NodeStageVolumeResponse {}))
    }

    #[tracing::instrument(name = "NodeUnstageVolume", skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = self.unstage(request.into_inner()).await;
        done(
            "NodeUnstageVolume",
            r.map(|()| NodeUnstageVolumeResponse {}),
        )
    }

    #[tracing::instrument(name = "NodePublishVolume", skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = self.publish(request.into_inner()).await;
        done(
            "NodePublishVolume",
            r.map(|()| NodePublishVolumeResponse {}),
        )
    }

    #[tracing::instrument(name = "NodeUnpublishVolume", skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = self.unpublish(request.into_inner()).await;
        done(
            "NodeUnpublishVolume",
            r.map(|()| NodeUnpublishVolumeResponse {}),
        )
    }

    #[tracing::instrument(name = "NodeGetVolumeStats", skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = self.stats(request.into_inner()).await;
        done("NodeGetVolumeStats", r)
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::VolumeCondition,
            rpc::Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let mut segment = self.config.topology.clone();
        segment.extend(
            self.node_labels
                .segment()
                .await
                .map_err(Status::unavailable)?,
        );
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: (!segment.is_empty()).then(|| csi_proto::v1::Topology {
                segments: segment.into_iter().collect(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(mode: Mode, fs_type: &str, flags: &[&str]) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs_type.into(),
                mount_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
                volume_mount_group: String::new(),
            })),
        }
    }

    #[test]
    fn capability_validation() {
        let ok =
            Capability::parse(Some(&cap(Mode::MultiNodeMultiWriter, "", &["acl"]))).expect("valid");
        assert_eq!(ok.flags.options(), ["acl"]);
        assert!(!ok.read_only_mode());
        assert!(
            Capability::parse(Some(&cap(Mode::MultiNodeReaderOnly, "glusterfs", &[])))
                .expect("valid")
                .read_only_mode()
        );
        let bad: Vec<(Option<VolumeCapability>, &str)> = vec![
            (None, "volume_capability is required"),
            (Some(cap(Mode::Unknown, "", &[])), "access_mode"),
            (Some(cap(Mode::SingleNodeWriter, "ext4", &[])), "fs_type"),
            (
                Some(cap(Mode::SingleNodeWriter, "", &["log-file=/x"])),
                "mount flag",
            ),
            (
                Some(VolumeCapability {
                    access_mode: Some(AccessMode {
                        mode: Mode::SingleNodeWriter as i32,
                    }),
                    access_type: Some(AccessType::Block(BlockVolume {})),
                }),
                "block",
            ),
            (
                Some(VolumeCapability {
                    access_mode: None,
                    access_type: Some(AccessType::Mount(MountVolume::default())),
                }),
                "access_mode is required",
            ),
            (
                Some(VolumeCapability {
                    access_mode: Some(AccessMode { mode: 99 }),
                    access_type: Some(AccessType::Mount(MountVolume::default())),
                }),
                "not a known access mode",
            ),
        ];
        for (c, fragment) in bad {
            match Capability::parse(c.as_ref()) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(fragment), "{m}"),
                other => panic!("{fragment}: {other:?}"),
            }
        }
    }

    #[test]
    fn stats_of_a_broken_mount_are_abnormal_with_the_cause() {
        let dead = Condition::Dead("/t is not served any more".into());
        let degraded = Condition::Degraded("/t answers while its client runs".into());
        for c in [dead, degraded] {
            let r = stats_response(&c);
            let v = r.volume_condition.expect("condition");
            assert!(v.abnormal);
            assert_eq!(Some(v.message.as_str()), c.cause());
            assert!(r.usage.is_empty());
        }
    }
}
