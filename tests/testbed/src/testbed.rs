//! The testbed itself: bringing everything up in order, handles for tests, and teardown.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::cmd::{self, GLUSTER};
use crate::csi::{self, HeketiAccess};
use crate::daemon::Children;
use crate::env::TestbedEnv;
use crate::heketi::{self, HeketiLayout};
use crate::host::{self as gluster_host, ExecutorKind, SshClient};
use crate::journal::{self, Entry, Journal};
use crate::layout::{self, GlusterHost, MAX_HOSTS, Names};
use crate::{bin_path, down, gluster, mounts, net};

/// State directories of the testbeds of this process that are up or coming up, for the signal
/// handler of [`crate::harness`], which must tear down also those a trial started itself.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn set_live(dir: &Path, live: bool) {
    let mut set = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    if live {
        set.insert(dir.to_path_buf());
    } else {
        set.remove(dir);
    }
}

/// State directories of the testbeds this process has up (or is bringing up).
pub fn live_testbeds() -> Vec<PathBuf> {
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// File in the state directory describing the testbed (for `status` and for people).
pub const INFO_FILE: &str = "testbed.json";

/// File in the state directory naming the process that ran `up` (`PID START_TIME`).
pub const OWNER_FILE: &str = "owner";

/// What to bring up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestbedOptions {
    /// Where everything of the testbed lives; names and addresses are derived from it.
    pub state_dir: PathBuf,
    /// Number of Gluster hosts (1..=200).
    pub hosts: usize,
    /// Start heketi-server and load the topology.
    pub heketi: bool,
    /// Start the controller (needs `heketi`).
    pub controller: bool,
    /// Start the node plugin.
    pub node: bool,
    /// How heketi-server reaches the hosts (and so whether each host's device is private).
    pub executor: ExecutorKind,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::new(),
            hosts: 3,
            heketi: true,
            controller: true,
            node: true,
            executor: ExecutorKind::default(),
        }
    }
}

impl TestbedOptions {
    /// Everything on, three hosts, in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            ..Self::default()
        }
    }

    /// Only the Gluster hosts: no heketi-server, controller or node plugin.
    pub fn gluster_only(state_dir: impl Into<PathBuf>, hosts: usize) -> Self {
        Self {
            state_dir: state_dir.into(),
            hosts,
            heketi: false,
            controller: false,
            node: false,
            executor: ExecutorKind::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.state_dir.as_os_str().is_empty() {
            bail!("no state directory given");
        }
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            bail!(
                "--hosts must be between 1 and {MAX_HOSTS}, not {}",
                self.hosts
            );
        }
        if self.controller && !self.heketi {
            bail!("the controller needs heketi-server");
        }
        Ok(())
    }
}

/// What `testbed.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestbedInfo {
    /// Canonical state directory.
    pub state_dir: PathBuf,
    /// Id derived from it.
    pub id: String,
    /// Bridge name.
    pub bridge: String,
    /// Bridge address (root namespace side).
    pub bridge_address: Ipv4Addr,
    /// The Gluster hosts.
    pub hosts: Vec<GlusterHost>,
    /// How heketi-server reaches the hosts.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// heketi-server URL, if started.
    pub heketi_url: Option<String>,
    /// Controller socket, if started.
    pub controller_socket: Option<PathBuf>,
    /// Node plugin socket, if started.
    pub node_socket: Option<PathBuf>,
}

/// A running testbed. Dropping it tears everything down, unless it was [detached](Self::detach).
#[derive(Debug)]
pub struct Testbed {
    opts: TestbedOptions,
    names: Names,
    journal: Journal,
    children: Children,
    hosts: Vec<GlusterHost>,
    bridge_address: Ipv4Addr,
    heketi: Option<HeketiLayout>,
    heketi_key: String,
    env: TestbedEnv,
    node_plugin: Mutex<Option<(u32, Option<u64>)>>,
    done: AtomicBool,
}

