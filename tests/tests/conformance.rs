//! Our own CSI conformance suite: every requirement of csi-sanity (kubernetes-csi/csi-test) for
//! the capabilities the driver advertises, checked against the real controller and node plugin
//! of a testbed (heketi-server, three Gluster hosts, FUSE mounts).
//!
//! The requirements are those listed in `reference/csi-sanity.md` §5.2–5.3; each trial is named
//! after the behaviour it checks. Where csi-sanity is lenient (it skips pagination and accepts
//! NOT_FOUND from cleanup calls) this suite asks for what the driver promises instead: paging
//! that survives creates and deletes between pages, and OK from unpublish/unstage of paths that
//! were never mounted. csi-sanity itself runs with `tests/csi-sanity.sh`.
//!
//! Trials that create or delete volumes are exclusive (one at a time): ListVolumes counting
//! needs a controller whose volume set only that trial changes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::{self, rpc};
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability;
use csi_proto::v1::plugin_capability::{self, service, volume_expansion};
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
    ControllerGetVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    DeleteVolumeRequest, GetCapacityRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    ListSnapshotsRequest, ListVolumesRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest,
    NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest, Snapshot,
    ValidateVolumeCapabilitiesRequest, Volume, VolumeCapability, VolumeContentSource, volume_usage,
};
use gluster_csi_testbed::demo::mount_table;
use gluster_csi_testbed::{Testbed, TestbedOptions, harness};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const GIB: i64 = 1 << 30;
/// csi-sanity's id for a volume that does not exist; it does not parse as one of ours.
const FAKE_ID: &str = "fake-vol-id-xxxxxxxxxx";
/// Deadline of one CSI call, so a hung call fails its trial instead of hanging the run. Not an
/// assertion about speed.
const CALL_LIMIT: Duration = Duration::from_secs(180);
/// How many times csi-sanity repeats a call in its idempotency tests.
const REPEATS: usize = 10;

fn main() {
    let opts = TestbedOptions::new(harness::state_dir_for("conformance"));
    harness::run(opts, |tb| {
        use harness::{exclusive_trial as ex, trial as t};
        vec![
            // Identity.
            t(
                "identity_name_matches_the_sanity_pattern_and_is_the_same_on_both_endpoints",
                &tb,
                identity_name,
            ),
            t(
                "identity_capabilities_are_known_and_only_the_controller_offers_the_controller_service",
                &tb,
                identity_capabilities,
            ),
            t(
                "identity_probe_is_ready_on_both_endpoints",
                &tb,
                identity_probe,
            ),
            // Controller.
            t(
                "controller_capabilities_are_known_and_exactly_the_advertised_set",
                &tb,
                controller_capabilities,
            ),
            ex(
                "create_without_name_or_capabilities_is_invalid_argument",
                &tb,
                create_missing_fields,
            ),
            ex(
                "create_same_name_and_size_ten_times_returns_one_volume",
                &tb,
                create_idempotent,
            ),
            ex(
                "create_same_name_with_another_size_is_already_exists",
                &tb,
                create_other_size,
            ),
            ex("create_accepts_a_128_character_name", &tb, create_long_name),
            ex(
                "create_reports_exact_whole_gib_and_rounds_over_the_limit_to_out_of_range",
                &tb,
                create_sizes,
            ),
            ex(
                "delete_without_id_is_invalid_argument_and_unknown_or_deleted_ids_are_ok",
                &tb,
                delete_ids,
            ),
            ex(
                "validate_capabilities_confirms_mount_refuses_block_and_unknown_id_is_not_found",
                &tb,
                validate_capabilities,
            ),
            ex(
                "get_volume_returns_the_volume_and_unknown_id_is_not_found",
                &tb,
                get_volume,
            ),
            ex(
                "clone_from_a_volume_copies_its_data_and_an_unknown_source_is_not_found",
                &tb,
                clone_volume,
            ),
            ex(
                "expand_returns_exactly_the_requested_capacity_and_checks_its_fields",
                &tb,
                expand_volume,
            ),
            t(
                "list_volumes_with_an_invalid_token_is_aborted",
                &tb,
                list_invalid_token,
            ),
            ex(
                "list_volumes_count_goes_up_by_one_after_create_and_back_after_delete",
                &tb,
                list_counts,
            ),
            ex(
                "list_volumes_pages_survive_creates_and_deleting_the_last_volume_of_a_page",
                &tb,
                list_paging,
            ),
            // Snapshots.
            ex(
                "create_snapshot_checks_its_fields_is_idempotent_by_name_and_is_no_volume",
                &tb,
                snapshot_create,
            ),
            ex(
                "restore_holds_the_data_before_the_snapshot_and_not_after_even_once_the_source_is_gone",
                &tb,
                snapshot_restore,
            ),
            ex(
                "list_snapshots_filters_by_id_and_source_pages_and_delete_snapshot_is_idempotent",
                &tb,
                snapshot_list_and_delete,
            ),
            t(
                "get_capacity_with_an_empty_request_succeeds",
                &tb,
                get_capacity,
            ),
            // Node.
            t(
                "node_capabilities_are_known_and_exactly_the_advertised_set",
                &tb,
                node_capabilities,
            ),
            t(
                "node_get_info_returns_a_node_id_and_no_topology",
                &tb,
                node_info,
            ),
            t(
                "node_calls_with_missing_fields_are_invalid_argument",
                &tb,
                node_missing_fields,
            ),
            ex(
                "stage_and_publish_ten_times_give_one_mount_each_and_stats_work",
                &tb,
                node_idempotent,
            ),
            ex(
                "unpublish_removes_the_target_path_and_repeating_it_is_ok",
                &tb,
                unpublish_removes_target,
            ),
            ex(
                "single_node_single_writer_second_target_is_failed_precondition",
                &tb,
                single_writer,
            ),
            ex(
                "volume_stats_of_unknown_volume_or_wrong_path_are_not_found",
                &tb,
                stats_not_found,
            ),
            // Cleanup as csi-sanity does it.
            ex(
                "cleanup_unpublish_and_unstage_of_a_never_published_volume_then_delete_succeeds",
                &tb,
                cleanup_order,
            ),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Clients and helpers

async fn channel(endpoint: &str) -> Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .timeout(CALL_LIMIT)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

async fn controller(tb: &Testbed) -> Result<ControllerClient<Channel>> {
    Ok(ControllerClient::new(
        channel(&tb.env().controller_endpoint).await?,
    ))
}

async fn node(tb: &Testbed) -> Result<NodeClient<Channel>> {
    Ok(NodeClient::new(channel(&tb.env().node_endpoint).await?))
}

fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

fn block_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// A create request as csi-sanity sends it: mount access, SINGLE_NODE_WRITER, replicate:3.
fn create_req(name: &str, required: i64, limit: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
        parameters: HashMap::from([("volumetype".to_owned(), "replicate:3".to_owned())]),
        ..CreateVolumeRequest::default()
    }
}

async fn create(c: &mut ControllerClient<Channel>, req: CreateVolumeRequest) -> Result<Volume> {
    let name = req.name.clone();
    c.create_volume(req)
        .await
        .with_context(|| format!("CreateVolume {name}"))?
        .into_inner()
        .volume
        .with_context(|| format!("CreateVolume {name} answered without a volume"))
}

async fn delete(c: &mut ControllerClient<Channel>, id: &str) -> Result<()> {
    c.delete_volume(DeleteVolumeRequest {
        volume_id: id.to_owned(),
        secrets: HashMap::new(),
    })
    .await
    .with_context(|| format!("DeleteVolume {id}"))?;
    Ok(())
}

/// Fails unless `r` is an error with code `want`.
fn expect_code<T>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    want: Code,
) -> Result<()> {
    match r {
        Ok(_) => bail!("{what}: succeeded, {want:?} was expected"),
        Err(s) if s.code() == want => Ok(()),
        Err(s) => bail!(
            "{what}: {:?} {:?}, {want:?} was expected",
            s.code(),
            s.message()
        ),
    }
}

/// The Gluster volumes of the testbed.
async fn gluster_volumes(tb: &Testbed) -> Result<Vec<String>> {
    Ok(tb
        .gluster(0, &["volume", "list"])
        .await?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("No volumes"))
        .map(str::to_owned)
        .collect())
}

fn gluster_volume_of(v: &Volume) -> Result<&str> {
    v.volume_context
        .get("glusterVolume")
        .map(String::as_str)
        .context("the volume context has no glusterVolume")
}

/// Every volume id ListVolumes returns, page by page (`max` entries a page).
async fn list_all(c: &mut ControllerClient<Channel>, max: i32) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let page = c
            .list_volumes(ListVolumesRequest {
                max_entries: max,
                starting_token: token,
            })
            .await?
            .into_inner();
        ensure!(
            max == 0 || page.entries.len() <= usize::try_from(max)?,
            "a page of {} entries for max_entries {max}",
            page.entries.len()
        );
        ids.extend(
            page.entries
                .into_iter()
                .filter_map(|e| e.volume)
                .map(|v| v.volume_id),
        );
        if page.next_token.is_empty() {
            return Ok(ids);
        }
        token = page.next_token;
    }
    bail!("ListVolumes never ended")
}

