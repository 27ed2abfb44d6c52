//! Performing a [`Plan`] through the Kubernetes API (`gluster-csi-migrate --apply`).
//!
//! Nothing is changed before every check passed: the plan has no failed PV, every PV and PVC
//! is still the in-tree object the plan was made from (or already the migrated one, when a
//! previous run was interrupted), and no pod uses a PVC — unless `--scale-consumers` lets the
//! tool scale the Deployments and StatefulSets owning those pods to zero and back. The old
//! objects are written to the backup directory before anything is deleted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Endpoints, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::plan::{Leftover, to_yaml};
use super::{MigrateError, Migration, Plan, is_intree};

/// How `--apply` behaves.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Scale the Deployments/StatefulSets whose pods use a PVC to zero, and back afterwards.
    /// Without it, a PVC in use stops the run before any change.
    pub scale_consumers: bool,
    /// Where the old objects are saved (created if missing).
    pub backup_dir: PathBuf,
    /// Longest wait for a deletion, for pods to stop, or for a PVC to bind.
    pub wait: Duration,
    /// Interval between checks while waiting.
    pub poll: Duration,
}

/// A workload scaled down, to scale back up.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Scaled {
    kind: &'static str,
    namespace: String,
    name: String,
    replicas: i32,
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> MigrateError {
    let what = what.into();
    move |source| MigrateError::Kube { what, source }
}

/// Where one migration stands on the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PvState {
    /// The in-tree PV is there: migrate it.
    InTree,
    /// The PV is gone (an earlier run deleted it): create the new one.
    Missing,
    /// The migrated PV is already there.
    Done,
}

/// Performs `plan`. `progress` is told about each step as it starts.
pub async fn apply(
    client: Client,
    plan: &Plan,
    opts: &ApplyOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), MigrateError> {
    if let Some((pv, why)) = plan.failed.first() {
        return Err(MigrateError::Refused(format!(
            "{} PersistentVolume(s) cannot be migrated (first: {pv}: {why}); fix them or name \
             only the PVs to migrate, nothing was changed",
            plan.failed.len()
        )));
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());

    // Checks first, for every PV, before changing anything.
    let mut states = Vec::new();
    let mut consumers: BTreeMap<String, Vec<Scaled>> = BTreeMap::new();
    for m in &plan.migrations {
        let state = pv_state(&pvs, m).await?;
        states.push(state);
        if state != PvState::InTree {
            continue;
        }
        if let Some((ns, name)) = old_claim(m) {
            let users = pods_using(&client, &ns, &name).await?;
            if users.is_empty() {
                continue;
            }
            let names: Vec<String> = users
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            if !opts.scale_consumers {
                return Err(MigrateError::Refused(format!(
                    "PVC {ns}/{name} is used by pod(s) {}; stop them first or pass \
                     --scale-consumers; nothing was changed",
                    names.join(", ")
                )));
            }
            let owners = owners_of(&client, &ns, &users).await?;
            consumers.insert(m.pv_name().to_owned(), owners);
        }
    }

    std::fs::create_dir_all(&opts.backup_dir).map_err(|source| MigrateError::Io {
        what: format!("creating {}", opts.backup_dir.display()),
        source,
    })?;

    for (m, state) in plan.migrations.iter().zip(states) {
        let pv_name = m.pv_name().to_owned();
        if state == PvState::Done {
            progress(format!("PV {pv_name} is already migrated"));
        }
        if state == PvState::InTree {
            backup(m, opts)?;
            progress(format!("PV {pv_name}: reclaim policy Retain"));
            pvs.patch(
                &pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
            )
            .await
            .map_err(kube_err(format!("setting Retain on PV {pv_name}")))?;
            let scaled = consumers.remove(&pv_name).unwrap_or_default();
            if let Some((ns, name)) = old_claim(m) {
                if !scaled.is_empty() {
                    progress(format!("PVC {ns}/{name}: scaling down its workloads"));
                    for s in &scaled {
                        scale(&client, s, 0).await?;
                    }
                    wait_until(opts, &format!("pods using PVC {ns}/{name} to stop"), || {
                        let client = client.clone();
                        let (ns, name) = (ns.clone(), name.clone());
                        async move { Ok(pods_using(&client, &ns, &name).await?.is_empty()) }
                    })
                    .await?;
                }
                progress(format!(
                    "PVC {ns}/{name}: deleting the object (not the data)"
                ));
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                delete_and_wait(&pvcs, &name, opts, &format!("PVC {ns}/{name}")).await?;
            }
            progress(format!(
                "PV {pv_name}: deleting the in-tree object (not the data)"
            ));
            delete_and_wait(&pvs, &pv_name, opts, &format!("PV {pv_name}")).await?;
            finish(&client, &pvs, m, opts, progress).await?;
            if !scaled.is_empty() {
                progress(format!("PV {pv_name}: scaling its workloads back up"));
                for s in &scaled {
                    scale(&client, s, s.replicas).await?;
                }
            }
        } else {
            finish(&client, &pvs, m, opts, progress).await?;
        }
    }

    for l in &plan.leftovers {
        progress(format!(
            "deleting leftover {} {}/{}",
            l.kind, l.namespace, l.name
        ));
        delete_leftover(&client, l).await?;
    }
    Ok(())
}

