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
//! The agent listens on a unix socket and answers the requests of
//! [`crate::agent_protocol`] (the request, its checks and the answer are described there).
//! The mount is made in the agent's mount namespace, with the agent's `mount.glusterfs` and
//! `glusterfs`: the target must be visible there (kubelet's directory is shared between the
//! host and the plugin with `mountPropagation: Bidirectional`).

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::agent_protocol::{MountRequest, MountResponse};
use crate::command;
use crate::error::Error;
use crate::logs;
use crate::options;

/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request, and the agent to accept a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Mounts run at once; more requests are answered "busy".
const MAX_CONCURRENT: usize = 16;

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
    let log_start = match &log {
        Some(l) => logs::end(l).await,
        None => 0,
    };
    let mut cmd = tokio::process::Command::new(&config.mount_program);
    cmd.args(options::mount_args(
        &request.source,
        target,
        &request.options,
    ));
    let what = format!("mount -t glusterfs {} {}", request.source, request.target);
    let outcome = command::run(cmd, &what, config.mount_timeout).await;
    let response = match outcome {
        Ok(out) => {
            let log_tail = match log {
                Some(l) => logs::tail_async(&l, log_start, logs::TAIL_LINES).await,
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
    use crate::agent_protocol::tests::request;
    use crate::agent_protocol::{MountOutcome, call};

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
    /// Serves `cfg` until the sender is used; returns once the socket exists.
    async fn start(
        cfg: AgentConfig,
    ) -> (
        PathBuf,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
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
        (socket, stop, server)
    }

    async fn exchange(
        mount_program: &str,
        r: impl Fn(&Path) -> MountRequest,
    ) -> Result<MountOutcome, Error> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, stop, server) = start(config(dir.path(), mount_program)).await;
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
        assert!(out.command.success);
        assert!(
            out.command
                .output
                .starts_with("-t glusterfs -o backup-volfile-servers=g2:g3,ro g1:/vol1 /"),
            "{}",
            out.command.output
        );
        assert!(
            out.command.output.ends_with("/globalmount"),
            "{}",
            out.command.output
        );
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
        assert!(!failed.command.success);
        let missing = exchange("/nonexistent/mount", |dir| {
            request("g1:/vol1", &dir.join("m").display().to_string(), &[])
        })
        .await;
        assert!(matches!(missing, Err(Error::Agent(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn raw_requests_other_than_a_mount_request_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, stop, server) = start(config(dir.path(), "echo")).await;
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
}
