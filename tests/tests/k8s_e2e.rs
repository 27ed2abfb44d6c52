//! End to end on a real Kubernetes: the shipped manifests (deploy/), the project's images built
//! by `scripts/build-images.sh`, the upstream sidecars and a real kubelet and containerd, with a
//! testbed Gluster pool and heketi-server as the storage backend.
//!
//! The cluster is the single-node Kubernetes of `../shared/k8s` (or `$GLUSTER_CSI_K8S_DIR`); its
//! absence fails the suite with a message saying so. The driver is installed through
//! `tests/k8s/overlay` (patches the single-node, loopback-only cluster forces, each commented)
//! plus a generated kustomization with what every operator sets: image names, the Heketi URL and
//! key. The trials run in order, one at a time, each naming what it found on failure; each
//! starts from what the ones before it left (the driver installed, the claims they made).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gluster_csi_testbed::calls;
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::k8s::{self, Cluster, field, wait_for};
use gluster_csi_testbed::{Testbed, TestbedOptions, cmd, harness, install};
use heketi_client::types::VolumeDurabilityInfo;
use serde_json::Value;

/// The namespace of the driver (deploy/kubernetes/base).
const DRIVER_NS: &str = "gluster-csi";
/// The namespace of the suite's claims and pods.
const NS: &str = "gcsi-e2e";
/// Image tag of the images the suite builds.
const TAG: &str = "e2e";
/// Application image (built by the cluster's up.sh).
const BUSYBOX: &str = "k8s.local/busybox:1";
/// The driver's name.
const DRIVER: &str = "gluster.heketi.csi";
/// Label of the node plugin's and the controller's pods.
const NODE_PODS: &str = "app.kubernetes.io/name=gluster-csi-node";
const CONTROLLER_PODS: &str = "app.kubernetes.io/name=gluster-csi-controller";

/// The Component that turns on topology and capacity tracking (docs/multiple-sites.md).
const TOPOLOGY_COMPONENT: &str = "deploy/kubernetes/components/topology";
/// The node label the topology Component reads, and the zone the trial gives the node.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const ZONE: &str = "e2e-east";
/// The driver's key the node plugin reports the zone under.
const ZONE_KEY: &str = "topology.gluster.heketi.csi/zone";

/// The VolumeSnapshotClass of the snapshot trial.
const SNAPSHOT_CLASS: &str = "gcsi-e2e";

const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(500);

fn main() {
    let opts = TestbedOptions {
        state_dir: harness::state_dir_for("k8s_e2e"),
        hosts: 3,
        heketi: true,
        controller: false,
        node: false,
        executor: ExecutorKind::default(),
    };
    harness::run_in_order(opts, |tb| {
        let suite = Arc::new(Suite {
            tb,
            cluster: Mutex::new(None),
            timings: Mutex::new(Vec::new()),
        });
        let t = |name: &str, f: fn(Arc<Suite>) -> TrialFuture| {
            let s = Arc::clone(&suite);
            harness::Trial::test(name, move || {
                harness::block_on(f(s)).map_err(|e| harness::Failed::from(format!("{e:#}")))
            })
        };
        vec![
            t("cluster_up_and_the_project_images_built_and_loaded", |s| {
                Box::pin(async move { s.cluster().await.map(drop) })
            }),
            t(
                "every_kustomization_in_deploy_applies_to_the_api_server",
                |s| Box::pin(manifests_apply(s)),
            ),
            t("driver_installs_and_registers_with_kubelet", |s| {
                Box::pin(async move { s.driver().await.map(drop) })
            }),
            t(
                "rwx_claim_binds_two_pods_share_files_pv_has_gid_and_non_root_writes",
                |s| Box::pin(rwx_claim_two_pods(s)),
            ),
            t("expansion_reaches_running_pods_without_restart", |s| {
                Box::pin(expansion(s))
            }),
            t(
                "node_plugin_pod_deleted_then_image_changed_old_image_removed_writers_never_see_an_error",
                |s| Box::pin(node_plugin_replacement(s)),
            ),
            t(
                "gluster_host_named_only_in_the_nodes_etc_hosts_mounts",
                |s| Box::pin(gluster_host_in_etc_hosts(s)),
            ),
            t(
                "intree_class_provisions_and_deletes_after_the_controller_pod_was_replaced",
                |s| Box::pin(intree_class_across_controller_restart(s)),
            ),
            t(
                "controller_pod_killed_during_create_claim_binds_once_no_orphan",
                |s| Box::pin(controller_killed_during_create(s)),
            ),
            t(
                "snapshot_ready_restores_hold_its_data_and_outlive_the_deleted_source",
                |s| Box::pin(snapshot_and_restore(s)),
            ),
            t(
                "heketi_server_image_answers_hello_and_runs_the_gluster_cli",
                |s| Box::pin(heketi_server_image(s)),
            ),
            t(
                "topology_component_zone_from_node_label_capacity_per_zone_volume_on_the_zones_backend",
                |s| Box::pin(topology_and_capacity(s)),
            ),
            t(
                "every_claim_deleted_leaves_no_volume_brick_mount_or_client",
                |s| Box::pin(everything_deleted(s)),
            ),
        ]
    })
}

type TrialFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>;

/// What the trials share.
struct Suite {
    tb: Arc<Testbed>,
    /// The cluster with the images loaded (`Err`: the set-up failed, with why).
    cluster: Mutex<Option<std::result::Result<Cluster, String>>>,
    /// (what, seconds) measured on the way, printed at the end of the last trial.
    timings: Mutex<Vec<(String, f64)>>,
}

impl Suite {
    /// The cluster, started and with the project's images loaded on first use.
    async fn cluster(&self) -> Result<Cluster> {
        if let Some(done) = self
            .cluster
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return done.map_err(|e| anyhow::anyhow!("the cluster set-up failed earlier: {e}"));
        }
        let made = self.set_up_cluster().await;
        *self.cluster.lock().unwrap_or_else(PoisonError::into_inner) = Some(
            made.as_ref()
                .map(Clone::clone)
                .map_err(|e| format!("{e:#}")),
        );
        made
    }

    async fn set_up_cluster(&self) -> Result<Cluster> {
        let dir = k8s::locate()?;
        let t0 = Instant::now();
        let cluster = Cluster::start(&dir).await?;
        self.timing("cluster up (up.sh)", t0);
        reset(&cluster, &dir).await?;
        snapshot_addon(&cluster, &dir).await?;

        let t0 = Instant::now();
        let bin_dir = gluster_csi_testbed::bin_path("gluster-csi-node")?
            .parent()
            .context("binary without a directory")?
            .to_path_buf();
        let out_dir = k8s::repo_dir().join("target/images");
        let script = k8s::repo_dir().join("scripts/build-images.sh");
        let argv = [
            script.display().to_string(),
            "--bin-dir".into(),
            bin_dir.display().to_string(),
            "--out-dir".into(),
            out_dir.display().to_string(),
            "--tag".into(),
            TAG.into(),
        ];
        let built = cmd::output(&argv, Duration::from_secs(1200)).await?;
        ensure!(
            built.status.success(),
            "scripts/build-images.sh failed ({}):\n{}\n{}",
            built.status,
            k8s::tail(&String::from_utf8_lossy(&built.stdout), 30),
            k8s::tail(&String::from_utf8_lossy(&built.stderr), 30)
        );
        eprintln!("{}", k8s::tail(&String::from_utf8_lossy(&built.stdout), 12));
        self.timing("images built (scripts/build-images.sh)", t0);
        let t0 = Instant::now();
        for image in [
            "gluster-csi-controller",
            "gluster-csi-node",
            "heketi-server",
        ] {
            let archive = out_dir.join(format!("{image}.tar"));
            load_image(&cluster, &archive, &format!("localhost/{image}:{TAG}"))
                .await
                .with_context(|| format!("loading {}", archive.display()))?;
        }
        self.timing("images loaded into containerd", t0);
        cluster.check_disk().await?;
        Ok(cluster)
    }

    /// The cluster with the driver installed and registered.
    async fn driver(&self) -> Result<Cluster> {
        let c = self.cluster().await?;
        if !driver_registered(&c).await {
            self.install(&c).await?;
        }
        Ok(c)
    }

    async fn install(&self, c: &Cluster) -> Result<()> {
        let dir = generated_overlay(&self.tb)?;
        let t0 = Instant::now();
        c.kubectl(&["apply", "-k", &dir.display().to_string()])
            .await?;
        rolled_out(c, "daemonset/gluster-csi-node").await?;
        rolled_out(c, "deployment/gluster-csi-controller").await?;
        wait_for(
            "kubelet lists the driver in the CSINode",
            SHORT,
            POLL,
            || async {
                if driver_registered(c).await {
                    Ok(())
                } else {
                    bail!("CSINode localhost has no driver {DRIVER}")
                }
            },
        )
        .await
        .with_context(|| c.kubelet_log_tail(20))?;
        self.timing("driver applied to registered", t0);

        // The classes and Secret the trials use.
        let heketi = self.tb.env();
        let objects = format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
---
apiVersion: v1
kind: Secret
metadata:
  name: heketi-e2e
  namespace: {DRIVER_NS}
type: kubernetes.io/glusterfs
stringData:
  user: {user}
  key: "{key}"
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gcsi-e2e
provisioner: {DRIVER}
reclaimPolicy: Delete
allowVolumeExpansion: true
parameters:
  volumetype: "replicate:3"
  gidMin: "40000"
  gidMax: "50000"
  csi.storage.k8s.io/provisioner-secret-name: heketi-e2e
  csi.storage.k8s.io/provisioner-secret-namespace: {DRIVER_NS}
  csi.storage.k8s.io/controller-expand-secret-name: heketi-e2e
  csi.storage.k8s.io/controller-expand-secret-namespace: {DRIVER_NS}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gcsi-e2e-intree
provisioner: {DRIVER}
reclaimPolicy: Delete
allowVolumeExpansion: true
parameters:
  resturl: "{url}"
  restuser: "{user}"
  secretName: "heketi-e2e"
  secretNamespace: "{DRIVER_NS}"
  volumetype: "replicate:2"
  gidMin: "40000"
  gidMax: "50000"
  volumenameprefix: "k8s"
"#,
            user = heketi.heketi_user,
            key = heketi.heketi_key,
            url = heketi.heketi_url,
        );
        c.apply_yaml(self.tb.state_dir(), "classes", &objects)
            .await?;
        Ok(())
    }

    fn timing(&self, what: &str, since: Instant) {
        let secs = since.elapsed().as_secs_f64();
        eprintln!("k8s-e2e timing: {what}: {secs:.1} s");
        self.timings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((what.to_owned(), secs));
    }
}

