//! Heketi volume names derived from CSI names.
//!
//! Heketi has no get-by-name, and CSI names (`pvc-<uid>`, up to 128 bytes of any text) are not
//! valid Heketi names. The Heketi name is `[<volumenameprefix>_]csi_<20 hex>`: the hex is the
//! start of the SHA-256 of the CSI name, so a retried CreateVolume finds the volume the first
//! call made, also from another controller process. 80 bits make a collision between two live
//! volumes practically impossible.
//!
//! A snapshot is a Heketi volume too (a clone of its source), named
//! `snap_<20 hex>_<source's Heketi id>_<creation time, Unix seconds>`: the hex is the same hash
//! of the CSI snapshot name, so a retried CreateSnapshot finds it by the prefix
//! ([`snapshot_prefix`]); the rest makes the snapshot traceable to its source and its creation
//! time from Heketi's volume list alone ([`SnapshotName::parse`]). Heketi names have no length
//! limit; Gluster allows 255 bytes, and this is 69.

use sha2::{Digest, Sha256};

/// The marker every Heketi name made by this driver carries.
pub const MARKER: &str = "csi_";
/// Hex characters of the hash.
pub const HASH_LEN: usize = 20;

/// The marker at the start of a snapshot's Heketi name.
pub const SNAPSHOT_MARKER: &str = "snap_";

/// The first [`HASH_LEN`] hex characters of the SHA-256 of `csi_name`.
fn short_hash(csi_name: &str) -> String {
    let mut hash = hex::encode(Sha256::digest(csi_name.as_bytes()));
    hash.truncate(HASH_LEN);
    hash
}

/// The Heketi volume name for the CSI name `csi_name`.
pub fn heketi_name(csi_name: &str, prefix: Option<&str>) -> String {
    let short = short_hash(csi_name);
    match prefix {
        Some(p) if !p.is_empty() => format!("{p}_{MARKER}{short}"),
        _ => format!("{MARKER}{short}"),
    }
}

/// Whether a Heketi volume name is one this driver makes (with any prefix).
pub fn is_driver_volume(name: &str) -> bool {
    let n = MARKER.len() + HASH_LEN;
    if name.len() < n || !name.is_char_boundary(name.len() - n) {
        return false;
    }
    let (head, tail) = name.split_at(name.len() - n);
    let Some(hash) = tail.strip_prefix(MARKER) else {
        return false;
    };
    let hash_ok = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let head_ok = match head.strip_suffix('_') {
        None => head.is_empty(),
        Some(prefix) => {
            !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
    };
    hash_ok && head_ok
}

/// The start shared by the Heketi names of every snapshot made for the CSI snapshot name
/// `csi_name`.
pub fn snapshot_prefix(csi_name: &str) -> String {
    format!("{SNAPSHOT_MARKER}{}_", short_hash(csi_name))
}

/// What the Heketi name of a snapshot says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotName {
    /// [`snapshot_prefix`] of the CSI snapshot name.
    pub prefix: String,
    /// Heketi id of the volume the snapshot was taken of (lowercase hex).
    pub source: String,
    /// When the snapshot was taken, Unix seconds.
    pub created: i64,
}

impl SnapshotName {
    /// The name of a snapshot of CSI name `csi_name`, of Heketi volume `source`, taken at
    /// `created` (Unix seconds).
    pub fn new(csi_name: &str, source: &str, created: i64) -> Self {
        Self {
            prefix: snapshot_prefix(csi_name),
            source: source.to_ascii_lowercase(),
            created,
        }
    }

    /// The Heketi volume name.
    pub fn encode(&self) -> String {
        format!("{}{}_{}", self.prefix, self.source, self.created)
    }

    /// Reads a Heketi volume name; `None` when it is not a snapshot of this driver.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(SNAPSHOT_MARKER)?;
        let mut parts = rest.split('_');
        let (hash, source, created) = (parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let ok = parts.next().is_none()
            && hash.len() == HASH_LEN
            && lower_hex(hash)
            && source.len() == crate::volume_id::HEKETI_ID_LEN
            && lower_hex(source)
            && !created.is_empty()
            && created.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return None;
        }
        Some(Self {
            prefix: format!("{SNAPSHOT_MARKER}{hash}_"),
            source: source.to_owned(),
            created: created.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_short_and_safe() {
        let long = "x".repeat(128);
        for csi in [
            "pvc-8a3b7e62-1f0a-4c38-9a46-0d1c2b3a4f5e",
            &long,
            "ünïcödé name/with spaces",
        ] {
            let a = heketi_name(csi, None);
            assert_eq!(a, heketi_name(csi, None), "same input, same name");
            assert_eq!(a.len(), MARKER.len() + HASH_LEN);
            assert!(
                a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{a}"
            );
            assert!(is_driver_volume(&a), "{a}");
            let b = heketi_name(csi, Some("dept-a"));
            assert!(b.starts_with("dept-a_csi_"), "{b}");
            assert!(b.ends_with(&a[MARKER.len()..]), "{b}");
            assert!(is_driver_volume(&b), "{b}");
        }
        assert_ne!(heketi_name("a", None), heketi_name("b", None));
        // sha256 of the empty string starts with e3b0c44298fc1c149afb.
        assert_eq!(heketi_name("", None), "csi_e3b0c44298fc1c149afb");
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for n in [
            "heketidbstorage",
            "vol_0123456789abcdef0123456789abcdef",
            "csi_",
            "csi_0123456789abcdef012",
            "csi_0123456789abcdef012x",
            "csi_0123456789ABCDEF0123",
            "a_b_csi_0123456789abcdef0123",
            "a.b_csi_0123456789abcdef0123",
            "_csi_0123456789abcdef0123",
            "pvc_ns_name_csi_0123456789abcdef0123",
        ] {
            assert!(!is_driver_volume(n), "{n}");
        }
        assert!(is_driver_volume("csi_0123456789abcdef0123"));
        assert!(is_driver_volume("p-1_csi_0123456789abcdef0123"));
    }

    #[test]
    fn snapshot_names_round_trip_and_are_not_volumes() {
        let src = "0123456789abcdef0123456789abcdef";
        let n = SnapshotName::new("snapshot-8a3b7e62", src, 1_796_000_000);
        let name = n.encode();
        assert!(
            name.starts_with(&snapshot_prefix("snapshot-8a3b7e62")),
            "{name}"
        );
        assert!(name.len() <= 255, "{name}");
        assert_eq!(SnapshotName::parse(&name), Some(n));
        assert!(
            !is_driver_volume(&name),
            "a snapshot is not listed as a volume"
        );
        assert_ne!(
            snapshot_prefix("snapshot-a"),
            snapshot_prefix("snapshot-b"),
            "different names, different prefixes"
        );
        for bad in [
            "csi_0123456789abcdef0123",
            "snap_",
            "snap_0123456789abcdef0123_0123456789abcdef0123456789abcdef",
            "snap_0123456789abcdef0123_0123456789abcdef0123456789abcdef_",
            "snap_0123456789abcdef0123_0123456789abcdef0123456789abcdef_12x",
            "snap_0123456789abcdef0123_0123456789ABCDEF0123456789abcdef_12",
            "snap_0123456789abcdef012_0123456789abcdef0123456789abcdef_12",
            "snap_0123456789abcdef0123_0123456789abcdef0123456789abcdef_12_x",
        ] {
            assert_eq!(SnapshotName::parse(bad), None, "{bad}");
        }
    }
}
