//! The testbed itself: a real trusted pool in network namespaces, a hand-made replica-3 volume
//! mounted from the root namespace, two testbeds side by side, and a `down` that leaves nothing.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use std::process::Output;
use std::time::Duration;

use gluster_csi_testbed::gluster;
use gluster_csi_testbed::journal::{self, Entry};
use gluster_csi_testbed::layout::Names;
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, cmd, harness, mounts, net, procs};

fn main() {
    let opts = TestbedOptions::gluster_only(harness::state_dir_for("testbed"), 3);
    harness::run(opts, |tb| {
        vec![
            harness::trial(
                "pool_has_every_host_connected",
                &tb,
                pool_has_every_host_connected,
            ),
            harness::trial(
                "replica_3_volume_mounts_and_keeps_a_file_on_every_brick",
                &tb,
                replica_3_volume_mounts_and_keeps_a_file_on_every_brick,
            ),
            harness::trial(
                "quota_volume_df_shows_the_limit_writes_work_and_every_host_runs_its_own_daemons",
                &tb,
                quota_volume_with_per_host_daemons,
            ),
            harness::trial(
                "second_testbed_does_not_collide_and_down_twice_leaves_nothing",
                &tb,
                second_testbed_does_not_collide_and_down_twice_leaves_nothing,
            ),
            harness::trial(
                "cli_up_over_leftovers_status_and_down_twice",
                &tb,
                cli_up_over_leftovers_status_and_down_twice,
            ),
            harness::trial(
                "failed_up_removes_what_it_made",
                &tb,
                failed_up_removes_what_it_made,
            ),
            harness::trial(
                "down_of_a_state_dir_that_never_held_a_testbed_is_fine",
                &tb,
                down_of_a_state_dir_that_never_held_a_testbed_is_fine,
            ),
        ]
    })
}

/// Lines of `gluster pool list` that show a connected member.
fn connected_members(pool_list: &str) -> usize {
    pool_list
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().last() == Some("Connected"))
        .count()
}

async fn pool_has_every_host_connected(tb: Arc<Testbed>) -> Result<()> {
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(
        connected_members(&pool) == 3,
        "pool list from h1 should show 3 connected members:\n{pool}"
    );
    for h in tb.hosts() {
        let out = tb.gluster(h.index, &["pool", "list"]).await?;
        ensure!(
            !out.contains("Disconnected") && connected_members(&out) == 3,
            "{}: {out}",
            h.name
        );
        // Every other host is listed by address.
        for other in tb.hosts().iter().filter(|o| o.index != h.index) {
            ensure!(
                out.contains(&other.address.to_string()),
                "{} does not list {}:\n{out}",
                h.name,
                other.address
            );
        }
    }
    Ok(())
}

async fn replica_3_volume_mounts_and_keeps_a_file_on_every_brick(tb: Arc<Testbed>) -> Result<()> {
    let bricks: Vec<String> = tb
        .hosts()
        .iter()
        .map(|h| format!("{}:{}", h.address, h.brick_root.join("r3").display()))
        .collect();
    let mut args = vec!["volume", "create", "r3", "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    tb.gluster(0, &args).await?;
    tb.gluster(0, &["volume", "start", "r3"]).await?;

    let info = tb.gluster(1, &["volume", "info", "r3"]).await?;
    for b in &bricks {
        ensure!(
            info.contains(b.as_str()),
            "volume info lacks brick {b}:\n{info}"
        );
    }
    ensure!(info.contains("Number of Bricks: 1 x 3 = 3"), "{info}");

    let mnt = tb.scratch_dir("r3")?;
    tb.mount_volume("r3", &mnt).await?;
    ensure!(
        mounts::current()
            .iter()
            .any(|m| m.path == mnt && m.fstype == "fuse.glusterfs"),
        "{} is not a glusterfs mount",
        mnt.display()
    );
    let content = format!(
        "written through {} by pid {}\n",
        mnt.display(),
        std::process::id()
    );
    tokio::fs::write(mnt.join("hello.txt"), &content).await?;
    let back = tokio::fs::read_to_string(mnt.join("hello.txt")).await?;
    ensure!(back == content, "read back {back:?}, wrote {content:?}");
    tb.unmount(&mnt).await?;
    ensure!(!mounts::is_mounted(&mnt), "still mounted");

    for (i, h) in tb.hosts().iter().enumerate() {
        let on_brick = tb.on_disk(i, &h.brick_root.join("r3").join("hello.txt"));
        let text = std::fs::read_to_string(&on_brick)
            .with_context(|| format!("brick of {} lacks the file", h.name))?;
        ensure!(text == content, "{}: {text:?}", on_brick.display());
    }
    Ok(())
}

/// Runs blocking file work with a limit (a broken FUSE mount can hang it). Not a timing check.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(90), tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r.with_context(|| what.to_owned()),
        Ok(Err(e)) => anyhow::bail!("{what}: {e}"),
        Err(_) => anyhow::bail!("{what}: no answer within 90 s"),
    }
}

