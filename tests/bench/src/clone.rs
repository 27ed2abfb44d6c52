//! Clone copy: what a heketi-server clone (`POST /volumes/{id}/clone`) costs against a plain
//! `cp -a` of the same data between two FUSE mounts, measured in the same run.
//!
//! A `replicate:3` source is filled with files of mixed sizes (half the bytes in 32 MiB files,
//! a quarter in 1 MiB files, a quarter in 16 KiB files). Then, taking turns (ABBA): the subject
//! clones it through the testbed's heketi-server (timed from heketi-server's own log, accept to
//! done; its log also gives the copy's and the check's share); the baseline makes an empty
//! `replicate:3` volume with the gluster CLI (untimed; no quota, as a clone's volume has none
//! while it is filled), mounts both volumes and times `cp -a` from one mount to the other.
//! Caches are dropped before each turn.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use heketi_client::types::{VolumeCloneRequest, VolumeCreateRequest, VolumeDurabilityInfo};

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};
use gluster_csi_testbed::calls;

/// Longest a fill, a copy or a clone may take.
const STEP: Duration = Duration::from_secs(1800);
/// Sizes of the files, each taking its share of the bytes: (bytes per file, share in quarters).
const MIX: [(usize, usize); 3] = [(32 << 20, 2), (1 << 20, 1), (16 << 10, 1)];
/// Files per directory.
const PER_DIR: usize = 256;

/// The files of a source of `mib` MiB: relative path and size.
pub fn layout(mib: usize) -> Vec<(PathBuf, usize)> {
    let total = mib << 20;
    let mut out = Vec::new();
    for (size, quarters) in MIX {
        let n = (total * quarters / 4 / size).max(1);
        for i in 0..n {
            let dir = format!("s{}k/d{}", size >> 10, i / PER_DIR);
            out.push((PathBuf::from(dir).join(format!("f{i:05}")), size));
        }
    }
    out
}

/// Writes the files of [`layout`] under `root`.
async fn fill(root: PathBuf, files: Vec<(PathBuf, usize)>) -> Result<()> {
    calls::bounded("filling the source", STEP, async move {
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for (i, (rel, size)) in files.iter().enumerate() {
                let path = root.join(rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let block: Vec<u8> = (0..(*size).min(1 << 20))
                    .map(|j| ((i + j) % 251) as u8)
                    .collect();
                let mut f = std::fs::File::create(&path)?;
                let mut left = *size;
                while left > 0 {
                    let n = left.min(block.len());
                    f.write_all(&block[..n])?;
                    left -= n;
                }
            }
            Ok(())
        })
        .await?
        .context("filling the source")
    })
    .await
}

async fn drop_caches() -> Result<()> {
    gluster_csi_testbed::cmd::run(&["sync"], Duration::from_secs(300)).await?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches")
}

