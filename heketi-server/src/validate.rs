//! Request bodies as Heketi reads and checks them.
//!
//! Bodies are read leniently (numbers as signed integers, the durability type as free text) so
//! that each mistake gets Heketi's own status and message rather than a generic parse error:
//! a body that is not JSON of the right shape is 422 `request unable to be parsed`; field
//! checks give 400 `validation failed: <field>: <reason>.` in the format of the Go validation
//! library Heketi uses (fields sorted, `; `-separated, nested structures in parentheses).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use heketi_client::types::{
    DisperseDurability, DurabilityType, EntryState, ReplicaDurability, SnapshotSettings,
    VolumeDurabilityInfo,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::model::GIB_IN_KIB;

/// Smallest brick Heketi makes (1 GiB), in KiB.
pub const BRICK_MIN_KIB: u64 = GIB_IN_KIB;

/// Reads a JSON body; anything unreadable is 422.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::unparsable())
}

/// Field errors in the format of Heketi's validation library.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, FieldError>);

/// One field's error: a message, or the errors of a nested structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// A message.
    Msg(String),
    /// Errors inside a nested structure.
    Nested(FieldErrors),
}

impl FieldErrors {
    /// Records `msg` for `field`.
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.0.insert(field.to_owned(), FieldError::Msg(msg.into()));
    }

    /// Records the errors of a nested structure, if any.
    pub fn nest(&mut self, field: &str, inner: FieldErrors) {
        if !inner.0.is_empty() {
            self.0.insert(field.to_owned(), FieldError::Nested(inner));
        }
    }

    /// `Ok` when empty, else 400 `validation failed: …`.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!("validation failed: {self}")))
        }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match v {
                FieldError::Msg(m) => write!(f, "{k}: {m}")?,
                FieldError::Nested(n) => write!(f, "{k}: ({n})")?,
            }
        }
        f.write_str(".")
    }
}

const BLANK: &str = "cannot be blank";
const FORMAT: &str = "must be in a valid format";

/// `[A-Fa-f0-9]{32}`: a Heketi id.
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[A-Fa-f0-9]+`: what Heketi's routes accept as an id segment.
pub fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `^[a-zA-Z0-9_-]+$`: a volume name.
pub fn is_volume_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^/[a-zA-Z0-9_.:/-]+$`: a device name.
pub fn is_device_name(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

/// An IP address or a DNS name.
pub fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    if s.is_empty() || s.replace('.', "").len() > 255 {
        return false;
    }
    let trimmed = s.strip_suffix(['.', '_']).unwrap_or(s);
    !trimmed.is_empty()
        && trimmed.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        })
}

fn check_tags(errs: &mut FieldErrors, tags: &BTreeMap<String, String>) {
    if tags.len() > 32 {
        errs.add(
            "tags",
            format!(
                "too many tags specified ({}), up to 32 supported",
                tags.len()
            ),
        );
        return;
    }
    for (k, v) in tags {
        let msg = if k.is_empty() {
            Some("tag names may not be empty".to_owned())
        } else if k.chars().count() > 32 {
            Some(format!("tag name {k}: the length must be between 1 and 32"))
        } else if v.chars().count() > 64 {
            Some(format!(
                "value of tag {k}: the length must be no more than 64"
            ))
        } else if !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            Some(format!("invalid characters in tag name {k}"))
        } else {
            None
        };
        if let Some(m) = msg {
            errs.add("tags", m);
            return;
        }
    }
}

fn check_id_field(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, BLANK);
    } else if !is_id(value) {
        errs.add(field, format!("{value} is not a valid UUID"));
    }
}

// ---------------------------------------------------------------- clusters

/// Body of `POST /clusters` and `POST /clusters/{id}/flags`.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterFlagsBody {
    /// Block volumes allowed.
    #[serde(default)]
    pub block: bool,
    /// File volumes allowed.
    #[serde(default)]
    pub file: bool,
}

// ---------------------------------------------------------------- nodes

