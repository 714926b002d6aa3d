//! What can go wrong talking to the app's MySQL, each rendered as one line with its fix.

/// A failure of the MySQL adapter: connecting, a query outside the writer's transaction, or a
/// schema the writer cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// The server could not be reached or refused the credentials; `hint` names the settings
    /// to check (empty when none applies).
    #[error(
        "cannot connect to MySQL at {endpoint} (database `{database}`, user `{username}`): {cause}{hint}"
    )]
    Connect {
        endpoint: String,
        database: String,
        username: String,
        cause: String,
        hint: &'static str,
    },

    /// A TLS file named by the connection's PDO options could not be read.
    #[error(
        "cannot read the MySQL TLS file {path} ({setting}, PDO::MYSQL_ATTR_{attribute}): {cause}; fix the path in config/database.php"
    )]
    TlsFile {
        path: String,
        setting: String,
        attribute: &'static str,
        cause: String,
    },

    /// A query failed; `action` says what it was for.
    #[error("MySQL at {endpoint}: {action} failed: {source}")]
    Query {
        endpoint: String,
        action: String,
        #[source]
        source: mysql_async::Error,
    },

    /// A configured table or column is missing or cannot hold what the writer stores.
    #[error("MySQL database `{database}` at {endpoint}: {problem}")]
    Schema {
        endpoint: String,
        database: String,
        problem: String,
    },
}

/// A deadlock (1213) or lock wait timeout (1205): another transaction won, retry at once.
pub(crate) fn is_lock_conflict(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(e) if e.code == 1213 || e.code == 1205)
}

/// A lock wait timeout (1205): the rows were held for the whole lock wait.
pub(crate) fn is_lock_wait_timeout(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(e) if e.code == 1205)
}

/// An error that the same statement on the same rows gets again however often it is retried:
/// a value out of range or truncated, a constraint or foreign key, a NOT NULL column, a
/// trigger's `SIGNAL`. Everything else (connection, deadlock, lock wait, timeout, and errors
/// not known to be permanent) is retried, so that no order is given up on a guess.
pub(crate) fn is_permanent(error: &mysql_async::Error) -> bool {
    /// MySQL/MariaDB server error codes of the data, not of the moment.
    const PERMANENT: [u16; 14] = [
        1048, // column cannot be null
        1062, // duplicate entry
        1264, // out of range value
        1265, // data truncated
        1292, // incorrect value (date, number)
        1366, // incorrect integer/string value
        1406, // data too long
        1451, // a foreign key refuses the update (parent row)
        1452, // a foreign key refuses the update (child row)
        1644, // a trigger's SIGNAL
        1690, // value out of range in an expression (BIGINT UNSIGNED)
        3819, // check constraint violated (MySQL)
        4025, // check constraint violated (MariaDB)
        1216, // foreign key constraint fails (old servers)
    ];
    matches!(error, mysql_async::Error::Server(e) if PERMANENT.contains(&e.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: String::new(),
            state: String::new(),
        })
    }

    #[test]
    fn data_errors_are_permanent_and_moments_are_retried() {
        for code in [1264, 1265, 1366, 1406, 1048, 1451, 1452, 1062, 4025, 3819] {
            assert!(is_permanent(&server_error(code)), "{code}");
        }
        for code in [1205, 1213, 2006, 2013, 1040, 1053, 1927, 1146] {
            assert!(!is_permanent(&server_error(code)), "{code}");
        }
        assert!(is_lock_conflict(&server_error(1213)));
    }
}
