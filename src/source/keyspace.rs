//! The keyspace-event source: a subscription to `__keyevent@<db>__:expired` that does not die.
//!
//! redis-rs's `PubSub` ends its stream when the connection drops and never reconnects, and a
//! half-open TCP connection (a NAT or load balancer forgetting us) would leave it silent forever.
//! This supervisor reconnects with capped, jittered backoff, resubscribes, and PINGs the server
//! while idle so that a dead subscription is noticed within seconds, not never. It logs one line
//! when a subscription is lost and one when it is back, not one per retry.
//!
//! Events are read as fast as Redis sends them: redis-rs's reader task buffers them, we classify
//! each key on the spot and put order ids into the writer queue without waiting for the database.
//! A key of another type with a job (`ORDER_EXPIRE_ON_<TYPE>`) goes, with the same prefixes and
//! the same id rules, to the key-job queue instead.
//!
//! The source registers its node with the worker's health (readiness holds while every node's
//! subscription is up) and keeps a heartbeat: it beats on every event and idle tick, and not
//! while it waits for Redis to answer a PING or a SUBSCRIBE. The PING comes at least every half
//! of the time a loop may go without a beat, so a watchdog ping also vouches that the
//! subscription answered within `WatchdogSec`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::SourceError;
use crate::backoff::Backoff;
use crate::key::{self, KeyPattern, ParsedKey};
use crate::queue::{ExpiredKey, KeyJobSender, Origin, QueueSender};
use crate::redis::RedisTarget;
use crate::stats::Stats;
use crate::stats::health::{Heartbeat, NodeWatch};
use crate::throttle::{Admission, Throttle};

/// How often an idle subscription is checked with PING (more often when a loop may go without a
/// beat for less than twice that), and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct KeyspaceSource {
    target: RedisTarget,
    pattern: KeyPattern,
    stats: Arc<Stats>,
    resubscribed: Option<Arc<Notify>>,
    /// Signalled each time the subscription is lost, for whoever follows the topology.
    lost: Option<Arc<Notify>>,
    /// The other key types with a job, in the order of `Settings::key_jobs`, and their queue.
    other_types: Vec<(String, KeyPattern)>,
    key_jobs: Option<KeyJobSender>,
    /// Warnings about malformed keys: outside input repeats them at will. Shared by the
    /// subscriptions to every server, so that their sum is limited.
    malformed_warnings: Arc<Throttle>,
    /// This node, as readiness sees it: expected from the start, subscribed or not.
    node: NodeWatch,
}

/// Why a subscription ended.
enum End {
    Shutdown,
    Lost(String),
}

impl KeyspaceSource {
    pub(crate) fn new(target: RedisTarget, pattern: KeyPattern, stats: Arc<Stats>) -> Self {
        let node = stats.health.expect_node(target.endpoint());
        Self {
            node,
            target,
            pattern,
            stats,
            resubscribed: None,
            lost: None,
            other_types: Vec::new(),
            key_jobs: None,
            malformed_warnings: Arc::new(Throttle::per_minute()),
        }
    }

    /// The server this subscription listens to.
    pub(crate) fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// `notify` is signalled each time the subscription is lost: a cluster's master or a
    /// Sentinel's master may be gone for good, which only a look at the topology tells.
    pub(crate) fn on_loss(mut self, notify: Arc<Notify>) -> Self {
        self.lost = Some(notify);
        self
    }

    /// Malformed-key warnings count against `throttle` (shared with other subscriptions).
    pub(crate) fn with_warnings(mut self, throttle: Arc<Throttle>) -> Self {
        self.malformed_warnings = throttle;
        self
    }

    /// `notify` is signalled each time a lost subscription is restored, so that a sweep can
    /// recover what expired in between.
    pub(crate) fn on_resubscribe(mut self, notify: Arc<Notify>) -> Self {
        self.resubscribed = Some(notify);
        self
    }

    /// Keys of `types` (each with its pattern; an [`ExpiredKey`]'s `kind` is its index) go to
    /// `queue`.
    pub(crate) fn with_key_jobs(
        mut self,
        types: Vec<(String, KeyPattern)>,
        queue: KeyJobSender,
    ) -> Self {
        self.other_types = types;
        self.key_jobs = Some(queue);
        self
    }

    /// Subscribes once, so that start-up fails loudly if Redis refuses; the returned
    /// subscription is then handed to [`Self::run`].
    pub(crate) async fn subscribe(&self) -> Result<PubSub, SourceError> {
        let mut pubsub = self.target.pubsub().await?;
        self.target.subscribe_expired(&mut pubsub).await?;
        self.node.subscribed(true);
        Ok(pubsub)
    }

    /// The `listening` line, once subscribed: the server, its channel and the keys read.
    pub(crate) fn log_listening(&self) {
        tracing::info!(event = "listening", redis = %self.target.endpoint(), channel = %self.target.expired_channel(),
            keys = %self.pattern, "listening for expired order keys");
    }

