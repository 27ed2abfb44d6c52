//! The manifests in `deploy/` agree with each other and with the binaries.
//!
//! No Kubernetes API server runs here: every kustomization is rendered offline with
//! `kubectl kustomize`, every object is parsed with the Kubernetes API types (k8s-openapi), and
//! the checks below compare what the objects say with what the binaries accept (`--help`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};

const DRIVER: &str = csi_proto::serve::DEFAULT_DRIVER_NAME;

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
}

fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value, what: &str) -> T {
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn render(dir: &str) -> Objects {
    let path = repo().join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("kubectl must be installed (it renders kustomizations offline)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
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
    pod_spec(d.spec.template.spec.as_ref(), name)
}

fn daemonset<'a>(o: &'a Objects, name: &str) -> (&'a DaemonSet, &'a PodSpec) {
    let d = o
        .daemonsets
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("DaemonSet {name}"));
    (d, pod_spec(d.spec.template.spec.as_ref(), name))
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
        let spec = d.spec.template.spec.as_ref();
        pods.push((name.clone(), pod_spec(spec, &name)));
    }
    for d in &o.daemonsets {
        let name = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.template.spec.as_ref();
        pods.push((name.clone(), pod_spec(spec, &name)));
    }
    pods
}

const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/heketi-server",
    "deploy/examples",
];

#[test]
fn every_image_is_pinned_to_a_version() {
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
            }
        }
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
    assert_eq!(d.spec.replicas, Some(2));
    let plugin = container(pod, "gluster-csi-controller");
    let socket = socket_of_endpoint(plugin);
    let socket_volume = volume_at(plugin, parent(&socket));
    for sidecar in ["csi-provisioner", "csi-resizer", "liveness-probe"] {
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
    for sidecar in ["csi-provisioner", "csi-resizer"] {
        assert!(
            flags(container(pod, sidecar)).contains_key("leader-election"),
            "{sidecar} elects a leader"
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
}

#[test]
fn node_plugin_registers_at_the_kubelet_path_and_keeps_mounts_alive() {
    let o = render("deploy/kubernetes/base");
    let (ds, pod) = daemonset(&o, "gluster-csi-node");
    let plugin = container(pod, "gluster-csi-node");
    let registrar = container(pod, "node-driver-registrar");
    let socket = socket_of_endpoint(plugin);
    let plugin_volume = volume_at(plugin, parent(&socket));
    assert_eq!(
        volume_at(registrar, parent(&flag(registrar, "csi-address"))),
        plugin_volume
    );

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

    let strategy = ds.spec.update_strategy.as_ref().expect("update strategy");
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

#[test]
fn rbac_grants_what_the_sidecars_need_and_no_wildcards() {
    let o = render("deploy/kubernetes/base");
    let [role] = o.cluster_roles.as_slice() else {
        panic!("one ClusterRole");
    };
    let rules = role.rules.as_deref().unwrap_or_default();
    // csi-provisioner, csi-resizer and the controller's own PV annotation and secret reads.
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
    ];
    for (group, resource, verbs) in needed {
        for verb in *verbs {
            assert!(
                allows(rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    for r in rules {
        for v in r.verbs.iter().chain(r.resources.iter().flatten()) {
            assert_ne!(v, "*", "no wildcard in {r:?}");
        }
    }
    assert!(
        !allows(rules, "", "secrets", "list"),
        "secrets are read one by one"
    );

    let [lease_role] = o.roles.as_slice() else {
        panic!("one Role for leader election");
    };
    let lease_rules = lease_role.rules.as_deref().unwrap_or_default();
    for verb in ["get", "watch", "list", "delete", "update", "create"] {
        assert!(
            allows(lease_rules, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    let sa = "gluster-csi-controller";
    for subjects in o
        .cluster_role_bindings
        .iter()
        .map(|b| &b.subjects)
        .chain(o.role_bindings.iter().map(|b| &b.subjects))
    {
        assert!(subjects.iter().flatten().any(|s| s.name == sa));
    }
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
fn example_classes_use_this_driver_and_known_parameters() {
    let o = render("deploy/examples");
    assert_eq!(o.storage_classes.len(), 2);
    let secret = o.secrets.first().expect("example Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/glusterfs"));
    for sc in &o.storage_classes {
        assert_eq!(sc.provisioner, DRIVER);
        assert_eq!(sc.allow_volume_expansion, Some(true));
        let params = sc.parameters.clone().unwrap_or_default();
        let secret_name = params
            .get("csi.storage.k8s.io/provisioner-secret-name")
            .or_else(|| params.get("secretName"))
            .expect("the class names the Secret");
        assert_eq!(Some(secret_name), secret.metadata.name.as_ref());
    }
    let claim = o.claims.first().expect("example PVC");
    let spec = claim.spec.as_ref().expect("pvc spec");
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteMany".to_owned()][..])
    );
    assert!(
        o.storage_classes
            .iter()
            .any(|sc| sc.metadata.name == spec.storage_class_name)
    );
    let writer = deployment(&o, "shared-writer");
    let claim_name = writer
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .map(|p| p.claim_name.clone());
    assert_eq!(claim_name, claim.metadata.name);
}
