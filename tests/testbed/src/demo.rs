//! The PVC-to-pod flow as Kubernetes drives it, from the example manifests in `deploy/examples`.
//!
//! [`pvc_to_pod`] plays the parts of the Kubernetes components against a running testbed, with
//! the requests they would send:
//! - the **external-provisioner** turns the claim (`pvc-rwx.yaml`) of the StorageClass
//!   (`storageclass-csi.yaml`) into a `CreateVolume` call — name `pvc-<claim uid>`, the claim's
//!   size, the class's parameters without the sidecars' `csi.storage.k8s.io/` keys (plus the
//!   three it adds itself with `--extra-create-metadata`, as `deploy/` runs it), the secret
//!   named by the class (the one `deploy/kubernetes/overlays/example` generates), the claim's access mode and the class's `mountOptions`
//!   — and writes a PersistentVolume from the answer;
//! - **kubelet** stages the volume once on the node and publishes it into two pods' volume
//!   directories (`NodeStageVolume`, `NodePublishVolume`), with the PV's `volumeHandle`,
//!   `volumeAttributes` and `mountOptions`;
//! - the **external-resizer** expands it (`ControllerExpandVolume`) after the claim grows;
//! - kubelet unpublishes and unstages it when the pods go, and the provisioner deletes it
//!   (`DeleteVolume`) when the claim goes.
//!
//! Every step is checked against the real system (mount table, FUSE client processes, Gluster,
//! brick directories), and at the end nothing of the volume is left. `gluster-csi-testbed demo`
//! and the `e2e` integration test run this same code.
//!
//! The manifests are compiled in and parsed with the Kubernetes API types (k8s-openapi). The
//! class names no `resturl`: it uses the controller's default backend, which the testbed points
//! at its heketi-server (a `resturl` would be replaced by that URL). The Secret is the one the
//! example overlay generates from the operator's files; the admin key, which no committed
//! file holds, is the testbed's.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
    CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, Volume, VolumeCapability, VolumeContentSource,
};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, Secret, SecretReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tonic::transport::Channel;

use crate::Testbed;
use crate::csi::DRIVER_NAME;

/// `deploy/examples/storageclass-csi.yaml`.
pub const EXAMPLE_STORAGE_CLASS: &str =
    include_str!("../../../deploy/examples/storageclass-csi.yaml");
/// `deploy/kubernetes/overlays/example/kustomization.yaml`: its `secretGenerator` makes the
/// Secret the example classes name.
pub const EXAMPLE_OVERLAY: &str =
    include_str!("../../../deploy/kubernetes/overlays/example/kustomization.yaml");
/// `deploy/kubernetes/overlays/example/heketi-user.env`: the Secret's `user` entry.
pub const EXAMPLE_SECRET_ENV: &str =
    include_str!("../../../deploy/kubernetes/overlays/example/heketi-user.env");
/// `deploy/examples/pvc-rwx.yaml`.
pub const EXAMPLE_CLAIM: &str = include_str!("../../../deploy/examples/pvc-rwx.yaml");

/// Prefix of the StorageClass parameters that belong to the sidecars.
pub const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";
/// Annotation the provisioner puts on the PVs it writes.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Limit on one step that touches a mount, so a hung FUSE mount fails the flow instead of
/// hanging it. Not a timing assertion.
const STEP_LIMIT: Duration = Duration::from_secs(90);
/// The size the claim is expanded to, relative to its request.
const EXPAND_BY_GIB: u64 = 1;
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Narration

/// What the flow reports: numbered steps, the checks that passed, details. Printed as it goes
/// ([`Narration::live`], the demo) or only kept ([`Narration::quiet`], the test, which shows it
/// when the flow fails).
#[derive(Debug, Default)]
pub struct Narration {
    live: bool,
    step: usize,
    lines: Vec<String>,
}

impl Narration {
    /// Prints every line as it comes.
    pub fn live() -> Self {
        Self {
            live: true,
            ..Self::default()
        }
    }

    /// Keeps the lines for [`Narration::transcript`].
    pub fn quiet() -> Self {
        Self::default()
    }

    fn line(&mut self, text: String) {
        if self.live {
            println!("{text}");
        }
        self.lines.push(text);
    }

    /// A new step: who does what.
    pub fn step(&mut self, title: &str) {
        self.step += 1;
        self.line(String::new());
        self.line(format!("[{}] {title}", self.step));
    }

    /// A detail of the current step.
    pub fn info(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            self.line(format!("      {l}"));
        }
    }

    /// A check that passed, and what it proves.
    pub fn proved(&mut self, text: impl AsRef<str>) {
        self.line(format!("   ✔ {}", text.as_ref()));
    }

    /// Everything reported so far.
    pub fn transcript(&self) -> String {
        self.lines.join("\n")
    }

    /// Number of checks that passed.
    pub fn proofs(&self) -> usize {
        self.lines.iter().filter(|l| l.starts_with("   ✔")).count()
    }
}

// ---------------------------------------------------------------------------------------------
// The manifests

/// The example objects the flow starts from.
#[derive(Clone, Debug)]
pub struct Examples {
    /// `storageclass-csi.yaml`.
    pub storage_class: StorageClass,
    /// The Secret of the example overlay, with an empty `key` (the operator's file).
    pub secret: Secret,
    /// `pvc-rwx.yaml`.
    pub claim: PersistentVolumeClaim,
}

impl Examples {
    /// Parses the compiled-in example manifests with the Kubernetes API types.
    pub fn load() -> Result<Self> {
        Ok(Self {
            storage_class: serde_yaml_ng::from_str(EXAMPLE_STORAGE_CLASS)
                .context("deploy/examples/storageclass-csi.yaml is not a StorageClass")?,
            secret: example_secret()?,
            claim: serde_yaml_ng::from_str(EXAMPLE_CLAIM)
                .context("deploy/examples/pvc-rwx.yaml is not a PersistentVolumeClaim")?,
        })
    }

    /// The same objects as they would be in the testbed's "cluster": the class's `resturl`
    /// points at the testbed's heketi-server instead of an in-cluster Service, and the Secret
    /// holds the testbed's Heketi key instead of the placeholder.
    pub fn for_testbed(mut self, heketi_url: &str, heketi_key: &str) -> Result<Self> {
        let params = self
            .storage_class
            .parameters
            .get_or_insert_with(BTreeMap::new);
        if let Some(url) = params
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case("resturl"))
            .map(|(_, v)| v)
        {
            *url = heketi_url.to_owned();
        }
        let data = self.secret.data.take().unwrap_or_default();
        let mut strings = self.secret.string_data.take().unwrap_or_default();
        for (k, v) in data {
            let text = String::from_utf8(v.0)
                .with_context(|| format!("the example Secret's data.{k} is not UTF-8"))?;
            strings.entry(k).or_insert(text);
        }
        ensure!(
            strings.contains_key("key"),
            "the example Secret has no `key` entry for the Heketi key"
        );
        strings.insert("key".into(), heketi_key.to_owned());
        self.secret.string_data = Some(strings);
        Ok(self)
    }
}

