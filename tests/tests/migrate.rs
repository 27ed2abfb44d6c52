//! `gluster-csi-migrate`: in-tree `kubernetes.io/glusterfs` PVs to gluster-csi, without copying
//! data.
//!
//! The procedure is walked on the example manifests in `tests/fixtures/intree/` (a cluster that
//! used the in-tree plugin): the dry run from files, then `--apply` through the API. Fake
//! Kubernetes API server: no API server can run on this machine, so `--apply` talks to
//! `kube_fake::FakeApi`, a small HTTP server serving the API's JSON (reached through a
//! KUBECONFIG, as an administrator's would be). Last, on the testbed (real Gluster, real
//! heketi-server, real node plugin and controller), a volume is made through Heketi the way the
//! in-tree plugin made it, a file is written into it, the PV is migrated, and the node plugin
//! stages the migrated PV from its `volumeAttributes` and reads the file back.

mod kube_fake;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetVolumeRequest,
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, VolumeCapability,
};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness};
use heketi_client::types::{SnapshotSettings, VolumeCreateRequest, VolumeDurabilityInfo};
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_fake::FakeApi;
use serde_json::{Value, json};

/// Limit on one step (a command, a CSI call), so that a hang fails the trial. Not an
/// assertion about speed.
const STEP: Duration = Duration::from_secs(120);
const DRIVER: &str = "gluster.heketi.csi";
/// The in-tree StorageClass's resturl in the fixtures.
const FIXTURE_RESTURL: &str = "http://heketi-storage.glusterfs.svc:8080";
const DATA_PV: &str = "pvc-3f1c2a7e-5b8d-4c61-9e0f-2a7b9c4d1e55";
const MEDIA_PV: &str = "pvc-9d27e410-77aa-4b02-a1c3-5e6f70819203";
const PVS: &str = "/api/v1/persistentvolumes";

fn main() {
    let opts = TestbedOptions {
        state_dir: harness::state_dir_for("migrate"),
        hosts: 3,
        heketi: true,
        controller: true,
        node: true,
        executor: ExecutorKind::default(),
    };
    harness::run(opts, |tb| {
        vec![
            harness::trial(
                "dry_run_of_the_example_cluster_writes_a_csi_pv_and_pvc_per_intree_pv",
                &tb,
                |_| dry_run_of_the_example_cluster(),
            ),
            harness::trial(
                "dry_run_names_the_pvs_it_cannot_migrate_and_exits_2",
                &tb,
                |_| dry_run_names_what_it_cannot_migrate(),
            ),
            harness::trial(
                "apply_through_the_api_recreates_pvs_and_pvcs_and_deletes_leftovers",
                &tb,
                |_| apply_through_the_api(),
            ),
            harness::trial(
                "apply_refuses_a_pvc_in_use_and_changes_nothing",
                &tb,
                |_| apply_refuses_a_pvc_in_use(),
            ),
            harness::trial(
                "apply_with_scale_consumers_stops_and_restarts_the_deployment",
                &tb,
                |_| apply_scales_consumers(),
            ),
            harness::trial(
                "migrated_pv_stages_and_serves_the_data_written_in_tree",
                &tb,
                migrated_pv_serves_the_old_data,
            ),
        ]
    })
}

// ---- helpers ----

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/intree")
        .join(name)
}

/// One run of the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn migrate(args: &[&str], kubeconfig: Option<&Path>) -> Result<Run> {
    let bin = bin_path("gluster-csi-migrate")?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        .env_remove("HEKETI_URL")
        .env_remove("DRIVER_NAME")
        .kill_on_drop(true);
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        // No API server reachable by accident.
        None => cmd.env("KUBECONFIG", "/nonexistent/kubeconfig"),
    };
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .context("gluster-csi-migrate did not finish")?
        .context("cannot run gluster-csi-migrate")?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The PVs and PVCs of a YAML stream, read with k8s-openapi types.
fn objects(yaml: &str) -> Result<(Vec<PersistentVolume>, Vec<PersistentVolumeClaim>)> {
    use serde::Deserialize as _;
    let mut pvs = Vec::new();
    let mut pvcs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        match v["kind"].as_str() {
            Some("PersistentVolume") => pvs.push(serde_json::from_value(v)?),
            Some("PersistentVolumeClaim") => pvcs.push(serde_json::from_value(v)?),
            Some(other) => bail!("unexpected kind {other} in the output"),
            None if v.is_null() => {}
            None => bail!("document without kind: {v}"),
        }
    }
    Ok((pvs, pvcs))
}

