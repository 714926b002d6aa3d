//! The app's PostgreSQL connection as Laravel's PostgresConnector opens it: where (a host and
//! port, or a socket directory), who, which schemas (`search_path`), the session it sets up, and
//! TLS as libpq reads `sslmode`, `sslcert`, `sslkey` and `sslrootcert`.

use std::fmt;
use std::path::PathBuf;

/// The app's default database connection when its driver is `pgsql`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgsqlSettings {
    /// The host (`DB_HOST`; the `write` host when the connection has one). A path starting
    /// with `/` is libpq's socket directory.
    pub host: String,
    /// The port (`DB_PORT`, default 5432); with a socket directory, the socket's number.
    pub port: u16,
    /// `DB_DATABASE`.
    pub database: String,
    /// `DB_USERNAME`.
    pub username: String,
    /// `DB_PASSWORD`; never printed, not even by `Debug`.
    pub password: String,
    /// The connection's table prefix (`'prefix'`), already applied to the schema's names.
    pub table_prefix: String,
    /// What PostgresConnector sets on every connection after connecting.
    pub session: PgsqlSession,
    /// TLS as libpq would negotiate it from the connection's `ssl*` keys.
    pub tls: PgsqlTls,
}

impl PgsqlSettings {
    /// The socket directory, when the host is one (libpq: a host starting with `/`).
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.host
            .starts_with('/')
            .then(|| PathBuf::from(&self.host))
    }

    /// Where we connect, for messages: `host:port`, or the socket's path.
    pub fn endpoint(&self) -> String {
        match self.socket_dir() {
            Some(dir) => format!("unix:{}/.s.PGSQL.{}", dir.display(), self.port),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Never print the password, even in debug logs.
impl fmt::Debug for PgsqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgsqlSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"***")
            .field("table_prefix", &self.table_prefix)
            .field("session", &self.session)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The session statements of PostgresConnector::connect, from the connection's keys, already
/// checked to be safe to put in SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgsqlSession {
    /// `isolation_level`: `set session characteristics as transaction isolation level ...`.
    pub isolation_level: Option<String>,
    /// `charset`: `set names '...'`.
    pub charset: Option<String>,
    /// `timezone`: `set time zone '...'`; unset, the server's `TimeZone` stays.
    pub timezone: Option<String>,
    /// `search_path` (Laravel 9+) or `schema` (Laravel 8): the schemas, in order; empty: the
    /// server's own `search_path` stays.
    pub search_path: Vec<String>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// `synchronous_commit`.
    pub synchronous_commit: Option<String>,
}

impl PgsqlSession {
    /// The statements PostgresConnector sends after connecting, in its order.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(level) = &self.isolation_level {
            out.push(format!(
                "set session characteristics as transaction isolation level {level}"
            ));
        }
        if let Some(charset) = &self.charset {
            out.push(format!("set names '{charset}'"));
        }
        if let Some(tz) = &self.timezone {
            out.push(format!("set time zone '{tz}'"));
        }
        if !self.search_path.is_empty() {
            out.push(format!(
                "set search_path to \"{}\"",
                self.search_path.join("\", \"")
            ));
        }
        if let Some(name) = &self.application_name {
            out.push(format!("set application_name to '{name}'"));
        }
        if let Some(mode) = &self.synchronous_commit {
            out.push(format!("set synchronous_commit to '{mode}'"));
        }
        out
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: plain only.
    Disable,
    /// `allow`: plain first, TLS if the server insists (taken as `prefer` here).
    Allow,
    /// `prefer` (libpq's default): TLS when the server offers it, no verification.
    Prefer,
    /// `require`: TLS or nothing; the chain is verified only when a root file is given, as
    /// libpq does when one exists.
    Require,
    /// `verify-ca`: TLS, the chain verified against the root certificates.
    VerifyCa,
    /// `verify-full`: TLS, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// Reads libpq's names.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS keys of a pgsql connection, which PostgresConnector passes into the DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgsqlTls {
    /// `sslmode` (default `prefer`, as libpq).
    pub mode: SslMode,
    /// `sslrootcert`: the CA file the server's chain is verified against.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: a client certificate.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: its key.
    pub client_key: Option<PathBuf>,
    /// The config key holding `sslmode` (`database.connections.pgsql.sslmode`).
    pub setting: String,
}

impl PgsqlTls {
    /// Whether the server's chain is verified: `verify-ca`, `verify-full`, or `require` with a
    /// root file (libpq then behaves as `verify-ca`).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_set_up_in_postgres_connector_order() {
        let session = PgsqlSession {
            isolation_level: Some("read committed".into()),
            charset: Some("utf8".into()),
            timezone: Some("Asia/Shanghai".into()),
            search_path: vec!["shop".into(), "public".into()],
            application_name: Some("shop".into()),
            synchronous_commit: Some("off".into()),
        };
        assert_eq!(
            session.statements(),
            vec![
                "set session characteristics as transaction isolation level read committed",
                "set names 'utf8'",
                "set time zone 'Asia/Shanghai'",
                "set search_path to \"shop\", \"public\"",
                "set application_name to 'shop'",
                "set synchronous_commit to 'off'",
            ]
        );
        assert!(PgsqlSession::default().statements().is_empty());
    }

    #[test]
    fn a_host_starting_with_a_slash_is_a_socket_directory() {
        let settings = PgsqlSettings {
            host: "/var/run/postgresql".into(),
            port: 5433,
            database: "shop".into(),
            username: "shop".into(),
            password: "s3cret".into(),
            table_prefix: String::new(),
            session: PgsqlSession::default(),
            tls: PgsqlTls {
                mode: SslMode::Prefer,
                root_cert: None,
                client_cert: None,
                client_key: None,
                setting: "database.connections.pgsql.sslmode".into(),
            },
        };
        assert_eq!(
            settings.endpoint(),
            "unix:/var/run/postgresql/.s.PGSQL.5433"
        );
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