/// Directories for the staging and target paths of one trial: the CO (csi-sanity, kubelet)
/// creates the staging directory and the target's parent; the driver creates the target.
struct NodePaths {
    staging: PathBuf,
    target: PathBuf,
    other_target: PathBuf,
}

impl NodePaths {
    fn new(tb: &Testbed, trial: &str) -> Result<Self> {
        let dir = tb.scratch_dir(&format!("conformance-{trial}"))?;
        let staging = dir.join("staging");
        std::fs::create_dir_all(&staging)?;
        std::fs::create_dir_all(dir.join("mount"))?;
        std::fs::create_dir_all(dir.join("mount2"))?;
        Ok(Self {
            staging,
            target: dir.join("mount/target"),
            other_target: dir.join("mount2/target"),
        })
    }
}

fn stage_req(v: &Volume, staging: &Path, cap: VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        volume_context: v.volume_context.clone(),
        ..NodeStageVolumeRequest::default()
    }
}

fn publish_req(
    v: &Volume,
    staging: &Path,
    target: &Path,
    cap: VolumeCapability,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        volume_context: v.volume_context.clone(),
        ..NodePublishVolumeRequest::default()
    }
}

async fn unpublish(n: &mut NodeClient<Channel>, id: &str, target: &Path) -> Result<()> {
    n.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: id.to_owned(),
        target_path: target.display().to_string(),
    })
    .await
    .with_context(|| format!("NodeUnpublishVolume {}", target.display()))?;
    Ok(())
}

async fn unstage(n: &mut NodeClient<Channel>, id: &str, staging: &Path) -> Result<()> {
    n.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .with_context(|| format!("NodeUnstageVolume {}", staging.display()))?;
    Ok(())
}

/// How many mounts sit exactly at `path`.
fn mounts_at(path: &Path) -> Result<usize> {
    Ok(mount_table()?.iter().filter(|m| m.path == path).count())
}

// ---------------------------------------------------------------------------------------------
// Identity

