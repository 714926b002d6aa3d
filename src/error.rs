//! Errors, each rendered as one line that says what failed, where, and what to do.
//!
//! A worker under supervisor is read through its log: the last line before it exits must be
//! enough to fix the problem. So every variant carries its context (which file and key, which host,
//! which table) and most end with the fix.

use crate::config::ConfigError;
use crate::mysql::MysqlError;
use crate::redis::RedisError;
use crate::sink::writer::CancelError;

/// Everything that can stop the worker or a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The Redis adapter: connecting, a command, notifications off.
    #[error(transparent)]
    Redis(#[from] RedisError),

    /// The MySQL adapter: connecting, a query, the schema.
    #[error(transparent)]
    Mysql(#[from] MysqlError),

    /// The writer could not cancel `order`; retried by the worker unless permanent.
    #[error("MySQL at {endpoint}: cancelling order {order} failed: {source}")]
    Write {
        endpoint: String,
        order: u64,
        #[source]
        source: CancelError,
    },

    /// A mistake in how order-expire was started (a flag, a missing setting): exit code 2.
    #[error("{0}")]
    Usage(String),

    /// A failure of the process itself while running (the async runtime, signal handlers,
    /// printing, a write that never succeeded): exit code 1.
    #[error("{0}")]
    Runtime(String),

    #[error("check found a problem: {0}")]
    CheckFailed(String),
}
