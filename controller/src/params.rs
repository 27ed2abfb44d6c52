//! StorageClass parameters → a typed, validated request.
//!
//! Every parameter of the in-tree `kubernetes.io/glusterfs` provisioner is accepted with the
//! same meaning, so a class can switch provisioner without being rewritten:
//!
//! | key (case-insensitive) | default | meaning here |
//! |---|---|---|
//! | `resturl` | `--heketi-url` | Heketi base URL (`http://` or `https://`) |
//! | `restauthenabled` | `true` | `false`: talk to Heketi without a token |
//! | `restuser` | `admin` | JWT issuer when no secret names a `user` |
//! | `restuserkey` | — | plain-text key, used when no CSI secret gives a `key` |
//! | `secretName`, `secretNamespace` | — | both or neither; see [`ClassParams::credentials`] |
//! | `clusterid` | any cluster | comma-separated Heketi cluster ids |
//! | `gidMin`, `gidMax` | 2000, 2147483647 | range the volume's gid is allocated from |
//! | `volumetype` | `replicate:3` | `replicate[:N]`, `disperse:D:R`, `none`; always sent |
//! | `volumeoptions` | — | comma-separated `"<option> <value>"` items for `gluster volume set` |
//! | `volumenameprefix` | — | prefix of the Heketi volume name (no `_`) |
//! | `snapfactor` | 1 | thin-pool room for snapshots/clones, 1–100 |
//! | `customepnameprefix` | — | accepted without effect (CSI needs no Endpoints), ≤ 26 chars |
//!
//! Keys starting with `csi.storage.k8s.io/` belong to the sidecars and are ignored. An empty
//! value means "not set". Any other key is an error naming it.

use std::collections::HashMap;

use heketi_client::types::{DurabilityType, VolumeDurabilityInfo};
use secrecy::SecretString;

use crate::error::{Error, Result};
use crate::volume_id::BackendRef;

/// Lowest gid a StorageClass may hand out (the in-tree `absoluteGidMin`).
pub const GID_MIN: u32 = 2000;
/// Highest gid a StorageClass may hand out (`int32` max).
pub const GID_MAX: u32 = i32::MAX as u32;
/// Longest `volumenameprefix`, so Heketi volume names stay short.
pub const MAX_NAME_PREFIX: usize = 32;
/// Longest `customepnameprefix` the in-tree provisioner accepted.
pub const MAX_EP_NAME_PREFIX: usize = 26;
/// Prefix of the keys owned by the CSI sidecars.
pub const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

const KNOWN_KEYS: &[&str] = &[
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

/// The redundancy of a volume (`volumetype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeType {
    /// `replicate:N`: N full copies.
    Replicate(u32),
    /// `disperse:D:R`: erasure coding.
    Disperse {
        /// Data fragments.
        data: u32,
        /// Redundancy fragments.
        redundancy: u32,
    },
    /// `none`: distribute only.
    None,
}

/// The disperse combinations Heketi accepts.
const DISPERSE_COMBINATIONS: &[(u32, u32)] = &[(2, 1), (4, 2), (8, 3), (8, 4)];

impl Default for VolumeType {
    fn default() -> Self {
        Self::Replicate(3)
    }
}

impl std::fmt::Display for VolumeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replicate(n) => write!(f, "replicate:{n}"),
            Self::Disperse { data, redundancy } => write!(f, "disperse:{data}:{redundancy}"),
            Self::None => f.write_str("none"),
        }
    }
}

