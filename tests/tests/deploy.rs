//! The manifests in `deploy/` agree with each other and with the binaries.
//!
//! No Kubernetes API server runs here: every kustomization is rendered offline with
//! `kubectl kustomize` (the example overlay after filling it in as docs/install.md says), every
//! rendered object is validated against the published OpenAPI schemas of the oldest and the
//! newest Kubernetes minor docs/install.md supports (the `kubernetes-validate` package from
//! PyPI, installed on first use into a virtualenv under the target directory; a failed install
//! fails the test), parsed with the Kubernetes API types (k8s-openapi), and the checks below
//! compare what the objects say with each other and with what the binaries accept (`--help`).
//! The VolumeSnapshot kinds are CRDs of a cluster add-on, in no published schema: they are
//! parsed into the structs below, which refuse unknown fields, and `tests/tests/k8s_e2e.rs`
//! dry-runs them against the real CRDs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use gluster_csi_testbed::install;

const DRIVER: &str = gluster_csi_runtime::args::DEFAULT_DRIVER_NAME;
/// The driver's namespace (deploy/kubernetes/base).
const DRIVER_NS: &str = "gluster-csi";
/// The oldest and the newest Kubernetes minor the manifests are validated against; keep equal
/// to what docs/install.md states.
const OLDEST_K8S: &str = "1.26.0";
const NEWEST_K8S: &str = "1.37.0";
/// The validator: the PyPI package `kubernetes-validate`, whose release carries the schemas of
/// Kubernetes 1.25 up to its own version.
const VALIDATOR: &str = "kubernetes-validate";
const VALIDATOR_VERSION: &str = "1.37.0";
/// The API group of VolumeSnapshots (CRDs of the snapshot add-on, not of Kubernetes itself).
const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
/// Every upstream image the manifests run, exactly as pinned; docs/install.md names each
/// version, and the test cluster of ../shared/k8s carries these names.
const UPSTREAM_IMAGES: [&str; 5] = [
    "registry.k8s.io/sig-storage/csi-provisioner:v5.3.0",
    "registry.k8s.io/sig-storage/csi-resizer:v1.14.0",
    "registry.k8s.io/sig-storage/csi-snapshotter:v8.4.0",
    "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.15.0",
    "registry.k8s.io/sig-storage/livenessprobe:v2.17.0",
];
/// The application image of the examples.
const EXAMPLE_IMAGE: &str = "docker.io/library/busybox:1.37.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every object of one rendered kustomization, typed.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    drivers: Vec<CSIDriver>,
    deployments: Vec<Deployment>,
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    storage_classes: Vec<StorageClass>,
    claims: Vec<PersistentVolumeClaim>,
    volumes: Vec<PersistentVolume>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    pods: Vec<Pod>,
    snapshot_classes: Vec<VolumeSnapshotClass>,
    snapshots: Vec<VolumeSnapshot>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass, the fields the CRD defines.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotClass {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    driver: String,
    deletion_policy: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot (spec only: status is the controllers').
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshot {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: VolumeSnapshotSpec,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotSpec {
    volume_snapshot_class_name: Option<String>,
    source: VolumeSnapshotSource,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotSource {
    persistent_volume_claim_name: Option<String>,
    volume_snapshot_content_name: Option<String>,
}

fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value, what: &str) -> T {
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `kubectl kustomize` of `path`: Ok(YAML) or Err(its error output).
fn kustomize(path: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(path)
        .output()
        .expect("kubectl must be installed (it renders kustomizations offline)");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Where a kustomization named by its repository path is rendered from: the example overlay
/// filled in (it renders nothing as committed), every other one as it is.
fn source_of(dir: &str) -> PathBuf {
    if dir == install::EXAMPLE_OVERLAY {
        filled_example().to_path_buf()
    } else if dir == TOPOLOGY_COMPONENT {
        with_component(dir)
    } else {
        repo().join(dir)
    }
}

/// A Component renders only inside a kustomization: `dir` added to the base, in the driver's
/// namespace, as an operator's overlay would add it.
fn with_component(dir: &str) -> PathBuf {
    let wrapper = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir.replace('/', "-"));
    std::fs::create_dir_all(&wrapper).expect("wrapper directory");
    let rel = |to: &str| {
        install::relative_path(&wrapper, &repo().join(to))
            .unwrap_or_else(|e| panic!("{to}: {e:#}"))
            .display()
            .to_string()
    };
    let yaml = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: \
         {DRIVER_NS}\nresources:\n  - {}\ncomponents:\n  - {}\n",
        rel("deploy/kubernetes/base"),
        rel(dir)
    );
    std::fs::write(wrapper.join("kustomization.yaml"), yaml).expect("wrapper kustomization");
    wrapper
}

fn rendered(dir: &str) -> String {
    kustomize(&source_of(dir)).unwrap_or_else(|e| panic!("kubectl kustomize {dir}: {e}"))
}

/// What the operator fills into the example overlay, here.
fn example_settings() -> install::Settings {
    install::Settings {
        registry: "registry.test/storage".into(),
        tag: "v9.9.9".into(),
        heketi_url: "http://heketi.storage.svc:8080".into(),
        heketi_user: "admin".into(),
        heketi_key: "a-test-key".into(),
    }
}

/// The example overlay filled in with [`example_settings`] (once per test process).
fn filled_example() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-example-overlay");
        install::fill_example_overlay(&dest, &example_settings())
            .unwrap_or_else(|e| panic!("filling in the example overlay: {e:#}"))
    })
}

fn render(dir: &str) -> Objects {
    let text = rendered(dir);
    let mut objects = Objects::default();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).expect("rendered YAML parses");
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let what = format!("{dir}: {kind} {}", value["metadata"]["name"]);
        match kind.as_str() {
            "Namespace" => objects.namespaces.push(typed(value, &what)),
            "CSIDriver" => objects.drivers.push(typed(value, &what)),
            "Deployment" => objects.deployments.push(typed(value, &what)),
            "DaemonSet" => objects.daemonsets.push(typed(value, &what)),
            "Service" => objects.services.push(typed(value, &what)),
            "ServiceAccount" => objects.service_accounts.push(typed(value, &what)),
            "ConfigMap" => objects.config_maps.push(typed(value, &what)),
            "Secret" => objects.secrets.push(typed(value, &what)),
            "ClusterRole" => objects.cluster_roles.push(typed(value, &what)),
            "ClusterRoleBinding" => objects.cluster_role_bindings.push(typed(value, &what)),
            "Role" => objects.roles.push(typed(value, &what)),
            "RoleBinding" => objects.role_bindings.push(typed(value, &what)),
            "StorageClass" => objects.storage_classes.push(typed(value, &what)),
            "PersistentVolumeClaim" => objects.claims.push(typed(value, &what)),
            "PersistentVolume" => objects.volumes.push(typed(value, &what)),
            "PodDisruptionBudget" => objects.disruption_budgets.push(typed(value, &what)),
            "Pod" => objects.pods.push(typed(value, &what)),
            "VolumeSnapshotClass" => objects.snapshot_classes.push(typed(value, &what)),
            "VolumeSnapshot" => objects.snapshots.push(typed(value, &what)),
            other => panic!("{what}: kind {other} is not checked by this test; add it"),
        }
    }
    objects
}

