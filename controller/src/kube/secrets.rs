//! In-tree style Heketi secrets: `secretName`/`secretNamespace` in a StorageClass.
//!
//! The `kubernetes.io/glusterfs` provisioner read the named Secret itself, insisted on its type
//! being `kubernetes.io/glusterfs`, and used the value of the data key `key` (with no `key`, the
//! last entry it came across). [`SecretReader`] does the same through the API (RBAC `get` on
//! secrets, granted in `deploy/`), so such classes keep working unchanged.
//!
//! The CSI way — `csi.storage.k8s.io/provisioner-secret-*`, where the sidecar hands the Secret's
//! data to CreateVolume — needs no API access from the controller and is preferred; it also
//! serves ControllerExpandVolume, which carries no StorageClass parameters.
//!
//! The Secret's values never reach a log line or a `Debug` output: the key is held in a
//! [`SecretString`] as soon as it is read.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::SecretString;

use super::{ClientError, LazyClient, is_transient, status_code};
use crate::error::Error;
use crate::params::{ClassParams, Credentials, DEFAULT_USER};

/// The Secret type the in-tree plugin required.
pub const SECRET_TYPE: &str = "kubernetes.io/glusterfs";
/// The data key holding the Heketi key.
pub const KEY_ENTRY: &str = "key";

/// Why the Heketi key could not be read from a Secret. Every message names the Secret as
/// `namespace/name`; none holds a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// There is no such Secret.
    #[error(
        "the Secret {namespace}/{name} named by the StorageClass parameters \
         secretNamespace/secretName does not exist; create it (type {SECRET_TYPE}, the Heketi \
         key under `key`) or fix the parameters"
    )]
    NotFound {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
    },
    /// The Secret exists with another type.
    #[error(
        "the Secret {namespace}/{name} has type {found:?}, but a secret named by secretName must \
         have type {SECRET_TYPE} (as with the in-tree plugin); recreate it with that type"
    )]
    WrongType {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
        /// Its actual type (empty when unset).
        found: String,
    },
    /// The Secret holds no data at all.
    #[error("the Secret {namespace}/{name} has no data; put the Heketi key under `key`")]
    Empty {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
    },
    /// The controller's service account may not read the Secret.
    #[error(
        "the controller may not read the Secret {namespace}/{name} ({message}); grant its \
         service account `get` on secrets (deploy/kubernetes/base/rbac-controller.yaml does)"
    )]
    Forbidden {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
        /// The API server's explanation.
        message: String,
    },
    /// The API server could not be reached or is overloaded; a retry may succeed.
    #[error("reading the Secret {namespace}/{name}: the Kubernetes API is unavailable: {source}")]
    Unavailable {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Any other API failure.
    #[error("reading the Secret {namespace}/{name}: {source}")]
    Api {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// No API client can be made.
    #[error("reading the Secret {namespace}/{name}: {source}")]
    NoClient {
        /// `secretNamespace`.
        namespace: String,
        /// `secretName`.
        name: String,
        /// Why.
        source: ClientError,
    },
}

impl SecretError {
    /// The StorageClass names something that is not usable: fix the class or the Secret.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::WrongType { .. } | Self::Empty { .. }
        )
    }

    /// A retry later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<SecretError> for Error {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NotFound { .. }
            | SecretError::WrongType { .. }
            | SecretError::Empty { .. } => Error::InvalidArgument(e.to_string()),
            // The class is fine; the controller's deployment is not.
            SecretError::Forbidden { .. } | SecretError::NoClient { .. } => {
                Error::FailedPrecondition(e.to_string())
            }
            SecretError::Unavailable { .. } => Error::Busy(e.to_string()),
            SecretError::Api { .. } => Error::Internal(e.to_string()),
        }
    }
}

