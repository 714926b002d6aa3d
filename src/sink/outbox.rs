//! The redis queue's transactional outbox: pushes the job rows the cancel transactions wrote
//! into `order_expire_outbox`, then deletes them.
//!
//! A Redis push cannot join a database transaction. So the payload commits with the cancellation,
//! and this drainer pushes it afterwards: right after each commit that wrote rows, at start
//! (rows a crash left behind), and every few seconds. A crash between the commit and the push
//! loses nothing: the row stays until a drain pushes it. A crash between the push and the
//! delete pushes that job again: the redis path is at least once, and the job should be
//! idempotent. Several workers may drain side by side: each claims rows with
//! `FOR UPDATE SKIP LOCKED` where the server has it, else waits for the other's claim.
//!
//! Memory is bounded whatever the rows hold: a claim reads the rows' lengths, not their
//! payloads, and one transaction reads payloads up to [`PAGE_BYTES`] (one row at least). A row
//! that cannot be pushed, its payload NULL, not UTF-8, or over [`MAX_PAYLOAD_BYTES`], is
//! parked: logged once (`outbox_row_parked`), left in the outbox for the operator, and left
//! out of the drains until the next start; the rows after it are pushed as usual.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::jobs::job_table;
use crate::config::{QueueTarget, Settings};
use crate::db::Database;
use crate::db::jobs::{ClaimedRow, OutboxBacklog, OutboxStatements};
use crate::redis::{RedisTarget, TargetOrigin};
use crate::stats::Stats;
use crate::stats::health::Heartbeat;

/// Rows claimed per transaction.
const PAGE: usize = 256;
/// Payload bytes read per transaction (more only when one row alone is bigger): with the copy
/// the push sends, what one drain holds in memory.
pub(crate) const PAGE_BYTES: u64 = 4 * 1024 * 1024;
/// The largest payload pushed; a bigger row is parked. A Laravel job's payload is a few KiB.
pub(crate) const MAX_PAYLOAD_BYTES: u64 = 4 * 1024 * 1024;
/// Parked rows remembered and left out of the claims; past that many, each drain reads the
/// others' lengths again (and skips them again, without logging them again).
const PARKED_REMEMBERED: usize = 1024;
/// The drain that catches rows nobody announced (another worker's, a crashed worker's).
const DRAIN_INTERVAL: Duration = Duration::from_secs(2);
/// The longest one drain (its pages' transactions and pushes) may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The backlog gauge counts at most this many rows.
const BACKLOG_COUNTED: u64 = 1_000_000;

/// Pushes the outbox's rows to the app's redis queue.
pub(crate) struct OutboxDrainer {
    db: Database,
    sql: OutboxStatements,
    backlog: OutboxBacklog,
    redis: RedisTarget,
    /// `<prefix>queues:<queue>`.
    list: String,
    written: Arc<Notify>,
}

/// Why a row of the outbox is not pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParkReason {
    NullPayload,
    TooLarge,
    NotUtf8,
}

impl ParkReason {
    fn name(self) -> &'static str {
        match self {
            Self::NullPayload => "null_payload",
            Self::TooLarge => "too_large",
            Self::NotUtf8 => "not_utf8",
        }
    }
}

/// The rows parked since the start.
#[derive(Debug, Default)]
struct Parked {
    /// Left out of the claims (at most [`PARKED_REMEMBERED`]).
    ids: BTreeSet<u64>,
    /// Parked past the remembered ones: skipped by each drain, logged once.
    more: BTreeSet<u64>,
}

impl Parked {
    /// Parks `row`, logging it the first time.
    fn park(&mut self, row: &ClaimedRow, reason: ParkReason) {
        if self.ids.contains(&row.id) || self.more.contains(&row.id) {
            return;
        }
        tracing::warn!(
            event = "outbox_row_parked",
            id = row.id,
            order_id = row.order_id,
            reason = reason.name(),
            bytes = row.bytes,
            limit = MAX_PAYLOAD_BYTES,
            "an outbox row cannot be pushed to the redis queue; it stays in the outbox, left alone until the next start: fix its payload or delete it"
        );
        if self.ids.len() < PARKED_REMEMBERED {
            self.ids.insert(row.id);
        } else if self.more.len() < 16 * PARKED_REMEMBERED {
            self.more.insert(row.id);
        }
    }

