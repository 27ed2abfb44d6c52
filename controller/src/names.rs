//! Heketi volume names derived from CSI names.
//!
//! Heketi has no get-by-name, and CSI names (`pvc-<uid>`, up to 128 bytes of any text) are not
//! valid Heketi names. The Heketi name is `[<volumenameprefix>_]csi_<20 hex>`: the hex is the
//! start of the SHA-256 of the CSI name, so a retried CreateVolume finds the volume the first
//! call made, also from another controller process. 80 bits make a collision between two live
//! volumes practically impossible.

use sha2::{Digest, Sha256};

/// The marker every Heketi name made by this driver carries.
pub const MARKER: &str = "csi_";
/// Hex characters of the hash.
pub const HASH_LEN: usize = 20;

/// The Heketi volume name for the CSI name `csi_name`.
pub fn heketi_name(csi_name: &str, prefix: Option<&str>) -> String {
    let digest = Sha256::digest(csi_name.as_bytes());
    let hash = hex::encode(digest);
    let short = &hash[..HASH_LEN];
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
}
