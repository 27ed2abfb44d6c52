//! The PVC-to-pod flow as Kubernetes drives it, from the example manifests in `deploy/examples`,
//! on a real testbed (heketi-server, controller, node plugin, three Gluster hosts).
//!
//! The flow itself lives in `gluster_csi_testbed::demo` so that `gluster-csi-testbed demo` runs
//! exactly what is tested here. The first two trials check the requests and objects the flow
//! builds from the manifests; the third runs it: create, PV, stage, two publishes, a file across
//! pods, expand, unpublish, unstage, delete — and nothing left behind.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use csi_proto::v1::volume_capability::AccessType;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::{Volume, list_volumes_response};
use gluster_csi_testbed::demo::{self, Examples, Narration, SIDECAR_PREFIX};
use gluster_csi_testbed::{Testbed, TestbedOptions, harness};

fn main() {
    let opts = TestbedOptions::new(harness::state_dir_for("e2e"));
    harness::run(opts, |tb| {
        vec![
            harness::trial(
                "example_manifests_parse_as_a_class_of_this_driver_its_secret_and_an_rwx_claim",
                &tb,
                |_| async move { example_manifests_parse() },
            ),
            harness::trial(
                "provisioner_request_carries_claim_size_class_parameters_secret_and_mount_options",
                &tb,
                provisioner_request,
            ),
            harness::trial(
                "pvc_to_two_pods_expand_and_delete_leaves_no_volume_brick_mount_or_directory",
                &tb,
                pvc_to_two_pods_and_back,
            ),
        ]
    })
}

fn example_manifests_parse() -> Result<()> {
    let ex = Examples::load()?;
    ensure!(ex.storage_class.provisioner == "gluster.heketi.csi");
    let params = ex.storage_class.parameters.clone().unwrap_or_default();
    ensure!(
        params.contains_key("volumetype"),
        "the class has no volumetype: {params:?}"
    );
    // No resturl: the class uses the default backend the operator set in the overlay.
    ensure!(
        !params.contains_key("resturl"),
        "the class names a resturl: {params:?}"
    );
    let secret_name = params
        .get(&format!("{SIDECAR_PREFIX}provisioner-secret-name"))
        .context("the class names no provisioner secret")?;
    ensure!(ex.secret.metadata.name.as_ref() == Some(secret_name));
    let keys = ex.secret.string_data.clone().unwrap_or_default();
    ensure!(
        keys.contains_key("key"),
        "the Secret has no `key`: {:?}",
        keys.keys()
    );
    let spec = ex.claim.spec.context("the claim has no spec")?;
    ensure!(spec.access_modes == Some(vec!["ReadWriteMany".to_owned()]));
    ensure!(spec.storage_class_name == ex.storage_class.metadata.name);
    Ok(())
}

