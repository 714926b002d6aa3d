//! Laravel configuration: from the app's files to resolved [`Settings`].
//!
//! * [`dotenv`] parses `.env` exactly as phpdotenv 5 does (the dotenvy crate does not: see its
//!   module docs), [`env_value`] maps raw strings as Laravel's `env()` does, and [`environment`]
//!   puts the process environment in front of the file.
//! * [`slug`] is `Str::slug`, which Laravel uses to derive the default key prefixes from `APP_NAME`.
//! * [`version`] finds the app's Laravel version, which decides the key format and defaults.
//! * [`url`] reads `REDIS_URL` and `DATABASE_URL` as Laravel's ConfigurationUrlParser does.
//! * [`php_value`] holds PHP values and reads `bootstrap/cache/config.php`
//!   (`php artisan config:cache`), which Laravel prefers to everything else when it exists.
//! * [`php_eval`] evaluates the app's `config/*.php` with a real PHP parser, for the PHP config
//!   files are written in.
//! * [`repository`] assembles Laravel's configuration as its `LoadConfiguration` does: the
//!   configuration cache, else `config/*.php` (merged over the framework's own in Laravel 11+),
//!   else the stock files of the app's version (`stock/`).
//! * [`php`] holds the PHP conversions (`(int)`, `is_numeric`) that Laravel relies on implicitly.
//! * [`resolve`] computes the Redis connection, key prefixes and MySQL connection from that
//!   configuration as Laravel's managers and connectors do.
//! * [`settings`] puts it together with order-expire's own settings (schema mapping, TTL, time
//!   zone override); [`schema`] validates the table and column names.

mod ascii_table;
pub mod bounded;
pub mod dotenv;
pub mod env_value;
pub mod environment;
pub mod php;
pub mod php_eval;
pub mod php_value;
pub mod repository;
pub mod resolve;
pub mod schema;
pub mod settings;
pub mod slug;
pub mod url;
pub mod version;

pub use schema::{Ident, OrderLines, Schema};
pub use settings::{
    KeySettings, MysqlSession, MysqlSettings, Overrides, RecoverySettings, RedisEndpoint,
    RedisSettings, Settings, SqlMode, TimeZoneSetting, keys,
};
