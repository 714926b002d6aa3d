//! Laravel configuration: from the app's files to resolved [`Settings`].
//!
//! * [`dotenv`] parses `.env` exactly as phpdotenv 5 does (the dotenvy crate does not: see its
//!   module docs), [`env_value`] maps raw strings as Laravel's `env()` does, and [`environment`]
//!   puts the process environment in front of the file.
//! * [`slug`] is `Str::slug`, which Laravel uses to derive the default key prefixes from `APP_NAME`.
//! * [`version`] finds the app's Laravel version, which decides the key format and defaults.
//! * [`url`] reads `REDIS_URL` and `DATABASE_URL` as Laravel's ConfigurationUrlParser does.
//! * [`php_value`] reads `bootstrap/cache/config.php` (`php artisan config:cache`), which Laravel
//!   prefers to everything else when it exists.
//! * [`php`] holds the PHP conversions (`(int)`, `is_numeric`) that Laravel relies on implicitly.
//! * [`settings`] resolves the Redis connection, key prefixes, MySQL connection, schema mapping
//!   and time zone; [`schema`] validates the table and column names.

mod ascii_table;
pub mod dotenv;
pub mod env_value;
pub mod environment;
pub mod php;
pub mod php_value;
pub mod schema;
pub mod settings;
pub mod slug;
pub mod url;
pub mod version;

pub use schema::{Ident, OrderLines, Schema};
pub use settings::{
    KeySettings, MysqlSettings, Overrides, RecoverySettings, RedisEndpoint, RedisSettings,
    Settings, TimeZoneSetting, keys,
};
