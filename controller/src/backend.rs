//! The Heketi backends the controller talks to: a client per (URL, user, key), and per URL the
//! volume index, the gid reservations and the bound on concurrent operations.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Backend, Config};
use crate::error::{Error, Result};
use crate::gid;
use crate::health::HeketiHealth;
use crate::index::VolumeIndex;
use crate::metrics::Metrics;
use crate::params::{Credentials, DEFAULT_USER};
use crate::volume_id::BackendRef;

/// Per-URL state shared by every client of that Heketi.
pub struct BackendState {
    /// The backend's volumes.
    pub index: VolumeIndex,
    /// Gids given to creates still running.
    pub gids: gid::Reservations,
    permits: Arc<Semaphore>,
    /// The ids of the backend's clusters, once read and not empty (see [`Target::clusters`]).
    clusters: Mutex<Option<Arc<BTreeSet<String>>>>,
}

/// A resolved backend: where, how to authenticate, and its shared state.
#[derive(Clone)]
pub struct Target {
    /// The canonical reference written into volume ids.
    pub reference: BackendRef,
    /// The client (with the credentials of this request).
    pub client: heketi_client::Client,
    /// Shared per-URL state.
    pub state: Arc<BackendState>,
    /// Where Heketi calls are recorded.
    pub metrics: Arc<Metrics>,
    busy_wait: Duration,
}

impl Target {
    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        self.client.base_url()
    }

    /// Runs a Heketi call of this backend, recording it in the metrics.
    pub async fn heketi<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = heketi_client::Result<T>>,
    ) -> heketi_client::Result<T> {
        self.metrics.heketi(operation, call).await
    }

    /// The ids (lowercase) of the backend's clusters: what tells one Heketi from another. Read
    /// with `GET /clusters` the first time, or when `fresh`; an answer with clusters is kept
    /// for the life of the process, an empty one is not (clusters may be added).
    pub async fn clusters(&self, fresh: bool) -> heketi_client::Result<Arc<BTreeSet<String>>> {
        if !fresh {
            let kept = self
                .state
                .clusters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(kept) = kept {
                return Ok(kept);
            }
        }
        let listed = self
            .heketi("cluster_list", self.client.cluster_list())
            .await?;
        let clusters: Arc<BTreeSet<String>> = Arc::new(
            listed
                .clusters
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        );
        if !clusters.is_empty() {
            *self
                .state
                .clusters
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&clusters));
        }
        Ok(clusters)
    }

    /// Waits for a free slot to run a mutating operation; `Busy` (UNAVAILABLE) when none frees
    /// up in time, before anything was sent.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        let sem = Arc::clone(&self.state.permits);
        match tokio::time::timeout(self.busy_wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::Internal("backend semaphore closed".into())),
            Err(_) => Err(Error::Busy(format!(
                "too many operations are running against Heketi {}; retry later",
                self.url()
            ))),
        }
    }
}

type ClientKey = (String, String, Option<String>);

/// Every backend the controller has used.
pub struct Backends {
    default: Option<Backend>,
    request_timeout: Duration,
    operation_timeout: Duration,
    retry_budget: Duration,
    max_inflight: usize,
    states: Mutex<HashMap<String, Arc<BackendState>>>,
    clients: Mutex<HashMap<ClientKey, heketi_client::Client>>,
    /// Credentials last given for a URL, for calls that carry none (ControllerGetVolume,
    /// ListVolumes, GetCapacity).
    remembered: Mutex<HashMap<String, Credentials>>,
    metrics: Arc<Metrics>,
    /// Every URL resolved is added to its checks.
    health: Arc<HeketiHealth>,
}

impl Backends {
    /// The backends of `config`, recording Heketi calls in `metrics` and adding each URL used
    /// to the `health` checks.
    pub fn new(config: &Config, metrics: Arc<Metrics>, health: Arc<HeketiHealth>) -> Self {
        Self {
            metrics,
            health,
            default: config.default_backend.clone(),
            request_timeout: config.request_timeout,
            operation_timeout: config.operation_timeout,
            retry_budget: config.retry_budget,
            max_inflight: config.max_inflight.max(1),
            states: Mutex::default(),
            clients: Mutex::default(),
            remembered: Mutex::default(),
        }
    }

    /// Whether a default backend is configured.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// `Url(u)` where `u` is the default backend's URL reads as `Default`, so one volume has one
    /// id whichever way its class named the backend.
    pub fn canonical(&self, r: &BackendRef) -> BackendRef {
        match (r, &self.default) {
            (BackendRef::Url(u), Some(d)) if u.trim_end_matches('/') == d.url => {
                BackendRef::Default
            }
            _ => r.clone(),
        }
    }

