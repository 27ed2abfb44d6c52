//! Footprint: resident memory (at rest and at its peak) and CPU time of the controller and the
//! node plugin under a fixed gRPC load and over the whole run; binary sizes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::{ControllerGetCapabilitiesRequest, NodeGetCapabilitiesRequest, ProbeRequest};

use super::Ctx;
use super::calls;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Unit};
use super::usage::Usage;

/// Names under which the Go reference driver (kubernetes-csi/csi-driver-host-path) installs.
const HOSTPATH_NAMES: &[&str] = &["hostpathplugin", "csi-driver-host-path"];

/// What the load did to one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// Before the load.
    pub before: Usage,
    /// After the load.
    pub after: Usage,
    /// Calls made.
    pub calls: usize,
    /// Wall time of the load.
    pub wall: Duration,
    /// Latency of one call, median and p99, seconds.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Footprint figures taken before the other parts.
#[derive(Clone, Debug, Default)]
pub struct Footprint {
    /// Controller at rest (2 s after it listens).
    pub controller_idle: Option<Usage>,
    /// Node plugin at rest.
    pub node_idle: Option<Usage>,
    /// The controller under the gRPC load.
    pub controller_load: Option<Load>,
    /// The node plugin under the gRPC load.
    pub node_load: Option<Load>,
}

/// Which calls a load makes.
#[derive(Clone, Copy)]
enum Kind {
    Controller,
    Node,
}

/// `calls` Identity Probe and `calls` GetCapabilities of `kind` to `endpoint`, `callers` at a
/// time, each caller on its own connection. Returns the per-call latencies.
async fn grpc_load(endpoint: &str, kind: Kind, calls: usize, callers: usize) -> Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let total = calls * 2;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let next = Arc::clone(&next);
        let endpoint = endpoint.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::new(Unit::Seconds);
            let mut identity = IdentityClient::connect(endpoint.clone()).await?;
            let mut ctrl = match kind {
                Kind::Controller => Some(calls::controller(&endpoint).await?),
                Kind::Node => None,
            };
            let mut node = match kind {
                Kind::Node => Some(calls::node(&endpoint).await?),
                Kind::Controller => None,
            };
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= total {
                    break;
                }
                let t = Instant::now();
                if k.is_multiple_of(2) {
                    identity.probe(ProbeRequest {}).await?;
                } else if let Some(c) = ctrl.as_mut() {
                    c.controller_get_capabilities(ControllerGetCapabilitiesRequest {})
                        .await?;
                } else if let Some(n) = node.as_mut() {
                    n.node_get_capabilities(NodeGetCapabilitiesRequest {})
                        .await?;
                }
                lat.push_duration(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Samples::new(Unit::Seconds);
    for t in tasks {
        let lat = calls::bounded("gRPC load", Duration::from_secs(600), async {
            t.await.context("a load task panicked")?
        })
        .await?;
        all.extend(&lat);
    }
    if all.len() != total {
        bail!("the load made {} calls instead of {total}", all.len());
    }
    Ok(all)
}

async fn load_one(
    svc: &super::services::Service,
    kind: Kind,
    calls: usize,
    callers: usize,
) -> Result<Load> {
    let before = svc.usage()?;
    let t = Instant::now();
    let lat = grpc_load(&svc.endpoint, kind, calls, callers).await?;
    let wall = t.elapsed();
    let after = svc.usage()?;
    let s = lat.summary().context("no calls")?;
    Ok(Load {
        before,
        after,
        calls: lat.len(),
        wall,
        p50: s.p50,
        p99: s.p99,
    })
}

/// Resting figures and the gRPC load, before any other part runs.
pub async fn at_rest_and_load(ctx: &Ctx) -> Result<Footprint> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fp = Footprint {
        controller_idle: ctx.controller.usage().ok(),
        node_idle: ctx.node.usage().ok(),
        ..Footprint::default()
    };
    let n = ctx.plan.grpc_calls;
    let callers = ctx.plan.callers;
    fp.controller_load = Some(load_one(&ctx.controller, Kind::Controller, n, callers).await?);
    fp.node_load = Some(load_one(&ctx.node, Kind::Node, n, callers).await?);
    Ok(fp)
}

fn mib(v: f64) -> Option<super::stats::Summary> {
    Samples::from_values(Unit::Mib, [v]).summary()
}

fn secs(v: f64) -> Option<super::stats::Summary> {
    Samples::from_values(Unit::Seconds, [v]).summary()
}