impl VolumeType {
    /// Parses a `volumetype` value.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "parameter volumetype {value:?}: {why}; use replicate:N (N = 1, 2 or 3), \
                 disperse:DATA:REDUNDANCY (2:1, 4:2, 8:3 or 8:4) or none"
            ))
        };
        let parts: Vec<&str> = value.trim().split(':').map(str::trim).collect();
        let number = |s: &str, what: &str| {
            s.parse::<u32>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a whole number")))
        };
        match parts.as_slice() {
            [kind] if kind.eq_ignore_ascii_case("replicate") => Ok(Self::Replicate(3)),
            [kind, n] if kind.eq_ignore_ascii_case("replicate") => {
                let n = number(n, "the replica count")?;
                if !(1..=3).contains(&n) {
                    return Err(bad("the replica count must be 1, 2 or 3"));
                }
                Ok(Self::Replicate(n))
            }
            [kind, d, r] if kind.eq_ignore_ascii_case("disperse") => {
                let data = number(d, "the data count")?;
                let redundancy = number(r, "the redundancy count")?;
                if !DISPERSE_COMBINATIONS.contains(&(data, redundancy)) {
                    return Err(bad(&format!(
                        "Heketi does not support {data} data + {redundancy} redundancy bricks"
                    )));
                }
                Ok(Self::Disperse { data, redundancy })
            }
            [kind, ..] if kind.eq_ignore_ascii_case("disperse") => {
                Err(bad("disperse needs both counts"))
            }
            [kind] if kind.eq_ignore_ascii_case("none") => Ok(Self::None),
            _ => Err(bad("unknown volume type")),
        }
    }

    /// The durability sent to Heketi (always explicit: Heketi's own default is no redundancy).
    pub fn durability(self) -> VolumeDurabilityInfo {
        match self {
            Self::Replicate(n) => VolumeDurabilityInfo::replicate(n),
            Self::Disperse { data, redundancy } => VolumeDurabilityInfo::disperse(data, redundancy),
            Self::None => VolumeDurabilityInfo::none(),
        }
    }

    /// The type of an existing Heketi volume, reading Heketi's defaults for zero counts.
    pub fn from_durability(d: &VolumeDurabilityInfo) -> Self {
        match d.kind {
            DurabilityType::Replicate => Self::Replicate(match d.replicate.replica {
                0 => 2,
                n => n,
            }),
            DurabilityType::Disperse => Self::Disperse {
                data: match d.disperse.data {
                    0 => 4,
                    n => n,
                },
                redundancy: match d.disperse.redundancy {
                    0 => 2,
                    n => n,
                },
            },
            DurabilityType::None => Self::None,
        }
    }

    /// Smallest volume of this type, in GiB: Heketi makes no brick below 1 GiB, and a disperse
    /// volume's size is split over its data bricks.
    pub fn min_gib(self) -> u64 {
        match self {
            Self::Disperse { data, .. } => u64::from(data.max(1)),
            Self::Replicate(_) | Self::None => 1,
        }
    }

    /// Usable bytes out of `raw` bytes of brick space.
    pub fn usable(self, raw: u64) -> u64 {
        let raw = u128::from(raw);
        let usable = match self {
            Self::Replicate(n) => raw / u128::from(n.max(1)),
            Self::Disperse { data, redundancy } => {
                raw * u128::from(data) / u128::from((data + redundancy).max(1))
            }
            Self::None => raw,
        };
        u64::try_from(usable).unwrap_or(u64::MAX)
    }
}

/// The pool a volume's gid comes from (`gidMin`..=`gidMax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GidRange {
    /// Lowest gid.
    pub min: u32,
    /// Highest gid.
    pub max: u32,
}

impl Default for GidRange {
    fn default() -> Self {
        Self {
            min: GID_MIN,
            max: GID_MAX,
        }
    }
}

/// How to authenticate to Heketi.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// JWT issuer.
    pub user: String,
    /// The key; `None` talks to Heketi without a token (`restauthenabled: "false"`).
    pub key: Option<SecretString>,
}

/// Default JWT issuer.
pub const DEFAULT_USER: &str = "admin";

impl Credentials {
    /// Credentials from a CSI secret (`key`, optional `user`); `None` when the secret map is
    /// empty. A non-empty secret without `key` is an error.
    pub fn from_secrets(secrets: &HashMap<String, String>) -> Result<Option<Self>> {
        Self::from_secrets_or(secrets, None)
    }

