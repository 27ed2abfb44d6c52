//! Command line and validated configuration of the controller.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gluster_csi_runtime::args::CommonArgs;
use gluster_csi_runtime::socket::Endpoint;
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
    /// Seconds between full reloads of a backend's volume index (they run in the background
    /// and pick up changes made outside the controller); 0 starts one whenever none runs, which
    /// only a measurement wants.
    #[arg(long, env = "INDEX_RELOAD_SECONDS", default_value_t = 600)]
    pub index_reload_seconds: u64,
    /// PEM file of the CA certificates trusted for an `https://` --heketi-url (on top of the
    /// system's).
    #[arg(long, env = "HEKETI_CA_FILE")]
    pub heketi_ca_file: Option<PathBuf>,
    /// YAML (or JSON) file naming the Heketi backends: name, URL, old URLs (aliases), CA and
    /// the Kubernetes Secret with the credentials (docs/parameters.md, "Backends file").
    #[arg(long, env = "BACKENDS_FILE")]
    pub backends_file: Option<PathBuf>,
    /// A --backends-file that does not exist is taken as empty instead of an error (for a file
    /// mounted from an optional ConfigMap).
    #[arg(long, env = "BACKENDS_FILE_OPTIONAL")]
    pub backends_file_optional: bool,
    /// `--annotate-gid` (Kubernetes side, `crate::kube::gid_annotator`).
    #[command(flatten)]
    pub gid_annotator: crate::kube::gid_annotator::GidAnnotatorArgs,
}

pub use crate::backends_file::{BackendAuth, BackendSpec, DEFAULT_NAME};

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Socket to serve on.
    pub endpoint: Endpoint,
    /// CSI driver name.
    pub driver_name: String,
    /// Metrics address, if any.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Every configured backend: the one of `--heketi-url` (named [`DEFAULT_NAME`]) and those
    /// of `--backends-file`.
    pub backends: Vec<BackendSpec>,
    /// The name of the backend used when a StorageClass names no `resturl` (and by ids written
    /// without a backend), if any.
    pub default_backend: Option<String>,
    /// Timeout of one HTTP request to Heketi.
    pub request_timeout: Duration,
    /// Deadline of a whole Heketi operation.
    pub operation_timeout: Duration,
    /// Longest total wait of one Heketi request for its retries.
    pub retry_budget: Duration,
    /// Most volume operations at once against one Heketi.
    pub max_inflight: usize,
    /// Time between full reloads of a volume index.
    pub index_reload: Duration,
    /// The `--backends-file` to watch for changes, and the backends given by flags that each
    /// reading of it is merged with; `None` without the flag.
    pub backends_file: Option<WatchedFile>,
}

/// A backends file read again when it changes (see `crate::backend::watch_file`).
#[derive(Clone, Debug)]
pub struct WatchedFile {
    /// Its path.
    pub path: PathBuf,
    /// The backends of `--heketi-url` and friends.
    pub from_flags: Vec<BackendSpec>,
}

impl Config {
    /// The default backend's specification, if there is one.
    pub fn default_spec(&self) -> Option<&BackendSpec> {
        let name = self.default_backend.as_deref()?;
        self.backends.iter().find(|b| b.name == name)
    }
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
    /// `--heketi-ca-file` cannot be read or holds no certificate.
    #[error("--heketi-ca-file {path}: {reason}")]
    CaFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--backends-file` cannot be read or is not valid.
    #[error("--backends-file {path}: {reason}")]
    BackendsFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong, naming the entry and field.
        reason: String,
    },
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
        let mut backends = Vec::new();
        match (args.heketi_url, args.heketi_key_file) {
            (None, Some(_)) => return Err(ConfigError::KeyWithoutUrl),
            (None, None) => {}
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
                let ca = match args.heketi_ca_file {
                    Some(path) => Some(
                        crate::backends_file::read_ca(&path)
                            .map_err(|reason| ConfigError::CaFile { path, reason })?,
                    ),
                    None => None,
                };
                let backend = BackendSpec {
                    name: DEFAULT_NAME.to_owned(),
                    url: url.trim_end_matches('/').to_owned(),
                    aliases: Vec::new(),
                    ca,
                    auth: match key {
                        Some(key) => BackendAuth::Key {
                            user: args.heketi_user,
                            key,
                        },
                        None => BackendAuth::None,
                    },
                    topology: Default::default(),
                };
                // Build a client once so a bad URL or CA fails now, naming the flag.
                backend
                    .builder(
                        None,
                        Duration::from_secs(1),
                        Duration::from_secs(1),
                        Duration::ZERO,
                    )
                    .build()
                    .map_err(|e| ConfigError::HeketiUrl(e.to_string()))?;
                backends.push(backend);
            }
        }
        let mut default_backend = (!backends.is_empty()).then(|| DEFAULT_NAME.to_owned());
        let watched = args.backends_file.clone().map(|path| WatchedFile {
            path,
            from_flags: backends.clone(),
        });
        let absent_but_optional = |p: &PathBuf| args.backends_file_optional && !p.exists();
        if let Some(path) = args.backends_file.filter(|p| {
            let skip = absent_but_optional(p);
            if skip {
                tracing::info!(path = %p.display(), "no backends file; only --heketi-url is used");
            }
            !skip
        }) {
            let file = crate::backends_file::load(&path, backends)
                .map_err(|reason| ConfigError::BackendsFile { path, reason })?;
            backends = file.backends;
            default_backend = file.default;
        }
        Ok(Self {
            endpoint: args.common.endpoint,
            driver_name: args.common.driver_name,
            metrics_address: args.common.metrics_address,
            backends,
            default_backend,
            request_timeout: Duration::from_secs(args.heketi_request_timeout),
            operation_timeout: Duration::from_secs(args.heketi_operation_timeout),
            retry_budget: Duration::from_secs(args.heketi_retry_budget),
            max_inflight: args.heketi_max_inflight,
            index_reload: Duration::from_secs(args.index_reload_seconds),
            backends_file: watched,
        })
    }
}