/// The documents of a YAML stream as JSON values (`kind: List` items flattened).
fn docs(yaml: &str) -> Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if v["kind"] == "List" {
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
        } else if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn find<'a>(items: &'a [PersistentVolume], name: &str) -> Result<&'a PersistentVolume> {
    items
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(name))
        .with_context(|| format!("{name} is not in the output"))
}

fn attrs(pv: &PersistentVolume) -> BTreeMap<String, String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .and_then(|c| c.volume_attributes.clone())
        .unwrap_or_default()
}

fn handle(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default()
}

fn collection_of(v: &Value) -> Option<String> {
    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
    Some(match v["kind"].as_str()? {
        "PersistentVolume" => PVS.to_owned(),
        "PersistentVolumeClaim" => format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        "Endpoints" => format!("/api/v1/namespaces/{ns}/endpoints"),
        "Service" => format!("/api/v1/namespaces/{ns}/services"),
        "StorageClass" => "/apis/storage.k8s.io/v1/storageclasses".to_owned(),
        _ => return None,
    })
}

/// A fake API holding the example cluster, and a kubeconfig for it in `dir`.
async fn example_cluster(dir: &Path) -> Result<(FakeApi, PathBuf)> {
    let api = FakeApi::start().await;
    for file in ["cluster.yaml", "endpoints-legacy.yaml"] {
        for v in docs(&std::fs::read_to_string(fixture(file))?)? {
            let collection = collection_of(&v).context("unknown kind in the fixtures")?;
            api.put(&collection, v);
        }
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    Ok((api, kubeconfig))
}

fn position(log: &[String], want: &str) -> Result<usize> {
    log.iter()
        .position(|r| r.split('?').next() == Some(want))
        .with_context(|| format!("no request {want:?} in {log:#?}"))
}

// ---- trials ----

async fn dry_run_of_the_example_cluster() -> Result<()> {
    let cluster = fixture("cluster.yaml");
    let endpoints = fixture("endpoints-legacy.yaml");
    let run = migrate(
        &[
            "--from-file",
            &cluster.display().to_string(),
            "--endpoints-file",
            &endpoints.display().to_string(),
            "--controller-heketi-url",
            FIXTURE_RESTURL,
        ],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);
    let (pvs, pvcs) = objects(&run.stdout)?;
    let mut names: Vec<&str> = pvs
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    names.sort_unstable();
    ensure!(
        names == ["legacy-archive", "legacy-scratch", DATA_PV, MEDIA_PV],
        "every in-tree PV and nothing else (no nfs-backup): {names:?}"
    );
    ensure!(
        pvcs.len() == 3,
        "legacy-scratch has no claim: {}",
        pvcs.len()
    );

    // The dynamic PV of shop/data.
    let pv = find(&pvs, DATA_PV)?;
    let spec = pv.spec.as_ref().context("spec")?;
    let csi = spec.csi.as_ref().context("csi")?;
    ensure!(spec.glusterfs.is_none());
    ensure!(csi.driver == DRIVER);
    ensure!(
        csi.volume_handle == "1:a5b6c7d8e9f00112233445566778899a",
        "the controller's id for the Heketi volume on its default backend: {}",
        csi.volume_handle
    );
    let parsed = gluster_csi_controller::volume_id::VolumeId::parse(&csi.volume_handle)
        .context("the controller parses the handle")?;
    ensure!(parsed.heketi_id == "a5b6c7d8e9f00112233445566778899a");
    let a = attrs(pv);
    ensure!(
        a.get("glusterServers").map(String::as_str)
            == Some("192.168.121.11,192.168.121.12,192.168.121.13"),
        "{a:?}"
    );
    ensure!(
        a.get("glusterVolume").map(String::as_str) == Some("vol_a5b6c7d8e9f00112233445566778899a")
    );
    ensure!(a.get("gid").map(String::as_str) == Some("40000"));
    let ann = pv.metadata.annotations.clone().unwrap_or_default();
    ensure!(ann.get("pv.beta.kubernetes.io/gid").map(String::as_str) == Some("40000"));
    ensure!(
        ann.get("pv.kubernetes.io/provisioned-by")
            .map(String::as_str)
            == Some(DRIVER)
    );
    ensure!(!ann.contains_key("kubernetes.io/createdby"), "{ann:?}");
    ensure!(spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain"));
    ensure!(spec.storage_class_name.as_deref() == Some("glusterfs-storage"));
    ensure!(spec.access_modes == Some(vec!["ReadWriteMany".to_owned()]));
    ensure!(
        spec.capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.as_str())
            == Some("5Gi")
    );
    let claim = spec.claim_ref.as_ref().context("claimRef")?;
    ensure!(claim.namespace.as_deref() == Some("shop") && claim.name.as_deref() == Some("data"));
    ensure!(claim.uid.is_none(), "the new PVC has a new uid");
    let secret = csi
        .controller_expand_secret_ref
        .as_ref()
        .context("expand secret")?;
    ensure!(secret.name.as_deref() == Some("heketi-storage-admin-secret"));
    ensure!(pv.metadata.resource_version.is_none() && pv.metadata.uid.is_none());
    ensure!(pv.status.is_none());

    let pvc = pvcs
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("data"))
        .context("PVC data")?;
    ensure!(pvc.metadata.namespace.as_deref() == Some("shop"));
    let pvc_spec = pvc.spec.as_ref().context("pvc spec")?;
    ensure!(pvc_spec.volume_name.as_deref() == Some(DATA_PV));
    ensure!(pvc_spec.storage_class_name.as_deref() == Some("glusterfs-storage"));
    let labels = pvc.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get("app.kubernetes.io/name").map(String::as_str) == Some("shop"));
    let pvc_ann = pvc.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        pvc_ann.keys().collect::<Vec<_>>() == ["backup.example.com/schedule"],
        "binding annotations dropped, the user's kept: {pvc_ann:?}"
    );
    ensure!(pvc.status.is_none() && pvc.metadata.uid.is_none());

    // Mount options, read-only and access modes of shop/media kept.
    let media = find(&pvs, MEDIA_PV)?;
    let mspec = media.spec.as_ref().context("spec")?;
    ensure!(
        mspec.mount_options
            == Some(vec![
                "log-level=WARNING".to_owned(),
                "attribute-timeout=30".to_owned()
            ])
    );
    ensure!(mspec.csi.as_ref().and_then(|c| c.read_only) == Some(true));
    ensure!(mspec.access_modes.as_ref().map(Vec::len) == Some(2));
    ensure!(
        attrs(media).get("glusterServers").map(String::as_str)
            == Some("192.168.121.12,192.168.121.13,192.168.121.11")
    );

    // The static PV: servers from --endpoints-file, a static handle.
    let archive = find(&pvs, "legacy-archive")?;
    ensure!(handle(archive) == "static-legacy-archive");
    ensure!(
        attrs(archive).get("glusterServers").map(String::as_str) == Some("10.20.0.5,10.20.0.6")
    );
    ensure!(attrs(archive).get("glusterVolume").map(String::as_str) == Some("archive"));
    ensure!(
        attrs(find(&pvs, "legacy-scratch")?)
            .get("glusterVolume")
            .map(String::as_str)
            == Some("scratch")
    );

    // The plan: ordered steps, leftovers of the shop PVCs only.
    let plan: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('#')).collect();
    let at = |needle: &str| {
        plan.iter()
            .position(|l| l.contains(needle))
            .with_context(|| format!("plan has no {needle:?}:\n{}", plan.join("\n")))
    };
    let order = [
        at(&format!(
            "set reclaim policy Retain on in-tree PV {DATA_PV}"
        ))?,
        at("use PVC shop/data")?,
        at("kubectl -n shop delete pvc data")?,
        at(&format!("kubectl delete pv {DATA_PV}"))?,
        at(&format!("create the CSI PV {DATA_PV}"))?,
        at("create the PVC shop/data")?,
        at("wait until PVC shop/data is Bound")?,
        at("workloads using PVC shop/data back up")?,
        at("delete endpoints glusterfs-dynamic-3f1c2a7e-5b8d-4c61-9e0f-2a7b9c4d1e55")?,
        at(&format!(
            "restore reclaim policy Delete: kubectl patch pv {DATA_PV}"
        ))?,
    ];
    ensure!(
        order.windows(2).all(|w| w[0] < w[1]),
        "steps out of order {order:?}:\n{}",
        plan.join("\n")
    );
    for leftover in [
        "delete endpoints glusterfs-dynamic-9d27e410-77aa-4b02-a1c3-5e6f70819203",
        "delete service glusterfs-dynamic-3f1c2a7e-5b8d-4c61-9e0f-2a7b9c4d1e55",
        "delete service glusterfs-dynamic-9d27e410-77aa-4b02-a1c3-5e6f70819203",
    ] {
        at(leftover)?;
    }
    ensure!(
        !run.stdout.contains("delete endpoints glusterfs-cluster"),
        "hand-made Endpoints are not leftovers"
    );
    ensure!(
        !plan
            .iter()
            .any(|l| l.contains("Retain on in-tree PV legacy-archive")),
        "already Retain: no step"
    );

    // Without --controller-heketi-url the class's resturl is recorded in the handle.
    let run = migrate(
        &[
            "--from-file",
            &cluster.display().to_string(),
            "--servers",
            "g1.example.com,g2.example.com",
            DATA_PV,
        ],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);
    let (pvs, _) = objects(&run.stdout)?;
    ensure!(pvs.len() == 1, "only the PV named");
    let id =
        gluster_csi_controller::volume_id::VolumeId::parse(&handle(&pvs[0])).context("parses")?;
    ensure!(
        id.backend
            == gluster_csi_controller::volume_id::BackendRef::Url(FIXTURE_RESTURL.to_owned()),
        "{:?}",
        id.backend
    );
    Ok(())
}

