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

/// A claimed row: its id, its order and its payload's length in bytes (`None`: NULL).
pub(crate) type ClaimedRow = (u64, u64, Option<u64>);

/// A row read for its push: its id and its payload (`None`: NULL).
pub(crate) type OutboxRow = (u64, Option<Vec<u8>>);

/// The drainer's statements on the outbox.
pub(crate) struct OutboxStatements {
    claim: String,
    payloads: String,
    delete: String,
}

fn id(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn ids_param(ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .map(|i| i64::try_from(*i).unwrap_or(i64::MAX))
        .collect()
}

impl OutboxStatements {
    pub(crate) fn new(table: &Ident, page: usize) -> Self {
        let table = table.pg_quoted();
        Self {
            claim: format!(
                "SELECT \"id\"::int8, \"order_id\"::int8, octet_length(\"payload\")::int8 FROM {table} \
                 WHERE \"id\" > $1::int8 AND NOT (\"id\" = ANY($2::int8[])) \
                 ORDER BY \"id\" LIMIT {page} FOR UPDATE SKIP LOCKED"
            ),
            payloads: format!(
                "SELECT \"id\"::int8, \"payload\"::text FROM {table} WHERE \"id\" = ANY($1::int8[]) ORDER BY \"id\""
            ),
            delete: format!("DELETE FROM {table} WHERE \"id\" = ANY($1::int8[])"),
        }
    }

    /// Locks the oldest rows after `after` no other drainer holds, leaving out `excluded`;
    /// reads their lengths, not their payloads.
    pub(crate) async fn claim(
        &self,
        tx: &Transaction<'_>,
        after: u64,
        excluded: &[u64],
    ) -> Result<Vec<ClaimedRow>, PgQueryError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let statement = tx.prepare_cached(&self.claim).await?;
        let rows = tx
            .query(&statement, &[&after, &ids_param(excluded)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    id(r.get(0)),
                    id(r.get(1)),
                    r.get::<_, Option<i64>>(2).map(id),
                )
            })
            .collect())
    }

    /// The payloads of claimed rows `ids`.
    pub(crate) async fn payloads(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
    ) -> Result<Vec<OutboxRow>, PgQueryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let statement = tx.prepare_cached(&self.payloads).await?;
        let rows = tx.query(&statement, &[&ids_param(ids)]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    id(r.get(0)),
                    r.get::<_, Option<String>>(1).map(String::into_bytes),
                )
            })
            .collect())
    }

    /// Deletes the pushed rows.
    pub(crate) async fn delete(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
    ) -> Result<(), PgQueryError> {
        if ids.is_empty() {
            return Ok(());
        }
        let statement = tx.prepare_cached(&self.delete).await?;
        tx.execute(&statement, &[&ids_param(ids)]).await?;
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
