//! Command line and environment configuration, validated before anything is bound or started.
//!
//! Every flag has an environment fallback named `HEKETI_SERVER_<FLAG>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use gluster_csi_runtime::logging::LogFormat;
use secrecy::SecretString;

use crate::executor::{Executor, HostKeys, SshSettings};

/// `heketi-server` flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "heketi-server",
    version,
    about = "A Heketi-API-compatible REST server over a real glusterd trusted pool",
    long_about = "A Heketi-API-compatible REST server over a real glusterd trusted pool.\n\n\
        Topology (clusters, nodes, devices) is loaded through the REST API as with Heketi. \
        A device is a brick root directory on a node. Node work (probing devices, making and \
        removing brick directories, the gluster CLI) runs through an executor: `local` on this \
        machine (single host, quickstart), or `ssh` on each node with Heketi's sshexec settings \
        (key file, user, port, sudo). Volumes are mounted from this machine (FUSE) only when a \
        clone copies data."
)]
pub struct Args {
    /// Address and port to serve HTTP on.
    #[arg(long, env = "HEKETI_SERVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the state file (`state.json`) and temporary mount points.
    #[arg(long, env = "HEKETI_SERVER_STATE_DIR")]
    pub state_dir: PathBuf,

    /// File holding the JWT secret of the `admin` issuer (required unless --disable-auth).
    #[arg(long, env = "HEKETI_SERVER_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,

    /// File holding the JWT secret of the `user` issuer (tokens with iss=user are refused
    /// when it is not given).
    #[arg(long, env = "HEKETI_SERVER_USER_KEY_FILE")]
    pub user_key_file: Option<PathBuf>,

    /// Serve without JWT authentication.
    #[arg(long, env = "HEKETI_SERVER_DISABLE_AUTH")]
    pub disable_auth: bool,

    /// Argument vector prefix that runs the gluster CLI against one glusterd of the pool
    /// (`--mode=script` and the subcommand are appended). Give it as one whitespace-separated
    /// string (`--gluster-cmd "ip netns exec ns1 gluster --glusterd-sock=/run/gd.sock"`, also
    /// the form of the environment variable) or repeat the flag once per element
    /// (`--gluster-cmd=ip --gluster-cmd=netns ...`), which allows elements with spaces.
    #[arg(
        long,
        env = "HEKETI_SERVER_GLUSTER_CMD",
        default_value = "gluster",
        allow_hyphen_values = true
    )]
    pub gluster_cmd: Vec<String>,

    /// Maximum number of volume operations in flight; more are refused with 429.
    #[arg(
        long,
        env = "HEKETI_SERVER_MAX_INFLIGHT",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_inflight: u32,

    /// Timeout in seconds of one gluster CLI call.
    #[arg(
        long,
        env = "HEKETI_SERVER_GLUSTER_TIMEOUT",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub gluster_timeout: u64,

    /// Log line format.
    #[arg(long, env = "HEKETI_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Where node work runs: `local` (this machine sees every device path; single host) or
    /// `ssh` (on each node over SSH, Heketi's `sshexec`).
    #[arg(long, env = "HEKETI_SERVER_EXECUTOR", value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,

    /// SSH executor: private key file (Heketi's `sshexec.keyfile`).
    #[arg(long, env = "HEKETI_SERVER_SSH_KEYFILE")]
    pub ssh_keyfile: Option<PathBuf>,

    /// SSH executor: remote user (`sshexec.user`).
    #[arg(long, env = "HEKETI_SERVER_SSH_USER", default_value = "root")]
    pub ssh_user: String,

    /// SSH executor: remote port (`sshexec.port`).
    #[arg(long, env = "HEKETI_SERVER_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,

    /// SSH executor: run node commands through `sudo -n` (`sshexec.sudo`), for a non-root user
    /// allowed password-less sudo.
    #[arg(long, env = "HEKETI_SERVER_SSH_SUDO")]
    pub ssh_sudo: bool,

    /// SSH executor: `known_hosts` file holding the nodes' host keys; unknown or changed keys
    /// are refused. Required with `--executor ssh` unless --ssh-insecure-ignore-host-keys.
    #[arg(long, env = "HEKETI_SERVER_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,

    /// SSH executor: accept any host key (no protection against a machine posing as a node;
    /// only for networks where that cannot happen).
    #[arg(long, env = "HEKETI_SERVER_SSH_INSECURE_IGNORE_HOST_KEYS")]
    pub ssh_insecure_ignore_host_keys: bool,

    /// SSH executor: seconds a connection may take.
    #[arg(
        long,
        env = "HEKETI_SERVER_SSH_CONNECT_TIMEOUT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub ssh_connect_timeout: u64,

    /// PEM certificate chain to serve HTTPS with (with --tls-key-file); plain HTTP without.
    #[arg(long, env = "HEKETI_SERVER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "HEKETI_SERVER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

