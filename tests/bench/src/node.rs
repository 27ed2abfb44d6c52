//! Node: NodeStageVolume against a raw `mount -t glusterfs` of the same volume, NodePublishVolume
//! against a bare bind mount, and the FUSE clients one staged volume costs against one raw
//! mount per pod (the in-tree plugin's model).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};
use super::usage;
use gluster_csi_testbed::calls::{self, NODE_STEP, timed};
use gluster_csi_testbed::demo;

/// Waits until no glusterfs client of `volume` runs (a client exits shortly after its
/// unmount), so that one measurement does not overlap the end of the previous one.
pub async fn wait_clients_gone(volume: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !demo::client_processes(volume).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare bind mount of `source` on `target` (created), as the floor of a publish.
async fn bind(source: &Path, target: &Path) -> Result<()> {
    let (s, t) = (source.to_path_buf(), target.to_path_buf());
    calls::bounded("bind mount", NODE_STEP, async move {
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&t)?;
            nix::mount::mount(Some(&s), &t, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            anyhow::Ok(())
        })
        .await?
    })
    .await
}

/// A bare unmount of `target`.
async fn umount(target: &Path) -> Result<()> {
    let t = target.to_path_buf();
    calls::bounded("umount", NODE_STEP, async move {
        tokio::task::spawn_blocking(move || {
            nix::mount::umount2(&t, MntFlags::empty())?;
            anyhow::Ok(())
        })
        .await?
    })
    .await
}

/// Writes a small file in each of `dirs` and lists it, so that every client has done some
/// work before its memory is read.
async fn touch_all(dirs: &[PathBuf]) -> Result<()> {
    let dirs = dirs.to_vec();
    calls::bounded("touching the mounts", NODE_STEP, async move {
        tokio::task::spawn_blocking(move || {
            for (k, d) in dirs.iter().enumerate() {
                std::fs::write(d.join(format!("touch-{k}")), vec![7u8; 64 * 1024])?;
                let _ = std::fs::read_dir(d)?.count();
            }
            anyhow::Ok(())
        })
        .await?
    })
    .await
}

/// Client processes of `volume` and the sum of their RSS in MiB; the FUSE servers among them.
fn clients(volume: &str) -> (usize, usize, f64, f64) {
    let all = demo::client_processes(volume);
    let fuse = demo::fuse_clients(volume);
    let rss = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|p| usage::of(*p))
            .map(|u| u.rss_mib())
            .sum()
    };
    (all.len(), fuse.len(), rss(&all), rss(&fuse))
}

/// The three ways of mounting the volume the stage measurement compares.
#[derive(Clone, Copy)]
enum Mount {
    /// NodeStageVolume.
    Csi,
    /// `mount -t glusterfs` with `backup-volfile-servers` only.
    Raw,
    /// `mount -t glusterfs` with the options the plugin passes.
    RawWithOptions,
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let plan = ctx.plan.clone();
    let vol = ctx.bench_volume().await?;
    let (servers, volume) = calls::servers_and_volume(&vol)?;
    let kubelet = ctx.kubelet();
    let staging = calls::staging_path(&kubelet, &vol.volume_id);
    let mut node = calls::node(&ctx.node.endpoint).await?;
    let raw_dir = ctx.dir.join("raw-stage");
    wait_clients_gone(&volume).await;

    // Stage vs raw mount (and a raw mount with the plugin's options, which tells the cost of
    // the options from the cost of the plugin's own work), in mirrored order.
    let (mut stage, mut unstage) = (Samples::new(Unit::Seconds), Samples::new(Unit::Seconds));
    let (mut mount, mut unmount) = (Samples::new(Unit::Seconds), Samples::new(Unit::Seconds));
    let mut mount_opts = Samples::new(Unit::Seconds);
    let mut stage_cpu = 0.0f64;
    let plugin_opts = plugin_options(&ctx.dir.join("raw-stage-client.log"));
    for i in 0..plan.stages {
        let order = if i % 2 == 0 {
            [Mount::Raw, Mount::RawWithOptions, Mount::Csi]
        } else {
            [Mount::Csi, Mount::RawWithOptions, Mount::Raw]
        };
        for how in order {
            match how {
                Mount::Csi => {
                    let c0 = ctx.node.usage()?.cpu_secs;
                    let ((), t) = timed(calls::stage(&mut node, &vol, &staging)).await?;
                    stage_cpu += ctx.node.usage()?.cpu_secs - c0;
                    stage.push_duration(t);
                    let ((), t) = timed(calls::unstage(&mut node, &vol, &staging)).await?;
                    unstage.push_duration(t);
                }
                Mount::Raw => {
                    let ((), t) = timed(calls::raw_mount(&servers, &volume, &raw_dir, &[])).await?;
                    mount.push_duration(t);
                    let ((), t) = timed(gluster_csi_testbed::mounts::unmount(&raw_dir)).await?;
                    unmount.push_duration(t);
                }
                Mount::RawWithOptions => {
                    let ((), t) =
                        timed(calls::raw_mount(&servers, &volume, &raw_dir, &plugin_opts)).await?;
                    mount_opts.push_duration(t);
                    gluster_csi_testbed::mounts::unmount(&raw_dir).await?;
                }
            }
            wait_clients_gone(&volume).await;
        }
    }

