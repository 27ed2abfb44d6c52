//! Command line and validated configuration of the controller.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use csi_proto::serve::{CommonArgs, Endpoint};
use secrecy::SecretString;

/// Command line of `gluster-csi-controller`. Every flag has an environment fallback.
#[derive(Clone, Debug, Parser)]
#[command(name = "gluster-csi-controller", version, about)]
pub struct Args {
    /// Flags shared with the node plugin.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Heketi URL of the default backend, used when a StorageClass names no `resturl`.
    #[arg(long, env = "HEKETI_URL")]
    pub heketi_url: Option<String>,
    /// Heketi user (JWT `iss`) of the default backend.
    #[arg(long, env = "HEKETI_USER", default_value = "admin")]
    pub heketi_user: String,
    /// File holding the Heketi key of the default backend (trailing newline ignored).
    #[arg(long, env = "HEKETI_KEY_FILE")]
    pub heketi_key_file: Option<PathBuf>,
    /// Timeout of one HTTP request to Heketi, in seconds.
    #[arg(long, env = "HEKETI_REQUEST_TIMEOUT", default_value_t = 30)]
    pub heketi_request_timeout: u64,
    /// Deadline of a whole Heketi operation (create, expand, clone, delete), in seconds.
    #[arg(long, env = "HEKETI_OPERATION_TIMEOUT", default_value_t = 600)]
    pub heketi_operation_timeout: u64,
    /// Longest total wait, in seconds, of one Heketi request for its retries (429, 503, a
    /// refused or broken connection on a read). Past it the call fails with UNAVAILABLE and the
    /// CSI sidecar retries it with its own backoff; 0 sends each request once. Polling a running
    /// operation is not a retry and waits up to the operation timeout.
    #[arg(long, env = "HEKETI_RETRY_BUDGET", default_value_t = 3)]
    pub heketi_retry_budget: u64,
    /// Most volume operations (create, clone, expand, delete) run at once against one Heketi;
    /// more wait up to the request timeout, then fail with UNAVAILABLE.
    #[arg(long, env = "HEKETI_MAX_INFLIGHT", default_value_t = 8)]
    pub heketi_max_inflight: usize,
    /// `--annotate-gid` (Kubernetes side, `crate::kube::gid_annotator`).
    #[command(flatten)]
    pub gid_annotator: crate::kube::gid_annotator::GidAnnotatorArgs,
}

/// A Heketi backend: where it is and how to authenticate.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Base URL.
    pub url: String,
    /// JWT issuer (`admin` or `user`).
    pub user: String,
    /// Key, when auth is on.
    pub key: Option<SecretString>,
}

impl Backend {
    /// A Heketi client builder for this backend with the given timeouts and retry budget; auth
    /// is off when there is no key.
    pub fn builder(
        &self,
        request_timeout: Duration,
        operation_deadline: Duration,
        retry_budget: Duration,
    ) -> heketi_client::ClientBuilder {
        let builder = heketi_client::ClientBuilder::new(&self.url)
            .user(&self.user)
            .request_timeout(request_timeout)
            .operation_deadline(operation_deadline)
            .retry_budget(retry_budget);
        match &self.key {
            Some(key) => builder.key(key.clone()),
            None => builder.disable_auth(),
        }
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Socket to serve on.
    pub endpoint: Endpoint,
    /// CSI driver name.
    pub driver_name: String,
    /// Metrics address, if any.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The backend used when a StorageClass names none.
    pub default_backend: Option<Backend>,
    /// Timeout of one HTTP request to Heketi.
    pub request_timeout: Duration,
    /// Deadline of a whole Heketi operation.
    pub operation_timeout: Duration,
    /// Longest total wait of one Heketi request for its retries.
    pub retry_budget: Duration,
    /// Most volume operations at once against one Heketi.
    pub max_inflight: usize,
}

/// A flag with an unusable value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--heketi-url` is not a usable Heketi URL.
    #[error("--heketi-url: {0}")]
    HeketiUrl(String),
    /// `--heketi-key-file` cannot be read.
    #[error("--heketi-key-file {path}: {source}")]
    KeyFile {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `--heketi-key-file` given without `--heketi-url`.
    #[error("--heketi-key-file is set but --heketi-url is not; set both or neither")]
    KeyWithoutUrl,
    /// A timeout of zero.
    #[error("{0} must be at least 1 second")]
    ZeroTimeout(&'static str),
    /// `--heketi-max-inflight 0`.
    #[error("--heketi-max-inflight must be at least 1")]
    ZeroInflight,
}

impl Config {
    /// Validates the command line. Reads the key file.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        if args.heketi_request_timeout == 0 {
            return Err(ConfigError::ZeroTimeout("--heketi-request-timeout"));
        }
        if args.heketi_operation_timeout == 0 {
            return Err(ConfigError::ZeroTimeout("--heketi-operation-timeout"));
        }
        if args.heketi_max_inflight == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        let default_backend = match (args.heketi_url, args.heketi_key_file) {
            (None, Some(_)) => return Err(ConfigError::KeyWithoutUrl),
            (None, None) => None,
            (Some(url), key_file) => {
                let key = match key_file {
                    Some(path) => {
                        let raw = std::fs::read_to_string(&path)
                            .map_err(|source| ConfigError::KeyFile { path, source })?;
                        Some(SecretString::from(
                            raw.trim_end_matches(['\n', '\r']).to_owned(),
                        ))
                    }
                    None => None,
                };
                let backend = Backend {
                    url: url.trim_end_matches('/').to_owned(),
                    user: args.heketi_user,
                    key,
                };
                // Build a client once so a bad URL fails now, naming the flag.
                backend
                    .builder(
                        Duration::from_secs(1),
                        Duration::from_secs(1),
                        Duration::ZERO,
                    )
                    .build()
                    .map_err(|e| ConfigError::HeketiUrl(e.to_string()))?;
                Some(backend)
            }
        };
        Ok(Self {
            endpoint: args.common.endpoint,
            driver_name: args.common.driver_name,
            metrics_address: args.common.metrics_address,
            default_backend,
            request_timeout: Duration::from_secs(args.heketi_request_timeout),
            operation_timeout: Duration::from_secs(args.heketi_operation_timeout),
            retry_budget: Duration::from_secs(args.heketi_retry_budget),
            max_inflight: args.heketi_max_inflight,
        })
    }
}
