//! Faults, bad input and secrets, against the real testbed: nothing is lost and nothing leaks.
//!
//! One testbed (three Gluster hosts, heketi-server with auth, the controller, the node plugin
//! with its mount agent) serves every trial. Every process the testbed starts logs with
//! `RUST_LOG=trace`, so the secret check at the end reads everything they can write. Most
//! trials kill or cut off a part of the testbed, so all run one at a time
//! ([`harness::exclusive_trial`]). Each prints the figure it proves on a line starting with
//! `faults:`.
//!
//! | trial | what it proves |
//! |---|---|
//! | `controller_killed_mid_create_*` | 20 `kill -9` of the controller at random points of CreateVolume, each retried by a new controller: one Heketi volume per name, no orphan, all deleted |
//! | `heketi_restart_during_a_burst_*` | heketi-server `kill -9` + start during creates, expands and deletes: with sidecar retries every call ends as asked, Gluster and Heketi agree |
//! | `gluster_host_lost_*` | one of three hosts cut off under a writer: writes resume, nothing acknowledged is lost, the bricks heal to identical copies |
//! | `backend_down_*` | heketi-server stopped: UNAVAILABLE within seconds, Probe still ready; started again: everything works with the same driver process |
//! | `heketi_outage_*` | heketi-server stopped for [`OUTAGE`]: every Probe ready, CreateVolume UNAVAILABLE within seconds, `heketi_up` 0; back: the first create succeeds on the same controller, `heketi_up` 1 |
//! | `injection_and_bad_paths_*` | shell syntax, option smuggling, second commands and escaping paths are INVALID_ARGUMENT; nothing is run through a shell |
//! | `csi_sockets_*`, `heketi_server_refuses_bad_tokens_*` | socket modes; JWT refusals with Heketi's messages |
//! | `no_secret_in_any_daemon_log_or_error_message` | unique secret values through a whole life cycle (and failing calls) appear in no log file and no gRPC error |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetVolumeRequest, CreateVolumeRequest,
    DeleteVolumeRequest, GetCapacityRequest, ListVolumesRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest,
    Volume, VolumeCapability,
};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness, mounts};
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Status};

const GIB: i64 = 1 << 30;
/// Limit on one step (a create, a mount, a heal), so that a hang fails the trial instead of the
/// run. Not an assertion about speed.
const STEP: Duration = Duration::from_secs(300);
/// How long one CSI call may take before a sidecar-like caller gives up on it and retries.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a sidecar-like caller keeps retrying one operation. Long enough for heketi-server's
/// reservation of a name whose create was cut off by a crash (180 s) to pass.
const SIDECAR_LIMIT: Duration = Duration::from_secs(420);
/// Controller kills of the first trial.
const KILLS: usize = 20;
/// `network.ping-timeout` of the host-loss volume, seconds.
const PING_TIMEOUT: u64 = 5;
/// Writes must have resumed this long after the host was cut off (a generous bound, not a
/// timing assertion: the figure measured is printed).
const RESUME_BOUND: Duration = Duration::from_secs(120);
/// "Quickly" for a backend that is down: not the minutes a hung call would take. (A liveness
/// bound, not a timing assertion; the figures are printed. With the controller's default
/// `--heketi-retry-budget` of 3 s a call takes about 2-4 s here: the retries of a refused
/// connection, and ListVolumes waiting for CreateVolume's index refresh.)
const QUICK: Duration = Duration::from_secs(60);
/// How long the outage trial keeps heketi-server stopped. Issue 22 asks for 5 minutes, and the
/// deployed controller used to be restarted by its liveness probe after about 100 s; neither
/// length is needed to show what this trial shows, because Probe no longer asks Heketi at all:
/// every Probe during the outage is checked, and 60 s covers six rounds of the controller's
/// background check (10 s) and several sidecar-style create retries.
const OUTAGE: Duration = Duration::from_secs(60);
/// Longest wait for `heketi_up` to change after heketi-server stopped or returned: the check
/// interval (10 s) plus its timeout (3 s), with room for a slow machine.
const HEALTH_LAG: Duration = Duration::from_secs(30);

fn main() {
    // Every process the testbed starts inherits RUST_LOG: the most verbose level everywhere, so
    // the secret check reads every line the daemons can write. Changing the environment is
    // `unsafe` because another thread could read it at the same time.
    #[allow(unsafe_code)]
    // SAFETY: no other thread exists yet (the harness starts its runtime below).
    unsafe {
        std::env::set_var("RUST_LOG", "trace");
    }
    let opts = TestbedOptions {
        state_dir: harness::state_dir_for("faults"),
        hosts: 3,
        heketi: true,
        controller: true,
        node: true,
        executor: ExecutorKind::default(),
    };
    harness::run(opts, |tb| {
        vec![
            harness::exclusive_trial(
                "csi_sockets_are_not_world_writable",
                &tb,
                sockets_are_not_world_writable,
            ),
            harness::exclusive_trial(
                "heketi_server_refuses_bad_tokens_with_heketis_messages",
                &tb,
                bad_tokens_are_refused,
            ),
            harness::exclusive_trial(
                "injection_and_bad_paths_are_invalid_argument_and_nothing_runs_a_shell",
                &tb,
                injection_and_bad_paths,
            ),
            harness::exclusive_trial(
                "backend_down_is_unavailable_quickly_and_recovers_without_a_driver_restart",
                &tb,
                backend_down,
            ),
            harness::exclusive_trial(
                "heketi_outage_keeps_probe_ready_and_heketi_up_follows_it",
                &tb,
                heketi_outage,
            ),
            harness::exclusive_trial(
                "controller_killed_mid_create_20_times_leaves_one_volume_per_name",
                &tb,
                controller_killed_mid_create,
            ),
            harness::exclusive_trial(
                "heketi_restart_during_a_burst_ends_every_operation_as_asked",
                &tb,
                heketi_restart_during_a_burst,
            ),
            harness::exclusive_trial(
                "gluster_host_lost_writes_resume_nothing_is_lost_and_bricks_heal",
                &tb,
                gluster_host_lost,
            ),
            harness::exclusive_trial(
                "no_secret_in_any_daemon_log_or_error_message",
                &tb,
                no_secret_anywhere,
            ),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

type Controller = ControllerClient<Channel>;
type Node = NodeClient<Channel>;

/// Every gRPC error message any trial received, for the secret check.
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note(s: &Status) {
    ERRORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(s.message().to_owned());
}

fn seen_errors() -> Vec<String> {
    ERRORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

async fn controller(tb: &Testbed) -> Result<Controller> {
    let ep = tb.env().controller_endpoint.clone();
    ControllerClient::connect(ep.clone())
        .await
        .with_context(|| format!("connecting to the controller at {ep}"))
}

async fn node_at(endpoint: &str) -> Result<Node> {
    NodeClient::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to the node plugin at {endpoint}"))
}

/// One gRPC call bounded by [`STEP`]; its error, if any, is noted for the secret check.
async fn call<T>(
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let r = match tokio::time::timeout(STEP, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what}: no answer within {STEP:?}"
        ))),
    };
    if let Err(s) = &r {
        note(s);
    }
    r
}

fn expect_code<T>(r: Result<T, Status>, want: Code, what: &str) -> Result<Status> {
    match r {
        Ok(_) => bail!("{what}: succeeded, {want:?} was expected"),
        Err(s) if s.code() == want => Ok(s),
        Err(s) => bail!(
            "{what}: {:?} {:?}, {want:?} was expected",
            s.code(),
            s.message()
        ),
    }
}

fn mount_cap(mode: Mode, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            volume_mount_group: String::new(),
        })),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A CSI name unique to this run.
fn csi_name(what: &str) -> String {
    format!("pvc-faults-{what}-{}", std::process::id())
}

fn create_req(name: &str, gib: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter, &[])],
        parameters: map(params),
        ..Default::default()
    }
}

fn ctx<'a>(v: &'a Volume, key: &str) -> Result<&'a str> {
    v.volume_context
        .get(key)
        .map(String::as_str)
        .with_context(|| format!("volume_context has no {key}: {:?}", v.volume_context))
}

/// The Heketi volume name the controller derives from `csi_name` (without a prefix).
fn heketi_name(csi_name: &str) -> String {
    let hash = hex::encode(Sha256::digest(csi_name.as_bytes()));
    format!("csi_{}", &hash[..20])
}

