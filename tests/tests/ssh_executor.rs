//! heketi-server's SSH executor against hosts that share no file system: each testbed host has
//! its own mount namespace with a private disk at its device path and its own sshd (see
//! `gluster_csi_testbed::host`). Real sshd, real glusterd, real bricks.
//!
//! The trials run one at a time, in order: several stop a host's sshd, change the trusted host
//! keys or kill heketi-server, which would disturb any trial running beside them.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::journal::{Entry, Journal};
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness, procs};
use heketi_client::Client;
use heketi_client::types::{
    ClusterFlags, DeviceAddRequest, HostAddresses, NodeAddRequest, VolumeCreateRequest,
    VolumeDurabilityInfo, VolumeExpandRequest, VolumeInfoResponse,
};
use secrecy::SecretString;

/// Limit on one wait, so a hang fails the trial instead of the run. Not a speed assertion.
const STEP: Duration = Duration::from_secs(180);

fn main() {
    let opts = TestbedOptions {
        controller: false,
        node: false,
        executor: ExecutorKind::Ssh,
        ..TestbedOptions::new(PathBuf::new())
    };
    harness::run_in_order(opts, |tb| {
        vec![
            harness::trial(
                "bricks_live_only_on_their_own_host_with_the_gid",
                &tb,
                bricks_live_only_on_their_own_host_with_the_gid,
            ),
            harness::trial(
                "delete_leaves_no_brick_directory_on_any_host",
                &tb,
                delete_leaves_no_brick_directory_on_any_host,
            ),
            harness::trial(
                "gluster_cli_moves_to_another_node_when_one_is_unreachable",
                &tb,
                gluster_cli_moves_to_another_node_when_one_is_unreachable,
            ),
            harness::trial(
                "stopped_sshd_fails_naming_the_host_leaves_nothing_and_recovers",
                &tb,
                stopped_sshd_fails_naming_the_host_leaves_nothing_and_recovers,
            ),
            harness::trial(
                "wrong_host_key_is_refused_with_a_clear_error",
                &tb,
                wrong_host_key_is_refused_with_a_clear_error,
            ),
            harness::trial(
                "kill9_during_ssh_create_and_delete_then_state_equals_gluster",
                &tb,
                kill9_during_ssh_create_and_delete_then_state_equals_gluster,
            ),
            harness::trial(
                "unprivileged_server_creates_and_deletes_over_ssh",
                &tb,
                unprivileged_server_creates_and_deletes_over_ssh,
            ),
        ]
    })
}

// =============================================================================== helpers

fn replica3(name: &str, gid: i64) -> VolumeCreateRequest {
    VolumeCreateRequest {
        size: 1,
        name: name.into(),
        durability: VolumeDurabilityInfo::replicate(3),
        gid,
        ..Default::default()
    }
}

/// Index of the testbed host a brick of `info` is on.
fn host_of(tb: &Testbed, brick_path: &str) -> Result<usize> {
    tb.hosts()
        .iter()
        .position(|h| Path::new(brick_path).starts_with(&h.brick_root))
        .with_context(|| format!("brick {brick_path} is under no host's device"))
}

/// `brick_*` directories on host `i`'s disk (what the host has at its device path).
fn brick_dirs_on(tb: &Testbed, i: usize, device: &Path) -> Result<BTreeSet<String>> {
    let dir = tb.on_disk(i, device);
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.starts_with("brick_") {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

/// Every `brick_*` directory of the testbed's own devices, as `hN/brick_…`.
fn all_brick_dirs(tb: &Testbed) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (i, h) in tb.hosts().iter().enumerate() {
        for d in brick_dirs_on(tb, i, &h.brick_root)? {
            out.insert(format!("{}/{d}", h.name));
        }
    }
    Ok(out)
}

/// Gluster volume names of the pool.
async fn gluster_volumes(tb: &Testbed) -> Result<BTreeSet<String>> {
    let out = tb.gluster(0, &["volume", "list"]).await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(str::to_owned)
        .collect())
}

