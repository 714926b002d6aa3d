//! What can go wrong talking to the app's PostgreSQL, each rendered as one line with its fix;
//! and which server errors are the data's (the same statement fails again however often it is
//! retried) rather than the moment's, read from their SQLSTATE.

use tokio_postgres::error::SqlState;

/// A failure of one statement or of getting a connection for it.
#[derive(Debug, thiserror::Error)]
pub enum PgQueryError {
    /// The server (or the connection to it) answered with an error.
    #[error("{}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("{0}")]
    Pool(String),
}

impl From<deadpool_postgres::PoolError> for PgQueryError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => Self::Db(e),
            other => Self::Pool(other.to_string()),
        }
    }
}

impl PgQueryError {
    /// The server's SQLSTATE, when it sent one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.code().map(SqlState::code),
            Self::Pool(_) => None,
        }
    }

    /// Serialization failure (40001) or deadlock (40P01): another transaction won; retried at
    /// once, not an outage.
    pub(crate) fn is_lock_conflict(&self) -> bool {
        self.code().is_some_and(conflict_code)
    }

    /// The data's errors: class 22 (a value out of range, 22003; invalid text...) and class 23
    /// (a NOT NULL, unique, foreign key or check constraint), and a trigger's `RAISE EXCEPTION`
    /// (P0001). Everything else is retried, so that no order is given up on a guess.
    pub(crate) fn is_permanent(&self) -> bool {
        self.code().is_some_and(permanent_code)
    }
}

/// 40001 serialization failure, 40P01 deadlock, 55P03 lock not available.
fn conflict_code(code: &str) -> bool {
    matches!(code, "40001" | "40P01" | "55P03")
}

/// Class 22 (data exception), class 23 (integrity constraint), P0001 (`RAISE EXCEPTION`).
fn permanent_code(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23") || code == "P0001"
}

/// The server's message with its SQLSTATE, or the driver's description.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// A failure of the PostgreSQL adapter: connecting, a query outside the writer's transaction,
/// or a schema the writer cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PgsqlError {
    /// The server could not be reached or refused the credentials; `hint` names the settings
    /// to check (empty when none applies).
    #[error(
        "cannot connect to PostgreSQL at {endpoint} (database `{database}`, user `{username}`): {cause}{hint}"
    )]
    Connect {
        endpoint: String,
        database: String,
        username: String,
        cause: String,
        hint: &'static str,
    },

    /// A TLS file named by the connection could not be read or used.
    #[error(
        "cannot use the PostgreSQL TLS file {path} ({setting}): {cause}; fix the path in config/database.php"
    )]
    TlsFile {
        path: String,
        setting: String,
        cause: String,
    },

    /// A query failed; `action` says what it was for.
    #[error("PostgreSQL at {endpoint}: {action} failed: {source}")]
    Query {
        endpoint: String,
        action: String,
        #[source]
        source: PgQueryError,
    },

    /// A configured table or column is missing or cannot hold what the writer stores, or the
    /// user lacks a privilege the writer needs.
    #[error("PostgreSQL database `{database}` at {endpoint}: {problem}")]
    Schema {
        endpoint: String,
        database: String,
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_permanent_and_moments_are_retried() {
        let classify = |code: &str| (permanent_code(code), conflict_code(code));
        for code in [
            "22003", "23502", "23503", "23505", "23514", "22P02", "P0001",
        ] {
            assert_eq!(classify(code), (true, false), "{code}");
        }
        for code in ["40001", "40P01"] {
            assert_eq!(classify(code), (false, true), "{code}");
        }
        for code in ["57P01", "08006", "53300", "42501"] {
            assert_eq!(classify(code), (false, false), "{code}");
        }
    }
}
