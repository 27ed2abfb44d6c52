//! The ordered steps of a migration, and their rendering for a dry run.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{DYNAMIC_EP_PREFIX, PROVISIONED_FOR_LABEL};
use super::{Inventory, MigrateError, Migration, Options, migrate_pv};

/// An Endpoints or Service object the in-tree plugin made for a PVC and nothing needs any
/// more once its PV is migrated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leftover {
    /// `Endpoints` or `Service`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One step of the procedure, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Set the in-tree PV's reclaim policy to Retain, so deleting objects never deletes data.
    RetainOldPv {
        /// PV name.
        pv: String,
    },
    /// Stop the pods using the PVC (their workloads scaled to zero).
    ScaleDownConsumers {
        /// PVC namespace.
        namespace: String,
        /// PVC name.
        pvc: String,
    },
    /// Delete the PVC object (the data stays: the PV is Retain).
    DeletePvc {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Delete the in-tree PV object (the data stays: it is Retain).
    DeletePv {
        /// Name.
        name: String,
    },
    /// Create the CSI PV.
    CreatePv {
        /// Name.
        name: String,
    },
    /// Create the PVC again, bound to the CSI PV.
    CreatePvc {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Wait until the PVC is Bound.
    WaitBound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Start the workloads stopped before.
    ScaleUpConsumers {
        /// PVC namespace.
        namespace: String,
        /// PVC name.
        pvc: String,
    },
    /// Delete a leftover Endpoints/Service.
    DeleteLeftover(Leftover),
    /// By hand, once the data is checked: give the PV back its old reclaim policy.
    RestoreReclaimPolicy {
        /// PV name.
        pv: String,
        /// The old policy.
        policy: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RetainOldPv { pv } => write!(
                f,
                "set reclaim policy Retain on in-tree PV {pv}: kubectl patch pv {pv} -p \
                 '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}'"
            ),
            Self::ScaleDownConsumers { namespace, pvc } => write!(
                f,
                "scale down the workloads whose pods use PVC {namespace}/{pvc} and wait for the \
                 pods to be gone"
            ),
            Self::DeletePvc { namespace, name } => write!(
                f,
                "delete the PVC object (not the data): kubectl -n {namespace} delete pvc {name}"
            ),
            Self::DeletePv { name } => write!(
                f,
                "delete the in-tree PV object (not the data; it is Retain): kubectl delete pv {name}"
            ),
            Self::CreatePv { name } => write!(f, "create the CSI PV {name} (below)"),
            Self::CreatePvc { namespace, name } => {
                write!(
                    f,
                    "create the PVC {namespace}/{name} (below), bound to its PV"
                )
            }
            Self::WaitBound { namespace, name } => write!(
                f,
                "wait until PVC {namespace}/{name} is Bound: kubectl -n {namespace} wait \
                 --for=jsonpath='{{.status.phase}}'=Bound pvc/{name}"
            ),
            Self::ScaleUpConsumers { namespace, pvc } => {
                write!(f, "scale the workloads using PVC {namespace}/{pvc} back up")
            }
            Self::DeleteLeftover(l) => write!(
                f,
                "delete the in-tree plugin's leftover {}: kubectl -n {} delete {} {}",
                l.kind,
                l.namespace,
                l.kind.to_ascii_lowercase(),
                l.name
            ),
            Self::RestoreReclaimPolicy { pv, policy } => write!(
                f,
                "(by hand, once the data is checked) restore reclaim policy {policy}: kubectl \
                 patch pv {pv} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"{policy}\"}}}}'"
            ),
        }
    }
}

/// Every migration, the PVs that could not be migrated, and the leftovers.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// One per in-tree PV, in PV name order.
    pub migrations: Vec<Migration>,
    /// In-tree PVs that cannot be migrated, with why.
    pub failed: Vec<(String, String)>,
    /// In-tree Endpoints/Services to delete at the end.
    pub leftovers: Vec<Leftover>,
}

impl Plan {
    /// Plans the migration of the in-tree PVs in `inv` (only those named in `only`, when it is
    /// not empty).
    pub fn build(inv: &Inventory, only: &[String], opts: &Options) -> Self {
        let mut plan = Self::default();
        let mut pvs: Vec<_> = inv
            .pvs
            .iter()
            .filter(|pv| super::is_intree(pv))
            .filter(|pv| {
                only.is_empty()
                    || only
                        .iter()
                        .any(|n| Some(n.as_str()) == pv.metadata.name.as_deref())
            })
            .collect();
        pvs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for name in only {
            if !pvs
                .iter()
                .any(|pv| pv.metadata.name.as_deref() == Some(name.as_str()))
            {
                plan.failed.push((
                    name.clone(),
                    "no in-tree (spec.glusterfs) PersistentVolume of that name".into(),
                ));
            }
        }
        for pv in pvs {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let pvc = inv.claim_of(pv);
            let ep = inv.endpoints_of(pv);
            let class = inv.class_of(pv);
            match migrate_pv(pv, pvc, ep, class, opts) {
                Ok(m) => plan.migrations.push(m),
                Err(e) => plan.failed.push((name, e.to_string())),
            }
        }
        plan.leftovers = leftovers(inv, &plan.migrations);
        plan
    }