fn pod_spec<'a>(spec: Option<&'a PodSpec>, what: &str) -> &'a PodSpec {
    spec.unwrap_or_else(|| panic!("{what} has a pod spec"))
}

fn deployment<'a>(o: &'a Objects, name: &str) -> &'a PodSpec {
    let d = o
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("Deployment {name}"));
    pod_spec(d.spec.as_ref().expect("spec").template.spec.as_ref(), name)
}

fn daemonset<'a>(o: &'a Objects, name: &str) -> (&'a DaemonSet, &'a PodSpec) {
    let d = o
        .daemonsets
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("DaemonSet {name}"));
    (
        d,
        pod_spec(d.spec.as_ref().expect("spec").template.spec.as_ref(), name),
    )
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

/// `--flag=value` arguments of a container as a map (flags without a value map to "").
fn flags(c: &Container) -> BTreeMap<String, String> {
    c.args
        .iter()
        .flatten()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (a.to_owned(), String::new()),
        })
        .collect()
}

fn flag(c: &Container, name: &str) -> String {
    flags(c)
        .remove(name)
        .unwrap_or_else(|| panic!("container {} has --{name}", c.name))
}

/// The directory a container sees at `path` comes from this pod volume.
fn volume_at(c: &Container, dir: &str) -> String {
    c.volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| panic!("container {} mounts something at {dir}", c.name))
}

fn socket_of_endpoint(c: &Container) -> String {
    flag(c, "endpoint")
        .strip_prefix("unix://")
        .unwrap_or_else(|| panic!("{}: --endpoint is unix://", c.name))
        .to_owned()
}

fn parent(path: &str) -> &str {
    Path::new(path)
        .parent()
        .and_then(Path::to_str)
        .expect("socket path has a parent")
}

/// Every long flag `--name` that the binary's `--help` lists.
fn accepted_flags(binary: &str) -> BTreeSet<String> {
    let path = gluster_csi_testbed::bin_path(binary).expect("binary built");
    let out = Command::new(&path)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{binary} --help");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The `[default: …]` that the binary's `--help` shows for `--flag`.
fn default_of(binary: &str, flag: &str) -> String {
    let path = gluster_csi_testbed::bin_path(binary).expect("binary built");
    let out = Command::new(&path)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let is_flag_line = |l: &str| l.trim_start().starts_with('-');
    let named = format!("--{flag} ");
    let mut lines = help
        .lines()
        .skip_while(|l| !(is_flag_line(l) && l.contains(&named)));
    assert!(lines.next().is_some(), "{binary} --help has no --{flag}");
    // The flag's own paragraph ends where the next flag starts.
    lines
        .take_while(|l| !is_flag_line(l))
        .find_map(|l| l.trim().strip_prefix("[default: "))
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{binary} --{flag} shows no default"))
        .to_owned()
}

fn our_binary(image: &str) -> Option<&'static str> {
    let name = image.rsplit('/').next()?.split(':').next()?;
    match name {
        "gluster-csi-controller" => Some("gluster-csi-controller"),
        "gluster-csi-node" => Some("gluster-csi-node"),
        "heketi-server" => Some("heketi-server"),
        _ => None,
    }
}

fn all_pods(o: &Objects) -> Vec<(String, &PodSpec)> {
    let mut pods = Vec::new();
    for d in &o.deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.as_ref().expect("spec").template.spec.as_ref();
        pods.push((name.clone(), pod_spec(spec, &name)));
    }
    for d in &o.daemonsets {
        let name = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.as_ref().expect("spec").template.spec.as_ref();
        pods.push((name.clone(), pod_spec(spec, &name)));
    }
    for p in &o.pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        pods.push((name.clone(), pod_spec(p.spec.as_ref(), &name)));
    }
    pods
}

/// Every kustomization in deploy/ (`every_kustomization_in_deploy_is_checked` keeps the list
/// complete).
const KUSTOMIZATIONS: [&str; 7] = [
    "deploy/kubernetes/base",
    TOPOLOGY_COMPONENT,
    install::EXAMPLE_OVERLAY,
    "deploy/kubernetes/overlays/heketi-server",
    "deploy/examples",
    "deploy/examples/intree-style",
    SNAPSHOT_EXAMPLES,
];
/// The Component that turns on topology and storage capacity tracking (rendered on the base).
const TOPOLOGY_COMPONENT: &str = "deploy/kubernetes/components/topology";
/// The snapshot examples: the only kustomization that may hold VolumeSnapshot kinds.
const SNAPSHOT_EXAMPLES: &str = "deploy/examples/snapshot";

#[test]
fn every_kustomization_in_deploy_is_checked() {
    let mut found = Vec::new();
    let mut todo = vec![repo().join("deploy")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read deploy/").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let rel = d.strip_prefix(repo()).expect("under the repository");
                found.push(rel.display().to_string());
            }
        }
    }
    for dir in &found {
        assert!(
            KUSTOMIZATIONS.contains(&dir.as_str()),
            "{dir} is not in KUSTOMIZATIONS: add it so that it is validated"
        );
    }
}

