//! Errors, each rendered as one line that says what failed, where, and what to do.
//!
//! A worker under supervisor is read through its log: the last line before it exits must be
//! enough to fix the problem. So every variant carries its context (which file and key, which host,
//! which table) and most end with the fix.

use crate::config::ConfigError;
use crate::db::DbError;
use crate::endpoint::EndpointError;
use crate::logging::one_line;
use crate::redis::RedisError;
use crate::source::error::SourceError;

/// Everything that can stop the worker or a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app's configuration: a setting missing or wrong, found before connecting to
    /// anything.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The Redis adapter: connecting, a command, notifications off.
    #[error(transparent)]
    Redis(#[from] RedisError),

    /// The database adapter (MySQL or PostgreSQL): connecting, a query, the schema.
    #[error(transparent)]
    Database(#[from] DbError),

    /// The metrics and probes endpoint could not listen where it was asked to.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),

    /// A mistake in how order-expire was started (a flag, a missing setting): exit code 2.
    #[error("{0}")]
    Usage(String),

    /// A failure of the process itself while running (the async runtime, signal handlers,
    /// printing, a write that never succeeded): exit code 1.
    #[error("{0}")]
    Runtime(String),

    /// `order-expire check` found something that would stop the worker (its report says what):
    /// exit code 1.
    #[error("check found a problem: {0}")]
    CheckFailed(String),
}

impl Error {
    /// The process exit status for this error: 2 for a usage mistake (a flag, a missing
    /// setting), 1 for everything else, as supervisors and shell scripts expect.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The one line printed before exiting, whatever the underlying libraries put in their
    /// messages: runs of whitespace (newlines from a server's message) become one space and
    /// other control characters are escaped.
    pub fn render(&self) -> String {
        format!(
            "order-expire: error: {}",
            bounded(&one_line(&self.to_string()))
        )
    }
}

impl From<crate::mysql::MysqlError> for Error {
    fn from(error: crate::mysql::MysqlError) -> Self {
        Self::Database(error.into())
    }
}

impl From<crate::pgsql::PgsqlError> for Error {
    fn from(error: crate::pgsql::PgsqlError) -> Self {
        Self::Database(error.into())
    }
}

/// The longest error line printed: whatever a server sends in an error, the line stays readable.
pub const MAX_ERROR_LINE: usize = 4096;

/// `line` cut to [`MAX_ERROR_LINE`] bytes (on a character boundary), saying how much was left out.
fn bounded(line: &str) -> String {
    if line.len() <= MAX_ERROR_LINE {
        return line.to_string();
    }
    let mut end = MAX_ERROR_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &line[..end], line.len() - end)
}

impl From<SourceError> for Error {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Redis(e) => Self::Redis(e),
            SourceError::Database(e) => Self::Database(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_line_is_bounded() {
        let long = Error::Runtime(format!("a server said {}", "x".repeat(100_000)));
        let line = long.render();
        assert!(line.len() < MAX_ERROR_LINE + 100, "{} bytes", line.len());
        assert!(
            line.ends_with("more bytes)"),
            "{}",
            &line[line.len() - 40..]
        );
        let short = Error::Runtime("short".into());
        assert_eq!(short.render(), "order-expire: error: short");
    }
}
