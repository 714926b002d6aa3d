//! Every statement against the app's `orders`, `products` and items tables on PostgreSQL, in
//! one place: the writer's transaction ([`WriteStatements`]), the deadline watcher's discovery
//! ([`DeadlineQueries`]), the reconciliation's pages ([`ReconcileQueries`]) and the look at
//! set-aside orders ([`UnpaidQuery`]).
//!
//! Id lists are one `int8[]` parameter (`= ANY($1)`), so each statement is one prepared
//! statement whatever the batch size (cached per connection). Every integer read is cast to
//! `int8` and every integer written is an `int8` parameter, which PostgreSQL's assignment casts
//! narrow to the column (a value that does not fit is SQLSTATE 22003, a permanent error). Time
//! literals are text in the app's time zone, as Eloquent sends them, cast to the column's own
//! type.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::types::ToSql;

use super::error::PgQueryError;
use super::schema::PgShape;
use crate::config::{OrderLines, Schema};

/// An order row as locked: id, status, product and quantity (on the order, else NULL), and
/// whether its paid column is set.
pub(crate) type LockedOrder = (u64, i64, Option<u64>, Option<i64>, bool);

/// A line of an order: order id, product id, quantity (summed per product).
pub(crate) type OrderLine = (u64, u64, i64);

/// Ids as PostgreSQL's `int8`. Ids come from the app's own keys and rows, all below `i64::MAX`.
fn ids_param(ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .map(|id| i64::try_from(*id).unwrap_or(i64::MAX))
        .collect()
}

fn id_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `, <column> = CAST($n::text AS <type>)` when the table has the column.
fn touch(cast: Option<&str>, n: usize) -> String {
    match cast {
        Some(cast) => format!(
            ", {} = CAST(${n}::text AS {cast})",
            Schema::updated_at_column().pg_quoted()
        ),
        None => String::new(),
    }
}

/// The writer's SQL for one schema mapping.
pub(crate) struct WriteStatements {
    lock_orders: String,
    lock_free_orders: String,
    peek_orders: String,
    order_lines: Option<String>,
    cancel_orders: String,
    lock_products: String,
    return_stock: String,
    existing_products: String,
    /// The orders' status and `updated_at` under lock, to read back a `COMMIT` without reply;
    /// `None` when the table has no `updated_at`.
    read_back: Option<String>,
    shape: PgShape,
}

impl WriteStatements {
    pub(crate) fn new(schema: &Schema, shape: PgShape) -> Self {
        let orders = schema.orders.pg_quoted();
        let status = schema.order_status.pg_quoted();
        let products = schema.products.pg_quoted();
        let stock = schema.product_stock.pg_quoted();
        let id = Schema::id_column().pg_quoted();
        let (paid, unpaid_guard) = match &schema.paid_column {
            Some(paid) => (
                format!("{} IS NOT NULL", paid.pg_quoted()),
                format!(" AND {} IS NULL", paid.pg_quoted()),
            ),
            None => ("false".to_string(), String::new()),
        };
        let (line_columns, order_lines) = match &schema.lines {
            OrderLines::OnOrder { product, quantity } => (
                format!(
                    "{}::int8, {}::int8",
                    product.pg_quoted(),
                    quantity.pg_quoted()
                ),
                None,
            ),
            OrderLines::Items {
                table,
                order,
                product,
                quantity,
            } => (
                "NULL::int8, NULL::int8".to_string(),
                Some(format!(
                    "SELECT {order}::int8, {product}::int8, SUM({quantity})::int8 FROM {table} \
                     WHERE {order} = ANY($1::int8[]) GROUP BY {order}, {product}",
                    order = order.pg_quoted(),
                    product = product.pg_quoted(),
                    quantity = quantity.pg_quoted(),
                    table = table.pg_quoted()
                )),
            ),
        };
        let select = format!(
            "SELECT {id}::int8, {status}::int8, {line_columns}, {paid} FROM {orders} \
             WHERE {id} = ANY($1::int8[]) ORDER BY {id}"
        );
        let order_touch = touch(shape.orders_updated_at, 2);
        let stock_touch = touch(shape.products_updated_at, 3);
        Self {
            lock_orders: format!("{select} FOR UPDATE"),
            lock_free_orders: format!("{select} FOR UPDATE SKIP LOCKED"),
            peek_orders: select,
            order_lines,
            cancel_orders: format!(
                "UPDATE {orders} SET {status} = $1::int8{order_touch} \
                 WHERE {id} = ANY(${ids}::int8[]) AND {status} = ${unpaid}::int8{unpaid_guard}",
                ids = if shape.orders_updated_at.is_some() {
                    3
                } else {
                    2
                },
                unpaid = if shape.orders_updated_at.is_some() {
                    4
                } else {
                    3
                },
            ),
            // Products are locked in id order before the update, so concurrent batches
            // returning stock to the same products cannot deadlock.
            lock_products: format!(
                "SELECT {id}::int8 FROM {products} WHERE {id} = ANY($1::int8[]) ORDER BY {id} FOR UPDATE"
            ),
            return_stock: format!(
                "UPDATE {products} AS p SET {stock} = p.{stock} + v.quantity{stock_touch} \
                 FROM unnest($1::int8[], $2::int8[]) AS v(id, quantity) WHERE p.{id} = v.id"
            ),
            existing_products: format!(
                "SELECT {id}::int8 FROM {products} WHERE {id} = ANY($1::int8[])"
            ),
            read_back: shape.orders_updated_at.map(|_| {
                format!(
                    "SELECT {id}::int8, {status}::int8, {} FROM {orders} \
                     WHERE {id} = ANY($1::int8[]) ORDER BY {id} FOR UPDATE",
                    wall_clock(&Schema::updated_at_column().pg_quoted())
                )
            }),
            shape,
        }
    }

