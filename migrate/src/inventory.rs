//! The in-tree objects a migration reads: PVs, their PVCs, Endpoints, Services and
//! StorageClasses, from YAML files (`kubectl get -o yaml` output or manifests) or the API.

use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use serde::Deserialize as _;

use super::{MigrateError, is_intree};

/// The objects a plan is built from.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// PersistentVolumes (in-tree ones are picked out later).
    pub pvs: Vec<PersistentVolume>,
    /// PersistentVolumeClaims.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Endpoints.
    pub endpoints: Vec<Endpoints>,
    /// Services.
    pub services: Vec<Service>,
    /// StorageClasses.
    pub classes: Vec<StorageClass>,
    /// Read from the API: an object that is not here does not exist.
    pub complete: bool,
}

impl Inventory {
    /// Adds the objects of a YAML stream (several documents, `kind: List` accepted). Kinds
    /// other than the five above are ignored; a document that does not parse is an error
    /// naming `origin` and the document's position.
    pub fn add_yaml(&mut self, text: &str, origin: &str) -> Result<(), MigrateError> {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let bad = |message: String| MigrateError::Input {
                origin: origin.to_owned(),
                message: format!("document {}: {message}", i + 1),
            };
            let value = serde_json::Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            self.add_value(value).map_err(bad)?;
        }
        Ok(())
    }

    fn add_value(&mut self, value: serde_json::Value) -> Result<(), String> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or("has no kind")?
            .to_owned();
        fn parse<T: serde::de::DeserializeOwned>(
            kind: &str,
            v: serde_json::Value,
        ) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| format!("not a valid {kind}: {e}"))
        }
        match kind.as_str() {
            "List"
            | "PersistentVolumeList"
            | "PersistentVolumeClaimList"
            | "EndpointsList"
            | "ServiceList"
            | "StorageClassList" => {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default();
                let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
                for mut item in items {
                    // Typed lists from the API leave out each item's kind.
                    if let (Some(k), Some(obj)) = (item_kind, item.as_object_mut()) {
                        obj.entry("kind").or_insert_with(|| k.into());
                        let api_version = if k == "StorageClass" {
                            "storage.k8s.io/v1"
                        } else {
                            "v1"
                        };
                        obj.entry("apiVersion")
                            .or_insert_with(|| api_version.into());
                    }
                    self.add_value(item)?;
                }
            }
            "PersistentVolume" => self.pvs.push(parse(&kind, value)?),
            "PersistentVolumeClaim" => self.pvcs.push(parse(&kind, value)?),
            "Endpoints" => self.endpoints.push(parse(&kind, value)?),
            "Service" => self.services.push(parse(&kind, value)?),
            "StorageClass" => self.classes.push(parse(&kind, value)?),
            _ => {}
        }
        Ok(())
    }

    /// Reads the in-tree PVs (all, or those named in `only`) and what they refer to from the
    /// API.
    pub async fn from_api(client: kube::Client, only: &[String]) -> Result<Self, MigrateError> {
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let all = pvs
            .list(&Default::default())
            .await
            .map_err(|source| MigrateError::Kube {
                what: "listing PersistentVolumes".into(),
                source,
            })?;
        let mut inv = Self {
            complete: true,
            ..Self::default()
        };
        inv.pvs = all.items;
        let wanted: Vec<PersistentVolume> = inv
            .pvs
            .iter()
            .filter(|pv| is_intree(pv))
            .filter(|pv| {
                only.is_empty()
                    || only
                        .iter()
                        .any(|n| Some(n.as_str()) == pv.metadata.name.as_deref())
            })
            .cloned()
            .collect();
        for pv in &wanted {
            if let Some((ns, name)) = claim_key(pv) {
                let api = Api::namespaced(client.clone(), &ns);
                inv.pvcs
                    .extend(get(&api, &name, &format!("PVC {ns}/{name}")).await?);
            }
            let ep_ref = Self::endpoints_namespace(pv).zip(
                pv.spec
                    .as_ref()
                    .and_then(|s| s.glusterfs.as_ref())
                    .map(|g| g.endpoints.clone()),
            );
            let (ns, name) = match ep_ref {
                Some((ns, name)) if inv.endpoints(&ns, &name).is_none() => (ns, name),
                _ => continue,
            };
            let api = Api::namespaced(client.clone(), &ns);
            inv.endpoints
                .extend(get(&api, &name, &format!("Endpoints {ns}/{name}")).await?);
            let api = Api::namespaced(client.clone(), &ns);
            inv.services
                .extend(get(&api, &name, &format!("Service {ns}/{name}")).await?);
        }
        let class_names: std::collections::BTreeSet<String> = wanted
            .iter()
            .filter_map(|pv| pv.spec.as_ref()?.storage_class_name.clone())
            .filter(|c| !c.is_empty())
            .collect();
        let api = Api::all(client.clone());
        for class in class_names {
            inv.classes
                .extend(get(&api, &class, &format!("StorageClass {class}")).await?);
        }
        Ok(inv)
    }

    /// The namespace of a PV's Endpoints: `endpointsNamespace`, else its claim's namespace.
    pub fn endpoints_namespace(pv: &PersistentVolume) -> Option<String> {
        let spec = pv.spec.as_ref()?;
        spec.glusterfs
            .as_ref()?
            .endpoints_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| spec.claim_ref.as_ref()?.namespace.clone())
    }

    /// The claim a PV is bound to, if it is in the inventory (and, when the claimRef names a
    /// uid, has that uid).
    pub fn claim_of(&self, pv: &PersistentVolume) -> Option<&PersistentVolumeClaim> {
        let (ns, name) = claim_key(pv)?;
        let uid = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.uid.as_deref());
        self.pvcs.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(ns.as_str())
                && c.metadata.name.as_deref() == Some(name.as_str())
                && match (uid, c.metadata.uid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    /// The Endpoints a PV names, if in the inventory.
    pub fn endpoints_of(&self, pv: &PersistentVolume) -> Option<&Endpoints> {
        let name = &pv.spec.as_ref()?.glusterfs.as_ref()?.endpoints;
        self.endpoints(&Self::endpoints_namespace(pv)?, name)
    }

    /// The StorageClass a PV names, if in the inventory.
    pub fn class_of(&self, pv: &PersistentVolume) -> Option<&StorageClass> {
        self.class(pv.spec.as_ref()?.storage_class_name.as_deref()?)
    }

    /// Endpoints `namespace`/`name`.
    pub fn endpoints(&self, namespace: &str, name: &str) -> Option<&Endpoints> {
        self.endpoints.iter().find(|e| {
            e.metadata.namespace.as_deref() == Some(namespace)
                && e.metadata.name.as_deref() == Some(name)
        })
    }

    /// Service `namespace`/`name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|e| {
            e.metadata.namespace.as_deref() == Some(namespace)
                && e.metadata.name.as_deref() == Some(name)
        })
    }

    /// StorageClass `name`.
    pub fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    }
}

/// Reads one object; `None` when it does not exist.
async fn get<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>, MigrateError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|source| MigrateError::Kube {
            what: format!("reading {what}"),
            source,
        })
}

/// `(namespace, name)` of a PV's claimRef.
pub fn claim_key(pv: &PersistentVolume) -> Option<(String, String)> {
    let c = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((c.namespace.clone()?, c.name.clone()?))
}
