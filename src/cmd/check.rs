//! `order-expire check`: what order-expire understood from the app, and whether it can work.
//!
//! Prints the resolved settings (secrets masked), the channel and the key pattern it will use,
//! then connects to Redis and MySQL and reports what it found there: notifications on or off,
//! tables and columns, the index the sweep needs. `--json` prints the same as one object, also
//! when a connection fails, so that deployment scripts and tests can compare it with Laravel's
//! own view of the configuration.

use std::fmt::Write as _;

use serde::Serialize;

use super::scrape;
use crate::config::{
    ConfigError, ConfigSource, DatabaseSettings, DispatchArgument, DispatchSettings,
    KeyJobSettings, OrderLines, QueueTarget, RedisEndpoint, RedisTopology, Settings, SslMode,
};
use crate::contract::Contract;
use crate::db::{Database, Server};
use crate::key::KeyPattern;
use crate::redis::server::RedisFamily;
use crate::redis::{
    RedisError, RedisServers, RedisTarget, TargetOrigin, expired_channel, publishes_expired,
};
use crate::sink::Writer;
use crate::sink::jobs::JobSink;
use crate::sink::key_jobs::KeyJobWriter;

/// Everything `check` prints: the settings as resolved, then what each server answered. The
/// field names are the keys of `check --json`.
#[derive(Debug, Serialize)]
struct Report {
    /// Where the settings came from: `.env`, `config` or `config-cache`.
    source: &'static str,
    /// The `.env` given with `--env`.
    env_file: String,
    /// The config files Laravel's settings were read from (or Laravel's stock files).
    config_files: Vec<String>,
    /// The Laravel version and where it was found (`null`: unknown, Laravel 8's rules apply).
    laravel: Option<LaravelReport>,
    /// The phpdotenv whose rules read the `.env` and where that was found, e.g.
    /// `5.4.1 (composer.lock)` or `^5.6.1 (required by Laravel 11)`.
    dotenv: String,
    /// The app's PHP version and where it was found, e.g. `8.2.36 (from /usr/bin/php)`: the
    /// config files and the cache are read for it.
    php: String,
    /// `ORDER_EXPIRE_CONFIG_SOURCE`: `auto`, `config-cache`, `laravel` or `evaluator`.
    config_source: String,
    /// When the settings come from the app's own Laravel (`source` is `laravel`): why it was
    /// asked, e.g. the construct order-expire did not evaluate and the setting it feeds.
    laravel_itself: Option<String>,
    /// Values of the app's config files order-expire does not evaluate, none of which feeds
    /// a setting it reads: they do not stop the worker.
    notes: Vec<String>,
    /// `--compare`: the app's own Laravel's reading next to ours (`null` without it).
    comparison: Option<ComparisonReport>,
    /// Warnings about the settings themselves.
    warnings: Vec<String>,
    /// What stops the worker whatever the servers answer: `check` fails when this is not
    /// empty, `--no-connect` included.
    problems: Vec<String>,
    /// The cache store's Redis connection.
    redis: RedisReport,
    /// How the cache store names its keys.
    cache: CacheReport,
    /// The channel the worker subscribes to, `__keyevent@<db>__:expired`.
    channel: String,
    /// The full Redis key of an order as a glob, `*` in place of the id.
    key_pattern: String,
    /// The MySQL connection and the tables the worker writes.
    db: DbReport,
    /// The app's time zone (`app.timezone`, or `ORDER_EXPIRE_TIMEZONE`), in which `updated_at`
    /// is written.
    timezone: String,
    /// `ORDER_EXPIRE_TTL` in seconds (`null`: no reconciliation).
    order_ttl: Option<u64>,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz` (`null`: nowhere).
    metrics_addr: Option<String>,
    /// Which signals cancel an order, and the guard every cancellation must pass.
    contract: Contract,
    /// The Laravel job queued per cancelled order (`null`: none).
    dispatch: Option<DispatchReport>,
    /// The jobs queued when keys of other types expire (`ORDER_EXPIRE_ON_<TYPE>`).
    key_jobs: Vec<KeyJobReport>,
    /// What each server answered (`null` with `--no-connect`).
    connections: Option<Connections>,
}

/// `ORDER_EXPIRE_DISPATCH` as resolved: the job, the queue connection and where jobs go.
#[derive(Debug, Serialize)]
struct DispatchReport {
    job: String,
    /// `model` or `id`.
    argument: &'static str,
    property: String,
    /// The Eloquent model class, for `model`.
    model: Option<String>,
    /// The queue connection's name and driver (`database` or `redis`).
    connection: String,
    driver: &'static str,
    queue: String,
    /// The `jobs` table (database), or the list key (redis).
    table: Option<String>,
    key: Option<String>,
    /// The queue's Redis database (redis).
    redis_database: Option<i64>,
    /// `exactly-once` (database) or `at-least-once` (redis, through the outbox).
    delivery: &'static str,
}

impl DispatchReport {
    fn new(d: &DispatchSettings) -> Self {
        let (table, key, redis_database, delivery) = match &d.target {
            QueueTarget::Database { table } => (Some(table.clone()), None, None, "exactly-once"),
            QueueTarget::Redis { redis, prefix } => (
                None,
                Some(format!("{prefix}queues:{}", d.queue)),
                Some(redis.database),
                "at-least-once",
            ),
        };
        let (argument, model) = match &d.argument {
            DispatchArgument::Model { model, .. } => ("model", Some(model.clone())),
            DispatchArgument::Id => ("id", None),
        };
        Self {
            job: d.class.clone(),
            argument,
            property: d.property.clone(),
            model,
            connection: d.connection.clone(),
            driver: d.target.driver(),
            queue: d.queue.clone(),
            table,
            key,
            redis_database,
            delivery,
        }
    }

    fn text(&self) -> String {
        let place = match (&self.table, &self.key) {
            (Some(table), _) => format!("table {table}"),
            (_, Some(key)) => format!(
                "list {key} in Redis database {}",
                self.redis_database.unwrap_or(0)
            ),
            _ => String::new(),
        };
        format!(
            "{} (${} = {}) on queue connection {} ({}), queue {}, {place}; {}",
            self.job,
            self.property,
            self.model.as_deref().unwrap_or("the order id"),
            self.connection,
            self.driver,
            self.queue,
            self.delivery
        )
    }
}

/// `ORDER_EXPIRE_ON_<TYPE>` as resolved: the key type, its job and where the job goes.
#[derive(Debug, Serialize)]
struct KeyJobReport {
    key_type: String,
    job: String,
    /// The job's public integer property that receives the id.
    property: String,
    /// The full Redis key of this type as a glob, `*` in place of the id.
    pattern: String,
    connection: String,
    driver: &'static str,
    queue: String,
    /// The `jobs` table (database), or the list key (redis).
    table: Option<String>,
    key: Option<String>,
    /// Always `at-least-once`: no row guards these jobs, and keys that expire while no worker
    /// listens are missed.
    delivery: &'static str,
}

impl KeyJobReport {
    fn new(settings: &Settings, j: &KeyJobSettings) -> Self {
        let (table, key) = match &j.target {
            QueueTarget::Database { table } => (Some(table.clone()), None),
            QueueTarget::Redis { prefix, .. } => {
                (None, Some(format!("{prefix}queues:{}", j.queue)))
            }
        };
        Self {
            key_type: j.key_type.clone(),
            job: j.class.clone(),
            property: j.property.clone(),
            pattern: KeyPattern::of_type(&settings.keys, &j.key_type).to_string(),
            connection: j.connection.clone(),
            driver: j.target.driver(),
            queue: j.queue.clone(),
            table,
            key,
            delivery: "at-least-once",
        }
    }

    fn text(&self) -> String {
        let place = match (&self.table, &self.key) {
            (Some(table), _) => format!("table {table}"),
            (_, Some(key)) => format!("list {key}"),
            _ => String::new(),
        };
        format!(
            "{} -> {} (${} = the id) on queue connection {} ({}), queue {}, {place}; {}",
            self.pattern,
            self.job,
            self.property,
            self.connection,
            self.driver,
            self.queue,
            self.delivery
        )
    }
}

/// `check --compare`: what the app's own Laravel resolved, against ours.
#[derive(Debug, Serialize)]
struct ComparisonReport {
    /// The PHP the app's Laravel ran on (`null` when it could not be asked).
    laravel_php: Option<String>,
    /// Why it could not be asked (a problem: the comparison was asked for).
    error: Option<String>,
    /// Why there is nothing to compare: our own reading needed the app's Laravel already.
    nothing_to_compare: Option<String>,
    /// Every resolved setting on which the two readings differ (secrets as `***`).
    differences: Vec<DifferenceReport>,
}

/// One setting the two readings resolve differently.
#[derive(Debug, Serialize)]
struct DifferenceReport {
    field: &'static str,
    ours: String,
    laravel: String,
}

impl ComparisonReport {
    fn new(ours: &Settings, laravel: Result<Settings, ConfigError>) -> Self {
        let mut report = Self {
            laravel_php: None,
            error: None,
            nothing_to_compare: None,
            differences: Vec::new(),
        };
        match (&ours.source, laravel) {
            (ConfigSource::Laravel { .. }, _) => {
                report.nothing_to_compare = Some(
                    "order-expire's own reading needs the app's Laravel already (see config)"
                        .into(),
                );
            }
            (_, Err(e)) => report.error = Some(e.to_string()),
            (_, Ok(laravel)) => {
                report.laravel_php = Some(laravel.php.text.clone());
                report.differences = crate::config::differences(ours, &laravel)
                    .into_iter()
                    .map(|d| DifferenceReport {
                        field: d.field,
                        ours: d.ours,
                        laravel: d.laravel,
                    })
                    .collect();
            }
        }
        report
    }

    /// The problems it means for `check`: a difference, or no answer from the app's Laravel.
    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .differences
            .iter()
            .map(|d| {
                format!(
                    "{} differs: order-expire reads {:?}, the app's Laravel {:?}",
                    d.field, d.ours, d.laravel
                )
            })
            .collect();
        if let Some(error) = &self.error {
            out.push(format!("no comparison with the app's Laravel: {error}"));
        }
        out
    }
}

/// The Laravel version whose rules apply.
#[derive(Debug, Serialize)]
struct LaravelReport {
    /// The version as found, e.g. `8.83.26`, or `^8.0` from composer.json.
    version: String,
    /// Its major version, which picks the rules.
    major: u32,
    /// Where it was found, e.g. `vendor/laravel/framework` or `composer.lock`.
    source: &'static str,
}

/// The Redis connection, password masked.
#[derive(Debug, Serialize)]
struct RedisReport {
    /// `standalone`, `cluster` (`redis.clusters.<connection>`) or `sentinel` (predis
    /// `'replication' => 'sentinel'`).
    topology: &'static str,
    /// The configured nodes as `host:port` (`tls://` first for TLS): the server, the cluster's
    /// seed nodes or the sentinels.
    nodes: Vec<String>,
    /// The Sentinel service (the master's name), for `sentinel`.
    service: Option<String>,
    /// The host, or the socket path for a Unix socket (the first node of a cluster or
    /// sentinel list).
    host: String,
    /// The TCP port (`null` for a Unix socket).
    port: Option<u16>,
    /// The Unix socket path, when the connection uses one.
    socket: Option<String>,
    /// The ACL user: `REDIS_USERNAME` from Laravel 9; on Laravel 8 predis only (`REDIS_URL`).
    username: Option<String>,
    /// `***` when a password is set, `null` when none is.
    password: Option<&'static str>,
    /// The cache database index (`REDIS_CACHE_DB`).
    database: i64,
    /// Whether the connection uses TLS (a `tls://` host, or a `tls` scheme).
    tls: bool,
    /// The TLS options of a TLS connection (file paths only, never their content).
    tls_options: Option<TlsReport>,
    /// `phpredis` or `predis`.
    client: String,
    /// The connection prefix (`database.redis.options.prefix`).
    prefix: String,
}

