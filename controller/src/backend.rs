//! The Heketi backends the controller talks to: the configured ones by name (`--heketi-url`
//! and the backends file), a client per (backend, user, key), and per backend the volume
//! index, the gid reservations and the bound on concurrent operations.
//!
//! Credentials come from the request (a CSI secret, or an in-tree class's own), else from the
//! backend's configuration (`--heketi-key-file`, or its Secret read when needed). Nothing is
//! remembered from one call for another: what a call can do does not depend on what came
//! before it or on a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use csi_proto::v1::TopologyRequirement;
use gluster_csi_runtime::topology::serves;

use crate::backends_file::url_key;
use crate::config::{BackendAuth, BackendSpec, Config};
use crate::error::{Error, Result};
use crate::gid;
use crate::health::HeketiHealth;
use crate::index::VolumeIndex;
use crate::kube::secrets::SecretReader;
use crate::metrics::Metrics;
use crate::params::{Credentials, DEFAULT_USER};
use crate::volume_id::BackendRef;

/// Per-backend state shared by every client of that Heketi.
pub struct BackendState {
    /// The backend's volumes.
    pub index: Arc<VolumeIndex>,
    /// Gids given to creates still running.
    pub gids: gid::Reservations,
    permits: Arc<Semaphore>,
    /// The ids of the backend's clusters, once read and not empty (see [`Target::clusters`]).
    clusters: Mutex<Option<Arc<BTreeSet<String>>>>,
}

/// A resolved backend: where, how to authenticate, and its shared state.
#[derive(Clone)]
pub struct Target {
    /// The reference written into volume ids: the backend's name, or a URL of no backend.
    pub reference: BackendRef,
    /// The client (with the credentials of this request).
    pub client: heketi_client::Client,
    /// Shared per-URL state.
    pub state: Arc<BackendState>,
    /// Where Heketi calls are recorded.
    pub metrics: Arc<Metrics>,
    /// Time between full reloads of the index (`--index-reload-seconds`).
    pub index_reload: Duration,
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

/// How often the backends file is read again for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Where a resolved backend is, as the controller tracks it.
enum Place<'a> {
    /// A configured backend.
    Known(&'a BackendSpec),
    /// A URL named by a class or an old id that no configured backend has; only used with the
    /// request's own credentials.
    Url(String),
}

/// Every backend the controller knows, and the state of each one used.
pub struct Backends {
    /// The configured backends; replaced whole by [`Backends::replace`] (the backends file
    /// changed), while the state and clients of each backend are kept.
    catalog: RwLock<Arc<Catalog>>,
    request_timeout: Duration,
    operation_timeout: Duration,
    retry_budget: Duration,
    max_inflight: usize,
    index_reload: Duration,
    states: Mutex<HashMap<String, Arc<BackendState>>>,
    clients: Mutex<HashMap<ClientKey, heketi_client::Client>>,
    /// Reads the Secrets of backends that name one.
    secrets: Arc<SecretReader>,
    /// Backends already warned about for sending a token over plain HTTP.
    warned_plain: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
    /// Every URL resolved is added to its checks.
    health: Arc<HeketiHealth>,
}

/// The backends configured at one time.
struct Catalog {
    specs: BTreeMap<String, BackendSpec>,
    /// [`url_key`] of every URL and alias → backend name.
    by_url: HashMap<String, String>,
    default: Option<String>,
}

impl Catalog {
    fn new(backends: &[BackendSpec], default: Option<String>) -> Self {
        let specs: BTreeMap<String, BackendSpec> = backends
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect();
        let mut by_url = HashMap::new();
        for b in specs.values() {
            for u in std::iter::once(&b.url).chain(&b.aliases) {
                by_url.insert(url_key(u), b.name.clone());
            }
        }
        Self {
            specs,
            by_url,
            default,
        }
    }
}

impl Backends {
    /// The backends of `config`, recording Heketi calls in `metrics`, adding each URL used to
    /// the `health` checks and reading backends' Secrets with `secrets`.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        health: Arc<HeketiHealth>,
        secrets: Arc<SecretReader>,
    ) -> Self {
        Self {
            catalog: RwLock::new(Arc::new(Catalog::new(
                &config.backends,
                config.default_backend.clone(),
            ))),
            metrics,
            health,
            secrets,
            request_timeout: config.request_timeout,
            operation_timeout: config.operation_timeout,
            retry_budget: config.retry_budget,
            max_inflight: config.max_inflight.max(1),
            index_reload: config.index_reload,
            states: Mutex::default(),
            clients: Mutex::default(),
            warned_plain: Mutex::default(),
        }
    }

