//! A fake Kubernetes API server, and said to be one: the tests of the controller's Kubernetes
//! side that use it run in a second, with no cluster, and can force what a real API server
//! cannot be made to do on cue (two writers reading the same version, a chosen error on one
//! path). They talk to it at the boundary the real server is reached through by the `kube`
//! client (HTTP + the API's JSON). The same code runs against the real API server of
//! `../shared/k8s` in `k8s_e2e` (the gid annotation, in-tree Secrets, the controller's restarts).
//!
//! It keeps objects in memory by their API path and serves what the code under test uses:
//! GET of one object, list, watch (newline-delimited events from a resourceVersion), POST,
//! DELETE, and PATCH as JSON patch (RFC 6902, with `test` operations, applied atomically: a
//! failed `test` is 422 Invalid like the real server) or merge patch (one naming a
//! `metadata.resourceVersion` other than the stored one is 409 Conflict, as on the real
//! server). Every write bumps a global resourceVersion. Two behaviours of real controllers are
//! imitated and nothing more: deleting is immediate (no finalizers run), and a PVC created with
//! `spec.volumeName` naming an existing PV that is free or reserved for it becomes Bound at
//! once (the PV controller's pre-bound case). Errors are `Status` objects with the real reasons.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

struct Store {
    /// Live watchers; sent to under the store lock, so events go out in resourceVersion order.
    events: broadcast::Sender<Event>,
    /// collection path → name → object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    rv: u64,
    history: Vec<Event>,
    /// Every request, as "METHOD path?query", and "CREATED path/name" after a POST.
    requests: Vec<String>,
    /// JSON/merge patches applied, per object path.
    patches_applied: BTreeMap<String, usize>,
    /// Patches refused because a `test` failed, per object path.
    patches_rejected: BTreeMap<String, usize>,
    /// Paths answered with a fixed error: path → (code, reason).
    failures: BTreeMap<String, (u16, String)>,
}

/// The fake server. Dropping it stops serving.
pub struct FakeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    store: Mutex<Store>,
    /// When set, a patch waits until this many have arrived (or 10 s passed) before any
    /// is applied, so that concurrent writers are known to have read the same version.
    patch_gate: Mutex<Option<Arc<tokio::sync::Barrier>>>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

/// `Kind` of the objects of a collection, from its resource name.
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "persistentvolumes" => "PersistentVolume",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "secrets" => "Secret",
        "endpoints" => "Endpoints",
        "services" => "Service",
        "pods" => "Pod",
        "storageclasses" => "StorageClass",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "replicasets" => "ReplicaSet",
        _ => "Unknown",
    }
}

/// Splits an API path into (collection path, resource, name).
fn split(path: &str) -> Option<(String, String, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix_len = match *segs.first()? {
        "api" => 2,  // api/v1
        "apis" => 3, // apis/group/version
        _ => return None,
    };
    let rest = segs.get(prefix_len..)?;
    let (scope_len, resource_at) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (3, 2)
    } else {
        (1, 0)
    };
    let resource = (*rest.get(resource_at)?).to_owned();
    let collection = format!("/{}", segs.get(..prefix_len + scope_len)?.join("/"));
    let name = match rest.len() - scope_len {
        0 => None,
        1 => Some(rest.get(scope_len)?.to_string()),
        _ => return None, // subresources are not served
    };
    Some((collection, resource, name))
}

fn namespace_of(collection: &str) -> Option<String> {
    let segs: Vec<&str> = collection.split('/').collect();
    let i = segs.iter().position(|s| *s == "namespaces")?;
    segs.get(i + 1).map(|s| (*s).to_owned())
}

