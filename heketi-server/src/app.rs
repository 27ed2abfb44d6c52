//! The application: state, Gluster, brick host, queue — and the topology operations
//! (clusters, nodes, devices). Volume operations are in [`crate::volumes`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use heketi_client::types::{
    ClusterInfoResponse, ClusterListResponse, DeviceInfoResponse, EntryState, NodeInfoResponse,
};

use crate::config::{AuthKeys, Config};
use crate::error::{ApiError, Error};
use crate::gluster::Gluster;
use crate::host::NodeWork;
use crate::ids::new_id;
use crate::model::{Cluster, Device, Lifecycle, Node};
use crate::queue::{OpResult, Queue, Slot};
use crate::store::{Store, StoreError};
use crate::validate::{ClusterFlagsBody, DeviceAddBody, NodeAddBody, StateBody, is_hex};

/// How long a newly probed peer may take to show as connected.
const PEER_CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Everything a request handler needs.
pub struct App {
    /// Persistent state.
    pub store: Store,
    /// The gluster CLI.
    pub gluster: Gluster,
    /// Brick-directory work on the nodes.
    pub bricks: NodeWork,
    /// Asynchronous operations.
    pub queue: Arc<Queue>,
    /// JWT secrets (`None`: authentication disabled).
    pub auth: Option<AuthKeys>,
    /// State directory (temporary mounts live under `<state-dir>/mnt`).
    pub state_dir: PathBuf,
    /// Volumes with an operation running in this process (count per volume id). A volume
    /// that is not `Online` and not in here was left behind (a failed rollback, a crash) and
    /// is finished or rolled back by [`crate::reconcile`].
    active: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Marks a volume as having an operation running until dropped.
pub struct ActiveGuard {
    app: Arc<App>,
    id: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut m = self.app.active_map();
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// An accepted asynchronous operation: reply 202 with `Location: /queue/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted(pub String);

impl App {
    /// Builds the application from a validated configuration; loads the state file.
    pub fn new(config: Config) -> Result<Self, StoreError> {
        let store = Store::open(&config.state_dir)?;
        let exec = Arc::new(config.executor);
        Ok(Self {
            store,
            gluster: Gluster::new(
                Arc::clone(&exec),
                config.gluster_cmd,
                config.gluster_timeout,
            ),
            bricks: NodeWork::new(exec, config.gluster_timeout),
            queue: Queue::new(config.max_inflight),
            auth: config.auth,
            state_dir: config.state_dir,
            active: Default::default(),
        })
    }

    /// Tells the gluster CLI handle which nodes it may run on (after the topology changed).
    pub async fn sync_gluster_nodes(&self) {
        let nodes = self.store.read(crate::model::State::gluster_nodes).await;
        self.gluster.set_nodes(nodes);
    }

    fn active_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks volume `id` as having an operation running (until the guard is dropped).
    pub fn mark_active(self: &Arc<Self>, id: &str) -> ActiveGuard {
        *self.active_map().entry(id.to_owned()).or_insert(0) += 1;
        ActiveGuard {
            app: Arc::clone(self),
            id: id.to_owned(),
        }
    }

    /// Whether volume `id` has an operation running in this process.
    pub fn is_active(&self, id: &str) -> bool {
        self.active_map().contains_key(id)
    }

    /// Runs `op` in the background under queue entry it returns; `slot` (if any) is held
    /// until the operation ends.
    pub fn spawn<F>(self: &Arc<Self>, slot: Option<Slot>, op: F) -> Accepted
    where
        F: Future<Output = OpResult> + Send + 'static,
    {
        let id = self.queue.start();
        let queue = Arc::clone(&self.queue);
        let qid = id.clone();
        tokio::spawn(async move {
            let result = op.await;
            // Free the slot before the result can be read, so a client that saw the end of
            // one operation may start the next.
            drop(slot);
            if let Err(e) = &result {
                tracing::warn!(queue_id = %qid, error = %e, "operation failed");
            }
            queue.finish(&qid, result);
        });
        Accepted(id)
    }