#[test]
fn every_image_is_pinned_to_a_version() {
    let mut used = BTreeSet::new();
    for dir in KUSTOMIZATIONS {
        for (pod, spec) in all_pods(&render(dir)) {
            for c in &spec.containers {
                let image = c.image.as_deref().unwrap_or_default();
                let last = image.rsplit('/').next().unwrap_or_default();
                let tag = last.split_once(':').map(|(_, t)| t).unwrap_or_default();
                assert!(
                    image.contains("@sha256:") || (!tag.is_empty() && tag != "latest"),
                    "{dir} {pod}/{}: image {image:?} is not pinned",
                    c.name
                );
                // Ours (the overlays set name and tag), or an upstream image at the version
                // this test and docs/install.md know.
                assert!(
                    our_binary(image).is_some()
                        || UPSTREAM_IMAGES.contains(&image)
                        || image == EXAMPLE_IMAGE,
                    "{dir} {pod}/{}: image {image:?} is not in UPSTREAM_IMAGES: add it there \
                     and to docs/install.md",
                    c.name
                );
                // A pinned image never needs pulling again (and the test cluster has no
                // registry to pull from).
                assert_ne!(
                    c.image_pull_policy.as_deref(),
                    Some("Always"),
                    "{dir} {pod}/{}",
                    c.name
                );
                used.insert(image.to_owned());
            }
        }
    }
    let guide = std::fs::read_to_string(repo().join("docs/install.md")).expect("install.md");
    let guide = guide.split_whitespace().collect::<Vec<_>>().join(" ");
    for image in UPSTREAM_IMAGES {
        assert!(used.contains(image), "{image} is pinned here but unused");
        let (name, version) = image
            .rsplit('/')
            .next()
            .and_then(|n| n.split_once(':'))
            .expect("name:tag");
        let name = name.trim_start_matches("csi-");
        assert!(
            guide.contains(&format!("{name} {version}")),
            "docs/install.md does not name {name} {version}"
        );
    }
}

#[test]
fn port_names_are_valid_service_names_and_host_ports_do_not_clash() {
    // The API server refuses a port name over 15 characters (offline schemas accept it).
    for dir in KUSTOMIZATIONS {
        for (pod, spec) in all_pods(&render(dir)) {
            for c in &spec.containers {
                for port in c.ports.iter().flatten() {
                    let name = port.name.as_deref().unwrap_or_default();
                    assert!(
                        name.len() <= 15
                            && name.chars().all(|ch| ch.is_ascii_lowercase()
                                || ch.is_ascii_digit()
                                || ch == '-')
                            && name.chars().any(|ch| ch.is_ascii_lowercase()),
                        "{dir} {pod}/{}: port name {name:?} is not a valid IANA service name \
                         (at most 15 characters, a-z, 0-9 and -)",
                        c.name
                    );
                }
            }
        }
    }
    // Host-network pods of one node share its ports: the node plugin's must differ from the
    // controller's, which may run on the host's network too.
    let o = render("deploy/kubernetes/base");
    let ports = |spec: &PodSpec| -> BTreeSet<i32> {
        spec.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
            .collect()
    };
    let (_, node) = daemonset(&o, "gluster-csi-node");
    let controller = deployment(&o, "gluster-csi-controller");
    let (node_ports, controller_ports) = (ports(node), ports(controller));
    let shared: Vec<&i32> = node_ports.intersection(&controller_ports).collect();
    assert!(
        shared.is_empty(),
        "node and controller share ports {shared:?}"
    );
}

#[test]
fn every_container_has_requests_and_a_memory_limit() {
    for dir in KUSTOMIZATIONS {
        for (pod, spec) in all_pods(&render(dir)) {
            for c in &spec.containers {
                let r = c
                    .resources
                    .as_ref()
                    .unwrap_or_else(|| panic!("{dir} {pod}/{}: resources", c.name));
                let requests = r.requests.as_ref().cloned().unwrap_or_default();
                let limits = r.limits.as_ref().cloned().unwrap_or_default();
                assert!(
                    requests.contains_key("cpu") && requests.contains_key("memory"),
                    "{dir} {pod}/{}: cpu and memory requests",
                    c.name
                );
                assert!(
                    limits.contains_key("memory"),
                    "{dir} {pod}/{}: memory limit",
                    c.name
                );
            }
        }
    }
}

