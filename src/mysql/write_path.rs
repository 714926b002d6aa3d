//! How the writer locks the orders of a batch: wait for each row, or skip the rows another
//! transaction holds.
//!
//! `SELECT ... FOR UPDATE` waits for every row another transaction holds: the app in the middle
//! of a payment, or another worker. One such row holds up the whole batch (up to
//! `innodb_lock_wait_timeout`, 50 s by default), and the orders behind it. Servers that have
//! `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1 and later, MariaDB 10.6 and later) can lock what is
//! free and leave the rest: the writer then tells the rows skipped because they are held (they
//! exist and are unpaid in a plain read, and are tried again shortly after) from the ones
//! missing. Older servers (MySQL 5.7, MariaDB 10.3) keep the waiting path, which every server
//! has; so does `--write-path lock-wait`.

use std::fmt;

/// The way the writer locks a batch's order rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WritePath {
    /// `FOR UPDATE SKIP LOCKED`: held rows are skipped and retried.
    SkipLocked,
    /// `FOR UPDATE`: held rows are waited for.
    LockWait,
}

impl WritePath {
    /// The path for a server of `version` (`SELECT VERSION()`), unless `lock_wait` forces the
    /// one every server has; with why, for the start line and `check`.
    pub(crate) fn choose(version: &str, lock_wait: bool) -> (Self, &'static str) {
        if lock_wait {
            return (Self::LockWait, "forced by --write-path lock-wait");
        }
        if skips_locked(version) {
            (
                Self::SkipLocked,
                "the server has FOR UPDATE SKIP LOCKED (MySQL 8.0.1+, MariaDB 10.6+): rows another transaction holds are skipped and retried",
            )
        } else {
            (
                Self::LockWait,
                "the server has no FOR UPDATE SKIP LOCKED (it needs MySQL 8.0.1+ or MariaDB 10.6+): rows another transaction holds are waited for",
            )
        }
    }

    /// The stable name logs, `check` and the flag use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::SkipLocked => "skip-locked",
            Self::LockWait => "lock-wait",
        }
    }
}

impl fmt::Display for WritePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a server of `version` has `FOR UPDATE SKIP LOCKED`. An unreadable version counts
/// as not having it: the waiting path works everywhere.
fn skips_locked(version: &str) -> bool {
    // MariaDB may announce itself as `5.5.5-10.3.39-MariaDB` to old clients.
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let number = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = number
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor)), patch) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let patch = patch.flatten().unwrap_or(0);
    if mariadb {
        (major, minor) >= (10, 6)
    } else {
        (major, minor, patch) >= (8, 0, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_locked_needs_mysql_8_0_1_or_mariadb_10_6() {
        for version in [
            "8.0.1",
            "8.0.36",
            "8.4.3",
            "9.1.0",
            "10.6.19-MariaDB",
            "10.11.19-MariaDB-0+deb12u1",
            "11.4.2-MariaDB-log",
            "5.5.5-10.6.4-MariaDB",
        ] {
            assert!(skips_locked(version), "{version}");
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
            assert!(!skips_locked(version), "{version}");
        }
    }

    #[test]
    fn the_flag_forces_the_waiting_path() {
        assert_eq!(WritePath::choose("8.0.36", true).0, WritePath::LockWait);
        assert_eq!(WritePath::choose("8.0.36", false).0, WritePath::SkipLocked);
        assert_eq!(WritePath::choose("5.7.44", false).0, WritePath::LockWait);
    }
}
