//! Is the worker alive, and is it ready? What `/healthz`, `/readyz` and systemd's watchdog ask.
//!
//! * **Liveness** is about the worker's own loops (each subscription, the dispatcher and every
//!   write in flight, the deadline watcher, the sweep loop, the key-job writer, the outbox
//!   drainer). Each holds a [`Heartbeat`] and beats
//!   it whenever it moves on: an event, a tick, a retry, and every [`Health::beat_every`] while it
//!   waits for something that is itself watched or that may never come (an event, a free
//!   writer, room in the queue, the next sweep). It does not beat while it waits for a server's
//!   answer (a PING, a query, a transaction), and every such wait has its own timeout. So a loop
//!   whose heartbeat is older than [`Health::stall_after`] is stuck on a server for longer than
//!   that: a subscription to a frozen Redis, a write blocked on a row lock. A loop that ends
//!   while the worker is not stopping (a panic) is dead. Either way the worker is not alive: the
//!   watchdog pings stop and `/healthz` answers 503.
//! * **Readiness** is about the outside: every Redis node the worker must hear is subscribed
//!   (the set can change while it runs: each source registers its node with a [`NodeWatch`]
//!   and drops it when it stops) and MySQL answers.
//!
//! Subscriptions are kept by the node's endpoint, so a source per node (a cluster's masters)
//! needs nothing more; `order_expire_subscription_up{node}` shows each.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio_util::sync::CancellationToken;

/// Without systemd's watchdog, how long a loop may wait on a server before the worker counts
/// as stuck: above the longest bounded wait (a write attempt, 40 s).
pub(crate) const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

/// How the heartbeats are judged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthOptions {
    /// A loop whose last beat is older than this is stuck (systemd's `WatchdogSec` when set).
    pub stall_after: Duration,
    /// The app's database, as readiness names it: `MySQL` or `PostgreSQL`.
    pub database: &'static str,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            stall_after: DEFAULT_STALL_AFTER,
            database: "MySQL",
        }
    }
}

/// One loop's last beat, in milliseconds since [`Health`] was made.
#[derive(Debug)]
struct Beat {
    name: String,
    last_ms: AtomicU64,
}

/// A subscription the worker must hold.
#[derive(Debug)]
struct Node {
    id: u64,
    subscribed: bool,
    since: Instant,
}

/// The worker's liveness and readiness.
pub(crate) struct Health {
    stall_after: Duration,
    beat_every: Duration,
    base: Instant,
    beats: Mutex<Vec<Weak<Beat>>>,
    /// Length of `beats` at which dropped heartbeats are pruned.
    prune_at: AtomicU64,
    /// Loops that ended while the worker was not stopping.
    dead: Mutex<Vec<String>>,
    nodes: Mutex<BTreeMap<String, Node>>,
    node_ids: AtomicU64,
    /// `MySQL` or `PostgreSQL`, for the readiness reasons.
    database: &'static str,
    /// The last database check: `None` before the first.
    database_check: Mutex<Option<Result<(), String>>>,
    /// Why the cancel writes are failing, while they are (from the first failure to the next
    /// commit that writes an order): the database may answer a PING and still not take a write.
    writes: Mutex<Option<String>>,
    /// Set once the worker is subscribed and has checked MySQL.
    started: AtomicBool,
    /// The worker's stop signal: loops that end after it are not dead.
    stop: OnceLock<CancellationToken>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("stall_after", &self.stall_after)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub(crate) fn new(options: HealthOptions) -> Self {
        let stall_after = options.stall_after.max(Duration::from_millis(100));
        Self {
            stall_after,
            beat_every: (stall_after / 4).clamp(Duration::from_millis(25), Duration::from_secs(5)),
            base: Instant::now(),
            beats: Mutex::new(Vec::new()),
            prune_at: AtomicU64::new(64),
            dead: Mutex::new(Vec::new()),
            nodes: Mutex::new(BTreeMap::new()),
            node_ids: AtomicU64::new(0),
            database: options.database,
            database_check: Mutex::new(None),
            writes: Mutex::new(None),
            started: AtomicBool::new(false),
            stop: OnceLock::new(),
        }
    }

