//! The resolved settings, one type per server or concern: what [`super::resolve`] computes from
//! Laravel's configuration and [`super::Settings`] holds.
//!
//! They live apart from both so that the resolver and the assembly depend on them and not on
//! each other.

use std::fmt;
use std::path::PathBuf;

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

/// How to reach the cache store's Redis connection (`database.redis.cache` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where the server is: host and port (`REDIS_HOST`, `REDIS_PORT`), with TLS or not, or a
    /// Unix socket. On a cluster the first seed node, under Sentinel the first sentinel:
    /// [`RedisSettings::topology`] says which.
    pub endpoint: RedisEndpoint,
    /// One server, a cluster or a Sentinel-managed master, as Laravel's `RedisManager` and
    /// connectors would connect.
    pub topology: RedisTopology,
    /// The ACL user: `REDIS_USERNAME` from Laravel 9; on Laravel 8 only predis sends one (from
    /// `REDIS_URL`'s user part or a `username` key), phpredis never does.
    pub username: Option<String>,
    /// `REDIS_PASSWORD`, `None` when PHP-empty (`null`, `''`, `'0'`): phpredis then sends no
    /// `AUTH`.
    pub password: Option<String>,
    /// The cache database index (`REDIS_CACHE_DB`), as phpredis `SELECT`s it.
    pub database: i64,
    /// `phpredis` or `predis` (`database.redis.client`): they apply prefixes differently.
    pub client: String,
    /// The TLS options (CA file, client certificate, peer verification), used when the
    /// endpoint is [`RedisEndpoint::Tls`].
    pub tls: RedisTls,
}

/// The TLS options of the Redis connection, as phpredis (`context.stream`) or predis (`ssl`)
/// hand them to PHP's `ssl` stream context. Only file paths: the files are read when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// `cafile`: the CA certificates (PEM) the server's certificate must chain to; `None`:
    /// the system's trust store, as PHP's `openssl.cafile` default.
    pub ca_file: Option<PathBuf>,
    /// `local_cert`: the client certificate (PEM) sent to the server, if any.
    pub client_cert: Option<PathBuf>,
    /// `local_pk`: the client certificate's key (PEM); PHP reads it from `local_cert` when
    /// unset, and so do we.
    pub client_key: Option<PathBuf>,
    /// `verify_peer` (PHP's default `true`): whether the server's certificate is checked.
    pub verify_peer: bool,
    /// The config key holding these options (`database.redis.cache.context.stream`, or
    /// `database.redis.cache.ssl` for predis), for messages.
    pub setting: String,
}

impl RedisTls {
    /// PHP's defaults: the system's CAs, no client certificate, the peer verified.
    pub fn system_default(setting: String) -> Self {
        Self {
            ca_file: None,
            client_cert: None,
            client_key: None,
            verify_peer: true,
            setting,
        }
    }
}

/// How the app's Redis is deployed, as Laravel reads it from `config/database.php`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: `database.redis.<connection>` with a host and port (or a socket).
    Standalone(RedisEndpoint),
    /// Redis Cluster: `database.redis.clusters.<connection>`, used only when
    /// `database.redis.<connection>` does not exist. No database is ever selected (db 0).
    Cluster {
        /// The seed nodes as configured, in order.
        seeds: Vec<RedisEndpoint>,
    },
    /// A master found through Sentinel (predis `'replication' => 'sentinel'`): the
    /// connection's entries are the sentinels.
    Sentinel {
        /// The sentinels as configured, in order.
        sentinels: Vec<RedisEndpoint>,
        /// The monitored master's name (`options.service`, `mymaster` by default).
        service: String,
    },
}