/// A TLS connection's options, as the app's Redis client reads them.
#[derive(Debug, Serialize)]
struct TlsReport {
    /// `cafile`, or null for the system's trust store.
    ca_file: Option<String>,
    /// `local_cert`, the client certificate, if any.
    client_cert: Option<String>,
    /// `local_pk` (or `local_cert` itself), the client certificate's key, if any.
    client_key: Option<String>,
    /// `verify_peer`: whether the server's certificate is checked.
    verify_peer: bool,
    /// The config key holding these options.
    setting: String,
}

/// The cache store's key naming.
#[derive(Debug, Serialize)]
struct CacheReport {
    /// The cache prefix as configured, without the `:` Laravel 8-10 append.
    prefix: String,
    /// The key type before `:<id>` (`ORDER_EXPIRE_KEY_TYPE`, default `ORDER_CONFIRM`).
    key_type: String,
}

/// The MySQL connection and tables, password masked.
#[derive(Debug, Serialize)]
struct DbReport {
    /// The connection's driver: `mysql` (MySQL and MariaDB) or `pgsql`.
    driver: &'static str,
    /// The host (`DB_HOST` in the stock config).
    host: String,
    /// The port (`DB_PORT`).
    port: u16,
    /// The Unix socket (`DB_SOCKET`, or PDO's default for the host `localhost`), used instead
    /// of host and port.
    socket: Option<String>,
    /// The schema (`DB_DATABASE`).
    database: String,
    /// The user (`DB_USERNAME`).
    username: String,
    /// `***`, or `(empty)` when `DB_PASSWORD` is empty.
    password: &'static str,
    /// The connection's table `prefix`, already part of the table names below.
    table_prefix: String,
    /// `SET NAMES` as Laravel sends it (null: not sent).
    charset: Option<String>,
    /// The collation sent with `SET NAMES`, if any.
    collation: Option<String>,
    /// TLS from the connection's PDO SSL attributes (null: none set, a plain connection).
    tls: Option<TlsReport>,
    /// The connection's `timezone` key (`SET time_zone` / `set time zone`), when it has one.
    timezone: Option<String>,
    /// PostgreSQL: libpq's `sslmode` (null on MySQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    sslmode: Option<&'static str>,
    /// PostgreSQL: the schemas of `set search_path to` (empty: the server's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    search_path: Option<Vec<String>>,
    /// The orders table, prefix included.
    orders_table: String,
    /// The products table, prefix included.
    products_table: String,
    /// The order lines table (`null`: one product per order, on the order's row).
    items_table: Option<String>,
}

