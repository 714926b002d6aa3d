//! The deadline watcher: cancels orders at their deadline, not when Redis gets round to it.
//!
//! Redis publishes `expired` only when it deletes a key: on access, or when its background
//! expiry scan happens to reach it. That scan samples about 200 keys with a TTL per second, so in
//! a cache database holding 100k other keys with a TTL, an order key is deleted a median of
//! minutes after its deadline. Laravel's cache is exactly such a database.
//!
//! So the watcher learns each order's deadline and asks Redis about the key at that moment:
//!
//! * every 200 ms it reads the unpaid orders inserted since the previous look (a primary-key
//!   range scan of the new rows only, re-reading a few hundred ids so that a transaction
//!   committing late is not skipped) and one pipelined `PTTL` per new order key gives its exact
//!   deadline; an order whose key is not there yet gets `created_at + ORDER_EXPIRE_TTL`;
//! * deadlines wait in 10 ms slots of order ids ([`wheel`]); as each slot comes
//!   due, `PTTL` on its keys again. For a key past its TTL that makes Redis delete it and
//!   publish `expired` on the spot, so the event path runs within milliseconds of the deadline.
//!   A key that was put again with a later TTL is rescheduled.
//! * what a key that is gone at its deadline means depends on the mode (docs/contract.md,
//!   "The contract"). In events-only mode (no `ORDER_EXPIRE_TTL`) only Redis's own expiry cancels,
//!   as with the PHP worker: the app may `forget()` the key on payment, and a `PTTL` answer of
//!   "no such key" cannot tell a deleted key from one that just expired, so the watcher queues
//!   nothing itself and the `expired` event its `PTTL` caused does the rest. In reconciliation
//!   mode the database is the truth: the watcher also queues the order (the dispatcher drops
//!   the duplicate) so a subscription gap does not delay it, and the writer's guard (status,
//!   paid column) decides.
//!
//! Cost: Redis answers two `PTTL`s per order; MySQL answers one primary-key range query per
//! 200 ms over the orders inserted since the last one. Memory: 8 bytes per pending order when
//! deadlines crowd (a burst), more when they are sparse (see [`wheel`]), plus the key waits of
//! the few orders whose key has not appeared yet; the re-read overlap is remembered for its few
//! hundred ids only.

mod wheel;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::SourceError;
use crate::config::{Settings, TimeZoneSetting};
use crate::db::Database;
use crate::db::orders::DeadlineQueries;
use crate::key::KeyPattern;
use crate::queue::{Origin, QueueSender};
use crate::redis::{RedisServers, RoutedConnection};
use crate::stats::health::Heartbeat;
use wheel::Wheel;

/// How often new orders are looked up (due deadlines are checked as each 10 ms slot comes due).
const TICK: Duration = Duration::from_millis(200);
/// How many ids before the newest one each discovery re-reads, for orders whose transaction
/// committed after a later one's.
const OVERLAP_IDS: u64 = 256;
/// How far back the first discovery looks when the app's TTL is unknown.
const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Rows per discovery query and keys per pipeline.
const PAGE: usize = 2000;

pub(crate) struct DeadlineWatcher {
    db: Database,
    redis: RedisServers,
    pattern: KeyPattern,
    timezone: TimeZoneSetting,
    ttl: Option<Duration>,
    sql: DeadlineQueries,
}

/// An order waiting for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Instant,
    order: u64,
    /// Set while the order's key has not been seen yet (the app writes it just after the
    /// order): `at` is then the next look, not the deadline.
    waiting_for_key: Option<KeyWait>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyWait {
    /// `created_at + ORDER_EXPIRE_TTL`, when known: past it, a missing key means overdue.
    fallback: Option<Instant>,
    /// Looks left before giving up on a key that never appears (without a fallback).
    looks_left: u8,
}

/// How often a key that has not appeared yet is looked for.
const LOOK_AGAIN: Duration = Duration::from_millis(500);
/// When the key of an order whose master did not answer is asked about again: a dead master
/// holds back its own slots' orders, not the others'.
const UNANSWERED_AGAIN: Duration = Duration::from_secs(1);

impl DeadlineWatcher {
    /// `pattern` is the worker's one [`KeyPattern`], built at start.
    pub(crate) fn new(
        settings: &Settings,
        db: Database,
        redis: RedisServers,
        pattern: KeyPattern,
    ) -> Self {
        Self {
            sql: DeadlineQueries::new(&db, &settings.schema, PAGE),
            db,
            redis,
            pattern,
            timezone: settings.timezone.clone(),
            ttl: settings.recovery.order_ttl,
        }
    }

