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
//!   `nsenter --target 1 --pid` does not help either. Only something that already lives
//!   outside can start a client that survives: the mount agent (below).
//! - A container that shares the **host's PID namespace** (`hostPID: true`) is stopped by
//!   killing every process of the container's **cgroup** (runc uses `cgroup.kill` or the
//!   freezer). Processes in another cgroup survive.
//!
//! # The launchers (`--fuse-launcher`)
//!
//! - **`direct`** (default): the plugin starts the client (`glusterfs`) itself, with the flags
//!   `mount.glusterfs` would give it ([`crate::client_args`]). With `--fuse-cgroup
//!   DIR` the child writes `0` to `DIR/cgroup.procs` between `fork` and `exec`, so there is no
//!   moment at which the client is in the container's cgroup. On a cgroup v1 or hybrid host,
//!   where `/sys/fs/cgroup` holds one mount per hierarchy, `/sys/fs/cgroup/NAME` stands for
//!   `NAME` in every hierarchy (`memory/NAME`, `freezer/NAME`, …, `unified/NAME`): the same
//!   flag serves v1 and v2 nodes.
//!   When the plugin is in a cgroup namespace of its own (the default for containers on cgroup
//!   v2), the child first joins the host's cgroup namespace (`/proc/1/ns/cgroup`, visible thanks
//!   to hostPID): the kernel only lets a process move others between cgroups inside its cgroup
//!   namespace. If the move fails (no such directory, read-only cgroupfs), the mount is made
//!   anyway and a warning is logged: the volume works, it just does not survive a plugin
//!   restart. For `hostPID: true` DaemonSets.
//! - **`systemd`**: the plugin runs `systemd-run --scope --quiet --collect
//!   --unit=gluster-csi-<hash> -- mount -t glusterfs …`, as kubelet's in-tree glusterfs mounter
//!   did: the host's systemd puts the mount helper (and the client it forks) in a scope unit of
//!   its own, outside the container's cgroup. The client still starts in the plugin's PID
//!   namespace, so this also needs `hostPID: true`; the pod needs the host's `/run/systemd` (the
//!   D-Bus private socket `systemd-run` talks to), `/sys/fs/cgroup`, and `systemd-run` in the
//!   image. An alternative to `--fuse-cgroup` where the host runs systemd.
//! - **`agent:unix:///path/mount-agent.sock`**: the plugin asks a mount agent
//!   ([`crate::agent`], `gluster-csi-node mount-agent --socket PATH`) that runs outside the
//!   plugin's PID namespace and cgroup — on the host — to run the mount. The only launcher that
//!   keeps clients alive when the plugin runs in a PID namespace of its own. The agent accepts
//!   nothing but a `mount -t glusterfs -o OPTIONS SOURCE TARGET` whose every part passes the
//!   plugin's own validators.
//!
//! At start the plugin logs an error when it finds itself in a PID namespace of its own with
//! `direct` or `systemd`: every client it starts would die with it.
//!
//! # What the DaemonSet needs (with `direct`)
//!
//! - `hostPID: true`;
//! - `privileged: true` (mount, `/dev/fuse`, `setns`, writing to cgroupfs);
//! - the host's cgroup file system mounted read-write, e.g. hostPath `/sys/fs/cgroup` at
//!   `/sys/fs/cgroup`, and `--fuse-cgroup /sys/fs/cgroup/gluster-csi-fuse` (cgroup v2, v1 and
//!   hybrid hosts alike);
//! - `hostNetwork: true`: a client keeps the network namespace it was started in, and a pod's
//!   own namespace loses its interfaces when kubelet replaces the pod;
//! - kubelet's directory (`/var/lib/kubelet`) with `mountPropagation: Bidirectional`, so mounts
//!   made in the container appear on the host and in pods;
//! - `--state-dir` on a hostPath (client logs and volume records outlive the container);
//! - no memory limit small enough to OOM-kill clients is relevant here: clients are no longer
//!   charged to the container once moved.
//!
//! The mount runs in the plugin's mount namespace with the plugin image's `glusterfs` (and
//! `mount.glusterfs` for `systemd`); the host needs no Gluster packages. After a container stop
//! the client keeps the old container's mount namespace alive; its mounts under kubelet's
//! directory are shared with the host, so the host and the next plugin see and can unmount them.
//! (With the agent, the mount runs in the agent's mount namespace with the agent's tools
//! instead.)

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use crate::agent_protocol::{self, MountOutcome, MountRequest};
use crate::client_args;
use crate::clients::{self, PidNamespace};
use crate::command::{self, CommandOutput};
use crate::error::Error;
use crate::options::mount_args;

