//! CSI and Heketi calls with their time bounds, shared by the benchmark (`gluster-csi-bench`)
//! and the suites: create and delete through the controller or straight on Heketi, stage and
//! publish through the node plugin, a raw FUSE mount as the baseline.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Volume,
    VolumeCapability,
};
use heketi_client::types::{
    SnapshotSettings, VolumeCreateRequest, VolumeDurabilityInfo, VolumeInfoResponse,
};
use tonic::transport::Channel;

use crate::csi::DRIVER_NAME;

/// Limit on one volume operation (Gluster creates take seconds; queued ones longer).
pub const VOLUME_STEP: Duration = Duration::from_secs(600);
/// Limit on one node operation or quick call.
pub const NODE_STEP: Duration = Duration::from_secs(120);

const GIB: i64 = 1 << 30;

/// A controller client on `endpoint`.
pub async fn controller(endpoint: &str) -> Result<ControllerClient<Channel>> {
    ControllerClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the controller at {endpoint}"))
}

/// A node client on `endpoint`.
pub async fn node(endpoint: &str) -> Result<NodeClient<Channel>> {
    NodeClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the node plugin at {endpoint}"))
}

/// Runs `fut` under `limit`, naming `what` when it does not finish.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{what} did not finish within {limit:?}"),
    }
}

/// Runs `fut` and returns its result with how long it took.
pub async fn timed<T>(fut: impl Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = fut.await?;
    Ok((v, t.elapsed()))
}

/// A read-write-many mount capability.
pub fn rwx() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

/// CreateVolume of `gib` GiB with the StorageClass defaults (`volumetype replicate:3`) plus
/// `params`.
pub fn create_request(name: &str, gib: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwx()],
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// The Heketi request the controller sends for a 1 GiB `replicate:3` volume with default
/// StorageClass parameters, under another name and gid.
pub fn direct_request(
    name: &str,
    gid: i64,
    durability: VolumeDurabilityInfo,
) -> VolumeCreateRequest {
    VolumeCreateRequest {
        size: 1,
        name: name.to_owned(),
        durability,
        gid,
        snapshot: SnapshotSettings {
            enable: true,
            factor: 1.0,
        },
        ..Default::default()
    }
}

/// One CreateVolume.
pub async fn create_volume(
    c: &mut ControllerClient<Channel>,
    req: CreateVolumeRequest,
) -> Result<Volume> {
    let name = req.name.clone();
    bounded("CreateVolume", VOLUME_STEP, async {
        c.create_volume(req)
            .await
            .with_context(|| format!("CreateVolume {name}"))?
            .into_inner()
            .volume
            .context("CreateVolume returned no volume")
    })
    .await
}

/// One DeleteVolume.
pub async fn delete_volume(c: &mut ControllerClient<Channel>, id: &str) -> Result<()> {
    bounded("DeleteVolume", VOLUME_STEP, async {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.to_owned(),
            secrets: HashMap::new(),
        })
        .await
        .with_context(|| format!("DeleteVolume {id}"))?;
        Ok(())
    })
    .await
}

/// One Heketi create, straight with heketi-client.
pub async fn heketi_create(
    h: &heketi_client::Client,
    req: &VolumeCreateRequest,
) -> Result<VolumeInfoResponse> {
    bounded("Heketi volume create", VOLUME_STEP, async {
        h.volume_create(req)
            .await
            .with_context(|| format!("Heketi volume create {}", req.name))
    })
    .await
}

/// One Heketi delete, straight with heketi-client.
pub async fn heketi_delete(h: &heketi_client::Client, id: &str) -> Result<()> {
    bounded("Heketi volume delete", VOLUME_STEP, async {
        h.volume_delete(id)
            .await
            .with_context(|| format!("Heketi volume delete {id}"))
    })
    .await
}

/// Where kubelet (rooted at `kubelet`) stages `volume_id`.
pub fn staging_path(kubelet: &Path, volume_id: &str) -> PathBuf {
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(volume_id.as_bytes()));
    kubelet
        .join("plugins/kubernetes.io/csi")
        .join(DRIVER_NAME)
        .join(&digest[..32])
        .join("globalmount")
}

/// Where kubelet (rooted at `kubelet`) publishes a volume for pod `pod`.
pub fn target_path(kubelet: &Path, pod: &str) -> PathBuf {
    kubelet
        .join("pods")
        .join(pod)
        .join("volumes/kubernetes.io~csi/pv-bench/mount")
}

/// One NodeStageVolume.
pub async fn stage(n: &mut NodeClient<Channel>, v: &Volume, staging: &Path) -> Result<()> {
    bounded("NodeStageVolume", NODE_STEP, async {
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(rwx()),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        })
        .await
        .context("NodeStageVolume")?;
        Ok(())
    })
    .await
}

/// One NodeUnstageVolume.
pub async fn unstage(n: &mut NodeClient<Channel>, v: &Volume, staging: &Path) -> Result<()> {
    bounded("NodeUnstageVolume", NODE_STEP, async {
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .context("NodeUnstageVolume")?;
        Ok(())
    })
    .await
}

/// One NodePublishVolume (read-write).
pub async fn publish(
    n: &mut NodeClient<Channel>,
    v: &Volume,
    staging: &Path,
    target: &Path,
) -> Result<()> {
    bounded("NodePublishVolume", NODE_STEP, async {
        n.node_publish_volume(NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(rwx()),
            readonly: false,
            volume_context: v.volume_context.clone(),
            ..Default::default()
        })
        .await
        .context("NodePublishVolume")?;
        Ok(())
    })
    .await
}

/// One NodeUnpublishVolume.
pub async fn unpublish(n: &mut NodeClient<Channel>, v: &Volume, target: &Path) -> Result<()> {
    bounded("NodeUnpublishVolume", NODE_STEP, async {
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .context("NodeUnpublishVolume")?;
        Ok(())
    })
    .await
}

/// `glusterServers` and `glusterVolume` of a volume context.
pub fn servers_and_volume(v: &Volume) -> Result<(Vec<String>, String)> {
    let servers: Vec<String> = v
        .volume_context
        .get("glusterServers")
        .context("no glusterServers in the volume context")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let volume = v
        .volume_context
        .get("glusterVolume")
        .context("no glusterVolume in the volume context")?
        .clone();
    Ok((servers, volume))
}

/// `mount -t glusterfs` of `volume` at `dir` with the other servers as backup volfile servers
/// and `extra` options, the way an administrator (or the in-tree plugin) mounts it.
pub async fn raw_mount(
    servers: &[String],
    volume: &str,
    dir: &Path,
    extra: &[String],
) -> Result<()> {
    let (first, others) = servers.split_first().context("no servers")?;
    std::fs::create_dir_all(dir)?;
    let mut options: Vec<String> = Vec::new();
    if !others.is_empty() {
        options.push(format!("backup-volfile-servers={}", others.join(":")));
    }
    options.extend(extra.iter().cloned());
    let mut argv: Vec<String> = vec!["mount".into(), "-t".into(), "glusterfs".into()];
    if !options.is_empty() {
        argv.push("-o".into());
        argv.push(options.join(","));
    }
    argv.push(format!("{first}:/{volume}"));
    argv.push(dir.display().to_string());
    crate::cmd::run(&argv, NODE_STEP).await?;
    Ok(())
}