/// Which entry of the Secret's data is the Heketi key: `key`, else the last entry (the in-tree
/// plugin took whichever entry its map iteration gave last; ours is the last in name order, so
/// the choice is at least stable). The entry's trailing newline, if any, is dropped.
pub fn pick_key(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Option<(&str, String)> {
    let (name, value) = match data.get_key_value(KEY_ENTRY) {
        Some(kv) => kv,
        None => data.iter().next_back()?,
    };
    let text = String::from_utf8_lossy(value);
    Some((
        name.as_str(),
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Reads Heketi keys from in-tree style Secrets through the Kubernetes API.
#[derive(Debug)]
pub struct SecretReader {
    client: LazyClient,
}

impl SecretReader {
    /// A reader using `client` (built on first use).
    pub fn new(client: LazyClient) -> Self {
        Self { client }
    }

    /// The Heketi key in Secret `namespace`/`name`, checked the way the in-tree plugin did.
    #[tracing::instrument(skip(self), err(Display))]
    pub async fn heketi_key(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<SecretString, SecretError> {
        let client = self
            .client
            .get()
            .await
            .map_err(|source| SecretError::NoClient {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?;
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(SecretError::NotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            Err(source) => return Err(classify(namespace, name, source)),
        };
        let found = secret.type_.as_deref().unwrap_or_default();
        if found != SECRET_TYPE {
            return Err(SecretError::WrongType {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                found: found.to_owned(),
            });
        }
        let data: std::collections::BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let Some((entry, key)) = pick_key(&data) else {
            return Err(SecretError::Empty {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        };
        if entry != KEY_ENTRY {
            tracing::warn!(
                entry,
                "the Secret has no `key` entry; using its last entry as the Heketi key, as the \
                 in-tree plugin did"
            );
        }
        Ok(SecretString::from(key))
    }
}

impl SecretReader {
    /// The credentials of backend `backend` in its Secret `namespace`/`name` (backends file):
    /// data key `key`, and `user` (default `admin`). Any Secret type is accepted. Every error
    /// names the backend and the Secret and says what to fix; none holds a secret value.
    #[tracing::instrument(skip(self), err(Display))]
    pub async fn backend_credentials(
        &self,
        backend: &str,
        namespace: &str,
        name: &str,
    ) -> crate::error::Result<Credentials> {
        let whose = format!("the Secret {namespace}/{name} of Heketi backend {backend}");
        let client = self.client.get().await.map_err(|e| {
            Error::FailedPrecondition(format!("cannot read {whose} (backends file): {e}"))
        })?;
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Error::FailedPrecondition(format!(
                    "{whose} does not exist; create it (the Heketi key under `key`, optionally \
                     the user under `user`) or fix `secret` of the backend in the backends file"
                )));
            }
            Err(source) => {
                return Err(match classify(namespace, name, source) {
                    SecretError::Forbidden { message, .. } => Error::FailedPrecondition(format!(
                        "the controller may not read {whose} ({message}); grant its service \
                         account `get` on secrets in {namespace}"
                    )),
                    e @ SecretError::Unavailable { .. } => Error::Busy(e.to_string()),
                    e => Error::Internal(e.to_string()),
                });
            }
        };
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k).map(|v| {
                String::from_utf8_lossy(&v.0)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned()
            })
        };
        let Some(key) = text(KEY_ENTRY).filter(|k| !k.is_empty()) else {
            return Err(Error::FailedPrecondition(format!(
                "{whose} has no `key` entry; put the Heketi key under `key`"
            )));
        };
        let user = text("user")
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned());
        if !user.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::FailedPrecondition(format!(
                "the `user` of {whose} is not a Heketi user name; use admin (or user)"
            )));
        }
        Ok(Credentials {
            user,
            key: Some(SecretString::from(key)),
        })
    }
}

fn classify(namespace: &str, name: &str, source: kube::Error) -> SecretError {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    match status_code(&source) {
        404 => SecretError::NotFound { namespace, name },
        401 | 403 => {
            let message = match &source {
                kube::Error::Api(s) => s.message.clone(),
                other => other.to_string(),
            };
            SecretError::Forbidden {
                namespace,
                name,
                message,
            }
        }
        _ if is_transient(&source) => SecretError::Unavailable {
            namespace,
            name,
            source,
        },
        _ => SecretError::Api {
            namespace,
            name,
            source,
        },
    }
}

/// The credentials CreateVolume uses for a class, in the in-tree plugin's order of precedence:
///
/// 1. `restauthenabled: "false"`, or a CSI secret handed over by the sidecar
///    (`csi.storage.k8s.io/provisioner-secret-*`): as [`ClassParams::credentials`] decides;
/// 2. `secretName`/`secretNamespace`: the key read by `reader`, with `restuser` (default
///    `admin`) as the user — a Secret wins over `restuserkey`, as in-tree;
/// 3. otherwise `restuserkey`/`restuser`, or the backend's own credentials.
///
/// This is the hook the Controller service calls instead of [`ClassParams::credentials`].
pub async fn class_credentials(
    params: &ClassParams,
    csi_secrets: &HashMap<String, String>,
    reader: &SecretReader,
) -> crate::error::Result<Option<Credentials>> {
    match &params.secret_ref {
        Some((name, namespace)) if params.rest_auth_enabled && csi_secrets.is_empty() => {
            let key = reader.heketi_key(namespace, name).await?;
            Ok(Some(Credentials {
                user: params
                    .rest_user
                    .clone()
                    .unwrap_or_else(|| DEFAULT_USER.to_owned()),
                key: Some(key),
            }))
        }
        _ => params.credentials(csi_secrets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn key_entry_is_chosen_first_then_the_last_entry() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (&[("key", "k1"), ("zzz", "other")], Some(("key", "k1"))),
            (&[("key", "k1\n")], Some(("key", "k1"))),
            (
                &[("adminkey", "a"), ("userkey", "u")],
                Some(("userkey", "u")),
            ),
            (&[("only", "o\r\n")], Some(("only", "o"))),
            (&[], None),
        ];
        for (entries, want) in cases {
            let d = data(entries);
            let got = pick_key(&d);
            assert_eq!(
                got.as_ref().map(|(n, v)| (*n, v.as_str())),
                *want,
                "{entries:?}"
            );
        }
    }

    #[test]
    fn errors_map_to_csi_meanings_and_name_the_secret() {
        let nf = SecretError::NotFound {
            namespace: "storage".into(),
            name: "heketi".into(),
        };
        assert!(nf.is_invalid_argument());
        assert!(nf.to_string().contains("storage/heketi"));
        assert_eq!(Error::from(nf).code(), tonic::Code::InvalidArgument);

        let wt = SecretError::WrongType {
            namespace: "storage".into(),
            name: "heketi".into(),
            found: "Opaque".into(),
        };
        let msg = wt.to_string();
        assert!(
            msg.contains("kubernetes.io/glusterfs") && msg.contains("Opaque"),
            "{msg}"
        );
        assert_eq!(Error::from(wt).code(), tonic::Code::InvalidArgument);

        let fb = SecretError::Forbidden {
            namespace: "n".into(),
            name: "s".into(),
            message: "no".into(),
        };
        assert_eq!(Error::from(fb).code(), tonic::Code::FailedPrecondition);

        let un = SecretError::Unavailable {
            namespace: "n".into(),
            name: "s".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("overloaded", "TooManyRequests")
                    .with_code(429)
                    .boxed(),
            ),
        };
        assert!(un.is_retryable());
        assert_eq!(Error::from(un).code(), tonic::Code::Unavailable);
    }
}
