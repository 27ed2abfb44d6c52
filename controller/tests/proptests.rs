//! Property tests of the controller's parsers: StorageClass parameters ([`ClassParams::parse`],
//! [`VolumeType::parse`], [`check_url`], CSI secrets) and the volume id ([`VolumeId`]).
//!
//! Whatever the input, parsing never panics, and every rejection is the documented one:
//! [`Error::InvalidArgument`] for parameters and secrets (never `Internal`), `None` for a volume
//! id that is not ours. Accepted values keep the invariants the rest of the controller relies on
//! (no shell-special character reaches a `volumeoptions` item, ids round-trip). Error messages
//! never quote a secret value.

use std::collections::HashMap;

use gluster_csi_controller::error::Error;
use gluster_csi_controller::names::{heketi_name, is_driver_volume};
use gluster_csi_controller::params::{
    ClassParams, Credentials, GID_MAX, GID_MIN, VolumeType, check_url,
};
use gluster_csi_controller::volume_id::{
    BackendRef, CLUSTER_TAG_LEN, MAX_ID_LEN, MAX_URL_REST, MAX_URL_REST_TAGGED, VolumeId,
};
use proptest::prelude::*;

/// The StorageClass keys of the driver (as documented in `params.rs`).
const KEYS: &[&str] = &[
    "resturl",
    "restauthenabled",
    "restuser",
    "restuserkey",
    "secretName",
    "secretNamespace",
    "clusterid",
    "gidMin",
    "gidMax",
    "volumetype",
    "volumeoptions",
    "volumenameprefix",
    "snapfactor",
    "customepnameprefix",
];

/// Characters a shell, `mount.glusterfs` or the gluster CLI would read specially.
const SHELL_SPECIAL: &[char] = &[
    ';', '|', '&', '$', '`', '(', ')', '<', '>', '\'', '"', '\\', '*', '?', '[', ']', '{', '}',
    '!', '#', '~', '\n', '\r', '\t', ' ', '\0',
];

/// A key of the driver in random letter case, a sidecar key, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (prop::sample::select(KEYS), any::<u64>()).prop_map(|(k, bits)| {
            k.chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
        1 => "csi\\.storage\\.k8s\\.io/[a-z/-]{1,20}",
        1 => ".{0,20}",
    ]
}

/// Values that look like what each parameter takes, plus anything at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,12}",
        "(replicate|disperse|none|REPLICATE)(:[0-9]{1,3}){0,3}",
        "https?://[a-z0-9.:-]{0,30}(/[a-z]{0,5})?",
        "([a-z.-]{1,12} [a-z0-9:./@+=%-]{1,8}, ?){0,3}",
        "[0-9a-fA-F]{32}(,[0-9a-f]{0,33}){0,2}",
        "(true|false|TRUE|yes)",
        "[a-z0-9.-]{0,20}",
        "[0-9]{1,3}\\.[0-9]{1,3}",
        ".{0,40}",
    ]
}

fn params() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(key(), value(), 0..8)
}

fn is_invalid_argument<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    match r {
        Ok(_) | Err(Error::InvalidArgument(_)) => true,
        Err(_) => false,
    }
}