/// Prefix of the systemd scope units of FUSE clients.
pub const SYSTEMD_UNIT_PREFIX: &str = "gluster-csi-";

/// Who starts the FUSE clients (`--fuse-launcher`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FuseLauncher {
    /// The plugin itself (`direct`), optionally moving clients to `--fuse-cgroup`.
    Direct,
    /// `systemd-run --scope` on the host's systemd (`systemd`).
    Systemd,
    /// The mount agent listening on this unix socket (`agent:unix:///path`).
    Agent(PathBuf),
}

impl FromStr for FuseLauncher {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(Self::Direct),
            "systemd" => Ok(Self::Systemd),
            other => {
                let Some(rest) = other.strip_prefix("agent:") else {
                    return Err(format!(
                        "{other:?} is not a FUSE launcher: use direct, systemd or \
                         agent:unix:///path/to/mount-agent.sock"
                    ));
                };
                let path = rest.strip_prefix("unix://").ok_or_else(|| {
                    format!("{other:?}: the agent address must be unix:///absolute/path")
                })?;
                if !crate::paths::is_normalised(Path::new(path)) || path == "/" {
                    return Err(format!(
                        "{other:?}: the agent socket must be an absolute, normalised path"
                    ));
                }
                Ok(Self::Agent(PathBuf::from(path)))
            }
        }
    }
}

impl std::fmt::Display for FuseLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Systemd => f.write_str("systemd"),
            Self::Agent(p) => write!(f, "agent:unix://{}", p.display()),
        }
    }
}

/// How the launcher starts a mount.
#[derive(Debug)]
enum How {
    /// `mount` as a child of the plugin, moved to these cgroups (none: stays in the plugin's).
    Direct {
        fuse_cgroups: Vec<PathBuf>,
        host_cgroup_ns: Option<PathBuf>,
    },
    /// `systemd-run --scope … -- mount …`.
    Systemd { systemd_run: PathBuf },
    /// A request to the mount agent on this socket.
    Agent { socket: PathBuf },
}

/// Starts the GlusterFS client of a mount the configured way.
#[derive(Debug)]
pub struct ClientLauncher {
    how: How,
    /// `mount`, for the systemd launcher.
    mount_program: PathBuf,
    /// `glusterfs`, the client the direct launcher starts itself.
    client_program: PathBuf,
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

/// Name of the systemd scope of a mount at `target`: the prefix and 16 hex digits of a hash of
/// the target and `nonce` (a new scope per attempt, so that a scope still held by an earlier
/// client of the same path never blocks a remount).
pub fn systemd_unit(target: &Path, nonce: u64) -> String {
    let mut h = Sha256::new();
    h.update(target.as_os_str().as_bytes());
    h.update(nonce.to_le_bytes());
    let digest = h.finalize();
    format!("{SYSTEMD_UNIT_PREFIX}{}", hex::encode(&digest[..8]))
}

/// Arguments of `systemd-run` that run `mount_program mount_args` in the transient scope
/// `unit`: `--scope --quiet --collect --unit=UNIT -- MOUNT ARGS…`.
pub fn systemd_run_args(
    unit: &str,
    mount_program: &Path,
    mount_args: &[OsString],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--scope".into(),
        "--quiet".into(),
        "--collect".into(),
        format!("--unit={unit}").into(),
        "--".into(),
        mount_program.as_os_str().to_owned(),
    ];
    args.extend(mount_args.iter().cloned());
    args
}