    fn count(&self) -> usize {
        self.ids.len() + self.more.len()
    }
}

/// What one transaction does with the rows it claimed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Rows whose payloads are read and pushed, in id order.
    read: Vec<u64>,
    /// Rows that cannot be pushed, and why.
    park: Vec<(ClaimedRow, ParkReason)>,
    /// The last row dealt with (read or parked): the next claim starts after it.
    last: u64,
}

/// Takes claimed rows in id order while their payloads fit [`PAGE_BYTES`] (the first always
/// does, up to [`MAX_PAYLOAD_BYTES`]), parking those that cannot be pushed.
fn plan(claimed: &[ClaimedRow]) -> Plan {
    let mut plan = Plan::default();
    let mut bytes = 0;
    for row in claimed {
        match row.bytes {
            None => plan.park.push((*row, ParkReason::NullPayload)),
            Some(n) if n > MAX_PAYLOAD_BYTES => plan.park.push((*row, ParkReason::TooLarge)),
            Some(n) => {
                if !plan.read.is_empty() && bytes + n > PAGE_BYTES {
                    break;
                }
                bytes += n;
                plan.read.push(row.id);
            }
        }
        plan.last = row.id;
    }
    plan
}

impl OutboxDrainer {
    /// The drainer for a redis queue; `None` for any other queue (or none). The queue's Redis
    /// is not needed to start: while it is down the jobs wait in the outbox.
    pub(crate) async fn new(
        settings: &Settings,
        db: Database,
        written: Arc<Notify>,
    ) -> Result<Option<Self>, crate::Error> {
        let Some(dispatch) = &settings.dispatch else {
            return Ok(None);
        };
        let QueueTarget::Redis { redis, prefix } = &dispatch.target else {
            return Ok(None);
        };
        let table = job_table(dispatch, settings.database.table_prefix(), &db)?;
        let skip_locked = db.has_skip_locked().await?;
        let target = RedisTarget::new(redis)?.with_origin(TargetOrigin::Queue {
            connection: dispatch.connection.clone(),
        });
        Ok(Some(Self {
            sql: OutboxStatements::new(&db, table.table(), PAGE, skip_locked),
            backlog: OutboxBacklog::new(&db, table.table()),
            db,
            redis: target,
            list: format!("{prefix}queues:{}", dispatch.queue),
            written,
        }))
    }