    /// A client for `r`: with `creds` when given, else the default backend's own credentials,
    /// else the ones last given for that URL, else without a token.
    ///
    /// `no_default` is the error when `r` is the default backend and none is configured.
    pub fn resolve(
        &self,
        r: &BackendRef,
        creds: Option<Credentials>,
        no_default: impl FnOnce() -> Error,
    ) -> Result<Target> {
        let reference = self.canonical(r);
        let (url, creds) = match &reference {
            BackendRef::Default => {
                let d = self.default.as_ref().ok_or_else(no_default)?;
                let creds = creds.unwrap_or_else(|| Credentials {
                    user: d.user.clone(),
                    key: d.key.clone(),
                });
                (d.url.clone(), creds)
            }
            BackendRef::Url(u) => {
                let url = u.trim_end_matches('/').to_owned();
                let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
                let creds = match creds {
                    Some(c) => {
                        remembered.insert(url.clone(), c.clone());
                        c
                    }
                    None => remembered.get(&url).cloned().unwrap_or(Credentials {
                        user: DEFAULT_USER.into(),
                        key: None,
                    }),
                };
                (url, creds)
            }
        };
        let client = self.client(&url, creds)?;
        self.health.watch(&url);
        let state = {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(states.entry(url).or_insert_with(|| {
                Arc::new(BackendState {
                    index: VolumeIndex::default(),
                    gids: gid::Reservations::default(),
                    permits: Arc::new(Semaphore::new(self.max_inflight)),
                    clusters: Mutex::default(),
                })
            }))
        };
        Ok(Target {
            reference,
            client,
            state,
            metrics: Arc::clone(&self.metrics),
            busy_wait: self.request_timeout,
        })
    }

    fn client(&self, url: &str, creds: Credentials) -> Result<heketi_client::Client> {
        let key_hash = creds
            .key
            .as_ref()
            .map(|k| hex::encode(Sha256::digest(k.expose_secret().as_bytes())));
        let cache_key = (url.to_owned(), creds.user.clone(), key_hash);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&cache_key) {
            return Ok(c.clone());
        }
        let backend = Backend {
            url: url.to_owned(),
            user: creds.user,
            key: creds.key,
        };
        let client = backend
            .builder(
                self.request_timeout,
                self.operation_timeout,
                self.retry_budget,
            )
            .on_retry(self.metrics.heketi_retry_observer())
            .build()
            .map_err(|e| Error::heketi(format!("Heketi URL {url}"), e))?;
        clients.insert(cache_key, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn config(default: Option<&str>) -> Config {
        Config {
            endpoint: "unix:///tmp/x.sock".parse().expect("endpoint"),
            driver_name: "gluster.heketi.csi".into(),
            metrics_address: None,
            default_backend: default.map(|u| Backend {
                url: u.into(),
                user: "admin".into(),
                key: Some(SecretString::from("k")),
            }),
            request_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(1),
            retry_budget: Duration::from_secs(1),
            max_inflight: 2,
        }
    }

    impl Backends {
        fn new_for_test(c: &Config) -> Self {
            let metrics = Arc::new(Metrics::new());
            let health = Arc::new(HeketiHealth::new(Arc::clone(&metrics)));
            Self::new(c, metrics, health)
        }
    }

    fn no_default() -> Error {
        Error::invalid("no default")
    }

    #[test]
    fn default_url_is_canonicalised() {
        let b = Backends::new_for_test(&config(Some("http://h:8080")));
        assert_eq!(
            b.canonical(&BackendRef::Url("http://h:8080/".into())),
            BackendRef::Default
        );
        assert_eq!(
            b.canonical(&BackendRef::Url("http://other:8080".into())),
            BackendRef::Url("http://other:8080".into())
        );
        let t = b
            .resolve(&BackendRef::Url("http://h:8080".into()), None, no_default)
            .expect("resolves");
        assert_eq!(t.reference, BackendRef::Default);
        assert_eq!(t.url(), "http://h:8080");
    }

    #[test]
    fn missing_default_uses_the_callers_error() {
        let b = Backends::new_for_test(&config(None));
        let e = b
            .resolve(&BackendRef::Default, None, no_default)
            .err()
            .expect("no default");
        assert_eq!(e.to_string(), "no default");
    }

    #[test]
    fn clients_are_shared_per_credentials_and_state_per_url() {
        let b = Backends::new_for_test(&config(None));
        let url = BackendRef::Url("http://a:1".into());
        let creds = |k: &str| {
            Some(Credentials {
                user: "admin".into(),
                key: Some(SecretString::from(k.to_owned())),
            })
        };
        let t1 = b.resolve(&url, creds("one"), no_default).expect("t1");
        let t2 = b.resolve(&url, creds("two"), no_default).expect("t2");
        let t3 = b.resolve(&url, None, no_default).expect("t3");
        assert!(Arc::ptr_eq(&t1.state, &t2.state));
        assert!(Arc::ptr_eq(&t1.state, &t3.state));
        assert_eq!(
            b.health.watched(),
            std::collections::BTreeSet::from(["http://a:1".to_owned()]),
            "a URL used is watched once"
        );
        assert_eq!(
            b.clients.lock().map(|c| c.len()).unwrap_or(0),
            2,
            "t3 reuses the last credentials"
        );
    }

    #[tokio::test]
    async fn permits_bound_concurrency_and_fail_fast_when_busy() {
        let b = Backends::new_for_test(&config(Some("http://h:1")));
        let t = b
            .resolve(&BackendRef::Default, None, no_default)
            .expect("t");
        let p1 = t.permit().await.expect("1");
        let _p2 = t.permit().await.expect("2");
        let e = t.permit().await.expect_err("busy");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        drop(p1);
        assert!(t.permit().await.is_ok());
    }
}