impl ClientLauncher {
    /// A launcher of the kind `launcher`, running `mount` with `timeout`; `fuse_cgroups` apply
    /// to [`FuseLauncher::Direct`] only. Detects the PID and cgroup namespace situation and
    /// logs what it means for client survival.
    pub fn new(launcher: &FuseLauncher, fuse_cgroups: &[PathBuf], timeout: Duration) -> Self {
        let pid_namespace = clients::detect_pid_namespace();
        let how = match launcher {
            FuseLauncher::Direct => Self::direct(fuse_cgroups, pid_namespace),
            FuseLauncher::Systemd => {
                if pid_namespace == PidNamespace::Own {
                    tracing::error!(
                        "the plugin runs in a PID namespace of its own: the FUSE clients it \
                         starts through systemd-run still die when it stops, breaking every \
                         mount on this node; run the DaemonSet with hostPID: true or use \
                         --fuse-launcher agent:unix://…"
                    );
                } else {
                    tracing::info!(
                        "FUSE clients start in systemd scopes of their own (systemd-run --scope)"
                    );
                }
                How::Systemd {
                    systemd_run: PathBuf::from("systemd-run"),
                }
            }
            FuseLauncher::Agent(socket) => {
                if socket.exists() {
                    tracing::info!(socket = %socket.display(), "FUSE clients are started by the mount agent");
                } else {
                    tracing::warn!(
                        socket = %socket.display(),
                        "the mount agent's socket does not exist (yet); mounts fail until it runs"
                    );
                }
                How::Agent {
                    socket: socket.clone(),
                }
            }
        };
        Self {
            how,
            mount_program: PathBuf::from("mount"),
            client_program: PathBuf::from("glusterfs"),
            timeout,
            pid_namespace,
        }
    }

    fn direct(fuse_cgroups: &[PathBuf], pid_namespace: PidNamespace) -> How {
        let mut usable = Vec::new();
        for dir in &expand_cgroup_dirs(fuse_cgroups) {
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
                "the plugin runs in a PID namespace of its own with --fuse-launcher direct: the \
                 FUSE clients it starts die when it stops, breaking every mount on this node; \
                 run the DaemonSet with hostPID: true, or use --fuse-launcher agent:unix://… \
                 with a mount agent on the host"
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
        How::Direct {
            fuse_cgroups: usable,
            host_cgroup_ns,
        }
    }

    /// The PID namespace situation found at start.
    pub fn pid_namespace(&self) -> PidNamespace {
        self.pid_namespace
    }

    /// Mounts `source` at `target` with `options` under the timeout, the configured way:
    /// `glusterfs FLAGS… TARGET` (direct), or `mount -t glusterfs -o OPTIONS SOURCE TARGET`
    /// (systemd, agent); argv, no shell.
    pub async fn mount_glusterfs(
        &self,
        source: &str,
        target: &Path,
        options: &[String],
    ) -> Result<MountOutcome, Error> {
        match &self.how {
            How::Direct {
                fuse_cgroups,
                host_cgroup_ns,
            } => {
                let args = client_args::glusterfs_args(source, target, options)?;
                let what = format!("glusterfs {source} {}", target.display());
                let mut ran = self
                    .mount_direct(&args, &what, fuse_cgroups, host_cgroup_ns.as_deref())
                    .await?;
                if ran.success {
                    // The client answers for the mount point once it has mounted; one that
                    // went into the background and then failed leaves nothing that answers.
                    if let Err(why) = answers(target, self.timeout).await {
                        ran.success = false;
                        ran.status = "the client mounted, then the mount point did not \
                                      answer"
                            .into();
                        ran.output = why;
                    }
                }
                Ok(ran.into())
            }
            How::Systemd { systemd_run } => {
                let what = format!("mount -t glusterfs {source} {}", target.display());
                let args = mount_args(source, target, options);
                let nonce = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or_default();
                let unit = systemd_unit(target, nonce);
                let mut cmd = tokio::process::Command::new(systemd_run);
                cmd.args(systemd_run_args(&unit, &self.mount_program, &args));
                tracing::debug!(unit, "mounting in a systemd scope");
                Ok(command::run(cmd, &what, self.timeout).await?.into())
            }
            How::Agent { socket } => {
                let request = MountRequest {
                    source: source.to_owned(),
                    target: target.display().to_string(),
                    options: options.to_vec(),
                };
                // The agent refuses what these validators refuse; checking here first gives
                // the caller the same message without a round trip.
                request.validate(None)?;
                agent_protocol::call(socket, &request, self.timeout).await
            }
        }
    }

    async fn mount_direct(
        &self,
        args: &[OsString],
        what: &str,
        fuse_cgroups: &[PathBuf],
        host_cgroup_ns: Option<&Path>,
    ) -> Result<CommandOutput, Error> {
        if fuse_cgroups.is_empty() {
            let mut cmd = tokio::process::Command::new(&self.client_program);
            cmd.args(args);
            return command::run(cmd, what, self.timeout).await;
        }
        let escape = escape(fuse_cgroups, host_cgroup_ns)?;
        let mut cmd = tokio::process::Command::new(&self.client_program);
        cmd.args(args);
        // SAFETY: `Escape::enter` only makes system calls (setns, open, write, close) on data
        // prepared before the fork; it allocates nothing and takes no lock, as required between
        // fork and exec in a multi-threaded process.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || escape.enter());
        }
        match command::run(cmd, what, self.timeout).await {
            Err(Error::Io { source, .. }) if source.raw_os_error().is_some() => {
                tracing::warn!(
                    error = %source,
                    "cannot start the mount in the FUSE client cgroup; mounting in the plugin's \
                     cgroup (the client will not survive a plugin restart)"
                );
                let mut cmd = tokio::process::Command::new(&self.client_program);
                cmd.args(args);
                command::run(cmd, what, self.timeout).await
            }
            other => other,
        }
    }
}