    fn from_secrets_or(
        secrets: &HashMap<String, String>,
        fallback_user: Option<&str>,
    ) -> Result<Option<Self>> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let Some(key) = secrets.get("key").filter(|k| !k.is_empty()) else {
            let mut names: Vec<&str> = secrets.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(Error::invalid(format!(
                "the CSI secret has no `key` entry (it has: {}); put the Heketi key under `key` \
                 and, optionally, the Heketi user under `user`",
                names.join(", ")
            )));
        };
        let user = secrets
            .get("user")
            .filter(|u| !u.is_empty())
            .map(String::as_str)
            .or(fallback_user)
            .unwrap_or(DEFAULT_USER);
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_graphic()) {
            // A secret value: say what is wrong without quoting it.
            return Err(Error::invalid(
                "the CSI secret's `user` is not a Heketi user name (printable ASCII, no spaces); \
                 use admin (or user)",
            ));
        }
        Ok(Some(Self {
            user: user.to_owned(),
            key: Some(SecretString::from(
                key.trim_end_matches(['\n', '\r']).to_owned(),
            )),
        }))
    }
}

fn check_user(user: &str, what: &str) -> Result<()> {
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{what} {user:?} is not a Heketi user name; use admin (or user)"
        )));
    }
    Ok(())
}

/// StorageClass parameters, validated.
#[derive(Clone, Debug, Default)]
pub struct ClassParams {
    /// `resturl`, without a trailing slash.
    pub resturl: Option<String>,
    /// `restauthenabled` (default true).
    pub rest_auth_enabled: bool,
    /// `restuser`.
    pub rest_user: Option<String>,
    /// `restuserkey`.
    pub rest_user_key: Option<SecretString>,
    /// `secretName` and `secretNamespace`.
    pub secret_ref: Option<(String, String)>,
    /// `clusterid`, split.
    pub clusters: Vec<String>,
    /// `gidMin`..=`gidMax`.
    pub gid_range: GidRange,
    /// `volumetype`.
    pub volume_type: VolumeType,
    /// `volumeoptions`, each normalised to `"<option> <value>"`.
    pub volume_options: Vec<String>,
    /// `volumenameprefix`.
    pub name_prefix: Option<String>,
    /// `snapfactor`.
    pub snap_factor: f32,
    /// `customepnameprefix` (no effect).
    pub custom_ep_name_prefix: Option<String>,
}

