//! CSI volume ids: parsing any string never panics, and an id that parses is exactly what
//! encoding it gives back (one spelling per volume).
#![no_main]

use gluster_csi_controller::volume_id::{MAX_ID_LEN, VolumeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = VolumeId::parse(s) {
        assert!(s.len() <= MAX_ID_LEN);
        assert_eq!(id.encode().ok().as_deref(), Some(s));
    }
});
