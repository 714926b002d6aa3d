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

use super::server::DbServer;

/// The way the writer locks a batch's order rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WritePath {
    /// `FOR UPDATE SKIP LOCKED`: held rows are skipped and retried.
    SkipLocked,
    /// `FOR UPDATE`: held rows are waited for.
    LockWait,
}

impl WritePath {
    /// The path for `server`, unless `lock_wait` forces the one every server has; with why,
    /// for the start line and `check`.
    pub(crate) fn choose(server: &DbServer, lock_wait: bool) -> (Self, &'static str) {
        if lock_wait {
            return (Self::LockWait, "forced by --write-path lock-wait");
        }
        if server.has_skip_locked() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_forces_the_waiting_path() {
        let choose = |version, lock_wait| WritePath::choose(&DbServer::parse(version), lock_wait).0;
        assert_eq!(choose("8.0.36", true), WritePath::LockWait);
        assert_eq!(choose("8.0.36", false), WritePath::SkipLocked);
        assert_eq!(choose("5.7.44", false), WritePath::LockWait);
        assert_eq!(choose("10.5.29-MariaDB", false), WritePath::LockWait);
    }
}
