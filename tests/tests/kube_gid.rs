//! The gid annotator: `pv.beta.kubernetes.io/gid` on this driver's PVs made with a gid.
//!
//! Fake Kubernetes API server: these tests talk to `kube_fake::FakeApi`, a small HTTP server
//! serving the API's JSON for the paths used (list and watch of PersistentVolumes, GET and
//! PATCH of one), which can hold two replicas' patches until both have read the same version.
//! The annotator against the real API server: `k8s_e2e` (the PV of a claim carries the gid).

mod kube_fake;

use clap::Parser as _;
use gluster_csi_controller::kube::LazyClient;
use gluster_csi_controller::kube::gid_annotator::{
    self, GID_ANNOTATION, GidAnnotatorArgs, Outcome, annotate,
};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_fake::FakeApi;
use serde_json::{Value, json};

const PVS: &str = "/api/v1/persistentvolumes";
const DRIVER: &str = "gluster.heketi.csi";

fn pv(name: &str, driver: &str, gid: Option<&str>, annotation: Option<&str>) -> Value {
    let mut attrs = json!({
        "glusterServers": "198.18.0.2,198.18.0.3",
        "glusterVolume": format!("csi_{name}"),
    });
    if let Some(g) = gid {
        attrs["gid"] = json!(g);
    }
    let mut meta = json!({"name": name});
    if let Some(a) = annotation {
        meta["annotations"] = json!({ GID_ANNOTATION: a, "owner": "someone" });
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": meta,
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "capacity": {"storage": "1Gi"},
            "persistentVolumeReclaimPolicy": "Delete",
            "csi": {
                "driver": driver,
                "volumeHandle": "1:0123456789abcdef0123456789abcdef",
                "volumeAttributes": attrs,
            },
        },
    })
}

fn annotation(api: &FakeApi, name: &str) -> Option<String> {
    api.get(PVS, name)?["metadata"]["annotations"][GID_ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

fn patch_requests(api: &FakeApi, name: &str) -> usize {
    let want = format!("PATCH {PVS}/{name}");
    api.requests()
        .iter()
        .filter(|r| r.split('?').next() == Some(want.as_str()))
        .count()
}

#[tokio::test]
async fn our_pvs_get_the_annotation_and_nothing_else_is_touched() {
    let api = FakeApi::start().await;
    api.put(PVS, pv("a-ours", DRIVER, Some("2001"), None));
    api.put(
        PVS,
        pv(
            "b-other-driver",
            "other.csi.example.com",
            Some("2002"),
            None,
        ),
    );
    api.put(PVS, pv("c-user-value", DRIVER, Some("2003"), Some("5555")));
    api.put(PVS, pv("d-no-gid", DRIVER, None, None));
    api.put(PVS, pv("e-same-value", DRIVER, Some("2005"), Some("2005")));
    api.put(PVS, pv("z-last", DRIVER, Some("2009"), None));

    let task = gid_annotator::spawn(LazyClient::from_client(api.client()), DRIVER.into());
    // PVs are handled in list order: once the last one is annotated, all were seen.
    api.wait_for("z-last annotated", |a| annotation(a, "z-last").is_some())
        .await;

    assert_eq!(annotation(&api, "a-ours").as_deref(), Some("2001"));
    assert_eq!(annotation(&api, "z-last").as_deref(), Some("2009"));
    assert_eq!(
        annotation(&api, "c-user-value").as_deref(),
        Some("5555"),
        "a user's value is never changed"
    );
    assert_eq!(annotation(&api, "b-other-driver"), None);
    assert_eq!(annotation(&api, "d-no-gid"), None);
    for untouched in ["b-other-driver", "c-user-value", "d-no-gid", "e-same-value"] {
        assert_eq!(
            patch_requests(&api, untouched),
            0,
            "{untouched} was patched"
        );
    }
    let owner =
        api.get(PVS, "c-user-value").expect("pv")["metadata"]["annotations"]["owner"].clone();
    assert_eq!(owner, json!("someone"));

    // A PV created while the annotator runs is annotated from the watch.
    api.put(PVS, pv("f-later", DRIVER, Some("2010"), None));
    api.wait_for("f-later annotated", |a| annotation(a, "f-later").is_some())
        .await;
    assert_eq!(annotation(&api, "f-later").as_deref(), Some("2010"));
    assert_eq!(api.patches_applied(&format!("{PVS}/f-later")), 1);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/persistentvolumes?") && r.contains("watch=true")),
        "the annotator watches: {:?}",
        api.requests()
    );
    task.abort();
}

#[tokio::test]
async fn two_annotators_at_once_apply_one_patch() {
    let api = FakeApi::start().await;
    // Hold JSON patches until both replicas sent theirs: both read the same version.
    api.gate_patches(2);
    api.put(PVS, pv("pvc-race", DRIVER, Some("3001"), None));
    let one = gid_annotator::spawn(LazyClient::from_client(api.client()), DRIVER.into());
    let two = gid_annotator::spawn(LazyClient::from_client(api.client()), DRIVER.into());
    let path = format!("{PVS}/pvc-race");
    api.wait_for("both replicas patched", |a| {
        a.patches_applied(&path) + a.patches_rejected(&path) >= 2
    })
    .await;
    assert_eq!(annotation(&api, "pvc-race").as_deref(), Some("3001"));
    assert_eq!(api.patches_applied(&path), 1, "exactly one patch applied");
    assert_eq!(
        api.patches_rejected(&path),
        1,
        "the other one was refused for its stale resourceVersion (409)"
    );
    one.abort();
    two.abort();
}

#[tokio::test]
async fn a_value_set_by_a_user_after_our_read_is_kept() {
    let api = FakeApi::start().await;
    api.put(PVS, pv("pvc-user", DRIVER, Some("4001"), None));
    let client = api.client();
    let pvs: Api<PersistentVolume> = Api::all(client);
    let stale = pvs.get("pvc-user").await.expect("read");
    // The user annotates between our read and our patch.
    pvs.patch(
        "pvc-user",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {GID_ANNOTATION: "7777"}}})),
    )
    .await
    .expect("user patch");

    let outcome = annotate(&pvs, DRIVER, stale).await.expect("annotate");
    assert_eq!(outcome, Outcome::AlreadySet);
    assert_eq!(annotation(&api, "pvc-user").as_deref(), Some("7777"));
    assert_eq!(api.patches_rejected(&format!("{PVS}/pvc-user")), 1);

    // And on a fresh read of a PV of ours without it, the same call adds it.
    api.put(PVS, pv("pvc-fresh", DRIVER, Some("4002"), None));
    let fresh = pvs.get("pvc-fresh").await.expect("read");
    assert_eq!(
        annotate(&pvs, DRIVER, fresh).await.expect("annotate"),
        Outcome::Added("4002".into())
    );

    // A PV deleted after our read is reported gone, not an error.
    api.put(PVS, pv("pvc-deleted", DRIVER, Some("4003"), None));
    let before_delete = pvs.get("pvc-deleted").await.expect("read");
    pvs.delete("pvc-deleted", &Default::default())
        .await
        .expect("delete");
    assert_eq!(
        annotate(&pvs, DRIVER, before_delete)
            .await
            .expect("annotate"),
        Outcome::Gone
    );
}