    /// A throttling slot or 429.
    pub fn slot(&self) -> Result<Slot, ApiError> {
        self.queue.try_slot().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "Server busy. Retry operation later.",
            )
        })
    }

    // ------------------------------------------------------------------ clusters

    /// `POST /clusters`.
    pub async fn cluster_create(
        &self,
        body: ClusterFlagsBody,
    ) -> Result<ClusterInfoResponse, ApiError> {
        let c = Cluster {
            id: new_id(),
            block: body.block,
            file: body.file,
        };
        self.store
            .update(|s| {
                s.clusters.insert(c.id.clone(), c.clone());
                Ok::<_, ApiError>(s.cluster_info(&c))
            })
            .await
    }

    /// `GET /clusters`.
    pub async fn cluster_list(&self) -> ClusterListResponse {
        ClusterListResponse {
            clusters: self
                .store
                .read(|s| s.clusters.keys().cloned().collect())
                .await,
        }
    }

    /// `GET /clusters/{id}`.
    pub async fn cluster_info(&self, id: &str) -> Result<ClusterInfoResponse, ApiError> {
        self.store
            .read(|s| s.clusters.get(id).map(|c| s.cluster_info(c)))
            .await
            .ok_or_else(ApiError::id_not_found)
    }

    /// `POST /clusters/{id}/flags`.
    pub async fn cluster_set_flags(
        &self,
        id: &str,
        body: ClusterFlagsBody,
    ) -> Result<(), ApiError> {
        self.store
            .update(|s| {
                let c = s.clusters.get_mut(id).ok_or_else(ApiError::id_not_found)?;
                c.block = body.block;
                c.file = body.file;
                Ok(())
            })
            .await
    }

    /// `DELETE /clusters/{id}`: refused while it has nodes or volumes.
    pub async fn cluster_delete(&self, id: &str) -> Result<(), ApiError> {
        self.store
            .update(|s| {
                if !s.clusters.contains_key(id) {
                    return Err(ApiError::id_not_found());
                }
                let busy = s.nodes.values().any(|n| n.cluster == id)
                    || s.volumes.values().any(|v| v.cluster == id);
                if busy {
                    return Err(ApiError::conflict(format!(
                        "Unable to delete cluster [{id}] because it contains volumes and/or nodes"
                    )));
                }
                s.clusters.remove(id);
                Ok(())
            })
            .await
    }

    // ------------------------------------------------------------------ nodes

    /// `POST /nodes`: registers the node, then (asynchronously) makes it a peer of the pool
    /// with `gluster peer probe` and waits until it is connected.
    pub async fn node_add(self: &Arc<Self>, body: NodeAddBody) -> Result<Accepted, ApiError> {
        body.validate()?;
        let node = Node {
            id: new_id(),
            cluster: body.cluster.clone(),
            zone: body.zone,
            manage: body.hostnames.manage.clone(),
            storage: body.hostnames.storage.clone(),
            tags: body.tags.clone(),
            state: EntryState::Online,
            lifecycle: Lifecycle::Adding,
        };
        self.store
            .update(|s| {
                if !s.clusters.contains_key(&node.cluster) {
                    return Err(ApiError::not_found("Cluster id does not exist"));
                }
                for h in node.manage.iter().chain(node.storage.iter()) {
                    if let Some(other) = s
                        .nodes
                        .values()
                        .find(|n| n.manage.contains(h) || n.storage.contains(h))
                    {
                        return Err(ApiError::conflict(format!(
                            "Hostname {h} already used by node with id {}\n",
                            other.id
                        )));
                    }
                }
                s.nodes.insert(node.id.clone(), node.clone());
                Ok(())
            })
            .await?;
        tracing::info!(node = %node.id, host = %node.brick_host(), "adding node");
        self.sync_gluster_nodes().await;
        let app = Arc::clone(self);
        Ok(self.spawn(None, async move {
            let id = node.id.clone();
            let probed = app.probe_node(&node).await;
            let result = match probed {
                Ok(()) => {
                    let done = app
                        .store
                        .update(|s| {
                            if let Some(n) = s.nodes.get_mut(&id) {
                                n.lifecycle = Lifecycle::Ready;
                            }
                            Ok::<_, StoreError>(())
                        })
                        .await;
                    done.map_err(|e| e.to_string())?;
                    Ok(Some(format!("/nodes/{id}")))
                }
                Err(e) => {
                    let _ = app
                        .store
                        .update(|s| {
                            s.nodes.remove(&id);
                            Ok::<_, StoreError>(())
                        })
                        .await;
                    Err(e.to_string())
                }
            };
            app.sync_gluster_nodes().await;
            result
        }))
    }

    /// Probes `node` into the pool from another member (from itself when it is the first).
    async fn probe_node(&self, node: &Node) -> Result<(), Error> {
        let host = node.brick_host().to_owned();
        let others = self
            .store
            .read(|s| {
                s.nodes
                    .values()
                    .any(|n| n.id != node.id && n.lifecycle == Lifecycle::Ready)
            })
            .await;
        let gluster = if others {
            self.gluster.excluding(node.manage_host())
        } else {
            self.gluster.clone()
        };
        gluster.peer_probe(&host).await?;
        let deadline = tokio::time::Instant::now() + PEER_CONNECT_WAIT;
        loop {
            let peers = gluster.pool_list().await?;
            match peers.iter().find(|p| p.hostname == host) {
                // The local glusterd lists itself as `localhost`.
                None => return Ok(()),
                Some(p) if p.connected => return Ok(()),
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Gone(format!(
                        "peer {host} did not connect within {} s",
                        PEER_CONNECT_WAIT.as_secs()
                    )));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `GET /nodes/{id}`.
    pub async fn node_info(&self, id: &str) -> Result<NodeInfoResponse, ApiError> {
        self.store
            .read(|s| {
                s.nodes
                    .get(id)
                    .filter(|n| n.lifecycle != Lifecycle::Adding)
                    .map(|n| s.node_info(n))
            })
            .await
            .ok_or_else(ApiError::id_not_found)
    }

    /// `DELETE /nodes/{id}`: refused while it has devices; detaches the peer from the pool
    /// (unless it is the glusterd the server talks to) and forgets the node.
    pub async fn node_delete(self: &Arc<Self>, id: &str) -> Result<Accepted, ApiError> {
        let node = self
            .store
            .update(|s| {
                let n = s
                    .nodes
                    .get(id)
                    .filter(|n| n.lifecycle == Lifecycle::Ready)
                    .cloned()
                    .ok_or_else(ApiError::id_not_found)?;
                if s.devices.values().any(|d| d.node == id) {
                    return Err(ApiError::conflict(format!(
                        "Unable to delete node [{id}] because it contains devices"
                    )));
                }
                if let Some(n) = s.nodes.get_mut(id) {
                    n.lifecycle = Lifecycle::Removing;
                }
                Ok(n)
            })
            .await?;
        let app = Arc::clone(self);
        Ok(self.spawn(None, async move {
            let result = app.detach_node(&node).await;
            let id = node.id.clone();
            let ok = result.is_ok();
            let saved = app
                .store
                .update(|s| {
                    if ok {
                        s.nodes.remove(&id);
                    } else if let Some(n) = s.nodes.get_mut(&id) {
                        n.lifecycle = Lifecycle::Ready;
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            app.sync_gluster_nodes().await;
            result.map_err(|e| e.to_string())?;
            saved.map_err(|e| e.to_string())?;
            Ok(None)
        }))
    }

    /// Detaches `node` from the pool, from another member of the topology; the last node is
    /// left in its pool (there is no other member to detach it from).
    async fn detach_node(&self, node: &Node) -> Result<(), Error> {
        let others = self
            .store
            .read(|s| s.nodes.values().any(|n| n.id != node.id))
            .await;
        if !others && !self.bricks.executor().is_local() {
            return Ok(());
        }
        let gluster = self.gluster.excluding(node.manage_host());
        let peers = gluster.pool_list().await?;
        let names: Vec<&String> = node.storage.iter().chain(node.manage.iter()).collect();
        if let Some(p) = peers
            .iter()
            .find(|p| p.hostname != "localhost" && names.contains(&&p.hostname))
        {
            gluster.peer_detach(&p.hostname).await?;
        }
        Ok(())
    }

    /// `POST /nodes/{id}/state`.
    pub async fn node_set_state(
        self: &Arc<Self>,
        id: &str,
        body: StateBody,
    ) -> Result<Accepted, ApiError> {
        let want = body.validate()?;
        let exists = self
            .store
            .read(|s| {
                s.nodes
                    .get(id)
                    .is_some_and(|n| n.lifecycle != Lifecycle::Adding)
            })
            .await;
        if !exists {
            return Err(ApiError::id_not_found());
        }
        let slot = if want == EntryState::Failed {
            Some(self.slot()?)
        } else {
            None
        };
        let app = Arc::clone(self);
        let id = id.to_owned();
        Ok(self.spawn(slot, async move {
            app.store
                .update(|s| {
                    if want == EntryState::Failed {
                        let has_bricks = s
                            .devices
                            .values()
                            .filter(|d| d.node == id)
                            .any(|d| !s.device_bricks(&d.id).is_empty());
                        if has_bricks {
                            return Err(unsupported_failed());
                        }
                    }
                    let n = s
                        .nodes
                        .get_mut(&id)
                        .ok_or_else(|| "Id not found".to_owned())?;
                    n.state = want;
                    Ok(None)
                })
                .await
        }))
    }

    // ------------------------------------------------------------------ devices

    /// `POST /devices`: registers the directory, then (asynchronously) checks it on the node
    /// and records its capacity (`size_kib` from the body, else the size of its file system).
    pub async fn device_add(self: &Arc<Self>, body: DeviceAddBody) -> Result<Accepted, ApiError> {
        body.validate()?;
        let dev = Device {
            id: new_id(),
            node: body.node.clone(),
            name: clean_path(&body.name),
            tags: body.tags.clone(),
            state: EntryState::Online,
            total_kib: 0,
            lifecycle: Lifecycle::Adding,
        };
        let host = self
            .store
            .update(|s| {
                let node = s
                    .nodes
                    .get(&dev.node)
                    .filter(|n| n.lifecycle == Lifecycle::Ready)
                    .ok_or_else(|| ApiError::not_found("Node id does not exist"))?;
                let host = node.manage_host().to_owned();
                if let Some(other) = s
                    .devices
                    .values()
                    .find(|d| d.node == dev.node && d.name == dev.name)
                {
                    return Err(ApiError::conflict(format!(
                        "Device already in use (ID: {})",
                        other.id
                    )));
                }
                s.devices.insert(dev.id.clone(), dev.clone());
                Ok(host)
            })
            .await?;
        tracing::info!(device = %dev.id, name = %dev.name, node = %dev.node, "adding device");
        let app = Arc::clone(self);
        let declared = body.size_kib;
        Ok(self.spawn(None, async move {
            let probed = app
                .bricks
                .probe_device(&host, &dev.name)
                .await
                .map_err(|e| format!("Unable to use device {} on node {host}: {e}", dev.name));
            let id = dev.id.clone();
            let saved = app
                .store
                .update(|s| {
                    match &probed {
                        Ok(fs_kib) => {
                            if let Some(d) = s.devices.get_mut(&id) {
                                d.total_kib = declared.unwrap_or(*fs_kib);
                                d.lifecycle = Lifecycle::Ready;
                            }
                        }
                        Err(_) => {
                            s.devices.remove(&id);
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            probed?;
            saved.map_err(|e| e.to_string())?;
            Ok(None)
        }))
    }

    /// `GET /devices/{id}`.
    pub async fn device_info(&self, id: &str) -> Result<DeviceInfoResponse, ApiError> {
        self.store
            .read(|s| {
                s.devices
                    .get(id)
                    .filter(|d| d.lifecycle != Lifecycle::Adding)
                    .map(|d| s.device_info(d))
            })
            .await
            .ok_or_else(ApiError::id_not_found)
    }

    /// `DELETE /devices/{id}`: refused while it holds bricks. The directory is left as it is.
    pub async fn device_delete(self: &Arc<Self>, id: &str) -> Result<Accepted, ApiError> {
        self.store
            .update(|s| {
                if !s
                    .devices
                    .get(id)
                    .is_some_and(|d| d.lifecycle == Lifecycle::Ready)
                {
                    return Err(ApiError::id_not_found());
                }
                if !s.device_bricks(id).is_empty() {
                    return Err(ApiError::conflict(format!(
                        "Unable to delete device [{id}] because it contains bricks"
                    )));
                }
                s.devices.remove(id);
                Ok(())
            })
            .await?;
        Ok(self.spawn(None, async { Ok(None) }))
    }

    /// `POST /devices/{id}/state`.
    pub async fn device_set_state(
        self: &Arc<Self>,
        id: &str,
        body: StateBody,
    ) -> Result<Accepted, ApiError> {
        let want = body.validate()?;
        let exists = self
            .store
            .read(|s| {
                s.devices
                    .get(id)
                    .is_some_and(|d| d.lifecycle != Lifecycle::Adding)
            })
            .await;
        if !exists {
            return Err(ApiError::id_not_found());
        }
        let slot = if want == EntryState::Failed {
            Some(self.slot()?)
        } else {
            None
        };
        let app = Arc::clone(self);
        let id = id.to_owned();
        Ok(self.spawn(slot, async move {
            app.store
                .update(|s| {
                    if want == EntryState::Failed && !s.device_bricks(&id).is_empty() {
                        return Err(unsupported_failed());
                    }
                    let d = s
                        .devices
                        .get_mut(&id)
                        .ok_or_else(|| "Id not found".to_owned())?;
                    d.state = want;
                    Ok(None)
                })
                .await
        }))
    }
}

fn unsupported_failed() -> String {
    "Cannot set state failed while bricks are present: this server does not move bricks; \
     set the state offline and delete the volumes instead"
        .to_owned()
}

impl From<StoreError> for String {
    fn from(e: StoreError) -> Self {
        e.to_string()
    }
}

/// `/a//b/` → `/a/b`.
fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Checks an id path segment: Heketi's routes only match `[A-Fa-f0-9]+`.
pub fn check_id_segment(id: &str) -> Result<(), ApiError> {
    if is_hex(id) {
        Ok(())
    } else {
        Err(ApiError::invalid_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("/a//b/"), "/a/b");
        assert_eq!(clean_path("/srv/bricks/b-1"), "/srv/bricks/b-1");
    }
}