/// Whether `target` can be stat'ed within `limit`: Err(why) when not.
async fn answers(target: &Path, limit: Duration) -> Result<(), String> {
    let path = target.to_path_buf();
    let stat = tokio::task::spawn_blocking(move || std::fs::metadata(&path));
    match tokio::time::timeout(limit, stat).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("stat {}: {e}", target.display())),
        Ok(Err(e)) => Err(format!("stat {}: {e}", target.display())),
        Err(_) => Err(format!("stat {} hung for {limit:?}", target.display())),
    }
}

fn escape(fuse_cgroups: &[PathBuf], host_cgroup_ns: Option<&Path>) -> Result<Escape, Error> {
    let cgroup_ns = match host_cgroup_ns {
        Some(p) => Some(
            nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| Error::sys("open", p, e))?,
        ),
        None => None,
    };
    let procs_files = fuse_cgroups
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

/// `/proc/1/ns/cgroup` when it differs from ours (the plugin is in a cgroup namespace of its
/// own) and can be read.
fn host_cgroup_namespace() -> Option<PathBuf> {
    let host = Path::new("/proc/1/ns/cgroup");
    let theirs = std::fs::read_link(host).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/cgroup").ok()?;
    (theirs != ours).then(|| host.to_path_buf())
}

/// Whether `path` lies on a cgroup file system (v1 or v2).
fn on_cgroupfs(path: &Path) -> bool {
    use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
    statfs(path).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

/// The cgroup directories a `--fuse-cgroup` value stands for.
///
/// `/sys/fs/cgroup/NAME` is used as given when `/sys/fs/cgroup` is a cgroup file system (cgroup
/// v2, or a single v1 hierarchy). On a cgroup v1 or hybrid host `/sys/fs/cgroup` is a tmpfs
/// holding one mount per hierarchy (`cpu`, `memory`, `freezer`, `pids`, `name=systemd` at
/// `systemd`, v2 at `unified`, …); a runtime stopping a container and kubelet removing a pod
/// kill the processes they find in *any* of the container's cgroups, so a client must leave
/// every hierarchy: the value then stands for `/sys/fs/cgroup/HIERARCHY/NAME` for each of them.
/// Symbolic links (`cpu` → `cpu,cpuacct`) are skipped; their target is listed itself.
fn expand_cgroup_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            out.push(dir.clone());
            continue;
        };
        if on_cgroupfs(parent) || !parent.is_dir() {
            out.push(dir.clone());
            continue;
        }
        let mut hierarchies: Vec<PathBuf> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| on_cgroupfs(p))
            .collect();
        if hierarchies.is_empty() {
            // Neither v2 nor v1 layout: let prepare_cgroup say what is wrong with it.
            out.push(dir.clone());
            continue;
        }
        hierarchies.sort();
        tracing::info!(
            given = %dir.display(),
            hierarchies = hierarchies.len(),
            "cgroup v1 layout: FUSE clients leave every hierarchy"
        );
        out.extend(hierarchies.into_iter().map(|h| h.join(name)));
    }
    out
}

