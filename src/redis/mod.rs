//! The Redis adapter: connections to the app's cache Redis, built from the Laravel settings, the
//! commands the pipeline sends ([`commands`]), which server answers them (Redis or Valkey:
//! [`server`]) and their errors ([`RedisError`]).
//!
//! Laravel's phpredis connection applies the key prefix itself; we do not, because keyspace
//! events carry the full key and `schedule` must write the full key. So connections here are
//! plain: the right server, password and database, nothing else.
//!
//! A [`RedisTarget`] is one server. The cache store's Redis may be several: a cluster's masters,
//! or whichever server the sentinels name master now. [`RedisServers`] stands for the cache
//! Redis whatever its topology: it finds the servers whose `expired` events must be heard
//! (`cluster`, `sentinel`) and hands out a [`RoutedConnection`] that sends each key's command to
//! the server holding it (`slot`).
//!
//! Stages (sources, the writer, the subcommands) call the named functions here rather than
//! building commands themselves, so every byte sent to Redis is in this folder.

mod cluster;
pub(crate) mod commands;
mod error;
mod routed;
mod sentinel;
pub(crate) mod server;
mod servers;
mod slot;

pub(crate) use error::RedisError;
pub(crate) use routed::RoutedConnection;
pub(crate) use sentinel::SwitchMaster;
pub(crate) use servers::{RedisServers, Topology};

use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, TlsCertificates,
};

use crate::config::{RedisEndpoint, RedisSettings, RedisTls};

/// How long a connection attempt may take before we call the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How every connection to one Redis deployment authenticates, selects its database and
/// encrypts: the same for each of its servers (a cluster's nodes, a Sentinel's masters).
#[derive(Clone)]
pub(crate) struct Access {
    username: Option<String>,
    password: Option<String>,
    database: i64,
    /// PHP's `verify_peer`: whether a TLS server's certificate is checked.
    verify_peer: bool,
    /// The CA and client certificate of TLS connections, read once; `None`: the system's CAs
    /// and no client certificate.
    certificates: Option<TlsCertificates>,
    /// The config key of the TLS options, named when a handshake fails.
    tls_setting: String,
    /// The TLS files in use, named when redis-rs cannot parse one.
    tls_files: String,
    /// The ACL rules this deployment needs beyond a single server's (cluster discovery, `ROLE`).
    acl_extra: &'static str,
}

impl Access {
    /// The settings' credentials, database and TLS options; the TLS files are read only when
    /// `tls` (some server is reached over TLS).
    fn new(settings: &RedisSettings, tls: bool) -> Result<Self, RedisError> {
        Ok(Self {
            username: settings.username.clone(),
            password: settings.password.clone(),
            database: settings.database,
            verify_peer: settings.tls.verify_peer,
            certificates: if tls {
                tls_certificates(&settings.tls)?
            } else {
                None
            },
            tls_setting: settings.tls.setting.clone(),
            tls_files: tls_files(&settings.tls),
            acl_extra: "",
        })
    }
}

/// Where a server's address came from, so that a failure names what to check: the app's
/// settings only when the address is theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetOrigin {
    /// The cache connection's settings (`REDIS_HOST`, `REDIS_PORT`, the cluster's seeds, the
    /// sentinels).
    Settings,
    /// A master a cluster node announced (`CLUSTER SHARDS`, a redirection).
    ClusterAnnounced,
    /// The master the sentinels named.
    SentinelAnnounced,
    /// The Redis of the named queue connection, where jobs are pushed.
    Queue { connection: String },
}

impl TargetOrigin {
    /// What to check when the server does not answer, after `; `.
    fn unreachable_hint(&self) -> String {
        match self {
            Self::Settings => "is Redis running there? check REDIS_HOST and REDIS_PORT".into(),
            Self::ClusterAnnounced => "the cluster announces this address for a master: check that node's cluster-announce-ip / cluster-announce-port (or the address it binds) and that this host can reach it".into(),
            Self::SentinelAnnounced => "the sentinels name this address as the master: check the master's replica-announce-ip / replica-announce-port and that this host can reach it".into(),
            Self::Queue { connection } => format!("this is the Redis of queue connection `{connection}` (config/queue.php and its connection in config/database.php); until it answers, the jobs wait in the outbox"),
        }
    }
}

/// One Redis server: where to connect and how to explain failures.
#[derive(Clone)]
pub(crate) struct RedisTarget {
    client: Client,
    addr: RedisEndpoint,
    endpoint: String,
    /// This database's `expired` channel, computed once.
    channel: String,
    /// The config key of the TLS options, for a TLS connection: named when the handshake fails.
    tls_setting: Option<String>,
    /// Extra ACL rules of the deployment this server is part of.
    acl_extra: &'static str,
    /// Where its address came from, for the hint of a failed connection.
    origin: TargetOrigin,
}