/// csi-sanity's pattern `^[a-zA-Z][A-Za-z0-9-\.\_]{0,61}[a-zA-Z]$`.
fn sanity_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=63).contains(&b.len())
        && b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.last().is_some_and(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

async fn identity_name(tb: Arc<Testbed>) -> Result<()> {
    ensure!(
        sanity_name_ok("gluster.heketi.csi") && !sanity_name_ok("a") && !sanity_name_ok("x.y1")
    );
    let mut names = Vec::new();
    for endpoint in [&tb.env().controller_endpoint, &tb.env().node_endpoint] {
        let mut i = IdentityClient::new(channel(endpoint).await?);
        let info = i
            .get_plugin_info(GetPluginInfoRequest {})
            .await?
            .into_inner();
        ensure!(
            sanity_name_ok(&info.name),
            "{endpoint}: name {:?}",
            info.name
        );
        ensure!(
            !info.vendor_version.is_empty(),
            "{endpoint}: no vendor_version"
        );
        names.push(info.name);
    }
    ensure!(
        names[0] == names[1],
        "controller {:?}, node {:?}",
        names[0],
        names[1]
    );
    Ok(())
}

async fn identity_capabilities(tb: Arc<Testbed>) -> Result<()> {
    for (endpoint, is_controller) in [
        (&tb.env().controller_endpoint, true),
        (&tb.env().node_endpoint, false),
    ] {
        let mut i = IdentityClient::new(channel(endpoint).await?);
        let caps = i
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await?
            .into_inner()
            .capabilities;
        let mut controller_service = false;
        let mut online_expansion = false;
        for cap in &caps {
            match &cap.r#type {
                Some(plugin_capability::Type::Service(s)) => {
                    let t = service::Type::try_from(s.r#type)
                        .ok()
                        .filter(|t| *t != service::Type::Unknown)
                        .with_context(|| {
                            format!("{endpoint}: unknown service type {}", s.r#type)
                        })?;
                    controller_service |= t == service::Type::ControllerService;
                }
                Some(plugin_capability::Type::VolumeExpansion(e)) => {
                    let t = volume_expansion::Type::try_from(e.r#type)
                        .ok()
                        .filter(|t| *t != volume_expansion::Type::Unknown)
                        .with_context(|| {
                            format!("{endpoint}: unknown expansion type {}", e.r#type)
                        })?;
                    online_expansion |= t == volume_expansion::Type::Online;
                }
                None => bail!("{endpoint}: a capability without a type"),
            }
        }
        ensure!(
            controller_service == is_controller,
            "{endpoint}: CONTROLLER_SERVICE advertised: {controller_service}"
        );
        if is_controller {
            ensure!(
                online_expansion,
                "the controller does not advertise ONLINE expansion"
            );
        }
    }
    Ok(())
}

async fn identity_probe(tb: Arc<Testbed>) -> Result<()> {
    for endpoint in [&tb.env().controller_endpoint, &tb.env().node_endpoint] {
        let mut i = IdentityClient::new(channel(endpoint).await?);
        let probe = i.probe(ProbeRequest {}).await?.into_inner();
        ensure!(probe.ready != Some(false), "{endpoint}: not ready");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Controller

async fn controller_capabilities(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let caps = c
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    let mut got = HashSet::new();
    for cap in caps {
        let Some(controller_service_capability::Type::Rpc(r)) = cap.r#type else {
            bail!("a capability without an RPC type");
        };
        let t = rpc::Type::try_from(r.r#type)
            .ok()
            .filter(|t| *t != rpc::Type::Unknown)
            .with_context(|| format!("unknown controller capability {}", r.r#type))?;
        ensure!(got.insert(t), "{t:?} advertised twice");
    }
    let want: HashSet<rpc::Type> = [
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
    .into();
    ensure!(got == want, "advertised {got:?}, expected {want:?}");
    Ok(())
}

async fn create_missing_fields(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let before = gluster_volumes(&tb).await?;
    let mut req = create_req("", GIB, 0);
    expect_code(
        "CreateVolume without a name",
        c.create_volume(req).await,
        Code::InvalidArgument,
    )?;
    req = create_req("conformance-no-caps", GIB, 0);
    req.volume_capabilities.clear();
    expect_code(
        "CreateVolume without capabilities",
        c.create_volume(req).await,
        Code::InvalidArgument,
    )?;
    req = create_req("conformance-block", GIB, 0);
    req.volume_capabilities = vec![block_cap(Mode::SingleNodeWriter)];
    expect_code(
        "CreateVolume with block access",
        c.create_volume(req).await,
        Code::InvalidArgument,
    )?;
    // Nothing was made on the way.
    let after = gluster_volumes(&tb).await?;
    ensure!(
        before == after,
        "refused creates made volumes: {before:?} → {after:?}"
    );
    Ok(())
}

async fn create_idempotent(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let before = gluster_volumes(&tb).await?;
    let mut ids = HashSet::new();
    let mut first = None;
    for _ in 0..REPEATS {
        let v = create(&mut c, create_req("conformance-idempotent", GIB, GIB)).await?;
        ensure!(v.capacity_bytes == GIB, "capacity {}", v.capacity_bytes);
        ids.insert(v.volume_id.clone());
        first.get_or_insert(v);
    }
    ensure!(ids.len() == 1, "{REPEATS} creates gave ids {ids:?}");
    let after = gluster_volumes(&tb).await?;
    ensure!(
        after.len() == before.len() + 1,
        "{REPEATS} creates of one name made {} Gluster volumes",
        after.len() - before.len()
    );
    let v = first.context("no volume")?;
    delete(&mut c, &v.volume_id).await?;
    ensure!(gluster_volumes(&tb).await?.len() == before.len());
    Ok(())
}

async fn create_other_size(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let v = create(&mut c, create_req("conformance-other-size", GIB, GIB)).await?;
    expect_code(
        "CreateVolume of the same name with required == limit == 2 GiB",
        c.create_volume(create_req("conformance-other-size", 2 * GIB, 2 * GIB))
            .await,
        Code::AlreadyExists,
    )?;
    // The first volume is untouched.
    let same = create(&mut c, create_req("conformance-other-size", GIB, GIB)).await?;
    ensure!(same.volume_id == v.volume_id && same.capacity_bytes == GIB);
    delete(&mut c, &v.volume_id).await
}

async fn create_long_name(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let name: String = "conformance-long-name-"
        .chars()
        .chain(std::iter::repeat('x'))
        .take(128)
        .collect();
    ensure!(name.len() == 128);
    let v = create(&mut c, create_req(&name, GIB, 0)).await?;
    ensure!(
        !v.volume_id.is_empty() && v.volume_id.len() <= 128,
        "id {:?}",
        v.volume_id
    );
    let again = create(&mut c, create_req(&name, GIB, 0)).await?;
    ensure!(
        again.volume_id == v.volume_id,
        "the long name is not idempotent"
    );
    delete(&mut c, &v.volume_id).await
}

async fn create_sizes(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    // required == limit == N GiB: exactly N GiB.
    for n in [1, 2] {
        let v = create(
            &mut c,
            create_req(&format!("conformance-exact-{n}"), n * GIB, n * GIB),
        )
        .await?;
        ensure!(
            v.capacity_bytes == n * GIB,
            "{n} GiB asked, {} bytes given",
            v.capacity_bytes
        );
        delete(&mut c, &v.volume_id).await?;
    }
    // A fraction of a GiB rounds up to the next whole GiB, which the reply reports.
    let v = create(&mut c, create_req("conformance-round-up", GIB + 1, 0)).await?;
    ensure!(
        v.capacity_bytes == 2 * GIB,
        "1 GiB + 1 byte gave {} bytes",
        v.capacity_bytes
    );
    delete(&mut c, &v.volume_id).await?;
    // Rounding up beyond the limit is OUT_OF_RANGE, and nothing is made.
    let before = gluster_volumes(&tb).await?;
    expect_code(
        "CreateVolume of 1 GiB + 1 byte limited to 1.5 GiB",
        c.create_volume(create_req("conformance-over-limit", GIB + 1, GIB + GIB / 2))
            .await,
        Code::OutOfRange,
    )?;
    ensure!(
        gluster_volumes(&tb).await? == before,
        "a refused create made a volume"
    );
    Ok(())
}

async fn delete_ids(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    expect_code(
        "DeleteVolume without an id",
        c.delete_volume(DeleteVolumeRequest::default()).await,
        Code::InvalidArgument,
    )?;
    delete(&mut c, FAKE_ID)
        .await
        .context("DeleteVolume of an id that does not parse must succeed")?;
    let v = create(&mut c, create_req("conformance-delete-twice", GIB, 0)).await?;
    let gv = gluster_volume_of(&v)?.to_owned();
    delete(&mut c, &v.volume_id).await?;
    ensure!(
        !gluster_volumes(&tb).await?.contains(&gv),
        "{gv} survived DeleteVolume"
    );
    delete(&mut c, &v.volume_id)
        .await
        .context("DeleteVolume of a deleted volume must succeed")?;
    Ok(())
}

async fn validate_capabilities(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.to_owned(),
        volume_capabilities: caps,
        ..ValidateVolumeCapabilitiesRequest::default()
    };
    let cap = || vec![mount_cap(Mode::SingleNodeWriter)];
    expect_code(
        "ValidateVolumeCapabilities without an id",
        c.validate_volume_capabilities(validate("", cap())).await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "ValidateVolumeCapabilities of fake-vol-id-xxxxxxxxxx",
        c.validate_volume_capabilities(validate(FAKE_ID, cap()))
            .await,
        Code::NotFound,
    )?;
    let v = create(&mut c, create_req("conformance-validate", GIB, 0)).await?;
    expect_code(
        "ValidateVolumeCapabilities without capabilities",
        c.validate_volume_capabilities(validate(&v.volume_id, Vec::new()))
            .await,
        Code::InvalidArgument,
    )?;
    for mode in [
        Mode::SingleNodeWriter,
        Mode::SingleNodeReaderOnly,
        Mode::MultiNodeReaderOnly,
        Mode::MultiNodeSingleWriter,
        Mode::MultiNodeMultiWriter,
        Mode::SingleNodeSingleWriter,
        Mode::SingleNodeMultiWriter,
    ] {
        let r = c
            .validate_volume_capabilities(validate(&v.volume_id, vec![mount_cap(mode)]))
            .await?
            .into_inner();
        let confirmed = r
            .confirmed
            .with_context(|| format!("{mode:?} not confirmed: {}", r.message))?;
        ensure!(
            !confirmed.volume_capabilities.is_empty(),
            "{mode:?}: confirmed without capabilities"
        );
    }
    let r = c
        .validate_volume_capabilities(validate(
            &v.volume_id,
            vec![block_cap(Mode::SingleNodeWriter)],
        ))
        .await?
        .into_inner();
    ensure!(
        r.confirmed.is_none() && !r.message.is_empty(),
        "block access was confirmed"
    );
    delete(&mut c, &v.volume_id).await?;
    expect_code(
        "ValidateVolumeCapabilities of a deleted volume",
        c.validate_volume_capabilities(validate(&v.volume_id, cap()))
            .await,
        Code::NotFound,
    )
}

async fn get_volume(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let get = |id: &str| ControllerGetVolumeRequest {
        volume_id: id.to_owned(),
    };
    expect_code(
        "ControllerGetVolume without an id",
        c.controller_get_volume(get("")).await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "ControllerGetVolume of fake-vol-id-xxxxxxxxxx",
        c.controller_get_volume(get(FAKE_ID)).await,
        Code::NotFound,
    )?;
    let v = create(&mut c, create_req("conformance-get", GIB, 0)).await?;
    let got = c
        .controller_get_volume(get(&v.volume_id))
        .await?
        .into_inner()
        .volume
        .context("ControllerGetVolume without a volume")?;
    ensure!(
        got.volume_id == v.volume_id && got.capacity_bytes == v.capacity_bytes,
        "got {} ({} bytes)",
        got.volume_id,
        got.capacity_bytes
    );
    ensure!(got.volume_context.get("glusterVolume") == v.volume_context.get("glusterVolume"));
    delete(&mut c, &v.volume_id).await?;
    expect_code(
        "ControllerGetVolume of a deleted volume",
        c.controller_get_volume(get(&v.volume_id)).await,
        Code::NotFound,
    )
}

async fn clone_volume(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let from = |id: &str| VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.to_owned(),
        })),
    };
    let mut req = create_req("conformance-clone-unknown", GIB, 0);
    req.volume_content_source = Some(from(FAKE_ID));
    expect_code(
        "CreateVolume from fake-vol-id-xxxxxxxxxx",
        c.create_volume(req).await,
        Code::NotFound,
    )?;

    let src = create(&mut c, create_req("conformance-clone-source", GIB, 0)).await?;
    let mp = tb.scratch_dir("conformance-clone-source")?;
    tb.mount_volume(gluster_volume_of(&src)?, &mp).await?;
    std::fs::write(mp.join("data.txt"), b"cloned data\n")?;
    tb.unmount(&mp).await?;

    let mut req = create_req("conformance-clone", GIB, 0);
    req.volume_content_source = Some(from(&src.volume_id));
    let clone = create(&mut c, req).await?;
    ensure!(clone.volume_id != src.volume_id && clone.capacity_bytes == GIB);
    ensure!(
        clone
            .content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref())
            == Some(&SourceType::Volume(VolumeSource {
                volume_id: src.volume_id.clone()
            })),
        "the clone does not name its source"
    );
    let mp = tb.scratch_dir("conformance-clone")?;
    tb.mount_volume(gluster_volume_of(&clone)?, &mp).await?;
    let copied = std::fs::read(mp.join("data.txt"));
    tb.unmount(&mp).await?;
    ensure!(
        copied? == b"cloned data\n",
        "the clone does not hold the source's data"
    );

    delete(&mut c, &src.volume_id).await?;
    let mut req = create_req("conformance-clone-of-deleted", GIB, 0);
    req.volume_content_source = Some(from(&src.volume_id));
    expect_code(
        "CreateVolume from a deleted volume",
        c.create_volume(req).await,
        Code::NotFound,
    )?;
    delete(&mut c, &clone.volume_id).await
}

async fn expand_volume(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let expand = |id: &str, range: Option<CapacityRange>| ControllerExpandVolumeRequest {
        volume_id: id.to_owned(),
        capacity_range: range,
        volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
        ..ControllerExpandVolumeRequest::default()
    };
    let to = |bytes: i64| {
        Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        })
    };
    expect_code(
        "ControllerExpandVolume without an id",
        c.controller_expand_volume(expand("", to(2 * GIB))).await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "ControllerExpandVolume of fake-vol-id-xxxxxxxxxx",
        c.controller_expand_volume(expand(FAKE_ID, to(2 * GIB)))
            .await,
        Code::NotFound,
    )?;
    let v = create(&mut c, create_req("conformance-expand", GIB, 0)).await?;
    expect_code(
        "ControllerExpandVolume without a capacity range",
        c.controller_expand_volume(expand(&v.volume_id, None)).await,
        Code::InvalidArgument,
    )?;
    let r = c
        .controller_expand_volume(expand(&v.volume_id, to(2 * GIB)))
        .await?
        .into_inner();
    ensure!(
        r.capacity_bytes == 2 * GIB && !r.node_expansion_required,
        "expand to 2 GiB answered {} bytes, node expansion {}",
        r.capacity_bytes,
        r.node_expansion_required
    );
    // Again: nothing to do, the same answer.
    let r = c
        .controller_expand_volume(expand(&v.volume_id, to(2 * GIB)))
        .await?
        .into_inner();
    ensure!(
        r.capacity_bytes == 2 * GIB,
        "repeated expand answered {}",
        r.capacity_bytes
    );
    let h = tb.heketi_client()?;
    let id = v
        .volume_context
        .get("heketiVolumeId")
        .context("no heketiVolumeId in the context")?;
    ensure!(
        h.volume_info(id).await?.size == 2,
        "Heketi does not show 2 GiB"
    );
    delete(&mut c, &v.volume_id).await
}

async fn list_invalid_token(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    expect_code(
        "ListVolumes with starting_token invalid-token",
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "invalid-token".into(),
        })
        .await,
        Code::Aborted,
    )?;
    c.list_volumes(ListVolumesRequest::default())
        .await
        .context("a plain ListVolumes")?;
    Ok(())
}

