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
