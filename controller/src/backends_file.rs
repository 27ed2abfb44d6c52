//! The backends file (`--backends-file`): the Heketi backends the controller may talk to, by
//! name.
//!
//! ```yaml
//! default: east                 # optional: serves classes without resturl (default: `default`)
//! backends:
//!   - name: east                # [a-z0-9-], at most 63 characters; written into volume ids
//!     url: https://heketi-east.storage.svc:8443
//!     aliases:                  # URLs this backend had before; ids written with them map here
//!       - http://heketi-east.storage.svc:8080
//!     caFile: /etc/gluster-csi/ca/east.pem   # or `ca: |` with the PEM text
//!     secret:                   # credentials: data key `key`, optional `user`
//!       namespace: storage
//!       name: heketi-east-admin
//!     topology:                 # where its pool is: nodes with --topology zone=east reach it
//!       zone: east
//!   - name: default             # without url: adds aliases/CA/topology to the --heketi-url backend
//!     aliases: [http://10.0.0.5:8080]
//! ```
//!
//! JSON with the same fields is read as well (YAML is a superset of it). Unknown fields are
//! errors, so a misspelt one is not silently ignored. The Secret is read through the
//! Kubernetes API each time a call needs it, so a rotated key is used at once; the file itself
//! is read at start-up and again whenever its text changes (checked every few seconds: a
//! ConfigMap update reaches a running controller; a changed file that is not valid is logged
//! and the backends stay as they were).
//!
//! A volume id records the backend's *name* (`crate::volume_id`), so a backend's URL can
//! change in this file without stranding its volumes; ids written before names existed carry
//! a URL, which is looked up among every backend's `url` and `aliases`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::params::Credentials;
use gluster_csi_runtime::topology::{Segment, parse_segment};

/// The name of the backend of `--heketi-url`.
pub const DEFAULT_NAME: &str = "default";
/// Longest backend name.
pub const MAX_NAME_LEN: usize = 63;

/// How the controller authenticates to a backend when the request brings no credentials.
#[derive(Clone)]
pub enum BackendAuth {
    /// No token (Heketi with auth off).
    None,
    /// A key given to the controller (`--heketi-key-file`).
    Key {
        /// JWT issuer.
        user: String,
        /// The key.
        key: SecretString,
    },
    /// A Kubernetes Secret holding `key` (and optionally `user`).
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl std::fmt::Debug for BackendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Key { user, .. } => f
                .debug_struct("Key")
                .field("user", user)
                .field("key", &"<redacted>")
                .finish(),
            Self::Secret { namespace, name } => f
                .debug_struct("Secret")
                .field("namespace", namespace)
                .field("name", name)
                .finish(),
        }
    }
}

/// One backend: its name, where it is, and how to reach and authenticate to it.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    /// The name written into volume ids.
    pub name: String,
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Earlier URLs of this backend, without trailing slashes.
    pub aliases: Vec<String>,
    /// PEM CA certificates trusted for `https` besides the system's.
    pub ca: Option<Vec<u8>>,
    /// Its own credentials.
    pub auth: BackendAuth,
    /// Where its Gluster pool is (`topology: {zone: east}`): volumes made there are reachable
    /// from nodes whose topology holds this segment. Empty: from every node.
    pub topology: Segment,
}

impl BackendSpec {
    /// A client builder for this backend with `creds` (none: no token), the given timeouts
    /// and retry budget, and the backend's CA.
    pub fn builder(
        &self,
        creds: Option<&Credentials>,
        request_timeout: Duration,
        operation_deadline: Duration,
        retry_budget: Duration,
    ) -> heketi_client::ClientBuilder {
        builder(
            &self.url,
            self.ca.as_deref(),
            creds,
            request_timeout,
            operation_deadline,
            retry_budget,
        )
    }
}

/// A client builder for `url`.
pub fn builder(
    url: &str,
    ca: Option<&[u8]>,
    creds: Option<&Credentials>,
    request_timeout: Duration,
    operation_deadline: Duration,
    retry_budget: Duration,
) -> heketi_client::ClientBuilder {
    let mut b = heketi_client::ClientBuilder::new(url)
        .request_timeout(request_timeout)
        .operation_deadline(operation_deadline)
        .retry_budget(retry_budget);
    if let Some(ca) = ca {
        b = b.ca_pem(ca.to_vec());
    }
    match creds {
        Some(Credentials {
            user,
            key: Some(key),
        }) => b.user(user).key(key.clone()),
        _ => b.disable_auth(),
    }
}

/// The form URLs are compared in: without trailing slashes, lowercase (scheme and host are
/// case-insensitive; no two Heketis differ by the case of a path).
pub fn url_key(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether `name` can be a backend name: `[a-z0-9-]`, starting and ending with a letter or
/// digit, at most [`MAX_NAME_LEN`] characters (a DNS label, so it fits any volume id).
pub fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Reads a PEM CA bundle, checking that it holds a certificate.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    check_ca(&pem)?;
    Ok(pem)
}

