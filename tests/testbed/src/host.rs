//! A Gluster host of the testbed as a machine of its own, as far as the product can tell.
//!
//! Each host is a network namespace plus one mount namespace, kept alive by a holder process
//! (`sleep infinity` started through `gluster-csi-testbed host-exec`). Its glusterd, bricks and
//! sshd all live in that mount namespace, in which:
//! - `/run` is a private tmpfs (as on a machine of its own), with `/run/gluster` the host's
//!   directory `var-run-gluster` (Gluster's compiled-in run directory, see [`crate::gluster`])
//!   and `/run/glusterd.socket` a link to the host's glusterd socket, so a plain `gluster`
//!   command run on the host — what heketi-server runs over SSH — reaches its own glusterd;
//! - with a private device (the SSH executor, the default), the host's disk
//!   (`STATE/disks/hN`) is bind-mounted at its device path and `STATE/disks` itself is covered
//!   by an empty tmpfs: the host sees its own bricks at the device path and nobody else's, and
//!   nobody else (other hosts, heketi-server, the plugins) sees its bricks at all. The root
//!   namespace — the hypervisor, so to speak — can still look at every disk for assertions.
//!
//! With the SSH executor every host also runs `sshd` (Debian's openssh-server) on port 22 of its
//! address, with a host key of its own; heketi-server gets a client key and a `known_hosts` file
//! listing those keys, and does all node work over SSH.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::daemon;
use crate::env::write_private;
use crate::gluster::{self, GLUSTER_VAR_RUN, HostSetup};
use crate::journal::Journal;
use crate::layout::{GlusterHost, Names};

/// How heketi-server reaches the hosts, and so how private each host is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Over SSH; each host has a private device and its own sshd.
    #[default]
    Ssh,
    /// heketi-server works on the device paths directly, which every host shares with the root
    /// namespace (the single-machine mode).
    Local,
}

/// How long a host's holder or sshd may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Journal role of `host`'s holder process.
pub fn holder_role(host: &GlusterHost) -> String {
    format!("host-{}", host.name)
}

/// Journal role of `host`'s sshd.
pub fn sshd_role(host: &GlusterHost) -> String {
    format!("sshd-{}", host.name)
}

/// Whether a journal role names a process that lives in a host's namespaces.
pub fn is_host_role(role: &str) -> bool {
    ["glusterd-", "host-", "sshd-"]
        .iter()
        .any(|p| role.starts_with(p))
}

/// The mount namespace set-up of `host`.
pub fn setup(names: &Names, host: &GlusterHost, executor: ExecutorKind) -> HostSetup {
    let mut s = HostSetup {
        tmpfs: vec![PathBuf::from("/run")],
        binds: vec![(gluster::var_run_dir(host), PathBuf::from(GLUSTER_VAR_RUN))],
        dirs: vec![PathBuf::from("/run/sshd")],
        symlinks: vec![(
            host.glusterd_socket.clone(),
            PathBuf::from("/run/glusterd.socket"),
        )],
        hide: Vec::new(),
    };
    if executor == ExecutorKind::Ssh {
        s.binds.push((host.disk.clone(), host.brick_root.clone()));
        s.hide.push(names.disks_dir());
    }
    s
}

/// Starts `host`'s holder: `ip netns exec NS gluster-csi-testbed host-exec … -- sleep infinity`.
pub fn start_holder(
    names: &Names,
    host: &GlusterHost,
    executor: ExecutorKind,
    journal: &Journal,
) -> Result<Child> {
    let testbed = gluster::testbed_bin()?;
    let sleep = cmd::require("sleep", "install coreutils")?;
    for d in [&host.log_dir, &host.brick_root, &host.disk] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut argv: Vec<String> = vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        host.netns.clone(),
        testbed.display().to_string(),
        "host-exec".into(),
    ];
    argv.extend(setup(names, host, executor).args());
    argv.extend(["--".into(), sleep.display().to_string(), "infinity".into()]);
    daemon::spawn(
        &holder_role(host),
        &argv,
        &host.log_dir.join("host.out"),
        journal,
        false,
    )
}

