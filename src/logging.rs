//! Log output: human-readable by default, one JSON object per line with `--log-format json`.
//!
//! Logs go to stderr, as with any Unix tool, so that stdout carries only a command's output
//! (`check --json`, `sweep`, `schedule`); supervisor (`redirect_stderr=true`) and journald capture
//! both. Colours only when stderr is a terminal.
//!
//! Text lines escape every control character in every field: values that come from outside (a
//! Redis key, a server's error message, a config value) must not be able to start a second,
//! forged line or send terminal escapes. JSON lines are escaped by the JSON encoder.

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// How log lines are written to stderr (`--log-format`).
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
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The text format's fields: `name=value`, space-separated, the message bare, every control
/// character escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    debug_fn(
        |writer: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() != "message" {
                write!(writer, "{}=", field.name())?;
            }
            writer.write_str(&escape_controls(&text))
        },
    )
    .delimited(" ")
}

/// An error message as the one line printed before exiting: whitespace runs (newlines from
/// server messages included) become one space, other control characters are escaped.
pub fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    escape_controls(&joined).into_owned()
}

/// `text` with each control character (newline, carriage return, escape...) written as a Rust
/// escape, so that it stays on one line and cannot drive a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain key"), "plain key");
        assert_eq!(
            escape_controls("k\n2026-11-29T00:00:00Z INFO cancelled orders=[42]"),
            "k\\n2026-11-29T00:00:00Z INFO cancelled orders=[42]"
        );
        assert_eq!(escape_controls("a\rb\u{1b}[31m"), "a\\rb\\u{1b}[31m");
    }
}