    /// Forwards order ids to `queue` until `shutdown`, resubscribing whenever the subscription
    /// is lost. `first` is the subscription made by [`Self::subscribe`], already announced
    /// with [`Self::log_listening`].
    pub(crate) async fn run(self, first: PubSub, queue: QueueSender, shutdown: CancellationToken) {
        let channel = self.target.expired_channel();
        let heartbeat = self
            .stats
            .health
            .heartbeat(format!("subscription {}", self.target.endpoint()));
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut subscription = Some(first);
        let mut outage: Option<Instant> = None;
        loop {
            let pubsub = match subscription.take() {
                Some(pubsub) => pubsub,
                None => match self.subscribe().await {
                    Ok(pubsub) => {
                        if let Some(since) = outage.take() {
                            Stats::add(&self.stats.resubscribes);
                            tracing::info!(event = "subscription_restored", redis = %self.target.endpoint(), %channel,
                                down_for_ms = since.elapsed().as_millis() as u64,
                                "subscription restored; events published while it was down were missed, a sweep recovers them");
                            if let Some(notify) = &self.resubscribed {
                                notify.notify_one();
                            }
                        }
                        backoff.reset();
                        pubsub
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, attempt = backoff.attempts(), "resubscribe failed");
                        tokio::select! {
                            () = heartbeat.idle(backoff.next_delay()) => continue,
                            () = shutdown.cancelled() => return heartbeat.retire(),
                        }
                    }
                },
            };
            match self.pump(pubsub, &queue, &shutdown, &heartbeat).await {
                End::Shutdown => return heartbeat.retire(),
                End::Lost(reason) => {
                    self.node.subscribed(false);
                    tracing::warn!(event = "subscription_lost", redis = %self.target.endpoint(), %channel, %reason,
                        "lost the Redis subscription; reconnecting with backoff");
                    outage = Some(Instant::now());
                    if let Some(notify) = &self.lost {
                        notify.notify_one();
                    }
                }
            }
        }
    }

    async fn pump(
        &self,
        pubsub: PubSub,
        queue: &QueueSender,
        shutdown: &CancellationToken,
        heartbeat: &Heartbeat,
    ) -> End {
        let (mut sink, mut stream) = pubsub.split();
        let ping_every = PING_EVERY.min(self.stats.health.stall_after() / 2);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut idle = tokio::time::interval(heartbeat.every());
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return End::Shutdown,
                message = stream.next() => match message {
                    Some(message) => {
                        heartbeat.beat();
                        self.handle(message.get_payload_bytes(), queue).await;
                    }
                    None => return End::Lost("the connection was closed".into()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => heartbeat.beat(),
                        Ok(Err(e)) => return End::Lost(format!("PING failed: {e}")),
                        Err(_) => return End::Lost(format!("no answer to PING within {} s", PING_TIMEOUT.as_secs())),
                    }
                }
                _ = idle.tick() => heartbeat.beat(),
            }
        }
    }

    /// Classifies one expired key; an order id is queued as an event, which never waits for a
    /// full queue (the queue drops it and says so).
    async fn handle(&self, key: &[u8], queue: &QueueSender) {
        Stats::add(&self.stats.events);
        match self.pattern.parse(key) {
            ParsedKey::Order(id) => {
                // Closed means the worker is stopping: the shutdown arm ends the loop.
                let _ = queue.send(id, Origin::Event).await;
            }
            ParsedKey::Unrelated => self.handle_other_type(key),
            ParsedKey::Malformed { id, reason } => self.malformed(key, id, reason, None),
        }
    }

    /// A key that is not an order key: another type's job, else nothing.
    fn handle_other_type(&self, key: &[u8]) {
        for (kind, (key_type, pattern)) in self.other_types.iter().enumerate() {
            match pattern.parse(key) {
                ParsedKey::Order(id) => {
                    if let Some(queue) = &self.key_jobs {
                        queue.offer(ExpiredKey { kind, id });
                    }
                    return;
                }
                ParsedKey::Malformed { id, reason } => {
                    return self.malformed(key, id, reason, Some(key_type));
                }
                ParsedKey::Unrelated => {}
            }
        }
        Stats::add(&self.stats.unrelated);
        tracing::debug!(key = %key::shown(key), "ignored: not an order key of this app");
    }

    /// Counts and (a few times a minute) reports a key of ours whose id is not canonical.
    fn malformed(&self, key: &[u8], id: &[u8], reason: &'static str, key_type: Option<&str>) {
        Stats::add(&self.stats.malformed);
        let Admission::Log { suppressed } = self.malformed_warnings.admit() else {
            return;
        };
        match key_type {
            None => {
                tracing::warn!(event = "key_malformed", key = %key::shown(key), id = %key::shown(id), reason, suppressed,
                "ignored a malformed order key; nothing written")
            }
            Some(key_type) => {
                tracing::warn!(event = "key_malformed", key = %key::shown(key), id = %key::shown(id), reason, suppressed,
                key_type, "ignored a malformed key of a type with a job; no job queued")
            }
        }
    }
}
