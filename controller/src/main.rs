//! `gluster-csi-controller`: the CSI Identity and Controller services.

use clap::Parser;
use gluster_csi_controller::{Args, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    csi_proto::serve::init_logging(args.common.log_format);
    match run(args, csi_proto::serve::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gluster-csi-controller failed");
            eprintln!("gluster-csi-controller: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
