//! Resolves everything the worker needs from the app's variables, with Laravel 8's defaults.
//!
//! Each setting is computed the way Laravel 8's default `config/database.php` and
//! `config/cache.php` compute it from `env()`, including PHP's loose emptiness (`REDIS_PREFIX=`
//! means no prefix, an unset one means the `Str::slug(APP_NAME)` default). Reading the app's own
//! `config/*.php` is meant to grow here, behind the same [`Settings`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::env_value::EnvValue;
use super::environment::Environment;
use super::php;
use super::php_value::{PhpValue, parse_config_cache};
use super::schema::{Ident, OrderLines, Schema};
use super::slug::slug;
use super::url;
use super::version::LaravelVersion;
use crate::error::ConfigError;

/// Names of our own settings. They live in the app's `.env` beside Laravel's, and each has a
/// command-line flag that wins over it.
pub mod keys {
    pub const KEY_TYPE: &str = "ORDER_EXPIRE_KEY_TYPE";
    pub const ORDERS_TABLE: &str = "ORDER_EXPIRE_ORDERS_TABLE";
    pub const ORDERS_STATUS_COLUMN: &str = "ORDER_EXPIRE_ORDERS_STATUS_COLUMN";
    pub const ORDERS_PRODUCT_COLUMN: &str = "ORDER_EXPIRE_ORDERS_PRODUCT_COLUMN";
    pub const ORDERS_QUANTITY_COLUMN: &str = "ORDER_EXPIRE_ORDERS_QUANTITY_COLUMN";
    pub const UNPAID_STATUS: &str = "ORDER_EXPIRE_UNPAID_STATUS";
    pub const CANCELLED_STATUS: &str = "ORDER_EXPIRE_CANCELLED_STATUS";
    pub const PRODUCTS_TABLE: &str = "ORDER_EXPIRE_PRODUCTS_TABLE";
    pub const PRODUCTS_STOCK_COLUMN: &str = "ORDER_EXPIRE_PRODUCTS_STOCK_COLUMN";
    pub const ITEMS_TABLE: &str = "ORDER_EXPIRE_ITEMS_TABLE";
    pub const ITEMS_ORDER_COLUMN: &str = "ORDER_EXPIRE_ITEMS_ORDER_COLUMN";
    pub const ITEMS_PRODUCT_COLUMN: &str = "ORDER_EXPIRE_ITEMS_PRODUCT_COLUMN";
    pub const ITEMS_QUANTITY_COLUMN: &str = "ORDER_EXPIRE_ITEMS_QUANTITY_COLUMN";
    pub const TIMEZONE: &str = "ORDER_EXPIRE_TIMEZONE";
    pub const ORDER_TTL: &str = "ORDER_EXPIRE_TTL";
    pub const SWEEP_INTERVAL: &str = "ORDER_EXPIRE_SWEEP_INTERVAL";
    pub const LARAVEL_VERSION: &str = "ORDER_EXPIRE_LARAVEL_VERSION";
}

/// Values given on the command line, keyed by the `.env` name they override.
pub type Overrides = BTreeMap<&'static str, String>;

/// Debian's `pdo_mysql.default_socket`: PDO connects there when `DB_HOST=localhost`.
const PDO_DEFAULT_SOCKET: &str = "/var/run/mysqld/mysqld.sock";

/// Everything the worker needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `.env` the settings came from.
    pub env_file: PathBuf,
    /// The app's Laravel version, when known; Laravel 8's rules apply when it is not.
    pub laravel: Option<LaravelVersion>,
    /// The app's configuration cache (`php artisan config:cache`) the settings were read from,
    /// if it has one (Laravel then ignores `.env` and so do we).
    pub config_cache: Option<PathBuf>,
    pub redis: RedisSettings,
    pub keys: KeySettings,
    pub mysql: MysqlSettings,
    pub schema: Schema,
    pub timezone: TimeZoneSetting,
    pub recovery: RecoverySettings,
}

/// How orders whose event never arrived are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// The TTL the app passes to `put()`: an unpaid order is overdue `order_ttl` after its
    /// `created_at` once its key is gone. `None` turns reconciliation off, because guessing it
    /// could cancel orders early.
    pub order_ttl: Option<std::time::Duration>,
    /// Time between two reconciliation sweeps.
    pub sweep_interval: std::time::Duration,
}

/// How to reach the app's cache Redis connection (`database.redis.cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub endpoint: RedisEndpoint,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The cache database index (`REDIS_CACHE_DB`), as phpredis `SELECT`s it.
    pub database: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
    Unix { path: PathBuf },
}

impl fmt::Display for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Tls { host, port } => write!(f, "tls://{host}:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What Laravel puts in front of `ORDER_CONFIRM:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    /// The Redis connection's prefix (`REDIS_PREFIX`), applied by phpredis to every key.
    pub connection_prefix: String,
    /// The cache prefix as configured (`config('cache.prefix')`), for display.
    pub cache_prefix: String,
    /// The cache store's prefix as `RedisStore` uses it: the cache prefix plus the `:` that
    /// Laravel 8-10 append, or empty when the cache prefix is PHP-empty (`''`, `'0'`, null).
    pub store_prefix: String,
    /// The key type the app uses (`ORDER_CONFIRM`).
    pub key_type: String,
}

/// The app's MySQL connection (`database.connections.mysql`).
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    /// A Unix socket, from `DB_SOCKET` or implied by `DB_HOST=localhost` as PDO does.
    pub socket: Option<PathBuf>,
    pub database: String,
    pub username: String,
    pub password: String,
    /// The connection's table prefix (`'prefix'` in config/database.php), already applied to
    /// the schema's table names.
    pub table_prefix: String,
}

impl MysqlSettings {
    /// Where we connect, for messages.
    pub fn endpoint(&self) -> String {
        match &self.socket {
            Some(path) => format!("unix:{}", path.display()),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Never print the password, even in debug logs.
impl fmt::Debug for MysqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"***")
            .field("table_prefix", &self.table_prefix)
            .finish()
    }
}