async fn list_counts(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let before = list_all(&mut c, 0).await?;
    let v = create(&mut c, create_req("conformance-list-count", GIB, 0)).await?;
    let during = list_all(&mut c, 0).await?;
    ensure!(
        during.len() == before.len() + 1 && during.contains(&v.volume_id),
        "{} volumes before the create, {} after",
        before.len(),
        during.len()
    );
    delete(&mut c, &v.volume_id).await?;
    let after = list_all(&mut c, 0).await?;
    ensure!(
        after.len() == before.len() && !after.contains(&v.volume_id),
        "{} volumes before, {} after create and delete",
        before.len(),
        after.len()
    );
    Ok(())
}

async fn list_paging(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create(&mut c, create_req(&format!("conformance-page-{i}"), GIB, 0))
                .await?
                .volume_id,
        );
    }
    // Whole listing in pages of 2: every volume exactly once.
    let all = list_all(&mut c, 2).await?;
    let unique: HashSet<&String> = all.iter().collect();
    ensure!(
        unique.len() == all.len(),
        "a volume was listed twice: {all:?}"
    );
    for id in &made {
        ensure!(all.contains(id), "{id} is missing from the pages");
    }
    ensure!(
        all == list_all(&mut c, 0).await?,
        "pages differ from the single listing"
    );

    // First page, then the last volume of that page deleted and a new volume created: the
    // token still works, and no volume that existed throughout is lost or repeated.
    let first = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await?
        .into_inner();
    ensure!(
        first.entries.len() == 2 && !first.next_token.is_empty(),
        "first page {:?}",
        first.entries.len()
    );
    let page: Vec<String> = first
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref())
        .map(|v| v.volume_id.clone())
        .collect();
    let last = page.last().context("empty page")?.clone();
    delete(&mut c, &last).await?;
    let added = create(&mut c, create_req("conformance-page-added", GIB, 0))
        .await?
        .volume_id;
    let mut rest = Vec::new();
    let mut token = first.next_token;
    while !token.is_empty() {
        let p = c
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token,
            })
            .await
            .context("ListVolumes with a token whose volume was deleted")?
            .into_inner();
        rest.extend(
            p.entries
                .into_iter()
                .filter_map(|e| e.volume)
                .map(|v| v.volume_id),
        );
        token = p.next_token;
    }
    for id in &all {
        if *id == last || page.contains(id) {
            continue;
        }
        ensure!(
            rest.iter().filter(|r| *r == id).count() == 1,
            "{id} existed throughout but the later pages list it {} times",
            rest.iter().filter(|r| *r == id).count()
        );
    }
    ensure!(!rest.contains(&last), "the deleted volume is still listed");
    ensure!(
        !rest.iter().any(|r| page.contains(r)),
        "a volume of the first page came again"
    );
    // The new volume shows up in a fresh listing (whether the old pages see it depends on where
    // its id sorts).
    ensure!(list_all(&mut c, 2).await?.contains(&added));
    for id in made
        .iter()
        .filter(|id| **id != last)
        .chain(std::iter::once(&added))
    {
        delete(&mut c, id).await?;
    }
    Ok(())
}

