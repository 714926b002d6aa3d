//! A command connection to the cache Redis that sends each key's command to the server holding
//! the key: the master of its slot on a cluster, the one master elsewhere.
//!
//! A cluster answers a command for another master's key with `MOVED` and fails a pipeline whose
//! keys span masters, so the per-key commands (`PTTL`, `EXISTS`) are split into one pipeline
//! per master. The slot map is the one [`RedisServers`] keeps current; when a master answers
//! `MOVED` or `ASK` anyway (a failover or a resharding the map has not caught up with), the map
//! is refreshed and those keys are sent one by one, following the redirection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{FromRedisValue, RedisResult};

use super::commands::is_redirect;
use super::servers::{RedisServers, Topology};
use super::{RedisError, RedisTarget};

/// Commands routed to the server holding each key; connections are opened on first use and
/// follow the servers' topology as it changes.
pub(crate) struct RoutedConnection {
    servers: RedisServers,
    generation: u64,
    topology: Arc<Topology>,
    /// Open connections, by server endpoint.
    conns: HashMap<String, MultiplexedConnection>,
    /// Servers whose last command failed, left alone until then: a dead master costs its own
    /// keys an answer, not every batch a timeout.
    resting: HashMap<String, Instant>,
}

/// How long a server whose command failed is left alone.
const REST: Duration = Duration::from_secs(1);

/// The answers to one command per key, where the servers holding them answered: a dead master
/// leaves its own keys without an answer (`None`), not the others.
pub(crate) struct Partial<T> {
    /// One per key, in the keys' order.
    pub(crate) answers: Vec<Option<T>>,
    /// What went wrong on each server that did not answer.
    pub(crate) failures: Vec<RedisError>,
    /// The topology has one master: its failure is the whole Redis's.
    single: bool,
}

impl<T> Partial<T> {
    /// Every answer, or the first failure.
    pub(crate) fn complete(self) -> Result<Vec<T>, RedisError> {
        if let Some(first) = self.failures.into_iter().next() {
            return Err(first);
        }
        self.answers
            .into_iter()
            .collect::<Option<Vec<T>>>()
            .ok_or_else(|| RedisError::Reply {
                endpoint: String::new(),
                command: "per key",
                reason: "a key got no answer".into(),
            })
    }

    /// The answers and the failures; the failure itself when the one server of a topology
    /// without a cluster failed (a cluster's master that fails leaves its keys unanswered).
    pub(crate) fn answered(self) -> Result<(Vec<Option<T>>, Vec<RedisError>), RedisError> {
        if self.single && !self.answers.is_empty() && self.answers.iter().all(Option::is_none) {
            let mut failures = self.failures.into_iter();
            return Err(failures.next().unwrap_or_else(|| RedisError::Reply {
                endpoint: String::new(),
                command: "per key",
                reason: "no key got an answer".into(),
            }));
        }
        Ok((self.answers, self.failures))
    }
}

// Here rather than in `servers.rs`: connections follow the servers' topology, and the topology
// knows nothing of connections, so the two files use each other in one direction only.
impl RedisServers {
    /// A command connection that sends each key's command to the server holding it.
    pub(crate) async fn connect(&self) -> Result<RoutedConnection, RedisError> {
        RoutedConnection::open(self.clone()).await
    }
}

impl RoutedConnection {
    /// Opens a connection on the current topology. Outside a cluster the one master is
    /// connected at once (so a wrong password fails here); when it does not answer, the
    /// topology is asked again once (a Sentinel failover may have moved it).
    async fn open(servers: RedisServers) -> Result<Self, RedisError> {
        let (generation, topology) = servers.topology().await?;
        let mut routed = Self {
            servers,
            generation,
            topology,
            conns: HashMap::new(),
            resting: HashMap::new(),
        };
        if routed.servers.kind() == "cluster" {
            return Ok(routed);
        }
        let Some(master) = routed.topology.masters().first().cloned() else {
            return Ok(routed);
        };
        if let Err(e) = routed.conn(&master).await {
            if routed.servers.kind() != "sentinel" {
                return Err(e);
            }
            routed.servers.refresh().await?;
            routed.follow();
            if let Some(master) = routed.topology.masters().first().cloned() {
                routed.conn(&master).await?;
            }
        }
        Ok(routed)
    }

