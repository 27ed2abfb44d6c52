//! The mount agent's protocol: what a plugin may ask the agent ([`MountRequest`]), how the
//! agent answers ([`MountResponse`]), and the plugin's side of the exchange ([`call`]). The
//! agent itself (listening, checking the peer, running `mount`) is [`crate::agent`].
//!
//! One JSON request per connection on a unix socket (mode 0600, so only root — or the agent's
//! own user — can connect; peers with another uid are refused as well): the client writes a
//! [`MountRequest`] and shuts its side down, the agent answers one [`MountResponse`] and
//! closes. The request is data, not a command line: the agent builds the one argv it will ever
//! run, `mount -t glusterfs -o OPTIONS SOURCE TARGET`, after checking every part with the
//! plugin's own validators ([`MountRequest::validate`]); nothing else can be run through it.
//! The mount runs under the agent's `--mount-timeout`; the answer carries its exit status, its
//! output and the lines the client logged meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::command::CommandOutput;
use crate::context::{SERVERS_KEY, VOLUME_KEY, VolumeContext};
use crate::error::Error;
use crate::options::MountFlags;
use crate::paths::{self, Field};

/// Largest answer read by the client, in bytes.
const MAX_RESPONSE: u64 = 256 * 1024;
/// How much longer than the mount timeout a client waits for the answer.
const ANSWER_SLACK: Duration = Duration::from_secs(15);

/// Options the plugin sets itself and the agent therefore checks by their own rules.
const LOG_FILE: &str = "log-file";
const BACKUP_SERVERS: &str = "backup-volfile-servers";

/// A request to mount one Gluster volume: `mount -t glusterfs -o OPTIONS SOURCE TARGET`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    /// `server:/volume`.
    pub source: String,
    /// Mount point (a staging path).
    pub target: String,
    /// Mount options, one per entry, as the plugin builds them.
    pub options: Vec<String>,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountResponse {
    /// `mount` ran and exited.
    Ran {
        /// Exit status 0.
        success: bool,
        /// The exit status, for messages.
        status: String,
        /// Its standard output and error.
        output: String,
        /// What the client logged during the attempt (last lines).
        log_tail: String,
    },
    /// The request did not pass validation; nothing was run.
    Refused {
        /// Why.
        message: String,
    },
    /// `mount` did not finish within the agent's timeout and was killed.
    Timeout {
        /// The limit, in seconds.
        seconds: u64,
    },
    /// `mount` could not be run (not installed, agent busy, …).
    Failed {
        /// Why.
        message: String,
    },
}

