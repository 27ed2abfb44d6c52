//! CreateVolume while the controller reloads its volume index: the index's full reload
//! (`GET /volumes` plus one `GET /volumes/{id}` per volume) runs in the background and is
//! swapped in, so a create must not wait for it.
//!
//! Two controllers over the same heketi-server, with N volumes in it: the baseline with
//! `--index-reload-seconds 600` (no reload falls due during the run) and the subject with
//! `--index-reload-seconds 0`, which starts a full reload at every CreateVolume that finds none
//! running — so each of its creates runs beside a reload of all N volumes. The creates take
//! turns (ABBA). The report also gives how long one full reload takes when driven straight
//! with heketi-client: before this change a create that met a reload waited for it under the
//! index lock, so that is what it used to add.

use std::time::Duration;

use anyhow::Result;

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::retry::{fill, volume_count};
use super::services::{self, Service};
use super::stats::{Samples, Unit};
use gluster_csi_testbed::calls::{self, timed};

/// Filler volume names start here, apart from those of the retry part.
const FILL_OFFSET: usize = 1_000_000;
/// Reads in flight in the straight reload (the controller's own concurrency).
const READS: usize = 8;
/// Straight reloads timed.
const RELOADS: usize = 3;

/// One full reload driven with heketi-client: the list and every volume read.
async fn straight_reload(h: &heketi_client::Client) -> Result<Duration> {
    let (_, t) = timed(async {
        let ids = h.volume_list().await?.volumes;
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(READS));
        let mut reads = tokio::task::JoinSet::new();
        for id in ids {
            let (h, permits) = (h.clone(), std::sync::Arc::clone(&permits));
            reads.spawn(async move {
                let _permit = permits.acquire_owned().await;
                h.volume_info(&id).await
            });
        }
        while let Some(r) = reads.join_next().await {
            match r? {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
        Ok(())
    })
    .await?;
    Ok(t)
}

async fn volume_reads(s: &Service) -> f64 {
    match s.metrics_text().await {
        Ok(m) => services::heketi_calls(&m)
            .get("volume_info")
            .copied()
            .unwrap_or(0.0),
        Err(_) => 0.0,
    }
}

/// Measures and returns the section.
pub async fn run(ctx: &mut Ctx) -> Result<Section> {
    let want = ctx.plan.refresh_volumes;
    let rounds = ctx.plan.refresh_rounds;
    let have = volume_count(&ctx.heketi).await?;
    if have < want {
        eprintln!("bench:   adding {} volumes to reach {want}", want - have);
        let (made, t) = timed(fill(ctx, FILL_OFFSET + have, want - have)).await?;
        eprintln!("bench:   {made} volumes made in {:.0}s", t.as_secs_f64());
    }
    let volumes = volume_count(&ctx.heketi).await?;
    let dir = ctx.dir.join("refresh");
    std::fs::create_dir_all(&dir)?;
    let mut reloading =
        Service::controller_with(&ctx.tb, &dir, &["--index-reload-seconds", "0"]).await?;
    let mut quiet = calls::controller(&ctx.controller.endpoint).await?;
    let mut busy = calls::controller(&reloading.endpoint).await?;
    let params = [("volumetype", "none")];
    // Each controller's first create loads its index; not measured.
    for (c, side) in [(&mut quiet, "a"), (&mut busy, "b")] {
        let name = format!("pvc-bench-refresh-{}-{side}-warm", ctx.run_id);
        let v = calls::create_volume(c, calls::create_request(&name, 1, &params)).await?;
        calls::delete_volume(c, &v.volume_id).await?;
    }
    let reads_before = volume_reads(&reloading).await;
    let (mut base, mut subject) = (Samples::new(Unit::Seconds), Samples::new(Unit::Seconds));
    for i in 0..rounds {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_reload in order {
            let (c, side, samples) = if with_reload {
                (&mut busy, "b", &mut subject)
            } else {
                (&mut quiet, "a", &mut base)
            };
            let name = format!("pvc-bench-refresh-{}-{side}-{i}", ctx.run_id);
            let (v, t) = timed(calls::create_volume(
                c,
                calls::create_request(&name, 1, &params),
            ))
            .await?;
            samples.push_duration(t);
            calls::delete_volume(c, &v.volume_id).await?;
        }
    }
    let reads = volume_reads(&reloading).await - reads_before;
    reloading.stop().await;
    let mut straight = Samples::new(Unit::Seconds);
    for _ in 0..RELOADS {
        straight.push_duration(straight_reload(&ctx.heketi).await?);
    }
    let mut s = Section::new(
        "CreateVolume during a full index reload",
        "no reload due",
        format!(
            "{volumes} volumes in Heketi; {rounds} CreateVolume calls (`volumetype none`, 1 GiB) \
             per side, taking turns, each followed by its DeleteVolume (not timed). Subject: a \
             controller with `--index-reload-seconds 0`, which starts a full reload of its index \
             (all {volumes} volumes) at every create; baseline: one with the default 600 s, \
             where none falls due. The subject's controller read \
             {reads:.0} volumes during its {rounds} creates and deletes ({:.0} per create): \
             the reloads did run beside them.",
            reads / rounds.max(1) as f64
        ),
    );
    s.rows.push(
        Row::compare(
            format!("CreateVolume with a reload of {volumes} volumes running"),
            base.summary(),
            subject.summary(),
            Goal::RatioAtMost(1.5),
        )
        .headline(),
    );
    s.rows.push(Row::compare(
        format!(
            "One full reload of {volumes} volumes, heketi-client straight (what a create \
             waited for before)"
        ),
        None,
        straight.summary(),
        Goal::None,
    ));
    Ok(s)
}
