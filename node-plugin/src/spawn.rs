//! Starting the GlusterFS FUSE client so that it outlives the plugin.
//!
//! # Why this is needed
//!
//! The FUSE client (`glusterfs`) serves every I/O of a mounted volume. If it dies, the mount
//! and every bind mount of it answer "Transport endpoint is not connected" until they are
//! remounted, and running pods only recover when they are restarted. A client started by the
//! node plugin is, by default, a process of the plugin's container, and a container runtime
//! kills all of those when the plugin is restarted or upgraded: the most common complaint about
//! FUSE-based CSI drivers (kadalu#913, kubernetes#70013, ceph-csi#91).
//!
//! # How a runtime stops a container, and what survives it
//!
//! - A container with a **PID namespace of its own** is stopped by killing that namespace's
//!   first process; the kernel then kills every process of the namespace. Nothing started from
//!   inside can leave it: `setns` into an ancestor PID namespace is refused (EINVAL), so
//!   `nsenter --target 1 --pid` does not help either. A plugin run this way cannot keep its
//!   clients alive, and says so in its start-up log.
//! - A container that shares the **host's PID namespace** (`hostPID: true`) is stopped by
//!   killing every process of the container's **cgroup** (runc uses `cgroup.kill` or the
//!   freezer). Processes in another cgroup survive.
//!
//! So the DaemonSet runs the plugin with `hostPID: true`, and the plugin starts each mount
//! helper — and with it the `glusterfs` daemon it forks — in a cgroup outside the container:
//! `--fuse-cgroup DIR` (repeat per cgroup v1 hierarchy). The child writes `0` to
//! `DIR/cgroup.procs` between `fork` and `exec`, so there is no moment at which the client is
//! in the container's cgroup. When the plugin is in a cgroup namespace of its own (the default
//! for containers on cgroup v2), the child first joins the host's cgroup namespace
//! (`/proc/1/ns/cgroup`, visible thanks to hostPID): the kernel only lets a process move
//! others between cgroups inside its cgroup namespace.
//!
//! If the move fails (no such directory, read-only cgroupfs), the mount is made anyway and a
//! warning is logged: the volume works, it just does not survive a plugin restart.
//!
//! # What the DaemonSet needs
//!
//! - `hostPID: true`;
//! - `privileged: true` (mount, `/dev/fuse`, `setns`, writing to cgroupfs);
//! - the host's cgroup file system mounted read-write, e.g. hostPath `/sys/fs/cgroup` at
//!   `/sys/fs/cgroup`, and `--fuse-cgroup /sys/fs/cgroup/gluster-csi-fuse` (cgroup v2; on cgroup
//!   v1 one directory per hierarchy, comma-separated);
//! - kubelet's directory (`/var/lib/kubelet`) with `mountPropagation: Bidirectional`, so mounts
//!   made in the container appear on the host and in pods;
//! - `--state-dir` on a hostPath (client logs and volume records outlive the container);
//! - no memory limit small enough to OOM-kill clients is relevant here: clients are no longer
//!   charged to the container once moved.
//!
//! The mount runs in the plugin's mount namespace with the plugin image's `mount.glusterfs`
//! and `glusterfs`; the host needs no Gluster packages. After a container stop the client keeps
//! the old container's mount namespace alive; its mounts under kubelet's directory are shared
//! with the host, so the host and the next plugin see and can unmount them.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;

use crate::error::Error;

/// Most bytes of a command's stdout or stderr kept.
const OUTPUT_LIMIT: u64 = 16 * 1024;
/// How long to wait for a command's output pipes to close after it exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Whether the plugin shares the host's PID namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The host's: clients can be kept alive by moving them to another cgroup.
    Host,
    /// One of its own (a container without `hostPID`): clients die with the plugin.
    Own,
}

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit status, for messages.
    pub status: String,
    /// Its standard output and error, lossily decoded, trimmed.
    pub output: String,
}

/// Starts `mount -t glusterfs` in the configured cgroups.
#[derive(Debug)]
pub struct ClientLauncher {
    mount_program: PathBuf,
    fuse_cgroups: Vec<PathBuf>,
    host_cgroup_ns: Option<PathBuf>,
    timeout: Duration,
    pid_namespace: PidNamespace,
}

/// Prepared in the parent, used in the child between fork and exec (no allocation there).
struct Escape {
    cgroup_ns: Option<OwnedFd>,
    procs_files: Vec<CString>,
}