#[test]
fn flags_in_the_manifests_are_flags_the_binaries_accept() {
    let mut checked = 0;
    for dir in KUSTOMIZATIONS {
        for (pod, spec) in all_pods(&render(dir)) {
            for c in &spec.containers {
                let Some(binary) = our_binary(c.image.as_deref().unwrap_or_default()) else {
                    continue;
                };
                let accepted = accepted_flags(binary);
                for name in flags(c).keys() {
                    assert!(
                        accepted.contains(name),
                        "{dir} {pod}/{}: {binary} has no --{name} (it accepts {accepted:?})",
                        c.name
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} flags checked");
}

#[test]
fn csidriver_matches_the_driver_and_needs_no_attach() {
    let o = render("deploy/kubernetes/base");
    let [driver] = o.drivers.as_slice() else {
        panic!("exactly one CSIDriver");
    };
    assert_eq!(driver.metadata.name.as_deref(), Some(DRIVER));
    let spec = &driver.spec;
    assert_eq!(spec.attach_required, Some(false));
    assert_eq!(spec.pod_info_on_mount, Some(false));
    // O(1) pod start: no recursive re-owning; non-root pods write through the PV's gid.
    assert_eq!(spec.fs_group_policy.as_deref(), Some("None"));
    assert_eq!(
        spec.volume_lifecycle_modes.as_deref(),
        Some(&["Persistent".to_owned()][..])
    );
    for (pod, spec) in all_pods(&o) {
        for c in &spec.containers {
            if let Some(name) = flags(c).get("driver-name") {
                assert_eq!(name, DRIVER, "{pod}/{}", c.name);
            }
        }
    }
}

#[test]
fn controller_sidecars_share_the_plugin_socket_and_elect_a_leader() {
    let o = render("deploy/kubernetes/base");
    let pod = deployment(&o, "gluster-csi-controller");
    let d = &o.deployments[0];
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let plugin = container(pod, "gluster-csi-controller");
    let socket = socket_of_endpoint(plugin);
    let socket_volume = volume_at(plugin, parent(&socket));
    for sidecar in [
        "csi-provisioner",
        "csi-resizer",
        "csi-snapshotter",
        "liveness-probe",
    ] {
        let c = container(pod, sidecar);
        let address = flag(c, "csi-address");
        assert_eq!(
            volume_at(c, parent(&address)),
            socket_volume,
            "{sidecar} sees the plugin's socket directory"
        );
        assert_eq!(
            Path::new(&address).file_name(),
            Path::new(&socket).file_name(),
            "{sidecar} dials the socket the plugin serves"
        );
    }
    for sidecar in ["csi-provisioner", "csi-resizer", "csi-snapshotter"] {
        let f = flags(container(pod, sidecar));
        assert!(
            f.contains_key("leader-election"),
            "{sidecar} elects a leader"
        );
        assert_eq!(
            f.get("leader-election-namespace").map(String::as_str),
            Some("$(NAMESPACE)"),
            "{sidecar} keeps its lease in the driver's namespace (the lease Role's)"
        );
    }
    let provisioner = container(pod, "csi-provisioner");
    let timeout = flag(provisioner, "timeout");
    let seconds: u64 = timeout
        .trim_end_matches('s')
        .parse()
        .expect("timeout in seconds");
    assert!(
        seconds >= 120,
        "provisioner --timeout {timeout} is several minutes"
    );
    assert!(flags(provisioner).contains_key("extra-create-metadata"));
    // A snapshot is a copy made within CreateSnapshot, which the controller lets run for up to
    // its operation timeout: the sidecar must not give up first.
    let snapshotter = container(pod, "csi-snapshotter");
    let seconds = |value: &str, what: &str| -> u64 {
        value
            .strip_suffix('s')
            .unwrap_or(value)
            .parse()
            .unwrap_or_else(|_| panic!("{what} {value:?} in seconds"))
    };
    let snapshot_timeout = seconds(&flag(snapshotter, "timeout"), "snapshotter --timeout");
    let operation_timeout = match flags(plugin).get("heketi-operation-timeout") {
        Some(v) => seconds(v, "--heketi-operation-timeout"),
        None => default_of("gluster-csi-controller", "heketi-operation-timeout")
            .parse()
            .expect("numeric default"),
    };
    assert!(
        snapshot_timeout > operation_timeout,
        "csi-snapshotter --timeout {snapshot_timeout}s must outlast the controller's \
         --heketi-operation-timeout {operation_timeout}s"
    );

    let sa = pod
        .service_account_name
        .as_deref()
        .expect("service account");
    assert!(
        o.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(sa))
    );
    let key_file = flag(plugin, "heketi-key-file");
    volume_at(plugin, parent(&key_file));
    // The backends file comes from a ConfigMap the install does not need: without it the
    // controller starts with --heketi-url alone.
    let backends = flag(plugin, "backends-file");
    let volume = volume_at(plugin, parent(&backends));
    let config_map = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)
        .and_then(|v| v.config_map.as_ref())
        .expect("the backends file is mounted from a ConfigMap");
    assert_eq!(config_map.optional, Some(true), "the ConfigMap is optional");
    assert!(flags(plugin).contains_key("backends-file-optional"));
}

#[test]
fn node_plugin_registers_at_the_kubelet_path_and_keeps_mounts_alive() {
    let o = render("deploy/kubernetes/base");
    let (ds, pod) = daemonset(&o, "gluster-csi-node");
    let plugin = container(pod, "gluster-csi-node");
    let registrar = container(pod, "node-driver-registrar");
    let socket = socket_of_endpoint(plugin);
    let plugin_volume = volume_at(plugin, parent(&socket));
    for sidecar in [registrar, container(pod, "liveness-probe")] {
        let address = flag(sidecar, "csi-address");
        assert_eq!(
            volume_at(sidecar, parent(&address)),
            plugin_volume,
            "{} sees the plugin's socket directory",
            sidecar.name
        );
        assert_eq!(
            Path::new(&address).file_name(),
            Path::new(&socket).file_name(),
            "{} dials the socket the plugin serves",
            sidecar.name
        );
    }

    let host_dir = format!("/var/lib/kubelet/plugins/{DRIVER}");
    let host_path = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
            .unwrap_or_else(|| panic!("volume {name} is a hostPath"))
    };
    assert_eq!(host_path(&plugin_volume), host_dir);
    let file = Path::new(&socket)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("file");
    assert_eq!(
        flag(registrar, "kubelet-registration-path"),
        format!("{host_dir}/{file}")
    );
    assert_eq!(
        host_path(&volume_at(registrar, "/registration")),
        "/var/lib/kubelet/plugins_registry"
    );

    let kubelet = plugin
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/lib/kubelet")
        .expect("kubelet dir mounted");
    assert_eq!(kubelet.mount_propagation.as_deref(), Some("Bidirectional"));
    assert_eq!(host_path(&kubelet.name), "/var/lib/kubelet");
    assert_eq!(flag(plugin, "kubelet-dir"), "/var/lib/kubelet");

    // FUSE clients are started by the plugin in the host PID namespace and moved to a host
    // cgroup, which needs hostPID, privilege and the host's cgroup file system.
    assert_eq!(pod.host_pid, Some(true));
    // ... and in the host's network namespace, which outlives the pod (a pod's own loses its
    // interfaces when the pod is replaced, under every client started in it).
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(flag(plugin, "fuse-launcher"), "direct");
    assert!(
        flag(plugin, "fuse-cgroup").starts_with("/sys/fs/cgroup/"),
        "--fuse-cgroup is on the host cgroup file system"
    );
    assert_eq!(
        host_path(&volume_at(plugin, "/sys/fs/cgroup")),
        "/sys/fs/cgroup"
    );
    let privileged = |c: &Container| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    };
    assert!(privileged(plugin));
    assert!(!privileged(registrar), "only the plugin is privileged");
    assert_eq!(host_path(&volume_at(plugin, "/dev/fuse")), "/dev/fuse");

    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("update strategy");
    assert!(matches!(
        strategy.type_.as_deref(),
        Some("RollingUpdate" | "OnDelete")
    ));
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .iter()
            .flatten()
            .any(|g| g == group || g == "*")
            && r.resources
                .iter()
                .flatten()
                .any(|x| x == resource || x == "*")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

/// The rules a ServiceAccount gets: those of every ClusterRole (`cluster == true`) or Role bound
/// to it. Panics on a binding whose role is not in the rendering.
fn granted(o: &Objects, ns: &str, sa: &str, cluster: bool) -> Vec<PolicyRule> {
    let names_sa = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        })
    };
    let mut rules = Vec::new();
    if cluster {
        for b in o
            .cluster_role_bindings
            .iter()
            .filter(|b| names_sa(&b.subjects))
        {
            assert_eq!(b.role_ref.kind, "ClusterRole", "{:?}", b.metadata.name);
            let role = o
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
                .unwrap_or_else(|| panic!("ClusterRole {} of a binding", b.role_ref.name));
            rules.extend(role.rules.iter().flatten().cloned());
        }
    } else {
        for b in o.role_bindings.iter().filter(|b| names_sa(&b.subjects)) {
            assert_eq!(b.role_ref.kind, "Role", "{:?}", b.metadata.name);
            let role = o
                .roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
                .unwrap_or_else(|| panic!("Role {} of a binding", b.role_ref.name));
            rules.extend(role.rules.iter().flatten().cloned());
        }
    }
    rules
}