/// A field `key=value` of a log line, as a number.
fn number(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// The baseline's destination: an empty `replicate:3` volume made with the gluster CLI,
/// started, without quota. Returns the brick directories to remove afterwards.
async fn plain_volume(ctx: &Ctx, name: &str) -> Result<Vec<(usize, PathBuf)>> {
    let mut specs = Vec::new();
    let mut dirs = Vec::new();
    for (i, h) in ctx.tb.hosts().iter().enumerate().take(3) {
        let dir = ctx.tb.brick_root(i).join(name);
        std::fs::create_dir_all(ctx.tb.on_disk(i, &dir))?;
        specs.push(format!("{}:{}", h.address, dir.join("b").display()));
        dirs.push((i, dir));
    }
    let mut args = vec!["volume", "create", name, "replica", "3"];
    args.extend(specs.iter().map(String::as_str));
    args.push("force");
    ctx.tb.gluster(0, &args).await?;
    ctx.tb.gluster(0, &["volume", "start", name]).await?;
    Ok(dirs)
}

async fn remove_plain_volume(ctx: &Ctx, name: &str, dirs: &[(usize, PathBuf)]) -> Result<()> {
    ctx.tb
        .gluster(0, &["volume", "stop", name, "force"])
        .await?;
    ctx.tb.gluster(0, &["volume", "delete", name]).await?;
    for (i, d) in dirs {
        std::fs::remove_dir_all(ctx.tb.on_disk(*i, d))?;
    }
    Ok(())
}

/// One baseline turn: returns the seconds `cp -a` took.
async fn cp_turn(ctx: &Ctx, servers: &[String], src: &str, tag: &str) -> Result<f64> {
    let name = format!("bench-cp-{}-{tag}", ctx.run_id);
    let dirs = plain_volume(ctx, &name).await?;
    let from = ctx.dir.join(format!("clone-cp-src-{tag}"));
    let to = ctx.dir.join(format!("clone-cp-dst-{tag}"));
    let result = async {
        calls::raw_mount(servers, src, &from, &[]).await?;
        calls::raw_mount(servers, &name, &to, &[]).await?;
        drop_caches().await?;
        let t = Instant::now();
        gluster_csi_testbed::cmd::run(
            &[
                "cp".into(),
                "-a".into(),
                "--".into(),
                from.join(".").display().to_string(),
                to.display().to_string(),
            ],
            STEP,
        )
        .await?;
        Ok(t.elapsed().as_secs_f64())
    }
    .await;
    for m in [&from, &to] {
        let _ = gluster_csi_testbed::mounts::unmount(m).await;
        let _ = std::fs::remove_dir(m);
    }
    remove_plain_volume(ctx, &name, &dirs).await?;
    result
}

/// One subject turn: the clone's seconds (accept to done, from heketi-server's log), and the
/// seconds of its copy and its check.
async fn clone_turn(
    ctx: &Ctx,
    h: &heketi_client::Client,
    src_id: &str,
    tag: &str,
) -> Result<(f64, f64, f64)> {
    let name = format!("bench-clone-{}-{tag}", ctx.run_id);
    drop_caches().await?;
    let mark = ctx.heketi_log.mark();
    let t = Instant::now();
    let clone = h
        .volume_clone(
            src_id,
            &VolumeCloneRequest {
                name: name.clone(),
                read_only: false,
            },
        )
        .await
        .with_context(|| format!("clone {name}"))?;
    let client_secs = t.elapsed().as_secs_f64();
    let ops = ctx.heketi_log.ops_since(mark);
    let secs = ops
        .iter()
        .find(|o| o.create && o.name == name)
        .map_or(client_secs, |o| o.secs);
    let accepted = ctx
        .heketi_log
        .lines_since(mark)
        .into_iter()
        .find(|l| l.contains("copy accepted") && l.contains(&format!("volume={}", clone.id)))
        .with_context(|| format!("heketi-server logged no accepted copy for {name}"))?;
    let attempt = number(&accepted, "attempt=").unwrap_or(0.0);
    ensure!(
        attempt == 1.0,
        "the copy of {name} was accepted at attempt {attempt}: the source changed"
    );
    let copy = number(&accepted, "copy_secs=").unwrap_or(f64::NAN);
    let check = number(&accepted, "check_secs=").unwrap_or(f64::NAN);
    calls::heketi_delete(h, &clone.id).await?;
    Ok((secs, copy, check))
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let mib = ctx.plan.clone_mib;
    let rounds = ctx.plan.clone_rounds;
    let files = layout(mib);
    let bytes: usize = files.iter().map(|(_, s)| s).sum();
    let data_mib = bytes as f64 / (1 << 20) as f64;
    let h = ctx.heketi.with_operation_deadline(STEP);
    let size_gib = (bytes * 5 / 4).div_ceil(1 << 30).max(1);
    let src = calls::heketi_create(
        &h,
        &VolumeCreateRequest {
            size: size_gib as u64,
            name: format!("bench-clone-src-{}", ctx.run_id),
            durability: VolumeDurabilityInfo::replicate(3),
            ..Default::default()
        },
    )
    .await?;
    let servers = src.mount.glusterfs.hosts.clone();
    let fill_dir = ctx.dir.join("clone-fill");
    calls::raw_mount(&servers, &src.name, &fill_dir, &[]).await?;
    let t = Instant::now();
    let filled = fill(fill_dir.clone(), files.clone()).await;
    let fill_secs = t.elapsed().as_secs_f64();
    gluster_csi_testbed::mounts::unmount(&fill_dir).await?;
    filled?;
    eprintln!(
        "bench:   clone source: {data_mib:.0} MiB in {} files written in {fill_secs:.1} s",
        files.len()
    );
    // Past the margin a clone allows for clock skew: the first copy must not see the fill as
    // a change.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut clone_s = Samples::new(Unit::Seconds);
    let mut copy_s = Samples::new(Unit::Seconds);
    let mut check_s = Samples::new(Unit::Seconds);
    let mut rest_s = Samples::new(Unit::Seconds);
    let mut cp_s = Samples::new(Unit::Seconds);
    let mut outcome = Ok(());
    'rounds: for r in 0..rounds {
        let clone_first = r % 2 == 0;
        for turn in 0..2 {
            let tag = format!("{r}");
            let res = if (turn == 0) == clone_first {
                clone_turn(ctx, &h, &src.id, &tag).await.map(|(c, copy, check)| {
                    eprintln!(
                        "bench:   clone round {r}: clone {c:.1} s (copy {copy:.1} s, check {check:.1} s)"
                    );
                    clone_s.push(c);
                    copy_s.push(copy);
                    check_s.push(check);
                    rest_s.push(c - copy - check);
                })
            } else {
                cp_turn(ctx, &servers, &src.name, &tag).await.map(|c| {
                    eprintln!("bench:   clone round {r}: cp -a {c:.1} s");
                    cp_s.push(c);
                })
            };
            if res.is_err() {
                outcome = res;
                break 'rounds;
            }
        }
    }
    let deleted = calls::heketi_delete(&h, &src.id).await;
    outcome?;
    deleted?;

    let rate = |s: &Samples| {
        Samples::from_values(Unit::MibPerSec, s.values().iter().map(|v| data_mib / v))
    };
    let mut section = Section::new(
        "Clone copy (heketi-server)",
        "`cp -a` between two FUSE mounts",
        format!(
            "A `replicate:3` volume of {size_gib} GiB holding {data_mib:.0} MiB in {} files \
             (half the bytes in 32 MiB files, a quarter in 1 MiB, a quarter in 16 KiB) cloned \
             through heketi-server, against `cp -a` of the same data into an empty \
             `replicate:3` volume, both volumes mounted from the root namespace; {rounds} \
             rounds, ABBA, caches dropped before each turn. The clone is timed from \
             heketi-server's log (request accepted to volume created); its copy and its check \
             (a fresh mount of the source and an lstat of every entry) are heketi-server's \
             own timings.",
            files.len()
        ),
    );
    section.rows = vec![
        Row::compare(
            "Clone, accepted → created",
            cp_s.summary(),
            clone_s.summary(),
            Goal::None,
        )
        .headline(),
        Row::compare(
            "… its copy (`cp -a` through heketi-server's mounts)",
            cp_s.summary(),
            copy_s.summary(),
            Goal::None,
        ),
        Row::compare(
            "… its check of the copy",
            None,
            check_s.summary(),
            Goal::None,
        ),
        Row::compare(
            "… the rest (volume create and start, mounts, quota)",
            None,
            rest_s.summary(),
            Goal::None,
        ),
        Row::compare(
            "Throughput, data MiB per second of the whole",
            rate(&cp_s).summary(),
            rate(&clone_s).summary(),
            Goal::None,
        ),
    ];
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_mixes_sizes_and_adds_up() {
        let l = layout(256);
        let total: usize = l.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 256 << 20);
        assert_eq!(l.iter().filter(|(_, s)| *s == 32 << 20).count(), 4);
        assert_eq!(l.iter().filter(|(_, s)| *s == 1 << 20).count(), 64);
        assert_eq!(l.iter().filter(|(_, s)| *s == 16 << 10).count(), 4096);
        let dirs: std::collections::BTreeSet<_> =
            l.iter().filter_map(|(p, _)| p.parent()).collect();
        assert!(dirs.len() > 16 && dirs.len() < 32, "{dirs:?}");
    }
}