/// Writes `target/k8s-e2e/`: the example overlay filled in as docs/install.md tells an operator
/// (`example/`: image names, the Heketi URL, user and admin key) plus the test Component
/// `tests/k8s/overlay` on top (`kustomization.yaml`), and returns that directory.
fn generated_overlay(tb: &Testbed) -> Result<PathBuf> {
    overlay_with(tb, false)
}

/// [`generated_overlay`], with `deploy/kubernetes/components/topology` added when `topology`
/// (in `target/k8s-e2e-topology/`).
fn overlay_with(tb: &Testbed, topology: bool) -> Result<PathBuf> {
    let dir = k8s::repo_dir().join(if topology {
        "target/k8s-e2e-topology"
    } else {
        "target/k8s-e2e"
    });
    std::fs::create_dir_all(&dir)?;
    let env = tb.env();
    install::fill_example_overlay(
        &dir.join("example"),
        &install::Settings {
            registry: "localhost".into(),
            tag: TAG.into(),
            heketi_url: env.heketi_url.clone(),
            heketi_user: env.heketi_user.clone(),
            heketi_key: env.heketi_key.clone(),
        },
    )?;
    let mut components = vec![install::relative_path(
        &dir,
        &k8s::repo_dir().join("tests/k8s/overlay"),
    )?];
    if topology {
        components.push(install::relative_path(
            &dir,
            &k8s::repo_dir().join(TOPOLOGY_COMPONENT),
        )?);
    }
    let components: String = components
        .iter()
        .map(|c| format!("  - {}\n", c.display()))
        .collect();
    let yaml = format!(
        r#"# Generated by tests/tests/k8s_e2e.rs: deploy/kubernetes/overlays/example filled in as
# docs/install.md says (example/), plus what the one-node test cluster forces.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - example
components:
{components}"#
    );
    std::fs::write(dir.join("kustomization.yaml"), yaml)?;
    Ok(dir)
}

/// Waits until the rollout of `what` (`daemonset/NAME`, `deployment/NAME`) in the driver's
/// namespace is done.
async fn rolled_out(c: &Cluster, what: &str) -> Result<()> {
    c.kubectl(&["-n", DRIVER_NS, "rollout", "status", what, "--timeout=240s"])
        .await
        .map(drop)
        .with_context(|| pods_report_blocking(c, DRIVER_NS))
}

async fn driver_registered(c: &Cluster) -> bool {
    let Ok(node) = c.json(&["get", "csinode", "localhost"]).await else {
        return false;
    };
    node["spec"]["drivers"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| field(d, &["name"]) == DRIVER))
}

/// The VolumeSnapshot CRDs and snapshot-controller, the cluster add-on docs/install.md has an
/// operator install before using snapshots (the test cluster carries it in `snapshot/`):
/// `deploy/examples/snapshot` is made of those kinds, and the driver's csi-snapshotter serves
/// them. Waits until the API server serves the kinds.
async fn snapshot_addon(c: &Cluster, dir: &Path) -> Result<()> {
    let addon = dir.join("snapshot");
    c.kubectl(&["apply", "-k", &addon.display().to_string()])
        .await
        .with_context(|| format!("installing the snapshot add-on {}", addon.display()))?;
    let crds = [
        "volumesnapshotclasses",
        "volumesnapshotcontents",
        "volumesnapshots",
    ]
    .map(|r| format!("crd/{r}.snapshot.storage.k8s.io"));
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(crds.iter().map(String::as_str));
    c.kubectl(&args).await.map(drop)
}

/// Removes what an earlier, interrupted run left on the cluster. Claims of a Heketi that is
/// gone can never be deleted through the driver, so a cluster with such leftovers is wiped and
/// started afresh (`down.sh --wipe`, `up.sh`: about a minute).
async fn reset(c: &Cluster, dir: &Path) -> Result<()> {
    let ns = c
        .kubectl(&["get", "namespace", NS, "--ignore-not-found"])
        .await?;
    let pvs = c.json(&["get", "pv"]).await?;
    let ours = pvs["items"].as_array().is_some_and(|a| {
        a.iter()
            .any(|pv| field(pv, &["spec", "csi", "driver"]) == DRIVER)
    });
    let driver = c
        .kubectl(&["get", "namespace", DRIVER_NS, "--ignore-not-found"])
        .await?;
    if ns.trim().is_empty() && !ours && driver.trim().is_empty() {
        return Ok(());
    }
    eprintln!("k8s-e2e: leftovers of an earlier run on the cluster; wiping it");
    let down = dir.join("down.sh");
    cmd::run(
        &[down.display().to_string(), "--wipe".into()],
        Duration::from_secs(300),
    )
    .await?;
    Cluster::start(dir).await.map(drop)
}

// ---------------------------------------------------------------------------------------------
// Trials

async fn manifests_apply(s: Arc<Suite>) -> Result<()> {
    let c = s.cluster().await?;
    // Server-side dry runs validate every object against the API server's schemas and rules
    // (such as the 15-character limit of port names), without creating anything. Namespaced
    // objects need their namespace to exist; the driver's is created for real (the install
    // uses it next).
    c.kubectl(&["create", "namespace", DRIVER_NS])
        .await
        .or_else(|e| {
            if format!("{e:#}").contains("AlreadyExists") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })?;
    let repo = k8s::repo_dir();
    let mut failures = Vec::new();
    for mut dir in kustomizations(&repo.join("deploy"))? {
        let shown = dir
            .strip_prefix(&repo)
            .unwrap_or(&dir)
            .display()
            .to_string();
        if shown == install::EXAMPLE_OVERLAY {
            // The overlay to fill in: as committed (no key file) it must apply nothing; filled
            // in, the API server must accept all of it.
            let refused = c.kubectl(&["kustomize", &dir.display().to_string()]).await;
            match refused {
                Err(e) if format!("{e:#}").contains(install::KEY_FILE) => {}
                other => failures.push(format!(
                    "{shown} renders without {}: {other:?}",
                    install::KEY_FILE
                )),
            }
            dir = install::fill_example_overlay(
                &repo.join("target/k8s-e2e/dry-run-example"),
                &install::Settings {
                    registry: "registry.example.com/storage".into(),
                    tag: "v0.1.0".into(),
                    heketi_url: "http://heketi.heketi.svc:8080".into(),
                    heketi_user: "admin".into(),
                    heketi_key: "dry-run".into(),
                },
            )?;
        } else if shown == TOPOLOGY_COMPONENT {
            // A Component applies only as part of an installation: the suite's own, with it.
            dir = overlay_with(&s.tb, true)?;
        }
        match c
            .kubectl(&[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=gluster-csi-e2e",
                "-k",
                &dir.display().to_string(),
            ])
            .await
        {
            Ok(out) => eprintln!("{shown}: {} objects accepted", out.lines().count()),
            Err(e) => failures.push(format!("{shown}: {e:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "the API server rejects:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// Every directory under `root` holding a kustomization.yaml.
fn kustomizations(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                found.push(d.clone());
            }
        }
    }
    found.sort();
    ensure!(
        !found.is_empty(),
        "no kustomization under {}",
        root.display()
    );
    Ok(found)
}

async fn rwx_claim_two_pods(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    // Baseline in the same run: the same Gluster work asked of Heketi straight.
    let heketi = s.tb.heketi_client()?;
    let req = calls::direct_request("e2e_baseline", 2000, VolumeDurabilityInfo::replicate(3));
    let t0 = Instant::now();
    let direct = calls::heketi_create(&heketi, &req).await?;
    s.timing(
        "baseline: Heketi volume create straight (replicate:3, 1 GiB)",
        t0,
    );
    calls::heketi_delete(&heketi, &direct.id).await?;

    let t0 = Instant::now();
    create_claim(&c, &s, "shared", "gcsi-e2e", "1Gi").await?;
    let pv = wait_bound(&c, "shared").await?;
    s.timing("PVC created to Bound (replicate:3, 1 GiB)", t0);

    // The PV is ours, RWX, and carries the volume's gid for non-root pods.
    ensure!(field(&pv, &["spec", "csi", "driver"]) == DRIVER, "PV: {pv}");
    let modes = pv["spec"]["accessModes"].to_string();
    ensure!(modes.contains("ReadWriteMany"), "PV access modes {modes}");
    let gid = field(
        &pv,
        &["metadata", "annotations", "pv.beta.kubernetes.io/gid"],
    )
    .to_owned();
    let gid_n: u32 = gid
        .parse()
        .with_context(|| format!("PV has no numeric pv.beta.kubernetes.io/gid: {pv}"))?;
    ensure!(
        (40000..=50000).contains(&gid_n),
        "gid {gid_n} is outside the class's gidMin..gidMax"
    );

    // Baseline in the same run: the same pod with an emptyDir instead of the claim.
    let t0 = Instant::now();
    let baseline = writer_pod("baseline", "shared", None).replace(
        "persistentVolumeClaim:\n        claimName: shared",
        "emptyDir: {}",
    );
    ensure!(
        baseline.contains("emptyDir"),
        "baseline pod without emptyDir"
    );
    c.apply_yaml(s.tb.state_dir(), "baseline", &baseline)
        .await?;
    wait_pod_ready(&c, "baseline").await?;
    s.timing("baseline: one pod with an emptyDir created to Ready", t0);
    c.kubectl(&["-n", NS, "delete", "pod", "baseline", "--wait=true"])
        .await?;

    // The first pod stages the volume (one FUSE mount on the node) and publishes it; the
    // next two are bind mounts of that mount.
    let t0 = Instant::now();
    c.apply_yaml(
        s.tb.state_dir(),
        "writer-a",
        &writer_pod("writer-a", "shared", None),
    )
    .await?;
    wait_pod_ready(&c, "writer-a").await?;
    s.timing(
        "first pod on the claim created to Ready (stage + publish)",
        t0,
    );
    let t0 = Instant::now();
    for (pod, user) in [("writer-b", None), ("non-root", Some(1000))] {
        c.apply_yaml(s.tb.state_dir(), pod, &writer_pod(pod, "shared", user))
            .await?;
    }
    for pod in ["writer-b", "non-root"] {
        wait_pod_ready(&c, pod).await?;
    }
    s.timing(
        "two more pods on the claim created to Ready (publish only)",
        t0,
    );

    // Each writer reads the other's file.
    wait_for("each pod reads the other's file", SHORT, POLL, || async {
        for (me, peer) in [("writer-a", "writer-b"), ("writer-b", "writer-a")] {
            let out = exec(&c, me, &["tail", "-n", "1", &format!("/data/{peer}.log")]).await?;
            ensure!(!out.trim().is_empty(), "{me} reads nothing from {peer}.log");
        }
        Ok(())
    })
    .await?;
    // The non-root pod got the volume's group and wrote with it.
    let groups = exec(&c, "non-root", &["id", "-G"]).await?;
    ensure!(
        groups.split_whitespace().any(|g| g == gid),
        "the non-root pod's groups {groups:?} lack the PV's gid {gid}"
    );
    let lines = exec(&c, "writer-a", &["wc", "-l", "/data/non-root.log"]).await?;
    ensure!(
        !lines.trim().starts_with('0'),
        "the non-root pod's writes are not visible to writer-a: {lines}"
    );
    no_io_errors(&c, &["writer-a", "writer-b", "non-root"]).await
}

async fn expansion(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let before = df_kib(&c, "writer-a").await?;
    let restarts = restart_counts(&c, &["writer-a", "writer-b"]).await?;
    let t0 = Instant::now();
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        "pvc",
        "shared",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ])
    .await?;
    wait_for("the claim's capacity reads 2Gi", LONG, POLL, || async {
        let pvc = c.json(&["-n", NS, "get", "pvc", "shared"]).await?;
        let cap = field(&pvc, &["status", "capacity", "storage"]);
        ensure!(
            cap == "2Gi",
            "status.capacity {cap:?}; conditions {}",
            pvc["status"]["conditions"]
        );
        Ok(())
    })
    .await?;
    s.timing("expansion 1Gi -> 2Gi requested to claim capacity", t0);
    let after = wait_for(
        "the running pods' df shows the new size",
        SHORT,
        POLL,
        || async {
            let kib = df_kib(&c, "writer-a").await?;
            ensure!(
                kib > before + 900 * 1024,
                "df still shows {kib} KiB (before: {before} KiB)"
            );
            Ok(kib)
        },
    )
    .await?;
    let also = df_kib(&c, "writer-b").await?;
    ensure!(
        also == after,
        "writer-b sees {also} KiB, writer-a {after} KiB"
    );
    ensure!(
        restart_counts(&c, &["writer-a", "writer-b"]).await? == restarts,
        "a pod restarted during the expansion"
    );
    no_io_errors(&c, &["writer-a", "writer-b", "non-root"]).await
}

