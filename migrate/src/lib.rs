//! Moving PersistentVolumes of the removed in-tree `kubernetes.io/glusterfs` plugin to this
//! driver, without copying data (`gluster-csi-migrate`, procedure in `docs/migration.md`).
//!
//! A PV's volume source and a PVC's `volumeName` are immutable, so a PV cannot be switched to
//! CSI in place: the PV and its PVC are recreated with the same names, pointing at the same
//! Gluster volume. For each in-tree PV this module builds
//!
//! - the CSI PV: same name, `persistentVolumeReclaimPolicy: Retain`, `csi.driver` = our driver,
//!   `volumeHandle` = our volume id for the Heketi volume id in the
//!   `gluster.kubernetes.io/heketi-volume-id` annotation, `volumeAttributes`
//!   `glusterServers` (from the PV's Endpoints object, or `--servers`) and `glusterVolume`
//!   (`spec.glusterfs.path`), the `pv.beta.kubernetes.io/gid` annotation, mount options,
//!   access modes, capacity and storage class kept, and a `claimRef` to the PVC;
//! - the PVC: same name and namespace, labels and annotations kept, `volumeName` set;
//! - the [`Plan`]: the ordered steps and the in-tree plugin's leftover `glusterfs-dynamic-*`
//!   Endpoints and Services.
//!
//! Everything here is pure; [`inventory`] loads the in-tree objects (files or API) and
//! [`apply`] performs a plan through the API.

pub mod apply;
pub mod cli;
pub mod inventory;
pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, Endpoints, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeSpec, SecretReference, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use gluster_csi_controller::kube::gid_annotator::{GID_ANNOTATION, GID_ATTRIBUTE};
use gluster_csi_controller::volume_id::{BackendRef, HEKETI_ID_LEN, VolumeId};

pub use inventory::Inventory;
pub use plan::{Leftover, Plan, Step};

/// The in-tree plugin's name (its StorageClass provisioner and Secret type).
pub const INTREE_PLUGIN: &str = "kubernetes.io/glusterfs";
/// Annotation with the Heketi volume id on dynamically provisioned in-tree PVs.
pub const HEKETI_ID_ANNOTATION: &str = "gluster.kubernetes.io/heketi-volume-id";
/// Label the in-tree plugin put on the Endpoints/Service it made for a PVC.
pub const PROVISIONED_FOR_LABEL: &str = "gluster.kubernetes.io/provisioned-for-pvc";
/// Default name prefix of those Endpoints/Services.
pub const DYNAMIC_EP_PREFIX: &str = "glusterfs-dynamic-";
/// Annotation external-provisioner uses to recognise the PVs of its driver.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// `volume_context` keys read by the node plugin (see `gluster_csi_node::context`).
pub const CTX_SERVERS: &str = "glusterServers";
/// The Gluster volume name key.
pub const CTX_VOLUME: &str = "glusterVolume";
/// Informational Heketi id key, as the controller writes it.
pub const CTX_HEKETI_ID: &str = "heketiVolumeId";

