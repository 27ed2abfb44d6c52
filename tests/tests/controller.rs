//! The controller against the testbed: real heketi-server, real Gluster volumes, real FUSE
//! mounts.
//!
//! One testbed (three Gluster hosts, heketi-server with auth, the controller) serves every
//! trial; trials run in parallel, so each uses CSI names of its own and checks only its own
//! volumes. Trials that restart a controller or need one without a default backend run their
//! own `gluster-csi-controller` process on a socket in their scratch directory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::{Type as CapType, rpc};
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
    ControllerGetVolumeRequest, CreateVolumeRequest, DeleteVolumeRequest, GetCapacityRequest,
    ListVolumesRequest, ValidateVolumeCapabilitiesRequest, Volume, VolumeCapability,
    VolumeContentSource,
};
use gluster_csi_controller::volume_id::{BackendRef, VolumeId};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness};
use heketi_client::types::{DurabilityType, VolumeCreateRequest, VolumeDurabilityInfo};
use tonic::transport::Channel;
use tonic::{Code, Status};

const GIB: i64 = 1 << 30;
/// Limit on one step (a create, a mount, a page), so a hang fails the trial instead of the run.
/// Not an assertion about speed.
const STEP: Duration = Duration::from_secs(300);
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Log filter for every process the testbed starts: the controller logs at its most verbose
/// level so the secret check reads every line it can write.
const LOG_FILTER: &str =
    "info,gluster_csi_controller=trace,heketi_client=trace,gluster_csi_runtime=trace";

fn main() {
    // The processes the testbed starts inherit RUST_LOG. Changing the environment is `unsafe`
    // because another thread could read it at the same time.
    #[allow(unsafe_code)]
    // SAFETY: no other thread exists yet (the harness starts its runtime below).
    unsafe {
        std::env::set_var("RUST_LOG", LOG_FILTER);
    }
    let opts = TestbedOptions {
        state_dir: harness::state_dir_for("controller"),
        hosts: 3,
        heketi: true,
        controller: true,
        node: false,
        executor: ExecutorKind::default(),
    };
    harness::run(opts, |tb| {
        vec![
            harness::trial("capabilities_and_capacity", &tb, capabilities_and_capacity),
            harness::trial(
                "life_cycle_of_each_volumetype",
                &tb,
                life_cycle_of_each_volumetype,
            ),
            harness::trial(
                "every_parameter_reaches_heketi_and_gluster",
                &tb,
                every_parameter_reaches_heketi_and_gluster,
            ),
            harness::trial(
                "invalid_requests_name_the_parameter_and_create_nothing",
                &tb,
                invalid_requests_create_nothing,
            ),
            harness::trial(
                "same_name_is_the_same_volume_and_other_parameters_already_exist",
                &tb,
                same_name_is_idempotent,
            ),
            harness::trial(
                "eight_concurrent_creates_of_one_name_make_one_volume",
                &tb,
                eight_concurrent_creates,
            ),
            harness::trial(
                "create_that_timed_out_is_found_by_the_retry",
                &tb,
                timed_out_create_is_found,
            ),
            harness::trial(
                "retried_create_after_controller_restart_returns_the_same_volume",
                &tb,
                retried_create_after_restart,
            ),
            harness::trial(
                "resturl_volume_works_from_its_id_alone",
                &tb,
                resturl_volume_works_from_its_id,
            ),
            harness::trial(
                "clone_holds_the_source_data_at_the_requested_size",
                &tb,
                clone_holds_the_source_data,
            ),
            harness::trial(
                "expand_is_visible_in_df_of_a_mount",
                &tb,
                expand_is_visible_in_df,
            ),
            harness::trial(
                "list_volumes_pages_stay_consistent_under_creates_and_deletes",
                &tb,
                list_volumes_paging,
            ),
            harness::trial(
                "gid_is_the_lowest_free_of_the_class_range",
                &tb,
                gid_is_lowest_free,
            ),
            // Alone, so that heketi-server's time for a create is its own (about 5 s) and the
            // first create is surely still running in Heketi when the second one picks a gid.
            harness::exclusive_trial(
                "a_gid_of_a_timed_out_create_is_not_given_to_another_volume",
                &tb,
                timed_out_create_keeps_its_gid,
            ),
            harness::trial(
                "delete_takes_a_404_for_gone_only_from_the_volumes_heketi",
                &tb,
                delete_404_needs_the_volumes_heketi,
            ),
            harness::trial(
                "heketi_unreachable_is_unavailable",
                &tb,
                heketi_unreachable_is_unavailable,
            ),
            harness::trial(
                "metrics_count_calls_by_code_and_heketi_requests",
                &tb,
                metrics_count_calls,
            ),
            harness::trial(
                "no_secret_in_any_controller_log_line",
                &tb,
                no_secret_in_logs,
            ),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

type Client = ControllerClient<Channel>;

async fn connect(endpoint: &str) -> Result<Client> {
    ControllerClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the controller at {endpoint}"))
}

async fn controller(tb: &Testbed) -> Result<Client> {
    connect(&tb.env().controller_endpoint).await
}

fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A unique CSI name for this run.
fn csi_name(what: &str) -> String {
    format!("pvc-{what}-{}", std::process::id())
}

fn create_req(name: &str, gib: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter)],
        parameters: map(params),
        ..Default::default()
    }
}

/// One CreateVolume call, bounded by [`STEP`].
async fn create_once(c: &mut Client, req: CreateVolumeRequest) -> Result<Volume, Status> {
    match tokio::time::timeout(STEP, c.create_volume(req)).await {
        Ok(r) => r?
            .into_inner()
            .volume
            .ok_or_else(|| Status::internal("CreateVolume answered without a volume")),
        Err(_) => Err(Status::deadline_exceeded("the test's step limit passed")),
    }
}

/// CreateVolume until it stops answering ABORTED (another call for the name in flight).
async fn create(c: &mut Client, req: CreateVolumeRequest) -> Result<Volume> {
    let name = req.name.clone();
    let until = tokio::time::Instant::now() + STEP;
    loop {
        match create_once(c, req.clone()).await {
            Ok(v) => return Ok(v),
            Err(s) if s.code() == Code::Aborted && tokio::time::Instant::now() < until => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(s) => bail!("CreateVolume {name}: {s:?}"),
        }
    }
}

async fn delete(c: &mut Client, volume_id: &str) -> Result<()> {
    let req = DeleteVolumeRequest {
        volume_id: volume_id.to_owned(),
        secrets: HashMap::new(),
    };
    tokio::time::timeout(STEP, c.delete_volume(req))
        .await
        .context("DeleteVolume took too long")?
        .with_context(|| format!("DeleteVolume {volume_id}"))?;
    Ok(())
}

fn ctx<'a>(v: &'a Volume, key: &str) -> Result<&'a str> {
    v.volume_context
        .get(key)
        .map(String::as_str)
        .with_context(|| format!("volume_context has no {key}: {:?}", v.volume_context))
}

fn heketi_id(v: &Volume) -> Result<String> {
    ctx(v, "heketiVolumeId").map(str::to_owned)
}

/// How many Heketi volumes are named `name`.
async fn heketi_count_named(tb: &Testbed, name: &str) -> Result<usize> {
    let h = tb.heketi_client()?;
    let mut n = 0;
    for id in h.volume_list().await?.volumes {
        match h.volume_info(&id).await {
            Ok(v) if v.name == name => n += 1,
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

fn assert_code<T>(r: Result<T, Status>, want: Code, what: &str) -> Result<Status> {
    match r {
        Ok(_) => bail!("{what}: succeeded, {want:?} was expected"),
        Err(s) if s.code() == want => Ok(s),
        Err(s) => bail!("{what}: {s:?}, {want:?} was expected"),
    }
}

/// Total bytes of the file system at `path` (what `df` shows).
async fn df_total(path: &Path) -> Result<u64> {
    let p = path.to_path_buf();
    let st = tokio::time::timeout(
        STEP,
        tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&p)),
    )
    .await
    .context("statvfs hung")??
    .with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.blocks() * st.fragment_size())
}

