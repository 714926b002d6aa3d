//! Follows the cache Redis's topology: one keyspace subscription per server whose `expired`
//! events must be heard, kept in step with the cluster or the Sentinel.
//!
//! Each master publishes only the expiries it performs, so a subscription to one server hears
//! one cluster master's share of the orders, and under Sentinel it hears nothing once a failover
//! has moved the master elsewhere, without any error. This supervisor owns one
//! [`KeyspaceSource`] per master and re-reads the topology:
//!
//! * on a cluster every second (`CLUSTER SHARDS` on one kept connection is cheap): a `CLUSTER
//!   FAILOVER` flips roles in a fraction of a second while the old master keeps our subscription
//!   open but silent, so only a look at the topology notices it, never a disconnect;
//! * under Sentinel when a sentinel announces `+switch-master`, and every few seconds;
//! * and on any lost subscription, then four times a second for a while: a master that went
//!   away is replaced only once the cluster or the sentinels have promoted another. Until then
//!   its subscription stays and keeps reconnecting (a cluster master marked failed still owns
//!   its slots, and may come back); the change is one `topology_changed` once it is replaced.
//!
//! A new master gets its `notify-keyspace-events` checked (turned on with `--configure-redis`,
//! else one warning: the deadline watcher and the sweep still cancel its orders), then its
//! subscription; a server no longer master loses its subscription. After every change the sweep
//! runs (`resubscribed`), for what expired while nobody listened to the new master. An order
//! heard from two masters at once (a Sentinel's old master keeps publishing for seconds) is
//! cancelled once: the writer's transaction guards it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::SourceError;
use super::keyspace::KeyspaceSource;
use crate::backoff::Backoff;
use crate::queue::QueueSender;
use crate::redis::{RedisError, RedisServers, RedisTarget, Topology};
use crate::stats::health::Heartbeat;
use crate::throttle::{Admission, Throttle};

/// How often a cluster's topology is read.
const CLUSTER_CHECK: Duration = Duration::from_secs(1);
/// How often the sentinels are asked for the master when none announced a failover.
const SENTINEL_CHECK: Duration = Duration::from_secs(5);
/// How often the topology is read while a lost master has not been replaced.
const HURRIED_CHECK: Duration = Duration::from_millis(250);
/// How long the checks stay hurried after a loss that changes nothing (a master restarting).
const HURRY_FOR: Duration = Duration::from_secs(30);
/// How long a stopped subscription may take to end.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Makes the keyspace subscription of one server.
pub(crate) type SourceFactory = Box<dyn Fn(RedisTarget) -> KeyspaceSource + Send + Sync>;

/// The keyspace subscriptions to every master of the cache Redis.
pub(crate) struct TopologySource {
    servers: RedisServers,
    make: SourceFactory,
    /// `--configure-redis`: turn notifications on on a new master that has them off.
    configure: bool,
    /// Signalled after every change: the sweep recovers what expired unheard.
    resubscribed: Arc<Notify>,
    /// Signalled by any subscription that was lost.
    lost: Arc<Notify>,
}

/// The subscriptions made at start, one per master, handed to [`TopologySource::run`].
pub(crate) struct Subscribed(Vec<(KeyspaceSource, PubSub)>);

/// A running subscription.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What the supervisor keeps between two checks.
#[derive(Default)]
struct Watch {
    running: BTreeMap<String, Running>,
    /// When a lost subscription or an announced failover was noticed, until a change follows.
    noticed: Option<Instant>,
    /// Checks are hurried until then.
    hurry_until: Option<Instant>,
    /// The last topology check failed (logged once).
    failing: bool,
    /// Masters whose subscription could not be made yet (each logged once), each with its
    /// source, which keeps it expected by readiness: `/readyz` names it until it is heard.
    unreachable: BTreeMap<String, KeyspaceSource>,
    /// The last topology whose every dropped master was let go: where each slot's keys were
    /// heard from before the current change.
    settled: Option<Arc<Topology>>,
}

impl TopologySource {
    pub(crate) fn new(
        servers: RedisServers,
        make: SourceFactory,
        configure: bool,
        resubscribed: Arc<Notify>,
    ) -> Self {
        Self {
            servers,
            make,
            configure,
            resubscribed,
            lost: Arc::new(Notify::new()),
        }
    }

