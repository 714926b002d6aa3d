//! Errors, each rendered as one line that says what failed, where, and what to do.
//!
//! A worker under supervisor is read through its log: the last line before it exits must be
//! enough to fix the problem. So every variant carries its context (which file and key, which host,
//! which table) and most end with the fix.

use crate::config::ConfigError;

/// Everything that can stop the worker or a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("cannot connect to Redis at {endpoint}: {cause}{hint}")]
    RedisConnect {
        endpoint: String,
        cause: String,
        hint: &'static str,
    },

    #[error("Redis at {endpoint}: {action} failed: {source}")]
    Redis {
        endpoint: String,
        action: String,
        #[source]
        source: redis::RedisError,
    },

    #[error(
        "keyspace notifications are off on Redis at {endpoint} (notify-keyspace-events is {current:?}), so no `expired` event would ever arrive: run `redis-cli -h <host> CONFIG SET notify-keyspace-events Ex` and add `notify-keyspace-events Ex` to redis.conf, set it in the parameter group (AWS ElastiCache), the Advanced settings (Azure) or --redis-config (Google Memorystore), or start order-expire with --configure-redis"
    )]
    NotificationsOff { endpoint: String, current: String },

    #[error(
        "cannot connect to MySQL at {endpoint} (database `{database}`, user `{username}`): {cause}{hint}"
    )]
    MysqlConnect {
        endpoint: String,
        database: String,
        username: String,
        cause: String,
        hint: &'static str,
    },

    #[error("MySQL at {endpoint}: {action} failed: {source}")]
    Mysql {
        endpoint: String,
        action: String,
        #[source]
        source: mysql_async::Error,
    },

    #[error("MySQL at {endpoint}: cancelling order {order} failed: {source}")]
    Cancel {
        endpoint: String,
        order: u64,
        #[source]
        source: crate::sink::cancel::CancelError,
    },

    #[error("MySQL database `{database}` at {endpoint}: {problem}")]
    Schema {
        endpoint: String,
        database: String,
        problem: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("check found a problem: {0}")]
    CheckFailed(String),
}
