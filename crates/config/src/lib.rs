//! Finds a Laravel app's Redis and MySQL the way Laravel itself would: from the app's `.env` to
//! resolved [`Settings`].
//!
//! The leaf of order-expire, as a crate of its own: it depends on no other crate of the
//! workspace (the compiler keeps it so), builds in parallel with the rest, and has its own
//! error type, [`ConfigError`], so it is a small library any Rust service can use to reach the
//! same servers as a Laravel app, with the same key prefixes. order-expire re-exports it as
//! `order_expire::config`.
//!
//! ```no_run
//! use std::path::Path;
//!
//! use order_expire_config::{ConfigError, Overrides, Settings};
//!
//! let settings = Settings::load(Path::new("/var/www/app/.env"), &Overrides::new())?;
//! let keys = &settings.keys;
//! println!(
//!     "redis {} database {}, keys {}{}{}:<id>",
//!     settings.redis.endpoint,
//!     settings.redis.database,
//!     keys.connection_prefix,
//!     keys.store_prefix,
//!     keys.key_type
//! );
//! println!("mysql {} database {}", settings.database.endpoint(), settings.database.database());
//! # Ok::<(), ConfigError>(())
//! ```
//!
//! The files, from the `.env` up (no file uses one listed after it):
//!
//! * `error` holds [`ConfigError`] and [`ValueOrigin`] (where a value was given), and masks
//!   secrets in what an error shows; `bounded` reads files with a size cap.
//! * [`dotenv`] parses `.env` exactly as phpdotenv 5 does (the dotenvy crate does not: see its
//!   module docs), `env_value` maps raw strings as Laravel's `env()` does, and `environment`
//!   puts the process environment in front of the file.
//! * [`slug`] is `Str::slug`, which Laravel uses to derive the default key prefixes from `APP_NAME`.
//! * [`version`] finds the app's Laravel version, which decides the key format and defaults.
//! * `url` reads `REDIS_URL` and `DATABASE_URL` as Laravel's ConfigurationUrlParser does.
//! * `php_value` holds PHP values and reads `bootstrap/cache/config.php`
//!   (`php artisan config:cache`), which Laravel prefers to everything else when it exists.
//! * `php_eval` evaluates the app's `config/*.php` with a real PHP parser, for the PHP config
//!   files are written in.
//! * `repository` assembles Laravel's configuration as its `LoadConfiguration` does: the
//!   configuration cache, else `config/*.php` (merged over the framework's own in Laravel 11+),
//!   else the stock files of the app's version (`stock/`); [`ConfigSource`] says which.
//! * `php` holds the PHP conversions (`(int)`, `is_numeric`) that Laravel relies on implicitly.
//! * `resolved` holds the resolved value types ([`RedisSettings`], [`DatabaseSettings`] with
//!   [`MysqlSettings`], [`KeySettings`]...), which `resolve` computes from that configuration as
//!   Laravel's managers and connectors do; `pgsql` holds [`PgsqlSettings`], which
//!   `resolve_pgsql` computes as PostgresConnector opens the connection.
//! * `dispatch` resolves the Laravel job queued per cancelled order, the jobs queued for
//!   other key types (`ORDER_EXPIRE_ON_<TYPE>`), and their queue connection
//!   (`config/queue.php`) as `QueueManager` does.
//! * `settings` puts it together with order-expire's own settings (schema mapping, TTL, time
//!   zone override); `schema` validates the table and column names.

// The public surface is deliberate: what is `pub` here is re-exported below or is one of the
// public modules; everything else is for the files of this module only.
#![warn(unreachable_pub)]

mod ascii_table;
mod bounded;
mod compare;
mod config_source;
#[cfg(test)]
mod construct_tests;
mod dispatch;
#[cfg(test)]
mod dispatch_tests;
pub mod dotenv;
mod env_value;
mod environment;
mod error;
#[cfg(test)]
mod laravel13_tests;
mod laravel_boot;
mod pgsql;
#[cfg(test)]
mod pgsql_tests;
mod php;
mod php_constants;
mod php_eval;
mod php_runtime;
mod php_value;
mod repository;
mod resolve;
mod resolve_pgsql;
mod resolved;
mod schema;
mod settings;
pub mod slug;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod topology_tests;
mod url;
pub mod version;

pub use bounded::{ReadError, read_pem};
pub use compare::{Difference, differences};
pub use config_source::SourceChoice;
pub use dispatch::{DispatchArgument, DispatchSettings, KeyJobSettings, QueueTarget};
pub use error::{ConfigError, ValueOrigin};
pub use pgsql::{PgsqlSession, PgsqlSettings, PgsqlTls, SslMode};
pub use php::is_numeric;
pub use php_value::Unevaluated;
pub use repository::ConfigSource;
pub use resolved::{
    DatabaseSettings, KeySettings, MysqlSession, MysqlSettings, MysqlTls, RecoverySettings,
    RedisEndpoint, RedisSettings, RedisTls, RedisTopology, SqlMode, TimeZoneSetting,
};
pub use schema::{Ident, OrderLines, Schema};
pub use settings::{Overrides, Settings, flag_of, keys};
