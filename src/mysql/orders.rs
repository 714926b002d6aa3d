//! Every statement against the app's `orders`, `products` and items tables, in one place.
//!
//! * [`WriteStatements`]: the writer's transaction (lock the orders, read their lines, cancel
//!   the unpaid, return the stock, find deleted products);
//! * [`DeadlineQueries`]: the deadline watcher's discovery of new unpaid orders;
//! * [`ReconcileQueries`]: the reconciliation's pages of overdue unpaid orders, and their
//!   bounded count (the sweep's progress, `status`);
//! * [`UnpaidQuery`]: which of a list of orders are still unpaid, read without a lock (the
//!   last look at orders set aside for another replica).
//!
//! Statements are built once from the schema mapping. The writer's are prepared for a few fixed
//! list lengths (the id list is padded by repeating its last id), so the per-connection
//! statement cache holds a handful of statements, not one per batch size. Errors are returned
//! as the driver's: the caller knows what the statement was for and says so.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Transaction, Value};

use super::TableShape;
use crate::config::{Ident, OrderLines, Schema};

/// The largest batch; also the largest `IN (...)` list.
pub(crate) const MAX_BATCH: usize = 512;
/// List lengths statements are prepared for.
const BUCKETS: [usize; 4] = [1, 8, 64, MAX_BATCH];

/// An order row as locked: id, status, product and quantity (on the order, else NULL), and
/// whether its paid column is set.
pub(crate) type LockedOrder = (u64, i64, Option<u64>, Option<i64>, bool);

/// A line of an order: order id, product id, quantity (summed per product).
pub(crate) type OrderLine = (u64, u64, i64);

/// An order's `created_at` as MySQL sent it: kept as is for the next page's keyset cursor.
pub(crate) type CreatedAt = Value;

/// `?, ?, ... ?` with `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Where in [`BUCKETS`] a list of `n` values goes: the first length that holds it.
fn bucket_index(n: usize) -> usize {
    BUCKETS
        .iter()
        .position(|b| *b >= n)
        .unwrap_or(BUCKETS.len() - 1)
}

/// Pads `values` to its bucket length by repeating the last one (harmless in `IN (...)`).
pub(crate) fn padded<T: Clone>(values: &[T]) -> Vec<T> {
    let mut out = values.to_vec();
    if let Some(last) = values.last() {
        out.resize(BUCKETS[bucket_index(values.len())], last.clone());
    }
    out
}

/// One statement per bucket length.
type PerBucket = [String; BUCKETS.len()];

/// The writer's SQL for one schema mapping.
pub(crate) struct WriteStatements {
    lock_orders: PerBucket,
    /// The same with `SKIP LOCKED` (servers that have it: [`super::write_path`]).
    lock_free_orders: PerBucket,
    /// The rows `SKIP LOCKED` did not return, read without a lock: held, or missing.
    peek_orders: PerBucket,
    /// `None` when the lines are columns of the order row (read with the lock).
    order_lines: Option<PerBucket>,
    cancel_orders: PerBucket,
    return_stock: PerBucket,
    /// The orders' status and `updated_at` under lock, to read back a `COMMIT` without reply;
    /// `None` when the table has no `updated_at` (a commit cannot be told from another then).
    read_back: Option<PerBucket>,
    products: Ident,
    shape: TableShape,
}

impl WriteStatements {
    pub(crate) fn new(schema: &Schema, shape: TableShape) -> Self {
        let per_bucket = |build: &dyn Fn(usize, &str) -> String| -> PerBucket {
            BUCKETS.map(|n| build(n, &placeholders(n)))
        };
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
        let touch = |table: &Ident, present: bool| {
            if present {
                format!(", {table}.{updated_at} = ?")
            } else {
                String::new()
            }
        };
        let order_touch = touch(orders, shape.orders_updated_at);
        let product_touch = touch(products, shape.products_updated_at);
        let (line_columns, order_lines) = match &schema.lines {
            OrderLines::OnOrder { product, quantity } => (format!("{product}, {quantity}"), None),
            OrderLines::Items {
                table,
                order,
                product,
                quantity,
            } => (
                "NULL, NULL".to_string(),
                Some(per_bucket(&|_, list| {
                    format!(
                        "SELECT {order}, {product}, CAST(SUM({quantity}) AS SIGNED) FROM {table} \
                         WHERE {order} IN ({list}) GROUP BY {order}, {product}"
                    )
                })),
            ),
        };
        let select = |list: &str| {
            format!(
                "SELECT {id}, {status}, {line_columns}, {paid} FROM {orders} WHERE {id} IN ({list}) ORDER BY {id}"
            )
        };
        Self {
            lock_orders: per_bucket(&|_, list| format!("{} FOR UPDATE", select(list))),
            lock_free_orders: per_bucket(&|_, list| {
                format!("{} FOR UPDATE SKIP LOCKED", select(list))
            }),
            peek_orders: per_bucket(&|_, list| select(list)),
            order_lines,
            cancel_orders: per_bucket(&|_, list| {
                format!(
                    "UPDATE {orders} SET {status} = ?{order_touch} WHERE {id} IN ({list}) AND {status} = ?{unpaid_guard}"
                )
            }),
            return_stock: per_bucket(&|n, list| {
                let cases = vec!["WHEN ? THEN ?"; n].join(" ");
                format!(
                    "UPDATE {products} SET {stock} = {stock} + CASE {id} {cases} ELSE 0 END{product_touch} WHERE {id} IN ({list})"
                )
            }),
            read_back: shape.orders_updated_at.then(|| {
                per_bucket(&|_, list| {
                    format!(
                        "SELECT {id}, {status}, {orders}.{updated_at} FROM {orders} WHERE {id} IN ({list}) ORDER BY {id} FOR UPDATE"
                    )
                })
            }),
            products: products.clone(),
            shape,
        }
    }