/// Fails with a clear message when not root or when a needed program is missing.
pub fn check_prerequisites(opts: &TestbedOptions) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the testbed needs root (network namespaces, glusterd, FUSE mounts); run it as root");
    }
    let gluster_hint = "install Gluster with `apt-get install -y glusterfs-server glusterfs-client` \
                        (scripts/quickstart.sh does it)";
    cmd::require("glusterd", gluster_hint)?;
    cmd::require("gluster", gluster_hint)?;
    cmd::require("mount.glusterfs", gluster_hint)?;
    cmd::require("ip", "install iproute2")?;
    cmd::require("nsenter", "install util-linux")?;
    // Each host's mount namespace is made by `gluster-csi-testbed host-exec`.
    gluster::testbed_bin()?;
    if opts.executor == ExecutorKind::Ssh {
        let hint = "install openssh-server and openssh-client (scripts/setup.sh does)";
        cmd::require("sshd", hint)?;
        cmd::require("ssh", hint)?;
        cmd::require("ssh-keygen", hint)?;
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: FUSE mounts of Gluster volumes will not work here");
    }
    if opts.node {
        cmd::require("unshare", "install util-linux")?;
        bin_path("gluster-csi-node")?;
    }
    if opts.heketi {
        bin_path("heketi-server")?;
    }
    if opts.controller {
        bin_path("gluster-csi-controller")?;
    }
    Ok(())
}

impl Testbed {
    /// Brings a testbed up. Leftovers of an earlier testbed in the same state directory are
    /// removed first; if anything fails, what was made is removed again before the error returns.
    pub async fn up(opts: TestbedOptions) -> Result<Testbed> {
        opts.validate()?;
        check_prerequisites(&opts)?;
        let names = Names::new(&opts.state_dir)?;
        names.check_path_length()?;
        set_live(&names.state_dir, true);
        if let Err(e) = prepare_state_dir(&names).await {
            set_live(&names.state_dir, false);
            return Err(e);
        }
        let journal = Journal::open(&names.state_dir)?;
        let me = std::process::id();
        let owner = format!("{me} {}\n", crate::procs::start_time(me).unwrap_or(0));
        std::fs::write(names.state_dir.join(OWNER_FILE), owner)?;
        let mut tb = Testbed {
            opts,
            names,
            journal,
            children: Children::default(),
            hosts: Vec::new(),
            bridge_address: Ipv4Addr::UNSPECIFIED,
            heketi: None,
            heketi_key: String::new(),
            env: TestbedEnv::default(),
            node_plugin: Mutex::new(None),
            done: AtomicBool::new(false),
        };
        match tb.bring_up().await {
            Ok(()) => Ok(tb),
            Err(e) => match tb.teardown().await {
                Ok(()) => Err(e.context("testbed up failed (everything it made was removed)")),
                Err(d) => {
                    Err(e.context(format!("testbed up failed, and so did the cleanup: {d:#}")))
                }
            },
        }
    }

    /// A testbed value that was never brought up and owns nothing (its Drop does nothing): the
    /// layout as `up` would most likely make it, for listing tests without root.
    pub fn placeholder(opts: TestbedOptions) -> Result<Testbed> {
        let names = Names::new(&opts.state_dir)?;
        let prefix = layout::subnet_prefix(layout::preferred_subnet(&names.id));
        let hosts = (0..opts.hosts)
            .map(|i| GlusterHost::new(&names, prefix, i))
            .collect();
        Ok(Testbed {
            opts,
            names,
            journal: Journal::disabled(),
            children: Children::default(),
            hosts,
            bridge_address: net::bridge_address(prefix),
            heketi: None,
            heketi_key: String::new(),
            env: TestbedEnv::default(),
            node_plugin: Mutex::new(None),
            done: AtomicBool::new(true),
        })
    }