    /// How long a loop may go without a beat before it counts as stuck.
    pub(crate) fn stall_after(&self) -> Duration {
        self.stall_after
    }

    /// How often a waiting loop beats: a quarter of [`Self::stall_after`], at most 5 s.
    pub(crate) fn beat_every(&self) -> Duration {
        self.beat_every
    }

    /// A heartbeat for a loop that runs until the worker stops: ending earlier means it died.
    pub(crate) fn heartbeat(self: &Arc<Self>, name: impl Into<String>) -> Heartbeat {
        self.register(name.into(), true)
    }

    /// A heartbeat for a task that ends by itself (one batch's write).
    pub(crate) fn task_heartbeat(self: &Arc<Self>, name: impl Into<String>) -> Heartbeat {
        self.register(name.into(), false)
    }

    fn register(self: &Arc<Self>, name: String, runs_until_stop: bool) -> Heartbeat {
        let beat = Arc::new(Beat {
            name,
            last_ms: AtomicU64::new(self.now_ms()),
        });
        let mut beats = lock(&self.beats);
        let len = beats.len() as u64;
        if len >= self.prune_at.load(Ordering::Relaxed) {
            beats.retain(|b| b.strong_count() > 0);
            let live = beats.len() as u64;
            self.prune_at.store((live * 2).max(64), Ordering::Relaxed);
        }
        beats.push(Arc::downgrade(&beat));
        Heartbeat {
            beat,
            health: Arc::clone(self),
            runs_until_stop,
        }
    }

    /// Ties the health to the worker's stop signal: from then on, loops may end.
    pub(crate) fn bind_stop(&self, stop: CancellationToken) {
        let _ = self.stop.set(stop);
    }