/// The app's time zone (`config('app.timezone')`), in which Eloquent writes `updated_at`.
#[derive(Debug, Clone)]
pub struct TimeZoneSetting {
    pub name: String,
    pub tz: jiff::tz::TimeZone,
}

impl TimeZoneSetting {
    /// `ts` as Eloquent writes a timestamp: `Y-m-d H:i:s` in the app's time zone.
    pub fn eloquent(&self, ts: jiff::Timestamp) -> String {
        ts.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    }
}

impl Settings {
    /// Where Laravel's settings came from: `.env` or `config-cache`.
    pub fn source(&self) -> &'static str {
        if self.config_cache.is_some() {
            "config-cache"
        } else {
            ".env"
        }
    }

    /// Reads the app's `.env` at `env_file` and resolves the settings; `overrides` (command-line
    /// flags) win over everything.
    pub fn load(env_file: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let env = Environment::load(env_file)?;
        let root = env_file.parent().unwrap_or(Path::new("."));
        let version = LaravelVersion::detect(root);
        // Laravel's Application::getCachedConfigPath: APP_CONFIG_CACHE (relative to the app
        // root unless absolute), else bootstrap/cache/config.php. When it exists Laravel reads
        // nothing else, and neither do we (our own ORDER_EXPIRE_* settings still come from .env).
        let cache = match env.raw("APP_CONFIG_CACHE").filter(|p| !p.is_empty()) {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            Some(path) => root.join(path),
            None => root.join("bootstrap/cache/config.php"),
        };
        if !cache.is_file() {
            return Self::resolve_for(env_file, &env, overrides, version);
        }
        let bad = |reason: String| ConfigError::ConfigCache {
            path: cache.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&cache).map_err(|e| bad(e.to_string()))?;
        let config = parse_config_cache(&text).map_err(bad)?;
        let mut settings = Self::resolve_cached(env_file, &env, overrides, version, &config)?;
        settings.config_cache = Some(cache);
        Ok(settings)
    }

    /// Resolves the settings from a configuration cache (`config`); `env` only supplies
    /// order-expire's own settings.
    pub fn resolve_cached(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
        version: Option<LaravelVersion>,
        config: &PhpValue,
    ) -> Result<Self, ConfigError> {
        let r = Resolver {
            env,
            overrides,
            file: env_file,
            version,
        };
        let cached = Cached { r: &r, config };
        let (mysql, table_prefix) = cached.mysql()?;
        let mut schema = r.schema()?;
        schema.apply_table_prefix(&table_prefix).map_err(|reason| {
            cached.invalid("database.connections.*.prefix", &table_prefix, reason)
        })?;
        Ok(Self {
            env_file: env_file.to_path_buf(),
            laravel: r.version.clone(),
            config_cache: None,
            redis: cached.redis()?,
            keys: cached.keys()?,
            mysql,
            schema,
            timezone: cached.timezone()?,
            recovery: r.recovery()?,
        })
    }

    /// Resolves the settings from an already-read environment, for Laravel 8.
    pub fn resolve(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::resolve_for(env_file, env, overrides, None)
    }

    /// Resolves the settings for the app's detected Laravel version (`--laravel-version` wins).
    pub fn resolve_for(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
        detected: Option<LaravelVersion>,
    ) -> Result<Self, ConfigError> {
        let mut r = Resolver {
            env,
            overrides,
            file: env_file,
            version: None,
        };
        r.version = match r.ours(keys::LARAVEL_VERSION) {
            Some(given) => Some(LaravelVersion::given(&given).ok_or_else(|| {
                r.invalid(
                    keys::LARAVEL_VERSION,
                    &given,
                    "expected a version such as 8 or 10.48",
                )
            })?),
            None => detected,
        };
        r.require_cache_driver()?;
        Ok(Self {
            env_file: env_file.to_path_buf(),
            laravel: r.version.clone(),
            config_cache: None,
            redis: r.redis()?,
            keys: r.keys()?,
            mysql: r.mysql()?,
            schema: r.schema()?,
            timezone: r.timezone()?,
            recovery: r.recovery()?,
        })
    }
}

struct Resolver<'a> {
    env: &'a Environment,
    overrides: &'a Overrides,
    file: &'a Path,
    version: Option<LaravelVersion>,
}

