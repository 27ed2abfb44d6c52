//! The node plugin against real Gluster: FUSE mounts made through the CSI Node service.
//!
//! Each trial creates its own replica-3 Gluster volume with the gluster CLI (no controller
//! involved: the volume context alone is enough, as for a static PV). Most trials run their own
//! `gluster-csi-node` the way a `hostPID: true` DaemonSet runs it (`--fuse-launcher direct`): in
//! the host's PID namespace, in a cgroup of its own standing for the container, with
//! `--fuse-cgroup` pointing at another cgroup. Stopping "the container" kills every process of
//! its cgroup at once (`cgroup.kill`), which is what runc does to a container that shares the
//! host's PID namespace.
//!
//! One trial uses the testbed's own node plugin instead, run as a pod without hostPID: the first
//! process of a PID namespace of its own, stopped by killing every process of that namespace at
//! once. No process can move a child out of its PID namespace (`setns` to an ancestor namespace
//! is refused), so that plugin has its FUSE clients started by the mount agent the testbed runs
//! in the root namespace (`--fuse-launcher agent:unix://…`). See `node-plugin/src/spawn.rs`.
//!
//! The degraded-volume trials (issue 21) need the DaemonSet's way: only a plugin in the host's
//! PID namespace sees the clients, and so only it could kill one by mistake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::{
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, NodeGetVolumeStatsRequest,
    NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest, VolumeCapability,
    volume_usage,
};
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness, procs};
use tonic::transport::Channel;

/// Limit on any single step of a test, so that a hung mount fails the trial instead of hanging
/// the run. Not an assertion about speed.
const STEP: Duration = Duration::from_secs(90);