#[test]
fn rbac_grants_what_the_sidecars_need_and_no_wildcards() {
    let o = render("deploy/kubernetes/base");
    // Every sidecar runs in the controller pod, under its ServiceAccount.
    let pod = deployment(&o, "gluster-csi-controller");
    let sa = pod.service_account_name.clone().expect("service account");
    let rules = granted(&o, DRIVER_NS, &sa, true);
    // csi-provisioner (with restores from VolumeSnapshots), csi-resizer, csi-snapshotter and
    // the controller's own PV annotation and secret reads.
    let needed: &[(&str, &str, &[&str])] = &[
        (
            "",
            "persistentvolumes",
            &["get", "list", "watch", "create", "delete", "patch"],
        ),
        (
            "",
            "persistentvolumeclaims",
            &["get", "list", "watch", "update"],
        ),
        ("", "persistentvolumeclaims/status", &["patch"]),
        (
            "storage.k8s.io",
            "storageclasses",
            &["get", "list", "watch"],
        ),
        (
            "",
            "events",
            &["list", "watch", "create", "update", "patch"],
        ),
        ("storage.k8s.io", "csinodes", &["get", "list", "watch"]),
        ("", "nodes", &["get", "list", "watch"]),
        ("", "secrets", &["get"]),
        ("", "pods", &["get", "list", "watch"]),
        (SNAPSHOT_GROUP, "volumesnapshots", &["get", "list"]),
        (
            SNAPSHOT_GROUP,
            "volumesnapshotclasses",
            &["get", "list", "watch"],
        ),
        (
            SNAPSHOT_GROUP,
            "volumesnapshotcontents",
            &["get", "list", "watch", "update", "patch"],
        ),
        (
            SNAPSHOT_GROUP,
            "volumesnapshotcontents/status",
            &["update", "patch"],
        ),
    ];
    for (group, resource, verbs) in needed {
        for verb in *verbs {
            assert!(
                allows(&rules, group, resource, verb),
                "{sa} may not {verb} {group}/{resource}"
            );
        }
    }
    // No wildcards and no listing of secrets anywhere, whoever a role is bound to.
    let every_rule = o
        .cluster_roles
        .iter()
        .flat_map(|r| r.rules.iter().flatten())
        .chain(o.roles.iter().flat_map(|r| r.rules.iter().flatten()));
    for r in every_rule {
        for v in r
            .verbs
            .iter()
            .chain(r.resources.iter().flatten())
            .chain(r.api_groups.iter().flatten())
        {
            assert_ne!(v, "*", "no wildcard in {r:?}");
        }
        assert!(
            !allows(std::slice::from_ref(r), "", "secrets", "list")
                && !allows(std::slice::from_ref(r), "", "secrets", "watch"),
            "secrets are read one by one: {r:?}"
        );
    }
    // Users' VolumeSnapshots are the snapshot-controller's to change, never the driver's.
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !allows(&rules, SNAPSHOT_GROUP, "volumesnapshots", verb),
            "{sa} may {verb} volumesnapshots"
        );
    }

    // Leader election of the three sidecars, in the driver's namespace.
    let lease_rules = granted(&o, DRIVER_NS, &sa, false);
    for verb in ["get", "watch", "list", "delete", "update", "create"] {
        assert!(
            allows(&lease_rules, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    // Every binding is for the controller: the node plugin needs no API access.
    for subjects in o
        .cluster_role_bindings
        .iter()
        .map(|b| &b.subjects)
        .chain(o.role_bindings.iter().map(|b| &b.subjects))
    {
        assert!(subjects.iter().flatten().any(|s| s.name == sa));
    }
    let (_, node) = daemonset(&o, "gluster-csi-node");
    assert_ne!(node.service_account_name.as_deref(), Some(sa.as_str()));
}

#[test]
fn topology_component_turns_on_capacity_tracking_and_zones_from_node_labels() {
    let o = render(TOPOLOGY_COMPONENT);
    let [driver] = o.drivers.as_slice() else {
        panic!("exactly one CSIDriver");
    };
    assert_eq!(driver.spec.storage_capacity, Some(true));

    let pod = deployment(&o, "gluster-csi-controller");
    let provisioner = container(pod, "csi-provisioner");
    let f = flags(provisioner);
    assert_eq!(
        f.get("feature-gates").map(String::as_str),
        Some("Topology=true")
    );
    assert!(f.contains_key("enable-capacity"), "{f:?}");
    assert_eq!(
        f.get("capacity-ownerref-level").map(String::as_str),
        Some("2")
    );
    // Capacity tracking finds its pod and namespace through these.
    for var in ["POD_NAME", "NAMESPACE"] {
        assert!(
            provisioner
                .env
                .iter()
                .flatten()
                .any(|e| e.name == var
                    && e.value_from.as_ref().is_some_and(|v| v.field_ref.is_some())),
            "csi-provisioner has no {var} from the Downward API"
        );
    }
    let sa = pod.service_account_name.clone().expect("service account");
    let rules = granted(&o, DRIVER_NS, &sa, false);
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            allows(&rules, "storage.k8s.io", "csistoragecapacities", verb),
            "{sa} may not {verb} csistoragecapacities"
        );
    }
    assert!(allows(&rules, "", "pods", "get") && allows(&rules, "apps", "replicasets", "get"));

    // The node plugin: one DaemonSet, its zone from the node label, allowed to read nodes and
    // nothing more.
    let (_, node) = daemonset(&o, "gluster-csi-node");
    let plugin = container(node, "gluster-csi-node");
    let label = plugin
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TOPOLOGY_FROM_NODE_LABELS")
        .and_then(|e| e.value.as_deref());
    assert_eq!(label, Some("zone=topology.kubernetes.io/zone"));
    // The same setting as the flag the binary documents.
    assert!(accepted_flags("gluster-csi-node").contains("topology-from-node-label"));
    let node_sa = node
        .service_account_name
        .clone()
        .expect("node service account");
    assert_ne!(node_sa, sa);
    let node_rules = granted(&o, DRIVER_NS, &node_sa, true);
    assert!(allows(&node_rules, "", "nodes", "get"));
    for (group, resource, verb) in [
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "secrets", "get"),
    ] {
        assert!(
            !allows(&node_rules, group, resource, verb),
            "{node_sa} may {verb} {resource}"
        );
    }
    assert!(granted(&o, DRIVER_NS, &node_sa, false).is_empty());
}

