//! The GlusterFS FUSE client processes of this node, found through `/proc`.
//!
//! Whether a mount that fails its health check is dead (nothing serves it any more: remount
//! it) or degraded (its client runs and waits for its servers: leave it alone) depends on
//! whether a `glusterfs` process still serves it ([`crate::condition`]). A client is a process
//! named `glusterfs` whose last argument is its mount point and which holds `/dev/fuse` open.
//! With `auto_unmount` the client has a companion with the same command line that does not
//! hold `/dev/fuse`: it waits for the client to end, then unmounts the mount point *by path*.
//!
//! # Never blocking on a hung mount
//!
//! A scan reads `/proc/PID/comm` of every process first: the kernel answers it from the task
//! itself, without waiting for anything. Only for processes named `glusterfs` does it read
//! `cmdline` (which takes the target's memory-map lock, so it can wait behind a process stuck
//! in a page fault on a hung FUSE mount) and list `fd` (link names only, no file system
//! access). The whole scan runs on the blocking pool under [`SCAN_TIMEOUT`]; a scan that does
//! not finish in time means "cannot tell", never "no client".
//!
//! # What the plugin can see
//!
//! In the host's PID namespace (`hostPID: true`, as the DaemonSet runs) `/proc` shows every
//! client on the node, and "no client found" means there is none. In a PID namespace of its
//! own (a pod without hostPID, the testbed's plugin with the mount agent) clients started
//! outside are invisible: the plugin then cannot tell, and never signals what it cannot see.
//! The same finding ([`detect_pid_namespace`]) tells the launcher ([`crate::spawn`]) whether
//! the clients it starts die with the plugin.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::blocking;

/// Limit for one scan of `/proc`.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a command line read.
const CMDLINE_LIMIT: u64 = 128 * 1024;
/// Pause between scans while waiting for stale processes to exit.
const RETIRE_POLL: Duration = Duration::from_millis(100);

/// Whether the plugin shares the host's PID namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The host's: clients can be kept alive by moving them to another cgroup.
    Host,
    /// One of its own (a container without `hostPID`): clients die with the plugin.
    Own,
}

/// What the plugin can see of other processes, found once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessView {
    /// `/proc` shows every process of the node: the plugin is in the host's PID namespace and
    /// the `/proc` it reads belongs to that namespace.
    pub sees_all: bool,
    /// Pids read from `/proc` are pids in the plugin's own namespace, so signals reach them.
    pub may_signal: bool,
}

impl ProcessView {
    /// Looks at this process's PID namespace and `/proc`.
    pub fn detect() -> Self {
        let ours = proc_pids_are_ours();
        Self {
            sees_all: ours && detect_pid_namespace() == PidNamespace::Host,
            may_signal: ours,
        }
    }
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
fn proc_pids_are_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// A `glusterfs` process with its mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientProcess {
    /// Its pid, as seen through `/proc`.
    pub pid: u32,
    /// Its last argument: the mount point it was started for.
    pub mount_point: PathBuf,
    /// Whether it holds `/dev/fuse` open, i.e. serves a FUSE connection (the `auto_unmount`
    /// companion does not).
    pub fuse_server: bool,
}

/// Every `glusterfs` process under `proc` (normally `/proc`). Blocking.
pub fn scan_dir(proc: &Path) -> Vec<ClientProcess> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| inspect(proc, pid))
        .collect()
}

/// Reads one process: `comm` first, the rest only for a `glusterfs`.
fn inspect(proc: &Path, pid: u32) -> Option<ClientProcess> {
    let dir = proc.join(pid.to_string());
    let mut comm = Vec::new();
    std::fs::File::open(dir.join("comm"))
        .ok()?
        .take(64)
        .read_to_end(&mut comm)
        .ok()?;
    if comm.strip_suffix(b"\n").unwrap_or(&comm) != b"glusterfs" {
        return None;
    }
    let mut cmdline = Vec::new();
    std::fs::File::open(dir.join("cmdline"))
        .ok()?
        .take(CMDLINE_LIMIT)
        .read_to_end(&mut cmdline)
        .ok()?;
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let program = args.next()?;
    if Path::new(std::ffi::OsStr::from_bytes(program))
        .file_name()
        .is_none_or(|n| n.as_bytes() != b"glusterfs")
    {
        return None;
    }
    let mount_point = PathBuf::from(std::ffi::OsStr::from_bytes(args.next_back()?));
    let fuse_server = std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("/dev/fuse"))
        })
    });
    Some(ClientProcess {
        pid,
        mount_point,
        fuse_server,
    })
}

/// Every `glusterfs` process of the node, from `/proc` on the blocking pool; `None` when the
/// scan did not finish within [`SCAN_TIMEOUT`] (or failed).
pub async fn scan() -> Option<Vec<ClientProcess>> {
    match blocking("scanning /proc for Gluster clients", SCAN_TIMEOUT, || {
        Ok(scan_dir(Path::new("/proc")))
    })
    .await
    {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell which Gluster clients run");
            None
        }
    }
}

