//! Cancelling orders, exactly once, in batches.
//!
//! Keyspace events are delivered to every subscriber, sometimes twice, and a failed write is
//! retried; the database is what makes the side effect happen once. Per batch of orders, one
//! transaction:
//!
//! 1. `SELECT ... WHERE id IN (...) ORDER BY id FOR UPDATE` locks the order rows, in id order;
//!    a second worker handling the same orders waits here until the first commits, then sees
//!    them cancelled. On a server with `FOR UPDATE SKIP LOCKED` ([`WritePath`]) the rows
//!    another transaction holds are skipped instead, and a plain read of the ids not returned
//!    tells the held ones (still unpaid: [`Outcome::Busy`], tried again shortly) from the
//!    missing ones;
//! 2. only orders still in the unpaid status are touched: paid, already cancelled or missing
//!    orders write nothing;
//! 3. one `UPDATE orders SET status = <cancelled>, updated_at = <now in the app's time zone>
//!    WHERE id IN (...) AND status = <unpaid>`; the row count must equal the number of unpaid
//!    orders locked, or the batch is rolled back;
//! 4. the quantities, summed per product, go back to `products.stock` in one `UPDATE` (rows are
//!    locked in primary-key order, so concurrent batches cannot deadlock), touching
//!    `products.updated_at` as Eloquent's `increment()` would;
//! 5. with `ORDER_EXPIRE_DISPATCH`, one Laravel job row per order cancelled in step 3 (the
//!    `jobs` table, or the outbox for a redis queue: [`super::jobs`]);
//! 6. commit. Any error rolls the whole batch back and the caller retries it.
//!
//! A batch of one is the low-latency case; under a burst, batches of hundreds turn one commit
//! (one fsync) per order into one per batch, which is where the throughput comes from.
//!
//! `updated_at` is the literal `Y-m-d H:i:s` in the app time zone that Eloquent sends, not
//! `NOW()`, which would follow the server's time zone instead.
//!
//! The statements themselves live in the adapters (`crate::mysql::orders`,
//! `crate::pgsql::orders`), behind [`crate::db::orders`]; this module decides what to run
//! and what each order's outcome is.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::jobs::JobSink;
use crate::config::{Schema, TimeZoneSetting};
pub(crate) use crate::db::orders::MAX_BATCH;
use crate::db::orders::{LockedOrder, OrderLine, WriteStatements};
use crate::db::{Conn, Database, DbError, DriverError, Tx};
use crate::mysql::write_path::WritePath;

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Cancelled now; `units` items went back to stock. `missing_products` lists product ids
    /// whose row no longer exists (their stock could not be returned).
    Cancelled {
        units: u64,
        missing_products: Vec<u64>,
    },
    /// Already cancelled (by another worker, or an earlier event for the same key): nothing
    /// written.
    AlreadyCancelled,
    /// In another status (paid, shipped...): nothing written.
    NotUnpaid { status: i64 },
    /// Still in the unpaid status, but its paid column (`ORDER_EXPIRE_PAID_COLUMN`) is set: the
    /// app took the payment, so nothing is written.
    Paid,
    /// No such order: nothing written.
    Missing,
    /// Still unpaid, but another transaction holds its row (the app in the middle of a
    /// payment, another worker), so `SKIP LOCKED` skipped it: nothing written now, and the
    /// dispatcher tries it again shortly. Never seen on the waiting path.
    Busy,
}

/// The longest one batch's transaction may take, its lock waits (5 s at most for each locking
/// statement) and its `COMMIT` included; past it the connection is abandoned.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long reading back the orders of a `COMMIT` without reply may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(8);

/// What a transaction wrote, kept from just before its `COMMIT` until its reply.
struct Committing {
    ids: Vec<u64>,
    found: Found,
    paid: Vec<u64>,
    busy: Vec<u64>,
    lines: Lines,
    unpaid: Vec<u64>,
    /// The `updated_at` it wrote.
    now: String,
}

/// The locked orders by id: status, and product and quantity when they are on the order row.
type Found = BTreeMap<u64, (i64, Option<u64>, Option<i64>)>;

