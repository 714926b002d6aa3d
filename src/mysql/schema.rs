//! A check, once at start, of the schema the writer relies on: every configured table and column
//! exists, the statuses fit the status column, the paid column can be NULL, and the index the
//! sweep and the deadline watcher read by is there (a warning otherwise).

use std::collections::{BTreeMap, BTreeSet};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::{Database, MysqlError};
use crate::config::{Ident, OrderLines, Schema, keys};

/// Which optional columns the app's tables have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableShape {
    /// `orders.updated_at` exists: Eloquent would set it on save.
    pub orders_updated_at: bool,
    /// `products.updated_at` exists: Eloquent's `increment()` would set it.
    pub products_updated_at: bool,
}

/// A row of `information_schema.COLUMNS`: table, column, column type, `YES` when nullable.
type ColumnRow = (String, String, String, String);

/// A column the writer needs: its table, its name, the setting that names it, and the fixed
/// name Eloquent expects (empty when the setting decides).
type Required<'a> = (&'a Ident, Ident, &'static str, &'static str);

impl Database {
    /// Checks that every configured table and column exists, and finds the optional ones.
    pub(crate) async fn inspect(&self, schema: &Schema) -> Result<TableShape, MysqlError> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let rows = self.read_columns(&mut conn, schema).await?;
        let mut columns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (table, column, _, _) in &rows {
            columns
                .entry(table.as_str())
                .or_default()
                .insert(column.as_str());
        }
        for required in required_columns(schema) {
            self.check_present(schema, &columns, required)?;
        }
        let column = |name: &Ident| {
            rows.iter()
                .find(|(t, c, _, _)| t == schema.orders.as_str() && c == name.as_str())
                .map(|(_, _, column_type, nullable)| (column_type.as_str(), nullable == "YES"))
        };
        if let Some((column_type, _)) = column(&schema.order_status) {
            self.check_statuses_fit(schema, column_type)?;
        }
        if let Some(paid) = &schema.paid_column
            && let Some((_, false)) = column(paid)
        {
            return Err(self.schema_error(format!(
                "{}.{paid} is NOT NULL, so every order would count as paid: set {} to a column that stays NULL until the order is paid",
                schema.orders, keys::PAID_COLUMN
            )));
        }
        self.warn_without_sweep_index(&mut conn, schema).await;
        let has_updated_at = |table: &str| {
            columns
                .get(table)
                .is_some_and(|c| c.contains(Schema::updated_at_column().as_str()))
        };
        Ok(TableShape {
            orders_updated_at: has_updated_at(schema.orders.as_str()),
            products_updated_at: has_updated_at(schema.products.as_str()),
        })
    }

    /// The columns of the orders, products and items tables.
    async fn read_columns(
        &self,
        conn: &mut Conn,
        schema: &Schema,
    ) -> Result<Vec<ColumnRow>, MysqlError> {
        let mut tables = vec![schema.orders.as_str(), schema.products.as_str()];
        if let OrderLines::Items { table, .. } = &schema.lines {
            tables.push(table.as_str());
        }
        conn.exec(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?, ?)",
            (
                tables[0],
                tables[1],
                tables.get(2).copied().unwrap_or(tables[0]),
            ),
        )
        .await
        .map_err(|e| self.error("reading information_schema.COLUMNS", e))
    }

    /// Fails with the fix when `required`'s table or column is missing.
    fn check_present(
        &self,
        schema: &Schema,
        columns: &BTreeMap<&str, BTreeSet<&str>>,
        (table, column, setting, fixed): Required<'_>,
    ) -> Result<(), MysqlError> {
        let Some(present) = columns.get(table.as_str()) else {
            let setting = match table {
                t if t == &schema.orders => keys::ORDERS_TABLE,
                t if t == &schema.products => keys::PRODUCTS_TABLE,
                _ => keys::ITEMS_TABLE,
            };
            return Err(self.schema_error(format!(
                "table {table} does not exist: run the app's migrations (php artisan migrate) or set {setting} to the right table"
            )));
        };
        if !present.contains(column.as_str()) {
            let fix = if fixed.is_empty() {
                format!("set {setting} to the right column")
            } else {
                format!("order-expire expects Eloquent's primary key `{fixed}`")
            };
            return Err(self.schema_error(format!("table {table} has no column {column}: {fix}")));
        }
        Ok(())
    }

    /// The `CREATE INDEX` statement the sweep needs, or `None` when the index exists.
    pub(crate) async fn missing_sweep_index(
        &self,
        schema: &Schema,
    ) -> Result<Option<String>, MysqlError> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        self.sweep_index(&mut conn, schema).await
    }

    /// The sweep and the deadline watcher read unpaid orders by `created_at`; without an index
    /// starting with `(status, created_at)` each read scans the table. Says which index to add.
    async fn sweep_index(
        &self,
        conn: &mut Conn,
        schema: &Schema,
    ) -> Result<Option<String>, MysqlError> {
        let indexes: Vec<(String, u32, String)> = conn
            .exec(
                "SELECT INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND SEQ_IN_INDEX <= 2",
                (schema.orders.as_str(),),
            )
            .await
            .map_err(|e| self.error("reading information_schema.STATISTICS", e))?;
        let created = Schema::created_at_column();
        let wanted = [schema.order_status.as_str(), created.as_str()];
        let mut by_index: BTreeMap<&str, [&str; 2]> = BTreeMap::new();
        for (index, seq, column) in &indexes {
            if let Some(slot) = by_index
                .entry(index.as_str())
                .or_default()
                .get_mut((*seq as usize).saturating_sub(1))
            {
                *slot = column.as_str();
            }
        }
        if by_index.values().any(|cols| *cols == wanted) {
            return Ok(None);
        }
        Ok(Some(format!(
            "CREATE INDEX {}_{}_created_at_index ON {} ({}, {})",
            schema.orders.as_str(),
            schema.order_status.as_str(),
            schema.orders,
            schema.order_status,
            created
        )))
    }

    async fn warn_without_sweep_index(&self, conn: &mut Conn, schema: &Schema) {
        match self.sweep_index(conn, schema).await {
            Ok(Some(statement)) => tracing::warn!(table = %schema.orders, add = %statement,
                "no index on (status, created_at): every sweep scans the orders table; add it with a migration"),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check the orders indexes"),
        }
    }

    /// Refuses to start when a status setting cannot be stored in the status column: every
    /// cancellation would then fail on the same error (out of range), forever.
    fn check_statuses_fit(&self, schema: &Schema, column_type: &str) -> Result<(), MysqlError> {
        let (low, high) = integer_range(column_type).ok_or_else(|| {
            self.schema_error(format!(
                "{}.{} is `{column_type}`, and order-expire writes integer statuses: use an integer status column (tinyint, smallint, int...) or set {} to the right column",
                schema.orders, schema.order_status, keys::ORDERS_STATUS_COLUMN
            ))
        })?;
        for (setting, value) in [
            (keys::UNPAID_STATUS, schema.unpaid_status),
            (keys::CANCELLED_STATUS, schema.cancelled_status),
        ] {
            if !(low..=high).contains(&i128::from(value)) {
                return Err(self.schema_error(format!(
                    "{setting}={value} does not fit {}.{}, which is `{column_type}` ({low} to {high}): set {setting} to the status the app uses",
                    schema.orders, schema.order_status
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn schema_error(&self, problem: String) -> MysqlError {
        MysqlError::Schema {
            endpoint: self.endpoint().to_string(),
            database: self.database.clone(),
            problem,
        }
    }
}

/// Every column the writer reads or writes, with the setting that names it.
fn required_columns(schema: &Schema) -> Vec<Required<'_>> {
    let id = Schema::id_column();
    let mut required = vec![
        (&schema.orders, id.clone(), keys::ORDERS_TABLE, "id"),
        (
            &schema.orders,
            schema.order_status.clone(),
            keys::ORDERS_STATUS_COLUMN,
            "",
        ),
        (&schema.products, id, keys::PRODUCTS_TABLE, "id"),
        (
            &schema.products,
            schema.product_stock.clone(),
            keys::PRODUCTS_STOCK_COLUMN,
            "",
        ),
    ];
    if let Some(paid) = &schema.paid_column {
        required.push((&schema.orders, paid.clone(), keys::PAID_COLUMN, ""));
    }
    match &schema.lines {
        OrderLines::OnOrder { product, quantity } => {
            required.push((
                &schema.orders,
                product.clone(),
                keys::ORDERS_PRODUCT_COLUMN,
                "",
            ));
            required.push((
                &schema.orders,
                quantity.clone(),
                keys::ORDERS_QUANTITY_COLUMN,
                "",
            ));
        }
        OrderLines::Items {
            table,
            order,
            product,
            quantity,
        } => {
            required.push((table, order.clone(), keys::ITEMS_ORDER_COLUMN, ""));
            required.push((table, product.clone(), keys::ITEMS_PRODUCT_COLUMN, ""));
            required.push((table, quantity.clone(), keys::ITEMS_QUANTITY_COLUMN, ""));
        }
    }
    required
}

/// The values an integer column of MySQL type `column_type` (`tinyint(4)`, `int(10) unsigned`,
/// `bigint`...) can hold; `None` for any other type.
fn integer_range(column_type: &str) -> Option<(i128, i128)> {
    let lower = column_type.to_ascii_lowercase();
    let mut words = lower.split_whitespace();
    let base = words.next()?;
    let name = base.split('(').next()?;
    let unsigned = words.any(|w| w == "unsigned");
    let bits: u32 = match name {
        "tinyint" | "bool" | "boolean" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        "bigint" => 64,
        _ => return None,
    };
    Some(if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_column_types_give_their_range() {
        assert_eq!(integer_range("tinyint(4)"), Some((-128, 127)));
        assert_eq!(integer_range("tinyint(3) unsigned"), Some((0, 255)));
        assert_eq!(integer_range("smallint"), Some((-32768, 32767)));
        assert_eq!(
            integer_range("mediumint(8) unsigned"),
            Some((0, 16_777_215))
        );
        assert_eq!(
            integer_range("INT(11)"),
            Some((-2_147_483_648, 2_147_483_647))
        );
        assert_eq!(
            integer_range("bigint(20) unsigned zerofill"),
            Some((0, 18_446_744_073_709_551_615))
        );
        for other in [
            "varchar(20)",
            "enum('new','paid')",
            "char(1)",
            "decimal(3,0)",
            "",
        ] {
            assert_eq!(integer_range(other), None, "{other}");
        }
    }
}