async fn node_plugin_replacement(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let pods = ["writer-a", "writer-b", "non-root"];
    let pv = c.json(&["-n", NS, "get", "pvc", "shared"]).await?;
    let pv_name = field(&pv, &["spec", "volumeName"]).to_owned();
    let pv = c.json(&["get", "pv", &pv_name]).await?;
    let volume = field(&pv, &["spec", "csi", "volumeAttributes", "glusterVolume"]).to_owned();
    ensure!(!volume.is_empty(), "the PV names no glusterVolume: {pv}");
    let clients = fuse_clients(&volume);
    ensure!(
        !clients.is_empty(),
        "no glusterfs client of {volume} runs on the node"
    );

    // 1. kubectl delete pod.
    let old = node_plugin_pod(&c).await?;
    let mark = progress(&c, &pods).await?;
    let t0 = Instant::now();
    c.kubectl(&["-n", DRIVER_NS, "delete", "pod", &old, "--wait=true"])
        .await?;
    let new = wait_for("a new node plugin pod is Ready", LONG, POLL, || async {
        let p = node_plugin_pod(&c).await?;
        ensure!(p != old, "still the old pod {old}");
        pod_ready(&c, DRIVER_NS, &p).await?;
        Ok(p)
    })
    .await?;
    s.timing("node plugin pod deleted to a new one Ready", t0);
    writers_went_on(&c, &pods, &mark).await?;
    same_clients(&volume, &clients, "the pod deletion")?;
    // The new plugin adopted the mount: a new pod on the claim is published by it.
    adopt_check(&c, &s, "after-delete").await?;

    // 2. An upgrade: the DaemonSet moves to another image (the same binary under a new tag,
    //    sharing no layer with the old one), then the old image is removed from the node.
    let old_image = format!("localhost/gluster-csi-node:{TAG}");
    let next_image = format!("localhost/gluster-csi-node:{NEXT_TAG}");
    let t0 = Instant::now();
    let archive = next_node_image(&old_image, &next_image).await?;
    load_image(&c, &archive, &next_image).await?;
    s.timing("second node image built (squashed) and loaded", t0);
    // The clients run from the root file system of the plugin container that started them.
    let roots = client_roots(&clients)?;
    let mark = progress(&c, &pods).await?;
    let t0 = Instant::now();
    c.kubectl(&[
        "-n",
        DRIVER_NS,
        "set",
        "image",
        "daemonset/gluster-csi-node",
        &format!("gluster-csi-node={next_image}"),
    ])
    .await?;
    rolled_out(&c, "daemonset/gluster-csi-node").await?;
    let rolled = node_plugin_pod(&c).await?;
    ensure!(rolled != new, "the rollout left the pod {new} in place");
    let spec = c.json(&["-n", DRIVER_NS, "get", "pod", &rolled]).await?;
    let running = image_of(&spec["spec"], "gluster-csi-node");
    ensure!(
        running == next_image,
        "the new plugin pod runs {running:?}, not {next_image}"
    );
    s.timing("node plugin image changed to rollout done", t0);
    writers_went_on(&c, &pods, &mark).await?;
    same_clients(&volume, &clients, "the image change")?;
    adopt_check(&c, &s, "after-rollout").await?;
    stats_healthy(&c, &pv, "writer-a").await?;

    // A graph switch after the image change: a client-side option makes every client of the
    // volume load a new translator graph, here one with the negative-lookup cache, which no
    // client has loaded yet. The clients were started by a plugin container that is gone; the
    // old image is still on the node.
    let loaded = graph_switch(
        &s,
        &c,
        &volume,
        &clients,
        &pods,
        "performance.nl-cache",
        SHORT,
    )
    .await?;
    ensure!(
        loaded,
        "the FUSE clients kept serving but did not switch to the new graph after the plugin \
         pod was replaced; client log:\n{}",
        client_log_tail(&volume)
    );

    // Remove the old image, and every other image holding its layers (heketi-server shares the
    // node image's base layer), once no container uses them; then the old root file system is
    // gone from the node's disk.
    let t0 = Instant::now();
    let sharing = [old_image.clone(), format!("localhost/heketi-server:{TAG}")];
    let digests = remove_images(&sharing).await;
    // The heketi-server image is needed again by a later trial, whatever happens here.
    let after = after_old_image_removed(&s, &c, &volume, &clients, &pods, &roots, digests).await;
    let archive = k8s::repo_dir().join("target/images/heketi-server.tar");
    load_image(&c, &archive, &sharing[1]).await?;
    after.map(|()| s.timing("old node image removed to second graph switch done", t0))
}

/// Client-side translators, by volume option, for a graph switch that needs a shared object
/// the clients have not loaded yet.
const XLATORS: [(&str, &str); 4] = [
    ("performance.nl-cache", "nl-cache.so"),
    ("performance.io-cache", "io-cache.so"),
    ("performance.readdir-ahead", "readdir-ahead.so"),
    ("performance.quick-read", "quick-read.so"),
];

/// Sets `option` on `volume` (a translator no client has loaded yet, checked first) and
/// checks that the writers write on with the same clients and no I/O error; returns whether
/// every client then mapped the translator's shared object within `limit`, i.e. switched to
/// the new graph.
async fn graph_switch(
    s: &Suite,
    c: &Cluster,
    volume: &str,
    clients: &BTreeSet<u32>,
    pods: &[&str],
    option: &str,
    limit: Duration,
) -> Result<bool> {
    let (_, xlator) = XLATORS
        .iter()
        .find(|(o, _)| *o == option)
        .with_context(|| format!("no translator known for {option}"))?;
    // The processes that hold the volume's graph (the others are auto_unmount companions).
    let serving: Vec<u32> = clients
        .iter()
        .copied()
        .filter(|pid| maps_contain(*pid, "protocol/client.so"))
        .collect();
    ensure!(
        !serving.is_empty(),
        "no client of {volume} has a graph loaded"
    );
    for pid in &serving {
        ensure!(
            !maps_contain(*pid, xlator),
            "client {pid} has {xlator} loaded before {option} was set"
        );
    }
    let mark = progress(c, pods).await?;
    s.tb.gluster(0, &["volume", "set", volume, option, "on"])
        .await?;
    writers_went_on(c, pods, &mark).await?;
    same_clients(volume, clients, &format!("the graph switch ({option})"))?;
    no_io_errors(c, pods).await?;
    let loaded = wait_for(
        &format!("every client loads {xlator}"),
        limit,
        POLL,
        || async {
            let missing: Vec<u32> = serving
                .iter()
                .copied()
                .filter(|pid| !maps_contain(*pid, xlator))
                .collect();
            ensure!(missing.is_empty(), "{xlator} not mapped by {missing:?}");
            Ok(())
        },
    )
    .await;
    eprintln!(
        "k8s-e2e: graph switch {option} on: clients {serving:?} {} {xlator}",
        if loaded.is_ok() {
            "loaded"
        } else {
            "did not load"
        }
    );
    Ok(loaded.is_ok())
}