/// The lines of the unpaid orders: units per product (what goes back to stock), and each
/// order's `(product, units)` (for its outcome).
#[derive(Default)]
struct Lines {
    per_product: BTreeMap<u64, u64>,
    per_order: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl Lines {
    /// Sums `lines`, skipping zero and negative quantities (nothing to return).
    fn sum(lines: impl IntoIterator<Item = OrderLine>) -> Self {
        let mut sums = Self::default();
        for (order, product, quantity) in lines {
            let Ok(quantity) = u64::try_from(quantity) else {
                continue;
            };
            if quantity == 0 {
                continue;
            }
            *sums.per_product.entry(product).or_default() += quantity;
            sums.per_order
                .entry(order)
                .or_default()
                .push((product, quantity));
        }
        sums
    }
}

/// Cancels orders in the app's database.
pub(crate) struct Writer {
    db: Database,
    sql: WriteStatements,
    unpaid: i64,
    cancelled: i64,
    timezone: TimeZoneSetting,
    /// The job written per cancelled order, when the app wants one.
    jobs: Option<JobSink>,
    /// Whether held rows are waited for or skipped, and why.
    path: (WritePath, &'static str),
}

impl Writer {
    /// Checks the schema and prepares the statements.
    pub(crate) async fn new(
        db: Database,
        schema: &Schema,
        timezone: TimeZoneSetting,
    ) -> Result<Self, DbError> {
        Ok(Self {
            sql: WriteStatements::prepare(&db, schema).await?,
            db,
            unpaid: schema.unpaid_status,
            cancelled: schema.cancelled_status,
            timezone,
            jobs: None,
            path: (WritePath::LockWait, "every server has it"),
        })
    }

    /// Locks rows the way of `path` (the waiting path until told otherwise: every server has
    /// it).
    pub(crate) fn with_write_path(mut self, path: WritePath, why: &'static str) -> Self {
        self.path = (path, why);
        self
    }

    /// The path in use and why it was chosen.
    pub(crate) fn write_path(&self) -> (WritePath, &'static str) {
        self.path
    }

    /// Writes a Laravel job per cancelled order in the cancel transaction (step 5).
    pub(crate) fn with_jobs(mut self, jobs: Option<JobSink>) -> Self {
        self.jobs = jobs;
        self
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    pub(crate) fn into_database(self) -> Database {
        self.db
    }

    /// Cancels the unpaid orders among `orders` (at most [`MAX_BATCH`], no duplicates) and
    /// returns their stock, all in one transaction: the steps of this module's doc, each a
    /// function below. Returns an outcome per order, in id order.
    ///
    /// The transaction is bounded by [`TRANSACTION_TIMEOUT`]. When it runs out, or the
    /// connection breaks, the connection is abandoned (killed from another one on MySQL, its
    /// statement cancelled and the connection closed on PostgreSQL), so the server rolls back at
    /// once whatever it still holds (it would after [`crate::db::IDLE_IN_TRANSACTION`] anyway).
    /// If the `COMMIT` had been sent, its outcome is unknown: the orders are read again under
    /// lock, and if the server did commit, the batch counts as written (its counters and log
    /// line follow what the database did).
    pub(crate) async fn cancel_batch(
        &self,
        orders: &[u64],
    ) -> Result<Vec<(u64, Outcome)>, CancelError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        if orders.len() > MAX_BATCH {
            return Err(CancelError::Unexpected(format!(
                "a batch holds at most {MAX_BATCH} orders"
            )));
        }
        let mut ids = orders.to_vec();
        ids.sort_unstable();
        ids.dedup();

        let mut conn = self.db.conn().await.map_err(CancelError::connect)?;
        let mut committing = None;
        let attempt = tokio::time::timeout(
            TRANSACTION_TIMEOUT,
            self.transaction(&mut conn, ids, &mut committing),
        )
        .await;
        let error = match attempt {
            Ok(Ok(outcomes)) => {
                self.idle_bound_off(&mut conn).await;
                return Ok(outcomes);
            }
            Ok(Err(e)) if !e.is_connection_lost() => {
                self.idle_bound_off(&mut conn).await;
                return Err(e);
            }
            Ok(Err(e)) => e,
            Err(_) => CancelError::NoAnswer(TRANSACTION_TIMEOUT),
        };
        self.settle_abandoned(conn, committing, error).await
    }

