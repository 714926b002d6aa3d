//! Log output: human-readable by default, one JSON object per line with `--log-format json`.
//!
//! Logs go to stderr, as with any Unix tool, so that stdout carries only a command's output
//! (`check --json`, `sweep`, `schedule`); supervisor (`redirect_stderr=true`) and journald capture
//! both. Colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `-v` and `-vv` raise our own level to debug and trace;
/// otherwise `RUST_LOG` decides, defaulting to `info`.
pub fn init(format: LogFormat, verbose: u8) {
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        1 => EnvFilter::new("info,order_expire=debug"),
        _ => EnvFilter::new("debug,order_expire=trace"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