    async fn bring_up(&mut self) -> Result<()> {
        let dir = self.names.state_dir.clone();
        std::fs::create_dir_all(self.names.log_dir())?;
        let t0 = std::time::Instant::now();
        let step = |what: &str| eprintln!("testbed: {what} ({:.1}s)", t0.elapsed().as_secs_f64());

        // Network.
        let prefix = net::create_bridge(&self.names, &self.journal).await?;
        self.bridge_address = net::bridge_address(prefix);
        self.hosts = (0..self.opts.hosts)
            .map(|i| GlusterHost::new(&self.names, prefix, i))
            .collect();
        for h in &self.hosts {
            net::create_host(&self.names, h, &self.journal).await?;
        }
        self.write_info()?;
        step("network ready");

        // Each host's mount namespace (and sshd), then glusterd on every host, then the pool.
        for h in &self.hosts {
            let child =
                gluster_host::start_holder(&self.names, h, self.opts.executor, &self.journal)?;
            let role = gluster_host::holder_role(h);
            let pid = child.id();
            self.children.insert(&role, child);
            gluster_host::wait_holder(h, pid, || self.children.exited(&role)).await?;
        }
        if self.opts.executor == ExecutorKind::Ssh {
            gluster_host::prepare_ssh(&self.names, &self.hosts).await?;
            for i in 0..self.hosts.len() {
                self.start_sshd(i).await?;
            }
            step("sshd answering on every host");
        }
        for h in &self.hosts {
            let child = gluster::start_glusterd(h, self.holder_pid(h)?, &self.journal)?;
            self.children.insert(&gluster::glusterd_role(h), child);
        }
        for h in &self.hosts {
            let role = gluster::glusterd_role(h);
            gluster::wait_glusterd(h, || self.children.exited(&role)).await?;
        }
        step("glusterd answering on every host");
        gluster::form_pool(&self.hosts).await?;
        step("trusted pool formed");

        self.env.gluster_hosts = self.hosts.iter().map(|h| h.address.to_string()).collect();
        if self.opts.heketi {
            let port = heketi::free_port(self.bridge_address)?;
            let layout = HeketiLayout::new(&dir, &self.names.log_dir(), self.bridge_address, port);
            self.heketi_key = heketi::write_keys(&layout)?;
            self.env.heketi_url = layout.url();
            self.env.heketi_user = "admin".into();
            self.env.heketi_key = self.heketi_key.clone();
            self.env.heketi_key_file = layout.admin_key_file.clone();
            self.heketi = Some(layout);
            self.start_heketi().await?;
            step("heketi-server answering");
            if self.heketi.is_some() {
                let client = self.heketi_client()?;
                heketi::load_topology(&client, &self.hosts)
                    .await
                    .context("loading the topology into heketi-server")?;
                step("topology loaded");
            }
        }
        if self.opts.controller {
            self.env.controller_endpoint = csi::endpoint(&self.controller_socket());
            self.start_controller().await?;
            step("controller listening");
        }
        if self.opts.node {
            self.start_mount_agent().await?;
            step("mount agent listening");
            self.env.node_endpoint = csi::endpoint(&self.node_socket());
            self.start_node_plugin().await?;
            step("node plugin listening");
        }
        self.env.write(&dir)?;
        self.write_info()?;
        Ok(())
    }

