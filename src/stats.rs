//! Counters for the pipeline, shared by every stage and logged when the worker stops.
//!
//! Plain atomics: the hot path only increments them, and a summary line at shutdown (and later a
//! metrics endpoint) reads them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// `expired` events received.
    pub events: AtomicU64,
    /// Events for keys that are not order keys of this app.
    pub unrelated: AtomicU64,
    /// Order keys whose id could not be read.
    pub malformed: AtomicU64,
    /// Order ids that did not fit in the queue.
    pub dropped: AtomicU64,
    /// Orders cancelled with their stock returned.
    pub cancelled: AtomicU64,
    /// Orders left alone because they were paid, already cancelled or missing.
    pub skipped: AtomicU64,
    /// Orders a permanent MySQL error refused (a value out of range, a constraint): logged once
    /// and not retried by this process.
    pub parked: AtomicU64,
    /// Orders left unwritten when the stop deadline passed.
    pub abandoned: AtomicU64,
    /// Jobs queued for expired keys of other types (`ORDER_EXPIRE_ON_<TYPE>`).
    pub key_jobs: AtomicU64,
    /// Failed write attempts that were retried.
    pub retries: AtomicU64,
    /// Redis subscriptions lost and re-established.
    pub resubscribes: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_n(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
