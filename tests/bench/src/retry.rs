//! Idempotent retry cost: a repeated CreateVolume for a name that exists, with N volumes in
//! Heketi — the Heketi requests it costs and its latency, against the floor of any lookup by
//! name over the Heketi API (which has none): `GET /volumes` plus `GET /volumes/{id}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use heketi_client::types::VolumeDurabilityInfo;

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::services;
use super::stats::{Samples, Unit};
use gluster_csi_testbed::calls::{self, bounded, timed};

/// Controller restarts measured per volume count (first call with an empty index).
const COLD_SAMPLES: usize = 3;
/// Filler volumes created at once (heketi-server's default `--max-inflight`).
const FILL_CONCURRENCY: usize = 8;

/// Adds `n` volumes straight through Heketi (`durability none`, 1 GiB: one brick each, the
/// cheapest real Gluster volume) so that Heketi's volume list grows.
pub(super) async fn fill(ctx: &Ctx, first: usize, n: usize) -> Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..FILL_CONCURRENCY.min(n) {
        let (next, made) = (Arc::clone(&next), Arc::clone(&made));
        let h = ctx.heketi.clone();
        let run_id = ctx.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut last_err = None;
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= n {
                    break;
                }
                let name = format!("bench_fill_{run_id}_{}", first + k);
                let req = calls::direct_request(&name, 0, VolumeDurabilityInfo::none());
                match calls::heketi_create(&h, &req).await {
                    Ok(_) => {
                        made.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            last_err
        }));
    }
    let mut err = None;
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            err = Some(e);
        }
    }
    let made = made.load(Ordering::SeqCst);
    if made < n {
        eprintln!(
            "bench:   {} of {n} filler volumes failed; last error: {}",
            n - made,
            err.map(|e| format!("{e:#}")).unwrap_or_default()
        );
    }
    Ok(made)
}

/// Gluster daemons of the testbed (glusterd, brick servers, self-heal and quota daemons): how
/// many, how many of them serve bricks, and their summed VmRSS in MiB.
fn gluster_daemons(ctx: &Ctx) -> (usize, usize, f64) {
    let needle = ctx.tb.state_dir().display().to_string();
    let (mut n, mut bricks, mut kib) = (0usize, 0usize, 0u64);
    for pid in gluster_csi_testbed::procs::all_pids() {
        let is_gluster = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| n.starts_with("gluster"));
        if !is_gluster {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(&needle) {
            continue;
        }
        n += 1;
        if cmdline.contains("--brick-name") {
            bricks += 1;
        }
        kib += super::usage::of(pid).map_or(0, |u| u.rss_kib);
    }
    (n, bricks, kib as f64 / 1024.0)
}

/// One host's `MemAvailable` from `/proc/meminfo`, MiB.
fn mem_available_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub(super) async fn volume_count(h: &heketi_client::Client) -> Result<usize> {
    bounded("Heketi volume list", calls::NODE_STEP, async {
        Ok(h.volume_list()
            .await
            .context("Heketi volume list")?
            .volumes
            .len())
    })
    .await
}