fn main() {
    // Gluster hosts plus the testbed's node plugin (in a PID namespace of its own) and the mount
    // agent it uses; no heketi-server or controller.
    let opts = TestbedOptions {
        node: true,
        ..TestbedOptions::gluster_only(harness::state_dir_for("node"), 3)
    };
    harness::run(opts, |tb| {
        vec![
            harness::trial("info_and_capabilities", &tb, info_and_capabilities),
            harness::trial(
                "stage_and_two_publishes_share_one_client_outside_the_plugin_cgroup",
                &tb,
                stage_and_two_publishes_share_one_client,
            ),
            harness::trial(
                "read_only_publish_refuses_writes",
                &tb,
                read_only_publish_refuses_writes,
            ),
            harness::trial(
                "stats_equal_df_and_unknown_paths_are_not_found",
                &tb,
                stats_equal_df,
            ),
            harness::trial(
                "stage_and_publish_are_idempotent_ten_times",
                &tb,
                stage_and_publish_are_idempotent,
            ),
            harness::trial(
                "plugin_kill_leaves_mounts_serving_and_a_new_plugin_adopts_them",
                &tb,
                plugin_kill_leaves_mounts_serving,
            ),
            harness::trial(
                "plugin_in_its_own_pid_namespace_killed_whole_leaves_mounts_serving_via_the_mount_agent",
                &tb,
                pid_namespace_kill_leaves_mounts_serving,
            ),
            harness::trial(
                "without_fuse_cgroup_a_plugin_kill_takes_the_client_down_and_stage_repairs",
                &tb,
                without_fuse_cgroup_the_client_dies,
            ),
            harness::trial(
                "killed_client_is_abnormal_and_repaired_by_stage_and_publish",
                &tb,
                killed_client_is_repaired,
            ),
            harness::trial(
                "hung_client_is_abnormal_within_one_call_and_stage_does_not_remount_it",
                &tb,
                hung_client_is_reported_without_hanging,
            ),
            harness::trial(
                "bricks_down_is_degraded_not_dead_the_client_survives_and_io_resumes",
                &tb,
                bricks_down_is_degraded_not_dead,
            ),
            harness::trial(
                "stopped_client_blocks_neither_probe_nor_other_volumes",
                &tb,
                stopped_client_blocks_nothing_else,
            ),
            harness::trial(
                "single_writer_second_publish_is_failed_precondition",
                &tb,
                single_writer_second_publish,
            ),
            harness::trial(
                "bad_requests_and_failed_mounts_are_reported",
                &tb,
                bad_requests,
            ),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// The plugin "pod"

/// The unified (v2) cgroup hierarchy's mount point and this process's cgroup in it.
fn own_cgroup2_dir() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let root = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup2"))
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .context(
            "no cgroup2 file system is mounted: the node tests stop the plugin the way runc \
             does, by killing its cgroup, and need the unified cgroup hierarchy",
        )?;
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("/proc/self/cgroup has no cgroup v2 line")?;
    Ok(root.join(rel.trim_start_matches('/')))
}

/// Every process of a cgroup.
fn cgroup_pids(cg: &Path) -> Vec<u32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process of a cgroup at once and waits until it is empty.
async fn kill_cgroup(cg: &Path) -> Result<()> {
    if !cg.exists() {
        return Ok(());
    }
    if std::fs::write(cg.join("cgroup.kill"), "1").is_err() {
        // Kernels before 5.14 have no cgroup.kill.
        for pid in cgroup_pids(cg) {
            procs::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    for _ in 0..200 {
        if cgroup_pids(cg).is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "processes of {} survived SIGKILL: {:?}",
        cg.display(),
        cgroup_pids(cg)
    )
}

/// A node plugin run like the DaemonSet's container.
struct Pod {
    name: String,
    dir: PathBuf,
    kubelet: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    pod_cgroup: PathBuf,
    fuse_cgroup: PathBuf,
    child: Mutex<Option<std::process::Child>>,
}

impl Pod {
    /// Creates the pod's directories and cgroups and starts the plugin (with or without
    /// `--fuse-cgroup`).
    async fn start(tb: &Testbed, name: &str, fuse_cgroup: bool) -> Result<Pod> {
        let dir = tb.scratch_dir(name)?;
        let base = own_cgroup2_dir()?;
        let tag = format!("gcsi-nodetest-{}-{name}", std::process::id());
        let pod = Pod {
            name: name.to_owned(),
            kubelet: dir.join("kubelet"),
            socket: dir.join("csi.sock"),
            state: dir.join("state"),
            pod_cgroup: base.join(format!("{tag}-pod")),
            fuse_cgroup: base.join(format!("{tag}-fuse")),
            dir,
            child: Mutex::new(None),
        };
        std::fs::create_dir_all(&pod.kubelet)?;
        std::fs::create_dir_all(&pod.pod_cgroup)
            .with_context(|| format!("cannot create cgroup {}", pod.pod_cgroup.display()))?;
        pod.start_plugin(fuse_cgroup).await?;
        Ok(pod)
    }

    /// Starts a plugin process in the pod cgroup and waits for its socket.
    async fn start_plugin(&self, fuse_cgroup: bool) -> Result<()> {
        let bin = bin_path("gluster-csi-node")?;
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("plugin.log"))?;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--node-id")
            .arg(format!("node-{}", self.name))
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--kubelet-dir")
            .arg(&self.kubelet)
            .env("RUST_LOG", "info,gluster_csi_node=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if fuse_cgroup {
            cmd.arg("--fuse-cgroup").arg(&self.fuse_cgroup);
        }
        let child = cmd.spawn().context("cannot start gluster-csi-node")?;
        // Into the "container" cgroup before it can receive a call (and so fork a mount).
        std::fs::write(self.pod_cgroup.join("cgroup.procs"), child.id().to_string())
            .context("cannot move the plugin into its pod cgroup")?;
        if let Ok(mut c) = self.child.lock() {
            *c = Some(child);
        }
        for _ in 0..300 {
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the plugin did not listen on {}; log:\n{}",
            self.socket.display(),
            self.log()
        )
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("plugin.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Adds the end of the plugin's log to a failure.
    fn explain<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            e.context(format!(
                "plugin log ({}) ends with:\n{}",
                self.name,
                self.log()
            ))
        })
    }

    fn plugin_pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()?
            .as_ref()
            .map(std::process::Child::id)
    }

    /// Stops the "container": SIGKILL to every process of its cgroup at once.
    async fn kill(&self) -> Result<()> {
        kill_cgroup(&self.pod_cgroup).await?;
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.wait();
        }
        Ok(())
    }

    async fn client(&self) -> Result<NodeClient<Channel>> {
        Ok(NodeClient::connect(format!("unix://{}", self.socket.display())).await?)
    }

    async fn identity(&self) -> Result<IdentityClient<Channel>> {
        Ok(IdentityClient::connect(format!("unix://{}", self.socket.display())).await?)
    }
}

/// Where kubelet (rooted at `kubelet`) stages `volume`.
fn staging_path(kubelet: &Path, volume: &str) -> PathBuf {
    kubelet
        .join("plugins/kubernetes.io/csi/gluster.heketi.csi")
        .join(volume)
        .join("globalmount")
}

/// Where kubelet (rooted at `kubelet`) publishes `volume` for `pod`.
fn target_path(kubelet: &Path, volume: &str, pod: &str) -> PathBuf {
    kubelet
        .join("pods")
        .join(pod)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Best effort: the testbed's teardown unmounts and kills whatever is left under its
        // state directory; here only the cgroups are ours to remove.
        for cg in [&self.pod_cgroup, &self.fuse_cgroup] {
            if cg.exists() {
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                for _ in 0..100 {
                    if cgroup_pids(cg).is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = std::fs::remove_dir(cg);
            }
        }
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gluster, processes, mounts

/// Creates and starts replica-3 volume `name` across the three hosts.
async fn create_volume(tb: &Testbed, name: &str) -> Result<()> {
    let bricks: Vec<String> = tb
        .hosts()
        .iter()
        .map(|h| format!("{}:{}", h.address, h.brick_root.join(name).display()))
        .collect();
    let mut args = vec!["volume", "create", name, "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    tb.gluster(0, &args).await?;
    tb.gluster(0, &["volume", "start", name]).await?;
    Ok(())
}

/// Runs a command (argv, no shell) with the step limit.
async fn run(argv: &[&str]) -> Result<()> {
    let (program, args) = argv.split_first().context("empty argv")?;
    let out = tokio::time::timeout(
        STEP,
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .with_context(|| format!("{argv:?} hung"))??;
    ensure!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Creates and starts replica-3 volume `name` whose bricks are on small tmpfs mounts of their
/// own, so that its `statfs` numbers move only with what the test writes (bricks on the host's
/// file system would follow everything else on the machine). The tmpfs mounts are made in each
/// host's glusterd mount namespace, where the brick processes run.
async fn create_volume_on_tmpfs(tb: &Testbed, name: &str) -> Result<Vec<(String, PathBuf)>> {
    let scratch = tb.scratch_dir(&format!("{name}-bricks"))?;
    let mut mounts = Vec::new();
    let mut bricks = Vec::new();
    for h in tb.hosts() {
        let pid = std::fs::read_to_string(h.run_dir.join("glusterd.pid"))?
            .trim()
            .to_owned();
        let dir = scratch.join(&h.name);
        std::fs::create_dir_all(&dir)?;
        let d = dir.display().to_string();
        run(&[
            "nsenter", "--target", &pid, "--mount", "--", "mount", "-t", "tmpfs", "-o", "size=64m",
            "tmpfs", &d,
        ])
        .await?;
        mounts.push((pid, dir.clone()));
        bricks.push(format!("{}:{}/brick", h.address, d));
    }
    let mut args = vec!["volume", "create", name, "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    tb.gluster(0, &args).await?;
    tb.gluster(0, &["volume", "start", name]).await?;
    Ok(mounts)
}

/// Stops and deletes volume `name` and unmounts its tmpfs bricks.
async fn delete_tmpfs_volume(tb: &Testbed, name: &str, mounts: &[(String, PathBuf)]) -> Result<()> {
    tb.gluster(0, &["volume", "stop", name]).await?;
    tb.gluster(0, &["volume", "delete", name]).await?;
    for (pid, dir) in mounts {
        let d = dir.display().to_string();
        run(&["nsenter", "--target", pid, "--mount", "--", "umount", &d]).await?;
    }
    Ok(())
}

/// The pid files of the brick processes (`glusterfsd`) of `volume` on every host.
fn brick_pid_files(tb: &Testbed, volume: &str) -> Vec<PathBuf> {
    tb.hosts()
        .iter()
        .filter_map(|h| std::fs::read_dir(h.run_dir.join("vols").join(volume)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .collect()
}

/// The running brick processes of `volume` on every host.
fn brick_pids(tb: &Testbed, volume: &str) -> Vec<u32> {
    brick_pid_files(tb, volume)
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
        .filter(|p| procs::alive(*p))
        .collect()
}

/// Kills every brick of `volume` at once (as a crash of the whole pool does) and waits until
/// they are gone; returns their pids. Their pid files are removed as a crashed host would have
/// none: glusterd takes a pid file whose process still exists for a running brick, and a
/// killed brick may stay a zombie on a machine whose first process does not reap orphans, so
/// `volume start force` would not restart it.
async fn kill_bricks(tb: &Testbed, volume: &str) -> Result<Vec<u32>> {
    let pids = brick_pids(tb, volume);
    ensure!(
        pids.len() == tb.hosts().len(),
        "expected one brick process per host for {volume}, found {pids:?}"
    );
    for p in &pids {
        procs::signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    let left = procs::wait_gone(&pids, Duration::from_secs(20)).await;
    ensure!(left.is_empty(), "bricks survived SIGKILL: {left:?}");
    for f in brick_pid_files(tb, volume) {
        std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
    }
    Ok(pids)
}

/// Stops `pid` (SIGSTOP) and waits until every thread of it is stopped: until then, a thread
/// still running can answer a request of the mount.
async fn stop_process(pid: u32) -> Result<()> {
    procs::signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let all_stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next())
                    .is_some_and(|state| state == "T" || state == "t")
            })
        })
    };
    for _ in 0..200 {
        if all_stopped() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("process {pid} did not stop within 2s")
}

/// What a [`Writer`] saw: each attempt's start time and outcome.
type WriteLog = Arc<Mutex<Vec<(Instant, Result<(), String>)>>>;

/// A program writing through a published target without pause: one new file per write, each
/// attempt recorded with its start time and outcome.
struct Writer {
    stop: Arc<AtomicBool>,
    log: WriteLog,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log: WriteLog = Arc::default();
        let thread = {
            let (stop, log) = (Arc::clone(&stop), Arc::clone(&log));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = std::fs::write(dir.join(format!("w-{i}")), format!("write {i}\n"))
                        .map_err(|e| e.to_string());
                    let failed = r.is_err();
                    if let Ok(mut l) = log.lock() {
                        l.push((started, r));
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(if failed { 200 } else { 50 }));
                }
            })
        };
        Writer {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Writes started at or after `since`: how many succeeded, how many failed, the first
    /// error.
    fn tally(&self, since: Instant) -> (usize, usize, Option<String>) {
        let Ok(l) = self.log.lock() else {
            return (0, 0, None);
        };
        let recent: Vec<&Result<(), String>> = l
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, r)| r)
            .collect();
        let ok = recent.iter().filter(|r| r.is_ok()).count();
        let first_error = recent.iter().find_map(|r| r.as_ref().err().cloned());
        (ok, recent.len() - ok, first_error)
    }

    /// Waits until a write started at or after `since` succeeded; returns when it started.
    async fn wait_success_since(&self, since: Instant, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let first = self.log.lock().ok().and_then(|l| {
                l.iter()
                    .find(|(t, r)| *t >= since && r.is_ok())
                    .map(|(t, _)| *t)
            });
            if let Some(t) = first {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                let (_, failed, first_error) = self.tally(since);
                bail!(
                    "no write succeeded within {limit:?} ({failed} failed, first error: \
                     {first_error:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the writer and waits for its last write (which may wait for the mount).
    async fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            io("stopping the writer", move || {
                t.join()
                    .map_err(|_| std::io::Error::other("the writer thread panicked"))
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The volume context a PV would carry: every host, the first being the primary.
fn context(tb: &Testbed, volume: &str) -> HashMap<String, String> {
    let servers: Vec<String> = tb.hosts().iter().map(|h| h.address.to_string()).collect();
    HashMap::from([
        ("glusterServers".to_owned(), servers.join(",")),
        ("glusterVolume".to_owned(), volume.to_owned()),
    ])
}

fn capability(mode: Mode, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            volume_mount_group: String::new(),
        })),
    }
}

/// `glusterfs` processes whose mount point (last argument) is `mount_point`.
fn gluster_processes(mount_point: &Path) -> Vec<u32> {
    let want = mount_point.to_string_lossy().into_owned();
    procs::all_pids()
        .into_iter()
        .filter(|p| {
            let exe_ok = std::fs::read_link(format!("/proc/{p}/exe"))
                .ok()
                .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
                .is_some_and(|n| n.starts_with("glusterfs"));
            let last = std::fs::read(format!("/proc/{p}/cmdline"))
                .ok()
                .and_then(|c| {
                    c.split(|b| *b == 0)
                        .rfind(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                });
            exe_ok && last.as_deref() == Some(want.as_str()) && procs::alive(*p)
        })
        .collect()
}

/// The FUSE servers among `pids`: those holding `/dev/fuse` open (the `auto_unmount` watcher
/// does not).
fn fuse_servers(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| {
            std::fs::read_dir(format!("/proc/{p}/fd"))
                .map(|d| {
                    d.flatten().any(|e| {
                        std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/fuse"))
                    })
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The one FUSE client serving `staging`.
/// The command line of process `pid`.
fn client_args(pid: u32) -> Result<Vec<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

fn the_client(staging: &Path) -> Result<u32> {
    let all = gluster_processes(staging);
    let servers = fuse_servers(&all);
    ensure!(
        servers.len() == 1,
        "expected exactly one glusterfs FUSE client for {}, found {servers:?} (all: {all:?})",
        staging.display()
    );
    Ok(servers[0])
}

/// The mount at `path` (topmost), as (fstype, source, per-mount options, device).
fn mount_at(path: &Path) -> Option<(String, String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            (pre.get(4) == Some(&want.as_str())).then(|| {
                (
                    post.first().copied().unwrap_or_default().to_owned(),
                    post.get(1).copied().unwrap_or_default().to_owned(),
                    pre.get(5).copied().unwrap_or_default().to_owned(),
                    pre.get(2).copied().unwrap_or_default().to_owned(),
                )
            })
        })
        .next_back()
}

fn mounts_at(path: &Path) -> usize {
    let want = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .filter(|l| l.split(' ').nth(4) == Some(want.as_str()))
                .count()
        })
        .unwrap_or(0)
}

/// Runs blocking file I/O with a limit (a dead mount can hang it).
async fn io<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(STEP, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r.with_context(|| what.to_owned()),
        Ok(Err(e)) => bail!("{what}: task failed: {e}"),
        Err(_) => bail!("{what}: no answer within {STEP:?}"),
    }
}

async fn write_file(path: PathBuf, data: &'static str) -> Result<()> {
    let what = format!("write {}", path.display());
    io(&what, move || std::fs::write(&path, data)).await
}

async fn read_file(path: PathBuf) -> Result<String> {
    let what = format!("read {}", path.display());
    io(&what, move || std::fs::read_to_string(&path)).await
}

async fn wait_gone(pid: u32) -> bool {
    procs::wait_gone(&[pid], Duration::from_secs(20))
        .await
        .is_empty()
}

/// Runs one CSI call with the step limit.
async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(STEP, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{what}: no answer within {STEP:?}"
        ))),
    }
}

