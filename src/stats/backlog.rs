//! The order queue's backlog: how many orders wait for a writer and how long the oldest has
//! waited (asynq's "queue latency"), kept without a lock on the hot path.
//!
//! The queue is a FIFO, so its oldest order is the one at the head position: the number of
//! orders that ever left it. Each order that enters gets the next position and its time is
//! written into a ring slot for that position; reading the head's slot gives the oldest order's
//! age. The ring holds the last [`RECENT`] positions exactly. A deeper queue (a burst of a
//! hundred thousand orders stuck behind a slow database) is covered by a second ring with one
//! slot every [`RECENT`] positions, which gives the age of an order at most [`RECENT`] places
//! behind the head: during a burst, milliseconds younger. Past both rings (more than
//! `RECENT * SPARSE` orders queued) the oldest slot still held is shown, younger than the truth.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// Positions held exactly: one slot each.
const RECENT: u64 = 2048;
/// Slots of the sparse ring, one per [`RECENT`] positions: about 4 million orders.
const SPARSE: u64 = 2048;

/// A position and the time its order entered; `pos` is the position + 1 (0: never written).
#[derive(Default)]
struct Slot {
    pos: AtomicU64,
    at_ms: AtomicU64,
}

impl Slot {
    fn write(&self, pos: u64, at_ms: u64) {
        self.at_ms.store(at_ms, Ordering::Relaxed);
        self.pos.store(pos + 1, Ordering::Release);
    }

    /// The slot's position and time, if a writer was not changing it meanwhile.
    fn read(&self) -> Option<(u64, u64)> {
        let pos = self.pos.load(Ordering::Acquire);
        let at_ms = self.at_ms.load(Ordering::Relaxed);
        (pos != 0 && self.pos.load(Ordering::Acquire) == pos).then(|| (pos - 1, at_ms))
    }
}

/// The queue's length and the time its oldest order entered.
pub(crate) struct Backlog {
    base: Instant,
    pushed: AtomicU64,
    popped: AtomicU64,
    recent: Box<[Slot]>,
    sparse: Box<[Slot]>,
}

impl fmt::Debug for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backlog")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for Backlog {
    fn default() -> Self {
        Self::new()
    }
}

impl Backlog {
    pub(crate) fn new() -> Self {
        let ring = |n: u64| (0..n).map(|_| Slot::default()).collect();
        Self {
            base: Instant::now(),
            pushed: AtomicU64::new(0),
            popped: AtomicU64::new(0),
            recent: ring(RECENT),
            sparse: ring(SPARSE),
        }
    }

    /// An order entered the queue at `at`.
    pub(crate) fn push(&self, at: Instant) {
        let at_ms = self.millis(at);
        let pos = self.pushed.fetch_add(1, Ordering::AcqRel);
        self.recent[index(pos, RECENT)].write(pos, at_ms);
        if pos.is_multiple_of(RECENT) {
            self.sparse[index(pos / RECENT, SPARSE)].write(pos, at_ms);
        }
    }

    /// `n` orders left the queue (handed to the dispatcher), oldest first.
    pub(crate) fn pop(&self, n: u64) {
        self.popped.fetch_add(n, Ordering::AcqRel);
    }

    /// Orders in the queue.
    pub(crate) fn len(&self) -> u64 {
        let popped = self.popped.load(Ordering::Acquire);
        self.pushed.load(Ordering::Acquire).saturating_sub(popped)
    }

    /// How long the oldest order in the queue has waited at `now`; zero when it is empty.
    pub(crate) fn oldest_age(&self, now: Instant) -> Duration {
        let head = self.popped.load(Ordering::Acquire);
        let pushed = self.pushed.load(Ordering::Acquire);
        if pushed <= head {
            return Duration::ZERO;
        }
        let at_ms = match self.recent[index(head, RECENT)].read() {
            Some((pos, at_ms)) if pos == head => Some(at_ms),
            _ => self.oldest_sparse(head),
        };
        match at_ms {
            Some(at_ms) => Duration::from_millis(self.millis(now).saturating_sub(at_ms)),
            None => Duration::ZERO,
        }
    }

    /// The time of the first sparse slot at or after `head`.
    fn oldest_sparse(&self, head: u64) -> Option<u64> {
        self.sparse
            .iter()
            .filter_map(Slot::read)
            .filter(|(pos, _)| *pos >= head)
            .min_by_key(|(pos, _)| *pos)
            .map(|(_, at_ms)| at_ms)
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

/// `pos`'s slot in a ring of `len` slots.
fn index(pos: u64, len: u64) -> usize {
    usize::try_from(pos % len).unwrap_or(0)
}

impl Collector for Backlog {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let depth = encoder.encode_descriptor(
            "order_expire_queue_depth",
            "Expired orders waiting in the queue for a writer.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(self.len()).unwrap_or(i64::MAX)).encode(depth)?;
        let oldest = encoder.encode_descriptor(
            "order_expire_oldest_pending_seconds",
            "Seconds the oldest order in the queue has waited for a writer (0 when the queue is empty).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.oldest_age(Instant::now()).as_secs_f64()).encode(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_age_follows_the_head_of_the_queue() {
        let backlog = Backlog::new();
        let t0 = backlog.base;
        assert_eq!(backlog.oldest_age(t0), Duration::ZERO);
        backlog.push(t0 + Duration::from_secs(1));
        backlog.push(t0 + Duration::from_secs(3));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(backlog.len(), 2);
        assert_eq!(backlog.oldest_age(now), Duration::from_secs(9));
        backlog.pop(1);
        assert_eq!(backlog.oldest_age(now), Duration::from_secs(7));
        backlog.pop(1);
        assert_eq!(
            (backlog.len(), backlog.oldest_age(now)),
            (0, Duration::ZERO)
        );
    }

    #[test]
    fn a_queue_deeper_than_the_exact_ring_is_read_from_the_sparse_one() {
        let backlog = Backlog::new();
        let t0 = backlog.base;
        let total = RECENT * 3 + 5;
        for i in 0..total {
            backlog.push(t0 + Duration::from_millis(i));
        }
        let now = t0 + Duration::from_secs(100);
        // The head (position 0) was overwritten in the exact ring; position 0 is also the first
        // sparse slot.
        assert_eq!(backlog.oldest_age(now), Duration::from_secs(100));
        backlog.pop(10);
        // Position 10 is gone from the exact ring: the next sparse slot (RECENT) is younger.
        let age = backlog.oldest_age(now);
        assert_eq!(age, Duration::from_millis(100_000 - RECENT));
        backlog.pop(total - 10 - 3);
        // The last positions are exact again.
        assert_eq!(
            backlog.oldest_age(now),
            Duration::from_millis(100_000 - (total - 3))
        );
    }

    #[test]
    fn a_pop_seen_before_its_push_reads_as_empty() {
        let backlog = Backlog::new();
        backlog.pop(1);
        assert_eq!(backlog.len(), 0);
        assert_eq!(backlog.oldest_age(Instant::now()), Duration::ZERO);
        backlog.push(Instant::now());
        assert_eq!(backlog.len(), 0);
    }
}
