//! A check, once at start, of the schema the writer relies on, in the first schema of the
//! connection's `search_path` (where Laravel's unqualified names resolve): every configured
//! table and column exists, the statuses fit the integer status column, the paid column can be
//! NULL, the user may do what the writer does (a missing privilege would fail every
//! cancellation forever), and the index the sweep reads by is there (a warning otherwise).

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Object;

use super::{Database, PgsqlError};
use crate::config::{Ident, OrderLines, Schema, keys};

/// How a timestamp parameter is cast to its column (a literal in the app's time zone, as
/// Eloquent writes it): `timestamp`, `timestamptz`, or `text` for any other type.
pub(crate) type TimeCast = &'static str;

/// Which optional columns the app's tables have, and their types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PgShape {
    /// `orders.updated_at`, when it exists: Eloquent would set it on save.
    pub(crate) orders_updated_at: Option<TimeCast>,
    /// `products.updated_at`, when it exists: Eloquent's `increment()` would set it.
    pub(crate) products_updated_at: Option<TimeCast>,
}

/// A row of `information_schema.columns`: table, column, data type, `YES` when nullable.
type ColumnRow = (String, String, String, String);

impl Database {
    /// Checks every configured table and column, and the user's privileges on them.
    pub(crate) async fn inspect(&self, schema: &Schema) -> Result<PgShape, PgsqlError> {
        let conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let rows = self.read_columns(&conn, schema).await?;
        let mut columns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (table, column, _, _) in &rows {
            columns.entry(table).or_default().insert(column);
        }
        for (table, column, setting) in required_columns(schema) {
            self.check_present(&columns, &table, &column, setting)?;
        }
        let column = |table: &Ident, name: &str| {
            rows.iter()
                .find(|(t, c, _, _)| t == table.as_str() && c == name)
                .map(|(_, _, data_type, nullable)| (data_type.as_str(), nullable == "YES"))
        };
        if let Some((data_type, _)) = column(&schema.orders, schema.order_status.as_str()) {
            self.check_statuses_fit(schema, data_type)?;
        }
        if let Some(paid) = &schema.paid_column
            && let Some((_, false)) = column(&schema.orders, paid.as_str())
        {
            return Err(self.schema_error(format!(
                "{}.{paid} is NOT NULL, so every order would count as paid: set {} to a column that stays NULL until the order is paid",
                schema.orders.as_str(),
                keys::PAID_COLUMN,
                paid = paid.as_str()
            )));
        }
        self.check_privileges(&conn, schema).await?;
        self.warn_without_sweep_index(&conn, schema).await;
        let updated = Schema::updated_at_column();
        let cast = |table: &Ident| column(table, updated.as_str()).map(|(t, _)| time_cast(t));
        Ok(PgShape {
            orders_updated_at: cast(&schema.orders),
            products_updated_at: cast(&schema.products),
        })
    }

