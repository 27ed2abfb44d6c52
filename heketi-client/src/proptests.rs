//! Property tests of how the client reads Heketi's replies: JSON bodies through the same
//! decoding step every request uses, and plain-text error bodies through [`api_error`].
//!
//! Whatever Heketi (or something pretending to be it) sends, nothing panics; a body that is not
//! the expected JSON is [`Error::Decode`] holding at most [`MAX_MESSAGE_BYTES`] of it; an error
//! reply is [`Error::Api`] with a bounded, non-empty message; and every reply type reads back
//! what it wrote.

use std::collections::BTreeMap;

use proptest::prelude::*;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;

use crate::error::api_error;
use crate::transport::Reply;
use crate::types::{
    BrickInfo, ClusterInfoResponse, ClusterListResponse, DeviceInfoResponse, GlusterFsMount,
    NodeInfoResponse, SnapshotSettings, TopologyInfoResponse, VolumeDurabilityInfo,
    VolumeInfoResponse, VolumeListResponse, VolumeMount,
};
use crate::{Error, MAX_MESSAGE_BYTES};

fn reply(body: Vec<u8>) -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body,
    }
}

/// Decodes `body` as `T` and checks the documented outcome; `Ok(true)` when it decoded.
fn decodes_or_is_decode_error<T: DeserializeOwned>(body: &[u8]) -> Result<bool, TestCaseError> {
    match reply(body.to_vec()).json::<T>() {
        Ok(_) => Ok(true),
        Err(Error::Decode { body: kept, .. }) => {
            prop_assert!(kept.len() <= MAX_MESSAGE_BYTES, "kept {} bytes", kept.len());
            let e = Error::Decode {
                body: kept,
                source: serde_json::from_str::<serde_json::Value>("")
                    .err()
                    .ok_or_else(|| TestCaseError::fail("an empty document decoded"))?,
            };
            // The message is bounded too (a preview of the body).
            prop_assert!(e.to_string().len() < 2 * MAX_MESSAGE_BYTES);
            Ok(false)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a decode error: {other:?}"
        ))),
    }
}

fn every_reply_type(body: &[u8]) -> Result<(), TestCaseError> {
    decodes_or_is_decode_error::<VolumeInfoResponse>(body)?;
    decodes_or_is_decode_error::<VolumeListResponse>(body)?;
    decodes_or_is_decode_error::<ClusterInfoResponse>(body)?;
    decodes_or_is_decode_error::<ClusterListResponse>(body)?;
    decodes_or_is_decode_error::<NodeInfoResponse>(body)?;
    decodes_or_is_decode_error::<DeviceInfoResponse>(body)?;
    decodes_or_is_decode_error::<TopologyInfoResponse>(body)?;
    Ok(())
}

/// Arbitrary JSON documents.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "size",
                        "name",
                        "id",
                        "cluster",
                        "durability",
                        "type",
                        "replicate",
                        "replica",
                        "disperse",
                        "data",
                        "redundancy",
                        "gid",
                        "bricks",
                        "mount",
                        "glusterfs",
                        "hosts",
                        "device",
                        "options",
                        "volumes",
                        "clusters",
                        "nodes",
                        "devices",
                        "storage",
                        "total",
                        "free",
                        "used",
                        "state",
                        "snapshot",
                        "factor",
                        "enable",
                        "blockinfo",
                        "path",
                        "node",
                        "zone",
                    ])
                    .prop_map(str::to_owned),
                    ".{0,8}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A real-looking volume reply.