// Requests.

struct Vol {
    id: String,
    name: String,
    ctx: HashMap<String, String>,
    /// The kubelet directory its staging and target paths are under.
    kubelet: PathBuf,
}

impl Vol {
    async fn new(tb: &Testbed, kubelet: &Path, name: &str) -> Result<Vol> {
        create_volume(tb, name).await?;
        Ok(Vol {
            id: format!("static-{name}"),
            name: name.to_owned(),
            ctx: context(tb, name),
            kubelet: kubelet.to_path_buf(),
        })
    }

    fn staging(&self) -> PathBuf {
        staging_path(&self.kubelet, &self.name)
    }

    fn target(&self, pod: &str) -> PathBuf {
        target_path(&self.kubelet, &self.name, pod)
    }

    async fn stage(&self, c: &mut NodeClient<Channel>, mode: Mode) -> Result<(), tonic::Status> {
        let req = NodeStageVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging().display().to_string(),
            volume_capability: Some(capability(mode, &[])),
            volume_context: self.ctx.clone(),
            secrets: HashMap::from([("key".to_owned(), "not-logged-secret".to_owned())]),
            ..Default::default()
        };
        call("NodeStageVolume", c.node_stage_volume(req))
            .await
            .map(|_| ())
    }

    async fn publish(
        &self,
        c: &mut NodeClient<Channel>,
        pod: &str,
        mode: Mode,
        readonly: bool,
    ) -> Result<(), tonic::Status> {
        let req = NodePublishVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging().display().to_string(),
            target_path: self.target(pod).display().to_string(),
            volume_capability: Some(capability(mode, &[])),
            readonly,
            volume_context: self.ctx.clone(),
            ..Default::default()
        };
        call("NodePublishVolume", c.node_publish_volume(req))
            .await
            .map(|_| ())
    }

    async fn unpublish(&self, c: &mut NodeClient<Channel>, pod: &str) -> Result<(), tonic::Status> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: self.id.clone(),
            target_path: self.target(pod).display().to_string(),
        };
        call("NodeUnpublishVolume", c.node_unpublish_volume(req))
            .await
            .map(|_| ())
    }

    async fn unstage(&self, c: &mut NodeClient<Channel>) -> Result<(), tonic::Status> {
        let req = NodeUnstageVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging().display().to_string(),
        };
        call("NodeUnstageVolume", c.node_unstage_volume(req))
            .await
            .map(|_| ())
    }

    async fn stats(
        &self,
        c: &mut NodeClient<Channel>,
        path: &Path,
    ) -> Result<NodeGetVolumeStatsResponse, tonic::Status> {
        let req = NodeGetVolumeStatsRequest {
            volume_id: self.id.clone(),
            volume_path: path.display().to_string(),
            staging_target_path: String::new(),
        };
        call("NodeGetVolumeStats", c.node_get_volume_stats(req)).await
    }

    /// Unpublishes `pods`, unstages, and checks that nothing is left: no mount, no directory,
    /// no client process.
    async fn clean_up(&self, c: &mut NodeClient<Channel>, pods: &[&str]) -> Result<()> {
        let client = gluster_processes(&self.staging());
        for p in pods {
            self.unpublish(c, p).await?;
        }
        self.unstage(c).await?;
        for p in pods {
            let t = self.target(p);
            ensure!(mounts_at(&t) == 0, "{} still mounted", t.display());
            ensure!(!t.exists(), "{} still exists", t.display());
        }
        ensure!(mounts_at(&self.staging()) == 0, "staging still mounted");
        ensure!(!self.staging().exists(), "staging directory still exists");
        for pid in client {
            ensure!(
                wait_gone(pid).await,
                "glusterfs process {pid} still runs after unstage"
            );
        }
        Ok(())
    }
}

