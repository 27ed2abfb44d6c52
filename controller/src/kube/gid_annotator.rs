//! `pv.beta.kubernetes.io/gid` on the PersistentVolumes this driver provisioned.
//!
//! The in-tree plugin wrote the gid it allocated into that annotation, and kubelet adds an
//! annotated PV's gid to the supplemental groups of every pod using it, so non-root pods can
//! write to the volume root (Heketi makes it `root:<gid>`, mode 2775). CSI provisioning has no
//! way to set PV annotations, so the controller adds it afterwards: it watches all PVs, and for
//! each one whose `spec.csi.driver` is ours and whose `volumeAttributes` carry a `gid`, adds the
//! annotation when it is absent.
//!
//! It only ever adds. The JSON patch first tests `metadata.resourceVersion`, so it applies only
//! to the exact object that was seen without the annotation; when the PV changed meanwhile (a
//! user set the annotation, or another controller replica got there first) the API server
//! refuses the patch, the PV is read again and left alone if the annotation is now there. Two
//! replicas running side by side therefore never overwrite each other or a user.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use super::{LazyClient, is_transient, status_code};

/// The annotation kubelet reads.
pub const GID_ANNOTATION: &str = "pv.beta.kubernetes.io/gid";
/// The `volumeAttributes` key the controller writes the gid under.
pub const GID_ATTRIBUTE: &str = "gid";
/// Most attempts to annotate one PV before waiting for its next change.
const MAX_ATTEMPTS: usize = 5;
/// Interval between attempts on PVs that could not be annotated.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

/// Command-line switch of the annotator, flattened into the controller's arguments.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GidAnnotatorArgs {
    /// Add the pv.beta.kubernetes.io/gid annotation to this driver's PVs that were created with
    /// a gid, so that kubelet gives pods that group (needs `list`, `watch` and `patch` on
    /// persistentvolumes). Never changes an existing annotation; safe with several replicas.
    #[arg(long, env = "ANNOTATE_GID")]
    pub annotate_gid: bool,
}

/// What [`annotate`] did with one PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The annotation was added with this gid.
    Added(String),
    /// The PV already has the annotation (set by a user, by the in-tree plugin or by another
    /// replica); it was left as it is.
    AlreadySet,
    /// The PV is not one to annotate (another driver, or no gid).
    NotOurs,
    /// The PV no longer exists.
    Gone,
    /// The PV kept changing under us; the next change event tries again.
    GaveUp,
}

/// Why a PV could not be annotated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnotateError {
    /// The Kubernetes API refused or failed.
    #[error("annotating PersistentVolume {pv}: {source}")]
    Api {
        /// PV name.
        pv: String,
        /// The client's error.
        source: kube::Error,
    },
}

/// The gid to write on `pv`, when it is one of `driver`'s PVs with a gid attribute and no
/// annotation yet. A gid that is not a positive number is not copied.
pub fn wanted_gid(pv: &PersistentVolume, driver: &str) -> Option<String> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    if csi.driver != driver {
        return None;
    }
    let gid = csi.volume_attributes.as_ref()?.get(GID_ATTRIBUTE)?.trim();
    if has_annotation(pv) {
        return None;
    }
    match gid.parse::<u32>() {
        Ok(n) if n > 0 => Some(n.to_string()),
        _ => {
            tracing::warn!(
                pv = pv.metadata.name.as_deref().unwrap_or_default(),
                gid,
                "volumeAttributes gid is not a positive number; not annotating"
            );
            None
        }
    }
}

fn has_annotation(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(GID_ANNOTATION))
}

/// The JSON patch adding the annotation to exactly the object version `resource_version`.
pub fn add_patch(
    resource_version: &str,
    has_annotations: bool,
    gid: &str,
) -> Result<json_patch::Patch, serde_json::Error> {
    let mut ops = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": resource_version,
    })];
    if !has_annotations {
        // Safe: the test above pins a version without any annotations.
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    ops.push(json!({
        "op": "add",
        // `/` in the key is `~1` in a JSON pointer.
        "path": format!("/metadata/annotations/{}", GID_ANNOTATION.replace('/', "~1")),
        "value": gid,
    }));
    serde_json::from_value(serde_json::Value::Array(ops))
}

