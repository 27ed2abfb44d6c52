//! Command line and environment configuration, validated before anything is bound or started.
//!
//! Every flag has an environment fallback named `HEKETI_SERVER_<FLAG>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use csi_proto::serve::LogFormat;
use secrecy::SecretString;

/// `heketi-server` flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "heketi-server",
    version,
    about = "A Heketi-API-compatible REST server over a real glusterd trusted pool",
    long_about = "A Heketi-API-compatible REST server over a real glusterd trusted pool.\n\n\
        Topology (clusters, nodes, devices) is loaded through the REST API as with Heketi. \
        A device is a brick root directory on a node; brick directories must be reachable \
        on this machine's filesystem under the device path, and volumes are mounted from \
        this machine (FUSE) when a clone copies data."
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

        Ok(Self {
            listen: args.listen,
            state_dir,
            auth,
            gluster_cmd,
            max_inflight: args.max_inflight as usize,
            gluster_timeout: Duration::from_secs(args.gluster_timeout),
            log_format: args.log_format,
        })
    }
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