/// Mounts the volume's Gluster volume at a fresh directory in the scratch area.
async fn mount(tb: &Testbed, v: &Volume, dir: &str) -> Result<PathBuf> {
    let mp = tb.scratch_dir(dir)?;
    tb.mount_volume(ctx(v, "glusterVolume")?, &mp).await?;
    Ok(mp)
}

/// Deterministic test data.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A controller process of the trial's own (own socket, log and flags).
struct OwnController {
    child: tokio::process::Child,
    endpoint: String,
    log: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
}

impl OwnController {
    async fn start(tb: &Testbed, name: &str, with_default: bool) -> Result<Self> {
        Self::start_with(tb, name, with_default, &[]).await
    }

    async fn start_with(
        tb: &Testbed,
        name: &str,
        with_default: bool,
        extra: &[String],
    ) -> Result<Self> {
        let dir = tb.scratch_dir(name)?;
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let mut args = vec!["--endpoint".to_owned(), endpoint.clone()];
        if with_default {
            args.extend([
                "--heketi-url".to_owned(),
                tb.env().heketi_url.clone(),
                "--heketi-key-file".to_owned(),
                tb.env().heketi_key_file.display().to_string(),
            ]);
        }
        args.extend(extra.iter().cloned());
        let log = dir.join("controller.log");
        let child = Self::spawn(&args, &log, &socket).await?;
        Ok(Self {
            child,
            endpoint,
            log,
            args,
            socket,
        })
    }

