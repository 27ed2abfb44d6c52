//! libtest-mimic glue: one testbed per integration-test binary (`harness = false`).
//!
//! ```no_run
//! use gluster_csi_testbed::{TestbedOptions, harness};
//!
//! fn main() {
//!     let opts = TestbedOptions::gluster_only(harness::state_dir_for("example"), 3);
//!     harness::run(opts, |tb| {
//!         vec![harness::trial("pool_has_three_hosts", &tb, |tb| async move {
//!             let out = tb.gluster(0, &["pool", "list"]).await?;
//!             anyhow::ensure!(out.matches("Connected").count() == 3, "{out}");
//!             Ok(())
//!         })]
//!     })
//! }
//! ```
//!
//! [`run`] brings the testbed up (after removing stale testbeds of test processes that died),
//! builds the trials, runs them, and always tears the testbed down: after the trials, when the
//! trial builder panics, and on SIGINT or SIGTERM. `--list` builds the trials against a
//! placeholder testbed, so listing needs neither root nor Gluster.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub use libtest_mimic::{Arguments, Failed, Trial};
use tokio::signal::unix::{SignalKind, signal};

use crate::journal;
use crate::testbed::{Testbed, TestbedOptions};

/// Prefix of the state directories the harness makes under `/tmp`.
const TMP_PREFIX: &str = "gcsi-";

/// A state directory for test `name`: `/tmp/gcsi-<name>-<pid>`.
pub fn state_dir_for(name: &str) -> PathBuf {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(24)
        .collect();
    std::env::temp_dir().join(format!("{TMP_PREFIX}{name}-{}", std::process::id()))
}

/// Name of the running test binary without cargo's hash suffix (`testbed-1f2e…` → `testbed`).
pub fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .and_then(|s| s.to_str())
        .unwrap_or("test");
    match stem.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            base.to_string()
        }
        _ => stem.to_string(),
    }
}

/// Runs a future to completion on a runtime of its own (for trials, which run on plain threads).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    }
}

/// A named trial running an async check against the testbed; an error fails the trial with the
/// error's full chain as message.
pub fn trial<F, Fut>(name: impl Into<String>, tb: &Arc<Testbed>, check: F) -> Trial
where
    F: FnOnce(Arc<Testbed>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let tb = Arc::clone(tb);
    Trial::test(name, move || {
        block_on(check(tb)).map_err(|e| Failed::from(format!("{e:#}")))
    })
}

/// Held by [`exclusive_trial`]s while they run.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Like [`trial`], but never runs at the same time as another exclusive trial of the binary: for
/// checks that stop and restart shared services (heketi-server, the controller, the node
/// plugin) or otherwise disturb the testbed.
pub fn exclusive_trial<F, Fut>(name: impl Into<String>, tb: &Arc<Testbed>, check: F) -> Trial
where
    F: FnOnce(Arc<Testbed>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let tb = Arc::clone(tb);
    Trial::test(name, move || {
        let _guard = EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner);
        block_on(check(tb)).map_err(|e| Failed::from(format!("{e:#}")))
    })
}

/// Brings up a testbed with `opts` (an empty `state_dir` becomes
/// `state_dir_for(binary_name())`), runs the trials `build` makes, tears the testbed down and
/// exits with libtest-mimic's code.
pub fn run<F>(opts: TestbedOptions, build: F) -> !
where
    F: FnOnce(Arc<Testbed>) -> Vec<Trial>,
{
    run_with(Arguments::from_args(), opts, build)
}

/// Like [`run`], but the trials run one at a time in the order `build` gives them, whatever
/// `--test-threads` says: for suites whose trials build on each other's outcome (a driver
/// installed, claims made) on one shared system.
pub fn run_in_order<F>(opts: TestbedOptions, build: F) -> !
where
    F: FnOnce(Arc<Testbed>) -> Vec<Trial>,
{
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    run_with(args, opts, build)
}