/// Codes the CSI sidecars retry: the call may still succeed later.
fn sidecar_retries(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Cancelled
            | Code::Unknown
    )
}

/// Retry codes seen, by name.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, usize>>);

impl Tally {
    fn add(&self, code: Code) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }

    fn total(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    fn show(&self) -> String {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if m.is_empty() {
            return "none".into();
        }
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Calls `op` the way the CSI sidecars do: each attempt bounded by [`CALL_TIMEOUT`], retried
/// with exponential backoff (0.5 s doubling up to 8 s) while the code is one they retry, for at
/// most [`SIDECAR_LIMIT`]. Each attempt connects anew, so a restarted server is found.
async fn sidecar<T, F, Fut>(what: &str, tally: &Tally, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    sidecar_with(what, tally, Duration::from_secs(8), op).await
}

/// [`sidecar`] with backoff capped at `max_pause`.
async fn sidecar_with<T, F, Fut>(
    what: &str,
    tally: &Tally,
    max_pause: Duration,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let until = Instant::now() + SIDECAR_LIMIT;
    let mut pause = Duration::from_millis(500);
    loop {
        let r = match tokio::time::timeout(CALL_TIMEOUT, op()).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(
                "the sidecar's call timeout passed",
            )),
        };
        match r {
            Ok(v) => return Ok(v),
            Err(s) => {
                note(&s);
                if !sidecar_retries(s.code()) || Instant::now() >= until {
                    bail!("{what}: {:?} {:?}", s.code(), s.message());
                }
                tally.add(s.code());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(max_pause);
            }
        }
    }
}

async fn create_sc(tb: &Testbed, tally: &Tally, req: CreateVolumeRequest) -> Result<Volume> {
    let what = format!("CreateVolume {}", req.name);
    sidecar(&what, tally, || {
        let req = req.clone();
        async move {
            let mut c = connect_status(tb).await?;
            c.create_volume(req)
                .await?
                .into_inner()
                .volume
                .ok_or_else(|| Status::internal("CreateVolume answered without a volume"))
        }
    })
    .await
}

async fn delete_sc(tb: &Testbed, tally: &Tally, volume_id: &str) -> Result<()> {
    sidecar(&format!("DeleteVolume {volume_id}"), tally, || async move {
        let mut c = connect_status(tb).await?;
        c.delete_volume(DeleteVolumeRequest {
            volume_id: volume_id.to_owned(),
            secrets: HashMap::new(),
        })
        .await
        .map(|_| ())
    })
    .await
}

async fn expand_sc(tb: &Testbed, tally: &Tally, volume_id: &str, gib: i64) -> Result<i64> {
    sidecar(
        &format!("ControllerExpandVolume {volume_id}"),
        tally,
        || async move {
            let mut c = connect_status(tb).await?;
            c.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume_id.to_owned(),
                capacity_range: Some(CapacityRange {
                    required_bytes: gib * GIB,
                    limit_bytes: 0,
                }),
                secrets: HashMap::new(),
                volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, &[])),
            })
            .await
            .map(|r| r.into_inner().capacity_bytes)
        },
    )
    .await
}

/// A controller connection whose failure is a gRPC status (a sidecar sees a refused socket as
/// UNAVAILABLE).
async fn connect_status(tb: &Testbed) -> Result<Controller, Status> {
    ControllerClient::connect(tb.env().controller_endpoint.clone())
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to the controller: {e}")))
}

