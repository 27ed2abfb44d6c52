//! Heketi's JSON replies, decoded with the client's types, and Heketi's plain-text errors
//! classified by the client: nothing panics, and what decodes re-encodes to something that
//! decodes to the same value.
#![no_main]

use heketi_client::Error;
use heketi_client::types::{
    ClusterInfoResponse, ClusterListResponse, DeviceInfoResponse, NodeInfoResponse,
    TopologyInfoResponse, VolumeInfoResponse, VolumeListResponse,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let again = serde_json::to_vec(&v).expect("a decoded reply encodes");
        let back: T = serde_json::from_slice(&again).expect("an encoded reply decodes");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<VolumeInfoResponse>(data);
    round_trip::<VolumeListResponse>(data);
    round_trip::<ClusterInfoResponse>(data);
    round_trip::<ClusterListResponse>(data);
    round_trip::<NodeInfoResponse>(data);
    round_trip::<DeviceInfoResponse>(data);
    round_trip::<TopologyInfoResponse>(data);

    let status = data.first().map_or(500, |b| 400 + u16::from(*b) % 200);
    let e = Error::Api {
        status,
        message: String::from_utf8_lossy(data).into_owned(),
    };
    assert_eq!(e.is_not_found(), status == 404);
    let _ = (
        e.is_no_space(),
        e.is_name_in_use(),
        e.is_unavailable(),
        e.to_string(),
    );
});
