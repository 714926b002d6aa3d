//! The queue's tables, on either database: the Laravel job rows written in the cancel
//! transaction ([`write_jobs`]: the `jobs` table of the database queue, or the outbox of the
//! redis queue), the outbox drainer's claim and delete ([`OutboxStatements`]) and what waits
//! there ([`OutboxBacklog`], for `status`).

use super::{Conn, Database, DriverError, Tx};
pub(crate) use crate::mysql::jobs::{JobTable, OUTBOX_MIGRATION, OUTBOX_TABLE};
use crate::{mysql, pgsql};

/// Inserts one row per `(order, payload)` into `table`, inside `tx`; `now` in unix seconds.
pub(crate) async fn write_jobs(
    tx: &mut Tx<'_>,
    table: &JobTable,
    jobs: &[(u64, String)],
    now: i64,
) -> Result<(), DriverError> {
    match tx {
        Tx::Mysql(tx) => Ok(table.write(tx, jobs, now).await?),
        Tx::Pgsql(tx) => match table {
            JobTable::Jobs { table, queue } => {
                let payloads: Vec<&str> = jobs.iter().map(|(_, p)| p.as_str()).collect();
                Ok(pgsql::jobs::insert_jobs(tx, table, queue, &payloads, now).await?)
            }
            JobTable::Outbox { table } => {
                Ok(pgsql::jobs::insert_outbox(tx, table, jobs, now).await?)
            }
        },
    }
}

/// A claimed row of the outbox, before its payload is read.
pub(crate) use crate::mysql::jobs::ClaimedRow;

/// A row of the outbox read for its push: its id and its payload as stored (`None`: NULL).
pub(crate) type OutboxRow = (u64, Option<Vec<u8>>);

/// The drainer's statements on the outbox.
pub(crate) enum OutboxStatements {
    Mysql(mysql::jobs::OutboxStatements),
    Pgsql(pgsql::jobs::OutboxStatements),
}

fn claim_error(error: mysql::jobs::MysqlClaimError) -> DriverError {
    match error {
        mysql::jobs::MysqlClaimError::Server(e) => DriverError::Mysql(e),
        other => DriverError::Rows(other.to_string()),
    }
}

impl OutboxStatements {
    /// `page` rows at most per claim; `skip_locked` where the server has it.
    pub(crate) fn new(
        db: &Database,
        table: &crate::config::Ident,
        page: usize,
        skip_locked: bool,
    ) -> Self {
        match db {
            Database::Mysql(_) => Self::Mysql(mysql::jobs::OutboxStatements::new(
                table.clone(),
                page,
                skip_locked,
            )),
            Database::Pgsql(_) => Self::Pgsql(pgsql::jobs::OutboxStatements::new(table, page)),
        }
    }

    /// Locks the oldest rows after `after` no other drainer holds, leaving out `excluded`;
    /// reads their lengths, not their payloads.
    pub(crate) async fn claim(
        &self,
        tx: &mut Tx<'_>,
        after: u64,
        excluded: &[u64],
    ) -> Result<Vec<ClaimedRow>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => {
                s.claim(tx, after, excluded).await.map_err(claim_error)
            }
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s
                .claim(tx, after, excluded)
                .await?
                .into_iter()
                .map(|(id, order_id, bytes)| ClaimedRow {
                    id,
                    order_id,
                    bytes,
                })
                .collect()),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// The payloads of claimed rows `ids`, each as stored.
    pub(crate) async fn payloads(
        &self,
        tx: &mut Tx<'_>,
        ids: &[u64],
    ) -> Result<Vec<OutboxRow>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => s.payloads(tx, ids).await.map_err(claim_error),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.payloads(tx, ids).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// Deletes the pushed rows.
    pub(crate) async fn delete(&self, tx: &mut Tx<'_>, ids: &[u64]) -> Result<(), DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.delete(tx, ids).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.delete(tx, ids).await?),
            _ => Err(DriverError::Mismatch),
        }
    }
}

/// What waits in the outbox: how many rows (counted up to a bound) and when the oldest was
/// written.
pub(crate) enum OutboxBacklog {
    Mysql(mysql::jobs::OutboxBacklog),
    Pgsql(pgsql::jobs::OutboxBacklog),
}

impl OutboxBacklog {
    pub(crate) fn new(db: &Database, table: &crate::config::Ident) -> Self {
        match db {
            Database::Mysql(_) => Self::Mysql(mysql::jobs::OutboxBacklog::new(table)),
            Database::Pgsql(_) => Self::Pgsql(pgsql::jobs::OutboxBacklog::new(table)),
        }
    }

    /// The rows waiting, counting at most `at_most`.
    pub(crate) async fn count(&self, conn: &mut Conn, at_most: u64) -> Result<u64, DriverError> {
        match (self, conn) {
            (Self::Mysql(b), Conn::Mysql(c)) => Ok(b.count(c, at_most).await?),
            (Self::Pgsql(b), Conn::Pgsql(c)) => Ok(b.count(c, at_most).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// When the oldest waiting row was written, in unix seconds.
    pub(crate) async fn oldest(&self, conn: &mut Conn) -> Result<Option<i64>, DriverError> {
        match (self, conn) {
            (Self::Mysql(b), Conn::Mysql(c)) => Ok(b.oldest(c).await?),
            (Self::Pgsql(b), Conn::Pgsql(c)) => Ok(b.oldest(c).await?),
            _ => Err(DriverError::Mismatch),
        }
    }
}
