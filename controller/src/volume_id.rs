//! The CSI volume id: versioned, at most 128 bytes, self-contained.
//!
//! DeleteVolume, ControllerExpandVolume, ValidateVolumeCapabilities and ControllerGetVolume get
//! no StorageClass parameters, so the id alone says which Heketi holds the volume and which
//! volume it is, even after the StorageClass was edited or deleted:
//!
//! ```text
//! 1:<heketi volume id>:n<name>         volume on the backend of that name (every new id)
//! 1:<heketi volume id>                 volume on the controller's default backend (old ids)
//! 1:<heketi volume id>:h<base64url>    volume on http://<decoded> (old ids, and classes with
//! 1:<heketi volume id>:s<base64url>    volume on https://<decoded>  a resturl of no backend)
//! … :c<8 hex>                          (optional, last) the volume's Heketi cluster
//! ```
//!
//! A backend name ([`crate::backends_file::is_backend_name`]: `[a-z0-9-]`, at most 63
//! characters) always fits with the cluster tag. Naming the backend instead of its URL lets the
//! URL change (`crate::backends_file`), and the controller sends nothing to an address taken
//! from an id unless the request brings its own credentials (`crate::backend`).
//!
//! `1` is the format version; the Heketi id is 32 lowercase hex characters; the URL after its
//! scheme is base64url without padding, so the id holds only `[A-Za-z0-9_:-]`. A URL longer than
//! [`MAX_URL_REST`] bytes after the scheme does not fit: CreateVolume refuses such a `resturl`
//! before creating anything. Anything that does not parse names no volume of ours.
//!
//! The cluster tag is the first [`CLUSTER_TAG_LEN`] characters of the id of the Heketi cluster
//! the volume was created in. It lets DeleteVolume tell "this Heketi has no such volume" from
//! "this is not the Heketi that made the volume" (`crate::controller`, `confirm_gone`). It is
//! written when the id has room for it (every id of the default backend, and URLs of up to
//! [`MAX_URL_REST_TAGGED`] bytes after the scheme); ids without it, including every id written
//! before it existed, stay valid.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest CSI volume id (CSI spec).
pub const MAX_ID_LEN: usize = 128;
/// Length of a Heketi id.
pub const HEKETI_ID_LEN: usize = 32;
/// Longest URL (without `http://`/`https://`) that fits in an id.
pub const MAX_URL_REST: usize = (MAX_ID_LEN - 2 - HEKETI_ID_LEN - 2) / 4 * 3;

/// Characters of the cluster id kept in the cluster tag: 32 random bits, enough to tell one
/// Heketi's clusters from another's.
pub const CLUSTER_TAG_LEN: usize = 8;
/// Longest URL (without `http://`/`https://`) that leaves room for the cluster tag.
pub const MAX_URL_REST_TAGGED: usize =
    (MAX_ID_LEN - 2 - HEKETI_ID_LEN - 2 - 2 - CLUSTER_TAG_LEN) / 4 * 3;

const VERSION: &str = "1";

/// Which Heketi holds a volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendRef {
    /// The controller's default backend, whatever its URL is today (ids written before
    /// backends had names).
    Default,
    /// A backend of the controller's configuration, by name.
    Named(String),
    /// A Heketi named by URL (`resturl`), without a trailing slash.
    Url(String),
}

impl std::fmt::Display for BackendRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("the default backend"),
            Self::Named(n) => write!(f, "backend {n}"),
            Self::Url(u) => f.write_str(u),
        }
    }
}

/// A parsed volume id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeId {
    /// Where the volume lives.
    pub backend: BackendRef,
    /// Heketi's id of the volume (lowercase hex).
    pub heketi_id: String,
    /// The start of the id of the Heketi cluster that holds the volume ([`CLUSTER_TAG_LEN`]
    /// lowercase hex characters), when the id carries it.
    pub cluster: Option<String>,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A `resturl` too long to be encoded in a volume id.
#[derive(Debug, thiserror::Error)]
#[error(
    "resturl {url:?} is too long to be recorded in the CSI volume id (at most {MAX_URL_REST} \
     characters after http:// or https://); use a shorter address for Heketi, e.g. a Service \
     name or an IP address"
)]
pub struct UrlTooLong {
    /// The URL.
    pub url: String,
}

impl VolumeId {
    /// An id for `heketi_id` on `backend`.
    pub fn new(backend: BackendRef, heketi_id: &str) -> Self {
        Self {
            backend,
            heketi_id: heketi_id.to_ascii_lowercase(),
            cluster: None,
        }
    }

    /// This id with the tag of Heketi cluster `cluster_id`; unchanged when that is not a
    /// Heketi id.
    #[must_use]
    pub fn in_cluster(mut self, cluster_id: &str) -> Self {
        let tag = cluster_id
            .get(..CLUSTER_TAG_LEN)
            .map(str::to_ascii_lowercase)
            .filter(|t| is_lower_hex(t));
        if tag.is_some() {
            self.cluster = tag;
        }
        self
    }

