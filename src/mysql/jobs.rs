//! Every statement against the queue's tables: Laravel's `jobs` table (the database queue) and
//! our own outbox `order_expire_outbox` (the redis queue's rows waiting for their push).
//!
//! The inserts run inside the cancel transaction, one multi-row `INSERT` per chunk of a few
//! fixed sizes, so the per-connection statement cache holds a handful of statements.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Transaction, Value};

use super::{Database, MysqlError};
use crate::config::Ident;

/// Our outbox table, without the app's table prefix (the migration in `deploy/laravel/`).
pub(crate) const OUTBOX_TABLE: &str = "order_expire_outbox";
/// The migration that creates it, for error messages.
pub(crate) const OUTBOX_MIGRATION: &str =
    "deploy/laravel/2024_01_01_000000_create_order_expire_outbox_table.php";

/// Row counts a multi-row insert is prepared for.
const CHUNKS: [usize; 4] = [64, 8, 1, 512];

/// Where a batch's jobs are written.
#[derive(Debug, Clone)]
pub(crate) enum JobTable {
    /// Laravel's `jobs` table: `(queue, payload, attempts, reserved_at, available_at,
    /// created_at)` as `DatabaseQueue::buildDatabaseRecord` writes them.
    Jobs { table: Ident, queue: String },
    /// The outbox: `(order_id, payload, created_at)`, pushed to Redis after the commit.
    Outbox { table: Ident },
}

impl JobTable {
    pub(crate) fn table(&self) -> &Ident {
        match self {
            Self::Jobs { table, .. } | Self::Outbox { table } => table,
        }
    }

    /// `INSERT` of `rows` rows.
    fn insert(&self, rows: usize) -> String {
        match self {
            Self::Jobs { table, .. } => format!(
                "INSERT INTO {table} (`queue`, `payload`, `attempts`, `reserved_at`, `available_at`, `created_at`) VALUES {}",
                vec!["(?, ?, 0, NULL, ?, ?)"; rows].join(", ")
            ),
            Self::Outbox { table } => format!(
                "INSERT INTO {table} (`order_id`, `payload`, `created_at`) VALUES {}",
                vec!["(?, ?, ?)"; rows].join(", ")
            ),
        }
    }

    /// Inserts one row per `(order, payload)`, `now` in unix seconds.
    pub(crate) async fn write(
        &self,
        tx: &mut Transaction<'_>,
        jobs: &[(u64, String)],
        now: i64,
    ) -> Result<(), mysql_async::Error> {
        let mut rest = jobs;
        while !rest.is_empty() {
            let size = chunk_size(rest.len());
            let (chunk, after) = rest.split_at(size);
            let mut params: Vec<Value> = Vec::with_capacity(size * 4);
            for (order, payload) in chunk {
                match self {
                    Self::Jobs { queue, .. } => {
                        params.push(queue.as_str().into());
                        params.push(payload.as_str().into());
                        params.push(now.into());
                        params.push(now.into());
                    }
                    Self::Outbox { .. } => {
                        params.push((*order).into());
                        params.push(payload.as_str().into());
                        params.push(now.into());
                    }
                }
            }
            tx.exec_drop(self.insert(size), Params::Positional(params))
                .await?;
            rest = after;
        }
        Ok(())
    }
}

/// The largest prepared row count that fits `n`.
fn chunk_size(n: usize) -> usize {
    CHUNKS
        .iter()
        .copied()
        .filter(|c| *c <= n)
        .max()
        .unwrap_or(1)
}

/// A claimed row of the outbox, before its payload is read: its id, its order, and its
/// payload's length in bytes (`None`: the payload is NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimedRow {
    pub(crate) id: u64,
    pub(crate) order_id: u64,
    pub(crate) bytes: Option<u64>,
}

/// A row of the outbox read for its push: its id and its payload as stored (`None`: NULL).
pub(crate) type OutboxRow = (u64, Option<Vec<u8>>);
impl Database {
    /// Fails with the migration to run when `table` does not exist.
    pub(crate) async fn require_table(&self, table: &Ident, fix: &str) -> Result<(), MysqlError> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let found: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table.as_str(),),
            )
            .await
            .map_err(|e| self.error("reading information_schema.TABLES", e))?;
        if found.unwrap_or(0) == 0 {
            return Err(self.schema_error(format!("table {table} does not exist: {fix}")));
        }
        Ok(())
    }
}

/// The drainer's statements on the outbox.
pub(crate) struct OutboxStatements {
    table: Ident,
    page: usize,
    skip: &'static str,
}

