//! The mount agent: runs `mount -t glusterfs` for a node plugin that cannot keep its FUSE
//! clients alive itself.
//!
//! A plugin in a PID namespace of its own (a pod without `hostPID`) takes every process it
//! started with it when the runtime stops it, and no process can move into an ancestor PID
//! namespace. So the clients have to be started by something that already lives outside: on
//! hosts with systemd that is systemd (`--fuse-launcher systemd`), elsewhere this agent,
//! `gluster-csi-node mount-agent --socket PATH`, run on the host (a host service, or anything
//! outside the plugin's PID namespace and cgroup). The plugin is pointed at it with
//! `--fuse-launcher agent:unix://PATH`.
//!
//! # Protocol
//!
//! One JSON request per connection on a unix socket (mode 0600, so only root — or the agent's
//! own user — can connect; peers with another uid are refused as well): the client writes a
//! [`MountRequest`] and shuts its side down, the agent answers one [`MountResponse`] and
//! closes. The request is data, not a command line: the agent builds the one argv it will ever
//! run, `mount -t glusterfs -o OPTIONS SOURCE TARGET`, after checking every part with the
//! plugin's own validators ([`MountRequest::validate`]); nothing else can be run through it.
//! The mount runs under `--mount-timeout`; the answer carries its exit status, its output and
//! the lines the client logged meanwhile.
//!
//! The mount is made in the agent's mount namespace, with the agent's `mount.glusterfs` and
//! `glusterfs`: the target must be visible there (kubelet's directory is shared between the
//! host and the plugin with `mountPropagation: Bidirectional`).

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::context::{SERVERS_KEY, VOLUME_KEY, VolumeContext};
use crate::error::Error;
use crate::options::MountFlags;
use crate::paths::{self, Field};
use crate::spawn::{self, CommandOutput};