fn code(r: Result<(), tonic::Status>) -> tonic::Code {
    match r {
        Ok(()) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

// ---------------------------------------------------------------------------------------------
// Trials

async fn info_and_capabilities(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "info", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let info = call("NodeGetInfo", c.node_get_info(NodeGetInfoRequest {})).await?;
        ensure!(info.node_id == "node-info", "{info:?}");
        ensure!(
            info.max_volumes_per_node == 0 && info.accessible_topology.is_none(),
            "{info:?}"
        );
        let caps = call(
            "NodeGetCapabilities",
            c.node_get_capabilities(NodeGetCapabilitiesRequest {}),
        )
        .await?;
        use csi_proto::v1::node_service_capability::{Type, rpc};
        let mut got: Vec<i32> = caps
            .capabilities
            .iter()
            .filter_map(|c| c.r#type.map(|Type::Rpc(r)| r.r#type))
            .collect();
        got.sort_unstable();
        let want = vec![
            rpc::Type::StageUnstageVolume as i32,
            rpc::Type::GetVolumeStats as i32,
            rpc::Type::VolumeCondition as i32,
            rpc::Type::SingleNodeMultiWriter as i32,
        ];
        ensure!(got == want, "capabilities {got:?}, want {want:?}");
        Ok(())
    }
    .await;
    pod.explain(r)
}

async fn stage_and_two_publishes_share_one_client(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "share", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npshare").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "pod-a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "pod-b", Mode::MultiNodeMultiWriter, false)
            .await?;

        write_file(v.target("pod-a").join("hello.txt"), "written through pod-a").await?;
        let back = read_file(v.target("pod-b").join("hello.txt")).await?;
        ensure!(back == "written through pod-a", "read back {back:?}");

        let (fstype, source, _, staging_dev) = mount_at(&v.staging()).context("staging mount")?;
        ensure!(fstype == "fuse.glusterfs", "{fstype}");
        ensure!(
            source == format!("{}:/npshare", tb.hosts()[0].address),
            "{source}"
        );
        for p in ["pod-a", "pod-b"] {
            let (_, _, _, dev) = mount_at(&v.target(p)).context("target mount")?;
            ensure!(
                dev == staging_dev,
                "{p} is not a bind mount of the staging mount"
            );
        }

        let client = the_client(&v.staging())?;
        // The primary is the first volfile server and is never repeated as a backup.
        let args = client_args(client)?;
        let servers: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--volfile-server="))
            .collect();
        let want: Vec<String> = tb.hosts().iter().map(|h| h.address.to_string()).collect();
        ensure!(
            servers == want,
            "volfile servers {servers:?}, want {want:?}"
        );
        let log = pod.state.join("logs/npshare.log");
        ensure!(
            args.iter()
                .any(|a| *a == format!("--log-file={}", log.display())),
            "client log is not the per-volume log: {args:?}"
        );
        ensure!(args.iter().any(|a| a == "--log-level=ERROR"), "{args:?}");

        // The plugin starts the client itself: with the flags that mount.glusterfs gives a
        // client for the same options (the script names --fuse-mountopts twice).
        let raw = pod.state.join("raw-mount");
        std::fs::create_dir_all(&raw)?;
        let options = format!(
            "backup-volfile-servers={},log-file={},log-level=ERROR,auto_unmount",
            want[1..].join(":"),
            log.display()
        );
        run(&[
            "mount",
            "-t",
            "glusterfs",
            "-o",
            &options,
            &source,
            &raw.display().to_string(),
        ])
        .await?;
        let raw_client = the_client(&raw);
        let raw_args = raw_client.and_then(client_args);
        run(&["umount", &raw.display().to_string()]).await?;
        let flags_of = |args: &[String]| -> std::collections::BTreeSet<String> {
            args.iter()
                .skip(1)
                .take(args.len().saturating_sub(2))
                .cloned()
                .collect()
        };
        let raw_args = raw_args?;
        ensure!(
            flags_of(&args) == flags_of(&raw_args),
            "the plugin's client runs {args:?}, mount.glusterfs's {raw_args:?}"
        );

        // The client runs in the FUSE cgroup, not in the plugin's.
        let cg = std::fs::read_to_string(format!("/proc/{client}/cgroup"))?;
        let fuse_name = pod
            .fuse_cgroup
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        ensure!(
            cg.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(fuse_name)),
            "client {client} is not in the FUSE cgroup: {cg}"
        );
        ensure!(!cgroup_pids(&pod.pod_cgroup).contains(&client));

        v.clean_up(&mut c, &["pod-a", "pod-b"]).await?;
        ensure!(!procs::alive(client), "client still runs after unstage");
        Ok(())
    }
    .await;
    pod.explain(r)
}

async fn read_only_publish_refuses_writes(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "readonly", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npro").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "writer", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "reader", Mode::MultiNodeMultiWriter, true)
            .await?;
        // An access mode that is read-only by itself also gives a read-only mount.
        v.publish(&mut c, "ro-mode", Mode::MultiNodeReaderOnly, false)
            .await?;

        write_file(v.target("writer").join("f"), "data").await?;
        for p in ["reader", "ro-mode"] {
            let (_, _, opts, _) = mount_at(&v.target(p)).context("mounted")?;
            ensure!(opts.split(',').any(|o| o == "ro"), "{p}: options {opts}");
            let target = v.target(p).join("g");
            let r = io("write to a read-only target", move || {
                std::fs::write(&target, "x")
            })
            .await;
            match r {
                Err(e) => {
                    let errno = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::raw_os_error);
                    ensure!(
                        errno == Some(libc_erofs()),
                        "{p}: expected EROFS, got {e:#}"
                    );
                }
                Ok(()) => bail!("{p}: a write through a read-only publish succeeded"),
            }
            ensure!(read_file(v.target(p).join("f")).await? == "data");
        }
        // Publishing the same target again with another read-only setting is refused.
        let again = v
            .publish(&mut c, "reader", Mode::MultiNodeMultiWriter, false)
            .await;
        ensure!(code(again) == tonic::Code::AlreadyExists);
        v.clean_up(&mut c, &["writer", "reader", "ro-mode"]).await
    }
    .await;
    pod.explain(r)
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

/// `df -B1` of `path`: size, used, avail, itotal, iused, iavail.
async fn df(path: &Path) -> Result<[i64; 6]> {
    let out = tokio::time::timeout(
        STEP,
        tokio::process::Command::new("df")
            .arg("-B1")
            .arg("--output=size,used,avail,itotal,iused,iavail")
            .arg(path)
            .output(),
    )
    .await
    .context("df hung")??;
    ensure!(
        out.status.success(),
        "df failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).context("df printed no values")?;
    let v: Vec<i64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() == 6, "df: {line}");
    Ok([v[0], v[1], v[2], v[3], v[4], v[5]])
}