/// Hosts listed as online for `daemon` ("Self-heal Daemon", "Quota Daemon") in `gluster volume
/// status` output: `localhost` or an address.
fn daemons_online(status: &str, daemon: &str) -> Vec<String> {
    let prefix = format!("{daemon} on ");
    status
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // host, TCP port, RDMA port, Online, Pid
            (fields.get(3) == Some(&"Y")).then(|| fields[0].to_owned())
        })
        .collect()
}

/// Quota needs quotad on every host, and quotad (like the self-heal daemon) keeps its socket at
/// the path compiled into Gluster, /var/run/gluster: each host has its own there, so writes to
/// a quota-enabled volume work and the machine's /var/run/gluster is left alone.
async fn quota_volume_with_per_host_daemons(tb: Arc<Testbed>) -> Result<()> {
    let vol = format!("tbquota{}", std::process::id());
    let bricks: Vec<String> = tb
        .hosts()
        .iter()
        .map(|h| format!("{}:{}", h.address, h.brick_root.join(&vol).display()))
        .collect();
    let mut args = vec!["volume", "create", vol.as_str(), "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    tb.gluster(0, &args).await?;
    tb.gluster(0, &["volume", "start", &vol]).await?;
    tb.gluster(0, &["volume", "quota", &vol, "enable"]).await?;
    tb.gluster(0, &["volume", "quota", &vol, "limit-usage", "/", "1GB"])
        .await?;
    tb.gluster(
        0,
        &["volume", "set", &vol, "features.quota-deem-statfs", "on"],
    )
    .await?;

    // Every host runs its own self-heal and quota daemon, with its socket in its own directory.
    let status = tb.gluster(0, &["volume", "status", &vol]).await?;
    let mut want: Vec<String> = tb.hosts()[1..]
        .iter()
        .map(|h| h.address.to_string())
        .collect();
    want.push("localhost".into());
    want.sort();
    for daemon in ["Self-heal Daemon", "Quota Daemon"] {
        let mut online = daemons_online(&status, daemon);
        online.sort();
        ensure!(online == want, "{daemon} online on {online:?}:\n{status}");
    }
    for h in tb.hosts() {
        let socket = gluster::var_run_dir(h).join("quotad.socket");
        ensure!(
            socket.exists(),
            "{} has no quotad socket of its own ({})",
            h.name,
            socket.display()
        );
    }
    let machine = Path::new("/run/gluster").join(format!("{vol}_quota_limit.pid"));
    ensure!(
        !machine.exists(),
        "a glusterd wrote {} into the machine's /run/gluster",
        machine.display()
    );

    // Mounted from the root namespace, df shows the limit and writes go through.
    let mnt = tb.scratch_dir(&vol)?;
    tb.mount_volume(&vol, &mnt).await?;
    let outcome: Result<()> = async {
        let gib: u64 = 1 << 30;
        let mut size = 0;
        for _ in 0..100 {
            let m = mnt.clone();
            let st = blocking("statvfs", move || {
                nix::sys::statvfs::statvfs(&m).map_err(std::io::Error::from)
            })
            .await?;
            size = st.blocks() * st.fragment_size();
            if size == gib {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(size == gib, "df shows {size} bytes, not the 1 GiB quota");
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let file = mnt.join("data");
        let (f, d) = (file.clone(), data.clone());
        blocking("write 4 MiB to the quota volume", move || {
            use std::io::Write;
            let mut out = std::fs::File::create(&f)?;
            out.write_all(&d)?;
            out.sync_all()
        })
        .await?;
        let back = blocking("read it back", move || std::fs::read(&file)).await?;
        ensure!(back == data, "read back {} bytes that differ", back.len());
        Ok(())
    }
    .await;
    tb.unmount(&mnt).await?;
    outcome?;
    tb.gluster(0, &["volume", "stop", &vol]).await?;
    tb.gluster(0, &["volume", "delete", &vol]).await?;
    Ok(())
}

async fn second_testbed_does_not_collide_and_down_twice_leaves_nothing(
    tb: Arc<Testbed>,
) -> Result<()> {
    let dir = harness::state_dir_for("testbed-second");
    let second = Testbed::up(TestbedOptions::gluster_only(&dir, 2)).await?;

    let first_names: Vec<&str> = tb.hosts().iter().map(|h| h.netns.as_str()).collect();
    let first_subnet = tb.bridge_address().octets()[..3].to_vec();
    for h in second.hosts() {
        ensure!(
            !first_names.contains(&h.netns.as_str()),
            "netns {} reused",
            h.netns
        );
        ensure!(
            h.address.octets()[..3] != first_subnet[..],
            "second testbed shares the subnet of the first: {}",
            h.address
        );
        ensure!(!h.brick_root.starts_with(tb.state_dir()));
    }
    let pool = second.gluster(0, &["pool", "list"]).await?;
    ensure!(connected_members(&pool) == 2, "second pool:\n{pool}");
    for h in tb.hosts() {
        ensure!(
            !pool.contains(&h.address.to_string()),
            "second pool knows a host of the first:\n{pool}"
        );
    }

    // What the second testbed made, to check afterwards.
    let names = Names::new(&dir)?;
    let namespaces: Vec<String> = second.hosts().iter().map(|h| h.netns.clone()).collect();
    let mut pids = Vec::new();
    for ns in &namespaces {
        pids.extend(net::namespace_pids(ns).await);
    }
    ensure!(
        !pids.is_empty(),
        "no glusterd found in the second testbed's namespaces"
    );
    let mnt = second.scratch_dir("probe")?;
    let volume_dir = second.brick_root(0).join("v");
    let brick = format!("{}:{}", second.hosts()[0].address, volume_dir.display());
    second
        .gluster(0, &["volume", "create", "v", &brick, "force"])
        .await?;
    second.gluster(0, &["volume", "start", "v"]).await?;
    second.mount_volume("v", &mnt).await?;
    ensure!(mounts::is_mounted(&mnt));

    Testbed::down(&dir).await.context("first down")?;
    Testbed::down(&dir).await.context("second down")?;
    second
        .teardown()
        .await
        .context("teardown after two downs")?;

    let left_ns: Vec<String> = net::namespaces()
        .await?
        .into_iter()
        .filter(|n| n.starts_with(&names.netns_prefix()))
        .collect();
    ensure!(left_ns.is_empty(), "namespaces left: {left_ns:?}");
    let left_links: Vec<String> = net::links()
        .await?
        .into_iter()
        .filter(|l| names.owns_link(l))
        .collect();
    ensure!(left_links.is_empty(), "links left: {left_links:?}");
    let alive: Vec<u32> = pids.iter().copied().filter(|p| procs::alive(*p)).collect();
    ensure!(alive.is_empty(), "processes left: {alive:?}");
    ensure!(
        procs::gluster_processes_under(&names.state_dir).is_empty(),
        "gluster processes still serve paths of the second testbed"
    );
    ensure!(mounts::under(&names.state_dir).is_empty(), "mounts left");
    ensure!(
        !names.state_dir.exists(),
        "{} still exists",
        names.state_dir.display()
    );
    for ns in &namespaces {
        ensure!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left"
        );
    }

    // The first testbed did not notice.
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(
        connected_members(&pool) == 3,
        "first pool after the second's down:\n{pool}"
    );
    Ok(())
}

async fn down_of_a_state_dir_that_never_held_a_testbed_is_fine(_tb: Arc<Testbed>) -> Result<()> {
    let dir = harness::state_dir_for("testbed-never");
    ensure!(!dir.exists());
    Testbed::down(&dir).await?;
    ensure!(!dir.exists());

    // A directory that is not a testbed's is left alone.
    let foreign = tempfile::tempdir()?;
    std::fs::write(foreign.path().join("keep"), "data")?;
    ensure!(Testbed::down(foreign.path()).await.is_err());
    ensure!(
        foreign.path().join("keep").exists(),
        "a foreign directory was emptied"
    );
    Ok(())
}

/// Checks that nothing of the testbed at `dir` is left: namespaces, links, `/etc/netns` entries,
/// mounts, the directory, and the processes `pids`.
async fn nothing_left(dir: &Path, pids: &[u32]) -> Result<()> {
    let names = Names::new(dir)?;
    let ns: Vec<String> = net::namespaces()
        .await?
        .into_iter()
        .filter(|n| n.starts_with(&names.netns_prefix()))
        .collect();
    ensure!(ns.is_empty(), "namespaces left: {ns:?}");
    let links: Vec<String> = net::links()
        .await?
        .into_iter()
        .filter(|l| names.owns_link(l))
        .collect();
    ensure!(links.is_empty(), "links left: {links:?}");
    let etc: Vec<String> = net::etc_netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&names.netns_prefix()))
        .collect();
    ensure!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    let alive: Vec<u32> = pids.iter().copied().filter(|p| procs::alive(*p)).collect();
    ensure!(alive.is_empty(), "processes left: {alive:?}");
    ensure!(procs::gluster_processes_under(&names.state_dir).is_empty());
    ensure!(mounts::under(&names.state_dir).is_empty(), "mounts left");
    ensure!(
        !names.state_dir.exists(),
        "{} left",
        names.state_dir.display()
    );
    Ok(())
}