/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// Largest answer read by the client, in bytes.
const MAX_RESPONSE: u64 = 256 * 1024;
/// How long a client may take to send its request, and the agent to accept a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the mount timeout a client waits for the answer.
const ANSWER_SLACK: Duration = Duration::from_secs(15);
/// Mounts run at once; more requests are answered "busy".
const MAX_CONCURRENT: usize = 16;
/// Client log lines returned with an answer.
const LOG_TAIL_LINES: usize = 5;
/// Limit for finding the size of the client log before a mount.
const LOG_SIZE_TIMEOUT: Duration = Duration::from_secs(5);

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
    fn log_file(&self) -> Option<PathBuf> {
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

// ---- client (the plugin's side) ----

/// Sends `request` to the agent at `socket` and turns its answer into the output of a mount
/// command. `mount_timeout` is the plugin's own limit; the agent enforces its own.
pub async fn call(
    socket: &Path,
    request: &MountRequest,
    mount_timeout: Duration,
) -> Result<CommandOutput, Error> {
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
        } => Ok(CommandOutput {
            success,
            status,
            output,
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

// ---- server (the agent) ----

/// Validated settings of the agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The socket to listen on.
    pub socket: PathBuf,
    /// Limit for one `mount`.
    pub mount_timeout: Duration,
    /// When set, every target must lie under it.
    pub kubelet_dir: Option<PathBuf>,
    /// The `mount` program.
    pub mount_program: PathBuf,
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file operation on the socket or its directory failed.
    #[error("{what} {path}: {source}", path = .path.display())]
    Socket {
        /// What was attempted.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

/// Listens on `config.socket` (mode 0600; a stale socket is replaced) and answers mount
/// requests until `shutdown` resolves; mounts in progress are waited for (up to their
/// timeout), then the socket is removed.
pub async fn serve(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let listener = bind(&config.socket)?;
    tracing::info!(
        socket = %config.socket.display(),
        mount_timeout = ?config.mount_timeout,
        "mount agent listening"
    );
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    let config = Arc::clone(&config);
                    let slot = Arc::clone(&slots).try_acquire_owned();
                    tokio::spawn(async move {
                        let response = match slot {
                            Ok(_slot) => answer(&mut stream, &config).await,
                            Err(_) => Some(MountResponse::Failed {
                                message: format!("busy: {MAX_CONCURRENT} mounts in progress"),
                            }),
                        };
                        // None: the peer sent nothing (a liveness check); nothing to answer.
                        if let Some(response) = response {
                            reply(stream, &response).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("mount agent stopping; waiting for mounts in progress");
    let all = u32::try_from(MAX_CONCURRENT).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        config.mount_timeout + Duration::from_secs(5),
        slots.acquire_many(all),
    )
    .await;
    drop(listener);
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// Binds the socket with mode 0600 from the start (umask), replacing a stale socket.
fn bind(socket: &Path) -> Result<UnixListener, AgentError> {
    let err = |what, source| AgentError::Socket {
        what,
        path: socket.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(|e| err("cannot remove the stale socket", e))?;
        }
        Ok(_) => return Err(AgentError::NotASocket(socket.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot inspect", e)),
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the directory of", e))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| err("cannot listen on", e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("cannot set the mode of", e))?;
    Ok(listener)
}

/// Reads, checks and runs one request; `None` when the peer closed without sending anything.
async fn answer(stream: &mut UnixStream, config: &AgentConfig) -> Option<MountResponse> {
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 || cred.uid() == me => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), "refused a connection from another user");
            return Some(MountResponse::Refused {
                message: "only root may ask for mounts".into(),
            });
        }
        Err(e) => {
            return Some(MountResponse::Failed {
                message: format!("cannot identify the peer: {e}"),
            });
        }
    }
    let mut body = Vec::new();
    let mut limited = (&mut *stream).take(MAX_REQUEST + 1);
    let read = limited.read_to_end(&mut body);
    match tokio::time::timeout(IO_TIMEOUT, read).await {
        Ok(Ok(0)) => return None,
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Some(MountResponse::Failed {
                message: format!("cannot read the request: {e}"),
            });
        }
        Err(_) => {
            return Some(MountResponse::Refused {
                message: format!("no complete request within {IO_TIMEOUT:?}"),
            });
        }
    }
    if body.len() as u64 > MAX_REQUEST {
        return Some(MountResponse::Refused {
            message: format!("request larger than {MAX_REQUEST} bytes"),
        });
    }
    let request: MountRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Some(MountResponse::Refused {
                message: format!("not a mount request: {e}"),
            });
        }
    };
    if let Err(e) = request.validate(config.kubelet_dir.as_deref()) {
        tracing::warn!(error = %e, "refused a mount request");
        return Some(MountResponse::Refused {
            message: e.to_string(),
        });
    }
    Some(run_mount(&request, config).await)
}

async fn run_mount(request: &MountRequest, config: &AgentConfig) -> MountResponse {
    let target = Path::new(&request.target);
    let log = request.log_file();
    let log_start = match log.clone() {
        Some(l) => {
            crate::error::blocking("reading the client log size", LOG_SIZE_TIMEOUT, move || {
                Ok(std::fs::metadata(&l).map_or(0, |m| m.len()))
            })
            .await
            .unwrap_or(0)
        }
        None => 0,
    };
    let mut cmd = tokio::process::Command::new(&config.mount_program);
    cmd.args(spawn::mount_args(&request.source, target, &request.options));
    let what = format!("mount -t glusterfs {} {}", request.source, request.target);
    let outcome = spawn::run(cmd, &what, config.mount_timeout).await;
    let response = match outcome {
        Ok(out) => {
            let log_tail = match log {
                Some(l) => crate::logs::tail_async(&l, log_start, LOG_TAIL_LINES).await,
                None => String::new(),
            };
            MountResponse::Ran {
                success: out.success,
                status: out.status,
                output: out.output,
                log_tail,
            }
        }
        Err(Error::Timeout { after, .. }) => MountResponse::Timeout {
            seconds: after.as_secs(),
        },
        Err(e) => MountResponse::Failed {
            message: e.to_string(),
        },
    };
    match &response {
        MountResponse::Ran { success: true, .. } => {
            tracing::info!(source = %request.source, target = %request.target, "mounted")
        }
        other => {
            tracing::warn!(source = %request.source, target = %request.target, outcome = ?other, "mount failed")
        }
    }
    response
}

async fn reply(mut stream: UnixStream, response: &MountResponse) {
    let Ok(body) = serde_json::to_vec(response) else {
        return;
    };
    let send = async {
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(IO_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::warn!(error = %e, "cannot send the answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str, target: &str, options: &[&str]) -> MountRequest {
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

    fn config(dir: &Path, mount_program: &str) -> AgentConfig {
        AgentConfig {
            socket: dir.join("agent/mount-agent.sock"),
            mount_timeout: Duration::from_secs(5),
            kubelet_dir: Some(dir.to_path_buf()),
            mount_program: PathBuf::from(mount_program),
        }
    }

    /// Serves on a socket in a temp dir with `mount_program` standing in for `mount`, sends
    /// `r`, and returns the plugin-side result.
    async fn exchange(
        mount_program: &str,
        r: impl Fn(&Path) -> MountRequest,
    ) -> Result<CommandOutput, Error> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), mount_program);
        let socket = cfg.socket.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(cfg, async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mode = std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "socket mode");
        let out = call(&socket, &r(dir.path()), Duration::from_secs(5)).await;
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
        assert!(!socket.exists(), "socket removed at shutdown");
        out
    }

    #[tokio::test]
    async fn the_agent_runs_exactly_the_mount_argv() {
        // `echo` stands in for `mount`: its output is the argv the agent built.
        let out = exchange("echo", |dir| {
            request(
                "g1:/vol1",
                &dir.join("globalmount").display().to_string(),
                &["backup-volfile-servers=g2:g3", "ro"],
            )
        })
        .await
        .expect("ran");
        assert!(out.success);
        assert!(
            out.output
                .starts_with("-t glusterfs -o backup-volfile-servers=g2:g3,ro g1:/vol1 /"),
            "{}",
            out.output
        );
        assert!(out.output.ends_with("/globalmount"), "{}", out.output);
    }

    #[tokio::test]
    async fn the_agent_refuses_what_the_validators_refuse_and_reports_failures() {
        let refused = exchange("echo", |dir| {
            request(
                "g1:/vol1",
                &dir.join("m").display().to_string(),
                &["log-file=/etc/shadow"],
            )
        })
        .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        // Outside the agent's --kubelet-dir.
        let outside = exchange("echo", |_| request("g1:/vol1", "/etc/m", &[])).await;
        assert!(
            matches!(outside, Err(Error::InvalidArgument(_))),
            "{outside:?}"
        );
        let failed = exchange("false", |dir| {
            request("g1:/vol1", &dir.join("m").display().to_string(), &[])
        })
        .await
        .expect("ran");
        assert!(!failed.success);
        let missing = exchange("/nonexistent/mount", |dir| {
            request("g1:/vol1", &dir.join("m").display().to_string(), &[])
        })
        .await;
        assert!(matches!(missing, Err(Error::Agent(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn raw_requests_other_than_a_mount_request_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "echo");
        let socket = cfg.socket.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(cfg, async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A connection that sends nothing (a liveness check) gets no answer.
        let mut probe = UnixStream::connect(&socket).await.expect("connect");
        probe.shutdown().await.expect("shutdown");
        let mut nothing = Vec::new();
        probe.read_to_end(&mut nothing).await.expect("read");
        assert!(nothing.is_empty());
        for body in [
            &b"{\"argv\":[\"sh\",\"-c\",\"id\"]}"[..],
            b"not json",
            b"{\"source\":\"g1:/v\",\"target\":\"/m\"}",
        ] {
            let mut s = UnixStream::connect(&socket).await.expect("connect");
            s.write_all(body).await.expect("write");
            s.shutdown().await.expect("shutdown");
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.expect("read");
            let response: MountResponse = serde_json::from_slice(&answer).expect("json answer");
            assert!(
                matches!(response, MountResponse::Refused { .. }),
                "{}: {response:?}",
                String::from_utf8_lossy(body)
            );
        }
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
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