impl RedisTopology {
    /// `standalone`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "standalone",
            Self::Cluster { .. } => "cluster",
            Self::Sentinel { .. } => "sentinel",
        }
    }

    /// The configured nodes: the server, the cluster's seeds or the sentinels.
    pub fn nodes(&self) -> Vec<&RedisEndpoint> {
        match self {
            Self::Standalone(endpoint) => vec![endpoint],
            Self::Cluster { seeds } => seeds.iter().collect(),
            Self::Sentinel { sentinels, .. } => sentinels.iter().collect(),
        }
    }
}

impl fmt::Display for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self
            .nodes()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Self::Standalone(endpoint) => write!(f, "{endpoint}"),
            Self::Cluster { .. } => write!(f, "cluster, seeds {nodes}"),
            Self::Sentinel { service, .. } => {
                write!(f, "sentinel, service {service}, sentinels {nodes}")
            }
        }
    }
}

/// Where phpredis connects, from the connection's `host`, `port` and `scheme`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// Plain TCP: a bare host, or a `tcp://` or `redis://` one.
    Tcp {
        /// The host name or address, without its scheme.
        host: String,
        /// The port, 1-65535.
        port: u16,
    },
    /// TLS: a `tls://`, `ssl://` or `rediss://` host, or a `tls` scheme or driver.
    Tls {
        /// The host name or address, without its scheme.
        host: String,
        /// The port, 1-65535.
        port: u16,
    },
    /// A Unix socket: a host that is an absolute path, with a port below 1.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
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

/// The app's default database connection, by its driver: where the orders are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSettings {
    /// A `mysql` or `mariadb` connection.
    Mysql(MysqlSettings),
    /// A `pgsql` connection.
    Pgsql(crate::pgsql::PgsqlSettings),
}

impl DatabaseSettings {
    /// `mysql` or `pgsql`: the adapter the worker writes through.
    pub fn driver(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "mysql",
            Self::Pgsql(_) => "pgsql",
        }
    }

    /// `MySQL` or `PostgreSQL`: the server family, for messages (a MariaDB is `MySQL` here, as
    /// Laravel's `mariadb` connection speaks its protocol).
    pub fn title(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "MySQL",
            Self::Pgsql(_) => "PostgreSQL",
        }
    }

    /// Where we connect, for messages.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Mysql(m) => m.endpoint(),
            Self::Pgsql(p) => p.endpoint(),
        }
    }

    /// The database (`DB_DATABASE`).
    pub fn database(&self) -> &str {
        match self {
            Self::Mysql(m) => &m.database,
            Self::Pgsql(p) => &p.database,
        }
    }

    /// The user (`DB_USERNAME`).
    pub fn username(&self) -> &str {
        match self {
            Self::Mysql(m) => &m.username,
            Self::Pgsql(p) => &p.username,
        }
    }

    /// The connection's table prefix.
    pub fn table_prefix(&self) -> &str {
        match self {
            Self::Mysql(m) => &m.table_prefix,
            Self::Pgsql(p) => &p.table_prefix,
        }
    }

    /// The MySQL connection, when it is one.
    pub fn mysql(&self) -> Option<&MysqlSettings> {
        match self {
            Self::Mysql(m) => Some(m),
            Self::Pgsql(_) => None,
        }
    }

    /// The PostgreSQL connection, when it is one.
    pub fn pgsql(&self) -> Option<&crate::pgsql::PgsqlSettings> {
        match self {
            Self::Pgsql(p) => Some(p),
            Self::Mysql(_) => None,
        }
    }
}