    // Publish vs bare bind mount, ABBA by round; FUSE clients after the first round.
    calls::stage(&mut node, &vol, &staging).await?;
    let (mut publish, mut unpublish) = (Samples::new(Unit::Seconds), Samples::new(Unit::Seconds));
    let (mut binds, mut unbinds) = (Samples::new(Unit::Seconds), Samples::new(Unit::Seconds));
    let mut csi_clients = None;
    let mut publish_cpu = 0.0f64;
    for round in 0..plan.publish_rounds {
        let csi_first = round % 2 == 0;
        for csi in [csi_first, !csi_first] {
            if csi {
                let targets: Vec<PathBuf> = (0..plan.publishes)
                    .map(|k| calls::target_path(&kubelet, &format!("pod-{round}-{k}")))
                    .collect();
                let c0 = ctx.node.usage()?.cpu_secs;
                for t in &targets {
                    let ((), d) = timed(calls::publish(&mut node, &vol, &staging, t)).await?;
                    publish.push_duration(d);
                }
                publish_cpu += ctx.node.usage()?.cpu_secs - c0;
                if csi_clients.is_none() {
                    touch_all(&targets).await?;
                    csi_clients = Some(clients(&volume));
                }
                for t in &targets {
                    let ((), d) = timed(calls::unpublish(&mut node, &vol, t)).await?;
                    unpublish.push_duration(d);
                }
            } else {
                let targets: Vec<PathBuf> = (0..plan.publishes)
                    .map(|k| ctx.dir.join(format!("raw-bind/{round}-{k}")))
                    .collect();
                for t in &targets {
                    let ((), d) = timed(bind(&staging, t)).await?;
                    binds.push_duration(d);
                }
                for t in &targets {
                    let ((), d) = timed(umount(t)).await?;
                    unbinds.push_duration(d);
                }
            }
        }
    }
    calls::unstage(&mut node, &vol, &staging).await?;
    wait_clients_gone(&volume).await;

    // One raw mount per pod.
    let raw_targets: Vec<PathBuf> = (0..plan.publishes)
        .map(|k| ctx.dir.join(format!("raw-many/{k}")))
        .collect();
    for t in &raw_targets {
        calls::raw_mount(&servers, &volume, t, &[]).await?;
    }
    touch_all(&raw_targets).await?;
    let raw_clients = clients(&volume);
    for t in &raw_targets {
        gluster_csi_testbed::mounts::unmount(t).await?;
    }
    wait_clients_gone(&volume).await;

    let Some(csi_clients) = csi_clients else {
        bail!("no publish round ran");
    };
    if csi_clients.1 > 0 {
        ctx.notes.fuse_client_rss_mib = Some(csi_clients.3 / csi_clients.1 as f64);
    }

