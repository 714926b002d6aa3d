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

/// Reports every panic as one log line (`event = "panic"`) through the installed subscriber,
/// in place of the standard hook's lines on stderr, whose message and backtrace span several
/// lines and would break a JSON log apart. The backtrace (with `RUST_BACKTRACE`) is a field.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        let thread = std::thread::current();
        tracing::error!(event = "panic", thread = thread.name().unwrap_or("(unnamed)"),
            %location, backtrace = %escape_controls(&backtrace), panic = %escape_controls(&message),
            "a bug: the task that panicked is gone (the liveness probe reports a loop that stopped); please report it");
    }));
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

    /// A writer into a shared buffer, for a subscriber whose output the test reads.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_one_json_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        super::log_panics();
        let caught = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| panic!("first line\nsecond line"))
        });
        let _ = std::panic::take_hook();
        assert!(caught.is_err());
        let bytes = buffer
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(line["event"], "panic");
        assert_eq!(line["level"], "ERROR");
        let panic = line["panic"].as_str().expect("panic field");
        assert!(
            panic.contains("first line") && panic.contains("second line"),
            "{line}"
        );
        assert!(
            line["location"]
                .as_str()
                .is_some_and(|l| l.contains("logging.rs")),
            "{line}"
        );
    }

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
