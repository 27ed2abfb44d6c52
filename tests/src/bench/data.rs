//! Data path: sequential write and read throughput and small-file creates through a published
//! target against a raw mount of the same volume with default options.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Ctx;
use super::calls;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};

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

/// Creates `n` files of 4 KiB in a new directory `dir`; returns files/s.
async fn small_files(dir: PathBuf, n: usize) -> Result<f64> {
    io("small-file creates", move || {
        let data = vec![42u8; SMALL];
        let t = Instant::now();
        std::fs::create_dir(&dir)?;
        for k in 0..n {
            let mut f = std::fs::File::create(dir.join(format!("f{k:05}")))?;
            f.write_all(&data)?;
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })
    .await
}

/// Writes back dirty pages and drops the page cache, dentries and inodes, so that the read
/// goes through the FUSE client to the bricks.
async fn drop_caches() -> Result<()> {
    crate::cmd::run(&["sync"], Duration::from_secs(300)).await?;
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
}

impl Side {
    fn new() -> Self {
        Self {
            write: Samples::new(Unit::MibPerSec),
            read: Samples::new(Unit::MibPerSec),
            files: Samples::new(Unit::PerSec),
        }
    }
}

async fn round(root: &Path, tag: &str, mib: usize, files: usize, into: &mut Side) -> Result<()> {
    let file = root.join(format!("seq-{tag}.bin"));
    into.write.push(write_seq(file.clone(), mib).await?);
    drop_caches().await?;
    into.read.push(read_seq(file.clone()).await?);
    remove(file).await?;
    let dir = root.join(format!("small-{tag}"));
    into.files.push(small_files(dir.clone(), files).await?);
    remove(dir).await?;
    Ok(())
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

    let (mut csi, mut base) = (Side::new(), Side::new());
    let mut outcome = Ok(());
    for r in 0..plan.data_rounds {
        let csi_first = r % 2 == 1;
        for is_csi in [csi_first, !csi_first] {
            let res = if is_csi {
                round(
                    &target,
                    &format!("csi-{r}"),
                    plan.data_mib,
                    plan.files,
                    &mut csi,
                )
                .await
            } else {
                round(
                    &raw,
                    &format!("raw-{r}"),
                    plan.data_mib,
                    plan.files,
                    &mut base,
                )
                .await
            };
            eprintln!(
                "bench:   data round {r} {}: {}",
                if is_csi {
                    "published target"
                } else {
                    "raw mount"
                },
                match &res {
                    Ok(()) => "done".to_owned(),
                    Err(e) => format!("failed: {e:#}"),
                }
            );
            if res.is_err() {
                outcome = res;
                break;
            }
        }
        if outcome.is_err() {
            break;
        }
    }
    let cleanup = async {
        crate::mounts::unmount(&raw).await?;
        calls::unpublish(&mut node, &vol, &target).await?;
        calls::unstage(&mut node, &vol, &staging).await?;
        super::node::wait_clients_gone(&volume).await;
        anyhow::Ok(())
    };
    let cleaned = cleanup.await;
    outcome?;
    cleaned?;

    let mut s = Section::new(
        "Data path",
        "Raw mount, default options",
        format!(
            "The same 2 GiB `replicate:3` volume, staged and published by the node plugin (the \
             target is a bind mount of the staging mount) and at the same time mounted raw \
             with `mount -t glusterfs` and no options but `backup-volfile-servers`. Per round \
             and side: {mib} MiB written sequentially in 1 MiB blocks and fsynced (the time \
             includes the fsync); `sync` and `echo 3 > /proc/sys/vm/drop_caches`; the file \
             read back in 1 MiB reads; {files} files of 4 KiB created (open, write, close) in \
             a new directory. {rounds} round(s) per side, ABBA. Rates: higher is better.",
            mib = plan.data_mib,
            files = plan.files,
            rounds = plan.data_rounds
        ),
    );
    s.rows.push(
        Row::compare(
            "Sequential write (with fsync)",
            base.write.summary(),
            csi.write.summary(),
            Goal::RatioAtLeast(0.95),
        )
        .headline(),
    );
    s.rows.push(
        Row::compare(
            "Sequential read (caches dropped)",
            base.read.summary(),
            csi.read.summary(),
            Goal::RatioAtLeast(0.95),
        )
        .headline(),
    );
    s.rows.push(
        Row::compare(
            "Small-file creates (4 KiB)",
            base.files.summary(),
            csi.files.summary(),
            Goal::RatioAtLeast(0.95),
        )
        .headline(),
    );
    Ok(s)
}