    let mut s = Section::new(
        "Node: stage, publish, FUSE clients",
        "Raw mount / bind mount",
        format!(
            "One 2 GiB `replicate:3` volume made through the controller. NodeStageVolume \
             (`--fuse-launcher direct`, as the DaemonSet runs it: one FUSE mount with \
             `backup-volfile-servers`, a per-volume `log-file`, `log-level=ERROR`, \
             `auto_unmount`, then a mount-table check) against `mount -t glusterfs -o \
             backup-volfile-servers=… h1:/VOL DIR` of the same volume, and a raw mount with the \
             plugin's options added (which separates the cost of the options from the \
             plugin's own work): {stages} of each, in mirrored order, each followed by its \
             unstage/umount and a wait until the client has exited. \
             NodePublishVolume (bind mount of the staging path after validation, a liveness \
             probe of the staging mount and mount-table checks) against a bare `mount --bind` \
             syscall of the same staging path: {rounds} rounds of {pubs} targets per side. \
             Then {pubs} publishes of the one staged volume against {pubs} raw mounts of it \
             (one FUSE client per pod, the in-tree plugin's model); after a 64 KiB write in \
             every target, glusterfs client processes of the volume are counted and their \
             VmRSS summed.",
            stages = plan.stages,
            rounds = plan.publish_rounds,
            pubs = plan.publishes
        ),
    );
    s.rows.push(
        Row::compare(
            "NodeStageVolume vs raw `mount -t glusterfs`",
            mount.summary(),
            stage.summary(),
            Goal::RatioAtMost(1.1),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        "Raw mount with the plugin's options (`log-file`, `log-level=ERROR`, `auto_unmount`) vs raw mount",
        mount.summary(),
        mount_opts.summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "NodeStageVolume vs raw mount with the plugin's options",
        mount_opts.summary(),
        stage.summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "NodeUnstageVolume vs raw `umount`",
        unmount.summary(),
        unstage.summary(),
        Goal::None,
    ));
    s.rows.push(
        Row::compare(
            "NodePublishVolume vs bare bind mount",
            binds.summary(),
            publish.summary(),
            Goal::P99AtMostSecs(0.020),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        "NodeUnpublishVolume vs bare `umount`",
        unbinds.summary(),
        unpublish.summary(),
        Goal::None,
    ));
    let per_call =
        |cpu: f64, n: usize| Samples::from_values(Unit::Seconds, [cpu / n.max(1) as f64]).summary();
    s.rows.push(Row::compare(
        "Node plugin CPU per NodeStageVolume (context: wall time of a raw mount)",
        mount.summary(),
        per_call(stage_cpu, stage.len()),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "Node plugin CPU per NodePublishVolume (context: wall time of a bare bind mount)",
        binds.summary(),
        per_call(publish_cpu, publish.len()),
        Goal::None,
    ));
    let count = |v: usize| Samples::from_values(Unit::Count, [v as f64]).summary();
    let mib = |v: f64| Samples::from_values(Unit::Mib, [v]).summary();
    s.rows.push(
        Row::compare(
            format!("glusterfs client processes, {} pods", plan.publishes),
            count(raw_clients.0),
            count(csi_clients.0),
            Goal::None,
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        format!(
            "… of which FUSE servers (hold /dev/fuse), {} pods",
            plan.publishes
        ),
        count(raw_clients.1),
        count(csi_clients.1),
        Goal::None,
    ));
    s.rows.push(
        Row::compare(
            format!("Total RSS of those processes, {} pods", plan.publishes),
            mib(raw_clients.2),
            mib(csi_clients.2),
            Goal::None,
        )
        .headline(),
    );
    if csi_clients.0 > csi_clients.1 {
        s.notes.push(format!(
            "The node plugin's {} process(es) beyond the FUSE server are `auto_unmount` \
             watchers (a small process that unmounts if the client dies).",
            csi_clients.0 - csi_clients.1
        ));
    }
    Ok(s)
}

/// The options the node plugin adds to a staging mount (besides `backup-volfile-servers`),
/// with `log` as the client log.
pub fn plugin_options(log: &Path) -> Vec<String> {
    vec![
        format!("log-file={}", log.display()),
        "log-level=ERROR".to_owned(),
        "auto_unmount".to_owned(),
    ]
}

/// Where a raw mount for the data part lives.
pub fn raw_data_dir(ctx: &Ctx) -> PathBuf {
    ctx.dir.join("raw-data")
}

/// Checks `dir` is a glusterfs mount.
pub fn check_glusterfs(dir: &Path) -> Result<()> {
    let m = gluster_csi_testbed::mounts::current()
        .into_iter()
        .rfind(|m| m.path == dir)
        .with_context(|| format!("{} is not mounted", dir.display()))?;
    if !m.fstype.contains("glusterfs") {
        bail!("{} holds {} instead of glusterfs", dir.display(), m.fstype);
    }
    Ok(())
}
