//! Cancelling orders, exactly once, in batches.
//!
//! Keyspace events are delivered to every subscriber, sometimes twice, and a failed write is
//! retried; the database is what makes the side effect happen once. Per batch of orders, one
//! transaction:
//!
//! 1. `SELECT ... WHERE id IN (...) ORDER BY id FOR UPDATE` locks the order rows, in id order;
//!    a second worker handling the same orders waits here until the first commits, then sees
//!    them cancelled;
//! 2. only orders still in the unpaid status are touched: paid, already cancelled or missing
//!    orders write nothing;
//! 3. one `UPDATE orders SET status = <cancelled>, updated_at = <now in the app's time zone>
//!    WHERE id IN (...) AND status = <unpaid>`; the row count must equal the number of unpaid
//!    orders locked, or the batch is rolled back;
//! 4. the quantities, summed per product, go back to `products.stock` in one `UPDATE` (rows are
//!    locked in primary-key order, so concurrent batches cannot deadlock), touching
//!    `products.updated_at` as Eloquent's `increment()` would;
//! 5. commit. Any error rolls the whole batch back and the caller retries it.
//!
//! A batch of one is the low-latency case; under a burst, batches of hundreds turn one commit
//! (one fsync) per order into one per batch, which is where the throughput comes from.
//!
//! `updated_at` is the literal `Y-m-d H:i:s` in the app time zone that Eloquent sends, not
//! `NOW()`, which would follow the server's time zone instead.
//!
//! Statements are prepared for a few fixed list lengths (the id list is padded by repeating its
//! last id), so the per-connection statement cache holds a handful of statements, not one per
//! batch size.

use std::collections::BTreeMap;
use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Params, TxOpts, Value};

use super::database::{Database, TableShape};
use crate::config::{Ident, OrderLines, Schema, TimeZoneSetting};
use crate::error::Error;

/// The largest batch; also the largest `IN (...)` list.
pub const MAX_BATCH: usize = 512;
/// List lengths statements are prepared for.
const BUCKETS: [usize; 4] = [1, 8, 64, MAX_BATCH];

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
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
}

/// An order row as locked: id, status, product and quantity (on the order, else NULL), and
/// whether its paid column is set.
type LockedOrder = (u64, i64, Option<u64>, Option<i64>, bool);

/// `?, ?, ... ?` with `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The bucket length for a list of `n` values.
fn bucket(n: usize) -> usize {
    BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= n)
        .unwrap_or(MAX_BATCH)
}

/// Pads `values` to its bucket length by repeating the last one (harmless in `IN (...)`).
fn padded<T: Clone>(values: &[T]) -> Vec<T> {
    let mut out = values.to_vec();
    if let Some(last) = values.last() {
        out.resize(bucket(values.len()), last.clone());
    }
    out
}

/// The SQL for one schema mapping, per bucket length.
struct Statements {
    lock_orders: BTreeMap<usize, String>,
    order_lines: BTreeMap<usize, String>,
    cancel_orders: BTreeMap<usize, String>,
    return_stock: BTreeMap<usize, String>,
}