/// The rest of [`node_plugin_replacement`] once the old images were removed (`digests`): they
/// and their layers are gone, the clients that ran from them serve on, and a graph switch that
/// needs a translator they have not loaded yet is not applied (a known limitation).
async fn after_old_image_removed(
    s: &Suite,
    c: &Cluster,
    volume: &str,
    clients: &BTreeSet<u32>,
    pods: &[&str],
    roots: &[Vec<PathBuf>],
    digests: Result<Vec<String>>,
) -> Result<()> {
    let old_image = format!("localhost/gluster-csi-node:{TAG}");
    let digests = digests?;
    let images = ctr(&["images", "ls"]).await?;
    for line in images.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (name, digest) = (f.next().unwrap_or_default(), f.nth(1).unwrap_or_default());
        ensure!(
            !digests.iter().any(|d| d == digest),
            "{name} ({digest}) of a removed image is still in containerd"
        );
    }
    let left: Vec<&PathBuf> = roots.iter().flatten().filter(|d| d.exists()).collect();
    ensure!(
        left.is_empty(),
        "the old image's layers are still on disk after its removal: {left:?}"
    );
    eprintln!(
        "k8s-e2e: {old_image} removed; the FUSE clients {clients:?} ran from its layers \
         {roots:?}, which no longer exist"
    );
    let mark = progress(c, pods).await?;
    writers_went_on(c, pods, &mark).await?;
    same_clients(volume, clients, "the removal of the old image")?;

    // A second graph switch, with a translator the clients have not loaded: its shared object
    // was in the removed image. The writers must write on regardless; the clients keep their
    // graph (docs/install.md, "Upgrade", says so).
    let mut option = None;
    for (o, x) in XLATORS {
        if o != "performance.nl-cache" && !clients.iter().any(|pid| maps_contain(*pid, x)) {
            option = Some(o);
            break;
        }
    }
    let option = option.context("every candidate translator is loaded already")?;
    let loaded = graph_switch(s, c, volume, clients, pods, option, Duration::from_secs(20)).await?;
    let errors: Vec<String> = client_log_tail(volume)
        .lines()
        .filter(|l| l.contains("] E ["))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "k8s-e2e: client errors after the second switch:\n{}",
        errors.join("\n")
    );
    ensure!(
        !loaded,
        "known limitation gone: the clients loaded a translator of their removed image; \
         update docs/install.md and node-plugin/README.md"
    );
    no_io_errors(c, pods).await
}

/// Tag of the second node image the upgrade moves to.
const NEXT_TAG: &str = "e2e-next";

/// Builds `next` from `old` as one squashed layer (the same files and binary plus a marker
/// file, so that the layer's content, and with it its digest, differs from every layer of
/// `old`: the two images share no layer), and writes it as a docker archive; returns the
/// archive.
async fn next_node_image(old: &str, next: &str) -> Result<PathBuf> {
    let long = Duration::from_secs(600);
    let marker = k8s::repo_dir().join("target/images/e2e-next-marker");
    std::fs::write(&marker, format!("{next}\n"))?;
    let marker = marker.display().to_string();
    let work = cmd::run(&["buildah", "from", old], long).await?;
    let work = work.trim().to_owned();
    let built = async {
        cmd::run(
            &[
                "buildah",
                "config",
                "--label",
                "io.gluster-csi.e2e=next",
                &work,
            ],
            long,
        )
        .await?;
        cmd::run(
            &[
                "buildah",
                "copy",
                &work,
                &marker,
                "/etc/gluster-csi-e2e-image",
            ],
            long,
        )
        .await?;
        cmd::run(&["buildah", "commit", "--squash", &work, next], long).await
    }
    .await;
    cmd::run(&["buildah", "rm", &work], long).await?;
    built?;
    let archive = k8s::repo_dir().join("target/images/gluster-csi-node-next.tar");
    let _ = std::fs::remove_file(&archive);
    cmd::run(
        &[
            "buildah".to_owned(),
            "push".to_owned(),
            next.to_owned(),
            format!("docker-archive:{}:{next}", archive.display()),
        ],
        long,
    )
    .await?;
    Ok(archive)
}

/// The test cluster's containerd socket (../shared/k8s/env.sh).
const CONTAINERD_SOCK: &str = "/run/k8s-test/containerd.sock";

/// `ctr` in kubelet's containerd namespace.
async fn ctr(args: &[&str]) -> Result<String> {
    let mut argv = vec!["ctr", "-a", CONTAINERD_SOCK, "-n", "k8s.io"];
    argv.extend_from_slice(args);
    cmd::run(&argv, Duration::from_secs(120)).await
}

/// Imports `archive`, whose image is `name`, into kubelet's containerd. An import that
/// replaces an image schedules containerd's garbage collector, and the collector runs beside
/// the unpack: a layer the unpack found already present, but held by nothing (an earlier run's
/// image whose record went first), can be collected under it, and the import fails with
/// "parent snapshot … does not exist" (containerd issues #2382 and #3787). So the earlier image
/// of that name is removed first with a synchronous collection, which leaves nothing pending,
/// and an import that still meets the race is retried once after another one.
async fn load_image(c: &Cluster, archive: &Path, name: &str) -> Result<()> {
    // A name containerd does not hold is only a warning: `rm` exits 0.
    ctr(&["images", "rm", "--sync", name]).await?;
    match c.load_image(archive).await {
        Err(e) if format!("{e:#}").contains("does not exist") => {
            eprintln!("k8s-e2e: containerd collected a layer under the import of {name}; again");
            ctr(&["images", "rm", "--sync", name]).await?;
            c.load_image(archive).await
        }
        other => other,
    }
}

/// Waits until no container of kubelet's (the exited ones of replaced pods included; kubelet
/// collects them) uses one of `images`, then removes the images under every name containerd
/// holds them (kubelet's runtime adds a `sha256:` name of each), and the images left with no
/// other name (earlier builds of a tag, which share base layers: what `crictl rmi --prune`
/// removes), and waits for containerd to delete what only they held. Returns the manifest
/// digests removed.
async fn remove_images(images: &[String]) -> Result<Vec<String>> {
    wait_for(
        "no container uses the old images",
        LONG,
        Duration::from_secs(2),
        || async {
            let list = ctr(&["containers", "ls"]).await?;
            let users: Vec<&str> = list
                .lines()
                .skip(1)
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|img| images.iter().any(|i| i == img))
                })
                .collect();
            ensure!(users.is_empty(), "still used by:\n{}", users.join("\n"));
            Ok(())
        },
    )
    .await?;
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let list = ctr(&["images", "ls"]).await?;
    let rows: Vec<(String, String)> = list
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .collect();
    let mut digests = Vec::new();
    for image in images {
        let (_, digest) = rows
            .iter()
            .find(|(name, _)| name == image)
            .with_context(|| format!("containerd has no image {image}:\n{list}"))?;
        digests.push(digest.clone());
    }
    let named: BTreeSet<&str> = rows
        .iter()
        .filter(|(n, _)| !n.starts_with("sha256:"))
        .map(|(_, d)| d.as_str())
        .collect();
    for (name, digest) in &rows {
        if name.starts_with("sha256:") && !named.contains(digest.as_str()) {
            eprintln!("k8s-e2e: removing the unnamed image {name} too");
            digests.push(digest.clone());
        }
    }
    let names: Vec<&str> = rows
        .iter()
        .filter(|(_, d)| digests.contains(d))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut argv = vec!["images", "rm", "--sync"];
    argv.extend(names.iter().copied());
    ctr(&argv).await?;
    Ok(digests)
}

/// The overlay lower directories (the image layers on the host) of each client's root file
/// system, read from its mount table.
fn client_roots(clients: &BTreeSet<u32>) -> Result<Vec<Vec<PathBuf>>> {
    let mut all = Vec::new();
    for pid in clients {
        let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let root = table
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .with_context(|| format!("client {pid} has no root mount"))?;
        let (_, after) = root
            .split_once(" - ")
            .with_context(|| format!("mountinfo line {root:?}"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        ensure!(
            fields.first() == Some(&"overlay"),
            "client {pid} does not run on a container's root file system: {root}"
        );
        let lower = fields
            .get(2)
            .and_then(|o| o.split(',').find_map(|kv| kv.strip_prefix("lowerdir=")))
            .with_context(|| format!("no lowerdir in {root}"))?;
        let dirs: Vec<PathBuf> = lower.split(':').map(PathBuf::from).collect();
        for d in &dirs {
            ensure!(
                d.is_dir(),
                "client {pid}'s layer {} is missing",
                d.display()
            );
        }
        all.push(dirs);
    }
    Ok(all)
}

/// Whether process `pid` maps a file whose path contains `needle`.
fn maps_contain(pid: u32, needle: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(needle))
}

/// The last lines of the volume's client log, which the plugin keeps as
/// `<state dir>/logs/<volume>.log` (node-plugin/README.md).
fn client_log_tail(volume: &str) -> String {
    let path = format!("/var/lib/gluster-csi/logs/{volume}.log");
    match std::fs::read_to_string(&path) {
        Ok(text) => format!("{path}:\n{}", k8s::tail(&text, 15)),
        Err(e) => format!("{path}: {e}"),
    }
}

/// The node's FUSE clients of `volume` are still `clients` after `what`.
fn same_clients(volume: &str, clients: &BTreeSet<u32>, what: &str) -> Result<()> {
    let now = fuse_clients(volume);
    ensure!(
        &now == clients,
        "the FUSE clients of {volume} changed across {what}: {clients:?} -> {now:?}"
    );
    Ok(())
}

/// NodeGetVolumeStats through the plugin's socket on the node (as kubelet calls it) for
/// `pod`'s mount of `pv`: bytes are reported and the volume condition is healthy.
async fn stats_healthy(c: &Cluster, pv: &Value, pod: &str) -> Result<()> {
    use csi_proto::v1::NodeGetVolumeStatsRequest;
    use csi_proto::v1::node_client::NodeClient;
    let p = c.json(&["-n", NS, "get", "pod", pod]).await?;
    let target = format!(
        "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/{}/mount",
        field(&p, &["metadata", "uid"]),
        field(pv, &["metadata", "name"])
    );
    let socket = format!("unix:///var/lib/kubelet/plugins/{DRIVER}/csi.sock");
    let mut node = NodeClient::connect(socket.clone())
        .await
        .with_context(|| format!("connecting to {socket}"))?;
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: field(pv, &["spec", "csi", "volumeHandle"]).to_owned(),
            volume_path: target.clone(),
            staging_target_path: String::new(),
        })
        .await
        .with_context(|| format!("NodeGetVolumeStats of {target}"))?
        .into_inner();
    let condition = stats.volume_condition.unwrap_or_default();
    ensure!(
        !condition.abnormal,
        "the new plugin reports {target} abnormal: {}",
        condition.message
    );
    ensure!(
        stats.usage.iter().any(|u| u.total > 0),
        "no usage reported for {target}: {:?}",
        stats.usage
    );
    Ok(())
}