impl Escape {
    /// Runs in the forked child: join the host cgroup namespace, move into each cgroup.
    fn enter(&self) -> std::io::Result<()> {
        if let Some(ns) = &self.cgroup_ns {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWCGROUP)?;
        }
        for file in &self.procs_files {
            let fd = nix::fcntl::open(file.as_c_str(), OFlag::O_WRONLY, Mode::empty())?;
            nix::unistd::write(&fd, b"0")?;
        }
        Ok(())
    }
}

impl ClientLauncher {
    /// A launcher running `mount` with `timeout`, moving clients to `fuse_cgroups`. Detects
    /// the PID and cgroup namespace situation and logs what it means for client survival.
    pub fn new(fuse_cgroups: &[PathBuf], timeout: Duration) -> Self {
        let pid_namespace = detect_pid_namespace();
        let mut usable = Vec::new();
        for dir in fuse_cgroups {
            match prepare_cgroup(dir) {
                Ok(()) => usable.push(dir.clone()),
                Err(e) => tracing::warn!(
                    cgroup = %dir.display(), error = %e,
                    "cannot use this FUSE client cgroup; clients will stay in the plugin's cgroup for it"
                ),
            }
        }
        let host_cgroup_ns = (!usable.is_empty() && pid_namespace == PidNamespace::Host)
            .then(host_cgroup_namespace)
            .flatten();
        match (pid_namespace, usable.is_empty()) {
            (PidNamespace::Own, _) => tracing::error!(
                "the plugin runs in a PID namespace of its own: the FUSE clients it starts die \
                 when it stops, breaking every mount on this node; run the DaemonSet with hostPID: true"
            ),
            (PidNamespace::Host, true) => tracing::warn!(
                "no --fuse-cgroup: FUSE clients stay in the plugin's cgroup and die if the \
                 container runtime kills that cgroup; set --fuse-cgroup to a host cgroup"
            ),
            (PidNamespace::Host, false) => tracing::info!(
                cgroups = ?usable, joins_host_cgroup_namespace = host_cgroup_ns.is_some(),
                "FUSE clients start outside the plugin's cgroup"
            ),
        }
        Self {
            mount_program: PathBuf::from("mount"),
            fuse_cgroups: usable,
            host_cgroup_ns,
            timeout,
            pid_namespace,
        }
    }

    /// The PID namespace situation found at start.
    pub fn pid_namespace(&self) -> PidNamespace {
        self.pid_namespace
    }

    /// Runs `mount -t glusterfs -o OPTIONS SOURCE TARGET` (argv, no shell) under the timeout.
    pub async fn mount_glusterfs(
        &self,
        source: &str,
        target: &Path,
        options: &[String],
    ) -> Result<CommandOutput, Error> {
        let argv = |cmd: &mut tokio::process::Command| {
            cmd.arg("-t")
                .arg("glusterfs")
                .arg("-o")
                .arg(options.join(","))
                .arg(source)
                .arg(target);
        };
        let what = format!("mount -t glusterfs {source} {}", target.display());
        if self.fuse_cgroups.is_empty() {
            let mut cmd = tokio::process::Command::new(&self.mount_program);
            argv(&mut cmd);
            return run(cmd, &what, self.timeout).await;
        }
        let escape = self.escape()?;
        let mut cmd = tokio::process::Command::new(&self.mount_program);
        argv(&mut cmd);
        // SAFETY: `Escape::enter` only makes system calls (setns, open, write, close) on data
        // prepared before the fork; it allocates nothing and takes no lock, as required between
        // fork and exec in a multi-threaded process.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || escape.enter());
        }
        match run(cmd, &what, self.timeout).await {
            Err(Error::Io { source, .. }) if source.raw_os_error().is_some() => {
                tracing::warn!(
                    error = %source,
                    "cannot start the mount in the FUSE client cgroup; mounting in the plugin's \
                     cgroup (the client will not survive a plugin restart)"
                );
                let mut cmd = tokio::process::Command::new(&self.mount_program);
                argv(&mut cmd);
                run(cmd, &what, self.timeout).await
            }
            other => other,
        }
    }

    fn escape(&self) -> Result<Escape, Error> {
        let cgroup_ns = match &self.host_cgroup_ns {
            Some(p) => Some(
                nix::fcntl::open(
                    p.as_path(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::sys("open", p, e))?,
            ),
            None => None,
        };
        let procs_files = self
            .fuse_cgroups
            .iter()
            .map(|dir| {
                CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(|_| {
                    Error::InvalidArgument(format!("cgroup path {} has a NUL byte", dir.display()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Escape {
            cgroup_ns,
            procs_files,
        })
    }
}

/// Runs `cmd` (stdin closed, output captured, own process group) and waits at most `limit`.
/// On timeout the command's process group is killed.
pub async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    limit: Duration,
) -> Result<CommandOutput, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let program = PathBuf::from(cmd.as_std().get_program());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start", program, e))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let readers = async move {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(OUTPUT_LIMIT).read_to_end(&mut out).await;
        }
        let mut err = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(OUTPUT_LIMIT).read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        out
    };
    let reader = tokio::spawn(readers);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Error::io("waiting for", what.to_owned(), e)),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            reader.abort();
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: limit,
            });
        }
    };
    // A daemon forked by the command could hold the pipes open; do not wait for it.
    let output = match tokio::time::timeout(OUTPUT_GRACE, reader).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => String::new(),
    };
    Ok(CommandOutput {
        success: status.success(),
        status: status.to_string(),
        output,
    })
}