/// What each server answered: the cache Redis, and the database under its driver's name.
#[derive(Debug, Default, Serialize)]
struct Connections {
    redis: RedisProbe,
    #[serde(skip_serializing_if = "Option::is_none")]
    mysql: Option<MysqlProbe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pgsql: Option<MysqlProbe>,
    /// The redis queue's Redis (`null` unless jobs go to a redis queue). Its failure does not
    /// stop the worker, whose jobs wait in the outbox: `check` does not fail for it.
    queue: Option<Probe>,
}

impl Connections {
    /// The database's probe, whichever driver.
    fn database(&self) -> (&'static str, Option<&MysqlProbe>) {
        match (&self.mysql, &self.pgsql) {
            (_, Some(p)) => ("pgsql", Some(p)),
            (m, None) => ("mysql", m.as_ref()),
        }
    }
}

/// What the app's database answered, and how the worker would lock rows there.
#[derive(Debug, Default, Serialize)]
struct MysqlProbe {
    #[serde(flatten)]
    probe: Probe,
    /// Whether the orders table has the `(status, created_at)` index the sweep reads by
    /// (`null`: not read).
    sweep_index: Option<bool>,
    /// `skip-locked` or `lock-wait` (`null`: the version was not read).
    write_path: Option<&'static str>,
    /// Why that path.
    write_path_reason: Option<&'static str>,
    /// How the worker's sessions and transactions are set up on this server.
    session: Option<String>,
}