    fn write_info(&self) -> Result<()> {
        let info = TestbedInfo {
            state_dir: self.names.state_dir.clone(),
            id: self.names.id.clone(),
            bridge: self.names.bridge(),
            bridge_address: self.bridge_address,
            hosts: self.hosts.clone(),
            executor: self.opts.executor,
            heketi_url: self.heketi.as_ref().map(HeketiLayout::url),
            controller_socket: self.opts.controller.then(|| self.controller_socket()),
            node_socket: self.opts.node.then(|| self.node_socket()),
        };
        let path = self.names.state_dir.join(INFO_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&info)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the testbed at `state_dir` (idempotent; works after a crash or a failed `up`).
    pub async fn down(state_dir: &Path) -> Result<()> {
        down::down(state_dir).await
    }

    /// Removes this testbed now (idempotent). Dropping the testbed does the same.
    pub async fn teardown(&self) -> Result<()> {
        if self.done.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let res = down::down(&self.names.state_dir).await;
        self.children.kill_all().await;
        set_live(&self.names.state_dir, false);
        res
    }

    /// Leaves the testbed running after this value is gone (what `gluster-csi-testbed up` does).
    pub fn detach(self) {
        self.done.store(true, Ordering::SeqCst);
        set_live(&self.names.state_dir, false);
    }

    /// The options it was brought up with.
    pub fn options(&self) -> &TestbedOptions {
        &self.opts
    }

    /// Canonical state directory.
    pub fn state_dir(&self) -> &Path {
        &self.names.state_dir
    }

    /// The Gluster hosts (index 0 is host `h1`).
    pub fn hosts(&self) -> &[GlusterHost] {
        &self.hosts
    }

    /// argv prefix that runs the gluster CLI (script mode) on host `host` (0-based).
    ///
    /// # Panics
    /// When `host` is out of range (a bug in the test).
    pub fn gluster_argv(&self, host: usize) -> Vec<String> {
        self.hosts[host].gluster_argv()
    }

    /// Runs the gluster CLI on host `host` (0-based) and returns its standard output.
    pub async fn gluster(&self, host: usize, args: &[&str]) -> Result<String> {
        let h = self
            .hosts
            .get(host)
            .with_context(|| format!("no host {host}"))?;
        gluster::cli(h, args).await
    }

    /// How to reach the testbed (also in `STATE/testbed.env`).
    pub fn env(&self) -> &TestbedEnv {
        &self.env
    }

    /// The device directory (brick root) of host `host` (0-based), as the host sees it.
    ///
    /// # Panics
    /// When `host` is out of range (a bug in the test).
    pub fn brick_root(&self, host: usize) -> PathBuf {
        self.hosts[host].brick_root.clone()
    }

    /// Where the root namespace sees what host `host` (0-based) has at its device directory:
    /// the host's private disk with the SSH executor, the device directory itself otherwise.
    /// For assertions about bricks; the product never looks there.
    ///
    /// # Panics
    /// When `host` is out of range (a bug in the test).
    pub fn host_disk(&self, host: usize) -> PathBuf {
        let h = &self.hosts[host];
        match self.opts.executor {
            ExecutorKind::Ssh => h.disk.clone(),
            ExecutorKind::Local => h.brick_root.clone(),
        }
    }

    /// Where the root namespace sees file `path` of host `host` (0-based): under the host's disk
    /// when `path` is below its private device directory, else `path` itself.
    ///
    /// # Panics
    /// When `host` is out of range (a bug in the test).
    pub fn on_disk(&self, host: usize, path: &Path) -> PathBuf {
        let h = &self.hosts[host];
        match path.strip_prefix(&h.brick_root) {
            Ok(rel) if self.opts.executor == ExecutorKind::Ssh => h.disk.join(rel),
            _ => path.to_path_buf(),
        }
    }

    /// [`Self::on_disk`] for a path below some host's device directory (device directories
    /// differ between hosts); other paths are returned as they are.
    pub fn path_on_disk(&self, path: &Path) -> PathBuf {
        self.hosts
            .iter()
            .position(|h| path.starts_with(&h.brick_root))
            .map_or_else(|| path.to_path_buf(), |i| self.on_disk(i, path))
    }

    /// [`Self::on_disk`] for a brick given as in `gluster volume info` (`ADDRESS:PATH`):
    /// `None` when no host has that address.
    pub fn brick_on_disk(&self, brick: &str) -> Option<PathBuf> {
        let (addr, path) = brick.split_once(':')?;
        let i = self
            .hosts
            .iter()
            .position(|h| h.address.to_string() == addr)?;
        Some(self.on_disk(i, Path::new(path)))
    }

    /// The heketi-server flags that reach the hosts the way the testbed's own server does.
    pub fn heketi_executor_args(&self) -> Result<Vec<String>> {
        let h1 = self.hosts.first().context("no hosts")?;
        Ok(match self.opts.executor {
            ExecutorKind::Ssh => heketi::Executor::Ssh(SshClient::new(&self.names)),
            ExecutorKind::Local => heketi::Executor::Local(h1.gluster_cmd()),
        }
        .args())
    }

    fn holder_pid(&self, h: &GlusterHost) -> Result<u32> {
        self.children
            .pid(&gluster_host::holder_role(h))
            .with_context(|| format!("host {} has no namespace holder", h.name))
    }

    /// Runs `argv` on host `host` (0-based): in its network and mount namespaces, as a
    /// command an administrator runs there. Returns standard output.
    pub async fn on_host(&self, host: usize, argv: &[&str]) -> Result<String> {
        let h = self
            .hosts
            .get(host)
            .with_context(|| format!("no host {host}"))?;
        let mut full = gluster_host::enter_argv(self.holder_pid(h)?);
        full.extend(argv.iter().map(|a| (*a).to_owned()));
        cmd::run(&full, GLUSTER).await
    }

    /// Starts host `host`'s sshd (again) and waits until it accepts connections.
    pub async fn start_sshd(&self, host: usize) -> Result<()> {
        let h = self
            .hosts
            .get(host)
            .with_context(|| format!("no host {host}"))?;
        let child = gluster_host::start_sshd(h, self.holder_pid(h)?, &self.journal)?;
        let role = gluster_host::sshd_role(h);
        self.children.insert(&role, child);
        gluster_host::wait_sshd(h, || self.children.exited(&role)).await
    }

    /// Stops host `host`'s sshd (SIGTERM; existing sessions end too).
    pub async fn stop_sshd(&self, host: usize) -> Result<()> {
        let h = self
            .hosts
            .get(host)
            .with_context(|| format!("no host {host}"))?;
        self.children
            .stop(
                &gluster_host::sshd_role(h),
                Some(Signal::SIGTERM),
                Duration::from_secs(10),
            )
            .await;
        Ok(())
    }

    /// The SSH files of the testbed's heketi-server (SSH executor).
    pub fn ssh_client(&self) -> SshClient {
        SshClient::new(&self.names)
    }

    /// Address of the bridge in the root namespace (heketi-server listens there).
    pub fn bridge_address(&self) -> Ipv4Addr {
        self.bridge_address
    }

    /// A directory under the state directory for a test's own files and mount points; `down`
    /// unmounts and removes whatever is under it.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.names.state_dir.join("scratch").join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(p)
    }