/// A new pod on the shared claim, published by the current node plugin, reads what the writers
/// wrote; then it goes again (NodeUnpublish by the new plugin).
async fn adopt_check(c: &Cluster, s: &Suite, name: &str) -> Result<()> {
    c.apply_yaml(s.tb.state_dir(), name, &writer_pod(name, "shared", None))
        .await?;
    wait_pod_ready(c, name).await?;
    let seen = exec(c, name, &["tail", "-n", "1", "/data/writer-a.log"]).await?;
    ensure!(
        !seen.trim().is_empty(),
        "{name} reads nothing of writer-a's file"
    );
    c.kubectl(&["-n", NS, "delete", "pod", name, "--wait=true"])
        .await?;
    Ok(())
}

/// A Gluster host name that no DNS knows, only the node's /etc/hosts (for the trial below).
const HOSTS_NAME: &str = "gluster-e2e-h1.test";
/// The node's host table: the root namespace's, the one kubelet copies into host-network pods.
const ETC_HOSTS: &str = "/etc/hosts";
/// Marks the line the suite adds to /etc/hosts.
const HOSTS_MARK: &str = "# added by gluster-csi k8s_e2e";

/// An entry added to /etc/hosts, removed again when dropped (also when the trial fails or
/// panics). The file is rewritten in place: it may be a bind mount.
struct EtcHostsEntry {
    original: Option<String>,
}

impl EtcHostsEntry {
    fn add(name: &str, address: std::net::Ipv4Addr) -> Result<Self> {
        let text = std::fs::read_to_string(ETC_HOSTS)?;
        // A run killed before it could clean up left its line: drop it.
        let original: String = text
            .lines()
            .filter(|l| !l.contains(HOSTS_MARK))
            .map(|l| format!("{l}\n"))
            .collect();
        let entry = Self {
            original: Some(original.clone()),
        };
        std::fs::write(
            ETC_HOSTS,
            format!("{original}{address} {name} {HOSTS_MARK}\n"),
        )?;
        Ok(entry)
    }

    fn restore(mut self) -> Result<()> {
        match self.original.take() {
            Some(text) => std::fs::write(ETC_HOSTS, text).context("restoring /etc/hosts"),
            None => Ok(()),
        }
    }
}

impl Drop for EtcHostsEntry {
    fn drop(&mut self) {
        if let Some(text) = self.original.take() {
            let _ = std::fs::write(ETC_HOSTS, text);
        }
    }
}

/// Operators often name Gluster hosts in each node's /etc/hosts rather than in DNS. The FUSE
/// client resolves the volfile server in the node plugin's container, whose /etc/hosts kubelet
/// copies from the node's when the pod starts (a host-network pod): a volume whose server is
/// such a name mounts once the plugin pod started after the edit.
async fn gluster_host_in_etc_hosts(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let address = s.tb.hosts().first().context("no Gluster host")?.address;
    let before = cmd::output(&["getent", "hosts", HOSTS_NAME], SHORT).await?;
    ensure!(
        !before.status.success(),
        "{HOSTS_NAME} resolves without /etc/hosts: {}",
        String::from_utf8_lossy(&before.stdout)
    );
    let entry = EtcHostsEntry::add(HOSTS_NAME, address)?;
    let result = mount_by_etc_hosts_name(&c, &s, address).await;
    let restored = entry.restore();
    result?;
    restored?;
    let after = cmd::output(&["getent", "hosts", HOSTS_NAME], SHORT).await?;
    ensure!(
        !after.status.success(),
        "/etc/hosts still names {HOSTS_NAME} after the trial"
    );
    Ok(())
}

async fn mount_by_etc_hosts_name(
    c: &Cluster,
    s: &Suite,
    address: std::net::Ipv4Addr,
) -> Result<()> {
    // kubelet copies the node's /etc/hosts into a host-network pod when the pod starts.
    let old = node_plugin_pod(c).await?;
    c.kubectl(&["-n", DRIVER_NS, "delete", "pod", &old, "--wait=true"])
        .await?;
    let plugin = wait_for("a new node plugin pod is Ready", LONG, POLL, || async {
        let p = node_plugin_pod(c).await?;
        ensure!(p != old, "still the old pod {old}");
        pod_ready(c, DRIVER_NS, &p).await?;
        Ok(p)
    })
    .await?;
    let seen = c
        .kubectl(&[
            "-n",
            DRIVER_NS,
            "exec",
            &plugin,
            "-c",
            "gluster-csi-node",
            "--",
            "getent",
            "hosts",
            HOSTS_NAME,
        ])
        .await?;
    ensure!(
        seen.split_whitespace().next() == Some(&address.to_string()),
        "the plugin container resolves {HOSTS_NAME} to {seen:?}, not {address}"
    );

    // A Gluster volume, and a PV whose only volfile server is that name (as an administrator
    // writes for an existing volume; the controller puts Heketi's node host names there).
    let heketi = s.tb.heketi_client()?;
    let req = calls::direct_request("e2e_etc_hosts", 0, VolumeDurabilityInfo::replicate(3));
    let vol = calls::heketi_create(&heketi, &req).await?;
    let pv_name = "gcsi-e2e-etc-hosts";
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {pv_name}
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef:
    namespace: {NS}
    name: etc-hosts
  csi:
    driver: {DRIVER}
    volumeHandle: e2e-etc-hosts-{id}
    volumeAttributes:
      glusterServers: {HOSTS_NAME}
      glusterVolume: {name}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: etc-hosts
  namespace: {NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: {pv_name}
  resources:
    requests:
      storage: 1Gi
"#,
        id = vol.id,
        name = vol.name,
    );
    let mounted = async {
        c.apply_yaml(s.tb.state_dir(), "etc-hosts", &yaml).await?;
        wait_bound(c, "etc-hosts").await?;
        c.apply_yaml(
            s.tb.state_dir(),
            "etc-hosts-pod",
            &writer_pod("etc-hosts", "etc-hosts", None),
        )
        .await?;
        // Ready: the pod has written its file on the volume.
        wait_pod_ready(c, "etc-hosts").await?;
        let source = format!("{HOSTS_NAME}:");
        let table = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mount = table
            .lines()
            .filter(|l| l.contains("fuse.glusterfs") && l.contains(&vol.name))
            .find_map(|l| l.split_once(" - ").map(|(_, after)| after.to_owned()))
            .with_context(|| format!("no glusterfs mount of {} on the node", vol.name))?;
        ensure!(
            mount
                .split_whitespace()
                .nth(1)
                .is_some_and(|src| src.starts_with(&source)),
            "the node's mount of {} is not from {HOSTS_NAME}: {mount}",
            vol.name
        );
        // The pod's bytes reached the bricks.
        let written = (0..s.tb.hosts().len())
            .filter(|i| find_file(&s.tb.host_disk(*i), "etc-hosts.log", 5))
            .count();
        ensure!(
            written >= 2,
            "etc-hosts.log is on {written} of the volume's bricks"
        );
        no_io_errors(c, &["etc-hosts"]).await
    }
    .await;
    // Clean up whatever happened: pod, claim, PV, volume.
    let _ = c
        .kubectl(&[
            "-n",
            NS,
            "delete",
            "pod",
            "etc-hosts",
            "--wait=true",
            "--ignore-not-found",
        ])
        .await;
    let _ = c
        .kubectl(&[
            "-n",
            NS,
            "delete",
            "pvc",
            "etc-hosts",
            "--wait=true",
            "--ignore-not-found",
        ])
        .await;
    let _ = c
        .kubectl(&["delete", "pv", pv_name, "--wait=true", "--ignore-not-found"])
        .await;
    mounted?;
    calls::heketi_delete(&heketi, &vol.id).await
}

/// Whether a file named `name` is under `dir`, at most `depth` levels down.
fn find_file(dir: &Path, name: &str, depth: usize) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == name) {
                return true;
            }
            depth > 0 && p.is_dir() && find_file(&p, name, depth - 1)
        })
}

async fn intree_class_across_controller_restart(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let t0 = Instant::now();
    create_claim(&c, &s, "intree", "gcsi-e2e-intree", "1Gi").await?;
    let pv = wait_bound(&c, "intree").await?;
    s.timing("PVC created to Bound (in-tree class, replicate:2)", t0);
    let volume = field(&pv, &["spec", "csi", "volumeAttributes", "glusterVolume"]).to_owned();
    let info = s.tb.gluster(0, &["volume", "info", &volume]).await?;
    ensure!(
        info.contains("Number of Bricks: 1 x 2 = 2"),
        "volumetype replicate:2 did not make a 2-brick replica:\n{info}"
    );
    ensure!(
        volume.starts_with("k8s"),
        "volumenameprefix k8s not applied: {volume}"
    );

    replace_controller_pod(&c, &s, None).await?;

    let pv_name = field(&pv, &["metadata", "name"]).to_owned();
    c.kubectl(&["-n", NS, "delete", "pvc", "intree", "--wait=true"])
        .await?;
    wait_for("the in-tree class's PV is deleted", LONG, POLL, || async {
        let out = c
            .kubectl(&["get", "pv", &pv_name, "--ignore-not-found"])
            .await?;
        if out.trim().is_empty() {
            return Ok(());
        }
        let pv = c.json(&["get", "pv", &pv_name]).await?;
        bail!("PV {pv_name} is {}", field(&pv, &["status", "phase"]))
    })
    .await
    .with_context(|| events_of(&c, &pv_name))?;
    let list = s.tb.gluster(0, &["volume", "list"]).await?;
    ensure!(
        !list.lines().any(|l| l.trim() == volume),
        "Gluster volume {volume} is still there after its PV was deleted"
    );
    Ok(())
}

