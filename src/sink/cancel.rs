//! Cancelling one order, exactly once.
//!
//! Keyspace events are delivered to every subscriber, sometimes twice, and a failed write is
//! retried; the database is what makes the side effect happen once. Per order, one transaction:
//!
//! 1. `SELECT ... FOR UPDATE` locks the order row, so a second worker handling the same order
//!    waits here until the first commits, then sees it cancelled;
//! 2. only an order still in the unpaid status is touched: a paid, already cancelled or missing
//!    order writes nothing;
//! 3. `UPDATE orders SET status = <cancelled>, updated_at = <now in the app's time zone>` guarded
//!    by `AND status = <unpaid>` (belt and braces: the row count must be 1);
//! 4. the quantity goes back to `products.stock` (per product, in ascending product id so that
//!    two orders sharing products cannot deadlock), touching `products.updated_at` as Eloquent's
//!    `increment()` would;
//! 5. commit. Any error rolls everything back and the caller retries.
//!
//! `updated_at` is the literal `Y-m-d H:i:s` in the app time zone that Eloquent sends, not
//! `NOW()`, which would follow the server's time zone instead.

use std::fmt;

use mysql_async::TxOpts;
use mysql_async::prelude::Queryable;

use super::database::{Database, TableShape};
use crate::config::{OrderLines, Schema, TimeZoneSetting};
use crate::error::Error;

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
    /// No such order: nothing written.
    Missing,
}

/// The prepared SQL for one schema mapping.
struct Statements {
    lock_order: String,
    order_lines: Option<String>,
    cancel_order: String,
    return_stock: String,
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
        let (lock_order, order_lines) = match &schema.lines {
            OrderLines::OnOrder { product, quantity } => (
                format!(
                    "SELECT {status}, {product}, {quantity} FROM {orders} WHERE {id} = ? FOR UPDATE"
                ),
                None,
            ),
            OrderLines::Items {
                table,
                order,
                product,
                quantity,
            } => (
                format!("SELECT {status}, NULL, NULL FROM {orders} WHERE {id} = ? FOR UPDATE"),
                Some(format!(
                    "SELECT {product}, CAST(SUM({quantity}) AS SIGNED) FROM {table} WHERE {order} = ? \
                     GROUP BY {product} ORDER BY {product}"
                )),
            ),
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
        Self {
            lock_order,
            order_lines,
            cancel_order: format!(
                "UPDATE {orders} SET {status} = ?{order_touch} WHERE {id} = ? AND {status} = ?"
            ),
            return_stock: format!(
                "UPDATE {products} SET {stock} = {stock} + ?{product_touch} WHERE {id} = ?"
            ),
        }
    }
}

/// Cancels orders in the app's database.
pub struct Writer {
    db: Database,
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

    /// Eloquent's `freshTimestampString()`: now, in the app time zone, `Y-m-d H:i:s`.
    fn now(&self) -> String {
        self.timezone.eloquent(jiff::Timestamp::now())
    }

    /// Cancels `order` if it is still unpaid and returns its stock, in one transaction.
    pub async fn cancel(&self, order: u64) -> Result<Outcome, CancelError> {
        let mut conn = self.db.conn().await.map_err(CancelError::connect)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(CancelError::query("BEGIN"))?;

        let row: Option<(i64, Option<u64>, Option<i64>)> = tx
            .exec_first(&self.sql.lock_order, (order,))
            .await
            .map_err(CancelError::query("locking the order"))?;
        let Some((status, product, quantity)) = row else {
            tx.rollback()
                .await
                .map_err(CancelError::query("ROLLBACK"))?;
            return Ok(Outcome::Missing);
        };
        if status != self.unpaid {
            tx.rollback()
                .await
                .map_err(CancelError::query("ROLLBACK"))?;
            return Ok(if status == self.cancelled {
                Outcome::AlreadyCancelled
            } else {
                Outcome::NotUnpaid { status }
            });
        }

        let lines: Vec<(u64, i64)> = match &self.sql.order_lines {
            Some(sql) => tx
                .exec(sql, (order,))
                .await
                .map_err(CancelError::query("reading the order's items"))?,
            None => product.zip(quantity).into_iter().collect(),
        };

        let now = self.now();
        let cancel = if self.shape.orders_updated_at {
            tx.exec_drop(
                &self.sql.cancel_order,
                (self.cancelled, &now, order, self.unpaid),
            )
            .await
        } else {
            tx.exec_drop(&self.sql.cancel_order, (self.cancelled, order, self.unpaid))
                .await
        };
        cancel.map_err(CancelError::query("cancelling the order"))?;
        if tx.affected_rows() != 1 {
            // Cannot happen while we hold the row lock; refuse to return stock if it does.
            tx.rollback()
                .await
                .map_err(CancelError::query("ROLLBACK"))?;
            return Err(CancelError::Unexpected(
                "the order changed under its row lock".into(),
            ));
        }

        let mut units = 0u64;
        let mut missing_products = Vec::new();
        for (product, quantity) in lines {
            let Ok(quantity) = u64::try_from(quantity) else {
                continue;
            };
            if quantity == 0 {
                continue;
            }
            let result = if self.shape.products_updated_at {
                tx.exec_drop(&self.sql.return_stock, (quantity, &now, product))
                    .await
            } else {
                tx.exec_drop(&self.sql.return_stock, (quantity, product))
                    .await
            };
            result.map_err(CancelError::query("returning stock"))?;
            if tx.affected_rows() == 1 {
                units += quantity;
            } else {
                missing_products.push(product);
            }
        }
        tx.commit().await.map_err(CancelError::query("COMMIT"))?;
        Ok(Outcome::Cancelled {
            units,
            missing_products,
        })
    }
}

/// A failed attempt; the worker retries it.
#[derive(Debug)]
pub enum CancelError {
    Mysql {
        action: &'static str,
        source: mysql_async::Error,
    },
    Unexpected(String),
}

impl CancelError {
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
