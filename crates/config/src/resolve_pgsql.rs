//! A `pgsql` connection resolved as Laravel's PostgresConnector opens it (Laravel 8 to 13): the
//! DSN's host, port, database and `ssl*` keys, and the session statements it sends after
//! connecting. `schema` is Laravel 8's name for the search path; Laravel 9 reads `search_path`
//! first and splits a string on commas and spaces (`ParsesSearchPath`).

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::pgsql::{PgsqlSession, PgsqlSettings, PgsqlTls, SslMode};
use super::php;
use super::php_value::PhpValue;
use super::resolve::{Entries, Laravel};

/// libpq's port when the DSN has none.
const DEFAULT_PORT: u16 = 5432;
/// Where Debian's libpq looks for the server's socket when the DSN names no host.
pub(super) const LIBPQ_DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

impl Laravel<'_> {
    /// The pgsql connection `conn` (its `url` and `write` side already merged); `host` is the
    /// first of its hosts, `None` when it has none (libpq then uses its socket directory).
    pub(super) fn pgsql(
        &self,
        conn: &Entries,
        host: Option<String>,
    ) -> Result<PgsqlSettings, ConfigError> {
        let host = host
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| LIBPQ_DEFAULT_SOCKET_DIR.into());
        let port = match conn.text("port")?.filter(|p| !p.is_empty()) {
            None => DEFAULT_PORT,
            Some(text) => u16::try_from(php::int_cast(&text))
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    self.invalid(&conn.path("port"), &text, "expected a port, 1-65535")
                })?,
        };
        Ok(PgsqlSettings {
            host,
            port,
            database: conn.text("database")?.unwrap_or_default(),
            username: conn.text("username")?.unwrap_or_default(),
            password: conn.text("password")?.unwrap_or_default(),
            table_prefix: conn.text("prefix")?.unwrap_or_default(),
            session: self.pgsql_session(conn)?,
            tls: self.pgsql_tls(conn)?,
        })
    }

    /// The keys PostgresConnector turns into session statements. They go into SQL, so each
    /// must look like what it is.
    fn pgsql_session(&self, conn: &Entries) -> Result<PgsqlSession, ConfigError> {
        let checked = |key: &str,
                       allowed: fn(char) -> bool,
                       what: &str|
         -> Result<Option<String>, ConfigError> {
            match conn.text(key)? {
                Some(v) if v.is_empty() => Ok(None),
                Some(v) if v.chars().all(allowed) => Ok(Some(v)),
                Some(v) => Err(self.invalid(&conn.path(key), &v, format!("not {what}"))),
                None => Ok(None),
            }
        };
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let zone = |c: char| c.is_ascii_alphanumeric() || "_+-:/".contains(c);
        let level = |c: char| c.is_ascii_alphabetic() || c == ' ';
        let name = |c: char| !c.is_control() && c != '\'' && c != '\\';
        Ok(PgsqlSession {
            isolation_level: checked("isolation_level", level, "an isolation level")?,
            charset: checked("charset", word, "a PostgreSQL encoding name")?,
            timezone: checked("timezone", zone, "a time zone")?,
            search_path: self.search_path(conn)?,
            application_name: checked("application_name", name, "an application name")?,
            synchronous_commit: checked("synchronous_commit", word, "a synchronous_commit value")?,
        })
    }

    /// The schemas of `set search_path to`: Laravel 8 quotes `schema` whole (or each entry of
    /// an array); Laravel 9+ reads `search_path`, else `schema`, splitting a string on commas,
    /// spaces and quotes.
    fn search_path(&self, conn: &Entries) -> Result<Vec<String>, ConfigError> {
        let (key, value) = if self.major() >= 9 {
            match conn.get("search_path")? {
                Some(v) if !matches!(v, PhpValue::Null) => ("search_path", Some(v.clone())),
                _ => ("schema", conn.get("schema")?.cloned()),
            }
        } else {
            ("schema", conn.get("schema")?.cloned())
        };
        let split = self.major() >= 9;
        let schemas: Vec<String> = match value {
            None | Some(PhpValue::Null) => return Ok(Vec::new()),
            Some(PhpValue::Array(entries)) => entries
                .iter()
                .filter_map(|(_, v)| v.to_php_string())
                .map(|s| {
                    if split {
                        s.trim_matches(|c| c == '\'' || c == '"').to_string()
                    } else {
                        s
                    }
                })
                .collect(),
            Some(other) => {
                let text = other.to_php_string().unwrap_or_default();
                if split {
                    text.split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\'')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                } else {
                    vec![text]
                }
            }
        };
        for schema in &schemas {
            if schema.is_empty() || schema.contains('"') || schema.chars().any(char::is_control) {
                return Err(self.invalid(
                    &conn.path(key),
                    schema,
                    "not a schema name PostgreSQL can be given in double quotes",
                ));
            }
        }
        Ok(schemas)
    }

    /// `sslmode` and the files, as the DSN passes them to libpq; relative paths are read from
    /// the app's folder.
    fn pgsql_tls(&self, conn: &Entries) -> Result<PgsqlTls, ConfigError> {
        let mode = match conn.text("sslmode")?.filter(|m| !m.is_empty()) {
            None => SslMode::Prefer,
            Some(text) => SslMode::parse(&text).ok_or_else(|| {
                self.invalid(
                    &conn.path("sslmode"),
                    &text,
                    "expected disable, allow, prefer, require, verify-ca or verify-full",
                )
            })?,
        };
        let root = self.env_file.parent().unwrap_or(Path::new("."));
        let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(conn
                .text(key)?
                .filter(|p| !p.is_empty())
                .map(|p| root.join(p)))
        };
        let root_cert = match conn.text("sslrootcert")?.as_deref() {
            // PostgreSQL 16's libpq: the system's trust store.
            Some("system") => None,
            _ => file("sslrootcert")?,
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
            && root_cert.is_none()
            && conn.text("sslrootcert")?.as_deref() != Some("system")
        {
            return Err(self.invalid(
                &conn.path("sslmode"),
                mode.name(),
                "verifying the server needs the CA that signed its certificate: set sslrootcert in the connection (a PEM file), or sslrootcert=system for the system's trust store",
            ));
        }
        Ok(PgsqlTls {
            mode,
            root_cert,
            client_cert: file("sslcert")?,
            client_key: file("sslkey")?,
            setting: conn.path("sslmode"),
        })
    }
}
