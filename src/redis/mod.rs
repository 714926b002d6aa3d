//! Connections to the app's cache Redis, built from the Laravel settings.
//!
//! Laravel's phpredis connection applies the key prefix itself; we do not, because keyspace
//! events carry the full key and `schedule` must write the full key. So connections here are
//! plain: the right server, password and database, nothing else.

use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo,
};

use crate::config::{RedisEndpoint, RedisSettings};
use crate::error::Error;

/// How long a connection attempt may take before we call the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's cache Redis: where to connect and how to explain failures.
#[derive(Clone)]
pub struct RedisTarget {
    client: Client,
    endpoint: String,
    database: i64,
}

impl RedisTarget {
    pub fn new(settings: &RedisSettings) -> Result<Self, Error> {
        let endpoint = settings.endpoint.to_string();
        let addr = match &settings.endpoint {
            RedisEndpoint::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
            RedisEndpoint::Tls { host, port } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            RedisEndpoint::Unix { path } => ConnectionAddr::Unix(path.clone()),
        };
        let mut redis = RedisConnectionInfo::default().set_db(settings.database);
        if let Some(username) = &settings.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis = redis.set_password(password);
        }
        let client = addr
            .into_connection_info()
            .map(|info| info.set_redis_settings(redis))
            .and_then(Client::open)
            .map_err(|e| connect_error(&endpoint, &e))?;
        Ok(Self {
            client,
            endpoint,
            database: settings.database,
        })
    }

    /// `host:port` (or `tls://`, `unix:`), for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The channel Redis publishes this database's expirations on. Not prefixed: keyspace events
    /// are published by the server, not by the app (the PHP command subscribes to a prefixed
    /// channel through phpredis and so never hears anything on Laravel's defaults).
    pub fn expired_channel(&self) -> String {
        format!("__keyevent@{}__:expired", self.database)
    }

    /// A connection for commands (SETEX, CONFIG, PTTL...), on the cache database. Every reply
    /// must come within `RESPONSE_TIMEOUT` (10 s): a silently dead connection fails instead of
    /// hanging its user forever.
    pub async fn connect(&self) -> Result<MultiplexedConnection, Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(connect_error(&self.endpoint, &e)),
            Err(_) => Err(timeout_error(&self.endpoint)),
        }
    }

    /// A dedicated pub/sub connection.
    pub async fn pubsub(&self) -> Result<PubSub, Error> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(connect_error(&self.endpoint, &e)),
            Err(_) => Err(timeout_error(&self.endpoint)),
        }
    }

    /// The server's `notify-keyspace-events`, or `None` where `CONFIG` is not allowed (managed
    /// services rename or forbid it), so that we cannot tell.
    pub async fn notification_flags(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<String>, Error> {
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(conn)
            .await;
        match reply {
            Ok(pair) => Ok(Some(pair.into_iter().nth(1).unwrap_or_default())),
            Err(e) if e.kind() == ErrorKind::Io => {
                Err(self.command_error("CONFIG GET notify-keyspace-events", e))
            }
            Err(e) => {
                tracing::debug!(error = %e, "CONFIG GET is not allowed");
                Ok(None)
            }
        }
    }

    /// Makes sure Redis publishes `expired` keyevents (`notify-keyspace-events` holds `E` and `x`
    /// or `A`). Laravel never turns them on, and without them the worker would wait forever.
    /// With `configure`, missing flags are added (keeping the others). Where `CONFIG` is not
    /// allowed we cannot tell, so we warn and go on: the deadline watcher and the sweep still
    /// cancel orders, only later.
    pub async fn ensure_notifications(
        &self,
        conn: &mut MultiplexedConnection,
        configure: bool,
    ) -> Result<(), Error> {
        let Some(current) = self.notification_flags(conn).await? else {
            tracing::warn!(redis = %self.endpoint,
                "cannot read notify-keyspace-events (CONFIG is not allowed here); make sure it contains `Ex`: until then only the deadline watcher and sweeps cancel orders");
            return Ok(());
        };
        if publishes_expired(&current) {
            return Ok(());
        }
        if !configure {
            return Err(Error::NotificationsOff {
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
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(conn)
            .await
            .map_err(|e| self.command_error("CONFIG SET notify-keyspace-events", e))?;
        tracing::info!(redis = %self.endpoint, from = %current, to = %wanted,
            "turned on keyspace notifications (--configure-redis); add `notify-keyspace-events {wanted}` to redis.conf so a restart keeps it");
        Ok(())
    }

    /// The server's version, from `INFO server`.
    pub async fn version(&self, conn: &mut MultiplexedConnection) -> Result<String, Error> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(conn)
            .await
            .map_err(|e| self.command_error("INFO server", e))?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string())
    }

    pub fn command_error(&self, action: &str, source: redis::RedisError) -> Error {
        Error::Redis {
            endpoint: self.endpoint.clone(),
            action: action.to_string(),
            source,
        }
    }
}

/// Whether `notify-keyspace-events` flags make Redis publish `__keyevent@<db>__:expired`:
/// `E` (keyevent channels) and `x` (expired) or `A` (all, which includes `x`).
pub fn publishes_expired(flags: &str) -> bool {
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

fn timeout_error(endpoint: &str) -> Error {
    Error::RedisConnect {
        endpoint: endpoint.to_string(),
        cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        hint: "; check REDIS_HOST and REDIS_PORT and that a firewall lets the connection through",
    }
}

fn connect_error(endpoint: &str, e: &redis::RedisError) -> Error {
    let text = e.to_string();
    let hint = if matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("invalid password")
    {
        "; check REDIS_PASSWORD (and REDIS_USERNAME for an ACL user)"
    } else if text.contains("DB index is out of range") || text.contains("invalid DB index") {
        "; check REDIS_CACHE_DB"
    } else if e.is_io_error() || e.is_connection_refusal() {
        "; is Redis running there? check REDIS_HOST and REDIS_PORT"
    } else {
        ""
    };
    Error::RedisConnect {
        endpoint: endpoint.to_string(),
        cause: text,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::publishes_expired;

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
