//! Everything the worker needs, resolved: [`Settings`].
//!
//! [`Settings::load`] follows Laravel's boot: the app's `.env` (with the process environment in
//! front), its Laravel version, then its configuration ([`Repository`]: the configuration cache,
//! else `config/*.php`, else the stock files), which [`Laravel`] turns into connections and key
//! prefixes as Laravel's managers would. order-expire's own `ORDER_EXPIRE_*` settings (schema
//! mapping, TTL, time zone override) always come from the `.env` and the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config_source::{self, SourceChoice};
use super::dispatch::{self, DispatchSettings, KeyJobSettings};
use super::environment::Environment;
use super::error::{ConfigError, ValueOrigin};
use super::laravel_boot;
use super::repository::{ConfigSource, Repository};
use super::resolve::Laravel;
use super::resolved::{
    DatabaseSettings, KeySettings, RecoverySettings, RedisSettings, TimeZoneSetting,
};
use super::schema::{Ident, OrderLines, Schema};
use super::version::{DotenvRules, DotenvVersion, LaravelVersion, PhpVersion};

/// Names of our own settings. They live in the app's `.env` beside Laravel's, and each has a
/// command-line flag that wins over it.
pub mod keys {
    /// The key type between the cache prefix and `:<id>` (default `ORDER_CONFIRM`).
    pub const KEY_TYPE: &str = "ORDER_EXPIRE_KEY_TYPE";
    /// The orders table (default `orders`), before the connection's table prefix.
    pub const ORDERS_TABLE: &str = "ORDER_EXPIRE_ORDERS_TABLE";
    /// The orders' status column (default `status`).
    pub const ORDERS_STATUS_COLUMN: &str = "ORDER_EXPIRE_ORDERS_STATUS_COLUMN";
    /// The product column of an order row, when each order holds one product (default
    /// `product_id`).
    pub const ORDERS_PRODUCT_COLUMN: &str = "ORDER_EXPIRE_ORDERS_PRODUCT_COLUMN";
    /// The quantity column of an order row, when each order holds one product (default
    /// `quantity`).
    pub const ORDERS_QUANTITY_COLUMN: &str = "ORDER_EXPIRE_ORDERS_QUANTITY_COLUMN";
    /// The status of an unpaid order, the only status that is cancelled (default `0`).
    pub const UNPAID_STATUS: &str = "ORDER_EXPIRE_UNPAID_STATUS";
    /// The status a cancelled order gets (default `2`, as the PHP command sets).
    pub const CANCELLED_STATUS: &str = "ORDER_EXPIRE_CANCELLED_STATUS";
    /// A column the app sets on payment, e.g. `paid_at`: an order with it set is never cancelled,
    /// whatever its status. Unset by default.
    pub const PAID_COLUMN: &str = "ORDER_EXPIRE_PAID_COLUMN";
    /// The products table (default `products`), before the connection's table prefix.
    pub const PRODUCTS_TABLE: &str = "ORDER_EXPIRE_PRODUCTS_TABLE";
    /// The stock column of the products table (default `stock`).
    pub const PRODUCTS_STOCK_COLUMN: &str = "ORDER_EXPIRE_PRODUCTS_STOCK_COLUMN";
    /// An order lines table, e.g. `order_items`: when set, an order's products and quantities
    /// are read there instead of from the order row.
    pub const ITEMS_TABLE: &str = "ORDER_EXPIRE_ITEMS_TABLE";
    /// The lines table's order column (default `order_id`).
    pub const ITEMS_ORDER_COLUMN: &str = "ORDER_EXPIRE_ITEMS_ORDER_COLUMN";
    /// The lines table's product column (default `product_id`).
    pub const ITEMS_PRODUCT_COLUMN: &str = "ORDER_EXPIRE_ITEMS_PRODUCT_COLUMN";
    /// The lines table's quantity column (default `quantity`).
    pub const ITEMS_QUANTITY_COLUMN: &str = "ORDER_EXPIRE_ITEMS_QUANTITY_COLUMN";
    /// The time zone `updated_at` is written in, instead of `app.timezone`.
    pub const TIMEZONE: &str = "ORDER_EXPIRE_TIMEZONE";
    /// The TTL in seconds the app passes to `Cache::put()`: setting it turns reconciliation on,
    /// so that an order whose key is gone past it is cancelled (unset: events only).
    pub const ORDER_TTL: &str = "ORDER_EXPIRE_TTL";
    /// Seconds between two reconciliation sweeps (default 60, at most a day).
    pub const SWEEP_INTERVAL: &str = "ORDER_EXPIRE_SWEEP_INTERVAL";
    /// The app's Laravel version, e.g. `10.48`; it wins over the one found in `vendor/`,
    /// `composer.lock` or `composer.json`.
    pub const LARAVEL_VERSION: &str = "ORDER_EXPIRE_LARAVEL_VERSION";
    /// `HOST:PORT` of the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz` (unset:
    /// none).
    pub const METRICS_ADDR: &str = "ORDER_EXPIRE_METRICS_ADDR";
    pub use super::super::config_source::keys::*;
    pub use super::super::dispatch::keys::*;
}

