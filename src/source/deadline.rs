//! The deadline watcher: cancels orders at their deadline, not when Redis gets round to it.
//!
//! Redis publishes `expired` only when it deletes a key: on access, or when its background
//! expiry scan happens to reach it. That scan samples about 200 keys with a TTL per second, so in
//! a cache database holding 100k other keys with a TTL, an order key is deleted a median of
//! minutes after its deadline. Laravel's cache is exactly such a database.
//!
//! So the watcher learns each order's deadline and asks Redis about the key at that moment:
//!
//! * every tick it reads the unpaid orders created since the previous tick (an index range scan
//!   on `(status, created_at)`, re-reading a one-second overlap so that a transaction committing
//!   late is not skipped) and one pipelined `PTTL` per new order key gives its exact deadline;
//!   an order whose key is not there yet gets `created_at + ORDER_EXPIRE_TTL`;
//! * deadlines wait in a min-heap; when one is due, `PTTL` on the key again. For a key past its
//!   TTL that makes Redis delete it and publish `expired` on the spot, so the event path runs
//!   within milliseconds; the watcher also queues the order itself (the dispatcher drops the
//!   duplicate) so a subscription gap does not delay it. A key that was put again with a later
//!   TTL is rescheduled; a key removed without a TTL (paid, `forget()`) costs one locked read
//!   that writes nothing.
//!
//! Cost: Redis answers two `PTTL`s per order; MySQL answers one small range query per tick.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Schema, Settings, TimeZoneSetting};
use crate::error::Error;
use crate::key::KeyPattern;
use crate::sink::Database;
use crate::source::redis::RedisTarget;

/// How often new orders are looked up and due deadlines checked.
const TICK: Duration = Duration::from_millis(200);
/// How far back each discovery re-reads, for orders whose transaction committed late.
const OVERLAP: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);
/// How far back the first discovery looks when the app's TTL is unknown.
const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Rows per discovery query and keys per pipeline.
const PAGE: usize = 2000;

pub struct DeadlineWatcher {
    db: Database,
    redis: RedisTarget,
    pattern: KeyPattern,
    timezone: TimeZoneSetting,
    ttl: Option<Duration>,
    unpaid: i64,
    first_page: String,
    next_page: String,
}

/// An order waiting for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    order: u64,
}

impl DeadlineWatcher {
    pub fn new(settings: &Settings, db: Database, redis: RedisTarget) -> Self {
        let Schema {
            orders,
            order_status: status,
            ..
        } = &settings.schema;
        let id = Schema::id_column();
        let created = Schema::created_at_column();
        let select =
            format!("SELECT {id}, {created} FROM {orders} WHERE {status} = ? AND {created} >= ?");
        Self {
            first_page: format!("{select} ORDER BY {created}, {id} LIMIT {PAGE}"),
            next_page: format!(
                "{select} AND ({created} > ? OR {id} > ?) ORDER BY {created}, {id} LIMIT {PAGE}"
            ),
            db,
            redis,
            pattern: KeyPattern::new(&settings.keys),
            timezone: settings.timezone.clone(),
            ttl: settings.recovery.order_ttl,
            unpaid: settings.schema.unpaid_status,
        }
    }