#[test]
fn heketi_server_overlay_points_the_controller_at_it() {
    let o = render("deploy/kubernetes/overlays/heketi-server");
    let cm = o
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("gluster-csi-controller"))
        .expect("controller ConfigMap");
    let url = cm
        .data
        .as_ref()
        .and_then(|d| d.get("HEKETI_URL"))
        .expect("HEKETI_URL");
    let svc = o
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("heketi-server"))
        .expect("heketi-server Service");
    let port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.port)
        .expect("port");
    assert_eq!(url, &format!("http://heketi-server.gluster-csi.svc:{port}"));
    deployment(&o, "heketi-server");
}

#[test]
fn heketi_server_overlay_is_unprivileged_over_ssh_with_state_on_gluster() {
    let o = render("deploy/kubernetes/overlays/heketi-server");
    let spec = deployment(&o, "heketi-server");
    let psc = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u != 0));
    let c = &spec.containers[0];
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let args = c.args.clone().unwrap_or_default();
    assert!(args.contains(&"--executor=ssh".to_owned()), "{args:?}");
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let volumes = spec.volumes.clone().unwrap_or_default();
    // Every file flag names a file under a mount of a Secret, ConfigMap or the state claim.
    for flag in [
        "--ssh-keyfile=",
        "--ssh-known-hosts=",
        "--admin-key-file=",
        "--state-dir=",
    ] {
        let path = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let m = mounts
            .iter()
            .find(|m| std::path::Path::new(path).starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("{flag}{path} is on no mount"));
        let v = volumes.iter().find(|v| v.name == m.name).expect("volume");
        assert!(
            v.secret.is_some() || v.config_map.is_some() || v.persistent_volume_claim.is_some(),
            "{flag}: volume {} is not a Secret, ConfigMap or claim",
            v.name
        );
    }
    assert!(
        volumes.iter().all(|v| v.host_path.is_none()),
        "no host paths: the Pod may run on any node"
    );
    // The state claim binds the static PV of this driver on a Gluster volume.
    let claim = volumes
        .iter()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .expect("state claim");
    let pvc = o
        .claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(claim.claim_name.as_str()))
        .expect("state PVC");
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("volumeName");
    let pv = o
        .volumes
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(pv_name.as_str()))
        .expect("state PV");
    let csi = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .expect("csi PV");
    assert_eq!(csi.driver, DRIVER);
    let attrs = csi.volume_attributes.clone().unwrap_or_default();
    assert!(attrs.contains_key("glusterServers") && attrs.contains_key("glusterVolume"));
    assert_eq!(
        pv.spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
        Some("Retain")
    );
}

#[test]
fn example_classes_use_this_driver_and_the_overlays_secret() {
    // The Secret the example overlay generates (the operator's key) is the one the classes name.
    let overlay = render(install::EXAMPLE_OVERLAY);
    let [secret] = overlay.secrets.as_slice() else {
        panic!("the example overlay generates one Secret");
    };
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/glusterfs"));
    let secret_data = secret.data.clone().unwrap_or_default();
    assert!(secret_data.contains_key("key") && secret_data.contains_key("user"));
    let secret_name = secret.metadata.name.clone().expect("Secret name");
    let secret_ns = secret.metadata.namespace.clone().expect("Secret namespace");

    let csi = render("deploy/examples");
    let intree = render("deploy/examples/intree-style");
    assert!(
        csi.secrets.is_empty() && intree.secrets.is_empty(),
        "no Secret in the examples"
    );
    assert_eq!(
        (csi.storage_classes.len(), intree.storage_classes.len()),
        (1, 1)
    );
    for sc in csi.storage_classes.iter().chain(&intree.storage_classes) {
        let name = sc.metadata.name.clone().unwrap_or_default();
        assert_eq!(sc.provisioner, DRIVER, "{name}");
        assert_eq!(sc.allow_volume_expansion, Some(true), "{name}");
    }
    // CSI style: the sidecars pass the Secret to CreateVolume, DeleteVolume (the provisioner's)
    // and ControllerExpandVolume; the default backend's URL comes from the overlay.
    let params = csi.storage_classes[0]
        .parameters
        .clone()
        .unwrap_or_default();
    for op in ["provisioner", "controller-expand"] {
        assert_eq!(
            params.get(&format!("csi.storage.k8s.io/{op}-secret-name")),
            Some(&secret_name),
            "{op} secret name"
        );
        assert_eq!(
            params.get(&format!("csi.storage.k8s.io/{op}-secret-namespace")),
            Some(&secret_ns),
            "{op} secret namespace"
        );
    }
    assert!(
        !params.contains_key("resturl"),
        "the CSI class uses the default backend"
    );
    // In-tree style: secretName/secretNamespace, and a resturl that is visibly a placeholder.
    let params = intree.storage_classes[0]
        .parameters
        .clone()
        .unwrap_or_default();
    assert_eq!(params.get("secretName"), Some(&secret_name));
    assert_eq!(params.get("secretNamespace"), Some(&secret_ns));
    let url = params.get("resturl").expect("in-tree classes name resturl");
    assert!(
        url.contains(".invalid"),
        "the in-tree example's resturl {url} must be a placeholder that never resolves"
    );

    let claim = csi.claims.first().expect("example PVC");
    let spec = claim.spec.as_ref().expect("pvc spec");
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteMany".to_owned()][..])
    );
    assert_eq!(
        spec.storage_class_name,
        csi.storage_classes[0].metadata.name
    );
    let writer = deployment(&csi, "shared-writer");
    let claim_name = writer
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .map(|p| p.claim_name.clone());
    assert_eq!(claim_name, claim.metadata.name);
}

/// A quantity such as `2Gi` in bytes (the binary suffixes and plain numbers the examples use).
fn bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> u64 {
    let text = q.0.as_str();
    let (number, unit) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ]
    .into_iter()
    .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))
    .unwrap_or((text, 1));
    number.parse::<u64>().expect("a whole number") * unit
}

fn requested_storage(claim: &PersistentVolumeClaim) -> u64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(bytes)
        .unwrap_or_else(|| panic!("{:?} requests storage", claim.metadata.name))
}