/// Before a path is mounted again (nothing is mounted at `mount_point`): waits up to `wait`
/// for `glusterfs` processes started for `mount_point` to exit, then kills those left that
/// serve no FUSE connection — the `auto_unmount` companions of earlier clients, which would
/// unmount the new mount by path when their client ends. A process that still serves a FUSE
/// connection is never signalled: with nothing mounted at its mount point it serves detached
/// mounts that programs still hold open, or is about to exit by itself. Nothing is signalled
/// unless `view.may_signal`.
pub async fn retire_stale(mount_point: &Path, wait: Duration, view: ProcessView) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some(all) = scan().await else {
            return;
        };
        let left: Vec<ClientProcess> = all
            .into_iter()
            .filter(|p| p.mount_point == mount_point)
            .collect();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() < deadline {
            tokio::time::sleep(RETIRE_POLL).await;
            continue;
        }
        let (servers, companions): (Vec<_>, Vec<_>) = left.into_iter().partition(|p| p.fuse_server);
        if !servers.is_empty() {
            let pids: Vec<u32> = servers.iter().map(|p| p.pid).collect();
            tracing::warn!(
                ?pids, mount_point = %mount_point.display(),
                "a Gluster client started for this path still serves a FUSE connection with \
                 nothing mounted here (a detached mount still in use); it is left running"
            );
        }
        if companions.is_empty() {
            return;
        }
        let pids: Vec<u32> = companions.iter().map(|p| p.pid).collect();
        if !view.may_signal {
            tracing::warn!(
                ?pids, mount_point = %mount_point.display(),
                "stale Gluster processes are still running; they are not in this plugin's PID \
                 namespace, so it cannot signal them"
            );
            return;
        }
        for pid in pids {
            tracing::warn!(
                pid, mount_point = %mount_point.display(),
                "killing the auto_unmount companion of an earlier Gluster client"
            );
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A real process named `glusterfs` (a shell started through a link of that name) whose
    /// last argument is `mount_point`, holding `/dev/fuse` open when `fuse`.
    struct FakeClient {
        child: std::process::Child,
    }

    impl FakeClient {
        fn start(dir: &Path, mount_point: &Path, fuse: bool) -> Self {
            let link = dir.join("glusterfs");
            if !link.exists() {
                std::os::unix::fs::symlink("/bin/sh", &link).expect("symlink");
            }
            let open = if fuse {
                "exec 3<>/dev/fuse"
            } else {
                "exec 3</dev/null"
            };
            let child = std::process::Command::new(&link)
                .arg("-c")
                .arg(format!("{open}; while :; do sleep 1; done"))
                .arg("glusterfs")
                .arg(mount_point)
                .process_group(0)
                .spawn()
                .expect("spawn");
            Self { child }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for FakeClient {
        fn drop(&mut self) {
            if let Ok(raw) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.child.wait();
        }
    }

    fn fuse_usable() -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok()
    }

    /// Waits until the scan shows `pid` (the shell has run its redirection).
    async fn seen(pid: u32, fuse: bool) -> ClientProcess {
        for _ in 0..100 {
            if let Some(p) = scan()
                .await
                .expect("scan")
                .into_iter()
                .find(|p| p.pid == pid && p.fuse_server == fuse)
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process {pid} not found by the scan");
    }

    #[tokio::test]
    async fn the_scan_finds_glusterfs_processes_and_tells_servers_from_companions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let point = dir.path().join("mnt");
        let companion = FakeClient::start(dir.path(), &point, false);
        let p = seen(companion.pid(), false).await;
        assert_eq!(p.mount_point, point);
        assert!(!p.fuse_server);
        if fuse_usable() {
            let server = FakeClient::start(dir.path(), &point, true);
            let p = seen(server.pid(), true).await;
            assert_eq!(p.mount_point, point);
        }
        // This test process is no glusterfs.
        let me = std::process::id();
        assert!(inspect(Path::new("/proc"), me).is_none());
    }

    #[tokio::test]
    async fn retiring_kills_companions_and_never_a_fuse_server() {
        let view = ProcessView::detect();
        if !view.may_signal {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let point = dir.path().join("mnt");
        let mut companion = FakeClient::start(dir.path(), &point, false);
        seen(companion.pid(), false).await;
        let server = fuse_usable().then(|| FakeClient::start(dir.path(), &point, true));
        if let Some(s) = &server {
            seen(s.pid(), true).await;
        }
        // Another mount point's companion is none of this path's business.
        let other = FakeClient::start(dir.path(), &dir.path().join("other"), false);
        seen(other.pid(), false).await;

        retire_stale(&point, Duration::from_millis(200), view).await;
        let status = tokio::task::spawn_blocking(move || companion.child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(!status.success(), "the companion was killed");
        let left = scan().await.expect("scan");
        if let Some(s) = &server {
            assert!(
                left.iter().any(|p| p.pid == s.pid()),
                "a FUSE server was killed"
            );
        }
        assert!(left.iter().any(|p| p.pid == other.pid()));
    }

    #[tokio::test]
    async fn nothing_is_retired_for_a_path_no_process_uses() {
        let view = ProcessView::detect();
        let started = tokio::time::Instant::now();
        retire_stale(
            Path::new("/nonexistent/mount/point"),
            Duration::from_secs(5),
            view,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for nothing"
        );
    }
}
