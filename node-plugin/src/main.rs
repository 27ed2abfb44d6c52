//! `gluster-csi-node`: the CSI Identity and Node services, run by the node DaemonSet.

use clap::Parser;
use gluster_csi_node::{Args, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    csi_proto::serve::init_logging(args.common.log_format);
    match run(args, csi_proto::serve::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gluster-csi-node failed");
            eprintln!("gluster-csi-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