    /// The status and `updated_at` of the orders of `ids`, locked (so after any transaction
    /// that held them has ended); `None` when the table has no `updated_at`.
    pub(crate) async fn read_back(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[u64],
    ) -> Result<Option<Vec<(u64, i64, Option<jiff::civil::DateTime>)>>, mysql_async::Error> {
        let Some(statements) = &self.read_back else {
            return Ok(None);
        };
        let rows: Vec<(u64, i64, Value)> = tx
            .exec(&statements[bucket_index(ids.len())], padded(ids))
            .await?;
        Ok(Some(
            rows.into_iter()
                .map(|(id, status, updated)| (id, status, civil(&updated)))
                .collect(),
        ))
    }

    /// Locks the rows of `ids` (sorted, at most [`MAX_BATCH`]) in id order and reads them;
    /// with `skip_locked`, only those no other transaction holds (the others are not
    /// returned, as if missing: see [`Self::peek`]).
    pub(crate) async fn lock(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[u64],
        skip_locked: bool,
    ) -> Result<Vec<LockedOrder>, mysql_async::Error> {
        let statements = if skip_locked {
            &self.lock_free_orders
        } else {
            &self.lock_orders
        };
        tx.exec(&statements[bucket_index(ids.len())], padded(ids))
            .await
    }

    /// Reads the rows of `ids` without locking them (a consistent read, which waits for no
    /// lock): tells the rows another transaction holds from the missing ones.
    pub(crate) async fn peek(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[u64],
    ) -> Result<Vec<LockedOrder>, mysql_async::Error> {
        tx.exec(&self.peek_orders[bucket_index(ids.len())], padded(ids))
            .await
    }

    /// The lines of the `unpaid` orders, from the items table; `None` when the lines are on the
    /// order rows, already read by [`Self::lock`].
    pub(crate) async fn lines(
        &self,
        tx: &mut Transaction<'_>,
        unpaid: &[u64],
    ) -> Result<Option<Vec<OrderLine>>, mysql_async::Error> {
        let Some(statements) = &self.order_lines else {
            return Ok(None);
        };
        let sql = &statements[bucket_index(unpaid.len())];
        tx.exec(sql, padded(unpaid)).await.map(Some)
    }

    /// Sets the `unpaid` orders (still in status `unpaid_status`) to `cancelled_status`,
    /// touching `updated_at` with `now` where the table has it. Returns the rows changed.
    pub(crate) async fn cancel(
        &self,
        tx: &mut Transaction<'_>,
        unpaid: &[u64],
        (unpaid_status, cancelled_status): (i64, i64),
        now: &str,
    ) -> Result<u64, mysql_async::Error> {
        let mut params: Vec<Value> = vec![cancelled_status.into()];
        if self.shape.orders_updated_at {
            params.push(now.into());
        }
        params.extend(padded(unpaid).into_iter().map(Value::from));
        params.push(unpaid_status.into());
        tx.exec_drop(
            &self.cancel_orders[bucket_index(unpaid.len())],
            Params::Positional(params),
        )
        .await?;
        Ok(tx.affected_rows())
    }