/// Adds the gid annotation to `pv` if it is one of `driver`'s and lacks it. `pv` is the
/// version last seen; a newer version on the server is read again before deciding.
pub async fn annotate(
    api: &Api<PersistentVolume>,
    driver: &str,
    pv: PersistentVolume,
) -> Result<Outcome, AnnotateError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let err = |source| AnnotateError::Api {
        pv: name.clone(),
        source,
    };
    let mut current = pv;
    for _ in 0..MAX_ATTEMPTS {
        let Some(gid) = wanted_gid(&current, driver) else {
            return Ok(if has_annotation(&current) {
                Outcome::AlreadySet
            } else {
                Outcome::NotOurs
            });
        };
        let Some(rv) = current.metadata.resource_version.clone() else {
            // Without a version there is nothing to pin the patch to: read it.
            match api.get_opt(&name).await.map_err(err)? {
                Some(fresh) if fresh.metadata.resource_version.is_some() => {
                    current = fresh;
                    continue;
                }
                Some(_) => return Ok(Outcome::GaveUp),
                None => return Ok(Outcome::Gone),
            }
        };
        let patch = add_patch(&rv, current.metadata.annotations.is_some(), &gid)
            .map_err(|e| err(kube::Error::SerdeError(e)))?;
        match api
            .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(pv = %name, gid = %gid, "added {GID_ANNOTATION}");
                return Ok(Outcome::Added(gid));
            }
            // The test of resourceVersion failed (422), a write conflicted (409), or the PV went
            // away (404): look again.
            Err(e) if matches!(status_code(&e), 404 | 409 | 422) => {
                tracing::debug!(pv = %name, status = status_code(&e), "PV changed; reading it again");
                match api.get_opt(&name).await.map_err(err)? {
                    Some(fresh) => current = fresh,
                    None => return Ok(Outcome::Gone),
                }
            }
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Outcome::GaveUp)
}

/// Watches all PVs and annotates `driver`'s until the task is dropped or aborted. API failures
/// are logged and retried with back-off; they never end the loop. A PV that could not be
/// annotated (API unavailable, or it kept changing) is tried again every [`RETRY_EVERY`].
pub async fn run(client: &LazyClient, driver: String) {
    let client = loop {
        match client.get().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "gid annotator cannot reach the Kubernetes API; retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    };
    let api: Api<PersistentVolume> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut retry: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(RETRY_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(driver = %driver, "gid annotator watching PersistentVolumes");
    loop {
        tokio::select! {
            item = events.next() => match item {
                None => break,
                Some(Ok(pv)) => {
                    if wanted_gid(&pv, &driver).is_some() {
                        let name = pv.metadata.name.clone().unwrap_or_default();
                        retry.remove(&name);
                        if !handle(&api, &driver, pv).await {
                            retry.insert(name);
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching PersistentVolumes failed; retrying");
                }
            },
            _ = ticker.tick(), if !retry.is_empty() => {
                for name in std::mem::take(&mut retry) {
                    let ok = match api.get_opt(&name).await {
                        Ok(Some(pv)) => handle(&api, &driver, pv).await,
                        Ok(None) => true,
                        Err(e) => {
                            tracing::warn!(pv = %name, error = %e, "reading PV failed");
                            false
                        }
                    };
                    if !ok {
                        retry.insert(name);
                    }
                }
            }
        }
    }
}

/// Annotates one PV; false when it should be tried again later.
async fn handle(api: &Api<PersistentVolume>, driver: &str, pv: PersistentVolume) -> bool {
    let name = pv.metadata.name.clone().unwrap_or_default();
    match annotate(api, driver, pv).await {
        Ok(Outcome::GaveUp) => {
            tracing::warn!(pv = %name, "PV kept changing; trying again later");
            false
        }
        Ok(outcome) => {
            tracing::debug!(pv = %name, ?outcome, "gid annotation checked");
            true
        }
        Err(AnnotateError::Api { source, .. }) if is_transient(&source) => {
            tracing::warn!(pv = %name, error = %source, "annotating failed; trying again later");
            false
        }
        Err(e) => {
            // Refused for good (e.g. RBAC): a change to the PV or a restart tries again.
            tracing::warn!(pv = %name, error = %e, "annotating failed");
            true
        }
    }
}

/// Starts the annotator on the current runtime. Abort the handle to stop it.
pub fn spawn(client: LazyClient, driver: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run(&client, driver).await })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolumeSpec};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn pv(driver: &str, gid: Option<&str>, annotation: Option<&str>) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                resource_version: Some("7".into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([(GID_ANNOTATION.to_owned(), a.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: driver.into(),
                    volume_handle: "1:0123456789abcdef0123456789abcdef".into(),
                    volume_attributes: gid
                        .map(|g| BTreeMap::from([(GID_ATTRIBUTE.to_owned(), g.to_owned())])),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn which_pvs_want_the_annotation() {
        let d = "gluster.heketi.csi";
        let cases = [
            (pv(d, Some("2001"), None), Some("2001")),
            (pv(d, Some(" 2001 "), None), Some("2001")),
            (pv(d, Some("2001"), Some("2001")), None),
            (pv(d, Some("2001"), Some("5555")), None),
            (pv("other.csi", Some("2001"), None), None),
            (pv(d, None, None), None),
            (pv(d, Some("0"), None), None),
            (pv(d, Some("-3"), None), None),
            (pv(d, Some("abc"), None), None),
        ];
        for (i, (p, want)) in cases.iter().enumerate() {
            assert_eq!(wanted_gid(p, d).as_deref(), *want, "case {i}");
        }
        let mut no_spec = pv(d, Some("1"), None);
        no_spec.spec = None;
        assert_eq!(wanted_gid(&no_spec, d), None);
    }

    #[test]
    fn patch_pins_the_version_and_only_adds() {
        let p = add_patch("42", false, "2001").expect("patch");
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(
            v,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/pv.beta.kubernetes.io~1gid", "value": "2001"},
            ])
        );
        let v = serde_json::to_value(add_patch("42", true, "2001").expect("patch")).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }
}
