//! `gluster-csi-node`: the CSI Identity and Node services, run by the node DaemonSet; with the
//! `mount-agent` subcommand, the mount agent that starts FUSE clients on the host.

use clap::Parser;
use gluster_csi_node::{Cli, Command, agent, run};
use gluster_csi_runtime::logging::init_logging;
use gluster_csi_runtime::shutdown::shutdown_signal;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (what, result) = match cli.command {
        Some(Command::MountAgent(args)) => {
            init_logging(args.log_format);
            let result = match args.config() {
                Ok(config) => agent::serve(config, shutdown_signal())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            ("gluster-csi-node mount-agent", result)
        }
        None => {
            init_logging(cli.plugin.common.log_format);
            let result = run(cli.plugin, shutdown_signal())
                .await
                .map_err(|e| e.to_string());
            ("gluster-csi-node", result)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{what} failed");
            eprintln!("{what}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