/// Creates the cgroup directory if needed and checks it is a cgroup. In a v1 `cpuset`
/// hierarchy a new cgroup starts with no CPUs and no memory nodes, and moving a process into it
/// fails: they are copied from the parent.
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
    if let Some(parent) = dir.parent() {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = dir.join(file);
            let Ok(current) = std::fs::read_to_string(&mine) else {
                continue;
            };
            if current.trim().is_empty() {
                let inherited = std::fs::read_to_string(parent.join(file))?;
                std::fs::write(&mine, inherited.trim())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fuse_cgroup_stands_for_every_v1_hierarchy_and_is_kept_on_v2() {
        // Checked against this machine's own /proc/self/mountinfo: cgroup mounts whose mount
        // point is directly under /sys/fs/cgroup.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mut v1_layout: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let point = left.split_whitespace().nth(4)?;
                let fstype = right.split_whitespace().next()?;
                (fstype.starts_with("cgroup")
                    && Path::new(point).parent() == Some(Path::new("/sys/fs/cgroup")))
                .then(|| Path::new(point).join("gluster-csi-fuse"))
            })
            .collect();
        v1_layout.sort();
        v1_layout.dedup();
        let given = vec![PathBuf::from("/sys/fs/cgroup/gluster-csi-fuse")];
        let got = expand_cgroup_dirs(&given);
        if on_cgroupfs(Path::new("/sys/fs/cgroup")) {
            assert_eq!(got, given);
        } else {
            assert!(
                !v1_layout.is_empty(),
                "no cgroup file system mounted under /sys/fs/cgroup"
            );
            assert_eq!(got, v1_layout);
        }
        // A directory that is no cgroup layout at all is passed through for prepare_cgroup to
        // refuse with a message.
        let tmp = std::env::temp_dir().join("gcsi-no-cgroup");
        assert_eq!(expand_cgroup_dirs(std::slice::from_ref(&tmp)), vec![tmp]);
    }

    #[test]
    fn systemd_runs_exactly_the_mount_in_a_scope_of_its_own() {
        let target = Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/d/v/globalmount");
        let options = vec![
            "backup-volfile-servers=g2:g3".to_owned(),
            "log-file=/var/lib/gluster-csi/logs/v.log".to_owned(),
            "auto_unmount".to_owned(),
        ];
        let unit = systemd_unit(target, 7);
        assert!(unit.starts_with("gluster-csi-"), "{unit}");
        assert_eq!(unit.len(), "gluster-csi-".len() + 16);
        assert!(
            unit["gluster-csi-".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert_eq!(unit, systemd_unit(target, 7), "stable for one attempt");
        assert_ne!(unit, systemd_unit(target, 8), "a new scope per attempt");
        assert_ne!(unit, systemd_unit(Path::new("/other"), 7));

        let args = systemd_run_args(
            &unit,
            Path::new("mount"),
            &mount_args("g1:/v", target, &options),
        );
        let got: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let want = vec![
            "--scope".to_owned(),
            "--quiet".to_owned(),
            "--collect".to_owned(),
            format!("--unit={unit}"),
            "--".to_owned(),
            "mount".to_owned(),
            "-t".to_owned(),
            "glusterfs".to_owned(),
            "-o".to_owned(),
            "backup-volfile-servers=g2:g3,log-file=/var/lib/gluster-csi/logs/v.log,auto_unmount"
                .to_owned(),
            "g1:/v".to_owned(),
            target.display().to_string(),
        ];
        assert_eq!(got, want);
        // No options: no empty -o.
        let bare: Vec<String> = mount_args("g1:/v", Path::new("/m"), &[])
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(bare, ["-t", "glusterfs", "g1:/v", "/m"]);
    }

    #[test]
    fn launcher_names_round_trip() {
        for text in [
            "direct",
            "systemd",
            "agent:unix:///run/gluster-csi/mount-agent.sock",
        ] {
            let l: FuseLauncher = text.parse().expect("valid");
            assert_eq!(l.to_string(), text);
        }
        assert!("agent:tcp://1.2.3.4:1".parse::<FuseLauncher>().is_err());
    }
}