/// Figures at one volume count.
struct Level {
    volumes: usize,
    base_lat: Samples,
    base_reqs: Samples,
    warm_lat: Samples,
    warm_reqs: Samples,
    metric_calls: f64,
    cold_lat: Samples,
    cold_reqs: Samples,
    /// Filler volumes made to reach this count and the seconds it took.
    filled: (usize, f64),
    /// Gluster daemons, of which brick servers, and their RSS (MiB); MemAvailable (MiB).
    daemons: (usize, usize, f64, f64),
    /// Controller RSS (MiB) after the warm calls (its index holds every volume).
    controller_rss: f64,
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let plan = ctx.plan.clone();
    let name = format!("pvc-bench-retry-{}", ctx.run_id);
    let req = calls::create_request(&name, 1, &[]);
    let mut cc = calls::controller(&ctx.controller.endpoint).await?;
    let vol = calls::create_volume(&mut cc, req.clone()).await?;
    let heketi_id = vol
        .volume_context
        .get("heketiVolumeId")
        .context("no heketiVolumeId in the volume context")?
        .clone();
    let mut filled = 0usize;
    let mut levels = Vec::new();
    for &want in &plan.volumes {
        let have = volume_count(&ctx.heketi).await?;
        let mut fill_stat = (0, 0.0);
        if have < want {
            eprintln!("bench:   adding {} volumes to reach {want}", want - have);
            let (made, t) = timed(fill(ctx, filled, want - have)).await?;
            eprintln!(
                "bench:   {made} volumes made in {:.0}s ({:.1}s each, {FILL_CONCURRENCY} at a time)",
                t.as_secs_f64(),
                t.as_secs_f64() / made.max(1) as f64
            );
            filled += made;
            fill_stat = (made, t.as_secs_f64());
        }
        let volumes = volume_count(&ctx.heketi).await?;
        eprintln!("bench:   {volumes} volumes in Heketi");

        // Warm: the controller has seen every volume; prime it once.
        calls::create_volume(&mut cc, req.clone()).await?;
        let mut lv = Level {
            volumes,
            base_lat: Samples::new(Unit::Seconds),
            base_reqs: Samples::new(Unit::Count),
            warm_lat: Samples::new(Unit::Seconds),
            warm_reqs: Samples::new(Unit::Count),
            metric_calls: 0.0,
            cold_lat: Samples::new(Unit::Seconds),
            cold_reqs: Samples::new(Unit::Count),
            filled: fill_stat,
            daemons: (0, 0, 0.0, 0.0),
            controller_rss: 0.0,
        };
        let (n, b, rss) = gluster_daemons(ctx);
        lv.daemons = (n, b, rss, mem_available_mib());
        let m0 = services::heketi_calls(&ctx.controller.metrics_text().await?);
        for k in 0..plan.retries {
            let csi_first = k % 2 == 1;
            for csi in [csi_first, !csi_first] {
                let mark = ctx.heketi_log.mark();
                if csi {
                    let (v, t) = timed(calls::create_volume(&mut cc, req.clone())).await?;
                    if v.volume_id != vol.volume_id {
                        bail!("the repeated CreateVolume returned another volume");
                    }
                    lv.warm_lat.push_duration(t);
                    lv.warm_reqs
                        .push(ctx.heketi_log.requests_since(mark).len() as f64);
                } else {
                    let h = ctx.heketi.clone();
                    let id = heketi_id.clone();
                    let ((), t) = timed(bounded("Heketi lookup", calls::NODE_STEP, async {
                        let list = h.volume_list().await.context("Heketi volume list")?;
                        if !list.volumes.iter().any(|v| v.eq_ignore_ascii_case(&id)) {
                            bail!("volume {id} is not in Heketi's list");
                        }
                        h.volume_info(&id).await.context("Heketi volume info")?;
                        Ok(())
                    }))
                    .await?;
                    lv.base_lat.push_duration(t);
                    lv.base_reqs
                        .push(ctx.heketi_log.requests_since(mark).len() as f64);
                }
            }
        }
        let m1 = services::heketi_calls(&ctx.controller.metrics_text().await?);
        lv.controller_rss = ctx.controller.usage().map_or(0.0, |u| u.rss_mib());
        let sum = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>();
        lv.metric_calls = (sum(&m1) - sum(&m0)) / plan.retries as f64;

        // Cold: a controller that just started has an empty index.
        for _ in 0..COLD_SAMPLES {
            ctx.controller.kill().await;
            ctx.controller.start().await?;
            let mut fresh = calls::controller(&ctx.controller.endpoint).await?;
            let mark = ctx.heketi_log.mark();
            let (_, t) = timed(calls::create_volume(&mut fresh, req.clone())).await?;
            lv.cold_lat.push_duration(t);
            lv.cold_reqs
                .push(ctx.heketi_log.requests_since(mark).len() as f64);
        }
        cc = calls::controller(&ctx.controller.endpoint).await?;
        eprintln!(
            "bench:   {volumes} volumes: warm {:?}, cold {:?}",
            lv.warm_reqs.summary().map(|s| s.cell()),
            lv.cold_reqs.summary().map(|s| s.cell())
        );
        levels.push(lv);
    }

