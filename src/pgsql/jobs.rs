//! Every statement against the queue's tables on PostgreSQL: Laravel's `jobs` table (the
//! database queue) and our outbox (the redis queue's rows waiting for their push). Each insert
//! is one statement for any number of rows (`unnest` of array parameters).

use deadpool_postgres::{Object, Transaction};

use super::error::PgQueryError;
use crate::config::Ident;

/// Inserts one `jobs` row per payload, as `DatabaseQueue::buildDatabaseRecord` writes them.
pub(crate) async fn insert_jobs(
    tx: &Transaction<'_>,
    table: &Ident,
    queue: &str,
    payloads: &[&str],
    now: i64,
) -> Result<(), PgQueryError> {
    let sql = format!(
        "INSERT INTO {} (\"queue\", \"payload\", \"attempts\", \"reserved_at\", \"available_at\", \"created_at\") \
         SELECT $1::text, p, 0, NULL, $3::int8, $3::int8 FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
        table.pg_quoted()
    );
    let statement = tx.prepare_cached(&sql).await?;
    tx.execute(&statement, &[&queue, &payloads, &now]).await?;
    Ok(())
}

/// Inserts one outbox row per `(order, payload)`.
pub(crate) async fn insert_outbox(
    tx: &Transaction<'_>,
    table: &Ident,
    jobs: &[(u64, String)],
    now: i64,
) -> Result<(), PgQueryError> {
    let sql = format!(
        "INSERT INTO {} (\"order_id\", \"payload\", \"created_at\") \
         SELECT o, p, $3::int8 FROM unnest($1::int8[], $2::text[]) WITH ORDINALITY AS t(o, p, n) ORDER BY n",
        table.pg_quoted()
    );
    let orders: Vec<i64> = jobs
        .iter()
        .map(|(o, _)| i64::try_from(*o).unwrap_or(i64::MAX))
        .collect();
    let payloads: Vec<&str> = jobs.iter().map(|(_, p)| p.as_str()).collect();
    let statement = tx.prepare_cached(&sql).await?;
    tx.execute(&statement, &[&orders, &payloads, &now]).await?;
    Ok(())
}

/// A row of the outbox: its id and the payload to push.
pub(crate) type OutboxRow = (u64, String);

/// The drainer's statements on the outbox.
pub(crate) struct OutboxStatements {
    claim: String,
    delete: String,
}

impl OutboxStatements {
    pub(crate) fn new(table: &Ident, page: usize) -> Self {
        let table = table.pg_quoted();
        Self {
            claim: format!(
                "SELECT \"id\"::int8, \"payload\" FROM {table} ORDER BY \"id\" LIMIT {page} FOR UPDATE SKIP LOCKED"
            ),
            delete: format!("DELETE FROM {table} WHERE \"id\" = ANY($1::int8[])"),
        }
    }

    /// Locks the oldest rows no other drainer holds.
    pub(crate) async fn claim(&self, tx: &Transaction<'_>) -> Result<Vec<OutboxRow>, PgQueryError> {
        let statement = tx.prepare_cached(&self.claim).await?;
        let rows = tx.query(&statement, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1)))
            .collect())
    }

    /// Deletes the pushed rows.
    pub(crate) async fn delete(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
    ) -> Result<(), PgQueryError> {
        let ids: Vec<i64> = ids
            .iter()
            .map(|i| i64::try_from(*i).unwrap_or(i64::MAX))
            .collect();
        let statement = tx.prepare_cached(&self.delete).await?;
        tx.execute(&statement, &[&ids]).await?;
        Ok(())
    }
}

/// What waits in the outbox, as `status` reports it.
pub(crate) struct OutboxBacklog {
    count: String,
    oldest: String,
}

impl OutboxBacklog {
    pub(crate) fn new(table: &Ident) -> Self {
        let table = table.pg_quoted();
        Self {
            count: format!(
                "SELECT COUNT(*)::int8 FROM (SELECT 1 FROM {table} LIMIT $1::int8) AS backlog"
            ),
            oldest: format!("SELECT \"created_at\"::int8 FROM {table} ORDER BY \"id\" LIMIT 1"),
        }
    }

    pub(crate) async fn count(&self, conn: &Object, at_most: u64) -> Result<u64, PgQueryError> {
        let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
        let row = conn.query_one(&self.count, &[&at_most]).await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    pub(crate) async fn oldest(&self, conn: &Object) -> Result<Option<i64>, PgQueryError> {
        let row = conn.query_opt(&self.oldest, &[]).await?;
        Ok(row.map(|r| r.get(0)))
    }
}