impl MountRequest {
    /// Checks every part with the plugin's validators: the source is `host:/volume` with a
    /// host and volume name a `volume_context` would accept; the target is a staging path
    /// (absolute, normalised, characters the `mount.glusterfs` script passes through unchanged,
    /// under `kubelet_dir` when given); each option is either a capability mount flag
    /// ([`MountFlags`]), or one of the options the plugin sets itself: `backup-volfile-servers`
    /// (valid hosts, not the primary) or `log-file` (an absolute `.log` path of the same
    /// characters), each at most once.
    pub fn validate(&self, kubelet_dir: Option<&Path>) -> Result<(), Error> {
        let refuse = |why: String| Err(Error::InvalidArgument(format!("mount request: {why}")));
        let Some((primary, volume)) = self.source.split_once(":/") else {
            return refuse(format!("source {:?} is not host:/volume", self.source));
        };
        let ctx = context_of(primary, volume)?;
        if ctx.servers.len() != 1 || ctx.primary() != primary || ctx.volume != volume {
            return refuse(format!("source {:?} is not host:/volume", self.source));
        }
        let target = paths::validate(Field::Staging, &self.target, kubelet_dir)?;
        if target.as_os_str() != self.target.as_str() {
            return refuse(format!("target {:?} is not normalised", self.target));
        }
        let (mut log_file, mut backups) = (false, false);
        for option in &self.options {
            let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
            match key {
                LOG_FILE => {
                    if std::mem::replace(&mut log_file, true) {
                        return refuse(format!("{LOG_FILE} given twice"));
                    }
                    check_log_file(value)?;
                }
                BACKUP_SERVERS => {
                    if std::mem::replace(&mut backups, true) {
                        return refuse(format!("{BACKUP_SERVERS} given twice"));
                    }
                    for host in value.split(':') {
                        let c = context_of(host, volume)?;
                        if c.servers.len() != 1 || c.primary() != host {
                            return refuse(format!(
                                "{BACKUP_SERVERS} entry {host:?} is not a host"
                            ));
                        }
                        if host.eq_ignore_ascii_case(primary) {
                            return refuse(format!(
                                "{BACKUP_SERVERS} must not repeat the primary {primary}"
                            ));
                        }
                    }
                }
                _ => {
                    let parsed = MountFlags::parse(std::slice::from_ref(option))?;
                    if parsed.options() != std::slice::from_ref(option) {
                        return refuse(format!("option {option:?} is more than one option"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The log file named by the options, if any.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix("log-file="))
            .map(PathBuf::from)
    }
}

/// A volume context of one server, to reuse its checks of host and volume names.
fn context_of(host: &str, volume: &str) -> Result<VolumeContext, Error> {
    let map = HashMap::from([
        (SERVERS_KEY.to_owned(), host.to_owned()),
        (VOLUME_KEY.to_owned(), volume.to_owned()),
    ]);
    VolumeContext::from_map(&map)
}

fn check_log_file(value: &str) -> Result<(), Error> {
    let ok = paths::is_normalised(Path::new(value))
        && value.len() <= 4095
        && value.ends_with(".log")
        && value.bytes().all(paths::is_shell_inert);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "mount request: {LOG_FILE} {value:?} must be an absolute, normalised path ending in \
             .log, of letters, digits and / . _ - ~ + @ : = %"
        )))
    }
}

/// What a mount attempt left behind: the output of `mount`, and the lines the client logged
/// during the attempt when whoever ran it read them (the agent does; empty otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOutcome {
    /// The `mount` command's exit status and output.
    pub command: CommandOutput,
    /// The client log lines of this attempt, or empty.
    pub log_tail: String,
}

impl From<CommandOutput> for MountOutcome {
    /// A `mount` run by the plugin itself: nobody has read the client log yet.
    fn from(command: CommandOutput) -> Self {
        Self {
            command,
            log_tail: String::new(),
        }
    }
}

