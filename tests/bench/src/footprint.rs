//! Footprint: resident memory (at rest and at its peak) and CPU time of the controller and the
//! node plugin under a fixed gRPC load and over the whole run; binary sizes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::{ControllerGetCapabilitiesRequest, NodeGetCapabilitiesRequest, ProbeRequest};

use super::Ctx;
use super::report::{Goal, Row, Section};
use super::stats::{Samples, Summary, Unit};
use super::usage::Usage;
use gluster_csi_testbed::calls;

/// Names under which the Go reference driver (kubernetes-csi/csi-driver-host-path) installs.
pub const HOSTPATH_NAMES: &[&str] = &["hostpathplugin", "csi-driver-host-path"];

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
    /// Resident memory by mapping right after the load.
    pub mapped: Option<super::usage::Mapped>,
    /// Latency of one call.
    pub lat: Option<Summary>,
}

impl Load {
    /// CPU seconds per call.
    fn cpu_per_call(&self) -> f64 {
        (self.after.cpu_secs - self.before.cpu_secs) / self.calls.max(1) as f64
    }

    /// Calls per second of wall time.
    fn rate(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64().max(1e-9)
    }
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
    /// The reference driver under the same loads, when it ran.
    pub reference: Option<Reference>,
    /// Why the reference driver has no figures although it was found.
    pub reference_error: Option<String>,
}

/// The Go reference driver (csi-driver-host-path) under the same gRPC loads as ours: one
/// instance takes the controller load, another the node load, so that each peak is of one load.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    /// Its binary.
    pub path: std::path::PathBuf,
    /// The instance that takes the controller load, at rest.
    pub controller_idle: Usage,
    /// … under the controller load.
    pub controller_load: Load,
    /// The instance that takes the node load, at rest.
    pub node_idle: Usage,
    /// … under the node load.
    pub node_load: Load,
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
    let mapped = super::usage::mapped(svc.pid);
    Ok(Load {
        mapped,
        before,
        after,
        calls: lat.len(),
        wall,
        lat: Some(lat.summary().context("no calls")?),
    })
}