/// Creates the new PV (if missing) and PVC (if missing) and waits for the PVC to bind.
async fn finish(
    client: &Client,
    pvs: &Api<PersistentVolume>,
    m: &Migration,
    opts: &ApplyOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), MigrateError> {
    let pv_name = m.pv_name();
    if pvs
        .get_opt(pv_name)
        .await
        .map_err(kube_err(format!("reading PV {pv_name}")))?
        .is_none()
    {
        progress(format!("PV {pv_name}: creating the CSI PV"));
        pvs.create(&PostParams::default(), &m.new_pv)
            .await
            .map_err(kube_err(format!("creating PV {pv_name}")))?;
    }
    let Some(pvc) = &m.new_pvc else {
        return Ok(());
    };
    let (ns, name) = m.pvc_ref().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    match api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading PVC {ns}/{name}")))?
    {
        Some(existing)
            if existing
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                == Some(pv_name) => {}
        Some(_) => {
            return Err(MigrateError::Refused(format!(
                "PVC {ns}/{name} exists and is not bound to PV {pv_name}; delete it or restore \
                 from the backup"
            )));
        }
        None => {
            progress(format!(
                "PVC {ns}/{name}: creating it, bound to PV {pv_name}"
            ));
            api.create(&PostParams::default(), pvc)
                .await
                .map_err(kube_err(format!("creating PVC {ns}/{name}")))?;
        }
    }
    progress(format!("PVC {ns}/{name}: waiting for Bound"));
    wait_until(opts, &format!("PVC {ns}/{name} to be Bound"), || {
        let api = api.clone();
        let name = name.to_owned();
        async move {
            let pvc = api
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading PVC {name}")))?;
            Ok(pvc.and_then(|p| p.status).and_then(|s| s.phase).as_deref() == Some("Bound"))
        }
    })
    .await
}

async fn pv_state(pvs: &Api<PersistentVolume>, m: &Migration) -> Result<PvState, MigrateError> {
    let name = m.pv_name();
    let current = pvs
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading PV {name}")))?;
    let Some(current) = current else {
        return Ok(PvState::Missing);
    };
    if is_intree(&current) {
        let same_volume = current.spec.as_ref().and_then(|s| s.glusterfs.as_ref())
            == m.old_pv.spec.as_ref().and_then(|s| s.glusterfs.as_ref());
        if !same_volume {
            return Err(MigrateError::Refused(format!(
                "PV {name} on the cluster is not the one the plan was made from (another \
                 Gluster volume); nothing was changed"
            )));
        }
        return Ok(PvState::InTree);
    }
    let csi = current.spec.as_ref().and_then(|s| s.csi.as_ref());
    let want = m.new_pv.spec.as_ref().and_then(|s| s.csi.as_ref());
    match (csi, want) {
        (Some(have), Some(want))
            if have.driver == want.driver && have.volume_handle == want.volume_handle =>
        {
            Ok(PvState::Done)
        }
        _ => Err(MigrateError::Refused(format!(
            "PV {name} exists and is neither the in-tree PV nor its migrated form; nothing was \
             changed"
        ))),
    }
}

fn old_claim(m: &Migration) -> Option<(String, String)> {
    super::inventory::claim_key(&m.old_pv)
}

/// Pods in `namespace` with a volume from PVC `claim` that are not finished.
async fn pods_using(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Vec<Pod>, MigrateError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&Default::default())
        .await
        .map_err(kube_err(format!("listing pods in {namespace}")))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| {
            let done = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            let uses = p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
            });
            uses && !done
        })
        .collect())
}