    async fn spawn(args: &[String], log: &Path, socket: &Path) -> Result<tokio::process::Child> {
        let _ = std::fs::remove_file(socket);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let mut child = tokio::process::Command::new(bin_path("gluster-csi-controller")?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("starting gluster-csi-controller")?;
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let endpoint = format!("unix://{}", socket.display());
        loop {
            if socket.exists() && connect(&endpoint).await.is_ok() {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the controller exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            ensure!(
                tokio::time::Instant::now() < until,
                "the controller did not listen on {} in time",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, then a new process with the same flags.
    async fn restart(&mut self) -> Result<()> {
        self.child.kill().await?;
        self.child = Self::spawn(&self.args, &self.log, &self.socket).await?;
        Ok(())
    }

    async fn client(&self) -> Result<Client> {
        connect(&self.endpoint).await
    }
}

// ---------------------------------------------------------------------------------------------
// Trials

async fn capabilities_and_capacity(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let caps = c
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    let got: BTreeSet<i32> = caps
        .iter()
        .filter_map(|c| c.r#type.map(|CapType::Rpc(r)| r.r#type))
        .collect();
    let want: BTreeSet<i32> = [
        rpc::Type::CreateDeleteVolume,
        rpc::Type::ExpandVolume,
        rpc::Type::CloneVolume,
        rpc::Type::CreateDeleteSnapshot,
        rpc::Type::ListSnapshots,
        rpc::Type::ListVolumes,
        rpc::Type::GetCapacity,
        rpc::Type::GetVolume,
        rpc::Type::SingleNodeMultiWriter,
    ]
    .into_iter()
    .map(|t| t as i32)
    .collect();
    ensure!(got == want, "capabilities {got:?}, expected {want:?}");

    // The empty request (csi-sanity) and per-type requests; free space is the same raw pool, so
    // the ratios follow the volume type (other trials change it a little meanwhile).
    let cap = |params: &[(&str, &str)], caps: Vec<VolumeCapability>| GetCapacityRequest {
        volume_capabilities: caps,
        parameters: map(params),
        accessible_topology: None,
    };
    let empty = c.get_capacity(cap(&[], vec![])).await?.into_inner();
    ensure!(empty.available_capacity > 0, "{empty:?}");
    ensure!(empty.minimum_volume_size == Some(GIB), "{empty:?}");
    let none = c
        .get_capacity(cap(&[("volumetype", "none")], vec![]))
        .await?
        .into_inner()
        .available_capacity as f64;
    let r3 = c
        .get_capacity(cap(&[("volumetype", "replicate:3")], vec![]))
        .await?
        .into_inner()
        .available_capacity as f64;
    let ec = c
        .get_capacity(cap(&[("volumetype", "disperse:2:1")], vec![]))
        .await?
        .into_inner()
        .available_capacity as f64;
    ensure!(
        (none / r3 - 3.0).abs() < 0.05,
        "none {none} vs replicate:3 {r3}"
    );
    ensure!(
        (ec / none - 2.0 / 3.0).abs() < 0.02,
        "disperse:2:1 {ec} vs none {none}"
    );
    // The raw pool is the devices' free space as Heketi reports it.
    let h = tb.heketi_client()?;
    let mut free_kib = 0u64;
    for cid in h.cluster_list().await?.clusters {
        for nid in h.cluster_info(&cid).await?.nodes {
            free_kib += h
                .node_info(&nid)
                .await?
                .devices
                .iter()
                .map(|d| d.storage.free)
                .sum::<u64>();
        }
    }
    let raw = (free_kib * 1024) as f64;
    ensure!((none / raw - 1.0).abs() < 0.05, "none {none} vs raw {raw}");

    let block = c
        .get_capacity(cap(&[], vec![block_cap()]))
        .await?
        .into_inner();
    ensure!(
        block.available_capacity == 0,
        "block capacity must be 0: {block:?}"
    );
    let bad = c
        .get_capacity(cap(&[("volumetype", "triplicate")], vec![]))
        .await;
    assert_code(
        bad,
        Code::InvalidArgument,
        "GetCapacity with a bad volumetype",
    )?;
    Ok(())
}

async fn life_cycle_of_each_volumetype(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let h = tb.heketi_client()?;
    for (vt, kind, gluster_type, bricks, gib) in [
        (
            "replicate:3",
            DurabilityType::Replicate,
            "Replicate",
            "1 x 3 = 3",
            1,
        ),
        (
            "replicate:2",
            DurabilityType::Replicate,
            "Replicate",
            "1 x 2 = 2",
            1,
        ),
        (
            "disperse:2:1",
            DurabilityType::Disperse,
            "Disperse",
            "1 x (2 + 1) = 3",
            // 1 GiB asked; a brick is at least 1 GiB, so 2 data bricks make 2 GiB.
            2,
        ),
        ("none", DurabilityType::None, "Distribute", "1", 1),
    ] {
        let name = csi_name(&format!("life-{}", vt.replace(':', "-")));
        let v = create(&mut c, create_req(&name, 1, &[("volumetype", vt)])).await?;
        ensure!(
            v.capacity_bytes == gib * GIB,
            "{vt}: capacity {}",
            v.capacity_bytes
        );
        ensure!(v.volume_id.len() <= 128, "{vt}: id {}", v.volume_id);
        let servers = ctx(&v, "glusterServers")?;
        ensure!(
            servers.split(',').count() >= 1
                && servers
                    .split(',')
                    .all(|s| tb.env().gluster_hosts.iter().any(|g| g == s)),
            "{vt}: glusterServers {servers} are not testbed hosts"
        );
        let vol = ctx(&v, "glusterVolume")?.to_owned();

        // Heketi and Gluster agree with the request.
        let info = h.volume_info(&heketi_id(&v)?).await?;
        ensure!(info.durability.kind == kind, "{vt}: {:?}", info.durability);
        ensure!(
            i64::try_from(info.size)? == gib && info.name == vol,
            "{vt}: {info:?}"
        );
        let gi = tb.gluster(0, &["volume", "info", &vol]).await?;
        ensure!(
            gi.contains(&format!("Type: {gluster_type}")),
            "{vt}: gluster volume info:\n{gi}"
        );
        ensure!(
            gi.contains(&format!("Number of Bricks: {bricks}")),
            "{vt}: gluster volume info:\n{gi}"
        );

        // Usable: write through a FUSE mount, read back.
        let mp = mount(&tb, &v, &format!("life-{}", vt.replace(':', "-"))).await?;
        let data = pattern(256 * 1024, 7);
        std::fs::write(mp.join("data"), &data)?;
        let back = std::fs::read(mp.join("data"))?;
        tb.unmount(&mp).await?;
        ensure!(back == data, "{vt}: read back differs");

        // Validate and Get.
        let confirmed = c
            .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: v.volume_id.clone(),
                volume_capabilities: [
                    Mode::SingleNodeWriter,
                    Mode::SingleNodeReaderOnly,
                    Mode::MultiNodeReaderOnly,
                    Mode::MultiNodeSingleWriter,
                    Mode::MultiNodeMultiWriter,
                    Mode::SingleNodeSingleWriter,
                    Mode::SingleNodeMultiWriter,
                ]
                .into_iter()
                .map(mount_cap)
                .collect(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            confirmed
                .confirmed
                .as_ref()
                .is_some_and(|c| c.volume_capabilities.len() == 7),
            "{vt}: mount capabilities not confirmed: {confirmed:?}"
        );
        let block = c
            .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: v.volume_id.clone(),
                volume_capabilities: vec![block_cap()],
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            block.confirmed.is_none() && block.message.contains("block"),
            "{vt}: block must not be confirmed: {block:?}"
        );
        let got = c
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: v.volume_id.clone(),
            })
            .await?
            .into_inner()
            .volume
            .context("no volume")?;
        ensure!(
            got.volume_id == v.volume_id
                && got.capacity_bytes == gib * GIB
                && got.volume_context == v.volume_context,
            "{vt}: ControllerGetVolume {got:?} differs from {v:?}"
        );

        // Delete, twice; then it is gone everywhere.
        delete(&mut c, &v.volume_id).await?;
        delete(&mut c, &v.volume_id).await?;
        let gone = h.volume_info(&heketi_id(&v)?).await;
        ensure!(
            gone.as_ref().err().is_some_and(|e| e.is_not_found()),
            "{vt}: Heketi still has the volume: {gone:?}"
        );
        let gi = tb.gluster(0, &["volume", "list"]).await?;
        ensure!(
            !gi.lines().any(|l| l.trim() == vol),
            "{vt}: gluster still lists {vol}"
        );
        for (what, r) in [
            (
                "ControllerGetVolume",
                c.controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: v.volume_id.clone(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ValidateVolumeCapabilities",
                c.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                    volume_id: v.volume_id.clone(),
                    volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ] {
            assert_code(r, Code::NotFound, &format!("{vt}: {what} after delete"))?;
        }
    }
    // Ids that never were ours.
    delete(&mut c, "fake-vol-id-xxxxxxxxxx").await?;
    let r = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "fake-vol-id-xxxxxxxxxx".into(),
            volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
            ..Default::default()
        })
        .await;
    assert_code(r, Code::NotFound, "ValidateVolumeCapabilities of a fake id")?;
    Ok(())
}

/// The id of the (first) cluster of the testbed's heketi-server.
async fn first_cluster(h: &heketi_client::Client) -> Result<String> {
    h.cluster_list()
        .await?
        .clusters
        .into_iter()
        .next()
        .context("the testbed's heketi-server has no cluster")
}

async fn every_parameter_reaches_heketi_and_gluster(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let h = tb.heketi_client()?;
    let cluster = first_cluster(&h).await?;
    let env = tb.env();
    let name = csi_name("allparams");
    let params = [
        ("resturl", env.heketi_url.as_str()),
        ("RestAuthEnabled", "true"),
        ("restuser", "admin"),
        ("restuserkey", env.heketi_key.as_str()),
        ("secretName", "heketi-secret"),
        ("secretNamespace", "storage"),
        ("clusterid", cluster.as_str()),
        ("gidMin", "41000"),
        ("gidMax", "41999"),
        ("volumetype", "replicate:2"),
        (
            "volumeoptions",
            "performance.quick-read off, performance.stat-prefetch off",
        ),
        ("volumenameprefix", "team-a"),
        ("snapfactor", "2"),
        ("customepnameprefix", "ignored"),
        ("csi.storage.k8s.io/pvc/name", "claim"),
    ];
    // secretName/secretNamespace name a Secret read through the Kubernetes API, which no
    // test here can reach (tests/tests/kube_secrets.rs covers it against a fake API server);
    // a CSI secret in the request comes first, so the class is accepted without it.
    let mut req = create_req(&name, 2, &params);
    req.secrets = map(&[("key", env.heketi_key.as_str()), ("user", "admin")]);
    let v = create(&mut c, req).await?;
    let info = h.volume_info(&heketi_id(&v)?).await?;
    ensure!(
        info.name.starts_with("team-a_csi_"),
        "name {} lacks the prefix",
        info.name
    );
    ensure!(info.cluster == cluster, "cluster {}", info.cluster);
    ensure!(
        (41000..=41999).contains(&info.gid),
        "gid {} outside the class range",
        info.gid
    );
    ensure!(
        info.durability == VolumeDurabilityInfo::replicate(2),
        "{:?}",
        info.durability
    );
    ensure!(
        info.snapshot.enable && (info.snapshot.factor - 2.0).abs() < 1e-6,
        "{:?}",
        info.snapshot
    );
    for o in [
        "performance.quick-read off",
        "performance.stat-prefetch off",
    ] {
        ensure!(
            info.glustervolumeoptions.iter().any(|x| x == o),
            "{o} missing from {:?}",
            info.glustervolumeoptions
        );
    }
    let got = tb
        .gluster(0, &["volume", "get", &info.name, "performance.quick-read"])
        .await?;
    ensure!(
        got.lines()
            .any(|l| l.contains("performance.quick-read") && l.contains("off")),
        "gluster volume get:\n{got}"
    );
    ensure!(
        ctx(&v, "gid")? == info.gid.to_string(),
        "volume_context gid {:?}",
        v.volume_context
    );
    // The class named the default backend's URL: the id names the backend (`default`), not
    // the URL, with the tag of the volume's cluster.
    let parsed = VolumeId::parse(&v.volume_id).context("the id does not parse")?;
    ensure!(
        parsed.backend == BackendRef::Named("default".into()),
        "id {} does not name the default backend",
        v.volume_id
    );
    ensure!(
        parsed.cluster.as_deref() == info.cluster.get(..8),
        "id {} does not carry the tag of cluster {}",
        v.volume_id,
        info.cluster
    );
    delete(&mut c, &v.volume_id).await?;

    // The CSI secret is preferred over restuserkey: a right secret wins over a wrong class key.
    let name = csi_name("secretwins");
    let mut req = create_req(&name, 1, &[("restuserkey", "wrong-key")]);
    req.secrets = map(&[("key", env.heketi_key.as_str()), ("user", "admin")]);
    let v = create(&mut c, req).await?;
    delete(&mut c, &v.volume_id).await?;
    Ok(())
}

async fn invalid_requests_create_nothing(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let name = csi_name("invalid");
    let long_url = format!("http://{}.example:8080", "h".repeat(80));
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("colour", "blue")],
            &["colour", "unknown StorageClass parameter"],
        ),
        (&[("resturl", "heketi:8080")], &["resturl", "http://"]),
        (&[("resturl", long_url.as_str())], &["resturl", "too long"]),
        (&[("restauthenabled", "maybe")], &["restauthenabled"]),
        (&[("secretName", "s")], &["secretName and secretNamespace"]),
        (&[("clusterid", "nope")], &["clusterid", "32 hexadecimal"]),
        (&[("gidMin", "100")], &["gidMin", "2000"]),
        (&[("gidMax", "x")], &["gidMax", "whole number"]),
        (
            &[("gidMin", "3000"), ("gidMax", "2500")],
            &["gidMin (3000) is greater than gidMax (2500)"],
        ),
        (
            &[("volumetype", "replicate:5")],
            &["volumetype", "1, 2 or 3"],
        ),
        (&[("volumetype", "disperse:3:1")], &["volumetype", "8:4"]),
        (&[("volumetype", "stripe")], &["volumetype"]),
        (
            &[("volumeoptions", "nfs.disable")],
            &["volumeoptions", "<option> <value>"],
        ),
        (
            &[("volumeoptions", "auth.allow 1.2.3.4;reboot")],
            &["volumeoptions", "';'"],
        ),
        (&[("volumenameprefix", "a_b")], &["volumenameprefix", "'_'"]),
        (&[("snapfactor", "500")], &["snapfactor", "1 to 100"]),
        (
            &[("customepnameprefix", "abcdefghijklmnopqrstuvwxyz0")],
            &["customepnameprefix", "26"],
        ),
    ];
    for (params, words) in cases {
        let r = create_once(&mut c, create_req(&name, 1, params)).await;
        let s = assert_code(r, Code::InvalidArgument, &format!("{params:?}"))?;
        for w in *words {
            ensure!(
                s.message().contains(w),
                "{params:?}: {:?} lacks {w:?}",
                s.message()
            );
        }
    }