async fn controller_killed_during_create(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let heketi = s.tb.heketi_client()?;
    let before: BTreeSet<String> = heketi.volume_list().await?.volumes.into_iter().collect();
    create_claim(&c, &s, "crash", "gcsi-e2e", "1Gi").await?;
    let pvc = c.json(&["-n", NS, "get", "pvc", "crash"]).await?;
    let uid = field(&pvc, &["metadata", "uid"]).to_owned();
    // Kill the controller once the provisioner announced it is provisioning the claim (its
    // CreateVolume is then in flight: a create takes seconds of Gluster work).
    let pod = controller_pod(&c).await?;
    wait_for(
        "the provisioner starts provisioning the claim",
        SHORT,
        Duration::from_millis(100),
        || async {
            let events = c
                .kubectl(&[
                    "-n",
                    NS,
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=crash,reason=Provisioning",
                    "-o",
                    "name",
                ])
                .await?;
            ensure!(!events.trim().is_empty(), "no Provisioning event yet");
            Ok(())
        },
    )
    .await?;
    let pvc = c.json(&["-n", NS, "get", "pvc", "crash"]).await?;
    ensure!(
        field(&pvc, &["spec", "volumeName"]).is_empty(),
        "the claim bound before the controller could be killed; the create was too quick to test"
    );
    replace_controller_pod(&c, &s, Some(&pod)).await?;
    let pv = wait_bound(&c, "crash").await?;
    // Bound once: one PV names the claim; Heketi holds one volume more than before, the PV's.
    let pvs = c.json(&["get", "pv"]).await?;
    let for_claim = pvs["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| field(p, &["spec", "claimRef", "uid"]) == uid)
                .count()
        })
        .unwrap_or(0);
    ensure!(for_claim == 1, "{for_claim} PVs name the claim");
    let after: BTreeSet<String> = heketi.volume_list().await?.volumes.into_iter().collect();
    let new: Vec<&String> = after.difference(&before).collect();
    ensure!(
        new.len() == 1,
        "Heketi gained {} volumes for one claim: {new:?} (PV {})",
        new.len(),
        field(&pv, &["metadata", "name"])
    );
    Ok(())
}

/// What docs/install.md, "Snapshots and restore", promises, through the real csi-snapshotter,
/// snapshot-controller and csi-provisioner: a VolumeSnapshot becomes ready with the source's
/// size and a snapshot id of the driver; the snapshot is a Heketi volume of its own named after
/// its source; a claim restored from it (larger than the snapshot) holds the data of the
/// snapshot's moment, not later writes, and is writable; the source claim and volume can be
/// deleted and the snapshot still restores; deleting the VolumeSnapshot deletes its volume.
async fn snapshot_and_restore(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let heketi = s.tb.heketi_client()?;
    // deploy/examples/snapshot's class, with the suite's Secret.
    let class = format!(
        r#"apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: {SNAPSHOT_CLASS}
driver: {DRIVER}
deletionPolicy: Delete
parameters:
  csi.storage.k8s.io/snapshotter-secret-name: heketi-e2e
  csi.storage.k8s.io/snapshotter-secret-namespace: {DRIVER_NS}
"#
    );
    c.apply_yaml(s.tb.state_dir(), "snapshot-class", &class)
        .await?;

    // The source: a marker written, then nothing (a copy is verified against changes).
    create_claim(&c, &s, "snap-src", "gcsi-e2e", "1Gi").await?;
    let source_pv = wait_bound(&c, "snap-src").await?;
    let source_id = field(
        &source_pv,
        &["spec", "csi", "volumeAttributes", "heketiVolumeId"],
    )
    .to_owned();
    ensure!(
        !source_id.is_empty(),
        "PV without heketiVolumeId: {source_pv}"
    );
    start_idle_pod(&c, &s, "snap-src-pod", "snap-src").await?;
    exec(
        &c,
        "snap-src-pod",
        &["sh", "-c", "echo before > /data/marker; sync"],
    )
    .await?;
    // heketi-server rejects a copy when an entry of the source changed from 2 s before the
    // copy began (and tries again): leave the marker that long, so that the first attempt is
    // the one that counts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let t0 = Instant::now();
    c.apply_yaml(
        s.tb.state_dir(),
        "snap-1",
        &volume_snapshot("snap-1", "snap-src"),
    )
    .await?;
    let snap = wait_for("VolumeSnapshot snap-1 readyToUse", LONG, POLL, || async {
        let v = c
            .json(&["-n", NS, "get", "volumesnapshot", "snap-1"])
            .await?;
        ensure!(
            v["status"]["readyToUse"] == Value::Bool(true),
            "status {}",
            v["status"]
        );
        Ok(v)
    })
    .await
    .with_context(|| events_of(&c, "snap-1"))?;
    s.timing("VolumeSnapshot created to readyToUse (1 GiB)", t0);
    let size = field(&snap, &["status", "restoreSize"]);
    ensure!(size == "1Gi", "restoreSize {size:?}, not the source's 1Gi");
    let content_name = field(&snap, &["status", "boundVolumeSnapshotContentName"]).to_owned();
    let content = c
        .json(&["get", "volumesnapshotcontent", &content_name])
        .await?;
    let handle = field(&content, &["status", "snapshotHandle"]).to_owned();
    let snap_id = handle
        .strip_prefix("s1:")
        .and_then(|rest| rest.split(':').next())
        .with_context(|| format!("snapshot handle {handle:?} is not s1:<heketi id>:…"))?
        .to_owned();
    let info = heketi.volume_info(&snap_id).await?;
    ensure!(
        info.name.starts_with("snap_") && info.name.contains(&format!("_{source_id}_")),
        "the snapshot's Heketi volume {} is not named snap_<hash>_{source_id}_<time>",
        info.name
    );

    // Written after the snapshot: not in it.
    exec(
        &c,
        "snap-src-pod",
        &["sh", "-c", "echo after > /data/marker; sync"],
    )
    .await?;

    // A larger claim from the snapshot: the copy, expanded.
    let t0 = Instant::now();
    restore(&c, &s, "snap-restored", "snap-1", "2Gi").await?;
    s.timing(
        "claim from the snapshot created to Bound (1 GiB grown to 2 GiB)",
        t0,
    );
    let marker = exec(&c, "snap-restored-pod", &["cat", "/data/marker"]).await?;
    ensure!(
        marker.trim() == "before",
        "the restored volume holds {marker:?}, not the snapshot's \"before\""
    );
    exec(
        &c,
        "snap-restored-pod",
        &["sh", "-c", "echo mine > /data/restored; sync"],
    )
    .await
    .context("the restored volume is not writable")?;
    let kib = df_kib(&c, "snap-restored-pod").await?;
    ensure!(
        kib > 1536 * 1024,
        "the restored volume shows {kib} KiB, not the claim's 2 GiB"
    );

    // The source goes; its snapshot stays and restores.
    c.kubectl(&["-n", NS, "delete", "pod", "snap-src-pod", "--wait=true"])
        .await?;
    c.kubectl(&["-n", NS, "delete", "pvc", "snap-src", "--wait=true"])
        .await?;
    let pv_name = field(&source_pv, &["metadata", "name"]).to_owned();
    wait_for("the source's PV is deleted", LONG, POLL, || async {
        let out = c
            .kubectl(&["get", "pv", &pv_name, "--ignore-not-found"])
            .await?;
        ensure!(out.trim().is_empty(), "PV {pv_name} is still there");
        Ok(())
    })
    .await?;
    match heketi.volume_info(&source_id).await {
        Err(e) if e.is_not_found() => {}
        other => bail!(
            "the source volume {source_id} is still in Heketi: {:?}",
            other.map(|i| i.name)
        ),
    }
    heketi
        .volume_info(&snap_id)
        .await
        .context("the snapshot's volume went with its source")?;
    restore(&c, &s, "snap-restored-2", "snap-1", "1Gi").await?;
    let marker = exec(&c, "snap-restored-2-pod", &["cat", "/data/marker"]).await?;
    ensure!(
        marker.trim() == "before",
        "restored after the source was deleted: {marker:?}, not \"before\""
    );

    // Deleting the VolumeSnapshot deletes its volume; the restored claims stay.
    c.kubectl(&[
        "-n",
        NS,
        "delete",
        "volumesnapshot",
        "snap-1",
        "--wait=true",
    ])
    .await?;
    wait_for(
        "the snapshot's content and volume are deleted",
        LONG,
        POLL,
        || async {
            let out = c
                .kubectl(&[
                    "get",
                    "volumesnapshotcontent",
                    &content_name,
                    "--ignore-not-found",
                ])
                .await?;
            ensure!(out.trim().is_empty(), "{content_name} is still there");
            match heketi.volume_info(&snap_id).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => bail!(
                    "the snapshot's volume is still in Heketi: {:?}",
                    other.map(|i| i.name)
                ),
            }
        },
    )
    .await?;
    let marker = exec(&c, "snap-restored-pod", &["cat", "/data/restored"]).await?;
    ensure!(
        marker.trim() == "mine",
        "the restored volume lost its data: {marker:?}"
    );
    c.kubectl(&["delete", "volumesnapshotclass", SNAPSHOT_CLASS])
        .await
        .map(drop)
}

/// The heketi-server image runs as a pod and serves the Heketi API (`/hello`); the gluster CLI
/// it drives the pool with runs inside it.
async fn heketi_server_image(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    let port = gluster_csi_testbed::heketi::free_port(std::net::Ipv4Addr::LOCALHOST)?;
    let yaml = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: heketi-server-e2e
  namespace: {NS}
stringData:
  admin-key: "{key}"
---
apiVersion: v1
kind: Pod
metadata:
  name: heketi-server
  namespace: {NS}
spec:
  # The test cluster's pod network is not reachable from the host; the test calls the pod on
  # the host's loopback.
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: heketi-server
      image: localhost/heketi-server:{TAG}
      imagePullPolicy: Never
      args:
        - --listen=127.0.0.1:{port}
        - --state-dir=/state
        - --admin-key-file=/keys/admin-key
      volumeMounts:
        - {{name: state, mountPath: /state}}
        - {{name: keys, mountPath: /keys, readOnly: true}}
  volumes:
    - {{name: state, emptyDir: {{}}}}
    - {{name: keys, secret: {{secretName: heketi-server-e2e}}}}
"#,
        key = s.tb.env().heketi_key,
    );
    c.apply_yaml(s.tb.state_dir(), "heketi-server", &yaml)
        .await?;
    wait_pod_ready(&c, "heketi-server").await?;
    let client = heketi_client::ClientBuilder::new(format!("http://127.0.0.1:{port}"))
        .user("admin")
        .key(s.tb.env().heketi_key.clone().into())
        .build()?;
    let hello = wait_for(
        "heketi-server in its pod answers /hello",
        SHORT,
        POLL,
        || {
            let client = client.clone();
            async move { Ok(client.hello().await?) }
        },
    )
    .await?;
    ensure!(!hello.trim().is_empty(), "empty /hello answer");
    // An authenticated call: the key from the Secret is the one it verifies tokens with.
    let clusters = client.cluster_list().await?;
    ensure!(
        clusters.clusters.is_empty(),
        "a fresh heketi-server lists clusters: {:?}",
        clusters.clusters
    );
    let version = exec(&c, "heketi-server", &["gluster", "--version"]).await?;
    ensure!(
        version.contains("glusterfs"),
        "gluster --version in the image: {version}"
    );
    c.kubectl(&["-n", NS, "delete", "pod", "heketi-server", "--wait=true"])
        .await?;
    Ok(())
}