    async fn read_columns(
        &self,
        conn: &Object,
        schema: &Schema,
    ) -> Result<Vec<ColumnRow>, PgsqlError> {
        let mut tables = vec![schema.orders.as_str(), schema.products.as_str()];
        if let OrderLines::Items { table, .. } = &schema.lines {
            tables.push(table.as_str());
        }
        let rows = conn
            .query(
                "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
                &[&tables],
            )
            .await
            .map_err(|e| self.error("reading information_schema.columns", e.into()))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    fn check_present(
        &self,
        columns: &BTreeMap<&str, BTreeSet<&str>>,
        table: &Ident,
        column: &Ident,
        setting: &'static str,
    ) -> Result<(), PgsqlError> {
        let Some(present) = columns.get(table.as_str()) else {
            return Err(self.schema_error(format!(
                "table {} does not exist in the connection's schema (search_path): run the app's migrations (php artisan migrate) or set {setting} to the right table",
                table.as_str()
            )));
        };
        if !present.contains(column.as_str()) {
            return Err(self.schema_error(format!(
                "table {} has no column {}: set {setting} to the right column",
                table.as_str(),
                column.as_str()
            )));
        }
        Ok(())
    }

    /// The privileges the writer's transaction needs: one line naming the first missing one
    /// and the `GRANT` that gives it.
    async fn check_privileges(&self, conn: &Object, schema: &Schema) -> Result<(), PgsqlError> {
        let mut wanted = vec![
            (&schema.orders, "SELECT"),
            (&schema.orders, "UPDATE"),
            (&schema.products, "SELECT"),
            (&schema.products, "UPDATE"),
        ];
        if let OrderLines::Items { table, .. } = &schema.lines {
            wanted.push((table, "SELECT"));
        }
        for (table, privilege) in wanted {
            self.require_privilege(conn, table, privilege).await?;
        }
        Ok(())
    }

    /// Fails with the `GRANT` to run when the user lacks `privilege` on `table`.
    pub(crate) async fn require_privilege(
        &self,
        conn: &Object,
        table: &Ident,
        privilege: &str,
    ) -> Result<(), PgsqlError> {
        let row = conn
            .query_one(
                "SELECT has_table_privilege(quote_ident($1::text), $2::text)",
                &[&table.as_str(), &privilege],
            )
            .await
            .map_err(|e| self.error("reading the user's privileges", e.into()))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        Err(self.schema_error(format!(
            "user `{user}` may not {privilege} table {table}, which the writer does in every cancellation: GRANT SELECT, UPDATE ON {quoted} TO {user}",
            user = self.username,
            table = table.as_str(),
            quoted = table.pg_quoted(),
        )))
    }

    /// The `CREATE INDEX` statement the sweep needs, or `None` when the index exists.
    pub(crate) async fn missing_sweep_index(
        &self,
        schema: &Schema,
    ) -> Result<Option<String>, PgsqlError> {
        let conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        self.sweep_index(&conn, schema).await
    }

    /// The sweep and the deadline watcher read unpaid orders by `created_at`; without an index
    /// starting with `(status, created_at)` each read scans the table.
    async fn sweep_index(
        &self,
        conn: &Object,
        schema: &Schema,
    ) -> Result<Option<String>, PgsqlError> {
        let rows = conn
            .query(
                "SELECT a1.attname::text, a2.attname::text FROM pg_index i \
                 JOIN pg_class t ON t.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 JOIN pg_attribute a1 ON a1.attrelid = t.oid AND a1.attnum = i.indkey[0] \
                 LEFT JOIN pg_attribute a2 ON a2.attrelid = t.oid AND a2.attnum = i.indkey[1] \
                 WHERE t.relname = $1::text AND n.nspname = current_schema()",
                &[&schema.orders.as_str()],
            )
            .await
            .map_err(|e| self.error("reading the orders table's indexes", e.into()))?;
        let created = Schema::created_at_column();
        let found = rows.iter().any(|r| {
            r.get::<_, String>(0) == schema.order_status.as_str()
                && r.get::<_, Option<String>>(1).as_deref() == Some(created.as_str())
        });
        if found {
            return Ok(None);
        }
        Ok(Some(format!(
            "CREATE INDEX {}_{}_created_at_index ON {} ({}, {})",
            schema.orders.as_str(),
            schema.order_status.as_str(),
            schema.orders.pg_quoted(),
            schema.order_status.pg_quoted(),
            created.pg_quoted()
        )))
    }

    async fn warn_without_sweep_index(&self, conn: &Object, schema: &Schema) {
        match self.sweep_index(conn, schema).await {
            Ok(Some(statement)) => {
                tracing::warn!(table = %schema.orders.as_str(), add = %statement,
                "no index on (status, created_at): every sweep scans the orders table; add it with a migration")
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check the orders indexes"),
        }
    }

    /// Refuses to start when a status setting cannot be stored in the status column.
    fn check_statuses_fit(&self, schema: &Schema, data_type: &str) -> Result<(), PgsqlError> {
        let (low, high) = integer_range(data_type).ok_or_else(|| {
            self.schema_error(format!(
                "{}.{} is `{data_type}`, and order-expire writes integer statuses: use an integer status column (smallint, integer, bigint) or set {} to the right column",
                schema.orders.as_str(),
                schema.order_status.as_str(),
                keys::ORDERS_STATUS_COLUMN
            ))
        })?;
        for (setting, value) in [
            (keys::UNPAID_STATUS, schema.unpaid_status),
            (keys::CANCELLED_STATUS, schema.cancelled_status),
        ] {
            if !(low..=high).contains(&i128::from(value)) {
                return Err(self.schema_error(format!(
                    "{setting}={value} does not fit {}.{}, which is `{data_type}` ({low} to {high}): set {setting} to the status the app uses",
                    schema.orders.as_str(),
                    schema.order_status.as_str()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn schema_error(&self, problem: String) -> PgsqlError {
        PgsqlError::Schema {
            endpoint: self.endpoint().to_string(),
            database: self.database.clone(),
            problem,
        }
    }

    /// Fails with `fix` when `table` does not exist in the connection's schema.
    pub(crate) async fn require_table(&self, table: &Ident, fix: &str) -> Result<(), PgsqlError> {
        let conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let row = conn
            .query_one(
                "SELECT COUNT(*)::int8 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1::text",
                &[&table.as_str()],
            )
            .await
            .map_err(|e| self.error("reading information_schema.tables", e.into()))?;
        if row.get::<_, i64>(0) == 0 {
            return Err(
                self.schema_error(format!("table {} does not exist: {fix}", table.as_str()))
            );
        }
        Ok(())
    }
}

/// Every column the writer reads or writes, with the setting that names it.
fn required_columns(schema: &Schema) -> Vec<(Ident, Ident, &'static str)> {
    let id = Schema::id_column();
    let mut required = vec![
        (schema.orders.clone(), id.clone(), keys::ORDERS_TABLE),
        (
            schema.orders.clone(),
            schema.order_status.clone(),
            keys::ORDERS_STATUS_COLUMN,
        ),
        (schema.products.clone(), id, keys::PRODUCTS_TABLE),
        (
            schema.products.clone(),
            schema.product_stock.clone(),
            keys::PRODUCTS_STOCK_COLUMN,
        ),
    ];
    if let Some(paid) = &schema.paid_column {
        required.push((schema.orders.clone(), paid.clone(), keys::PAID_COLUMN));
    }
    match &schema.lines {
        OrderLines::OnOrder { product, quantity } => {
            required.push((
                schema.orders.clone(),
                product.clone(),
                keys::ORDERS_PRODUCT_COLUMN,
            ));
            required.push((
                schema.orders.clone(),
                quantity.clone(),
                keys::ORDERS_QUANTITY_COLUMN,
            ));
        }
        OrderLines::Items {
            table,
            order,
            product,
            quantity,
        } => {
            required.push((table.clone(), order.clone(), keys::ITEMS_ORDER_COLUMN));
            required.push((table.clone(), product.clone(), keys::ITEMS_PRODUCT_COLUMN));
            required.push((table.clone(), quantity.clone(), keys::ITEMS_QUANTITY_COLUMN));
        }
    }
    required
}

/// How a literal goes into a column of `data_type`.
fn time_cast(data_type: &str) -> TimeCast {
    match data_type {
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "date" => "date",
        _ => "text",
    }
}

/// The values an integer column of `data_type` holds; `None` for any other type.
fn integer_range(data_type: &str) -> Option<(i128, i128)> {
    let bits = match data_type {
        "smallint" => 16,
        "integer" => 32,
        "bigint" => 64,
        _ => return None,
    };
    Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_types_give_their_range_and_others_none() {
        assert_eq!(integer_range("smallint"), Some((-32768, 32767)));
        assert_eq!(
            integer_range("integer"),
            Some((-2_147_483_648, 2_147_483_647))
        );
        assert!(integer_range("bigint").is_some());
        for other in ["character varying", "numeric", "boolean", "text", ""] {
            assert_eq!(integer_range(other), None, "{other}");
        }
        assert_eq!(time_cast("timestamp without time zone"), "timestamp");
        assert_eq!(time_cast("timestamp with time zone"), "timestamptz");
        assert_eq!(time_cast("character varying"), "text");
    }
}