impl Resolver<'_> {
    /// The framework major whose stock config files apply (8 when unknown).
    fn major(&self) -> u32 {
        self.version.as_ref().map_or(8, |v| v.major)
    }

    /// `env(name, default)` as a PHP string: unset gives the default, `null` gives `None`.
    fn laravel(&self, name: &str, default: Option<&str>) -> Option<String> {
        match self.env.get(name) {
            None => default.map(str::to_string),
            Some(value) => value.to_php_string(),
        }
    }

    /// One of our own settings: the flag, else the variable, else the default. Empty and `null`
    /// count as unset, so `ORDER_EXPIRE_ITEMS_TABLE=` reads naturally as "none".
    fn ours(&self, name: &'static str) -> Option<String> {
        if let Some(value) = self.overrides.get(name) {
            return Some(value.clone()).filter(|v| !v.is_empty());
        }
        self.env
            .get(name)
            .and_then(|v| v.to_php_string())
            .filter(|v| !v.is_empty())
    }

    fn invalid(&self, key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn ident(&self, name: &'static str, default: &str) -> Result<Ident, ConfigError> {
        let value = self.ours(name).unwrap_or_else(|| default.to_string());
        Ident::new(&value).map_err(|reason| self.invalid(name, &value, reason))
    }

    fn integer(&self, name: &'static str, default: i64) -> Result<i64, ConfigError> {
        match self.ours(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| self.invalid(name, &v, "expected an integer")),
        }
    }

    fn port(&self, name: &str, default: &str) -> Result<i64, ConfigError> {
        let value = self.laravel(name, Some(default)).unwrap_or_default();
        if !php::is_numeric(&value) {
            return Err(self.invalid(name, &value, "expected a port number"));
        }
        Ok(php::int_cast(&value))
    }

    /// The default cache store must be Redis: `CACHE_DRIVER` up to Laravel 10 (default `file`),
    /// `CACHE_STORE` from 11 (default `database`).
    fn require_cache_driver(&self) -> Result<(), ConfigError> {
        let (name, default) = if self.major() >= 11 {
            ("CACHE_STORE", "database")
        } else {
            ("CACHE_DRIVER", "file")
        };
        let driver = self.laravel(name, Some(default)).unwrap_or_default();
        if driver != "redis" {
            return Err(ConfigError::CacheDriver {
                path: self.file.to_path_buf(),
                name,
                found: driver,
            });
        }
        Ok(())
    }

    /// `name` parsed as Laravel's ConfigurationUrlParser does, when it is set and not empty.
    fn url(&self, name: &str) -> Result<Option<url::UrlParts>, ConfigError> {
        match self.laravel(name, None) {
            Some(raw) if !raw.is_empty() => url::parse(&raw)
                .map(Some)
                .map_err(|reason| self.invalid(name, &raw, reason)),
            _ => Ok(None),
        }
    }

    fn redis(&self) -> Result<RedisSettings, ConfigError> {
        let client = self
            .laravel("REDIS_CLIENT", Some("phpredis"))
            .unwrap_or_default();
        if client != "phpredis" && client != "predis" {
            return Err(self.invalid("REDIS_CLIENT", &client, "expected phpredis or predis"));
        }
        // REDIS_URL's parts win over REDIS_HOST, REDIS_PORT, REDIS_PASSWORD and (with a path or
        // ?database=) REDIS_CACHE_DB, as RedisManager merges them.
        let url = self.url("REDIS_URL")?;
        let from_url = |key: &str| {
            url.as_ref()
                .and_then(|u| u.get(key))
                .filter(|v| **v != url::UrlValue::Null || key == "database")
        };
        let url_tls = url.as_ref().and_then(|u| u.driver.as_deref()) == Some("tls");
        let host = match from_url("host") {
            Some(v) => v.to_php_string().unwrap_or_default(),
            None => self
                .laravel("REDIS_HOST", Some("127.0.0.1"))
                .unwrap_or_default(),
        };
        let port = match from_url("port") {
            Some(v) => php::int_cast(&v.to_php_string().unwrap_or_default()),
            None => self.port("REDIS_PORT", "6379")?,
        };
        let endpoint = self.redis_endpoint(host, port, url_tls, ("REDIS_HOST", "REDIS_PORT"))?;
        // phpredis sends AUTH only for a non-empty password (so `null`, `` and `0` mean none).
        let password = match from_url("password") {
            Some(v) => v.to_php_string().filter(|p| !p.is_empty() && p != "0"),
            None => self
                .env
                .get("REDIS_PASSWORD")
                .filter(|v| !v.is_php_empty())
                .and_then(|v| v.to_php_string()),
        };
        // Laravel 9+ reads REDIS_USERNAME for ACL users; Laravel 8's connectors never send one.
        let username = if self.major() >= 9 {
            self.env
                .get("REDIS_USERNAME")
                .filter(|v| !v.is_php_empty())
                .and_then(|v| v.to_php_string())
        } else {
            None
        };
        // The cache store's connection: `cache` (REDIS_CACHE_DB, default 1), or from Laravel 11
        // REDIS_CACHE_CONNECTION, which may name `default` (REDIS_DB, default 0).
        let connection = if self.major() >= 11 {
            self.laravel("REDIS_CACHE_CONNECTION", Some("cache"))
                .unwrap_or_default()
        } else {
            "cache".to_string()
        };
        let (db_var, db_default) = match connection.as_str() {
            "cache" => ("REDIS_CACHE_DB", 1),
            "default" => ("REDIS_DB", 0),
            other => {
                return Err(self.invalid(
                    "REDIS_CACHE_CONNECTION",
                    other,
                    "only the stock `cache` and `default` connections can be resolved from the .env",
                ));
            }
        };
        // `null` means phpredis does not SELECT at all: database 0.
        let database = match (from_url("database"), self.env.get(db_var)) {
            (Some(url::UrlValue::Null), _) | (None, Some(EnvValue::Null)) => 0,
            (Some(v), _) => php::int_cast(&v.to_php_string().unwrap_or_default()),
            (None, None) => db_default,
            (None, Some(v)) => php::int_cast(&v.to_php_string().unwrap_or_default()),
        };
        if database < 0 {
            return Err(self.invalid(
                db_var,
                &database.to_string(),
                "a database index cannot be negative",
            ));
        }
        Ok(RedisSettings {
            endpoint,
            username,
            password,
            database,
        })
    }

    /// Where phpredis connects for `host` and `port`: a Unix socket for a path with a port below
    /// 1, TLS for a `tls://` (`ssl://`, `rediss://`) host or a TLS scheme, else TCP. `names`
    /// are the settings to blame in errors.
    fn redis_endpoint(
        &self,
        host: String,
        port: i64,
        tls: bool,
        names: (&str, &str),
    ) -> Result<RedisEndpoint, ConfigError> {
        if host.starts_with('/') && port < 1 {
            return Ok(RedisEndpoint::Unix { path: host.into() });
        }
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.invalid(names.1, &port.to_string(), "expected 1-65535"))?;
        if host.is_empty() {
            return Err(self.invalid(names.0, "", "a host name is required"));
        }
        Ok(match host.split_once("://") {
            Some(("tls" | "ssl" | "rediss", h)) => RedisEndpoint::Tls {
                host: h.into(),
                port,
            },
            Some(("tcp" | "redis", h)) => RedisEndpoint::Tcp {
                host: h.into(),
                port,
            },
            Some((scheme, _)) => {
                return Err(self.invalid(names.0, &host, format!("unknown scheme `{scheme}://`")));
            }
            None if tls => RedisEndpoint::Tls { host, port },
            None => RedisEndpoint::Tcp { host, port },
        })
    }

    fn keys(&self) -> Result<KeySettings, ConfigError> {
        let app_name = self
            .laravel("APP_NAME", Some("laravel"))
            .unwrap_or_default();
        let app_slug = slug(&app_name, '_');
        let client = self
            .laravel("REDIS_CLIENT", Some("phpredis"))
            .unwrap_or_default();

        // config/database.php: 'prefix' => env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_')
        let connection_prefix = match self.env.get("REDIS_PREFIX") {
            None => Some(format!("{app_slug}_database_")),
            Some(v) if client == "phpredis" && v.is_php_empty() => None,
            Some(v) => v.to_php_string(),
        }
        .unwrap_or_default();

        // config/cache.php: 'prefix' => env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache')
        // (`_cache_` in the Laravel 9+ skeletons), then RedisStore::setPrefix: Laravel 8-10
        // append `:` to a non-empty prefix, 11+ use it verbatim.
        let cache_prefix = match self.env.get("CACHE_PREFIX") {
            None if self.major() >= 9 => EnvValue::Str(format!("{app_slug}_cache_")),
            None => EnvValue::Str(format!("{app_slug}_cache")),
            Some(v) => v,
        };
        let colon = self
            .version
            .as_ref()
            .is_none_or(LaravelVersion::cache_prefix_colon);
        let store_prefix = match cache_prefix.to_php_string() {
            Some(prefix) if colon && !cache_prefix.is_php_empty() => format!("{prefix}:"),
            Some(prefix) if !colon => prefix,
            _ => String::new(),
        };

        let key_type = self
            .ours(keys::KEY_TYPE)
            .unwrap_or_else(|| "ORDER_CONFIRM".into());
        if key_type.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(self.invalid(
                keys::KEY_TYPE,
                &key_type,
                "a key type cannot contain spaces or `:`",
            ));
        }
        Ok(KeySettings {
            connection_prefix,
            cache_prefix: cache_prefix.to_php_string().unwrap_or_default(),
            store_prefix,
            key_type,
        })
    }

    fn mysql(&self) -> Result<MysqlSettings, ConfigError> {
        // Laravel 11+ default to sqlite, which order-expire cannot serve.
        let default_connection = if self.major() >= 11 {
            "sqlite"
        } else {
            "mysql"
        };
        let connection = self
            .laravel("DB_CONNECTION", Some(default_connection))
            .unwrap_or_default();
        if connection != "mysql" && connection != "mariadb" {
            return Err(ConfigError::DbConnection {
                path: self.file.to_path_buf(),
                found: connection,
            });
        }
        // The URL's parts win over DB_HOST, DB_PORT, DB_DATABASE, DB_USERNAME, DB_PASSWORD; it is
        // DATABASE_URL up to Laravel 10 and DB_URL from 11.
        let url_var = if self.major() >= 11 {
            "DB_URL"
        } else {
            "DATABASE_URL"
        };
        let url = self.url(url_var)?;
        if let Some(driver) = url
            .as_ref()
            .and_then(|u| u.driver.as_deref())
            .filter(|d| *d != "mysql" && *d != "mariadb")
        {
            return Err(ConfigError::DbConnection {
                path: self.file.to_path_buf(),
                found: format!("{driver} (from {url_var})"),
            });
        }
        let from_url = |key: &str| {
            url.as_ref()
                .and_then(|u| u.get(key))
                .and_then(url::UrlValue::to_php_string)
        };
        let host = match from_url("host") {
            Some(host) => host,
            None => self
                .laravel("DB_HOST", Some("127.0.0.1"))
                .unwrap_or_default(),
        };
        let port = match from_url("port") {
            Some(port) => php::int_cast(&port),
            None => self.port("DB_PORT", "3306")?,
        };
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.invalid("DB_PORT", &port.to_string(), "expected 1-65535"))?;
        let socket = from_url("unix_socket")
            .or_else(|| self.laravel("DB_SOCKET", Some("")))
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| (host == "localhost").then(|| PathBuf::from(PDO_DEFAULT_SOCKET)));
        Ok(MysqlSettings {
            host,
            port,
            socket,
            database: from_url("database")
                .or_else(|| {
                    self.laravel(
                        "DB_DATABASE",
                        Some(if self.major() >= 11 {
                            "laravel"
                        } else {
                            "forge"
                        }),
                    )
                })
                .unwrap_or_default(),
            username: from_url("username")
                .or_else(|| {
                    self.laravel(
                        "DB_USERNAME",
                        Some(if self.major() >= 11 { "root" } else { "forge" }),
                    )
                })
                .unwrap_or_default(),
            password: from_url("password")
                .or_else(|| self.laravel("DB_PASSWORD", Some("")))
                .unwrap_or_default(),
            // Only config/database.php can set it (there is no DB_PREFIX).
            table_prefix: String::new(),
        })
    }

    fn schema(&self) -> Result<Schema, ConfigError> {
        let lines = if self.ours(keys::ITEMS_TABLE).is_some() {
            OrderLines::Items {
                table: self.ident(keys::ITEMS_TABLE, "order_items")?,
                order: self.ident(keys::ITEMS_ORDER_COLUMN, "order_id")?,
                product: self.ident(keys::ITEMS_PRODUCT_COLUMN, "product_id")?,
                quantity: self.ident(keys::ITEMS_QUANTITY_COLUMN, "quantity")?,
            }
        } else {
            OrderLines::OnOrder {
                product: self.ident(keys::ORDERS_PRODUCT_COLUMN, "product_id")?,
                quantity: self.ident(keys::ORDERS_QUANTITY_COLUMN, "quantity")?,
            }
        };
        let unpaid_status = self.integer(keys::UNPAID_STATUS, 0)?;
        let cancelled_status = self.integer(keys::CANCELLED_STATUS, 2)?;
        if unpaid_status == cancelled_status {
            return Err(self.invalid(
                keys::CANCELLED_STATUS,
                &cancelled_status.to_string(),
                "the cancelled status must differ from the unpaid status",
            ));
        }
        Ok(Schema {
            orders: self.ident(keys::ORDERS_TABLE, "orders")?,
            order_status: self.ident(keys::ORDERS_STATUS_COLUMN, "status")?,
            lines,
            products: self.ident(keys::PRODUCTS_TABLE, "products")?,
            product_stock: self.ident(keys::PRODUCTS_STOCK_COLUMN, "stock")?,
            unpaid_status,
            cancelled_status,
        })
    }

    fn recovery(&self) -> Result<RecoverySettings, ConfigError> {
        let seconds =
            |name: &'static str, default: Option<u64>| -> Result<Option<u64>, ConfigError> {
                match self.ours(name) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if n > 0 => Ok(Some(n)),
                        _ => Err(self.invalid(
                            name,
                            &v,
                            "expected a whole number of seconds, at least 1",
                        )),
                    },
                }
            };
        Ok(RecoverySettings {
            order_ttl: seconds(keys::ORDER_TTL, None)?.map(std::time::Duration::from_secs),
            sweep_interval: std::time::Duration::from_secs(
                seconds(keys::SWEEP_INTERVAL, Some(60))?.unwrap_or(60),
            ),
        })
    }

    fn timezone(&self) -> Result<TimeZoneSetting, ConfigError> {
        // Laravel 8's config/app.php has the literal 'timezone' => 'UTC'; the Laravel 11
        // skeleton read APP_TIMEZONE.
        let name = self
            .ours(keys::TIMEZONE)
            .or_else(|| {
                (self.major() == 11)
                    .then(|| self.laravel("APP_TIMEZONE", None))
                    .flatten()
                    .filter(|tz| !tz.is_empty())
            })
            .unwrap_or_else(|| "UTC".into());
        let tz = jiff::tz::TimeZone::get(&name).map_err(|_| {
            self.invalid(
                keys::TIMEZONE,
                &name,
                "not a known IANA time zone (e.g. UTC, Asia/Shanghai)",
            )
        })?;
        Ok(TimeZoneSetting { name, tz })
    }
}