/// The app's default database connection (`database.connections.mysql` by default).
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    /// The host (`DB_HOST`; the `write` host when the connection has one).
    pub host: String,
    /// The port (`DB_PORT`, default 3306).
    pub port: u16,
    /// A Unix socket, from `unix_socket` (`DB_SOCKET`) or implied by the host `localhost` as
    /// PDO does.
    pub socket: Option<PathBuf>,
    /// The schema the tables are in (`DB_DATABASE`).
    pub database: String,
    /// `DB_USERNAME`.
    pub username: String,
    /// `DB_PASSWORD`; never printed, not even by `Debug`.
    pub password: String,
    /// The connection's table prefix (`'prefix'` in config/database.php), already applied to
    /// the schema's table names.
    pub table_prefix: String,
    /// What Laravel's MySqlConnector sets on every connection, so that our writes mean what
    /// Eloquent's mean (a `timezone` key changes how a TIMESTAMP literal is stored).
    pub session: MysqlSession,
    /// TLS, when the connection's PDO `options` set an SSL attribute (`PDO::MYSQL_ATTR_SSL_CA`
    /// ...), as mysqlnd then uses it; `None`: plain, as PDO connects without them.
    pub tls: Option<MysqlTls>,
}

/// The TLS options of the MySQL connection, from its PDO attributes as mysqlnd reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    /// `PDO::MYSQL_ATTR_SSL_CA`: the CA file; `None`: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// `PDO::MYSQL_ATTR_SSL_CERT`: a client certificate.
    pub client_cert: Option<PathBuf>,
    /// `PDO::MYSQL_ATTR_SSL_KEY`: its key (else read from the certificate's file).
    pub client_key: Option<PathBuf>,
    /// `PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT`: mysqlnd verifies the server's certificate
    /// (chain and name) unless it is `false`.
    pub verify_peer: bool,
    /// The config key holding these options (`database.connections.mysql.options`).
    pub setting: String,
}

/// The session settings of a Laravel MySQL connection (`charset`, `collation`, `timezone`,
/// `strict`, `modes`), already checked to be safe to put in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSession {
    /// `SET NAMES '<charset>'` (with `COLLATE '<collation>'`); nothing when the charset is unset.
    pub charset: Option<String>,
    /// The `COLLATE` of `SET NAMES`, when the connection has a `collation` key.
    pub collation: Option<String>,
    /// `SET time_zone = '<timezone>'`, only when the connection has a `timezone` key.
    pub timezone: Option<String>,
    /// The session's `sql_mode`, from `strict` and `modes`.
    pub sql_mode: SqlMode,
}

impl MysqlSession {
    /// The statements MySqlConnector sends after connecting, in its order.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(charset) = &self.charset {
            let collation = self
                .collation
                .as_ref()
                .map(|c| format!(" COLLATE '{c}'"))
                .unwrap_or_default();
            out.push(format!("SET NAMES '{charset}'{collation}"));
        }
        if let Some(tz) = &self.timezone {
            out.push(format!("SET time_zone = '{tz}'"));
        }
        match &self.sql_mode {
            SqlMode::Unset => {}
            SqlMode::Strict => out.push(
                "SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'".into(),
            ),
            SqlMode::NotStrict => {
                out.push("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'".into());
            }
            SqlMode::Modes(modes) => {
                out.push(format!("SET SESSION sql_mode = '{}'", modes.join(",")));
            }
        }
        out
    }
}

/// `sql_mode` as MySqlConnector::setModes picks it: `modes`, else `strict`, else untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlMode {
    /// Neither key: the server's own `sql_mode` stays.
    Unset,
    /// `'strict' => true`: Laravel's strict modes.
    Strict,
    /// `'strict' => false`: `NO_ENGINE_SUBSTITUTION` only.
    NotStrict,
    /// The connection's `modes` list, as given.
    Modes(Vec<String>),
}

impl MysqlSettings {
    /// Where we connect, for messages.
    pub fn endpoint(&self) -> String {
        match &self.socket {
            Some(path) => format!("unix:{}", path.display()),
            // An IPv6 address is bracketed, as a `host:port` of it must be.
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
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
            .field("session", &self.session)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The app's time zone (`config('app.timezone')`), in which Eloquent writes `updated_at`.
#[derive(Debug, Clone)]
pub struct TimeZoneSetting {
    /// The IANA name as configured, e.g. `UTC` or `Asia/Shanghai`.
    pub name: String,
    /// That zone, looked up in the tz database.
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