/// Whether this process has a PID namespace of its own: it is the namespace's first process,
/// or `/proc/self/status` lists more than one pid for it (the `/proc` in use belongs to an
/// ancestor namespace).
pub fn detect_pid_namespace() -> PidNamespace {
    if std::process::id() == 1 {
        return PidNamespace::Own;
    }
    let nested = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|pids| pids.split_whitespace().count() > 1)
        })
        .unwrap_or(false);
    if nested {
        PidNamespace::Own
    } else {
        PidNamespace::Host
    }
}

/// Whether pid numbers read from `/proc` name processes in this process's PID namespace (the
/// `/proc` mounted here belongs to it), so that they may be signalled.
pub fn proc_pids_are_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// `/proc/1/ns/cgroup` when it differs from ours (the plugin is in a cgroup namespace of its
/// own) and can be read.
fn host_cgroup_namespace() -> Option<PathBuf> {
    let host = Path::new("/proc/1/ns/cgroup");
    let theirs = std::fs::read_link(host).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/cgroup").ok()?;
    (theirs != ours).then(|| host.to_path_buf())
}

/// Creates the cgroup directory if needed and checks it is a cgroup.
fn prepare_cgroup(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let procs = dir.join("cgroup.procs");
    if !procs.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is not a cgroup directory (no cgroup.procs)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Host pids (as seen through this `/proc`) of the `glusterfs` processes serving `mount_point`:
/// the client and, with `auto_unmount`, its unmount watcher.
pub fn client_pids(mount_point: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = mount_point.as_os_str().as_bytes();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
            let is_glusterfs = args
                .next()
                .and_then(|a| Path::new(std::ffi::OsStr::from_bytes(a)).file_name())
                .is_some_and(|n| n.as_bytes() == b"glusterfs");
            is_glusterfs && args.next_back() == Some(want)
        })
        .collect()
}

/// Before a path is mounted again: waits up to `wait` for `glusterfs` processes of an earlier
/// mount of `mount_point` to exit, then kills those left. With `auto_unmount`, a dead client's
/// watcher unmounts the mount point by path; were it still running, it could unmount the new
/// mount. Call only when nothing is mounted at `mount_point`.
pub async fn retire_stale_clients(mount_point: &Path, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = client_pids(mount_point);
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            if !proc_pids_are_ours() {
                tracing::warn!(
                    pids = ?left, mount_point = %mount_point.display(),
                    "stale Gluster client processes are still running; they are not in this \
                     plugin's PID namespace, so it cannot signal them"
                );
                return;
            }
            for pid in left {
                tracing::warn!(pid, mount_point = %mount_point.display(), "killing a stale Gluster client");
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_run_without_a_shell_and_report_output() {
        let mut cmd = tokio::process::Command::new("echo");
        cmd.arg("$(id);").arg("two words");
        let out = run(cmd, "echo", Duration::from_secs(10))
            .await
            .expect("echo runs");
        assert!(out.success);
        assert_eq!(out.output, "$(id); two words");

        let cmd = tokio::process::Command::new("false");
        let out = run(cmd, "false", Duration::from_secs(10))
            .await
            .expect("false runs");
        assert!(!out.success);
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_the_timeout() {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30");
        // Had `run` waited for the exit, it would return the status instead of a timeout.
        let r = run(cmd, "sleep 30", Duration::from_millis(200)).await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_io_error() {
        let cmd = tokio::process::Command::new("/nonexistent/mount");
        let r = run(cmd, "mount", Duration::from_secs(5)).await;
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    }

    #[test]
    fn no_client_serves_a_path_that_is_not_mounted() {
        assert!(client_pids(Path::new("/nonexistent/mount/point")).is_empty());
    }
}