/// The command-line flag that sets our setting `name`: `ORDER_EXPIRE_ORDERS_TABLE` is
/// `--orders-table`, and `ORDER_EXPIRE_TTL` is `--order-ttl` (see `cli.rs`).
pub fn flag_of(name: &str) -> String {
    let bare = match name.strip_prefix("ORDER_EXPIRE_") {
        Some("TTL") => "ORDER_TTL",
        Some(bare) => bare,
        None => name,
    };
    format!("--{}", bare.to_ascii_lowercase().replace('_', "-"))
}

/// The longest `ORDER_EXPIRE_TTL` (seconds, with its words for messages): a year. An unpaid
/// order held longer is not a payment window, and the sweep computes `created_at` bounds from
/// it, which must stay within MySQL's date range.
pub(super) const MAX_ORDER_TTL: (u64, &str) = (365 * 24 * 3600, "365 days");

/// The longest `ORDER_EXPIRE_SWEEP_INTERVAL`: a day. Rarer sweeps leave missed events
/// unreconciled for longer than any shop would accept.
pub(super) const MAX_SWEEP_INTERVAL: (u64, &str) = (24 * 3600, "1 day");

/// Values given on the command line, keyed by the `.env` name they override.
pub type Overrides = BTreeMap<&'static str, String>;

