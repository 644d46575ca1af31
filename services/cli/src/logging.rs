//! Structured logs: to stdout or a file, as text or JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// Logging options shared by the commands that run nodes.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Write logs to this file (appending) instead of stdout.
    #[arg(long)]
    pub log_file_name: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Log filter, e.g. `info` or `syncline_sequencer=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Install the global subscriber.
pub fn init(args: &LogArgs) -> Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).with_context(|| format!("invalid log filter {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match &args.log_file_name {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let writer = std::sync::Mutex::new(file);
            if args.log_json {
                builder.json().with_writer(writer).with_ansi(false).try_init()
            } else {
                builder.with_writer(writer).with_ansi(false).try_init()
            }
        }
        None if args.log_json => builder.json().try_init(),
        None => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
