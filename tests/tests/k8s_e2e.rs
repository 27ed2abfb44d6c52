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
use gluster_csi_testbed::bench::calls;
use gluster_csi_testbed::k8s::{self, Cluster, field, wait_for};
use gluster_csi_testbed::{Testbed, TestbedOptions, cmd, harness};
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
                "node_plugin_pod_deleted_then_rolled_out_writers_never_see_an_error",
                |s| Box::pin(node_plugin_replacement(s)),
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
                "heketi_server_image_answers_hello_and_runs_the_gluster_cli",
                |s| Box::pin(heketi_server_image(s)),
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
            cluster
                .load_image(&archive)
                .await
                .with_context(|| format!("loading {}", archive.display()))?;
        }
        self.timing("images loaded into containerd", t0);
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

/// Writes `target/k8s-e2e/kustomization.yaml`: the committed test overlay plus what every
/// operator sets (image names, the Heketi URL, the key Secret), and returns its directory.
fn generated_overlay(tb: &Testbed) -> Result<PathBuf> {
    let dir = k8s::repo_dir().join("target/k8s-e2e");
    std::fs::create_dir_all(&dir)?;
    let env = tb.env();
    let key_file = dir.join("heketi-key");
    std::fs::write(&key_file, &env.heketi_key)?;
    let yaml = format!(
        r#"# Generated by tests/tests/k8s_e2e.rs: the test overlay plus the settings every operator
# makes (images from their registry, their Heketi's URL and admin key).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../tests/k8s/overlay
images:
  - name: ghcr.io/gluster-csi/gluster-csi-controller
    newName: localhost/gluster-csi-controller
    newTag: {TAG}
  - name: ghcr.io/gluster-csi/gluster-csi-node
    newName: localhost/gluster-csi-node
    newTag: {TAG}
patches:
  - target:
      kind: ConfigMap
      name: gluster-csi-controller
    patch: |-
      - op: replace
        path: /data/HEKETI_URL
        value: {url}
      - op: replace
        path: /data/HEKETI_USER
        value: {user}
secretGenerator:
  - name: gluster-csi-heketi
    namespace: {DRIVER_NS}
    files:
      - key=heketi-key
    options:
      disableNameSuffixHash: true
"#,
        url = env.heketi_url,
        user = env.heketi_user,
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
    for dir in kustomizations(&repo.join("deploy"))? {
        let shown = dir
            .strip_prefix(&repo)
            .unwrap_or(&dir)
            .display()
            .to_string();
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

    // 2. kubectl rollout restart.
    let mark = progress(&c, &pods).await?;
    let t0 = Instant::now();
    c.kubectl(&[
        "-n",
        DRIVER_NS,
        "rollout",
        "restart",
        "daemonset/gluster-csi-node",
    ])
    .await?;
    rolled_out(&c, "daemonset/gluster-csi-node").await?;
    let rolled = node_plugin_pod(&c).await?;
    ensure!(rolled != new, "the rollout left the pod {new} in place");
    s.timing("node plugin rollout restart to done", t0);
    writers_went_on(&c, &pods, &mark).await?;
    same_clients(&volume, &clients, "the rollout")?;
    adopt_check(&c, &s, "after-rollout").await?;
    stats_healthy(&c, &pv, "writer-a").await?;

    // A graph switch after the replacement: a client-side option makes every client of the
    // volume load a new translator graph (here one with the negative-lookup cache, which was
    // not loaded before). The clients were started by plugin containers that are gone.
    let mark = progress(&c, &pods).await?;
    s.tb.gluster(0, &["volume", "set", &volume, "performance.nl-cache", "on"])
        .await?;
    writers_went_on(&c, &pods, &mark).await?;
    same_clients(&volume, &clients, "the graph switch")?;
    no_io_errors(&c, &pods).await
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

async fn everything_deleted(s: Arc<Suite>) -> Result<()> {
    let c = s.driver().await?;
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
        let root = s.tb.brick_root(i);
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
        "--ignore-not-found",
    ])
    .await?;
    let dir = generated_overlay(&s.tb)?;
    c.kubectl(&[
        "delete",
        "-k",
        &dir.display().to_string(),
        "--wait=true",
        "--ignore-not-found",
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