/// PV and PVC annotations that belong to the old objects' life and are not copied.
const DROPPED_ANNOTATIONS: &[&str] = &[
    "kubernetes.io/createdby",
    "Description",
    "gluster.org/type",
    PROVISIONED_BY,
    "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/migrated-to",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Why a PV cannot be migrated, or the tool cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// An input file is not usable.
    #[error("{origin}: {message}")]
    Input {
        /// File name (or `-`).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The PV is not an in-tree Gluster PV.
    #[error("PersistentVolume {pv} has no spec.glusterfs: it is not a {INTREE_PLUGIN} volume")]
    NotInTree {
        /// PV name.
        pv: String,
    },
    /// No Gluster server is known for the PV.
    #[error(
        "PersistentVolume {pv}: no Gluster server addresses: the Endpoints {namespace}/{endpoints} \
         {why}; give the API access, --endpoints-file, or --servers HOST,HOST,..."
    )]
    NoServers {
        /// PV name.
        pv: String,
        /// Endpoints namespace.
        namespace: String,
        /// Endpoints name.
        endpoints: String,
        /// What was wrong with them.
        why: String,
    },
    /// A server address the node plugin cannot use.
    #[error("PersistentVolume {pv}: server {server:?} {why}")]
    BadServer {
        /// PV name.
        pv: String,
        /// The address.
        server: String,
        /// Why.
        why: String,
    },
    /// `spec.glusterfs.path` is not a plain Gluster volume name.
    #[error(
        "PersistentVolume {pv}: spec.glusterfs.path {path:?} is not a Gluster volume name \
         (letters, digits, '-', '_', '.'); subdirectory mounts cannot be migrated by this tool"
    )]
    BadPath {
        /// PV name.
        pv: String,
        /// The path.
        path: String,
    },
    /// The volume id cannot hold the backend URL.
    #[error("PersistentVolume {pv}: {source}; pass --heketi-url with a shorter URL")]
    VolumeId {
        /// PV name.
        pv: String,
        /// Why.
        source: gluster_csi_controller::volume_id::UrlTooLong,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What we were doing.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// No API client.
    #[error(transparent)]
    Client(#[from] gluster_csi_controller::kube::ClientError),
    /// Applying a step found the cluster in a state the plan does not expect.
    #[error("{0}")]
    Refused(String),
    /// Writing output or backups failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Choices that are not in the in-tree objects.
#[derive(Clone, Debug)]
pub struct Options {
    /// Our CSI driver name.
    pub driver_name: String,
    /// Heketi URL to record in the volume ids, overriding the StorageClass's `resturl`. The
    /// controller's own `--heketi-url` is recorded as "the default backend".
    pub heketi_url: Option<String>,
    /// The controller's `--heketi-url`: a class `resturl` equal to it is recorded as the
    /// default backend, so the volume follows the controller if that URL changes.
    pub default_heketi_url: Option<String>,
    /// Gluster servers to use when a PV's Endpoints are unknown.
    pub servers: Vec<String>,
    /// Storage class name for the new PV and PVC instead of the old one.
    pub storage_class: Option<String>,
}

impl Options {
    /// Options with our default driver name and nothing else.
    pub fn new(driver_name: impl Into<String>) -> Self {
        Self {
            driver_name: driver_name.into(),
            heketi_url: None,
            default_heketi_url: None,
            servers: Vec::new(),
            storage_class: None,
        }
    }
}

/// One in-tree PV and what replaces it.
#[derive(Clone, Debug)]
pub struct Migration {
    /// The in-tree PV as read.
    pub old_pv: PersistentVolume,
    /// Its PVC as read, when there is one and it was found.
    pub old_pvc: Option<PersistentVolumeClaim>,
    /// The CSI PV to create.
    pub new_pv: PersistentVolume,
    /// The PVC to create (none for a PV bound to no claim).
    pub new_pvc: Option<PersistentVolumeClaim>,
    /// The old PV's reclaim policy, to restore once the new PV is verified.
    pub old_reclaim_policy: String,
    /// The Heketi volume id, when known.
    pub heketi_id: Option<String>,
    /// Things the administrator should know about this PV.
    pub notes: Vec<String>,
}

impl Migration {
    /// The PV name (same before and after).
    pub fn pv_name(&self) -> &str {
        self.old_pv.metadata.name.as_deref().unwrap_or_default()
    }

    /// `(namespace, name)` of the PVC, if any.
    pub fn pvc_ref(&self) -> Option<(&str, &str)> {
        let pvc = self.new_pvc.as_ref()?;
        Some((
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
            pvc.metadata.name.as_deref().unwrap_or_default(),
        ))
    }
}

/// Whether `pv` is an in-tree Gluster PV.
pub fn is_intree(pv: &PersistentVolume) -> bool {
    pv.spec.as_ref().is_some_and(|s| s.glusterfs.is_some())
}

/// The Heketi volume id of an in-tree PV: its annotation, else (as the in-tree expansion code
/// did) a `vol_<id>` path. `None` for statically made PVs.
pub fn heketi_id(pv: &PersistentVolume) -> Option<String> {
    let is_id = |s: &str| s.len() == HEKETI_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(id) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HEKETI_ID_ANNOTATION))
        .map(|s| s.trim())
        .filter(|s| is_id(s))
    {
        return Some(id.to_ascii_lowercase());
    }
    let path = pv
        .spec
        .as_ref()?
        .glusterfs
        .as_ref()?
        .path
        .trim_start_matches('/');
    path.strip_prefix("vol_")
        .filter(|s| is_id(s))
        .map(str::to_ascii_lowercase)
}