impl RedisTarget {
    /// The one server of `settings` (`settings.endpoint`): a queue's Redis, or a standalone
    /// cache Redis.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let tls = matches!(settings.endpoint, RedisEndpoint::Tls { .. });
        Self::at(&settings.endpoint, &Access::new(settings, tls)?)
    }

    /// The server at `addr`, reached with `access`.
    fn at(addr: &RedisEndpoint, access: &Access) -> Result<Self, RedisError> {
        let endpoint = addr.to_string();
        let conn_addr = match addr {
            RedisEndpoint::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
            RedisEndpoint::Tls { host, port } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                // PHP's `verify_peer => false`: no check of the server's certificate at all.
                insecure: !access.verify_peer,
                tls_params: None,
            },
            RedisEndpoint::Unix { path } => ConnectionAddr::Unix(path.clone()),
        };
        let tls = matches!(addr, RedisEndpoint::Tls { .. });
        let mut redis = RedisConnectionInfo::default().set_db(access.database);
        if let Some(username) = &access.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &access.password {
            redis = redis.set_password(password);
        }
        let info = conn_addr
            .into_connection_info()
            .map(|info| info.set_redis_settings(redis))
            .map_err(|e| connect_error(&endpoint, None, &TargetOrigin::Settings, &e))?;
        let client = match (&access.certificates, tls) {
            (Some(certificates), true) => Client::build_with_tls(info, certificates.clone())
                .map_err(|e| RedisError::TlsFile {
                    path: access.tls_files.clone(),
                    setting: access.tls_setting.clone(),
                    cause: e.to_string(),
                })?,
            _ => Client::open(info)
                .map_err(|e| connect_error(&endpoint, None, &TargetOrigin::Settings, &e))?,
        };
        Ok(Self {
            client,
            addr: addr.clone(),
            endpoint,
            channel: expired_channel(access.database),
            tls_setting: tls.then(|| access.tls_setting.clone()),
            acl_extra: access.acl_extra,
            origin: TargetOrigin::Settings,
        })
    }

    /// The same server, its address from `origin`.
    pub(crate) fn with_origin(mut self, origin: TargetOrigin) -> Self {
        self.origin = origin;
        self
    }

    /// The host name or address (empty for a Unix socket).
    pub(crate) fn host(&self) -> &str {
        match &self.addr {
            RedisEndpoint::Tcp { host, .. } | RedisEndpoint::Tls { host, .. } => host,
            RedisEndpoint::Unix { .. } => "",
        }
    }

    /// `host:port` (or `tls://`, `unix:`), for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The channel Redis publishes this database's expirations on (see [`expired_channel`]).
    pub(crate) fn expired_channel(&self) -> String {
        self.channel.clone()
    }

    /// A connection for commands (SETEX, CONFIG, PTTL...), on the cache database. Every reply
    /// must come within `RESPONSE_TIMEOUT` (10 s): a silently dead connection fails instead of
    /// hanging its user forever.
    pub(crate) async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.within_connect_timeout(
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// A dedicated pub/sub connection.
    pub(crate) async fn pubsub(&self) -> Result<PubSub, RedisError> {
        self.within_connect_timeout(self.client.get_async_pubsub())
            .await
    }

    /// Runs a connection attempt for at most `CONNECT_TIMEOUT`, its failure explained.
    async fn within_connect_timeout<T>(
        &self,
        attempt: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(connect_error(
                &self.endpoint,
                self.tls_setting.as_deref(),
                &self.origin,
                &e,
            )),
            Err(_) => Err(timeout_error(&self.endpoint, &self.origin)),
        }
    }

    /// Makes sure Redis publishes `expired` keyevents (`notify-keyspace-events` holds `E` and `x`
    /// or `A`). Laravel never turns them on, and without them the worker would wait forever.
    /// With `configure`, missing flags are added (keeping the others). Where `CONFIG` is not
    /// allowed we cannot tell, so we warn and go on: the deadline watcher and the sweep still
    /// cancel orders, only later.
    pub(crate) async fn ensure_notifications(
        &self,
        conn: &mut MultiplexedConnection,
        configure: bool,
    ) -> Result<(), RedisError> {
        let Some(current) = self.notification_flags(conn).await? else {
            tracing::warn!(event = "notifications_unknown", redis = %self.endpoint,
                "cannot read notify-keyspace-events (CONFIG is not allowed here); make sure it contains `Ex`: until then only the deadline watcher and sweeps cancel orders");
            return Ok(());
        };
        if publishes_expired(&current) {
            return Ok(());
        }
        if !configure {
            return Err(RedisError::NotificationsOff {
                endpoint: self.endpoint.clone(),
                current,
            });
        }
        let mut wanted = current.clone();
        for flag in ['E', 'x'] {
            if !wanted.contains(flag) {
                wanted.push(flag);
            }
        }
        self.set_notification_flags(conn, &wanted).await?;
        tracing::info!(redis = %self.endpoint, from = %current, to = %wanted,
            "turned on keyspace notifications (--configure-redis); add `notify-keyspace-events {wanted}` to redis.conf so a restart keeps it");
        Ok(())
    }

    /// Wraps a command's failure with where it happened; `action` names the command.
    pub(crate) fn command_error(&self, action: &str, source: ::redis::RedisError) -> RedisError {
        if commands::is_no_perm(&source) {
            return RedisError::Permission {
                endpoint: self.endpoint.clone(),
                action: action.to_string(),
                cause: source.to_string(),
                rules: self.acl_rules("<the order keys' prefix>"),
            };
        }
        RedisError::Command {
            endpoint: self.endpoint.clone(),
            action: action.to_string(),
            source,
        }
    }
}

