//! Does PostgreSQL answer? The readiness check, on a connection of its own (during a burst
//! every pooled connection is busy writing, and a check that waited for one would call a busy
//! database down). The connection is kept between checks and opened again after a failure.

use std::time::Duration;

use super::error::PgQueryError;
use super::{Database, PgsqlError};

/// How long a connect or the check's query may take before PostgreSQL counts as not answering.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness check's own connection to the app's database.
pub(crate) struct PgsqlProbe {
    db: Database,
    conn: Option<tokio_postgres::Client>,
}

impl PgsqlProbe {
    pub(crate) fn new(db: Database) -> Self {
        Self { db, conn: None }
    }

    /// `Ok` when PostgreSQL answers `SELECT 1` within [`CHECK_TIMEOUT`].
    pub(crate) async fn check(&mut self) -> Result<(), PgsqlError> {
        let result = tokio::time::timeout(CHECK_TIMEOUT, self.ping())
            .await
            .unwrap_or_else(|_| {
                Err(self.db.connect_error(&PgQueryError::Pool(format!(
                    "no answer within {} s",
                    CHECK_TIMEOUT.as_secs()
                ))))
            });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn ping(&mut self) -> Result<(), PgsqlError> {
        if self
            .conn
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            let conn = self
                .db
                .own_connection()
                .await
                .map_err(|e| self.db.error("connecting for the readiness check", e))?;
            self.conn = Some(conn);
        }
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        conn.simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| self.db.error("SELECT 1 (readiness check)", e.into()))
    }
}