/// The CSI `volumeHandle` of a migrated PV. With a Heketi id it is the controller's own id
/// format ([`VolumeId`]), so DeleteVolume and ControllerExpandVolume reach the Heketi volume;
/// without one (a static PV) it is `static-<pv name>`, an id the controller recognises as none
/// of its volumes (deleting such a PV never deletes data).
pub fn volume_handle(
    pv_name: &str,
    heketi_id: Option<&str>,
    backend: &BackendRef,
) -> Result<String, MigrateError> {
    match heketi_id {
        Some(id) => VolumeId::new(backend.clone(), id)
            .encode()
            .map_err(|source| MigrateError::VolumeId {
                pv: pv_name.to_owned(),
                source,
            }),
        None => Ok(format!("static-{pv_name}")),
    }
}

/// The Gluster servers listed by an Endpoints object, in order, without repeats.
pub fn endpoint_servers(ep: &Endpoints) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        for addr in subset.addresses.iter().flatten() {
            let ip = addr.ip.trim();
            if !ip.is_empty() && !out.iter().any(|s| s == ip) {
                out.push(ip.to_owned());
            }
        }
    }
    out
}

fn check_server(pv: &str, server: &str) -> Result<(), MigrateError> {
    let bad = |why: &str| {
        Err(MigrateError::BadServer {
            pv: pv.to_owned(),
            server: server.to_owned(),
            why: why.to_owned(),
        })
    };
    match server.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => bad(
            "is an IPv6 address, which the node plugin's backup-volfile-servers cannot carry; \
             pass --servers with host names",
        ),
        Ok(IpAddr::V4(_)) => Ok(()),
        Err(_)
            if !server.is_empty()
                && server
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            Ok(())
        }
        Err(_) => bad("is not a host name or IPv4 address"),
    }
}

fn check_volume_name(pv: &str, path: &str) -> Result<String, MigrateError> {
    let name = path.trim().trim_start_matches('/');
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(MigrateError::BadPath {
            pv: pv.to_owned(),
            path: path.to_owned(),
        })
    }
}

fn kept(annotations: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn non_empty<K: Ord, V>(m: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!m.is_empty()).then_some(m)
}

/// The backend to record in the volume id: `--heketi-url`, else the class's `resturl`, else
/// the controller's default backend. A URL equal to the controller's `--heketi-url` is recorded
/// as the default backend.
pub fn backend_for(class: Option<&StorageClass>, opts: &Options) -> BackendRef {
    let class_url = class
        .and_then(|c| c.parameters.as_ref())
        .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case("resturl")))
        .map(|(_, v)| v.trim().trim_end_matches('/').to_owned())
        .filter(|v| !v.is_empty());
    let url = opts
        .heketi_url
        .as_ref()
        .map(|u| u.trim_end_matches('/').to_owned())
        .or(class_url);
    match (url, &opts.default_heketi_url) {
        (Some(u), Some(d)) if u == d.trim_end_matches('/') => BackendRef::Default,
        (Some(u), _) => BackendRef::Url(u),
        (None, _) => BackendRef::Default,
    }
}

/// The in-tree class's `secretName`/`secretNamespace`, when it used them and authentication
/// was on: the migrated PV names that Secret as its controller-expand secret.
pub fn class_secret(class: Option<&StorageClass>) -> Option<SecretReference> {
    let params = class?.parameters.as_ref()?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if get("restauthenabled").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        return None;
    }
    Some(SecretReference {
        name: Some(get("secretName")?),
        namespace: Some(get("secretNamespace")?),
    })
}

