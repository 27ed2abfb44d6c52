//! Provisioning overhead: CreateVolume+DeleteVolume through the controller against the same
//! Heketi operations sent straight with heketi-client to the same heketi-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use heketi_client::types::VolumeDurabilityInfo;
use tokio::sync::Mutex;

use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};
use super::{Ctx, services};
use gluster_csi_testbed::calls::{self, timed};

/// Who provisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// heketi-client straight to heketi-server.
    Direct,
    /// CreateVolume/DeleteVolume to the controller.
    Csi,
}

/// Latencies of one side.
#[derive(Debug)]
struct Lat {
    create: Samples,
    delete: Samples,
    cycle: Samples,
    failures: Vec<String>,
}

impl Lat {
    fn new() -> Self {
        Self {
            create: Samples::new(Unit::Seconds),
            delete: Samples::new(Unit::Seconds),
            cycle: Samples::new(Unit::Seconds),
            failures: Vec::new(),
        }
    }

    fn record(&mut self, r: Result<(Duration, Duration)>) {
        match r {
            Ok((c, d)) => {
                self.create.push_duration(c);
                self.delete.push_duration(d);
                self.cycle.push_duration(c + d);
            }
            Err(e) => self.failures.push(format!("{e:#}")),
        }
    }
}

/// One PVC's create and delete on `side`; returns both latencies.
async fn cycle(ctx_parts: &Parts, side: Side, i: usize) -> Result<(Duration, Duration)> {
    match side {
        Side::Direct => {
            let name = format!("bench_direct_{}_{i}", ctx_parts.run_id);
            let req = calls::direct_request(
                &name,
                2000 + i64::try_from(i)?,
                VolumeDurabilityInfo::replicate(3),
            );
            let (info, c) = timed(calls::heketi_create(&ctx_parts.heketi, &req)).await?;
            let ((), d) = timed(calls::heketi_delete(&ctx_parts.heketi, &info.id)).await?;
            Ok((c, d))
        }
        Side::Csi => {
            let mut client = calls::controller(&ctx_parts.endpoint).await?;
            let name = format!("pvc-bench-{}-{i}", ctx_parts.run_id);
            let (vol, c) = timed(calls::create_volume(
                &mut client,
                calls::create_request(&name, 1, &[]),
            ))
            .await?;
            let ((), d) = timed(calls::delete_volume(&mut client, &vol.volume_id)).await?;
            Ok((c, d))
        }
    }
}

/// What the callers share (cheap to clone into tasks).
#[derive(Clone)]
struct Parts {
    heketi: heketi_client::Client,
    endpoint: String,
    run_id: String,
}

/// Heketi requests logged while `f` ran, per PVC.
struct Logged {
    requests: usize,
    throttled: usize,
}

fn logged(ctx: &Ctx, mark: u64) -> Logged {
    let reqs = ctx.heketi_log.requests_since(mark);
    Logged {
        requests: reqs.len(),
        throttled: reqs.iter().filter(|r| r.status == 429).count(),
    }
}

