//! Structured logs: to stdout or a file, as text or JSON.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

/// Where and how a process logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Append to this file instead of writing to stdout.
    pub file: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
    /// `tracing` filter directives, e.g. `info` or `syncline_sequencer=debug,info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { file: None, json: false, filter: "info".into() }
    }
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("invalid log filter {filter:?}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The underlying error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log file cannot be opened for appending.
    #[error("cannot open log file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A global subscriber is already installed.
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// Install the global subscriber.
pub fn init(config: &LogConfig) -> Result<(), LogError> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|source| LogError::Filter { filter: config.filter.clone(), source })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match &config.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::Open { path: path.clone(), source })?;
            let writer = std::sync::Mutex::new(file);
            if config.json {
                builder.json().with_writer(writer).with_ansi(false).try_init()
            } else {
                builder.with_writer(writer).with_ansi(false).try_init()
            }
        }
        None if config.json => builder.json().try_init(),
        None => builder.try_init(),
    };
    result.map_err(|e| LogError::Install(e.to_string()))
}
