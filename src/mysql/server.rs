//! Which database server the app's database is on: MySQL or MariaDB, and which version, from
//! `SELECT VERSION()`. What the worker does differently on each (the write path, the outbox's
//! claim, what `check` says about the session) is decided from this one reading.
//!
//! MariaDB reports `11.8.9-MariaDB-0+deb13u1` (or `5.5.5-10.3.39-MariaDB` to old clients);
//! MySQL reports `9.7.4` or `8.0.36-log`, and so do the servers that speak its protocol and
//! version scheme (Percona Server, Aurora MySQL, PlanetScale), which this treats as MySQL.

use std::fmt;

/// MySQL or MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbFamily {
    MySql,
    MariaDb,
}

impl DbFamily {
    /// The stable name `check --json` uses: `mysql` or `mariadb`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MySql => "mysql",
            Self::MariaDb => "mariadb",
        }
    }

    /// `MySQL` or `MariaDB`.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::MySql => "MySQL",
            Self::MariaDb => "MariaDB",
        }
    }
}

/// A database server's family and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbServer {
    pub(crate) family: DbFamily,
    /// Major, minor and patch; zeros where the version could not be read.
    pub(crate) number: (u32, u32, u32),
}

impl DbServer {
    /// Reads `SELECT VERSION()`'s answer.
    pub(crate) fn parse(version: &str) -> Self {
        let family = if version.to_ascii_lowercase().contains("mariadb") {
            DbFamily::MariaDb
        } else {
            DbFamily::MySql
        };
        let number = version.strip_prefix("5.5.5-").unwrap_or(version);
        let mut parts = number
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().ok());
        let mut next = || parts.next().flatten().unwrap_or(0);
        let number = (next(), next(), next());
        Self { family, number }
    }

    /// Whether the server has `FOR UPDATE SKIP LOCKED`: MySQL 8.0.1 and later, MariaDB 10.6
    /// and later. A version that could not be read counts as not having it: the waiting path
    /// works everywhere.
    pub(crate) fn has_skip_locked(&self) -> bool {
        match self.family {
            DbFamily::MariaDb => self.number >= (10, 6, 0),
            DbFamily::MySql => self.number >= (8, 0, 1),
        }
    }

    /// The version as `major.minor.patch`.
    pub(crate) fn version(&self) -> String {
        let (major, minor, patch) = self.number;
        format!("{major}.{minor}.{patch}")
    }
}

impl fmt::Display for DbServer {
    /// `MySQL 9.7.4`, `MariaDB 11.8.9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family.title(), self.version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_and_version_are_read_from_what_each_server_reports() {
        for (reported, family, shown) in [
            ("9.7.4", DbFamily::MySql, "MySQL 9.7.4"),
            ("8.0.36-log", DbFamily::MySql, "MySQL 8.0.36"),
            ("8.0.mysql_aurora.3.05.2", DbFamily::MySql, "MySQL 8.0.0"),
            (
                "11.8.9-MariaDB-0+deb13u1",
                DbFamily::MariaDb,
                "MariaDB 11.8.9",
            ),
            (
                "5.5.5-10.3.39-MariaDB",
                DbFamily::MariaDb,
                "MariaDB 10.3.39",
            ),
            (
                "10.5.29-MariaDB-0+deb11u1",
                DbFamily::MariaDb,
                "MariaDB 10.5.29",
            ),
        ] {
            let server = DbServer::parse(reported);
            assert_eq!(server.family, family, "{reported}");
            assert_eq!(server.to_string(), shown, "{reported}");
        }
    }

    #[test]
    fn skip_locked_needs_mysql_8_0_1_or_mariadb_10_6() {
        for version in [
            "8.0.1",
            "8.0.36",
            "8.4.3",
            "9.7.4",
            "10.6.19-MariaDB",
            "10.11.19-MariaDB-0+deb12u1",
            "11.4.2-MariaDB-log",
            "5.5.5-10.6.4-MariaDB",
        ] {
            assert!(DbServer::parse(version).has_skip_locked(), "{version}");
        }
        for version in [
            "5.7.44",
            "5.7.44-log",
            "8.0.0-dmr",
            "10.3.39-MariaDB",
            "10.5.27-MariaDB-log",
            "5.5.5-10.3.39-MariaDB",
            "",
            "unknown",
        ] {
            assert!(!DbServer::parse(version).has_skip_locked(), "{version}");
        }
    }
}