/// Body of `POST /nodes`.
#[derive(Debug, Default, Deserialize)]
pub struct NodeAddBody {
    /// Failure zone.
    #[serde(default)]
    pub zone: i64,
    /// Addresses.
    #[serde(default)]
    pub hostnames: HostnamesBody,
    /// Cluster id.
    #[serde(default)]
    pub cluster: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `hostnames` of a node.
#[derive(Debug, Default, Deserialize)]
pub struct HostnamesBody {
    /// Management addresses.
    #[serde(default)]
    pub manage: Vec<String>,
    /// Storage addresses.
    #[serde(default)]
    pub storage: Vec<String>,
}

fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

impl NodeAddBody {
    /// Heketi's checks of a node-add request.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut errs = FieldErrors::default();
        if self.zone == 0 {
            errs.add("zone", BLANK);
        } else if self.zone < 1 {
            errs.add("zone", "must be no less than 1");
        }
        let mut h = FieldErrors::default();
        for (field, list, kind) in [
            ("manage", &self.hostnames.manage, "manage"),
            ("storage", &self.hostnames.storage, "storage"),
        ] {
            if list.is_empty() {
                h.add(field, BLANK);
            } else if !list.iter().all(|x| is_host(x)) {
                h.add(
                    field,
                    format!("{} is not a valid {kind} hostname", go_list(list)),
                );
            }
        }
        errs.nest("hostnames", h);
        check_id_field(&mut errs, "cluster", &self.cluster);
        check_tags(&mut errs, &self.tags);
        errs.into_result()
    }
}

// ---------------------------------------------------------------- devices

/// Body of `POST /devices`. Besides Heketi's fields it may carry `size_kib`, the declared
/// capacity of the device directory; without it the capacity is the size of the file system
/// holding the directory.
#[derive(Debug, Default, Deserialize)]
pub struct DeviceAddBody {
    /// Absolute path of the directory.
    #[serde(default)]
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Node id.
    #[serde(default)]
    pub node: String,
    /// Accepted for compatibility; the directory's content is never wiped.
    #[serde(default)]
    pub destroydata: bool,
    /// Declared capacity in KiB (extension).
    #[serde(default)]
    pub size_kib: Option<u64>,
}

impl DeviceAddBody {
    /// Heketi's checks of a device-add request.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut errs = FieldErrors::default();
        if self.name.is_empty() {
            errs.add("name", BLANK);
        } else if !is_device_name(&self.name) {
            errs.add("name", FORMAT);
        }
        check_tags(&mut errs, &self.tags);
        check_id_field(&mut errs, "node", &self.node);
        if self.size_kib == Some(0) {
            errs.add("size_kib", "must be no less than 1");
        }
        errs.into_result()
    }
}

// ---------------------------------------------------------------- state

/// Body of `POST /nodes/{id}/state` and `POST /devices/{id}/state`.
#[derive(Debug, Default, Deserialize)]
pub struct StateBody {
    /// `online`, `offline` or `failed`.
    #[serde(default)]
    pub state: String,
    /// `enable`, `disable` or empty.
    #[serde(default)]
    pub healcheck: String,
}

impl StateBody {
    /// Heketi's checks; returns the wanted state.
    pub fn validate(&self) -> Result<EntryState, ApiError> {
        let mut errs = FieldErrors::default();
        if !matches!(self.healcheck.as_str(), "" | "enable" | "disable") {
            errs.add(
                "healcheck",
                format!("{} is not valid heal info check", self.healcheck),
            );
            return errs.into_result().map(|_| EntryState::Online);
        }
        let state = match self.state.as_str() {
            "" => {
                errs.add("state", BLANK);
                None
            }
            "online" => Some(EntryState::Online),
            "offline" => Some(EntryState::Offline),
            "failed" => Some(EntryState::Failed),
            other => {
                errs.add("state", format!("{other} is not valid state"));
                None
            }
        };
        errs.into_result()?;
        state.ok_or_else(|| ApiError::bad_request("validation failed: state: cannot be blank."))
    }
}

// ---------------------------------------------------------------- volumes

/// Body of `POST /volumes`.
#[derive(Debug, Default, Deserialize)]
pub struct VolumeCreateBody {
    /// GiB.
    #[serde(default)]
    pub size: i64,
    /// Candidate clusters.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Redundancy.
    #[serde(default)]
    pub durability: DurabilityBody,
    /// Group of the volume root.
    #[serde(default)]
    pub gid: i64,
    /// `gluster volume set` items.
    #[serde(default)]
    pub glustervolumeoptions: Vec<String>,
    /// Block-hosting volume.
    #[serde(default)]
    pub block: bool,
    /// Snapshot reserve.
    #[serde(default)]
    pub snapshot: SnapshotBody,
}

