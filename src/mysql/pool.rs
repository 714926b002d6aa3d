//! The app's MySQL database: a connection pool opened with Laravel's settings.
//!
//! Sessions are set up as Laravel's MySqlConnector sets them up (`utf8mb4_unicode_ci` and the
//! strict `sql_mode`), so a write behaves the same from PHP and from here.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{
    ClientIdentity, Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts,
};

use super::MysqlError;
use super::server::{DbFamily, DbServer};
use crate::config::{MysqlSession, MysqlSettings, MysqlTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server keeps a transaction of ours whose client sends nothing more (frozen,
/// cut off, or its next statement lost) before it rolls it back and closes the connection:
/// the longest the app's statements wait on our row locks because of a worker that stopped
/// in the middle. MariaDB's `idle_transaction_timeout`, set for every session at connect; on
/// MySQL, which has no such variable, the writer sets the session's `wait_timeout` to it for
/// the span of each cancel transaction ([`Database::is_mysql`]).
pub(crate) const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// `innodb_lock_wait_timeout` of our sessions: the longest one of our statements waits for a
/// row lock (the app's, another worker's) before it fails and is retried; so also the longest
/// the locks our transaction already holds make the app wait behind such a statement.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(5);

/// `net_read_timeout` and `net_write_timeout` of our sessions: how long the server waits on a
/// client that stopped reading a result, or stopped in the middle of sending a statement.
const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// How long ending an abandoned connection may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The app's database: a pool, and where it is for messages. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct Database {
    pool: Pool,
    /// What the pool connects with, for a connection of its own (the readiness probe).
    pub(super) opts: Opts,
    endpoint: String,
    pub(super) database: String,
    pub(super) username: String,
    /// MySQL rather than MariaDB: no `idle_transaction_timeout` there.
    is_mysql: bool,
}

impl Database {
    /// Opens a pool of at most `max_connections` and proves the credentials work by taking one
    /// connection.
    pub(crate) async fn connect(
        settings: &MysqlSettings,
        max_connections: usize,
    ) -> Result<Self, MysqlError> {
        // A minimum of 0 never exceeds a maximum of at least 1, so the constraints always exist.
        let constraints = PoolConstraints::new(0, max_connections.max(1)).unwrap_or_default();
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
        if let Some(tls) = &settings.tls {
            opts = opts.ssl_opts(Some(ssl_opts(tls)?));
        }
        let opts = Opts::from(opts);
        let mut db = Self {
            pool: Pool::new(opts.clone()),
            opts,
            endpoint: settings.endpoint(),
            database: settings.database.clone(),
            username: settings.username.clone(),
            is_mysql: false,
        };
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, db.pool.get_conn()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connect_error(settings, &e)),
            Err(_) => {
                return Err(MysqlError::Connect {
                    endpoint: settings.endpoint(),
                    database: settings.database.clone(),
                    username: settings.username.clone(),
                    cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    hint: "; check DB_HOST and DB_PORT and that a firewall lets the connection through",
                });
            }
        };
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| connect_error(settings, &e))?;
        db.is_mysql = DbServer::parse(&version.unwrap_or_default()).family == DbFamily::MySql;
        drop(conn);
        Ok(db)
    }

    /// MySQL rather than MariaDB: a transaction's idle bound is the session's `wait_timeout`,
    /// which the writer sets for the span of each transaction ([`IDLE_IN_TRANSACTION`]).
    pub(crate) fn is_mysql(&self) -> bool {
        self.is_mysql
    }

    /// Kills the connection `id` from a connection of its own (not the pool's, which may be
    /// all taken): the server rolls back what it was doing, if anything, and frees its locks.
    /// A connection already gone is not an error. Bounded by [`KILL_TIMEOUT`].
    pub(crate) async fn kill(&self, id: u32) -> Result<(), MysqlError> {
        let kill = async {
            let mut conn = Conn::new(self.opts.clone())
                .await
                .map_err(|e| self.error("connecting to end an abandoned connection", e))?;
            let killed = conn.query_drop(format!("KILL {id}")).await;
            let _ = conn.disconnect().await;
            match killed {
                // Unknown thread id: the server ended it already.
                Err(mysql_async::Error::Server(e)) if e.code == 1094 => Ok(()),
                other => other.map_err(|e| self.error(format!("KILL {id}"), e)),
            }
        };
        tokio::time::timeout(KILL_TIMEOUT, kill)
            .await
            .unwrap_or_else(|_| {
                Err(MysqlError::Connect {
                    endpoint: self.endpoint.clone(),
                    database: self.database.clone(),
                    username: self.username.clone(),
                    cause: format!("no answer to KILL within {} s", KILL_TIMEOUT.as_secs()),
                    hint: "",
                })
            })
    }

    /// `host:port` (or `unix:`), for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A connection from the pool, its session already set up.
    pub(crate) async fn conn(&self) -> Result<Conn, mysql_async::Error> {
        self.pool.get_conn().await
    }

    /// Wraps a query error with where it happened.
    pub(crate) fn error(
        &self,
        action: impl Into<String>,
        source: mysql_async::Error,
    ) -> MysqlError {
        MysqlError::Query {
            endpoint: self.endpoint.clone(),
            action: action.into(),
            source,
        }
    }

    /// The server's version string.
    pub(crate) async fn version(&self) -> Result<String, MysqlError> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| self.error("SELECT VERSION()", e))?;
        Ok(version.unwrap_or_default())
    }

    /// The server's family and version, from [`Database::version`].
    pub(crate) async fn server(&self) -> Result<DbServer, MysqlError> {
        Ok(DbServer::parse(&self.version().await?))
    }

    /// The server's `innodb_snapshot_isolation` (MariaDB 11.6.2+; `None` where the server has
    /// no such variable).
    pub(crate) async fn snapshot_isolation(&self) -> Result<Option<bool>, MysqlError> {
        let mut conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let row: Option<(String, String)> = conn
            .query_first("SHOW VARIABLES LIKE 'innodb_snapshot_isolation'")
            .await
            .map_err(|e| self.error("SHOW VARIABLES LIKE 'innodb_snapshot_isolation'", e))?;
        Ok(row.map(|(_, value)| value.eq_ignore_ascii_case("ON") || value == "1"))
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub(crate) async fn close(self) {
        if let Err(e) = self.pool.disconnect().await {
            tracing::debug!(error = %e, "closing the MySQL pool");
        }
    }
}