async fn get_capacity(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let r = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .context("GetCapacity with an empty request")?
        .into_inner();
    ensure!(
        r.available_capacity > 0,
        "available {}",
        r.available_capacity
    );
    // Capacity is counted for the requested volume type: replica 3 needs three times the room.
    let r3 = c
        .get_capacity(GetCapacityRequest {
            parameters: HashMap::from([("volumetype".into(), "replicate:3".into())]),
            volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter)],
            ..GetCapacityRequest::default()
        })
        .await?
        .into_inner();
    let none = c
        .get_capacity(GetCapacityRequest {
            parameters: HashMap::from([("volumetype".into(), "none".into())]),
            ..GetCapacityRequest::default()
        })
        .await?
        .into_inner();
    ensure!(
        r3.available_capacity > 0 && r3.available_capacity < none.available_capacity,
        "replicate:3 {} bytes, none {} bytes",
        r3.available_capacity,
        none.available_capacity
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Node

async fn node_capabilities(tb: Arc<Testbed>) -> Result<()> {
    use node_service_capability::rpc::Type as T;
    let mut n = node(&tb).await?;
    let caps = n
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    let mut got = HashSet::new();
    for cap in caps {
        let Some(node_service_capability::Type::Rpc(r)) = cap.r#type else {
            bail!("a node capability without an RPC type");
        };
        let t = T::try_from(r.r#type)
            .ok()
            .filter(|t| *t != T::Unknown)
            .with_context(|| format!("unknown node capability {}", r.r#type))?;
        ensure!(got.insert(t), "{t:?} advertised twice");
    }
    let want: HashSet<T> = [
        T::StageUnstageVolume,
        T::GetVolumeStats,
        T::VolumeCondition,
        T::SingleNodeMultiWriter,
    ]
    .into();
    ensure!(got == want, "advertised {got:?}, expected {want:?}");
    Ok(())
}

async fn node_info(tb: Arc<Testbed>) -> Result<()> {
    let mut n = node(&tb).await?;
    let info = n.node_get_info(NodeGetInfoRequest {}).await?.into_inner();
    ensure!(!info.node_id.is_empty(), "empty node_id");
    ensure!(
        info.max_volumes_per_node >= 0,
        "max_volumes_per_node {}",
        info.max_volumes_per_node
    );
    ensure!(
        info.accessible_topology.is_none(),
        "topology without VOLUME_ACCESSIBILITY_CONSTRAINTS"
    );
    Ok(())
}

async fn node_missing_fields(tb: Arc<Testbed>) -> Result<()> {
    let mut n = node(&tb).await?;
    let paths = NodePaths::new(&tb, "missing")?;
    let v = Volume {
        volume_id: "conformance-no-such-volume".into(),
        volume_context: HashMap::from([
            ("glusterServers".into(), tb.env().gluster_hosts.join(",")),
            ("glusterVolume".into(), "conformance-no-such-volume".into()),
        ]),
        ..Volume::default()
    };
    let cap = || mount_cap(Mode::SingleNodeWriter);
    let mut r = publish_req(&v, &paths.staging, &paths.target, cap());
    r.volume_id.clear();
    expect_code(
        "NodePublishVolume without a volume id",
        n.node_publish_volume(r).await,
        Code::InvalidArgument,
    )?;
    let mut r = publish_req(&v, &paths.staging, &paths.target, cap());
    r.target_path.clear();
    expect_code(
        "NodePublishVolume without a target path",
        n.node_publish_volume(r).await,
        Code::InvalidArgument,
    )?;
    let mut r = publish_req(&v, &paths.staging, &paths.target, cap());
    r.volume_capability = None;
    expect_code(
        "NodePublishVolume without a capability",
        n.node_publish_volume(r).await,
        Code::InvalidArgument,
    )?;

    expect_code(
        "NodeUnpublishVolume without a volume id",
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: String::new(),
            target_path: paths.target.display().to_string(),
        })
        .await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "NodeUnpublishVolume without a target path",
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: String::new(),
        })
        .await,
        Code::InvalidArgument,
    )?;

    let mut r = stage_req(&v, &paths.staging, cap());
    r.volume_id.clear();
    expect_code(
        "NodeStageVolume without a volume id",
        n.node_stage_volume(r).await,
        Code::InvalidArgument,
    )?;
    let mut r = stage_req(&v, &paths.staging, cap());
    r.staging_target_path.clear();
    expect_code(
        "NodeStageVolume without a staging path",
        n.node_stage_volume(r).await,
        Code::InvalidArgument,
    )?;
    let mut r = stage_req(&v, &paths.staging, cap());
    r.volume_capability = None;
    expect_code(
        "NodeStageVolume without a capability",
        n.node_stage_volume(r).await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "NodeUnstageVolume without a volume id",
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: String::new(),
            staging_target_path: paths.staging.display().to_string(),
        })
        .await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "NodeUnstageVolume without a staging path",
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: String::new(),
        })
        .await,
        Code::InvalidArgument,
    )?;

    let stats = |id: &str, path: &str| NodeGetVolumeStatsRequest {
        volume_id: id.to_owned(),
        volume_path: path.to_owned(),
        staging_target_path: String::new(),
    };
    expect_code(
        "NodeGetVolumeStats without a volume id",
        n.node_get_volume_stats(stats("", &paths.target.display().to_string()))
            .await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "NodeGetVolumeStats without a volume path",
        n.node_get_volume_stats(stats(&v.volume_id, "")).await,
        Code::InvalidArgument,
    )?;
    // Nothing was mounted on the way.
    ensure!(mounts_at(&paths.staging)? == 0 && mounts_at(&paths.target)? == 0);
    Ok(())
}