/// The Secret `secretGenerator` of the example overlay makes: name, namespace and type from the
/// kustomization, `user` from its env file, `key` empty (the operator writes it into a file
/// that is not in the repository).
fn example_secret() -> Result<Secret> {
    const WHAT: &str = "deploy/kubernetes/overlays/example/kustomization.yaml";
    let k: serde_json::Value =
        serde_yaml_ng::from_str(EXAMPLE_OVERLAY).with_context(|| format!("{WHAT} parses"))?;
    let generator = k["secretGenerator"]
        .as_array()
        .and_then(|g| g.first())
        .with_context(|| format!("{WHAT} has no secretGenerator"))?;
    let mut data = BTreeMap::new();
    for line in EXAMPLE_SECRET_ENV.lines().map(str::trim) {
        if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            data.insert(k.to_owned(), v.to_owned());
        }
    }
    for file in generator["files"].as_array().into_iter().flatten() {
        let entry = file.as_str().unwrap_or_default();
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        data.insert(key.to_owned(), String::new());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: generator["name"].as_str().map(str::to_owned),
            namespace: k["namespace"].as_str().map(str::to_owned),
            ..Default::default()
        },
        type_: generator["type"].as_str().map(str::to_owned),
        string_data: Some(data),
        ..Default::default()
    })
}

/// A namespaced object name, `namespace/name`.
fn name_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Parses a Kubernetes quantity (`2Gi`, `500M`, `1073741824`) into bytes, rounding a fraction
/// up as Kubernetes does for byte counts.
pub fn quantity_bytes(q: &Quantity) -> Result<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        other => bail!("quantity {s:?}: unknown suffix {other:?}"),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .with_context(|| format!("quantity {s:?} is not a number"))?
    };
    let mut bytes = whole
        .checked_mul(multiplier)
        .with_context(|| format!("quantity {s:?} is too large"))?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
        let scale = 10u128
            .checked_pow(digits)
            .with_context(|| format!("quantity {s:?} has too many decimals"))?;
        let frac: u128 = fraction
            .parse()
            .with_context(|| format!("quantity {s:?} is not a number"))?;
        let extra = (frac * u128::from(multiplier)).div_ceil(scale);
        bytes = bytes
            .checked_add(u64::try_from(extra)?)
            .with_context(|| format!("quantity {s:?} is too large"))?;
    }
    Ok(bytes)
}

/// Bytes as the provisioner writes them into a PV (binary SI: `3Gi`).
pub fn bytes_quantity(bytes: u64) -> Quantity {
    let units = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    for (suffix, shift) in units {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.checked_rem(unit) == Some(0) {
            return Quantity(format!("{}{suffix}", bytes / unit));
        }
    }
    Quantity(bytes.to_string())
}

/// The CSI access mode the sidecars send for a Kubernetes access mode. With
/// SINGLE_NODE_MULTI_WRITER advertised, ReadWriteOnce becomes SINGLE_NODE_MULTI_WRITER (several
/// pods of one node), as the external-provisioner and kubelet do.
pub fn csi_access_mode(k8s: &str, single_node_multi_writer: bool) -> Result<Mode> {
    Ok(match k8s {
        "ReadWriteOnce" if single_node_multi_writer => Mode::SingleNodeMultiWriter,
        "ReadWriteOnce" => Mode::SingleNodeWriter,
        "ReadWriteOncePod" => Mode::SingleNodeSingleWriter,
        "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
        "ReadWriteMany" => Mode::MultiNodeMultiWriter,
        other => bail!("unknown access mode {other:?}"),
    })
}

/// A mount capability with `mode`, the file system type and the mount options.
fn mount_capability(mode: Mode, fs_type: &str, mount_flags: &[String]) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_owned(),
            mount_flags: mount_flags.to_vec(),
            volume_mount_group: String::new(),
        })),
    }
}

/// What the external-provisioner sends and writes for one claim.
pub struct Provisioning {
    /// `pvc-<claim uid>`.
    pub pv_name: String,
    /// The claim's uid (assigned by the API server; here a fresh one).
    pub claim_uid: String,
    /// The CreateVolume request.
    pub request: CreateVolumeRequest,
    /// The secret referenced for DeleteVolume (the provisioner's).
    pub delete_secrets: HashMap<String, String>,
    /// The secret referenced for ControllerExpandVolume, and where it lives.
    pub expand_secret: Option<(SecretReference, HashMap<String, String>)>,
}

/// The secret a `csi.storage.k8s.io/<kind>-secret-name|namespace` pair of the class names,
/// with the provisioner's `${pvc.*}` / `${pv.name}` templates filled in.
fn secret_ref(
    params: &BTreeMap<String, String>,
    kind: &str,
    claim: &ObjectMeta,
    pv_name: &str,
) -> Result<Option<SecretReference>> {
    let get = |what: &str| params.get(&format!("{SIDECAR_PREFIX}{kind}-secret-{what}"));
    let fill = |v: &String| {
        v.replace("${pv.name}", pv_name)
            .replace("${pvc.name}", claim.name.as_deref().unwrap_or_default())
            .replace(
                "${pvc.namespace}",
                claim.namespace.as_deref().unwrap_or("default"),
            )
    };
    match (get("name"), get("namespace")) {
        (None, None) => Ok(None),
        (Some(n), Some(ns)) => Ok(Some(SecretReference {
            name: Some(fill(n)),
            namespace: Some(fill(ns)),
        })),
        _ => bail!("the StorageClass sets only one of {kind}-secret-name and -namespace"),
    }
}

