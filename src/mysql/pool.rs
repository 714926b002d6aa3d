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
use super::server::DbServer;
use crate::config::{MysqlSession, MysqlSettings, MysqlTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's database: a pool, and where it is for messages. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct Database {
    pool: Pool,
    /// What the pool connects with, for a connection of its own (the readiness probe).
    pub(super) opts: Opts,
    endpoint: String,
    pub(super) database: String,
    pub(super) username: String,
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
        let db = Self {
            pool: Pool::new(opts.clone()),
            opts,
            endpoint: settings.endpoint(),
            database: settings.database.clone(),
            username: settings.username.clone(),
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, db.pool.get_conn()).await {
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
        drop(conn);
        Ok(db)
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

/// The session statements, reversed: mysql_async runs its `init` list from the end.
fn session_init(session: &MysqlSession) -> Vec<String> {
    let mut statements = session.statements();
    statements.reverse();
    statements
}