    fn cat(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the configured backends (the backends file was read again). Calls in flight
    /// finish with the backends they started with; each backend's operation limit and volume
    /// index carry over while its name and URL stay the same.
    pub fn replace(&self, backends: &[BackendSpec], default: Option<String>) {
        let next = Arc::new(Catalog::new(backends, default));
        let old = std::mem::replace(
            &mut *self.catalog.write().unwrap_or_else(PoisonError::into_inner),
            Arc::clone(&next),
        );
        // A backend that moved to another URL, or is gone, starts afresh (its volume index
        // and limit belonged to the old Heketi).
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, spec) in &old.specs {
            let same = next
                .specs
                .get(name)
                .is_some_and(|n| url_key(&n.url) == url_key(&spec.url));
            if !same {
                states.remove(&format!("name:{name}"));
            }
        }
    }

    /// The configured backends' names, for logs.
    pub fn names(&self) -> Vec<String> {
        self.cat().specs.keys().cloned().collect()
    }

    /// Whether a default backend is configured.
    pub fn has_default(&self) -> bool {
        self.cat().default.is_some()
    }

    /// The name of the configured backend that has `url` as its URL or an alias.
    pub fn name_of_url(&self, url: &str) -> Option<String> {
        self.cat().by_url.get(&url_key(url)).cloned()
    }

    /// The canonical reference of `r` when it is a configured backend: `Named`; a URL of no
    /// backend stays a URL; `None` for a name that is not configured or a missing default.
    pub fn canonical(&self, r: &BackendRef) -> Option<BackendRef> {
        let cat = self.cat();
        match r {
            BackendRef::Default => cat.default.clone().map(BackendRef::Named),
            BackendRef::Named(n) => cat
                .specs
                .contains_key(n)
                .then(|| BackendRef::Named(n.clone())),
            BackendRef::Url(u) => Some(match self.name_of_url(u) {
                Some(n) => BackendRef::Named(n),
                None => BackendRef::Url(u.trim_end_matches('/').to_owned()),
            }),
        }
    }

    /// The backend where a class creates volumes (`resturl`, else the default backend), with
    /// the class's credentials `creds` or else the backend's own.
    ///
    /// A `resturl` of no configured backend is used only when `own_credentials` (the request
    /// brought a CSI secret, or, for GetCapacity, the class its own key): the calls that come
    /// later without a StorageClass (DeleteVolume, ControllerExpandVolume) have nothing else
    /// to authenticate with, so such a class is refused up front.
    ///
    /// A class without `resturl` follows `topology` (the request's accessibility requirements)
    /// when backends declare where they are: see [`Backends::placed_for`].
    pub async fn for_class(
        &self,
        resturl: Option<&str>,
        topology: Option<&TopologyRequirement>,
        creds: Option<Credentials>,
        own_credentials: bool,
        no_default: impl FnOnce() -> Error,
    ) -> Result<Target> {
        let Some(url) = resturl else {
            if let Some(name) = self.placed_for(topology)? {
                return self.known(&name, creds).await;
            }
            let name = self.cat().default.clone().ok_or_else(no_default)?;
            return self.known(&name, creds).await;
        };
        if let Some(name) = self.name_of_url(url) {
            return self.known(&name, creds).await;
        }
        match creds {
            Some(c) if own_credentials => self.target(Place::Url(url.to_owned()), c),
            _ => Err(Error::invalid(format!(
                "parameter resturl {url} is not the URL (or an alias) of any backend in the \
                 controller's backends file, and the StorageClass gives no CSI secret: volumes \
                 made this way could not be deleted or expanded later, when no StorageClass \
                 parameters come with the call. Add the Heketi to the backends file \
                 (--backends-file, with the Secret holding its key), or give the StorageClass \
                 csi.storage.k8s.io/provisioner-secret-name/-namespace and \
                 csi.storage.k8s.io/controller-expand-secret-name/-namespace"
            ))),
        }
    }