    fn rows_to_locked(rows: &[tokio_postgres::Row]) -> Vec<LockedOrder> {
        rows.iter()
            .map(|r| {
                (
                    id_of(r.get(0)),
                    r.get(1),
                    r.get::<_, Option<i64>>(2).map(id_of),
                    r.get(3),
                    r.get(4),
                )
            })
            .collect()
    }

    /// Locks the rows of `ids` in id order and reads them; with `skip_locked`, only those no
    /// other transaction holds.
    pub(crate) async fn lock(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
        skip_locked: bool,
    ) -> Result<Vec<LockedOrder>, PgQueryError> {
        let sql = if skip_locked {
            &self.lock_free_orders
        } else {
            &self.lock_orders
        };
        let statement = tx.prepare_cached(sql).await?;
        let rows = tx.query(&statement, &[&ids_param(ids)]).await?;
        Ok(Self::rows_to_locked(&rows))
    }

    /// Reads the rows of `ids` without locking them (a plain read waits for no row lock).
    pub(crate) async fn peek(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
    ) -> Result<Vec<LockedOrder>, PgQueryError> {
        let statement = tx.prepare_cached(&self.peek_orders).await?;
        let rows = tx.query(&statement, &[&ids_param(ids)]).await?;
        Ok(Self::rows_to_locked(&rows))
    }

    /// The lines of the `unpaid` orders from the items table; `None` when they are on the
    /// order rows.
    pub(crate) async fn lines(
        &self,
        tx: &Transaction<'_>,
        unpaid: &[u64],
    ) -> Result<Option<Vec<OrderLine>>, PgQueryError> {
        let Some(sql) = &self.order_lines else {
            return Ok(None);
        };
        let statement = tx.prepare_cached(sql).await?;
        let rows = tx.query(&statement, &[&ids_param(unpaid)]).await?;
        Ok(Some(
            rows.iter()
                .map(|r| {
                    (
                        id_of(r.get(0)),
                        id_of(r.get(1)),
                        r.get::<_, Option<i64>>(2).unwrap_or(0),
                    )
                })
                .collect(),
        ))
    }

