//! From Laravel's configuration to the connections and keys the worker uses, computed the way
//! Laravel 8-12's `CacheManager`, `RedisManager`, Redis connectors and `DatabaseManager` compute
//! them at run time.
//!
//! The configuration says `'database' => '1'`, `'url' => 'redis://h/2'`, `'prefix' => '0'`; what
//! phpredis does with those (the URL's database wins, `(int)` casts, an empty-ish prefix is no
//! prefix) is decided here. Errors name the `.env` variable a value came from when there is one,
//! else the config key and its file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::environment::Environment;
use super::error::{ConfigError, ValueOrigin};
use super::php;
use super::php_constants;
use super::php_value::PhpValue;
use super::repository::{ConfigSource, Origin, Repository, unsupported};
use super::resolved::{
    DatabaseSettings, KeySettings, MysqlSession, MysqlSettings, MysqlTls, RedisEndpoint,
    RedisSettings, RedisTls, RedisTopology, SqlMode,
};
use super::url;
use super::version::LaravelVersion;

/// Debian's `pdo_mysql.default_socket`: PDO connects there when the host is `localhost`.
pub(super) const PDO_DEFAULT_SOCKET: &str = "/var/run/mysqld/mysqld.sock";

/// Resolves settings from `config`, for the app whose `.env` is `env_file`.
pub(super) struct Laravel<'a> {
    pub config: &'a Repository,
    /// The variables `env()` read, to tell the process environment from the `.env` in errors.
    pub env: &'a Environment,
    pub env_file: &'a Path,
    pub version: Option<&'a LaravelVersion>,
}

/// A config array (a connection) with the dotted path it sits at, for errors.
pub(super) struct Entries {
    pub(super) path: String,
    pub(super) map: BTreeMap<String, PhpValue>,
    /// The driver its `url` named, when it has one (merged into `map` already).
    url_driver: Option<String>,
}

impl Entries {
    pub(super) fn get(&self, key: &str) -> Result<Option<&PhpValue>, ConfigError> {
        match self.map.get(key) {
            Some(PhpValue::Unevaluated(u)) => Err(unsupported(u, &format!("{}.{key}", self.path))),
            other => Ok(other),
        }
    }

    pub(super) fn text(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(key)?.and_then(PhpValue::to_php_string))
    }

    pub(super) fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

