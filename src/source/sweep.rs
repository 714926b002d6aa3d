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
//!   exactly-once transaction as an event, so a sweep racing an event is harmless.

use mysql_async::prelude::Queryable;
use redis::aio::MultiplexedConnection;

use crate::config::{Schema, Settings, TimeZoneSetting};
use crate::error::Error;
use crate::key::KeyPattern;
use crate::queue::{Origin, QueueSender};
use crate::sink::Database;
use crate::source::redis::RedisTarget;

/// Orders read (and keys checked) per round trip.
const PAGE: usize = 1000;

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    /// Unpaid orders older than the TTL that were examined.
    pub examined: usize,
    /// Those whose key is gone: handed to the writer.
    pub overdue: usize,
    /// Those whose key still exists (a longer TTL in the app): left for their own event.
    pub still_keyed: usize,
}

pub struct Reconciler {
    db: Database,
    redis: RedisTarget,
    pattern: KeyPattern,
    timezone: TimeZoneSetting,
    ttl: std::time::Duration,
    unpaid: i64,
    first_page: String,
    next_page: String,
}

impl Reconciler {
    /// `None` when the app's TTL is not configured: without it, a missing key cannot tell an
    /// overdue order from one whose key was flushed early.
    pub fn new(settings: &Settings, db: Database, redis: RedisTarget) -> Option<Self> {
        let ttl = settings.recovery.order_ttl?;
        let Schema {
            orders,
            order_status: status,
            paid_column,
            ..
        } = &settings.schema;
        let id = Schema::id_column();
        let created = Schema::created_at_column();
        // Orders the app marked paid are not candidates, whatever their status.
        let not_paid = paid_column
            .as_ref()
            .map(|paid| format!(" AND {paid} IS NULL"))
            .unwrap_or_default();
        let select = format!(
            "SELECT {id}, {created} FROM {orders} WHERE {status} = ?{not_paid} AND {created} IS NOT NULL AND {created} <= ?"
        );
        Some(Self {
            first_page: format!("{select} ORDER BY {created}, {id} LIMIT {PAGE}"),
            next_page: format!(
                "{select} AND {created} >= ? AND ({created} > ? OR {id} > ?) ORDER BY {created}, {id} LIMIT {PAGE}"
            ),
            db,
            redis,
            pattern: KeyPattern::new(&settings.keys),
            timezone: settings.timezone.clone(),
            ttl,
            unpaid: settings.schema.unpaid_status,
        })
    }

    /// One pass over the overdue unpaid orders; each one without a key is sent to `overdue`.
    pub async fn sweep(&self, overdue: &QueueSender) -> Result<SweepSummary, Error> {
        let cutoff = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(self.ttl).unwrap_or(jiff::SignedDuration::MAX),
            )
            .map(|ts| self.timezone.eloquent(ts))
            .map_err(|e| Error::Runtime(format!("ORDER_EXPIRE_TTL is too large: {e}")))?;
        let mut db = self
            .db
            .conn()
            .await
            .map_err(|e| self.db.error("connecting for a sweep", e))?;
        let mut redis = self.redis.connect().await?;
        let mut summary = SweepSummary::default();
        let mut cursor: Option<(mysql_async::Value, u64)> = None;
        loop {
            let page: Vec<(u64, mysql_async::Value)> = match &cursor {
                None => db.exec(&self.first_page, (self.unpaid, &cutoff)).await,
                Some((created, id)) => {
                    db.exec(
                        &self.next_page,
                        (self.unpaid, &cutoff, created, created, id),
                    )
                    .await
                }
            }
            .map_err(|e| self.db.error("reading overdue unpaid orders", e))?;
            let Some((last_id, last_created)) = page.last().cloned() else {
                break;
            };
            let ids: Vec<u64> = page.iter().map(|(id, _)| *id).collect();
            let exists = self.exists(&mut redis, &ids).await?;
            for (id, exists) in ids.iter().zip(exists) {
                summary.examined += 1;
                if exists {
                    summary.still_keyed += 1;
                } else {
                    summary.overdue += 1;
                    if overdue.send(*id, Origin::Sweep).await.is_err() {
                        return Ok(summary); // the worker is stopping
                    }
                }
            }
            if page.len() < PAGE {
                break;
            }
            cursor = Some((last_created, last_id));
        }
        Ok(summary)
    }

    async fn exists(
        &self,
        redis: &mut MultiplexedConnection,
        ids: &[u64],
    ) -> Result<Vec<bool>, Error> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(self.pattern.key_for(*id));
        }
        pipe.query_async(redis)
            .await
            .map_err(|e| self.redis.command_error("EXISTS (sweep)", e))
    }
}