async fn node_idempotent(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut n = node(&tb).await?;
    let paths = NodePaths::new(&tb, "idempotent")?;
    let v = create(&mut c, create_req("conformance-node-idempotent", GIB, 0)).await?;
    let cap = || mount_cap(Mode::SingleNodeWriter);
    for i in 0..REPEATS {
        n.node_stage_volume(stage_req(&v, &paths.staging, cap()))
            .await
            .with_context(|| format!("NodeStageVolume #{}", i + 1))?;
    }
    ensure!(
        mounts_at(&paths.staging)? == 1,
        "{} mounts at the staging path",
        mounts_at(&paths.staging)?
    );
    for i in 0..REPEATS {
        n.node_publish_volume(publish_req(&v, &paths.staging, &paths.target, cap()))
            .await
            .with_context(|| format!("NodePublishVolume #{}", i + 1))?;
    }
    ensure!(
        mounts_at(&paths.target)? == 1,
        "{} mounts at the target path",
        mounts_at(&paths.target)?
    );
    ensure!(
        mounts_at(&paths.staging)? == 1,
        "publishing added staging mounts"
    );
    std::fs::write(paths.target.join("f"), b"x")?;
    ensure!(
        std::fs::read(paths.staging.join("f"))? == b"x",
        "target and staging differ"
    );

    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: v.volume_id.clone(),
            volume_path: paths.target.display().to_string(),
            staging_target_path: paths.staging.display().to_string(),
        })
        .await?
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .context("no byte usage")?;
    ensure!(
        bytes.total > 0 && bytes.total <= GIB && bytes.available <= bytes.total && bytes.used >= 0,
        "byte usage {}/{}/{}",
        bytes.used,
        bytes.available,
        bytes.total
    );
    ensure!(
        stats
            .usage
            .iter()
            .any(|u| u.unit == volume_usage::Unit::Inodes as i32),
        "no inode usage"
    );
    let condition = stats.volume_condition.context("no volume condition")?;
    ensure!(!condition.abnormal, "abnormal: {}", condition.message);

    for _ in 0..2 {
        unpublish(&mut n, &v.volume_id, &paths.target).await?;
    }
    ensure!(!paths.target.exists() && mounts_at(&paths.target)? == 0);
    for _ in 0..2 {
        unstage(&mut n, &v.volume_id, &paths.staging).await?;
    }
    ensure!(
        mounts_at(&paths.staging)? == 0,
        "the staging path is still mounted"
    );
    delete(&mut c, &v.volume_id).await
}

async fn unpublish_removes_target(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut n = node(&tb).await?;
    let paths = NodePaths::new(&tb, "unpublish")?;
    let v = create(&mut c, create_req("conformance-unpublish", GIB, 0)).await?;
    let cap = || mount_cap(Mode::MultiNodeMultiWriter);
    n.node_stage_volume(stage_req(&v, &paths.staging, cap()))
        .await?;
    n.node_publish_volume(publish_req(&v, &paths.staging, &paths.target, cap()))
        .await?;
    ensure!(
        paths.target.is_dir() && mounts_at(&paths.target)? == 1,
        "not published"
    );
    unpublish(&mut n, &v.volume_id, &paths.target).await?;
    ensure!(
        !paths.target.exists(),
        "NodeUnpublishVolume left {}",
        paths.target.display()
    );
    ensure!(mounts_at(&paths.target)? == 0);
    unpublish(&mut n, &v.volume_id, &paths.target)
        .await
        .context("unpublishing a removed target again must succeed")?;
    ensure!(
        mounts_at(&paths.staging)? == 1,
        "unpublish took the staging mount away"
    );
    unstage(&mut n, &v.volume_id, &paths.staging).await?;
    delete(&mut c, &v.volume_id).await
}

async fn single_writer(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut n = node(&tb).await?;
    let paths = NodePaths::new(&tb, "single-writer")?;
    let mut req = create_req("conformance-single-writer", GIB, 0);
    req.volume_capabilities = vec![mount_cap(Mode::SingleNodeSingleWriter)];
    let v = create(&mut c, req).await?;
    let cap = || mount_cap(Mode::SingleNodeSingleWriter);
    n.node_stage_volume(stage_req(&v, &paths.staging, cap()))
        .await?;
    n.node_publish_volume(publish_req(&v, &paths.staging, &paths.target, cap()))
        .await
        .context("the first publish")?;
    expect_code(
        "NodePublishVolume of a SINGLE_NODE_SINGLE_WRITER volume to a second target",
        n.node_publish_volume(publish_req(&v, &paths.staging, &paths.other_target, cap()))
            .await,
        Code::FailedPrecondition,
    )?;
    ensure!(
        mounts_at(&paths.other_target)? == 0,
        "the refused publish mounted"
    );
    n.node_publish_volume(publish_req(&v, &paths.staging, &paths.target, cap()))
        .await
        .context("publishing to the same target again")?;
    unpublish(&mut n, &v.volume_id, &paths.target).await?;
    unpublish(&mut n, &v.volume_id, &paths.other_target).await?;
    // Once the first target is gone, another may take it.
    n.node_publish_volume(publish_req(&v, &paths.staging, &paths.other_target, cap()))
        .await
        .context("publishing to a second target after the first was unpublished")?;
    unpublish(&mut n, &v.volume_id, &paths.other_target).await?;
    unstage(&mut n, &v.volume_id, &paths.staging).await?;
    delete(&mut c, &v.volume_id).await
}

async fn stats_not_found(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut n = node(&tb).await?;
    let paths = NodePaths::new(&tb, "stats")?;
    let stats = |id: &str, path: &str| NodeGetVolumeStatsRequest {
        volume_id: id.to_owned(),
        volume_path: path.to_owned(),
        staging_target_path: String::new(),
    };
    expect_code(
        "NodeGetVolumeStats of an unknown volume at some/path",
        n.node_get_volume_stats(stats(FAKE_ID, "some/path")).await,
        Code::NotFound,
    )?;
    let v = create(&mut c, create_req("conformance-stats", GIB, 0)).await?;
    let cap = || mount_cap(Mode::SingleNodeWriter);
    n.node_stage_volume(stage_req(&v, &paths.staging, cap()))
        .await?;
    n.node_publish_volume(publish_req(&v, &paths.staging, &paths.target, cap()))
        .await?;
    let target = paths.target.display().to_string();
    // The second target's parent exists and holds no mount.
    let unmounted = paths
        .other_target
        .parent()
        .context("no parent")?
        .display()
        .to_string();
    n.node_get_volume_stats(stats(&v.volume_id, &target))
        .await
        .context("stats of the published volume")?;
    expect_code(
        "NodeGetVolumeStats of a real volume at a wrong path",
        n.node_get_volume_stats(stats(&v.volume_id, "/conformance/wrong/path"))
            .await,
        Code::NotFound,
    )?;
    expect_code(
        "NodeGetVolumeStats of a real volume at an existing unmounted directory",
        n.node_get_volume_stats(stats(&v.volume_id, &unmounted))
            .await,
        Code::NotFound,
    )?;
    unpublish(&mut n, &v.volume_id, &paths.target).await?;
    expect_code(
        "NodeGetVolumeStats after unpublish",
        n.node_get_volume_stats(stats(&v.volume_id, &target)).await,
        Code::NotFound,
    )?;
    unstage(&mut n, &v.volume_id, &paths.staging).await?;
    delete(&mut c, &v.volume_id).await
}