    /// The placed backend (one with a `topology`) to create in for `requirement`, as the CSI
    /// spec orders it: the first `preferred` segment some placed backend serves, else the first
    /// `requisite` one (backends in name order within a segment). `Ok(None)`: no requirement,
    /// no placed backend, or nothing placed fits but the requirement allows any place (only
    /// preferred segments, or a default backend reachable from everywhere): the class's usual
    /// backend. RESOURCE_EXHAUSTED when requisite segments are given and neither a placed
    /// backend nor an unplaced default serves any of them.
    pub fn placed_for(&self, requirement: Option<&TopologyRequirement>) -> Result<Option<String>> {
        let Some(req) = requirement else {
            return Ok(None);
        };
        let cat = self.cat();
        let placed: Vec<&BackendSpec> = cat
            .specs
            .values()
            .filter(|b| !b.topology.is_empty())
            .collect();
        if placed.is_empty() {
            return Ok(None);
        }
        for segment in req.preferred.iter().chain(&req.requisite) {
            if let Some(b) = placed
                .iter()
                .find(|b| serves(&b.topology, &segment.segments))
            {
                return Ok(Some(b.name.clone()));
            }
        }
        let default_everywhere = cat
            .default
            .as_deref()
            .and_then(|d| cat.specs.get(d))
            .is_some_and(|d| d.topology.is_empty());
        if req.requisite.is_empty() || default_everywhere {
            return Ok(None);
        }
        let wanted: Vec<String> = req
            .requisite
            .iter()
            .map(|t| {
                t.segments
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let have: Vec<String> = placed
            .iter()
            .map(|b| {
                let at: Vec<String> = b.topology.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} at {}", b.name, at.join(","))
            })
            .collect();
        Err(Error::ResourceExhausted(format!(
            "no backend serves the requisite topology [{}]: the backends file places {}; add a \
             backend with that topology, or let the claim's pod run where a backend is \
             (StorageClass allowedTopologies, node --topology)",
            wanted.join("; "),
            have.join("; ")
        )))
    }

    /// Where the volumes of backend `r` are reachable from: its `topology` as one CSI segment,
    /// or none (everywhere) for an unplaced backend or a URL of no configured backend.
    pub fn accessible_from(&self, r: &BackendRef) -> Vec<csi_proto::v1::Topology> {
        let name = match self.canonical(r) {
            Some(BackendRef::Named(n)) => n,
            _ => return Vec::new(),
        };
        match self.cat().specs.get(&name) {
            Some(b) if !b.topology.is_empty() => vec![csi_proto::v1::Topology {
                segments: b.topology.clone().into_iter().collect(),
            }],
            _ => Vec::new(),
        }
    }

    /// The backend holding a volume whose id names `r`, with the request's credentials
    /// `creds` or else the backend's own.
    ///
    /// Refused before anything is sent, as INVALID_ARGUMENT: an id naming a backend that is
    /// not configured, and an id carrying a URL of no configured backend when the request
    /// brings no credentials (the controller never sends its own credentials to an address
    /// taken from an id). INVALID_ARGUMENT rather than NOT_FOUND because the volume may well
    /// exist: NOT_FOUND would tell the CO it is gone (and DeleteVolume must not answer OK and
    /// let the PV go while the volume lives on); the fix is in the controller's configuration,
    /// which the message names.
    pub async fn for_volume(
        &self,
        r: &BackendRef,
        creds: Option<Credentials>,
        no_default: impl FnOnce() -> Error,
    ) -> Result<Target> {
        match r {
            BackendRef::Default => {
                let name = self.cat().default.clone().ok_or_else(no_default)?;
                self.known(&name, creds).await
            }
            BackendRef::Named(n) => {
                if !self.cat().specs.contains_key(n) {
                    return Err(Error::invalid(format!(
                        "the volume id names Heketi backend {n:?}, which is not configured; \
                         add a backend named {n} (with its URL and Secret) to the \
                         controller's backends file (--backends-file)"
                    )));
                }
                self.known(n, creds).await
            }
            BackendRef::Url(u) => {
                if let Some(name) = self.name_of_url(u) {
                    return self.known(&name, creds).await;
                }
                match creds {
                    Some(c) => self.target(Place::Url(u.trim_end_matches('/').to_owned()), c),
                    None => Err(Error::invalid(format!(
                        "the volume id names Heketi {u}, which is neither the URL nor an alias \
                         of a backend in the controller's backends file, and the call brings \
                         no CSI secret; add {u} to the aliases of the backend that holds the \
                         volume now (--backends-file), or give the StorageClass's CSI secrets"
                    ))),
                }
            }
        }
    }

    async fn known(&self, name: &str, creds: Option<Credentials>) -> Result<Target> {
        let cat = self.cat();
        let spec = cat
            .specs
            .get(name)
            .ok_or_else(|| Error::Internal(format!("backend {name} is not configured")))?;
        let creds = match creds {
            Some(c) => c,
            None => match &spec.auth {
                BackendAuth::None => Credentials {
                    user: DEFAULT_USER.into(),
                    key: None,
                },
                BackendAuth::Key { user, key } => Credentials {
                    user: user.clone(),
                    key: Some(key.clone()),
                },
                BackendAuth::Secret { namespace, name } => {
                    self.secrets
                        .backend_credentials(&spec.name, namespace, name)
                        .await?
                }
            },
        };
        self.target(Place::Known(spec), creds)
    }

    fn target(&self, place: Place<'_>, creds: Credentials) -> Result<Target> {
        let (state_key, reference, url, ca) = match place {
            Place::Known(spec) => (
                format!("name:{}", spec.name),
                BackendRef::Named(spec.name.clone()),
                spec.url.clone(),
                spec.ca.as_deref(),
            ),
            Place::Url(url) => (
                format!("url:{}", url_key(&url)),
                BackendRef::Url(url.clone()),
                url,
                None,
            ),
        };
        if creds.key.is_some() && url_key(&url).starts_with("http://") {
            let mut warned = self.warned_plain.lock().unwrap_or_else(|p| p.into_inner());
            if warned.insert(state_key.clone()) {
                tracing::warn!(
                    backend = %reference,
                    url = %url,
                    "Heketi is reached over plain http:// with authentication on: its tokens \
                     can be read on the network; serve Heketi over https:// and give its CA"
                );
            }
        }
        let client = self.client(&state_key, &url, ca, creds)?;
        self.health.watch_with_ca(&url, ca);
        let state = {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(states.entry(state_key).or_insert_with(|| {
                Arc::new(BackendState {
                    index: Arc::default(),
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
            index_reload: self.index_reload,
            busy_wait: self.request_timeout,
        })
    }

    fn client(
        &self,
        state_key: &str,
        url: &str,
        ca: Option<&[u8]>,
        creds: Credentials,
    ) -> Result<heketi_client::Client> {
        let key_hash = creds
            .key
            .as_ref()
            .map(|k| hex::encode(Sha256::digest(k.expose_secret().as_bytes())));
        let cache_key = (state_key.to_owned(), creds.user.clone(), key_hash);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&cache_key) {
            return Ok(c.clone());
        }
        let client = crate::backends_file::builder(
            url,
            ca,
            Some(&creds),
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
    use crate::kube::LazyClient;

    fn spec(name: &str, url: &str, aliases: &[&str]) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            url: url.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ca: None,
            auth: BackendAuth::Key {
                user: "admin".into(),
                key: SecretString::from("k"),
            },
            topology: Default::default(),
        }
    }

    fn config(default: Option<&str>) -> Config {
        let mut backends = vec![spec("east", "http://east:8080", &["http://old-east:8080"])];
        if let Some(u) = default {
            backends.push(spec("default", u, &[]));
        }
        Config {
            endpoint: "unix:///tmp/x.sock".parse().expect("endpoint"),
            driver_name: "gluster.heketi.csi".into(),
            metrics_address: None,
            default_backend: default.map(|_| "default".to_owned()),
            backends,
            request_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(1),
            retry_budget: Duration::from_secs(1),
            max_inflight: 2,
            index_reload: crate::index::FULL_RELOAD,
            backends_file: None,
        }
    }

    impl Backends {
        fn new_for_test(c: &Config) -> Self {
            let metrics = Arc::new(Metrics::new());
            let health = Arc::new(HeketiHealth::new(Arc::clone(&metrics)));
            // A Kubernetes API that does not exist: no test here reads a Secret.
            let secrets = Arc::new(SecretReader::new(LazyClient::from_config(
                kube::Config::new("http://127.0.0.1:9".parse().expect("uri")),
            )));
            Self::new(c, metrics, health, secrets)
        }
    }

    fn no_default() -> Error {
        Error::invalid("no default")
    }

    fn creds(k: &str) -> Option<Credentials> {
        Some(Credentials {
            user: "admin".into(),
            key: Some(SecretString::from(k.to_owned())),
        })
    }

    fn placed(name: &str, zone: Option<&str>) -> BackendSpec {
        let mut b = spec(name, &format!("http://{name}:8080"), &[]);
        if let Some(z) = zone {
            b.topology = gluster_csi_runtime::topology::parse_segment(&[format!("zone={z}")], "t")
                .expect("segment");
        }
        b
    }

    fn zones(names: &[&str]) -> Vec<csi_proto::v1::Topology> {
        names
            .iter()
            .map(|z| csi_proto::v1::Topology {
                segments: [(
                    "topology.gluster.heketi.csi/zone".to_owned(),
                    (*z).to_owned(),
                )]
                .into_iter()
                .collect(),
            })
            .collect()
    }

    fn want(requisite: &[&str], preferred: &[&str]) -> TopologyRequirement {
        TopologyRequirement {
            requisite: zones(requisite),
            preferred: zones(preferred),
        }
    }

    #[test]
    fn topology_picks_preferred_then_requisite_and_refuses_what_no_backend_serves() {
        let mut c = config(None);
        c.backends = vec![placed("east", Some("east")), placed("west", Some("west"))];
        c.default_backend = Some("east".into());
        let b = Backends::new_for_test(&c);
        let pick = |r: &TopologyRequirement| b.placed_for(Some(r)).map_err(|e| e.to_string());
        assert_eq!(
            pick(&want(&["east", "west"], &["west", "east"])),
            Ok(Some("west".into()))
        );
        assert_eq!(pick(&want(&["east", "west"], &[])), Ok(Some("east".into())));
        assert_eq!(
            pick(&want(&["north", "west"], &["north"])),
            Ok(Some("west".into()))
        );
        // Only a preferred segment nobody serves: any place will do (the class's backend).
        assert_eq!(pick(&want(&[], &["north"])), Ok(None));
        let e = pick(&want(&["north"], &[])).expect_err("nothing serves north");
        assert!(
            e.contains("north") && e.contains("east at") && e.contains("west at"),
            "{e}"
        );
        assert!(matches!(
            b.placed_for(Some(&want(&["north"], &[]))),
            Err(Error::ResourceExhausted(_))
        ));
        assert_eq!(b.placed_for(None).map_err(|e| e.to_string()), Ok(None));
        let r = BackendRef::Named("west".into());
        assert_eq!(b.accessible_from(&r), zones(&["west"]));

        // A default reachable from everywhere takes what no placed backend serves.
        let mut c = config(Some("http://h:8080"));
        c.backends.push(placed("west", Some("west")));
        let b = Backends::new_for_test(&c);
        assert_eq!(
            b.placed_for(Some(&want(&["north"], &[])))
                .map_err(|e| e.to_string()),
            Ok(None)
        );
        assert!(b.accessible_from(&BackendRef::Default).is_empty());

        // No backend placed: topology plays no part.
        let b = Backends::new_for_test(&config(Some("http://h:8080")));
        assert_eq!(
            b.placed_for(Some(&want(&["north"], &[])))
                .map_err(|e| e.to_string()),
            Ok(None)
        );
    }

    #[tokio::test]
    async fn urls_and_aliases_resolve_to_names() {
        let b = Backends::new_for_test(&config(Some("http://h:8080")));
        let named = |n: &str| Some(BackendRef::Named(n.into()));
        assert_eq!(
            b.canonical(&BackendRef::Url("http://h:8080/".into())),
            named("default")
        );
        assert_eq!(b.canonical(&BackendRef::Default), named("default"));
        assert_eq!(
            b.canonical(&BackendRef::Url("HTTP://Old-East:8080".into())),
            named("east")
        );
        assert_eq!(b.canonical(&BackendRef::Named("nosuch".into())), None);
        assert_eq!(
            b.canonical(&BackendRef::Url("http://other:8080".into())),
            Some(BackendRef::Url("http://other:8080".into()))
        );
        let t = b
            .for_volume(
                &BackendRef::Url("http://old-east:8080".into()),
                None,
                no_default,
            )
            .await
            .expect("alias");
        assert_eq!(t.reference, BackendRef::Named("east".into()));
        assert_eq!(
            t.url(),
            "http://east:8080",
            "the alias leads to today's URL"
        );
        let t = b
            .for_class(None, None, None, false, no_default)
            .await
            .expect("default");
        assert_eq!(t.reference, BackendRef::Named("default".into()));
    }

    #[tokio::test]
    async fn unknown_backends_are_refused_unless_the_request_brings_credentials() {
        let b = Backends::new_for_test(&config(None));
        let code = |r: Result<Target>| r.err().map(|e| e.code());
        let unknown_url = BackendRef::Url("http://attacker:80".into());
        assert_eq!(
            code(
                b.for_volume(&BackendRef::Named("nosuch".into()), creds("x"), no_default)
                    .await
            ),
            Some(tonic::Code::InvalidArgument)
        );
        let e = b
            .for_volume(&unknown_url, None, no_default)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("aliases"), "{e}");
        assert!(
            b.health.watched().is_empty(),
            "nothing about it was even watched"
        );
        let t = b
            .for_volume(&unknown_url, creds("own"), no_default)
            .await
            .expect("own creds");
        assert_eq!(t.reference, unknown_url);

        let e = b
            .for_class(
                Some("http://elsewhere:8080"),
                None,
                creds("class key"),
                false,
                no_default,
            )
            .await
            .err()
            .expect("no CSI secret");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("controller-expand-secret"), "{e}");
        assert!(
            b.for_class(
                Some("http://elsewhere:8080"),
                None,
                creds("csi"),
                true,
                no_default
            )
            .await
            .is_ok()
        );
        let e = b
            .for_class(None, None, None, false, no_default)
            .await
            .err()
            .expect("no default");
        assert_eq!(e.to_string(), "no default");
    }

    #[tokio::test]
    async fn clients_are_shared_per_credentials_and_state_per_backend() {
        let b = Backends::new_for_test(&config(None));
        let by_url = BackendRef::Url("http://east:8080".into());
        let by_alias = BackendRef::Url("http://old-east:8080".into());
        let t1 = b
            .for_volume(&by_url, creds("one"), no_default)
            .await
            .expect("t1");
        let t2 = b
            .for_volume(&by_alias, creds("two"), no_default)
            .await
            .expect("t2");
        let t3 = b
            .for_volume(&BackendRef::Named("east".into()), None, no_default)
            .await
            .expect("t3");
        assert!(Arc::ptr_eq(&t1.state, &t2.state));
        assert!(Arc::ptr_eq(&t1.state, &t3.state));
        assert_eq!(
            b.health.watched(),
            BTreeSet::from(["http://east:8080".to_owned()]),
            "a backend used is watched once"
        );
        assert_eq!(b.clients.lock().map(|c| c.len()).unwrap_or(0), 3);
    }

    #[tokio::test]
    async fn permits_bound_concurrency_and_fail_fast_when_busy() {
        let b = Backends::new_for_test(&config(Some("http://h:1")));
        let t = b
            .for_volume(&BackendRef::Default, None, no_default)
            .await
            .expect("t");
        let p1 = t.permit().await.expect("1");
        let _p2 = t.permit().await.expect("2");
        let e = t.permit().await.expect_err("busy");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        drop(p1);
        assert!(t.permit().await.is_ok());
    }
}