    /// Whether the worker is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.get().is_some_and(CancellationToken::is_cancelled)
    }

    /// The worker is subscribed and has checked MySQL: readiness now depends on both.
    pub(crate) fn started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Records the result of a database check (`Err`: why it failed, one line).
    pub(crate) fn database_checked(&self, result: Result<(), String>) {
        *lock(&self.database_check) = Some(result);
    }

    /// `MySQL` or `PostgreSQL`: the app's database, for messages.
    pub(crate) fn database(&self) -> &'static str {
        self.database
    }

    /// The cancel writes fail (`Some`: why, one line) or work again (`None`).
    pub(crate) fn writes_failing(&self, why: Option<String>) {
        *lock(&self.writes) = why;
    }

    /// `endpoint` is a Redis node whose events the worker must hear, until the watch is dropped.
    pub(crate) fn expect_node(self: &Arc<Self>, endpoint: &str) -> NodeWatch {
        let id = self.node_ids.fetch_add(1, Ordering::Relaxed);
        lock(&self.nodes).insert(
            endpoint.to_string(),
            Node {
                id,
                subscribed: false,
                since: Instant::now(),
            },
        );
        NodeWatch {
            health: Arc::clone(self),
            endpoint: endpoint.to_string(),
            id,
        }
    }

    /// Nodes subscribed, and nodes expected.
    pub(crate) fn subscriptions(&self) -> (usize, usize) {
        let nodes = lock(&self.nodes);
        let up = nodes.values().filter(|n| n.subscribed).count();
        (up, nodes.len())
    }

    /// The loops that are stuck or dead, each as `name (why)`.
    pub(crate) fn stalled(&self) -> Vec<String> {
        let now = self.now_ms();
        let limit = u64::try_from(self.stall_after.as_millis()).unwrap_or(u64::MAX);
        let mut found: Vec<String> = lock(&self.dead)
            .iter()
            .map(|name| format!("{name} (ended unexpectedly)"))
            .collect();
        for beat in lock(&self.beats).iter().filter_map(Weak::upgrade) {
            let age = now.saturating_sub(beat.last_ms.load(Ordering::Relaxed));
            if age > limit {
                found.push(format!(
                    "{} (no progress for {:.1} s)",
                    beat.name,
                    age as f64 / 1000.0
                ));
            }
        }
        found
    }

    /// `Ok` while every loop moves; else which do not, in one line.
    pub(crate) fn liveness(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Acquire) && !self.is_stopping() {
            return Err("starting: not subscribed yet".into());
        }
        let stalled = self.stalled();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(format!("stuck: {}", stalled.join(", ")))
        }
    }

    /// `Ok` while every expected node is subscribed and MySQL answers; else why not, in one line.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if self.is_stopping() {
            return Err("stopping".into());
        }
        if !self.started.load(Ordering::Acquire) {
            return Err("starting: not subscribed yet".into());
        }
        {
            let nodes = lock(&self.nodes);
            if nodes.is_empty() {
                return Err("no Redis node to listen to".into());
            }
            let down: Vec<String> = nodes
                .iter()
                .filter(|(_, n)| !n.subscribed)
                .map(|(endpoint, n)| format!("{endpoint} (for {} s)", n.since.elapsed().as_secs()))
                .collect();
            if !down.is_empty() {
                return Err(format!(
                    "not subscribed to Redis at {}; reconnecting",
                    down.join(", ")
                ));
            }
        }
        if let Some(why) = &*lock(&self.writes) {
            return Err(format!("{} writes are failing: {why}", self.database));
        }
        match &*lock(&self.database_check) {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(format!("{} does not answer: {why}", self.database)),
            None => Err(format!("{} not checked yet", self.database)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set_subscribed(&self, endpoint: &str, id: u64, subscribed: bool) {
        if let Some(node) = lock(&self.nodes).get_mut(endpoint)
            && node.id == id
            && node.subscribed != subscribed
        {
            node.subscribed = subscribed;
            node.since = Instant::now();
        }
    }
}

impl Collector for Health {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let nodes: Vec<(String, bool)> = lock(&self.nodes)
            .iter()
            .map(|(endpoint, n)| (endpoint.clone(), n.subscribed))
            .collect();
        let mut up = encoder.encode_descriptor(
            "order_expire_subscription_up",
            "1 while the subscription to the node's expired events is up, else 0; one series per node the worker must hear.",
            None,
            MetricType::Gauge,
        )?;
        for (node, subscribed) in nodes {
            let labels = [("node", node.as_str())];
            ConstGauge::new(i64::from(subscribed)).encode(up.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A loop's heartbeat; dropping it unregisters the loop.
pub(crate) struct Heartbeat {
    beat: Arc<Beat>,
    health: Arc<Health>,
    runs_until_stop: bool,
}

impl Heartbeat {
    /// The loop moved on.
    pub(crate) fn beat(&self) {
        self.beat
            .last_ms
            .store(self.health.now_ms(), Ordering::Relaxed);
    }

    /// How often a waiting loop beats.
    pub(crate) fn every(&self) -> Duration {
        self.health.beat_every
    }

    /// Sleeps `duration`, beating meanwhile: a loop's pause between two rounds.
    pub(crate) async fn idle(&self, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        loop {
            self.beat();
            let now = tokio::time::Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(self.every())).await;
        }
    }

    /// Waits for `future`, beating meanwhile: for what may take long without the loop being
    /// stuck (an event, a free writer, room in the queue). Cancel-safe if `future` is.
    pub(crate) async fn waiting<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        loop {
            self.beat();
            tokio::select! {
                output = &mut future => {
                    self.beat();
                    return output;
                }
                () = tokio::time::sleep(self.every()) => {}
            }
        }
    }
}

impl Heartbeat {
    /// The loop ended because it was asked to (the worker's stop, or a subscription to a
    /// server that is no longer a master): not a death.
    pub(crate) fn retire(mut self) {
        self.runs_until_stop = false;
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if self.runs_until_stop && !self.health.is_stopping() {
            lock(&self.health.dead).push(self.beat.name.clone());
        }
    }
}

/// A Redis node the worker must hear; its subscription state is what readiness checks.
pub(crate) struct NodeWatch {
    health: Arc<Health>,
    endpoint: String,
    id: u64,
}

impl NodeWatch {
    /// The subscription to this node is up (`true`) or lost (`false`).
    pub(crate) fn subscribed(&self, up: bool) {
        self.health.set_subscribed(&self.endpoint, self.id, up);
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        let mut nodes = lock(&self.health.nodes);
        if nodes.get(&self.endpoint).is_some_and(|n| n.id == self.id) {
            nodes.remove(&self.endpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(stall_after_ms: u64) -> Arc<Health> {
        Arc::new(Health::new(HealthOptions {
            stall_after: Duration::from_millis(stall_after_ms),
            ..HealthOptions::default()
        }))
    }

    #[test]
    fn a_loop_without_a_beat_for_too_long_is_stalled() {
        let health = health(100);
        health.started();
        let loop_ = health.heartbeat("sweep");
        assert_eq!(health.liveness(), Ok(()));
        std::thread::sleep(Duration::from_millis(150));
        let stalled = health.stalled();
        assert_eq!(stalled.len(), 1);
        assert!(stalled[0].starts_with("sweep (no progress"), "{stalled:?}");
        assert!(health.liveness().is_err());
        loop_.beat();
        assert_eq!(health.liveness(), Ok(()));
    }

    #[test]
    fn a_loop_that_ends_before_the_stop_is_dead_and_a_task_is_not() {
        let health = health(60_000);
        let stop = CancellationToken::new();
        health.bind_stop(stop.clone());
        drop(health.task_heartbeat("writer"));
        assert!(health.stalled().is_empty(), "a task may end");
        drop(health.heartbeat("deadline watcher"));
        assert_eq!(health.stalled(), ["deadline watcher (ended unexpectedly)"]);
        let health = self::health(60_000);
        health.bind_stop(stop.clone());
        stop.cancel();
        drop(health.heartbeat("deadline watcher"));
        assert!(health.stalled().is_empty(), "loops end at the stop");
    }

    #[test]
    fn readiness_needs_every_expected_node_and_mysql() {
        let health = health(60_000);
        assert!(health.readiness().is_err(), "starting");
        let node = health.expect_node("127.0.0.1:6379");
        health.started();
        let not_subscribed = health.readiness().expect_err("not subscribed");
        assert!(
            not_subscribed.contains("127.0.0.1:6379"),
            "{not_subscribed}"
        );
        node.subscribed(true);
        assert_eq!(health.readiness(), Err("MySQL not checked yet".into()));
        health.database_checked(Ok(()));
        assert_eq!(health.readiness(), Ok(()));
        let second = health.expect_node("127.0.0.1:6380");
        assert!(health.readiness().is_err(), "a new node must be heard too");
        assert_eq!(health.subscriptions(), (1, 2));
        drop(second);
        assert_eq!(health.readiness(), Ok(()), "a node no longer expected");
        health.writes_failing(Some("lock wait timeout".into()));
        let failing = health.readiness().expect_err("writes failing");
        assert!(failing.contains("writes are failing"), "{failing}");
        health.writes_failing(None);
        assert_eq!(health.readiness(), Ok(()), "writes work again");
        health.database_checked(Err("connection refused".into()));
        assert!(health.readiness().is_err());
    }

    #[test]
    fn a_replaced_watch_of_the_same_node_is_not_removed_by_the_old_one() {
        let health = health(60_000);
        let old = health.expect_node("n:1");
        let new = health.expect_node("n:1");
        drop(old);
        new.subscribed(true);
        assert_eq!(health.subscriptions(), (1, 1));
    }
}