    /// Subscribes to every master of the current topology, then logs one `listening` line per
    /// master; start-up fails if any subscription does.
    pub(crate) async fn subscribe(&self) -> Result<Subscribed, SourceError> {
        let (_, topology) = self.servers.topology().await?;
        let mut made = Vec::new();
        for target in topology.masters() {
            let source = self.source_for(target.clone());
            let pubsub = source.subscribe().await?;
            made.push((source, pubsub));
        }
        for (source, _) in &made {
            source.log_listening();
        }
        Ok(Subscribed(made))
    }

    /// Forwards expired orders from every master to `queue` until `shutdown`, following the
    /// topology. `first` is what [`Self::subscribe`] made.
    pub(crate) async fn run(
        self,
        first: Subscribed,
        queue: QueueSender,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) {
        let mut watch = Watch {
            settled: self.servers.current().map(|(_, topology)| topology),
            ..Watch::default()
        };
        for (source, pubsub) in first.0 {
            spawn(&mut watch, source, pubsub, &queue, &shutdown);
        }
        let period = match self.servers.kind() {
            "cluster" => Some(CLUSTER_CHECK),
            "sentinel" => Some(SENTINEL_CHECK),
            _ => None,
        };
        match period {
            // One server: its subscription reconnects by itself.
            None => heartbeat.waiting(shutdown.cancelled()).await,
            Some(period) => {
                let announced = Arc::new(Notify::new());
                let listener = (self.servers.kind() == "sentinel").then(|| {
                    tokio::spawn(hear_failovers(
                        self.servers.clone(),
                        Arc::clone(&announced),
                        shutdown.clone(),
                    ))
                });
                self.follow(
                    period, &mut watch, &announced, &queue, &shutdown, &heartbeat,
                )
                .await;
                if let Some(listener) = listener {
                    let _ = tokio::time::timeout(STOP_GRACE, listener).await;
                }
            }
        }
        let running = std::mem::take(&mut watch.running);
        for subscription in running.values() {
            subscription.stop.cancel();
        }
        for (_, subscription) in running {
            let _ = tokio::time::timeout(STOP_GRACE, subscription.task).await;
        }
        heartbeat.retire();
    }

    fn source_for(&self, target: RedisTarget) -> KeyspaceSource {
        (self.make)(target).on_loss(Arc::clone(&self.lost))
    }