impl Statements {
    fn new(schema: &Schema, shape: TableShape) -> Self {
        let Schema {
            orders,
            order_status: status,
            products,
            product_stock: stock,
            ..
        } = schema;
        let id = Schema::id_column();
        let updated_at = Schema::updated_at_column();
        // The payment guard: read under the row lock, and repeated in the UPDATE.
        let (paid, unpaid_guard) = match &schema.paid_column {
            Some(paid) => (
                format!("{paid} IS NOT NULL"),
                format!(" AND {paid} IS NULL"),
            ),
            None => ("0".to_string(), String::new()),
        };
        let order_touch = if shape.orders_updated_at {
            format!(", {orders}.{updated_at} = ?")
        } else {
            String::new()
        };
        let product_touch = if shape.products_updated_at {
            format!(", {products}.{updated_at} = ?")
        } else {
            String::new()
        };
        let mut s = Self {
            lock_orders: BTreeMap::new(),
            order_lines: BTreeMap::new(),
            cancel_orders: BTreeMap::new(),
            return_stock: BTreeMap::new(),
        };
        for n in BUCKETS {
            let list = placeholders(n);
            let (lock, lines) = match &schema.lines {
                OrderLines::OnOrder { product, quantity } => (
                    format!(
                        "SELECT {id}, {status}, {product}, {quantity}, {paid} FROM {orders} WHERE {id} IN ({list}) ORDER BY {id} FOR UPDATE"
                    ),
                    None,
                ),
                OrderLines::Items {
                    table,
                    order,
                    product,
                    quantity,
                } => (
                    format!(
                        "SELECT {id}, {status}, NULL, NULL, {paid} FROM {orders} WHERE {id} IN ({list}) ORDER BY {id} FOR UPDATE"
                    ),
                    Some(format!(
                        "SELECT {order}, {product}, CAST(SUM({quantity}) AS SIGNED) FROM {table} \
                         WHERE {order} IN ({list}) GROUP BY {order}, {product}"
                    )),
                ),
            };
            s.lock_orders.insert(n, lock);
            if let Some(lines) = lines {
                s.order_lines.insert(n, lines);
            }
            s.cancel_orders.insert(
                n,
                format!("UPDATE {orders} SET {status} = ?{order_touch} WHERE {id} IN ({list}) AND {status} = ?{unpaid_guard}"),
            );
            let cases = vec![format!("WHEN ? THEN ?"); n].join(" ");
            s.return_stock.insert(
                n,
                format!(
                    "UPDATE {products} SET {stock} = {stock} + CASE {id} {cases} ELSE 0 END{product_touch} WHERE {id} IN ({list})"
                ),
            );
        }
        s
    }

    fn get(map: &BTreeMap<usize, String>, n: usize) -> Result<&str, CancelError> {
        map.get(&bucket(n))
            .map(String::as_str)
            .ok_or_else(|| CancelError::Unexpected(format!("no statement for {n} values")))
    }
}

/// Cancels orders in the app's database.
pub struct Writer {
    db: Database,
    products: Ident,
    sql: Statements,
    shape: TableShape,
    unpaid: i64,
    cancelled: i64,
    timezone: TimeZoneSetting,
}