    /// Whether `backend` can be written into an id at all.
    pub fn check_backend(backend: &BackendRef) -> Result<(), UrlTooLong> {
        Self::new(backend.clone(), &"0".repeat(HEKETI_ID_LEN))
            .encode()
            .map(|_| ())
    }

    /// The id string. The cluster tag is left out when the id would not fit with it.
    pub fn encode(&self) -> Result<String, UrlTooLong> {
        let mut out = format!("{VERSION}:{}", self.heketi_id);
        if let BackendRef::Named(name) = &self.backend {
            if !crate::backends_file::is_backend_name(name) {
                return Err(UrlTooLong { url: name.clone() });
            }
            out.push_str(":n");
            out.push_str(name);
        }
        if let BackendRef::Url(url) = &self.backend {
            let (tag, rest) = if let Some(rest) = url.strip_prefix("http://") {
                ('h', rest)
            } else if let Some(rest) = url.strip_prefix("https://") {
                ('s', rest)
            } else {
                return Err(UrlTooLong { url: url.clone() });
            };
            if rest.len() > MAX_URL_REST {
                return Err(UrlTooLong { url: url.clone() });
            }
            out.push(':');
            out.push(tag);
            out.push_str(&URL_SAFE_NO_PAD.encode(rest));
        }
        if out.len() > MAX_ID_LEN {
            return Err(UrlTooLong {
                url: self.backend.to_string(),
            });
        }
        if let Some(tag) = &self.cluster
            && out.len() + 2 + tag.len() <= MAX_ID_LEN
        {
            out.push_str(":c");
            out.push_str(tag);
        }
        Ok(out)
    }

