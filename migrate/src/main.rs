//! `gluster-csi-migrate`: moves in-tree `kubernetes.io/glusterfs` PersistentVolumes to
//! gluster-csi without copying data. The dry run (default) prints the plan and the new objects;
//! `--apply` performs it. See `docs/migration.md`.
//!
//! Exit status: 0 done, 1 error (nothing or part applied, see the message), 2 dry run with PVs
//! that cannot be migrated.

use std::process::ExitCode;

use clap::Parser as _;
use gluster_csi_migrate::cli::{Args, Outcome, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    gluster_csi_runtime::logging::init_logging(gluster_csi_runtime::logging::LogFormat::Plain);
    let mut progress = |line: String| eprintln!("gluster-csi-migrate: {line}");
    match run(args, &mut progress).await {
        Ok(Outcome::Complete) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(2),
        Err(e) => {
            eprintln!("gluster-csi-migrate: {e}");
            ExitCode::FAILURE
        }
    }
}