/// `durability` of a create request.
#[derive(Debug, Default, Deserialize)]
pub struct DurabilityBody {
    /// `replicate`, `disperse`, `none` or empty.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Replica settings.
    #[serde(default)]
    pub replicate: ReplicaBody,
    /// Disperse settings.
    #[serde(default)]
    pub disperse: DisperseBody,
}

/// `durability.replicate`.
#[derive(Debug, Default, Deserialize)]
pub struct ReplicaBody {
    /// Copies.
    #[serde(default)]
    pub replica: i64,
}

/// `durability.disperse`.
#[derive(Debug, Default, Deserialize)]
pub struct DisperseBody {
    /// Data fragments.
    #[serde(default)]
    pub data: i64,
    /// Redundancy fragments.
    #[serde(default)]
    pub redundancy: i64,
}

/// `snapshot`.
#[derive(Debug, Default, Deserialize)]
pub struct SnapshotBody {
    /// Reserve room.
    #[serde(default)]
    pub enable: bool,
    /// Factor.
    #[serde(default)]
    pub factor: f64,
}

/// One `gluster volume set` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeOption {
    /// Option key.
    pub key: String,
    /// Option value.
    pub value: String,
}

/// Splits a `glustervolumeoptions` item into exactly a key and a value. The key must look like
/// a Gluster option name and neither part may start with `-` (the gluster CLI would read it as
/// one of its own flags).
pub fn parse_volume_option(item: &str) -> Result<VolumeOption, ApiError> {
    let parts: Vec<&str> = item.split_whitespace().collect();
    let bad = |why: &str| ApiError::bad_request(format!("Invalid volume option \"{item}\": {why}"));
    let [key, value] = parts.as_slice() else {
        return Err(bad("expected \"<key> <value>\""));
    };
    if key.starts_with('-') || value.starts_with('-') {
        return Err(bad("key and value must not start with \"-\""));
    }
    let key_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && key.contains('.');
    if !key_ok {
        return Err(bad("the key is not a Gluster option name"));
    }
    if value.chars().any(char::is_control) {
        return Err(bad("the value contains control characters"));
    }
    Ok(VolumeOption {
        key: (*key).to_owned(),
        value: (*value).to_owned(),
    })
}

/// A create request that passed every check that needs no state.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateSpec {
    /// GiB.
    pub size_gib: u64,
    /// Candidate clusters (all when empty).
    pub clusters: Vec<String>,
    /// Name, when given.
    pub name: Option<String>,
    /// Redundancy with defaults filled in.
    pub durability: VolumeDurabilityInfo,
    /// Group (0: none).
    pub gid: i64,
    /// Items as given.
    pub options: Vec<String>,
    /// Parsed items.
    pub parsed_options: Vec<VolumeOption>,
    /// Snapshot settings as given.
    pub snapshot: SnapshotSettings,
}