/// What the cache Redis answered, and the servers the worker would subscribe to.
#[derive(Debug, Default, Serialize)]
struct RedisProbe {
    #[serde(flatten)]
    probe: Probe,
    /// Valkey's `redis_version`: the Redis version it is compatible with (`null` on Redis).
    redis_compatible: Option<String>,
    /// One entry per server whose `expired` events the worker would hear: the server, every
    /// master of a cluster, the master the sentinels name now (as far as they were found).
    subscriptions: Vec<SubscriptionReport>,
}

/// A server the worker would subscribe to.
#[derive(Debug, Serialize)]
struct SubscriptionReport {
    /// `host:port` (`tls://` first for TLS).
    redis: String,
    /// The channel, `__keyevent@<db>__:expired` (db 0 on a cluster).
    channel: String,
    /// Its `notify-keyspace-events` (`null`: `CONFIG` is not allowed there).
    notifications: Option<String>,
}

/// One connection attempt and what it found.
#[derive(Debug, Default, Serialize)]
struct Probe {
    /// True when the server is usable as configured.
    ok: bool,
    /// The server's family, once connected: `redis` or `valkey`, `mysql` or `mariadb`.
    family: Option<&'static str>,
    /// The server's own version (Valkey's, not the Redis version it reports for
    /// compatibility), once connected.
    version: Option<String>,
    /// Family and version as one name, `Valkey 8.1.8 (Redis 7.2.4 compatible)`, `MySQL 9.7.4`.
    server: Option<String>,
    /// Why the server is not usable, on one line.
    error: Option<String>,
    /// Findings that do not stop the worker (notifications unreadable, an index missing).
    warnings: Vec<String>,
}

impl DbReport {
    /// The database connection as resolved, the password masked.
    fn new(settings: &Settings) -> Self {
        let items_table = match &settings.schema.lines {
            OrderLines::Items { table, .. } => Some(table.as_str().to_string()),
            OrderLines::OnOrder { .. } => None,
        };
        let masked = |password: &str| {
            if password.is_empty() {
                "(empty)"
            } else {
                "***"
            }
        };
        let path = |p: &std::path::Path| p.display().to_string();
        let mut report = match &settings.database {
            DatabaseSettings::Mysql(m) => Self {
                driver: "mysql",
                host: m.host.clone(),
                port: m.port,
                socket: m.socket.as_deref().map(path),
                database: m.database.clone(),
                username: m.username.clone(),
                password: masked(&m.password),
                table_prefix: m.table_prefix.clone(),
                charset: m.session.charset.clone(),
                collation: m.session.collation.clone(),
                tls: m.tls.as_ref().map(|t| TlsReport {
                    ca_file: t.ca_file.as_deref().map(path),
                    client_cert: t.client_cert.as_deref().map(path),
                    client_key: t.client_key.as_deref().map(path),
                    verify_peer: t.verify_peer,
                    setting: t.setting.clone(),
                }),
                timezone: m.session.timezone.clone(),
                sslmode: None,
                search_path: None,
                orders_table: String::new(),
                products_table: String::new(),
                items_table: None,
            },
            DatabaseSettings::Pgsql(p) => Self {
                driver: "pgsql",
                host: p.host.clone(),
                port: p.port,
                socket: p
                    .socket_dir()
                    .map(|_| p.endpoint().trim_start_matches("unix:").to_string()),
                database: p.database.clone(),
                username: p.username.clone(),
                password: masked(&p.password),
                table_prefix: p.table_prefix.clone(),
                charset: p.session.charset.clone(),
                collation: None,
                tls: (p.tls.mode != SslMode::Disable).then(|| TlsReport {
                    ca_file: p.tls.root_cert.as_deref().map(path),
                    client_cert: p.tls.client_cert.as_deref().map(path),
                    client_key: p.tls.client_key.as_deref().map(path),
                    verify_peer: p.tls.verifies_chain(),
                    setting: p.tls.setting.clone(),
                }),
                timezone: p.session.timezone.clone(),
                sslmode: Some(p.tls.mode.name()),
                search_path: Some(p.session.search_path.clone()),
                orders_table: String::new(),
                products_table: String::new(),
                items_table: None,
            },
        };
        report.orders_table = settings.schema.orders.as_str().to_string();
        report.products_table = settings.schema.products.as_str().to_string();
        report.items_table = items_table;
        report
    }
}