async fn stats_equal_df(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "stats", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let bricks = create_volume_on_tmpfs(&tb, "npstats").await?;
        let v = Vol {
            id: "static-npstats".into(),
            name: "npstats".into(),
            ctx: context(&tb, "npstats"),
            kubelet: pod.kubelet.clone(),
        };
        v.stage(&mut c, Mode::SingleNodeMultiWriter).await?;
        v.publish(&mut c, "p", Mode::SingleNodeMultiWriter, false)
            .await?;
        let target = v.target("p");
        let big = target.join("big");
        io("write 4 MiB", move || {
            std::fs::write(&big, vec![7u8; 4 << 20])
        })
        .await?;
        let small = target.join("small");
        io("create a file", move || std::fs::write(&small, b"s")).await?;

        let before = df(&target).await?;
        let s = v.stats(&mut c, &target).await?;
        let after = df(&target).await?;
        ensure!(
            before == after,
            "the volume changed under the test: {before:?} {after:?}"
        );
        let cond = s.volume_condition.clone().context("no volume condition")?;
        ensure!(
            !cond.abnormal,
            "healthy mount reported abnormal: {}",
            cond.message
        );
        let find =
            |unit: volume_usage::Unit| s.usage.iter().find(|u| u.unit == unit as i32).copied();
        let bytes = find(volume_usage::Unit::Bytes).context("no byte usage")?;
        let inodes = find(volume_usage::Unit::Inodes).context("no inode usage")?;
        let csi = [
            bytes.total,
            bytes.used,
            bytes.available,
            inodes.total,
            inodes.used,
            inodes.available,
        ];
        ensure!(
            csi == before,
            "NodeGetVolumeStats {csi:?} differs from df {before:?}"
        );
        ensure!(
            bytes.used >= 4 << 20,
            "the 4 MiB written are not counted: {csi:?}"
        );

        // The staging path answers too; unknown paths and other volumes' paths are NOT_FOUND.
        let staged = v.stats(&mut c, &v.staging()).await?;
        ensure!(!staged.usage.is_empty());
        let not_found = [
            pod.kubelet.join("pods/none/mount"),
            PathBuf::from("some/path"),
            pod.kubelet.clone(),
        ];
        for p in not_found {
            let r = v.stats(&mut c, &p).await.map(|_| ());
            ensure!(code(r) == tonic::Code::NotFound, "{}", p.display());
        }
        let other = Vol {
            id: "static-other".into(),
            ..Vol::new(&tb, &pod.kubelet, "npstats2").await?
        };
        other.stage(&mut c, Mode::SingleNodeMultiWriter).await?;
        let wrong = Vol {
            id: other.id.clone(),
            name: v.name.clone(),
            ctx: v.ctx.clone(),
            kubelet: pod.kubelet.clone(),
        };
        let r = wrong.stats(&mut c, &target).await.map(|_| ());
        ensure!(
            code(r) == tonic::Code::NotFound,
            "another volume's path must be NOT_FOUND"
        );
        let missing_id = Vol {
            id: String::new(),
            name: v.name.clone(),
            ctx: v.ctx.clone(),
            kubelet: pod.kubelet.clone(),
        };
        ensure!(
            code(missing_id.stats(&mut c, &target).await.map(|_| ()))
                == tonic::Code::InvalidArgument
        );
        ensure!(
            code(v.stats(&mut c, Path::new("")).await.map(|_| ())) == tonic::Code::InvalidArgument
        );
        other.clean_up(&mut c, &[]).await?;
        v.clean_up(&mut c, &["p"]).await?;
        delete_tmpfs_volume(&tb, "npstats", &bricks).await
    }
    .await;
    pod.explain(r)
}

async fn stage_and_publish_are_idempotent(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "idem", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npidem").await?;
        for _ in 0..10 {
            v.stage(&mut c, Mode::SingleNodeWriter).await?;
        }
        let client = the_client(&v.staging())?;
        for _ in 0..10 {
            v.publish(&mut c, "p", Mode::SingleNodeWriter, false)
                .await?;
        }
        ensure!(
            mounts_at(&v.staging()) == 1,
            "staging mounted {} times",
            mounts_at(&v.staging())
        );
        ensure!(
            mounts_at(&v.target("p")) == 1,
            "target mounted {} times",
            mounts_at(&v.target("p"))
        );
        ensure!(
            the_client(&v.staging())? == client,
            "a second client was started"
        );
        write_file(v.target("p").join("x"), "x").await?;
        for _ in 0..10 {
            v.unpublish(&mut c, "p").await?;
        }
        ensure!(mounts_at(&v.target("p")) == 0 && !v.target("p").exists());
        for _ in 0..10 {
            v.unstage(&mut c).await?;
        }
        ensure!(mounts_at(&v.staging()) == 0 && !v.staging().exists());
        ensure!(wait_gone(client).await, "client still runs");
        Ok(())
    }
    .await;
    pod.explain(r)
}

async fn plugin_kill_leaves_mounts_serving(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "kill", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npkill").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, false)
            .await?;
        write_file(v.target("a").join("before"), "before the kill").await?;
        let client = the_client(&v.staging())?;
        let plugin = pod.plugin_pid().context("plugin pid")?;

        drop(c);
        pod.kill().await?;
        ensure!(
            !procs::alive(plugin),
            "the plugin survived its container's stop"
        );
        ensure!(procs::alive(client), "the FUSE client died with the plugin");

        // I/O through both published targets still works with no plugin running.
        write_file(v.target("b").join("after"), "after the kill").await?;
        ensure!(read_file(v.target("a").join("after")).await? == "after the kill");
        ensure!(read_file(v.target("b").join("before")).await? == "before the kill");

        // A new plugin takes the mounts over.
        pod.start_plugin(true).await?;
        let mut c = pod.client().await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "c", Mode::MultiNodeMultiWriter, false)
            .await?;
        ensure!(
            the_client(&v.staging())? == client,
            "the new plugin started another client"
        );
        ensure!(read_file(v.target("c").join("before")).await? == "before the kill");
        let s = v.stats(&mut c, &v.target("b")).await?;
        ensure!(!s.volume_condition.context("condition")?.abnormal);
        v.clean_up(&mut c, &["a", "b", "c"]).await?;
        ensure!(wait_gone(client).await, "client still runs after unstage");
        Ok(())
    }
    .await;
    pod.explain(r)
}

/// Issue 6, point 4, as a runtime does it: the testbed's plugin is the first process of a PID
/// namespace of its own and is stopped by SIGKILL to every process of that namespace at once;
/// the FUSE clients, started by the mount agent outside the namespace, keep serving, and a new
/// plugin adopts the mounts (publish, repair, unpublish, unstage).
async fn pid_namespace_kill_leaves_mounts_serving(tb: Arc<Testbed>) -> Result<()> {
    let kubelet = tb.scratch_dir("pidns-kubelet")?;
    let logs = tb.state_dir().join("logs");
    let r: Result<()> = async {
        let plugin = tb
            .node_plugin_pid()
            .context("the testbed runs no node plugin")?;
        let ns = procs::pid_namespace(plugin).context("pid namespace of the plugin")?;
        let ours = procs::pid_namespace(std::process::id());
        ensure!(
            ours.as_deref() != Some(ns.as_str()),
            "the plugin shares our pid namespace"
        );
        let agent = tb
            .mount_agent_pid()
            .context("the testbed runs no mount agent")?;
        ensure!(
            procs::pid_namespace(agent) == ours,
            "the mount agent is not in the root pid namespace"
        );

        let mut c = NodeClient::connect(tb.env().node_endpoint.clone()).await?;
        let v = Vol::new(&tb, &kubelet, "nppidns").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, false)
            .await?;
        write_file(v.target("a").join("before"), "before the kill").await?;
        let client = the_client(&v.staging())?;
        ensure!(
            procs::pid_namespace(client).as_deref() != Some(ns.as_str()),
            "the FUSE client {client} runs in the plugin's pid namespace"
        );

        // The runtime stops the pod: every process of its pid namespace at once.
        drop(c);
        tb.kill_node_plugin().await?;
        ensure!(!procs::alive(plugin), "the plugin survived its pod's stop");
        ensure!(
            procs::all_pids()
                .iter()
                .all(|p| procs::pid_namespace(*p).as_deref() != Some(ns.as_str())),
            "processes remain in the plugin's pid namespace"
        );
        ensure!(procs::alive(client), "the FUSE client died with the plugin");
        ensure!(
            the_client(&v.staging())? == client,
            "the staging mount is served by another client"
        );

        // I/O through both published targets still works with no plugin running.
        write_file(v.target("b").join("after"), "after the kill").await?;
        ensure!(read_file(v.target("a").join("after")).await? == "after the kill");
        ensure!(read_file(v.target("b").join("before")).await? == "before the kill");

        // A new plugin, in a new pid namespace, takes the mounts over.
        tb.start_node_plugin().await?;
        let new = tb.node_plugin_pid().context("no new plugin")?;
        ensure!(new != plugin && procs::alive(new));
        let mut c = NodeClient::connect(tb.env().node_endpoint.clone()).await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "c", Mode::MultiNodeMultiWriter, false)
            .await?;
        ensure!(
            the_client(&v.staging())? == client,
            "the new plugin started another client"
        );
        ensure!(read_file(v.target("c").join("before")).await? == "before the kill");
        let s = v.stats(&mut c, &v.target("b")).await?;
        ensure!(!s.volume_condition.context("condition")?.abnormal);

        // Repairs work through the agent too: the client dies, the next stage remounts.
        procs::signal(client, nix::sys::signal::Signal::SIGKILL);
        ensure!(wait_gone(client).await, "client did not die");
        let s = v.stats(&mut c, &v.target("a")).await?;
        ensure!(
            s.volume_condition.context("condition")?.abnormal,
            "a dead mount reported normal"
        );
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        for p in ["a", "b", "c"] {
            v.publish(&mut c, p, Mode::MultiNodeMultiWriter, false)
                .await?;
        }
        let repaired = the_client(&v.staging())?;
        ensure!(repaired != client);
        ensure!(
            procs::pid_namespace(repaired).as_deref() != Some(ns.as_str()),
            "the repaired client runs in the plugin's pid namespace"
        );
        write_file(v.target("c").join("repaired"), "new I/O").await?;
        ensure!(read_file(v.target("a").join("repaired")).await? == "new I/O");

        v.clean_up(&mut c, &["a", "b", "c"]).await?;
        ensure!(wait_gone(repaired).await, "client still runs after unstage");
        Ok(())
    }
    .await;
    r.map_err(|e| {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        e.context(format!(
            "node plugin log ends with:\n{}\nmount agent log ends with:\n{}",
            tail("node-plugin.log"),
            tail("mount-agent.log")
        ))
    })
}