    /// Watches until `shutdown`; orders that reach their deadline without a key go to `queue`.
    pub async fn run(self, queue: mpsc::Sender<u64>, shutdown: CancellationToken) {
        let horizon = self.ttl.unwrap_or(DEFAULT_HORIZON) + Duration::from_secs(1);
        let start = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(horizon).unwrap_or(jiff::SignedDuration::ZERO),
            )
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let mut state = State {
            redis: None,
            since: start.to_zoned(self.timezone.tz.clone()).datetime(),
            known: HashMap::new(),
            heap: BinaryHeap::new(),
        };
        let mut failing = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let result = tokio::select! {
                result = self.step(&mut state, &queue) => result,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("deadline watcher works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "deadline watcher failed; retrying (sweeps still recover overdue orders)");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "deadline watcher still failing"),
            }
        }
    }

    async fn step(&self, state: &mut State, queue: &mpsc::Sender<u64>) -> Result<(), Error> {
        let mut redis = match state.redis.take() {
            Some(conn) => conn,
            None => self.redis.connect().await?,
        };
        self.discover(state, &mut redis).await?;
        self.check_due(state, &mut redis, queue).await?;
        // Kept only after a clean step: any error above drops it and the next tick reconnects.
        state.redis = Some(redis);
        Ok(())
    }

    /// Reads unpaid orders created since the last discovery and schedules their deadlines.
    async fn discover(
        &self,
        state: &mut State,
        redis: &mut MultiplexedConnection,
    ) -> Result<(), Error> {
        let window_start = state.since.checked_sub(OVERLAP).unwrap_or(state.since);
        let from = window_start.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let mut db = self
            .db
            .conn()
            .await
            .map_err(|e| self.db.error("connecting (deadline watcher)", e))?;
        let mut cursor: Option<(mysql_async::Value, u64)> = None;
        let mut newest = state.since;
        loop {
            let page: Vec<(u64, mysql_async::Value)> = match &cursor {
                None => db.exec(&self.first_page, (self.unpaid, &from)).await,
                Some((created, id)) => {
                    db.exec(&self.next_page, (self.unpaid, &from, created, id))
                        .await
                }
            }
            .map_err(|e| self.db.error("reading new unpaid orders", e))?;
            let fresh: Vec<(u64, jiff::civil::DateTime)> = page
                .iter()
                .filter(|(id, _)| !state.known.contains_key(id))
                .filter_map(|(id, created)| civil(created).map(|c| (*id, c)))
                .collect();
            if !fresh.is_empty() {
                let ttls = self.pttl(redis, fresh.iter().map(|(id, _)| *id)).await?;
                let now = (Instant::now(), jiff::Timestamp::now());
                for ((order, created), pttl) in fresh.into_iter().zip(ttls) {
                    state.known.insert(order, created);
                    newest = newest.max(created);
                    let at = match pttl {
                        ms if ms >= 0 => Some(now.0 + Duration::from_millis(ms.unsigned_abs())),
                        -2 => self.fallback_deadline(created, now),
                        _ => None, // a key without expiry: nothing will expire
                    };
                    if let Some(at) = at {
                        state.heap.push(Reverse(Due { at, order }));
                    }
                }
            }
            let full = page.len() == PAGE;
            match page.last() {
                Some((id, created)) if full => cursor = Some((created.clone(), *id)),
                _ => break,
            }
        }
        state.since = newest;
        state.known.retain(|_, created| *created >= window_start);
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

    /// Looks at every key whose deadline has come; queues the orders whose key is gone.
    async fn check_due(
        &self,
        state: &mut State,
        redis: &mut MultiplexedConnection,
        queue: &mpsc::Sender<u64>,
    ) -> Result<(), Error> {
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse(next)) = state.heap.peek() {
                if next.at > now || due.len() == PAGE {
                    break;
                }
                due.push(next.order);
                state.heap.pop();
            }
            if due.is_empty() {
                return Ok(());
            }
            // PTTL on a key past its TTL deletes it and publishes `expired` right now.
            let ttls = match self.pttl(redis, due.iter().copied()).await {
                Ok(ttls) => ttls,
                Err(e) => {
                    for order in due {
                        state.heap.push(Reverse(Due { at: now, order }));
                    }
                    return Err(e);
                }
            };
            for (order, pttl) in due.into_iter().zip(ttls) {
                match pttl {
                    // The key is gone: overdue (or paid and forgotten, which the writer sees).
                    -2 if queue.send(order).await.is_err() => return Ok(()),
                    -2 => {}
                    ms if ms >= 0 => state.heap.push(Reverse(Due {
                        at: now + Duration::from_millis(ms.unsigned_abs()),
                        order,
                    })),
                    _ => {}
                }
            }
        }
    }

    async fn pttl(
        &self,
        redis: &mut MultiplexedConnection,
        orders: impl Iterator<Item = u64>,
    ) -> Result<Vec<i64>, Error> {
        let mut pipe = redis::pipe();
        for order in orders {
            pipe.cmd("PTTL").arg(self.pattern.key_for(order));
        }
        pipe.query_async(redis)
            .await
            .map_err(|e| self.redis.command_error("PTTL (deadline watcher)", e))
    }
}

struct State {
    redis: Option<MultiplexedConnection>,
    /// The newest `created_at` discovered so far.
    since: jiff::civil::DateTime,
    /// Orders discovered in the overlap window, so a re-read does not schedule them twice.
    known: HashMap<u64, jiff::civil::DateTime>,
    heap: BinaryHeap<Reverse<Due>>,
}

/// A MySQL DATETIME/TIMESTAMP value as a civil date-time (the app's wall clock).
fn civil(value: &mysql_async::Value) -> Option<jiff::civil::DateTime> {
    match value {
        mysql_async::Value::Date(y, mo, d, h, mi, s, us) => jiff::civil::DateTime::new(
            i16::try_from(*y).ok()?,
            i8::try_from(*mo).ok()?,
            i8::try_from(*d).ok()?,
            i8::try_from(*h).ok()?,
            i8::try_from(*mi).ok()?,
            i8::try_from(*s).ok()?,
            i32::try_from(*us).ok()?.checked_mul(1000)?,
        )
        .ok(),
        mysql_async::Value::Bytes(text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}
