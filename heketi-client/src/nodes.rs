//! Nodes: add, info, delete, state.

use reqwest::Method;

use crate::client::{Client, check_id};
use crate::error::Result;
use crate::types::{EntryState, NodeAddRequest, NodeInfoResponse, StateRequest};

impl Client {
    /// `POST /nodes`: add a node to a cluster and wait until it is part of it (admin only).
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::{HostAddresses, NodeAddRequest};
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let n = client
    ///     .node_add(&NodeAddRequest {
    ///         zone: 1,
    ///         hostnames: HostAddresses {
    ///             manage: vec!["gluster-1".into()],
    ///             storage: vec!["10.0.0.1".into()],
    ///         },
    ///         cluster_id: "0123456789abcdef0123456789abcdef".into(),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("node {}", n.id);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %req.cluster_id), err(level = "debug"))]
    pub async fn node_add(&self, req: &NodeAddRequest) -> Result<NodeInfoResponse> {
        self.operation_json(Method::POST, "/nodes", Self::body(req)?)
            .await
    }

    /// `GET /nodes/{id}`: the node with its devices and their capacity (KiB).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let n = client.node_info("0123456789abcdef0123456789abcdef").await?;
    /// let free: u64 = n.devices.iter().map(|d| d.storage.free).sum();
    /// println!("{free} KiB free");
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn node_info(&self, id: &str) -> Result<NodeInfoResponse> {
        let path = format!("/nodes/{}", check_id(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `DELETE /nodes/{id}`: remove a node that has no devices left (admin only).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client.node_delete("0123456789abcdef0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn node_delete(&self, id: &str) -> Result<()> {
        let path = format!("/nodes/{}", check_id(id)?);
        self.operation_empty(Method::DELETE, &path, None).await
    }

    /// `POST /nodes/{id}/state`: set a node online, offline or failed (admin only).
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::EntryState;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client
    ///     .node_set_state("0123456789abcdef0123456789abcdef", EntryState::Offline)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn node_set_state(&self, id: &str, state: EntryState) -> Result<()> {
        let path = format!("/nodes/{}/state", check_id(id)?);
        self.operation_empty(Method::POST, &path, Self::body(&StateRequest { state })?)
            .await
    }
}