impl Writer {
    /// Checks the schema and prepares the statements.
    pub async fn new(
        db: Database,
        schema: &Schema,
        timezone: TimeZoneSetting,
    ) -> Result<Self, Error> {
        let shape = db.inspect(schema).await?;
        Ok(Self {
            sql: Statements::new(schema, shape),
            products: schema.products.clone(),
            db,
            shape,
            unpaid: schema.unpaid_status,
            cancelled: schema.cancelled_status,
            timezone,
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn into_database(self) -> Database {
        self.db
    }

    /// Cancels one order if it is still unpaid and returns its stock.
    pub async fn cancel(&self, order: u64) -> Result<Outcome, CancelError> {
        let mut outcomes = self.cancel_batch(&[order]).await?;
        outcomes
            .pop()
            .map(|(_, outcome)| outcome)
            .ok_or_else(|| CancelError::Unexpected("no outcome for the order".into()))
    }

    /// Cancels the unpaid orders among `orders` (at most [`MAX_BATCH`], no duplicates) and
    /// returns their stock, all in one transaction. Returns an outcome per order, in id order.
    pub async fn cancel_batch(&self, orders: &[u64]) -> Result<Vec<(u64, Outcome)>, CancelError> {
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
        // READ COMMITTED: the row locks of `FOR UPDATE` are all the isolation this needs, and
        // without REPEATABLE READ's gap locks concurrent batches cannot deadlock on the
        // secondary indexes that the status update touches.
        let mut options = TxOpts::default();
        options.with_isolation_level(IsolationLevel::ReadCommitted);
        let mut tx = conn
            .start_transaction(options)
            .await
            .map_err(CancelError::query("BEGIN"))?;

        let rows: Vec<LockedOrder> = tx
            .exec(
                Statements::get(&self.sql.lock_orders, ids.len())?,
                padded(&ids),
            )
            .await
            .map_err(CancelError::query("locking the orders"))?;
        let paid: Vec<u64> = rows.iter().filter(|row| row.4).map(|row| row.0).collect();
        let mut found: BTreeMap<u64, (i64, Option<u64>, Option<i64>)> = rows
            .into_iter()
            .map(|(id, s, p, q, _)| (id, (s, p, q)))
            .collect();

        let unpaid: Vec<u64> = found
            .iter()
            .filter(|(id, (status, _, _))| *status == self.unpaid && !paid.contains(id))
            .map(|(id, _)| *id)
            .collect();

        // Quantities per product for the unpaid orders, and per order for the outcome.
        let mut per_product: BTreeMap<u64, u64> = BTreeMap::new();
        let mut per_order: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        if !unpaid.is_empty() {
            let lines: Vec<(u64, u64, i64)> = match self.sql.order_lines.get(&bucket(unpaid.len()))
            {
                Some(sql) => tx
                    .exec(sql.as_str(), padded(&unpaid))
                    .await
                    .map_err(CancelError::query("reading the orders' items"))?,
                None => unpaid
                    .iter()
                    .filter_map(|id| {
                        let (_, product, quantity) = found.get(id)?;
                        Some((*id, (*product)?, (*quantity)?))
                    })
                    .collect(),
            };
            for (order, product, quantity) in lines {
                let Ok(quantity) = u64::try_from(quantity) else {
                    continue;
                };
                if quantity == 0 {
                    continue;
                }
                *per_product.entry(product).or_default() += quantity;
                per_order
                    .entry(order)
                    .or_default()
                    .push((product, quantity));
            }

            let now = self.timezone.eloquent(jiff::Timestamp::now());
            let mut params: Vec<Value> = vec![self.cancelled.into()];
            if self.shape.orders_updated_at {
                params.push(now.clone().into());
            }
            params.extend(padded(&unpaid).into_iter().map(Value::from));
            params.push(self.unpaid.into());
            tx.exec_drop(
                Statements::get(&self.sql.cancel_orders, unpaid.len())?,
                Params::Positional(params),
            )
            .await
            .map_err(CancelError::query("cancelling the orders"))?;
            if tx.affected_rows() != unpaid.len() as u64 {
                // Cannot happen while we hold the row locks; refuse to return stock if it does.
                tx.rollback()
                    .await
                    .map_err(CancelError::query("ROLLBACK"))?;
                return Err(CancelError::Unexpected(
                    "orders changed under their row locks".into(),
                ));
            }

            if !per_product.is_empty() {
                let pairs: Vec<(u64, u64)> = per_product.iter().map(|(p, q)| (*p, *q)).collect();
                let padded_pairs = padded(&pairs);
                let mut params: Vec<Value> = Vec::with_capacity(padded_pairs.len() * 3 + 1);
                for (product, quantity) in &padded_pairs {
                    params.push((*product).into());
                    params.push((*quantity).into());
                }
                if self.shape.products_updated_at {
                    params.push(now.into());
                }
                params.extend(
                    padded_pairs
                        .iter()
                        .map(|(product, _)| Value::from(*product)),
                );
                tx.exec_drop(
                    Statements::get(&self.sql.return_stock, pairs.len())?,
                    Params::Positional(params),
                )
                .await
                .map_err(CancelError::query("returning stock"))?;
                if tx.affected_rows() != pairs.len() as u64 {
                    // Some products were deleted: find which, so the outcome can say so.
                    let existing = self.existing_products(&mut tx, &pairs).await?;
                    per_product.retain(|p, _| existing.contains(p));
                }
            }
        }
        tx.commit().await.map_err(CancelError::query("COMMIT"))?;

        Ok(ids
            .into_iter()
            .map(|id| {
                let outcome = match found.remove(&id) {
                    None => Outcome::Missing,
                    Some((status, _, _)) if status == self.cancelled => Outcome::AlreadyCancelled,
                    Some(_) if paid.contains(&id) => Outcome::Paid,
                    Some((status, _, _)) if status != self.unpaid => Outcome::NotUnpaid { status },
                    Some(_) => {
                        let lines = per_order.remove(&id).unwrap_or_default();
                        Outcome::Cancelled {
                            units: lines
                                .iter()
                                .filter(|(p, _)| per_product.contains_key(p))
                                .map(|(_, q)| q)
                                .sum(),
                            missing_products: lines
                                .iter()
                                .filter(|(p, _)| !per_product.contains_key(p))
                                .map(|(p, _)| *p)
                                .collect(),
                        }
                    }
                };
                (id, outcome)
            })
            .collect())
    }

    async fn existing_products(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        pairs: &[(u64, u64)],
    ) -> Result<Vec<u64>, CancelError> {
        let ids: Vec<u64> = pairs.iter().map(|(p, _)| *p).collect();
        let mut existing = Vec::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let sql = format!(
                "SELECT {id} FROM {products} WHERE {id} IN ({list})",
                id = Schema::id_column(),
                products = self.products,
                list = placeholders(chunk.len())
            );
            let found: Vec<u64> = tx
                .exec(sql, chunk.to_vec())
                .await
                .map_err(CancelError::query("finding deleted products"))?;
            existing.extend(found);
        }
        Ok(existing)
    }
}

/// A failed attempt. The worker retries it unless [`CancelError::is_permanent`].
#[derive(Debug)]
pub enum CancelError {
    Mysql {
        action: &'static str,
        source: mysql_async::Error,
    },
    Unexpected(String),
}

impl CancelError {
    /// A deadlock or lock wait timeout: another transaction won, retry at once. Not an outage.
    pub fn is_lock_conflict(&self) -> bool {
        matches!(self, Self::Mysql { source: mysql_async::Error::Server(e), .. } if e.code == 1213 || e.code == 1205)
    }

    /// An error that the same statement on the same rows gets again however often it is
    /// retried: a value out of range or truncated, a constraint or foreign key, a NOT NULL
    /// column, a trigger's `SIGNAL`. Everything else (connection, deadlock, lock wait, timeout,
    /// and errors not known to be permanent) is retried, so that no order is given up on a
    /// guess.
    pub fn is_permanent(&self) -> bool {
        /// MySQL/MariaDB server error codes of the data, not of the moment.
        const PERMANENT: [u16; 14] = [
            1048, // column cannot be null
            1062, // duplicate entry
            1264, // out of range value
            1265, // data truncated
            1292, // incorrect value (date, number)
            1366, // incorrect integer/string value
            1406, // data too long
            1451, // a foreign key refuses the update (parent row)
            1452, // a foreign key refuses the update (child row)
            1644, // a trigger's SIGNAL
            1690, // value out of range in an expression (BIGINT UNSIGNED)
            3819, // check constraint violated (MySQL)
            4025, // check constraint violated (MariaDB)
            1216, // foreign key constraint fails (old servers)
        ];
        matches!(self, Self::Mysql { source: mysql_async::Error::Server(e), .. } if PERMANENT.contains(&e.code))
    }

    fn connect(source: mysql_async::Error) -> Self {
        Self::Mysql {
            action: "connecting",
            source,
        }
    }

    fn query(action: &'static str) -> impl Fn(mysql_async::Error) -> Self {
        move |source| Self::Mysql { action, source }
    }
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mysql { action, source } => write!(f, "{action}: {source}"),
            Self::Unexpected(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for CancelError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_padded_to_a_few_lengths() {
        assert_eq!(padded(&[7u64]), vec![7]);
        assert_eq!(padded(&[1u64, 2, 3]), vec![1, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(padded(&(0..65u64).collect::<Vec<_>>()).len(), MAX_BATCH);
        assert!(padded::<u64>(&[]).is_empty());
    }

    fn server_error(code: u16) -> CancelError {
        CancelError::Mysql {
            action: "returning stock",
            source: mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: String::new(),
                state: String::new(),
            }),
        }
    }

    #[test]
    fn data_errors_are_permanent_and_moments_are_retried() {
        for code in [1264, 1265, 1366, 1406, 1048, 1451, 1452, 1062, 4025, 3819] {
            assert!(server_error(code).is_permanent(), "{code}");
        }
        for code in [1205, 1213, 2006, 2013, 1040, 1053, 1927, 1146] {
            assert!(!server_error(code).is_permanent(), "{code}");
        }
        assert!(server_error(1213).is_lock_conflict());
        assert!(!CancelError::Unexpected("no answer".into()).is_permanent());
    }
}
