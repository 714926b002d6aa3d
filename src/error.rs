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
        "{name} is {found:?} {origin}, but order-expire follows orders through Laravel's redis cache store: set {name}=redis"
    )]
    CacheDriver {
        origin: ValueOrigin,
        name: String,
        found: String,
    },

    #[error(
        "{name} is {found:?} {origin}: order-expire writes to MySQL or MariaDB only (set {name} to mysql or mariadb)"
    )]
    DbConnection {
        origin: ValueOrigin,
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

    /// A bad value, named by where it was given (a flag, the process environment, the `.env`,
    /// a config file and line); the value itself is masked when it is a secret.
    #[error("{key}={} {origin}: {reason}", shown_value(.key, .value))]
    Invalid {
        origin: ValueOrigin,
        key: String,
        value: String,
        reason: String,
    },
}

/// Where a setting's value was given: the place to go and change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    /// A command-line flag.
    Flag,
    /// The worker's process environment (supervisor's `environment=`, systemd's
    /// `Environment=`), which wins over the `.env` as it does in Laravel.
    ProcessEnv,
    /// The app's `.env`.
    EnvFile(PathBuf),
    /// A config file (or the configuration cache), at a line when known.
    ConfigFile { path: PathBuf, line: Option<u32> },
}

impl std::fmt::Display for ValueOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("on the command line"),
            Self::ProcessEnv => f.write_str("in the process environment"),
            Self::EnvFile(path) => write!(f, "in {}", path.display()),
            Self::ConfigFile {
                path,
                line: Some(line),
            } => write!(f, "in {}:{line}", path.display()),
            Self::ConfigFile { path, line: None } => write!(f, "in {}", path.display()),
        }
    }
}

/// Whether the setting `name` (a variable, a flag or a config path) holds a secret whose value
/// must never be printed: its name says password (or pass), secret, key or token. order-expire's own
/// `ORDER_EXPIRE_*` settings (table names, statuses, `ORDER_EXPIRE_KEY_TYPE`) are not secrets.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let ours = upper.starts_with("ORDER_EXPIRE_") || upper.starts_with("--");
    !ours
        && ["PASS", "SECRET", "KEY", "TOKEN"]
            .iter()
            .any(|word| upper.contains(word))
}

/// `value` as an error may show it for the setting `name`: `***` for a secret, a URL with its
/// password replaced by `***`, anything else quoted.
pub fn shown_value(name: &str, value: &str) -> String {
    if is_secret_name(name) {
        return "***".into();
    }
    format!("{:?}", without_url_password(value))
}

/// `scheme://user:password@host...` with the password (or a user-info without `:`, which some
/// clients read as the password) replaced by `***`, and `user:password@host` without a scheme
/// likewise; other text (an e-mail address) unchanged.
pub fn without_url_password(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, value),
    };
    let Some(at) = rest.rfind('@') else {
        return value.to_string();
    };
    let masked = match (rest[..at].split_once(':'), scheme) {
        (Some((user, _)), _) => format!("{user}:***"),
        (None, Some(_)) => "***".into(),
        (None, None) => return value.to_string(),
    };
    let host = &rest[at + 1..];
    match scheme {
        Some(scheme) => format!("{scheme}://{masked}@{host}"),
        None => format!("{masked}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_values() {
        for (name, value, shown) in [
            ("DB_PASSWORD", "p@ss word", "***"),
            ("REDIS_PASSWORD", "x", "***"),
            ("APP_KEY", "base64:abc", "***"),
            ("AWS_SECRET_ACCESS_KEY", "k", "***"),
            ("GITHUB_TOKEN", "t", "***"),
            ("database.connections.mysql.password", "x", "***"),
            (
                "REDIS_URL",
                "redis://u:s3cret@h:abc",
                "\"redis://u:***@h:abc\"",
            ),
            ("REDIS_URL", "rediss://:p@ss@h/0", "\"rediss://:***@h/0\""),
            ("DATABASE_URL", "mysql://s3cret@h", "\"mysql://***@h\""),
            ("DATABASE_URL", "u:s3cret@h", "\"u:***@h\""),
            ("REDIS_URL", "not-a-url", "\"not-a-url\""),
            (
                "MAIL_FROM_ADDRESS",
                "shop@example.com",
                "\"shop@example.com\"",
            ),
            ("ORDER_EXPIRE_KEY_TYPE", "A B", "\"A B\""),
            ("--key-type", "A B", "\"A B\""),
            ("REDIS_PORT", "abc", "\"abc\""),
        ] {
            assert_eq!(shown_value(name, value), shown, "{name}={value}");
        }
    }
}