async fn provisioner_request(tb: Arc<Testbed>) -> Result<()> {
    let env = tb.env();
    let ex = Examples::load()?.for_testbed(&env.heketi_url, &env.heketi_key)?;
    let uid = "0b7e5b0c-8d7a-4a53-9a43-2f3c43b6e0a1";
    let p = demo::provision(&ex, uid, true)?;
    let req = &p.request;
    ensure!(
        req.name == format!("pvc-{uid}") && p.pv_name == req.name,
        "{}",
        req.name
    );
    let range = req.capacity_range.context("no capacity range")?;
    ensure!(
        range.required_bytes == 2 << 30 && range.limit_bytes == 0,
        "capacity {range:?} for a 2Gi claim"
    );

    // The class's own parameters, the sidecar keys removed, the three --extra-create-metadata
    // keys added (deploy/kubernetes/base/controller.yaml runs the provisioner with that flag).
    let class = ex.storage_class.parameters.clone().unwrap_or_default();
    for (k, v) in &class {
        if k.starts_with(SIDECAR_PREFIX) {
            ensure!(!req.parameters.contains_key(k), "sidecar key {k} was sent");
        } else {
            ensure!(
                req.parameters.get(k) == Some(v),
                "parameter {k} missing or changed"
            );
        }
    }
    let extra: Vec<&String> = req
        .parameters
        .keys()
        .filter(|k| k.starts_with(SIDECAR_PREFIX))
        .collect();
    ensure!(extra.len() == 3, "sidecar keys sent: {extra:?}");
    ensure!(req.parameters[&format!("{SIDECAR_PREFIX}pv/name")] == p.pv_name);
    ensure!(req.parameters[&format!("{SIDECAR_PREFIX}pvc/name")] == "shared-data");
    ensure!(req.parameters[&format!("{SIDECAR_PREFIX}pvc/namespace")] == "default");
    // No resturl is sent: the controller's default backend (the testbed's heketi-server) serves.
    ensure!(!req.parameters.contains_key("resturl"));

    // Secrets from the example overlay's Secret, with the testbed's key.
    ensure!(
        req.secrets.get("key") == Some(&env.heketi_key),
        "provisioner secret key"
    );
    ensure!(req.secrets.get("user").map(String::as_str) == Some("admin"));
    ensure!(
        p.delete_secrets == req.secrets,
        "DeleteVolume uses the provisioner secret"
    );
    let (expand_ref, expand) = p.expand_secret.as_ref().context("no expand secret")?;
    ensure!(expand_ref.name.as_deref() == Some("gluster-csi-heketi"));
    ensure!(expand.get("key") == Some(&env.heketi_key));

    // RWX → MULTI_NODE_MULTI_WRITER, mount access with the class's mountOptions.
    ensure!(req.volume_capabilities.len() == 1);
    let cap = &req.volume_capabilities[0];
    ensure!(cap.access_mode.map(|m| m.mode) == Some(Mode::MultiNodeMultiWriter as i32));
    match &cap.access_type {
        Some(AccessType::Mount(m)) => ensure!(
            m.mount_flags == ex.storage_class.mount_options.clone().unwrap_or_default()
                && m.fs_type.is_empty(),
            "mount flags {:?}",
            m.mount_flags
        ),
        _ => anyhow::bail!("not a mount capability"),
    }

    // The PV written from a CreateVolume answer: handle, attributes, secret references only.
    let volume = Volume {
        capacity_bytes: 2 << 30,
        volume_id: "1:abc".into(),
        volume_context: [
            ("glusterServers".to_owned(), "10.0.0.1,10.0.0.2".to_owned()),
            ("glusterVolume".to_owned(), "vol_abc".to_owned()),
        ]
        .into(),
        content_source: None,
        accessible_topology: Vec::new(),
    };
    let pv = demo::persistent_volume(&ex, &p, &volume)?;
    let spec = pv.spec.context("PV without spec")?;
    let csi = spec.csi.context("PV without csi")?;
    ensure!(csi.driver == "gluster.heketi.csi" && csi.volume_handle == "1:abc");
    let attrs = csi.volume_attributes.unwrap_or_default();
    ensure!(attrs.get("glusterVolume").map(String::as_str) == Some("vol_abc"));
    ensure!(attrs.get("glusterServers").map(String::as_str) == Some("10.0.0.1,10.0.0.2"));
    ensure!(spec.capacity.unwrap_or_default()["storage"].0 == "2Gi");
    ensure!(spec.mount_options == ex.storage_class.mount_options);
    ensure!(spec.access_modes == Some(vec!["ReadWriteMany".to_owned()]));
    ensure!(spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete"));
    ensure!(
        spec.claim_ref.and_then(|r| r.uid).as_deref() == Some(uid),
        "claimRef uid"
    );
    ensure!(csi.controller_expand_secret_ref.is_some());
    Ok(())
}

async fn pvc_to_two_pods_and_back(tb: Arc<Testbed>) -> Result<()> {
    let mut narration = Narration::quiet();
    let summary = match demo::pvc_to_pod(&tb, &mut narration).await {
        Ok(s) => s,
        Err(e) => {
            return Err(e.context(format!(
                "the flow failed; what it did:\n{}\n",
                narration.transcript()
            )));
        }
    };
    ensure!(narration.proofs() >= 15, "{}", narration.transcript());
    // The controller does not list the deleted volume any more.
    let mut c = csi_proto::v1::controller_client::ControllerClient::connect(
        tb.env().controller_endpoint.clone(),
    )
    .await?;
    let listed = c
        .list_volumes(csi_proto::v1::ListVolumesRequest::default())
        .await?
        .into_inner();
    let ids: Vec<&str> = listed
        .entries
        .iter()
        .filter_map(|e: &list_volumes_response::Entry| e.volume.as_ref())
        .map(|v| v.volume_id.as_str())
        .collect();
    ensure!(
        !ids.contains(&summary.volume_id.as_str()),
        "ListVolumes still shows {}",
        summary.volume_id
    );
    // Nor does Heketi: this flow made the only volume of this testbed.
    let left = tb.heketi_client()?.volume_list().await?.volumes;
    ensure!(left.is_empty(), "Heketi still has volumes {left:?}");
    Ok(())
}