/// The topology Component on a running installation, as docs/multiple-sites.md has an operator
/// do it: the node labelled with its zone, the controller's Heketi placed in that zone in the
/// backends file, the Component added. The node plugin reads the zone from the Node's label and kubelet puts
/// the driver's key on the Node; the provisioner's capacity tracking publishes a
/// CSIStorageCapacity for the zonal class in that zone; a WaitForFirstConsumer claim gets its
/// volume from the zone's backend, with the zone as the PV's node affinity, and a pod on it
/// writes; a claim made before topology still mounts in a new pod.
async fn topology_and_capacity(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    c.kubectl(&[
        "label",
        "node",
        "localhost",
        &format!("{ZONE_LABEL}={ZONE}"),
        "--overwrite",
    ])
    .await?;
    let objects = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: gluster-csi-backends
  namespace: {DRIVER_NS}
data:
  backends.yaml: |
    backends:
      # The controller's own Heketi (--heketi-url), placed in the zone.
      - name: default
        topology:
          zone: {ZONE}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gcsi-e2e-zonal
provisioner: {DRIVER}
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
parameters:
  volumetype: "replicate:3"
allowedTopologies:
  - matchLabelExpressions:
      - key: {ZONE_KEY}
        values: [{ZONE}]
"#,
    );
    c.apply_yaml(s.tb.state_dir(), "topology", &objects).await?;
    let t0 = Instant::now();
    let dir = overlay_with(&s.tb, true)?;
    // Keep the node plugin's image: an earlier trial moved the DaemonSet to another one and
    // removed the first from the node.
    let ds = c
        .json(&["-n", DRIVER_NS, "get", "daemonset", "gluster-csi-node"])
        .await?;
    let image = image_of(&ds["spec"]["template"]["spec"], "gluster-csi-node");
    let (name, tag) = image
        .rsplit_once(':')
        .with_context(|| format!("node plugin image {image:?} has no tag"))?;
    let mut kustomization = std::fs::read_to_string(dir.join("kustomization.yaml"))?;
    kustomization.push_str(&format!("images:\n  - name: {name}\n    newTag: {tag}\n"));
    std::fs::write(dir.join("kustomization.yaml"), kustomization)?;
    c.kubectl(&["apply", "-k", &dir.display().to_string()])
        .await?;
    rolled_out(&c, "daemonset/gluster-csi-node").await?;
    rolled_out(&c, "deployment/gluster-csi-controller").await?;
    s.timing("topology Component applied to rolled out", t0);

    wait_for(
        "kubelet registers the driver with the zone key and labels the Node",
        LONG,
        POLL,
        || async {
            let csinode = c.json(&["get", "csinode", "localhost"]).await?;
            let keys = csinode["spec"]["drivers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| field(d, &["name"]) == DRIVER)
                .map(|d| d["topologyKeys"].to_string())
                .unwrap_or_default();
            ensure!(keys.contains(ZONE_KEY), "CSINode topology keys: {keys:?}");
            let node = c.json(&["get", "node", "localhost"]).await?;
            let value = field(&node, &["metadata", "labels", ZONE_KEY]);
            ensure!(value == ZONE, "Node label {ZONE_KEY} is {value:?}");
            Ok(())
        },
    )
    .await
    .with_context(|| c.kubelet_log_tail(20))?;

    let capacity = wait_for(
        "a CSIStorageCapacity for gcsi-e2e-zonal in the zone",
        LONG,
        POLL,
        || async {
            let list = c
                .json(&["-n", DRIVER_NS, "get", "csistoragecapacities"])
                .await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let ours = items.iter().find(|o| {
                field(o, &["storageClassName"]) == "gcsi-e2e-zonal"
                    && field(o, &["nodeTopology", "matchLabels", ZONE_KEY]) == ZONE
            });
            let Some(o) = ours else {
                bail!("CSIStorageCapacity objects: {}", list["items"]);
            };
            let bytes = quantity_bytes(field(o, &["capacity"]))?;
            ensure!(bytes > 0, "capacity 0 in the zone: {o}");
            let owner = o["metadata"]["ownerReferences"].to_string();
            ensure!(
                owner.contains("\"kind\":\"Deployment\"")
                    && owner.contains("gluster-csi-controller"),
                "not owned by the controller Deployment: {owner}"
            );
            Ok(bytes)
        },
    )
    .await
    .with_context(|| pods_report_blocking(&c, DRIVER_NS))?;
    eprintln!("k8s-e2e: CSIStorageCapacity of gcsi-e2e-zonal in {ZONE}: {capacity} bytes");

    let t0 = Instant::now();
    create_claim(&c, &s, "zonal", "gcsi-e2e-zonal", "1Gi").await?;
    c.apply_yaml(
        s.tb.state_dir(),
        "zonal-writer",
        &writer_pod("zonal-writer", "zonal", None),
    )
    .await?;
    let pv = wait_bound(&c, "zonal").await?;
    wait_pod_ready(&c, "zonal-writer").await?;
    s.timing(
        "zonal claim and pod created to Ready (WaitForFirstConsumer)",
        t0,
    );

    let handle = field(&pv, &["spec", "csi", "volumeHandle"]);
    ensure!(
        handle.contains(":ndefault"),
        "volume id {handle:?} does not name the zone's backend (default)"
    );
    let affinity = pv["spec"]["nodeAffinity"]["required"].to_string();
    ensure!(
        affinity.contains(ZONE_KEY) && affinity.contains(ZONE),
        "PV node affinity {affinity} does not hold {ZONE_KEY}={ZONE}"
    );
    no_io_errors(&c, &["zonal-writer"])
        .await
        .context("the pod on the zonal claim")?;

    // A claim made before topology (the first trial's, no node affinity) still mounts in a
    // new pod, through the node plugin that now reports a zone, and holds its files.
    let old = c.json(&["-n", NS, "get", "pvc", "shared"]).await?;
    let old_pv = c
        .json(&["get", "pv", field(&old, &["spec", "volumeName"])])
        .await?;
    ensure!(
        old_pv["spec"]["nodeAffinity"].is_null(),
        "the claim made before topology has a node affinity: {}",
        old_pv["spec"]["nodeAffinity"]
    );
    start_idle_pod(&c, &s, "old-claim-reader", "shared").await?;
    let files = exec(&c, "old-claim-reader", &["ls", "/data"]).await?;
    ensure!(
        files.contains("writer-a.log"),
        "the claim made before topology shows {files:?} in a new pod"
    );
    Ok(())
}

/// A resource quantity (`1Gi`, `107374182400`, `500M`) in bytes.
fn quantity_bytes(q: &str) -> Result<u64> {
    let split = q.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().with_context(|| format!("quantity {q:?}"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => bail!("quantity {q:?}: unit {suffix:?} not known here"),
    };
    Ok(n * unit)
}

async fn everything_deleted(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
    // Snapshots first (an earlier trial may have failed with some left): with deletionPolicy
    // Delete their contents go, and the driver deletes their Heketi volumes.
    c.kubectl(&["-n", NS, "delete", "volumesnapshot", "--all", "--wait=true"])
        .await?;
    wait_for(
        "every VolumeSnapshotContent of the driver is deleted",
        LONG,
        POLL,
        || async {
            let contents = c.json(&["get", "volumesnapshotcontent"]).await?;
            let left: Vec<&str> = contents["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| field(v, &["spec", "driver"]) == DRIVER)
                .map(|v| field(v, &["metadata", "name"]))
                .collect();
            ensure!(left.is_empty(), "VolumeSnapshotContents left: {left:?}");
            Ok(())
        },
    )
    .await?;
    c.kubectl(&["-n", NS, "delete", "pod", "--all", "--wait=true"])
        .await?;
    c.kubectl(&["-n", NS, "delete", "pvc", "--all", "--wait=true"])
        .await?;
    wait_for("every PV of the driver is deleted", LONG, POLL, || async {
        let pvs = c.json(&["get", "pv"]).await?;
        let left: Vec<String> = pvs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| field(p, &["spec", "csi", "driver"]) == DRIVER)
            .map(|p| {
                format!(
                    "{} ({})",
                    field(p, &["metadata", "name"]),
                    field(p, &["status", "phase"])
                )
            })
            .collect();
        ensure!(left.is_empty(), "PVs left: {left:?}");
        Ok(())
    })
    .await?;
    let heketi = s.tb.heketi_client()?;
    let volumes = heketi.volume_list().await?.volumes;
    ensure!(
        volumes.is_empty(),
        "Heketi still lists volumes: {volumes:?}"
    );
    let list = s.tb.gluster(0, &["volume", "list"]).await?;
    ensure!(
        list.trim().is_empty() || list.contains("No volumes present"),
        "Gluster still has volumes:\n{list}"
    );
    for (i, _) in s.tb.hosts().iter().enumerate() {
        let root = s.tb.host_disk(i);
        let bricks: Vec<String> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("brick_"))
            .collect();
        ensure!(bricks.is_empty(), "bricks left on host {i}: {bricks:?}");
    }
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| l.contains("fuse.glusterfs"))
        .map(str::to_owned)
        .collect();
    ensure!(
        mounts.is_empty(),
        "glusterfs mounts left on the node:\n{}",
        mounts.join("\n")
    );
    let clients = fuse_clients("");
    ensure!(
        clients.is_empty(),
        "glusterfs clients left on the node: {clients:?}"
    );

    // Uninstall, so that the cluster is as the suite found it.
    c.kubectl(&["delete", "namespace", NS, "--wait=true"])
        .await?;
    c.kubectl(&[
        "delete",
        "storageclass",
        "gcsi-e2e",
        "gcsi-e2e-intree",
        "gcsi-e2e-zonal",
        "--ignore-not-found",
    ])
    .await?;
    c.kubectl(&[
        "delete",
        "volumesnapshotclass",
        SNAPSHOT_CLASS,
        "--ignore-not-found",
    ])
    .await?;
    // With the topology Component: its objects as well, whether or not its trial got to
    // apply it; then the labels that trial gave the node.
    let dir = overlay_with(&s.tb, true)?;
    c.kubectl(&[
        "delete",
        "-k",
        &dir.display().to_string(),
        "--wait=true",
        "--ignore-not-found",
    ])
    .await?;
    c.kubectl(&[
        "label",
        "node",
        "localhost",
        &format!("{ZONE_LABEL}-"),
        &format!("{ZONE_KEY}-"),
    ])
    .await?;
    let timings = s.timings.lock().unwrap_or_else(PoisonError::into_inner);
    eprintln!("k8s-e2e timings:");
    for (what, secs) in timings.iter() {
        eprintln!("  {what}: {secs:.1} s");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A claim `name` from VolumeSnapshot `snapshot`, bound, with a pod `<name>-pod` on it.
async fn restore(c: &Cluster, s: &Suite, name: &str, snapshot: &str, size: &str) -> Result<()> {
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: {NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: gcsi-e2e
  resources:
    requests:
      storage: {size}
  dataSource:
    apiGroup: snapshot.storage.k8s.io
    kind: VolumeSnapshot
    name: {snapshot}
"#
    );
    c.apply_yaml(s.tb.state_dir(), &format!("pvc-{name}"), &yaml)
        .await?;
    wait_bound(c, name).await?;
    start_idle_pod(c, s, &format!("{name}-pod"), name).await
}

fn volume_snapshot(name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: {name}
  namespace: {NS}
spec:
  volumeSnapshotClassName: {SNAPSHOT_CLASS}
  source:
    persistentVolumeClaimName: {claim}
"#
    )
}

