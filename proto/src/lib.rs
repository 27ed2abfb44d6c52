//! The Container Storage Interface (CSI) v1.12.0 gRPC contract for gluster-csi.
//!
//! [`v1`] holds the messages, the clients and the server traits generated from
//! `csi.proto` at build time (protox + tonic-prost-build, no system `protoc`).
//! This is the only place in the workspace where the CSI proto is compiled, and
//! all this crate holds: the plumbing the plugins share around it (serving,
//! the Identity service, operation locks, flags) is in `gluster-csi-runtime`.
//!
//! # Secrets never reach `Debug`
//!
//! A CSI message with a field marked `csi_secret` in the spec is generated
//! without a `Debug` implementation, so credentials cannot end up in a log
//! line through `{:?}`. The set is computed from the proto descriptor by
//! `build.rs` and listed in [`v1::MESSAGES_WITHOUT_DEBUG`].
//!
//! Formatting such a request does not compile:
//!
//! ```compile_fail,E0277
//! let request = csi_proto::v1::CreateVolumeRequest::default();
//! let _ = format!("{request:?}");
//! ```
//!
//! Messages without secrets keep `Debug`:
//!
//! ```
//! let request = csi_proto::v1::GetPluginInfoRequest::default();
//! assert_eq!(format!("{request:?}"), "GetPluginInfoRequest");
//! ```

/// The protobuf well-known types the messages use (`Timestamp` of a snapshot).
pub use prost_types;

/// CSI v1 messages, `*_client` and `*_server` modules, generated from
/// `csi.proto` (package `csi.v1`).
pub mod v1 {
    // Generated code: the lints below fire on prost/tonic output we do not
    // control.
    #![allow(
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        missing_docs,
        rustdoc::all
    )]

    tonic::include_proto!("csi.v1");

    include!(concat!(env!("OUT_DIR"), "/csi_secret_messages.rs"));
}

#[cfg(test)]
mod tests {
    use super::v1;

    /// The CSI 1.12 messages that carry a `csi_secret` field, written out by
    /// hand from the spec, to cross-check what `build.rs` derives from the
    /// descriptor.
    const SPEC_SECRET_MESSAGES: &[&str] = &[
        "CreateVolumeRequest",
        "DeleteVolumeRequest",
        "ControllerPublishVolumeRequest",
        "ControllerUnpublishVolumeRequest",
        "ValidateVolumeCapabilitiesRequest",
        "ControllerExpandVolumeRequest",
        "CreateSnapshotRequest",
        "DeleteSnapshotRequest",
        "ListSnapshotsRequest",
        "GetSnapshotRequest",
        "ControllerModifyVolumeRequest",
        "NodeStageVolumeRequest",
        "NodePublishVolumeRequest",
        "NodeExpandVolumeRequest",
        "CreateVolumeGroupSnapshotRequest",
        "DeleteVolumeGroupSnapshotRequest",
        "GetVolumeGroupSnapshotRequest",
        "GetMetadataAllocatedRequest",
        "GetMetadataDeltaRequest",
    ];

    #[test]
    fn no_debug_list_matches_the_spec() {
        let mut expected: Vec<String> = SPEC_SECRET_MESSAGES
            .iter()
            .map(|name| format!("csi.v1.{name}"))
            .collect();
        expected.sort();
        let mut computed: Vec<String> = v1::MESSAGES_WITHOUT_DEBUG
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        computed.sort();
        assert_eq!(computed, expected);
    }

    #[test]
    fn messages_without_secrets_are_debug() {
        let info = v1::GetPluginInfoResponse {
            name: "org.gluster.csi".to_owned(),
            vendor_version: "0.1.0".to_owned(),
            manifest: Default::default(),
        };
        let text = format!("{info:?}");
        assert!(text.contains("org.gluster.csi"), "{text}");

        let unstage = v1::NodeUnstageVolumeRequest {
            volume_id: "vol-1".to_owned(),
            staging_target_path: "/staging/vol-1".to_owned(),
        };
        assert!(format!("{unstage:?}").contains("vol-1"));
    }

    #[test]
    fn secrets_survive_the_wire() {
        use prost::Message as _;

        let mut request = v1::NodeStageVolumeRequest {
            volume_id: "vol-1".to_owned(),
            staging_target_path: "/staging/vol-1".to_owned(),
            ..Default::default()
        };
        request
            .secrets
            .insert("key".to_owned(), "hunter2".to_owned());
        let bytes = request.encode_to_vec();
        let decoded = v1::NodeStageVolumeRequest::decode(bytes.as_slice());
        assert!(decoded.is_ok_and(|d| d == request));
    }

    #[test]
    fn field_numbers_follow_the_spec() {
        use prost::Message as _;

        // NodePublishVolumeRequest.secrets is field 7 and readonly is field 6:
        // encode each alone and read the tag byte (field << 3 | wire type).
        let secrets_only = v1::NodePublishVolumeRequest {
            secrets: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(secrets_only.encode_to_vec().first(), Some(&((7 << 3) | 2)));

        let readonly_only = v1::NodePublishVolumeRequest {
            readonly: true,
            ..Default::default()
        };
        assert_eq!(readonly_only.encode_to_vec(), vec![6 << 3, 1]);
    }
}
