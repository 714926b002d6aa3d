//! Does MySQL answer? The readiness check, on a connection of its own.
//!
//! Not a connection from the pool: during a burst every pooled connection is busy writing, and
//! a check that waited for one would call a busy database down. The connection is kept between
//! checks (a `COM_PING` each time) and opened again after a failure.

use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::{Database, MysqlError};

/// How long a connect or a PING may take before MySQL counts as not answering.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness check's own connection to the app's database.
pub(crate) struct MysqlProbe {
    db: Database,
    conn: Option<Conn>,
}

impl MysqlProbe {
    pub(crate) fn new(db: Database) -> Self {
        Self { db, conn: None }
    }

    /// `Ok` when MySQL answers a PING within [`CHECK_TIMEOUT`].
    pub(crate) async fn check(&mut self) -> Result<(), MysqlError> {
        let result = tokio::time::timeout(CHECK_TIMEOUT, self.ping()).await;
        let result = result.unwrap_or_else(|_| Err(self.no_answer()));
        if result.is_err() {
            // A connection that failed once is not trusted again: the next check reconnects.
            self.conn = None;
        }
        result
    }

    async fn ping(&mut self) -> Result<(), MysqlError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                Conn::new(self.db.opts.clone())
                    .await
                    .map_err(|e| self.db.error("connecting for the readiness check", e))?,
            ),
        };
        conn.ping()
            .await
            .map_err(|e| self.db.error("PING (readiness check)", e))
    }

    fn no_answer(&self) -> MysqlError {
        MysqlError::Connect {
            endpoint: self.db.endpoint().to_string(),
            database: self.db.database.clone(),
            username: self.db.username.clone(),
            cause: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
            hint: "",
        }
    }
}