impl Report {
    fn new(settings: &Settings) -> Self {
        let r = &settings.redis;
        let (host, port, socket, tls) = match &r.endpoint {
            RedisEndpoint::Tcp { host, port } => (host.clone(), Some(*port), None, false),
            RedisEndpoint::Tls { host, port } => (host.clone(), Some(*port), None, true),
            RedisEndpoint::Unix { path } => (
                path.display().to_string(),
                None,
                Some(path.display().to_string()),
                false,
            ),
        };
        Self {
            source: settings.source(),
            env_file: settings.env_file.display().to_string(),
            config_files: settings.config_files.clone(),
            warnings: Vec::new(),
            problems: Vec::new(),
            dotenv: settings.dotenv.to_string(),
            php: settings.php.to_string(),
            config_source: settings.source_choice.name().to_string(),
            laravel_itself: match &settings.source {
                ConfigSource::Laravel { because, .. } => Some(because.clone()),
                _ => None,
            },
            notes: settings.notes.clone(),
            comparison: None,
            laravel: settings.laravel.as_ref().map(|v| LaravelReport {
                version: v.text.clone(),
                major: v.major,
                source: v.source,
            }),
            redis: RedisReport {
                topology: r.topology.kind(),
                nodes: r.topology.nodes().iter().map(ToString::to_string).collect(),
                service: match &r.topology {
                    RedisTopology::Sentinel { service, .. } => Some(service.clone()),
                    _ => None,
                },
                host,
                port,
                socket,
                username: r.username.clone(),
                password: r.password.as_ref().map(|_| "***"),
                database: r.database,
                tls,
                tls_options: tls.then(|| TlsReport {
                    ca_file: r.tls.ca_file.as_ref().map(|p| p.display().to_string()),
                    client_cert: r.tls.client_cert.as_ref().map(|p| p.display().to_string()),
                    client_key: r.tls.client_key.as_ref().map(|p| p.display().to_string()),
                    verify_peer: r.tls.verify_peer,
                    setting: r.tls.setting.clone(),
                }),
                client: r.client.clone(),
                prefix: settings.keys.connection_prefix.clone(),
            },
            cache: CacheReport {
                prefix: settings.keys.cache_prefix.clone(),
                key_type: settings.keys.key_type.clone(),
            },
            channel: expired_channel(r.database),
            key_pattern: KeyPattern::new(&settings.keys).to_string(),
            db: DbReport::new(settings),
            timezone: settings.timezone.name.clone(),
            order_ttl: settings.recovery.order_ttl.map(|d| d.as_secs()),
            metrics_addr: settings.metrics_addr.map(|a| a.to_string()),
            contract: Contract::new(settings),
            dispatch: settings.dispatch.as_ref().map(DispatchReport::new),
            key_jobs: settings
                .key_jobs
                .iter()
                .map(|j| KeyJobReport::new(settings, j))
                .collect(),
            connections: None,
        }
    }

    /// Adds a problem when the worker could not serve its endpoint: the address is taken by
    /// another process, or not this machine's. A running order-expire worker holding it (its
    /// endpoint answers with order-expire's series) is a warning instead: `check` is run beside
    /// the live worker after a deploy, and only a second worker here would need another port.
    /// `connect` false (`--no-connect`): the endpoint is not asked, a taken port is a problem.
    async fn check_metrics_addr(&mut self, settings: &Settings, connect: bool) {
        let Some(addr) = settings.metrics_addr else {
            return;
        };
        let Err(e) = std::net::TcpListener::bind(addr) else {
            return;
        };
        let reached = scrape::reachable(addr).to_string();
        if connect
            && e.kind() == std::io::ErrorKind::AddrInUse
            && scrape::read(&reached)
                .await
                .is_ok_and(|view| view.queue_depth.is_some())
        {
            self.warnings.push(format!(
                "metrics: {addr} is served by a running order-expire worker (http://{reached}/metrics answers); a second worker on this machine needs another --metrics-addr (ORDER_EXPIRE_METRICS_ADDR)"
            ));
            return;
        }
        self.problems.push(format!(
            "cannot listen on {addr} for /metrics, /healthz and /readyz: {e}; set --metrics-addr (ORDER_EXPIRE_METRICS_ADDR) to a free port of this machine, or leave it unset"
        ));
    }

    /// True when nothing stops the worker.
    fn healthy(&self) -> bool {
        self.problems.is_empty()
            && self
                .connections
                .as_ref()
                .is_none_or(|c| c.redis.probe.ok && c.database().1.is_some_and(|d| d.probe.ok))
    }

    /// The human-readable form.
    fn text(&self) -> String {
        let mut out = String::new();
        self.write_sources(&mut out);
        self.write_redis(&mut out);
        self.write_database(&mut out);
        self.write_behaviour(&mut out);
        if let Some(c) = &self.connections {
            self.write_connections(c, &mut out);
        }
        out
    }