/// Resting figures and the gRPC load, before any other part runs. When the reference driver
/// is there, two instances of it start next to ours and the loads run in mirrored order: our
/// controller, the reference under the controller load, the reference under the node load, our
/// node plugin.
pub async fn at_rest_and_load(ctx: &Ctx) -> Result<Footprint> {
    let mut refs = Vec::new();
    let mut reference_error = None;
    if let Some(bin) = &ctx.plan.hostpath_plugin {
        for name in ["hostpath-controller", "hostpath-node"] {
            match super::services::Service::hostpath(&ctx.tb, &ctx.dir, bin, name).await {
                Ok(s) => refs.push(s),
                Err(e) => {
                    reference_error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fp = Footprint {
        controller_idle: ctx.controller.usage().ok(),
        node_idle: ctx.node.usage().ok(),
        ..Footprint::default()
    };
    let idle: Vec<Option<Usage>> = refs.iter().map(|r| r.usage().ok()).collect();
    let n = ctx.plan.grpc_calls;
    let callers = ctx.plan.callers;
    fp.controller_load = Some(load_one(&ctx.controller, Kind::Controller, n, callers).await?);
    let mut reference = None;
    if let ([rc, rn], [Some(ic), Some(inode)]) = (refs.as_slice(), idle.as_slice()) {
        let run = async {
            let cl = load_one(rc, Kind::Controller, n, callers).await?;
            let nl = load_one(rn, Kind::Node, n, callers).await?;
            anyhow::Ok((cl, nl))
        };
        match run.await {
            Ok((cl, nl)) => {
                reference = Some(Reference {
                    path: ctx.plan.hostpath_plugin.clone().unwrap_or_default(),
                    controller_idle: *ic,
                    controller_load: cl,
                    node_idle: *inode,
                    node_load: nl,
                });
            }
            Err(e) => reference_error = Some(format!("{e:#}")),
        }
    } else if !refs.is_empty() && reference_error.is_none() {
        reference_error = Some("the reference driver exited before its load".into());
    }
    fp.node_load = Some(load_one(&ctx.node, Kind::Node, n, callers).await?);
    for mut r in refs {
        r.stop().await;
    }
    fp.reference = reference;
    fp.reference_error = reference_error;
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
    let reference = fp.reference.as_ref();
    let mut s = Section::new(
        "Footprint",
        if reference.is_some() {
            "hostpathplugin (Go reference) / context"
        } else {
            "Context (same run)"
        },
        format!(
            "Memory from `/proc/PID/status` (VmRSS now, VmHWM peak; RssAnon is heap and \
             stacks, RssFile the binary's text and shared libraries), CPU from \
             `/proc/PID/stat` (utime+stime). At rest: 2 s after the process listens. gRPC \
             load: {n} Identity Probe + {n} ControllerGetCapabilities to the controller, then \
             {n} Probe + {n} NodeGetCapabilities to the node plugin, {callers} callers on their \
             own connections. {reference} \"Whole run\" is the peak after every other part \
             (the provisioning runs, the node and data parts, and the controller's index of \
             every Heketi volume). The controller process was restarted by the retry part (its \
             cold-start samples), so its whole-run peak covers the time since that restart. \
             Binary sizes are of the binaries measured ({bins}).",
            n = ctx.plan.grpc_calls,
            callers = ctx.plan.callers,
            reference = if reference.is_some() {
                "The Go reference driver, kubernetes-csi/csi-driver-host-path's \
                 `hostpathplugin` (Identity, Controller and Node on one socket), ran as two \
                 instances started with ours: one took the same controller load, the other the \
                 same node load, in mirrored order (our controller, reference controller load, \
                 reference node load, our node plugin)."
            } else {
                ""
            },
            bins = gluster_csi_testbed::bin_path("gluster-csi-controller")
                .ok()
                .and_then(|p| p.parent().map(|d| d.display().to_string()))
                .unwrap_or_default()
        ),
    );
    match (reference, &ctx.plan.hostpath_plugin, &fp.reference_error) {
        (Some(r), _, _) => s.notes.push(format!(
            "Reference driver: `{}`, run as `hostpathplugin --endpoint unix://… --nodeid \
             bench-node --drivername hostpath.csi.k8s.io --statedir …` with its default log \
             level.",
            r.path.display()
        )),
        (None, None, _) => s.notes.push(
            "The Go reference driver (kubernetes-csi/csi-driver-host-path, binary \
             `hostpathplugin`) was not found (`--hostpath-plugin`, \
             `GLUSTER_CSI_BENCH_HOSTPATH` or `PATH`), so no row compares against it and the \
             goal \"≤ 0.5× its peak RSS\" is not judged. The context column instead holds \
             processes of the same run that the driver runs next to."
                .into(),
        ),
        (None, Some(p), e) => s.notes.push(format!(
            "The reference driver at {} did not run: {}; the goal \"≤ 0.5× its peak RSS\" \
             is not judged.",
            p.display(),
            e.as_deref().unwrap_or("unknown error")
        )),
    }

    let fuse = ctx.notes.fuse_client_rss_mib;
    let heketi_now = super::services::heketi_pid(&ctx.tb).and_then(super::usage::of);
    let ctrl_now = ctx.controller.usage().ok();
    let node_now = ctx.node.usage().ok();

    let sides = [
        (
            "Controller",
            fp.controller_idle,
            fp.controller_load,
            reference.map(|r| (r.controller_idle, r.controller_load)),
        ),
        (
            "Node plugin",
            fp.node_idle,
            fp.node_load,
            reference.map(|r| (r.node_idle, r.node_load)),
        ),
    ];
    for (who, idle, load, refr) in sides {
        let ctx_idle = if who == "Controller" {
            (
                "heketi-server RSS at the end",
                heketi_now.map(|h| h.rss_mib()),
            )
        } else {
            ("one glusterfs FUSE client", fuse)
        };
        if let Some(u) = idle {
            s.rows.push(match refr {
                Some((ri, _)) => Row::compare(
                    format!("{who} RSS at rest vs hostpathplugin at rest"),
                    mib(ri.rss_mib()),
                    mib(u.rss_mib()),
                    Goal::None,
                ),
                None => Row::compare(
                    format!("{who} RSS at rest (context: {})", ctx_idle.0),
                    ctx_idle.1.and_then(mib),
                    mib(u.rss_mib()),
                    Goal::None,
                ),
            });
        }
        let Some(l) = load else { continue };
        s.rows.push(
            match refr {
                Some((_, rl)) => Row::compare(
                    format!(
                        "{who} peak RSS under the gRPC load vs hostpathplugin under the same load"
                    ),
                    mib(rl.after.hwm_mib()),
                    mib(l.after.hwm_mib()),
                    Goal::RatioAtMost(0.5),
                ),
                None => Row::compare(
                    format!("{who} peak RSS after the gRPC load (context: its RSS at rest)"),
                    idle.and_then(|u| mib(u.rss_mib())),
                    mib(l.after.hwm_mib()),
                    Goal::None,
                ),
            }
            .headline(),
        );
        if let Some((_, rl)) = refr {
            s.rows.push(Row::compare(
                format!("{who} after the load: anonymous RSS (heap, stacks)"),
                mib(rl.after.anon_mib()),
                mib(l.after.anon_mib()),
                Goal::None,
            ));
            s.rows.push(Row::compare(
                format!("{who} after the load: file-backed RSS (binary text, libraries)"),
                mib(rl.after.file_mib()),
                mib(l.after.file_mib()),
                Goal::None,
            ));
            s.rows.push(Row::compare(
                format!("{who} after the load: threads"),
                count(rl.after.threads as f64),
                count(l.after.threads as f64),
                Goal::None,
            ));
        }
        if let Some(m) = l.mapped {
            let show = |m: super::usage::Mapped| {
                format!(
                    "executable's code {:.1} MiB, its data {:.1} MiB, shared libraries {:.1} \
                     MiB, anonymous {:.1} MiB",
                    m.exe_text as f64 / 1024.0,
                    m.exe_data as f64 / 1024.0,
                    m.libraries as f64 / 1024.0,
                    m.anon as f64 / 1024.0
                )
            };
            s.notes.push(format!(
                "{who} RSS after the load by mapping (`/proc/PID/smaps`): {}{}.",
                show(m),
                refr.and_then(|(_, rl)| rl.mapped)
                    .map(|r| format!("; hostpathplugin: {}", show(r)))
                    .unwrap_or_default()
            ));
        }
        s.rows.push(Row::compare(
            format!(
                "{who} CPU per gRPC call ({} calls, ours {:.0} calls/s{})",
                l.calls,
                l.rate(),
                refr.map(|(_, rl)| format!(", hostpathplugin {:.0} calls/s", rl.rate()))
                    .unwrap_or_default()
            ),
            refr.and_then(|(_, rl)| secs(rl.cpu_per_call())),
            secs(l.cpu_per_call()),
            Goal::None,
        ));
        s.rows.push(Row::compare(
            format!("{who} gRPC call latency under the load"),
            refr.and_then(|(_, rl)| rl.lat),
            l.lat,
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
    let ref_size = reference
        .and_then(|r| std::fs::metadata(&r.path).ok())
        .and_then(|m| mib(m.len() as f64 / (1024.0 * 1024.0)));
    for bin in [
        "gluster-csi-controller",
        "gluster-csi-node",
        "heketi-server",
    ] {
        if let Ok(p) = gluster_csi_testbed::bin_path(bin)
            && let Ok(m) = std::fs::metadata(&p)
        {
            let heketi = bin == "heketi-server";
            let row = Row::compare(
                if heketi || ref_size.is_none() {
                    format!("Binary size: `{bin}`")
                } else {
                    format!("Binary size: `{bin}` vs `hostpathplugin`")
                },
                if heketi { None } else { ref_size },
                mib(m.len() as f64 / (1024.0 * 1024.0)),
                Goal::None,
            );
            s.rows.push(if heketi { row } else { row.headline() });
        }
    }
    Ok(s)
}

fn count(v: f64) -> Option<Summary> {
    Samples::from_values(Unit::Count, [v]).summary()
}
