//! Devices: add, info, delete, state.

use reqwest::Method;

use crate::client::{Client, check_id};
use crate::error::Result;
use crate::types::{DeviceAddRequest, DeviceInfoResponse, EntryState, StateRequest};

impl Client {
    /// `POST /devices`: add a device to a node and wait until it is usable (admin only).
    /// Heketi does not return the new device; find it in [`Client::node_info`].
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::DeviceAddRequest;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client
    ///     .device_add(&DeviceAddRequest {
    ///         name: "/dev/sdb".into(),
    ///         node_id: "0123456789abcdef0123456789abcdef".into(),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip_all, fields(node = %req.node_id, device = %req.name), err(level = "debug"))]
    pub async fn device_add(&self, req: &DeviceAddRequest) -> Result<()> {
        self.operation_empty(Method::POST, "/devices", Self::body(req)?)
            .await
    }

    /// `GET /devices/{id}`: the device with its capacity (KiB) and bricks.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// let d = client.device_info("0123456789abcdef0123456789abcdef").await?;
    /// println!("{}: {} of {} KiB free", d.name, d.storage.free, d.storage.total);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn device_info(&self, id: &str) -> Result<DeviceInfoResponse> {
        let path = format!("/devices/{}", check_id(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `DELETE /devices/{id}`: remove a device that holds no bricks (admin only).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client.device_delete("0123456789abcdef0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn device_delete(&self, id: &str) -> Result<()> {
        let path = format!("/devices/{}", check_id(id)?);
        self.operation_empty(Method::DELETE, &path, None).await
    }

    /// `POST /devices/{id}/state`: set a device online, offline or failed (admin only).
    ///
    /// # Example
    /// ```no_run
    /// use heketi_client::types::EntryState;
    /// # async fn demo(client: heketi_client::Client) -> heketi_client::Result<()> {
    /// client
    ///     .device_set_state("0123456789abcdef0123456789abcdef", EntryState::Offline)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn device_set_state(&self, id: &str, state: EntryState) -> Result<()> {
        let path = format!("/devices/{}/state", check_id(id)?);
        self.operation_empty(Method::POST, &path, Self::body(&StateRequest { state })?)
            .await
    }
}