    /// Where the settings were read: the `.env`, the config files, Laravel's version.
    fn write_sources(&self, out: &mut String) {
        let _ = writeln!(out, "settings from {} ({})", self.env_file, self.source);
        match &self.laravel_itself {
            Some(because) => {
                let _ = writeln!(
                    out,
                    "  config      from Laravel itself (php {}), because {because}",
                    self.php.split(' ').next().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(out, "  config      {}", self.config_files.join(", "));
            }
        }
        for note in &self.notes {
            let _ = writeln!(
                out,
                "  note        {note}; no setting order-expire reads depends on it"
            );
        }
        let _ = writeln!(
            out,
            "  laravel     {}",
            self.laravel.as_ref().map_or_else(
                || "unknown: Laravel 8's rules apply (set --laravel-version if that is wrong)"
                    .to_string(),
                |l| format!("{} (from {})", l.version, l.source)
            )
        );
        let _ = writeln!(out, "  php         {}", self.php);
        let _ = writeln!(out, "  dotenv      phpdotenv {}", self.dotenv);
        if let Some(c) = &self.comparison {
            let line = match (&c.laravel_php, &c.error) {
                (Some(php), _) if c.differences.is_empty() => {
                    format!("the app's Laravel (php {php}) resolves every setting alike")
                }
                (Some(php), _) => format!(
                    "the app's Laravel (php {php}) resolves {} setting(s) otherwise: see the problems",
                    c.differences.len()
                ),
                (None, Some(error)) => error.clone(),
                (None, None) => c.nothing_to_compare.clone().unwrap_or_default(),
            };
            let _ = writeln!(out, "  compare     {line}");
        }
    }

    /// The cache Redis: where, which database, who, and over what.
    fn write_redis(&self, out: &mut String) {
        let r = &self.redis;
        let redis_at = match (&r.socket, r.port) {
            (Some(socket), _) => format!("unix:{socket}"),
            (None, Some(port)) => format!("{}{}:{port}", if r.tls { "tls://" } else { "" }, r.host),
            (None, None) => r.host.clone(),
        };
        if r.topology != "standalone" {
            let _ = writeln!(
                out,
                "  topology    {}{}, nodes {}",
                r.topology,
                r.service
                    .as_ref()
                    .map(|s| format!(", service {s}"))
                    .unwrap_or_default(),
                r.nodes.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "  redis       {redis_at}, database {}, user {}, password {}",
            r.database,
            r.username.as_deref().unwrap_or("(none)"),
            r.password.unwrap_or("(none)")
        );
        if let Some(t) = &r.tls_options {
            let _ = writeln!(
                out,
                "  tls         CA {}, client certificate {}, verify peer {} ({})",
                t.ca_file.as_deref().unwrap_or("(system)"),
                t.client_cert.as_deref().unwrap_or("(none)"),
                if t.verify_peer { "on" } else { "off" },
                t.setting
            );
        }
        let _ = writeln!(out, "  channel     {}", self.channel);
        let _ = writeln!(out, "  keys        {}", self.key_pattern);
    }

    /// The database: where, who, over what, and which tables.
    fn write_database(&self, out: &mut String) {
        let d = &self.db;
        let at = d
            .socket
            .as_ref()
            .map_or_else(|| format!("{}:{}", d.host, d.port), |s| format!("unix:{s}"));
        let _ = writeln!(
            out,
            "  {:<11} {at}, database {}, user {}, password {}",
            d.driver, d.database, d.username, d.password
        );
        if let Some(t) = &d.tls {
            let mode = d
                .sslmode
                .map(|m| format!("sslmode {m}, "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<11} {mode}CA {}, client certificate {}, verify peer {} ({})",
                format!("{} tls", d.driver),
                t.ca_file.as_deref().unwrap_or("(system)"),
                t.client_cert.as_deref().unwrap_or("(none)"),
                if t.verify_peer { "on" } else { "off" },
                t.setting
            );
        }
        if let Some(schemas) = &d.search_path {
            let _ = writeln!(
                out,
                "  schemas     {}",
                if schemas.is_empty() {
                    "the server's search_path".to_string()
                } else {
                    format!("search_path \"{}\"", schemas.join("\", \""))
                }
            );
        }
        let _ = writeln!(
            out,
            "  tables      {}, {}{}",
            d.orders_table,
            d.products_table,
            d.items_table
                .as_ref()
                .map(|t| format!(", {t}"))
                .unwrap_or_default()
        );
    }

    /// What the worker will do: time zone, recovery, metrics, the contract, jobs; what is wrong.
    fn write_behaviour(&self, out: &mut String) {
        let _ = writeln!(out, "  timezone    {}", self.timezone);
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning     {warning}");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  problem     {problem}");
        }
        let _ = writeln!(
            out,
            "  recovery    {}",
            match self.order_ttl {
                Some(ttl) =>
                    format!("orders overdue {ttl} s after created_at once their key is gone"),
                None => "off: set ORDER_EXPIRE_TTL to the TTL the app passes to put()".into(),
            }
        );
        let _ = writeln!(
            out,
            "  metrics     {}",
            match &self.metrics_addr {
                Some(addr) => format!("http://{addr}/metrics, /healthz and /readyz"),
                None => "off: set --metrics-addr or ORDER_EXPIRE_METRICS_ADDR, e.g. 127.0.0.1:9464"
                    .into(),
            }
        );
        let _ = writeln!(out, "  contract    {}", self.contract.promise());
        if let Some(dispatch) = &self.dispatch {
            let _ = writeln!(out, "  dispatch    {}", dispatch.text());
        }
        for job in &self.key_jobs {
            let _ = writeln!(out, "  key job     {}", job.text());
        }
    }