    /// The ordered steps: per PV, Retain → scale down → delete PVC → delete PV → create PV →
    /// create PVC → wait Bound → scale up; then the leftovers; then, by hand, the reclaim
    /// policies.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for m in &self.migrations {
            let pv = m.pv_name().to_owned();
            if m.old_reclaim_policy != "Retain" {
                steps.push(Step::RetainOldPv { pv: pv.clone() });
            }
            let old_claim = m
                .old_pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| Some((c.namespace.clone()?, c.name.clone()?)));
            if let Some((namespace, name)) = &old_claim {
                steps.push(Step::ScaleDownConsumers {
                    namespace: namespace.clone(),
                    pvc: name.clone(),
                });
                steps.push(Step::DeletePvc {
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            }
            steps.push(Step::DeletePv { name: pv.clone() });
            steps.push(Step::CreatePv { name: pv.clone() });
            if let Some((namespace, name)) = m.pvc_ref() {
                steps.push(Step::CreatePvc {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
                steps.push(Step::WaitBound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            if let Some((namespace, name)) = old_claim {
                steps.push(Step::ScaleUpConsumers {
                    namespace,
                    pvc: name,
                });
            }
        }
        steps.extend(self.leftovers.iter().cloned().map(Step::DeleteLeftover));
        for m in &self.migrations {
            if m.old_reclaim_policy != "Retain" {
                steps.push(Step::RestoreReclaimPolicy {
                    pv: m.pv_name().to_owned(),
                    policy: m.old_reclaim_policy.clone(),
                });
            }
        }
        steps
    }

    /// The dry-run output: the plan as `#` comments, then the new PVs and PVCs as a multi-doc
    /// YAML stream `kubectl apply -f` accepts.
    pub fn render(&self) -> Result<String, MigrateError> {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# gluster-csi-migrate plan: {} PersistentVolume(s) to migrate, {} that cannot be.",
            self.migrations.len(),
            self.failed.len()
        );
        for (pv, why) in &self.failed {
            let _ = writeln!(out, "# NOT MIGRATED {pv}: {why}");
        }
        for m in &self.migrations {
            for note in &m.notes {
                let _ = writeln!(out, "# note {}: {note}", m.pv_name());
            }
        }
        let _ = writeln!(out, "#\n# Steps, in order:");
        for (i, step) in self.steps().iter().enumerate() {
            let _ = writeln!(out, "# {:>3}. {step}", i + 1);
        }
        for m in &self.migrations {
            out.push_str("---\n");
            out.push_str(&to_yaml(&m.new_pv, m.pv_name())?);
            if let Some(pvc) = &m.new_pvc {
                out.push_str("---\n");
                out.push_str(&to_yaml(pvc, m.pv_name())?);
            }
        }
        Ok(out)
    }
}

/// Serialises `obj` (with its `apiVersion` and `kind`) as one YAML document.
pub fn to_yaml<T: serde::Serialize>(obj: &T, what: &str) -> Result<String, MigrateError> {
    serde_yaml_ng::to_string(obj).map_err(|e| MigrateError::Input {
        origin: what.to_owned(),
        message: format!("cannot write YAML: {e}"),
    })
}

/// The in-tree Endpoints/Services that belonged to migrated PVs only: dynamic ones (labelled
/// by the in-tree plugin, or named `glusterfs-dynamic-…`) that no PV left unmigrated still
/// names.
fn leftovers(inv: &Inventory, done: &[Migration]) -> Vec<Leftover> {
    let key = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        let gfs = pv.spec.as_ref()?.glusterfs.as_ref()?;
        Some((Inventory::endpoints_namespace(pv)?, gfs.endpoints.clone()))
    };
    let migrated: BTreeSet<String> = done.iter().map(|m| m.pv_name().to_owned()).collect();
    let still_used: BTreeSet<(String, String)> = inv
        .pvs
        .iter()
        .filter(|pv| super::is_intree(pv))
        .filter(|pv| !migrated.contains(pv.metadata.name.as_deref().unwrap_or_default()))
        .filter_map(key)
        .collect();
    let mut out = BTreeSet::new();
    for m in done {
        let Some((namespace, name)) = key(&m.old_pv) else {
            continue;
        };
        if still_used.contains(&(namespace.clone(), name.clone())) {
            continue;
        }
        let labelled = |labels: Option<&std::collections::BTreeMap<String, String>>| {
            labels.is_some_and(|l| l.contains_key(PROVISIONED_FOR_LABEL))
        };
        let dynamic_name = name.starts_with(DYNAMIC_EP_PREFIX);
        if let Some(ep) = inv.endpoints(&namespace, &name) {
            if dynamic_name || labelled(ep.metadata.labels.as_ref()) {
                out.insert(Leftover {
                    kind: "Endpoints",
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            }
        } else if dynamic_name && !inv.complete {
            // Not seen (file input without it): name it anyway, deleting is idempotent.
            out.insert(Leftover {
                kind: "Endpoints",
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
        if let Some(svc) = inv.service(&namespace, &name) {
            if dynamic_name || labelled(svc.metadata.labels.as_ref()) {
                out.insert(Leftover {
                    kind: "Service",
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            }
        } else if dynamic_name && !inv.complete {
            out.insert(Leftover {
                kind: "Service",
                namespace,
                name,
            });
        }
    }
    out.into_iter().collect()
}