/// Runs `n` PVCs on `side` with `callers` concurrent callers; returns the wall time.
async fn concurrent(
    parts: &Parts,
    side: Side,
    first: usize,
    n: usize,
    callers: usize,
    into: &Arc<Mutex<Lat>>,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers.min(n) {
        let next = Arc::clone(&next);
        let into = Arc::clone(into);
        let parts = parts.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= n {
                    break;
                }
                let r = cycle(&parts, side, first + k).await;
                into.lock().await.record(r);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let plan = ctx.plan.clone();
    let parts = Parts {
        heketi: ctx.heketi.clone(),
        endpoint: ctx.controller.endpoint.clone(),
        run_id: ctx.run_id.clone(),
    };
    let heketi_pid = services::heketi_pid(&ctx.tb);
    let heketi_cpu = || heketi_pid.and_then(super::usage::of).map(|u| u.cpu_secs);
    let mut cpu_ctrl = 0.0;
    let mut cpu_heketi = [0.0f64; 2];
    let mut reqs = [0usize; 2];
    let mut throttled = [0usize; 2];
    let mut pvcs = [0usize; 2];
    let idx = |s: Side| usize::from(s == Side::Csi);

    // Sequential, in ABBA order.
    let seq_mark = ctx.heketi_log.mark();
    let mut seq = [Lat::new(), Lat::new()];
    let mut counter = 0usize;
    for i in 0..plan.sequential_pvcs {
        let order = if i % 2 == 0 {
            [Side::Direct, Side::Csi]
        } else {
            [Side::Csi, Side::Direct]
        };
        for side in order {
            let mark = ctx.heketi_log.mark();
            let c0 = ctx.controller.usage()?.cpu_secs;
            let h0 = heketi_cpu().unwrap_or(0.0);
            let r = cycle(&parts, side, counter).await;
            counter += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let l = logged(ctx, mark);
            reqs[idx(side)] += l.requests;
            throttled[idx(side)] += l.throttled;
            cpu_heketi[idx(side)] += heketi_cpu().unwrap_or(0.0) - h0;
            if side == Side::Csi {
                cpu_ctrl += ctx.controller.usage()?.cpu_secs - c0;
            }
            if r.is_ok() {
                pvcs[idx(side)] += 1;
            }
            eprintln!(
                "bench:   sequential {side:?} #{i}: {}",
                match &r {
                    Ok((c, d)) => format!(
                        "create {:.2}s delete {:.2}s",
                        c.as_secs_f64(),
                        d.as_secs_f64()
                    ),
                    Err(e) => format!("failed: {e:#}"),
                }
            );
            seq[idx(side)].record(r);
        }
    }

    let seq_ops = ctx.heketi_log.ops_since(seq_mark);

    // Concurrent callers, in ABBA halves.
    let conc = [
        Arc::new(Mutex::new(Lat::new())),
        Arc::new(Mutex::new(Lat::new())),
    ];
    let mut wall = [Duration::ZERO; 2];
    let mut tput = [Samples::new(Unit::PerMin), Samples::new(Unit::PerMin)];
    let half = plan.concurrent_pvcs / 2;
    let halves = [
        (Side::Direct, half.max(1)),
        (Side::Csi, half.max(1)),
        (Side::Csi, plan.concurrent_pvcs - half),
        (Side::Direct, plan.concurrent_pvcs - half),
    ];
    for (side, n) in halves {
        if n == 0 {
            continue;
        }
        let mark = ctx.heketi_log.mark();
        let c0 = ctx.controller.usage()?.cpu_secs;
        let h0 = heketi_cpu().unwrap_or(0.0);
        let before = conc[idx(side)].lock().await.cycle.len();
        let w = concurrent(&parts, side, counter, n, plan.callers, &conc[idx(side)]).await;
        counter += n;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = conc[idx(side)].lock().await.cycle.len() - before;
        let l = logged(ctx, mark);
        reqs[idx(side)] += l.requests;
        throttled[idx(side)] += l.throttled;
        cpu_heketi[idx(side)] += heketi_cpu().unwrap_or(0.0) - h0;
        if side == Side::Csi {
            cpu_ctrl += ctx.controller.usage()?.cpu_secs - c0;
        }
        pvcs[idx(side)] += done;
        wall[idx(side)] += w;
        tput[idx(side)].push(done as f64 / w.as_secs_f64() * 60.0);
        eprintln!(
            "bench:   concurrent {side:?}: {done}/{n} PVCs in {:.1}s",
            w.as_secs_f64()
        );
    }

    let conc: Vec<Lat> = {
        let mut v = Vec::new();
        for c in conc {
            v.push(std::mem::replace(&mut *c.lock().await, Lat::new()));
        }
        v
    };
    let failures: usize = seq
        .iter()
        .chain(conc.iter())
        .map(|l| l.failures.len())
        .sum();
    let ok: usize = pvcs.iter().sum();
    if ok == 0 {
        let first = seq
            .iter()
            .chain(conc.iter())
            .flat_map(|l| l.failures.first())
            .next()
            .cloned()
            .unwrap_or_default();
        bail!("no PVC was provisioned ({failures} failures; first: {first})");
    }

    let [d, c] = [idx(Side::Direct), idx(Side::Csi)];
    let per = |n: usize, p: usize| {
        if p == 0 {
            f64::NAN
        } else {
            n as f64 / p as f64
        }
    };
    if pvcs[c] > 0 {
        ctx.notes.controller_cpu_per_pvc = Some(cpu_ctrl / pvcs[c] as f64);
        ctx.notes.heketi_cpu_per_pvc = Some((
            cpu_heketi[d] / pvcs[d].max(1) as f64,
            cpu_heketi[c] / pvcs[c] as f64,
        ));
    }
    let total_tput = |s: usize| {
        let p = conc[s].cycle.len() as f64;
        Samples::from_values(Unit::PerMin, [p / wall[s].as_secs_f64() * 60.0])
    };

    let mut s = Section::new(
        "Provisioning overhead",
        "Heketi straight (heketi-client)",
        format!(
            "A PVC here is one CreateVolume (1 GiB, StorageClass defaults: `volumetype \
             replicate:3`) followed by its DeleteVolume, through the controller. The baseline \
             sends the same Heketi operations (`POST /volumes` with the same size, durability, \
             snapshot factor and a gid, then `DELETE /volumes/{{id}}`, each polled to its end \
             through `/queue`) with heketi-client straight to the same heketi-server. \
             Sequential: {seq} PVCs per side, one at a time, sides alternating ABBA. \
             Concurrent: {conc} PVCs per side, {callers} callers pulling from a shared \
             counter, in halves ordered ABBA; throughput is PVCs completed per minute of wall \
             time. The controller runs with its defaults (`--heketi-max-inflight 8`), \
             heketi-server with its (`--max-inflight 8`, 429 with `Retry-After: 5` beyond). \
             p99 of fewer than 100 samples is the maximum.",
            seq = plan.sequential_pvcs,
            conc = plan.concurrent_pvcs,
            callers = plan.callers
        ),
    );
    s.rows.push(
        Row::compare(
            "Sequential create+delete latency",
            seq[d].cycle.summary(),
            seq[c].cycle.summary(),
            Goal::RatioAtMost(1.05),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        "Sequential create latency",
        seq[d].create.summary(),
        seq[c].create.summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "Sequential delete latency",
        seq[d].delete.summary(),
        seq[c].delete.summary(),
        Goal::None,
    ));
    let server_side = |create: bool, direct: bool| {
        Samples::from_values(
            Unit::Seconds,
            seq_ops
                .iter()
                .filter(|o| o.create == create && o.name.starts_with("bench_direct_") == direct)
                .map(|o| o.secs),
        )
        .summary()
    };
    s.rows.push(Row::compare(
        "Sequential: create as timed by heketi-server (its log)",
        server_side(true, true),
        server_side(true, false),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "Sequential: delete as timed by heketi-server (its log)",
        server_side(false, true),
        server_side(false, false),
        Goal::None,
    ));
    s.rows.push(
        Row::compare(
            format!("{} callers: create+delete latency", plan.callers),
            conc[d].cycle.summary(),
            conc[c].cycle.summary(),
            Goal::RatioAtMost(1.05),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        format!("{} callers: create latency", plan.callers),
        conc[d].create.summary(),
        conc[c].create.summary(),
        Goal::None,
    ));
    s.rows.push(
        Row::compare(
            format!("{} callers: throughput (whole run)", plan.callers),
            total_tput(d).summary(),
            total_tput(c).summary(),
            Goal::RatioAtLeast(0.95),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        format!("{} callers: throughput per half", plan.callers),
        tput[d].summary(),
        tput[c].summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "Heketi HTTP requests per PVC (all modes)",
        Samples::from_values(Unit::Count, [per(reqs[d], pvcs[d])]).summary(),
        Samples::from_values(Unit::Count, [per(reqs[c], pvcs[c])]).summary(),
        Goal::None,
    ));
    s.rows.push(Row::compare(
        "Heketi 429 replies per PVC (all modes)",
        Samples::from_values(Unit::Count, [per(throttled[d], pvcs[d])]).summary(),
        Samples::from_values(Unit::Count, [per(throttled[c], pvcs[c])]).summary(),
        Goal::None,
    ));
    s.notes.push(
        "Heketi HTTP requests are counted from heketi-server's request log (every route, \
         `/queue` polls included). Create and delete are asynchronous in Heketi: heketi-client \
         asks heketi-server to hold each `/queue/{id}` poll until the operation ends \
         (`Prefer: wait=5`, answered with `Preference-Applied`), so a latency is the \
         operation's own time, not rounded up to a poll step (against Heketi, which ignores \
         the header, it polls after 200 ms, then every 1.5× longer up to 3 s) — the same \
         client for both sides."
            .into(),
    );
    if failures > 0 {
        let all: Vec<&String> = seq
            .iter()
            .chain(conc.iter())
            .flat_map(|l| l.failures.iter())
            .collect();
        s.notes.push(format!(
            "{failures} PVC(s) failed and are left out of the figures; first: {}",
            all.first().map(|e| e.as_str()).unwrap_or("")
        ));
    }
    Ok(s)
}