/// The data of `secret` when `reference` names it.
fn resolve_secret(reference: &SecretReference, secret: &Secret) -> Result<HashMap<String, String>> {
    let same = reference.name == secret.metadata.name
        && reference.namespace.as_deref()
            == Some(secret.metadata.namespace.as_deref().unwrap_or("default"));
    ensure!(
        same,
        "the StorageClass names Secret {}/{}, the example Secret is {}",
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default(),
        name_of(&secret.metadata)
    );
    Ok(secret
        .string_data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// The CreateVolume request the external-provisioner (`--extra-create-metadata`, as in
/// `deploy/kubernetes/base/controller.yaml`) sends for `examples.claim`, given the uid the API
/// server gave the claim.
pub fn provision(
    examples: &Examples,
    claim_uid: &str,
    single_node_multi_writer: bool,
) -> Result<Provisioning> {
    let sc = &examples.storage_class;
    let claim = &examples.claim;
    ensure!(
        sc.provisioner == DRIVER_NAME,
        "the StorageClass's provisioner is {:?}, not {DRIVER_NAME}",
        sc.provisioner
    );
    let spec = claim.spec.as_ref().context("the claim has no spec")?;
    ensure!(
        spec.storage_class_name.as_deref() == sc.metadata.name.as_deref(),
        "the claim asks for StorageClass {:?}, the example class is {:?}",
        spec.storage_class_name,
        sc.metadata.name
    );
    let pv_name = format!("pvc-{claim_uid}");
    let resources = spec.resources.as_ref();
    let request_bytes = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(quantity_bytes)
        .transpose()?
        .context("the claim requests no storage")?;
    let limit_bytes = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|r| r.get("storage"))
        .map(quantity_bytes)
        .transpose()?
        .unwrap_or(0);
    let class_params = sc.parameters.clone().unwrap_or_default();
    let mut parameters: HashMap<String, String> = class_params
        .iter()
        .filter(|(k, _)| !k.starts_with(SIDECAR_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parameters.insert(
        format!("{SIDECAR_PREFIX}pvc/name"),
        claim.metadata.name.clone().unwrap_or_default(),
    );
    parameters.insert(
        format!("{SIDECAR_PREFIX}pvc/namespace"),
        claim
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
    );
    parameters.insert(format!("{SIDECAR_PREFIX}pv/name"), pv_name.clone());

    let secrets_for = |kind: &str| -> Result<Option<(SecretReference, HashMap<String, String>)>> {
        match secret_ref(&class_params, kind, &claim.metadata, &pv_name)? {
            None => Ok(None),
            Some(r) => {
                let data = resolve_secret(&r, &examples.secret)?;
                Ok(Some((r, data)))
            }
        }
    };
    let provisioner_secrets = secrets_for("provisioner")?
        .map(|(_, d)| d)
        .unwrap_or_default();
    let expand_secret = secrets_for("controller-expand")?;

    let fs_type = class_params
        .get(&format!("{SIDECAR_PREFIX}fstype"))
        .cloned()
        .unwrap_or_default();
    let mount_flags = sc.mount_options.clone().unwrap_or_default();
    let modes = spec.access_modes.clone().unwrap_or_default();
    ensure!(!modes.is_empty(), "the claim has no access modes");
    let volume_capabilities = modes
        .iter()
        .map(|m| {
            csi_access_mode(m, single_node_multi_writer)
                .map(|mode| mount_capability(mode, &fs_type, &mount_flags))
        })
        .collect::<Result<Vec<_>>>()?;
    let request = CreateVolumeRequest {
        name: pv_name.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: i64::try_from(request_bytes)?,
            limit_bytes: i64::try_from(limit_bytes)?,
        }),
        volume_capabilities,
        parameters,
        secrets: provisioner_secrets.clone(),
        volume_content_source: None,
        accessibility_requirements: None,
        mutable_parameters: HashMap::new(),
    };
    Ok(Provisioning {
        pv_name,
        claim_uid: claim_uid.to_owned(),
        request,
        delete_secrets: provisioner_secrets,
        expand_secret,
    })
}

/// The PersistentVolume the external-provisioner writes for `volume`.
pub fn persistent_volume(
    examples: &Examples,
    provisioning: &Provisioning,
    volume: &Volume,
) -> Result<PersistentVolume> {
    let sc = &examples.storage_class;
    let claim = &examples.claim;
    let spec = claim.spec.as_ref().context("the claim has no spec")?;
    let class_params = sc.parameters.clone().unwrap_or_default();
    let node_stage_secret_ref = secret_ref(
        &class_params,
        "node-stage",
        &claim.metadata,
        &provisioning.pv_name,
    )?;
    let node_publish_secret_ref = secret_ref(
        &class_params,
        "node-publish",
        &claim.metadata,
        &provisioning.pv_name,
    )?;
    let mut attributes: BTreeMap<String, String> = volume
        .volume_context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The provisioner marks which instance provisioned the volume.
    attributes.insert(
        "storage.kubernetes.io/csiProvisionerIdentity".into(),
        format!("1700000000000-0000-{DRIVER_NAME}"),
    );
    let mut annotations = BTreeMap::from([(PROVISIONED_BY.to_owned(), DRIVER_NAME.to_owned())]);
    if let Some(r) = secret_ref(
        &class_params,
        "provisioner",
        &claim.metadata,
        &provisioning.pv_name,
    )? {
        annotations.insert(
            "volume.kubernetes.io/provisioner-deletion-secret-name".into(),
            r.name.unwrap_or_default(),
        );
        annotations.insert(
            "volume.kubernetes.io/provisioner-deletion-secret-namespace".into(),
            r.namespace.unwrap_or_default(),
        );
    }
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(provisioning.pv_name.clone()),
            annotations: Some(annotations),
            finalizers: Some(vec!["kubernetes.io/pv-protection".into()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                bytes_quantity(u64::try_from(volume.capacity_bytes)?),
            )])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                name: claim.metadata.name.clone(),
                namespace: claim.metadata.namespace.clone(),
                uid: Some(provisioning.claim_uid.clone()),
                ..ObjectReference::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: DRIVER_NAME.into(),
                volume_handle: volume.volume_id.clone(),
                volume_attributes: Some(attributes),
                fs_type: class_params
                    .get(&format!("{SIDECAR_PREFIX}fstype"))
                    .cloned(),
                controller_expand_secret_ref: provisioning
                    .expand_secret
                    .as_ref()
                    .map(|(r, _)| r.clone()),
                node_stage_secret_ref,
                node_publish_secret_ref,
                ..CSIPersistentVolumeSource::default()
            }),
            mount_options: sc.mount_options.clone(),
            persistent_volume_reclaim_policy: Some(
                sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: sc.metadata.name.clone(),
            volume_mode: Some(
                spec.volume_mode
                    .clone()
                    .unwrap_or_else(|| "Filesystem".into()),
            ),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

// ---------------------------------------------------------------------------------------------
// kubelet's paths

/// kubelet's directories for one volume and two pods, under a fake kubelet root.
#[derive(Clone, Debug)]
pub struct KubeletPaths {
    /// The kubelet root (stands for `/var/lib/kubelet`).
    pub root: PathBuf,
    /// `plugins/kubernetes.io/csi/<driver>/<sha256 of the handle>/globalmount`.
    pub staging: PathBuf,
    /// `pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount` of pod A and pod B.
    pub targets: [PathBuf; 2],
}

impl KubeletPaths {
    /// The paths kubelet uses for `pv_name` / `volume_handle` and two pods.
    pub fn new(root: &Path, pv_name: &str, volume_handle: &str) -> Self {
        use sha2::{Digest, Sha256};
        let hash = hex::encode(Sha256::digest(volume_handle.as_bytes()));
        let staging = root
            .join("plugins/kubernetes.io/csi")
            .join(DRIVER_NAME)
            .join(hash)
            .join("globalmount");
        let target = || {
            root.join("pods")
                .join(uuid::Uuid::new_v4().to_string())
                .join("volumes/kubernetes.io~csi")
                .join(pv_name)
                .join("mount")
        };
        Self {
            root: root.to_path_buf(),
            staging,
            targets: [target(), target()],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at the system

/// Runs blocking file system work on a thread, bounded by [`STEP_LIMIT`].
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::time::timeout(STEP_LIMIT, tokio::task::spawn_blocking(f))
        .await
        .with_context(|| format!("{what}: no answer within {STEP_LIMIT:?}"))?
        .with_context(|| format!("{what}: the task failed"))?
        .with_context(|| what.to_owned())
}

/// One line of `/proc/self/mountinfo`: mount point, file system type, source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    /// Mount point.
    pub path: PathBuf,
    /// File system type.
    pub fstype: String,
    /// Source (`host:/volume` for Gluster).
    pub source: String,
}

/// The mount table.
pub fn mount_table() -> Result<Vec<Mounted>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(crate::mounts::parse_mountinfo(&text)
        .into_iter()
        .map(|m| Mounted {
            path: m.path,
            fstype: m.fstype,
            source: m.source,
        })
        .collect())
}

/// Pids of the GlusterFS FUSE client processes (`glusterfs --process-name fuse`) of Gluster
/// volume `volume` on this machine: the clients and their `auto_unmount` watchers.
pub fn client_processes(volume: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for pid in crate::procs::all_pids() {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_glusterfs = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n == "glusterfs");
        if !is_glusterfs {
            continue;
        }
        let value_of = |flag: &str| -> Option<String> {
            args.iter().enumerate().find_map(|(i, a)| {
                if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                    Some(v.to_owned())
                } else if a == flag {
                    args.get(i + 1).cloned()
                } else {
                    None
                }
            })
        };
        let fuse = value_of("--process-name").is_none_or(|p| p == "fuse");
        let same = value_of("--volfile-id").is_some_and(|v| v.trim_start_matches('/') == volume);
        if fuse && same {
            pids.push(pid);
        }
    }
    pids
}