    /// Drains now, after every commit that wrote rows, and every [`DRAIN_INTERVAL`], until
    /// `shutdown`; then once more, so that a clean stop leaves nothing behind. `heartbeat`
    /// beats while it waits for the next drain, not while a drain waits for a server; a drain
    /// taking longer than [`DRAIN_TIMEOUT`] is dropped (its transaction rolls back, the rows stay)
    /// and tried again. After each drain the backlog and parked gauges are set.
    pub(crate) async fn run(
        self,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
        stats: Arc<Stats>,
    ) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut parked = Parked::default();
        let mut failing = false;
        loop {
            heartbeat.beat();
            let result = tokio::time::timeout(DRAIN_TIMEOUT, self.drain(&mut conn, &mut parked))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", DRAIN_TIMEOUT.as_secs())));
            match result {
                Ok(pushed) => {
                    if failing {
                        tracing::info!(event = "outbox_drains", "outbox drains again");
                        failing = false;
                    }
                    if pushed > 0 {
                        tracing::debug!(pushed, list = %self.list, "pushed jobs to the redis queue");
                    }
                }
                Err(error) => {
                    conn = None;
                    if !failing {
                        tracing::warn!(event = "outbox_failing", %error, "cannot push the outbox's jobs to the redis queue; they stay in the outbox and are pushed when it works again");
                        failing = true;
                    }
                }
            }
            self.measure(&stats, &parked).await;
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                () = self.written.notified() => {}
                () = heartbeat.idle(DRAIN_INTERVAL) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Sets `order_expire_outbox_backlog` (rows waiting, parked ones included) and
    /// `order_expire_outbox_parked`; a backlog that cannot be read keeps its last value.
    async fn measure(&self, stats: &Stats, parked: &Parked) {
        stats
            .outbox_parked
            .set(i64::try_from(parked.count()).unwrap_or(i64::MAX));
        let counted = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let mut conn = self.db.conn().await.ok()?;
            self.backlog.count(&mut conn, BACKLOG_COUNTED).await.ok()
        })
        .await;
        if let Ok(Some(rows)) = counted {
            stats
                .outbox_backlog
                .set(i64::try_from(rows).unwrap_or(i64::MAX));
        }
    }

    /// Pushes and deletes pages of rows, oldest first, until none is left after the last one
    /// dealt with (what is left is parked, or claimed by another drainer). Returns the jobs
    /// pushed.
    async fn drain(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        parked: &mut Parked,
    ) -> Result<usize, String> {
        let mut pushed = 0;
        let mut after = 0;
        loop {
            let (page, last) = self.drain_page(conn, after, parked).await?;
            pushed += page;
            match last {
                Some(last) => after = last,
                None => return Ok(pushed),
            }
        }
    }

    /// One transaction: claim, read what fits, push, delete, commit. Returns the jobs pushed
    /// and the last row dealt with (`None`: nothing was left to claim).
    async fn drain_page(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        after: u64,
        parked: &mut Parked,
    ) -> Result<(usize, Option<u64>), String> {
        let mut db_conn = self.db.conn().await.map_err(|e| e.to_string())?;
        let mut tx = db_conn.begin().await.map_err(|e| format!("BEGIN: {e}"))?;
        let excluded: Vec<u64> = parked
            .ids
            .iter()
            .copied()
            .filter(|id| *id > after)
            .collect();
        let claimed = self
            .sql
            .claim(&mut tx, after, &excluded)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        if claimed.is_empty() {
            tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
            return Ok((0, None));
        }
        let plan = plan(&claimed);
        for (row, reason) in &plan.park {
            parked.park(row, *reason);
        }
        let rows = self
            .sql
            .payloads(&mut tx, &plan.read)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut payloads = Vec::with_capacity(rows.len());
        for (id, payload) in rows {
            match payload.map(String::from_utf8) {
                Some(Ok(text)) => {
                    ids.push(id);
                    payloads.push(text);
                }
                Some(Err(_)) | None => {
                    if let Some(row) = claimed.iter().find(|r| r.id == id) {
                        parked.park(row, ParkReason::NotUtf8);
                    }
                }
            }
        }
        if !payloads.is_empty() {
            let redis = match conn {
                Some(c) => c,
                None => conn.insert(self.redis.connect().await.map_err(|e| e.to_string())?),
            };
            let texts: Vec<&str> = payloads.iter().map(String::as_str).collect();
            // Rolled back on failure (the transaction drops): the rows stay for the next drain.
            self.redis
                .push_jobs(redis, &self.list, &texts)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.sql
            .delete(&mut tx, &ids)
            .await
            .map_err(|e| format!("deleting pushed outbox rows: {e}"))?;
        tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
        Ok((ids.len(), Some(plan.last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, bytes: Option<u64>) -> ClaimedRow {
        ClaimedRow {
            id,
            order_id: id + 100,
            bytes,
        }
    }

    #[test]
    fn a_page_reads_payloads_up_to_its_bytes_and_parks_what_cannot_be_pushed() {
        let mb = 1024 * 1024;
        let claimed = [
            row(1, Some(mb)),
            row(2, None),
            row(3, Some(15 * mb)),
            row(4, Some(2 * mb)),
            row(5, Some(2 * mb)),
        ];
        let p = plan(&claimed);
        assert_eq!(p.read, vec![1, 4]);
        assert_eq!(
            p.park,
            vec![
                (claimed[1], ParkReason::NullPayload),
                (claimed[2], ParkReason::TooLarge)
            ]
        );
        assert_eq!(p.last, 4, "row 5 waits for the next page");
        let one = plan(&[row(9, Some(MAX_PAYLOAD_BYTES))]);
        assert_eq!(
            (one.read, one.last),
            (vec![9], 9),
            "one row alone always fits"
        );
        let parked_only = plan(&[row(7, None)]);
        assert_eq!((parked_only.read.len(), parked_only.last), (0, 7));
    }
}