/// Sends `request` to the agent at `socket` and turns its answer into the output of a mount
/// command. `mount_timeout` is the plugin's own limit; the agent enforces its own.
pub async fn call(
    socket: &Path,
    request: &MountRequest,
    mount_timeout: Duration,
) -> Result<MountOutcome, Error> {
    let unreachable = |why: String| Error::Agent(format!("{}: {why}", socket.display()));
    let body = serde_json::to_vec(request)
        .map_err(|e| unreachable(format!("cannot encode the request: {e}")))?;
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
        stream
            .write_all(&body)
            .await
            .map_err(|e| unreachable(format!("cannot send the request: {e}")))?;
        stream
            .shutdown()
            .await
            .map_err(|e| unreachable(format!("cannot send the request: {e}")))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| unreachable(format!("cannot read the answer: {e}")))?;
        Ok::<_, Error>(answer)
    };
    let limit = mount_timeout + ANSWER_SLACK;
    let answer = match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout {
                what: format!(
                    "mount of {} at {} by the mount agent",
                    request.source, request.target
                ),
                after: limit,
            });
        }
    };
    let response: MountResponse = serde_json::from_slice(&answer)
        .map_err(|e| unreachable(format!("unreadable answer: {e}")))?;
    match response {
        MountResponse::Ran {
            success,
            status,
            output,
            log_tail,
        } => Ok(MountOutcome {
            command: CommandOutput {
                success,
                status,
                output,
            },
            log_tail,
        }),
        MountResponse::Refused { message } => Err(Error::InvalidArgument(format!(
            "the mount agent refused the request: {message}"
        ))),
        MountResponse::Timeout { seconds } => Err(Error::Timeout {
            what: format!(
                "mount -t glusterfs {} {} (run by the mount agent)",
                request.source, request.target
            ),
            after: Duration::from_secs(seconds),
        }),
        MountResponse::Failed { message } => Err(unreachable(message)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request with these parts (also used by the agent server's tests).
    pub(crate) fn request(source: &str, target: &str, options: &[&str]) -> MountRequest {
        MountRequest {
            source: source.into(),
            target: target.into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    const GOOD: &[&str] = &[
        "backup-volfile-servers=10.0.0.12:g3.example.com",
        "log-file=/var/lib/gluster-csi/logs/vol1.log",
        "log-level=ERROR",
        "auto_unmount",
        "ro",
        "xlator-option=*replicate*.data-self-heal=off",
    ];

    #[test]
    fn requests_the_plugin_builds_pass() {
        let r = request("10.0.0.11:/vol1", "/var/lib/kubelet/x/globalmount", GOOD);
        r.validate(None).expect("valid");
        r.validate(Some(Path::new("/var/lib/kubelet")))
            .expect("valid under kubelet");
        request("g1:/v", "/mnt/v", &[])
            .validate(None)
            .expect("no options");
    }

    #[test]
    fn anything_else_is_refused() {
        let t = "/var/lib/kubelet/x/globalmount";
        let cases: Vec<MountRequest> = vec![
            request("10.0.0.11/vol1", t, &[]),
            request("10.0.0.11:/vol1/sub", t, &[]),
            request("10.0.0.11:/-o", t, &[]),
            request("$(id):/vol1", t, &[]),
            request("g1,g2:/vol1", t, &[]),
            request(" g1:/vol1", t, &[]),
            request("g1:/vol1", "relative/path", &[]),
            request("g1:/vol1", "/a/../etc", &[]),
            request("g1:/vol1", "/a b", &[]),
            request("g1:/vol1", "/a/", &[]),
            request("g1:/vol1", "/", &[]),
            request("g1:/vol1", t, &["log-file=/etc/shadow"]),
            request("g1:/vol1", t, &["log-file=relative.log"]),
            request("g1:/vol1", t, &["log-file=/a/../b.log"]),
            request("g1:/vol1", t, &["log-file=/a.log,acl"]),
            request("g1:/vol1", t, &["log-file=/a.log", "log-file=/b.log"]),
            request("g1:/vol1", t, &["backup-volfile-servers=g1"]),
            request(
                "g1:/vol1",
                t,
                &["backup-volfile-servers=g2,log-file=/x.log"],
            ),
            request("g1:/vol1", t, &["backup-volfile-servers=g2::g3"]),
            request(
                "g1:/vol1",
                t,
                &["backup-volfile-servers=g2", "backup-volfile-servers=g3"],
            ),
            request("g1:/vol1", t, &["volfile-server=evil"]),
            request("g1:/vol1", t, &["a b"]),
            request("g1:/vol1", t, &["ro,acl"]),
            request("g1:/vol1", t, &["x=`id`"]),
            request("g1:/vol1", t, &[""]),
            request("g1:/vol1", t, &["-o"]),
        ];
        for r in cases {
            match r.validate(None) {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{r:?}: expected InvalidArgument, got {other:?}"),
            }
        }
        let outside = request("g1:/vol1", "/etc/globalmount", &[]);
        assert!(
            outside
                .validate(Some(Path::new("/var/lib/kubelet")))
                .is_err()
        );
    }

    #[test]
    fn the_wire_format_is_strict_json() {
        let r = request("g1:/v", "/m", &["ro"]);
        let text = serde_json::to_string(&r).expect("encode");
        assert_eq!(text, r#"{"source":"g1:/v","target":"/m","options":["ro"]}"#);
        assert!(
            serde_json::from_str::<MountRequest>(
                r#"{"source":"g1:/v","target":"/m","options":[],"argv":["sh"]}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
        let answer = MountResponse::Timeout { seconds: 60 };
        let text = serde_json::to_string(&answer).expect("encode");
        assert_eq!(text, r#"{"outcome":"timeout","seconds":60}"#);
    }

    #[tokio::test]
    async fn an_absent_agent_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = call(
            &dir.path().join("none.sock"),
            &request("g1:/v", "/m", &[]),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r, Err(Error::Agent(_))), "{r:?}");
    }
}