/// The FUSE clients of `volume`: the client processes holding `/dev/fuse` open (an
/// `auto_unmount` watcher does not).
pub fn fuse_clients(volume: &str) -> Vec<u32> {
    client_processes(volume)
        .into_iter()
        .filter(|p| {
            std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/fuse"))
                })
            })
        })
        .collect()
}

/// The command line of process `pid`.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Bricks of `gluster volume info VOLUME`: `(host, path)`.
pub fn bricks_of(volume_info: &str) -> Vec<(String, PathBuf)> {
    volume_info
        .lines()
        .filter_map(|l| {
            let (label, rest) = l.split_once(": ")?;
            let n = label.strip_prefix("Brick")?;
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (host, path) = rest.trim().split_once(':')?;
            Some((host.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

/// Total bytes of the file system at `path` (what `df` shows).
async fn df_total(path: &Path) -> Result<u64> {
    let p = path.to_path_buf();
    let st = blocking(&format!("statvfs {}", path.display()), move || {
        nix::sys::statvfs::statvfs(&p).map_err(std::io::Error::from)
    })
    .await?;
    Ok(st.blocks() * st.fragment_size())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

// ---------------------------------------------------------------------------------------------
// The flow

/// What the flow made (all of it gone again when it returns Ok).
#[derive(Clone, Debug)]
pub struct FlowSummary {
    /// The CSI volume id (the PV's volumeHandle).
    pub volume_id: String,
    /// The Gluster volume.
    pub gluster_volume: String,
    /// The PV name, `pvc-<uid>`.
    pub pv_name: String,
}

async fn connect_controller(endpoint: &str) -> Result<ControllerClient<Channel>> {
    ControllerClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the controller at {endpoint}"))
}

async fn connect_node(endpoint: &str) -> Result<NodeClient<Channel>> {
    NodeClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the node plugin at {endpoint}"))
}

/// Runs the PVC-to-pod flow against `tb` (which must run heketi-server, the controller and the
/// node plugin), reporting to `n`. Fails at the first check that does not hold.
/// A VolumeSnapshot of the claim taken while pod A has written `content` into `file_a`; pod A
/// changes the file and adds one after the snapshot; a claim restored from the snapshot holds
/// the file as it was and not the later one. Both are deleted again.
async fn snapshot_and_restore(
    tb: &Testbed,
    n: &mut Narration,
    controller: &mut ControllerClient<Channel>,
    prov: &Provisioning,
    volume_handle: &str,
    file_a: &Path,
    content: &str,
) -> Result<()> {
    n.step("a VolumeSnapshot of the claim; external-snapshotter: CreateSnapshot");
    let snapshot = controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: volume_handle.to_owned(),
            name: format!("snapshot-{}", uuid::Uuid::new_v4()),
            // The example VolumeSnapshotClass names the StorageClass's Secret.
            secrets: prov.delete_secrets.clone(),
            parameters: HashMap::new(),
        })
        .await
        .context("CreateSnapshot")?
        .into_inner()
        .snapshot
        .context("CreateSnapshot answered without a snapshot")?;
    ensure!(
        snapshot.ready_to_use && snapshot.source_volume_id == volume_handle,
        "CreateSnapshot answered {snapshot:?}"
    );
    n.info(format!(
        "snapshot_id {}, {} bytes, created at {} (Unix seconds), ready_to_use true",
        snapshot.snapshot_id,
        snapshot.size_bytes,
        snapshot
            .creation_time
            .map(|t| t.seconds)
            .unwrap_or_default()
    ));
    let after = file_a.with_file_name("after.txt");
    {
        let (f, a) = (file_a.to_path_buf(), after.clone());
        blocking("pod A writes after the snapshot", move || {
            std::fs::write(&f, b"changed after the snapshot\n")?;
            std::fs::write(&a, b"written after the snapshot\n")
        })
        .await?;
    }
    n.info("pod A changes hello.txt and writes after.txt");

    n.step("a claim with dataSource: the snapshot; external-provisioner: CreateVolume from it");
    let mut req = prov.request.clone();
    req.name = format!("pvc-{}", uuid::Uuid::new_v4());
    req.capacity_range = Some(CapacityRange {
        required_bytes: snapshot.size_bytes,
        limit_bytes: 0,
    });
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: snapshot.snapshot_id.clone(),
        })),
    });
    let restored = controller
        .create_volume(req)
        .await
        .context("CreateVolume from the snapshot")?
        .into_inner()
        .volume
        .context("CreateVolume answered without a volume")?;
    let gluster_volume = restored
        .volume_context
        .get("glusterVolume")
        .context("the restored volume has no glusterVolume")?;
    let dir = tb.scratch_dir("demo-restored")?;
    tb.mount_volume(gluster_volume, &dir).await?;
    let (hello, later) = (dir.join("hello.txt"), dir.join("after.txt"));
    let seen = blocking("reading the restored claim", move || {
        Ok((std::fs::read_to_string(&hello), later.exists()))
    })
    .await;
    tb.unmount(&dir).await?;
    let (hello, later_exists) = seen?;
    ensure!(
        hello? == content && !later_exists,
        "the restored claim does not hold the data as it was at the snapshot"
    );
    n.info(format!(
        "restored volume_id {}: hello.txt as pod A first wrote it, no after.txt",
        restored.volume_id
    ));
    n.proved(
        "the restored claim holds the data of the moment of the snapshot, and not what came after",
    );
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: restored.volume_id.clone(),
            secrets: prov.delete_secrets.clone(),
        })
        .await
        .context("DeleteVolume of the restored claim")?;
    controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            secrets: prov.delete_secrets.clone(),
        })
        .await
        .context("DeleteSnapshot")?;
    n.info("the restored claim and the snapshot are deleted");
    Ok(())
}