#[test]
fn snapshot_kinds_only_in_the_opt_in_snapshot_examples() {
    // `kubectl apply` of a VolumeSnapshot kind fails where the snapshot CRDs are not
    // installed, so the driver and the default examples must apply without them.
    for dir in KUSTOMIZATIONS {
        if dir == SNAPSHOT_EXAMPLES {
            continue;
        }
        let o = render(dir);
        assert!(
            o.snapshot_classes.is_empty() && o.snapshots.is_empty(),
            "{dir} holds VolumeSnapshot kinds: they belong in {SNAPSHOT_EXAMPLES}"
        );
    }
    let text = std::fs::read_to_string(repo().join("deploy/examples/kustomization.yaml"))
        .expect("examples kustomization");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("- snapshot")),
        "deploy/examples must not include the snapshot examples"
    );
}

#[test]
fn snapshot_examples_snapshot_the_example_claim_and_restore_it() {
    let overlay = render(install::EXAMPLE_OVERLAY);
    let [secret] = overlay.secrets.as_slice() else {
        panic!("the example overlay generates one Secret");
    };
    let base = render("deploy/kubernetes/base");
    let driver = base.drivers[0]
        .metadata
        .name
        .clone()
        .expect("CSIDriver name");
    let examples = render("deploy/examples");
    let class = &examples.storage_classes[0];
    let source = examples.claims.first().expect("example claim");

    let o = render(SNAPSHOT_EXAMPLES);
    assert!(
        o.secrets.is_empty() && o.storage_classes.is_empty(),
        "the snapshot examples reuse the overlay's Secret and the example class"
    );
    let [snapshot_class] = o.snapshot_classes.as_slice() else {
        panic!("one VolumeSnapshotClass");
    };
    let api = format!("{SNAPSHOT_GROUP}/v1");
    assert_eq!(
        (
            snapshot_class.api_version.as_str(),
            snapshot_class.kind.as_str()
        ),
        (api.as_str(), "VolumeSnapshotClass")
    );
    assert_eq!(snapshot_class.driver, driver, "the CSIDriver's name");
    assert_eq!(snapshot_class.deletion_policy, "Delete");
    // No parameters of the driver's own: only the snapshotter secret, naming the Secret the
    // example StorageClass names (the same Heketi key for volumes and their snapshots).
    let params = &snapshot_class.parameters;
    let class_params = class.parameters.clone().unwrap_or_default();
    for part in ["name", "namespace"] {
        let key = format!("csi.storage.k8s.io/snapshotter-secret-{part}");
        let value = params.get(&key).unwrap_or_else(|| panic!("{key}"));
        let expected = if part == "name" {
            secret.metadata.name.as_ref()
        } else {
            secret.metadata.namespace.as_ref()
        };
        assert_eq!(Some(value), expected, "{key}: the overlay's Secret");
        assert_eq!(
            class_params.get(&format!("csi.storage.k8s.io/provisioner-secret-{part}")),
            Some(value),
            "{key}: the Secret the example StorageClass names"
        );
    }
    assert_eq!(params.len(), 2, "no other parameters: {params:?}");

    let [snapshot] = o.snapshots.as_slice() else {
        panic!("one VolumeSnapshot");
    };
    assert_eq!(
        (snapshot.api_version.as_str(), snapshot.kind.as_str()),
        (api.as_str(), "VolumeSnapshot")
    );
    assert_eq!(
        snapshot.spec.volume_snapshot_class_name,
        snapshot_class.metadata.name
    );
    assert_eq!(
        snapshot.spec.source.persistent_volume_claim_name, source.metadata.name,
        "the snapshot's source is the example claim"
    );
    assert!(snapshot.spec.source.volume_snapshot_content_name.is_none());
    assert_eq!(snapshot.metadata.namespace, source.metadata.namespace);

    // The restore: a claim of the same class (so the same Heketi backend), from the snapshot,
    // at least as large as the source.
    let [restore] = o.claims.as_slice() else {
        panic!("one restore claim");
    };
    let spec = restore.spec.as_ref().expect("restore spec");
    let data_source = spec.data_source.as_ref().expect("dataSource");
    assert_eq!(data_source.kind, "VolumeSnapshot");
    assert_eq!(data_source.api_group.as_deref(), Some(SNAPSHOT_GROUP));
    assert_eq!(Some(&data_source.name), snapshot.metadata.name.as_ref());
    assert_eq!(restore.metadata.namespace, snapshot.metadata.namespace);
    assert_eq!(spec.storage_class_name, class.metadata.name);
    assert!(
        !class_params.contains_key("resturl"),
        "the class restores on the default backend, where the snapshot is"
    );
    assert!(requested_storage(restore) >= requested_storage(source));
    assert_eq!(
        spec.access_modes,
        source.spec.as_ref().and_then(|s| s.access_modes.clone())
    );
    // A pod shows what the restored volume holds.
    let [reader] = o.pods.as_slice() else {
        panic!("one reader pod");
    };
    let claim = reader
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone());
    assert_eq!(claim, restore.metadata.name);
}

/// The `kubernetes-validate` program, installed on first use into a virtualenv under the target
/// directory (reused while it reports the pinned version). Panics, failing the test, when it
/// cannot be installed: validation must never be skipped.
fn validator() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{VALIDATOR}-venv"));
        let program = venv.join("bin").join(VALIDATOR);
        let version_ok = || {
            Command::new(&program)
                .arg("--version")
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).contains(VALIDATOR_VERSION)
                })
        };
        if version_ok() {
            return program;
        }
        let _ = std::fs::remove_dir_all(&venv);
        // Debian's own Python (python3-venv, python3-pip: scripts/setup.sh installs them).
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .expect("python3 is needed to validate the manifests (scripts/setup.sh installs it)");
        let run = |argv: &[&str]| {
            let out = Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
            assert!(
                out.status.success(),
                "installing {VALIDATOR} failed: {} ({}):\n{}{}\n\
                 scripts/setup.sh installs python3-venv and python3-pip; the package comes from \
                 PyPI",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let venv_s = venv.display().to_string();
        run(&[python, "-m", "venv", &venv_s]);
        let pip = venv.join("bin/pip").display().to_string();
        let spec = format!("{VALIDATOR}=={VALIDATOR_VERSION}");
        run(&[
            &pip,
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &spec,
        ]);
        assert!(
            version_ok(),
            "{} does not report {VALIDATOR_VERSION}",
            program.display()
        );
        program
    })
}

