//! Topology segments of this driver (feature `csi`): where a node is and which nodes a volume
//! can be mounted from, as CSI `Topology` maps of label keys to values.
//!
//! Every key is under the driver's own prefix [`PREFIX`] (`topology.gluster.heketi.csi/zone`,
//! `…/site`), so it never clashes with the labels other drivers or the cloud put on nodes;
//! Kubernetes copies the node plugin's segments onto the Node as labels. A segment given as
//! `zone=east` gets the prefix; a key with another prefix is refused.

use std::collections::BTreeMap;

/// The prefix of every topology key of this driver.
pub const PREFIX: &str = "topology.gluster.heketi.csi/";

/// A topology segment: full key → value.
pub type Segment = BTreeMap<String, String>;

/// Parses `KEY=VALUE` items (`zone=east`, or the full key `topology.gluster.heketi.csi/zone=east`)
/// into a segment. `what` names the flag or field in errors.
pub fn parse_segment<S: AsRef<str>>(items: &[S], what: &str) -> Result<Segment, String> {
    let mut segment = Segment::new();
    for item in items {
        let item = item.as_ref().trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "{what} {item:?} is not KEY=VALUE (for example zone=east)"
            ));
        };
        let key = full_key(key.trim(), what)?;
        let value = value.trim();
        check_value(value).map_err(|e| format!("{what} {item:?}: the value {e}"))?;
        if segment.insert(key.clone(), value.to_owned()).is_some() {
            return Err(format!("{what} names {key} twice"));
        }
    }
    Ok(segment)
}

/// `zone` → `topology.gluster.heketi.csi/zone`; a full key must have [`PREFIX`].
pub fn full_key(key: &str, what: &str) -> Result<String, String> {
    let name = match key.split_once('/') {
        None => key,
        Some(_) => key.strip_prefix(PREFIX).ok_or_else(|| {
            format!(
                "{what}: the key {key:?} must be a plain name (zone) or start with {PREFIX}; \
                 keys of other prefixes belong to other drivers"
            )
        })?,
    };
    check_name(name).map_err(|e| format!("{what}: the key {key:?} {e}"))?;
    Ok(format!("{PREFIX}{name}"))
}

/// Whether a volume of a backend placed at `placed` can be reached from `segment`: every key of
/// the backend's placement is in the segment with the same value. A backend placed nowhere
/// (empty) serves every segment.
pub fn serves(placed: &Segment, segment: &std::collections::HashMap<String, String>) -> bool {
    placed
        .iter()
        .all(|(k, v)| segment.get(k).is_some_and(|s| s == v))
}

/// A label name: 1 to 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    label_chars(name).map_err(|e| format!("is not a label name: {e}"))
}

/// A label value: empty, or as a name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    label_chars(value).map_err(|e| format!("{value:?} is not a label value: {e}"))
}

fn label_chars(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !s.chars().all(ok_inner) {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_get_the_prefix_and_bad_ones_are_named() {
        let s = parse_segment(&["zone=east", " site = dc-1 "], "--topology").expect("ok");
        assert_eq!(
            s.get("topology.gluster.heketi.csi/zone")
                .map(String::as_str),
            Some("east")
        );
        assert_eq!(
            s.get("topology.gluster.heketi.csi/site")
                .map(String::as_str),
            Some("dc-1")
        );
        let full = parse_segment(&["topology.gluster.heketi.csi/zone=west"], "x").expect("ok");
        assert_eq!(full.len(), 1);
        for (bad, says) in [
            ("zone", "KEY=VALUE"),
            ("zone=", "empty"),
            ("=east", "empty name"),
            ("topology.kubernetes.io/zone=east", "other drivers"),
            ("zone=east west", "label value"),
            ("zone=-east", "start and end"),
            ("zo ne=east", "label name"),
        ] {
            let e = parse_segment(&[bad], "--topology").expect_err(bad);
            assert!(e.contains("--topology") && e.contains(says), "{bad}: {e}");
        }
        let e = parse_segment(&["zone=a", "zone=b"], "--topology").expect_err("twice");
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_backend_serves_the_segments_that_hold_its_placement() {
        let placed = parse_segment(&["zone=east"], "x").expect("ok");
        let seg = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert!(serves(&placed, &seg(&[("zone", "east")])));
        assert!(serves(&placed, &seg(&[("zone", "east"), ("rack", "r1")])));
        assert!(!serves(&placed, &seg(&[("zone", "west")])));
        assert!(!serves(&placed, &seg(&[("rack", "r1")])));
        assert!(serves(&Segment::new(), &seg(&[("zone", "west")])));
    }
}