pub async fn pvc_to_pod(tb: &Testbed, n: &mut Narration) -> Result<FlowSummary> {
    let env = tb.env().clone();
    ensure!(
        !env.controller_endpoint.is_empty() && !env.node_endpoint.is_empty(),
        "the flow needs a testbed with heketi-server, the controller and the node plugin"
    );

    // 1. The manifests.
    n.step("The example manifests (deploy/examples), parsed with the Kubernetes API types");
    let original = Examples::load()?;
    let examples = original
        .clone()
        .for_testbed(&env.heketi_url, &env.heketi_key)?;
    let sc = &examples.storage_class;
    let claim = &examples.claim;
    let class_params = sc.parameters.clone().unwrap_or_default();
    n.info(format!(
        "StorageClass {}: provisioner {}, parameters {}, mountOptions {:?}",
        sc.metadata.name.as_deref().unwrap_or_default(),
        sc.provisioner,
        class_params
            .iter()
            .filter(|(k, _)| !k.starts_with(SIDECAR_PREFIX))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        sc.mount_options.clone().unwrap_or_default()
    ));
    n.info(format!(
        "Secret {} (keys {}), PersistentVolumeClaim {}",
        name_of(&examples.secret.metadata),
        examples
            .secret
            .string_data
            .as_ref()
            .map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        name_of(&claim.metadata)
    ));
    n.info(format!(
        "substituted for this machine: resturl {} → {} (the controller's default backend is the \
         testbed's heketi-server); the Secret's key → the testbed's Heketi admin key",
        original
            .storage_class
            .parameters
            .as_ref()
            .and_then(|p| p.get("resturl"))
            .map(String::as_str)
            .unwrap_or("(none)"),
        env.heketi_url
    ));

    let mut controller = connect_controller(&env.controller_endpoint).await?;
    let mut node = connect_node(&env.node_endpoint).await?;
    let caps = controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await?
        .into_inner();
    let snmw = caps.capabilities.iter().any(|c| {
        matches!(
            &c.r#type,
            Some(csi_proto::v1::controller_service_capability::Type::Rpc(r))
                if r.r#type == ControllerRpc::SingleNodeMultiWriter as i32
        )
    });

    // 2. CreateVolume.
    n.step("external-provisioner: CreateVolume for the claim");
    let claim_uid = uuid::Uuid::new_v4().to_string();
    let prov = provision(&examples, &claim_uid, snmw)?;
    let req = &prov.request;
    let required = req
        .capacity_range
        .map(|r| u64::try_from(r.required_bytes).unwrap_or(0))
        .unwrap_or(0);
    let mut keys: Vec<&String> = req.parameters.keys().collect();
    keys.sort();
    let mut secret_keys: Vec<&String> = req.secrets.keys().collect();
    secret_keys.sort();
    n.info(format!(
        "name {}, required {} bytes ({}), access mode {:?}, mount flags {:?}",
        req.name,
        required,
        gib(required),
        req.volume_capabilities
            .iter()
            .filter_map(|c| c
                .access_mode
                .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown)))
            .collect::<Vec<_>>(),
        sc.mount_options.clone().unwrap_or_default()
    ));
    n.info(format!(
        "parameters {}; secrets: keys {} of Secret {}",
        keys.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        secret_keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        name_of(&examples.secret.metadata)
    ));
    let volume = controller
        .create_volume(prov.request.clone())
        .await
        .context("CreateVolume")?
        .into_inner()
        .volume
        .context("CreateVolume answered without a volume")?;
    let capacity = u64::try_from(volume.capacity_bytes)?;
    n.info(format!(
        "volume_id {}, capacity {} bytes, volume_context {:?}",
        volume.volume_id,
        capacity,
        volume.volume_context.iter().collect::<BTreeMap<_, _>>()
    ));
    ensure!(
        capacity == required.div_ceil(GIB) * GIB,
        "capacity {capacity} bytes for a claim of {required} bytes; whole GiB expected"
    );
    n.proved(format!(
        "the volume has the claim's size, {} (Heketi allocates whole GiB)",
        gib(capacity)
    ));
    let gluster_volume = volume
        .volume_context
        .get("glusterVolume")
        .cloned()
        .context("the volume context has no glusterVolume")?;
    ensure!(
        volume.volume_context.contains_key("glusterServers"),
        "the volume context has no glusterServers"
    );
    let again = controller
        .create_volume(prov.request.clone())
        .await
        .context("CreateVolume (retried)")?
        .into_inner()
        .volume
        .context("the retried CreateVolume answered without a volume")?;
    ensure!(
        again.volume_id == volume.volume_id,
        "the retried CreateVolume gave {} after {}",
        again.volume_id,
        volume.volume_id
    );
    let list = tb.gluster(0, &["volume", "list"]).await?;
    let matching = list.lines().filter(|l| l.trim() == gluster_volume).count();
    ensure!(
        matching == 1,
        "gluster volume list shows {matching} volumes named {gluster_volume}:\n{list}"
    );
    n.proved(
        "a retried CreateVolume (the provisioner retries after a timeout) returns the same volume, \
         and Gluster has exactly one volume for the claim",
    );
    let info = tb.gluster(0, &["volume", "info", &gluster_volume]).await?;
    let bricks = bricks_of(&info);
    let hosts: std::collections::BTreeSet<&String> = bricks.iter().map(|(h, _)| h).collect();
    ensure!(
        info.lines().any(|l| l.trim() == "Type: Replicate")
            && info.lines().any(|l| l.trim() == "Status: Started")
            && bricks.len() == 3
            && hosts.len() == 3,
        "gluster volume info {gluster_volume}:\n{info}"
    );
    // Each brick is on its own host's disk (seen from outside the hosts).
    for (host, brick) in &bricks {
        let spec = format!("{host}:{}", brick.display());
        let on_disk = tb
            .brick_on_disk(&spec)
            .with_context(|| format!("brick {spec} is on no testbed host"))?;
        ensure!(on_disk.is_dir(), "brick {spec} is not on its host's disk");
    }
    n.info(format!(
        "gluster volume info: Replicate, Started, bricks {}",
        bricks
            .iter()
            .map(|(h, p)| format!("{h}:{}", p.display()))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    n.proved(format!(
        "volumetype {} of the StorageClass: a started replica-3 Gluster volume with one brick on \
         each of 3 hosts",
        class_params
            .get("volumetype")
            .map(String::as_str)
            .unwrap_or("(default)")
    ));
    if let Some(opts) = class_params.get("volumeoptions") {
        for item in opts.split(',') {
            let mut words = item.split_whitespace();
            let (Some(key), Some(want)) = (words.next(), words.next()) else {
                continue;
            };
            let got = tb
                .gluster(0, &["volume", "get", &gluster_volume, key])
                .await?;
            ensure!(
                got.lines().any(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some(key) && w.next() == Some(want)
                }),
                "gluster volume get {gluster_volume} {key}:\n{got}"
            );
            n.proved(format!(
                "volumeoptions of the StorageClass reached Gluster: {key} = {want}"
            ));
        }
    }

    // 3. The PV.
    n.step("external-provisioner: the PersistentVolume it writes");
    let pv = persistent_volume(&examples, &prov, &volume)?;
    n.info(serde_yaml_ng::to_string(&pv).context("printing the PV")?);
    let pv_spec = pv.spec.as_ref().context("PV without spec")?;
    let csi = pv_spec.csi.as_ref().context("PV without csi")?;
    let attributes: HashMap<String, String> = csi
        .volume_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let pv_mount_options = pv_spec.mount_options.clone().unwrap_or_default();
    let pv_modes = pv_spec.access_modes.clone().unwrap_or_default();
    let kubelet_mode = csi_access_mode(pv_modes.first().context("PV without access modes")?, true)?;
    let capability = mount_capability(
        kubelet_mode,
        csi.fs_type.as_deref().unwrap_or_default(),
        &pv_mount_options,
    );
    ensure!(
        !format!("{pv:?}").contains(&env.heketi_key),
        "the PV must not carry the Heketi key"
    );
    n.proved("the PV holds no secret: only secret references, the volume handle and attributes");

    // 4. NodeStageVolume.
    n.step("kubelet: NodeStageVolume (once per node, before the first pod starts)");
    let kubelet_root = tb.scratch_dir("demo-kubelet")?;
    let paths = KubeletPaths::new(&kubelet_root, &prov.pv_name, &csi.volume_handle);
    // kubelet creates the staging directory.
    let staging = paths.staging.clone();
    blocking("creating the staging directory", move || {
        std::fs::create_dir_all(&staging)
    })
    .await?;
    n.info(format!("staging path {}", paths.staging.display()));
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: csi.volume_handle.clone(),
        publish_context: HashMap::new(),
        staging_target_path: paths.staging.display().to_string(),
        volume_capability: Some(capability.clone()),
        secrets: HashMap::new(),
        volume_context: attributes.clone(),
    })
    .await
    .context("NodeStageVolume")?;
    let table = mount_table()?;
    let staged = table
        .iter()
        .find(|m| m.path == paths.staging)
        .context("the staging path is not in the mount table after NodeStageVolume")?;
    ensure!(
        staged.fstype == "fuse.glusterfs"
            && staged.source.ends_with(&format!(":/{gluster_volume}")),
        "staging mount {staged:?}"
    );
    n.info(format!(
        "mountinfo: {} {} {}",
        staged.path.display(),
        staged.fstype,
        staged.source
    ));
    let clients = fuse_clients(&gluster_volume);
    ensure!(
        clients.len() == 1,
        "FUSE clients of {gluster_volume}: {clients:?}"
    );
    let args = cmdline(clients[0]);
    n.info(format!(
        "FUSE client pid {}: {}",
        clients[0],
        args.join(" ")
    ));
    n.proved("the volume is mounted once on the node, by one GlusterFS FUSE client");
    for option in &pv_mount_options {
        let flag = format!("--{option}");
        ensure!(
            args.contains(&flag),
            "mountOptions {option:?}: the client runs without {flag}: {args:?}"
        );
        n.proved(format!(
            "mountOptions of the StorageClass reach the client: {option} ({flag})"
        ));
    }
    let servers: Vec<&str> = attributes
        .get("glusterServers")
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    if servers.len() > 1 {
        let backups = args
            .iter()
            .filter_map(|a| a.strip_prefix("--volfile-server="))
            .collect::<Vec<_>>();
        ensure!(
            backups == servers,
            "the client's volfile servers are {backups:?}, the volume's servers {servers:?}"
        );
        n.proved(format!(
            "the client can fetch the volume from any of the {} servers (primary first, the \
             others as backup volfile servers)",
            servers.len()
        ));
    }

    // 5. NodePublishVolume for two pods.
    n.step("kubelet: NodePublishVolume for pod A and pod B (same node, same claim)");
    for (pod, target) in ["A", "B"].iter().zip(&paths.targets) {
        // kubelet creates the parent of the target; the driver creates the target itself.
        let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        blocking("creating the pod volume directory", move || {
            std::fs::create_dir_all(&parent)
        })
        .await?;
        node.node_publish_volume(NodePublishVolumeRequest {
            volume_id: csi.volume_handle.clone(),
            publish_context: HashMap::new(),
            staging_target_path: paths.staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(capability.clone()),
            readonly: false,
            secrets: HashMap::new(),
            volume_context: attributes.clone(),
        })
        .await
        .with_context(|| format!("NodePublishVolume for pod {pod}"))?;
        n.info(format!("pod {pod}: {}", target.display()));
    }
    let staging = paths.staging.clone();
    let staged_dev = blocking("stat of the staging path", move || {
        std::fs::metadata(&staging).map(|m| m.dev())
    })
    .await?;
    for target in &paths.targets {
        let t = target.clone();
        let meta = blocking("stat of a pod's volume", move || std::fs::metadata(&t)).await?;
        ensure!(
            meta.dev() == staged_dev,
            "{} is not the staged volume (device {} vs {staged_dev})",
            target.display(),
            meta.dev()
        );
        ensure!(
            mount_table()?.iter().any(|m| m.path == *target),
            "{} is not a mount point",
            target.display()
        );
    }
    let clients = fuse_clients(&gluster_volume);
    ensure!(
        clients.len() == 1,
        "FUSE clients of {gluster_volume} after two publishes: {clients:?}"
    );
    n.proved("both pods' volumes are bind mounts of the staged mount; still one FUSE client");
    if let Some(gid) = attributes.get("gid") {
        let gid: u32 = gid.parse().context("the volume context's gid")?;
        let t = paths.targets[0].clone();
        let meta = blocking("stat of the volume root", move || std::fs::metadata(&t)).await?;
        let min: u32 = class_params
            .get("gidMin")
            .map(|g| g.parse())
            .transpose()?
            .unwrap_or(2000);
        let max: u32 = class_params
            .get("gidMax")
            .map(|g| g.parse())
            .transpose()?
            .unwrap_or(u32::MAX);
        ensure!(
            meta.gid() == gid && (min..=max).contains(&gid),
            "the volume root belongs to group {}, the volume's gid is {gid}, the class allows {min}..={max}",
            meta.gid()
        );
        n.proved(format!(
            "the volume root belongs to group {gid}, from gidMin..gidMax ({min}..{max}) of the \
             StorageClass: non-root pods given that group can write"
        ));
    }

    // 6. Data.
    n.step("pod A writes a file, pod B reads it");
    let file_a = paths.targets[0].join("hello.txt");
    let file_b = paths.targets[1].join("hello.txt");
    let content = format!("written by pod A into claim {}\n", name_of(&claim.metadata));
    {
        let (f, c) = (file_a.clone(), content.clone());
        blocking("pod A writes", move || {
            std::fs::write(&f, c.as_bytes())?;
            std::fs::File::open(&f)?.sync_all()
        })
        .await?;
    }
    let f = file_b.clone();
    let read = blocking("pod B reads", move || std::fs::read_to_string(&f)).await?;
    ensure!(
        read == content,
        "pod B read {read:?}, pod A wrote {content:?}"
    );
    n.info(format!("{} → {:?}", file_b.display(), read.trim_end()));
    n.proved("the file written by pod A is read by pod B: one FUSE client serves both");
    for (host, brick) in &bricks {
        let spec = format!("{host}:{}", brick.display());
        let p = tb
            .brick_on_disk(&spec)
            .with_context(|| format!("brick {spec} is on no testbed host"))?
            .join("hello.txt");
        let on_brick = blocking("reading a brick", move || std::fs::read_to_string(&p)).await?;
        ensure!(
            on_brick == content,
            "brick {host}:{} holds {on_brick:?}",
            brick.display()
        );
    }
    n.proved(format!(
        "the file is stored on all {} bricks, one copy per host (replicate:3)",
        bricks.len()
    ));

    // 7. Expansion.
    n.step("the claim grows by 1 GiB; external-resizer: ControllerExpandVolume");
    let new_bytes = capacity + EXPAND_BY_GIB * GIB;
    let expand_secrets = prov
        .expand_secret
        .as_ref()
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    let expanded = controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: csi.volume_handle.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: i64::try_from(new_bytes)?,
                limit_bytes: 0,
            }),
            secrets: expand_secrets,
            volume_capability: Some(capability.clone()),
        })
        .await
        .context("ControllerExpandVolume")?
        .into_inner();
    ensure!(
        u64::try_from(expanded.capacity_bytes)? == new_bytes && !expanded.node_expansion_required,
        "ControllerExpandVolume answered {} bytes, node expansion {}; {new_bytes} bytes without \
         node expansion expected",
        expanded.capacity_bytes,
        expanded.node_expansion_required
    );
    n.info(format!(
        "capacity {} bytes ({}), node_expansion_required false",
        expanded.capacity_bytes,
        gib(new_bytes)
    ));
    let until = Instant::now() + STEP_LIMIT;
    let mut seen = df_total(&paths.targets[1]).await?;
    while seen <= capacity && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen = df_total(&paths.targets[1]).await?;
    }
    ensure!(
        seen > capacity && seen <= new_bytes,
        "df in pod B shows {seen} bytes after expanding to {new_bytes}"
    );
    n.info(format!("df in pod B: {} total", gib(seen)));
    n.proved("online expansion: pod B sees the new size in df without a remount or a restart");

    // 7b. Snapshot and restore.
    snapshot_and_restore(
        tb,
        n,
        &mut controller,
        &prov,
        &csi.volume_handle,
        &file_a,
        &content,
    )
    .await?;

    // 8. Pods stop.
    n.step("the pods stop; kubelet: NodeUnpublishVolume for each");
    for (pod, target) in ["A", "B"].iter().zip(&paths.targets) {
        node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: csi.volume_handle.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .with_context(|| format!("NodeUnpublishVolume for pod {pod}"))?;
        let table = mount_table()?;
        ensure!(
            !table.iter().any(|m| m.path == *target),
            "{} is still mounted",
            target.display()
        );
        ensure!(!target.exists(), "{} is still there", target.display());
    }
    n.proved("both pods' mounts and directories are gone; the staged mount stays for the next pod");
    ensure!(
        mount_table()?.iter().any(|m| m.path == paths.staging),
        "the staging mount went away with the pods"
    );

    // 9. Unstage.
    n.step("kubelet: NodeUnstageVolume (the last pod of the volume on this node is gone)");
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: csi.volume_handle.clone(),
        staging_target_path: paths.staging.display().to_string(),
    })
    .await
    .context("NodeUnstageVolume")?;
    ensure!(
        !mount_table()?.iter().any(|m| m.path == paths.staging),
        "{} is still mounted",
        paths.staging.display()
    );
    ensure!(
        !paths.staging.exists(),
        "{} is still there",
        paths.staging.display()
    );
    let until = Instant::now() + STEP_LIMIT;
    while !client_processes(&gluster_volume).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = client_processes(&gluster_volume);
    ensure!(
        left.is_empty(),
        "FUSE clients of {gluster_volume} after unstage: {left:?}"
    );
    n.proved("the staging mount, its directory and the FUSE client are gone");

    // 10. Delete.
    n.step("the claim is deleted (reclaimPolicy Delete); external-provisioner: DeleteVolume");
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: csi.volume_handle.clone(),
            secrets: prov.delete_secrets.clone(),
        })
        .await
        .context("DeleteVolume")?;
    let list = tb.gluster(0, &["volume", "list"]).await?;
    ensure!(
        !list.lines().any(|l| l.trim() == gluster_volume),
        "gluster volume list still shows {gluster_volume}:\n{list}"
    );
    n.proved(format!(
        "gluster volume list no longer shows {gluster_volume}"
    ));
    for (host, brick) in &bricks {
        // `<device>/brick_<id>/brick`: the brick and its directory, on the host's disk.
        let brick = tb
            .brick_on_disk(&format!("{host}:{}", brick.display()))
            .with_context(|| format!("brick {host}:{} is on no testbed host", brick.display()))?;
        let dir = brick.parent().unwrap_or(&brick);
        ensure!(
            !brick.exists() && !dir.exists(),
            "brick {host}:{} is still there",
            brick.display()
        );
    }
    n.proved("every brick directory of the volume is gone");
    let table = mount_table()?;
    let leftovers: Vec<&Mounted> = table
        .iter()
        .filter(|m| {
            m.path.starts_with(&paths.root) || m.source.ends_with(&format!(":/{gluster_volume}"))
        })
        .collect();
    ensure!(leftovers.is_empty(), "mounts left: {leftovers:?}");
    // kubelet removes the directories it made; that succeeds only if nothing is left in them.
    let root = paths.root.clone();
    let made = [
        paths.staging.clone(),
        paths.targets[0].clone(),
        paths.targets[1].clone(),
    ];
    blocking("removing kubelet's directories", move || {
        // Every directory between the root and the driver's paths, deepest first.
        let mut dirs: Vec<PathBuf> = made
            .iter()
            .flat_map(|p| p.ancestors().skip(1).take_while(|d| *d != root))
            .map(Path::to_path_buf)
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs.iter().chain(std::iter::once(&root)) {
            std::fs::remove_dir(d)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        }
        Ok(())
    })
    .await?;
    n.proved("no mount of the volume and no directory is left on the node");

    Ok(FlowSummary {
        volume_id: volume.volume_id,
        gluster_volume,
        pv_name: prov.pv_name,
    })
}