async fn without_fuse_cgroup_the_client_dies(tb: Arc<Testbed>) -> Result<()> {
    // The control experiment: without --fuse-cgroup the client is in the container's cgroup
    // and dies with it, which is exactly what the trial above guards against.
    let pod = Pod::start(&tb, "control", false).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npctl").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        write_file(v.target("a").join("f"), "kept on the bricks").await?;
        let client = the_client(&v.staging())?;
        ensure!(
            cgroup_pids(&pod.pod_cgroup).contains(&client),
            "client not in the pod cgroup"
        );
        drop(c);
        pod.kill().await?;
        ensure!(
            wait_gone(client).await,
            "client survived without a FUSE cgroup"
        );

        pod.start_plugin(true).await?;
        let mut c = pod.client().await?;
        let s = v.stats(&mut c, &v.target("a")).await?;
        let cond = s.volume_condition.context("condition")?;
        ensure!(
            cond.abnormal && !cond.message.is_empty(),
            "dead mount not reported: {cond:?}"
        );
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        ensure!(read_file(v.target("a").join("f")).await? == "kept on the bricks");
        let new_client = the_client(&v.staging())?;
        ensure!(new_client != client);
        v.clean_up(&mut c, &["a"]).await
    }
    .await;
    pod.explain(r)
}

async fn killed_client_is_repaired(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "repair", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "nprepair").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, true)
            .await?;
        write_file(v.target("a").join("f"), "survives on the bricks").await?;
        let client = the_client(&v.staging())?;
        procs::signal(client, nix::sys::signal::Signal::SIGKILL);
        ensure!(wait_gone(client).await, "client did not die");

        // Reported abnormal, with a message, in one call.
        let s = v.stats(&mut c, &v.target("a")).await?;
        let cond = s.volume_condition.context("condition")?;
        ensure!(cond.abnormal, "a dead mount reported normal");
        ensure!(
            cond.message.contains(&v.target("a").display().to_string()),
            "{}",
            cond.message
        );
        ensure!(s.usage.is_empty());

        // Stage remounts, publish rebinds; the read-only target stays read-only.
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        let new_client = the_client(&v.staging())?;
        ensure!(new_client != client);
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, true)
            .await?;
        write_file(v.target("a").join("g"), "new I/O").await?;
        ensure!(read_file(v.target("b").join("g")).await? == "new I/O");
        ensure!(read_file(v.target("b").join("f")).await? == "survives on the bricks");
        let (_, _, opts, _) = mount_at(&v.target("b")).context("b mounted")?;
        ensure!(
            opts.split(',').any(|o| o == "ro"),
            "b lost read-only: {opts}"
        );
        for p in ["a", "b"] {
            ensure!(
                mounts_at(&v.target(p)) == 1,
                "{p}: stale mount left under the new one"
            );
            let s = v.stats(&mut c, &v.target(p)).await?;
            ensure!(
                !s.volume_condition.context("condition")?.abnormal,
                "{p} still abnormal"
            );
        }

        // Publish alone repairs too: kill the new client and publish a target without staging.
        procs::signal(new_client, nix::sys::signal::Signal::SIGKILL);
        ensure!(wait_gone(new_client).await);
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        ensure!(read_file(v.target("a").join("g")).await? == "new I/O");
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, true)
            .await?;
        the_client(&v.staging())?;
        v.clean_up(&mut c, &["a", "b"]).await
    }
    .await;
    pod.explain(r)
}

async fn hung_client_is_reported_without_hanging(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "hung", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "nphung").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        let client = the_client(&v.staging())?;
        // A stopped client answers nothing: every request to the mount blocks.
        let outcome: Result<()> = async {
            stop_process(client).await?;
            for round in 0..2 {
                let s = v.stats(&mut c, &v.target("a")).await?;
                let cond = s.volume_condition.context("condition")?;
                ensure!(cond.abnormal, "round {round}: a hung mount reported normal");
                ensure!(cond.message.contains("did not answer"), "{}", cond.message);
            }
            // A client that runs but does not answer is degraded, not dead: left alone.
            let r = v.stage(&mut c, Mode::MultiNodeMultiWriter).await;
            ensure!(
                code(r.clone()) == tonic::Code::Unavailable,
                "stage of a hung mount: {r:?}"
            );
            ensure!(procs::alive(client), "a hung client must not be replaced");
            Ok(())
        }
        .await;
        procs::signal(client, nix::sys::signal::Signal::SIGCONT);
        outcome?;
        // Once the client answers again, so does the volume.
        let mut healthy = false;
        for _ in 0..100 {
            let s = v.stats(&mut c, &v.target("a")).await?;
            if !s.volume_condition.context("condition")?.abnormal {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(healthy, "still abnormal after SIGCONT");
        ensure!(the_client(&v.staging())? == client);
        v.clean_up(&mut c, &["a"]).await
    }
    .await;
    pod.explain(r)
}