    /// What the servers answered (`check` without `--no-connect`).
    fn write_connections(&self, c: &Connections, out: &mut String) {
        let (driver, database) = c.database();
        let probes = [
            Some(("redis", &c.redis.probe)),
            database.map(|d| (driver, &d.probe)),
        ];
        let queue = c.queue.iter().map(|p| ("queue", p));
        for (name, probe) in probes.into_iter().flatten().chain(queue) {
            let status = match (&probe.error, &probe.server) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(server)) => format!("ok ({server})"),
                (None, None) => "ok".into(),
            };
            let _ = writeln!(out, "  {name:<11} {status}");
            for warning in &probe.warnings {
                let _ = writeln!(out, "              warning: {warning}");
            }
            if name == "redis" && !c.redis.subscriptions.is_empty() {
                let servers: Vec<&str> = c
                    .redis
                    .subscriptions
                    .iter()
                    .map(|s| s.redis.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "  subscribe   {} ({})",
                    servers.join(", "),
                    self.channel
                );
            }
        }
        let Some(database) = database else {
            return;
        };
        if let (Some(path), Some(reason)) = (database.write_path, database.write_path_reason) {
            let _ = writeln!(out, "  write path  {path}: {reason}");
        }
        if let Some(session) = &database.session {
            let _ = writeln!(out, "  session     {session}");
        }
        if let Some(present) = database.sweep_index {
            let _ = writeln!(
                out,
                "  index       (status, created_at) on {}: {}",
                self.db.orders_table,
                if present {
                    "present"
                } else {
                    "missing (see the warning)"
                }
            );
        }
    }
}

/// How `check` runs.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Print one JSON object instead of text.
    pub json: bool,
    /// Connect to Redis and MySQL (`--no-connect` turns it off).
    pub connect: bool,
    /// `--write-path lock-wait`, shown as the path the worker would take.
    pub lock_wait: bool,
}

