//! Volumes: create, list, info, delete, expand, clone.

use reqwest::Method;

use crate::client::{Client, check_id};
use crate::error::Result;
use crate::types::{
    VolumeCloneRequest, VolumeCreateRequest, VolumeExpandRequest, VolumeInfoResponse,
    VolumeListResponse,
};

impl Client {
    /// `POST /volumes`: create a volume and wait until it exists.
    ///
    /// Heketi checks and allocates before answering, so "no space" ([`crate::Error::is_no_space`])
    /// and "name in use" ([`crate::Error::is_name_in_use`]) come back at once. The request is
    /// sent again only after a 429 or 503 refusal, never after it may have reached Heketi: after
    /// a timeout or a transport failure, look the volume up by name.
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::{VolumeCreateRequest, VolumeDurabilityInfo};
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let v = client
    ///     .volume_create(&VolumeCreateRequest {
    ///         size: 10,
    ///         name: "csi_3f9c".into(),
    ///         durability: VolumeDurabilityInfo::replicate(3),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("mount {}", v.mount.glusterfs.device);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(name = %req.name, size = req.size), err(level = "debug"))]
    pub async fn volume_create(&self, req: &VolumeCreateRequest) -> Result<VolumeInfoResponse> {
        self.operation_json(Method::POST, "/volumes", Self::body(req)?)
            .await
    }

    /// `GET /volumes`: ids of the volumes whose creation has completed.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let n = client.volume_list().await?.volumes.len();
    /// println!("{n} volumes");
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn volume_list(&self) -> Result<VolumeListResponse> {
        self.call_json(Method::GET, "/volumes", None).await
    }

    /// `GET /volumes/{id}`: one volume with its bricks and mount information.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let v = client.volume_info("0123456789abcdef0123456789abcdef").await?;
    /// println!("{} on {:?}", v.name, v.mount.glusterfs.hosts);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn volume_info(&self, id: &str) -> Result<VolumeInfoResponse> {
        let path = format!("/volumes/{}", check_id(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `DELETE /volumes/{id}`: delete a volume and wait until it is gone.
    /// An unknown id gives an error for which [`crate::Error::is_not_found`] is true.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// match client.volume_delete("0123456789abcdef0123456789abcdef").await {
    ///     Err(e) if e.is_not_found() => {}
    ///     other => other?,
    /// }
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn volume_delete(&self, id: &str) -> Result<()> {
        let path = format!("/volumes/{}", check_id(id)?);
        self.operation_empty(Method::DELETE, &path, None).await
    }

    /// `POST /volumes/{id}/expand`: grow a volume by `req.expand_size` GiB (a delta, not the
    /// new size) and return it as it is afterwards.
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::VolumeExpandRequest;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let v = client
    ///     .volume_expand("0123456789abcdef0123456789abcdef", &VolumeExpandRequest { expand_size: 5 })
    ///     .await?;
    /// println!("now {} GiB", v.size);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self, req), fields(expand_size = req.expand_size), err(level = "debug"))]
    pub async fn volume_expand(
        &self,
        id: &str,
        req: &VolumeExpandRequest,
    ) -> Result<VolumeInfoResponse> {
        let path = format!("/volumes/{}/expand", check_id(id)?);
        self.operation_json(Method::POST, &path, Self::body(req)?)
            .await
    }

    /// `POST /volumes/{id}/clone`: clone a volume (same size as the source) and return the
    /// clone. An empty `req.name` lets Heketi pick one.
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::VolumeCloneRequest;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let c = client
    ///     .volume_clone(
    ///         "0123456789abcdef0123456789abcdef",
    ///         &VolumeCloneRequest {
    ///             name: "csi_clone_1".into(),
    ///             ..Default::default()
    ///         },
    ///     )
    ///     .await?;
    /// println!("clone {} is {}", c.name, c.id);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self, req), fields(clone_name = %req.name), err(level = "debug"))]
    pub async fn volume_clone(
        &self,
        id: &str,
        req: &VolumeCloneRequest,
    ) -> Result<VolumeInfoResponse> {
        let path = format!("/volumes/{}/clone", check_id(id)?);
        self.operation_json(Method::POST, &path, Self::body(req)?)
            .await
    }
}