/// The bricks of `vols` as `hN/brick_…`.
fn listed_brick_dirs(tb: &Testbed, vols: &[VolumeInfoResponse]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for v in vols {
        for b in &v.bricks {
            let i = host_of(tb, &b.path)?;
            let dir = Path::new(&b.path)
                .parent()
                .and_then(Path::file_name)
                .context("brick path without a brick directory")?;
            out.insert(format!("{}/{}", tb.hosts()[i].name, dir.to_string_lossy()));
        }
    }
    Ok(out)
}

async fn all_volumes(c: &Client) -> Result<Vec<VolumeInfoResponse>> {
    let mut out = Vec::new();
    for id in c.volume_list().await?.volumes {
        out.push(c.volume_info(&id).await?);
    }
    Ok(out)
}

/// What heketi-server lists equals what Gluster and the hosts' disks have.
async fn state_equals_gluster(tb: &Testbed, c: &Client) -> Result<()> {
    let vols = all_volumes(c).await?;
    let listed: BTreeSet<String> = vols.iter().map(|v| v.name.clone()).collect();
    let in_gluster = gluster_volumes(tb).await?;
    ensure!(
        listed == in_gluster,
        "heketi-server lists {listed:?}, Gluster has {in_gluster:?}"
    );
    let bricks = listed_brick_dirs(tb, &vols)?;
    let on_disks = all_brick_dirs(tb)?;
    ensure!(
        bricks == on_disks,
        "bricks listed {bricks:?}, on the hosts' disks {on_disks:?}"
    );
    Ok(())
}

