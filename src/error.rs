//! Errors, each rendered as one line that says what failed, where, and what to do.
//!
//! A worker under supervisor is read through its log: the last line before it exits must be
//! enough to fix the problem. So every variant carries its context (which file and key, which host,
//! which table) and most end with the fix.

use std::path::PathBuf;

use crate::config::dotenv::DotenvError;

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

/// Problems in the app's configuration, found before connecting to anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source} (pass the Laravel app's .env with --env)", path.display())]
    ReadEnv {
        path: PathBuf,
        #[source]
        source: crate::config::bounded::ReadError,
    },

    #[error("{}: the environment file is invalid, as Laravel would also report: {source}", path.display())]
    ParseEnv {
        path: PathBuf,
        #[source]
        source: DotenvError,
    },

    #[error(
        "{name} is {found:?} in {}, but order-expire follows orders through Laravel's redis cache store: set {name}=redis",
        path.display()
    )]
    CacheDriver {
        path: PathBuf,
        name: String,
        found: String,
    },

    #[error("{name} is {found:?} in {}: order-expire writes to MySQL or MariaDB only (set {name} to mysql or mariadb)", path.display())]
    DbConnection {
        path: PathBuf,
        name: String,
        found: String,
    },

    #[error("cannot read {}: {reason}", path.display())]
    ConfigFile { path: PathBuf, reason: String },

    #[error(
        "{0}; order-expire evaluates the PHP config files are written in, not arbitrary code: simplify that expression, or run `php artisan config:cache` in the app and order-expire reads Laravel's own resolved values from bootstrap/cache/config.php"
    )]
    Unsupported(crate::config::php_value::Unevaluated),

    #[error("cannot read Laravel's configuration cache {}: {reason} (run php artisan config:cache again, or config:clear)", path.display())]
    ConfigCache { path: PathBuf, reason: String },

    #[error("{key}={value:?} in {}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}