    /// One pipelined `PTTL` per key, in order: milliseconds left, -1 for no expiry, -2 for no
    /// such key. On a key past its TTL, Redis deletes it and publishes `expired` at once.
    /// `caller` names who asks, for the error. A key whose server fails has no answer.
    pub(crate) async fn pttl(
        &mut self,
        keys: impl IntoIterator<Item = String>,
        caller: &str,
    ) -> Result<Partial<i64>, RedisError> {
        self.per_key("PTTL", keys.into_iter().collect(), caller)
            .await
    }

    /// One pipelined `EXISTS` per key, in order. Like `PTTL`, it deletes a key past its TTL and
    /// publishes `expired`. `caller` names who asks, for the error. A key whose server fails
    /// has no answer.
    pub(crate) async fn exists(
        &mut self,
        keys: impl IntoIterator<Item = String>,
        caller: &str,
    ) -> Result<Partial<bool>, RedisError> {
        self.per_key("EXISTS", keys.into_iter().collect(), caller)
            .await
    }

    /// `SETEX key ttl value`, as Laravel's `Cache::put()` sends it, on the key's server.
    pub(crate) async fn setex(
        &mut self,
        key: &str,
        ttl_seconds: u64,
        value: &[u8],
    ) -> Result<(), RedisError> {
        let mut command = ::redis::cmd("SETEX");
        command.arg(key).arg(ttl_seconds).arg(value);
        self.routed(key, &command, "SETEX").await
    }

    /// Adopts the servers' topology when it changed since this connection last looked, and
    /// closes the connections to servers no longer in it.
    fn follow(&mut self) {
        let Some((generation, topology)) = self.servers.current() else {
            return;
        };
        if generation == self.generation {
            return;
        }
        let keep: Vec<&str> = topology
            .masters()
            .iter()
            .map(RedisTarget::endpoint)
            .collect();
        self.conns
            .retain(|endpoint, _| keep.contains(&endpoint.as_str()));
        self.generation = generation;
        self.topology = topology;
    }

    /// The connection to `target`, opened if needed.
    async fn conn(
        &mut self,
        target: &RedisTarget,
    ) -> Result<&mut MultiplexedConnection, RedisError> {
        let endpoint = target.endpoint().to_string();
        if !self.conns.contains_key(&endpoint) {
            let conn = target.connect().await?;
            self.conns.insert(endpoint.clone(), conn);
        }
        self.conns
            .get_mut(&endpoint)
            .ok_or_else(|| RedisError::Reply {
                endpoint: endpoint.clone(),
                command: "connect",
                reason: "the connection was not kept".into(),
            })
    }

    /// The server holding `key`; while no master serves its slot, any master (whose answer,
    /// `CLUSTERDOWN` or a redirection, says what is going on).
    fn owner(&self, key: &str) -> Result<RedisTarget, RedisError> {
        self.topology
            .owner(key)
            .or_else(|| self.topology.masters().first())
            .cloned()
            .ok_or_else(|| RedisError::NoServer {
                what: "a Redis master to send commands to".into(),
                tried: "the cluster lists no master".into(),
                hint: "check the cluster's state (CLUSTER INFO)",
            })
    }