async fn cleanup_order(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let mut n = node(&tb).await?;
    // Never staged nor published: csi-sanity still unpublishes `<mountdir>/target` (which does
    // not exist) and unstages its staging directory, then deletes.
    let paths = NodePaths::new(&tb, "cleanup-never")?;
    let v = create(&mut c, create_req("conformance-cleanup-never", GIB, 0)).await?;
    let gv = gluster_volume_of(&v)?.to_owned();
    unpublish(&mut n, &v.volume_id, &paths.target)
        .await
        .context("unpublishing a never published volume")?;
    unstage(&mut n, &v.volume_id, &paths.staging)
        .await
        .context("unstaging a never staged volume")?;
    delete(&mut c, &v.volume_id).await?;
    ensure!(!gluster_volumes(&tb).await?.contains(&gv), "{gv} survived");

    // Staged but never published.
    let paths = NodePaths::new(&tb, "cleanup-staged")?;
    let v = create(&mut c, create_req("conformance-cleanup-staged", GIB, 0)).await?;
    let gv = gluster_volume_of(&v)?.to_owned();
    n.node_stage_volume(stage_req(
        &v,
        &paths.staging,
        mount_cap(Mode::SingleNodeWriter),
    ))
    .await?;
    unpublish(&mut n, &v.volume_id, &paths.target)
        .await
        .context("unpublishing a staged, never published volume")?;
    unstage(&mut n, &v.volume_id, &paths.staging).await?;
    ensure!(mounts_at(&paths.staging)? == 0, "still staged");
    delete(&mut c, &v.volume_id).await?;
    ensure!(!gluster_volumes(&tb).await?.contains(&gv), "{gv} survived");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Snapshots

fn snapshot_req(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: source.to_owned(),
        name: name.to_owned(),
        ..CreateSnapshotRequest::default()
    }
}

async fn snapshot(c: &mut ControllerClient<Channel>, name: &str, source: &str) -> Result<Snapshot> {
    c.create_snapshot(snapshot_req(name, source))
        .await
        .with_context(|| format!("CreateSnapshot {name}"))?
        .into_inner()
        .snapshot
        .with_context(|| format!("CreateSnapshot {name} answered without a snapshot"))
}

async fn delete_snapshot(c: &mut ControllerClient<Channel>, id: &str) -> Result<()> {
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: id.to_owned(),
        secrets: HashMap::new(),
    })
    .await
    .with_context(|| format!("DeleteSnapshot {id}"))?;
    Ok(())
}

/// Every snapshot ListSnapshots returns for `req`, page by page (`req.max_entries` a page).
async fn list_snapshots(
    c: &mut ControllerClient<Channel>,
    req: ListSnapshotsRequest,
) -> Result<Vec<Snapshot>> {
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let page = c
            .list_snapshots(ListSnapshotsRequest {
                starting_token: token,
                ..req.clone()
            })
            .await?
            .into_inner();
        ensure!(
            req.max_entries == 0 || page.entries.len() <= usize::try_from(req.max_entries)?,
            "a page of {} entries for max_entries {}",
            page.entries.len(),
            req.max_entries
        );
        all.extend(page.entries.into_iter().filter_map(|e| e.snapshot));
        if page.next_token.is_empty() {
            return Ok(all);
        }
        token = page.next_token;
    }
    bail!("ListSnapshots never ended")
}

fn snapshot_ids(snaps: &[Snapshot]) -> Vec<&str> {
    snaps.iter().map(|s| s.snapshot_id.as_str()).collect()
}

fn from_snapshot(id: &str) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.to_owned(),
        })),
    }
}

/// Heketi's id of a volume, read off its CSI id (`1:<heketi id>:…`).
fn heketi_id(volume_id: &str) -> Result<&str> {
    volume_id
        .split(':')
        .nth(1)
        .with_context(|| format!("{volume_id} has no Heketi id"))
}

/// The Gluster volumes of snapshots taken of the volume `volume_id`.
async fn gluster_snapshots_of(tb: &Testbed, volume_id: &str) -> Result<Vec<String>> {
    let src = heketi_id(volume_id)?;
    Ok(gluster_volumes(tb)
        .await?
        .into_iter()
        .filter(|v| v.starts_with("snap_") && v.contains(src))
        .collect())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

async fn snapshot_create(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    expect_code(
        "CreateSnapshot without a name",
        c.create_snapshot(snapshot_req("", FAKE_ID)).await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "CreateSnapshot without a source",
        c.create_snapshot(snapshot_req("conformance-snap-nosource", ""))
            .await,
        Code::InvalidArgument,
    )?;
    expect_code(
        "CreateSnapshot of fake-vol-id-xxxxxxxxxx",
        c.create_snapshot(snapshot_req("conformance-snap-fake", FAKE_ID))
            .await,
        Code::NotFound,
    )?;
    let a = create(&mut c, create_req("conformance-snap-a", GIB, 0)).await?;
    let b = create(&mut c, create_req("conformance-snap-b", GIB, 0)).await?;
    let mut bad = snapshot_req("conformance-snap-param", &a.volume_id);
    bad.parameters.insert("snapfactor".into(), "2".into());
    match c.create_snapshot(bad).await {
        Err(s) if s.code() == Code::InvalidArgument && s.message().contains("snapfactor") => {}
        other => bail!("an unknown parameter: {other:?}, INVALID_ARGUMENT naming it was expected"),
    }

    let t0 = unix_now();
    let first = snapshot(&mut c, "conformance-snap", &a.volume_id).await?;
    let t1 = unix_now();
    let created = first.creation_time.map(|t| t.seconds).unwrap_or_default();
    ensure!(
        first.ready_to_use
            && first.size_bytes == a.capacity_bytes
            && first.source_volume_id == a.volume_id
            && (t0 - 1..=t1 + 1).contains(&created),
        "snapshot {first:?} of {} ({} bytes) taken between {t0} and {t1}",
        a.volume_id,
        a.capacity_bytes
    );
    for _ in 0..3 {
        let again = snapshot(&mut c, "conformance-snap", &a.volume_id).await?;
        ensure!(
            again == first,
            "a repeated CreateSnapshot answered {again:?}, not {first:?}"
        );
    }
    ensure!(
        gluster_snapshots_of(&tb, &a.volume_id).await?.len() == 1,
        "repeated CreateSnapshot calls made more than one copy"
    );
    expect_code(
        "CreateSnapshot of the same name from another volume",
        c.create_snapshot(snapshot_req("conformance-snap", &b.volume_id))
            .await,
        Code::AlreadyExists,
    )?;
    let long = snapshot(&mut c, &"s".repeat(128), &a.volume_id)
        .await
        .context("a 128-character snapshot name")?;

    // A snapshot id is no volume id: volume calls do not see or touch it.
    ensure!(
        !list_all(&mut c, 0).await?.contains(&first.snapshot_id),
        "ListVolumes lists a snapshot"
    );
    expect_code(
        "ControllerGetVolume of a snapshot id",
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: first.snapshot_id.clone(),
        })
        .await,
        Code::NotFound,
    )?;
    delete(&mut c, &first.snapshot_id).await?;
    let listed = list_snapshots(
        &mut c,
        ListSnapshotsRequest {
            snapshot_id: first.snapshot_id.clone(),
            ..ListSnapshotsRequest::default()
        },
    )
    .await?;
    ensure!(
        listed == vec![first.clone()],
        "DeleteVolume of a snapshot id changed the snapshot: {listed:?}"
    );

    for s in [&first, &long] {
        delete_snapshot(&mut c, &s.snapshot_id).await?;
    }
    ensure!(
        gluster_snapshots_of(&tb, &a.volume_id).await?.is_empty(),
        "DeleteSnapshot left a Gluster volume"
    );
    for v in [&a, &b] {
        delete(&mut c, &v.volume_id).await?;
    }
    Ok(())
}