    /// Records a mount point outside the state directory so `down` unmounts it too.
    pub fn record_mount(&self, path: &Path) -> Result<()> {
        self.journal.record(&Entry::Mount {
            path: path.to_path_buf(),
        })
    }

    /// Mounts Gluster volume `volume` from the root namespace at `mount_point` (created if
    /// needed) with the first host as server and the others as backup volfile servers.
    pub async fn mount_volume(&self, volume: &str, mount_point: &Path) -> Result<()> {
        let (first, others) = self.hosts.split_first().context("no hosts")?;
        std::fs::create_dir_all(mount_point)?;
        self.record_mount(mount_point)?;
        let mut argv: Vec<String> = vec!["mount".into(), "-t".into(), "glusterfs".into()];
        if !others.is_empty() {
            let backups: Vec<String> = others.iter().map(|h| h.address.to_string()).collect();
            argv.push("-o".into());
            argv.push(format!("backup-volfile-servers={}", backups.join(":")));
        }
        argv.push(format!("{}:/{volume}", first.address));
        argv.push(mount_point.display().to_string());
        cmd::run(&argv, GLUSTER).await?;
        Ok(())
    }

    /// Unmounts `mount_point` (lazily if it is busy or its server is gone).
    pub async fn unmount(&self, mount_point: &Path) -> Result<()> {
        mounts::unmount(mount_point).await
    }