/// Heketi's volumes by name: (id, size in GiB), read with list + info.
async fn heketi_volumes(tb: &Testbed) -> Result<BTreeMap<String, Vec<(String, u64)>>> {
    let h = tb.heketi_client()?;
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for id in h.volume_list().await?.volumes {
        match h.volume_info(&id).await {
            Ok(v) => out.entry(v.name).or_default().push((v.id, v.size)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The Gluster volumes glusterd knows (asked on host 1).
async fn gluster_volumes(tb: &Testbed) -> Result<BTreeSet<String>> {
    let out = tb.gluster(0, &["volume", "list"]).await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("No volumes present"))
        .map(str::to_owned)
        .collect())
}

/// Heketi and Gluster agree: every Gluster volume is a Heketi volume and the other way round,
/// and no name is held by two Heketi volumes. Returns the number of volumes.
async fn heketi_and_gluster_agree(tb: &Testbed) -> Result<usize> {
    let heketi = heketi_volumes(tb).await?;
    let gluster = gluster_volumes(tb).await?;
    let doubles: Vec<&String> = heketi
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(n, _)| n)
        .collect();
    ensure!(doubles.is_empty(), "Heketi names held twice: {doubles:?}");
    let names: BTreeSet<String> = heketi.keys().cloned().collect();
    let orphans: Vec<&String> = gluster.difference(&names).collect();
    ensure!(
        orphans.is_empty(),
        "Gluster volumes that Heketi does not know (orphans): {orphans:?}"
    );
    let missing: Vec<&String> = names.difference(&gluster).collect();
    ensure!(
        missing.is_empty(),
        "Heketi volumes that Gluster does not have: {missing:?}"
    );
    Ok(names.len())
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Runs a program (argv, never a shell) and fails on a non-zero exit.
async fn run(argv: &[&str]) -> Result<String> {
    let (program, args) = argv.split_first().context("empty argv")?;
    let out = tokio::time::timeout(
        STEP,
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .with_context(|| format!("{argv:?} hung"))??;
    ensure!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. Controller killed mid-create

/// Creates in flight at once while the controller is being killed.
const CREATORS: usize = 3;

async fn controller_killed_mid_create(tb: Arc<Testbed>) -> Result<()> {
    let tally = Arc::new(Tally::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    // Creators: each creates one name after the other, retrying each like the provisioner
    // sidecar until it succeeds, across every kill.
    let mut creators = Vec::new();
    for _ in 0..CREATORS {
        let (tb, tally, in_flight, stop, next) = (
            Arc::clone(&tb),
            Arc::clone(&tally),
            Arc::clone(&in_flight),
            Arc::clone(&stop),
            Arc::clone(&next),
        );
        creators.push(tokio::spawn(async move {
            let mut made: Vec<(String, Volume)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let name = csi_name(&format!("kill{}", next.fetch_add(1, Ordering::SeqCst)));
                let req = create_req(&name, 1, &[]);
                // Backoff capped at 1 s (the provisioner's starts at 1 s) keeps creates in
                // flight for the killer.
                let what = format!("CreateVolume {name}");
                let v = sidecar_with(&what, &tally, Duration::from_secs(1), || {
                    let (req, in_flight) = (req.clone(), Arc::clone(&in_flight));
                    let tb = Arc::clone(&tb);
                    async move {
                        let mut c = connect_status(&tb).await?;
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let r = c.create_volume(req).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        r?.into_inner().volume.ok_or_else(|| {
                            Status::internal("CreateVolume answered without a volume")
                        })
                    }
                })
                .await?;
                made.push((name, v));
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }

    // The killer: whenever a create is in flight, wait a random time and kill -9 the
    // controller, then start a new one; until KILLS kills have hit creates in flight.
    let seed: u64 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hits: Vec<usize> = Vec::new();
    let t = Instant::now();
    let killed: Result<()> = async {
        while hits.len() < KILLS {
            let wait = Instant::now();
            while in_flight.load(Ordering::SeqCst) == 0 {
                ensure!(
                    wait.elapsed() < STEP,
                    "no CreateVolume reached the controller for {STEP:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=2500))).await;
            let caught = in_flight.load(Ordering::SeqCst);
            if caught == 0 {
                // The call ended in the meantime: pick another moment.
                continue;
            }
            tb.kill_controller().await?;
            hits.push(caught);
            tb.start_controller().await?;
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut volumes: Vec<(String, Volume)> = Vec::new();
    for c in creators {
        volumes.extend(c.await??);
    }
    killed?;
    let killing = t.elapsed();

    // Every name ends with exactly one Heketi volume, and Gluster has no other.
    let heketi = heketi_volumes(&tb).await?;
    for (name, v) in &volumes {
        let vol = ctx(v, "glusterVolume")?;
        ensure!(vol == heketi_name(name), "{vol} for {name}");
        let held = heketi.get(vol).map_or(0, Vec::len);
        ensure!(held == 1, "{held} Heketi volumes named {vol} ({name})");
    }
    let total = heketi_and_gluster_agree(&tb).await?;

    // DeleteVolume removes each, six at a time.
    for chunk in volumes.chunks(6) {
        let mut calls = Vec::new();
        for (_, v) in chunk {
            let (tb, tally, id) = (Arc::clone(&tb), Arc::clone(&tally), v.volume_id.clone());
            calls.push(tokio::spawn(
                async move { delete_sc(&tb, &tally, &id).await },
            ));
        }
        for c in calls {
            c.await??;
        }
    }
    let heketi = heketi_volumes(&tb).await?;
    let gluster = gluster_volumes(&tb).await?;
    let left: Vec<String> = volumes
        .iter()
        .map(|(n, _)| heketi_name(n))
        .filter(|n| heketi.contains_key(n) || gluster.contains(n))
        .collect();
    ensure!(left.is_empty(), "volumes left after DeleteVolume: {left:?}");
    heketi_and_gluster_agree(&tb).await?;
    let names = volumes.len();
    println!(
        "faults: {KILLS}/{KILLS} kill -9 of the controller with CreateVolume in flight (creates \
         in flight at each: {hits:?}; over {:.0}s, seed {seed}), each \
         followed by a new controller and sidecar-style retries ({}); {names} names -> {names} \
         Heketi volumes (exactly 1 each), {total} Gluster volumes = {total} Heketi volumes, 0 \
         orphan volumes; {names}/{names} removed by DeleteVolume",
        killing.as_secs_f64(),
        tally.show()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. heketi-server restarted during a burst

async fn heketi_restart_during_a_burst(tb: Arc<Testbed>) -> Result<()> {
    let setup = Tally::default();
    // Volumes to expand and to delete during the burst.
    let mut pre = Vec::new();
    for i in 0..6 {
        let tb = Arc::clone(&tb);
        pre.push(tokio::spawn(async move {
            let tally = Tally::default();
            create_sc(
                &tb,
                &tally,
                create_req(&csi_name(&format!("burst-pre{i}")), 1, &[]),
            )
            .await
        }));
    }
    let mut existing = Vec::new();
    for p in pre {
        existing.push(p.await??);
    }
    let (to_expand, to_delete) = existing.split_at(3);
    let tally = Arc::new(Tally::default());

    enum Outcome {
        Created(String, Volume),
        Expanded(Volume, i64),
        Deleted(Volume),
    }
    let mut ops: Vec<tokio::task::JoinHandle<Result<Outcome>>> = Vec::new();
    for i in 0..4 {
        let (tb, tally) = (Arc::clone(&tb), Arc::clone(&tally));
        ops.push(tokio::spawn(async move {
            let name = csi_name(&format!("burst-new{i}"));
            let v = create_sc(&tb, &tally, create_req(&name, 1, &[])).await?;
            Ok(Outcome::Created(name, v))
        }));
    }
    for v in to_expand {
        let (tb, tally, v) = (Arc::clone(&tb), Arc::clone(&tally), v.clone());
        ops.push(tokio::spawn(async move {
            let cap = expand_sc(&tb, &tally, &v.volume_id, 2).await?;
            Ok(Outcome::Expanded(v, cap))
        }));
    }
    for v in to_delete {
        let (tb, tally, v) = (Arc::clone(&tb), Arc::clone(&tally), v.clone());
        ops.push(tokio::spawn(async move {
            delete_sc(&tb, &tally, &v.volume_id).await?;
            Ok(Outcome::Deleted(v))
        }));
    }
    let n_ops = ops.len();

    // kill -9 while the operations are in Heketi's hands, then start it again.
    let kill_after = Duration::from_millis(rand::rng().random_range(300..=1500));
    tokio::time::sleep(kill_after).await;
    let t = Instant::now();
    tb.kill_heketi().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tb.start_heketi().await?;
    let down = t.elapsed();

    let mut outcomes = Vec::new();
    for op in ops {
        outcomes.push(op.await??);
    }
    let heketi = heketi_volumes(&tb).await?;
    let mut c = controller(&tb).await?;
    let listed: BTreeSet<String> = call(
        "ListVolumes",
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: String::new(),
        }),
    )
    .await?
    .entries
    .into_iter()
    .filter_map(|e| e.volume.map(|v| v.volume_id))
    .collect();
    let mut keep = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Created(name, v) => {
                let vol = ctx(v, "glusterVolume")?;
                ensure!(vol == heketi_name(name), "{vol} for {name}");
                let held = heketi.get(vol).cloned().unwrap_or_default();
                ensure!(
                    held.len() == 1 && held[0].1 == 1,
                    "created {name}: Heketi holds {held:?}"
                );
                ensure!(listed.contains(&v.volume_id), "ListVolumes lacks {name}");
                keep.push(v.volume_id.clone());
            }
            Outcome::Expanded(v, cap) => {
                let vol = ctx(v, "glusterVolume")?;
                let held = heketi.get(vol).cloned().unwrap_or_default();
                ensure!(
                    *cap >= 2 * GIB && held.len() == 1 && held[0].1 == 2,
                    "expanded {vol} (reply {cap} bytes): Heketi holds {held:?}"
                );
                ensure!(listed.contains(&v.volume_id), "ListVolumes lacks {vol}");
                keep.push(v.volume_id.clone());
            }
            Outcome::Deleted(v) => {
                let vol = ctx(v, "glusterVolume")?;
                ensure!(
                    !heketi.contains_key(vol),
                    "deleted {vol} is still in Heketi"
                );
                ensure!(!listed.contains(&v.volume_id), "deleted {vol} still listed");
                let r = call(
                    "ControllerGetVolume",
                    c.controller_get_volume(ControllerGetVolumeRequest {
                        volume_id: v.volume_id.clone(),
                    }),
                )
                .await;
                expect_code(r, Code::NotFound, "ControllerGetVolume of a deleted volume")?;
            }
        }
    }
    let total = heketi_and_gluster_agree(&tb).await?;
    println!(
        "faults: heketi-server killed -9 {:.1}s into a burst of {n_ops} operations (4 creates, 3 \
         expands, 3 deletes) and back after {:.1}s; {n_ops}/{n_ops} ended as asked with {} \
         sidecar-style retries ({}); {total} Gluster volumes = {total} Heketi volumes, 0 that \
         neither side knows",
        kill_after.as_secs_f64(),
        down.as_secs_f64(),
        tally.total(),
        tally.show()
    );
    for id in keep {
        delete_sc(&tb, &setup, &id).await?;
    }
    heketi_and_gluster_agree(&tb).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. A Gluster host lost

/// What the writer acknowledged: record number and when its `fdatasync` returned.
#[derive(Default)]
struct Acks {
    acked: Vec<(u64, Instant)>,
    errors: Vec<String>,
}

/// Appends numbered records to `file`, each made durable with `fdatasync` before it counts,
/// until `stop` is set. Runs on a thread of its own: a write to a cut-off volume blocks.
fn writer(file: PathBuf, stop: Arc<AtomicBool>, acks: Arc<Mutex<Acks>>) {
    use std::io::Write as _;
    let mut f = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
    {
        Ok(f) => f,
        Err(e) => {
            acks.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .errors
                .push(format!("open: {e}"));
            return;
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let r = f
            .write_all(format!("record {n:08}\n").as_bytes())
            .and_then(|()| f.sync_data());
        let mut a = acks.lock().unwrap_or_else(PoisonError::into_inner);
        match r {
            Ok(()) => {
                a.acked.push((n, Instant::now()));
                n += 1;
            }
            Err(e) => a.errors.push(format!("record {n}: {e}")),
        }
        drop(a);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `gluster volume heal VOL info` prints, asked on host 1. The CLI runs `glfsheal`, which
/// reaches glusterd on its default socket only (the CLI does not pass `--glusterd-sock` on), so
/// it is run directly here with the host's socket.
async fn heal_info(tb: &Testbed, vol: &str) -> Result<String> {
    let mut candidates = vec![
        PathBuf::from("/usr/libexec/glusterfs/glfsheal"),
        PathBuf::from("/usr/sbin/glfsheal"),
    ];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        for d in dirs.flatten() {
            candidates.push(d.path().join("glusterfs/glfsheal"));
        }
    }
    let glfsheal = candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("glfsheal (part of glusterfs-server) not found")?;
    let h = tb.hosts().first().context("no hosts")?;
    let (prog, sock) = (
        glfsheal.display().to_string(),
        h.glusterd_socket.display().to_string(),
    );
    run(&[
        "ip",
        "netns",
        "exec",
        &h.netns,
        &prog,
        vol,
        "glusterd-sock",
        &sock,
    ])
    .await
}

/// Heal info text: (entries on connected bricks, bricks not connected).
fn heal_counts(info: &str) -> (u64, usize) {
    let mut entries = 0;
    let mut down = 0;
    for line in info.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix("Status:")
            && s.trim() != "Connected"
        {
            down += 1;
        }
        if let Some(n) = line.strip_prefix("Number of entries:")
            && let Ok(n) = n.trim().parse::<u64>()
        {
            entries += n;
        }
    }
    (entries, down)
}

async fn gluster_host_lost(tb: Arc<Testbed>) -> Result<()> {
    let tally = Tally::default();
    let name = csi_name("hostloss");
    let opt = format!("network.ping-timeout {PING_TIMEOUT}");
    let v = create_sc(
        &tb,
        &tally,
        create_req(
            &name,
            1,
            &[("volumetype", "replicate:3"), ("volumeoptions", &opt)],
        ),
    )
    .await?;
    let vol = ctx(&v, "glusterVolume")?.to_owned();
    let info = tb.gluster(0, &["volume", "info", &vol]).await?;
    ensure!(
        info.contains(&format!("network.ping-timeout: {PING_TIMEOUT}")),
        "the volume option did not reach Gluster:\n{info}"
    );
    let dir = tb.scratch_dir("hostloss")?;
    let staging = dir.join("staging");
    let target = dir.join("target");
    let mut n = node_at(&tb.env().node_endpoint).await?;
    let cap = mount_cap(Mode::MultiNodeMultiWriter, &[]);
    call(
        "NodeStageVolume",
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        }),
    )
    .await?;
    call(
        "NodePublishVolume",
        n.node_publish_volume(NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        }),
    )
    .await?;

    let lost = tb.hosts().last().context("no hosts")?.clone();
    let heketi_id = ctx(&v, "heketiVolumeId")?.to_owned();
    let bricks: Vec<PathBuf> = tb
        .heketi_client()?
        .volume_info(&heketi_id)
        .await?
        .bricks
        .into_iter()
        .map(|b| PathBuf::from(b.path))
        .collect();
    ensure!(bricks.len() == 3, "{} bricks: {bricks:?}", bricks.len());
    let lost_brick = bricks
        .iter()
        .find(|b| b.starts_with(tb.brick_root(lost.index)))
        .context("no brick on the host to cut off")?
        .clone();
    let kept_brick = bricks
        .iter()
        .find(|b| **b != lost_brick)
        .context("no other brick")?
        .clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let file = target.join("records.log");
    let w = {
        let (file, stop, acks) = (file.clone(), Arc::clone(&stop), Arc::clone(&acks));
        std::thread::spawn(move || writer(file, stop, acks))
    };
    // Watched from the hosts' disks.
    let (lost_brick, kept_brick) = (tb.path_on_disk(&lost_brick), tb.path_on_disk(&kept_brick));
    let outcome = cut_and_measure(&lost.veth, [&lost_brick, &kept_brick], &acks).await;
    stop.store(true, Ordering::SeqCst);
    // Always bring the host back, whatever happened.
    let restored = run(&["ip", "link", "set", &lost.veth, "up"]).await;
    let (stall, behind) = outcome?;
    restored?;
    // The writer's last write returns once the volume serves again.
    let joined = tokio::time::timeout(STEP, tokio::task::spawn_blocking(move || w.join()))
        .await
        .context("the writer's last write did not return after the host came back")?;
    ensure!(matches!(joined, Ok(Ok(()))), "the writer thread panicked");

    // Self-heal: start it and wait until no brick has entries left.
    let t = Instant::now();
    let healed = loop {
        let _ = tb.gluster(0, &["volume", "heal", &vol]).await;
        let info = heal_info(&tb, &vol)
            .await
            .unwrap_or_else(|e| format!("{e:#}"));
        let (entries, down) = heal_counts(&info);
        if entries == 0 && down == 0 && info.contains("Number of entries") {
            break t.elapsed();
        }
        ensure!(
            t.elapsed() < STEP,
            "self-heal did not finish within {STEP:?}:\n{info}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    // Nothing acknowledged is lost.
    let (acked, errors) = {
        let a = acks.lock().unwrap_or_else(PoisonError::into_inner);
        (
            a.acked.iter().map(|(n, _)| *n).collect::<Vec<u64>>(),
            a.errors.clone(),
        )
    };
    let text = std::fs::read_to_string(&file)?;
    let present: BTreeSet<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("record ")?.parse().ok())
        .collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged records are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // The three bricks hold the same file.
    let through_mount = hex::encode(Sha256::digest(text.as_bytes()));
    let mut sums = Vec::new();
    for b in &bricks {
        sums.push(sha256_file(&tb.path_on_disk(b).join("records.log"))?);
    }
    ensure!(
        sums.iter().all(|s| *s == through_mount),
        "brick copies differ: {sums:?}, mount {through_mount}"
    );
    println!(
        "faults: host {} cut off ({}) under a writer: longest stall {:.1}s (ping-timeout \
         {PING_TIMEOUT}s), writes resumed; its brick copy fell {behind} bytes behind while it \
         was away, healed {:.1}s after its return; {}/{} acknowledged records present ({} write \
         errors), 3/3 brick copies identical (sha256 {})",
        lost.name,
        lost.veth,
        stall.as_secs_f64(),
        healed.as_secs_f64(),
        acked.len(),
        acked.len(),
        errors.len(),
        &through_mount[..12]
    );

    call(
        "NodeUnpublishVolume",
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        }),
    )
    .await?;
    call(
        "NodeUnstageVolume",
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        }),
    )
    .await?;
    delete_sc(&tb, &tally, &v.volume_id).await?;
    Ok(())
}

/// Lets the writer run, cuts `veth`, and waits until writes flow again. Returns the longest gap
/// between acknowledged writes after the cut, and how many bytes the cut-off brick fell behind.
async fn cut_and_measure(
    veth: &str,
    [lost_brick, kept_brick]: [&Path; 2],
    acks: &Mutex<Acks>,
) -> Result<(Duration, u64)> {
    let count = || {
        acks.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acked
            .len()
    };
    let t = Instant::now();
    while count() < 50 {
        ensure!(
            t.elapsed() < STEP,
            "the writer made no progress before the cut: {:?}",
            acks.lock().unwrap_or_else(PoisonError::into_inner).errors
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(&["ip", "link", "set", veth, "down"]).await?;
    let cut = Instant::now();
    // Resumed: 20 writes acknowledged later than ping-timeout + 2 s after the cut.
    let settle = cut + Duration::from_secs(PING_TIMEOUT + 2);
    loop {
        let after = acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acked
            .iter()
            .filter(|(_, at)| *at > settle)
            .count();
        if after >= 20 {
            break;
        }
        ensure!(
            cut.elapsed() < RESUME_BOUND,
            "writes did not resume within {RESUME_BOUND:?} of cutting the host off ({after} \
             since); errors: {:?}",
            acks.lock().unwrap_or_else(PoisonError::into_inner).errors
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stall = {
        let a = acks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = cut;
        let mut longest = Duration::ZERO;
        for (_, at) in a.acked.iter().filter(|(_, at)| *at > cut) {
            longest = longest.max(at.duration_since(last));
            last = *at;
        }
        longest
    };
    // The cut was real: the cut-off host's brick copy stopped growing.
    let size = |b: &Path| std::fs::metadata(b.join("records.log")).map_or(0, |m| m.len());
    let (lost, kept) = (size(lost_brick), size(kept_brick));
    ensure!(
        lost < kept,
        "with its host cut off, brick {} still grew like the others ({lost} vs {kept} bytes)",
        lost_brick.display()
    );
    Ok((stall, kept - lost))
}

// ---------------------------------------------------------------------------------------------
// 4. Backend down

/// Runs `fut` and says how long it took.
async fn timed(
    what: &'static str,
    fut: impl Future<Output = Result<(), Status>>,
) -> (&'static str, Duration, Result<(), Status>) {
    let t = Instant::now();
    let r = fut.await;
    (what, t.elapsed(), r)
}

async fn backend_down(tb: Arc<Testbed>) -> Result<()> {
    let tally = Tally::default();
    let existing = create_sc(&tb, &tally, create_req(&csi_name("down-existing"), 1, &[])).await?;
    let mut c = controller(&tb).await?;
    let mut idc = IdentityClient::connect(tb.env().controller_endpoint.clone()).await?;
    let probe = call("Probe", idc.probe(ProbeRequest {})).await?;
    ensure!(probe.ready == Some(true), "not ready before: {probe:?}");

    tb.kill_heketi().await?;
    // The calls run side by side (each timed on its own), as the sidecars would make them.
    let (mut c1, mut c2, mut c3, mut c4, mut id2) =
        (c.clone(), c.clone(), c.clone(), c.clone(), idc.clone());
    let existing_id = existing.volume_id.clone();
    let (create, delete, list, capacity, probe) = tokio::join!(
        timed("CreateVolume", async move {
            let req = create_req(&csi_name("down-new"), 1, &[]);
            call("CreateVolume", c1.create_volume(req))
                .await
                .map(|_| ())
        }),
        timed("DeleteVolume", async move {
            let req = DeleteVolumeRequest {
                volume_id: existing_id,
                secrets: HashMap::new(),
            };
            call("DeleteVolume", c2.delete_volume(req))
                .await
                .map(|_| ())
        }),
        timed("ListVolumes", async move {
            let req = ListVolumesRequest {
                max_entries: 0,
                starting_token: String::new(),
            };
            call("ListVolumes", c3.list_volumes(req)).await.map(|_| ())
        }),
        timed("GetCapacity", async move {
            let req = GetCapacityRequest::default();
            call("GetCapacity", c4.get_capacity(req)).await.map(|_| ())
        }),
        // Liveness does not follow Heketi: Probe stays ready.
        timed("Probe", async move {
            match call("Probe", id2.probe(ProbeRequest {})).await {
                Ok(p) if p.ready == Some(true) => Ok(()),
                Ok(p) => Err(Status::internal(format!("Probe answered {p:?}"))),
                Err(s) => Err(s),
            }
        }),
    );
    let r: Result<Vec<(String, Duration)>> = (|| {
        let mut figures = Vec::new();
        for (what, took, r) in [create, delete, list, capacity] {
            expect_code(
                r,
                Code::Unavailable,
                &format!("{what} with heketi-server down"),
            )?;
            ensure!(took < QUICK, "{what} took {took:?} with heketi-server down");
            figures.push((what.to_owned(), took));
        }
        let (what, took, r) = probe;
        r.map_err(|s| anyhow::anyhow!("Probe with heketi-server down: {s:?}"))?;
        ensure!(took < QUICK, "Probe took {took:?} with heketi-server down");
        figures.push((what.to_owned(), took));
        Ok(figures)
    })();
    // Back, whatever happened; the same controller process serves on.
    tb.start_heketi().await?;
    let figures = r?;

    let p = call("Probe", idc.probe(ProbeRequest {})).await?;
    ensure!(
        p.ready == Some(true),
        "Probe not ready after heketi-server returned: {p:?}"
    );
    // The same connection to the same controller: no restart in between.
    let again = call(
        "CreateVolume",
        c.create_volume(create_req(&csi_name("down-new"), 1, &[])),
    )
    .await?
    .volume
    .context("no volume")?;
    let listed = call(
        "ListVolumes",
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: String::new(),
        }),
    )
    .await?;
    let ids: BTreeSet<String> = listed
        .entries
        .into_iter()
        .filter_map(|e| e.volume.map(|v| v.volume_id))
        .collect();
    ensure!(
        ids.contains(&again.volume_id) && ids.contains(&existing.volume_id),
        "ListVolumes after the return lacks a volume: {ids:?}"
    );
    for id in [&again.volume_id, &existing.volume_id] {
        call(
            "DeleteVolume",
            c.delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: HashMap::new(),
            }),
        )
        .await?;
    }
    heketi_and_gluster_agree(&tb).await?;
    println!(
        "faults: heketi-server stopped -> {}: UNAVAILABLE (Probe: ready); started again -> \
         Probe ready, create, list and 2 deletes OK on the same controller connection",
        figures
            .iter()
            .map(|(w, t)| format!("{w} {} ms", t.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// A controller of this trial's own with `--metrics-address`, against the testbed's
/// heketi-server; killed when dropped.
struct MetricsController {
    _child: tokio::process::Child,
    endpoint: String,
    metrics: std::net::SocketAddr,
    log: PathBuf,
}

impl MetricsController {
    async fn start(tb: &Testbed, name: &str) -> Result<Self> {
        let dir = tb.scratch_dir(name)?;
        let socket = dir.join("csi.sock");
        let _ = std::fs::remove_file(&socket);
        let endpoint = format!("unix://{}", socket.display());
        let metrics = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let log = dir.join("controller.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let env = tb.env();
        let mut child = tokio::process::Command::new(bin_path("gluster-csi-controller")?)
            .arg("--endpoint")
            .arg(&endpoint)
            .arg("--heketi-url")
            .arg(&env.heketi_url)
            .arg("--heketi-key-file")
            .arg(&env.heketi_key_file)
            .arg("--metrics-address")
            .arg(metrics.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting gluster-csi-controller")?;
        let t = Instant::now();
        loop {
            if ControllerClient::connect(endpoint.clone()).await.is_ok() {
                return Ok(Self {
                    _child: child,
                    endpoint,
                    metrics,
                    log,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "gluster-csi-controller exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "the controller did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of `gluster_csi_controller_heketi_up{backend="URL"}`, read over HTTP from
    /// `--metrics-address`; `None` while the series does not exist yet.
    async fn heketi_up(&self, url: &str) -> Result<Option<u8>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await?;
        let mut page = String::new();
        tokio::time::timeout(STEP, stream.read_to_string(&mut page))
            .await
            .context("the metrics scrape hung")??;
        ensure!(page.starts_with("HTTP/1.1 200"), "{page}");
        let series = format!("gluster_csi_controller_heketi_up{{backend=\"{url}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| {
                v.trim()
                    .parse::<u8>()
                    .with_context(|| format!("{series}{v}"))
            })
            .transpose()
    }

    /// Waits until `heketi_up` for `url` reads `want`; returns how long that took.
    async fn await_heketi_up(&self, url: &str, want: u8) -> Result<Duration> {
        let t = Instant::now();
        loop {
            if self.heketi_up(url).await? == Some(want) {
                return Ok(t.elapsed());
            }
            ensure!(
                t.elapsed() < HEALTH_LAG,
                "heketi_up{{backend={url:?}}} did not become {want} within {HEALTH_LAG:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What the outage showed, for the report line.
#[derive(Default)]
struct OutageFigures {
    probes: usize,
    slowest_probe: Duration,
    creates: usize,
    create_latencies: Vec<Duration>,
    up_to_0: Duration,
}

/// heketi-server stopped for [`OUTAGE`] under a controller with metrics: Probe, CreateVolume
/// and `heketi_up` observed throughout.
async fn heketi_outage(tb: Arc<Testbed>) -> Result<()> {
    let own = MetricsController::start(&tb, "outage").await?;
    let url = tb.env().heketi_url.clone();
    own.await_heketi_up(&url, 1).await?;
    let mut c = ControllerClient::connect(own.endpoint.clone()).await?;
    let mut idc = IdentityClient::connect(own.endpoint.clone()).await?;
    let name = csi_name("outage");

    tb.kill_heketi().await?;
    let stopped = Instant::now();
    let during: Result<OutageFigures> = async {
        let mut f = OutageFigures::default();
        let mut next_create = Instant::now();
        let mut seen_down = false;
        while stopped.elapsed() < OUTAGE {
            let t = Instant::now();
            let p = call("Probe", idc.probe(ProbeRequest {})).await?;
            let took = t.elapsed();
            ensure!(
                p.ready == Some(true),
                "Probe {} s into the outage: {p:?}",
                stopped.elapsed().as_secs()
            );
            f.probes += 1;
            f.slowest_probe = f.slowest_probe.max(took);
            if Instant::now() >= next_create {
                // What external-provisioner does for a PVC while Heketi is down.
                let t = Instant::now();
                let r = call("CreateVolume", c.create_volume(create_req(&name, 1, &[]))).await;
                let took = t.elapsed();
                expect_code(r, Code::Unavailable, "CreateVolume with heketi-server down")?;
                ensure!(
                    took < QUICK,
                    "CreateVolume took {took:?} with heketi-server down"
                );
                f.creates += 1;
                f.create_latencies.push(took);
                next_create = Instant::now() + Duration::from_secs(10);
            }
            if !seen_down && own.heketi_up(&url).await? == Some(0) {
                seen_down = true;
                f.up_to_0 = stopped.elapsed();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ensure!(
            seen_down,
            "heketi_up{{backend={url:?}}} never read 0 during {OUTAGE:?} of outage"
        );
        ensure!(
            own.heketi_up(&url).await? == Some(0),
            "heketi_up is not 0 at the end of the outage"
        );
        Ok(f)
    }
    .await;
    let outage = stopped.elapsed();
    // Back, whatever happened.
    tb.start_heketi().await?;
    let f = during?;
    let returned = Instant::now();

    // The first create after the return succeeds, on the same controller process.
    let t = Instant::now();
    let v = call("CreateVolume", c.create_volume(create_req(&name, 1, &[])))
        .await
        .map_err(|s| anyhow::anyhow!("the first CreateVolume after the return: {s:?}"))?
        .volume
        .context("no volume")?;
    let first_create = t.elapsed();
    own.await_heketi_up(&url, 1).await?;
    // An upper bound: read after the create, counted from heketi-server's first /hello answer.
    let up_again = returned.elapsed();
    call(
        "DeleteVolume",
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: HashMap::new(),
        }),
    )
    .await?;
    heketi_and_gluster_agree(&tb).await?;
    // One log line per change, none per check: six checks failed during the outage.
    let log = std::fs::read_to_string(&own.log)?;
    let count = |phrase: &str| log.lines().filter(|l| l.contains(phrase)).count();
    let (went, came) = (
        count("Heketi stopped answering"),
        count("Heketi answers again"),
    );
    ensure!(
        (went, came) == (1, 1),
        "log lines: {went} 'stopped answering', {came} 'answers again'; one each was expected"
    );
    let mut lat = f.create_latencies.clone();
    lat.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "faults: heketi-server stopped {} s: {} Probe calls all ready (slowest {} ms); {} \
         CreateVolume calls UNAVAILABLE in {}..{} ms; heketi_up 1 -> 0 after {} s; back -> \
         first CreateVolume OK in {} ms on the same controller, heketi_up 0 -> 1 within {} s; \
         one log line each way",
        outage.as_secs(),
        f.probes,
        ms(f.slowest_probe),
        f.creates,
        lat.first().map_or(0, |d| ms(*d)),
        lat.last().map_or(0, |d| ms(*d)),
        f.up_to_0.as_secs_f32(),
        ms(first_create),
        up_again.as_secs_f32(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Injection and paths

/// A node plugin of this test's own, with `--kubelet-dir`, in the host's pid namespace.
struct OwnNode {
    child: tokio::process::Child,
    endpoint: String,
    socket: PathBuf,
    kubelet: PathBuf,
    log: PathBuf,
}

impl OwnNode {
    async fn start(tb: &Testbed, name: &str) -> Result<OwnNode> {
        let dir = tb.scratch_dir(name)?;
        let kubelet = dir.join("kubelet");
        std::fs::create_dir_all(&kubelet)?;
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let log = dir.join("node-plugin.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = tokio::process::Command::new(bin_path("gluster-csi-node")?)
            .arg("--endpoint")
            .arg(&endpoint)
            .arg("--node-id")
            .arg("faults-node")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--kubelet-dir")
            .arg(&kubelet)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting gluster-csi-node")?;
        let mut me = OwnNode {
            child,
            endpoint,
            socket,
            kubelet,
            log,
        };
        let t = Instant::now();
        loop {
            if tokio::net::UnixStream::connect(&me.socket).await.is_ok() {
                return Ok(me);
            }
            if let Some(status) = me.child.try_wait()? {
                bail!(
                    "gluster-csi-node exited with {status}: {}",
                    std::fs::read_to_string(&me.log).unwrap_or_default()
                );
            }
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "the node plugin did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn injection_and_bad_paths(tb: Arc<Testbed>) -> Result<()> {
    let pwned = PathBuf::from(format!("/tmp/gcsi-pwned-{}", std::process::id()));
    let p = pwned.display().to_string();
    let mut c = controller(&tb).await?;

    // volumeoptions.
    let option_cases: Vec<(&str, String)> = vec![
        (
            "semicolon",
            format!("performance.quick-read off; touch {p}"),
        ),
        (
            "semicolon in the value",
            format!("performance.quick-read off;touch{p}"),
        ),
        (
            "command substitution",
            format!("performance.quick-read $(touch {p})"),
        ),
        ("backticks", format!("performance.quick-read `touch {p}`")),
        ("pipe", format!("performance.quick-read off|touch {p}")),
        ("and-and", format!("performance.quick-read off&&touch {p}")),
        ("redirect", format!("performance.quick-read off>{p}")),
        ("newline", format!("performance.quick-read off\ntouch {p}")),
        (
            "newline and a second gluster command",
            "performance.quick-read off\nvolume stop x".to_owned(),
        ),
        (
            "a second gluster command after a comma",
            "performance.quick-read off,volume delete x".to_owned(),
        ),
        (
            "a third word",
            "performance.quick-read off --mode=script".to_owned(),
        ),
        ("quotes", "performance.quick-read 'off'".to_owned()),
        ("glob", "performance.quick-read *".to_owned()),
        ("option name with shell", format!("x;touch{p} on")),
    ];
    let mut refused = 0;
    for (i, (what, value)) in option_cases.iter().enumerate() {
        let name = csi_name(&format!("inject{i}"));
        let r = call(
            "CreateVolume",
            c.create_volume(create_req(&name, 1, &[("volumeoptions", value)])),
        )
        .await;
        expect_code(r, Code::InvalidArgument, &format!("volumeoptions {what}"))?;
        refused += 1;
    }
    let heketi = heketi_volumes(&tb).await?;
    for i in 0..option_cases.len() {
        let n = heketi_name(&csi_name(&format!("inject{i}")));
        ensure!(!heketi.contains_key(&n), "a refused create left {n}");
    }
    // The same option without the attack works and reaches Gluster.
    let tally = Tally::default();
    let good = create_sc(
        &tb,
        &tally,
        create_req(
            &csi_name("inject-ok"),
            1,
            &[("volumeoptions", "performance.quick-read off")],
        ),
    )
    .await?;
    let vol = ctx(&good, "glusterVolume")?.to_owned();
    let info = tb.gluster(0, &["volume", "info", &vol]).await?;
    ensure!(
        info.contains("performance.quick-read: off"),
        "the good option did not reach Gluster:\n{info}"
    );

    // mount_flags, paths and the volume context at a node plugin limited to its kubelet dir.
    let node = OwnNode::start(&tb, "inject-node").await?;
    let r = node_injection(&tb, &node, &good, &p).await;
    let node_log = std::fs::read_to_string(&node.log).unwrap_or_default();
    drop(node);
    let (flags_refused, paths_refused) =
        r.map_err(|e| e.context(format!("node plugin log:\n{node_log}")))?;

    delete_sc(&tb, &tally, &good.volume_id).await?;
    ensure!(
        !pwned.exists(),
        "{} exists: something ran an injected command",
        pwned.display()
    );
    println!(
        "faults: {refused}/{} volumeoptions attacks, {flags_refused} mount-flag attacks and \
         {paths_refused} bad paths/contexts -> INVALID_ARGUMENT; no Heketi volume made for \
         them; {} never created; the same option and paths without the attack work",
        option_cases.len(),
        pwned.display()
    );
    Ok(())
}

/// Returns (mount-flag cases refused, path and context cases refused).
async fn node_injection(
    tb: &Testbed,
    node: &OwnNode,
    v: &Volume,
    pwned: &str,
) -> Result<(usize, usize)> {
    let mut n = node_at(&node.endpoint).await?;
    let k = node.kubelet.clone();
    let staging = k.join("plugins/kubernetes.io/csi/gluster.heketi.csi/inject/globalmount");
    let target = k.join("pods/p1/volumes/kubernetes.io~csi/inject/mount");
    let outside = tb.scratch_dir("inject-outside")?;
    let stage =
        |path: &Path, flags: &[&str], context: HashMap<String, String>| NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: path.display().to_string(),
            volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, flags)),
            volume_context: context,
            ..Default::default()
        };

    let flag_cases: Vec<(&str, String)> = vec![
        ("semicolon", format!("log-level=ERROR;touch {pwned}")),
        ("command substitution", format!("$(touch {pwned})")),
        ("backticks", "`id`".to_owned()),
        ("pipe", "acl|id".to_owned()),
        ("space", "acl noatime".to_owned()),
        ("newline", format!("ro\ntouch {pwned}")),
        (
            "comma smuggles log-file",
            "acl,log-file=/etc/passwd".to_owned(),
        ),
        (
            "comma smuggles a volfile server",
            "acl,backup-volfile-servers=6.6.6.6".to_owned(),
        ),
        ("volfile-server", "volfile-server=6.6.6.6".to_owned()),
        ("leading dash", "-o".to_owned()),
        ("empty item", "acl,,ro".to_owned()),
    ];
    for (what, flag) in &flag_cases {
        let r = call(
            "NodeStageVolume",
            n.node_stage_volume(stage(&staging, &[flag], v.volume_context.clone())),
        )
        .await;
        expect_code(r, Code::InvalidArgument, &format!("mount flag {what}"))?;
    }

    let mut bad_volume = v.volume_context.clone();
    bad_volume.insert("glusterVolume".into(), format!("x;touch {pwned}"));
    let mut bad_servers = v.volume_context.clone();
    bad_servers.insert("glusterServers".into(), format!("$(touch {pwned})"));
    let path_cases: Vec<(&str, NodeStageVolumeRequest)> = vec![
        (
            "staging path with ..",
            stage(
                &k.join("plugins/../../../../etc/globalmount"),
                &[],
                v.volume_context.clone(),
            ),
        ),
        (
            "staging path outside the kubelet dir",
            stage(&outside.join("globalmount"), &[], v.volume_context.clone()),
        ),
        (
            "staging path is the kubelet dir",
            stage(&k, &[], v.volume_context.clone()),
        ),
        (
            "relative staging path",
            stage(
                Path::new("plugins/x/globalmount"),
                &[],
                v.volume_context.clone(),
            ),
        ),
        ("shell in the volume name", stage(&staging, &[], bad_volume)),
        ("shell in the servers", stage(&staging, &[], bad_servers)),
    ];
    let mut paths_refused = 0;
    for (what, req) in path_cases {
        let r = call("NodeStageVolume", n.node_stage_volume(req)).await;
        expect_code(r, Code::InvalidArgument, what)?;
        paths_refused += 1;
    }
    ensure!(!staging.exists(), "a refused stage created the staging dir");
    ensure!(
        std::fs::read_dir(&outside)?.next().is_none(),
        "a refused stage wrote outside the kubelet dir"
    );

    // The good stage, then publish with bad targets, then the good publish.
    call(
        "NodeStageVolume",
        n.node_stage_volume(stage(&staging, &["noatime"], v.volume_context.clone())),
    )
    .await?;
    let publish = |t: &Path| NodePublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: t.display().to_string(),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, &[])),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    };
    let bad_targets: Vec<(&str, PathBuf)> = vec![
        ("target with ..", k.join("pods/p1/../../../etc/mount")),
        ("target outside the kubelet dir", outside.join("mount")),
        ("target is the kubelet dir", k.clone()),
        ("target /", PathBuf::from("/")),
    ];
    for (what, t) in &bad_targets {
        let r = call("NodePublishVolume", n.node_publish_volume(publish(t))).await;
        expect_code(r, Code::InvalidArgument, what)?;
        paths_refused += 1;
    }
    ensure!(
        std::fs::read_dir(&outside)?.next().is_none(),
        "a refused publish wrote outside the kubelet dir"
    );
    call("NodePublishVolume", n.node_publish_volume(publish(&target))).await?;
    std::fs::write(target.join("hello"), b"inject-ok")?;
    ensure!(std::fs::read(staging.join("hello"))? == b"inject-ok");
    call(
        "NodeUnpublishVolume",
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        }),
    )
    .await?;
    call(
        "NodeUnstageVolume",
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        }),
    )
    .await?;
    Ok((flag_cases.len(), paths_refused))
}

// ---------------------------------------------------------------------------------------------
// 8. Sockets and auth

async fn sockets_are_not_world_writable(tb: Arc<Testbed>) -> Result<()> {
    let node = OwnNode::start(&tb, "socket-node").await?;
    let mut shown = Vec::new();
    for (what, path) in [
        ("controller", tb.controller_socket()),
        ("node plugin", tb.node_socket()),
        ("mount agent", tb.mount_agent_socket()),
        ("node plugin (own)", node.socket.clone()),
    ] {
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("{what} socket {}", path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        ensure!(
            mode & 0o002 == 0,
            "the {what} socket {} is world-writable (mode {mode:o})",
            path.display()
        );
        shown.push(format!("{what} {mode:04o}"));
    }
    println!(
        "faults: CSI sockets not world-writable: {}",
        shown.join(", ")
    );
    Ok(())
}

async fn bad_tokens_are_refused(tb: Arc<Testbed>) -> Result<()> {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let url = tb.heketi_url().context("no heketi-server")?;
    let admin = tb.env().heketi_key.clone();
    let user = std::fs::read_to_string(tb.state_dir().join("heketi-user.key"))?
        .trim()
        .to_owned();
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let qsh = |method: &str, path: &str| hex::encode(Sha256::digest(format!("{method}&{path}")));
    let token = |key: &str, claims: serde_json::Value| -> Result<String> {
        Ok(encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )?)
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let get = |path: &'static str, token: Option<String>| {
        let http = http.clone();
        let url = format!("{url}{path}");
        async move {
            let mut req = http.get(&url);
            if let Some(t) = token {
                req = req.header("Authorization", format!("bearer {t}"));
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body = resp.text().await?;
            Ok::<_, anyhow::Error>((status, body.trim().to_owned()))
        }
    };

    let cases: Vec<(&str, &'static str, Option<String>, u16, &str)> = vec![
        (
            "good admin token (control)",
            "/clusters",
            Some(token(
                &admin,
                serde_json::json!({"iss": "admin", "iat": now, "exp": now + 300,
                                   "qsh": qsh("GET", "/clusters")}),
            )?),
            200,
            "",
        ),
        (
            "good user token on /volumes (control)",
            "/volumes",
            Some(token(
                &user,
                serde_json::json!({"iss": "user", "iat": now, "exp": now + 300,
                                   "qsh": qsh("GET", "/volumes")}),
            )?),
            200,
            "",
        ),
        (
            "expired token",
            "/clusters",
            Some(token(
                &admin,
                serde_json::json!({"iss": "admin", "iat": now - 400, "exp": now - 100,
                                   "qsh": qsh("GET", "/clusters")}),
            )?),
            401,
            "Invalid JWT token: Token is expired by ",
        ),
        (
            "token for another request (qsh)",
            "/clusters",
            Some(token(
                &admin,
                serde_json::json!({"iss": "admin", "iat": now, "exp": now + 300,
                                   "qsh": qsh("GET", "/volumes")}),
            )?),
            401,
            "Invalid qsh claim in token",
        ),
        (
            "token signed with another key",
            "/clusters",
            Some(token(
                "not-the-key",
                serde_json::json!({"iss": "admin", "iat": now, "exp": now + 300,
                                   "qsh": qsh("GET", "/clusters")}),
            )?),
            401,
            "Invalid JWT token: signature is invalid (client and server secrets may not match)",
        ),
        (
            "iss=user on an admin route",
            "/clusters",
            Some(token(
                &user,
                serde_json::json!({"iss": "user", "iat": now, "exp": now + 300,
                                   "qsh": qsh("GET", "/clusters")}),
            )?),
            401,
            "Administrator access required",
        ),
        (
            "no token",
            "/clusters",
            None,
            401,
            "Required authorization token not found",
        ),
    ];
    let mut refused = 0;
    for (what, path, t, want_status, want_text) in cases {
        let (status, body) = get(path, t).await?;
        ensure!(
            status == want_status,
            "{what}: status {status} ({body:?}), {want_status} was expected"
        );
        if want_status != 200 {
            ensure!(
                body.starts_with(want_text),
                "{what}: {body:?} does not start with Heketi's {want_text:?}"
            );
            refused += 1;
        }
    }
    println!(
        "faults: heketi-server refused {refused}/{refused} bad tokens (expired, wrong qsh, other \
         key, iss=user on /clusters, none) with Heketi's 401 messages; good admin and user \
         tokens accepted"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Secrets never leak

async fn no_secret_anywhere(tb: Arc<Testbed>) -> Result<()> {
    let tag: String = hex::encode(rand::random::<[u8; 6]>());
    let marker = |what: &str| format!("SeCrEt-{what}-{tag}");
    let key = tb.env().heketi_key.clone();
    let user_key = std::fs::read_to_string(tb.state_dir().join("heketi-user.key"))?
        .trim()
        .to_owned();
    let mut secrets: Vec<String> = vec![key.clone(), user_key];
    let mut m = |what: &str| {
        let v = marker(what);
        secrets.push(v.clone());
        v
    };
    let (extra, bad_key, bad_key2, bad_user, rest_key, rest_key2) = (
        m("extra"),
        m("badkey"),
        m("badkey2"),
        m("baduser"),
        m("restuserkey"),
        m("restuserkey2"),
    );
    let (expand_extra, expand_bad, stage_a, stage_b, publish_a, delete_bad, header) = (
        m("expandextra"),
        m("expandbad"),
        m("stagea"),
        m("stageb"),
        m("publisha"),
        m("deletebad"),
        m("header"),
    );
    let mut c = controller(&tb).await?;
    let mut errors: Vec<String> = Vec::new();
    let mut keep = |r: Result<Status>| -> Result<()> {
        errors.push(r?.message().to_owned());
        Ok(())
    };

    // A whole life cycle with CSI secrets, and failing calls carrying secrets.
    let name = csi_name("secrets");
    let mut req = create_req(&name, 1, &[]);
    req.secrets = map(&[("key", &key), ("user", "admin"), ("extra", &extra)]);
    let v = call("CreateVolume", c.create_volume(req))
        .await?
        .volume
        .context("no volume")?;
    let mut bad = create_req(&csi_name("secrets-bad1"), 1, &[]);
    bad.secrets = map(&[("key", &bad_key), ("extra", &extra)]);
    keep(expect_code(
        call("CreateVolume", c.create_volume(bad)).await,
        Code::Unauthenticated,
        "wrong key",
    ))?;
    let mut bad = create_req(&csi_name("secrets-bad2"), 1, &[]);
    bad.secrets = map(&[("user", &bad_user), ("other", &bad_key2)]);
    keep(expect_code(
        call("CreateVolume", c.create_volume(bad)).await,
        Code::InvalidArgument,
        "secret without key",
    ))?;
    let mut bad = create_req(&csi_name("secrets-bad3"), 1, &[]);
    bad.secrets = map(&[("key", &key), ("user", &format!("{bad_user} x"))]);
    keep(expect_code(
        call("CreateVolume", c.create_volume(bad)).await,
        Code::InvalidArgument,
        "unusable user",
    ))?;
    let bad = create_req(&csi_name("secrets-bad4"), 1, &[("restuserkey", &rest_key)]);
    keep(expect_code(
        call("CreateVolume", c.create_volume(bad)).await,
        Code::Unauthenticated,
        "wrong restuserkey",
    ))?;
    let bad = create_req(
        &csi_name("secrets-bad5"),
        1,
        &[("restuserkey", &rest_key2), ("volumetype", "bogus")],
    );
    keep(expect_code(
        call("CreateVolume", c.create_volume(bad)).await,
        Code::InvalidArgument,
        "bad parameter next to restuserkey",
    ))?;
    call(
        "ControllerExpandVolume",
        c.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            secrets: map(&[("key", &key), ("extra", &expand_extra)]),
            volume_capability: None,
        }),
    )
    .await?;
    keep(expect_code(
        call(
            "ControllerExpandVolume",
            c.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 3 * GIB,
                    limit_bytes: 0,
                }),
                secrets: map(&[("key", &expand_bad)]),
                volume_capability: None,
            }),
        )
        .await,
        Code::Unauthenticated,
        "expand with a wrong key",
    ))?;

    // The node side: stage and publish with secrets, and a failing stage.
    let dir = tb.scratch_dir("secrets")?;
    let (staging, target) = (dir.join("staging"), dir.join("target"));
    let mut n = node_at(&tb.env().node_endpoint).await?;
    let stage = |flags: &[&str]| NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, flags)),
        volume_context: v.volume_context.clone(),
        secrets: map(&[("key", &stage_a), ("password", &stage_b)]),
        ..Default::default()
    };
    keep(expect_code(
        call("NodeStageVolume", n.node_stage_volume(stage(&["a;b"]))).await,
        Code::InvalidArgument,
        "bad flag with secrets",
    ))?;
    call("NodeStageVolume", n.node_stage_volume(stage(&[]))).await?;
    call(
        "NodePublishVolume",
        n.node_publish_volume(NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, &[])),
            volume_context: v.volume_context.clone(),
            secrets: map(&[("token", &publish_a)]),
            ..Default::default()
        }),
    )
    .await?;
    std::fs::write(target.join("data"), b"life cycle")?;
    call(
        "NodeUnpublishVolume",
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        }),
    )
    .await?;
    call(
        "NodeUnstageVolume",
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        }),
    )
    .await?;

    keep(expect_code(
        call(
            "DeleteVolume",
            c.delete_volume(DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
                secrets: map(&[("key", &delete_bad)]),
            }),
        )
        .await,
        Code::Unauthenticated,
        "delete with a wrong key",
    ))?;
    call(
        "DeleteVolume",
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: map(&[("key", &key), ("extra", &extra)]),
        }),
    )
    .await?;

    // heketi-server given a secret in a malformed Authorization header.
    let url = tb.heketi_url().context("no heketi-server")?;
    let resp = reqwest::Client::new()
        .get(format!("{url}/clusters"))
        .header("Authorization", format!("Basic {header}"))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status().as_u16();
    errors.push(resp.text().await?);
    ensure!(status == 400, "malformed Authorization header: {status}");

    // Every log file the testbed's daemons and this binary's own daemons wrote.
    let mut files = Vec::new();
    collect_logs(tb.state_dir(), &mut files)?;
    let mut bytes = 0u64;
    let mut trace_lines = 0usize;
    for f in &files {
        let data = std::fs::read(f)?;
        bytes += data.len() as u64;
        let text = String::from_utf8_lossy(&data);
        trace_lines += text.lines().filter(|l| l.contains("TRACE")).count();
        for s in &secrets {
            if let Some(line) = text.lines().find(|l| l.contains(s.as_str())) {
                bail!("{} holds a secret value: {line}", f.display());
            }
        }
    }
    let controller_log = tb.state_dir().join("logs/controller.log");
    let clog = std::fs::read_to_string(&controller_log)?;
    ensure!(
        clog.contains("TRACE") && clog.contains(&heketi_name(&name)),
        "the controller log is not at trace level or misses the volume"
    );
    let mut all_errors = seen_errors();
    all_errors.extend(errors);
    for e in &all_errors {
        for s in &secrets {
            ensure!(
                !e.contains(s.as_str()),
                "an error message holds a secret: {e}"
            );
        }
    }
    println!(
        "faults: {} secret values (Heketi admin and user keys, {} CSI secret/parameter markers) \
         found in 0 of {} log files ({:.1} MiB, {trace_lines} TRACE lines) and 0 of {} gRPC/HTTP \
         error messages",
        secrets.len(),
        secrets.len() - 2,
        files.len(),
        bytes as f64 / (1024.0 * 1024.0),
        all_errors.len()
    );
    Ok(())
}

/// Every `*.log` file under `dir` (daemon logs, FUSE client logs, glusterd logs).
fn collect_logs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            // Brick directories and mounts hold volume data, not logs.
            if p.file_name().is_some_and(|n| n == "brick") || mounts::is_mounted(&p) {
                continue;
            }
            collect_logs(&p, out)?;
        } else if ft.is_file() && p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
    Ok(())
}