/// A `volumeoptions` item the parser accepts.
fn option_item() -> impl Strategy<Value = (String, String)> {
    ("[a-z][a-z.-]{0,20}", "[a-z0-9][a-z0-9:./@+=%-]{0,10}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any parameter map: no panic, rejections are InvalidArgument, and what is accepted holds
    /// the documented invariants.
    #[test]
    fn class_parameters_parse_or_are_invalid_argument(p in params()) {
        let r = ClassParams::parse(&p);
        prop_assert!(is_invalid_argument(&r), "{r:?}");
        if let Ok(c) = r {
            prop_assert!(c.gid_range.min >= GID_MIN && c.gid_range.max <= GID_MAX);
            prop_assert!(c.gid_range.min <= c.gid_range.max);
            prop_assert!((1.0..=100.0).contains(&c.snap_factor));
            for item in &c.volume_options {
                let words: Vec<&str> = item.split(' ').collect();
                prop_assert_eq!(words.len(), 2, "{:?}", item);
                prop_assert!(!item.contains(SHELL_SPECIAL.iter().filter(|c| **c != ' ')
                    .copied().collect::<Vec<char>>().as_slice()), "{:?}", item);
            }
            if let Some(url) = &c.resturl {
                prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                prop_assert!(!url.chars().any(char::is_whitespace));
            }
            for id in &c.clusters {
                prop_assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()));
            }
        }
    }

    /// A shell metacharacter, a newline, a space-separated extra word or a whole second
    /// command smuggled into a `volumeoptions` item is refused.
    #[test]
    fn volume_options_with_shell_syntax_are_refused(
        items in prop::collection::vec(option_item(), 1..4),
        which in any::<prop::sample::Index>(),
        bad in prop::sample::select(SHELL_SPECIAL),
        at in any::<prop::sample::Index>(),
        in_name in any::<bool>(),
    ) {
        let target = which.index(items.len());
        let text: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, (name, val))| {
                if i != target {
                    return format!("{name} {val}");
                }
                let mut word: Vec<char> = if in_name { name.chars().collect() } else { val.chars().collect() };
                word.insert(at.index(word.len() + 1), bad);
                let word: String = word.into_iter().collect();
                if in_name { format!("{word} {val}") } else { format!("{name} {word}") }
            })
            .collect();
        let value = text.join(",");
        // A space or tab inside the value makes a third word; a separator at the end of the
        // name or the start of the value is only white space, which the item format allows.
        let r = ClassParams::parse(&HashMap::from([("volumeoptions".to_owned(), value.clone())]));
        match r {
            Err(Error::InvalidArgument(_)) => {}
            Ok(c) => {
                // Only white space at a word edge is harmless; anything else must be refused.
                prop_assert!(matches!(bad, ' ' | '\t' | '\n' | '\r'), "{value:?} accepted");
                for item in &c.volume_options {
                    prop_assert!(!item.contains(['\n', '\r', '\t']), "{item:?}");
                }
            }
            Err(e) => prop_assert!(false, "{value:?}: {e:?}"),
        }
    }

    /// A second gluster command appended as another comma-separated item is refused.
    #[test]
    fn a_second_gluster_command_is_refused(
        (name, val) in option_item(),
        cmd in prop::sample::select(vec![
            "volume stop v", "volume delete v force", "peer detach 10.0.0.1",
            "volume set v auth.allow *", "--mode=script volume stop v",
        ]),
    ) {
        let value = format!("{name} {val},{cmd}");
        let r = ClassParams::parse(&HashMap::from([("volumeoptions".to_owned(), value.clone())]));
        prop_assert!(matches!(r, Err(Error::InvalidArgument(_))), "{value:?}: {r:?}");
    }

    /// `volumetype`: no panic, InvalidArgument or a type whose text parses back to itself.
    #[test]
    fn volume_type_round_trips(s in prop_oneof![
        "(replicate|disperse|none|Replicate|DISPERSE)(:[0-9 ]{1,4}){0,3}", ".{0,20}",
    ]) {
        match VolumeType::parse(&s) {
            Ok(t) => prop_assert_eq!(VolumeType::parse(&t.to_string()).ok(), Some(t)),
            Err(Error::InvalidArgument(_)) => {}
            Err(e) => prop_assert!(false, "{s:?}: {e:?}"),
        }
    }

    /// Any string as a volume id: no panic; what parses is exactly what encoding gives back.
    #[test]
    fn volume_ids_parse_canonically(s in prop_oneof![
        ".{0,140}",
        "1:[0-9a-f]{32}(:[hs][A-Za-z0-9_-]{0,90})?",
        "1:[0-9a-fA-F]{30,34}(:[a-z][A-Za-z0-9_=+/-]{0,20}){0,2}",
        "1:[0-9a-f]{32}(:[hs][A-Za-z0-9_-]{0,90})?(:c[0-9a-fA-F]{6,10})?",
    ]) {
        if let Some(id) = VolumeId::parse(&s) {
            prop_assert_eq!(id.encode().ok(), Some(s.clone()));
            prop_assert!(s.len() <= MAX_ID_LEN);
            prop_assert!(id.heketi_id.len() == 32);
        }
    }

    /// Every `resturl` the parameter check accepts and that fits in an id round-trips through
    /// the id; one that does not fit is refused when encoding, never mangled.
    #[test]
    fn accepted_resturls_round_trip_through_the_id(
        url in prop_oneof!["https?://[^\\s?#@]{1,100}", "https?://[a-z0-9.-]{1,40}(:[0-9]{1,5})?(/[a-z]{1,8})?/?"],
        heketi in "[0-9a-f]{32}",
    ) {
        let Ok(url) = check_url(&url) else { return Ok(()); };
        let id = VolumeId::new(BackendRef::Url(url.clone()), &heketi);
        match id.encode() {
            Ok(s) => {
                prop_assert!(s.len() <= MAX_ID_LEN);
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_')), "{s}");
                prop_assert_eq!(VolumeId::parse(&s), Some(id));
            }
            Err(_) => {
                let rest = url.split_once("://").map_or(0, |(_, r)| r.len());
                prop_assert!(rest > MAX_URL_REST, "{url} fits but was refused");
            }
        }
    }

    /// With a cluster tag: the id round-trips with the tag whenever there is room for it
    /// (always for URLs up to `MAX_URL_REST_TAGGED` bytes), and without it (same backend, same
    /// volume) otherwise.
    #[test]
    fn cluster_tags_round_trip_when_they_fit(
        url in "https?://[a-z0-9.-]{1,80}",
        heketi in "[0-9a-f]{32}",
        cluster in "[0-9a-f]{32}",
    ) {
        let Ok(url) = check_url(&url) else { return Ok(()); };
        let id = VolumeId::new(BackendRef::Url(url.clone()), &heketi).in_cluster(&cluster);
        let rest = url.split_once("://").map_or(0, |(_, r)| r.len());
        let Ok(s) = id.encode() else {
            prop_assert!(rest > MAX_URL_REST, "{url} fits but was refused");
            return Ok(());
        };
        let Some(parsed) = VolumeId::parse(&s) else {
            return Err(TestCaseError::fail(format!("{s} does not parse")));
        };
        prop_assert_eq!(&parsed.backend, &id.backend);
        prop_assert_eq!(&parsed.heketi_id, &id.heketi_id);
        match parsed.cluster {
            Some(tag) => prop_assert_eq!(tag.as_str(), &cluster[..CLUSTER_TAG_LEN]),
            None => {
                prop_assert!(rest > MAX_URL_REST_TAGGED, "{url}: no tag although it fits");
                prop_assert!(s.len() + 2 + CLUSTER_TAG_LEN > MAX_ID_LEN, "{s}: room was left");
            }
        }
    }

    /// CSI secrets: no panic, InvalidArgument when unusable, and no error message quotes a
    /// secret value.
    #[test]
    fn secrets_are_parsed_without_leaking_values(
        entries in prop::collection::hash_map(
            prop_oneof![Just("key".to_owned()), Just("user".to_owned()), "[a-zA-Z]{1,8}"],
            "SECRET-[a-zA-Z0-9 \\n:;\"]{0,12}",
            0..4,
        ),
        params in params(),
    ) {
        let r = Credentials::from_secrets(&entries);
        prop_assert!(is_invalid_argument(&r), "{r:?}");
        if entries.is_empty() {
            prop_assert!(matches!(r, Ok(None)));
        }
        let mut all = Vec::new();
        if let Err(e) = &r { all.push(e.to_string()); }
        if let Ok(c) = ClassParams::parse(&params) {
            let r = c.credentials(&entries);
            prop_assert!(is_invalid_argument(&r), "{r:?}");
            if let Err(e) = &r { all.push(e.to_string()); }
        }
        for msg in &all {
            for v in entries.values() {
                prop_assert!(!msg.contains(v.as_str()), "{msg:?} quotes the secret {v:?}");
            }
        }
    }

    /// `restuserkey` is a secret too: no error about the parameters quotes it.
    #[test]
    fn rest_user_key_is_never_quoted(mut p in params(), secret in "SECRET-[A-Za-z0-9]{8}") {
        p.insert("restuserkey".into(), secret.clone());
        if let Err(e) = ClassParams::parse(&p) {
            prop_assert!(!e.to_string().contains(&secret), "{e}");
        }
    }

    /// Heketi names made from any CSI name are recognised as the driver's; arbitrary names
    /// never panic the check.
    #[test]
    fn heketi_names_are_recognised(csi in ".{0,200}", prefix in "[A-Za-z0-9-]{0,32}", any_name in ".{0,60}") {
        let name = heketi_name(&csi, Some(&prefix));
        prop_assert!(is_driver_volume(&name), "{name}");
        prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let _ = is_driver_volume(&any_name);
    }
}