    // ---- heketi-server ----

    /// heketi-server's listening address, when it is part of the testbed.
    pub fn heketi_url(&self) -> Option<String> {
        self.heketi.as_ref().map(HeketiLayout::url)
    }

    /// A heketi-client for heketi-server, signed as `admin`.
    pub fn heketi_client(&self) -> Result<heketi_client::Client> {
        let layout = self
            .heketi
            .as_ref()
            .context("heketi-server is not part of this testbed")?;
        heketi::admin_client(layout, &self.heketi_key)
    }

    /// Starts heketi-server (again) on its address and state directory, and waits for `/hello`.
    pub async fn start_heketi(&self) -> Result<()> {
        let layout = self
            .heketi
            .as_ref()
            .context("heketi-server is not part of this testbed")?;
        let bin = bin_path("heketi-server")?;
        let child = heketi::start(&bin, layout, &self.heketi_executor_args()?, &self.journal)?;
        self.children.insert(heketi::ROLE, child);
        heketi::wait_ready(layout, || self.children.exited(heketi::ROLE)).await
    }

    /// Kills heketi-server with SIGKILL (a crash, for fault tests).
    pub async fn kill_heketi(&self) -> Result<()> {
        self.children
            .stop(heketi::ROLE, Some(Signal::SIGKILL), Duration::from_secs(10))
            .await;
        Ok(())
    }

    // ---- controller ----

    /// The controller's socket.
    pub fn controller_socket(&self) -> PathBuf {
        self.names.state_dir.join("controller.sock")
    }

    /// Starts the controller (again) and waits until it accepts connections.
    pub async fn start_controller(&self) -> Result<()> {
        let layout = self
            .heketi
            .as_ref()
            .context("the controller needs heketi-server")?;
        let access = HeketiAccess {
            url: layout.url(),
            user: "admin".into(),
            key_file: layout.admin_key_file.clone(),
        };
        let bin = bin_path("gluster-csi-controller")?;
        let socket = self.controller_socket();
        let log = self.names.log_dir().join("controller.log");
        let child = csi::start_controller(&bin, &socket, &access, &log, &self.journal)?;
        self.children.insert(csi::CONTROLLER_ROLE, child);
        csi::wait_socket("the controller", &socket, &log, || {
            self.children.exited(csi::CONTROLLER_ROLE)
        })
        .await
    }

    /// Kills the controller with SIGKILL.
    pub async fn kill_controller(&self) -> Result<()> {
        self.children
            .stop(
                csi::CONTROLLER_ROLE,
                Some(Signal::SIGKILL),
                Duration::from_secs(10),
            )
            .await;
        Ok(())
    }

    /// Kills the controller and starts it again.
    pub async fn restart_controller(&self) -> Result<()> {
        self.kill_controller().await?;
        self.start_controller().await
    }

    // ---- node plugin ----

    /// The node plugin's socket.
    pub fn node_socket(&self) -> PathBuf {
        self.names.state_dir.join("node.sock")
    }

