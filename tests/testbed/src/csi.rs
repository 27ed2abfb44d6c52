//! The CSI binaries in the testbed: the controller as a plain process, the node plugin the way a
//! pod runs it — first process of a pid namespace of its own, so that it can be stopped the way a
//! container runtime stops a pod (every process of the namespace at once).
//!
//! A plugin in a pid namespace of its own cannot keep the FUSE clients it starts alive (they
//! would die with the namespace), so it asks the mount agent (`gluster-csi-node mount-agent`) to
//! start them: `--fuse-launcher agent:unix://STATE/node-plugin/mount-agent.sock`. The testbed
//! plays the host here: it runs the agent in the root pid namespace, where a real node would
//! run it as a host service — or use its systemd (`--fuse-launcher systemd`), which this
//! machine does not run.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::daemon;
use crate::journal::{Entry, Journal};
use crate::procs;

/// Journal role of the controller.
pub const CONTROLLER_ROLE: &str = "controller";
/// Journal role of the `unshare` process that holds the node plugin's pid namespace.
pub const NODE_UNSHARE_ROLE: &str = "node-plugin-unshare";
/// Journal role of the node plugin (first process of its pid namespace).
pub const NODE_ROLE: &str = "node-plugin";
/// Journal role of the mount agent that starts the node plugin's FUSE clients.
pub const MOUNT_AGENT_ROLE: &str = "mount-agent";
/// The node plugin's own directory under the state directory (client logs, volume records, the
/// mount agent's socket).
pub const NODE_STATE_DIR: &str = "node-plugin";
/// The mount agent's socket, under [`NODE_STATE_DIR`].
pub const MOUNT_AGENT_SOCKET: &str = "mount-agent.sock";
/// File in the state directory holding the node plugin's host pid.
pub const NODE_PID_FILE: &str = "node-plugin.pid";
/// CSI driver name used in the testbed.
pub const DRIVER_NAME: &str = "gluster.heketi.csi";
/// How long a CSI binary may take to accept connections on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the controller reaches heketi-server.
#[derive(Clone, Debug)]
pub struct HeketiAccess {
    /// `--heketi-url`.
    pub url: String,
    /// `--heketi-user`.
    pub user: String,
    /// `--heketi-key-file`.
    pub key_file: PathBuf,
}

/// `unix://` endpoint of a socket path.
pub fn endpoint(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// Starts the controller on `socket`.
pub fn start_controller(
    bin: &Path,
    socket: &Path,
    heketi: &HeketiAccess,
    log: &Path,
    journal: &Journal,
) -> Result<Child> {
    let _ = std::fs::remove_file(socket);
    let argv: Vec<String> = vec![
        bin.display().to_string(),
        "--endpoint".into(),
        endpoint(socket),
        "--driver-name".into(),
        DRIVER_NAME.into(),
        "--heketi-url".into(),
        heketi.url.clone(),
        "--heketi-user".into(),
        heketi.user.clone(),
        "--heketi-key-file".into(),
        heketi.key_file.display().to_string(),
    ];
    daemon::spawn(CONTROLLER_ROLE, &argv, log, journal, false)
}

/// Path of the mount agent's socket of the testbed at `state_dir`.
pub fn mount_agent_socket(state_dir: &Path) -> PathBuf {
    state_dir.join(NODE_STATE_DIR).join(MOUNT_AGENT_SOCKET)
}

/// Starts the mount agent (`gluster-csi-node mount-agent`) in the root pid namespace, standing in
/// for what a node's host provides (a host service, or systemd for `--fuse-launcher systemd`:
/// this machine runs no systemd). The FUSE clients it starts outlive the node plugin.
pub fn start_mount_agent(
    bin: &Path,
    state_dir: &Path,
    log: &Path,
    journal: &Journal,
) -> Result<Child> {
    let socket = mount_agent_socket(state_dir);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let argv: Vec<String> = vec![
        bin.display().to_string(),
        "mount-agent".into(),
        "--socket".into(),
        socket.display().to_string(),
    ];
    daemon::spawn(MOUNT_AGENT_ROLE, &argv, log, journal, false)
}

/// Starts the node plugin on `socket` in a new pid namespace, with its own state (mount records,
/// client logs) in `STATE/node-plugin` and its FUSE clients started by the mount agent
/// ([`start_mount_agent`]). Returns the `unshare` child and the host pid of the plugin itself
/// (recorded in `STATE/node-plugin.pid` and in the journal).
pub async fn start_node(
    bin: &Path,
    socket: &Path,
    node_id: &str,
    state_dir: &Path,
    log: &Path,
    journal: &Journal,
) -> Result<(Child, u32)> {
    let _ = std::fs::remove_file(socket);
    let unshare = cmd::require("unshare", "install util-linux")?;
    let argv: Vec<String> = vec![
        unshare.display().to_string(),
        "--pid".into(),
        "--fork".into(),
        "--kill-child".into(),
        "--".into(),
        bin.display().to_string(),
        "--endpoint".into(),
        endpoint(socket),
        "--node-id".into(),
        node_id.into(),
        "--state-dir".into(),
        state_dir.join(NODE_STATE_DIR).display().to_string(),
        "--driver-name".into(),
        DRIVER_NAME.into(),
        "--fuse-launcher".into(),
        format!("agent:{}", endpoint(&mount_agent_socket(state_dir))),
    ];
    let mut child = daemon::spawn(NODE_UNSHARE_ROLE, &argv, log, journal, false)?;
    let holder = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let plugin = loop {
        if let Some(p) = procs::children(holder).first() {
            break *p;
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "unshare for the node plugin exited ({status}); log:\n{}",
                daemon::tail(log, 20)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the node plugin did not appear under unshare (pid {holder})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    journal.record(&Entry::Process {
        role: NODE_ROLE.into(),
        pid: plugin,
        start: procs::start_time(plugin).unwrap_or(0),
        pid_namespace: true,
    })?;
    std::fs::write(state_dir.join(NODE_PID_FILE), format!("{plugin}\n"))
        .context("cannot write node-plugin.pid")?;
    Ok((child, plugin))
}

/// Waits until something accepts connections on `socket`; fails early when `exited` reports the
/// process gone.
pub async fn wait_socket(
    what: &str,
    socket: &Path,
    log: &Path,
    exited: impl Fn() -> Option<String>,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "{what} exited ({status}); its log ends with:\n{}",
                daemon::tail(log, 20)
            );
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} did not listen on {} within {START_TIMEOUT:?}; its log ends with:\n{}",
                socket.display(),
                daemon::tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the node plugin like a container runtime stops a pod: SIGKILL to every process of its
/// pid namespace at once. Returns once they are all gone.
pub async fn kill_pid_namespace(plugin_pid: u32, start: Option<u64>) -> Result<()> {
    if let Some(s) = start
        && !procs::is_same(plugin_pid, s)
    {
        return Ok(());
    }
    let members = procs::pid_namespace_members(plugin_pid);
    for p in &members {
        procs::signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    let left = procs::wait_gone(&members, Duration::from_secs(10)).await;
    if !left.is_empty() {
        bail!("processes of the node plugin's pid namespace survived SIGKILL: {left:?}");
    }
    Ok(())
}