    /// Watches until `shutdown`; orders that reach their deadline without a key go to `queue`.
    /// `heartbeat` beats every tick and page, and while waiting for room in the queue.
    pub(crate) async fn run(
        self,
        queue: QueueSender,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) {
        let horizon = self.ttl.unwrap_or(DEFAULT_HORIZON) + Duration::from_secs(1);
        let start = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(horizon).unwrap_or(jiff::SignedDuration::ZERO),
            )
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let mut state = State {
            redis: None,
            since: start.to_zoned(self.timezone.tz.clone()).datetime(),
            cursor: None,
            known: BTreeSet::new(),
            wheel: Wheel::new(Instant::now()),
            waiting: HashMap::new(),
        };
        let mut failing = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Discovery at its own pace; the schedule as soon as its next slot is due, except
            // while failing: then every tick retries, no faster.
            let next_due = match failing {
                true => None,
                false => state.wheel.next_due().map(tokio::time::Instant::from_std),
            };
            let discover = tokio::select! {
                _ = heartbeat.waiting(tick.tick()) => true,
                () = sleep_until(next_due) => false,
                () = shutdown.cancelled() => return,
            };
            let result = tokio::select! {
                result = self.step(&mut state, &queue, &heartbeat, discover) => result,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("deadline watcher works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(event = "deadline_watcher_failing", error = %e, "deadline watcher failed; retrying (sweeps still recover overdue orders)");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "deadline watcher still failing"),
            }
        }
    }

    async fn step(
        &self,
        state: &mut State,
        queue: &QueueSender,
        heartbeat: &Heartbeat,
        discover: bool,
    ) -> Result<(), SourceError> {
        let mut redis = match state.redis.take() {
            Some(conn) => conn,
            None => self.redis.connect().await?,
        };
        if discover {
            self.discover(state, &mut redis, heartbeat).await?;
        }
        self.check_due(state, &mut redis, queue, heartbeat).await?;
        // Kept only after a clean step: any error above drops it and the next tick reconnects.
        state.redis = Some(redis);
        Ok(())
    }

    /// Reads the unpaid orders inserted since the last discovery and schedules their deadlines.
    ///
    /// New orders are found by primary key (`id > cursor`, a range scan of only the new rows),
    /// re-reading the last [`OVERLAP_IDS`] ids so that an order whose transaction committed after
    /// a later one is not skipped. On the first call the cursor starts at the oldest unpaid order
    /// created within the horizon (`ORDER_EXPIRE_TTL`, else a day).
    async fn discover(
        &self,
        state: &mut State,
        redis: &mut RoutedConnection,
        heartbeat: &Heartbeat,
    ) -> Result<(), SourceError> {
        let mut db = self
            .db
            .conn()
            .await
            .map_err(|e| self.db.error("connecting (deadline watcher)", e))?;
        let cursor = match state.cursor {
            Some(cursor) => cursor,
            None => {
                let since = state.since.strftime("%Y-%m-%d %H:%M:%S").to_string();
                let first = self
                    .sql
                    .oldest_pending(&mut db, &since)
                    .await
                    .map_err(|e| self.db.error("finding pending unpaid orders", e))?;
                match first {
                    Some(id) => id.saturating_sub(1),
                    None => self
                        .sql
                        .newest_id(&mut db)
                        .await
                        .map_err(|e| self.db.error("reading the newest order id", e))?
                        .unwrap_or(0),
                }
            }
        };
        let floor = cursor.saturating_sub(OVERLAP_IDS);
        let mut after = floor;
        let mut newest = cursor;
        loop {
            heartbeat.beat();
            let page = self
                .sql
                .new_orders(&mut db, after)
                .await
                .map_err(|e| self.db.error("reading new unpaid orders", e))?;
            // An id past the cursor was never read; one at or below it is new unless the
            // previous look read it (a transaction that committed late).
            let fresh: Vec<(u64, jiff::civil::DateTime)> = page
                .iter()
                .filter(|(id, _)| *id > cursor || !state.known.contains(id))
                .filter_map(|(id, created)| created.map(|c| (*id, c)))
                .collect();
            if !fresh.is_empty() {
                let ttls = self.pttl(redis, fresh.iter().map(|(id, _)| *id)).await?;
                let now = (Instant::now(), jiff::Timestamp::now());
                for ((order, created), pttl) in fresh.into_iter().zip(ttls) {
                    state.known.insert(order);
                    let wait = KeyWait {
                        fallback: self.fallback_deadline(created, now),
                        looks_left: 20,
                    };
                    let Some(pttl) = pttl else {
                        state.schedule(Due {
                            at: now.0 + UNANSWERED_AGAIN,
                            order,
                            waiting_for_key: Some(wait),
                        });
                        continue;
                    };
                    if let Some(due) = next_look(order, pttl, now.0, Some(wait)) {
                        state.schedule(due);
                    }
                }
            }
            if let Some((id, _)) = page.last() {
                newest = newest.max(*id);
                after = *id;
            }
            // Only the ids the next look re-reads need remembering: at most a page more.
            state.forget_known_below(newest.saturating_sub(OVERLAP_IDS));
            if page.len() < PAGE {
                break;
            }
        }
        state.cursor = Some(newest);
        Ok(())
    }

    /// `created_at + ORDER_EXPIRE_TTL`, for an order whose key is not (or no longer) in Redis.
    fn fallback_deadline(
        &self,
        created: jiff::civil::DateTime,
        now: (Instant, jiff::Timestamp),
    ) -> Option<Instant> {
        let ttl = jiff::SignedDuration::try_from(self.ttl?).ok()?;
        let deadline = created
            .to_zoned(self.timezone.tz.clone())
            .ok()?
            .timestamp()
            .checked_add(ttl)
            .ok()?;
        let wait = deadline.duration_since(now.1);
        Some(match Duration::try_from(wait) {
            Ok(wait) => now.0 + wait,
            Err(_) => now.0, // already past
        })
    }

    /// Looks at every key whose deadline has come. In reconciliation mode, queues the orders
    /// whose key is gone; in events-only mode only the `expired` event its `PTTL` causes does.
    async fn check_due(
        &self,
        state: &mut State,
        redis: &mut RoutedConnection,
        queue: &QueueSender,
        heartbeat: &Heartbeat,
    ) -> Result<(), SourceError> {
        loop {
            heartbeat.beat();
            let now = Instant::now();
            let due = state.wheel.take_due(now, PAGE);
            if due.is_empty() {
                state.shrink_waits();
                return Ok(());
            }
            // PTTL on a key past its TTL deletes it and publishes `expired` right now.
            let ttls = match self.pttl(redis, due.iter().map(|d| d.1)).await {
                Ok(ttls) => ttls,
                Err(e) => {
                    for (at, order) in due {
                        state.wheel.insert(at, order);
                    }
                    return Err(e);
                }
            };
            for ((at, order), pttl) in due.into_iter().zip(ttls) {
                let Some(pttl) = pttl else {
                    // Its master did not answer: ask again shortly, its key wait kept.
                    state.wheel.insert(now + UNANSWERED_AGAIN, order);
                    continue;
                };
                let entry = Due {
                    at,
                    order,
                    waiting_for_key: state.waiting.remove(&order),
                };
                if let Some(next) = next_look(entry.order, pttl, now, entry.waiting_for_key) {
                    state.schedule(next);
                    continue;
                }
                // The key is gone and the deadline has passed. With the TTL known (reconciliation)
                // the order is overdue unless the database says paid; without it a key that is
                // simply gone may have been forgotten on payment, and is not an expiry.
                let overdue = self.ttl.is_some()
                    && pttl == -2
                    && entry
                        .waiting_for_key
                        .is_none_or(|w| w.fallback.is_some_and(|f| f <= now));
                if !overdue {
                    continue;
                }
                // The deadline: the key's TTL as last read (to its 10 ms slot), else
                // created_at + ORDER_EXPIRE_TTL.
                let deadline = entry
                    .waiting_for_key
                    .and_then(|w| w.fallback)
                    .unwrap_or(entry.at);
                let late = now.saturating_duration_since(deadline);
                let sent = queue.send_overdue(entry.order, Origin::Deadline, late);
                if heartbeat.waiting(sent).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// What to do next with `order` given its key's `PTTL` now: wait for the key's deadline, look
/// for a key that has not appeared yet again, or nothing (`None`: gone, or never expiring).
fn next_look(order: u64, pttl: i64, now: Instant, waiting: Option<KeyWait>) -> Option<Due> {
    match (pttl, waiting) {
        (ms, _) if ms >= 0 => Some(Due {
            at: now + Duration::from_millis(ms.unsigned_abs()),
            order,
            waiting_for_key: None,
        }),
        // Not there yet: look again soon, but not after the fallback deadline; once the looks
        // are used up, wait for the fallback deadline (if there is one).
        (-2, Some(wait)) if wait.fallback.is_none_or(|f| f > now) => {
            let at = match (wait.looks_left, wait.fallback) {
                (0, fallback) => fallback?,
                (_, Some(fallback)) => fallback.min(now + LOOK_AGAIN),
                (_, None) => now + LOOK_AGAIN,
            };
            Some(Due {
                at,
                order,
                waiting_for_key: Some(KeyWait {
                    looks_left: wait.looks_left.saturating_sub(1),
                    ..wait
                }),
            })
        }
        _ => None,
    }
}

impl DeadlineWatcher {
    async fn pttl(
        &self,
        redis: &mut RoutedConnection,
        orders: impl Iterator<Item = u64>,
    ) -> Result<Vec<Option<i64>>, SourceError> {
        let keys = orders.map(|order| self.pattern.key_for(order));
        let (answers, failures) = redis.pttl(keys, "deadline watcher").await?.answered()?;
        for failure in &failures {
            tracing::debug!(error = %failure, "a Redis master did not answer the deadline watcher; its orders are asked about again in a second");
        }
        Ok(answers)
    }
}

struct State {
    redis: Option<RoutedConnection>,
    /// Where the first discovery starts: orders created since then may still be pending.
    since: jiff::civil::DateTime,
    /// The newest order id discovered so far.
    cursor: Option<u64>,
    /// Orders discovered in the overlap window, so a re-read does not schedule them twice: the
    /// last [`OVERLAP_IDS`] ids and at most a page more, not one entry per pending order.
    known: BTreeSet<u64>,
    /// The pending orders' next looks.
    wheel: Wheel,
    /// The key waits of the scheduled orders whose key has not appeared yet (few: the app
    /// writes the key just after the order).
    waiting: HashMap<u64, KeyWait>,
}

impl State {
    /// Schedules `due`'s next look.
    fn schedule(&mut self, due: Due) {
        self.wheel.insert(due.at, due.order);
        if let Some(wait) = due.waiting_for_key {
            self.waiting.insert(due.order, wait);
        }
    }

    /// Forgets the known ids at or below `floor`.
    fn forget_known_below(&mut self, floor: u64) {
        self.known = self.known.split_off(&floor.saturating_add(1));
    }

    /// Gives back the room of the key waits once mostly empty, so a burst of orders without
    /// keys leaves nothing behind.
    fn shrink_waits(&mut self) {
        if self.waiting.capacity() > 1024 && self.waiting.len() < self.waiting.capacity() / 4 {
            self.waiting.shrink_to_fit();
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_a_ttl_is_due_when_it_expires() {
        let now = Instant::now();
        let due = next_look(7, 1500, now, None).expect("scheduled");
        assert_eq!(
            (due.at, due.waiting_for_key),
            (now + Duration::from_millis(1500), None)
        );
        assert_eq!(
            next_look(7, -1, now, None),
            None,
            "a key without expiry never fires"
        );
        assert_eq!(
            next_look(7, -2, now, None),
            None,
            "gone: the caller queues the order"
        );
    }

    #[test]
    fn a_key_not_written_yet_is_looked_for_until_the_fallback_deadline() {
        let now = Instant::now();
        let fallback = now + Duration::from_secs(60);
        let wait = KeyWait {
            fallback: Some(fallback),
            looks_left: 1,
        };
        let first = next_look(7, -2, now, Some(wait)).expect("looked for again");
        assert_eq!(first.at, now + LOOK_AGAIN);
        let second =
            next_look(7, -2, first.at, first.waiting_for_key).expect("waits for the fallback");
        assert_eq!(second.at, fallback);
        assert_eq!(
            next_look(7, -2, fallback, second.waiting_for_key),
            None,
            "overdue: the caller queues it"
        );
        let appeared = next_look(7, 800, first.at, first.waiting_for_key).expect("found");
        assert_eq!(appeared.waiting_for_key, None);
    }

    #[test]
    fn without_a_ttl_a_missing_key_is_given_up() {
        let now = Instant::now();
        let wait = KeyWait {
            fallback: None,
            looks_left: 0,
        };
        assert_eq!(next_look(7, -2, now, Some(wait)), None);
    }
}
