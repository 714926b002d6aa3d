//! The app's PostgreSQL database: a connection pool opened with Laravel's settings.
//!
//! Every new connection gets the session PostgresConnector sets up (isolation level, names,
//! time zone, `search_path`, application name, `synchronous_commit`), so that a write means
//! the same from PHP and from here: the table names are looked up in the app's schemas, and a
//! `timestamptz` literal is read in the connection's time zone as Laravel's would be.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::PgQueryError;
use super::server::PgServer;
use super::{PgsqlError, tls};
use crate::config::PgsqlSettings;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `lock_timeout` of our sessions: the longest one of our statements waits for a row lock (the
/// app's, another worker's) before it fails (55P03) and is retried, as on MySQL.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long ending an abandoned connection may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Our bounds on every session, after Laravel's statements: the lock wait, and how long the
/// server keeps a transaction of ours whose client went silent
/// (`idle_in_transaction_session_timeout`: it rolls it back and closes the connection).
fn bounds_statement() -> String {
    format!(
        "set lock_timeout = '{}s'; set idle_in_transaction_session_timeout = '{}s'",
        LOCK_WAIT.as_secs(),
        crate::mysql::IDLE_IN_TRANSACTION.as_secs()
    )
}

/// The app's database: a pool, and where it is for messages. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct Database {
    pool: Pool,
    /// What the pool connects with, for connections of its own (the readiness probe, the
    /// member slot).
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    /// The session statements, run on every connection of ours.
    pub(super) session: String,
    endpoint: String,
    pub(super) database: String,
    pub(super) username: String,
}

impl Database {
    /// Opens a pool of at most `max_connections` and proves the credentials work by taking one
    /// connection.
    pub(crate) async fn connect(
        settings: &PgsqlSettings,
        max_connections: usize,
    ) -> Result<Self, PgsqlError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&settings.host)
            .port(settings.port)
            .dbname(&settings.database)
            .user(&settings.username)
            .password(&settings.password)
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(tls::driver_mode(settings.tls.mode));
        let tls = MakeRustlsConnect::new(tls::client_config(&settings.tls)?);
        let mut statements = settings.session.statements();
        statements.push(bounds_statement());
        let session = statements.join("; ");
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let statements = session.clone();
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT * 3))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .post_create(Hook::async_fn(move |client, _| {
                let statements = statements.clone();
                Box::pin(async move {
                    if !statements.is_empty() {
                        client
                            .batch_execute(&statements)
                            .await
                            .map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| PgsqlError::Connect {
                endpoint: settings.endpoint(),
                database: settings.database.clone(),
                username: settings.username.clone(),
                cause: e.to_string(),
                hint: "",
            })?;
        let db = Self {
            pool,
            config,
            tls,
            session,
            endpoint: settings.endpoint(),
            database: settings.database.clone(),
            username: settings.username.clone(),
        };
        drop(
            db.pool
                .get()
                .await
                .map_err(|e| db.connect_error(&e.into()))?,
        );
        Ok(db)
    }

    /// `host:port` (or the socket), for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A connection from the pool, its session already set up.
    pub(crate) async fn conn(&self) -> Result<Object, PgQueryError> {
        Ok(self.pool.get().await?)
    }

    /// A connection of its own, outside the pool, with the same session: closed when dropped.
    pub(super) async fn own_connection(&self) -> Result<tokio_postgres::Client, PgQueryError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection of its own closed");
            }
        });
        if !self.session.is_empty() {
            client.batch_execute(&self.session).await?;
        }
        Ok(client)
    }

    /// Wraps a query error with where it happened.
    pub(crate) fn error(&self, action: impl Into<String>, source: PgQueryError) -> PgsqlError {
        PgsqlError::Query {
            endpoint: self.endpoint.clone(),
            action: action.into(),
            source,
        }
    }

    /// The server's version, from `server_version_num` and `version()`.
    pub(crate) async fn server(&self) -> Result<PgServer, PgsqlError> {
        let conn = self.conn().await.map_err(|e| self.error("connecting", e))?;
        let row = conn
            .query_one(
                "SELECT current_setting('server_version_num')::int4, current_setting('server_version')",
                &[],
            )
            .await
            .map_err(|e| self.error("reading server_version_num", e.into()))?;
        Ok(PgServer {
            number: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            version: row.get(1),
        })
    }

    /// Ends `conn`, whose transaction ran out of time or broke: its running statement is
    /// cancelled (a request on a connection of its own, bounded), and the connection, taken
    /// out of the pool, is closed, so the server rolls back what it holds.
    pub(crate) async fn abandon(&self, conn: Object) -> Result<(), PgsqlError> {
        let client = Object::take(conn);
        let token = client.cancel_token();
        drop(client);
        match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(self.tls.clone())).await {
            Ok(result) => {
                result.map_err(|e| self.error("cancelling an abandoned statement", e.into()))
            }
            Err(_) => Err(self.connect_error(&PgQueryError::Pool(format!(
                "no answer to the cancel request within {} s",
                CANCEL_TIMEOUT.as_secs()
            )))),
        }
    }

    /// Closes the pool; connections in use close when they come back.
    pub(crate) async fn close(self) {
        self.pool.close();
    }

    /// The one-line failure to connect, with the settings to check.
    pub(super) fn connect_error(&self, e: &PgQueryError) -> PgsqlError {
        let hint = match e.code() {
            Some("28P01" | "28000") => "; check DB_USERNAME and DB_PASSWORD",
            Some("3D000") => "; check DB_DATABASE (the database must exist)",
            Some("42501") => "; grant the user CONNECT on DB_DATABASE",
            Some(_) => "",
            None => "; is PostgreSQL running there? check DB_HOST, DB_PORT and sslmode",
        };
        PgsqlError::Connect {
            endpoint: self.endpoint.clone(),
            database: self.database.clone(),
            username: self.username.clone(),
            cause: e.to_string(),
            hint,
        }
    }
}