/// Builds the migration of one in-tree PV. `pvc` is the claim it is bound to (when found),
/// `endpoints` the Endpoints object its `spec.glusterfs.endpoints` names (when found), `class`
/// its StorageClass (when found).
pub fn migrate_pv(
    pv: &PersistentVolume,
    pvc: Option<&PersistentVolumeClaim>,
    endpoints: Option<&Endpoints>,
    class: Option<&StorageClass>,
    opts: &Options,
) -> Result<Migration, MigrateError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(gfs) = spec.glusterfs.as_ref() else {
        return Err(MigrateError::NotInTree { pv: name });
    };
    let mut notes = Vec::new();

    let claim = spec.claim_ref.as_ref();
    let ep_namespace = gfs
        .endpoints_namespace
        .clone()
        .or_else(|| claim.and_then(|c| c.namespace.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let servers = match endpoints.map(endpoint_servers) {
        Some(s) if !s.is_empty() => s,
        found => {
            if opts.servers.is_empty() {
                return Err(MigrateError::NoServers {
                    pv: name,
                    namespace: ep_namespace,
                    endpoints: gfs.endpoints.clone(),
                    why: if found.is_some() {
                        "list no addresses".into()
                    } else {
                        "were not found".into()
                    },
                });
            }
            notes.push(format!(
                "Endpoints {ep_namespace}/{} not available: using --servers",
                gfs.endpoints
            ));
            opts.servers.clone()
        }
    };
    for s in &servers {
        check_server(&name, s)?;
    }
    let volume = check_volume_name(&name, &gfs.path)?;

    let id = heketi_id(pv);
    let backend = backend_for(class, opts);
    let handle = volume_handle(&name, id.as_deref(), &backend)?;
    if id.is_none() {
        notes.push(format!(
            "no {HEKETI_ID_ANNOTATION} annotation and path is not vol_<id>: migrated as a static \
             volume (volumeHandle {handle}); the driver will never delete or expand it"
        ));
    }

    let annotations = pv.metadata.annotations.as_ref();
    let gid = annotations
        .and_then(|a| a.get(GID_ANNOTATION))
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty());
    let mut attributes = BTreeMap::from([
        (CTX_SERVERS.to_owned(), servers.join(",")),
        (CTX_VOLUME.to_owned(), volume),
    ]);
    if let Some(id) = &id {
        attributes.insert(CTX_HEKETI_ID.to_owned(), id.clone());
    }
    if let Some(g) = &gid {
        attributes.insert(GID_ATTRIBUTE.to_owned(), g.clone());
    }

    let mut pv_annotations = kept(annotations);
    pv_annotations.insert(PROVISIONED_BY.to_owned(), opts.driver_name.clone());

    let storage_class = opts
        .storage_class
        .clone()
        .or_else(|| spec.storage_class_name.clone());
    let expand_secret = if id.is_some() {
        class_secret(class)
    } else {
        None
    };

    // The claim: the one found, else the one the PV points at.
    let claim_key = claim.and_then(|c| Some((c.namespace.clone()?, c.name.clone()?)));
    let new_pvc = match (pvc, &claim_key) {
        (Some(old), _) => Some(new_claim(old, &name, storage_class.as_deref())),
        (None, Some((ns, n))) => {
            notes.push(format!(
                "PVC {ns}/{n} was not in the input: it is rebuilt from the PV's claimRef, \
                 without its labels and annotations"
            ));
            Some(claim_from_pv(pv, ns, n, storage_class.as_deref()))
        }
        (None, None) => None,
    };
    let claim_ref = new_pvc.as_ref().map(|c| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        ..ObjectReference::default()
    });

    let new_pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: pv.metadata.labels.clone(),
            annotations: non_empty(pv_annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: spec.capacity.clone(),
            claim_ref,
            mount_options: spec.mount_options.clone(),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: storage_class,
            volume_mode: Some("Filesystem".into()),
            csi: Some(CSIPersistentVolumeSource {
                driver: opts.driver_name.clone(),
                volume_handle: handle,
                read_only: gfs.read_only.filter(|r| *r),
                volume_attributes: Some(attributes),
                controller_expand_secret_ref: expand_secret,
                ..CSIPersistentVolumeSource::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };

    Ok(Migration {
        old_pv: pv.clone(),
        old_pvc: pvc.cloned(),
        new_pv,
        new_pvc,
        old_reclaim_policy: spec
            .persistent_volume_reclaim_policy
            .clone()
            .unwrap_or_else(|| "Delete".into()),
        heketi_id: id,
        notes,
    })
}

/// The new PVC for an existing one: same name, namespace, labels, kept annotations, spec
/// pointing at the PV.
fn new_claim(
    old: &PersistentVolumeClaim,
    pv_name: &str,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    let spec = old.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: old.metadata.name.clone(),
            namespace: old.metadata.namespace.clone(),
            labels: old.metadata.labels.clone(),
            annotations: non_empty(kept(old.metadata.annotations.as_ref())),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: storage_class.map(str::to_owned),
            volume_mode: Some("Filesystem".into()),
            volume_name: Some(pv_name.to_owned()),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// A PVC for a PV whose claim is not known beyond its `claimRef`.
fn claim_from_pv(
    pv: &PersistentVolume,
    namespace: &str,
    name: &str,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    let spec = pv.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.capacity.map(|c| VolumeResourceRequirements {
                requests: Some(c),
                limits: None,
            }),
            storage_class_name: storage_class.map(str::to_owned),
            volume_mode: Some("Filesystem".into()),
            volume_name: pv.metadata.name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests;
