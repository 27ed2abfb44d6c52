//! `gluster-csi-bench`: what the driver costs, measured against the floor it stands on.
//!
//! Every figure is a ratio against a baseline measured in the same run on the same machine —
//! Heketi driven straight with heketi-client, a raw `mount -t glusterfs`, a bare bind mount —
//! with medians, 99th percentiles and extremes. Baseline and subject take turns (ABBA order), so
//! a machine that gets busier during the run weighs on both alike.
//!
//! The run brings up its own testbed (three Gluster hosts and heketi-server), starts the
//! controller (with `--metrics-address`) and the node plugin (`--fuse-launcher direct`, as the
//! DaemonSet runs it) itself, measures the sections in order (footprint at rest and under a
//! gRPC load, provisioning, node, data path, idempotent retry, index reload, clone copy,
//! footprint at the end), prints the markdown report and tears everything down. A section
//! that fails is reported as not measured; the benchmark never fails a build and is not part
//! of `cargo test`. The calls it times (CSI and Heketi with their bounds) are the testbed's
//! [`gluster_csi_testbed::calls`], which the suites use too.

pub mod clone;
pub mod data;
pub mod footprint;
pub mod machine;
pub mod node;
pub mod provision;
pub mod refresh;
pub mod report;
pub mod retry;
pub mod services;
pub mod stats;
pub mod usage;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use gluster_csi_testbed::calls;
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, harness};
use report::{Report, Section};
use services::{HeketiLog, Service};

/// What `gluster-csi-bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Part {
    /// CreateVolume+DeleteVolume through the controller vs Heketi straight.
    Provision,
    /// NodeStageVolume, NodePublishVolume, FUSE clients per volume.
    Node,
    /// Sequential and small-file I/O through a published target.
    Data,
    /// A repeated CreateVolume with many volumes in Heketi.
    Retry,
    /// CreateVolume while the controller reloads its volume index in the background.
    Refresh,
    /// A heketi-server clone against `cp -a` of the same data between two FUSE mounts.
    Clone,
    /// RSS and CPU of the controller and node plugin; binary sizes.
    Footprint,
}

/// Command line of `gluster-csi-bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Fewer repetitions everywhere (a smoke run of a few minutes; figures are noisier).
    #[arg(long)]
    pub quick: bool,
    /// Only these parts (comma-separated); all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// PVCs created and deleted one after another, per side [default: 10, quick 3].
    #[arg(long)]
    pub sequential_pvcs: Option<usize>,
    /// PVCs created and deleted by the concurrent callers, per side [default: 40, quick 10].
    #[arg(long)]
    pub concurrent_pvcs: Option<usize>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 10)]
    pub callers: usize,
    /// Numbers of existing Heketi volumes at which a repeated CreateVolume is measured
    /// [default: 10,100,500, quick 10,30].
    #[arg(long, value_delimiter = ',')]
    pub volumes: Vec<usize>,
    /// Repeated CreateVolume calls per volume count [default: 30, quick 10].
    #[arg(long)]
    pub retries: Option<usize>,
    /// Volumes in Heketi while the refresh part measures CreateVolume [default: 100, quick 20].
    #[arg(long)]
    pub refresh_volumes: Option<usize>,
    /// CreateVolume calls per side in the refresh part [default: 10, quick 4].
    #[arg(long)]
    pub refresh_rounds: Option<usize>,
    /// Stage/unstage (and raw mount/unmount) repetitions [default: 30, quick 6].
    #[arg(long)]
    pub stages: Option<usize>,
    /// Publishes of one staged volume at once (also the number of raw mounts compared).
    #[arg(long, default_value_t = 20)]
    pub publishes: usize,
    /// Rounds of `--publishes` publishes timed [default: 5, quick 2].
    #[arg(long)]
    pub publish_rounds: Option<usize>,
    /// MiB written and read sequentially per round [default: 256, quick 64].
    #[arg(long)]
    pub data_mib: Option<usize>,
    /// Small files created per round [default: 2000, quick 500].
    #[arg(long)]
    pub files: Option<usize>,
    /// Data-path rounds per mount [default: 5, quick 1].
    #[arg(long)]
    pub data_rounds: Option<usize>,
    /// MiB of data in the source the clone part copies [default: 256, quick 64].
    #[arg(long)]
    pub clone_mib: Option<usize>,
    /// Clone rounds (one clone and one `cp -a` each) [default: 3, quick 1].
    #[arg(long)]
    pub clone_rounds: Option<usize>,
    /// gRPC calls of each kind in the footprint load [default: 10000, quick 2000].
    #[arg(long)]
    pub grpc_calls: Option<usize>,
    /// The Go reference driver's `hostpathplugin` (kubernetes-csi/csi-driver-host-path) to
    /// drive under the footprint load next to ours [default: `hostpathplugin` on PATH].
    #[arg(long, env = "GLUSTER_CSI_BENCH_HOSTPATH")]
    pub hostpath_plugin: Option<PathBuf>,
    /// State directory of the benchmark's testbed [default: /tmp/gcsi-bench-PID].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also write the markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The settled counts of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Sequential PVCs per side.
    pub sequential_pvcs: usize,
    /// Concurrent PVCs per side.
    pub concurrent_pvcs: usize,
    /// Concurrent callers.
    pub callers: usize,
    /// Volume counts for the retry part, ascending.
    pub volumes: Vec<usize>,
    /// Repeated creates per count.
    pub retries: usize,
    /// Volumes in Heketi for the refresh part.
    pub refresh_volumes: usize,
    /// CreateVolume calls per side in the refresh part.
    pub refresh_rounds: usize,
    /// Stage repetitions.
    pub stages: usize,
    /// Publishes at once.
    pub publishes: usize,
    /// Publish rounds.
    pub publish_rounds: usize,
    /// MiB per sequential round.
    pub data_mib: usize,
    /// Files per small-file round.
    pub files: usize,
    /// Data rounds per side.
    pub data_rounds: usize,
    /// MiB in the clone part's source.
    pub clone_mib: usize,
    /// Clone rounds.
    pub clone_rounds: usize,
    /// gRPC calls of each kind.
    pub grpc_calls: usize,
    /// The reference driver's binary, when given or on PATH.
    pub hostpath_plugin: Option<PathBuf>,
}