    let mut s = Section::new(
        "Idempotent retry cost",
        "Lookup straight: `GET /volumes` + `GET /volumes/{id}`",
        format!(
            "A CreateVolume repeated with the name and parameters of a volume that exists (what \
             external-provisioner sends after a timeout or a restart), with N volumes in \
             Heketi. Heketi has no lookup by name, so the floor for any driver is listing the \
             ids and reading the volume: the baseline sends exactly that with heketi-client. \
             The controller keeps an index of the volumes it has read, so a repeated create \
             costs one `GET /volumes` and one `GET /volumes/{{id}}` however many volumes \
             exist; right after a (re)start the index is empty and the first call reads every \
             volume once (8 at a time). The volumes besides the measured one are real \
             Gluster volumes (`durability none`, 1 GiB, one brick each, made straight through \
             Heketi). {retries} calls per side and count, ABBA; {cold} controller restarts per \
             count for the first call after a start. Requests are counted in heketi-server's \
             request log; the controller's own `gluster_csi_controller_heketi_requests_total` \
             agrees (column in the notes).",
            retries = plan.retries,
            cold = COLD_SAMPLES
        ),
    );
    let warm_counts: Vec<(f64, f64)> = levels
        .iter()
        .filter_map(|l| l.warm_reqs.summary().map(|s| (s.min, s.max)))
        .collect();
    let constant = warm_counts
        .first()
        .is_some_and(|f| warm_counts.iter().all(|c| c == f && c.0 == c.1));
    let last = levels.len().saturating_sub(1);
    for (i, l) in levels.iter().enumerate() {
        let lat = Row::compare(
            format!("Repeated CreateVolume latency, {} volumes", l.volumes),
            l.base_lat.summary(),
            l.warm_lat.summary(),
            Goal::None,
        );
        s.rows.push(if i == last { lat.headline() } else { lat });
        let reqs = Row::compare(
            format!(
                "Heketi requests per repeated CreateVolume, {} volumes",
                l.volumes
            ),
            l.base_reqs.summary(),
            l.warm_reqs.summary(),
            Goal::Constant,
        )
        .judged(constant);
        s.rows.push(if i == last { reqs.headline() } else { reqs });
    }
    for l in &levels {
        s.rows.push(Row::compare(
            format!(
                "First CreateVolume after a controller start, {} volumes: requests",
                l.volumes
            ),
            l.base_reqs.summary(),
            l.cold_reqs.summary(),
            Goal::None,
        ));
        s.rows.push(Row::compare(
            format!(
                "First CreateVolume after a controller start, {} volumes: latency",
                l.volumes
            ),
            l.base_lat.summary(),
            l.cold_lat.summary(),
            Goal::None,
        ));
    }
    s.notes.push(format!(
        "Testbed at each count (one brick server process per brick: brick multiplexing is not \
         used, see heketi-server/README.md \"Brick multiplexing\"): {}.",
        levels
            .iter()
            .map(|l| {
                format!(
                    "{} volumes — {} filler volumes made in {:.0} s ({:.2} s each, {} at a \
                     time), {} Gluster daemons ({} brick servers) with {:.0} MiB RSS in all, \
                     {:.0} MiB available on the machine, controller RSS {:.1} MiB",
                    l.volumes,
                    l.filled.0,
                    l.filled.1,
                    l.filled.1 / l.filled.0.max(1) as f64,
                    FILL_CONCURRENCY,
                    l.daemons.0,
                    l.daemons.1,
                    l.daemons.2,
                    l.daemons.3,
                    l.controller_rss
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    s.notes.push(format!(
        "Heketi calls per repeated CreateVolume by the controller's metrics: {}.",
        levels
            .iter()
            .map(|l| format!("{:.2} at {} volumes", l.metric_calls, l.volumes))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(s)
}
