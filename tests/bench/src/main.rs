//! `gluster-csi-bench`: measures what gluster-csi costs against baselines taken in the same run
//! (see the `gluster_csi_bench` library and BENCHMARKS.md). Runs as root; reports, never fails a
//! build.

use std::process::ExitCode;

use clap::Parser;
use gluster_csi_bench::{self as bench, BenchArgs};
use gluster_csi_testbed::{Testbed, harness, journal};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(name = "gluster-csi-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// heketi-server logs `/queue` polls at debug level; the benchmark counts every request.
const HEKETI_LOG_FILTER: &str = "info,heketi_server::http=debug";

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // The testbed's heketi-server inherits RUST_LOG. Changing the environment is `unsafe`
        // because another thread could read it at the same time.
        #[allow(unsafe_code)]
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe {
            std::env::set_var("RUST_LOG", HEKETI_LOG_FILTER);
        }
    }
    let state_dir = cli
        .args
        .state_dir
        .get_or_insert_with(|| harness::state_dir_for("bench"))
        .clone();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        tokio::select! {
            r = bench::run(cli.args) => match r {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            _ = async { tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} } } => {
                eprintln!("interrupted; tearing the benchmark's testbed down");
                journal::freeze_all();
                if let Err(e) = Testbed::down(&state_dir).await {
                    eprintln!("{e:#}");
                }
                ExitCode::from(130)
            }
        }
    })
}
