//! `heketi-server` binary: parse and validate the configuration, then serve.

use std::process::ExitCode;

use clap::Parser;
use gluster_csi_runtime::logging::init_logging;
use gluster_csi_runtime::shutdown::shutdown_signal;
use heketi_server::config::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heketi-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heketi-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(heketi_server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "heketi-server failed");
            eprintln!("heketi-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
