//! Reconciliation: finds unpaid orders whose deadline has passed but whose event never came.
//!
//! Pub/sub is fire-and-forget. Events published while no worker was subscribed (a restart, a
//! reconnect, a Redis restart without persistence, `php artisan cache:clear`, eviction) are gone,
//! and their orders would stay unpaid forever. The database is the truth; a sweep asks it:
//!
//! * candidates are unpaid orders created at least `ORDER_EXPIRE_TTL` ago, read in pages of
//!   `(created_at, id)` keyset order, which the `(status, created_at)` index serves as a range
//!   scan: a sweep reads only the unpaid, overdue orders, never the whole table;
//! * for each page one pipelined `EXISTS` per order key asks Redis whether the key is still
//!   there. A key that still exists means the app gave it a longer TTL (its own deadline has not
//!   passed): skip. `EXISTS` on a key whose TTL has passed makes Redis delete it and publish
//!   `expired` at once, so the sweep also flushes keys that Redis's lazy expiry has not reached;
//! * an order whose key is gone is overdue: it goes into the writer queue and through the same
//!   exactly-once transaction as an event, so a sweep racing an event is harmless. It carries
//!   how long past `created_at + ORDER_EXPIRE_TTL` it already is, for the lateness metric.

use std::time::Duration;

use super::error::SourceError;
use super::progress::Progress;
use crate::config::{Settings, TimeZoneSetting};
use crate::db::Database;
use crate::db::orders::{CreatedAt, ReconcileQueries};
use crate::key::KeyPattern;
use crate::queue::{Origin, QueueSender};
use crate::redis::{RedisServers, RoutedConnection};
use crate::stats::health::Heartbeat;

/// Orders read (and keys checked) per round trip.
const PAGE: usize = 1000;

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SweepSummary {
    /// Unpaid orders older than the TTL that were examined.
    pub(crate) examined: usize,
    /// Those whose key is gone: handed to the writer.
    pub(crate) overdue: usize,
    /// Those whose key still exists (a longer TTL in the app): left for their own event.
    pub(crate) still_keyed: usize,
    /// Those whose key's master did not answer: left for the next sweep (a dead master stops
    /// its own slots' orders, not the others').
    pub(crate) unknown: usize,
}

pub(crate) struct Reconciler {
    db: Database,
    redis: RedisServers,
    pattern: KeyPattern,
    timezone: TimeZoneSetting,
    ttl: std::time::Duration,
    sql: ReconcileQueries,
}

impl Reconciler {
    /// `None` when the app's TTL is not configured: without it, a missing key cannot tell an
    /// overdue order from one whose key was flushed early.
    /// `pattern` is the worker's one [`KeyPattern`], built at start.
    pub(crate) fn new(
        settings: &Settings,
        db: Database,
        redis: RedisServers,
        pattern: KeyPattern,
    ) -> Option<Self> {
        let ttl = settings.recovery.order_ttl?;
        Some(Self {
            sql: ReconcileQueries::new(&db, &settings.schema, PAGE),
            db,
            redis,
            pattern,
            timezone: settings.timezone.clone(),
            ttl,
        })
    }

    /// One pass over the overdue unpaid orders; each one without a key is sent to `overdue`.
    /// `heartbeat` beats every page, and while waiting for room in the queue. With `progress`,
    /// the candidates are counted first (one read of the index range the pages walk), and
    /// each page advances it.
    pub(crate) async fn sweep(
        &self,
        overdue: &QueueSender,
        heartbeat: &Heartbeat,
        progress: Option<&dyn Progress>,
    ) -> Result<SweepSummary, SourceError> {
        // The TTL is bounded when the settings are read, so the cutoff cannot underflow; were
        // it to, the earliest time selects no order, so nothing is cancelled early.
        let cutoff = self.timezone.eloquent(
            jiff::Timestamp::now()
                .checked_sub(
                    jiff::SignedDuration::try_from(self.ttl).unwrap_or(jiff::SignedDuration::MAX),
                )
                .unwrap_or(jiff::Timestamp::MIN),
        );
        let mut db = self
            .db
            .conn()
            .await
            .map_err(|e| self.db.error("connecting for a sweep", e))?;
        let mut redis = self.redis.connect().await?;
        if let Some(progress) = progress {
            let total = self
                .sql
                .count(&mut db, &cutoff, u64::MAX)
                .await
                .map_err(|e| self.db.error("counting overdue unpaid orders", e))?;
            progress.start(total);
        }
        let mut summary = SweepSummary::default();
        let mut cursor: Option<(CreatedAt, u64)> = None;
        loop {
            heartbeat.beat();
            let page = self
                .sql
                .page(&mut db, &cutoff, cursor.as_ref())
                .await
                .map_err(|e| self.db.error("reading overdue unpaid orders", e))?;
            let Some((last_id, last_created)) = page.last().cloned() else {
                break;
            };
            let ids: Vec<u64> = page.iter().map(|(id, _)| *id).collect();
            let exists = self.exists(&mut redis, &ids).await?;
            let now = jiff::Timestamp::now();
            for ((id, created), exists) in page.iter().zip(exists) {
                summary.examined += 1;
                let Some(exists) = exists else {
                    summary.unknown += 1;
                    continue;
                };
                if exists {
                    summary.still_keyed += 1;
                } else {
                    summary.overdue += 1;
                    let late = self.overdue_by(created, now);
                    let sent = overdue.send_overdue(*id, Origin::Sweep, late);
                    if heartbeat.waiting(sent).await.is_err() {
                        return Ok(summary); // the worker is stopping
                    }
                }
            }
            if let Some(progress) = progress {
                progress.advance(summary.examined as u64);
            }
            if page.len() < PAGE {
                break;
            }
            cursor = Some((last_created, last_id));
        }
        if let Some(progress) = progress {
            progress.finish(summary.examined as u64);
        }
        Ok(summary)
    }

    /// How long past its deadline (`created_at + ORDER_EXPIRE_TTL`, in the app's time zone) an
    /// order created at `created` is at `now`; zero when that cannot be read.
    fn overdue_by(&self, created: &CreatedAt, now: jiff::Timestamp) -> Duration {
        let deadline = created
            .civil()
            .and_then(|c| c.to_zoned(self.timezone.tz.clone()).ok())
            .and_then(|z| {
                let ttl = jiff::SignedDuration::try_from(self.ttl).ok()?;
                z.timestamp().checked_add(ttl).ok()
            });
        deadline
            .and_then(|d| Duration::try_from(now.duration_since(d)).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether each order's key exists; `None` where its master did not answer. Fails only
    /// when no master holding one of them answered.
    async fn exists(
        &self,
        redis: &mut RoutedConnection,
        ids: &[u64],
    ) -> Result<Vec<Option<bool>>, SourceError> {
        let keys = ids.iter().map(|id| self.pattern.key_for(*id));
        let (answers, failures) = redis.exists(keys, "sweep").await?.answered()?;
        for failure in &failures {
            tracing::debug!(error = %failure, "a Redis master did not answer the sweep; its orders wait for the next sweep");
        }
        Ok(answers)
    }
}