async fn dry_run_names_what_it_cannot_migrate() -> Result<()> {
    let run = migrate(
        &[
            "--from-file",
            &fixture("cluster.yaml").display().to_string(),
        ],
        None,
    )
    .await?;
    ensure!(run.code == Some(2), "exit {:?}: {}", run.code, run.stderr);
    ensure!(
        run.stdout.contains("# NOT MIGRATED legacy-archive")
            && run.stdout.contains("legacy/glusterfs-cluster"),
        "{}",
        run.stdout
    );
    let (pvs, _) = objects(&run.stdout)?;
    ensure!(pvs.len() == 2, "the two dynamic PVs are still written");

    // A file that is not YAML: an error naming it, exit 1.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: PersistentVolume\nspec: [1, 2\n")?;
    let run = migrate(&["--from-file", &bad.display().to_string()], None).await?;
    ensure!(run.code == Some(1), "exit {:?}", run.code);
    ensure!(run.stderr.contains("bad.yaml"), "{}", run.stderr);
    Ok(())
}

async fn apply_through_the_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, kubeconfig) = example_cluster(dir.path()).await?;
    let backup = dir.path().join("backup");
    let run = migrate(
        &[
            "--apply",
            "--controller-heketi-url",
            FIXTURE_RESTURL,
            "--backup-dir",
            &backup.display().to_string(),
        ],
        Some(&kubeconfig),
    )
    .await?;
    ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);

    // Every Gluster PV is now a CSI PV of ours, bound to its PVC again.
    for name in [DATA_PV, MEDIA_PV, "legacy-archive", "legacy-scratch"] {
        let pv: PersistentVolume =
            serde_json::from_value(api.get(PVS, name).context(name.to_owned())?)?;
        let spec = pv.spec.clone().context("spec")?;
        ensure!(spec.glusterfs.is_none(), "{name} still in-tree");
        ensure!(spec.csi.as_ref().map(|c| c.driver.as_str()) == Some(DRIVER));
        ensure!(spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain"));
        let backed_up = std::fs::read_to_string(backup.join(format!("{name}.yaml")))
            .with_context(|| format!("backup of {name}"))?;
        ensure!(backed_up.contains("glusterfs:"), "the backup is the old PV");
    }
    ensure!(api.get(PVS, "nfs-backup").is_some());
    let data: PersistentVolumeClaim = serde_json::from_value(
        api.get("/api/v1/namespaces/shop/persistentvolumeclaims", "data")
            .context("PVC shop/data")?,
    )?;
    ensure!(data.status.and_then(|s| s.phase).as_deref() == Some("Bound"));
    ensure!(data.spec.and_then(|s| s.volume_name).as_deref() == Some(DATA_PV));
    let pv: PersistentVolume = serde_json::from_value(api.get(PVS, DATA_PV).context("pv")?)?;
    ensure!(
        pv.metadata
            .annotations
            .unwrap_or_default()
            .get("pv.beta.kubernetes.io/gid")
            .map(String::as_str)
            == Some("40000")
    );
    ensure!(handle_of_value(&api, DATA_PV) == "1:a5b6c7d8e9f00112233445566778899a");

    // Leftovers gone, hand-made Endpoints kept.
    ensure!(api.names("/api/v1/namespaces/shop/endpoints").is_empty());
    ensure!(api.names("/api/v1/namespaces/shop/services").is_empty());
    ensure!(api.names("/api/v1/namespaces/legacy/endpoints") == ["glusterfs-cluster"]);

    // In order: Retain, PVC deleted, PV deleted, PV created, PVC created.
    let log = api.requests();
    let order = [
        position(&log, &format!("PATCH {PVS}/{DATA_PV}"))?,
        position(
            &log,
            "DELETE /api/v1/namespaces/shop/persistentvolumeclaims/data",
        )?,
        position(&log, &format!("DELETE {PVS}/{DATA_PV}"))?,
        position(&log, &format!("CREATED {PVS}/{DATA_PV}"))?,
        position(
            &log,
            "CREATED /api/v1/namespaces/shop/persistentvolumeclaims/data",
        )?,
    ];
    ensure!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {log:#?}");

    // Running again finds nothing left to do.
    let again = migrate(
        &["--apply", "--backup-dir", &backup.display().to_string()],
        Some(&kubeconfig),
    )
    .await?;
    ensure!(
        again.code == Some(0),
        "exit {:?}: {}",
        again.code,
        again.stderr
    );
    let dry = migrate(&[], Some(&kubeconfig)).await?;
    ensure!(
        dry.stdout.contains("0 PersistentVolume(s) to migrate"),
        "{}",
        dry.stdout
    );
    Ok(())
}

fn handle_of_value(api: &FakeApi, name: &str) -> String {
    api.get(PVS, name)
        .and_then(|v| v["spec"]["csi"]["volumeHandle"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn pod(name: &str, claim: &str, owner: Option<(&str, &str)>) -> Value {
    let mut meta = json!({"name": name, "namespace": "shop"});
    if let Some((kind, owner_name)) = owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner_name,
            "uid": "11111111-2222-4333-8444-555555555555", "controller": true,
        }]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{"name": "app", "image": "registry.example.com/shop:1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
        "status": {"phase": "Running"},
    })
}

async fn apply_refuses_a_pvc_in_use() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, kubeconfig) = example_cluster(dir.path()).await?;
    api.put(
        "/api/v1/namespaces/shop/pods",
        pod("shop-0", "data", Some(("StatefulSet", "shop"))),
    );
    let run = migrate(
        &[
            "--apply",
            "--backup-dir",
            &dir.path().join("b").display().to_string(),
        ],
        Some(&kubeconfig),
    )
    .await?;
    ensure!(run.code == Some(1), "exit {:?}: {}", run.code, run.stderr);
    ensure!(
        run.stderr.contains("shop-0") && run.stderr.contains("--scale-consumers"),
        "{}",
        run.stderr
    );
    let writes: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    ensure!(writes.is_empty(), "nothing may change: {writes:?}");
    ensure!(!dir.path().join("b").exists(), "no backup either");
    Ok(())
}

