//! The database the app's orders are in, whichever adapter serves it: the seam between the
//! stages (the writer, the sources, the subcommands) and the MySQL ([`crate::mysql`]) and
//! PostgreSQL ([`crate::pgsql`]) adapters.
//!
//! Each type here is an enum with one variant per adapter, chosen once from the app's
//! connection (`DB_CONNECTION`, `database.default`'s driver): [`Database`] (the pool), [`Conn`]
//! and [`Tx`] (a connection and its transaction), the statement sets of [`orders`] and [`jobs`],
//! the member slots ([`members`]) and the readiness probe ([`probe`]). Stages hold these and
//! never name an adapter, so there is one writer, one sweep and one deadline watcher for both
//! databases; what differs (SQL, locks, error codes) stays in the adapters.
//!
//! Errors: a statement's failure is a [`DriverError`] (which the writer classifies as permanent
//! or a lock conflict through the adapter's own codes); [`Database::error`] wraps it with what
//! it was for into a [`DbError`], the adapter's one-line error.

pub(crate) mod jobs;
pub(crate) mod members;
pub(crate) mod orders;
pub(crate) mod probe;

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, TxOpts};

use crate::config::{DatabaseSettings, Ident, Schema};
use crate::mysql::server::DbServer;
use crate::mysql::write_path::WritePath;
use crate::mysql::{self, MysqlError};
use crate::pgsql::server::PgServer;
use crate::pgsql::{self, PgQueryError, PgsqlError};

/// How long the server keeps a transaction of ours whose client went silent before it rolls it
/// back (MariaDB's `idle_transaction_timeout`, PostgreSQL's
/// `idle_in_transaction_session_timeout`, MySQL's `wait_timeout` for the span of a transaction).
pub(crate) use crate::mysql::IDLE_IN_TRANSACTION;

/// A failure of the database, in the adapter's words.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error(transparent)]
    Pgsql(#[from] PgsqlError),
}

/// A statement's failure, as the driver reported it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    #[error(transparent)]
    Pgsql(#[from] PgQueryError),
    /// Rows that are not of the types the statement reads (a table not as its migration
    /// creates it).
    #[error("{0}")]
    Rows(String),
    /// A statement set of one adapter was given a connection of the other (a wiring mistake).
    #[error("a statement of one database adapter was run on the other's connection")]
    Mismatch,
}

impl From<tokio_postgres::Error> for DriverError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Pgsql(error.into())
    }
}

impl DriverError {
    /// A deadlock, lock wait timeout or serialization failure: another transaction won.
    pub(crate) fn is_lock_conflict(&self) -> bool {
        match self {
            Self::Mysql(e) => mysql::error::is_lock_conflict(e),
            Self::Pgsql(e) => e.is_lock_conflict(),
            Self::Rows(_) | Self::Mismatch => false,
        }
    }

    /// A lock wait that ran out (MySQL 1205, PostgreSQL's `lock_timeout`, 55P03): the rows
    /// were held for the whole wait.
    pub(crate) fn is_lock_wait_timeout(&self) -> bool {
        match self {
            Self::Mysql(e) => mysql::error::is_lock_wait_timeout(e),
            Self::Pgsql(e) => e.code() == Some("55P03"),
            Self::Rows(_) | Self::Mismatch => false,
        }
    }

    /// The connection broke: the statement's outcome on the server is not known from here. A
    /// server's error, by contrast, comes on a working connection.
    pub(crate) fn is_connection_lost(&self) -> bool {
        match self {
            Self::Mysql(e) => !matches!(e, mysql_async::Error::Server(_)),
            Self::Pgsql(e) => e.code().is_none(),
            Self::Rows(_) | Self::Mismatch => false,
        }
    }

    /// The data's errors (out of range, constraints): the same statement fails again however
    /// often it is retried.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            Self::Mysql(e) => mysql::error::is_permanent(e),
            Self::Pgsql(e) => e.is_permanent(),
            Self::Rows(_) | Self::Mismatch => false,
        }
    }
}

/// The app's database: a pool of either adapter. Cheap to clone.
// A handful of these live per worker (a connection per transaction at most), never in a
// collection: the variants' sizes do not matter, and boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Database {
    Mysql(mysql::Database),
    Pgsql(pgsql::Database),
}

/// The server behind the database, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Server {
    Mysql(DbServer),
    Pgsql(PgServer),
}

impl Server {
    /// Whether it has `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1+, MariaDB 10.6+, PostgreSQL 9.5+).
    pub(crate) fn has_skip_locked(&self) -> bool {
        match self {
            Self::Mysql(s) => s.has_skip_locked(),
            Self::Pgsql(s) => s.has_skip_locked(),
        }
    }