/// Everything the worker needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `.env` the settings came from.
    pub env_file: PathBuf,
    /// The app's Laravel version, when known; Laravel 8's rules apply when it is not.
    pub laravel: Option<LaravelVersion>,
    /// The phpdotenv whose rules read the `.env`, and where that was found.
    pub dotenv: DotenvVersion,
    /// Where Laravel's settings were read: the configuration cache (Laravel then ignores
    /// `.env`, and so do we), the app's `config/*.php`, or the stock files with the `.env`.
    pub source: ConfigSource,
    /// The files Laravel's settings were read from (or the stock files used instead).
    pub config_files: Vec<String>,
    /// The cache store's Redis connection, whose expired events the worker hears.
    pub redis: RedisSettings,
    /// The prefixes and key type that make up an order's cache key.
    pub keys: KeySettings,
    /// The default database connection, where the orders are (MySQL/MariaDB or PostgreSQL).
    pub database: DatabaseSettings,
    /// The tables and columns the writer uses, the table prefix already applied.
    pub schema: Schema,
    /// The app's time zone, in which `updated_at` is written.
    pub timezone: TimeZoneSetting,
    /// The reconciliation of orders whose event never arrived (`ORDER_EXPIRE_TTL`).
    pub recovery: RecoverySettings,
    /// The Laravel job queued for every cancelled order (`ORDER_EXPIRE_DISPATCH`), if any.
    pub dispatch: Option<DispatchSettings>,
    /// The jobs queued when keys of other types expire (`ORDER_EXPIRE_ON_<TYPE>`), sorted by
    /// key type; empty: none.
    pub key_jobs: Vec<KeyJobSettings>,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz` (`ORDER_EXPIRE_METRICS_ADDR`);
    /// `None`: nowhere. Port 0 takes a free port, which the worker logs.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The app's PHP version and where it was found (`PHP_VERSION_ID` and the PDO attribute
    /// numbers of the config files and the cache are read for it).
    pub php: PhpVersion,
    /// `ORDER_EXPIRE_CONFIG_SOURCE`.
    pub source_choice: SourceChoice,
    /// Values of the app's config files that are PHP order-expire does not evaluate, none of
    /// which feeds a setting it reads (`file:line: expression ...`).
    pub notes: Vec<String>,
}

/// The most notes about unevaluated values `check` lists.
const MAX_NOTES: usize = 20;

impl Settings {
    /// Where Laravel's settings came from: `.env`, `config`, `config-cache` or `laravel`.
    pub fn source(&self) -> &'static str {
        self.source.name()
    }

    /// Reads the app whose `.env` is `env_file` the way Laravel boots it and resolves the
    /// settings; `overrides` (command-line flags) win over everything.
    ///
    /// The configuration comes from the cache, else the config files through our evaluator;
    /// when a value the worker needs is PHP the evaluator does not know, the app's own Laravel
    /// is asked (see `config_source`), unless `ORDER_EXPIRE_CONFIG_SOURCE` says otherwise.
    pub fn load(env_file: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let root = env_file.parent().unwrap_or(Path::new("."));
        let detected = LaravelVersion::detect(root);
        let (env, dotenv, version) = Self::load_env(env_file, overrides, root, detected)?;
        let major = version.as_ref().map_or(8, |v| v.major);
        let ours = Ours {
            env: &env,
            overrides,
            file: env_file,
        };
        let (setting, invalid) = (
            &|name: &str| ours.ours(name),
            &|name: &str, value: &str, reason: String| ours.invalid(name, value, reason),
        );
        let choice = config_source::choice(setting, invalid)?;
        let php = config_source::php(setting, invalid, choice, (root, version.as_ref()))?;
        // Laravel's Application::getCachedConfigPath: APP_CONFIG_CACHE (relative to the app
        // root unless absolute), else bootstrap/cache/config.php.
        let cache_file = match env.raw("APP_CONFIG_CACHE").filter(|p| !p.is_empty()) {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            Some(path) => root.join(path),
            None => root.join("bootstrap/cache/config.php"),
        };
        let (config, exact) = match choice {
            SourceChoice::Laravel => config_source::ask_laravel(
                &php,
                (root, env_file),
                format!("{}={}", keys::CONFIG_SOURCE, choice.name()),
            )?,
            SourceChoice::ConfigCache if !cache_file.exists() => {
                return Err(ours.invalid(
                    keys::CONFIG_SOURCE,
                    choice.name(),
                    format!(
                        "{} does not exist: run php artisan config:cache in the app",
                        cache_file.display()
                    ),
                ));
            }
            _ => (
                Repository::load(root, &env, (major, &php.version), &cache_file)?,
                None,
            ),
        };
        // The version the app's own Laravel names is exact; a given one still wins.
        let version = match exact {
            Some(exact) if ours.ours(keys::LARAVEL_VERSION).is_none() => Some(exact),
            _ => version,
        };
        let mut settings =
            match Self::from_config(env_file, &env, overrides, version.clone(), &config) {
                Err(ConfigError::Unsupported(construct))
                    if config.source == ConfigSource::Config =>
                {
                    let why_not = match choice {
                        SourceChoice::Evaluator => Some(format!(
                            "{}=evaluator keeps it from running PHP",
                            keys::CONFIG_SOURCE
                        )),
                        _ => laravel_boot::unavailable(php.binary.as_deref(), root),
                    };
                    if let Some(why) = why_not {
                        return Err(ConfigError::NotEvaluated { construct, why });
                    }
                    let because = construct.relative_to(root);
                    let (config, exact) =
                        config_source::ask_laravel(&php, (root, env_file), because)?;
                    let version = match exact {
                        Some(exact) if ours.ours(keys::LARAVEL_VERSION).is_none() => Some(exact),
                        _ => version,
                    };
                    Self::from_config(env_file, &env, overrides, version, &config)?
                }
                other => other?,
            };
        settings.dotenv = dotenv;
        settings.source_choice = choice;
        if !matches!(settings.source, ConfigSource::Laravel { .. }) {
            settings.php = php.version;
        }
        Ok(settings)
    }

    /// Reads the `.env` with the rules of the app's phpdotenv: its composer.lock, else the one
    /// its Laravel version requires. That version may be set in the `.env` itself, so when the
    /// rules it implies are not the ones the file was read with (or those failed), the file is
    /// read with the other rules and kept if they agree with the version it then names; else
    /// the first reading (or its error) stands.
    fn load_env(
        env_file: &Path,
        overrides: &Overrides,
        root: &Path,
        detected: Option<LaravelVersion>,
    ) -> Result<(Environment, DotenvVersion, Option<LaravelVersion>), ConfigError> {
        let locked = DotenvVersion::locked(root);
        let first = locked
            .clone()
            .unwrap_or_else(|| DotenvVersion::required_by(detected.as_ref()));
        let read = |rules| -> Result<_, ConfigError> {
            let env = Environment::load(env_file, rules)?;
            let version = Ours {
                env: &env,
                overrides,
                file: env_file,
            }
            .version(detected.clone())?;
            let dotenv = locked
                .clone()
                .unwrap_or_else(|| DotenvVersion::required_by(version.as_ref()));
            Ok((env, dotenv, version))
        };
        let first_reading = read(first.rules);
        let agrees = matches!(&first_reading, Ok((_, dotenv, _)) if dotenv.rules == first.rules);
        if agrees || locked.is_some() {
            return first_reading;
        }
        let other = match first.rules {
            DotenvRules::Before5_5 => DotenvRules::From5_5,
            DotenvRules::From5_5 => DotenvRules::Before5_5,
        };
        match read(other) {
            Ok(second) if second.1.rules == other => Ok(second),
            _ => first_reading,
        }
    }

    /// Resolves the settings from an already-read environment with Laravel 8's stock config
    /// files, as for an app without a `config/` folder.
    #[cfg(test)]
    fn resolve(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::resolve_for(env_file, env, overrides, None)
    }

    /// Like [`Settings::resolve`], with the stock files of the given Laravel version
    /// (`--laravel-version` wins).
    #[cfg(test)]
    pub(super) fn resolve_for(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
        detected: Option<LaravelVersion>,
    ) -> Result<Self, ConfigError> {
        let ours = Ours {
            env,
            overrides,
            file: env_file,
        };
        let version = ours.version(detected)?;
        let root = env_file.parent().unwrap_or(Path::new("."));
        let php = PhpVersion::required_by(version.as_ref());
        let config = Repository::stock(root, env, (version.as_ref().map_or(8, |v| v.major), &php))?;
        Self::from_config(env_file, env, overrides, version, &config)
    }

    /// Resolves the settings from Laravel's configuration `config`; `env` supplies
    /// order-expire's own settings.
    fn from_config(
        env_file: &Path,
        env: &Environment,
        overrides: &Overrides,
        version: Option<LaravelVersion>,
        config: &Repository,
    ) -> Result<Self, ConfigError> {
        let ours = Ours {
            env,
            overrides,
            file: env_file,
        };
        let laravel = Laravel {
            config,
            env,
            env_file,
            version: version.as_ref(),
        };
        let key_type = ours.key_type()?;
        let (redis, keys) = laravel.redis(key_type.clone())?;
        let database = laravel.database()?;
        let mut schema = ours.schema()?;
        schema
            .apply_table_prefix(database.table_prefix())
            .map_err(|reason| {
                laravel.invalid(
                    "database.connections.*.prefix",
                    database.table_prefix(),
                    reason,
                )
            })?;
        let timezone = match ours.timezone()? {
            Some(tz) => tz,
            None => {
                let name = laravel.timezone()?;
                let tz = jiff::tz::TimeZone::get(&name).map_err(|_| {
                    laravel.invalid("app.timezone", &name, "not a known IANA time zone")
                })?;
                TimeZoneSetting { name, tz }
            }
        };
        let dispatch = dispatch::resolve(
            &laravel,
            &|name| ours.ours(name),
            &|name, value, reason| ours.invalid(name, value, reason),
            env_file.parent().unwrap_or(Path::new(".")),
        )?;
        let key_jobs = dispatch::resolve_key_jobs(
            &laravel,
            &|name| ours.ours(name),
            &|name, value, reason| ours.invalid(name, value, reason),
            env_file.parent().unwrap_or(Path::new(".")),
            &env.names_with_prefix(keys::ON_PREFIX),
            &key_type,
        )?;
        let root = env_file.parent().unwrap_or(Path::new("."));
        Ok(Self {
            php: config.php().clone(),
            source_choice: SourceChoice::Auto,
            notes: config
                .unevaluated(MAX_NOTES)
                .into_iter()
                .map(|u| u.relative_to(root))
                .collect(),
            env_file: env_file.to_path_buf(),
            dotenv: DotenvVersion::required_by(version.as_ref()),
            laravel: version,
            source: config.source.clone(),
            config_files: config.read_from(),
            redis,
            keys,
            database,
            schema,
            timezone,
            recovery: ours.recovery()?,
            dispatch,
            key_jobs,
            metrics_addr: ours.metrics_addr()?,
        })
    }
}

/// order-expire's own settings: `ORDER_EXPIRE_*` in the `.env`, and their flags.
struct Ours<'a> {
    env: &'a Environment,
    overrides: &'a Overrides,
    file: &'a Path,
}

impl Ours<'_> {
    /// One of our own settings: the flag, else the variable, else the default. Empty and `null`
    /// count as unset, so `ORDER_EXPIRE_ITEMS_TABLE=` reads naturally as "none".
    fn ours(&self, name: &str) -> Option<String> {
        if let Some(value) = self.overrides.get(name) {
            return Some(value.clone()).filter(|v| !v.is_empty());
        }
        self.env
            .get(name)
            .and_then(|v| v.to_php_string())
            .filter(|v| !v.is_empty())
    }

    /// A bad value of our setting `name`, named as it was given: the flag, the variable in the
    /// process environment, or the variable in the `.env`.
    fn invalid(&self, name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        let (origin, key) = if self.overrides.contains_key(name) {
            (ValueOrigin::Flag, flag_of(name))
        } else {
            (self.env.origin(name, self.file), name.to_string())
        };
        ConfigError::Invalid {
            origin,
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn ident(&self, name: &'static str, default: &str) -> Result<Ident, ConfigError> {
        let value = self.ours(name).unwrap_or_else(|| default.to_string());
        Ident::new(&value).map_err(|reason| self.invalid(name, &value, reason))
    }

    /// A status value: a whole number that fits a signed 64-bit integer (whether it fits the
    /// status column is checked against the database).
    fn integer(&self, name: &'static str, default: i64) -> Result<i64, ConfigError> {
        match self.ours(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                self.invalid(
                    name,
                    &v,
                    format!(
                        "expected a whole number from {} to {}, the status value the app stores",
                        i64::MIN,
                        i64::MAX
                    ),
                )
            }),
        }
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
            paid_column: match self.ours(keys::PAID_COLUMN) {
                Some(_) => Some(self.ident(keys::PAID_COLUMN, "paid_at")?),
                None => None,
            },
        })
    }

    fn recovery(&self) -> Result<RecoverySettings, ConfigError> {
        let seconds = |name: &'static str,
                       default: Option<u64>,
                       (max, max_words): (u64, &str)|
         -> Result<Option<u64>, ConfigError> {
            match self.ours(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(self.invalid(
                        name,
                        &v,
                        format!("expected a whole number of seconds from 1 to {max} ({max_words})"),
                    )),
                },
            }
        };
        Ok(RecoverySettings {
            order_ttl: seconds(keys::ORDER_TTL, None, MAX_ORDER_TTL)?
                .map(std::time::Duration::from_secs),
            sweep_interval: std::time::Duration::from_secs(
                seconds(keys::SWEEP_INTERVAL, Some(60), MAX_SWEEP_INTERVAL)?.unwrap_or(60),
            ),
        })
    }

    /// The Laravel version: `--laravel-version` / `ORDER_EXPIRE_LARAVEL_VERSION`, else `detected`.
    fn version(
        &self,
        detected: Option<LaravelVersion>,
    ) -> Result<Option<LaravelVersion>, ConfigError> {
        match self.ours(keys::LARAVEL_VERSION) {
            Some(given) => LaravelVersion::given(&given).map(Some).ok_or_else(|| {
                self.invalid(
                    keys::LARAVEL_VERSION,
                    &given,
                    "expected a version such as 8 or 10.48",
                )
            }),
            None => Ok(detected),
        }
    }

    /// `ORDER_EXPIRE_METRICS_ADDR`: an IP address and a port, so that where the endpoint listens
    /// never depends on a name lookup.
    fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(value) = self.ours(keys::METRICS_ADDR) else {
            return Ok(None);
        };
        value.trim().parse().map(Some).map_err(|_| {
            self.invalid(
                keys::METRICS_ADDR,
                &value,
                "expected HOST:PORT with an IP address, e.g. 127.0.0.1:9464 or [::1]:9464",
            )
        })
    }

    /// The key type after the cache prefix (`ORDER_CONFIRM`).
    fn key_type(&self) -> Result<String, ConfigError> {
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
        Ok(key_type)
    }

    /// `ORDER_EXPIRE_TIMEZONE`, which wins over `app.timezone`.
    fn timezone(&self) -> Result<Option<TimeZoneSetting>, ConfigError> {
        let Some(name) = self.ours(keys::TIMEZONE) else {
            return Ok(None);
        };
        let tz = jiff::tz::TimeZone::get(&name).map_err(|_| {
            self.invalid(
                keys::TIMEZONE,
                &name,
                "not a known IANA time zone (e.g. UTC, Asia/Shanghai)",
            )
        })?;
        Ok(Some(TimeZoneSetting { name, tz }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolved::RedisEndpoint;

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
        assert_eq!(
            s.database.mysql().expect("a mysql connection").endpoint(),
            "127.0.0.1:3306"
        );
        assert_eq!(
            (
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .database
                    .as_str(),
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .username
                    .as_str()
            ),
            ("forge", "forge")
        );
        assert_eq!(s.timezone.name, "UTC");
        assert_eq!(
            s.database.mysql().expect("a mysql connection").session.statements(),
            vec![
                "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'".to_string(),
                "SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'".to_string(),
            ],
            "the session Laravel 8's MySqlConnector sets up"
        );
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
            (
                s.database.mysql().expect("a mysql connection").endpoint(),
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .database
                    .as_str()
            ),
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
        assert_eq!(
            s.database.mysql().expect("a mysql connection").endpoint(),
            "db.internal:3307"
        );
        assert_eq!(
            (
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .database
                    .as_str(),
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .username
                    .as_str(),
                s.database
                    .mysql()
                    .expect("a mysql connection")
                    .password
                    .as_str()
            ),
            ("shop", "shop", "s3cret")
        );
    }

    #[test]
    fn an_ipv6_mysql_host_is_bracketed_where_it_is_shown() {
        let s = resolve("CACHE_DRIVER=redis\nDB_HOST=::1\nDB_PORT=3307").expect("resolves");
        assert_eq!(s.database.endpoint(), "[::1]:3307");
    }

    #[test]
    fn mysql_localhost_means_the_socket_as_in_pdo() {
        let s = resolve("CACHE_DRIVER=redis\nDB_HOST=localhost").expect("resolves");
        assert_eq!(
            s.database.mysql().expect("a mysql connection").socket,
            Some(PathBuf::from(super::super::resolve::PDO_DEFAULT_SOCKET))
        );
        let s = resolve("CACHE_DRIVER=redis\nDB_SOCKET=/tmp/my.sock\nDB_PASSWORD=\"p@ss#word\"")
            .expect("resolves");
        assert_eq!(
            s.database.mysql().expect("a mysql connection").socket,
            Some(PathBuf::from("/tmp/my.sock"))
        );
        assert_eq!(
            s.database.mysql().expect("a mysql connection").password,
            "p@ss#word"
        );
        assert!(
            !format!("{:?}", s.database).contains("p@ss"),
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
    fn ranges_and_sources_of_our_settings() {
        let message = |text: &str, overrides: &Overrides| {
            resolve_with(&format!("CACHE_DRIVER=redis\n{text}"), overrides)
                .map(|_| ())
                .expect_err("must fail")
                .to_string()
        };
        let none = Overrides::new();
        for bad in ["0", "31536001", "1000000000000000", "1e15", "-1", "900s"] {
            let m = message(&format!("ORDER_EXPIRE_TTL={bad}"), &none);
            assert!(
                m.starts_with(&format!("ORDER_EXPIRE_TTL=\"{bad}\" in /app/.env:"))
                    && m.contains("1 to 31536000"),
                "{m}"
            );
        }
        let s = resolve(
            "CACHE_DRIVER=redis\nORDER_EXPIRE_TTL=31536000\nORDER_EXPIRE_SWEEP_INTERVAL=86400",
        )
        .expect("the largest values are allowed");
        assert_eq!(
            s.recovery.order_ttl,
            Some(std::time::Duration::from_secs(31_536_000))
        );
        let mut flags = Overrides::new();
        flags.insert(keys::SWEEP_INTERVAL, "86401".into());
        let m = message("ORDER_EXPIRE_SWEEP_INTERVAL=60", &flags);
        assert!(
            m.starts_with("--sweep-interval=\"86401\" on the command line:"),
            "{m}"
        );
        let m = message("ORDER_EXPIRE_UNPAID_STATUS=9223372036854775808", &none);
        assert!(
            m.contains("-9223372036854775808 to 9223372036854775807"),
            "{m}"
        );
    }

    #[test]
    fn the_metrics_address_is_an_ip_and_a_port() {
        let s = resolve("CACHE_DRIVER=redis\n").expect("resolves");
        assert_eq!(s.metrics_addr, None, "off by default");
        let s = resolve("CACHE_DRIVER=redis\nORDER_EXPIRE_METRICS_ADDR=127.0.0.1:9464\n")
            .expect("resolves");
        assert_eq!(s.metrics_addr, Some(([127, 0, 0, 1], 9464).into()));
        let s = resolve("CACHE_DRIVER=redis\nORDER_EXPIRE_METRICS_ADDR=\n").expect("resolves");
        assert_eq!(s.metrics_addr, None, "empty is off");
        let mut flags = Overrides::new();
        flags.insert(keys::METRICS_ADDR, "[::1]:0".into());
        let s = resolve_with("CACHE_DRIVER=redis\nORDER_EXPIRE_METRICS_ADDR=x\n", &flags)
            .expect("the flag wins");
        assert_eq!(
            s.metrics_addr.map(|a| (a.is_ipv6(), a.port())),
            Some((true, 0))
        );
        for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999"] {
            let m = resolve(&format!(
                "CACHE_DRIVER=redis\nORDER_EXPIRE_METRICS_ADDR={bad}\n"
            ))
            .map(|_| ())
            .expect_err("must fail")
            .to_string();
            assert!(
                m.starts_with(&format!(
                    "ORDER_EXPIRE_METRICS_ADDR=\"{bad}\" in /app/.env:"
                )) && m.contains("127.0.0.1:9464"),
                "{m}"
            );
        }
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
        assert!(message("CACHE_DRIVER=redis\nDB_CONNECTION=sqlsrv").contains("DB_CONNECTION"));
        assert!(message("CACHE_DRIVER=redis\nREDIS_PORT=abc").contains("REDIS_PORT"));
        assert!(
            message("CACHE_DRIVER=redis\nORDER_EXPIRE_ORDERS_TABLE=\"x; drop\"")
                .contains("ORDER_EXPIRE_ORDERS_TABLE")
        );
        assert!(
            message("CACHE_DRIVER=redis\nORDER_EXPIRE_TIMEZONE=Mars/Base").contains("time zone")
        );
        assert!(message("CACHE_DRIVER=redis\nREDIS_URL=not-a-url").contains("REDIS_URL"));
        assert!(message("CACHE_DRIVER=redis\nDATABASE_URL=sqlsrv://h/db").contains("DATABASE_URL"));
        assert!(message("CACHE_DRIVER=redis\nORDER_EXPIRE_TTL=1h").contains("ORDER_EXPIRE_TTL"));
    }
}