/// Journaled pids of the testbed at `dir`.
fn journaled_pids(dir: &Path) -> Vec<u32> {
    journal::read(dir)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Process { pid, .. } => Some(pid),
            _ => None,
        })
        .collect()
}

fn journaled_glusterd(dir: &Path) -> Vec<u32> {
    journal::read(dir)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Process { pid, role, .. } if role.starts_with("glusterd-") => Some(pid),
            _ => None,
        })
        .collect()
}

async fn cli(args: &[&str], envs: &[(&str, &Path)]) -> Result<Output> {
    let bin = bin_path("gluster-csi-testbed")?;
    let mut c = tokio::process::Command::new(bin);
    c.args(args).kill_on_drop(true);
    for (k, v) in envs {
        c.env(k, v);
    }
    Ok(tokio::time::timeout(Duration::from_secs(300), c.output()).await??)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn cli_up_over_leftovers_status_and_down_twice(_tb: Arc<Testbed>) -> Result<()> {
    let dir = harness::state_dir_for("testbed-cli");
    let d = dir.display().to_string();
    let up = [
        "up",
        "--state-dir",
        &d,
        "--hosts",
        "1",
        "--no-heketi",
        "--no-node",
    ];
    let out = cli(&up, &[]).await?;
    ensure!(out.status.success(), "up: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(stdout.contains("GLUSTER_HOSTS=198.1"), "{stdout}");
    ensure!(dir.join("testbed.env").exists());
    // One host: its namespace holder, its sshd and its glusterd.
    let all = journaled_pids(&dir);
    ensure!(
        all.len() == 3 && all.iter().all(|p| procs::alive(*p)),
        "{all:?}"
    );
    let first = journaled_glusterd(&dir);
    ensure!(first.len() == 1 && procs::alive(first[0]), "{first:?}");

    // Up again over the running one: it is removed first, then made anew.
    let out = cli(&up, &[]).await?;
    ensure!(out.status.success(), "second up: {}", text(&out));
    ensure!(
        !procs::alive(first[0]),
        "the first glusterd survived the second up"
    );
    let second = journaled_glusterd(&dir);
    ensure!(second.len() == 1 && procs::alive(second[0]), "{second:?}");

    let out = cli(&["status", "--state-dir", &d], &[]).await?;
    let status = text(&out);
    ensure!(out.status.success(), "status: {status}");
    ensure!(
        status.contains(&format!("glusterd-h1 pid {}: running", second[0])),
        "{status}"
    );

    for round in ["first", "second"] {
        let out = cli(&["down", "--state-dir", &d], &[]).await?;
        ensure!(out.status.success(), "{round} down: {}", text(&out));
    }
    nothing_left(&dir, &second).await?;
    let out = cli(&["status", "--state-dir", &d], &[]).await?;
    ensure!(text(&out).contains("no testbed"), "{}", text(&out));
    Ok(())
}

async fn failed_up_removes_what_it_made(_tb: Arc<Testbed>) -> Result<()> {
    // A heketi-server that exits at once makes `up` fail after the hosts are up.
    let bins = tempfile::tempdir()?;
    let false_bin = cmd::which("false").context("no `false`")?;
    std::os::unix::fs::symlink(&false_bin, bins.path().join("heketi-server"))?;
    let dir = harness::state_dir_for("testbed-fail");
    let d = dir.display().to_string();
    let args = [
        "up",
        "--state-dir",
        &d,
        "--hosts",
        "2",
        "--no-controller",
        "--no-node",
    ];
    let out = cli(&args, &[("GLUSTER_CSI_BIN_DIR", bins.path())]).await?;
    ensure!(
        !out.status.success(),
        "up with a broken heketi-server succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("heketi-server exited"), "{err}");
    ensure!(
        err.contains("glusterd answering on every host"),
        "the hosts never came up: {err}"
    );
    nothing_left(&dir, &[]).await?;
    // And down after a failed up is fine.
    let out = cli(&["down", "--state-dir", &d], &[]).await?;
    ensure!(out.status.success(), "down after failed up: {}", text(&out));
    Ok(())
}