impl VolumeCreateBody {
    /// Heketi's checks, in Heketi's order, plus option parsing.
    pub fn validate(&self) -> Result<CreateSpec, ApiError> {
        let mut errs = FieldErrors::default();
        if !self.name.is_empty() && !is_volume_name(&self.name) {
            errs.add("name", FORMAT);
        }
        if self.size == 0 {
            errs.add("size", BLANK);
        } else if self.size < 1 {
            errs.add("size", "must be no less than 1");
        }
        errs.into_result()?;

        if self.gid < 0 {
            return Err(ApiError::bad_request("Bad group id less than zero"));
        }
        if self.gid >= i64::from(i32::MAX) {
            return Err(ApiError::bad_request(
                "Bad group id equal or greater than 2**32",
            ));
        }
        let kind = match self.durability.kind.as_str() {
            "replicate" => DurabilityType::Replicate,
            "disperse" => DurabilityType::Disperse,
            "none" | "" => DurabilityType::None,
            _ => return Err(ApiError::bad_request("Unknown durability type")),
        };
        if self.size < 1 {
            return Err(ApiError::bad_request("Invalid volume size"));
        }
        if self.snapshot.enable && !(1.0..=100.0).contains(&self.snapshot.factor) {
            return Err(ApiError::bad_request("Invalid snapshot factor"));
        }
        let durability = match kind {
            DurabilityType::Replicate => {
                let r = self.durability.replicate.replica;
                if !(0..=3).contains(&r) {
                    return Err(ApiError::bad_request("Invalid replica value"));
                }
                VolumeDurabilityInfo {
                    kind,
                    replicate: ReplicaDurability {
                        replica: if r == 0 { 2 } else { r as u32 },
                    },
                    disperse: DisperseDurability::default(),
                }
            }
            DurabilityType::Disperse => {
                let (d, r) = (
                    self.durability.disperse.data,
                    self.durability.disperse.redundancy,
                );
                if !matches!((d, r), (2, 1) | (4, 2) | (8, 3) | (8, 4)) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid dispersion combination: {d}+{r}"
                    )));
                }
                VolumeDurabilityInfo::disperse(d as u32, r as u32)
            }
            DurabilityType::None => VolumeDurabilityInfo::none(),
        };
        if self.block {
            return Err(ApiError::bad_request(
                "Block-hosting volumes are not supported by this server",
            ));
        }
        let parsed_options = self
            .glustervolumeoptions
            .iter()
            .map(|o| parse_volume_option(o))
            .collect::<Result<Vec<_>, _>>()?;

        let size_gib = self.size as u64;
        let min = min_volume_kib(&durability);
        if size_gib.saturating_mul(GIB_IN_KIB) < min {
            return Err(ApiError::bad_request(format!(
                "Requested volume size ({size_gib} GB) is smaller than the minimum supported volume size ({min})"
            )));
        }
        Ok(CreateSpec {
            size_gib,
            clusters: self.clusters.clone(),
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            durability,
            gid: self.gid,
            options: self.glustervolumeoptions.clone(),
            parsed_options,
            snapshot: SnapshotSettings {
                enable: self.snapshot.enable,
                factor: self.snapshot.factor as f32,
            },
        })
    }
}

/// Heketi's minimum volume size for a durability, KiB.
pub fn min_volume_kib(d: &VolumeDurabilityInfo) -> u64 {
    match d.kind {
        DurabilityType::Disperse => BRICK_MIN_KIB * u64::from(d.disperse.data),
        _ => BRICK_MIN_KIB,
    }
}

/// Body of `POST /volumes/{id}/expand`.
#[derive(Debug, Default, Deserialize)]
pub struct ExpandBody {
    /// GiB to add.
    #[serde(default)]
    pub expand_size: i64,
}

impl ExpandBody {
    /// Heketi's checks; returns the GiB to add.
    pub fn validate(&self) -> Result<u64, ApiError> {
        let mut errs = FieldErrors::default();
        if self.expand_size == 0 {
            errs.add("expand_size", BLANK);
        } else if self.expand_size < 1 {
            errs.add("expand_size", "must be no less than 1");
        }
        errs.into_result()?;
        Ok(self.expand_size as u64)
    }
}

/// Body of `POST /volumes/{id}/clone`.
#[derive(Debug, Default, Deserialize)]
pub struct CloneBody {
    /// Name of the clone.
    #[serde(default)]
    pub name: String,
    /// An extension (`heketi_client::types::VolumeCloneRequest::read_only`): make the clone
    /// read-only in Gluster once its data is in place. Heketi has no such field.
    #[serde(default)]
    pub read_only: bool,
}

/// A validated clone request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneSpec {
    /// Name of the clone, when one was asked for.
    pub name: Option<String>,
    /// Whether the clone ends read-only.
    pub read_only: bool,
}