fn volume() -> impl Strategy<Value = VolumeInfoResponse> {
    let durability = prop_oneof![
        (1u32..4).prop_map(VolumeDurabilityInfo::replicate),
        prop::sample::select(vec![(2u32, 1u32), (4, 2), (8, 3), (8, 4)])
            .prop_map(|(d, r)| VolumeDurabilityInfo::disperse(d, r)),
        Just(VolumeDurabilityInfo::none()),
    ];
    let brick = (
        "[0-9a-f]{32}",
        "/[a-z0-9/_]{1,40}",
        "[0-9a-f]{32}",
        any::<u64>(),
    )
        .prop_map(|(id, path, node, size)| BrickInfo {
            id: id.clone(),
            path,
            device: id.chars().rev().collect(),
            node,
            volume: id,
            size,
        });
    (
        (any::<u64>(), ".{0,30}", "[0-9a-f]{32}", "[0-9a-f]{32}"),
        durability,
        any::<i64>(),
        prop::collection::vec("[a-z.-]{1,12} [a-z0-9]{1,6}", 0..4),
        (
            any::<bool>(),
            prop::sample::select(vec![1.0f32, 1.5, 2.0, 100.0]),
        ),
        prop::collection::vec("[0-9.]{7,15}", 0..4),
        prop::collection::btree_map("[a-z-]{1,20}", ".{0,20}", 0..3),
        prop::collection::vec(brick, 0..6),
    )
        .prop_map(
            |(
                (size, name, id, cluster),
                durability,
                gid,
                opts,
                (enable, factor),
                hosts,
                options,
                bricks,
            )| {
                VolumeInfoResponse {
                    size,
                    name: name.clone(),
                    id,
                    cluster,
                    durability,
                    gid,
                    glustervolumeoptions: opts,
                    snapshot: SnapshotSettings { enable, factor },
                    mount: VolumeMount {
                        glusterfs: GlusterFsMount {
                            device: format!(
                                "{}:{name}",
                                hosts.first().cloned().unwrap_or_default()
                            ),
                            hosts,
                            options: options.into_iter().collect::<BTreeMap<_, _>>(),
                        },
                    },
                    bricks,
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes as a 2xx body: no panic, a value or a bounded decode error.
    #[test]
    fn any_bytes_decode_or_are_decode_errors(body in prop::collection::vec(any::<u8>(), 0..600)) {
        every_reply_type(&body)?;
    }

    /// A body much larger than the kept part: the error keeps at most MAX_MESSAGE_BYTES, cut on
    /// a character boundary.
    #[test]
    fn huge_bodies_are_cut(fill in "[a-zé€𝄞]{1,4}", n in 1500usize..3000) {
        let body = format!("{{\"size\": \"{}\"", fill.repeat(n)).into_bytes();
        prop_assert!(!decodes_or_is_decode_error::<VolumeInfoResponse>(&body)?);
    }

    /// Any JSON document as a reply: no panic, a value or a decode error.
    #[test]
    fn any_json_decodes_or_is_a_decode_error(doc in json()) {
        let body = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        every_reply_type(&body)?;
    }

    /// A good volume reply with one field replaced by any JSON value: no panic.
    #[test]
    fn damaged_volume_replies_are_decode_errors_or_values(
        v in volume(),
        field in prop::sample::select(vec![
            "size", "name", "id", "durability", "gid", "bricks", "mount", "snapshot",
            "glustervolumeoptions", "blockinfo",
        ]),
        with in json(),
    ) {
        let mut doc = serde_json::to_value(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(field.to_owned(), with);
        }
        let body = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        decodes_or_is_decode_error::<VolumeInfoResponse>(&body)?;
    }

    /// A volume reply reads back exactly what was written.
    #[test]
    fn volume_replies_round_trip(v in volume()) {
        let body = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: VolumeInfoResponse = reply(body)
            .json()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, v);
    }

    /// Error replies: any status and body give Error::Api with a bounded, non-empty, trimmed
    /// message, and the classification never panics and agrees with the status.
    #[test]
    fn error_replies_are_api_errors(
        status in prop_oneof![Just(404u16), Just(429), Just(500), Just(503), 400u16..600],
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..5000),
            ".{0,200}".prop_map(String::into_bytes),
            Just(b"Failed to allocate new volume: No space".to_vec()),
            Just(b"Volume name 'x' already in use".to_vec()),
        ],
    ) {
        let e = api_error(status, &body);
        let Error::Api { status: s, message } = &e else {
            return Err(TestCaseError::fail(format!("{e:?}")));
        };
        prop_assert_eq!(*s, status);
        prop_assert!(!message.is_empty() && message.len() <= MAX_MESSAGE_BYTES);
        prop_assert_eq!(message.trim(), message.as_str());
        prop_assert_eq!(e.status(), Some(status));
        prop_assert_eq!(e.is_not_found(), status == 404);
        prop_assert_eq!(e.is_retryable(), matches!(status, 429 | 503));
        prop_assert!(!e.is_no_space() || matches!(status, 500 | 507));
        prop_assert!(!e.is_name_in_use() || matches!(status, 500 | 409));
        let _ = e.is_unavailable();
    }
}
