//! What can be wrong in a Laravel app's configuration, found before connecting to anything.
//!
//! Each error is one line that names where the value was given (a flag, the process
//! environment, the `.env`, a config file and line) and how to fix it; a secret's value is
//! never shown, so the line can go to a log as it is.

use std::path::PathBuf;

use super::bounded::ReadError;
use super::dotenv::DotenvError;
use super::php_value::Unevaluated;

/// Problems in the app's configuration, found before connecting to anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `.env` given with `--env` cannot be read: missing, not a regular file, too large.
    #[error("cannot read {}: {source} (pass the Laravel app's .env with --env)", path.display())]
    ReadEnv {
        /// The `.env` as given.
        path: PathBuf,
        /// Why it was not read.
        #[source]
        source: ReadError,
    },

    /// The `.env` breaks the app's phpdotenv rules, so Laravel itself would refuse to boot.
    #[error("{}: the environment file is invalid, as Laravel would also report: {source}", path.display())]
    ParseEnv {
        /// The `.env`.
        path: PathBuf,
        /// The first line phpdotenv would reject, and why.
        #[source]
        source: DotenvError,
    },

    #[error(
        "{name} is {found:?} {origin}, but order-expire follows orders through Laravel's redis cache store: set {name}=redis"
    )]
    /// The default cache store, chosen by an environment variable (`CACHE_DRIVER`,
    /// `CACHE_STORE` from Laravel 11), is not a redis store, so no order key ever expires in
    /// Redis.
    CacheDriver {
        /// Where the variable was set.
        origin: ValueOrigin,
        /// The variable, e.g. `CACHE_DRIVER`.
        name: String,
        /// The store it names, e.g. `file`.
        found: String,
    },

    #[error(
        "{name} is {found:?} {origin}: order-expire writes to MySQL, MariaDB or PostgreSQL only (set {name} to mysql, mariadb or pgsql)"
    )]
    /// The default database connection (`DB_CONNECTION`, or `database.default`) is not a
    /// MySQL, MariaDB or PostgreSQL one.
    DbConnection {
        /// Where the connection was chosen.
        origin: ValueOrigin,
        /// `DB_CONNECTION`, or `database.default` when no variable sets it.
        name: String,
        /// The connection it names, e.g. `sqlite`.
        found: String,
    },

    /// One of the app's `config/*.php` files exists but cannot be read.
    #[error("cannot read {}: {reason}", path.display())]
    ConfigFile {
        /// The config file.
        path: PathBuf,
        /// Why it was not read.
        reason: String,
    },

    #[error(
        "{0}; order-expire evaluates the PHP config files are written in, not arbitrary code: simplify that expression, or run `php artisan config:cache` in the app and order-expire reads Laravel's own resolved values from bootstrap/cache/config.php"
    )]
    /// A config file, or a value in it that the worker needs, is PHP outside what order-expire
    /// evaluates (a method call, a closure, an unknown function).
    Unsupported(Unevaluated),

    #[error(
        "{construct}; order-expire evaluates the PHP config files are written in, not arbitrary code, and cannot ask the app's own Laravel here: {why}. Either run `php artisan config:cache` in the app (order-expire then reads Laravel's own values from bootstrap/cache/config.php, exactly), or run order-expire where php and the app's vendor/ are (it then asks the app's Laravel)"
    )]
    /// A value the worker needs is PHP outside what order-expire evaluates (a helper of the
    /// app, a package's class), and the app's own Laravel cannot be asked for it.
    NotEvaluated {
        /// The construct, where it is, and the setting it feeds.
        construct: Unevaluated,
        /// Why Laravel itself was not asked: no `php`, no `vendor/autoload.php`, or the
        /// setting that forbids running PHP.
        why: String,
    },

    #[error(
        "{because}: asking the app's own Laravel for its configuration failed: {reason} (after `php artisan config:cache` in the app, order-expire reads Laravel's values without running PHP)"
    )]
    /// The app's own Laravel was asked for its configuration and gave no answer.
    Laravel {
        /// Why it was asked: the construct order-expire did not evaluate, or the setting.
        because: String,
        /// What went wrong: no `php`, the boot failed or timed out, an unreadable answer.
        reason: String,
    },

    #[error("cannot read Laravel's configuration cache {}: {reason} (run php artisan config:cache again, or config:clear)", path.display())]
    /// Laravel's configuration cache (`bootstrap/cache/config.php`, or `APP_CONFIG_CACHE`)
    /// exists but cannot be read or parsed.
    ConfigCache {
        /// The cache file.
        path: PathBuf,
        /// Why it was not read, or where its parsing failed.
        reason: String,
    },

    /// A bad value, named by where it was given (a flag, the process environment, the `.env`,
    /// a config file and line); the value itself is masked when it is a secret.
    #[error("{key}={} {origin}: {reason}", shown_value(.key, .value))]
    Invalid {
        /// Where the value was given.
        origin: ValueOrigin,
        /// The setting: a variable, a flag or a config path.
        key: String,
        /// The value as given; shown masked when `key` names a secret.
        value: String,
        /// What is wrong with it, and what is expected.
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
    ConfigFile {
        /// The config file, or the configuration cache.
        path: PathBuf,
        /// The 1-based line, when known.
        line: Option<u32>,
    },
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
pub(super) fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let ours = upper.starts_with("ORDER_EXPIRE_") || upper.starts_with("--");
    !ours
        && ["PASS", "SECRET", "KEY", "TOKEN"]
            .iter()
            .any(|word| upper.contains(word))
}

/// `value` as an error may show it for the setting `name`: `***` for a secret, a URL with its
/// password replaced by `***`, anything else quoted.
pub(super) fn shown_value(name: &str, value: &str) -> String {
    if is_secret_name(name) {
        return "***".into();
    }
    format!("{:?}", without_url_password(value))
}

/// `scheme://user:password@host...` with the password (or a user-info without `:`, which some
/// clients read as the password) replaced by `***`, and `user:password@host` without a scheme
/// likewise; other text (an e-mail address) unchanged.
pub(super) fn without_url_password(value: &str) -> String {
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