impl Plan {
    /// The counts `args` ask for.
    pub fn from_args(a: &BenchArgs) -> Plan {
        let q = a.quick;
        let pick = |v: Option<usize>, full: usize, quick: usize| {
            v.unwrap_or(if q { quick } else { full }).max(1)
        };
        let mut volumes = if a.volumes.is_empty() {
            if q { vec![10, 30] } else { vec![10, 100, 500] }
        } else {
            a.volumes.clone()
        };
        volumes.retain(|v| *v > 0);
        volumes.sort_unstable();
        volumes.dedup();
        Plan {
            sequential_pvcs: pick(a.sequential_pvcs, 10, 3),
            concurrent_pvcs: pick(a.concurrent_pvcs, 40, 10),
            callers: a.callers.max(1),
            volumes,
            retries: pick(a.retries, 30, 10),
            refresh_volumes: pick(a.refresh_volumes, 100, 20),
            refresh_rounds: pick(a.refresh_rounds, 10, 4),
            stages: pick(a.stages, 30, 6),
            publishes: a.publishes.max(1),
            publish_rounds: pick(a.publish_rounds, 5, 2),
            data_mib: pick(a.data_mib, 256, 64),
            files: pick(a.files, 2000, 500),
            data_rounds: pick(a.data_rounds, 5, 1),
            clone_mib: pick(a.clone_mib, 256, 64),
            clone_rounds: pick(a.clone_rounds, 3, 1),
            grpc_calls: pick(a.grpc_calls, 10_000, 2000),
            hostpath_plugin: a.hostpath_plugin.clone().or_else(|| {
                footprint::HOSTPATH_NAMES
                    .iter()
                    .find_map(|n| gluster_csi_testbed::cmd::which(n))
            }),
        }
    }
}

/// What every part needs.
pub struct Ctx {
    /// The testbed (Gluster hosts and heketi-server).
    pub tb: Arc<Testbed>,
    /// The controller under test.
    pub controller: Service,
    /// The node plugin under test.
    pub node: Service,
    /// An admin heketi-client for the baselines.
    pub heketi: heketi_client::Client,
    /// heketi-server's request log.
    pub heketi_log: HeketiLog,
    /// The benchmark's scratch directory (mount points, logs of its services).
    pub dir: PathBuf,
    /// The counts.
    pub plan: Plan,
    /// Unique part of every name this run makes.
    pub run_id: String,
    /// Measurements one part leaves for the footprint part.
    pub notes: FootprintNotes,
    /// The volume the node and data parts use (created on first use).
    pub volume: Option<csi_proto::v1::Volume>,
}

impl Ctx {
    /// The 2 GiB `replicate:3` volume the node and data parts mount, made through the
    /// controller on first use.
    pub async fn bench_volume(&mut self) -> Result<csi_proto::v1::Volume> {
        if let Some(v) = &self.volume {
            return Ok(v.clone());
        }
        let mut c = calls::controller(&self.controller.endpoint).await?;
        let name = format!("pvc-bench-node-{}", self.run_id);
        let v = calls::create_volume(&mut c, calls::create_request(&name, 2, &[])).await?;
        self.volume = Some(v.clone());
        Ok(v)
    }

    /// The kubelet directory the node plugin accepts paths under.
    pub fn kubelet(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
}

/// Figures measured in other parts that the footprint part reports.
#[derive(Clone, Debug, Default)]
pub struct FootprintNotes {
    /// Controller CPU seconds and PVCs it provisioned (create+delete) in the provisioning part.
    pub controller_cpu_per_pvc: Option<f64>,
    /// heketi-server CPU seconds per PVC while the baseline ran, and while the controller ran.
    pub heketi_cpu_per_pvc: Option<(f64, f64)>,
    /// RSS (MiB) of one glusterfs FUSE client of a staged volume.
    pub fuse_client_rss_mib: Option<f64>,
}

/// Runs the benchmark; returns the report (also printed to stdout).
pub async fn run(args: BenchArgs) -> Result<Report> {
    let plan = Plan::from_args(&args);
    let parts: Vec<Part> = if args.only.is_empty() {
        vec![
            Part::Footprint,
            Part::Provision,
            Part::Node,
            Part::Data,
            Part::Retry,
            Part::Refresh,
            Part::Clone,
        ]
    } else {
        args.only.clone()
    };
    let want = |p: Part| parts.contains(&p);
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| harness::state_dir_for("bench"));
    let machine = machine::describe().await;
    harness::reap_stale_testbeds().await;

