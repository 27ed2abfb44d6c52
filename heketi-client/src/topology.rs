//! The topology view, composed from several calls (Heketi has no `/topology` route).

use crate::client::Client;
use crate::error::Result;
use crate::types::{TopologyCluster, TopologyInfoResponse};

impl Client {
    /// Every cluster with its nodes (and their devices) and volumes, composed like Heketi's own
    /// client: `GET /clusters`, then each cluster, then each of its volumes and nodes.
    ///
    /// A volume or node deleted while the view is being composed (a 404 between listing and
    /// reading it) is left out instead of failing the whole view. The whole view is bounded by
    /// one operation deadline.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// for c in client.topology().await?.clusters {
    ///     println!("cluster {}: {} nodes, {} volumes", c.id, c.nodes.len(), c.volumes.len());
    /// }
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn topology(&self) -> Result<TopologyInfoResponse> {
        self.bounded(|_| async move {
            let mut out = TopologyInfoResponse::default();
            for cluster_id in self.cluster_list().await?.clusters {
                let info = match self.cluster_info(&cluster_id).await {
                    Err(e) if e.is_not_found() => continue,
                    other => other?,
                };
                let mut cluster = TopologyCluster {
                    id: info.id,
                    block: info.block,
                    file: info.file,
                    ..Default::default()
                };
                for vid in &info.volumes {
                    match self.volume_info(vid).await {
                        Ok(v) => cluster.volumes.push(v),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                for nid in &info.nodes {
                    match self.node_info(nid).await {
                        Ok(n) => cluster.nodes.push(n),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                out.clusters.push(cluster);
            }
            Ok(out)
        })
        .await
    }
}
