//! The CSI snapshot id: `s` followed by the volume id ([`crate::volume_id`]) of the snapshot's
//! own Heketi volume, e.g. `s1:<heketi id>:n<backend>:c<cluster tag>`.
//!
//! Self-contained like a volume id (DeleteSnapshot gets no parameters), and never taken for
//! one: `VolumeId::parse` refuses it, so DeleteVolume, NodeStageVolume and the other volume
//! calls treat a snapshot id as naming no volume of ours.

use crate::volume_id::{MAX_ID_LEN, UrlTooLong, VolumeId};

const PREFIX: char = 's';

/// A parsed snapshot id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotId(pub VolumeId);

impl SnapshotId {
    /// The id string. The cluster tag is left out when the id would not fit with it.
    pub fn encode(&self) -> Result<String, UrlTooLong> {
        let mut volume = self.0.clone();
        loop {
            let id = format!("{PREFIX}{}", volume.encode()?);
            if id.len() <= MAX_ID_LEN {
                return Ok(id);
            }
            if volume.cluster.take().is_none() {
                return Err(UrlTooLong {
                    url: volume.backend.to_string(),
                });
            }
        }
    }

    /// Parses an id; `None` when it is not a snapshot id of ours.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_ID_LEN {
            return None;
        }
        s.strip_prefix(PREFIX).and_then(VolumeId::parse).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume_id::BackendRef;

    const HEKETI: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_never_a_volume_id() {
        for backend in [
            BackendRef::Default,
            BackendRef::Named("site-a".into()),
            BackendRef::Url("http://heketi.storage:8080".into()),
        ] {
            let id = SnapshotId(VolumeId::new(backend, HEKETI).in_cluster("89abcdef0123"));
            let s = id.encode().expect("fits");
            assert!(s.starts_with("s1:"), "{s}");
            assert_eq!(SnapshotId::parse(&s), Some(id.clone()), "{s}");
            assert_eq!(VolumeId::parse(&s), None, "{s} must not name a volume");
            let volume = id.0.encode().expect("fits");
            assert_eq!(SnapshotId::parse(&volume), None, "{volume} is a volume id");
        }
        assert_eq!(SnapshotId::parse("reallyfakesnapshotid"), None);
        assert_eq!(SnapshotId::parse(""), None);
    }

    #[test]
    fn the_cluster_tag_goes_first_when_a_long_url_leaves_no_room() {
        let url = format!("https://{}", "h".repeat(crate::volume_id::MAX_URL_REST));
        let id = SnapshotId(VolumeId::new(BackendRef::Url(url), HEKETI).in_cluster("89abcdef"));
        match id.encode() {
            Ok(s) => {
                assert!(s.len() <= MAX_ID_LEN, "{s}");
                assert_eq!(SnapshotId::parse(&s).map(|p| p.0.cluster), Some(None));
            }
            Err(e) => assert!(e.to_string().contains("too long"), "{e}"),
        }
    }
}