    eprintln!("bench: bringing up the testbed in {}", state_dir.display());
    let tb = Arc::new(
        Testbed::up(TestbedOptions {
            state_dir,
            hosts: 3,
            heketi: true,
            controller: false,
            node: false,
            executor: ExecutorKind::default(),
        })
        .await
        .context("the benchmark's testbed did not come up")?,
    );
    let result = measure(&tb, plan.clone(), &want).await;
    eprintln!("bench: tearing the testbed down");
    if let Err(e) = tb.teardown().await {
        eprintln!("bench: teardown: {e:#}");
    }
    let sections = result?;
    let mut report = Report {
        machine,
        command: reproduce_command(),
        sections,
    };
    report
        .machine
        .push(("Load average at end".into(), machine::load_average()));
    report.machine.push(("Counts".into(), describe_plan(&plan)));
    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("bench: report written to {}", out.display());
    }
    Ok(report)
}

async fn measure(
    tb: &Arc<Testbed>,
    plan: Plan,
    want: &dyn Fn(Part) -> bool,
) -> Result<Vec<Section>> {
    let dir = tb.scratch_dir("bench")?;
    let controller = Service::controller(tb, &dir).await?;
    let node = Service::node(tb, &dir).await?;
    let mut ctx = Ctx {
        tb: Arc::clone(tb),
        controller,
        node,
        heketi: tb.heketi_client()?,
        heketi_log: HeketiLog::of(tb),
        dir,
        plan,
        run_id: std::process::id().to_string(),
        notes: FootprintNotes::default(),
        volume: None,
    };
    let mut sections = Vec::new();
    let mut fp = footprint::Footprint::default();
    if want(Part::Footprint) {
        eprintln!("bench: footprint at rest and under gRPC load");
        fp = match footprint::at_rest_and_load(&ctx).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("bench: footprint load failed: {e:#}");
                footprint::Footprint::default()
            }
        };
    }
    for part in [
        Part::Provision,
        Part::Node,
        Part::Data,
        Part::Retry,
        Part::Refresh,
        Part::Clone,
    ] {
        if !want(part) {
            continue;
        }
        let title = match part {
            Part::Provision => "Provisioning overhead",
            Part::Node => "Node: stage, publish, FUSE clients",
            Part::Data => "Data path",
            Part::Retry => "Idempotent retry cost",
            Part::Refresh => "CreateVolume during a full index reload",
            Part::Clone => "Clone copy (heketi-server)",
            Part::Footprint => "Footprint",
        };
        eprintln!("bench: {title}");
        let r = match part {
            Part::Provision => provision::run(&mut ctx).await,
            Part::Node => node::run(&mut ctx).await,
            Part::Data => data::run(&mut ctx).await,
            Part::Refresh => refresh::run(&mut ctx).await,
            Part::Clone => clone::run(&mut ctx).await,
            _ => retry::run(&mut ctx).await,
        };
        let s = r.unwrap_or_else(|e| {
            eprintln!("bench: {title} failed: {e:#}");
            Section::failed(title, &e)
        });
        eprint!("{}", s.markdown());
        sections.push(s);
    }
    if want(Part::Footprint) {
        sections.push(match footprint::finish(&ctx, fp).await {
            Ok(s) => s,
            Err(e) => Section::failed("Footprint", &e),
        });
    }
    ctx.controller.stop().await;
    ctx.node.stop().await;
    Ok(sections)
}

fn describe_plan(p: &Plan) -> String {
    format!(
        "{} sequential + {} concurrent PVCs per side ({} callers); retry at {:?} volumes × {} \
         calls; refresh at {} volumes × {} creates per side; {} stages; {} publishes × {} \
         rounds; {} MiB and {} files × {} rounds per side; clone of {} MiB × {} rounds; {} gRPC \
         calls per kind; reference driver: {}",
        p.sequential_pvcs,
        p.concurrent_pvcs,
        p.callers,
        p.volumes,
        p.retries,
        p.refresh_volumes,
        p.refresh_rounds,
        p.stages,
        p.publishes,
        p.publish_rounds,
        p.data_mib,
        p.files,
        p.data_rounds,
        p.clone_mib,
        p.clone_rounds,
        p.grpc_calls,
        p.hostpath_plugin
            .as_ref()
            .map_or_else(|| "none".to_owned(), |h| h.display().to_string())
    )
}

/// How to run this again: the release build and this command line.
fn reproduce_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "scripts/build-release.sh\n\
         R=$PWD/target/x86_64-unknown-linux-gnu/release\n\
         sudo GLUSTER_CSI_BIN_DIR=$R $R/gluster-csi-bench{}{}",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    )
}