/// A pod that keeps `claim` mounted at /data and writes nothing by itself.
/// Creates [`idle_pod`] `name` on `claim` and waits until it is Ready (the volume mounted).
async fn start_idle_pod(c: &Cluster, s: &Suite, name: &str, claim: &str) -> Result<()> {
    c.apply_yaml(s.tb.state_dir(), name, &idle_pod(name, claim))
        .await?;
    wait_pod_ready(c, name).await
}

fn idle_pod(name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NS}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: {BUSYBOX}
      imagePullPolicy: Never
      command: [sh, -c, "exec sleep 2147483647"]
      readinessProbe:
        exec:
          command: [sh, -c, "grep -q ' /data ' /proc/mounts"]
        periodSeconds: 1
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: {claim}
"#
    )
}

async fn create_claim(c: &Cluster, s: &Suite, name: &str, class: &str, size: &str) -> Result<()> {
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: {NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: {class}
  resources:
    requests:
      storage: {size}
"#
    );
    c.apply_yaml(s.tb.state_dir(), &format!("pvc-{name}"), &yaml)
        .await
        .map(drop)
}

async fn wait_bound(c: &Cluster, claim: &str) -> Result<Value> {
    let pv_name = wait_for(&format!("claim {claim} Bound"), LONG, POLL, || async {
        let pvc = c.json(&["-n", NS, "get", "pvc", claim]).await?;
        let phase = field(&pvc, &["status", "phase"]);
        ensure!(phase == "Bound", "phase {phase:?}");
        Ok(field(&pvc, &["spec", "volumeName"]).to_owned())
    })
    .await
    .with_context(|| events_of(c, claim))?;
    c.json(&["get", "pv", &pv_name]).await
}

/// A pod that writes a line to `/data/<pod>.log` every 0.2 s and reads the last line of every
/// `.log` on the volume, printing `IOERR` on any failure, so that its log shows every I/O error.
fn writer_pod(name: &str, claim: &str, user: Option<u32>) -> String {
    let security = match user {
        Some(u) => format!("  securityContext:\n    runAsUser: {u}\n    runAsGroup: {u}\n"),
        None => String::new(),
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NS}
spec:
  terminationGracePeriodSeconds: 1
{security}  containers:
    - name: app
      image: {BUSYBOX}
      imagePullPolicy: Never
      command:
        - sh
        - -c
        - |
          f=/data/$(hostname).log; i=0
          while true; do
            i=$((i+1))
            echo "$i $(date +%s)" >> "$f" || echo "IOERR write $i $(date +%T)"
            for p in /data/*.log; do
              tail -n 1 "$p" > /dev/null || echo "IOERR read $p $(date +%T)"
            done
            sleep 0.2
          done
      readinessProbe:
        exec:
          command: [test, -s, /data/{name}.log]
        periodSeconds: 1
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: {claim}
"#
    )
}

async fn pod_ready(c: &Cluster, ns: &str, pod: &str) -> Result<()> {
    let p = c.json(&["-n", ns, "get", "pod", pod]).await?;
    let ready = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|cnd| field(cnd, &["type"]) == "Ready" && field(cnd, &["status"]) == "True");
    ensure!(
        ready,
        "pod {ns}/{pod} is {} ({})",
        field(&p, &["status", "phase"]),
        p["status"]["containerStatuses"]
    );
    Ok(())
}

async fn wait_pod_ready(c: &Cluster, pod: &str) -> Result<()> {
    wait_for(&format!("pod {pod} Ready"), LONG, POLL, || {
        pod_ready(c, NS, pod)
    })
    .await
    .with_context(|| events_of(c, pod))
}

async fn exec(c: &Cluster, pod: &str, argv: &[&str]) -> Result<String> {
    let mut args = vec!["-n", NS, "exec", pod, "--"];
    args.extend_from_slice(argv);
    c.kubectl(&args).await
}

/// Size of the volume as the pod's `df` shows it, in KiB.
async fn df_kib(c: &Cluster, pod: &str) -> Result<u64> {
    let out = exec(c, pod, &["df", "-kP", "/data"]).await?;
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected df output: {out}"))
}

async fn restart_counts(c: &Cluster, pods: &[&str]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for pod in pods {
        let p = c.json(&["-n", NS, "get", "pod", pod]).await?;
        out.push(
            p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    Ok(out)
}

/// Fails when a pod's log shows an I/O error or the pod restarted.
async fn no_io_errors(c: &Cluster, pods: &[&str]) -> Result<()> {
    for pod in pods {
        let log = c.kubectl(&["-n", NS, "logs", pod]).await?;
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("IOERR") || l.contains("sh:"))
            .collect();
        ensure!(
            errors.is_empty(),
            "pod {pod} saw I/O errors:\n{}",
            errors
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let restarts = restart_counts(c, pods).await?;
    ensure!(
        restarts.iter().all(|r| *r == 0),
        "pods restarted: {pods:?} {restarts:?}"
    );
    Ok(())
}

/// The number of lines each pod has written so far.
async fn progress(c: &Cluster, pods: &[&str]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for pod in pods {
        let n = exec(c, pod, &["wc", "-l", &format!("/data/{pod}.log")]).await?;
        out.push(
            n.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("wc output {n:?}"))?,
        );
    }
    Ok(out)
}

/// The writers wrote on (at least 10 more lines each) and saw no error.
async fn writers_went_on(c: &Cluster, pods: &[&str], mark: &[u64]) -> Result<()> {
    wait_for("every writer writes on", SHORT, POLL, || async {
        let now = progress(c, pods).await?;
        ensure!(
            now.iter().zip(mark).all(|(n, m)| *n >= m + 10),
            "lines written before {mark:?}, now {now:?}"
        );
        Ok(())
    })
    .await?;
    no_io_errors(c, pods).await
}

/// Pids of the node's `glusterfs` processes whose command line names `volume` (all of them
/// for "").
fn fuse_clients(volume: &str) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() != "glusterfs" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Clients of the suite's volumes mount under kubelet's directory; the testbed's own
        // Gluster daemons (self-heal, quota) are no FUSE clients of the node.
        if args.contains("/var/lib/kubelet/") && args.contains(volume) {
            found.insert(pid);
        }
    }
    found
}

/// The image of container `name` in a pod spec (empty when there is no such container).
fn image_of(pod_spec: &Value, name: &str) -> String {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ct| field(ct, &["name"]) == name)
        .map(|ct| field(ct, &["image"]).to_owned())
        .unwrap_or_default()
}

async fn node_plugin_pod(c: &Cluster) -> Result<String> {
    running_pod(c, NODE_PODS).await
}

async fn controller_pod(c: &Cluster) -> Result<String> {
    running_pod(c, CONTROLLER_PODS).await
}

async fn running_pod(c: &Cluster, selector: &str) -> Result<String> {
    let pods = c
        .json(&["-n", DRIVER_NS, "get", "pods", "-l", selector])
        .await?;
    let names: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| field(p, &["metadata", "name"]).to_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one pod {selector}, found {names:?}"),
    }
}

/// Deletes the controller pod (`pod`, or the current one) with a one-second grace period and
/// waits until its replacement is Ready.
async fn replace_controller_pod(c: &Cluster, s: &Suite, pod: Option<&str>) -> Result<()> {
    let old = match pod {
        Some(p) => p.to_owned(),
        None => controller_pod(c).await?,
    };
    let t0 = Instant::now();
    c.kubectl(&[
        "-n",
        DRIVER_NS,
        "delete",
        "pod",
        &old,
        "--grace-period=1",
        "--wait=false",
    ])
    .await?;
    wait_for("a new controller pod is Ready", LONG, POLL, || async {
        let p = controller_pod(c).await?;
        ensure!(p != old, "still the old pod {old}");
        pod_ready(c, DRIVER_NS, &p).await
    })
    .await
    .with_context(|| pods_report_blocking(c, DRIVER_NS))?;
    s.timing("controller pod deleted to a new one Ready", t0);
    Ok(())
}

/// `kubectl get events` about `name`, for failure messages (best effort).
fn events_of(c: &Cluster, name: &str) -> String {
    let c = c.clone();
    let shown = name.to_owned();
    let name = name.to_owned();
    std::thread::spawn(move || {
        harness::block_on(async {
            c.kubectl(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                &format!("involvedObject.name={name}"),
            ])
            .await
            .unwrap_or_default()
        })
    })
    .join()
    .map(|s| format!("events about {shown}:\n{s}"))
    .unwrap_or_default()
}

/// The pods of `ns` with their state, for failure messages (best effort).
fn pods_report_blocking(c: &Cluster, ns: &str) -> String {
    let c = c.clone();
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        harness::block_on(async {
            let pods = c
                .kubectl(&["-n", &ns, "get", "pods", "-o", "wide"])
                .await
                .unwrap_or_default();
            let events = c
                .kubectl(&["-n", &ns, "get", "events"])
                .await
                .unwrap_or_default();
            format!("pods:\n{pods}\nevents:\n{}", k8s::tail(&events, 20))
        })
    })
    .join()
    .unwrap_or_default()
}