#[tokio::test]
async fn a_pv_the_api_fails_on_is_tried_again_by_itself_and_does_not_hold_up_others() {
    let api = FakeApi::start().await;
    let flaky = format!("{PVS}/pvc-flaky");
    api.put(PVS, pv("pvc-flaky", DRIVER, Some("6001"), None));
    api.fail(&flaky, 503, "ServiceUnavailable");
    let task = gid_annotator::spawn(LazyClient::from_client(api.client()), DRIVER.into());

    // Nothing changes on the PV, so every attempt after the first comes from the retry queue.
    api.wait_for("three attempts on pvc-flaky", |a| {
        patch_requests(a, "pvc-flaky") >= 3
    })
    .await;
    assert_eq!(annotation(&api, "pvc-flaky"), None);
    // Another PV is annotated while the flaky one waits for its next attempt.
    api.put(PVS, pv("pvc-healthy", DRIVER, Some("6002"), None));
    api.wait_for("pvc-healthy annotated", |a| {
        annotation(a, "pvc-healthy").is_some()
    })
    .await;

    api.recover(&flaky);
    api.wait_for("pvc-flaky annotated once the API answers", |a| {
        annotation(a, "pvc-flaky").is_some()
    })
    .await;
    assert_eq!(annotation(&api, "pvc-flaky").as_deref(), Some("6001"));
    assert_eq!(api.patches_applied(&flaky), 1);
    task.abort();
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    gid: GidAnnotatorArgs,
}

#[test]
fn the_flag_is_off_unless_given() {
    let off = Cli::try_parse_from(["x"]).expect("parse");
    assert!(!off.gid.annotate_gid);
    let on = Cli::try_parse_from(["x", "--annotate-gid"]).expect("parse");
    assert!(on.gid.annotate_gid);
}

#[tokio::test]
async fn the_controller_binary_annotates_with_annotate_gid_from_the_environment() {
    let api = FakeApi::start().await;
    api.put(PVS, pv("pvc-from-binary", DRIVER, Some("5001"), None));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("write kubeconfig");
    let socket = dir.path().join("csi.sock");
    let binary = gluster_csi_testbed::bin_path("gluster-csi-controller").expect("binary");
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .env("ANNOTATE_GID", "true")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("HEKETI_URL")
        .kill_on_drop(true)
        .spawn()
        .expect("start gluster-csi-controller");
    api.wait_for("pvc-from-binary annotated by the controller", |a| {
        annotation(a, "pvc-from-binary").is_some()
    })
    .await;
    assert_eq!(annotation(&api, "pvc-from-binary").as_deref(), Some("5001"));
    let _ = child.start_kill();
    let _ = child.wait().await;
}
