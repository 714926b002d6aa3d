//! Every command the pipeline sends to Redis, as a named function on [`RedisTarget`].
//!
//! Each one says in its error which command failed and for whom, so a log line is enough to
//! tell a sweep's `EXISTS` from the deadline watcher's `PTTL`.

use ::redis::ErrorKind;
use ::redis::aio::{MultiplexedConnection, PubSub};

use super::{RedisError, RedisTarget};

impl RedisTarget {
    /// The server's `notify-keyspace-events`, or `None` where `CONFIG` is not allowed (managed
    /// services rename or forbid it), so that we cannot tell.
    pub(crate) async fn notification_flags(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<String>, RedisError> {
        let reply: ::redis::RedisResult<Vec<String>> = ::redis::cmd("CONFIG")
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

    /// Sets `notify-keyspace-events` to `flags` (`--configure-redis`).
    pub(super) async fn set_notification_flags(
        &self,
        conn: &mut MultiplexedConnection,
        flags: &str,
    ) -> Result<(), RedisError> {
        ::redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(flags)
            .query_async::<()>(conn)
            .await
            .map_err(|e| self.command_error("CONFIG SET notify-keyspace-events", e))
    }

    /// The server's version, from `INFO server`.
    pub(crate) async fn version(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<String, RedisError> {
        let info: String = ::redis::cmd("INFO")
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

    /// Subscribes `pubsub` to this database's `expired` channel.
    pub(crate) async fn subscribe_expired(&self, pubsub: &mut PubSub) -> Result<(), RedisError> {
        pubsub
            .subscribe(&self.channel)
            .await
            .map_err(|e| self.command_error(&format!("SUBSCRIBE {}", self.channel), e))
    }

    /// `SETEX key ttl value`, as Laravel's `Cache::put()` sends it.
    pub(crate) async fn setex(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        ttl_seconds: u64,
        value: &[u8],
    ) -> Result<(), RedisError> {
        ::redis::cmd("SETEX")
            .arg(key)
            .arg(ttl_seconds)
            .arg(value)
            .query_async::<()>(conn)
            .await
            .map_err(|e| self.command_error("SETEX", e))
    }

    /// One pipelined `PTTL` per key, in order: milliseconds left, -1 for no expiry, -2 for no
    /// such key. On a key past its TTL, Redis deletes it and publishes `expired` at once.
    /// `caller` names who asks, for the error.
    pub(crate) async fn pttl(
        &self,
        conn: &mut MultiplexedConnection,
        keys: impl IntoIterator<Item = String>,
        caller: &str,
    ) -> Result<Vec<i64>, RedisError> {
        self.per_key(conn, "PTTL", keys, caller).await
    }

    /// One pipelined `EXISTS` per key, in order. Like `PTTL`, it deletes a key past its TTL and
    /// publishes `expired`. `caller` names who asks, for the error.
    pub(crate) async fn exists(
        &self,
        conn: &mut MultiplexedConnection,
        keys: impl IntoIterator<Item = String>,
        caller: &str,
    ) -> Result<Vec<bool>, RedisError> {
        self.per_key(conn, "EXISTS", keys, caller).await
    }

    /// One pipelined `command key` per key, read as a list of `T`.
    async fn per_key<T: ::redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        command: &str,
        keys: impl IntoIterator<Item = String>,
        caller: &str,
    ) -> Result<Vec<T>, RedisError> {
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.cmd(command).arg(key);
        }
        pipe.query_async(conn)
            .await
            .map_err(|e| self.command_error(&format!("{command} ({caller})"), e))
    }

    /// Pushes each payload as Laravel's `RedisQueue::pushRaw` does: `EVAL` of its push script
    /// (`rpush` the payload on `list`, `rpush` 1 on `list:notify`), so that each job and its
    /// notification land together; one pipeline for all of them.
    pub(crate) async fn push_jobs(
        &self,
        conn: &mut MultiplexedConnection,
        list: &str,
        payloads: &[&str],
    ) -> Result<(), RedisError> {
        /// `Illuminate\Queue\LuaScripts::push()`, as Laravel 8-13 send it.
        const PUSH: &str = "-- Push the job onto the queue...\nredis.call('rpush', KEYS[1], ARGV[1])\n-- Push a notification onto the \"notify\" queue...\nredis.call('rpush', KEYS[2], 1)";
        let notify = format!("{list}:notify");
        let mut pipe = ::redis::pipe();
        for payload in payloads {
            pipe.cmd("EVAL")
                .arg(PUSH)
                .arg(2)
                .arg(list)
                .arg(&notify)
                .arg(*payload)
                .ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| self.command_error(&format!("EVAL push ({list})"), e))
    }
}