/// The section, with the figures at the end of the run.
pub async fn finish(ctx: &Ctx, fp: Footprint) -> Result<Section> {
    let mut s = Section::new(
        "Footprint",
        "Context (same run)",
        format!(
            "Memory from `/proc/PID/status` (VmRSS now, VmHWM peak), CPU from `/proc/PID/stat` \
             (utime+stime). At rest: 2 s after the process listens. gRPC load: {n} Identity \
             Probe + {n} ControllerGetCapabilities to the controller, then {n} Probe + {n} \
             NodeGetCapabilities to the node plugin, {callers} callers on their own \
             connections. \"Whole run\" is the peak after every other part (the provisioning \
             runs, the node and data parts, and the controller's index of every Heketi \
             volume). The controller process was restarted by the retry part (its cold-start \
             samples), so its whole-run peak covers the time since that restart. Binary sizes \
             are of the binaries measured ({bins}).",
            n = ctx.plan.grpc_calls,
            callers = ctx.plan.callers,
            bins = crate::bin_path("gluster-csi-controller")
                .ok()
                .and_then(|p| p.parent().map(|d| d.display().to_string()))
                .unwrap_or_default()
        ),
    );
    let hostpath = HOSTPATH_NAMES.iter().find_map(|n| crate::cmd::which(n));
    match &hostpath {
        None => s.notes.push(
            "The Go reference driver (kubernetes-csi/csi-driver-host-path, binary \
             `hostpathplugin`) is not installed on this machine and cannot be built here (no \
             Go module downloads), so no row compares against it; the goal \"≤ 0.5× its peak \
             RSS\" is not judged. The context column instead holds processes of the same run \
             that the driver runs next to."
                .into(),
        ),
        Some(p) => s.notes.push(format!(
            "A reference driver binary was found at {} but this benchmark does not drive it \
             yet; compare by hand under the same load.",
            p.display()
        )),
    }

    let fuse = ctx.notes.fuse_client_rss_mib;
    let heketi_now = super::services::heketi_pid(&ctx.tb).and_then(super::usage::of);
    let ctrl_now = ctx.controller.usage().ok();
    let node_now = ctx.node.usage().ok();

    if let Some(u) = fp.controller_idle {
        s.rows.push(Row::compare(
            "Controller RSS at rest (context: heketi-server RSS at the end)",
            heketi_now.and_then(|h| mib(h.rss_mib())),
            mib(u.rss_mib()),
            Goal::None,
        ));
    }
    if let Some(l) = fp.controller_load {
        s.rows.push(
            Row::compare(
                "Controller peak RSS after the gRPC load (context: its RSS at rest)",
                fp.controller_idle.and_then(|u| mib(u.rss_mib())),
                mib(l.after.hwm_mib()),
                Goal::None,
            )
            .headline(),
        );
        s.rows.push(Row::compare(
            format!(
                "Controller CPU per gRPC call ({} calls, {:.0} calls/s, p50 {:.0} µs / p99 {:.0} µs)",
                l.calls,
                l.calls as f64 / l.wall.as_secs_f64(),
                l.p50 * 1e6,
                l.p99 * 1e6
            ),
            None,
            secs((l.after.cpu_secs - l.before.cpu_secs) / l.calls as f64),
            Goal::None,
        ));
    }
    if let Some(u) = ctrl_now {
        s.rows.push(Row::compare(
            "Controller peak RSS, whole run (context: heketi-server peak)",
            heketi_now.and_then(|h| mib(h.hwm_mib())),
            mib(u.hwm_mib()),
            Goal::None,
        ));
    }
    if let Some(c) = ctx.notes.controller_cpu_per_pvc {
        s.rows.push(Row::compare(
            "Controller CPU per PVC provisioned (context: heketi-server CPU per PVC)",
            ctx.notes
                .heketi_cpu_per_pvc
                .and_then(|(_, via_csi)| secs(via_csi)),
            secs(c),
            Goal::None,
        ));
    }
    if let Some(u) = fp.node_idle {
        s.rows.push(Row::compare(
            "Node plugin RSS at rest (context: one glusterfs FUSE client)",
            fuse.and_then(mib),
            mib(u.rss_mib()),
            Goal::None,
        ));
    }
    if let Some(l) = fp.node_load {
        s.rows.push(
            Row::compare(
                "Node plugin peak RSS after the gRPC load (context: its RSS at rest)",
                fp.node_idle.and_then(|u| mib(u.rss_mib())),
                mib(l.after.hwm_mib()),
                Goal::None,
            )
            .headline(),
        );
        s.rows.push(Row::compare(
            format!(
                "Node plugin CPU per gRPC call ({} calls, {:.0} calls/s, p50 {:.0} µs / p99 {:.0} µs)",
                l.calls,
                l.calls as f64 / l.wall.as_secs_f64(),
                l.p50 * 1e6,
                l.p99 * 1e6
            ),
            None,
            secs((l.after.cpu_secs - l.before.cpu_secs) / l.calls as f64),
            Goal::None,
        ));
    }
    if let Some(u) = node_now {
        s.rows.push(Row::compare(
            "Node plugin peak RSS, whole run (context: one glusterfs FUSE client)",
            fuse.and_then(mib),
            mib(u.hwm_mib()),
            Goal::None,
        ));
        s.rows.push(Row::compare(
            "Node plugin CPU, whole run",
            None,
            secs(u.cpu_secs),
            Goal::None,
        ));
    }
    for bin in [
        "gluster-csi-controller",
        "gluster-csi-node",
        "heketi-server",
    ] {
        if let Ok(p) = crate::bin_path(bin)
            && let Ok(m) = std::fs::metadata(&p)
        {
            let row = Row::compare(
                format!("Binary size: `{bin}`"),
                None,
                mib(m.len() as f64 / (1024.0 * 1024.0)),
                Goal::None,
            );
            s.rows.push(if bin == "heketi-server" {
                row
            } else {
                row.headline()
            });
        }
    }
    Ok(s)
}