impl FakeApi {
    /// Starts serving on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            store: Mutex::new(Store {
                events,
                objects: BTreeMap::new(),
                rv: 0,
                history: Vec::new(),
                requests: Vec::new(),
                patches_applied: BTreeMap::new(),
                patches_rejected: BTreeMap::new(),
                failures: BTreeMap::new(),
            }),
            patch_gate: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube` client for this server.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        config.default_retry = false;
        kube::Client::try_from(config).expect("client for the fake API")
    }

    /// A kubeconfig file content pointing at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Stores `object` under `collection` (e.g. `/api/v1/persistentvolumes`), as if created.
    pub fn put(&self, collection: &str, object: Value) {
        let mut store = self.inner.store.lock().expect("store");
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut object = object;
        let rv = record(&mut store, collection, "ADDED", object.clone());
        stamp(&mut object, collection, rv);
        store
            .objects
            .entry(collection.to_owned())
            .or_default()
            .insert(name, object);
    }

    /// Removes `collection`/`name` as if a controller deleted it.
    pub fn remove(&self, collection: &str, name: &str) -> Option<Value> {
        let mut store = self.inner.store.lock().expect("store");
        let obj = store.objects.get_mut(collection)?.remove(name)?;
        record(&mut store, collection, "DELETED", obj.clone());
        Some(obj)
    }

    /// The object at `collection`/`name`.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        let store = self.inner.store.lock().expect("store");
        store.objects.get(collection)?.get(name).cloned()
    }

    /// Names of the objects in `collection`.
    pub fn names(&self, collection: &str) -> Vec<String> {
        let store = self.inner.store.lock().expect("store");
        store
            .objects
            .get(collection)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Patches applied to the object at `path`.
    pub fn patches_applied(&self, path: &str) -> usize {
        let store = self.inner.store.lock().expect("store");
        store.patches_applied.get(path).copied().unwrap_or(0)
    }

    /// Patches to `path` refused because a `test` failed.
    pub fn patches_rejected(&self, path: &str) -> usize {
        let store = self.inner.store.lock().expect("store");
        store.patches_rejected.get(path).copied().unwrap_or(0)
    }

    /// Every request so far, as "METHOD path?query", plus "CREATED path/name" for each
    /// object a POST created.
    pub fn requests(&self) -> Vec<String> {
        self.inner.store.lock().expect("store").requests.clone()
    }

    /// Answers requests to exactly `path` with an error.
    pub fn fail(&self, path: &str, code: u16, reason: &str) {
        let mut store = self.inner.store.lock().expect("store");
        store
            .failures
            .insert(path.to_owned(), (code, reason.to_owned()));
    }

    /// Answers requests to `path` normally again after [`FakeApi::fail`].
    pub fn recover(&self, path: &str) {
        self.inner
            .store
            .lock()
            .expect("store")
            .failures
            .remove(path);
    }

    /// Makes patches wait for each other in groups of `n` (see [`Inner::patch_gate`]).
    pub fn gate_patches(&self, n: usize) {
        *self.inner.patch_gate.lock().expect("gate") = Some(Arc::new(tokio::sync::Barrier::new(n)));
    }

    /// Waits (up to 60 s) until `check` holds on the store; a failure names `what`.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        for _ in 0..600 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the fake API server never saw: {what}");
    }
}

/// Server-side fields of a stored object.
fn stamp(object: &mut Value, collection: &str, rv: u64) {
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", rv));
    }
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    }
    if let Some(ns) = namespace_of(collection) {
        meta["namespace"] = json!(ns);
    }
}

fn record(store: &mut Store, collection: &str, kind: &'static str, object: Value) -> u64 {
    store.rv += 1;
    let rv = store.rv;
    let mut object = object;
    if kind != "DELETED" {
        stamp(&mut object, collection, rv);
    }
    let event = Event {
        rv,
        collection: collection.to_owned(),
        kind,
        object,
    };
    store.history.push(event.clone());
    let _ = store.events.send(event);
    rv
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    {
        let mut store = inner.store.lock().expect("store");
        store.requests.push(format!(
            "{method} {path}{}",
            uri.query().map(|q| format!("?{q}")).unwrap_or_default()
        ));
        if let Some((code, reason)) = store.failures.get(&path).cloned() {
            return status(code, &reason, &format!("{reason} (injected by the fake)"));
        }
    }
    let Some((collection, resource, name)) = split(&path) else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let kind = kind_of(&resource);
    match (method, name) {
        (Method::GET, None) if query.get("watch").map(String::as_str) == Some("true") => {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout: u64 = query
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(290);
            watch(inner, collection, from, Duration::from_secs(timeout))
        }
        (Method::GET, None) => {
            let store = inner.store.lock().expect("store");
            let items: Vec<Value> = store
                .objects
                .get(&collection)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            axum::Json(json!({
                "kind": format!("{kind}List"),
                "apiVersion": "v1",
                "metadata": {"resourceVersion": store.rv.to_string()},
                "items": items,
            }))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            let store = inner.store.lock().expect("store");
            match store.objects.get(&collection).and_then(|m| m.get(&name)) {
                Some(obj) => axum::Json(obj.clone()).into_response(),
                None => not_found(&resource, &name),
            }
        }
        (Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut store = inner.store.lock().expect("store");
            if store
                .objects
                .get(&collection)
                .is_some_and(|m| m.contains_key(&name))
            {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{resource} \"{name}\" already exists"),
                );
            }
            store.requests.push(format!("CREATED {collection}/{name}"));
            let rv = record(&mut store, &collection, "ADDED", obj.clone());
            stamp(&mut obj, &collection, rv);
            store
                .objects
                .entry(collection.clone())
                .or_default()
                .insert(name.clone(), obj);
            if kind == "PersistentVolumeClaim" {
                bind(&mut store, &collection, &name);
            }
            let stored = store.objects[&collection][&name].clone();
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        (Method::DELETE, Some(name)) => {
            let mut store = inner.store.lock().expect("store");
            let Some(obj) = store
                .objects
                .get_mut(&collection)
                .and_then(|m| m.remove(&name))
            else {
                return not_found(&resource, &name);
            };
            record(&mut store, &collection, "DELETED", obj.clone());
            axum::Json(obj).into_response()
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let is_json_patch = content_type.starts_with("application/json-patch+json");
            let gate = inner.patch_gate.lock().expect("gate").clone();
            if let Some(gate) = gate {
                let _ = tokio::time::timeout(Duration::from_secs(10), gate.wait()).await;
            }
            let object_path = format!("{collection}/{name}");
            let mut store = inner.store.lock().expect("store");
            let Some(mut obj) = store
                .objects
                .get(&collection)
                .and_then(|m| m.get(&name))
                .cloned()
            else {
                return not_found(&resource, &name);
            };
            if is_json_patch {
                let ops: json_patch::Patch = match serde_json::from_value(patch) {
                    Ok(p) => p,
                    Err(e) => return status(400, "BadRequest", &format!("bad JSON patch: {e}")),
                };
                if let Err(e) = json_patch::patch(&mut obj, &ops) {
                    *store.patches_rejected.entry(object_path).or_default() += 1;
                    return status(
                        422,
                        "Invalid",
                        &format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    );
                }
            } else {
                // A merge patch naming a resourceVersion applies only to that version, like the
                // real server's optimistic concurrency (409 Conflict otherwise).
                let wanted = &patch["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != obj["metadata"]["resourceVersion"] {
                    *store.patches_rejected.entry(object_path).or_default() += 1;
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {resource} \"{name}\": the object \
                             has been modified; please apply your changes to the latest version \
                             and try again"
                        ),
                    );
                }
                json_patch::merge(&mut obj, &patch);
            }
            *store.patches_applied.entry(object_path).or_default() += 1;
            let rv = record(&mut store, &collection, "MODIFIED", obj.clone());
            stamp(&mut obj, &collection, rv);
            store
                .objects
                .entry(collection.clone())
                .or_default()
                .insert(name, obj.clone());
            axum::Json(obj).into_response()
        }
        (m, _) => status(
            405,
            "MethodNotAllowed",
            &format!("{m} is not served by the fake"),
        ),
    }
}

fn not_found(resource: &str, name: &str) -> Response {
    status(404, "NotFound", &format!("{resource} \"{name}\" not found"))
}

/// The PV controller's pre-bound case: a new PVC naming a PV that is free or reserved for it
/// binds at once.
fn bind(store: &mut Store, pvc_collection: &str, pvc_name: &str) {
    let pv_collection = "/api/v1/persistentvolumes";
    let Some(pvc) = store
        .objects
        .get(pvc_collection)
        .and_then(|m| m.get(pvc_name))
        .cloned()
    else {
        return;
    };
    let Some(pv_name) = pvc["spec"]["volumeName"].as_str().map(str::to_owned) else {
        return;
    };
    let Some(mut pv) = store
        .objects
        .get(pv_collection)
        .and_then(|m| m.get(&pv_name))
        .cloned()
    else {
        return;
    };
    let ns = namespace_of(pvc_collection).unwrap_or_default();
    let claim = &pv["spec"]["claimRef"];
    let free = claim.is_null()
        || (claim["name"].as_str() == Some(pvc_name) && claim["namespace"].as_str() == Some(&ns));
    if !free {
        return;
    }
    pv["spec"]["claimRef"] = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": ns,
        "name": pvc_name,
        "uid": pvc["metadata"]["uid"].clone(),
    });
    pv["status"] = json!({"phase": "Bound"});
    let mut pvc = pvc;
    pvc["status"] = json!({
        "phase": "Bound",
        "accessModes": pvc["spec"]["accessModes"].clone(),
        "capacity": pv["spec"]["capacity"].clone(),
    });
    for (collection, name, mut obj) in [
        (pv_collection.to_owned(), pv_name, pv),
        (pvc_collection.to_owned(), pvc_name.to_owned(), pvc),
    ] {
        let rv = record(store, &collection, "MODIFIED", obj.clone());
        stamp(&mut obj, &collection, rv);
        store
            .objects
            .entry(collection)
            .or_default()
            .insert(name, obj);
    }
}

/// A watch response: events of `collection` after `from`, then live ones, until `timeout`.
fn watch(inner: Arc<Inner>, collection: String, from: u64, timeout: Duration) -> Response {
    let (mut live, backlog): (_, Vec<Event>) = {
        let store = inner.store.lock().expect("store");
        let live = store.events.subscribe();
        let backlog = store
            .history
            .iter()
            .filter(|e| e.rv > from && e.collection == collection)
            .cloned()
            .collect();
        (live, backlog)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |e: &Event| {
            let mut s = json!({"type": e.kind, "object": e.object}).to_string();
            s.push('\n');
            Ok(Bytes::from(s))
        };
        let mut last = from;
        for e in &backlog {
            last = e.rv;
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                got = live.recv() => match got {
                    Ok(e) if e.collection == collection && e.rv > last => {
                        last = e.rv;
                        if tx.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(500, "InternalError", "cannot build the watch response"))
}
