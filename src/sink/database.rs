//! The app's MySQL database: a connection pool opened with Laravel's settings, and a check of the
//! schema the writer relies on.
//!
//! Sessions are set up as Laravel's MySqlConnector sets them up (`utf8mb4_unicode_ci` and the
//! strict `sql_mode`), so a write behaves the same from PHP and from here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::config::{Ident, MysqlSession, MysqlSettings, OrderLines, Schema, keys};
use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which optional columns the app's tables have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableShape {
    /// `orders.updated_at` exists: Eloquent would set it on save.
    pub orders_updated_at: bool,
    /// `products.updated_at` exists: Eloquent's `increment()` would set it.
    pub products_updated_at: bool,
}

#[derive(Clone)]
pub struct Database {
    pool: Pool,
    endpoint: String,
    database: String,
}

impl Database {
    /// Opens a pool of at most `max_connections` and proves the credentials work by taking one
    /// connection.
    pub async fn connect(settings: &MysqlSettings, max_connections: usize) -> Result<Self, Error> {
        let constraints = PoolConstraints::new(0, max_connections.max(1))
            .ok_or_else(|| Error::Runtime("the MySQL pool needs at least one connection".into()))?;
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(settings.host.clone())
            .tcp_port(settings.port)
            .user(Some(settings.username.clone()))
            .pass(Some(settings.password.clone()))
            .db_name(Some(settings.database.clone()))
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // The session Laravel's MySqlConnector sets up (names, time zone, sql_mode), once
            // per connection. mysql_async runs the list from its end, hence the reversal.
            .init(session_init(&settings.session))
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_inactive_connection_ttl(Duration::from_secs(60))
                    // By default the pool sends COM_RESET_CONNECTION whenever a connection comes
                    // back: that would drop the session above (and the prepared statements) after
                    // every transaction. Nothing of ours outlives a transaction (the isolation
                    // level is set per transaction), so the session is kept instead.
                    .with_reset_connection(false),
            );
        if let Some(socket) = &settings.socket {
            opts = opts.socket(Some(socket.to_string_lossy().into_owned()));
        }
        let db = Self {
            pool: Pool::new(opts),
            endpoint: settings.endpoint(),
            database: settings.database.clone(),
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, db.pool.get_conn()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connect_error(settings, &e)),
            Err(_) => {
                return Err(Error::MysqlConnect {
                    endpoint: settings.endpoint(),
                    database: settings.database.clone(),
                    username: settings.username.clone(),
                    cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    hint: "; check DB_HOST and DB_PORT and that a firewall lets the connection through",
                });
            }
        };
        drop(conn);
        Ok(db)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn conn(&self) -> Result<Conn, mysql_async::Error> {
        self.pool.get_conn().await
    }

    /// Wraps a query error with where it happened.
    pub fn error(&self, action: impl Into<String>, source: mysql_async::Error) -> Error {
        Error::Mysql {
            endpoint: self.endpoint.clone(),
            action: action.into(),
            source,
        }
    }

    /// Checks that every configured table and column exists, and finds the optional ones.
    pub async fn inspect(&self, schema: &Schema) -> Result<TableShape, Error> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let mut tables = vec![schema.orders.as_str(), schema.products.as_str()];
        if let OrderLines::Items { table, .. } = &schema.lines {
            tables.push(table.as_str());
        }
        let rows: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?, ?)",
                (
                    tables[0],
                    tables[1],
                    tables.get(2).copied().unwrap_or(tables[0]),
                ),
            )
            .await
            .map_err(|e| self.error("reading information_schema.COLUMNS", e))?;
        let mut columns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (table, column, _, _) in &rows {
            columns
                .entry(table.as_str())
                .or_default()
                .insert(column.as_str());
        }

        let id = Schema::id_column();
        let mut required = vec![
            (&schema.orders, id.clone(), keys::ORDERS_TABLE, "id"),
            (
                &schema.orders,
                schema.order_status.clone(),
                keys::ORDERS_STATUS_COLUMN,
                "",
            ),
            (&schema.products, id.clone(), keys::PRODUCTS_TABLE, "id"),
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
        for (table, column, setting, fixed) in required {
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
                return Err(
                    self.schema_error(format!("table {table} has no column {column}: {fix}"))
                );
            }
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

    /// The server's version string.
    pub async fn version(&self) -> Result<String, Error> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| self.error("SELECT VERSION()", e))?;
        Ok(version.unwrap_or_default())
    }

    /// The `CREATE INDEX` statement the sweep needs, or `None` when the index exists.
    pub async fn missing_sweep_index(&self, schema: &Schema) -> Result<Option<String>, Error> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        self.sweep_index(&mut conn, schema).await
    }

    /// The sweep and the deadline watcher read unpaid orders by `created_at`; without an index
    /// starting with `(status, created_at)` each read scans the table. Says which index to add.
    async fn sweep_index(&self, conn: &mut Conn, schema: &Schema) -> Result<Option<String>, Error> {
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
    fn check_statuses_fit(&self, schema: &Schema, column_type: &str) -> Result<(), Error> {
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

    fn schema_error(&self, problem: String) -> Error {
        Error::Schema {
            endpoint: self.endpoint.clone(),
            database: self.database.clone(),
            problem,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(self) {
        if let Err(e) = self.pool.disconnect().await {
            tracing::debug!(error = %e, "closing the MySQL pool");
        }
    }
}

fn connect_error(settings: &MysqlSettings, e: &mysql_async::Error) -> Error {
    let hint = match e {
        mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1698 => {
            "; check DB_USERNAME and DB_PASSWORD"
        }
        mysql_async::Error::Server(s) if s.code == 1049 => {
            "; check DB_DATABASE (the database must exist)"
        }
        mysql_async::Error::Server(s) if s.code == 1044 => "; grant the user rights on DB_DATABASE",
        mysql_async::Error::Io(_) => {
            "; is MySQL running there? check DB_HOST, DB_PORT and DB_SOCKET"
        }
        _ => "",
    };
    let cause = match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => other.to_string(),
    };
    Error::MysqlConnect {
        endpoint: settings.endpoint(),
        database: settings.database.clone(),
        username: settings.username.clone(),
        cause,
        hint,
    }
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

/// The session statements, reversed: mysql_async runs its `init` list from the end.
fn session_init(session: &MysqlSession) -> Vec<String> {
    let mut statements = session.statements();
    statements.reverse();
    statements
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