/// Laravel's own resolved configuration (`bootstrap/cache/config.php`), read as Laravel 8-12's
/// RedisManager, connectors, CacheManager and DatabaseManager read it.
struct Cached<'a, 'b> {
    r: &'a Resolver<'b>,
    config: &'a PhpValue,
}

impl Cached<'_, '_> {
    fn get(&self, path: &str) -> Option<&PhpValue> {
        self.config.lookup(path)
    }

    fn string(&self, path: &str) -> Option<String> {
        self.get(path).and_then(PhpValue::to_php_string)
    }

    fn invalid(&self, key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.r.file.with_file_name("bootstrap/cache/config.php"),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The default cache store, which must be a redis store.
    fn store(&self) -> Result<&PhpValue, ConfigError> {
        let default = self.string("cache.default").unwrap_or_default();
        let store = self.get(&format!("cache.stores.{default}"));
        match store {
            Some(store) if store.get("driver").and_then(PhpValue::to_php_string).as_deref() == Some("redis") => Ok(store),
            _ => Err(self.invalid(
                "cache.default",
                &default,
                "the default cache store must be a redis store (CACHE_DRIVER=redis, then php artisan config:cache)",
            )),
        }
    }

    /// The store's connection after its URL is merged in (RedisManager::parseConnectionConfiguration).
    fn redis_connection(&self) -> Result<(String, BTreeMap<String, PhpValue>), ConfigError> {
        let store = self.store()?;
        let name = store
            .get("connection")
            .and_then(PhpValue::to_php_string)
            .unwrap_or_else(|| "default".into());
        let Some(PhpValue::Array(entries)) = self.get(&format!("database.redis.{name}")) else {
            return Err(self.invalid(
                "cache.stores.redis.connection",
                &name,
                format!("Redis connection [{name}] not configured in database.redis (a cluster is not supported yet)"),
            ));
        };
        let mut conn: BTreeMap<String, PhpValue> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        merge_url(&mut conn, |reason| {
            self.invalid(&format!("database.redis.{name}.url"), "", reason)
        })?;
        Ok((name, conn))
    }

    fn redis(&self) -> Result<RedisSettings, ConfigError> {
        let (name, conn) = self.redis_connection()?;
        let text = |key: &str| conn.get(key).and_then(PhpValue::to_php_string);
        let tls = matches!(text("driver").as_deref(), Some("tls"))
            || matches!(text("scheme").as_deref(), Some("tls" | "rediss"));
        let host = text("host").unwrap_or_default();
        let port = php::int_cast(&text("port").unwrap_or_default());
        let key = |k: &str| format!("database.redis.{name}.{k}");
        let endpoint = self
            .r
            .redis_endpoint(host, port, tls, (&key("host"), &key("port")))?;
        let password = conn
            .get("password")
            .filter(|v| !v.is_php_empty())
            .and_then(PhpValue::to_php_string);
        let username = if self.r.major() >= 9 {
            conn.get("username")
                .filter(|v| !v.is_php_empty())
                .and_then(PhpValue::to_php_string)
        } else {
            None
        };
        let database = match conn.get("database") {
            None | Some(PhpValue::Null) => 0,
            Some(v) => php::int_cast(&v.to_php_string().unwrap_or_default()),
        };
        Ok(RedisSettings {
            endpoint,
            username,
            password,
            database,
        })
    }

    fn keys(&self) -> Result<KeySettings, ConfigError> {
        let (_, conn) = self.redis_connection()?;
        let client = self
            .string("database.redis.client")
            .unwrap_or_else(|| "phpredis".into());
        // The connectors merge the global options, then the connection's own.
        let connection_options = conn.get("options");
        let option_prefix = connection_options
            .and_then(|o| o.get("prefix"))
            .or_else(|| self.get("database.redis.options.prefix"));
        let prefix = if client == "predis" {
            conn.get("prefix").or(option_prefix)
        } else {
            option_prefix
        };
        let connection_prefix = match prefix {
            Some(p) if client == "phpredis" && p.is_php_empty() => String::new(),
            Some(p) => p.to_php_string().unwrap_or_default(),
            None => String::new(),
        };
        // CacheManager::getPrefix: the store's own prefix ?? cache.prefix.
        let store = self.store()?;
        let cache_prefix = match store.get("prefix") {
            Some(p) if *p != PhpValue::Null => p.clone(),
            _ => self.get("cache.prefix").cloned().unwrap_or(PhpValue::Null),
        };
        let colon = self
            .r
            .version
            .as_ref()
            .is_none_or(LaravelVersion::cache_prefix_colon);
        let text = cache_prefix.to_php_string().unwrap_or_default();
        let store_prefix = if colon {
            if cache_prefix.is_php_empty() {
                String::new()
            } else {
                format!("{text}:")
            }
        } else {
            text.clone()
        };
        let key_type = self.r.keys()?.key_type;
        Ok(KeySettings {
            connection_prefix,
            cache_prefix: text,
            store_prefix,
            key_type,
        })
    }

    /// The default database connection, its URL and `write` host merged in, and its table prefix.
    fn mysql(&self) -> Result<(MysqlSettings, String), ConfigError> {
        let default = self.string("database.default").unwrap_or_default();
        let Some(PhpValue::Array(entries)) = self.get(&format!("database.connections.{default}"))
        else {
            return Err(self.invalid(
                "database.default",
                &default,
                "no such connection in database.connections",
            ));
        };
        let mut conn: BTreeMap<String, PhpValue> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        merge_url(&mut conn, |reason| {
            self.invalid(&format!("database.connections.{default}.url"), "", reason)
        })?;
        // Writes go to the `write` connection of a read/write split.
        if let Some(PhpValue::Array(write)) = conn.get("write").cloned() {
            for (k, v) in write {
                conn.insert(k.to_string(), v);
            }
        }
        let text = |key: &str| conn.get(key).and_then(PhpValue::to_php_string);
        let driver = text("driver").unwrap_or_default();
        if driver != "mysql" && driver != "mariadb" {
            return Err(ConfigError::DbConnection {
                path: self.r.file.with_file_name("bootstrap/cache/config.php"),
                found: driver,
            });
        }
        let host = match conn.get("host") {
            Some(PhpValue::Array(hosts)) => hosts.first().and_then(|(_, h)| h.to_php_string()),
            Some(h) => h.to_php_string(),
            None => None,
        }
        .unwrap_or_else(|| "127.0.0.1".into());
        let port = php::int_cast(&text("port").unwrap_or_else(|| "3306".into()));
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            self.invalid(
                "database.connections.*.port",
                &port.to_string(),
                "expected 1-65535",
            )
        })?;
        let socket = text("unix_socket")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| (host == "localhost").then(|| PathBuf::from(PDO_DEFAULT_SOCKET)));
        let table_prefix = text("prefix").unwrap_or_default();
        Ok((
            MysqlSettings {
                host,
                port,
                socket,
                database: text("database").unwrap_or_default(),
                username: text("username").unwrap_or_default(),
                password: text("password").unwrap_or_default(),
                table_prefix: table_prefix.clone(),
            },
            table_prefix,
        ))
    }

    fn timezone(&self) -> Result<TimeZoneSetting, ConfigError> {
        if self.r.ours(keys::TIMEZONE).is_some() {
            return self.r.timezone();
        }
        let name = self.string("app.timezone").unwrap_or_else(|| "UTC".into());
        let tz = jiff::tz::TimeZone::get(&name)
            .map_err(|_| self.invalid("app.timezone", &name, "not a known IANA time zone"))?;
        Ok(TimeZoneSetting { name, tz })
    }
}