impl ClassParams {
    /// Parses and validates StorageClass parameters.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self> {
        let mut out = Self {
            rest_auth_enabled: true,
            snap_factor: 1.0,
            ..Self::default()
        };
        let mut seen: HashMap<&'static str, &str> = HashMap::new();
        let mut keys: Vec<&String> = params.keys().collect();
        keys.sort_unstable();
        for key in keys {
            if key.to_ascii_lowercase().starts_with(SIDECAR_PREFIX) {
                continue;
            }
            let Some(canonical) = KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
                return Err(Error::invalid(format!(
                    "unknown StorageClass parameter {key:?}; the parameters of this driver are {} \
                     (case-insensitive) and the csi.storage.k8s.io/ ones; remove it or fix its \
                     spelling",
                    KNOWN_KEYS.join(", ")
                )));
            };
            if let Some(first) = seen.insert(canonical, key) {
                return Err(Error::invalid(format!(
                    "parameter {canonical} is given twice ({first:?} and {key:?}); keys are \
                     case-insensitive, keep one"
                )));
            }
        }
        // Values are checked once every key is known, in the documented order.
        for canonical in KNOWN_KEYS {
            let Some(key) = seen.get(canonical) else {
                continue;
            };
            let value = params[*key].trim();
            if value.is_empty() {
                continue;
            }
            out.set(canonical, value)?;
        }
        if out.gid_range.min > out.gid_range.max {
            return Err(Error::invalid(format!(
                "parameter gidMin ({}) is greater than gidMax ({}); make gidMin at most gidMax",
                out.gid_range.min, out.gid_range.max
            )));
        }
        let name = params
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case("secretName") && !v.trim().is_empty());
        let namespace = params
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case("secretNamespace") && !v.trim().is_empty());
        out.secret_ref = match (name, namespace) {
            (Some((_, n)), Some((_, ns))) => Some((n.trim().to_owned(), ns.trim().to_owned())),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(
                    "parameters secretName and secretNamespace must be set together or not at \
                     all; set both, or neither",
                ));
            }
        };
        if !out.rest_auth_enabled {
            // In-tree meaning: no authentication at all.
            out.rest_user = None;
            out.rest_user_key = None;
            out.secret_ref = None;
        }
        Ok(out)
    }

    fn set(&mut self, key: &'static str, value: &str) -> Result<()> {
        match key {
            "resturl" => self.resturl = Some(check_url(value)?),
            "restauthenabled" => {
                self.rest_auth_enabled = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::invalid(format!(
                            "parameter restauthenabled must be \"true\" or \"false\", not \
                             {value:?}"
                        )));
                    }
                }
            }
            "restuser" => {
                check_user(value, "parameter restuser")?;
                self.rest_user = Some(value.to_owned());
            }
            "restuserkey" => self.rest_user_key = Some(SecretString::from(value.to_owned())),
            // Read as a pair after the loop.
            "secretName" | "secretNamespace" => {
                if !is_dns_name(value) {
                    return Err(Error::invalid(format!(
                        "parameter {key} {value:?} is not a Kubernetes object name (lowercase \
                         letters, digits, '-' and '.')"
                    )));
                }
            }
            "clusterid" => self.clusters = parse_clusters(value)?,
            "gidMin" => self.gid_range.min = parse_gid(key, value)?,
            "gidMax" => self.gid_range.max = parse_gid(key, value)?,
            "volumetype" => self.volume_type = VolumeType::parse(value)?,
            "volumeoptions" => self.volume_options = parse_volume_options(value)?,
            "volumenameprefix" => self.name_prefix = Some(check_name_prefix(value)?),
            "snapfactor" => self.snap_factor = parse_snap_factor(value)?,
            "customepnameprefix" => {
                if value.len() > MAX_EP_NAME_PREFIX {
                    return Err(Error::invalid(format!(
                        "parameter customepnameprefix is {} characters long; at most \
                         {MAX_EP_NAME_PREFIX} are allowed (it has no effect with CSI, you may \
                         also remove it)",
                        value.len()
                    )));
                }
                self.custom_ep_name_prefix = Some(value.to_owned());
            }
            other => return Err(Error::Internal(format!("unhandled parameter {other}"))),
        }
        Ok(())
    }

    /// Which Heketi: `resturl`, or the default backend.
    pub fn backend(&self) -> BackendRef {
        match &self.resturl {
            Some(url) => BackendRef::Url(url.clone()),
            None => BackendRef::Default,
        }
    }

    /// The credentials to use, in order: `restauthenabled: "false"` → none at all; the CSI
    /// secret (`key`, optional `user`); `restuserkey`/`restuser`. `Ok(None)` means the class
    /// gives no credentials (the backend's own are used).
    ///
    /// `secretName`/`secretNamespace` need the Kubernetes API: CreateVolume reads them through
    /// [`crate::kube::secrets::class_credentials`]; here, without API access, they are an error
    /// that explains the CSI way.
    pub fn credentials(&self, secrets: &HashMap<String, String>) -> Result<Option<Credentials>> {
        if !self.rest_auth_enabled {
            return Ok(Some(Credentials {
                user: self
                    .rest_user
                    .clone()
                    .unwrap_or_else(|| DEFAULT_USER.into()),
                key: None,
            }));
        }
        if let Some(c) = Credentials::from_secrets_or(secrets, self.rest_user.as_deref())? {
            return Ok(Some(c));
        }
        if let Some(key) = &self.rest_user_key {
            return Ok(Some(Credentials {
                user: self
                    .rest_user
                    .clone()
                    .unwrap_or_else(|| DEFAULT_USER.into()),
                key: Some(key.clone()),
            }));
        }
        if let Some((name, namespace)) = &self.secret_ref {
            return Err(Error::invalid(format!(
                "parameters secretName/secretNamespace ({namespace}/{name}) are read only when a \
                 volume is created; for this call give the Heketi key as a CSI secret: add \
                 csi.storage.k8s.io/provisioner-secret-name: {name}, \
                 csi.storage.k8s.io/provisioner-secret-namespace: {namespace} (and the same for \
                 controller-expand-secret-*) to the StorageClass"
            )));
        }
        Ok(None)
    }
}

