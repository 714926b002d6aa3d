//! The statements against the app's orders, products and items tables, of either adapter: the
//! writer's transaction ([`WriteStatements`]), the deadline watcher's discovery
//! ([`DeadlineQueries`]), the reconciliation's pages ([`ReconcileQueries`]) and the look at
//! set-aside orders ([`UnpaidQuery`]). Each is built for the database it runs on.

use super::{Conn, Database, DbError, DriverError, Tx};
use crate::config::Schema;
use crate::{mysql, pgsql};

/// The largest batch; also the largest id list of one statement.
pub(crate) const MAX_BATCH: usize = mysql::orders::MAX_BATCH;

/// An order row as locked: id, status, product and quantity (on the order, else NULL), and
/// whether its paid column is set.
pub(crate) type LockedOrder = (u64, i64, Option<u64>, Option<i64>, bool);

/// A line of an order: order id, product id, quantity (summed per product).
pub(crate) type OrderLine = (u64, u64, i64);

/// The writer's SQL for one schema mapping, on one database.
// A handful of these live per worker (a connection per transaction at most), never in a
// collection: the variants' sizes do not matter, and boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WriteStatements {
    Mysql(mysql::orders::WriteStatements),
    Pgsql(pgsql::orders::WriteStatements),
}

impl WriteStatements {
    /// Checks the schema (tables, columns, statuses, the paid column, privileges) and builds
    /// the statements for what the tables have.
    pub(crate) async fn prepare(db: &Database, schema: &Schema) -> Result<Self, DbError> {
        Ok(match db {
            Database::Mysql(db) => Self::Mysql(mysql::orders::WriteStatements::new(
                schema,
                db.inspect(schema).await?,
            )),
            Database::Pgsql(db) => Self::Pgsql(pgsql::orders::WriteStatements::new(
                schema,
                db.inspect(schema).await?,
            )),
        })
    }

    /// Locks the rows of `ids` (sorted, at most [`MAX_BATCH`]) in id order and reads them;
    /// with `skip_locked`, only those no other transaction holds.
    pub(crate) async fn lock(
        &self,
        tx: &mut Tx<'_>,
        ids: &[u64],
        skip_locked: bool,
    ) -> Result<Vec<LockedOrder>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.lock(tx, ids, skip_locked).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.lock(tx, ids, skip_locked).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// The status and `updated_at` of the orders of `ids`, locked, to read back a `COMMIT`
    /// without reply; `None` when a commit cannot be told from another's that way (no
    /// `updated_at` column).
    #[allow(clippy::type_complexity)]
    pub(crate) async fn read_back(
        &self,
        tx: &mut Tx<'_>,
        ids: &[u64],
    ) -> Result<Option<Vec<(u64, i64, Option<jiff::civil::DateTime>)>>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.read_back(tx, ids).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.read_back(tx, ids).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// Reads the rows of `ids` without locking them.
    pub(crate) async fn peek(
        &self,
        tx: &mut Tx<'_>,
        ids: &[u64],
    ) -> Result<Vec<LockedOrder>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.peek(tx, ids).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.peek(tx, ids).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// The lines of the `unpaid` orders from the items table; `None` when they are on the
    /// order rows.
    pub(crate) async fn lines(
        &self,
        tx: &mut Tx<'_>,
        unpaid: &[u64],
    ) -> Result<Option<Vec<OrderLine>>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.lines(tx, unpaid).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.lines(tx, unpaid).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// Cancels the `unpaid` orders still in the unpaid status; returns the rows changed.
    pub(crate) async fn cancel(
        &self,
        tx: &mut Tx<'_>,
        unpaid: &[u64],
        statuses: (i64, i64),
        now: &str,
    ) -> Result<u64, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.cancel(tx, unpaid, statuses, now).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.cancel(tx, unpaid, statuses, now).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// Adds each `(product, quantity)` back to stock; returns the rows changed.
    pub(crate) async fn return_stock(
        &self,
        tx: &mut Tx<'_>,
        pairs: &[(u64, u64)],
        now: &str,
    ) -> Result<u64, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.return_stock(tx, pairs, now).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.return_stock(tx, pairs, now).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// Which of `products` still have a row.
    pub(crate) async fn existing_products(
        &self,
        tx: &mut Tx<'_>,
        products: &[u64],
    ) -> Result<Vec<u64>, DriverError> {
        match (self, tx) {
            (Self::Mysql(s), Tx::Mysql(tx)) => Ok(s.existing_products(tx, products).await?),
            (Self::Pgsql(s), Tx::Pgsql(tx)) => Ok(s.existing_products(tx, products).await?),
            _ => Err(DriverError::Mismatch),
        }
    }
}

/// The deadline watcher's discovery of unpaid orders by primary key.
pub(crate) enum DeadlineQueries {
    Mysql(mysql::orders::DeadlineQueries),
    Pgsql(pgsql::orders::DeadlineQueries),
}

impl DeadlineQueries {
    /// `page` rows at most per [`Self::new_orders`].
    pub(crate) fn new(db: &Database, schema: &Schema, page: usize) -> Self {
        match db {
            Database::Mysql(_) => Self::Mysql(mysql::orders::DeadlineQueries::new(schema, page)),
            Database::Pgsql(_) => Self::Pgsql(pgsql::orders::DeadlineQueries::new(schema, page)),
        }
    }