    /// `command key` for each of `keys`, one pipeline per server, answers in the keys' order.
    /// A server that fails (or failed less than [`REST`] ago) leaves its keys without an answer
    /// and the others are asked all the same; an `Err` only for a topology without a master.
    async fn per_key<T: FromRedisValue>(
        &mut self,
        command: &'static str,
        keys: Vec<String>,
        caller: &str,
    ) -> Result<Partial<T>, RedisError> {
        self.follow();
        let action = || format!("{command} ({caller})");
        let mut groups: BTreeMap<String, (RedisTarget, Vec<usize>)> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let target = self.owner(key)?;
            groups
                .entry(target.endpoint().to_string())
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(i);
        }
        let mut answers: Vec<Option<T>> = keys.iter().map(|_| None).collect();
        let mut failures = Vec::new();
        let mut redirected = Vec::new();
        let now = Instant::now();
        self.resting.retain(|_, until| *until > now);
        for (target, indexes) in groups.into_values() {
            if self.resting.contains_key(target.endpoint()) {
                failures.push(RedisError::Reply {
                    endpoint: target.endpoint().to_string(),
                    command,
                    reason: "it failed moments ago; asked again within a second".into(),
                });
                continue;
            }
            let batch: Vec<&str> = indexes.iter().map(|i| keys[*i].as_str()).collect();
            let result = match self.conn(&target).await {
                Ok(conn) => RedisTarget::per_key::<T>(conn, command, &batch)
                    .await
                    .map_err(|e| (is_redirect(&e), Some(e))),
                Err(e) => {
                    failures.push(e);
                    Err((false, None))
                }
            };
            match result {
                Ok(values) if values.len() == indexes.len() => {
                    for (i, value) in indexes.into_iter().zip(values) {
                        answers[i] = Some(value);
                    }
                }
                Ok(_) => failures.push(RedisError::Reply {
                    endpoint: target.endpoint().to_string(),
                    command,
                    reason: "fewer answers than keys".into(),
                }),
                Err((true, _)) => redirected.extend(indexes),
                Err((false, error)) => {
                    if let Some(e) = error {
                        failures.push(self.failed(&target, &action(), e));
                    }
                    self.resting
                        .insert(target.endpoint().to_string(), Instant::now() + REST);
                }
            }
        }
        if !redirected.is_empty() {
            // The slot map is stale: learn the new one, then each key on its own.
            if let Err(e) = self.servers.refresh().await {
                tracing::debug!(error = %e, "cluster topology refresh after a redirection failed");
            }
            self.follow();
            for i in redirected {
                let key = keys[i].as_str();
                let mut single = ::redis::cmd(command);
                single.arg(key);
                match self.routed(key, &single, &action()).await {
                    Ok(value) => answers[i] = Some(value),
                    Err(e) => failures.push(e),
                }
            }
        }
        Ok(Partial {
            answers,
            failures,
            single: self.servers.kind() != "cluster",
        })
    }

    /// `command` (about `key`) on the key's server, following one `MOVED` or `ASK`.
    async fn routed<T: FromRedisValue>(
        &mut self,
        key: &str,
        command: &::redis::Cmd,
        action: &str,
    ) -> Result<T, RedisError> {
        self.follow();
        let target = self.owner(key)?;
        let conn = self.conn(&target).await?;
        let error = match command.query_async::<T>(conn).await {
            Ok(value) => return Ok(value),
            Err(e) if is_redirect(&e) => e,
            Err(e) => return Err(self.failed(&target, action, e)),
        };
        let Some((addr, _slot)) = error.redirect_node() else {
            return Err(target.command_error(action, error));
        };
        let (host, port) = match addr.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok()),
            None => (addr, None),
        };
        let Some(port) = port else {
            return Err(target.command_error(action, error));
        };
        let host = if host.is_empty() || host == "?" {
            target.host().to_string()
        } else {
            host.to_string()
        };
        let ask = error.code() == Some("ASK");
        let next = self.servers.node(&host, port)?;
        let conn = self.conn(&next).await?;
        let reply: RedisResult<T> = if ask {
            // The key is being migrated there: ASKING lets the next command in, once.
            let mut pipe = ::redis::pipe();
            pipe.cmd("ASKING").ignore().add_command(command.clone());
            pipe.query_async::<(T,)>(conn).await.map(|(value,)| value)
        } else {
            command.query_async(conn).await
        };
        reply.map_err(|e| self.failed(&next, action, e))
    }

    /// A command's failure on `target`; a connection that failed is dropped, so that the next
    /// command opens a new one.
    fn failed(&mut self, target: &RedisTarget, action: &str, e: ::redis::RedisError) -> RedisError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.conns.remove(target.endpoint());
        }
        target.command_error(action, e)
    }
}