/// Issue 21, point 2. Every brick of a volume dies (a pool restart, a partition) while a pod
/// writes through a published target. The client is alive and reconnects by itself, so a
/// publish during the outage answers UNAVAILABLE and leaves it running, stats report the cause,
/// unstage with a published target is refused; when the bricks are back, the writes resume
/// through the same client.
async fn bricks_down_is_degraded_not_dead(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "degraded", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npdegr").await?;
        v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
        v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
            .await?;
        let client = the_client(&v.staging())?;
        let writer = Writer::start(v.target("a"));
        writer
            .wait_success_since(Instant::now(), STEP)
            .await
            .context("writes before the outage")?;

        let killed = kill_bricks(&tb, "npdegr").await?;
        let cut = Instant::now();
        // The client sees its connections reset at once; the mount answers with an error.
        let mut cause = String::new();
        for _ in 0..300 {
            let s = v.stats(&mut c, &v.target("a")).await?;
            let cond = s.volume_condition.context("condition")?;
            if cond.abnormal {
                cause = cond.message;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            !cause.is_empty(),
            "stats stayed normal with every brick down"
        );
        ensure!(
            cause.contains(&format!("pid {client}")) && cause.contains("running"),
            "the abnormal condition does not name the running client: {cause}"
        );
        let noticed = cut.elapsed();

        let r = v
            .publish(&mut c, "b", Mode::MultiNodeMultiWriter, false)
            .await;
        let status = match r {
            Err(s) if s.code() == tonic::Code::Unavailable => s,
            other => bail!("publish with every brick down: {other:?}"),
        };
        ensure!(
            status.message().contains(&v.id) && status.message().contains("bricks"),
            "UNAVAILABLE does not name the volume and the cause: {}",
            status.message()
        );
        ensure!(
            mounts_at(&v.target("b")) == 0,
            "b was bound during the outage"
        );
        let r = v.stage(&mut c, Mode::MultiNodeMultiWriter).await;
        ensure!(
            code(r.clone()) == tonic::Code::Unavailable,
            "stage with every brick down: {r:?}"
        );
        let r = v.unstage(&mut c).await;
        ensure!(
            code(r.clone()) == tonic::Code::FailedPrecondition,
            "unstage with a published target: {r:?}"
        );
        ensure!(
            mounts_at(&v.staging()) == 1 && mounts_at(&v.target("a")) == 1,
            "something was unmounted during the outage"
        );
        ensure!(
            procs::alive(client) && the_client(&v.staging())? == client,
            "the client was replaced or killed during the outage"
        );
        // The outage lasts until the pod's writes have failed a few times; a publish then
        // is still refused and the client still the same.
        for _ in 0..300 {
            if writer.tally(cut).1 >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = v
            .publish(&mut c, "b", Mode::MultiNodeMultiWriter, false)
            .await;
        ensure!(
            code(r.clone()) == tonic::Code::Unavailable,
            "a later publish with every brick down: {r:?}"
        );
        ensure!(
            procs::alive(client) && the_client(&v.staging())? == client,
            "the client was replaced or killed during the outage"
        );
        let (ok_during, failed_during, first_error) = writer.tally(cut);
        ensure!(
            failed_during >= 5,
            "the writes did not notice the outage: {ok_during} succeeded, {failed_during} failed"
        );
        let outage = cut.elapsed();

        tb.gluster(0, &["volume", "start", "npdegr", "force"])
            .await?;
        let back = Instant::now();
        let restarted = brick_pids(&tb, "npdegr");
        ensure!(
            restarted.len() == killed.len() && restarted.iter().all(|p| !killed.contains(p)),
            "the bricks did not restart: {restarted:?} (killed {killed:?})"
        );
        let resumed = writer
            .wait_success_since(back, STEP)
            .await
            .context("writes after the bricks came back")?;
        ensure!(
            procs::alive(client) && the_client(&v.staging())? == client,
            "the writes resumed through another client"
        );
        let mut healthy = false;
        for _ in 0..300 {
            let s = v.stats(&mut c, &v.target("a")).await?;
            if !s.volume_condition.context("condition")?.abnormal {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(healthy, "still abnormal with the bricks back");
        v.publish(&mut c, "b", Mode::MultiNodeMultiWriter, false)
            .await?;
        write_file(v.target("b").join("after"), "after the outage").await?;
        ensure!(read_file(v.target("a").join("after")).await? == "after the outage");

        // Unstage while targets are published: refused, naming them; nothing unmounted.
        let r = v.unstage(&mut c).await;
        let status = match r {
            Err(s) if s.code() == tonic::Code::FailedPrecondition => s,
            other => bail!("unstage with two published targets: {other:?}"),
        };
        for p in ["a", "b"] {
            ensure!(
                status
                    .message()
                    .contains(&v.target(p).display().to_string()),
                "the refusal does not name target {p}: {}",
                status.message()
            );
            ensure!(mounts_at(&v.target(p)) == 1, "{p} was unmounted");
        }
        ensure!(
            mounts_at(&v.staging()) == 1,
            "the staging mount was unmounted"
        );
        ensure!(the_client(&v.staging())? == client);
        writer.stop().await?;
        eprintln!(
            "degraded: {} bricks killed; stats abnormal after {noticed:?}; during the \
             {outage:?} outage {ok_during} writes succeeded, {failed_during} failed (first: \
             {first_error:?}); writes resumed {:?} after `volume start force`; client pid \
             {client} unchanged",
            killed.len(),
            resumed.saturating_duration_since(back)
        );
        v.clean_up(&mut c, &["a", "b"]).await
    }
    .await;
    pod.explain(r)
}

/// Issue 21, point 3. One volume's client is stopped (SIGSTOP): everything on its mount
/// blocks, and calls about it wait for their time limits. Meanwhile the plugin answers Probe
/// and another volume's NodeGetVolumeStats within a second.
async fn stopped_client_blocks_nothing_else(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "stopped", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let mut identity = pod.identity().await?;
        let hung = Vol::new(&tb, &pod.kubelet, "npstop1").await?;
        let other = Vol::new(&tb, &pod.kubelet, "npstop2").await?;
        for v in [&hung, &other] {
            v.stage(&mut c, Mode::MultiNodeMultiWriter).await?;
            v.publish(&mut c, "a", Mode::MultiNodeMultiWriter, false)
                .await?;
        }
        let client = the_client(&hung.staging())?;
        let outcome: Result<()> = async {
            stop_process(client).await?;
            // A pod's process stuck on the hung mount (it finishes after SIGCONT).
            let stuck = hung.target("a").join("stuck");
            std::thread::spawn(move || {
                let _ = std::fs::write(stuck, "x");
            });
            // Calls about the hung volume, in flight while the others are timed.
            let mut pending = Vec::new();
            for _ in 0..4 {
                let mut c = c.clone();
                let (id, target) = (hung.id.clone(), hung.target("a"));
                pending.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let r = call(
                        "NodeGetVolumeStats",
                        c.node_get_volume_stats(NodeGetVolumeStatsRequest {
                            volume_id: id,
                            volume_path: target.display().to_string(),
                            staging_target_path: String::new(),
                        }),
                    )
                    .await;
                    (started.elapsed(), r.map(|s| s.volume_condition))
                }));
            }
            let publish = {
                let mut c = c.clone();
                let req = NodePublishVolumeRequest {
                    volume_id: hung.id.clone(),
                    staging_target_path: hung.staging().display().to_string(),
                    target_path: hung.target("b").display().to_string(),
                    volume_capability: Some(capability(Mode::MultiNodeMultiWriter, &[])),
                    volume_context: hung.ctx.clone(),
                    ..Default::default()
                };
                tokio::spawn(async move {
                    call("NodePublishVolume", c.node_publish_volume(req))
                        .await
                        .map(|_| ())
                })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;

            let mut slowest_probe = Duration::ZERO;
            let mut slowest_stats = Duration::ZERO;
            for round in 0..10 {
                let t = Instant::now();
                let probe = tokio::time::timeout(STEP, identity.probe(ProbeRequest {}))
                    .await
                    .context("Probe hung")??
                    .into_inner();
                let took = t.elapsed();
                ensure!(
                    probe.ready == Some(true),
                    "round {round}: not ready: {probe:?}"
                );
                ensure!(
                    took < Duration::from_secs(1),
                    "round {round}: Probe took {took:?}"
                );
                slowest_probe = slowest_probe.max(took);

                let t = Instant::now();
                let s = other.stats(&mut c, &other.target("a")).await?;
                let took = t.elapsed();
                let cond = s.volume_condition.context("condition")?;
                ensure!(
                    !cond.abnormal,
                    "round {round}: the other volume: {}",
                    cond.message
                );
                ensure!(
                    took < Duration::from_secs(1),
                    "round {round}: the other volume's NodeGetVolumeStats took {took:?}"
                );
                slowest_stats = slowest_stats.max(took);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }

            let mut hung_stats = Vec::new();
            for p in pending {
                let (took, r) = p.await?;
                let cond = r?.context("condition")?;
                ensure!(
                    cond.abnormal && cond.message.contains("did not answer"),
                    "stats of the stopped volume (answered after {took:?}): {cond:?}"
                );
                hung_stats.push(took);
            }
            let r = publish.await?;
            ensure!(
                code(r.clone()) == tonic::Code::Unavailable,
                "publish on the stopped volume: {r:?}"
            );
            ensure!(procs::alive(client), "the stopped client was killed");
            eprintln!(
                "stopped client: slowest Probe {slowest_probe:?}, slowest stats of the other \
                 volume {slowest_stats:?} (10 rounds each); stats of the stopped volume took \
                 {hung_stats:?}"
            );
            Ok(())
        }
        .await;
        procs::signal(client, nix::sys::signal::Signal::SIGCONT);
        outcome?;
        ensure!(the_client(&hung.staging())? == client);
        hung.clean_up(&mut c, &["a"]).await?;
        other.clean_up(&mut c, &["a"]).await
    }
    .await;
    pod.explain(r)
}