    /// Re-reads the topology every `period` (hurried after a loss or an announced failover)
    /// and applies each change, until `shutdown`.
    async fn follow(
        &self,
        period: Duration,
        watch: &mut Watch,
        announced: &Notify,
        queue: &QueueSender,
        shutdown: &CancellationToken,
        heartbeat: &Heartbeat,
    ) {
        loop {
            heartbeat.beat();
            let hurried = watch.hurry_until.is_some_and(|t| t > Instant::now());
            let wait = if hurried { HURRIED_CHECK } else { period };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.lost.notified() => watch.notice(),
                () = announced.notified() => watch.notice(),
            }
            if watch.hurry_until.is_some_and(|t| t <= Instant::now()) {
                watch.hurry_until = None;
                watch.noticed = None;
            }
            let checked = Instant::now();
            let found = tokio::select! {
                found = self.servers.refresh() => found,
                () = shutdown.cancelled() => return,
            };
            match found {
                Ok((_, topology)) => {
                    if watch.failing {
                        tracing::info!(
                            event = "topology_check_recovered",
                            kind = self.servers.kind(),
                            "the Redis topology can be read again"
                        );
                        watch.failing = false;
                    }
                    self.apply(topology, watch, checked, queue, shutdown).await;
                }
                Err(e) if !watch.failing => {
                    tracing::warn!(event = "topology_check_failed", kind = self.servers.kind(), error = %e,
                        "cannot read the Redis topology; the current subscriptions stay, trying again");
                    watch.failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "topology check still failing"),
            }
        }
    }

    /// Subscribes to the masters of `topology` not heard yet and drops the subscriptions of
    /// servers no longer masters, once their slots have a master heard instead (see
    /// [`rehomed`]); logs the change and starts a sweep.
    async fn apply(
        &self,
        topology: Arc<Topology>,
        watch: &mut Watch,
        checked: Instant,
        queue: &QueueSender,
        shutdown: &CancellationToken,
    ) {
        let mut added = Vec::new();
        let mut unreachable = Vec::new();
        for target in topology.masters() {
            let endpoint = target.endpoint().to_string();
            if watch.running.contains_key(&endpoint) {
                continue;
            }
            match self.start(target).await {
                Ok((source, pubsub)) => {
                    watch.unreachable.remove(&endpoint);
                    source.log_listening();
                    spawn(watch, source, pubsub, queue, shutdown);
                    added.push(endpoint);
                }
                Err((e, source)) => {
                    if !watch.unreachable.contains_key(&endpoint) {
                        tracing::warn!(event = "subscribe_failed", redis = %endpoint, error = %e,
                            "cannot subscribe to a new Redis master yet; /readyz says so, and it is tried again at each check");
                        unreachable.push(endpoint.clone());
                    }
                    watch.unreachable.insert(endpoint, source);
                    watch.hurry_until = Some(Instant::now() + HURRY_FOR);
                }
            }
        }
        // A master marked failed keeps its subscription (reconnecting on its own) until the
        // cluster says who replaces it.
        let wanted: BTreeSet<&str> = topology
            .masters()
            .iter()
            .map(RedisTarget::endpoint)
            .chain(topology.failed().iter().map(String::as_str))
            .collect();
        let heard: BTreeSet<&str> = watch.running.keys().map(String::as_str).collect();
        let before = watch.settled.as_ref().and_then(|t| t.slot_owners());
        let after = topology.slot_owners();
        let (removed, held): (Vec<String>, Vec<String>) = watch
            .running
            .keys()
            .filter(|endpoint| !wanted.contains(endpoint.as_str()))
            .cloned()
            .partition(|endpoint| match (&before, &after) {
                (Some(before), Some(after)) => rehomed(endpoint, before, after, &heard),
                _ => true,
            });
        if held.is_empty() {
            watch.settled = Some(Arc::clone(&topology));
        } else {
            // A node whose view has not converged yet may drop the old master before it names
            // the promoted replica: keep hearing the old one until its slots have a new home.
            tracing::debug!(held = %held.join(","), "a master left the view before its slots found a new one; its subscription stays until they do");
            watch.hurry_until = Some(Instant::now() + HURRY_FOR);
        }
        for endpoint in &removed {
            if let Some(running) = watch.running.remove(endpoint) {
                running.stop.cancel();
            }
        }
        watch
            .unreachable
            .retain(|endpoint, _| wanted.contains(endpoint.as_str()));
        if added.is_empty() && removed.is_empty() && unreachable.is_empty() {
            return;
        }
        let masters = watch.running.keys().cloned().collect::<Vec<_>>().join(",");
        tracing::info!(event = "topology_changed", kind = self.servers.kind(), %masters,
            added = %added.join(","), removed = %removed.join(","), unreachable = %unreachable.join(","),
            "the Redis masters changed; subscriptions follow, and a sweep recovers what expired unheard");
        if self.servers.kind() == "sentinel" && !added.is_empty() {
            let took = watch.noticed.unwrap_or(checked).elapsed();
            tracing::info!(event = "failover_followed", from = %removed.join(","), to = %added.join(","),
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                "followed the Sentinel failover to the new master");
        }
        if watch.unreachable.is_empty() {
            watch.noticed = None;
            watch.hurry_until = None;
        }
        self.resubscribed.notify_one();
    }

    /// Checks a new master's notifications, then subscribes to it. Its source is made first,
    /// so that readiness expects it at once; on failure it comes back with the error, to be
    /// kept until the master is heard.
    async fn start(
        &self,
        target: &RedisTarget,
    ) -> Result<(KeyspaceSource, PubSub), (SourceError, KeyspaceSource)> {
        let source = self.source_for(target.clone());
        let mut conn = match target.connect().await {
            Ok(conn) => conn,
            Err(e) => return Err((e.into(), source)),
        };
        match target.ensure_notifications(&mut conn, self.configure).await {
            Ok(()) => {}
            Err(RedisError::NotificationsOff { endpoint, current }) => {
                tracing::warn!(event = "notifications_off", redis = %endpoint, current = %current,
                    "keyspace notifications are off on this new Redis master, so its expired events will not come: set notify-keyspace-events Ex there (or run with --configure-redis); until then the deadline watcher and the sweep cancel its orders, later");
            }
            Err(e) => return Err((e.into(), source)),
        }
        drop(conn);
        match source.subscribe().await {
            Ok(pubsub) => Ok((source, pubsub)),
            Err(e) => Err((e, source)),
        }
    }
}