impl CloneBody {
    /// Heketi's checks.
    pub fn validate(&self) -> Result<CloneSpec, ApiError> {
        let mut errs = FieldErrors::default();
        if !self.name.is_empty() && !is_volume_name(&self.name) {
            errs.add("name", FORMAT);
        }
        errs.into_result()?;
        Ok(CloneSpec {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            read_only: self.read_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn create(json: &str) -> Result<CreateSpec, ApiError> {
        parse_body::<VolumeCreateBody>(json.as_bytes()).and_then(|b| b.validate())
    }

    fn err(status: StatusCode, msg: &str) -> Result<CreateSpec, ApiError> {
        Err(ApiError::new(status, msg))
    }

    #[test]
    fn create_errors_match_heketi() {
        let cases = [
            (
                "not json",
                err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "request unable to be parsed",
                ),
            ),
            (
                r#"{"size":"1"}"#,
                err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "request unable to be parsed",
                ),
            ),
            (
                "{}",
                err(
                    StatusCode::BAD_REQUEST,
                    "validation failed: size: cannot be blank.",
                ),
            ),
            (
                r#"{"size":0,"name":"a b"}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "validation failed: name: must be in a valid format; size: cannot be blank.",
                ),
            ),
            (
                r#"{"size":-1}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "validation failed: size: must be no less than 1.",
                ),
            ),
            (
                r#"{"size":1,"gid":-1}"#,
                err(StatusCode::BAD_REQUEST, "Bad group id less than zero"),
            ),
            (
                r#"{"size":1,"gid":2147483647}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Bad group id equal or greater than 2**32",
                ),
            ),
            (
                r#"{"size":1,"durability":{"type":"mirror"}}"#,
                err(StatusCode::BAD_REQUEST, "Unknown durability type"),
            ),
            (
                r#"{"size":1,"snapshot":{"enable":true,"factor":0.5}}"#,
                err(StatusCode::BAD_REQUEST, "Invalid snapshot factor"),
            ),
            (
                r#"{"size":1,"durability":{"type":"replicate","replicate":{"replica":4}}}"#,
                err(StatusCode::BAD_REQUEST, "Invalid replica value"),
            ),
            (
                r#"{"size":1,"durability":{"type":"disperse","disperse":{"data":3,"redundancy":1}}}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Invalid dispersion combination: 3+1",
                ),
            ),
            (
                r#"{"size":1,"durability":{"type":"disperse"}}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Invalid dispersion combination: 0+0",
                ),
            ),
            (
                r#"{"size":3,"durability":{"type":"disperse","disperse":{"data":4,"redundancy":2}}}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Requested volume size (3 GB) is smaller than the minimum supported volume size (4194304)",
                ),
            ),
            (
                r#"{"size":1,"glustervolumeoptions":["performance.quick-read"]}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Invalid volume option \"performance.quick-read\": expected \"<key> <value>\"",
                ),
            ),
            (
                r#"{"size":1,"block":true}"#,
                err(
                    StatusCode::BAD_REQUEST,
                    "Block-hosting volumes are not supported by this server",
                ),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(create(body), want, "{body}");
        }
    }

    #[test]
    fn create_defaults() {
        let s = create(r#"{"size":2,"durability":{"type":"replicate","replicate":{}}}"#)
            .expect("valid");
        assert_eq!(s.durability, VolumeDurabilityInfo::replicate(2));
        assert_eq!(s.name, None);
        let s = create(r#"{"size":2,"durability":{"type":""}}"#).expect("valid");
        assert_eq!(s.durability.kind, DurabilityType::None);
        let s = create(
            r#"{"size":4,"name":"pv_1","gid":2001,"durability":{"type":"disperse","disperse":{"data":4,"redundancy":2}},
               "glustervolumeoptions":["performance.quick-read off","user.heketi.arbiter  true"]}"#,
        )
        .expect("valid");
        assert_eq!(s.durability, VolumeDurabilityInfo::disperse(4, 2));
        assert_eq!(s.name.as_deref(), Some("pv_1"));
        assert_eq!(
            s.parsed_options,
            [
                VolumeOption {
                    key: "performance.quick-read".into(),
                    value: "off".into()
                },
                VolumeOption {
                    key: "user.heketi.arbiter".into(),
                    value: "true".into()
                },
            ]
        );
    }

    #[test]
    fn volume_options_are_key_and_value_only() {
        for bad in [
            "",
            "a.b",
            "a.b c d",
            "--xml on",
            "a.b --mode=x",
            "a;b c",
            "nodots x",
            "$(id).x y",
        ] {
            assert!(parse_volume_option(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_volume_option("  network.ping-timeout   10 ").is_ok());
        assert!(parse_volume_option("auth.allow 10.0.0.1,10.0.0.2").is_ok());
    }

    #[test]
    fn node_errors_match_heketi() {
        let node = |j: &str| parse_body::<NodeAddBody>(j.as_bytes()).and_then(|b| b.validate());
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            node("{}").map_err(|e| e.message),
            Err("validation failed: cluster: cannot be blank; hostnames: (manage: cannot be blank; storage: cannot be blank.); zone: cannot be blank.".into())
        );
        assert_eq!(
            node(&format!(r#"{{"zone":1,"cluster":"{id}","hostnames":{{"manage":["a b"],"storage":["10.0.0.1"]}}}}"#))
                .map_err(|e| e.message),
            Err("validation failed: hostnames: (manage: [a b] is not a valid manage hostname.).".into())
        );
        assert_eq!(
            node(r#"{"zone":-1,"cluster":"xyz","hostnames":{"manage":["h1"],"storage":["10.0.0.1"]}}"#)
                .map_err(|e| e.message),
            Err("validation failed: cluster: xyz is not a valid UUID; zone: must be no less than 1.".into())
        );
        assert!(
            node(&format!(r#"{{"zone":1,"cluster":"{id}","hostnames":{{"manage":["node-1.example.com"],"storage":["10.0.0.1"]}}}}"#))
                .is_ok()
        );
    }

    #[test]
    fn device_and_state_errors() {
        let dev = |j: &str| parse_body::<DeviceAddBody>(j.as_bytes()).and_then(|b| b.validate());
        assert_eq!(
            dev(r#"{"name":"relative","node":"x"}"#).map_err(|e| e.message),
            Err(
                "validation failed: name: must be in a valid format; node: x is not a valid UUID."
                    .into()
            )
        );
        assert!(dev(r#"{"name":"/srv/b-1","node":"0123456789abcdef0123456789abcdef","size_kib":1048576}"#).is_ok());
        let st = |j: &str| parse_body::<StateBody>(j.as_bytes()).and_then(|b| b.validate());
        assert_eq!(st(r#"{"state":"offline"}"#), Ok(EntryState::Offline));
        assert_eq!(
            st(r#"{"state":"sleeping"}"#).map_err(|e| e.message),
            Err("validation failed: state: sleeping is not valid state.".into())
        );
        assert_eq!(
            st("{}").map_err(|e| e.message),
            Err("validation failed: state: cannot be blank.".into())
        );
    }

    #[test]
    fn expand_and_clone() {
        let ex = |j: &str| parse_body::<ExpandBody>(j.as_bytes()).and_then(|b| b.validate());
        assert_eq!(ex(r#"{"expand_size":2}"#), Ok(2));
        assert_eq!(
            ex("{}").map_err(|e| e.message),
            Err("validation failed: expand_size: cannot be blank.".into())
        );
        let cl = |j: &str| parse_body::<CloneBody>(j.as_bytes()).and_then(|b| b.validate());
        assert_eq!(cl("{}"), Ok(CloneSpec::default()));
        assert!(cl(r#"{"name":"bad name"}"#).is_err());
        assert_eq!(
            cl(r#"{"name":"c1","read_only":true}"#),
            Ok(CloneSpec {
                name: Some("c1".into()),
                read_only: true
            })
        );
        assert_eq!(cl(r#"{"read_only":false}"#), Ok(CloneSpec::default()));
        // What heketi-client sends: the field only when true.
        let sent = serde_json::to_string(&heketi_client::types::VolumeCloneRequest {
            name: "c2".into(),
            read_only: true,
        })
        .unwrap_or_default();
        assert_eq!(cl(&sent).map(|c| c.read_only), Ok(true));
        // Not a boolean: unparsable, as any mistyped field.
        assert_eq!(
            cl(r#"{"read_only":"yes"}"#).map_err(|e| e.status),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
    }

    #[test]
    fn hosts_and_names() {
        assert!(is_host("10.0.0.1"));
        assert!(is_host("fd00::1"));
        assert!(is_host("gluster-1.example.com"));
        assert!(!is_host(""));
        assert!(!is_host("a b"));
        assert!(!is_host("-a"));
        assert!(is_id("0123456789abcdefABCDEF0123456789"));
        assert!(!is_id("0123"));
        assert!(is_device_name("/var/lib/bricks/b-1"));
        assert!(!is_device_name("/a b"));
        assert!(!is_device_name("/"));
    }
}