// ---------------------------------------------------------------------------------------------
// The `demo` subcommand

/// Command line of `gluster-csi-testbed demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// State directory of the demo's testbed (replaced by a fresh testbed).
    #[arg(long, default_value = "/tmp/gluster-csi-demo")]
    pub state_dir: PathBuf,
    /// Leave the testbed running afterwards (tear it down with `gluster-csi-testbed down`).
    #[arg(long)]
    pub keep: bool,
}

/// Brings a fresh testbed up, runs the flow printing each step, and tears the testbed down
/// (unless `--keep`), also when the flow fails or on Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<()> {
    println!(
        "gluster-csi demo: a PersistentVolumeClaim's whole life on real Gluster, driven the way \
         Kubernetes drives it, from deploy/examples."
    );
    println!(
        "Bringing up a testbed in {}: 3 Gluster hosts in network namespaces, heketi-server, \
         the controller and the node plugin.",
        args.state_dir.display()
    );
    let tb = crate::Testbed::up(crate::TestbedOptions::new(&args.state_dir)).await?;
    let mut narration = Narration::live();
    let outcome = tokio::select! {
        r = pvc_to_pod(&tb, &mut narration) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let dir = tb.state_dir().to_path_buf();
    let keep = args.keep && outcome.is_some();
    if keep {
        tb.detach();
    } else {
        tb.teardown().await?;
    }
    println!();
    match outcome {
        None => bail!("interrupted; the testbed was torn down"),
        Some(Err(e)) => Err(e.context(if keep {
            format!(
                "the flow failed; the testbed is still up in {}",
                dir.display()
            )
        } else {
            "the flow failed; the testbed was torn down".to_owned()
        })),
        Some(Ok(summary)) => {
            println!(
                "Done: {} checks passed; claim → {} → Gluster volume {} → two pods → gone.",
                narration.proofs(),
                summary.pv_name,
                summary.gluster_volume
            );
            if keep {
                println!(
                    "The testbed is still up: source {}/testbed.env; tear it down with\n  \
                     gluster-csi-testbed down --state-dir {}",
                    dir.display(),
                    dir.display()
                );
            } else {
                println!("The testbed was torn down (keep it with --keep).");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| quantity_bytes(&Quantity(s.into()));
        assert_eq!(q("2Gi").ok(), Some(2 * GIB));
        assert_eq!(q("1500M").ok(), Some(1_500_000_000));
        assert_eq!(q("1073741824").ok(), Some(GIB));
        assert_eq!(q("1.5Gi").ok(), Some(3 * GIB / 2));
        assert_eq!(q("0.1").ok(), Some(1));
        assert!(q("2GB").is_err());
        assert!(q("x").is_err());
        assert_eq!(bytes_quantity(3 * GIB).0, "3Gi");
        assert_eq!(bytes_quantity(1536 << 20).0, "1536Mi");
        assert_eq!(bytes_quantity(1000).0, "1000");
    }

    #[test]
    fn access_modes_as_the_sidecars_map_them() {
        let m = |s: &str, snmw: bool| csi_access_mode(s, snmw).ok();
        assert_eq!(m("ReadWriteMany", true), Some(Mode::MultiNodeMultiWriter));
        assert_eq!(m("ReadWriteOnce", true), Some(Mode::SingleNodeMultiWriter));
        assert_eq!(m("ReadWriteOnce", false), Some(Mode::SingleNodeWriter));
        assert_eq!(
            m("ReadWriteOncePod", true),
            Some(Mode::SingleNodeSingleWriter)
        );
        assert_eq!(m("ReadOnlyMany", true), Some(Mode::MultiNodeReaderOnly));
        assert_eq!(m("Sometimes", true), None);
    }

    #[test]
    fn gluster_volume_info_bricks() {
        let info = "Volume Name: v\nType: Replicate\nNumber of Bricks: 1 x 3 = 3\nBricks:\n\
                    Brick1: 10.0.0.1:/d/brick_1/brick\nBrick2: 10.0.0.2:/d/brick_2/brick\n\
                    Options Reconfigured:\nBrick-multiplex: off\n";
        assert_eq!(
            bricks_of(info),
            vec![
                ("10.0.0.1".to_owned(), PathBuf::from("/d/brick_1/brick")),
                ("10.0.0.2".to_owned(), PathBuf::from("/d/brick_2/brick")),
            ]
        );
    }
}