async fn apply_scales_consumers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, kubeconfig) = example_cluster(dir.path()).await?;
    let api = Arc::new(api);
    let deployments = "/apis/apps/v1/namespaces/shop/deployments";
    let replicasets = "/apis/apps/v1/namespaces/shop/replicasets";
    let pods = "/api/v1/namespaces/shop/pods";
    api.put(
        deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    );
    api.put(
        replicasets,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "web-5d8f", "ownerReferences": [{
                   "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                   "uid": "66666666-2222-4333-8444-555555555555", "controller": true}]},
               "spec": {"selector": {"matchLabels": {"app": "web"}}}}),
    );
    for p in ["web-5d8f-a", "web-5d8f-b"] {
        api.put(pods, pod(p, "data", Some(("ReplicaSet", "web-5d8f"))));
    }
    // What the ReplicaSet controller would do: no pods once the Deployment is at zero.
    let watcher = {
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            loop {
                let zero = api
                    .get(deployments, "web")
                    .is_some_and(|d| d["spec"]["replicas"] == json!(0));
                if zero {
                    for p in api.names(pods) {
                        api.remove(pods, &p);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let run = migrate(
        &[
            "--apply",
            "--scale-consumers",
            "--wait-timeout",
            "60",
            "--backup-dir",
            &dir.path().join("b").display().to_string(),
            DATA_PV,
        ],
        Some(&kubeconfig),
    )
    .await?;
    watcher.abort();
    ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);
    let d = api.get(deployments, "web").context("deployment")?;
    ensure!(d["spec"]["replicas"] == json!(2), "scaled back up: {d}");
    let log = api.requests();
    let order = [
        position(&log, &format!("PATCH {deployments}/web"))?,
        position(
            &log,
            "DELETE /api/v1/namespaces/shop/persistentvolumeclaims/data",
        )?,
        position(&log, &format!("CREATED {PVS}/{DATA_PV}"))?,
    ];
    ensure!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {log:#?}");
    let patches = log
        .iter()
        .filter(|r| r.starts_with(&format!("PATCH {deployments}/web")))
        .count();
    ensure!(patches == 2, "down, then up: {patches}");
    ensure!(
        api.get(PVS, MEDIA_PV)
            .is_some_and(|v| v["spec"]["glusterfs"].is_object()),
        "only the PV named was migrated"
    );
    Ok(())
}

/// Makes a volume through Heketi as the in-tree plugin did, writes into it through a plain
/// Gluster mount, migrates its PV, and reads the file back through the node plugin staging the
/// migrated PV.
async fn migrated_pv_serves_the_old_data(tb: Arc<Testbed>) -> Result<()> {
    let heketi = tb.heketi_client()?;
    let heketi_url = tb
        .heketi_url()
        .context("heketi-server is part of the testbed")?;
    // The in-tree provisioner's request: gid from the class range, snapshot reserve always on.
    let info = tokio::time::timeout(
        STEP,
        heketi.volume_create(&VolumeCreateRequest {
            size: 1,
            durability: VolumeDurabilityInfo::replicate(3),
            gid: 40000,
            snapshot: SnapshotSettings {
                enable: true,
                factor: 1.0,
            },
            ..VolumeCreateRequest::default()
        }),
    )
    .await
    .context("heketi volume create timed out")??;
    ensure!(
        info.name == format!("vol_{}", info.id),
        "Heketi's default name: {}",
        info.name
    );

    // What a pod wrote through the in-tree mount.
    let scratch = tb.scratch_dir("migrate")?;
    let intree_mount = scratch.join("intree-mount");
    tb.mount_volume(&info.name, &intree_mount).await?;
    let content = format!("written before the migration into {}\n", info.name);
    let write = std::fs::write(intree_mount.join("order-1234.json"), &content);
    tb.unmount(&intree_mount).await?;
    write.context("writing through the in-tree style mount")?;

    // The in-tree objects for it, from the example manifests.
    let mut pv: PersistentVolume =
        serde_json::from_value(example(&|v| v["metadata"]["name"] == DATA_PV)?)?;
    let annotations = pv.metadata.annotations.get_or_insert_default();
    annotations.insert(
        "gluster.kubernetes.io/heketi-volume-id".into(),
        info.id.clone(),
    );
    annotations.insert("pv.beta.kubernetes.io/gid".into(), "40000".into());
    let gfs = pv
        .spec
        .as_mut()
        .and_then(|s| s.glusterfs.as_mut())
        .context("in-tree source")?;
    gfs.path = info.name.clone();
    let mut ep: Endpoints = serde_json::from_value(example(&|v| {
        v["kind"] == "Endpoints"
            && v["metadata"]["labels"]["gluster.kubernetes.io/provisioned-for-pvc"] == "data"
    })?)?;
    let hosts: Vec<String> = tb.hosts().iter().map(|h| h.address.to_string()).collect();
    if let Some(subset) = ep.subsets.as_mut().and_then(|s| s.first_mut()) {
        subset.addresses = Some(
            hosts
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::EndpointAddress {
                    ip: ip.clone(),
                    ..Default::default()
                })
                .collect(),
        );
    }
    let pvc: PersistentVolumeClaim = serde_json::from_value(example(&|v| {
        v["kind"] == "PersistentVolumeClaim" && v["metadata"]["name"] == "data"
    })?)?;
    let mut class: StorageClass =
        serde_json::from_value(example(&|v| v["kind"] == "StorageClass")?)?;
    class
        .parameters
        .get_or_insert_default()
        .insert("resturl".into(), heketi_url.clone());
    let mut input = String::new();
    for doc in [
        serde_yaml_ng::to_string(&class)?,
        serde_yaml_ng::to_string(&pv)?,
        serde_yaml_ng::to_string(&pvc)?,
        serde_yaml_ng::to_string(&ep)?,
    ] {
        input.push_str("---\n");
        input.push_str(&doc);
    }
    let input_file = scratch.join("intree.yaml");
    std::fs::write(&input_file, input)?;

    // Migrate (dry run: the objects are what an administrator would apply).
    let run = migrate(
        &[
            "--from-file",
            &input_file.display().to_string(),
            "--controller-heketi-url",
            &heketi_url,
        ],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);
    let (pvs, _) = objects(&run.stdout)?;
    let migrated = find(&pvs, DATA_PV)?;
    let volume_id = handle(migrated);
    ensure!(
        volume_id == format!("1:{}", info.id),
        "handle {volume_id} names the Heketi volume on the controller's backend"
    );
    let context: HashMap<String, String> = attrs(migrated).into_iter().collect();
    ensure!(
        context.get("glusterServers") == Some(&hosts.join(",")),
        "{context:?}"
    );

    // The node plugin stages the migrated PV from its volumeAttributes alone.
    let mut node = NodeClient::connect(tb.env().node_endpoint.clone()).await?;
    let staging = scratch.join("globalmount");
    let target = scratch.join("pod-after-migration");
    let capability = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: migrated
                .spec
                .as_ref()
                .and_then(|s| s.mount_options.clone())
                .unwrap_or_default(),
            ..MountVolume::default()
        })),
    };
    step(node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(capability.clone()),
        volume_context: context.clone(),
        ..Default::default()
    }))
    .await
    .context("NodeStageVolume of the migrated PV")?;
    tb.record_mount(&staging)?;
    let publish = step(node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability),
        volume_context: context,
        ..Default::default()
    }))
    .await;
    let checked = match publish {
        Ok(()) => {
            tb.record_mount(&target)?;
            check_served(&target, &content).await
        }
        Err(e) => Err(e.context("NodePublishVolume of the migrated PV")),
    };
    let _ = step(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: volume_id.clone(),
        target_path: target.display().to_string(),
    }))
    .await;
    let unstaged = step(node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.display().to_string(),
    }))
    .await;
    checked?;
    unstaged.context("NodeUnstageVolume")?;

    // The controller reaches the same Heketi volume through the handle: get and expand.
    let mut controller = ControllerClient::connect(tb.env().controller_endpoint.clone()).await?;
    let got = tokio::time::timeout(
        STEP,
        controller.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: volume_id.clone(),
        }),
    )
    .await
    .context("ControllerGetVolume timed out")??
    .into_inner();
    let v = got.volume.context("volume")?;
    ensure!(v.volume_id == volume_id);
    ensure!(
        v.volume_context.get("glusterVolume") == Some(&info.name),
        "{:?}",
        v.volume_context
    );
    tokio::time::timeout(
        STEP,
        controller.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        }),
    )
    .await
    .context("ControllerExpandVolume timed out")??;
    let after = heketi.volume_info(&info.id).await?;
    ensure!(
        after.size == 2,
        "expanded through the migrated handle: {}",
        after.size
    );
    heketi.volume_delete(&info.id).await?;
    Ok(())
}

/// The file is there, and the root is group-owned by the gid of the annotation with the
/// setgid bit and group write: a pod given that supplemental group (what kubelet does with the
/// annotation the migration keeps) can write.
async fn check_served(target: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let read = std::fs::read_to_string(target.join("order-1234.json"))
        .context("reading the file through the migrated PV")?;
    ensure!(read == content, "{read:?}");
    let meta = std::fs::metadata(target)?;
    ensure!(meta.gid() == 40000, "root group {}", meta.gid());
    ensure!(meta.mode() & 0o2070 == 0o2070, "mode {:o}", meta.mode());
    Ok(())
}

/// The one document of the example cluster matching `pick`.
fn example(pick: &dyn Fn(&Value) -> bool) -> Result<Value> {
    docs(&std::fs::read_to_string(fixture("cluster.yaml"))?)?
        .into_iter()
        .find(|v| pick(v))
        .context("no such object in the example cluster")
}

async fn step<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<()> {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => bail!("{:?}: {}", status.code(), status.message()),
        Err(_) => bail!("no answer within {STEP:?}"),
    }
}
