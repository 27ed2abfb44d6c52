//! The controller's side of the Kubernetes API.
//!
//! The CSI sidecars do most of the Kubernetes work; the controller itself talks to the API for
//! two in-tree compatibility features only:
//!
//! - [`secrets`]: StorageClasses written for `kubernetes.io/glusterfs` name the Heketi key by
//!   `secretName`/`secretNamespace`; the controller reads that Secret.
//! - [`gid_annotator`]: volumes made with a `gid` get the `pv.beta.kubernetes.io/gid` annotation
//!   on their PersistentVolume, which kubelet turns into a supplemental group of the pod.
//!
//! The API client is built lazily, on first use, from `KUBECONFIG` (or `~/.kube/config`) or
//! the pod's service account: a controller that serves only CSI-style classes never needs one.

pub mod gid_annotator;
pub mod secrets;

use kube::Client;
use tokio::sync::OnceCell;

/// The Kubernetes API cannot be reached: no configuration was found, or it is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error(
        "no Kubernetes API configuration: not running in a pod with a service account, and no \
         KUBECONFIG or ~/.kube/config ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The configuration was found but no client could be built from it.
    #[error("cannot build a Kubernetes API client: {0}")]
    Build(#[source] kube::Error),
}

/// A Kubernetes client made on first use and shared afterwards.
///
/// A failed attempt is not remembered: the next use tries again (the service account token may
/// appear late, or `KUBECONFIG` may be fixed). The client does not retry by itself: callers
/// see a 429/503/504 at once.
pub struct LazyClient {
    source: Source,
    cell: OnceCell<Client>,
}

enum Source {
    /// `KUBECONFIG` / `~/.kube/config`, else in-cluster.
    Infer,
    /// An explicit configuration.
    Config(Box<kube::Config>),
}

impl LazyClient {
    /// A client found the usual way on first use: `KUBECONFIG` (or `~/.kube/config`), else the
    /// pod's service account.
    pub fn infer() -> Self {
        Self {
            source: Source::Infer,
            cell: OnceCell::new(),
        }
    }

    /// A client for an explicit configuration, built on first use.
    pub fn from_config(config: kube::Config) -> Self {
        Self {
            source: Source::Config(Box::new(config)),
            cell: OnceCell::new(),
        }
    }

    /// An already built client, used as it is (with its own retry policy).
    pub fn from_client(client: Client) -> Self {
        Self {
            source: Source::Infer,
            cell: OnceCell::new_with(Some(client)),
        }
    }

    /// The client, building it now if needed.
    pub async fn get(&self) -> Result<Client, ClientError> {
        self.cell
            .get_or_try_init(|| async {
                let mut config = match &self.source {
                    Source::Infer => kube::Config::infer().await.map_err(ClientError::Infer)?,
                    Source::Config(c) => (**c).clone(),
                };
                // kube retries 429/503/504 itself for minutes by default; a CSI call must fail
                // fast with UNAVAILABLE instead and let the sidecar retry, and the annotator
                // and the migration tool have retries of their own.
                config.default_retry = false;
                let client = Client::try_from(config).map_err(ClientError::Build)?;
                tracing::info!("connected the Kubernetes API client");
                Ok(client)
            })
            .await
            .cloned()
    }
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.cell.initialized())
            .finish_non_exhaustive()
    }
}

/// Whether a Kubernetes API failure is worth retrying later: the API server (or the way to
/// it) is down or overloaded, rather than the request being wrong.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The HTTP status of an API error, 0 for transport failures.
pub fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}
