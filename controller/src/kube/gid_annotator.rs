//! `pv.beta.kubernetes.io/gid` on the PersistentVolumes this driver provisioned.
//!
//! The in-tree plugin wrote the gid it allocated into that annotation, and kubelet adds an
//! annotated PV's gid to the supplemental groups of every pod using it, so non-root pods can
//! write to the volume root (Heketi makes it `root:<gid>`, mode 2775). CSI provisioning has no
//! way to set PV annotations, so the controller adds it afterwards: it watches all PVs, and for
//! each one whose `spec.csi.driver` is ours and whose `volumeAttributes` carry a `gid`, adds the
//! annotation when it is absent.
//!
//! It runs on `kube::runtime::Controller`: a watch feeds a queue that holds each PV at most once
//! however often it changes (dedup), failed PVs come back after a delay that doubles per PV
//! (per-object backoff), and every PV is looked at again when it changes.
//!
//! It only ever adds. The merge patch carries the `metadata.resourceVersion` that was seen, so
//! the API server applies it only to that exact version (optimistic concurrency); when the PV
//! changed meanwhile (a user set the annotation, or another controller replica got there first)
//! the server answers 409 Conflict, the PV is read again and left alone if the annotation is
//! now there. Two replicas running side by side therefore never overwrite each other or a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{LazyClient, is_transient, status_code};

/// The annotation kubelet reads.
pub const GID_ANNOTATION: &str = "pv.beta.kubernetes.io/gid";
/// The `volumeAttributes` key the controller writes the gid under.
pub const GID_ATTRIBUTE: &str = "gid";
/// Most attempts to annotate one PV (each after a conflict) before it is queued again.
const MAX_ATTEMPTS: usize = 5;
/// First delay before a PV that could not be annotated is tried again; doubles per failure of
/// that PV up to [`RETRY_MAX`], and starts over once it succeeds.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest delay between attempts on one PV.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Delay between attempts to build the API client at start-up.
const CLIENT_RETRY: Duration = Duration::from_secs(30);
/// PVs reconciled at once.
const CONCURRENCY: u16 = 4;

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

/// The merge patch adding the annotation to exactly the object version `resource_version`:
/// the API server refuses it with 409 Conflict when the PV is at another version. It names
/// only the one annotation key, so every other annotation stays as it is.
pub fn add_patch(resource_version: &str, gid: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { GID_ANNOTATION: gid },
        }
    })
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
        let patch = Patch::Merge(add_patch(&rv, &gid));
        match api.patch(&name, &PatchParams::default(), &patch).await {
            Ok(_) => {
                tracing::info!(pv = %name, gid = %gid, "added {GID_ANNOTATION}");
                return Ok(Outcome::Added(gid));
            }
            // Another version than the one seen (409), or the PV went away (404): look again.
            Err(e) if matches!(status_code(&e), 404 | 409) => {
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

/// What the reconciler shares: the API, the driver name and the failures per PV.
struct Context {
    api: Api<PersistentVolume>,
    driver: String,
    /// PV name → failures in a row, for the per-PV backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// The delay before the next attempt on `name`, counting this failure.
    fn backoff(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(name.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        retry_delay(*n)
    }

    fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// The delay after the `failures`-th failure in a row on one PV: [`RETRY_FIRST`] doubled per
/// earlier failure, at most [`RETRY_MAX`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// Why a reconcile of one PV is to be retried.
#[derive(Debug, thiserror::Error)]
enum RetryError {
    /// The API failed in a way that may pass (unavailable, throttled, timed out).
    #[error(transparent)]
    Transient(AnnotateError),
    /// The PV kept changing under [`annotate`].
    #[error("PersistentVolume {0} kept changing")]
    KeptChanging(String),
}

async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, RetryError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    match annotate(&ctx.api, &ctx.driver, PersistentVolume::clone(&pv)).await {
        Ok(Outcome::GaveUp) => Err(RetryError::KeptChanging(name)),
        Ok(outcome) => {
            tracing::debug!(pv = %name, ?outcome, "gid annotation checked");
            ctx.succeeded(&name);
            Ok(Action::await_change())
        }
        Err(e) if e.is_transient() => Err(RetryError::Transient(e)),
        Err(e) => {
            // Refused for good (e.g. RBAC): the PV's next change or a restart tries again.
            tracing::warn!(pv = %name, error = %e, "annotating failed");
            ctx.succeeded(&name);
            Ok(Action::await_change())
        }
    }
}

fn error_policy(pv: Arc<PersistentVolume>, error: &RetryError, ctx: Arc<Context>) -> Action {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let delay = ctx.backoff(name);
    tracing::warn!(pv = %name, error = %error, retry_in = ?delay, "annotating failed; trying again later");
    Action::requeue(delay)
}

impl AnnotateError {
    fn is_transient(&self) -> bool {
        match self {
            AnnotateError::Api { source, .. } => is_transient(source),
        }
    }
}

/// Watches all PVs and annotates `driver`'s until the task is dropped or aborted. API failures
/// never end it: the watch restarts with back-off, and a PV that could not be annotated (API
/// unavailable, or it kept changing) is tried again after its own doubling delay.
pub async fn run(client: &LazyClient, driver: String) {
    let client = loop {
        match client.get().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "gid annotator cannot reach the Kubernetes API; retrying");
                tokio::time::sleep(CLIENT_RETRY).await;
            }
        }
    };
    let api: Api<PersistentVolume> = Api::all(client);
    tracing::info!(driver = %driver, "gid annotator watching PersistentVolumes");
    let ctx = Arc::new(Context {
        api: api.clone(),
        driver,
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            // Reconcile failures were logged by error_policy; what is left are watch failures,
            // which the controller retries with its own back-off.
            if let Err(e) = result
                && !matches!(e, controller::Error::ReconcilerFailed(..))
            {
                tracing::warn!(error = %e, "watching PersistentVolumes failed; retrying");
            }
        })
        .await;
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
        assert_eq!(
            add_patch("42", "2001"),
            json!({"metadata": {
                "resourceVersion": "42",
                "annotations": {"pv.beta.kubernetes.io/gid": "2001"},
            }})
        );
    }

    #[test]
    fn retry_delay_doubles_per_failure_up_to_the_cap() {
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
        assert_eq!(retry_delay(0), RETRY_FIRST);
    }
}