    /// Sets the `unpaid` orders (still in status `unpaid_status`) to `cancelled_status`,
    /// touching `updated_at` with `now`. Returns the rows changed.
    pub(crate) async fn cancel(
        &self,
        tx: &Transaction<'_>,
        unpaid: &[u64],
        (unpaid_status, cancelled_status): (i64, i64),
        now: &str,
    ) -> Result<u64, PgQueryError> {
        let ids = ids_param(unpaid);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&cancelled_status];
        if self.shape.orders_updated_at.is_some() {
            params.push(&now);
        }
        params.push(&ids);
        params.push(&unpaid_status);
        let statement = tx.prepare_cached(&self.cancel_orders).await?;
        Ok(tx.execute(&statement, &params).await?)
    }

    /// Adds each `(product, quantity)` back to its product's stock (locking the products in id
    /// order first), touching `updated_at` with `now`. Returns the rows changed.
    pub(crate) async fn return_stock(
        &self,
        tx: &Transaction<'_>,
        pairs: &[(u64, u64)],
        now: &str,
    ) -> Result<u64, PgQueryError> {
        let products: Vec<u64> = pairs.iter().map(|(p, _)| *p).collect();
        let products = ids_param(&products);
        let quantities: Vec<i64> = pairs
            .iter()
            .map(|(_, q)| i64::try_from(*q).unwrap_or(i64::MAX))
            .collect();
        let lock = tx.prepare_cached(&self.lock_products).await?;
        tx.query(&lock, &[&products]).await?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&products, &quantities];
        if self.shape.products_updated_at.is_some() {
            params.push(&now);
        }
        let statement = tx.prepare_cached(&self.return_stock).await?;
        Ok(tx.execute(&statement, &params).await?)
    }

    /// The status and `updated_at` of the orders of `ids`, locked (so after any transaction
    /// that held them has ended); `None` when the table has no `updated_at`.
    #[allow(clippy::type_complexity)]
    pub(crate) async fn read_back(
        &self,
        tx: &Transaction<'_>,
        ids: &[u64],
    ) -> Result<Option<Vec<(u64, i64, Option<jiff::civil::DateTime>)>>, PgQueryError> {
        let Some(sql) = &self.read_back else {
            return Ok(None);
        };
        let statement = tx.prepare_cached(sql).await?;
        let rows = tx.query(&statement, &[&ids_param(ids)]).await?;
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let updated: Option<String> = r.get(2);
                    (
                        id_of(r.get(0)),
                        r.get(1),
                        updated.and_then(|u| u.parse().ok()),
                    )
                })
                .collect(),
        ))
    }

    /// Which of `products` still have a row.
    pub(crate) async fn existing_products(
        &self,
        tx: &Transaction<'_>,
        products: &[u64],
    ) -> Result<Vec<u64>, PgQueryError> {
        let statement = tx.prepare_cached(&self.existing_products).await?;
        let rows = tx.query(&statement, &[&ids_param(products)]).await?;
        Ok(rows.iter().map(|r| id_of(r.get(0))).collect())
    }
}

/// ` AND <paid> IS NULL` when a paid column is configured.
fn not_paid(schema: &Schema) -> String {
    schema
        .paid_column
        .as_ref()
        .map(|paid| format!(" AND {} IS NULL", paid.pg_quoted()))
        .unwrap_or_default()
}

/// `created_at` as the app's wall clock (`Y-m-d H:i:s`; a `timestamptz` in the session's zone).
fn wall_clock(created: &str) -> String {
    format!("to_char({created}, 'YYYY-MM-DD HH24:MI:SS')")
}

/// The deadline watcher's discovery of unpaid orders by primary key.
pub(crate) struct DeadlineQueries {
    oldest_pending: String,
    newest_id: String,
    new_orders: String,
    unpaid: i64,
}

impl DeadlineQueries {
    pub(crate) fn new(schema: &Schema, page: usize) -> Self {
        let orders = schema.orders.pg_quoted();
        let status = schema.order_status.pg_quoted();
        let id = Schema::id_column().pg_quoted();
        let created = Schema::created_at_column().pg_quoted();
        let not_paid = not_paid(schema);
        let clock = wall_clock(&created);
        Self {
            oldest_pending: format!(
                "SELECT MIN({id})::int8 FROM {orders} WHERE {status} = $1::int8 \
                 AND {created} >= $2::text::timestamp"
            ),
            newest_id: format!("SELECT MAX({id})::int8 FROM {orders}"),
            new_orders: format!(
                "SELECT {id}::int8 AS order_id, {clock} FROM {orders} WHERE {id} > $1::int8 AND {status} = $2::int8{not_paid} \
                 AND {created} IS NOT NULL ORDER BY {id} LIMIT {page}"
            ),
            unpaid: schema.unpaid_status,
        }
    }