impl Laravel<'_> {
    pub(super) fn major(&self) -> u32 {
        self.version.map_or(8, |v| v.major)
    }

    /// `config(path)` as a string.
    pub(super) fn string(&self, path: &str) -> Result<Option<String>, ConfigError> {
        self.config.string(path)
    }

    /// Where the value at `path` was written: its config file (and line, when known), or for
    /// the stock files, which the app did not write, the `.env` that feeds them.
    fn config_origin(&self, path: &str) -> ValueOrigin {
        match self.config.origin(path) {
            Some(Origin::File(file)) => ValueOrigin::ConfigFile {
                path: file.clone(),
                line: self.config.line(path),
            },
            _ => ValueOrigin::EnvFile(self.env_file.to_path_buf()),
        }
    }

    /// An invalid value at `path`: blames the variable it came from when there is one (in the
    /// process environment or the `.env`, wherever it was set), else the config file and line.
    pub(super) fn invalid(
        &self,
        path: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        let (origin, key) = match self.config.env_name(path) {
            Some(var) => (self.env.origin(var, self.env_file), var.to_string()),
            None => (self.config_origin(path), path.to_string()),
        };
        ConfigError::Invalid {
            origin,
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The config array at `path`, with its URL merged in as ConfigurationUrlParser does.
    pub(super) fn connection(&self, path: &str) -> Result<Option<Entries>, ConfigError> {
        let Some(PhpValue::Array(entries)) = self.config.get(path)? else {
            return Ok(None);
        };
        let mut entries = Entries {
            path: path.to_string(),
            map: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            url_driver: None,
        };
        let url = entries.text("url")?.filter(|u| !u.is_empty());
        entries.map.remove("url");
        if let Some(raw) = url {
            let parts = url::parse(&raw)
                .map_err(|reason| self.invalid(&format!("{path}.url"), &raw, reason))?;
            merge_url(&mut entries.map, &parts);
            entries.url_driver = parts.driver;
        }
        Ok(Some(entries))
    }

    /// The default cache store, which must be a redis store.
    fn store(&self) -> Result<Entries, ConfigError> {
        let default = self.string("cache.default")?.unwrap_or_default();
        let store = self.connection(&format!("cache.stores.{default}"))?;
        if let Some(store) = store
            && store.text("driver")?.as_deref() == Some("redis")
        {
            return Ok(store);
        }
        Err(match (self.config.env_name("cache.default"), &self.config.source) {
            (Some(var), _) => ConfigError::CacheDriver {
                origin: self.env.origin(var, self.env_file),
                name: var.to_string(),
                found: default,
            },
            (None, ConfigSource::ConfigCache(_)) => self.invalid(
                "cache.default",
                &default,
                "the default cache store must be a redis store (CACHE_DRIVER=redis, then php artisan config:cache)",
            ),
            (None, _) => self.invalid(
                "cache.default",
                &default,
                "the default cache store must be a store with 'driver' => 'redis'",
            ),
        })
    }

    /// The Redis connection and the key prefixes of the default cache store, as
    /// `RedisManager::resolve` finds it: `database.redis.<name>` first (a predis Sentinel
    /// connection when its options say `'replication' => 'sentinel'`), else
    /// `database.redis.clusters.<name>`.
    pub(super) fn redis(
        &self,
        key_type: String,
    ) -> Result<(RedisSettings, KeySettings), ConfigError> {
        let store = self.store()?;
        let name = store
            .text("connection")?
            .unwrap_or_else(|| "default".into());
        let client = self.client()?;
        if let Some(conn) = self.connection(&format!("database.redis.{name}"))? {
            if let Some(service) = self.sentinel_service(&conn, &client)? {
                let (redis, prefix) = self.sentinel(&conn, &name, service)?;
                let keys = self.keys(&store, prefix, key_type)?;
                return Ok((redis, keys));
            }
            let redis = self.redis_settings(&conn)?;
            let prefix = self.connection_prefix(&conn, &redis.client)?;
            let keys = self.keys(&store, prefix, key_type)?;
            return Ok((redis, keys));
        }
        let cluster = format!("database.redis.clusters.{name}");
        if let Some(PhpValue::Array(nodes)) = self.config.get(&cluster)? {
            let (redis, prefix) = self.cluster(&cluster, nodes, &client)?;
            let keys = self.keys(&store, prefix, key_type)?;
            return Ok((redis, keys));
        }
        Err(self.invalid(
            &store.path("connection"),
            &name,
            format!(
                "Redis connection [{name}] not configured: neither database.redis.{name} nor database.redis.clusters.{name} exists"
            ),
        ))
    }

    /// `database.redis.client`: phpredis or predis. The `phpredis-sentinel` client of
    /// namoshek/laravel-redis-sentinel is refused by name.
    fn client(&self) -> Result<String, ConfigError> {
        let client = self
            .string("database.redis.client")?
            .unwrap_or_else(|| "phpredis".into());
        match client.as_str() {
            "phpredis" | "predis" => Ok(client),
            "phpredis-sentinel" => Err(self.invalid(
                "database.redis.client",
                &client,
                "the phpredis-sentinel client of the namoshek/laravel-redis-sentinel package is not supported: order-expire reads Laravel's own phpredis and predis connections (for Sentinel, use predis with 'replication' => 'sentinel' in the connection's options)",
            )),
            _ => Err(self.invalid(
                "database.redis.client",
                &client,
                "expected phpredis or predis",
            )),
        }
    }

    /// The Sentinel service name when `conn` is a predis Sentinel connection
    /// (`'replication' => 'sentinel'` in its options or the global ones), else `None`.
    fn sentinel_service(
        &self,
        conn: &Entries,
        client: &str,
    ) -> Result<Option<String>, ConfigError> {
        let global = self.config.get("database.redis.options")?;
        let own = conn.get("options")?;
        let option = |key: &str| {
            own.and_then(|o| o.get(key))
                .or_else(|| global.and_then(|o| o.get(key)))
        };
        let (replication, path) = match own.and_then(|o| o.get("replication")) {
            Some(r) => (Some(r), conn.path("options.replication")),
            None => (
                global.and_then(|o| o.get("replication")),
                "database.redis.options.replication".to_string(),
            ),
        };
        match replication.and_then(PhpValue::to_php_string).as_deref() {
            None | Some("") => Ok(None),
            Some("sentinel") if client == "predis" => Ok(Some(
                option("service")
                    .and_then(PhpValue::to_php_string)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "mymaster".into()),
            )),
            Some("sentinel") => Err(self.invalid(
                &path,
                "sentinel",
                "Laravel supports Sentinel with the predis client only: set REDIS_CLIENT=predis (phpredis would not connect)",
            )),
            Some(other) => Err(self.invalid(
                &path,
                other,
                "only 'replication' => 'sentinel' is supported (predis's client-side replication is not)",
            )),
        }
    }

    /// A predis Sentinel connection: its entries are the sentinels; password, username and
    /// database come from `options.parameters` (the connection's own, else the global
    /// `options.parameters.<name>`, else the global `options.parameters`).
    fn sentinel(
        &self,
        conn: &Entries,
        name: &str,
        service: String,
    ) -> Result<(RedisSettings, String), ConfigError> {
        let Some(PhpValue::Array(raw)) = self.config.get(&conn.path)? else {
            return Err(self.invalid(&conn.path, "", "expected a list of sentinels"));
        };
        let mut sentinels = Vec::new();
        for (key, value) in raw {
            if !matches!(key, super::php_value::ArrayKey::Int(_)) {
                continue;
            }
            let path = conn.path(&key.to_string());
            // Predis's default port, 6379, applies to a sentinel given without one.
            sentinels.push(self.node_endpoint(&path, value, "6379")?);
        }
        let Some(first) = sentinels.first().cloned() else {
            return Err(self.invalid(
                &conn.path,
                "",
                "a Sentinel connection lists its sentinels (e.g. 'tcp://10.0.0.1:26379'); none found",
            ));
        };
        let parameters = match conn.get("options")?.and_then(|o| o.get("parameters")) {
            Some(p) => Some(p.clone()),
            None => {
                let global = self.config.get("database.redis.options.parameters")?;
                global.and_then(|p| p.get(name)).or(global).cloned()
            }
        };
        let param = |key: &str| {
            parameters
                .as_ref()
                .and_then(|p| p.get(key))
                .filter(|v| !v.is_php_empty())
                .and_then(PhpValue::to_php_string)
        };
        let database = param("database").map_or(0, |d| php::int_cast(&d));
        if database < 0 {
            return Err(self.invalid(
                &conn.path("options.parameters.database"),
                &database.to_string(),
                "a database index cannot be negative",
            ));
        }
        let redis = RedisSettings {
            endpoint: first,
            topology: RedisTopology::Sentinel { sentinels, service },
            username: param("username"),
            password: param("password"),
            database,
            client: "predis".into(),
            tls: self.redis_tls(conn, "predis")?,
        };
        let prefix = self.connection_prefix(conn, "predis")?;
        Ok((redis, prefix))
    }

    /// A cluster (`database.redis.clusters.<name>` at `path`): its seed nodes, and the options
    /// merged as the connectors merge them: `database.redis.options`, then
    /// `database.redis.clusters.options`, then the cluster's own `options`. phpredis takes the
    /// password and prefix from those options only, predis from each node's parameters;
    /// neither selects a database.
    fn cluster(
        &self,
        path: &str,
        nodes: &[(super::php_value::ArrayKey, PhpValue)],
        client: &str,
    ) -> Result<(RedisSettings, String), ConfigError> {
        let mut options: BTreeMap<String, PhpValue> = BTreeMap::new();
        // Where each merged option came from, for messages.
        let mut option_paths: BTreeMap<String, String> = BTreeMap::new();
        for source in [
            "database.redis.options".to_string(),
            "database.redis.clusters.options".to_string(),
            format!("{path}.options"),
        ] {
            if let Some(PhpValue::Array(entries)) = self.config.get(&source)? {
                for (k, v) in entries {
                    if let PhpValue::Unevaluated(u) = v {
                        return Err(unsupported(u, &format!("{source}.{k}")));
                    }
                    options.insert(k.to_string(), v.clone());
                    option_paths.insert(k.to_string(), format!("{source}.{k}"));
                }
            }
        }
        let default_port = if client == "predis" { "6379" } else { "" };
        let mut seeds = Vec::new();
        let mut first_node: Option<Entries> = None;
        for (key, value) in nodes {
            let key = key.to_string();
            if key == "options" || key == "prefix" {
                continue;
            }
            let node_path = format!("{path}.{key}");
            seeds.push(self.node_endpoint(&node_path, value, default_port)?);
            if first_node.is_none() {
                first_node = self.node_entries(&node_path, value)?;
            }
        }
        let Some(first) = seeds.first().cloned() else {
            return Err(self.invalid(
                path,
                "",
                "a cluster lists its seed nodes (['host' => ..., 'port' => ...]); none found",
            ));
        };
        let option = |key: &str| {
            options
                .get(key)
                .filter(|v| !v.is_php_empty())
                .and_then(PhpValue::to_php_string)
        };
        let parameter = |key: &str| {
            options
                .get("parameters")
                .and_then(|p| p.get(key))
                .filter(|v| !v.is_php_empty())
                .and_then(PhpValue::to_php_string)
        };
        let node = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(match &first_node {
                Some(n) => n
                    .get(key)?
                    .filter(|v| !v.is_php_empty())
                    .and_then(PhpValue::to_php_string),
                None => None,
            })
        };
        let (username, password, prefix) = if client == "predis" {
            // Predis: each node's parameters, the cluster's own `prefix` over the options'.
            let prefix = match nodes.iter().rev().find(|(k, _)| k.to_string() == "prefix") {
                Some((_, p)) => Some(p.clone()),
                None => options.get("prefix").cloned(),
            };
            (
                node("username")?.or_else(|| parameter("username")),
                node("password")?.or_else(|| parameter("password")),
                prefix.and_then(|p| p.to_php_string()).unwrap_or_default(),
            )
        } else {
            // PhpRedisConnector::createRedisClusterInstance: the merged options only.
            (
                if self.major() >= 9 {
                    option("username")
                } else {
                    None
                },
                option("password"),
                option("prefix").unwrap_or_default(),
            )
        };
        // The TLS options, for seeds given as `tls://`: phpredis hands the merged options'
        // `context` to RedisCluster, which sets each of its entries as an `ssl` context option
        // (no `stream` level, unlike Redis::connect); predis reads each node's `ssl` parameters.
        let (tls_options, tls_setting) = if client == "predis" {
            match &first_node {
                Some(node) => (node.get("ssl")?.cloned(), node.path("ssl")),
                None => (None, format!("{path}.0.ssl")),
            }
        } else {
            let context_path = option_paths
                .get("context")
                .cloned()
                .unwrap_or_else(|| format!("{path}.options.context"));
            match options.get("context") {
                Some(context) => self.cluster_context(context.clone(), context_path),
                None => (None, context_path),
            }
        };
        let redis = RedisSettings {
            endpoint: first,
            topology: RedisTopology::Cluster { seeds },
            username,
            password,
            database: 0,
            client: client.to_string(),
            tls: self.tls_options(tls_options, tls_setting)?,
        };
        Ok((redis, prefix))
    }

    /// A node given as a URL string or an array (`host`, `port`, `scheme`, `url`), as
    /// `parseConnectionConfiguration` reads it.
    fn node_entries(&self, path: &str, value: &PhpValue) -> Result<Option<Entries>, ConfigError> {
        let mut entries = Entries {
            path: path.to_string(),
            map: BTreeMap::new(),
            url_driver: None,
        };
        match value {
            PhpValue::Array(_) => return self.connection(path),
            PhpValue::Str(raw) if !raw.is_empty() => {
                // Predis reads `host:port` as well as `tcp://host:port`, but a bare host is a
                // path to PHP's parse_url: predis would connect to 127.0.0.1:6379 instead.
                let with_scheme = if raw.contains("://") {
                    raw.clone()
                } else if raw.contains(':') {
                    format!("tcp://{raw}")
                } else {
                    return Err(self.invalid(
                        path,
                        raw,
                        format!("predis reads a host without a scheme or port as no host at all and would connect to 127.0.0.1:6379: write tcp://{raw}:<port>"),
                    ));
                };
                let parts =
                    url::parse(&with_scheme).map_err(|reason| self.invalid(path, raw, reason))?;
                merge_url(&mut entries.map, &parts);
                if let Some(driver) = parts.driver {
                    entries.map.insert("scheme".into(), PhpValue::Str(driver));
                }
            }
            PhpValue::Unevaluated(u) => return Err(unsupported(u, path)),
            _ => return Ok(None),
        }
        Ok(Some(entries))
    }

    /// The endpoint of a cluster node or a sentinel at `path`.
    fn node_endpoint(
        &self,
        path: &str,
        value: &PhpValue,
        default_port: &str,
    ) -> Result<RedisEndpoint, ConfigError> {
        let Some(node) = self.node_entries(path, value)? else {
            return Err(self.invalid(
                path,
                &value.to_php_string().unwrap_or_default(),
                "expected a node address (e.g. 'tcp://10.0.0.1:6379' or ['host' => ..., 'port' => ...])",
            ));
        };
        let tls = matches!(node.text("driver")?.as_deref(), Some("tls"))
            || matches!(node.text("scheme")?.as_deref(), Some("tls" | "rediss"));
        let host = node.text("host")?.unwrap_or_default();
        let port_text = node
            .text("port")?
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| default_port.to_string());
        let port = php::int_cast(&port_text);
        let endpoint = self.redis_endpoint(
            host,
            (port, &port_text),
            tls,
            (&node.path("host"), &node.path("port")),
        )?;
        if let RedisEndpoint::Unix { .. } = endpoint {
            return Err(self.invalid(
                &node.path("host"),
                &endpoint.to_string(),
                "a cluster node or sentinel is reached over TCP",
            ));
        }
        Ok(endpoint)
    }

    pub(super) fn redis_settings(&self, conn: &Entries) -> Result<RedisSettings, ConfigError> {
        let tls = matches!(conn.text("driver")?.as_deref(), Some("tls"))
            || matches!(conn.text("scheme")?.as_deref(), Some("tls" | "rediss"));
        let host = conn.text("host")?.unwrap_or_default();
        let client = self.client()?;
        self.host_scheme_agrees(conn, &host, &client)?;
        // phpredis casts the port with (int), as we do; errors show what was written.
        let port_text = conn.text("port")?.unwrap_or_default();
        let port = php::int_cast(&port_text);
        let endpoint = self.redis_endpoint(
            host,
            (port, &port_text),
            tls,
            (&conn.path("host"), &conn.path("port")),
        )?;
        // phpredis sends AUTH only for a non-empty password (so `null`, `` and `0` mean none).
        let password = conn
            .get("password")?
            .filter(|v| !v.is_php_empty())
            .and_then(PhpValue::to_php_string);
        // Laravel 9+ sends an ACL username with either client. On Laravel 8 phpredis never
        // does (PhpRedisConnector::createClient calls `auth($config['password'])` only), but
        // predis (1.1.7+) sends `AUTH <username> <password>` from its parameters, which are the
        // connection array (PredisConnector.php line 30), `username` from REDIS_URL included.
        let username = if self.major() >= 9 || client == "predis" {
            conn.get("username")?
                .filter(|v| !v.is_php_empty())
                .and_then(PhpValue::to_php_string)
        } else {
            None
        };
        // `null` (or no key) means phpredis does not SELECT at all: database 0.
        let database = match conn.get("database")? {
            None | Some(PhpValue::Null) => 0,
            Some(v) => php::int_cast(&v.to_php_string().unwrap_or_default()),
        };
        if database < 0 {
            return Err(self.invalid(
                &conn.path("database"),
                &database.to_string(),
                "a database index cannot be negative",
            ));
        }
        let tls = self.redis_tls(conn, &client)?;
        Ok(RedisSettings {
            topology: RedisTopology::Standalone(endpoint.clone()),
            endpoint,
            username,
            password,
            database,
            client,
            tls,
        })
    }

    /// A `scheme://` host must name the connection's `scheme` (a `scheme` key, or `tcp`/`tls`
    /// from its URL, as RedisManager sets it), case aside. phpredis never connects otherwise:
    /// Laravel 13.12+ (PhpRedisConnector::formatHost) refuses it, older versions prefix the
    /// scheme again (`tcp://tls://host`). predis: Laravel 13.12+ (PredisConnector::formatHost)
    /// refuse it too; before, the host's `tls://` won.
    fn host_scheme_agrees(
        &self,
        conn: &Entries,
        host: &str,
        client: &str,
    ) -> Result<(), ConfigError> {
        let scheme = match conn.text("scheme")? {
            Some(scheme) => Some(scheme),
            None => conn.text("driver")?.filter(|d| d == "tcp" || d == "tls"),
        };
        let (Some(scheme), Some((host_scheme, _))) = (scheme, host.split_once("://")) else {
            return Ok(());
        };
        if host_scheme.eq_ignore_ascii_case(&scheme) {
            return Ok(());
        }
        let refused = self.version.is_some_and(|v| v.at_least(13, 12));
        let reason = match (client, refused) {
            (_, true) => format!(
                "the scheme in the Redis host (`{host_scheme}://`) must match the connection's scheme `{scheme}`: Laravel refuses it (\"The scheme configured in the Redis host option must match the scheme option\"); drop one of them"
            ),
            ("phpredis", false) => format!(
                "the scheme in the Redis host (`{host_scheme}://`) is not the connection's scheme `{scheme}`: phpredis would be asked for {scheme}://{host}, which is no server; drop one of them"
            ),
            _ => return Ok(()),
        };
        Err(self.invalid(&conn.path("host"), host, reason))
    }

    /// The TLS options as the app's Redis client hands them to PHP's `ssl` stream context.
    ///
    /// phpredis (Laravel 8.83, Illuminate/Redis/Connectors/PhpRedisConnector.php): `connect()`
    /// merges the connection, `database.redis.options` and the connection's own `options`, the
    /// later winning (lines 27-29); `establishConnection()` passes the merged `context` to
    /// `Redis::connect()` (lines 148-150), and phpredis sets each entry of its `stream` array
    /// as an `ssl` context option. predis (PredisConnector.php line 30): the connection array
    /// is predis's parameters, whose `ssl` array is the `ssl` context of a `tls` connection.
    /// PHP's defaults apply to what is unset: the system's CAs, `verify_peer` and
    /// `verify_peer_name` on; a client key in `local_cert` itself when `local_pk` is unset.
    fn redis_tls(&self, conn: &Entries, client: &str) -> Result<RedisTls, ConfigError> {
        let (options, setting) = if client == "predis" {
            (conn.get("ssl")?.cloned(), conn.path("ssl"))
        } else {
            let own = match conn.get("options")? {
                Some(options) => options
                    .get("context")
                    .map(|c| (c.clone(), conn.path("options.context"))),
                None => None,
            };
            let global = "database.redis.options.context";
            let context = match own {
                Some(found) => Some(found),
                None => match self.config.get(global)? {
                    Some(c) => Some((c.clone(), global.to_string())),
                    None => conn
                        .get("context")?
                        .map(|c| (c.clone(), conn.path("context"))),
                },
            };
            match context {
                Some((context, path)) => self.stream_context(context, path),
                None => (None, conn.path("context.stream")),
            }
        };
        self.tls_options(options, setting)
    }

    /// The TLS options phpredis gets from a connection's `context` (at `path`): its `stream`
    /// array, which `Redis::connect()` reads. From Laravel 13.5, PhpRedisConnector's
    /// `normalizeContext` also takes an `ssl` array, or the context itself, as that array.
    fn stream_context(&self, context: PhpValue, path: String) -> (Option<PhpValue>, String) {
        if let PhpValue::Unevaluated(_) = context {
            return (Some(context), path);
        }
        let normalised = self.version.is_some_and(|v| v.at_least(13, 5));
        match (context.get("stream"), context.get("ssl")) {
            (Some(stream), _) => (Some(stream.clone()), format!("{path}.stream")),
            (None, Some(ssl @ PhpValue::Array(_))) if normalised => {
                (Some(ssl.clone()), format!("{path}.ssl"))
            }
            (None, _) if normalised => (Some(context), path),
            (None, _) => (None, format!("{path}.stream")),
        }
    }

    /// The TLS options phpredis's RedisCluster gets from the merged `context` (at `path`): the
    /// context itself; from Laravel 13.5 (`normalizeClusterContext`) its `ssl` or `stream`
    /// array when it has one.
    fn cluster_context(&self, context: PhpValue, path: String) -> (Option<PhpValue>, String) {
        if self.version.is_some_and(|v| v.at_least(13, 5)) {
            for level in ["ssl", "stream"] {
                if let Some(inner @ PhpValue::Array(_)) = context.get(level) {
                    return (Some(inner.clone()), format!("{path}.{level}"));
                }
            }
        }
        (Some(context), path)
    }

    /// The `ssl` context options `options` (at `setting`) as PHP reads them; `None`: PHP's
    /// defaults.
    fn tls_options(
        &self,
        options: Option<PhpValue>,
        setting: String,
    ) -> Result<RedisTls, ConfigError> {
        let mut tls = RedisTls::system_default(setting.clone());
        let Some(options) = options else {
            return Ok(tls);
        };
        if let PhpValue::Unevaluated(u) = &options {
            return Err(unsupported(u, &setting));
        }
        let entry = |key: &str| -> Result<Option<(PhpValue, String)>, ConfigError> {
            let path = format!("{setting}.{key}");
            match options.get(key) {
                Some(PhpValue::Unevaluated(u)) => Err(unsupported(u, &path)),
                Some(PhpValue::Null) | None => Ok(None),
                Some(v) => Ok(Some((v.clone(), path))),
            }
        };
        let root = self.env_file.parent().unwrap_or(Path::new("."));
        let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(entry(key)?
                .and_then(|(v, _)| v.to_php_string())
                .filter(|p| !p.is_empty())
                .map(|p| root.join(p)))
        };
        if let Some((v, path)) = entry("capath")?.filter(|(v, _)| !v.is_php_empty()) {
            return Err(self.invalid(
                &path,
                &v.to_php_string().unwrap_or_default(),
                "a CA directory is not supported: put its certificates in one PEM file and set `cafile` to it",
            ));
        }
        if let Some((_, path)) = entry("passphrase")?.filter(|(v, _)| !v.is_php_empty()) {
            return Err(self.invalid(
                &path,
                "***",
                "an encrypted client key is not supported: decrypt it (`openssl pkey -in key.pem -out plain.pem`) and set `local_pk` to the result",
            ));
        }
        tls.verify_peer = entry("verify_peer")?.is_none_or(|(v, _)| v.truthy());
        let verify_name = entry("verify_peer_name")?;
        if tls.verify_peer
            && let Some((v, path)) = verify_name.filter(|(v, _)| !v.truthy())
        {
            return Err(self.invalid(
                &path,
                &v.to_php_string().unwrap_or_default(),
                "checking the certificate without its name is not supported: connect by a name the server's certificate holds, or set verify_peer to false as well",
            ));
        }
        tls.ca_file = file("cafile")?;
        tls.client_cert = file("local_cert")?;
        tls.client_key = match tls.client_cert {
            Some(_) => file("local_pk")?.or_else(|| tls.client_cert.clone()),
            None => None,
        };
        Ok(tls)
    }

    /// Where phpredis connects for `host` and `port`: a Unix socket for a path with a port below
    /// 1, TLS for a `tls://` (`ssl://`, `rediss://`) host or a TLS scheme, else TCP. `paths`
    /// are the settings to blame in errors.
    fn redis_endpoint(
        &self,
        host: String,
        (port, port_text): (i64, &str),
        tls: bool,
        paths: (&str, &str),
    ) -> Result<RedisEndpoint, ConfigError> {
        if host.starts_with('/') && port < 1 {
            return Ok(RedisEndpoint::Unix { path: host.into() });
        }
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.invalid(paths.1, port_text, "expected a port, 1-65535"))?;
        if host.is_empty() {
            return Err(self.invalid(paths.0, "", "a host name is required"));
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
                return Err(self.invalid(paths.0, &host, format!("unknown scheme `{scheme}://`")));
            }
            None if tls => RedisEndpoint::Tls { host, port },
            None => RedisEndpoint::Tcp { host, port },
        })
    }

    /// The connection prefix (phpredis/predis) and the cache store prefix (RedisStore).
    fn keys(
        &self,
        store: &Entries,
        connection_prefix: String,
        key_type: String,
    ) -> Result<KeySettings, ConfigError> {
        // CacheManager::getPrefix: the store's own prefix ?? cache.prefix; then
        // RedisStore::setPrefix: Laravel 8-10 append `:` to a non-empty prefix, 11+ do not.
        let cache_prefix = match store.get("prefix")? {
            Some(p) if *p != PhpValue::Null => p.clone(),
            _ => self
                .config
                .get("cache.prefix")?
                .cloned()
                .unwrap_or(PhpValue::Null),
        };
        let colon = self.version.is_none_or(LaravelVersion::cache_prefix_colon);
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
        Ok(KeySettings {
            connection_prefix,
            cache_prefix: text,
            store_prefix,
            key_type,
        })
    }

    /// The key prefix phpredis/predis put before every key of Redis connection `conn`.
    pub(super) fn connection_prefix(
        &self,
        conn: &Entries,
        client: &str,
    ) -> Result<String, ConfigError> {
        // The connectors merge the global options, then the connection's own `options`; a
        // connection-level `prefix` wins for predis (8.77+) and for phpredis from 9.12.
        let own_prefix_wins = client == "predis"
            || self
                .version
                .is_some_and(|v| (v.major, v.minor().unwrap_or(0)) >= (9, 12));
        let connection_option = match conn.get("options")? {
            Some(options) => options
                .get("prefix")
                .map(|p| (p.clone(), conn.path("options.prefix"))),
            None => None,
        };
        let own = if own_prefix_wins {
            conn.get("prefix")?
                .map(|p| (p.clone(), conn.path("prefix")))
        } else {
            None
        };
        let global = || -> Result<_, ConfigError> {
            let path = "database.redis.options.prefix";
            Ok(self
                .config
                .get(path)?
                .map(|p| (p.clone(), path.to_string())))
        };
        let prefix = match own.or(connection_option) {
            Some(found) => Some(found),
            None => global()?,
        };
        let prefix = match prefix {
            Some((PhpValue::Unevaluated(u), path)) => return Err(unsupported(&u, &path)),
            other => other.map(|(p, _)| p),
        };
        // phpredis applies a prefix only when it is not PHP-empty; predis whenever it is set.
        Ok(match prefix {
            Some(p) if client == "phpredis" && p.is_php_empty() => String::new(),
            Some(p) => p.to_php_string().unwrap_or_default(),
            None => String::new(),
        })
    }

    /// The default database connection, its URL and `write` host merged in, as
    /// DatabaseManager and ConnectionFactory build it; its table prefix applies to our tables.
    /// The default database connection: a MySQL/MariaDB one, or a PostgreSQL one
    /// (`resolve_pgsql`), the `write` side of a read/write split.
    pub(super) fn database(&self) -> Result<DatabaseSettings, ConfigError> {
        let default = self.string("database.default")?.unwrap_or_default();
        let not_mysql = |found: String| match self.config.env_name("database.default") {
            Some(var) => ConfigError::DbConnection {
                origin: self.env.origin(var, self.env_file),
                name: var.to_string(),
                found,
            },
            None => ConfigError::DbConnection {
                origin: self.config_origin("database.default"),
                name: "database.default".into(),
                found,
            },
        };
        let path = format!("database.connections.{default}");
        let Some(mut conn) = self.connection(&path)? else {
            return Err(not_mysql(format!(
                "{default} (no such connection in database.connections)"
            )));
        };
        let driver = conn.text("driver")?.unwrap_or_default();
        if driver != "mysql" && driver != "mariadb" && driver != "pgsql" {
            // The URL's scheme may name another driver.
            return Err(match &conn.url_driver {
                Some(d) => {
                    let var = self
                        .config
                        .env_name(&format!("{path}.url"))
                        .unwrap_or("the connection's url");
                    not_mysql(format!("{d} (from {var})"))
                }
                None if driver == default => not_mysql(default),
                None => not_mysql(format!("{default} (driver {driver})")),
            });
        }
        // Writes go to the `write` side of a read/write split.
        if let Some(PhpValue::Array(write)) = conn.get("write")?.cloned() {
            for (k, v) in write {
                conn.map.insert(k.to_string(), v);
            }
            conn.path = format!("{path}.write");
        }
        let host = match conn.get("host")? {
            Some(PhpValue::Array(hosts)) => hosts.first().and_then(|(_, h)| h.to_php_string()),
            Some(h) => h.to_php_string(),
            None => None,
        };
        if driver == "pgsql" {
            return self.pgsql(&conn, host).map(DatabaseSettings::Pgsql);
        }
        let host = host.unwrap_or_else(|| "127.0.0.1".into());
        let port_text = conn.text("port")?.unwrap_or_else(|| "3306".into());
        // PDO reads the DSN's port as a C integer: the leading digits, as (int) does.
        let port = u16::try_from(php::int_cast(&port_text))
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                self.invalid(
                    &format!("{path}.port"),
                    &port_text,
                    "expected a port, 1-65535",
                )
            })?;
        let socket = conn
            .text("unix_socket")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| (host == "localhost").then(|| PathBuf::from(PDO_DEFAULT_SOCKET)));
        Ok(DatabaseSettings::Mysql(MysqlSettings {
            host,
            port,
            socket,
            database: conn.text("database")?.unwrap_or_default(),
            username: conn.text("username")?.unwrap_or_default(),
            password: conn.text("password")?.unwrap_or_default(),
            table_prefix: conn.text("prefix")?.unwrap_or_default(),
            session: self.session(&conn)?,
            tls: self.mysql_tls(&conn)?,
        }))
    }

    /// TLS from the connection's PDO attributes, which Laravel's Connector::getOptions merges
    /// into the PDO constructor's options (Illuminate/Database/Connectors/Connector.php,
    /// Laravel 8.83). mysqlnd turns TLS on as soon as one SSL attribute is set, and then
    /// verifies the server's certificate unless `PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT` is
    /// `false` (ext/mysqlnd/mysqlnd_vio.c). The keys are the attributes' numbers on the PHP the
    /// configuration was read for, which PHP 8.5 changed (see `php_constants`).
    fn mysql_tls(&self, conn: &Entries) -> Result<Option<MysqlTls>, ConfigError> {
        let php = self.config.php().id;
        let [key, cert, ca, capath, cipher, verify] = [
            "SSL_KEY",
            "SSL_CERT",
            "SSL_CA",
            "SSL_CAPATH",
            "SSL_CIPHER",
            "SSL_VERIFY_SERVER_CERT",
        ]
        .map(|name| {
            php_constants::pdo_mysql_attribute(name, php)
                .map(|n| n.to_string())
                .unwrap_or_default()
        });
        let setting = conn.path("options");
        let Some(options) = conn.get("options")? else {
            return Ok(None);
        };
        let entry = |key: &str| -> Result<Option<PhpValue>, ConfigError> {
            match options.get(key) {
                Some(PhpValue::Unevaluated(u)) => Err(unsupported(u, &format!("{setting}.{key}"))),
                Some(v) if !v.is_php_empty() || key == verify => Ok(Some(v.clone())),
                _ => Ok(None),
            }
        };
        let root = self.env_file.parent().unwrap_or(Path::new("."));
        let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(entry(key)?
                .and_then(|v| v.to_php_string())
                .map(|p| root.join(p)))
        };
        if let Some(v) = entry(&capath)? {
            return Err(self.invalid(
                &format!("{setting}.{capath}"),
                &v.to_php_string().unwrap_or_default(),
                "PDO::MYSQL_ATTR_SSL_CAPATH (a CA directory) is not supported: put its certificates in one PEM file and set PDO::MYSQL_ATTR_SSL_CA to it",
            ));
        }
        let ca_file = file(&ca)?;
        let client_cert = file(&cert)?;
        let client_key = file(&key)?;
        if ca_file.is_none()
            && client_cert.is_none()
            && client_key.is_none()
            && entry(&cipher)?.is_none()
        {
            return Ok(None);
        }
        Ok(Some(MysqlTls {
            client_key: client_key.or_else(|| client_cert.clone()),
            ca_file,
            client_cert,
            verify_peer: entry(&verify)?.is_none_or(|v| v.truthy()),
            setting,
        }))
    }

    /// MySqlConnector's `configureEncoding`, `configureTimezone` and `setModes`. The values go
    /// into SQL, so they must look like what they are.
    fn session(&self, conn: &Entries) -> Result<MysqlSession, ConfigError> {
        let checked =
            |key: &str, allowed: fn(char) -> bool| -> Result<Option<String>, ConfigError> {
                match conn.text(key)? {
                    Some(v) if !v.is_empty() && v.chars().all(allowed) => Ok(Some(v)),
                    Some(v) => Err(self.invalid(&conn.path(key), &v, "not a valid MySQL name")),
                    None => Ok(None),
                }
            };
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let zone = |c: char| c.is_ascii_alphanumeric() || "_+-:/".contains(c);
        let sql_mode = match conn.get("modes")? {
            Some(PhpValue::Array(modes)) => {
                let mut list = Vec::new();
                for (_, mode) in modes {
                    let mode = mode.to_php_string().unwrap_or_default();
                    if mode.is_empty() || !mode.chars().all(word) {
                        return Err(self.invalid(
                            &conn.path("modes"),
                            &mode,
                            "not a MySQL sql_mode",
                        ));
                    }
                    list.push(mode);
                }
                SqlMode::Modes(list)
            }
            _ => match conn.get("strict")? {
                None | Some(PhpValue::Null) => SqlMode::Unset,
                Some(v) if v.truthy() => SqlMode::Strict,
                Some(_) => SqlMode::NotStrict,
            },
        };
        Ok(MysqlSession {
            charset: checked("charset", word)?,
            collation: checked("collation", word)?,
            timezone: checked("timezone", zone)?,
            sql_mode,
        })
    }

    /// `config('app.timezone')`, UTC when unset.
    pub(super) fn timezone(&self) -> Result<String, ConfigError> {
        Ok(self.string("app.timezone")?.unwrap_or_else(|| "UTC".into()))
    }
}

/// ConfigurationUrlParser: the URL's driver and the parts it has override the connection's
/// keys; its query string wins over everything.
fn merge_url(conn: &mut BTreeMap<String, PhpValue>, parts: &url::UrlParts) {
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
}
