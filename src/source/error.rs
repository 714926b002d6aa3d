//! What can go wrong in an event source: a server it reads did not answer as expected.
//!
//! A source logs such a failure once and tries again on its next tick; the worker never stops
//! for it. At start-up (the first subscription) it is returned to the caller, which turns it into
//! the top-level error and its one line.

use crate::db::DbError;
use crate::redis::RedisError;

/// A failed step of an event source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Redis: connecting, subscribing, `PTTL` or `EXISTS`.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The database: reading the pending or overdue orders.
    #[error(transparent)]
    Database(#[from] DbError),
}