/// ConfigurationUrlParser: a non-empty `url` overrides the parts it has; its query wins over all.
fn merge_url(
    conn: &mut BTreeMap<String, PhpValue>,
    invalid: impl Fn(String) -> ConfigError,
) -> Result<(), ConfigError> {
    let Some(raw) = conn
        .remove("url")
        .and_then(|u| u.to_php_string())
        .filter(|u| !u.is_empty())
    else {
        return Ok(());
    };
    let parts = url::parse(&raw).map_err(invalid)?;
    let to_php = |v: &url::UrlValue| match v {
        url::UrlValue::Null => PhpValue::Null,
        url::UrlValue::Bool(b) => PhpValue::Bool(*b),
        url::UrlValue::Int(i) => PhpValue::Int(*i),
        url::UrlValue::Float(f) => PhpValue::Float(*f),
        url::UrlValue::Str(s) => PhpValue::Str(s.clone()),
    };
    if let Some(driver) = &parts.driver {
        conn.insert("driver".into(), PhpValue::Str(driver.clone()));
    }
    for (k, v) in &parts.primary {
        if *v != url::UrlValue::Null {
            conn.insert((*k).to_string(), to_php(v));
        }
    }
    for (k, v) in &parts.query {
        conn.insert(k.clone(), to_php(v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Settings, ConfigError> {
        resolve_with(text, &Overrides::new())
    }

    fn resolve_with(text: &str, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let env = Environment::parse(text, Box::new(|_| None)).expect("valid .env");
        Settings::resolve(Path::new("/app/.env"), &env, overrides)
    }

    fn full_prefix(s: &Settings) -> String {
        format!(
            "{}{}{}:",
            s.keys.connection_prefix, s.keys.store_prefix, s.keys.key_type
        )
    }

    #[test]
    fn laravel_8_defaults() {
        let s = resolve("CACHE_DRIVER=redis\n").expect("resolves");
        assert_eq!(
            full_prefix(&s),
            "laravel_database_laravel_cache:ORDER_CONFIRM:"
        );
        assert_eq!(s.redis.database, 1);
        assert_eq!(
            s.redis.endpoint,
            RedisEndpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        assert_eq!(s.redis.password, None);
        assert_eq!(s.mysql.endpoint(), "127.0.0.1:3306");
        assert_eq!(
            (s.mysql.database.as_str(), s.mysql.username.as_str()),
            ("forge", "forge")
        );
        assert_eq!(s.timezone.name, "UTC");
        assert_eq!((s.schema.unpaid_status, s.schema.cancelled_status), (0, 2));
        assert_eq!(
            s.recovery.order_ttl, None,
            "no reconciliation without the app's TTL"
        );
        assert_eq!(
            s.recovery.sweep_interval,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn prefixes_follow_app_name_and_php_emptiness() {
        let cases = [
            (
                "APP_NAME=\"My Shop\"",
                "my_shop_database_my_shop_cache:ORDER_CONFIRM:",
            ),
            ("REDIS_PREFIX=", "laravel_cache:ORDER_CONFIRM:"),
            ("REDIS_PREFIX=null", "laravel_cache:ORDER_CONFIRM:"),
            ("REDIS_PREFIX=0", "laravel_cache:ORDER_CONFIRM:"),
            (
                "REDIS_PREFIX=0\nREDIS_CLIENT=predis",
                "0laravel_cache:ORDER_CONFIRM:",
            ),
            ("REDIS_PREFIX=shop:", "shop:laravel_cache:ORDER_CONFIRM:"),
            ("CACHE_PREFIX=", "laravel_database_ORDER_CONFIRM:"),
            ("CACHE_PREFIX=0", "laravel_database_ORDER_CONFIRM:"),
            ("CACHE_PREFIX=a:b", "laravel_database_a:b:ORDER_CONFIRM:"),
            ("REDIS_PREFIX=\nCACHE_PREFIX=", "ORDER_CONFIRM:"),
            ("APP_NAME=", "_database__cache:ORDER_CONFIRM:"),
            (
                "ORDER_EXPIRE_KEY_TYPE=ORDER_PAY",
                "laravel_database_laravel_cache:ORDER_PAY:",
            ),
        ];
        for (extra, expected) in cases {
            let s = resolve(&format!("CACHE_DRIVER=redis\n{extra}\n")).expect("resolves");
            assert_eq!(full_prefix(&s), expected, "with {extra:?}");
        }
    }

    #[test]
    fn redis_connection_variants() {
        let s = resolve("CACHE_DRIVER=redis\nREDIS_HOST=tls://cache.example\nREDIS_PORT=6380\nREDIS_PASSWORD=s3cret\nREDIS_CACHE_DB=01").expect("resolves");
        assert_eq!(
            s.redis.endpoint,
            RedisEndpoint::Tls {
                host: "cache.example".into(),
                port: 6380
            }
        );
        assert_eq!(s.redis.password.as_deref(), Some("s3cret"));
        assert_eq!(s.redis.database, 1);

        let s = resolve("CACHE_DRIVER=redis\nREDIS_HOST=/run/redis.sock\nREDIS_PORT=0\nREDIS_PASSWORD=null\nREDIS_CACHE_DB=null").expect("resolves");
        assert_eq!(
            s.redis.endpoint,
            RedisEndpoint::Unix {
                path: "/run/redis.sock".into()
            }
        );
        assert_eq!((s.redis.password, s.redis.database), (None, 0));

        let s = resolve("CACHE_DRIVER=redis\nREDIS_PASSWORD=0").expect("resolves");
        assert_eq!(
            s.redis.password, None,
            "phpredis does not send the password \"0\""
        );
    }

    fn resolve_version(text: &str, major: &str) -> Settings {
        let env = Environment::parse(text, Box::new(|_| None)).expect("valid .env");
        Settings::resolve_for(
            Path::new("/app/.env"),
            &env,
            &Overrides::new(),
            LaravelVersion::given(major),
        )
        .expect("resolves")
    }

    /// Laravel 9+ cannot be run here; the expected keys are the documented ones
    /// (shared laravel-conventions §4.2).
    #[test]
    fn key_format_follows_the_laravel_version() {
        let cases = [
            (
                "8",
                "CACHE_DRIVER=redis",
                "laravel_database_laravel_cache:ORDER_CONFIRM:",
            ),
            (
                "10",
                "CACHE_DRIVER=redis",
                "laravel_database_laravel_cache_:ORDER_CONFIRM:",
            ),
            (
                "11",
                "CACHE_STORE=redis",
                "laravel_database_laravel_cache_ORDER_CONFIRM:",
            ),
            (
                "11",
                "CACHE_STORE=redis\nCACHE_PREFIX=",
                "laravel_database_ORDER_CONFIRM:",
            ),
            (
                "12",
                "CACHE_STORE=redis\nREDIS_PREFIX=\nCACHE_PREFIX=",
                "ORDER_CONFIRM:",
            ),
            (
                "11",
                "CACHE_STORE=redis\nCACHE_PREFIX=shop:",
                "laravel_database_shop:ORDER_CONFIRM:",
            ),
        ];
        for (major, env, expected) in cases {
            let s = resolve_version(&format!("{env}\nDB_CONNECTION=mysql"), major);
            assert_eq!(full_prefix(&s), expected, "Laravel {major} with {env:?}");
        }
    }

    #[test]
    fn laravel_11_names_and_defaults() {
        let s = resolve_version(
            "CACHE_STORE=redis\nDB_CONNECTION=mariadb\nREDIS_CACHE_CONNECTION=default\nREDIS_DB=4\nAPP_TIMEZONE=Asia/Shanghai\nDB_URL=mysql://u:p@h:3307/shop\nREDIS_USERNAME=worker",
            "11",
        );
        assert_eq!(s.redis.database, 4, "the default connection's database");
        assert_eq!(s.timezone.name, "Asia/Shanghai");
        assert_eq!(
            (s.mysql.endpoint(), s.mysql.database.as_str()),
            ("h:3307".to_string(), "shop")
        );
        assert_eq!(s.redis.username.as_deref(), Some("worker"));
        let message = |text: &str| {
            let env = Environment::parse(text, Box::new(|_| None)).expect("valid .env");
            Settings::resolve_for(
                Path::new("/app/.env"),
                &env,
                &Overrides::new(),
                LaravelVersion::given("11"),
            )
            .map(|_| ())
            .expect_err("must fail")
            .to_string()
        };
        assert!(
            message("CACHE_DRIVER=redis").contains("CACHE_STORE"),
            "11+ reads CACHE_STORE"
        );
        assert!(
            message("CACHE_STORE=redis").contains("sqlite"),
            "11+ defaults to sqlite"
        );
        let s = resolve("CACHE_DRIVER=redis\nREDIS_USERNAME=worker");
        assert_eq!(
            s.expect("resolves").redis.username,
            None,
            "Laravel 8 never sends a username"
        );
    }

    #[test]
    fn urls_win_over_the_separate_settings() {
        let s = resolve("CACHE_DRIVER=redis\nREDIS_HOST=ignored\nREDIS_PASSWORD=ignored\nREDIS_URL=rediss://u:p%40ss@cache.example:6380/4").expect("resolves");
        assert_eq!(
            s.redis.endpoint,
            RedisEndpoint::Tls {
                host: "cache.example".into(),
                port: 6380
            }
        );
        assert_eq!(
            (s.redis.password.as_deref(), s.redis.database),
            (Some("p@ss"), 4)
        );

        let s = resolve("CACHE_DRIVER=redis\nREDIS_CACHE_DB=3\nREDIS_PASSWORD=kept\nREDIS_URL=redis://cache.example").expect("resolves");
        assert_eq!(
            (s.redis.password.as_deref(), s.redis.database),
            (Some("kept"), 3),
            "no path: REDIS_CACHE_DB stays"
        );
        let s = resolve("CACHE_DRIVER=redis\nREDIS_URL=redis://h?database=7").expect("resolves");
        assert_eq!(s.redis.database, 7);

        let s = resolve("CACHE_DRIVER=redis\nDB_HOST=ignored\nDATABASE_URL=mysql://shop:s3cret@db.internal:3307/shop").expect("resolves");
        assert_eq!(s.mysql.endpoint(), "db.internal:3307");
        assert_eq!(
            (
                s.mysql.database.as_str(),
                s.mysql.username.as_str(),
                s.mysql.password.as_str()
            ),
            ("shop", "shop", "s3cret")
        );
    }

    #[test]
    fn mysql_localhost_means_the_socket_as_in_pdo() {
        let s = resolve("CACHE_DRIVER=redis\nDB_HOST=localhost").expect("resolves");
        assert_eq!(s.mysql.socket, Some(PathBuf::from(PDO_DEFAULT_SOCKET)));
        let s = resolve("CACHE_DRIVER=redis\nDB_SOCKET=/tmp/my.sock\nDB_PASSWORD=\"p@ss#word\"")
            .expect("resolves");
        assert_eq!(s.mysql.socket, Some(PathBuf::from("/tmp/my.sock")));
        assert_eq!(s.mysql.password, "p@ss#word");
        assert!(
            !format!("{:?}", s.mysql).contains("p@ss"),
            "Debug hides the password"
        );
    }

    #[test]
    fn schema_mapping_and_overrides() {
        let s = resolve("CACHE_DRIVER=redis\nORDER_EXPIRE_ITEMS_TABLE=order_lines\nORDER_EXPIRE_ORDERS_TABLE=shop_orders").expect("resolves");
        assert_eq!(s.schema.orders.as_str(), "shop_orders");
        assert!(
            matches!(&s.schema.lines, OrderLines::Items { table, .. } if table.as_str() == "order_lines")
        );

        let mut overrides = Overrides::new();
        overrides.insert(keys::ORDERS_TABLE, "cli_orders".into());
        overrides.insert(keys::TIMEZONE, "Asia/Shanghai".into());
        let s = resolve_with(
            "CACHE_DRIVER=redis\nORDER_EXPIRE_ORDERS_TABLE=env_orders",
            &overrides,
        )
        .expect("resolves");
        assert_eq!(s.schema.orders.as_str(), "cli_orders");
        assert_eq!(s.timezone.name, "Asia/Shanghai");
    }

    #[test]
    fn errors_name_the_setting_and_the_fix() {
        let message = |text: &str| {
            resolve(text)
                .map(|_| ())
                .expect_err("must fail")
                .to_string()
        };
        assert!(message("").contains("CACHE_DRIVER"));
        assert!(message("CACHE_DRIVER=file").contains("set CACHE_DRIVER=redis"));
        assert!(message("CACHE_DRIVER=redis\nDB_CONNECTION=pgsql").contains("DB_CONNECTION"));
        assert!(message("CACHE_DRIVER=redis\nREDIS_PORT=abc").contains("REDIS_PORT"));
        assert!(
            message("CACHE_DRIVER=redis\nORDER_EXPIRE_ORDERS_TABLE=\"x; drop\"")
                .contains("ORDER_EXPIRE_ORDERS_TABLE")
        );
        assert!(
            message("CACHE_DRIVER=redis\nORDER_EXPIRE_TIMEZONE=Mars/Base").contains("time zone")
        );
        assert!(message("CACHE_DRIVER=redis\nREDIS_URL=not-a-url").contains("REDIS_URL"));
        assert!(message("CACHE_DRIVER=redis\nDATABASE_URL=pgsql://h/db").contains("DATABASE_URL"));
        assert!(message("CACHE_DRIVER=redis\nORDER_EXPIRE_TTL=1h").contains("ORDER_EXPIRE_TTL"));
    }
}
