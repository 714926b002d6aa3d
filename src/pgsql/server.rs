//! Which PostgreSQL the app's database is on, from `server_version_num` (`150020` for 15.20,
//! `90624` for 9.6.24): what the worker does differently (the write path) is decided from it.

use std::fmt;

/// A PostgreSQL server's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgServer {
    /// `server_version_num`.
    pub(crate) number: u32,
    /// `server_version`, as the server words it (`15.20 (Debian 15.20-0+deb12u1)`).
    pub(crate) version: String,
}

impl PgServer {
    /// `FOR UPDATE SKIP LOCKED` came with PostgreSQL 9.5.
    pub(crate) fn has_skip_locked(&self) -> bool {
        self.number >= 90_500
    }

    /// `major.minor` (10 and later) or `major.minor.patch` (9.x).
    pub(crate) fn short_version(&self) -> String {
        let n = self.number;
        if n >= 100_000 {
            format!("{}.{}", n / 10_000, n % 10_000)
        } else {
            format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100)
        }
    }
}

impl fmt::Display for PgServer {
    /// `PostgreSQL 15.20`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.short_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_server_version_num() {
        let server = |number| PgServer {
            number,
            version: String::new(),
        };
        assert_eq!(server(150_020).to_string(), "PostgreSQL 15.20");
        assert_eq!(server(90_624).to_string(), "PostgreSQL 9.6.24");
        assert!(server(90_500).has_skip_locked());
        assert!(!server(90_424).has_skip_locked());
    }
}
