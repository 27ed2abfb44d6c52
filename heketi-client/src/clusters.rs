//! Clusters: create, list, info, delete, flags.

use reqwest::Method;

use crate::client::{Client, check_id};
use crate::error::Result;
use crate::types::{ClusterCreateRequest, ClusterFlags, ClusterInfoResponse, ClusterListResponse};

impl Client {
    /// `POST /clusters`: create an empty cluster (admin only).
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::ClusterCreateRequest;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let c = client.cluster_create(&ClusterCreateRequest::default()).await?;
    /// println!("cluster {}", c.id);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn cluster_create(&self, req: &ClusterCreateRequest) -> Result<ClusterInfoResponse> {
        self.call_json(Method::POST, "/clusters", Self::body(req)?)
            .await
    }

    /// `GET /clusters`: ids of all clusters.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// for id in client.cluster_list().await?.clusters {
    ///     println!("{id}");
    /// }
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn cluster_list(&self) -> Result<ClusterListResponse> {
        self.call_json(Method::GET, "/clusters", None).await
    }

    /// `GET /clusters/{id}`: the cluster's node and volume ids and flags.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let c = client.cluster_info("0123456789abcdef0123456789abcdef").await?;
    /// println!("{} nodes, {} volumes", c.nodes.len(), c.volumes.len());
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn cluster_info(&self, id: &str) -> Result<ClusterInfoResponse> {
        let path = format!("/clusters/{}", check_id(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `DELETE /clusters/{id}`: delete an empty cluster (admin only; 409 while it still has
    /// nodes or volumes).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client.cluster_delete("0123456789abcdef0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn cluster_delete(&self, id: &str) -> Result<()> {
        let path = format!("/clusters/{}", check_id(id)?);
        self.call_empty(Method::DELETE, &path, None).await
    }

    /// `POST /clusters/{id}/flags`: choose whether the cluster takes file and block-hosting
    /// volumes (admin only).
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::ClusterFlags;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client
    ///     .cluster_set_flags(
    ///         "0123456789abcdef0123456789abcdef",
    ///         &ClusterFlags { block: false, file: true },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn cluster_set_flags(&self, id: &str, flags: &ClusterFlags) -> Result<()> {
        let path = format!("/clusters/{}/flags", check_id(id)?);
        self.call_empty(Method::POST, &path, Self::body(flags)?)
            .await
    }
}
