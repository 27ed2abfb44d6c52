//! Data path: sequential write and read throughput and small-file creates through a published
//! target against a raw mount of the same volume with default options.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};
use gluster_csi_testbed::calls;

/// Limit on one I/O round (a dead mount must not hang the benchmark).
const IO_STEP: Duration = Duration::from_secs(900);
/// Block size of the sequential passes.
const BLOCK: usize = 1 << 20;
/// Size of each small file.
const SMALL: usize = 4096;

/// Runs blocking I/O under [`IO_STEP`].
async fn io<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let what = what.to_owned();
    calls::bounded(&what.clone(), IO_STEP, async move {
        tokio::task::spawn_blocking(f)
            .await?
            .with_context(|| what.clone())
    })
    .await
}

/// Writes `mib` MiB to `path` in 1 MiB blocks and fsyncs; returns MiB/s including the fsync.
async fn write_seq(path: PathBuf, mib: usize) -> Result<f64> {
    io("sequential write", move || {
        // Not all zeros, so nothing on the way can take a shortcut.
        let block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..mib {
            f.write_all(&block)?;
        }
        f.sync_all()?;
        drop(f);
        Ok(mib as f64 / t.elapsed().as_secs_f64())
    })
    .await
}

/// Reads `path` to its end in 1 MiB reads; returns MiB/s.
async fn read_seq(path: PathBuf) -> Result<f64> {
    io("sequential read", move || {
        let t = Instant::now();
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; BLOCK];
        let mut total = 0usize;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64())
    })
    .await
}

/// Files created in one turn of the interleaved small-file pass.
const CHUNK: usize = 50;

/// Creates `n` files of 4 KiB in a new directory under each of `roots`, taking turns by
/// [`CHUNK`] files (order mirrored every other turn), so that a load burst of other processes
/// hits every mount alike. Returns, per root, files/s and CPU seconds of its FUSE client per
/// file.
async fn small_files(
    roots: Vec<(PathBuf, Option<u32>)>,
    tag: String,
    n: usize,
) -> Result<Vec<(f64, f64)>> {
    io("small-file creates", move || {
        let data = vec![42u8; SMALL];
        let k = roots.len();
        // Distinct names: the published target and the staging mount are one directory.
        let dirs: Vec<PathBuf> = roots
            .iter()
            .enumerate()
            .map(|(i, (r, _))| r.join(format!("small-{tag}-{i}")))
            .collect();
        for d in &dirs {
            std::fs::create_dir(d)?;
        }
        let mut spent = vec![Duration::ZERO; k];
        let mut cpu_spent = vec![0.0f64; k];
        let mut made = vec![0usize; k];
        let mut turn = 0usize;
        while made.iter().any(|m| *m < n) {
            let order: Vec<usize> = if turn.is_multiple_of(2) {
                (0..k).collect()
            } else {
                (0..k).rev().collect()
            };
            for i in order {
                let upto = (made[i] + CHUNK).min(n);
                let c0 = cpu(roots[i].1);
                let t = Instant::now();
                for f in made[i]..upto {
                    let mut file = std::fs::File::create(dirs[i].join(format!("f{f:05}")))?;
                    file.write_all(&data)?;
                }
                spent[i] += t.elapsed();
                cpu_spent[i] += cpu(roots[i].1) - c0;
                made[i] = upto;
            }
            turn += 1;
        }
        Ok((0..k)
            .map(|i| (n as f64 / spent[i].as_secs_f64(), cpu_spent[i] / n as f64))
            .collect())
    })
    .await
}

/// Writes back dirty pages and drops the page cache, dentries and inodes, so that the read
/// goes through the FUSE client to the bricks.
async fn drop_caches() -> Result<()> {
    gluster_csi_testbed::cmd::run(&["sync"], Duration::from_secs(300)).await?;
    io("dropping caches", || {
        std::fs::write("/proc/sys/vm/drop_caches", "3")
    })
    .await
}

async fn remove(path: PathBuf) -> Result<()> {
    io("cleaning up", move || {
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
    })
    .await
}

struct Side {
    write: Samples,
    read: Samples,
    files: Samples,
    /// CPU seconds of the FUSE client per MiB written and read back.
    cpu_per_mib: Samples,
    /// CPU seconds of the FUSE client per small file.
    cpu_per_file: Samples,
}

