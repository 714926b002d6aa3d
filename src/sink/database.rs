//! The app's MySQL database: a connection pool opened with Laravel's settings, and a check of the
//! schema the writer relies on.
//!
//! Sessions are set up as Laravel's MySqlConnector sets them up (`utf8mb4_unicode_ci` and the
//! strict `sql_mode`), so a write behaves the same from PHP and from here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::config::{MysqlSession, MysqlSettings, OrderLines, Schema, keys};
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
            .ok_or_else(|| Error::Usage("the MySQL pool needs at least one connection".into()))?;
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
        let rows: Vec<(String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
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
        for (table, column) in &rows {
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

/// The session statements, reversed: mysql_async runs its `init` list from the end.
fn session_init(session: &MysqlSession) -> Vec<String> {
    let mut statements = session.statements();
    statements.reverse();
    statements
}