/// Waits until the holder `pid` has set up its namespace (it then is `sleep`).
pub async fn wait_holder(
    host: &GlusterHost,
    pid: u32,
    exited: impl Fn() -> Option<String>,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "the namespace holder of {} exited ({status}); its output ends with:\n{}",
                host.name,
                daemon::tail(&host.log_dir.join("host.out"), 20)
            );
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the namespace holder of {} did not start", host.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// argv prefix that runs a command in the network and mount namespaces of holder `pid`.
pub fn enter_argv(pid: u32) -> Vec<String> {
    vec![
        "nsenter".into(),
        "-t".into(),
        pid.to_string(),
        "-m".into(),
        "-n".into(),
        "--".into(),
    ]
}

/// The testbed's SSH client side: heketi-server's key and the hosts' keys it trusts.
#[derive(Clone, Debug)]
pub struct SshClient {
    /// Private key heketi-server logs in with (as root).
    pub key: PathBuf,
    /// Every host's address and host key.
    pub known_hosts: PathBuf,
    /// Public half of `key`, authorized on every host.
    pub authorized_keys: PathBuf,
}

impl SshClient {
    /// The files under `names`' SSH directory.
    pub fn new(names: &Names) -> Self {
        let dir = names.ssh_dir();
        Self {
            key: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
            authorized_keys: dir.join("authorized_keys"),
        }
    }
}

async fn keygen(file: &Path, comment: &str) -> Result<String> {
    if !file.exists() {
        let f = file.display().to_string();
        cmd::run(
            &[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                comment,
                "-f",
                &f,
            ],
            Duration::from_secs(20),
        )
        .await
        .with_context(|| format!("ssh-keygen for {comment} (install openssh-client)"))?;
    }
    let public = file.with_extension("pub");
    let text = std::fs::read_to_string(&public)
        .with_context(|| format!("cannot read {}", public.display()))?;
    Ok(text.trim().to_owned())
}

/// Makes the client key, every host's host key and sshd configuration, `authorized_keys` and
/// `known_hosts`.
pub async fn prepare_ssh(names: &Names, hosts: &[GlusterHost]) -> Result<SshClient> {
    let client = SshClient::new(names);
    std::fs::create_dir_all(names.ssh_dir())?;
    let public = keygen(&client.key, "heketi-server@testbed").await?;
    write_private(&client.authorized_keys, format!("{public}\n").as_bytes())?;
    let mut known = String::new();
    for h in hosts {
        std::fs::create_dir_all(&h.ssh_dir)?;
        let key = h.ssh_dir.join("host_ed25519_key");
        let host_public = keygen(&key, &h.name).await?;
        // `TYPE BASE64 COMMENT` → `ADDRESS TYPE BASE64`.
        let mut words = host_public.split_whitespace();
        let (Some(kind), Some(b64)) = (words.next(), words.next()) else {
            bail!("unexpected public key of {}: {host_public}", h.name);
        };
        known.push_str(&format!("{} {kind} {b64}\n", h.address));
        let config = format!(
            "ListenAddress {addr}\nPort 22\nHostKey {key}\nPidFile /run/sshd.pid\n\
             AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nAllowUsers root\nLogLevel INFO\n",
            addr = h.address,
            key = key.display(),
            auth = client.authorized_keys.display(),
        );
        std::fs::write(h.ssh_dir.join("sshd_config"), config)?;
    }
    write_private(&client.known_hosts, known.as_bytes())?;
    Ok(client)
}

/// Starts `host`'s sshd (in the foreground, logging to its log directory) in the namespaces of
/// holder `pid`.
pub fn start_sshd(host: &GlusterHost, pid: u32, journal: &Journal) -> Result<Child> {
    let sshd = cmd::require("sshd", "install openssh-server (scripts/setup.sh does)")?;
    let mut argv = enter_argv(pid);
    argv.extend([
        sshd.display().to_string(),
        "-D".into(),
        "-e".into(),
        "-f".into(),
        host.ssh_dir.join("sshd_config").display().to_string(),
    ]);
    daemon::spawn(
        &sshd_role(host),
        &argv,
        &host.log_dir.join("sshd.log"),
        journal,
        false,
    )
}

/// Waits until `host`'s sshd accepts connections on port 22.
pub async fn wait_sshd(host: &GlusterHost, exited: impl Fn() -> Option<String>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "sshd of {} exited ({status}); its log ends with:\n{}",
                host.name,
                daemon::tail(&host.log_dir.join("sshd.log"), 20)
            );
        }
        let connect = tokio::net::TcpStream::connect((host.address, 22));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "sshd of {} did not accept connections within {START_TIMEOUT:?}; its log ends \
                 with:\n{}",
                host.name,
                daemon::tail(&host.log_dir.join("sshd.log"), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