/// Waits until `check` passes (or fails with its last error after [`STEP`]).
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let t = Instant::now();
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if t.elapsed() > STEP => return Err(e.context(format!("{what}: gave up"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

// =============================================================================== trials

async fn bricks_live_only_on_their_own_host_with_the_gid(tb: Arc<Testbed>) -> Result<()> {
    let c = tb.heketi_client()?;
    let vol = c.volume_create(&replica3("ssh_own_host", 2301)).await?;
    ensure!(vol.bricks.len() == 3, "{vol:?}");
    let mut hosts = BTreeSet::new();
    for b in &vol.bricks {
        let i = host_of(&tb, &b.path)?;
        hosts.insert(i);
        // On its host: a directory owned by the volume's gid, setgid and group-writable.
        let stat = tb.on_host(i, &["stat", "-c", "%g %a", &b.path]).await?;
        ensure!(
            stat.trim() == "2301 2775",
            "brick {} on {}: {stat}",
            b.path,
            tb.hosts()[i].name
        );
        // Seen from outside the hosts (where heketi-server runs), the path is not there.
        ensure!(
            !Path::new(&b.path).exists(),
            "brick {} is visible outside its host",
            b.path
        );
        // No other host has it at that path.
        for j in (0..tb.hosts().len()).filter(|j| *j != i) {
            let other = tb
                .on_host(
                    j,
                    &["ls", "-A", &tb.hosts()[i].brick_root.display().to_string()],
                )
                .await?;
            ensure!(
                other.trim().is_empty(),
                "host {} sees {}'s device: {other}",
                tb.hosts()[j].name,
                tb.hosts()[i].name
            );
        }
    }
    ensure!(hosts.len() == 3, "bricks on hosts {hosts:?}");
    // The files written through Gluster land on every host's own disk.
    let mnt = tb.scratch_dir("ssh-own-host")?;
    tb.mount_volume(&vol.name, &mnt).await?;
    tokio::fs::write(mnt.join("f.txt"), b"on three disks").await?;
    tb.unmount(&mnt).await?;
    for b in &vol.bricks {
        let i = host_of(&tb, &b.path)?;
        let text = tb
            .on_host(i, &["cat", &format!("{}/f.txt", b.path)])
            .await?;
        ensure!(text == "on three disks", "{}: {text:?}", b.path);
    }
    c.volume_delete(&vol.id).await?;
    Ok(())
}

async fn delete_leaves_no_brick_directory_on_any_host(tb: Arc<Testbed>) -> Result<()> {
    let c = tb.heketi_client()?;
    let before = all_brick_dirs(&tb)?;
    let vol = c.volume_create(&replica3("ssh_delete", 0)).await?;
    let made: BTreeSet<String> = all_brick_dirs(&tb)?.difference(&before).cloned().collect();
    ensure!(made.len() == 3, "new brick directories: {made:?}");
    ensure!(made == listed_brick_dirs(&tb, std::slice::from_ref(&vol))?);
    c.volume_delete(&vol.id).await?;
    let after = all_brick_dirs(&tb)?;
    ensure!(
        after == before,
        "left behind on the hosts: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    ensure!(!gluster_volumes(&tb).await?.contains(&vol.name));
    Ok(())
}

async fn gluster_cli_moves_to_another_node_when_one_is_unreachable(tb: Arc<Testbed>) -> Result<()> {
    let c = tb.heketi_client()?;
    let vol = c.volume_create(&replica3("ssh_failover", 0)).await?;
    // Expand runs only the gluster CLI. With h2 and h3 unreachable it must run on h1, which so
    // becomes the node the server tries first...
    tb.stop_sshd(1).await?;
    tb.stop_sshd(2).await?;
    let on_h1 = c
        .volume_expand(&vol.id, &VolumeExpandRequest { expand_size: 1 })
        .await;
    tb.start_sshd(1).await?;
    tb.start_sshd(2).await?;
    on_h1.context("expand with only h1 reachable")?;
    // ...then with h1 unreachable it moves to h2 or h3.
    tb.stop_sshd(0).await?;
    let expanded = c
        .volume_expand(&vol.id, &VolumeExpandRequest { expand_size: 1 })
        .await;
    tb.start_sshd(0).await?;
    let expanded = expanded.context("expand with h1's sshd stopped")?;
    ensure!(expanded.size == 3, "{expanded:?}");
    // Gluster has the new quota: a mount shows 3 GiB.
    let mnt = tb.scratch_dir("ssh-failover")?;
    tb.mount_volume(&vol.name, &mnt).await?;
    let st = nix::sys::statvfs::statvfs(&mnt);
    tb.unmount(&mnt).await?;
    let st = st?;
    let bytes = st.blocks() * st.fragment_size();
    ensure!(bytes == 3 << 30, "the mount shows {bytes} bytes");
    let log = std::fs::read_to_string(tb.state_dir().join("logs/heketi-server.log"))?;
    let h1 = tb.hosts()[0].address.to_string();
    ensure!(
        log.lines()
            .any(|l| l.contains("trying another") && l.contains(&h1)),
        "the server log does not show it leaving {h1}"
    );
    c.volume_delete(&vol.id).await?;
    Ok(())
}

async fn stopped_sshd_fails_naming_the_host_leaves_nothing_and_recovers(
    tb: Arc<Testbed>,
) -> Result<()> {
    let c = tb.heketi_client()?;
    let before = all_brick_dirs(&tb)?;
    let h2 = tb.hosts()[1].address.to_string();
    tb.stop_sshd(1).await?;
    let failed = c.volume_create(&replica3("ssh_sshd_down", 0)).await;
    let listed_while_down = c.volume_list().await;
    let dirs_while_down = all_brick_dirs(&tb);
    tb.start_sshd(1).await?;
    let err = match failed {
        Ok(v) => bail!("create succeeded with h2's sshd stopped: {v:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains(&h2) && err.contains("ssh"),
        "the error does not name the host and ssh: {err}"
    );
    for id in listed_while_down?.volumes {
        let v = c.volume_info(&id).await?;
        ensure!(
            v.name != "ssh_sshd_down",
            "the failed create is listed: {v:?}"
        );
    }
    ensure!(
        dirs_while_down? == before,
        "the failed create left brick directories"
    );
    ensure!(!gluster_volumes(&tb).await?.contains("ssh_sshd_down"));
    // Back: a create succeeds (under another name: the failed one's name stays reserved until
    // its rollback is confirmed on every host), and the state matches Gluster again.
    let vol = c.volume_create(&replica3("ssh_sshd_back", 0)).await?;
    eventually("state after recovery", || state_equals_gluster(&tb, &c)).await?;
    c.volume_delete(&vol.id).await?;
    eventually("state after delete", || state_equals_gluster(&tb, &c)).await?;
    Ok(())
}

async fn wrong_host_key_is_refused_with_a_clear_error(tb: Arc<Testbed>) -> Result<()> {
    let c = tb.heketi_client()?;
    let ssh = tb.ssh_client();
    let good = std::fs::read_to_string(&ssh.known_hosts)?;
    // A key no host has, listed for h3.
    let scratch = tb.scratch_dir("ssh-wrong-key")?;
    let other = scratch.join("other");
    gluster_csi_testbed::cmd::run(
        &[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &other.display().to_string(),
        ],
        Duration::from_secs(20),
    )
    .await?;
    let other_pub = std::fs::read_to_string(other.with_extension("pub"))?;
    let h3 = tb.hosts()[2].address.to_string();
    let mut words = other_pub.split_whitespace();
    let forged = format!(
        "{h3} {} {}\n",
        words.next().context("key type")?,
        words.next().context("key")?
    );
    let bad: String = good
        .lines()
        .filter(|l| !l.starts_with(&format!("{h3} ")))
        .map(|l| format!("{l}\n"))
        .chain(std::iter::once(forged))
        .collect();
    std::fs::write(&ssh.known_hosts, bad)?;
    let before = all_brick_dirs(&tb)?;
    let failed = c.volume_create(&replica3("ssh_wrong_key", 0)).await;
    let dirs = all_brick_dirs(&tb);
    std::fs::write(&ssh.known_hosts, &good)?;
    let err = match failed {
        Ok(v) => bail!("create succeeded with a wrong host key for h3: {v:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains(&h3) && err.to_lowercase().contains("host key"),
        "the error does not name the host and the host key: {err}"
    );
    ensure!(
        dirs? == before,
        "bricks were made although a host key was wrong"
    );
    // With the right keys again, a create works.
    let vol = c.volume_create(&replica3("ssh_right_key", 0)).await?;
    c.volume_delete(&vol.id).await?;
    eventually("state after delete", || state_equals_gluster(&tb, &c)).await
}

async fn kill9_during_ssh_create_and_delete_then_state_equals_gluster(
    tb: Arc<Testbed>,
) -> Result<()> {
    let c = tb.heketi_client()?;
    let before = all_brick_dirs(&tb)?;
    // Create: killed once its first brick directory exists on a host.
    let creating = {
        let c = c.clone();
        tokio::spawn(async move { c.volume_create(&replica3("ssh_kill_create", 0)).await })
    };
    let t = Instant::now();
    while all_brick_dirs(&tb)? == before {
        ensure!(t.elapsed() < STEP, "no brick directory appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tb.kill_heketi().await?;
    creating.abort();
    tb.start_heketi().await?;
    eventually("state after a kill during create", || {
        state_equals_gluster(&tb, &c)
    })
    .await?;

    // Delete: killed once the first brick directory of the volume is gone.
    let vol = c.volume_create(&replica3("ssh_kill_delete", 0)).await?;
    let mine = listed_brick_dirs(&tb, std::slice::from_ref(&vol))?;
    let deleting = {
        let (c, id) = (c.clone(), vol.id.clone());
        tokio::spawn(async move { c.volume_delete(&id).await })
    };
    let t = Instant::now();
    while all_brick_dirs(&tb)?.is_superset(&mine) {
        ensure!(t.elapsed() < STEP, "no brick directory went away");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tb.kill_heketi().await?;
    deleting.abort();
    tb.start_heketi().await?;
    eventually("state after a kill during delete", || {
        state_equals_gluster(&tb, &c)
    })
    .await?;
    // Whatever survived is deleted normally.
    for v in all_volumes(&c).await? {
        c.volume_delete(&v.id).await?;
    }
    state_equals_gluster(&tb, &c).await
}

async fn unprivileged_server_creates_and_deletes_over_ssh(tb: Arc<Testbed>) -> Result<()> {
    // A second heketi-server as `nobody`, with its own state, key copy and device directories.
    const NOBODY: u32 = 65534;
    let dir = tb.scratch_dir("ssh-unprivileged")?;
    let ssh = tb.ssh_client();
    let key = dir.join("id");
    std::fs::copy(&ssh.key, &key)?;
    let known_hosts = dir.join("known_hosts");
    std::fs::copy(&ssh.known_hosts, &known_hosts)?;
    let admin = dir.join("admin.key");
    std::fs::write(&admin, "unprivileged-admin-secret")?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    for p in [&dir, &key, &known_hosts, &admin, &state] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY))?;
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("server.log"))?;
    std::os::unix::fs::chown(dir.join("server.log"), Some(NOBODY), Some(NOBODY))?;
    let bin = bin_path("heketi-server")?;
    let mut child = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&bin)
        .args([
            format!("--listen=127.0.0.1:{port}"),
            format!("--state-dir={}", state.display()),
            format!("--admin-key-file={}", admin.display()),
            "--executor=ssh".into(),
            format!("--ssh-keyfile={}", key.display()),
            format!("--ssh-known-hosts={}", known_hosts.display()),
        ])
        .env("HOME", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start heketi-server as nobody (setpriv, util-linux)")?;
    let pid = child.id();
    Journal::open(tb.state_dir())?.record(&Entry::Process {
        role: "heketi-server-unprivileged".into(),
        pid,
        start: procs::start_time(pid).unwrap_or(0),
        pid_namespace: false,
    })?;
    let result = async {
        let c = Client::builder(&url)
            .user("admin")
            .key(SecretString::from("unprivileged-admin-secret".to_owned()))
            .operation_deadline(STEP)
            .build()?;
        eventually("the unprivileged server answers", || async {
            c.hello().await.map(drop).map_err(anyhow::Error::from)
        })
        .await?;
        // Read once it answers: right after the spawn the process may still be setpriv,
        // root until it switches to nobody and runs the server.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        ensure!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")),
            "the server does not run as nobody"
        );
        let cluster = c
            .cluster_create(&ClusterFlags {
                block: false,
                file: true,
            })
            .await?;
        for (i, h) in tb.hosts().iter().enumerate() {
            let device = h.brick_root.join("unprivileged");
            std::fs::create_dir_all(tb.on_disk(i, &device))?;
            let addr = h.address.to_string();
            let node = c
                .node_add(&NodeAddRequest {
                    zone: i64::try_from(i + 1)?,
                    hostnames: HostAddresses {
                        manage: vec![addr.clone()],
                        storage: vec![addr],
                    },
                    cluster_id: cluster.id.clone(),
                    ..Default::default()
                })
                .await?;
            c.device_add(&DeviceAddRequest {
                name: device.display().to_string(),
                node_id: node.id,
                ..Default::default()
            })
            .await?;
        }
        let vol = c.volume_create(&replica3("ssh_unprivileged", 2302)).await?;
        for b in &vol.bricks {
            let i = host_of(&tb, &b.path)?;
            let meta = std::fs::metadata(tb.on_disk(i, Path::new(&b.path)))?;
            ensure!(
                meta.gid() == 2302,
                "brick {} has gid {}",
                b.path,
                meta.gid()
            );
        }
        c.volume_delete(&vol.id).await?;
        for (i, h) in tb.hosts().iter().enumerate() {
            let left = brick_dirs_on(&tb, i, &h.brick_root.join("unprivileged"))?;
            ensure!(left.is_empty(), "left on {}: {left:?}", h.name);
        }
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.with_context(|| {
        format!(
            "server log:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        )
    })
}