    /// The transaction of [`Self::cancel_batch`] on `conn`. Just before the `COMMIT` is sent,
    /// what it wrote is left in `committing`, for the case its reply never comes.
    async fn transaction(
        &self,
        conn: &mut Conn,
        ids: Vec<u64>,
        committing: &mut Option<Committing>,
    ) -> Result<Vec<(u64, Outcome)>, CancelError> {
        // MySQL has no idle transaction timeout: the session's wait_timeout is the bound for
        // the span of this transaction (MariaDB and PostgreSQL bound every session).
        self.db
            .bound_idle(conn)
            .await
            .map_err(CancelError::query("SET SESSION wait_timeout"))?;
        // READ COMMITTED: the row locks of `FOR UPDATE` are all the isolation this needs, and
        // without REPEATABLE READ's gap locks concurrent batches cannot deadlock on the
        // secondary indexes that the status update touches (MySQL), nor fail to serialize
        // (PostgreSQL).
        let mut tx = conn.begin().await.map_err(CancelError::query("BEGIN"))?;

        let (found, paid, busy) = self.lock_orders(&mut tx, &ids).await?;
        let unpaid: Vec<u64> = found
            .iter()
            .filter(|(id, (status, _, _))| *status == self.unpaid && !paid.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let mut lines = Lines::default();
        let mut now = String::new();
        if !unpaid.is_empty() {
            lines = self.read_lines(&mut tx, &unpaid, &found).await?;
            now = self.timezone.eloquent(jiff::Timestamp::now());
            if !self.cancel_unpaid(&mut tx, &unpaid, &now).await? {
                // Cannot happen while we hold the row locks; refuse to return stock if it does.
                tx.rollback()
                    .await
                    .map_err(CancelError::query("ROLLBACK"))?;
                return Err(CancelError::Unexpected(
                    "orders changed under their row locks".into(),
                ));
            }
            if !lines.per_product.is_empty() {
                self.return_stock(&mut tx, &mut lines, &now).await?;
            }
            if let Some(jobs) = &self.jobs {
                jobs.write(&mut tx, &unpaid)
                    .await
                    .map_err(CancelError::query("queueing the orders' jobs"))?;
            }
        }
        let written = committing.insert(Committing {
            ids,
            found,
            paid,
            busy,
            lines,
            unpaid,
            now,
        });
        let unpaid_count = written.unpaid.len();
        tx.commit().await.map_err(CancelError::query("COMMIT"))?;
        let done = committing.take().expect("set before the COMMIT");
        Ok(self.committed(done, unpaid_count))
    }

    /// After the commit: the outbox told, and what happened to each order.
    fn committed(&self, done: Committing, unpaid: usize) -> Vec<(u64, Outcome)> {
        if let Some(jobs) = &self.jobs {
            jobs.committed(unpaid);
        }
        self.outcomes(done.ids, done.found, &done.paid, &done.busy, done.lines)
    }

    /// MySQL: the session's `wait_timeout` back to the server's, before the connection goes
    /// back to the pool (an idle pooled connection is not ours to bound).
    async fn idle_bound_off(&self, conn: &mut Conn) {
        if let Err(e) = self.db.unbound_idle(conn).await {
            tracing::debug!(error = %e, "resetting the session's wait_timeout");
        }
    }

    /// A transaction that ran out of time or lost its connection (`conn_id`): the connection
    /// is killed, and if the `COMMIT` was sent (`committing`), its outcome read back. The
    /// batch's outcomes when the server did commit; `error` otherwise.
    async fn settle_abandoned(
        &self,
        conn: Conn,
        committing: Option<Committing>,
        error: CancelError,
    ) -> Result<Vec<(u64, Outcome)>, CancelError> {
        let conn_id = conn.id();
        if let Err(e) = self.db.abandon(conn).await {
            tracing::debug!(error = %e, connection = conn_id, "ending an abandoned connection");
        }
        let Some(done) = committing else {
            return Err(error);
        };
        if done.unpaid.is_empty() {
            // Nothing was written: the outcomes stand either way.
            return Ok(self.committed(done, 0));
        }
        match self.committed_here(&done).await {
            Ok(true) => {
                tracing::info!(
                    event = "commit_confirmed",
                    connection = conn_id,
                    orders = done.unpaid.len(),
                    %error,
                    "the reply to a COMMIT was lost; read back, the server did commit: counted as written"
                );
                let unpaid = done.unpaid.len();
                Ok(self.committed(done, unpaid))
            }
            Ok(false) => Err(error),
            Err(e) => {
                tracing::debug!(error = %e, "reading back the orders of a COMMIT without reply");
                Err(error)
            }
        }
    }

    /// Whether the transaction that was `done` committed: its orders read back under lock (so
    /// after the killed transaction has committed or rolled back). A transaction is all or
    /// nothing, and another worker that cancelled them since (having found them unpaid once it
    /// rolled back) wrote another `updated_at`: every order cancelled with the `updated_at` it
    /// wrote is that commit. Without an `updated_at` column it cannot be told: `false`, and
    /// the retry finds them cancelled (counted as already cancelled).
    async fn committed_here(&self, done: &Committing) -> Result<bool, CancelError> {
        let wrote: Option<jiff::civil::DateTime> = done.now.parse().ok();
        let read = async {
            let mut conn = self.db.conn().await.map_err(CancelError::connect)?;
            let mut tx = conn.begin().await.map_err(CancelError::query("BEGIN"))?;
            let rows = self
                .sql
                .read_back(&mut tx, &done.unpaid)
                .await
                .map_err(CancelError::query("reading back the orders"))?;
            tx.rollback()
                .await
                .map_err(CancelError::query("ROLLBACK"))?;
            let Some(rows) = rows else {
                return Ok(false);
            };
            Ok(wrote.is_some()
                && rows.len() == done.unpaid.len()
                && rows
                    .iter()
                    .all(|(_, status, updated)| *status == self.cancelled && *updated == wrote))
        };
        tokio::time::timeout(READ_BACK_TIMEOUT, read)
            .await
            .unwrap_or(Err(CancelError::NoAnswer(READ_BACK_TIMEOUT)))
    }

    /// Step 1: locks the order rows in id order; returns them, the ids whose paid column is
    /// set, and (skipping held rows) the unpaid ones another transaction holds. A held row
    /// that is not unpaid is returned as read, unlocked: it is written by nobody here.
    async fn lock_orders(
        &self,
        tx: &mut Tx<'_>,
        ids: &[u64],
    ) -> Result<(Found, Vec<u64>, Vec<u64>), CancelError> {
        let skip_locked = self.path.0 == WritePath::SkipLocked;
        let mut rows: Vec<LockedOrder> = self
            .sql
            .lock(tx, ids, skip_locked)
            .await
            .map_err(CancelError::query("locking the orders"))?;
        let mut busy = Vec::new();
        if skip_locked && rows.len() < ids.len() {
            let locked: Vec<u64> = rows.iter().map(|row| row.0).collect();
            let skipped: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| locked.binary_search(id).is_err())
                .collect();
            let held = self
                .sql
                .peek(tx, &skipped)
                .await
                .map_err(CancelError::query(
                    "reading the orders other transactions hold",
                ))?;
            for row in held {
                if row.1 == self.unpaid && !row.4 {
                    busy.push(row.0);
                } else {
                    rows.push(row);
                }
            }
        }
        let paid: Vec<u64> = rows.iter().filter(|row| row.4).map(|row| row.0).collect();
        let found = rows
            .into_iter()
            .map(|(id, s, p, q, _)| (id, (s, p, q)))
            .collect();
        Ok((found, paid, busy))
    }