    // An in-tree style Secret with no Kubernetes API to read it from: the deployment, not the
    // class, is at fault.
    let r = create_once(
        &mut c,
        create_req(&name, 1, &[("secretName", "s"), ("secretNamespace", "n")]),
    )
    .await;
    let s = assert_code(r, Code::FailedPrecondition, "secretName without an API")?;
    ensure!(s.message().contains("n/s"), "{:?}", s.message());

    // Request fields.
    let mut no_name = create_req("", 1, &[]);
    no_name.name.clear();
    let s = assert_code(
        create_once(&mut c, no_name).await,
        Code::InvalidArgument,
        "no name",
    )?;
    ensure!(s.message().contains("name"), "{s:?}");
    let mut no_caps = create_req(&name, 1, &[]);
    no_caps.volume_capabilities.clear();
    let s = assert_code(
        create_once(&mut c, no_caps).await,
        Code::InvalidArgument,
        "no caps",
    )?;
    ensure!(s.message().contains("volume_capabilities"), "{s:?}");
    let mut block = create_req(&name, 1, &[]);
    block.volume_capabilities = vec![block_cap()];
    let s = assert_code(
        create_once(&mut c, block).await,
        Code::InvalidArgument,
        "block",
    )?;
    ensure!(s.message().contains("block"), "{s:?}");
    let mut odd = create_req(&name, 1, &[]);
    odd.capacity_range = Some(CapacityRange {
        required_bytes: GIB + 1,
        limit_bytes: 2 * GIB - 1,
    });
    let s = assert_code(
        create_once(&mut c, odd).await,
        Code::OutOfRange,
        "no whole GiB fits",
    )?;
    ensure!(s.message().contains("GiB"), "{s:?}");
    for snapshot_id in ["snap-1", "s1:0123456789abcdef0123456789abcdef"] {
        let mut snap = create_req(&name, 1, &[]);
        snap.volume_content_source = Some(VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource {
                snapshot_id: snapshot_id.into(),
            })),
        });
        assert_code(
            create_once(&mut c, snap).await,
            Code::NotFound,
            &format!("restore of snapshot {snapshot_id}"),
        )?;
    }
    for src in [
        "fake-vol-id-xxxxxxxxxx",
        "1:0123456789abcdef0123456789abcdef",
    ] {
        let mut clone = create_req(&name, 1, &[]);
        clone.volume_content_source = Some(VolumeContentSource {
            r#type: Some(SourceType::Volume(VolumeSource {
                volume_id: src.into(),
            })),
        });
        assert_code(
            create_once(&mut c, clone).await,
            Code::NotFound,
            &format!("clone of {src}"),
        )?;
    }

    // Credentials Heketi refuses.
    let mut wrong = create_req(&name, 1, &[]);
    wrong.secrets = map(&[("key", "not-the-key")]);
    let s = assert_code(
        create_once(&mut c, wrong).await,
        Code::Unauthenticated,
        "wrong key",
    )?;
    ensure!(s.message().contains("secret"), "{s:?}");
    let no_auth = create_req(&name, 1, &[("restauthenabled", "false")]);
    assert_code(
        create_once(&mut c, no_auth).await,
        Code::Unauthenticated,
        "restauthenabled=false against a Heketi with auth",
    )?;
    let mut no_key = create_req(&name, 1, &[]);
    no_key.secrets = map(&[("password", "x")]);
    let s = assert_code(
        create_once(&mut c, no_key).await,
        Code::InvalidArgument,
        "secret without key",
    )?;
    ensure!(s.message().contains("`key`"), "{s:?}");

    // Nothing of this name was made.
    let h = tb.heketi_client()?;
    for id in h.volume_list().await?.volumes {
        if let Ok(v) = h.volume_info(&id).await {
            ensure!(
                !v.name.ends_with(&heketi_suffix(&name)),
                "a rejected request left volume {} behind",
                v.name
            );
        }
    }
    Ok(())
}

/// The end of every Heketi name the controller derives from `csi_name` (any prefix).
fn heketi_suffix(csi_name: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(csi_name.as_bytes()));
    format!("csi_{}", &hash[..20])
}

async fn same_name_is_idempotent(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let name = csi_name("idem");
    let first = create(&mut c, create_req(&name, 2, &[])).await?;
    ensure!(first.capacity_bytes == 2 * GIB);
    let vol = ctx(&first, "glusterVolume")?.to_owned();
    ensure!(vol.ends_with(&heketi_suffix(&name)), "{vol}");

    let again = create(&mut c, create_req(&name, 2, &[])).await?;
    ensure!(again.volume_id == first.volume_id, "{again:?} vs {first:?}");
    let mut smaller = create_req(&name, 1, &[]);
    smaller.capacity_range = Some(CapacityRange {
        required_bytes: GIB,
        limit_bytes: 2 * GIB,
    });
    let s = create(&mut c, smaller).await?;
    ensure!(
        s.volume_id == first.volume_id && s.capacity_bytes == 2 * GIB,
        "{s:?}"
    );

    let mut bigger = create_req(&name, 3, &[]);
    bigger.capacity_range = Some(CapacityRange {
        required_bytes: 3 * GIB,
        limit_bytes: 3 * GIB,
    });
    assert_code(
        create_once(&mut c, bigger).await,
        Code::AlreadyExists,
        "bigger",
    )?;
    let mut capped = create_req(&name, 1, &[]);
    capped.capacity_range = Some(CapacityRange {
        required_bytes: GIB,
        limit_bytes: GIB,
    });
    assert_code(
        create_once(&mut c, capped).await,
        Code::AlreadyExists,
        "limit below size",
    )?;
    let other_type = create_req(&name, 2, &[("volumetype", "none")]);
    let s = assert_code(
        create_once(&mut c, other_type).await,
        Code::AlreadyExists,
        "other type",
    )?;
    ensure!(s.message().contains(&name), "{s:?}");
    ensure!(
        heketi_count_named(&tb, &vol).await? == 1,
        "more than one Heketi volume named {vol}"
    );
    delete(&mut c, &first.volume_id).await?;
    ensure!(
        heketi_count_named(&tb, &vol).await? == 0,
        "{vol} left behind"
    );
    Ok(())
}