fn check_ca(pem: &[u8]) -> Result<(), String> {
    // The client parses it for real; this only catches a file that is not PEM at all.
    if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackend {
    name: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    secret: Option<RawSecret>,
    #[serde(default)]
    topology: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    namespace: String,
    name: String,
}

/// The backends of a file, with those given by flags.
#[derive(Debug)]
pub struct Loaded {
    /// Every backend.
    pub backends: Vec<BackendSpec>,
    /// The name of the default backend, if any.
    pub default: Option<String>,
}

/// Reads and checks `path`; `from_flags` are the backends given on the command line (the one
/// of `--heketi-url`, named [`DEFAULT_NAME`]). The error names the entry and the field.
pub fn load(path: &Path, from_flags: Vec<BackendSpec>) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse(&text, from_flags)
}

fn check_url(what: &str, url: &str) -> Result<String, String> {
    crate::params::check_url(url)
        .map_err(|_| format!("{what} {url:?} is not an http:// or https:// URL with a host"))
}

/// Parses the text of a backends file; see [`load`].
pub fn parse(text: &str, from_flags: Vec<BackendSpec>) -> Result<Loaded, String> {
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid: {e}"))?;
    let mut out: BTreeMap<String, BackendSpec> = from_flags
        .into_iter()
        .map(|b| (b.name.clone(), b))
        .collect();
    let flag_names: Vec<String> = out.keys().cloned().collect();
    for b in raw.backends {
        let name = b.name.trim().to_owned();
        if !is_backend_name(&name) {
            return Err(format!(
                "backend name {name:?} is not usable: use 1 to {MAX_NAME_LEN} lowercase letters, \
                 digits and '-', starting and ending with a letter or digit"
            ));
        }
        let at = |field: &str| format!("backend {name}: {field}");
        let ca = match (b.ca_file, b.ca) {
            (Some(_), Some(_)) => {
                return Err(at("give caFile or ca, not both"));
            }
            (Some(path), None) => {
                Some(read_ca(&path).map_err(|e| at(&format!("caFile {}: {e}", path.display())))?)
            }
            (None, Some(pem)) => {
                check_ca(pem.as_bytes()).map_err(|e| at(&format!("ca {e}")))?;
                Some(pem.into_bytes())
            }
            (None, None) => None,
        };
        let mut aliases = Vec::new();
        for a in &b.aliases {
            aliases.push(check_url(&at("alias"), a)?);
        }
        let items: Vec<String> = b.topology.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let topology = parse_segment(&items, &at("topology"))?;
        if flag_names.contains(&name) {
            // Adds to the backend of the flags: aliases and a CA only.
            if b.url.is_some() || b.secret.is_some() {
                return Err(at(
                    "this name is the backend of --heketi-url; an entry of that name may add \
                     aliases and a CA only (remove url and secret, or use another name)",
                ));
            }
            let spec = out
                .get_mut(&name)
                .ok_or_else(|| at("internal: flag backend missing"))?;
            spec.aliases.extend(aliases);
            if ca.is_some() {
                spec.ca = ca;
            }
            if !topology.is_empty() {
                spec.topology = topology;
            }
            continue;
        }
        if out.contains_key(&name) {
            return Err(at("named twice; give each backend one entry"));
        }
        let url = b
            .url
            .ok_or_else(|| at("url is required (e.g. http://heketi.storage.svc:8080)"))?;
        let url = check_url(&at("url"), &url)?;
        let auth = match b.secret {
            Some(s) => {
                if s.namespace.trim().is_empty() || s.name.trim().is_empty() {
                    return Err(at("secret needs both namespace and name"));
                }
                BackendAuth::Secret {
                    namespace: s.namespace.trim().to_owned(),
                    name: s.name.trim().to_owned(),
                }
            }
            None => BackendAuth::None,
        };
        out.insert(
            name.clone(),
            BackendSpec {
                name,
                url,
                aliases,
                ca,
                auth,
                topology,
            },
        );
    }
    // One URL, one backend: otherwise an old id could not say which backend it means.
    let mut seen: HashMap<String, &str> = HashMap::new();
    for b in out.values() {
        for u in std::iter::once(&b.url).chain(&b.aliases) {
            if let Some(other) = seen.insert(url_key(u), &b.name)
                && other != b.name
            {
                return Err(format!(
                    "URL {u} belongs to both backend {other} and backend {}; give each URL to \
                     one backend",
                    b.name
                ));
            }
        }
    }
    let default = match raw.default {
        Some(d) => {
            let d = d.trim().to_owned();
            if !out.contains_key(&d) {
                return Err(format!(
                    "default: there is no backend named {d:?}; name one of: {}",
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            Some(d)
        }
        None => out
            .contains_key(DEFAULT_NAME)
            .then(|| DEFAULT_NAME.to_owned()),
    };
    Ok(Loaded {
        backends: out.into_values().collect(),
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag_backend() -> BackendSpec {
        BackendSpec {
            name: DEFAULT_NAME.into(),
            url: "http://heketi:8080".into(),
            aliases: Vec::new(),
            ca: None,
            auth: BackendAuth::None,
            topology: Default::default(),
        }
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn backends_are_placed_by_their_topology() {
        let text = "backends:\n  - name: east\n    url: http://e:8080\n    topology: {zone: east, site: dc1}\n  - name: default\n    topology:\n      zone: west\n";
        let loaded = parse(text, vec![flag_backend()]).expect("valid");
        let east = loaded
            .backends
            .iter()
            .find(|b| b.name == "east")
            .expect("east");
        assert_eq!(
            east.topology
                .get("topology.gluster.heketi.csi/zone")
                .map(String::as_str),
            Some("east")
        );
        assert_eq!(east.topology.len(), 2);
        let default = loaded
            .backends
            .iter()
            .find(|b| b.name == "default")
            .expect("default");
        assert_eq!(
            default
                .topology
                .get("topology.gluster.heketi.csi/zone")
                .map(String::as_str),
            Some("west")
        );
        let bad = "backends:\n  - name: east\n    url: http://e:8080\n    topology: {topology.kubernetes.io/zone: east}\n";
        let e = parse(bad, vec![]).expect_err("foreign key");
        assert!(
            e.contains("backend east: topology") && e.contains("other drivers"),
            "{e}"
        );
    }

    #[test]
    fn a_full_file_is_read() {
        let text = format!(
            "default: east\nbackends:\n  - name: east\n    url: https://east:8443/\n    \
             aliases: [http://east:8080, http://10.0.0.9:8080/]\n    ca: |\n      {}\n      \
             MIIB\n      -----END CERTIFICATE-----\n    secret: {{namespace: storage, name: \
             east-admin}}\n  - name: default\n    aliases: [http://old-heketi:8080]\n",
            "-----BEGIN CERTIFICATE-----"
        );
        let l = parse(&text, vec![flag_backend()]).expect("valid");
        assert_eq!(l.default.as_deref(), Some("east"));
        let east = l.backends.iter().find(|b| b.name == "east").expect("east");
        assert_eq!(east.url, "https://east:8443");
        assert_eq!(east.aliases, ["http://east:8080", "http://10.0.0.9:8080"]);
        assert!(east.ca.is_some());
        assert!(matches!(&east.auth, BackendAuth::Secret { namespace, name }
            if namespace == "storage" && name == "east-admin"));
        let d = l.backends.iter().find(|b| b.name == "default").expect("d");
        assert_eq!(d.url, "http://heketi:8080", "the flags' URL stays");
        assert_eq!(d.aliases, ["http://old-heketi:8080"]);
    }

    #[test]
    fn json_is_read_too_and_the_default_is_the_flags_backend() {
        let text = r#"{"backends": [{"name": "west", "url": "http://west:8080"}]}"#;
        let l = parse(text, vec![flag_backend()]).expect("valid");
        assert_eq!(l.default.as_deref(), Some(DEFAULT_NAME));
        assert_eq!(l.backends.len(), 2);
        let l = parse(text, Vec::new()).expect("valid");
        assert_eq!(
            l.default, None,
            "no default backend without one named default"
        );
    }

    #[test]
    fn bad_files_name_the_entry_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            ("backends: [{name: East, url: http://e}]", "lowercase"),
            ("backends: [{name: e}]", "backend e: url is required"),
            ("backends: [{name: e, url: ftp://e}]", "backend e: url"),
            (
                "backends: [{name: e, url: http://e, aliases: [nope]}]",
                "backend e: alias",
            ),
            (
                "backends: [{name: e, url: http://e, urll: x}]",
                "unknown field",
            ),
            (
                "backends: [{name: e, url: http://e}, {name: e, url: http://f}]",
                "named twice",
            ),
            (
                "backends: [{name: e, url: http://e}, {name: f, url: http://f, aliases: [http://E/]}]",
                "belongs to both",
            ),
            (
                "backends: [{name: default, url: http://x}]",
                "aliases and a CA only",
            ),
            (
                "default: nosuch\nbackends: []",
                "no backend named \"nosuch\"",
            ),
            (
                "backends: [{name: e, url: http://e, ca: nothing}]",
                "holds no PEM certificate",
            ),
            (
                "backends: [{name: e, url: http://e, ca: x, caFile: /y}]",
                "not both",
            ),
            (
                "backends: [{name: e, url: http://e, secret: {namespace: s}}]",
                "missing field",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, vec![flag_backend()]).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(
            parse(
                &format!("backends: [{{name: e, url: http://e, ca: {CA:?}}}]"),
                vec![]
            )
            .is_ok()
        );
    }

    #[test]
    fn names() {
        for ok in ["default", "east-1", "a", &"a".repeat(63)] {
            assert!(is_backend_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a:b", &"a".repeat(64)] {
            assert!(!is_backend_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let a = BackendAuth::Key {
            user: "admin".into(),
            key: SecretString::from("s3cret"),
        };
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
