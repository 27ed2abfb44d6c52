//! heketi-server in the testbed: keys, start, readiness, and the topology (one cluster, a node
//! and a device per Gluster host) loaded through its REST API (with heketi-client) the way an
//! administrator would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use heketi_client::Client;
use heketi_client::types::{ClusterFlags, DeviceAddRequest, HostAddresses, NodeAddRequest};
use secrecy::SecretString;

use crate::daemon;
use crate::env::write_private;
use crate::host::SshClient;
use crate::journal::Journal;
use crate::layout::GlusterHost;

/// Journal role of heketi-server.
pub const ROLE: &str = "heketi-server";
/// How long heketi-server may take to answer `/hello`.
/// heketi-server listens only once it has finished or rolled back what a killed run left in
/// flight (each a few gluster CLI calls, plus up to 5 s for glusterd to settle): after a
/// `kill -9` during a burst that took over 30 s on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one asynchronous topology operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// Where heketi-server keeps its files and how it is reached.
#[derive(Clone, Debug)]
pub struct HeketiLayout {
    /// Listening address (the bridge address of the root namespace).
    pub listen: SocketAddr,
    /// heketi-server's state directory.
    pub state_dir: PathBuf,
    /// File holding the admin key.
    pub admin_key_file: PathBuf,
    /// File holding the user key.
    pub user_key_file: PathBuf,
    /// Log of its stdout and stderr.
    pub log: PathBuf,
}

impl HeketiLayout {
    /// The layout under `testbed_dir`, listening on `addr:port`.
    pub fn new(testbed_dir: &Path, log_dir: &Path, addr: Ipv4Addr, port: u16) -> Self {
        Self {
            listen: SocketAddr::from((addr, port)),
            state_dir: testbed_dir.join("heketi"),
            admin_key_file: testbed_dir.join("heketi-admin.key"),
            user_key_file: testbed_dir.join("heketi-user.key"),
            log: log_dir.join("heketi-server.log"),
        }
    }

    /// Base URL, `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// A port on `addr` that nothing listens on right now.
pub fn free_port(addr: Ipv4Addr) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .with_context(|| format!("cannot find a free port on {addr}"))?;
    Ok(l.local_addr()?.port())
}

/// Generates the admin and user keys into their files (mode 0600); returns the admin key.
pub fn write_keys(layout: &HeketiLayout) -> Result<String> {
    let admin = hex::encode(rand::random::<[u8; 32]>());
    let user = hex::encode(rand::random::<[u8; 32]>());
    write_private(&layout.admin_key_file, admin.as_bytes())?;
    write_private(&layout.user_key_file, user.as_bytes())?;
    Ok(admin)
}

/// How the testbed's heketi-server reaches the hosts.
#[derive(Clone, Debug)]
pub enum Executor {
    /// Over SSH with these files; the gluster CLI is the default `gluster` on each host.
    Ssh(SshClient),
    /// Locally, with this argv prefix as `--gluster-cmd` (one host's CLI).
    Local(Vec<String>),
}

impl Executor {
    /// The heketi-server flags.
    pub fn args(&self) -> Vec<String> {
        match self {
            Self::Ssh(c) => vec![
                "--executor=ssh".into(),
                format!("--ssh-keyfile={}", c.key.display()),
                format!("--ssh-known-hosts={}", c.known_hosts.display()),
                "--ssh-user=root".into(),
            ],
            // One flag per element, so that no element is ever split on whitespace.
            Self::Local(cmd) => cmd.iter().map(|a| format!("--gluster-cmd={a}")).collect(),
        }
    }
}

/// Starts heketi-server (`bin`) with auth on, reaching the hosts with `executor_args` (see
/// [`Executor::args`]).
pub fn start(
    bin: &Path,
    layout: &HeketiLayout,
    executor_args: &[String],
    journal: &Journal,
) -> Result<Child> {
    std::fs::create_dir_all(&layout.state_dir)
        .with_context(|| format!("cannot create {}", layout.state_dir.display()))?;
    let mut argv: Vec<String> = vec![
        bin.display().to_string(),
        "--listen".into(),
        layout.listen.to_string(),
        "--state-dir".into(),
        layout.state_dir.display().to_string(),
        "--admin-key-file".into(),
        layout.admin_key_file.display().to_string(),
        "--user-key-file".into(),
        layout.user_key_file.display().to_string(),
    ];
    argv.extend(executor_args.iter().cloned());
    daemon::spawn(ROLE, &argv, &layout.log, journal, false)
}

/// An admin client of the testbed's heketi-server.
pub fn admin_client(layout: &HeketiLayout, key: &str) -> Result<Client> {
    Client::builder(layout.url())
        .user("admin")
        .key(SecretString::from(key.to_string()))
        .operation_deadline(OP_TIMEOUT)
        .build()
        .context("cannot build the heketi client")
}

/// Waits until `GET /hello` answers; fails early when `exited` reports the process gone.
pub async fn wait_ready(layout: &HeketiLayout, exited: impl Fn() -> Option<String>) -> Result<()> {
    // One quick attempt per poll; the loop does the retrying.
    let probe = Client::builder(layout.url())
        .disable_auth()
        .max_attempts(1)
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .operation_deadline(Duration::from_secs(3))
        .build()
        .context("cannot build the heketi client")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "heketi-server exited ({status}); its log ends with:\n{}",
                daemon::tail(&layout.log, 20)
            );
        }
        if probe.hello().await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "heketi-server did not answer {}/hello within {START_TIMEOUT:?}; its log ends \
                 with:\n{}",
                layout.url(),
                daemon::tail(&layout.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loads the topology: one cluster, one node per host (manage and storage = its address, zone =
/// its number) and one device per node (its brick root). Returns the cluster id.
pub async fn load_topology(client: &Client, hosts: &[GlusterHost]) -> Result<String> {
    let cluster = client
        .cluster_create(&ClusterFlags {
            block: false,
            file: true,
        })
        .await
        .context("creating the cluster")?;
    for h in hosts {
        let addr = h.address.to_string();
        let node = client
            .node_add(&NodeAddRequest {
                zone: i64::try_from(h.index + 1)?,
                hostnames: HostAddresses {
                    manage: vec![addr.clone()],
                    storage: vec![addr],
                },
                cluster_id: cluster.id.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("adding node {}", h.name))?;
        client
            .device_add(&DeviceAddRequest {
                name: h.brick_root.display().to_string(),
                node_id: node.id,
                ..Default::default()
            })
            .await
            .with_context(|| format!("adding the device of {}", h.name))?;
    }
    Ok(cluster.id)
}