    pub(crate) async fn oldest_pending(
        &self,
        conn: &Object,
        since: &str,
    ) -> Result<Option<u64>, PgQueryError> {
        let statement = conn.prepare_cached(&self.oldest_pending).await?;
        let row = conn.query_one(&statement, &[&self.unpaid, &since]).await?;
        Ok(row.get::<_, Option<i64>>(0).map(id_of))
    }

    pub(crate) async fn newest_id(&self, conn: &Object) -> Result<Option<u64>, PgQueryError> {
        let statement = conn.prepare_cached(&self.newest_id).await?;
        let row = conn.query_one(&statement, &[]).await?;
        Ok(row.get::<_, Option<i64>>(0).map(id_of))
    }

    pub(crate) async fn new_orders(
        &self,
        conn: &Object,
        after: u64,
    ) -> Result<Vec<(u64, Option<jiff::civil::DateTime>)>, PgQueryError> {
        let statement = conn.prepare_cached(&self.new_orders).await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = conn.query(&statement, &[&after, &self.unpaid]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let created: Option<String> = r.get(1);
                (id_of(r.get(0)), created.and_then(|c| c.parse().ok()))
            })
            .collect())
    }
}

/// An order's `created_at` as text, exact (a `timestamptz` as the session's wall clock, which
/// `::timestamp` reads back the same): the keyset cursor.
pub(crate) type CreatedAt = String;

/// The reconciliation's keyset pages of overdue unpaid orders, in `(created_at, id)` order;
/// after the first page, the rest of the cursor's second by id, then the seconds after it (as
/// on MySQL, `crate::mysql::orders::ReconcileQueries`: no page reads again the entries of its
/// second before the cursor).
pub(crate) struct ReconcileQueries {
    first_page: String,
    /// The rest of the cursor's `created_at` second, by id.
    same_second: String,
    /// The orders of the seconds after the cursor's.
    later: String,
    /// The rows a page holds.
    page: usize,
    count: String,
    unpaid: i64,
}

impl ReconcileQueries {
    pub(crate) fn new(schema: &Schema, page: usize) -> Self {
        let orders = schema.orders.pg_quoted();
        let status = schema.order_status.pg_quoted();
        let id = Schema::id_column().pg_quoted();
        let created = Schema::created_at_column().pg_quoted();
        let not_paid = not_paid(schema);
        let range = format!(
            "FROM {orders} WHERE {status} = $1::int8{not_paid} AND {created} IS NOT NULL \
             AND {created} <= $2::text::timestamp"
        );
        // Aliased: an `ORDER BY` name matches an output column before a table's, and ordering by
        // the text (or by an `int4` id cast to `int8`) would sort the whole range on every page
        // instead of reading the index in order.
        let select = format!(
            "SELECT {id}::int8 AS order_id, {created}::timestamp::text AS created_text {range}"
        );
        Self {
            count: format!(
                "SELECT COUNT(*)::int8 FROM (SELECT 1 {range} LIMIT $3::int8) AS overdue"
            ),
            first_page: format!("{select} ORDER BY {created}, {id} LIMIT {page}"),
            same_second: format!(
                "{select} AND {created} = $3::text::timestamp AND {id} > $4::int8 \
                 ORDER BY {id} LIMIT {page}"
            ),
            later: format!(
                "{select} AND {created} > $3::text::timestamp ORDER BY {created}, {id} LIMIT {page}"
            ),
            page,
            unpaid: schema.unpaid_status,
        }
    }

    pub(crate) async fn count(
        &self,
        conn: &Object,
        cutoff: &str,
        at_most: u64,
    ) -> Result<u64, PgQueryError> {
        let statement = conn.prepare_cached(&self.count).await?;
        let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
        let row = conn
            .query_one(&statement, &[&self.unpaid, &cutoff, &at_most])
            .await?;
        Ok(id_of(row.get(0)))
    }

