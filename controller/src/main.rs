//! `gluster-csi-controller`: the CSI Identity and Controller services.

use clap::Parser;
use gluster_csi_controller::{Args, run};
use gluster_csi_runtime::logging::init_logging;
use gluster_csi_runtime::shutdown::shutdown_signal;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.common.log_format);
    match run(args, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gluster-csi-controller failed");
            eprintln!("gluster-csi-controller: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