    /// `mysql`, `mariadb` or `postgresql`, for `check --json`.
    pub(crate) fn family(&self) -> &'static str {
        match self {
            Self::Mysql(s) => s.family.name(),
            Self::Pgsql(_) => "postgresql",
        }
    }

    /// The version as the family numbers it.
    pub(crate) fn version(&self) -> String {
        match self {
            Self::Mysql(s) => s.version(),
            Self::Pgsql(s) => s.short_version(),
        }
    }

    /// The way the writer locks rows on this server, unless `lock_wait` forces waiting; with
    /// why.
    pub(crate) fn write_path(&self, lock_wait: bool) -> (WritePath, &'static str) {
        match self {
            Self::Mysql(s) => WritePath::choose(s, lock_wait),
            Self::Pgsql(_) if lock_wait => {
                (WritePath::LockWait, "forced by --write-path lock-wait")
            }
            Self::Pgsql(s) if s.has_skip_locked() => (
                WritePath::SkipLocked,
                "the server has FOR UPDATE SKIP LOCKED (PostgreSQL 9.5+): rows another transaction holds are skipped and retried",
            ),
            Self::Pgsql(_) => (
                WritePath::LockWait,
                "the server has no FOR UPDATE SKIP LOCKED (it needs PostgreSQL 9.5+): rows another transaction holds are waited for",
            ),
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mysql(s) => s.fmt(f),
            Self::Pgsql(s) => s.fmt(f),
        }
    }
}

impl Database {
    /// Opens the adapter's pool of at most `max_connections` for the app's connection.
    pub(crate) async fn connect(
        settings: &DatabaseSettings,
        max_connections: usize,
    ) -> Result<Self, DbError> {
        Ok(match settings {
            DatabaseSettings::Mysql(m) => {
                Self::Mysql(mysql::Database::connect(m, max_connections).await?)
            }
            DatabaseSettings::Pgsql(p) => {
                Self::Pgsql(pgsql::Database::connect(p, max_connections).await?)
            }
        })
    }

    /// `MySQL` or `PostgreSQL`, for messages.
    pub(crate) fn title(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "MySQL",
            Self::Pgsql(_) => "PostgreSQL",
        }
    }

    /// `host:port` (or the socket), for messages.
    pub(crate) fn endpoint(&self) -> &str {
        match self {
            Self::Mysql(db) => db.endpoint(),
            Self::Pgsql(db) => db.endpoint(),
        }
    }

    /// A connection from the pool.
    pub(crate) async fn conn(&self) -> Result<Conn, DriverError> {
        Ok(match self {
            Self::Mysql(db) => Conn::Mysql(db.conn().await?),
            Self::Pgsql(db) => Conn::Pgsql(db.conn().await?),
        })
    }

    /// Wraps a statement's failure with what it was for.
    pub(crate) fn error(&self, action: impl Into<String>, source: DriverError) -> DbError {
        match (self, source) {
            (Self::Mysql(db), DriverError::Mysql(e)) => db.error(action, e).into(),
            (Self::Pgsql(db), DriverError::Pgsql(e)) => db.error(action, e).into(),
            (Self::Mysql(db), other) => db
                .error(action, mysql_async::Error::Other(other.to_string().into()))
                .into(),
            (Self::Pgsql(db), other) => db
                .error(action, PgQueryError::Pool(other.to_string()))
                .into(),
        }
    }

    /// A schema the writer cannot work with.
    pub(crate) fn schema_error(&self, problem: String) -> DbError {
        match self {
            Self::Mysql(db) => db.schema_error(problem).into(),
            Self::Pgsql(db) => db.schema_error(problem).into(),
        }
    }

    /// Fails with `fix` when `table` does not exist.
    pub(crate) async fn require_table(&self, table: &Ident, fix: &str) -> Result<(), DbError> {
        match self {
            Self::Mysql(db) => Ok(db.require_table(table, fix).await?),
            Self::Pgsql(db) => Ok(db.require_table(table, fix).await?),
        }
    }

    /// Fails with the `GRANT` to run when the user may not `privileges` (`INSERT`,
    /// `DELETE`...) `table`; MySQL's refusals are met at the first write instead.
    pub(crate) async fn require_privileges(
        &self,
        table: &Ident,
        privileges: &[&str],
    ) -> Result<(), DbError> {
        let Self::Pgsql(db) = self else {
            return Ok(());
        };
        let conn = db.conn().await.map_err(|e| db.error("connecting", e))?;
        for privilege in privileges {
            db.require_privilege(&conn, table, privilege).await?;
        }
        Ok(())
    }

    /// The server and its version.
    pub(crate) async fn server(&self) -> Result<Server, DbError> {
        Ok(match self {
            Self::Mysql(db) => Server::Mysql(db.server().await?),
            Self::Pgsql(db) => Server::Pgsql(db.server().await?),
        })
    }

    /// Whether several workers can claim rows side by side (`SKIP LOCKED`).
    pub(crate) async fn has_skip_locked(&self) -> Result<bool, DbError> {
        Ok(self.server().await?.has_skip_locked())
    }

    /// The `CREATE INDEX` statement the sweep needs, or `None` when the index exists.
    pub(crate) async fn missing_sweep_index(
        &self,
        schema: &Schema,
    ) -> Result<Option<String>, DbError> {
        match self {
            Self::Mysql(db) => Ok(db.missing_sweep_index(schema).await?),
            Self::Pgsql(db) => Ok(db.missing_sweep_index(schema).await?),
        }
    }

    /// Closes the pool.
    pub(crate) async fn close(self) {
        match self {
            Self::Mysql(db) => db.close().await,
            Self::Pgsql(db) => db.close().await,
        }
    }

    /// MySQL (not MariaDB, not PostgreSQL), which bounds an idle transaction only through the
    /// session's `wait_timeout`: set to [`IDLE_IN_TRANSACTION`] for the span of a transaction.
    pub(crate) async fn bound_idle(&self, conn: &mut Conn) -> Result<(), DriverError> {
        if let (Self::Mysql(db), Conn::Mysql(conn)) = (self, conn)
            && db.is_mysql()
        {
            conn.query_drop(format!(
                "SET SESSION wait_timeout = {}",
                IDLE_IN_TRANSACTION.as_secs()
            ))
            .await?;
        }
        Ok(())
    }

    /// The session's `wait_timeout` back to the server's after [`Self::bound_idle`].
    pub(crate) async fn unbound_idle(&self, conn: &mut Conn) -> Result<(), DriverError> {
        if let (Self::Mysql(db), Conn::Mysql(conn)) = (self, conn)
            && db.is_mysql()
        {
            conn.query_drop("SET SESSION wait_timeout = @@GLOBAL.wait_timeout")
                .await?;
        }
        Ok(())
    }

    /// Ends a connection whose transaction ran out of time or broke, so that the server rolls
    /// back at once what it still holds: MySQL kills it from a connection of its own;
    /// PostgreSQL's running statement is cancelled and the connection, taken out of the pool,
    /// closed.
    pub(crate) async fn abandon(&self, conn: Conn) -> Result<(), DbError> {
        match (self, conn) {
            (Self::Mysql(db), Conn::Mysql(conn)) => {
                let id = conn.id();
                drop(conn);
                Ok(db.kill(id).await?)
            }
            (Self::Pgsql(db), Conn::Pgsql(conn)) => Ok(db.abandon(conn).await?),
            _ => Ok(()),
        }
    }

    /// The MySQL pool, when it is one (what only MySQL has: its session variables).
    pub(crate) fn mysql(&self) -> Option<&mysql::Database> {
        match self {
            Self::Mysql(db) => Some(db),
            Self::Pgsql(_) => None,
        }
    }
}