/// The executors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// On this machine.
    Local,
    /// On each node over SSH.
    Ssh,
}

/// JWT secrets.
pub struct AuthKeys {
    /// Secret of the `admin` issuer.
    pub admin: SecretString,
    /// Secret of the `user` issuer, if any.
    pub user: Option<SecretString>,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeys")
            .field("admin", &"<redacted>")
            .field("user", &self.user.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// State directory (exists).
    pub state_dir: PathBuf,
    /// JWT secrets; `None` when authentication is disabled.
    pub auth: Option<AuthKeys>,
    /// Argument vector prefix of the gluster CLI.
    pub gluster_cmd: Vec<String>,
    /// Volume operations allowed in flight.
    pub max_inflight: usize,
    /// Timeout of one gluster CLI call.
    pub gluster_timeout: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// Where node work runs.
    pub executor: Executor,
    /// Certificate and key to serve HTTPS with; plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// A configuration problem; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    /// The flag at fault, e.g. `--admin-key-file`.
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn config_error(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

impl Config {
    /// Validates `args`: reads the key files, creates the state directory, checks the gluster
    /// command prefix.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let auth = if args.disable_auth {
            None
        } else {
            let admin_file = args.admin_key_file.as_deref().ok_or_else(|| {
                config_error(
                    "--admin-key-file",
                    "required unless --disable-auth is given",
                )
            })?;
            let admin = read_key("--admin-key-file", admin_file)?;
            let user = match args.user_key_file.as_deref() {
                Some(f) => Some(read_key("--user-key-file", f)?),
                None => None,
            };
            Some(AuthKeys { admin, user })
        };

        std::fs::create_dir_all(&args.state_dir).map_err(|e| {
            config_error(
                "--state-dir",
                format!("cannot create {}: {e}", args.state_dir.display()),
            )
        })?;
        if !args.state_dir.is_dir() {
            return Err(config_error(
                "--state-dir",
                format!("{} is not a directory", args.state_dir.display()),
            ));
        }
        let state_dir = std::fs::canonicalize(&args.state_dir).map_err(|e| {
            config_error(
                "--state-dir",
                format!("cannot resolve {}: {e}", args.state_dir.display()),
            )
        })?;

        let gluster_cmd = split_command(&args.gluster_cmd);
        if gluster_cmd.is_empty() {
            return Err(config_error("--gluster-cmd", "must not be empty"));
        }

        let executor = executor(&args)?;

        Ok(Self {
            listen: args.listen,
            state_dir,
            auth,
            gluster_cmd,
            max_inflight: args.max_inflight as usize,
            gluster_timeout: Duration::from_secs(args.gluster_timeout),
            log_format: args.log_format,
            executor,
            tls: crate::tls::TlsFiles::from_flags(args.tls_cert_file, args.tls_key_file)
                .map_err(|e| config_error(e.flag, format!("{} {}", e.path, e.reason)))?,
        })
    }
}

/// The executor the flags describe; the SSH key file must be readable and host keys must be
/// checked or explicitly not.
fn executor(args: &Args) -> Result<Executor, ConfigError> {
    if args.executor == ExecutorKind::Local {
        return Ok(Executor::Local);
    }
    let keyfile = args.ssh_keyfile.clone().ok_or_else(|| {
        config_error(
            "--ssh-keyfile",
            "required with --executor ssh (the private key whose public half is in the nodes' \
             authorized_keys, as Heketi's sshexec.keyfile)",
        )
    })?;
    std::fs::File::open(&keyfile).map_err(|e| {
        config_error(
            "--ssh-keyfile",
            format!("cannot read {}: {e}", keyfile.display()),
        )
    })?;
    if args.ssh_user.is_empty() || args.ssh_user.starts_with('-') {
        return Err(config_error("--ssh-user", "must be a user name"));
    }
    let host_keys = match (&args.ssh_known_hosts, args.ssh_insecure_ignore_host_keys) {
        (Some(_), true) => {
            return Err(config_error(
                "--ssh-known-hosts",
                "give either --ssh-known-hosts or --ssh-insecure-ignore-host-keys, not both",
            ));
        }
        (Some(file), false) => {
            std::fs::File::open(file).map_err(|e| {
                config_error(
                    "--ssh-known-hosts",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            HostKeys::KnownHosts(file.clone())
        }
        (None, true) => HostKeys::Ignore,
        (None, false) => {
            return Err(config_error(
                "--ssh-known-hosts",
                "required with --executor ssh: a known_hosts file with every node's host key \
                 (ssh-keyscan NODE >> FILE, then check the fingerprints), or \
                 --ssh-insecure-ignore-host-keys to accept any key",
            ));
        }
    };
    Ok(Executor::Ssh(SshSettings {
        keyfile,
        user: args.ssh_user.clone(),
        port: args.ssh_port,
        sudo: args.ssh_sudo,
        host_keys,
        connect_timeout: Duration::from_secs(args.ssh_connect_timeout),
    }))
}

/// One value is split at whitespace; several values are taken one element each.
pub fn split_command(values: &[String]) -> Vec<String> {
    match values {
        [single] => single.split_whitespace().map(str::to_owned).collect(),
        many => many.iter().filter(|s| !s.is_empty()).cloned().collect(),
    }
}

fn read_key(flag: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| config_error(flag, format!("cannot read {}: {e}", path.display())))?;
    let key = raw.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err(config_error(flag, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("heketi-server").chain(argv.iter().copied()))
    }

    #[test]
    fn one_gluster_cmd_value_is_split_at_whitespace() {
        let v = split_command(&["ip netns exec ns1  gluster --glusterd-sock=/a b".into()]);
        assert_eq!(
            v,
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "gluster",
                "--glusterd-sock=/a",
                "b"
            ]
        );
    }

    #[test]
    fn repeated_gluster_cmd_values_are_kept_whole() {
        let a = parse(&[
            "--state-dir=/tmp/x",
            "--gluster-cmd=ip",
            "--gluster-cmd=netns",
            "--gluster-cmd=--glusterd-sock=/a b",
            "--disable-auth",
        ])
        .map(|a| split_command(&a.gluster_cmd))
        .unwrap_or_default();
        assert_eq!(a, ["ip", "netns", "--glusterd-sock=/a b"]);
    }

    #[test]
    fn default_gluster_cmd_is_gluster() {
        let a = parse(&["--state-dir=/tmp/x"])
            .map(|a| split_command(&a.gluster_cmd))
            .unwrap_or_default();
        assert_eq!(a, ["gluster"]);
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (argv, flag) in [
            (&["--state-dir=/x", "--listen=nonsense"][..], "--listen"),
            (
                &["--state-dir=/x", "--max-inflight=0"][..],
                "--max-inflight",
            ),
            (&["--state-dir=/x", "--log-format=xml"][..], "--log-format"),
        ] {
            let err = parse(argv).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }

    #[test]
    fn auth_needs_an_admin_key() {
        let dir = tempfile::tempdir().ok();
        let state = dir.as_ref().map(|d| d.path().join("s")).unwrap_or_default();
        let args = parse(&[&format!("--state-dir={}", state.display())]);
        let err = args.map_err(|e| e.to_string()).and_then(|a| {
            Config::from_args(a)
                .map(|_| String::new())
                .map_err(|e| e.to_string())
        });
        assert!(matches!(err, Err(ref m) if m.contains("--admin-key-file")));
    }

    #[test]
    fn key_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().ok();
        let base = dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        let admin = base.join("admin");
        let empty = base.join("empty");
        assert!(std::fs::write(&admin, "s3cret\n").is_ok());
        assert!(std::fs::write(&empty, "\n").is_ok());
        let state = format!("--state-dir={}", base.join("state").display());
        let ok = parse(&[&state, &format!("--admin-key-file={}", admin.display())])
            .map_err(|e| e.to_string())
            .and_then(|a| Config::from_args(a).map_err(|e| e.to_string()));
        assert!(ok.is_ok_and(|c| {
            use secrecy::ExposeSecret;
            c.auth
                .is_some_and(|k| k.admin.expose_secret() == "s3cret" && k.user.is_none())
        }));
        let bad = parse(&[
            &state,
            &format!("--admin-key-file={}", admin.display()),
            &format!("--user-key-file={}", empty.display()),
        ])
        .map_err(|e| e.to_string())
        .and_then(|a| Config::from_args(a).map_err(|e| e.to_string()));
        assert!(matches!(bad, Err(ref m) if m.contains("--user-key-file")));
    }
}