/// The Deployments and StatefulSets owning `pods`; any other owner (or none) stops the run.
async fn owners_of(
    client: &Client,
    namespace: &str,
    pods: &[Pod],
) -> Result<Vec<Scaled>, MigrateError> {
    let mut out: Vec<Scaled> = Vec::new();
    for pod in pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .cloned();
        let (kind, name) = match owner {
            Some(o) if o.kind == "ReplicaSet" => {
                let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
                let rs = rs.get(&o.name).await.map_err(kube_err(format!(
                    "reading ReplicaSet {namespace}/{}",
                    o.name
                )))?;
                match rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                {
                    Some(d) => ("Deployment", d.name.clone()),
                    None => ("ReplicaSet", o.name.clone()),
                }
            }
            Some(o) if o.kind == "StatefulSet" => ("StatefulSet", o.name.clone()),
            Some(o) => {
                return Err(MigrateError::Refused(format!(
                    "pod {namespace}/{pod_name} is owned by {} {}, which --scale-consumers does \
                     not scale; stop it by hand; nothing was changed",
                    o.kind, o.name
                )));
            }
            None => {
                return Err(MigrateError::Refused(format!(
                    "pod {namespace}/{pod_name} has no controller to scale; delete it by hand; \
                     nothing was changed"
                )));
            }
        };
        if kind == "ReplicaSet" {
            return Err(MigrateError::Refused(format!(
                "pod {namespace}/{pod_name} belongs to ReplicaSet {name} without a Deployment; \
                 scale it by hand; nothing was changed"
            )));
        }
        if out.iter().any(|s| s.kind == kind && s.name == name) {
            continue;
        }
        let replicas = replicas(client, kind, namespace, &name).await?;
        out.push(Scaled {
            kind,
            namespace: namespace.to_owned(),
            name,
            replicas,
        });
    }
    Ok(out)
}

async fn replicas(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<i32, MigrateError> {
    let what = format!("reading {kind} {namespace}/{name}");
    let n = if kind == "Deployment" {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        api.get(name)
            .await
            .map_err(kube_err(what))?
            .spec
            .and_then(|s| s.replicas)
    } else {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        api.get(name)
            .await
            .map_err(kube_err(what))?
            .spec
            .and_then(|s| s.replicas)
    };
    Ok(n.unwrap_or(1))
}

async fn scale(client: &Client, s: &Scaled, replicas: i32) -> Result<(), MigrateError> {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let what = format!(
        "scaling {} {}/{} to {replicas}",
        s.kind, s.namespace, s.name
    );
    if s.kind == "Deployment" {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
        api.patch(&s.name, &PatchParams::default(), &patch)
            .await
            .map_err(kube_err(what))?;
    } else {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &s.namespace);
        api.patch(&s.name, &PatchParams::default(), &patch)
            .await
            .map_err(kube_err(what))?;
    }
    Ok(())
}

/// Deletes `name` (absent is fine) and waits until it is gone (finalizers done).
async fn delete_and_wait<K>(
    api: &Api<K>,
    name: &str,
    opts: &ApplyOptions,
    what: &str,
) -> Result<(), MigrateError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if gluster_csi_controller::kube::status_code(&e) == 404 => {}
        Err(e) => return Err(kube_err(format!("deleting {what}"))(e)),
    }
    wait_until(opts, &format!("{what} to be deleted"), || {
        let api = api.clone();
        let name = name.to_owned();
        let what = what.to_owned();
        async move {
            Ok(api
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading {what}")))?
                .is_none())
        }
    })
    .await
}

async fn delete_leftover(client: &Client, l: &Leftover) -> Result<(), MigrateError> {
    let what = format!("deleting {} {}/{}", l.kind, l.namespace, l.name);
    let res = if l.kind == "Service" {
        let api: Api<Service> = Api::namespaced(client.clone(), &l.namespace);
        api.delete(&l.name, &DeleteParams::default())
            .await
            .map(|_| ())
    } else {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &l.namespace);
        api.delete(&l.name, &DeleteParams::default())
            .await
            .map(|_| ())
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if gluster_csi_controller::kube::status_code(&e) == 404 => Ok(()),
        Err(e) => Err(kube_err(what)(e)),
    }
}

/// Polls `check` every `opts.poll` until it says true, for at most `opts.wait`.
async fn wait_until<F, Fut>(
    opts: &ApplyOptions,
    what: &str,
    mut check: F,
) -> Result<(), MigrateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, MigrateError>>,
{
    let deadline = tokio::time::Instant::now() + opts.wait;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MigrateError::Refused(format!(
                "gave up waiting {:?} for {what}; run again to resume (the backup directory {} \
                 holds the old objects)",
                opts.wait,
                opts.backup_dir.display()
            )));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// Writes the old PV (and PVC) of `m` to `<backup_dir>/<pv>.yaml`.
fn backup(m: &Migration, opts: &ApplyOptions) -> Result<(), MigrateError> {
    let mut text = to_yaml(&m.old_pv, m.pv_name())?;
    if let Some(pvc) = &m.old_pvc {
        text.push_str("---\n");
        text.push_str(&to_yaml(pvc, m.pv_name())?);
    }
    let path = opts.backup_dir.join(format!("{}.yaml", m.pv_name()));
    std::fs::write(&path, text).map_err(|source| MigrateError::Io {
        what: format!("writing the backup {}", path.display()),
        source,
    })
}