    pub(crate) async fn page(
        &self,
        conn: &Object,
        cutoff: &str,
        cursor: Option<&(CreatedAt, u64)>,
    ) -> Result<Vec<(u64, CreatedAt)>, PgQueryError> {
        let rows = match cursor {
            None => {
                let statement = conn.prepare_cached(&self.first_page).await?;
                conn.query(&statement, &[&self.unpaid, &cutoff]).await?
            }
            Some((created, id)) => {
                let statement = conn.prepare_cached(&self.same_second).await?;
                let id = i64::try_from(*id).unwrap_or(i64::MAX);
                let mut rows = conn
                    .query(&statement, &[&self.unpaid, &cutoff, created, &id])
                    .await?;
                if rows.len() < self.page {
                    let statement = conn.prepare_cached(&self.later).await?;
                    let later = conn
                        .query(&statement, &[&self.unpaid, &cutoff, created])
                        .await?;
                    let room = self.page - rows.len();
                    rows.extend(later.into_iter().take(room));
                }
                rows
            }
        };
        Ok(rows
            .iter()
            .map(|r| (id_of(r.get(0)), r.get::<_, String>(1)))
            .collect())
    }
}

/// `created_at`'s text as a civil date-time (the app's wall clock).
pub(crate) fn civil(created: &str) -> Option<jiff::civil::DateTime> {
    created.parse().ok()
}

/// Which of a list of orders are still unpaid, read without a lock.
pub(crate) struct UnpaidQuery {
    sql: String,
    unpaid: i64,
}

impl UnpaidQuery {
    pub(crate) fn new(schema: &Schema) -> Self {
        let id = Schema::id_column().pg_quoted();
        Self {
            sql: format!(
                "SELECT {id}::int8 FROM {orders} WHERE {id} = ANY($1::int8[]) AND {status} = $2::int8{not_paid}",
                orders = schema.orders.pg_quoted(),
                status = schema.order_status.pg_quoted(),
                not_paid = not_paid(schema)
            ),
            unpaid: schema.unpaid_status,
        }
    }

    pub(crate) async fn still_unpaid(
        &self,
        conn: &Object,
        ids: &[u64],
    ) -> Result<Vec<u64>, PgQueryError> {
        let statement = conn.prepare_cached(&self.sql).await?;
        let rows = conn
            .query(&statement, &[&ids_param(ids), &self.unpaid])
            .await?;
        let mut unpaid: Vec<u64> = rows.iter().map(|r| id_of(r.get(0))).collect();
        unpaid.sort_unstable();
        unpaid.dedup();
        Ok(unpaid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ident;

    fn schema() -> Schema {
        let ident = |s: &str| Ident::new(s).expect("valid");
        Schema {
            orders: ident("orders"),
            order_status: ident("status"),
            lines: OrderLines::OnOrder {
                product: ident("product_id"),
                quantity: ident("quantity"),
            },
            products: ident("products"),
            product_stock: ident("stock"),
            unpaid_status: 0,
            cancelled_status: 2,
            paid_column: Some(ident("paid_at")),
        }
    }

    #[test]
    fn the_cancel_numbers_its_parameters_with_and_without_updated_at() {
        let with = PgShape {
            orders_updated_at: Some("timestamp"),
            products_updated_at: Some("timestamp"),
        };
        let sql = WriteStatements::new(&schema(), with);
        assert_eq!(
            sql.cancel_orders,
            "UPDATE \"orders\" SET \"status\" = $1::int8, \"updated_at\" = CAST($2::text AS timestamp) \
             WHERE \"id\" = ANY($3::int8[]) AND \"status\" = $4::int8 AND \"paid_at\" IS NULL"
        );
        let without = PgShape {
            orders_updated_at: None,
            products_updated_at: None,
        };
        let sql = WriteStatements::new(&schema(), without);
        assert!(
            sql.cancel_orders
                .contains("ANY($2::int8[]) AND \"status\" = $3::int8")
        );
        assert!(!sql.return_stock.contains("$3"));
    }
}