async fn snapshot_restore(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    let src = create(&mut c, create_req("conformance-restore-source", GIB, 0)).await?;
    let mp = tb.scratch_dir("conformance-restore-source")?;
    tb.mount_volume(gluster_volume_of(&src)?, &mp).await?;
    std::fs::write(mp.join("kept.txt"), b"before\n")?;
    std::fs::create_dir_all(mp.join("dir"))?;
    std::fs::write(mp.join("dir/nested.txt"), b"nested before\n")?;
    let snap = snapshot(&mut c, "conformance-restore-snap", &src.volume_id).await;
    let written_after = async {
        std::fs::write(mp.join("kept.txt"), b"after\n")?;
        std::fs::write(mp.join("new.txt"), b"after\n")?;
        std::fs::remove_file(mp.join("dir/nested.txt"))?;
        anyhow::Ok(())
    }
    .await;
    tb.unmount(&mp).await?;
    let snap = snap?;
    written_after?;

    // The snapshot itself is read-only in Gluster.
    let snaps = gluster_snapshots_of(&tb, &src.volume_id).await?;
    let [snap_volume] = &snaps[..] else {
        bail!("Gluster volumes of the snapshot: {snaps:?}, one was expected");
    };
    let smp = tb.scratch_dir("conformance-restore-snapshot")?;
    tb.mount_volume(snap_volume, &smp).await?;
    let write = std::fs::write(smp.join("new.txt"), b"into the snapshot\n");
    let read = std::fs::read(smp.join("kept.txt"));
    tb.unmount(&smp).await?;
    match write {
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {}
        other => bail!("a write into the snapshot's volume: {other:?}, EROFS was expected"),
    }
    ensure!(read? == b"before\n", "the snapshot does not hold the data");

    expect_code(
        "CreateVolume from an unknown snapshot",
        {
            let mut req = create_req("conformance-restore-unknown", GIB, 0);
            req.volume_content_source = Some(from_snapshot("s1:fake"));
            c.create_volume(req).await
        },
        Code::NotFound,
    )?;

    // Restored larger than the snapshot, after the source is deleted.
    delete(&mut c, &src.volume_id).await?;
    let mut req = create_req("conformance-restored", 2 * GIB, 0);
    req.volume_content_source = Some(from_snapshot(&snap.snapshot_id));
    let restored = create(&mut c, req).await?;
    ensure!(
        restored.capacity_bytes == 2 * GIB
            && restored.content_source == Some(from_snapshot(&snap.snapshot_id)),
        "restored volume {restored:?}"
    );
    let rmp = tb.scratch_dir("conformance-restored")?;
    tb.mount_volume(gluster_volume_of(&restored)?, &rmp).await?;
    let kept = std::fs::read(rmp.join("kept.txt"));
    let nested = std::fs::read(rmp.join("dir/nested.txt"));
    let new_exists = rmp.join("new.txt").exists();
    let writable = std::fs::write(rmp.join("restored.txt"), b"writable\n");
    tb.unmount(&rmp).await?;
    ensure!(
        kept? == b"before\n" && nested? == b"nested before\n",
        "the restore lacks data written before the snapshot"
    );
    ensure!(
        !new_exists,
        "the restore holds a file written after the snapshot"
    );
    writable.context("writing into the restored volume")?;

    delete(&mut c, &restored.volume_id).await?;
    delete_snapshot(&mut c, &snap.snapshot_id).await?;
    ensure!(
        !gluster_volumes(&tb).await?.contains(snap_volume),
        "{snap_volume} survived DeleteSnapshot"
    );
    Ok(())
}

async fn snapshot_list_and_delete(tb: Arc<Testbed>) -> Result<()> {
    let mut c = controller(&tb).await?;
    expect_code(
        "ListSnapshots with an invalid token",
        c.list_snapshots(ListSnapshotsRequest {
            starting_token: "invalid-token".into(),
            ..ListSnapshotsRequest::default()
        })
        .await,
        Code::Aborted,
    )?;
    expect_code(
        "DeleteSnapshot without an id",
        c.delete_snapshot(DeleteSnapshotRequest::default()).await,
        Code::InvalidArgument,
    )?;
    delete_snapshot(&mut c, "reallyfakesnapshotid")
        .await
        .context("DeleteSnapshot of an id that does not parse must succeed")?;

    let before = list_snapshots(&mut c, ListSnapshotsRequest::default()).await?;
    let a = create(&mut c, create_req("conformance-list-snap-a", GIB, 0)).await?;
    let b = create(&mut c, create_req("conformance-list-snap-b", GIB, 0)).await?;
    let mut of_a = Vec::new();
    for i in 0..3 {
        of_a.push(snapshot(&mut c, &format!("conformance-list-snap-a{i}"), &a.volume_id).await?);
    }
    let of_b = snapshot(&mut c, "conformance-list-snap-b0", &b.volume_id).await?;

    let all = list_snapshots(&mut c, ListSnapshotsRequest::default()).await?;
    ensure!(
        all.len() == before.len() + 4,
        "{} snapshots listed, {} before and 4 made",
        all.len(),
        before.len()
    );
    for s in of_a.iter().chain(std::iter::once(&of_b)) {
        ensure!(
            all.contains(s),
            "{s:?} is not listed as CreateSnapshot answered it"
        );
    }
    let paged = list_snapshots(
        &mut c,
        ListSnapshotsRequest {
            max_entries: 1,
            ..ListSnapshotsRequest::default()
        },
    )
    .await?;
    ensure!(paged == all, "pages of one differ from the single listing");

    let by_id = list_snapshots(
        &mut c,
        ListSnapshotsRequest {
            snapshot_id: of_b.snapshot_id.clone(),
            ..ListSnapshotsRequest::default()
        },
    )
    .await?;
    ensure!(by_id == vec![of_b.clone()], "by snapshot id: {by_id:?}");
    let by_source = list_snapshots(
        &mut c,
        ListSnapshotsRequest {
            source_volume_id: a.volume_id.clone(),
            max_entries: 2,
            ..ListSnapshotsRequest::default()
        },
    )
    .await?;
    let mut want = snapshot_ids(&of_a);
    let mut got = snapshot_ids(&by_source);
    want.sort_unstable();
    got.sort_unstable();
    ensure!(
        got == want,
        "by source {}: {got:?}, expected {want:?}",
        a.volume_id
    );
    let both = list_snapshots(
        &mut c,
        ListSnapshotsRequest {
            snapshot_id: of_b.snapshot_id.clone(),
            source_volume_id: a.volume_id.clone(),
            ..ListSnapshotsRequest::default()
        },
    )
    .await?;
    ensure!(both.is_empty(), "snapshot of b listed as of a: {both:?}");
    for (what, req) in [
        (
            "a snapshot id that does not exist",
            ListSnapshotsRequest {
                snapshot_id: "none-exist-id".into(),
                ..ListSnapshotsRequest::default()
            },
        ),
        (
            "a source that does not exist",
            ListSnapshotsRequest {
                source_volume_id: FAKE_ID.into(),
                ..ListSnapshotsRequest::default()
            },
        ),
    ] {
        let got = list_snapshots(&mut c, req).await?;
        ensure!(got.is_empty(), "ListSnapshots of {what}: {got:?}");
    }

    for s in of_a.iter().chain(std::iter::once(&of_b)) {
        delete_snapshot(&mut c, &s.snapshot_id).await?;
        delete_snapshot(&mut c, &s.snapshot_id)
            .await
            .context("DeleteSnapshot of a deleted snapshot must succeed")?;
    }
    let after = list_snapshots(&mut c, ListSnapshotsRequest::default()).await?;
    ensure!(
        after == before,
        "after the deletes: {after:?}, before: {before:?}"
    );
    for v in [&a, &b] {
        delete(&mut c, &v.volume_id).await?;
    }
    Ok(())
}