#[test]
fn manifests_validate_against_the_oldest_and_newest_supported_api_schemas() {
    let program = validator();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-rendered");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut failures = Vec::new();
    let mut checked = 0;
    for kustomization in KUSTOMIZATIONS {
        let file = dir.join(format!("{}.yaml", kustomization.replace('/', "_")));
        std::fs::write(&file, rendered(kustomization)).expect("write");
        for version in [OLDEST_K8S, NEWEST_K8S] {
            // --strict: a field the schema does not know is an error, not ignored.
            let out = Command::new(program)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .expect("run kubernetes-validate");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let passed = text.lines().filter(|l| l.contains(" passed ")).count();
            if !out.status.success() || passed == 0 {
                failures.push(format!("{kustomization} against {version}:\n{text}"));
            }
            // Objects without a published schema are skipped with a warning: only the
            // VolumeSnapshot CRDs may be among them (checked by their structs here and by
            // the API server in k8s_e2e).
            for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
                if !line.contains(&format!("api version {SNAPSHOT_GROUP}/")) {
                    failures.push(format!("{kustomization} against {version}: {line}"));
                }
            }
            checked += passed;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 40, "only {checked} objects validated");
}

#[test]
fn example_overlay_applies_nothing_until_the_operator_writes_the_key() {
    // As committed: no key file, so kustomize renders nothing at all.
    let err = kustomize(&repo().join(install::EXAMPLE_OVERLAY))
        .expect_err("the example overlay renders without its key file");
    assert!(err.contains(install::KEY_FILE), "{err}");
    // Nothing an operator applies from the guide carries a placeholder key or the old example
    // Service URL.
    let mut todo: Vec<PathBuf> = [
        "deploy/kubernetes/base",
        install::EXAMPLE_OVERLAY,
        "deploy/examples",
    ]
    .iter()
    .map(|d| repo().join(d))
    .collect();
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for bad in ["change-me", "heketi.heketi.svc"] {
                assert!(!text.contains(bad), "{} contains {bad:?}", p.display());
            }
        }
    }

    // Filled in: the operator's images, URL, user and key, in the objects the driver reads.
    let settings = example_settings();
    let o = render(install::EXAMPLE_OVERLAY);
    for (pod, spec) in all_pods(&o) {
        for c in &spec.containers {
            let image = c.image.as_deref().unwrap_or_default();
            if our_binary(image).is_some() {
                assert!(
                    image.starts_with(&format!("{}/", settings.registry))
                        && image.ends_with(&format!(":{}", settings.tag)),
                    "{pod}/{}: image {image}",
                    c.name
                );
            }
        }
    }
    let cm = o
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("gluster-csi-controller"))
        .expect("controller ConfigMap");
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(data.get("HEKETI_URL"), Some(&settings.heketi_url));
    assert_eq!(data.get("HEKETI_USER"), Some(&settings.heketi_user));
    assert_eq!(o.config_maps.len(), 1, "one ConfigMap, merged");
    let [secret] = o.secrets.as_slice() else {
        panic!("one Secret");
    };
    assert_eq!(secret.metadata.namespace.as_deref(), Some(DRIVER_NS));
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("key").map(|k| k.0.as_slice()),
        Some(settings.heketi_key.as_bytes())
    );
    // The controller mounts that Secret and reads its `key`.
    let pod = deployment(&o, "gluster-csi-controller");
    let plugin = container(pod, "gluster-csi-controller");
    let key_file = flag(plugin, "heketi-key-file");
    let volume = volume_at(plugin, parent(&key_file));
    let source = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    assert_eq!(source, secret.metadata.name);
    assert_eq!(
        Path::new(&key_file).file_name().and_then(|f| f.to_str()),
        Some("key")
    );
}

#[test]
fn controller_replicas_spread_over_nodes_and_a_drain_keeps_one() {
    let o = render("deploy/kubernetes/base");
    let d = o
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("gluster-csi-controller"))
        .expect("controller Deployment");
    let spec = d.spec.as_ref().expect("Deployment spec");
    assert_eq!(spec.replicas, Some(2));
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let matches = |sel: &Option<BTreeMap<String, String>>| {
        let sel = sel.clone().unwrap_or_default();
        !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let pod = pod_spec(spec.template.spec.as_ref(), "controller");
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("pod anti-affinity");
    // Preferred, not required: a one-node cluster still runs both replicas.
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(
                |t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                    && matches(
                        &t.pod_affinity_term
                            .label_selector
                            .as_ref()
                            .and_then(|s| s.match_labels.clone())
                    )
            ),
        "the replicas prefer different nodes"
    );
    let [pdb] = o.disruption_budgets.as_slice() else {
        panic!("one PodDisruptionBudget");
    };
    let pdb_spec = pdb.spec.as_ref().expect("PDB spec");
    assert!(
        matches(
            &pdb_spec
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.clone())
        ),
        "the PodDisruptionBudget selects the controller's pods"
    );
    // maxUnavailable 1: a drain evicts one replica at a time, and a single replica can go.
    assert!(pdb_spec.min_available.is_none());
    assert_eq!(
        pdb_spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn probes_name_ports_their_container_declares() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut checked = 0;
    for dir in KUSTOMIZATIONS {
        for (pod, spec) in all_pods(&render(dir)) {
            for c in &spec.containers {
                let declared: BTreeSet<&str> = c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.name.as_deref())
                    .collect();
                for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
                    .into_iter()
                    .flatten()
                {
                    let port = probe
                        .http_get
                        .as_ref()
                        .map(|h| &h.port)
                        .or(probe.tcp_socket.as_ref().map(|t| &t.port));
                    if let Some(IntOrString::String(name)) = port {
                        assert!(
                            declared.contains(name.as_str()),
                            "{dir} {pod}/{}: probe port {name:?} is not a declared port",
                            c.name
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 3, "only {checked} named probe ports");
}

#[test]
fn example_pods_run_on_two_different_nodes() {
    let o = render("deploy/examples");
    let d = o
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("shared-writer"))
        .expect("shared-writer");
    let spec = d.spec.as_ref().expect("Deployment spec");
    assert_eq!(spec.replicas, Some(2));
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let pod = pod_spec(spec.template.spec.as_ref(), "shared-writer");
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    let spread = required.iter().any(|t| {
        t.topology_key == "kubernetes.io/hostname"
            && t.label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone())
                .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    assert!(spread, "the two replicas are required on different nodes");
}