/// A connection from the pool, its session set up as Laravel's connector does.
// A handful of these live per worker (a connection per transaction at most), never in a
// collection: the variants' sizes do not matter, and boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Conn {
    Mysql(mysql_async::Conn),
    Pgsql(deadpool_postgres::Object),
}

impl Conn {
    /// The server's id of this connection (MySQL's connection id), for the log.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Self::Mysql(conn) => Some(conn.id()),
            Self::Pgsql(_) => None,
        }
    }

    /// Begins a READ COMMITTED transaction: the row locks are all the isolation the writer
    /// needs, and without REPEATABLE READ's gap locks (MySQL) or snapshot (PostgreSQL)
    /// concurrent batches neither deadlock on secondary indexes nor fail to serialize.
    pub(crate) async fn begin(&mut self) -> Result<Tx<'_>, DriverError> {
        Ok(match self {
            Self::Mysql(conn) => {
                let mut options = TxOpts::default();
                options.with_isolation_level(IsolationLevel::ReadCommitted);
                Tx::Mysql(conn.start_transaction(options).await?)
            }
            Self::Pgsql(conn) => Tx::Pgsql(
                conn.build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
                    .start()
                    .await?,
            ),
        })
    }

    /// Begins a transaction with the server's default isolation (the key jobs' inserts).
    pub(crate) async fn begin_default(&mut self) -> Result<Tx<'_>, DriverError> {
        Ok(match self {
            Self::Mysql(conn) => Tx::Mysql(conn.start_transaction(TxOpts::default()).await?),
            Self::Pgsql(conn) => Tx::Pgsql(conn.transaction().await?),
        })
    }
}

/// A transaction on a [`Conn`]; dropped without [`Tx::commit`] it rolls back.
pub(crate) enum Tx<'c> {
    Mysql(mysql_async::Transaction<'c>),
    Pgsql(deadpool_postgres::Transaction<'c>),
}

impl Tx<'_> {
    pub(crate) async fn commit(self) -> Result<(), DriverError> {
        match self {
            Self::Mysql(tx) => Ok(tx.commit().await?),
            Self::Pgsql(tx) => Ok(tx.commit().await?),
        }
    }

    pub(crate) async fn rollback(self) -> Result<(), DriverError> {
        match self {
            Self::Mysql(tx) => Ok(tx.rollback().await?),
            Self::Pgsql(tx) => Ok(tx.rollback().await?),
        }
    }
}