    /// Adds each `(product, quantity)` back to its product's stock, touching `updated_at` with
    /// `now` where the table has it. Returns the rows changed (fewer when products are gone).
    pub(crate) async fn return_stock(
        &self,
        tx: &mut Transaction<'_>,
        pairs: &[(u64, u64)],
        now: &str,
    ) -> Result<u64, mysql_async::Error> {
        let padded_pairs = padded(pairs);
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
            &self.return_stock[bucket_index(pairs.len())],
            Params::Positional(params),
        )
        .await?;
        Ok(tx.affected_rows())
    }

    /// Which of `products` still have a row.
    pub(crate) async fn existing_products(
        &self,
        tx: &mut Transaction<'_>,
        products: &[u64],
    ) -> Result<Vec<u64>, mysql_async::Error> {
        let mut existing = Vec::new();
        for chunk in products.chunks(MAX_BATCH) {
            let sql = format!(
                "SELECT {id} FROM {products} WHERE {id} IN ({list})",
                id = Schema::id_column(),
                products = self.products,
                list = placeholders(chunk.len())
            );
            let found: Vec<u64> = tx.exec(sql, chunk.to_vec()).await?;
            existing.extend(found);
        }
        Ok(existing)
    }
}

/// ` AND <paid> IS NULL` when a paid column is configured: orders the app marked paid are not
/// candidates, whatever their status.
fn not_paid(schema: &Schema) -> String {
    schema
        .paid_column
        .as_ref()
        .map(|paid| format!(" AND {paid} IS NULL"))
        .unwrap_or_default()
}

/// The deadline watcher's discovery of unpaid orders by primary key.
pub(crate) struct DeadlineQueries {
    oldest_pending: String,
    newest_id: String,
    new_orders: String,
    unpaid: i64,
}

impl DeadlineQueries {
    /// `page` rows at most per [`Self::new_orders`].
    pub(crate) fn new(schema: &Schema, page: usize) -> Self {
        let Schema {
            orders,
            order_status: status,
            ..
        } = schema;
        let id = Schema::id_column();
        let created = Schema::created_at_column();
        let not_paid = not_paid(schema);
        Self {
            oldest_pending: format!(
                "SELECT MIN({id}) FROM {orders} WHERE {status} = ? AND {created} >= ?"
            ),
            newest_id: format!("SELECT MAX({id}) FROM {orders}"),
            new_orders: format!(
                "SELECT {id}, {created} FROM {orders} WHERE {id} > ? AND {status} = ?{not_paid} \
                 AND {created} IS NOT NULL ORDER BY {id} LIMIT {page}"
            ),
            unpaid: schema.unpaid_status,
        }
    }

    /// The oldest unpaid order created at or after `since` (`Y-m-d H:i:s`, the app's clock).
    pub(crate) async fn oldest_pending(
        &self,
        conn: &mut Conn,
        since: &str,
    ) -> Result<Option<u64>, mysql_async::Error> {
        let first: Option<Option<u64>> = conn
            .exec_first(&self.oldest_pending, (self.unpaid, since))
            .await?;
        Ok(first.flatten())
    }

    /// The newest order id, of any status.
    pub(crate) async fn newest_id(
        &self,
        conn: &mut Conn,
    ) -> Result<Option<u64>, mysql_async::Error> {
        let max: Option<Option<u64>> = conn.query_first(&self.newest_id).await?;
        Ok(max.flatten())
    }

    /// A page of unpaid orders with an id above `after`, in id order, with their `created_at`
    /// (`None` where it cannot be read as a date-time).
    pub(crate) async fn new_orders(
        &self,
        conn: &mut Conn,
        after: u64,
    ) -> Result<Vec<(u64, Option<jiff::civil::DateTime>)>, mysql_async::Error> {
        let page: Vec<(u64, Value)> = conn.exec(&self.new_orders, (after, self.unpaid)).await?;
        Ok(page
            .into_iter()
            .map(|(id, created)| (id, civil(&created)))
            .collect())
    }
}

/// The reconciliation's keyset pages of overdue unpaid orders, in `(created_at, id)` order,
/// which the `(status, created_at)` index serves as a range scan.
///
/// The pages are walked by `(created_at, id)` in two reads after the first page: the rest of
/// the cursor's second (`created_at = ? AND id > ?`, a seek on the index, whose entries carry
/// the primary key in InnoDB) and then what follows it (`created_at > ?`). One range read
/// `created_at >= ? AND (created_at > ? OR id > ?)` would read again, on every page, each entry
/// of that second before the cursor: many orders in one second (a flash sale, an import) made
/// a sweep quadratic.
pub(crate) struct ReconcileQueries {
    first_page: String,
    /// The rest of the cursor's `created_at` second, by id.
    same_second: String,
    /// The orders of the seconds after the cursor's.
    later: String,
    /// The rows a page holds.
    page: usize,
    /// How many there are, at most `?` counted: the same range of the same index.
    count: String,
    unpaid: i64,
}

