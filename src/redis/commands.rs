//! The commands the pipeline sends to one server, as named functions on [`RedisTarget`]; the
//! per-key commands routed to each key's server are in `routed`, the topology's in `cluster`
//! and `sentinel`.
//!
//! Each one says in its error which command failed and for whom, so a log line is enough to
//! tell a sweep's `EXISTS` from the deadline watcher's `PTTL`.

use ::redis::ErrorKind;
use ::redis::aio::{MultiplexedConnection, PubSub};

use super::server::RedisServerInfo;
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

    /// How many connections are subscribed to `channel` on this server now (`PUBSUB NUMSUB`),
    /// or `None` where the command is not allowed (an ACL user without `+pubsub|numsub`, a
    /// proxy that does not pass it). It counts `SUBSCRIBE`s of the exact channel, not pattern
    /// subscriptions: the worker subscribes with `SUBSCRIBE` ([`Self::subscribe_expired`]). On a
    /// cluster it counts this node's own subscribers, which is what the worker keeps per master.
    pub(crate) async fn subscribers(
        &self,
        conn: &mut MultiplexedConnection,
        channel: &str,
    ) -> Result<Option<u64>, RedisError> {
        let reply: ::redis::RedisResult<(String, u64)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(conn)
            .await;
        match reply {
            Ok((_, count)) => Ok(Some(count)),
            Err(e) if e.kind() == ErrorKind::Io => Err(self.command_error("PUBSUB NUMSUB", e)),
            Err(e) => {
                tracing::debug!(error = %e, "PUBSUB NUMSUB is not allowed");
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

    /// Which server this is, Redis or Valkey, and its version, from `INFO server`.
    pub(crate) async fn server_info(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<RedisServerInfo, RedisError> {
        let info: String = ::redis::cmd("INFO")
            .arg("server")
            .query_async(conn)
            .await
            .map_err(|e| self.command_error("INFO server", e))?;
        Ok(RedisServerInfo::parse(&info))
    }

    /// Subscribes `pubsub` to this database's `expired` channel.
    pub(crate) async fn subscribe_expired(&self, pubsub: &mut PubSub) -> Result<(), RedisError> {
        pubsub
            .subscribe(&self.channel)
            .await
            .map_err(|e| self.command_error(&format!("SUBSCRIBE {}", self.channel), e))
    }

    /// The `ACL SETUSER` rules that let a user do everything the worker and `schedule` do, and
    /// nothing else: the order keys (`key_prefix*`) and this database's `expired` channel;
    /// `SELECT` the database, `PING` and `(UN)SUBSCRIBE` the subscription, `PTTL` and `EXISTS`
    /// (deadline watcher, sweep), `SETEX` (`schedule`), `INFO` (the server's version) and
    /// `CONFIG GET` (reading `notify-keyspace-events`; without it the worker warns and goes on);
    /// on a cluster also `CLUSTER SHARDS` and `SLOTS` (its topology), under Sentinel `ROLE`
    /// (checking that the named master is one).
    pub(crate) fn acl_rules(&self, key_prefix: &str) -> String {
        format!(
            "on resetkeys ~{key_prefix}* resetchannels &{} -@all +select +ping +subscribe +unsubscribe +pttl +exists +setex +info +config|get{}",
            self.channel, self.acl_extra
        )
    }

    /// Sends `PTTL` and `EXISTS` for a key under the order keys' prefix that is never an
    /// order (so nothing is read or changed), to stop the start with the ACL rules to grant
    /// when the user may not: otherwise the deadline watcher and the sweep would fail later,
    /// again and again.
    pub(crate) async fn check_permissions(
        &self,
        conn: &mut MultiplexedConnection,
        key_prefix: &str,
    ) -> Result<(), RedisError> {
        let probe = format!("{key_prefix}permission-check");
        for command in ["PTTL", "EXISTS"] {
            let reply: ::redis::RedisResult<i64> =
                ::redis::cmd(command).arg(&probe).query_async(conn).await;
            match reply {
                // A cluster node checks permissions before redirecting: allowed.
                Ok(_) => {}
                Err(e) if is_redirect(&e) => {}
                Err(e) if is_no_perm(&e) => {
                    return Err(RedisError::Permission {
                        endpoint: self.endpoint().to_string(),
                        action: format!("{command} on the order keys"),
                        cause: e.to_string(),
                        rules: self.acl_rules(key_prefix),
                    });
                }
                Err(e) => return Err(self.command_error(command, e)),
            }
        }
        Ok(())
    }

    /// One pipelined `command key` per key on this server, read as a list of `T`; the raw
    /// error, so that a cluster's redirections can be told apart.
    pub(super) async fn per_key<T: ::redis::FromRedisValue>(
        conn: &mut MultiplexedConnection,
        command: &str,
        keys: &[&str],
    ) -> ::redis::RedisResult<Vec<T>> {
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.cmd(command).arg(*key);
        }
        pipe.query_async(conn).await
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

/// Whether a cluster node answered that another node holds the key (`MOVED`, `ASK`).
pub(crate) fn is_redirect(e: &::redis::RedisError) -> bool {
    e.redirect_node().is_some()
}

/// Whether Redis refused a command for the user's ACL permissions (`NOPERM`).
pub(crate) fn is_no_perm(e: &::redis::RedisError) -> bool {
    e.code() == Some("NOPERM")
}