/// mysql_async's TLS options for the connection's PDO SSL attributes. The files are read here,
/// so that a wrong path is named with its setting rather than failing inside the handshake.
fn ssl_opts(tls: &MysqlTls) -> Result<SslOpts, MysqlError> {
    let read = |path: &Path, attribute: &'static str| {
        crate::config::read_pem(path)
            .map(Into::into)
            .map_err(|e| MysqlError::TlsFile {
                path: path.display().to_string(),
                setting: tls.setting.clone(),
                attribute,
                cause: e.to_string(),
            })
    };
    let mut opts = SslOpts::default()
        // mysqlnd checks the chain and the name, or nothing when verification is off.
        .with_danger_accept_invalid_certs(!tls.verify_peer);
    if let Some(ca) = &tls.ca_file {
        opts = opts.with_root_certs(vec![read(ca, "SSL_CA")?]);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        opts = opts.with_client_identity(Some(ClientIdentity::new(
            read(cert, "SSL_CERT")?,
            read(key, "SSL_KEY")?,
        )));
    }
    Ok(opts)
}

fn connect_error(settings: &MysqlSettings, e: &mysql_async::Error) -> MysqlError {
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
    MysqlError::Connect {
        endpoint: settings.endpoint(),
        database: settings.database.clone(),
        username: settings.username.clone(),
        cause,
        hint,
    }
}

/// The session statements, reversed: mysql_async runs its `init` list from the end. Laravel's
/// own, then ours ([`bounds_statement`]).
fn session_init(session: &MysqlSession) -> Vec<String> {
    let mut statements = session.statements();
    statements.push(bounds_statement());
    statements.reverse();
    statements
}

/// The bounds of our sessions on the server: the lock wait, the network timeouts, and (MariaDB
/// 10.3 and later, in a comment only MariaDB executes) the idle transaction timeout.
fn bounds_statement() -> String {
    format!(
        "SET SESSION innodb_lock_wait_timeout = {}, net_read_timeout = {net}, net_write_timeout = {net} /*M!100300 , idle_transaction_timeout = {} */",
        LOCK_WAIT.as_secs(),
        IDLE_IN_TRANSACTION.as_secs(),
        net = NET_TIMEOUT.as_secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_bounds_are_set_on_both_servers() {
        assert!(bounds_statement().contains("innodb_lock_wait_timeout = 5"));
        assert!(bounds_statement().contains("/*M!100300 , idle_transaction_timeout = 10 */"));
    }
}