/// Whether every slot `endpoint` served in `before` (each slot's master, by slot) is served in
/// `after` by another master among the `heard` ones: the keys it held expire where a
/// subscription hears them, so its own subscription can go.
fn rehomed(
    endpoint: &str,
    before: &[Option<&str>],
    after: &[Option<&str>],
    heard: &BTreeSet<&str>,
) -> bool {
    before
        .iter()
        .zip(after)
        .filter(|(was, _)| **was == Some(endpoint))
        .all(|(_, now)| now.is_some_and(|now| now != endpoint && heard.contains(now)))
}

impl Watch {
    /// A subscription was lost or a failover announced: check often until it is followed.
    fn notice(&mut self) {
        let now = Instant::now();
        self.noticed.get_or_insert(now);
        self.hurry_until = Some(now + HURRY_FOR);
    }
}

/// Runs `source` on its own task, stopped with its own token (or the worker's).
fn spawn(
    watch: &mut Watch,
    source: KeyspaceSource,
    pubsub: PubSub,
    queue: &QueueSender,
    shutdown: &CancellationToken,
) {
    let endpoint = source.target().endpoint().to_string();
    let stop = shutdown.child_token();
    let task = tokio::spawn(source.run(pubsub, queue.clone(), stop.clone()));
    watch.running.insert(endpoint, Running { stop, task });
}

/// Listens to a sentinel's `+switch-master` announcements of our service and signals
/// `announced` for each, moving to another sentinel when one goes away, until `shutdown`.
async fn hear_failovers(
    servers: RedisServers,
    announced: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    // Anyone who may publish on the sentinel can send announcements at will.
    let announcements = Throttle::per_minute();
    loop {
        let events = tokio::select! {
            events = servers.switch_master_events() => events,
            () = shutdown.cancelled() => return,
        };
        match events {
            Ok(Some((pubsub, sentinel))) => {
                backoff.reset();
                tracing::debug!(%sentinel, "hearing failover announcements");
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Some(switch) = servers.switch_master(message.get_payload_bytes()) {
                                    if let Admission::Log { suppressed } = announcements.admit() {
                                        tracing::info!(event = "failover_announced", %sentinel,
                                            from = %format!("{}:{}", switch.from.host, switch.from.port),
                                            to = %format!("{}:{}", switch.to.host, switch.to.port),
                                            suppressed, "a sentinel announced a new master");
                                    }
                                    announced.notify_one();
                                }
                            }
                            None => break,
                        },
                        () = shutdown.cancelled() => return,
                    }
                }
            }
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "no sentinel to hear failovers from"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::rehomed;

    const OLD: &str = "127.0.0.1:7000";
    const PROMOTED: &str = "127.0.0.1:7003";
    const OTHER: &str = "127.0.0.1:7001";

    #[test]
    fn a_dropped_master_stays_until_its_slots_have_a_heard_master() {
        let before = [Some(OLD), Some(OLD), Some(OTHER)];
        let heard_both: BTreeSet<&str> = [PROMOTED, OTHER].into();
        // The view dropped the old master but names no new owner yet.
        assert!(!rehomed(
            OLD,
            &before,
            &[None, None, Some(OTHER)],
            &heard_both
        ));
        // The view still lists the old master as owner of one slot.
        assert!(!rehomed(
            OLD,
            &before,
            &[Some(PROMOTED), Some(OLD), Some(OTHER)],
            &heard_both
        ));
        // The promoted replica owns them, but its subscription is not made yet.
        let heard_other: BTreeSet<&str> = [OTHER].into();
        assert!(!rehomed(
            OLD,
            &before,
            &[Some(PROMOTED), Some(PROMOTED), Some(OTHER)],
            &heard_other
        ));
        // Owned and heard: the old subscription can go.
        assert!(rehomed(
            OLD,
            &before,
            &[Some(PROMOTED), Some(PROMOTED), Some(OTHER)],
            &heard_both
        ));
    }

    #[test]
    fn a_master_without_slots_goes_at_once() {
        let before = [Some(OTHER), Some(OTHER)];
        let heard: BTreeSet<&str> = [OTHER].into();
        assert!(rehomed(OLD, &before, &[Some(OTHER), Some(OTHER)], &heard));
    }
}