    /// The oldest unpaid order created at or after `since` (`Y-m-d H:i:s`, the app's clock).
    pub(crate) async fn oldest_pending(
        &self,
        conn: &mut Conn,
        since: &str,
    ) -> Result<Option<u64>, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => Ok(q.oldest_pending(c, since).await?),
            (Self::Pgsql(q), Conn::Pgsql(c)) => Ok(q.oldest_pending(c, since).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// The newest order id, of any status.
    pub(crate) async fn newest_id(&self, conn: &mut Conn) -> Result<Option<u64>, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => Ok(q.newest_id(c).await?),
            (Self::Pgsql(q), Conn::Pgsql(c)) => Ok(q.newest_id(c).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// A page of unpaid orders with an id above `after`, in id order, with their `created_at`.
    pub(crate) async fn new_orders(
        &self,
        conn: &mut Conn,
        after: u64,
    ) -> Result<Vec<(u64, Option<jiff::civil::DateTime>)>, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => Ok(q.new_orders(c, after).await?),
            (Self::Pgsql(q), Conn::Pgsql(c)) => Ok(q.new_orders(c, after).await?),
            _ => Err(DriverError::Mismatch),
        }
    }
}

/// An order's `created_at` as its database sent it: kept as is for the next page's cursor.
#[derive(Debug, Clone)]
pub(crate) enum CreatedAt {
    Mysql(mysql::orders::CreatedAt),
    Pgsql(pgsql::orders::CreatedAt),
}

impl CreatedAt {
    /// As a civil date-time (the app's wall clock), when it reads as one.
    pub(crate) fn civil(&self) -> Option<jiff::civil::DateTime> {
        match self {
            Self::Mysql(v) => mysql::orders::civil(v),
            Self::Pgsql(v) => pgsql::orders::civil(v),
        }
    }
}

/// The reconciliation's keyset pages of overdue unpaid orders.
pub(crate) enum ReconcileQueries {
    Mysql(mysql::orders::ReconcileQueries),
    Pgsql(pgsql::orders::ReconcileQueries),
}

impl ReconcileQueries {
    /// `page` rows at most per [`Self::page`].
    pub(crate) fn new(db: &Database, schema: &Schema, page: usize) -> Self {
        match db {
            Database::Mysql(_) => Self::Mysql(mysql::orders::ReconcileQueries::new(schema, page)),
            Database::Pgsql(_) => Self::Pgsql(pgsql::orders::ReconcileQueries::new(schema, page)),
        }
    }

    /// How many unpaid orders were created at or before `cutoff`, counting at most `at_most`.
    pub(crate) async fn count(
        &self,
        conn: &mut Conn,
        cutoff: &str,
        at_most: u64,
    ) -> Result<u64, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => Ok(q.count(c, cutoff, at_most).await?),
            (Self::Pgsql(q), Conn::Pgsql(c)) => Ok(q.count(c, cutoff, at_most).await?),
            _ => Err(DriverError::Mismatch),
        }
    }

    /// The unpaid orders created at or before `cutoff`, after `cursor` when given.
    pub(crate) async fn page(
        &self,
        conn: &mut Conn,
        cutoff: &str,
        cursor: Option<&(CreatedAt, u64)>,
    ) -> Result<Vec<(u64, CreatedAt)>, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => {
                let cursor = match cursor {
                    Some((CreatedAt::Mysql(created), id)) => Some((created.clone(), *id)),
                    Some(_) => return Err(DriverError::Mismatch),
                    None => None,
                };
                let page = q.page(c, cutoff, cursor.as_ref()).await?;
                Ok(page
                    .into_iter()
                    .map(|(id, c)| (id, CreatedAt::Mysql(c)))
                    .collect())
            }
            (Self::Pgsql(q), Conn::Pgsql(c)) => {
                let cursor = match cursor {
                    Some((CreatedAt::Pgsql(created), id)) => Some((created.clone(), *id)),
                    Some(_) => return Err(DriverError::Mismatch),
                    None => None,
                };
                let page = q.page(c, cutoff, cursor.as_ref()).await?;
                Ok(page
                    .into_iter()
                    .map(|(id, c)| (id, CreatedAt::Pgsql(c)))
                    .collect())
            }
            _ => Err(DriverError::Mismatch),
        }
    }
}

/// Which of a list of orders are still unpaid, read without a lock.
pub(crate) enum UnpaidQuery {
    Mysql(mysql::orders::UnpaidQuery),
    Pgsql(pgsql::orders::UnpaidQuery),
}

impl UnpaidQuery {
    pub(crate) fn new(db: &Database, schema: &Schema) -> Self {
        match db {
            Database::Mysql(_) => Self::Mysql(mysql::orders::UnpaidQuery::new(schema)),
            Database::Pgsql(_) => Self::Pgsql(pgsql::orders::UnpaidQuery::new(schema)),
        }
    }

    /// The ids among `ids` still unpaid, sorted.
    pub(crate) async fn still_unpaid(
        &self,
        conn: &mut Conn,
        ids: &[u64],
    ) -> Result<Vec<u64>, DriverError> {
        match (self, conn) {
            (Self::Mysql(q), Conn::Mysql(c)) => Ok(q.still_unpaid(c, ids).await?),
            (Self::Pgsql(q), Conn::Pgsql(c)) => Ok(q.still_unpaid(c, ids).await?),
            _ => Err(DriverError::Mismatch),
        }
    }
}