impl Side {
    fn new() -> Self {
        Self {
            write: Samples::new(Unit::MibPerSec),
            read: Samples::new(Unit::MibPerSec),
            files: Samples::new(Unit::PerSec),
            cpu_per_mib: Samples::new(Unit::Seconds),
            cpu_per_file: Samples::new(Unit::Seconds),
        }
    }
}

/// The FUSE client (holding `/dev/fuse`) of `volume` mounted at `mount_point`.
fn client_of(volume: &str, mount_point: &Path) -> Option<u32> {
    let want = mount_point.as_os_str().to_string_lossy().into_owned();
    gluster_csi_testbed::demo::fuse_clients(volume)
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .rfind(|a| !a.is_empty())
                    .is_some_and(|last| String::from_utf8_lossy(last) == want)
            })
        })
}

fn cpu(pid: Option<u32>) -> f64 {
    pid.and_then(super::usage::of)
        .map_or(f64::NAN, |u| u.cpu_secs)
}

/// One round on one side: `root` is where the files go, `client` the FUSE client serving it.
async fn seq_round(
    root: &Path,
    client: Option<u32>,
    tag: &str,
    mib: usize,
    into: &mut Side,
) -> Result<()> {
    let file = root.join(format!("seq-{tag}.bin"));
    let c0 = cpu(client);
    into.write.push(write_seq(file.clone(), mib).await?);
    drop_caches().await?;
    into.read.push(read_seq(file.clone()).await?);
    into.cpu_per_mib.push((cpu(client) - c0) / (2 * mib) as f64);
    remove(file).await
}

/// Picks one figure of a [`Side`].
type Pick = fn(&Side) -> &Samples;

