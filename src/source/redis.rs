//! Connections to the app's cache Redis, built from the Laravel settings.
//!
//! Laravel's phpredis connection applies the key prefix itself; we do not, because keyspace
//! events carry the full key and `schedule` must write the full key. So connections here are
//! plain: the right server, password and database, nothing else.

use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo};

use crate::config::{RedisEndpoint, RedisSettings};
use crate::error::Error;

/// How long a connection attempt may take before we call the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// A connection for commands (SETEX, CONFIG), on the cache database.
    pub async fn connect(&self) -> Result<MultiplexedConnection, Error> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
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

    /// Makes sure Redis publishes `expired` keyevents (`notify-keyspace-events` holds `E` and `x`
    /// or `A`). Laravel never turns them on, and without them the worker would wait forever.
    /// With `configure`, missing flags are added (keeping the others). Where `CONFIG` is not
    /// allowed (managed services rename or forbid it) we cannot tell, so we warn and go on.
    pub async fn ensure_notifications(
        &self,
        conn: &mut MultiplexedConnection,
        configure: bool,
    ) -> Result<(), Error> {
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(conn)
            .await;
        let current = match reply {
            Ok(pair) => pair.into_iter().nth(1).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Io => {
                return Err(self.command_error("CONFIG GET notify-keyspace-events", e));
            }
            Err(e) => {
                tracing::warn!(redis = %self.endpoint, error = %e,
                    "cannot read notify-keyspace-events (CONFIG is not allowed here); make sure it contains `Ex`, or no order will be cancelled");
                return Ok(());
            }
        };
        let has_expired = current.contains('E') && (current.contains('x') || current.contains('A'));
        if has_expired {
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

    pub fn command_error(&self, action: &str, source: redis::RedisError) -> Error {
        Error::Redis {
            endpoint: self.endpoint.clone(),
            action: action.to_string(),
            source,
        }
    }
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