async fn eight_concurrent_creates(tb: Arc<Testbed>) -> Result<()> {
    let name = csi_name("eight");
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = controller(&tb).await?;
        let req = create_req(&name, 1, &[]);
        calls.push(tokio::spawn(async move { create_once(&mut c, req).await }));
    }
    let mut ids = HashSet::new();
    let mut aborted = 0;
    for call in calls {
        match call.await? {
            Ok(v) => {
                ids.insert(v.volume_id);
            }
            Err(s) if s.code() == Code::Aborted => aborted += 1,
            Err(s) => bail!("concurrent CreateVolume: {s:?}"),
        }
    }
    ensure!(ids.len() <= 1, "different ids for one name: {ids:?}");
    // The calls that were turned away get the same volume when they retry.
    let mut c = controller(&tb).await?;
    let v = create(&mut c, create_req(&name, 1, &[])).await?;
    ensure!(
        ids.is_empty() || ids.contains(&v.volume_id),
        "retry gave {} but the first calls gave {ids:?}",
        v.volume_id
    );
    ensure!(
        aborted >= 1 || ids.len() == 1,
        "eight calls, none succeeded or was aborted"
    );
    let vol = ctx(&v, "glusterVolume")?.to_owned();
    ensure!(
        heketi_count_named(&tb, &vol).await? == 1,
        "eight concurrent creates made more than one Heketi volume named {vol}"
    );
    delete(&mut c, &v.volume_id).await?;
    Ok(())
}

async fn timed_out_create_is_found(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let name = csi_name("timeout");
    let mut req = tonic::Request::new(create_req(&name, 1, &[]));
    req.set_timeout(Duration::from_millis(200));
    match c.create_volume(req).await {
        Err(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {}
        other => bail!(
            "a 200 ms CreateVolume should time out: {:?}",
            other.map(|_| ())
        ),
    }
    let v = create(&mut c, create_req(&name, 1, &[])).await?;
    let vol = ctx(&v, "glusterVolume")?.to_owned();
    ensure!(
        heketi_count_named(&tb, &vol).await? == 1,
        "the timed-out call and its retry made more than one volume"
    );
    delete(&mut c, &v.volume_id).await?;
    Ok(())
}

async fn retried_create_after_restart(tb: Arc<Testbed>) -> Result<()> {
    let mut own = OwnController::start(&tb, "restart", true).await?;
    let name = csi_name("restart");
    let mut c = own.client().await?;
    let v = create(&mut c, create_req(&name, 1, &[])).await?;
    own.restart().await?;
    let mut c = own.client().await?;
    let again = create(&mut c, create_req(&name, 1, &[])).await?;
    ensure!(again.volume_id == v.volume_id, "{again:?} vs {v:?}");
    let vol = ctx(&v, "glusterVolume")?.to_owned();
    ensure!(heketi_count_named(&tb, &vol).await? == 1);

    // A restart while the create is still running in Heketi.
    let name2 = csi_name("restart-mid");
    let mut req = tonic::Request::new(create_req(&name2, 1, &[]));
    req.set_timeout(Duration::from_millis(300));
    let _ = c.create_volume(req).await;
    own.restart().await?;
    let mut c = own.client().await?;
    let v2 = create(&mut c, create_req(&name2, 1, &[])).await?;
    let vol2 = ctx(&v2, "glusterVolume")?.to_owned();
    ensure!(
        heketi_count_named(&tb, &vol2).await? == 1,
        "a create interrupted by a restart and its retry made more than one volume"
    );
    delete(&mut c, &v.volume_id).await?;
    delete(&mut c, &v2.volume_id).await?;
    Ok(())
}

async fn resturl_volume_works_from_its_id(tb: Arc<Testbed>) -> Result<()> {
    // No default backend: everything comes from the class, then from the id.
    let mut own = OwnController::start(&tb, "resturl", false).await?;
    let mut c = own.client().await?;
    let env = tb.env();
    let secrets = map(&[("key", env.heketi_key.as_str())]);

    let mut no_url = create_req(&csi_name("nourl"), 1, &[]);
    no_url.secrets = secrets.clone();
    let s = assert_code(
        create_once(&mut c, no_url).await,
        Code::InvalidArgument,
        "no resturl",
    )?;
    ensure!(s.message().contains("resturl"), "{s:?}");

    let name = csi_name("resturl");
    let mut req = create_req(&name, 1, &[("resturl", env.heketi_url.as_str())]);
    req.secrets = secrets.clone();
    let v = create(&mut c, req).await?;
    ensure!(v.volume_id.len() <= 128, "{}", v.volume_id);
    let parsed = VolumeId::parse(&v.volume_id).context("the id does not parse")?;
    ensure!(
        parsed.backend == BackendRef::Url(env.heketi_url.clone()),
        "the id must name the backend: {}",
        v.volume_id
    );
    // A new process knows nothing but the id and the request's secrets.
    own.restart().await?;
    let mut c = own.client().await?;
    let validated = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: v.volume_id.clone(),
            volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter)],
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(validated.confirmed.is_some(), "{validated:?}");
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            secrets: secrets.clone(),
            volume_capability: None,
        })
        .await?
        .into_inner();
    ensure!(grown.capacity_bytes == 2 * GIB, "{grown:?}");
    // A call without secrets has nothing to authenticate with: the URL is no configured
    // backend, and nothing is remembered from the calls before, so it is refused.
    let s = assert_code(
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await,
        Code::InvalidArgument,
        "ControllerGetVolume of a URL id without secrets",
    )?;
    ensure!(s.message().contains("backends file"), "{s:?}");
    // ListVolumes covers the default backend only; there is none.
    let list = c
        .list_volumes(ListVolumesRequest::default())
        .await?
        .into_inner();
    ensure!(list.entries.is_empty(), "{} entries", list.entries.len());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets,
    })
    .await?;
    let vol = ctx(&v, "glusterVolume")?.to_owned();
    ensure!(
        heketi_count_named(&tb, &vol).await? == 0,
        "{vol} left behind"
    );
    Ok(())
}

async fn clone_holds_the_source_data(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let src = create(&mut c, create_req(&csi_name("clone-src"), 1, &[])).await?;
    let mp = mount(&tb, &src, "clone-src").await?;
    let big = pattern(3 << 20, 1);
    let written = std::fs::create_dir_all(mp.join("dir"))
        .context("mkdir")
        .and_then(|()| std::fs::write(mp.join("dir/big"), &big).context("big"))
        .and_then(|()| std::fs::write(mp.join("small"), b"hello clone\n").context("small"));
    tb.unmount(&mp).await?;
    written.context("writing to the source volume")?;

    let source = VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: src.volume_id.clone(),
        })),
    };
    let name = csi_name("clone");
    let mut req = create_req(&name, 2, &[]);
    req.volume_content_source = Some(source.clone());
    let clone = create(&mut c, req.clone()).await?;
    ensure!(clone.capacity_bytes == 2 * GIB, "{clone:?}");
    ensure!(
        clone.content_source == Some(source),
        "content_source not echoed"
    );
    ensure!(clone.volume_id != src.volume_id);
    let again = create(&mut c, req).await?;
    ensure!(
        again.volume_id == clone.volume_id,
        "clone retry gave another volume"
    );

    let mp = mount(&tb, &clone, "clone").await?;
    let got =
        std::fs::read(mp.join("dir/big")).and_then(|b| Ok((b, std::fs::read(mp.join("small"))?)));
    let total = df_total(&mp).await;
    tb.unmount(&mp).await?;
    let (got_big, got_small) = got.context("reading the clone")?;
    let total = total?;
    ensure!(got_big == big, "the clone's big file differs");
    ensure!(
        got_small == b"hello clone\n",
        "the clone's small file differs"
    );
    ensure!(
        total > (GIB as u64) && total <= 2 * GIB as u64,
        "df of the clone shows {total} bytes, 2 GiB expected"
    );

    // The clone is independent: deleting the source keeps it.
    delete(&mut c, &src.volume_id).await?;
    let h = tb.heketi_client()?;
    h.volume_info(&heketi_id(&clone)?).await?;
    delete(&mut c, &clone.volume_id).await?;
    Ok(())
}