/// The four ways to the volume the data part compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// A raw mount with default options.
    Raw = 0,
    /// A raw mount with the plugin's options.
    RawWithOptions = 1,
    /// The node plugin's published target.
    Csi = 2,
    /// The node plugin's staging mount itself, without the bind mount of a publish.
    Staging = 3,
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let plan = ctx.plan.clone();
    let vol = ctx.bench_volume().await?;
    let (servers, volume) = calls::servers_and_volume(&vol)?;
    let kubelet = ctx.kubelet();
    let staging = calls::staging_path(&kubelet, &vol.volume_id);
    let target = calls::target_path(&kubelet, "pod-data");
    let mut node = calls::node(&ctx.node.endpoint).await?;
    super::node::wait_clients_gone(&volume).await;
    calls::stage(&mut node, &vol, &staging).await?;
    calls::publish(&mut node, &vol, &staging, &target).await?;
    let raw = super::node::raw_data_dir(ctx);
    calls::raw_mount(&servers, &volume, &raw, &[]).await?;
    super::node::check_glusterfs(&raw)?;
    let raw_opts = ctx.dir.join("raw-data-options");
    let opts = super::node::plugin_options(&ctx.dir.join("raw-data-client.log"));
    calls::raw_mount(&servers, &volume, &raw_opts, &opts).await?;
    super::node::check_glusterfs(&raw_opts)?;
    let clients = [
        client_of(&volume, &raw),
        client_of(&volume, &raw_opts),
        client_of(&volume, &staging),
        client_of(&volume, &staging),
    ];

    let mut sides = [Side::new(), Side::new(), Side::new(), Side::new()];
    let mut outcome = Ok(());
    let roots = [&raw, &raw_opts, &target, &staging];
    'rounds: for r in 0..plan.data_rounds {
        let order = if r % 2 == 0 {
            [Via::Raw, Via::RawWithOptions, Via::Staging, Via::Csi]
        } else {
            [Via::Csi, Via::Staging, Via::RawWithOptions, Via::Raw]
        };
        for via in order {
            let i = via as usize;
            let tag = format!("{via:?}-{r}").to_ascii_lowercase();
            let res = seq_round(roots[i], clients[i], &tag, plan.data_mib, &mut sides[i]).await;
            let side = &sides[i];
            let last = |x: &Samples| x.values().last().copied().unwrap_or(f64::NAN);
            eprintln!(
                "bench:   data round {r} {via:?}: {}",
                match &res {
                    Ok(()) => format!(
                        "write {:.1} MiB/s, read {:.1} MiB/s",
                        last(&side.write),
                        last(&side.read),
                    ),
                    Err(e) => format!("failed: {e:#}"),
                }
            );
            if res.is_err() {
                outcome = res;
                break 'rounds;
            }
        }
        let all: Vec<(PathBuf, Option<u32>)> = roots
            .iter()
            .zip(clients)
            .map(|(r, c)| ((*r).clone(), c))
            .collect();
        match small_files(all, format!("r{r}"), plan.files).await {
            Ok(rates) => {
                eprintln!(
                    "bench:   data round {r} small files/s (raw, raw+options, csi, staging): {rates:.1?}"
                );
                for (side, (rate, cpu)) in sides.iter_mut().zip(rates) {
                    side.files.push(rate);
                    side.cpu_per_file.push(cpu);
                }
            }
            Err(e) => {
                outcome = Err(e);
                break 'rounds;
            }
        }
        for (i, root) in roots.iter().enumerate() {
            if let Err(e) = remove(root.join(format!("small-r{r}-{i}"))).await {
                outcome = Err(e);
                break 'rounds;
            }
        }
    }
    let cleanup = async {
        gluster_csi_testbed::mounts::unmount(&raw).await?;
        gluster_csi_testbed::mounts::unmount(&raw_opts).await?;
        calls::unpublish(&mut node, &vol, &target).await?;
        calls::unstage(&mut node, &vol, &staging).await?;
        super::node::wait_clients_gone(&volume).await;
        anyhow::Ok(())
    };
    let cleaned = cleanup.await;
    outcome?;
    cleaned?;
    let [base, with_opts, csi, direct] = sides;

    let mut s = Section::new(
        "Data path",
        "Raw mount, default options",
        format!(
            "The same 2 GiB `replicate:3` volume, staged and published by the node plugin (the \
             target is a bind mount of the staging mount) and at the same time mounted raw \
             twice: with no options but `backup-volfile-servers`, and with the options the \
             plugin adds (`log-file`, `log-level=ERROR`, `auto_unmount`), which tells an \
             effect of the options from one of the plugin; the staging mount is also used \
             directly, without the bind mount of the publish. Per round and mount: {mib} MiB \
             written sequentially in 1 MiB blocks and fsynced (the time includes the fsync); \
             `sync` and `echo 3 > /proc/sys/vm/drop_caches`; the file read back in 1 MiB \
             reads, the order of the four mounts mirrored every other round; then {files} files of \
             4 KiB created (open, write, close) in a new directory on each mount, the mounts \
             taking turns every {CHUNK} files (so that bursts of other load on this shared \
             machine fall on all of them alike). {rounds} round(s). \
             Rates: higher is better. Client CPU is utime+stime of the glusterfs FUSE client \
             serving the mount.",
            mib = plan.data_mib,
            files = plan.files,
            rounds = plan.data_rounds
        ),
    );
    let rows: [(&str, Pick); 3] = [
        ("Sequential write (with fsync)", |x| &x.write),
        ("Sequential read (caches dropped)", |x| &x.read),
        ("Small-file creates (4 KiB)", |x| &x.files),
    ];
    for (name, f) in rows {
        s.rows.push(
            Row::compare(
                name,
                f(&base).summary(),
                f(&csi).summary(),
                Goal::RatioAtLeast(0.95),
            )
            .headline(),
        );
    }
    for (name, f) in rows {
        s.rows.push(Row::compare(
            format!("{name}: raw mount with the plugin's options (in the gluster-csi column)"),
            f(&base).summary(),
            f(&with_opts).summary(),
            Goal::None,
        ));
    }
    for (name, f) in rows {
        s.rows.push(Row::compare(
            format!("{name}: the staging mount itself, no bind mount (in the gluster-csi column)"),
            f(&base).summary(),
            f(&direct).summary(),
            Goal::None,
        ));
    }
    s.rows.push(Row::compare(
        "FUSE client CPU per MiB written and read",
        base.cpu_per_mib.summary(),
        csi.cpu_per_mib.summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "FUSE client CPU per small file",
        base.cpu_per_file.summary(),
        csi.cpu_per_file.summary(),
        Goal::None,
    ));
    Ok(s)
}