async fn single_writer_second_publish(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "snsw", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npsnsw").await?;
        v.stage(&mut c, Mode::SingleNodeSingleWriter).await?;
        v.publish(&mut c, "one", Mode::SingleNodeSingleWriter, false)
            .await?;
        v.publish(&mut c, "one", Mode::SingleNodeSingleWriter, false)
            .await?;
        let second = v
            .publish(&mut c, "two", Mode::SingleNodeSingleWriter, false)
            .await;
        ensure!(code(second) == tonic::Code::FailedPrecondition);
        ensure!(!v.target("two").exists() || mounts_at(&v.target("two")) == 0);
        v.unpublish(&mut c, "one").await?;
        v.publish(&mut c, "two", Mode::SingleNodeSingleWriter, false)
            .await?;
        v.clean_up(&mut c, &["one", "two"]).await
    }
    .await;
    pod.explain(r)
}

async fn bad_requests(tb: Arc<Testbed>) -> Result<()> {
    let pod = Pod::start(&tb, "bad", true).await?;
    let r: Result<()> = async {
        let mut c = pod.client().await?;
        let v = Vol::new(&tb, &pod.kubelet, "npbad").await?;
        let staging = v.staging().display().to_string();
        let target = v.target("p").display().to_string();
        let good_stage = || NodeStageVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(capability(Mode::SingleNodeWriter, &[])),
            volume_context: v.ctx.clone(),
            secrets: HashMap::from([("key".to_owned(), "not-logged-secret".to_owned())]),
            ..Default::default()
        };
        let outside = tb
            .scratch_dir("bad-outside")?
            .join("x")
            .display()
            .to_string();
        let mut stage_cases: Vec<(&str, NodeStageVolumeRequest)> = vec![
            (
                "no volume id",
                NodeStageVolumeRequest {
                    volume_id: String::new(),
                    ..good_stage()
                },
            ),
            (
                "no staging path",
                NodeStageVolumeRequest {
                    staging_target_path: String::new(),
                    ..good_stage()
                },
            ),
            (
                "relative",
                NodeStageVolumeRequest {
                    staging_target_path: "rel/dir".into(),
                    ..good_stage()
                },
            ),
            (
                "dot-dot",
                NodeStageVolumeRequest {
                    staging_target_path: format!("{staging}/../../x"),
                    ..good_stage()
                },
            ),
            (
                "outside kubelet dir",
                NodeStageVolumeRequest {
                    staging_target_path: outside,
                    ..good_stage()
                },
            ),
            (
                "no capability",
                NodeStageVolumeRequest {
                    volume_capability: None,
                    ..good_stage()
                },
            ),
            (
                "no context",
                NodeStageVolumeRequest {
                    volume_context: HashMap::new(),
                    ..good_stage()
                },
            ),
            (
                "shell in flags",
                NodeStageVolumeRequest {
                    volume_capability: Some(capability(
                        Mode::SingleNodeWriter,
                        &["log-level=ERROR;touch /tmp/pwned"],
                    )),
                    ..good_stage()
                },
            ),
            (
                "smuggled log-file",
                NodeStageVolumeRequest {
                    volume_capability: Some(capability(
                        Mode::SingleNodeWriter,
                        &["acl,log-file=/etc/passwd"],
                    )),
                    ..good_stage()
                },
            ),
        ];
        let mut bad_ctx = v.ctx.clone();
        bad_ctx.insert("glusterVolume".into(), "npbad;reboot".into());
        stage_cases.push((
            "shell in volume name",
            NodeStageVolumeRequest {
                volume_context: bad_ctx,
                ..good_stage()
            },
        ));
        for (what, req) in stage_cases {
            let r = call("NodeStageVolume", c.node_stage_volume(req))
                .await
                .map(|_| ());
            ensure!(
                code(r.clone()) == tonic::Code::InvalidArgument,
                "{what}: {r:?}"
            );
        }
        ensure!(
            !v.staging().exists(),
            "an invalid request created the staging directory"
        );

        let good_publish = || NodePublishVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: staging.clone(),
            target_path: target.clone(),
            volume_capability: Some(capability(Mode::SingleNodeWriter, &[])),
            volume_context: v.ctx.clone(),
            ..Default::default()
        };
        let publish_cases: Vec<(&str, NodePublishVolumeRequest, tonic::Code)> = vec![
            (
                "no target",
                NodePublishVolumeRequest {
                    target_path: String::new(),
                    ..good_publish()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                "no volume id",
                NodePublishVolumeRequest {
                    volume_id: String::new(),
                    ..good_publish()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                "no capability",
                NodePublishVolumeRequest {
                    volume_capability: None,
                    ..good_publish()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                "not staged",
                good_publish(),
                tonic::Code::FailedPrecondition,
            ),
        ];
        for (what, req, want) in publish_cases {
            let r = call("NodePublishVolume", c.node_publish_volume(req))
                .await
                .map(|_| ());
            ensure!(code(r.clone()) == want, "{what}: {r:?}");
        }
        // Unpublish and unstage of paths that were never mounted succeed.
        v.unpublish(&mut c, "never").await?;
        v.unstage(&mut c).await?;
        let r = call(
            "NodeUnpublishVolume",
            c.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: String::new(),
            }),
        )
        .await
        .map(|_| ());
        ensure!(code(r) == tonic::Code::InvalidArgument);

        // A mount that fails quotes the client's log.
        let mut missing = v.ctx.clone();
        missing.insert("glusterVolume".into(), "npnosuchvolume".into());
        let r = call(
            "NodeStageVolume",
            c.node_stage_volume(NodeStageVolumeRequest {
                volume_context: missing,
                ..good_stage()
            }),
        )
        .await;
        let status = match r {
            Ok(_) => bail!("mounting a volume that does not exist succeeded"),
            Err(s) => s,
        };
        let log = pod.state.join("logs/npnosuchvolume.log");
        let last_line = std::fs::read_to_string(&log)
            .with_context(|| format!("no client log at {}", log.display()))?
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .context("client log is empty")?;
        ensure!(
            status.message().contains(last_line.trim()),
            "error does not quote the client log's last line {last_line:?}: {}",
            status.message()
        );
        ensure!(mounts_at(&v.staging()) == 0);
        ensure!(
            !std::fs::read_to_string(pod.dir.join("plugin.log"))?.contains("not-logged-secret"),
            "a secret reached the log"
        );
        v.unstage(&mut c).await?;
        ensure!(!v.staging().exists());
        Ok(())
    }
    .await;
    pod.explain(r)
}
