//! The member slots through which the replicas of one orders table find each other, on either
//! database: MySQL named locks or PostgreSQL session-level advisory locks, 64 slots each, held
//! on a connection of their own and freed by the server when the worker's session ends.

use super::{Database, DbError};
use crate::{mysql, pgsql};

/// What one refresh saw: this worker's slot and connection id (`None` when every slot is
/// taken), and every held slot with its holder, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) own: Option<(usize, u64)>,
    pub(crate) live: Vec<(usize, u64)>,
}

/// A refresh that failed.
#[derive(Debug)]
pub(crate) struct MembersError {
    /// The server (or a proxy) refuses the locks themselves: the worker works alone.
    pub(crate) refused: bool,
    pub(crate) error: Box<DbError>,
}

/// This worker's member slot and its view of the others.
// A handful of these live per worker (a connection per transaction at most), never in a
// collection: the variants' sizes do not matter, and boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum MemberLocks {
    Mysql(mysql::members::MemberLocks),
    Pgsql(pgsql::members::MemberLocks),
}

impl MemberLocks {
    /// The slots of the workers of `orders` (the table name as written in SQL).
    pub(crate) fn new(db: Database, orders: &str) -> Self {
        match db {
            Database::Mysql(db) => Self::Mysql(mysql::members::MemberLocks::new(db, orders)),
            Database::Pgsql(db) => Self::Pgsql(pgsql::members::MemberLocks::new(db, orders)),
        }
    }

    /// The lock of the first slot, for the start line.
    pub(crate) fn first_name(&self) -> &str {
        match self {
            Self::Mysql(m) => m.first_name(),
            Self::Pgsql(m) => m.first_name(),
        }
    }

    /// What the locks are, for the start line.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "MySQL named locks",
            Self::Pgsql(_) => "PostgreSQL advisory locks",
        }
    }

    /// Holds a slot (taking the first free one after a loss), then reads which are held.
    pub(crate) async fn refresh(&mut self) -> Result<Seen, MembersError> {
        match self {
            Self::Mysql(m) => m
                .refresh()
                .await
                .map(|s| Seen {
                    own: s.own,
                    live: s.live,
                })
                .map_err(|e| MembersError {
                    refused: e.refused,
                    error: Box::new(DbError::Mysql(*e.error)),
                }),
            Self::Pgsql(m) => m
                .refresh()
                .await
                .map(|s| Seen {
                    own: s.own,
                    live: s.live,
                })
                .map_err(|e| MembersError {
                    refused: false,
                    error: Box::new(DbError::Pgsql(e)),
                }),
        }
    }
}

/// The slots held now, read without taking one (`status`).
pub(crate) async fn held_slots(db: &Database, orders: &str) -> Result<Vec<(usize, u64)>, DbError> {
    match db {
        Database::Mysql(db) => Ok(mysql::members::held_slots(db, orders).await?),
        Database::Pgsql(db) => Ok(pgsql::members::held_slots(db, orders).await?),
    }
}