impl ReconcileQueries {
    /// `page` rows at most per [`Self::page`].
    pub(crate) fn new(schema: &Schema, page: usize) -> Self {
        let Schema {
            orders,
            order_status: status,
            ..
        } = schema;
        let id = Schema::id_column();
        let created = Schema::created_at_column();
        let not_paid = not_paid(schema);
        let range = format!(
            "FROM {orders} WHERE {status} = ?{not_paid} AND {created} IS NOT NULL AND {created} <= ?"
        );
        let select = format!("SELECT {id}, {created} {range}");
        Self {
            count: format!("SELECT COUNT(*) FROM (SELECT 1 {range} LIMIT ?) AS overdue"),
            first_page: format!("{select} ORDER BY {created}, {id} LIMIT {page}"),
            same_second: format!(
                "{select} AND {created} = ? AND {id} > ? ORDER BY {id} LIMIT {page}"
            ),
            later: format!("{select} AND {created} > ? ORDER BY {created}, {id} LIMIT {page}"),
            page,
            unpaid: schema.unpaid_status,
        }
    }

    /// How many unpaid orders were created at or before `cutoff`, counting at most `at_most`
    /// (a bounded read of the index range the pages walk).
    pub(crate) async fn count(
        &self,
        conn: &mut Conn,
        cutoff: &str,
        at_most: u64,
    ) -> Result<u64, mysql_async::Error> {
        let n: Option<u64> = conn
            .exec_first(&self.count, (self.unpaid, cutoff, at_most))
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// The unpaid orders created at or before `cutoff`, after `cursor` (the last row of the
    /// previous page) when given.
    pub(crate) async fn page(
        &self,
        conn: &mut Conn,
        cutoff: &str,
        cursor: Option<&(CreatedAt, u64)>,
    ) -> Result<Vec<(u64, CreatedAt)>, mysql_async::Error> {
        let Some((created, id)) = cursor else {
            return conn.exec(&self.first_page, (self.unpaid, cutoff)).await;
        };
        let mut rows: Vec<(u64, Value)> = conn
            .exec(&self.same_second, (self.unpaid, cutoff, created, id))
            .await?;
        if rows.len() < self.page {
            let later: Vec<(u64, Value)> = conn
                .exec(&self.later, (self.unpaid, cutoff, created))
                .await?;
            let room = self.page - rows.len();
            rows.extend(later.into_iter().take(room));
        }
        Ok(rows)
    }
}

/// Which of a list of orders are still unpaid (and, with a paid column, not paid), read
/// without a lock: a plain consistent read that waits for no writer. Only a filter: the
/// writer's locked transaction still decides each order it is given.
pub(crate) struct UnpaidQuery {
    per_bucket: PerBucket,
    unpaid: i64,
}

impl UnpaidQuery {
    pub(crate) fn new(schema: &Schema) -> Self {
        let Schema {
            orders,
            order_status: status,
            ..
        } = schema;
        let id = Schema::id_column();
        let not_paid = not_paid(schema);
        Self {
            per_bucket: BUCKETS.map(|n| {
                format!(
                    "SELECT {id} FROM {orders} WHERE {id} IN ({list}) AND {status} = ?{not_paid}",
                    list = placeholders(n)
                )
            }),
            unpaid: schema.unpaid_status,
        }
    }

    /// The ids among `ids` still unpaid, in chunks of at most [`MAX_BATCH`].
    pub(crate) async fn still_unpaid(
        &self,
        conn: &mut Conn,
        ids: &[u64],
    ) -> Result<Vec<u64>, mysql_async::Error> {
        let mut unpaid = Vec::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let mut params: Vec<Value> = padded(chunk).into_iter().map(Value::from).collect();
            params.push(self.unpaid.into());
            let found: Vec<u64> = conn
                .exec(&self.per_bucket[bucket_index(chunk.len())], params)
                .await?;
            unpaid.extend(found);
        }
        unpaid.sort_unstable();
        unpaid.dedup();
        Ok(unpaid)
    }
}

/// A MySQL DATETIME/TIMESTAMP value as a civil date-time (the app's wall clock).
pub(crate) fn civil(value: &Value) -> Option<jiff::civil::DateTime> {
    match value {
        Value::Date(y, mo, d, h, mi, s, us) => jiff::civil::DateTime::new(
            i16::try_from(*y).ok()?,
            i8::try_from(*mo).ok()?,
            i8::try_from(*d).ok()?,
            i8::try_from(*h).ok()?,
            i8::try_from(*mi).ok()?,
            i8::try_from(*s).ok()?,
            i32::try_from(*us).ok()?.checked_mul(1000)?,
        )
        .ok(),
        Value::Bytes(text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}

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

    #[test]
    fn mysql_dates_read_as_the_app_wall_clock() {
        let expected: jiff::civil::DateTime = "2024-03-01 12:34:56".parse().expect("date");
        assert_eq!(
            civil(&Value::Date(2024, 3, 1, 12, 34, 56, 0)),
            Some(expected)
        );
        assert_eq!(
            civil(&Value::Bytes(b"2024-03-01 12:34:56".to_vec())),
            Some(expected)
        );
        assert_eq!(civil(&Value::NULL), None);
    }
}