/// `order-expire check`: prints the report (as JSON with `json`) and fails when it is not
/// healthy. `laravel` is the app's own Laravel's reading, for `--compare`.
pub async fn command(
    settings: &Settings,
    laravel: Option<Result<Settings, ConfigError>>,
    options: CheckOptions,
) -> Result<(), crate::Error> {
    let CheckOptions {
        json,
        connect,
        lock_wait,
    } = options;
    let mut report = run(settings, connect, lock_wait).await;
    if let Some(laravel) = laravel {
        let comparison = ComparisonReport::new(settings, laravel);
        report.problems.extend(comparison.problems());
        report.comparison = Some(comparison);
    }
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| crate::Error::Runtime(format!("cannot print the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    if report.healthy() {
        Ok(())
    } else {
        Err(crate::Error::CheckFailed("see the report above".into()))
    }
}

/// Builds the report and, unless `connect` is false, probes both servers.
async fn run(settings: &Settings, connect: bool, lock_wait: bool) -> Report {
    let mut report = Report::new(settings);
    report.check_metrics_addr(settings, connect).await;
    if connect {
        let redis = probe_redis(settings).await;
        let database = probe_mysql(settings, lock_wait).await;
        let queue = probe_queue(settings).await;
        report.connections = Some(match settings.database {
            DatabaseSettings::Mysql(_) => Connections {
                redis,
                mysql: Some(database),
                pgsql: None,
                queue,
            },
            DatabaseSettings::Pgsql(_) => Connections {
                redis,
                mysql: None,
                pgsql: Some(database),
                queue,
            },
        });
    }
    report
}

/// Finds the servers the worker would subscribe to and checks each one's notifications.
async fn probe_redis(settings: &Settings) -> RedisProbe {
    let mut probe = Probe::default();
    let mut subscriptions = Vec::new();
    let mut redis_compatible = None;
    let result = async {
        let servers = RedisServers::new(&settings.redis)?;
        let (_, topology) = servers.refresh().await?;
        let mut off = None;
        for master in topology.masters() {
            let mut conn = master.connect().await?;
            if probe.version.is_none() {
                let info = master.server_info(&mut conn).await?;
                probe.family = Some(info.family.name());
                probe.server = Some(info.to_string());
                redis_compatible =
                    (info.family == RedisFamily::Valkey).then(|| info.redis_version.clone());
                probe.version = Some(info.version);
            }
            let flags = master.notification_flags(&mut conn).await?;
            match &flags {
                Some(flags) if publishes_expired(flags) => {}
                Some(flags) => {
                    off.get_or_insert_with(|| RedisError::NotificationsOff {
                        endpoint: master.endpoint().to_string(),
                        current: flags.clone(),
                    });
                }
                None => probe.warnings.push(format!(
                    "CONFIG is not allowed on {}: cannot verify that notify-keyspace-events contains Ex",
                    master.endpoint()
                )),
            }
            subscriptions.push(SubscriptionReport {
                redis: master.endpoint().to_string(),
                channel: master.expired_channel(),
                notifications: flags,
            });
        }
        match off {
            Some(e) => Err(crate::Error::from(e)),
            None => Ok(()),
        }
    }
    .await;
    RedisProbe {
        probe: finish(probe, result),
        redis_compatible,
        subscriptions,
    }
}

async fn probe_mysql(settings: &Settings, lock_wait: bool) -> MysqlProbe {
    let mut probe = Probe::default();
    let mut path = None;
    let mut session = None;
    let mut sweep_index = None;
    let result = async {
        let db = Database::connect(&settings.database, 1).await?;
        let server = db.server().await?;
        path = Some(server.write_path(lock_wait));
        probe.family = Some(server.family());
        probe.version = Some(server.version());
        probe.server = Some(server.to_string());
        let snapshot = match db.mysql() {
            Some(mysql) => mysql.snapshot_isolation().await?,
            None => None,
        };
        session = Some(session_report(&server, snapshot, settings));
        // The job tables and the key jobs' queues, as the worker opens them at start.
        JobSink::new(settings, &db).await?;
        drop(KeyJobWriter::new(settings, db.clone()).await?);
        let writer = Writer::new(db, &settings.schema, settings.timezone.clone()).await?;
        let missing = writer
            .database()
            .missing_sweep_index(&settings.schema)
            .await?;
        sweep_index = Some(missing.is_none());
        if let Some(statement) = missing {
            let status = settings.schema.order_status.as_str();
            probe.warnings.push(match settings.recovery.order_ttl {
                Some(_) => format!(
                    "no index on ({status}, created_at): each reconciliation sweep reads the whole orders table (sweeps that find nothing back off to one every 5 min); add it: {statement}"
                ),
                None => format!(
                    "no index on ({status}, created_at): nothing needs it in events-only mode (the deadline watcher reads new orders by id); add it before setting ORDER_EXPIRE_TTL, whose sweeps would read the whole table: {statement}"
                ),
            });
        }
        writer.into_database().close().await;
        Ok(())
    }
    .await;
    MysqlProbe {
        probe: finish(probe, result),
        sweep_index,
        write_path: path.map(|(path, _)| path.name()),
        write_path_reason: path.map(|(_, reason)| reason),
        session,
    }
}

/// The redis queue's Redis, where the outbox's jobs are pushed: unreachable, it is a warning
/// (the worker starts, its jobs wait in the outbox); `None` unless jobs go to a redis queue.
async fn probe_queue(settings: &Settings) -> Option<Probe> {
    let dispatch = settings.dispatch.as_ref()?;
    let QueueTarget::Redis { redis, .. } = &dispatch.target else {
        return None;
    };
    let mut probe = Probe::default();
    let reached = async {
        let target = RedisTarget::new(redis)?.with_origin(TargetOrigin::Queue {
            connection: dispatch.connection.clone(),
        });
        let mut conn = target.connect().await?;
        let info = target.server_info(&mut conn).await?;
        probe.family = Some(info.family.name());
        probe.server = Some(info.to_string());
        probe.version = Some(info.version);
        Ok::<_, crate::Error>(())
    }
    .await;
    let mut probe = finish(probe, reached);
    if let Some(error) = &mut probe.error {
        error.push_str(
            "; the worker starts all the same, and the jobs wait in the outbox until it answers",
        );
    }
    Some(probe)
}

/// How the worker's sessions are set up on `server`, and what of it depends on the server:
/// the isolation level is set per transaction with the one statement every server has (not
/// through `tx_isolation`, which MySQL 8 removed, nor `transaction_isolation`, which MariaDB
/// has only since 11.1), and MariaDB's snapshot isolation (`snapshot`: its
/// `innodb_snapshot_isolation`, ON by default since 11.6.2) refuses only REPEATABLE READ
/// transactions.
fn session_report(server: &Server, snapshot: Option<bool>, settings: &Settings) -> String {
    let server = match (server, &settings.database) {
        (Server::Mysql(server), _) => server,
        (Server::Pgsql(_), DatabaseSettings::Pgsql(p)) => {
            let statements = p.session.statements();
            return format!(
                "each write in READ COMMITTED (BEGIN ISOLATION LEVEL READ COMMITTED), after PostgresConnector's session: {}",
                if statements.is_empty() {
                    "nothing (the connection sets none)".to_string()
                } else {
                    statements.join("; ")
                }
            );
        }
        (Server::Pgsql(_), _) => return String::new(),
    };
    let mut text = String::from(
        "each write in READ COMMITTED (SET TRANSACTION ISOLATION LEVEL, on every MySQL and MariaDB), with Laravel's names, time zone and sql_mode",
    );
    if snapshot == Some(true) {
        let _ = write!(
            text,
            "; innodb_snapshot_isolation is ON on this {}: it refuses REPEATABLE READ transactions that lock a row changed after their snapshot (ERROR 1020), not these",
            server.family.title()
        );
    }
    text
}

fn finish(mut probe: Probe, result: Result<(), crate::Error>) -> Probe {
    match result {
        Ok(()) => probe.ok = true,
        Err(e) => {
            probe.error = Some(
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
    }
    probe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ident;

    fn settings_with(ttl: Option<u64>, paid: Option<&str>) -> Settings {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let env = dir.path().join(".env");
        std::fs::write(&env, "CACHE_DRIVER=redis\n").expect("write .env");
        let mut settings = Settings::load(&env, &Default::default()).expect("settings");
        settings.recovery.order_ttl = ttl.map(std::time::Duration::from_secs);
        settings.schema.paid_column = paid.map(|p| Ident::new(p).expect("ident"));
        settings
    }

    #[test]
    fn the_contract_names_the_mode_and_the_guard() {
        let events = Contract::new(&settings_with(None, None));
        assert_eq!(
            (events.mode, events.guard.as_str()),
            ("events-only", "status = 0")
        );
        assert!(
            events
                .promise()
                .contains("a key deleted before its deadline keeps the order")
        );
        let reconciliation = Contract::new(&settings_with(Some(900), Some("paid_at")));
        assert_eq!(
            (reconciliation.mode, reconciliation.guard.as_str()),
            ("reconciliation", "status = 0 and paid_at is null")
        );
        assert!(
            reconciliation
                .promise()
                .contains("deleting the key alone does not protect it")
        );
    }
}