fn run_with<F>(args: Arguments, mut opts: TestbedOptions, build: F) -> !
where
    F: FnOnce(Arc<Testbed>) -> Vec<Trial>,
{
    if opts.state_dir.as_os_str().is_empty() {
        opts.state_dir = state_dir_for(&binary_name());
    }
    if args.list {
        match Testbed::placeholder(opts) {
            Ok(tb) => libtest_mimic::run(&args, build(Arc::new(tb))).exit(),
            Err(e) => fail(&format!("cannot list the tests: {e:#}")),
        }
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot build a tokio runtime: {e}")),
    };
    let state_dir = opts.state_dir.clone();

    let up = rt.block_on(async {
        reap_stale_testbeds().await;
        tokio::select! {
            r = Testbed::up(opts) => Some(r),
            code = interrupted() => {
                eprintln!("interrupted while the testbed was coming up; tearing it down");
                tear_down_everything(&state_dir).await;
                std::process::exit(code)
            }
        }
    });
    let tb = match up {
        Some(Ok(tb)) => Arc::new(tb),
        Some(Err(e)) => fail(&format!("the testbed did not come up: {e:#}")),
        None => fail("the testbed did not come up"),
    };

    // From here on a signal tears the testbed down and ends the process.
    let dir = tb.state_dir().to_path_buf();
    rt.spawn(async move {
        let code = interrupted().await;
        eprintln!("interrupted; tearing the testbed down");
        tear_down_everything(&dir).await;
        std::process::exit(code);
    });

    let trials = catch_unwind(AssertUnwindSafe(|| build(Arc::clone(&tb))));
    let conclusion = trials.map(|t| libtest_mimic::run(&args, t));
    let teardown = rt.block_on(tb.teardown());
    if let Err(e) = &teardown {
        eprintln!("testbed teardown: {e:#}");
    }
    match conclusion {
        Ok(c) if teardown.is_ok() => c.exit(),
        Ok(c) => {
            if c.has_failed() {
                c.exit()
            }
            std::process::exit(1)
        }
        Err(_) => fail("building the trials panicked"),
    }
}

/// On a signal: stops every testbed of this process from making more, then removes them all —
/// the harness's own (`main_dir`) and any a trial brought up.
async fn tear_down_everything(main_dir: &Path) {
    journal::freeze_all();
    let mut dirs = crate::testbed::live_testbeds();
    if !dirs.iter().any(|d| d == main_dir) {
        dirs.push(main_dir.to_path_buf());
    }
    for d in dirs {
        if let Err(e) = Testbed::down(&d).await {
            eprintln!("{e:#}");
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(101)
}

/// Resolves on SIGINT or SIGTERM with the conventional exit code (130 or 143).
async fn interrupted() -> i32 {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action (exit) applies; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    }
}

/// Tears down testbeds the harness made for test processes that no longer run (a test binary
/// killed with SIGKILL cannot clean up after itself): `/tmp/gcsi-<name>-<pid>` directories with a
/// journal whose `owner` file names that `<pid>` and that process is gone.
pub async fn reap_stale_testbeds() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .rsplit_once('-')
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if pid == std::process::id() || !path.join(journal::FILE_NAME).exists() {
            continue;
        }
        // Only a testbed whose `up` ran in the process the name says, which is gone.
        let owner =
            std::fs::read_to_string(path.join(crate::testbed::OWNER_FILE)).unwrap_or_default();
        let mut words = owner.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(owner_pid)), Some(Ok(start))) = (words.next(), words.next()) else {
            continue;
        };
        if owner_pid != u64::from(pid) || crate::procs::is_same(pid, start) {
            continue;
        }
        eprintln!("removing stale testbed {}", path.display());
        if let Err(e) = Testbed::down(&path).await {
            eprintln!("{e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_short_and_per_process() {
        let d = state_dir_for("a/b c-d_e");
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(
            name,
            format!("gcsi-abc-d_e-{}", std::process::id()).as_str()
        );
    }
}