/// Checks and normalises a Heketi URL (`resturl`).
pub fn check_url(value: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "parameter resturl {value:?} {why}; set it to Heketi's base URL, e.g. \
             http://heketi.storage.svc:8080"
        ))
    };
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@'))
    {
        return Err(bad(
            "contains whitespace, a query, a fragment or user information",
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn is_dns_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn parse_clusters(value: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "parameter clusterid: {id:?} is not a Heketi cluster id (32 hexadecimal \
                 characters); list the ids with `heketi-cli cluster list` and separate several \
                 with commas"
            )));
        }
        let id = id.to_ascii_lowercase();
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn parse_gid(key: &str, value: &str) -> Result<u32> {
    let n: i64 = value.parse().map_err(|_| {
        Error::invalid(format!(
            "parameter {key} {value:?} is not a whole number; use a value from {GID_MIN} to \
             {GID_MAX}"
        ))
    })?;
    if n < i64::from(GID_MIN) || n > i64::from(GID_MAX) {
        return Err(Error::invalid(format!(
            "parameter {key} is {n}; it must be from {GID_MIN} to {GID_MAX}"
        )));
    }
    u32::try_from(n).map_err(|_| Error::Internal(format!("{key} {n} out of range")))
}

fn is_option_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_option_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@' | '+' | '=' | '%')
}

/// Splits `volumeoptions` on `,`; each item must be `<option> <value>` in a charset that no
/// shell reads specially (Heketi interpolates the item into a command line).
fn parse_volume_options(value: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let words: Vec<&str> = item.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        let [name, val] = words.as_slice() else {
            return Err(Error::invalid(format!(
                "parameter volumeoptions: item {item:?} must be \"<option> <value>\" (one \
                 space), e.g. \"performance.quick-read off\"; separate items with commas"
            )));
        };
        if let Some(c) = name.chars().find(|c| !is_option_name_char(*c)) {
            return Err(Error::invalid(format!(
                "parameter volumeoptions: option name {name:?} contains {c:?}; an option name \
                 may hold letters, digits, '.', '_' and '-'"
            )));
        }
        if let Some(c) = val.chars().find(|c| !is_option_value_char(*c)) {
            return Err(Error::invalid(format!(
                "parameter volumeoptions: the value of {name} contains {c:?}; a value may hold \
                 letters, digits and . _ - : / @ + = % (no shell metacharacters, quotes, \
                 wildcards or spaces)"
            )));
        }
        out.push(format!("{name} {val}"));
    }
    Ok(out)
}