    /// Step 2: the unpaid orders' lines, from the items table or from the locked rows.
    async fn read_lines(
        &self,
        tx: &mut Tx<'_>,
        unpaid: &[u64],
        found: &Found,
    ) -> Result<Lines, CancelError> {
        let from_items = self
            .sql
            .lines(tx, unpaid)
            .await
            .map_err(CancelError::query("reading the orders' items"))?;
        Ok(Lines::sum(from_items.unwrap_or_else(|| {
            unpaid
                .iter()
                .filter_map(|id| {
                    let (_, product, quantity) = found.get(id)?;
                    Some((*id, (*product)?, (*quantity)?))
                })
                .collect()
        })))
    }

    /// Step 3: cancels the unpaid orders. False when the row count is not their number: the
    /// caller then rolls the batch back.
    async fn cancel_unpaid(
        &self,
        tx: &mut Tx<'_>,
        unpaid: &[u64],
        now: &str,
    ) -> Result<bool, CancelError> {
        let changed = self
            .sql
            .cancel(tx, unpaid, (self.unpaid, self.cancelled), now)
            .await
            .map_err(CancelError::query("cancelling the orders"))?;
        Ok(changed == unpaid.len() as u64)
    }

    /// Step 4: returns the units per product to stock; products whose row is gone are dropped
    /// from `lines`, so the outcome can name them.
    async fn return_stock(
        &self,
        tx: &mut Tx<'_>,
        lines: &mut Lines,
        now: &str,
    ) -> Result<(), CancelError> {
        let pairs: Vec<(u64, u64)> = lines.per_product.iter().map(|(p, q)| (*p, *q)).collect();
        let changed = self
            .sql
            .return_stock(tx, &pairs, now)
            .await
            .map_err(CancelError::query("returning stock"))?;
        if changed != pairs.len() as u64 {
            // Some products were deleted: find which, so the outcome can say so.
            let products: Vec<u64> = pairs.iter().map(|(p, _)| *p).collect();
            let existing = self
                .sql
                .existing_products(tx, &products)
                .await
                .map_err(CancelError::query("finding deleted products"))?;
            lines.per_product.retain(|p, _| existing.contains(p));
        }
        Ok(())
    }