    /// Parses an id; `None` when it is not one of ours (such an id names no volume).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_ID_LEN {
            return None;
        }
        let mut parts = s.split(':');
        if parts.next()? != VERSION {
            return None;
        }
        let id = parts.next()?;
        if id.len() != HEKETI_ID_LEN || !is_lower_hex(id) {
            return None;
        }
        let mut backend = BackendRef::Default;
        let mut cluster = None;
        let mut next = parts.next();
        if let Some(b) = next
            && !b.starts_with('c')
        {
            let (scheme, rest) = match b.split_at_checked(1)? {
                ("h", rest) => ("http://", rest),
                ("s", rest) => ("https://", rest),
                ("n", name) if crate::backends_file::is_backend_name(name) => ("", name),
                _ => return None,
            };
            if scheme.is_empty() {
                backend = BackendRef::Named(rest.to_owned());
            } else {
                let raw = URL_SAFE_NO_PAD.decode(rest).ok()?;
                let rest = String::from_utf8(raw).ok()?;
                if rest.is_empty() || rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return None;
                }
                backend = BackendRef::Url(format!("{scheme}{rest}"));
            }
            next = parts.next();
        }
        if let Some(c) = next {
            let tag = c.strip_prefix('c')?;
            if tag.len() != CLUSTER_TAG_LEN || !is_lower_hex(tag) {
                return None;
            }
            cluster = Some(tag.to_owned());
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            backend,
            heketi_id: id.to_owned(),
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        for backend in [
            BackendRef::Default,
            BackendRef::Url("http://heketi.storage.svc:8080".into()),
            BackendRef::Url("https://10.0.0.1:8443/heketi".into()),
            BackendRef::Url(format!("http://{}", "a".repeat(MAX_URL_REST))),
        ] {
            let id = VolumeId::new(backend.clone(), ID);
            let s = id.encode().expect("fits");
            assert!(s.len() <= MAX_ID_LEN, "{s}");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_')),
                "{s}"
            );
            assert_eq!(VolumeId::parse(&s), Some(id), "{s}");
        }
        assert_eq!(
            VolumeId::new(BackendRef::Default, ID).encode().ok(),
            Some(format!("1:{ID}"))
        );
    }

    const CLUSTER: &str = "A1B2C3D4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn round_trip_with_the_cluster_tag() {
        for backend in [
            BackendRef::Default,
            BackendRef::Url("http://heketi.storage.svc:8080".into()),
            BackendRef::Url(format!("https://{}", "b".repeat(MAX_URL_REST_TAGGED))),
        ] {
            let id = VolumeId::new(backend.clone(), ID).in_cluster(CLUSTER);
            assert_eq!(id.cluster.as_deref(), Some("a1b2c3d4"));
            let s = id.encode().expect("fits");
            assert!(s.len() <= MAX_ID_LEN, "{s}");
            assert!(s.ends_with(":ca1b2c3d4"), "{s}");
            assert_eq!(VolumeId::parse(&s), Some(id), "{s}");
        }
        assert_eq!(
            VolumeId::new(BackendRef::Default, ID)
                .in_cluster(CLUSTER)
                .encode()
                .ok(),
            Some(format!("1:{ID}:ca1b2c3d4"))
        );
        const { assert!(MAX_URL_REST_TAGGED >= 60, "room for realistic service URLs") };
    }

    #[test]
    fn the_tag_is_left_out_when_it_does_not_fit() {
        let url = format!("http://{}", "a".repeat(MAX_URL_REST));
        let id = VolumeId::new(BackendRef::Url(url.clone()), ID).in_cluster(CLUSTER);
        let s = id.encode().expect("fits without the tag");
        assert!(!s.contains(":c"), "{s}");
        assert_eq!(
            VolumeId::parse(&s),
            Some(VolumeId::new(BackendRef::Url(url), ID))
        );
    }

    #[test]
    fn ids_written_before_the_tag_still_parse() {
        let old_default = format!("1:{ID}");
        let old_url = format!("1:{ID}:h{}", URL_SAFE_NO_PAD.encode("heketi:8080"));
        for (s, backend) in [
            (old_default, BackendRef::Default),
            (old_url, BackendRef::Url("http://heketi:8080".into())),
        ] {
            let id = VolumeId::parse(&s).expect("parses");
            assert_eq!(id.backend, backend);
            assert_eq!(id.cluster, None);
            assert_eq!(id.encode().ok(), Some(s));
        }
    }

    #[test]
    fn named_backends_round_trip_with_the_tag_and_always_fit() {
        for name in [
            "default",
            "east-1",
            &"z".repeat(crate::backends_file::MAX_NAME_LEN),
        ] {
            let id = VolumeId::new(BackendRef::Named(name.to_owned()), ID).in_cluster(CLUSTER);
            let s = id.encode().expect("fits");
            assert!(s.len() <= MAX_ID_LEN, "{s}");
            assert_eq!(s, format!("1:{ID}:n{name}:ca1b2c3d4"));
            assert_eq!(VolumeId::parse(&s), Some(id), "{s}");
        }
        for bad in ["", "Upper", "a:b", "-x"] {
            assert!(
                VolumeId::new(BackendRef::Named(bad.into()), ID)
                    .encode()
                    .is_err()
            );
            assert_eq!(VolumeId::parse(&format!("1:{ID}:n{bad}")), None, "{bad}");
        }
    }

    #[test]
    fn a_cluster_id_that_is_no_heketi_id_gives_no_tag() {
        for bad in ["", "abc", "zzzzzzzz0000", "../../etc"] {
            assert_eq!(
                VolumeId::new(BackendRef::Default, ID)
                    .in_cluster(bad)
                    .cluster,
                None
            );
        }
    }

    #[test]
    fn upper_case_heketi_ids_are_normalised() {
        let id = VolumeId::new(BackendRef::Default, &ID.to_ascii_uppercase());
        assert_eq!(id.heketi_id, ID);
    }

    #[test]
    fn longest_url_fills_the_id_exactly_or_less() {
        let url = format!("https://{}", "x".repeat(MAX_URL_REST));
        let s = VolumeId::new(BackendRef::Url(url), ID)
            .encode()
            .expect("fits");
        assert!(s.len() <= MAX_ID_LEN);
        const { assert!(MAX_URL_REST >= 60, "room for realistic service URLs") };
    }

    #[test]
    fn too_long_url_is_refused_with_advice() {
        let url = format!("http://{}", "a".repeat(MAX_URL_REST + 1));
        let e = VolumeId::new(BackendRef::Url(url.clone()), ID)
            .encode()
            .expect_err("too long");
        assert!(e.to_string().contains("resturl"));
        assert!(VolumeId::check_backend(&BackendRef::Url(url)).is_err());
        assert!(VolumeId::check_backend(&BackendRef::Default).is_ok());
    }

    #[test]
    fn garbage_does_not_parse() {
        let long = format!("1:{ID}:h{}", "a".repeat(200));
        for s in [
            "",
            "fake-vol-id-xxxxxxxxxx",
            "1",
            "1:",
            "2:0123456789abcdef0123456789abcdef",
            "1:0123456789abcdef0123456789abcde",
            "1:0123456789abcdef0123456789abcdef0",
            "1:0123456789ABCDEF0123456789ABCDEF",
            "1:0123456789abcdef0123456789abcdeg",
            "1:0123456789abcdef0123456789abcdef:",
            "1:0123456789abcdef0123456789abcdef:x",
            "1:0123456789abcdef0123456789abcdef:h",
            "1:0123456789abcdef0123456789abcdef:h!!",
            "1:0123456789abcdef0123456789abcdef:aGVrZXRp:more",
            "1:0123456789abcdef0123456789abcdef:hICA", // "   "
            "1:0123456789abcdef0123456789abcdef:c",
            "1:0123456789abcdef0123456789abcdef:ca1b2c3d",
            "1:0123456789abcdef0123456789abcdef:ca1b2c3d4e",
            "1:0123456789abcdef0123456789abcdef:cA1B2C3D4",
            "1:0123456789abcdef0123456789abcdef:ca1b2c3d4:ca1b2c3d4",
            "1:0123456789abcdef0123456789abcdef:ca1b2c3d4:haGVrZXRp",
            "1:0123456789abcdef0123456789abcdef:haGVrZXRp:ca1b2c3d4:x",
            "1:0123456789abcdef0123456789abcdef:haGVrZXRp:haGVrZXRp",
            &long,
        ] {
            assert_eq!(VolumeId::parse(s), None, "{s:?}");
        }
    }
}