async fn expand_is_visible_in_df(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let v = create(&mut c, create_req(&csi_name("expand"), 1, &[])).await?;
    let mp = mount(&tb, &v, "expand").await?;
    let before = df_total(&mp).await?;
    ensure!(
        before > (GIB as u64) / 2 && before <= GIB as u64,
        "df shows {before} bytes for a 1 GiB volume"
    );
    let expand = |gib_bytes: i64| ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: gib_bytes,
            limit_bytes: 0,
        }),
        secrets: HashMap::new(),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter)),
    };
    // 2.5 GiB rounds up to 3.
    let r = c
        .controller_expand_volume(expand(5 * GIB / 2))
        .await?
        .into_inner();
    ensure!(
        r.capacity_bytes == 3 * GIB && !r.node_expansion_required,
        "{r:?}"
    );
    let h = tb.heketi_client()?;
    ensure!(h.volume_info(&heketi_id(&v)?).await?.size == 3);
    // The mounted file system grows without a remount.
    let until = tokio::time::Instant::now() + STEP;
    let mut after = df_total(&mp).await?;
    while after <= 2 * GIB as u64 && tokio::time::Instant::now() < until {
        tokio::time::sleep(RETRY_PAUSE).await;
        after = df_total(&mp).await?;
    }
    tb.unmount(&mp).await?;
    ensure!(
        after > 2 * GIB as u64 && after <= 3 * GIB as u64,
        "df shows {after} bytes after expanding to 3 GiB"
    );
    // Smaller than it is: success without a change.
    let r = c
        .controller_expand_volume(expand(2 * GIB))
        .await?
        .into_inner();
    ensure!(r.capacity_bytes == 3 * GIB, "{r:?}");
    ensure!(h.volume_info(&heketi_id(&v)?).await?.size == 3);
    // Errors.
    let mut bad = expand(GIB);
    bad.capacity_range = None;
    assert_code(
        c.controller_expand_volume(bad).await,
        Code::InvalidArgument,
        "no capacity_range",
    )?;
    let mut unknown = expand(GIB);
    unknown.volume_id = "fake-vol-id-xxxxxxxxxx".into();
    assert_code(
        c.controller_expand_volume(unknown).await,
        Code::NotFound,
        "expand of a fake id",
    )?;
    delete(&mut c, &v.volume_id).await?;
    Ok(())
}

async fn list_volumes_paging(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let h = tb.heketi_client()?;
    // A volume this driver did not make is never listed.
    let foreign = h
        .volume_create(&VolumeCreateRequest {
            size: 1,
            name: format!("foreign_{}", std::process::id()),
            durability: VolumeDurabilityInfo::none(),
            ..Default::default()
        })
        .await?;

    let mut ours: Vec<Volume> = Vec::new();
    for i in 0..25 {
        ours.push(
            create(
                &mut c,
                create_req(&csi_name(&format!("list{i:02}")), 1, &[]),
            )
            .await?,
        );
    }
    // Sorted the way pages are cut (by Heketi id).
    ours.sort_by_key(|v| heketi_id(v).unwrap_or_default());

    let page = |token: String| ListVolumesRequest {
        max_entries: 7,
        starting_token: token,
    };
    let mut seen: Vec<String> = Vec::new();
    let mut deleted: HashSet<String> = HashSet::new();
    let mut added: Vec<Volume> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c.list_volumes(page(token.clone())).await?.into_inner();
        ensure!(r.entries.len() <= 7, "page of {}", r.entries.len());
        pages += 1;
        for e in &r.entries {
            let v = e.volume.as_ref().context("entry without volume")?;
            ensure!(v.capacity_bytes >= GIB, "{v:?}");
            ensure!(
                v.volume_context.get("heketiVolumeId") != Some(&foreign.id),
                "a foreign volume is listed"
            );
            seen.push(v.volume_id.clone());
        }
        if r.next_token.is_empty() {
            break;
        }
        ensure!(pages < 100, "paging does not end");
        token = r.next_token;
        if pages == 1 {
            // Between pages: delete the last of ours (not seen yet) and make two new ones.
            let last = ours.last().context("no volumes")?.volume_id.clone();
            delete(&mut c, &last).await?;
            deleted.insert(last);
            for i in 0..2 {
                added.push(
                    create(
                        &mut c,
                        create_req(&csi_name(&format!("listnew{i}")), 1, &[]),
                    )
                    .await?,
                );
            }
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    ensure!(unique.len() == seen.len(), "a volume was listed twice");
    for v in &ours {
        let listed = seen.contains(&v.volume_id);
        if deleted.contains(&v.volume_id) {
            ensure!(!listed, "a volume deleted before its page was listed");
        } else {
            ensure!(listed, "volume {} was skipped", v.volume_id);
        }
    }
    ensure!(pages >= 4, "25 volumes in pages of 7 took {pages} pages");

    // Everything on one page with max_entries 0; an unknown token is ABORTED.
    let all = c
        .list_volumes(ListVolumesRequest::default())
        .await?
        .into_inner();
    ensure!(all.next_token.is_empty());
    let all: HashSet<String> = all
        .entries
        .into_iter()
        .filter_map(|e| e.volume.map(|v| v.volume_id))
        .collect();
    for v in ours.iter().chain(&added) {
        ensure!(
            all.contains(&v.volume_id) != deleted.contains(&v.volume_id),
            "full listing is wrong about {}",
            v.volume_id
        );
    }
    assert_code(
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "invalid-token".into(),
        })
        .await,
        Code::Aborted,
        "invalid token",
    )?;

    for v in ours.iter().chain(&added) {
        delete(&mut c, &v.volume_id).await?;
    }
    h.volume_delete(&foreign.id).await?;
    Ok(())
}

async fn gid_is_lowest_free(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let class = [("gidMin", "60000"), ("gidMax", "60002")];
    let mk = |n: &str| create_req(&csi_name(&format!("gid-{n}")), 1, &class);
    let gid = |v: &Volume| -> Result<u32> { Ok(ctx(v, "gid")?.parse()?) };
    let a = create(&mut c, mk("a")).await?;
    let b = create(&mut c, mk("b")).await?;
    ensure!((gid(&a)?, gid(&b)?) == (60000, 60001), "{a:?} {b:?}");
    // The volume root belongs to the group, and Heketi records the gid.
    let mp = mount(&tb, &a, "gid-a").await?;
    let root_gid = std::fs::metadata(&mp)?.gid();
    tb.unmount(&mp).await?;
    ensure!(root_gid == 60000, "volume root group {root_gid}");
    let h = tb.heketi_client()?;
    ensure!(h.volume_info(&heketi_id(&b)?).await?.gid == 60001);

    delete(&mut c, &a.volume_id).await?;
    let c2 = create(&mut c, mk("c")).await?;
    ensure!(gid(&c2)? == 60000, "freed gid not reused: {c2:?}");
    let d = create(&mut c, mk("d")).await?;
    ensure!(gid(&d)? == 60002, "{d:?}");
    let s = assert_code(
        create_once(&mut c, mk("e")).await,
        Code::ResourceExhausted,
        "range used up",
    )?;
    ensure!(s.message().contains("gidMin"), "{s:?}");
    for v in [&b, &c2, &d] {
        delete(&mut c, &v.volume_id).await?;
    }
    Ok(())
}