    /// Step 5, after the commit: what happened to each order, in id order.
    fn outcomes(
        &self,
        ids: Vec<u64>,
        mut found: Found,
        paid: &[u64],
        busy: &[u64],
        mut lines: Lines,
    ) -> Vec<(u64, Outcome)> {
        ids.into_iter()
            .map(|id| {
                let outcome = match found.remove(&id) {
                    None if busy.contains(&id) => Outcome::Busy,
                    None => Outcome::Missing,
                    Some((status, _, _)) if status == self.cancelled => Outcome::AlreadyCancelled,
                    Some(_) if paid.contains(&id) => Outcome::Paid,
                    Some((status, _, _)) if status != self.unpaid => Outcome::NotUnpaid { status },
                    Some(_) => {
                        let order_lines = lines.per_order.remove(&id).unwrap_or_default();
                        cancelled(&order_lines, &lines.per_product)
                    }
                };
                (id, outcome)
            })
            .collect()
    }
}

/// The outcome of a cancelled order with `lines`: the units whose product took them back, and
/// the products that are gone.
fn cancelled(lines: &[(u64, u64)], returned: &BTreeMap<u64, u64>) -> Outcome {
    Outcome::Cancelled {
        units: lines
            .iter()
            .filter(|(p, _)| returned.contains_key(p))
            .map(|(_, q)| q)
            .sum(),
        missing_products: lines
            .iter()
            .filter(|(p, _)| !returned.contains_key(p))
            .map(|(p, _)| *p)
            .collect(),
    }
}

/// A failed attempt. The worker retries it unless [`CancelError::is_permanent`].
#[derive(Debug)]
pub(crate) enum CancelError {
    Database {
        action: &'static str,
        source: DriverError,
    },
    Unexpected(String),
    /// The transaction did not end within this bound.
    NoAnswer(Duration),
}

impl CancelError {
    /// The connection broke (or gave no answer): the transaction's outcome on the server is
    /// not known from here; a server error, by contrast, comes on a working connection.
    pub(crate) fn is_connection_lost(&self) -> bool {
        match self {
            Self::Database { source, .. } => source.is_connection_lost(),
            Self::Unexpected(_) => false,
            Self::NoAnswer(_) => true,
        }
    }

    /// A deadlock, lock wait timeout or serialization failure: another transaction won, retry
    /// at once. Not an outage.
    pub(crate) fn is_lock_conflict(&self) -> bool {
        matches!(self, Self::Database { source, .. } if source.is_lock_conflict())
    }

    /// A lock wait timeout: the rows were held for the whole lock wait.
    pub(crate) fn is_lock_wait_timeout(&self) -> bool {
        matches!(self, Self::Database { source, .. } if source.is_lock_wait_timeout())
    }

    /// An error that the same statement on the same rows gets again however often it is
    /// retried (a value out of range, a constraint: the adapter's own codes). Everything else is
    /// retried, so that no order is given up on a guess.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, Self::Database { source, .. } if source.is_permanent())
    }

    fn connect(source: DriverError) -> Self {
        Self::Database {
            action: "connecting",
            source,
        }
    }

    fn query<E: Into<DriverError>>(action: &'static str) -> impl Fn(E) -> Self {
        move |source| Self::Database {
            action,
            source: source.into(),
        }
    }
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Database { action, source } => write!(f, "{action}: {source}"),
            Self::Unexpected(what) => f.write_str(what),
            Self::NoAnswer(after) => {
                write!(
                    f,
                    "no answer from the database within {} s",
                    after.as_secs()
                )
            }
        }
    }
}

impl std::error::Error for CancelError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> CancelError {
        CancelError::Database {
            action: "returning stock",
            source: DriverError::Mysql(mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: String::new(),
                state: String::new(),
            })),
        }
    }

    #[test]
    fn data_errors_are_permanent_and_moments_are_retried() {
        for code in [1264, 1366, 1452, 4025] {
            assert!(server_error(code).is_permanent(), "{code}");
        }
        for code in [1205, 1213, 2006, 1146] {
            assert!(!server_error(code).is_permanent(), "{code}");
        }
        assert!(server_error(1213).is_lock_conflict());
        assert!(server_error(1205).is_lock_wait_timeout());
        assert!(!server_error(1213).is_connection_lost());
        assert!(CancelError::NoAnswer(Duration::from_secs(1)).is_connection_lost());
        assert!(!CancelError::Unexpected("no answer".into()).is_permanent());
    }
}