impl OutboxStatements {
    /// `page` rows at most per claim; `skip_locked` where the server has it.
    pub(crate) fn new(table: Ident, page: usize, skip_locked: bool) -> Self {
        Self {
            table,
            page,
            skip: if skip_locked { " SKIP LOCKED" } else { "" },
        }
    }

    /// Locks the oldest rows after `after` no other drainer holds, leaving out `excluded`
    /// (rows parked already); reads their lengths, not their payloads, so that no row is
    /// brought into memory before its size is known.
    pub(crate) async fn claim(
        &self,
        tx: &mut Transaction<'_>,
        after: u64,
        excluded: &[u64],
    ) -> Result<Vec<ClaimedRow>, MysqlClaimError> {
        let not_in = if excluded.is_empty() {
            String::new()
        } else {
            format!(
                " AND `id` NOT IN ({})",
                vec!["?"; excluded.len()].join(", ")
            )
        };
        let sql = format!(
            "SELECT `id`, `order_id`, LENGTH(`payload`) FROM {} WHERE `id` > ?{not_in} ORDER BY `id` LIMIT {} FOR UPDATE{}",
            self.table, self.page, self.skip
        );
        let mut params: Vec<Value> = Vec::with_capacity(excluded.len() + 1);
        params.push(after.into());
        params.extend(excluded.iter().map(|id| Value::from(*id)));
        let rows: Vec<Row> = tx
            .exec(sql, Params::Positional(params))
            .await
            .map_err(MysqlClaimError::Server)?;
        rows.into_iter()
            .map(|row| {
                let (id, order_id, bytes) =
                    mysql_async::from_row_opt::<(u64, u64, Option<u64>)>(row)
                        .map_err(|e| MysqlClaimError::Row(e.to_string()))?;
                Ok(ClaimedRow {
                    id,
                    order_id,
                    bytes,
                })
            })
            .collect()
    }

    /// The payloads of claimed rows `ids`, each as stored.
    pub(crate) async fn payloads(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[u64],
    ) -> Result<Vec<OutboxRow>, MysqlClaimError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT `id`, `payload` FROM {} WHERE `id` IN ({}) ORDER BY `id`",
            self.table,
            vec!["?"; ids.len()].join(", ")
        );
        let rows: Vec<Row> = tx
            .exec(sql, ids.to_vec())
            .await
            .map_err(MysqlClaimError::Server)?;
        rows.into_iter()
            .map(|row| {
                mysql_async::from_row_opt::<OutboxRow>(row)
                    .map_err(|e| MysqlClaimError::Row(e.to_string()))
            })
            .collect()
    }

    /// Deletes the pushed rows.
    pub(crate) async fn delete(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[u64],
    ) -> Result<(), mysql_async::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM {} WHERE `id` IN ({})",
            self.table,
            vec!["?"; ids.len()].join(", ")
        );
        tx.exec_drop(sql, ids.to_vec()).await
    }
}

/// Reading the outbox failed: the server refused, or a row is not of the migration's types.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MysqlClaimError {
    #[error("{0}")]
    Server(mysql_async::Error),
    #[error("a row of the outbox is not (id, order_id, payload) as the migration creates it: {0}")]
    Row(String),
}

/// What waits in the outbox, as `status` reports it: how many rows (counted up to a bound) and
/// when the oldest was written.
pub(crate) struct OutboxBacklog {
    count: String,
    oldest: String,
}

impl OutboxBacklog {
    pub(crate) fn new(table: &Ident) -> Self {
        Self {
            count: format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT ?) AS backlog"),
            // Rows are written in id order: the smallest id is the oldest row.
            oldest: format!("SELECT `created_at` FROM {table} ORDER BY `id` LIMIT 1"),
        }
    }

    /// The rows waiting, counting at most `at_most`.
    pub(crate) async fn count(
        &self,
        conn: &mut Conn,
        at_most: u64,
    ) -> Result<u64, mysql_async::Error> {
        let n: Option<u64> = conn.exec_first(&self.count, (at_most,)).await?;
        Ok(n.unwrap_or(0))
    }

    /// When the oldest waiting row was written, in unix seconds; `None` when the outbox is empty.
    pub(crate) async fn oldest(&self, conn: &mut Conn) -> Result<Option<i64>, mysql_async::Error> {
        conn.query_first(&self.oldest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_a_few_chunk_sizes() {
        let mut sizes = Vec::new();
        let mut n = 600;
        while n > 0 {
            let s = chunk_size(n);
            sizes.push(s);
            n -= s;
        }
        assert_eq!(sizes, vec![512, 64, 8, 8, 8]);
        assert_eq!(chunk_size(1), 1);
    }
}