/// The channel Redis publishes database `database`'s expirations on. Not prefixed: keyspace
/// events are published by the server, not by the app (the PHP command subscribes to a prefixed
/// channel through phpredis and so never hears anything on Laravel's defaults). The one place
/// the name is spelled; `check` shows it and the keyspace source subscribes to it.
pub(crate) fn expired_channel(database: i64) -> String {
    format!("__keyevent@{database}__:expired")
}

/// Whether `notify-keyspace-events` flags make Redis publish `__keyevent@<db>__:expired`:
/// `E` (keyevent channels) and `x` (expired) or `A` (all, which includes `x`).
pub(crate) fn publishes_expired(flags: &str) -> bool {
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

fn timeout_error(endpoint: &str, origin: &TargetOrigin) -> RedisError {
    let hint = match origin {
        TargetOrigin::Settings => {
            "; check REDIS_HOST and REDIS_PORT and that a firewall lets the connection through"
                .to_string()
        }
        other => format!("; {}", other.unreachable_hint()),
    };
    RedisError::Connect {
        endpoint: endpoint.to_string(),
        cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        hint,
    }
}

/// The CA file and the client certificate and key of a TLS connection, read as PEM; `None`
/// when the connection uses the system's CAs and no client certificate.
fn tls_certificates(tls: &RedisTls) -> Result<Option<TlsCertificates>, RedisError> {
    let read = |path: &std::path::Path, key: &str| {
        crate::config::read_pem(path).map_err(|e| RedisError::TlsFile {
            path: path.display().to_string(),
            setting: format!("{}.{key}", tls.setting),
            cause: e.to_string(),
        })
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read(path, "cafile")?),
        None => None,
    };
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert, "local_cert")?,
            client_key: read(key, "local_pk")?,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The TLS files in use, for a message about one of them that redis-rs could not parse.
fn tls_files(tls: &RedisTls) -> String {
    let files: Vec<String> = [&tls.ca_file, &tls.client_cert, &tls.client_key]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    files.join(", ")
}

fn connect_error(
    endpoint: &str,
    tls_setting: Option<&str>,
    origin: &TargetOrigin,
    e: &::redis::RedisError,
) -> RedisError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let hint = if matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("invalid password")
    {
        "; check REDIS_PASSWORD (and REDIS_USERNAME for an ACL user)".to_string()
    } else if text.contains("DB index is out of range") || text.contains("invalid DB index") {
        "; check REDIS_CACHE_DB".to_string()
    } else if let Some(setting) = tls_setting
        && (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake"))
    {
        format!(
            "; check {setting}: `cafile` must hold the CA that signed the server's certificate, the host must be a name in it, and `local_cert` must be a client certificate the server trusts"
        )
    } else if e.is_io_error() || e.is_connection_refusal() {
        format!("; {}", origin.unreachable_hint())
    } else {
        String::new()
    };
    RedisError::Connect {
        endpoint: endpoint.to_string(),
        cause: text,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::{expired_channel, publishes_expired};

    #[test]
    fn the_channel_names_the_database() {
        assert_eq!(expired_channel(0), "__keyevent@0__:expired");
        assert_eq!(expired_channel(15), "__keyevent@15__:expired");
    }

    #[test]
    fn expired_events_need_e_and_x_or_a() {
        for yes in ["Ex", "xE", "AE", "KEA", "Egx$"] {
            assert!(publishes_expired(yes), "{yes}");
        }
        for no in ["", "Kx", "E", "Eg", "KA"] {
            assert!(!publishes_expired(no), "{no}");
        }
    }
}
