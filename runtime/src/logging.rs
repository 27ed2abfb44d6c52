//! Logging set-up: [`LogFormat`] (`--log-format`) and [`init_logging`].

use std::io;

use tracing_subscriber::EnvFilter;

/// Log line format, `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), output to
/// stderr in the chosen format. Calling it twice is harmless (the second call does nothing).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