/// The first create's gid must not be handed out while Heketi may still make its volume:
/// a controller whose operation timeout (1 s) is far shorter than a create at heketi-server
/// (about 5 s) gives up on it while Heketi goes on, and a second create of another name in
/// the same class comes next. Each is then retried until it succeeds, as the sidecar would.
async fn timed_out_create_keeps_its_gid(tb: Arc<Testbed>) -> Result<()> {
    let own = OwnController::start_with(
        &tb,
        "gid-timeout",
        true,
        &["--heketi-operation-timeout".to_owned(), "1".to_owned()],
    )
    .await?;
    let mut c = own.client().await?;
    let class = [("gidMin", "61000"), ("gidMax", "61009")];
    let (name_a, name_b) = (csi_name("gid-timeout-a"), csi_name("gid-timeout-b"));
    let started = std::time::Instant::now();
    let first = create_once(&mut c, create_req(&name_a, 1, &class)).await;
    let a_gave_up = started.elapsed();
    let s = match first {
        Ok(v) => bail!("the first create finished within the 1 s operation timeout: {v:?}"),
        Err(s) => s,
    };
    ensure!(
        matches!(s.code(), Code::DeadlineExceeded | Code::Unavailable),
        "the first create: {s:?}"
    );
    // Heketi lists a volume once it is complete: A must not be listed yet, or this trial would
    // not show anything.
    let a_heketi_name = heketi_name(&name_a);
    ensure!(
        heketi_count_named(&tb, &a_heketi_name).await? == 0,
        "heketi-server finished the first create before the second started"
    );
    let b = retry_create(&mut c, create_req(&name_b, 1, &class)).await?;
    let a_listed_after_b = heketi_count_named(&tb, &a_heketi_name).await?;
    let a = retry_create(&mut c, create_req(&name_a, 1, &class)).await?;
    let gid = |v: &Volume| -> Result<u32> { Ok(ctx(v, "gid")?.parse()?) };
    let (ga, gb) = (gid(&a)?, gid(&b)?);
    ensure!(ga != gb, "both volumes got gid {ga}");
    let h = tb.heketi_client()?;
    for (v, g) in [(&a, ga), (&b, gb)] {
        let recorded = h.volume_info(&heketi_id(v)?).await?.gid;
        ensure!(
            recorded == i64::from(g),
            "Heketi records gid {recorded}, the PV {g}"
        );
        ensure!(
            (61000..=61009).contains(&g),
            "gid {g} outside the class range"
        );
    }
    ensure!(
        heketi_count_named(&tb, &a_heketi_name).await? == 1,
        "the first create and its retries made more than one volume"
    );
    println!(
        "gid: create A gave up after {} ms ({:?}) while heketi-server went on; create B got gid \
         {gb}, A finished with gid {ga} (A listed when B was done: {})",
        a_gave_up.as_millis(),
        s.code(),
        a_listed_after_b == 1
    );
    let mut c = controller(&tb).await?;
    delete(&mut c, &a.volume_id).await?;
    delete(&mut c, &b.volume_id).await?;
    Ok(())
}

/// The Heketi volume name the controller derives from `csi_name` (no prefix).
fn heketi_name(csi_name: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(csi_name.as_bytes()));
    format!("csi_{}", &hash[..20])
}

/// CreateVolume until it succeeds, retrying the codes a sidecar retries, within [`STEP`].
async fn retry_create(c: &mut Client, req: CreateVolumeRequest) -> Result<Volume> {
    let until = tokio::time::Instant::now() + STEP;
    loop {
        match create_once(c, req.clone()).await {
            Ok(v) => return Ok(v),
            Err(s)
                if matches!(
                    s.code(),
                    Code::Aborted | Code::DeadlineExceeded | Code::Unavailable
                ) && tokio::time::Instant::now() < until =>
            {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(s) => bail!("CreateVolume {}: {s:?}", req.name),
        }
    }
}

/// A second heketi-server of the trial's own, with an empty state (no clusters) and the
/// testbed's admin key; killed when dropped.
struct EmptyHeketi {
    _child: tokio::process::Child,
    url: String,
}

impl EmptyHeketi {
    async fn start(tb: &Testbed, name: &str) -> Result<Self> {
        let dir = tb.scratch_dir(name)?;
        let port = {
            let l = std::net::TcpListener::bind((tb.bridge_address(), 0))?;
            l.local_addr()?.port()
        };
        let listen = format!("{}:{port}", tb.bridge_address());
        let log = dir.join("heketi-server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = tokio::process::Command::new(bin_path("heketi-server")?)
            .arg("--listen")
            .arg(&listen)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--admin-key-file")
            .arg(&tb.env().heketi_key_file)
            // It never reaches Gluster: it has no nodes.
            .arg("--gluster-cmd=false")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting a second heketi-server")?;
        let url = format!("http://{listen}");
        let hello = heketi_client::Client::builder(&url)
            .disable_auth()
            .build()?;
        let t = std::time::Instant::now();
        loop {
            if hello.hello().await.is_ok() {
                return Ok(Self { _child: child, url });
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the second heketi-server exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "the second heketi-server did not answer /hello"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A local HTTP server answering 404 to every request: what a wrong Service or a proxy in
/// front of nothing gives. A stub on purpose: this is the boundary case of a URL that is no
/// Heketi at all, which no real heketi-server can play.
async fn answers_404_to_everything(tb: &Testbed) -> Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((tb.bridge_address(), 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "404 page not found";
                let reply = format!(
                    "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok((url, task))
}

/// DeleteVolume of a volume that is not there: OK from the testbed's heketi-server (it has a
/// cluster, and the volume's cluster when the id names it); INTERNAL naming the URL from a
/// heketi-server without clusters, from a URL that answers 404 to everything, and for an id
/// whose cluster the heketi-server does not have. Nothing is deleted in any case.
async fn delete_404_needs_the_volumes_heketi(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let env = tb.env();
    let secrets = map(&[("key", env.heketi_key.as_str())]);
    let h = tb.heketi_client()?;
    let cluster = first_cluster(&h).await?;
    let missing = hex::encode(rand::random::<[u8; 16]>());
    let delete_id = |c: &mut Client, volume_id: String| {
        let mut c = c.clone();
        let secrets = secrets.clone();
        async move {
            tokio::time::timeout(
                STEP,
                c.delete_volume(DeleteVolumeRequest { volume_id, secrets }),
            )
            .await
            .map_err(|_| Status::deadline_exceeded("the test's step limit passed"))?
            .map(|_| ())
        }
    };

    // The testbed's heketi-server, which has a cluster: the volume is gone.
    let old_id = VolumeId::new(BackendRef::Default, &missing);
    let tagged = old_id.clone().in_cluster(&cluster);
    for id in [&old_id, &tagged] {
        let encoded = id.encode()?;
        delete_id(&mut c, encoded.clone()).await.map_err(|s| {
            anyhow::anyhow!("DeleteVolume {encoded} on the testbed's heketi-server: {s:?}")
        })?;
    }
    // The same heketi-server, an id naming a cluster it does not have.
    let foreign = old_id.clone().in_cluster("0badc0de00000000000000000000000");
    let s = assert_code(
        delete_id(&mut c, foreign.encode()?).await,
        Code::Internal,
        "an id of another Heketi's cluster",
    )?;
    ensure!(
        s.message().contains(&env.heketi_url) && s.message().contains("0badc0de"),
        "{s:?}"
    );

    // A real heketi-server with no clusters (e.g. its state was emptied).
    let empty = EmptyHeketi::start(&tb, "delete-empty-heketi").await?;
    let on_empty = VolumeId::new(BackendRef::Url(empty.url.clone()), &missing).encode()?;
    let s = assert_code(
        delete_id(&mut c, on_empty).await,
        Code::Internal,
        "a heketi-server without clusters",
    )?;
    ensure!(
        s.message().contains(&empty.url) && s.message().contains("no clusters"),
        "{s:?}"
    );

    // A URL that is no Heketi at all.
    let (stub, _task) = answers_404_to_everything(&tb).await?;
    let on_stub = VolumeId::new(BackendRef::Url(stub.clone()), &missing).encode()?;
    let s = assert_code(
        delete_id(&mut c, on_stub).await,
        Code::Internal,
        "a URL answering 404 to everything",
    )?;
    ensure!(
        s.message().contains(&stub) && s.message().contains("not a Heketi API"),
        "{s:?}"
    );
    println!(
        "delete: missing volume on the testbed heketi-server (cluster {}…) OK, old and tagged \
         ids; foreign cluster tag, empty heketi-server {}, 404 stub {}: INTERNAL naming the URL",
        &cluster[..8],
        empty.url,
        stub
    );
    Ok(())
}

async fn heketi_unreachable_is_unavailable(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    // A port on the bridge address with nothing listening.
    let l = std::net::TcpListener::bind((tb.bridge_address(), 0))?;
    let url = format!("http://{}", l.local_addr()?);
    drop(l);
    // A resturl of no configured backend is used only with the class's own credentials.
    let mut req = create_req(&csi_name("down"), 1, &[("resturl", url.as_str())]);
    req.secrets = map(&[("key", tb.env().heketi_key.as_str())]);
    let s = assert_code(
        create_once(&mut c, req).await,
        Code::Unavailable,
        "Heketi down",
    )?;
    ensure!(s.message().contains(&url), "{s:?}");
    let caps = c
        .get_capacity(GetCapacityRequest {
            parameters: map(&[
                ("resturl", url.as_str()),
                ("restuserkey", tb.env().heketi_key.as_str()),
            ]),
            ..Default::default()
        })
        .await;
    assert_code(caps, Code::Unavailable, "GetCapacity with Heketi down")?;
    Ok(())
}

async fn no_secret_in_logs(tb: Arc<Testbed>) -> Result<()> {
    let canary = format!("canary-secret-{}", std::process::id());
    let own = OwnController::start(&tb, "secrets", true).await?;
    let mut c = own.client().await?;
    let key = tb.env().heketi_key.clone();
    // Successes and failures that carry secrets, in every place a secret can be.
    let mut req = create_req(&csi_name("secret"), 1, &[]);
    req.secrets = map(&[("key", key.as_str()), ("user", "admin")]);
    let v = create(&mut c, req).await?;
    let mut bad = create_req(
        &csi_name("secret-bad"),
        1,
        &[("restuserkey", canary.as_str())],
    );
    bad.secrets.clear();
    let _ = create_once(&mut c, bad).await;
    let mut bad = create_req(&csi_name("secret-bad2"), 1, &[]);
    bad.secrets = map(&[("key", canary.as_str())]);
    let _ = create_once(&mut c, bad).await;
    c.controller_expand_volume(ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 2 * GIB,
            limit_bytes: 0,
        }),
        secrets: map(&[("key", key.as_str())]),
        volume_capability: None,
    })
    .await?;
    let _ = c
        .delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: map(&[("key", canary.as_str())]),
        })
        .await;
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: map(&[("key", key.as_str())]),
    })
    .await?;

    let own_log = std::fs::read_to_string(&own.log)?;
    ensure!(
        own_log.contains("volume created"),
        "the controller log is empty or not at the expected level:\n{own_log}"
    );
    let shared = tb.state_dir().join("logs").join("controller.log");
    let shared_log = std::fs::read_to_string(&shared).unwrap_or_default();
    for (name, text) in [("own", &own_log), ("shared", &shared_log)] {
        for secret in [key.as_str(), canary.as_str()] {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                bail!("the {name} controller log holds a secret: {line}");
            }
        }
    }
    Ok(())
}