fn check_name_prefix(value: &str) -> Result<String> {
    if value.contains('_') {
        return Err(Error::invalid(format!(
            "parameter volumenameprefix {value:?} must not contain '_' (it separates the \
             prefix from the rest of the name); use '-' instead"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(Error::invalid(format!(
            "parameter volumenameprefix {value:?} contains {c:?}; use letters, digits and '-'"
        )));
    }
    if value.len() > MAX_NAME_PREFIX {
        return Err(Error::invalid(format!(
            "parameter volumenameprefix is {} characters long; at most {MAX_NAME_PREFIX} are \
             allowed",
            value.len()
        )));
    }
    Ok(value.to_owned())
}

fn parse_snap_factor(value: &str) -> Result<f32> {
    let bad = || {
        Error::invalid(format!(
            "parameter snapfactor {value:?} must be a number from 1 to 100 (the thin-pool size \
             as a multiple of the volume size)"
        ))
    };
    let f: f32 = value.parse().map_err(|_| bad())?;
    if !f.is_finite() || !(1.0..=100.0).contains(&f) {
        return Err(bad());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ClassParams> {
        ClassParams::parse(&map(pairs))
    }

    #[test]
    fn defaults() {
        let p = parse(&[]).expect("empty is fine");
        assert_eq!(p.volume_type, VolumeType::Replicate(3));
        assert_eq!(p.gid_range, GidRange::default());
        assert!(p.rest_auth_enabled);
        assert_eq!(p.snap_factor, 1.0);
        assert_eq!(p.backend(), BackendRef::Default);
        assert!(p.credentials(&HashMap::new()).expect("ok").is_none());
        assert_eq!(
            p.volume_type.durability(),
            VolumeDurabilityInfo::replicate(3),
            "the default type is sent explicitly"
        );
    }

    #[test]
    fn every_in_tree_parameter_is_accepted_case_insensitively() {
        let p = parse(&[
            ("RESTURL", "http://heketi.storage.svc:8080/"),
            ("restAuthEnabled", "TRUE"),
            ("restuser", "admin"),
            ("restuserkey", "k1"),
            ("secretname", "heketi-secret"),
            ("SECRETNAMESPACE", "default"),
            (
                "clusterid",
                "0123456789abcdef0123456789ABCDEF, fedcba9876543210fedcba9876543210",
            ),
            ("gidmin", "40000"),
            ("GIDMAX", "50000"),
            ("volumeType", "disperse:4:2"),
            (
                "volumeoptions",
                "client.ssl on, performance.quick-read off,",
            ),
            ("VolumeNamePrefix", "dept-a"),
            ("snapfactor", "10"),
            ("customepnameprefix", "myprefix"),
            ("csi.storage.k8s.io/provisioner-secret-name", "x"),
            ("csi.storage.k8s.io/pvc/name", "claim"),
        ])
        .expect("valid");
        assert_eq!(p.resturl.as_deref(), Some("http://heketi.storage.svc:8080"));
        assert_eq!(
            p.backend(),
            BackendRef::Url("http://heketi.storage.svc:8080".into())
        );
        assert_eq!(p.rest_user.as_deref(), Some("admin"));
        assert_eq!(
            p.secret_ref,
            Some(("heketi-secret".into(), "default".into()))
        );
        assert_eq!(
            p.clusters,
            vec![
                "0123456789abcdef0123456789abcdef".to_owned(),
                "fedcba9876543210fedcba9876543210".to_owned()
            ]
        );
        assert_eq!(
            p.gid_range,
            GidRange {
                min: 40000,
                max: 50000
            }
        );
        assert_eq!(
            p.volume_type,
            VolumeType::Disperse {
                data: 4,
                redundancy: 2
            }
        );
        assert_eq!(
            p.volume_options,
            vec![
                "client.ssl on".to_owned(),
                "performance.quick-read off".to_owned()
            ]
        );
        assert_eq!(p.name_prefix.as_deref(), Some("dept-a"));
        assert_eq!(p.snap_factor, 10.0);
        assert_eq!(p.custom_ep_name_prefix.as_deref(), Some("myprefix"));
        // restuserkey is used when no CSI secret is given, even with secretName set.
        let c = p.credentials(&HashMap::new()).expect("ok").expect("some");
        assert_eq!(c.user, "admin");
        assert_eq!(c.key.as_ref().map(|k| k.expose_secret()), Some("k1"));
    }

    #[test]
    fn volume_types() {
        for (v, want) in [
            ("replicate", VolumeType::Replicate(3)),
            ("replicate:1", VolumeType::Replicate(1)),
            ("Replicate:2", VolumeType::Replicate(2)),
            (" replicate : 3 ", VolumeType::Replicate(3)),
            (
                "disperse:2:1",
                VolumeType::Disperse {
                    data: 2,
                    redundancy: 1,
                },
            ),
            (
                "disperse:8:4",
                VolumeType::Disperse {
                    data: 8,
                    redundancy: 4,
                },
            ),
            ("none", VolumeType::None),
            ("NONE", VolumeType::None),
        ] {
            assert_eq!(VolumeType::parse(v).expect(v), want, "{v}");
            assert_eq!(
                VolumeType::from_durability(&want.durability()),
                want,
                "{v} round trip"
            );
        }
        assert_eq!(
            VolumeType::from_durability(&VolumeDurabilityInfo {
                kind: DurabilityType::Replicate,
                ..Default::default()
            }),
            VolumeType::Replicate(2),
            "Heketi reads replica 0 as 2"
        );
    }

    #[test]
    fn usable_capacity_by_type() {
        let raw = 90 << 30;
        assert_eq!(VolumeType::Replicate(3).usable(raw), 30 << 30);
        assert_eq!(VolumeType::None.usable(raw), raw);
        assert_eq!(
            VolumeType::Disperse {
                data: 4,
                redundancy: 2
            }
            .usable(raw),
            60 << 30
        );
        assert_eq!(VolumeType::Replicate(3).usable(u64::MAX), u64::MAX / 3);
        assert_eq!(VolumeType::Replicate(3).min_gib(), 1);
        assert_eq!(VolumeType::None.min_gib(), 1);
        assert_eq!(
            VolumeType::Disperse {
                data: 8,
                redundancy: 3
            }
            .min_gib(),
            8
        );
    }

    /// Every invalid parameter, with words its message must contain.
    #[test]
    fn invalid_parameter_messages() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("foo", "bar")],
                &["unknown StorageClass parameter \"foo\"", "resturl"],
            ),
            (
                &[("resturl", "a"), ("RESTURL", "b")],
                &["resturl is given twice"],
            ),
            (&[("resturl", "ftp://h")], &["resturl", "http://"]),
            (&[("resturl", "http://")], &["resturl", "no host"]),
            (&[("resturl", "http://h:80/x?y")], &["resturl", "query"]),
            (
                &[("resturl", "http://u:p@h")],
                &["resturl", "user information"],
            ),
            (
                &[("restauthenabled", "yes")],
                &["restauthenabled", "\"true\" or \"false\""],
            ),
            (&[("restuser", "ad min")], &["restuser", "admin"]),
            (
                &[("secretName", "s")],
                &["secretName and secretNamespace", "together"],
            ),
            (
                &[("secretNamespace", "n")],
                &["secretName and secretNamespace", "together"],
            ),
            (
                &[("secretName", "Bad_Name"), ("secretNamespace", "n")],
                &["secretName", "Kubernetes object name"],
            ),
            (
                &[("clusterid", "abc")],
                &["clusterid", "\"abc\"", "32 hexadecimal"],
            ),
            (
                &[("clusterid", "0123456789abcdef0123456789abcdeg")],
                &["clusterid", "32 hexadecimal"],
            ),
            (&[("gidMin", "x")], &["gidMin", "whole number", "2000"]),
            (&[("gidMin", "1999")], &["gidMin is 1999", "2000"]),
            (&[("gidMax", "1000")], &["gidMax is 1000", "2000"]),
            (&[("gidMax", "2147483648")], &["gidMax", "2147483647"]),
            (
                &[("gidMin", "5000"), ("gidMax", "4000")],
                &["gidMin (5000) is greater than gidMax (4000)"],
            ),
            (
                &[("volumetype", "replicate:4")],
                &["volumetype", "1, 2 or 3"],
            ),
            (
                &[("volumetype", "replicate:0")],
                &["volumetype", "1, 2 or 3"],
            ),
            (
                &[("volumetype", "replicate:x")],
                &["volumetype", "\"x\" is not a whole number"],
            ),
            (
                &[("volumetype", "disperse:3:1")],
                &["volumetype", "3 data + 1 redundancy", "8:4"],
            ),
            (
                &[("volumetype", "disperse:4")],
                &["volumetype", "both counts"],
            ),
            (
                &[("volumetype", "mirror:2")],
                &["volumetype", "unknown volume type"],
            ),
            (
                &[("volumeoptions", "performance.quick-read")],
                &["volumeoptions", "\"<option> <value>\""],
            ),
            (
                &[("volumeoptions", "a b c")],
                &["volumeoptions", "\"<option> <value>\""],
            ),
            (&[("volumeoptions", "a;rm -rf")], &["volumeoptions", "';'"]),
            (
                &[("volumeoptions", "auth.allow $(reboot)")],
                &["volumeoptions", "'$'"],
            ),
            (
                &[("volumeoptions", "auth.allow 10.0.0.*")],
                &["volumeoptions", "'*'"],
            ),
            (&[("volumeoptions", "a `b`")], &["volumeoptions", "'`'"]),
            (&[("volumeoptions", "a b\nc d")], &["volumeoptions"]),
            (&[("volumeoptions", "a 'b'")], &["volumeoptions", "'\\''"]),
            (
                &[("volumenameprefix", "a_b")],
                &["volumenameprefix", "must not contain '_'"],
            ),
            (&[("volumenameprefix", "a.b")], &["volumenameprefix", "'.'"]),
            (
                &[("volumenameprefix", &"x".repeat(33))],
                &["volumenameprefix", "at most 32"],
            ),
            (&[("snapfactor", "0.5")], &["snapfactor", "from 1 to 100"]),
            (&[("snapfactor", "101")], &["snapfactor", "from 1 to 100"]),
            (&[("snapfactor", "NaN")], &["snapfactor", "from 1 to 100"]),
            (&[("snapfactor", "many")], &["snapfactor", "from 1 to 100"]),
            (
                &[("customepnameprefix", &"e".repeat(27))],
                &["customepnameprefix", "at most 26"],
            ),
        ];
        for (pairs, words) in cases {
            match parse(pairs) {
                Ok(_) => panic!("{pairs:?} must be rejected"),
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{pairs:?}");
                    let msg = e.to_string();
                    for w in *words {
                        assert!(msg.contains(w), "{pairs:?}: {msg:?} lacks {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_values_mean_unset() {
        let p = parse(&[("resturl", ""), ("volumetype", " "), ("gidMin", "")]).expect("ok");
        assert_eq!(p.resturl, None);
        assert_eq!(p.volume_type, VolumeType::Replicate(3));
        assert_eq!(p.gid_range.min, GID_MIN);
    }

    #[test]
    fn credentials_order() {
        let secrets = map(&[("key", "from-secret"), ("user", "user")]);
        let key_only = map(&[("key", "from-secret\n")]);
        let p = parse(&[("restuser", "admin"), ("restuserkey", "from-class")]).expect("ok");

        let c = p.credentials(&secrets).expect("ok").expect("some");
        assert_eq!(c.user, "user");
        assert_eq!(
            c.key.as_ref().map(|k| k.expose_secret()),
            Some("from-secret")
        );

        let c = p.credentials(&key_only).expect("ok").expect("some");
        assert_eq!(
            c.user, "admin",
            "restuser names the user of a key-only secret"
        );
        assert_eq!(
            c.key.as_ref().map(|k| k.expose_secret()),
            Some("from-secret")
        );

        let c = p.credentials(&HashMap::new()).expect("ok").expect("some");
        assert_eq!(
            c.key.as_ref().map(|k| k.expose_secret()),
            Some("from-class")
        );

        let off = parse(&[
            ("restauthenabled", "false"),
            ("restuserkey", "x"),
            ("secretName", "s"),
            ("secretNamespace", "n"),
        ])
        .expect("ok");
        let c = off.credentials(&secrets).expect("ok").expect("some");
        assert!(c.key.is_none(), "restauthenabled=false means no token");

        let bad = p
            .credentials(&map(&[("password", "x")]))
            .expect_err("no key");
        assert!(bad.to_string().contains("no `key` entry"), "{bad}");
        assert!(
            bad.to_string().contains("password"),
            "names the entries it saw: {bad}"
        );
    }

    #[test]
    fn secret_reference_without_csi_secret_explains_the_csi_way() {
        let p = parse(&[("secretName", "heketi"), ("secretNamespace", "storage")]).expect("ok");
        let e = p
            .credentials(&HashMap::new())
            .expect_err("not readable yet");
        let msg = e.to_string();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        for w in [
            "secretName",
            "csi.storage.k8s.io/provisioner-secret-name: heketi",
            "csi.storage.k8s.io/provisioner-secret-namespace: storage",
            "controller-expand-secret",
        ] {
            assert!(msg.contains(w), "{msg} lacks {w}");
        }
        let c = p
            .credentials(&map(&[("key", "k")]))
            .expect("a CSI secret wins")
            .expect("some");
        assert_eq!(c.user, "admin");
    }

    #[test]
    fn secrets_never_reach_debug() {
        let p = parse(&[("restuserkey", "hunter2")]).expect("ok");
        assert!(!format!("{p:?}").contains("hunter2"));
        let c = Credentials::from_secrets(&map(&[("key", "hunter3")]))
            .expect("ok")
            .expect("some");
        assert!(!format!("{c:?}").contains("hunter3"));
    }
}