    /// Node id given to the node plugin (the machine's host name).
    pub fn node_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("gcsi-{}", self.names.id))
    }

    /// Host pid of the node plugin (first process of its pid namespace), if it runs.
    pub fn node_plugin_pid(&self) -> Option<u32> {
        self.node_plugin.lock().ok()?.map(|(pid, _)| pid)
    }

    /// The mount agent's socket (the node plugin's `--fuse-launcher agent:unix://…`).
    pub fn mount_agent_socket(&self) -> PathBuf {
        csi::mount_agent_socket(&self.names.state_dir)
    }

    /// Host pid of the mount agent, if it runs.
    pub fn mount_agent_pid(&self) -> Option<u32> {
        self.children.pid(csi::MOUNT_AGENT_ROLE)
    }

    /// Starts the mount agent in the root pid namespace (where a node's host would run it) and
    /// waits until it accepts connections. The node plugin asks it to start every FUSE client,
    /// so that the clients outlive the plugin's pid namespace.
    pub async fn start_mount_agent(&self) -> Result<()> {
        let bin = bin_path("gluster-csi-node")?;
        let log = self.names.log_dir().join("mount-agent.log");
        let child = csi::start_mount_agent(&bin, &self.names.state_dir, &log, &self.journal)?;
        self.children.insert(csi::MOUNT_AGENT_ROLE, child);
        csi::wait_socket("the mount agent", &self.mount_agent_socket(), &log, || {
            self.children.exited(csi::MOUNT_AGENT_ROLE)
        })
        .await
    }

    /// Starts the node plugin in a new pid namespace and waits until it accepts connections.
    pub async fn start_node_plugin(&self) -> Result<()> {
        let bin = bin_path("gluster-csi-node")?;
        let socket = self.node_socket();
        let log = self.names.log_dir().join("node-plugin.log");
        let (child, pid) = csi::start_node(
            &bin,
            &socket,
            &self.node_id(),
            &self.names.state_dir,
            &log,
            &self.journal,
        )
        .await?;
        self.children.insert(csi::NODE_UNSHARE_ROLE, child);
        if let Ok(mut np) = self.node_plugin.lock() {
            *np = Some((pid, crate::procs::start_time(pid)));
        }
        csi::wait_socket("the node plugin", &socket, &log, || {
            self.children.exited(csi::NODE_UNSHARE_ROLE)
        })
        .await
    }

    /// Stops the node plugin the way a container runtime stops a pod: SIGKILL to every process
    /// of its pid namespace at once. Processes outside that namespace stay: the mount agent and
    /// the FUSE clients it started.
    pub async fn kill_node_plugin(&self) -> Result<()> {
        let current = self.node_plugin.lock().ok().and_then(|mut np| np.take());
        if let Some((pid, start)) = current {
            csi::kill_pid_namespace(pid, start).await?;
        }
        self.children
            .stop(csi::NODE_UNSHARE_ROLE, None, Duration::from_secs(10))
            .await;
        Ok(())
    }

    /// Kills the node plugin's pid namespace and starts a new plugin.
    pub async fn restart_node_plugin(&self) -> Result<()> {
        self.kill_node_plugin().await?;
        self.start_node_plugin().await
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        // Drop may run inside an async runtime; tear down on a thread with a runtime of its own.
        let dir = self.names.state_dir.clone();
        let res = std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| {
                        rt.block_on(async {
                            let r = down::down(&dir).await;
                            self.children.kill_all().await;
                            set_live(&dir, false);
                            r
                        })
                    })
            })
            .join()
        });
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("testbed teardown of {}: {e:#}", dir.display()),
            Err(_) => eprintln!("testbed teardown of {} panicked", dir.display()),
        }
    }
}

/// Makes `names.state_dir` an empty testbed directory: runs `down` on leftovers of an earlier
/// testbed, refuses a non-empty directory that is not a testbed's.
async fn prepare_state_dir(names: &Names) -> Result<()> {
    let dir = &names.state_dir;
    let leftovers = dir.join(journal::FILE_NAME).exists()
        || net::namespaces()
            .await?
            .iter()
            .any(|n| n.starts_with(&names.netns_prefix()))
        || net::links().await?.iter().any(|l| names.owns_link(l));
    if leftovers {
        down::down(dir)
            .await
            .context("removing the leftovers of an earlier testbed in this state directory")?;
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty {
            bail!(
                "{} exists, is not empty and is not a testbed state directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}

/// Reads `testbed.json` of a state directory.
pub fn read_info(state_dir: &Path) -> Result<TestbedInfo> {
    let path = state_dir.join(INFO_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}