/// `GET /metrics` over plain HTTP/1.1.
async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut body))
        .await
        .context("scrape hung")??;
    ensure!(body.starts_with("HTTP/1.1 200"), "{body}");
    Ok(body)
}

async fn metrics_count_calls(tb: Arc<Testbed>) -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    let own = OwnController::start_with(
        &tb,
        "metrics",
        true,
        &["--metrics-address".to_owned(), addr.to_string()],
    )
    .await?;
    let mut c = own.client().await?;
    let v = create(&mut c, create_req(&csi_name("metrics"), 1, &[])).await?;
    let bad = create_req(&csi_name("metrics-bad"), 1, &[("volumetype", "x")]);
    assert_code(
        create_once(&mut c, bad).await,
        Code::InvalidArgument,
        "bad type",
    )?;
    delete(&mut c, &v.volume_id).await?;
    let text = scrape(addr).await?;
    for want in [
        r#"gluster_csi_controller_rpc_calls_total{method="CreateVolume",code="OK"} 1"#,
        r#"gluster_csi_controller_rpc_calls_total{method="CreateVolume",code="INVALID_ARGUMENT"} 1"#,
        r#"gluster_csi_controller_rpc_calls_total{method="DeleteVolume",code="OK"} 1"#,
        r#"gluster_csi_controller_rpc_duration_seconds_count{method="CreateVolume",code="OK"} 1"#,
        r#"gluster_csi_controller_heketi_requests_total{operation="volume_create",outcome="ok"} 1"#,
        r#"gluster_csi_controller_heketi_requests_total{operation="volume_delete",outcome="ok"} 1"#,
        r#"gluster_csi_controller_heketi_request_duration_seconds_count{operation="volume_create",outcome="ok"} 1"#,
    ] {
        ensure!(
            text.contains(want),
            "{want} missing from the metrics:\n{text}"
        );
    }
    ensure!(
        !text.contains(&tb.env().heketi_key),
        "the metrics page holds the Heketi key"
    );

    // Heketi retries: a class whose Heketi refuses connections makes the client retry its
    // reads until the retry budget is spent; each retry is counted.
    let retries = r#"gluster_csi_controller_heketi_retries_total{method="GET",route="/clusters",reason="transport"}"#;
    let before = counter(&text, retries)?;
    let l = std::net::TcpListener::bind((tb.bridge_address(), 0))?;
    let url = format!("http://{}", l.local_addr()?);
    drop(l);
    // A resturl of no configured backend is asked only with the class's own key.
    let caps = c
        .get_capacity(GetCapacityRequest {
            parameters: map(&[
                ("resturl", url.as_str()),
                ("restuserkey", tb.env().heketi_key.as_str()),
            ]),
            ..Default::default()
        })
        .await;
    assert_code(caps, Code::Unavailable, "GetCapacity with Heketi down")?;
    let text = scrape(addr).await?;
    let after = counter(&text, retries)?;
    ensure!(
        after > before,
        "{retries} did not go up ({before} -> {after}):\n{text}"
    );
    let listed = r#"gluster_csi_controller_heketi_requests_total{operation="cluster_list",outcome="unavailable"} 1"#;
    ensure!(text.contains(listed), "{listed} missing:\n{text}");
    println!("metrics: refused Heketi -> {retries} {before} -> {after}");
    Ok(())
}

/// The value of the sample `series` (name and labels) on a metrics page; 0 when absent.
fn counter(page: &str, series: &str) -> Result<u64> {
    match page
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    {
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{series}: {v:?} is not a count")),
        None => Ok(0),
    }
}
