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

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::jobs::job_table;
use crate::config::{QueueTarget, Settings};
use crate::db::Database;
use crate::db::jobs::OutboxStatements;
use crate::redis::RedisTarget;
use crate::stats::health::Heartbeat;

/// Rows claimed and pushed per transaction.
const PAGE: usize = 256;
/// The drain that catches rows nobody announced (another worker's, a crashed worker's).
const DRAIN_INTERVAL: Duration = Duration::from_secs(2);
/// The longest one drain (its pages' transactions and pushes) may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Pushes the outbox's rows to the app's redis queue.
pub(crate) struct OutboxDrainer {
    db: Database,
    sql: OutboxStatements,
    redis: RedisTarget,
    /// `<prefix>queues:<queue>`.
    list: String,
    written: Arc<Notify>,
}

impl OutboxDrainer {
    /// The drainer for a redis queue; `None` for any other queue (or none).
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
        let target = RedisTarget::new(redis)?;
        // Fail at start, not at the first cancellation, when the queue's Redis is unreachable.
        drop(target.connect().await?);
        Ok(Some(Self {
            sql: OutboxStatements::new(&db, table.table(), PAGE, skip_locked),
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
    /// and tried again.
    pub(crate) async fn run(self, shutdown: CancellationToken, heartbeat: Heartbeat) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut failing = false;
        loop {
            heartbeat.beat();
            let result = tokio::time::timeout(DRAIN_TIMEOUT, self.drain(&mut conn))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", DRAIN_TIMEOUT.as_secs())));
            match result {
                Ok(pushed) => {
                    if failing {
                        tracing::info!("outbox drains again");
                        failing = false;
                    }
                    if pushed > 0 {
                        tracing::debug!(pushed, list = %self.list, "pushed jobs to the redis queue");
                    }
                }
                Err(error) => {
                    conn = None;
                    if !failing {
                        tracing::warn!(%error, "cannot push the outbox's jobs to the redis queue; they stay in the outbox and are pushed when it works again");
                        failing = true;
                    }
                }
            }
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

    /// Pushes and deletes pages of rows until the outbox is empty (or what is left is claimed
    /// by another drainer). Returns the jobs pushed.
    async fn drain(&self, conn: &mut Option<MultiplexedConnection>) -> Result<usize, String> {
        let mut pushed = 0;
        loop {
            let page = self.drain_page(conn).await?;
            pushed += page;
            if page < PAGE {
                return Ok(pushed);
            }
        }
    }

    /// One transaction: claim, push, delete, commit.
    async fn drain_page(&self, conn: &mut Option<MultiplexedConnection>) -> Result<usize, String> {
        let mut db_conn = self.db.conn().await.map_err(|e| e.to_string())?;
        let mut tx = db_conn.begin().await.map_err(|e| format!("BEGIN: {e}"))?;
        let rows = self
            .sql
            .claim(&mut tx)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        if rows.is_empty() {
            tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
            return Ok(0);
        }
        let redis = match conn {
            Some(c) => c,
            None => conn.insert(self.redis.connect().await.map_err(|e| e.to_string())?),
        };
        let payloads: Vec<&str> = rows.iter().map(|(_, p)| p.as_str()).collect();
        // Rolled back on failure (the transaction drops): the rows stay for the next drain.
        self.redis
            .push_jobs(redis, &self.list, &payloads)
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<u64> = rows.iter().map(|(id, _)| *id).collect();
        self.sql
            .delete(&mut tx, &ids)
            .await
            .map_err(|e| format!("deleting pushed outbox rows: {e}"))?;
        tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
        Ok(rows.len())
    }
}
