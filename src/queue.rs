//! The queue between the sources and the dispatcher: which orders are due, where each came from,
//! and what happens when the queue is full.
//!
//! Three producers feed it: the keyspace source (an `expired` event), the deadline watcher (a
//! deadline that passed) and the reconciliation (a sweep of the database). They must not behave
//! alike when the queue is full: the keyspace source may never wait, or Redis would buffer events
//! for it without bound, so it drops the order (the next sweep recovers it) and says so at most a
//! few times a minute; the watcher and the sweep read at their own pace and simply wait. One type
//! holds that policy, the dedup window (several sources report the same order) and the
//! per-origin counters, so that every producer gets the same rules by construction.
//!
//! Memory: 16 bytes per queued order (a burst of a million fits in 16 MB) and a fixed 256 KiB
//! dedup table and 128 KiB window; nothing is kept per order once it is handed to a writer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::stats::Stats;
use crate::stats::backlog::Backlog;
use crate::throttle::{Admission, Throttle};

/// Where a due order was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// Redis published `expired` for its key.
    Event,
    /// The deadline watcher saw its deadline pass without a key.
    Deadline,
    /// A reconciliation sweep found it overdue without a key.
    Sweep,
}

impl Origin {
    /// Every origin, in the order of the counters.
    pub(crate) const ALL: [Origin; 3] = [Origin::Event, Origin::Deadline, Origin::Sweep];

    /// The stable lowercase name logs and metrics use: `event`, `deadline`, `sweep`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Origin::Event => "event",
            Origin::Deadline => "deadline",
            Origin::Sweep => "sweep",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An order that is due to be cancelled: 16 bytes, so that a queue holding a burst of a million
/// orders costs 16 MB, not the 40 of a struct with an `Instant` and an enum beside the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueOrder {
    /// The order's id.
    pub id: u64,
    /// When it was queued, in milliseconds of the queue's [`QueueClock`] (wrapping after about
    /// 49 days: a wait is their difference, and no order waits that long).
    queued_ms: u32,
    /// Which source found it and how overdue it was, see [`Packed`].
    packed: Packed,
}

const _: () = assert!(std::mem::size_of::<DueOrder>() == 16);

impl DueOrder {
    /// Which source found it.
    pub(crate) fn origin(&self) -> Origin {
        self.packed.origin()
    }

    /// How long past its deadline the order already was when queued: zero for an event, whose
    /// deadline is its expiry; what the deadline watcher or the sweep computed otherwise. Carried
    /// so that the lateness of the cancellation needs no second look at Redis or MySQL, and kept
    /// as a duration, not as an instant: an order found overdue by days may predate the
    /// monotonic clock's start.
    pub(crate) fn overdue(&self) -> Duration {
        self.packed.overdue()
    }
}

/// An origin and an overdue time in 32 bits: the origin in the top two, then one bit for the
/// unit, then 29 bits of milliseconds (up to about 6 days, exact) or of seconds (up to 17
/// years, for an order a sweep finds long after its deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed(u32);

impl Packed {
    const VALUE_BITS: u32 = 29;
    const VALUE_MAX: u64 = (1 << Self::VALUE_BITS) - 1;
    const SECONDS: u32 = 1 << Self::VALUE_BITS;

    fn new(origin: Origin, overdue: Duration) -> Self {
        let ms = u64::try_from(overdue.as_millis()).unwrap_or(u64::MAX);
        let value = if ms <= Self::VALUE_MAX {
            ms as u32
        } else {
            Self::SECONDS | overdue.as_secs().min(Self::VALUE_MAX) as u32
        };
        Self(((origin.index() as u32) << 30) | value)
    }

    fn origin(self) -> Origin {
        match self.0 >> 30 {
            0 => Origin::Event,
            1 => Origin::Deadline,
            _ => Origin::Sweep,
        }
    }

    fn overdue(self) -> Duration {
        let value = u64::from(self.0) & Self::VALUE_MAX;
        if self.0 & Self::SECONDS == 0 {
            Duration::from_millis(value)
        } else {
            Duration::from_secs(value)
        }
    }
}

/// The time base of a queue's orders: milliseconds since the queue was made. The dispatcher
/// asks it how long an order waited, for the latency histograms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueClock {
    epoch: Instant,
}

impl QueueClock {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the epoch at `at`, whole.
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long `order` had waited at `now` since it was queued.
    pub(crate) fn waited(&self, order: &DueOrder, now: Instant) -> Duration {
        let now_ms = self.millis(now) as u32;
        Duration::from_millis(u64::from(now_ms.wrapping_sub(order.queued_ms)))
    }
}

/// Counts per origin, exported as metrics (`received` and `deduplicated`) and read by the tests.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    received: [Counter; 3],
    dropped: [Counter; 3],
    deduplicated: [Counter; 3],
}

impl QueueCounters {
    /// The handles of `stats`' per-origin metrics, one per origin, made once.
    fn new(stats: &Stats) -> Self {
        let handles = |family: &prometheus_client::metrics::family::Family<_, Counter>| {
            Origin::ALL.map(|origin| family.get_or_create_owned(&[("origin", origin.name())]))
        };
        Self {
            received: handles(&stats.received),
            dropped: Default::default(),
            deduplicated: handles(&stats.deduplicated),
        }
    }

    /// Orders from `origin` that entered the queue.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) fn received(&self, origin: Origin) -> u64 {
        self.received[origin.index()].get()
    }

    /// Orders from `origin` that did not fit in the queue.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) fn dropped(&self, origin: Origin) -> u64 {
        self.dropped[origin.index()].get()
    }

    /// Orders from `origin` the dispatcher skipped because they were dispatched moments before.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) fn deduplicated(&self, origin: Origin) -> u64 {
        self.deduplicated[origin.index()].get()
    }

    fn add(counters: &[Counter; 3], origin: Origin) {
        counters[origin.index()].inc();
    }
}

/// What the senders share.
struct Shared {
    clock: QueueClock,
    counters: Arc<QueueCounters>,
    stats: Arc<Stats>,
    queue_full_warnings: Throttle,
}

/// The queue is closed: the worker is stopping, so the producer stops too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// A bounded queue of due orders holding `capacity` (at least 1). `stats.dropped` counts the
/// orders a full queue turned away, and `stats.backlog` follows its length and its oldest order.
pub(crate) fn order_queue(capacity: usize, stats: Arc<Stats>) -> (QueueSender, OrderQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let counters = Arc::new(QueueCounters::new(&stats));
    let backlog = Arc::clone(&stats.backlog);
    let clock = QueueClock::new();
    let shared = Arc::new(Shared {
        clock,
        counters: Arc::clone(&counters),
        stats,
        queue_full_warnings: Throttle::per_minute(),
    });
    let sender = QueueSender { tx, shared };
    let queue = OrderQueue {
        rx,
        clock,
        counters,
        backlog,
        recent: RecentlyDispatched::new(clock),
        window: Vec::new(),
    };
    (sender, queue)
}

/// The producers' end. Cloneable; the queue closes when every clone is dropped.
#[derive(Clone)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<DueOrder>,
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Queues `id` found by `origin` at its deadline (an event), with the policy of that origin
    /// when the queue is full: an event is dropped (counted, and logged a few times a minute)
    /// and never waits; a deadline or a sweep waits for room. `Err(Closed)` once the dispatcher
    /// has stopped.
    pub(crate) async fn send(&self, id: u64, origin: Origin) -> Result<(), Closed> {
        self.send_overdue(id, origin, Duration::ZERO).await
    }

    /// Like [`Self::send`], for an order found `overdue` past its deadline.
    pub(crate) async fn send_overdue(
        &self,
        id: u64,
        origin: Origin,
        overdue: Duration,
    ) -> Result<(), Closed> {
        let now = Instant::now();
        let order = DueOrder {
            id,
            queued_ms: self.shared.clock.millis(now) as u32,
            packed: Packed::new(origin, overdue),
        };
        let queued = match origin {
            Origin::Event => self.offer(order)?,
            Origin::Deadline | Origin::Sweep => {
                self.tx.send(order).await.map_err(|_| Closed)?;
                true
            }
        };
        if queued {
            QueueCounters::add(&self.shared.counters.received, origin);
            self.shared.stats.backlog.push(now.into_std());
        }
        Ok(())
    }

    /// Queues `order` if there is room, else drops it: a dropped order is not an error for the
    /// producer (the sweep recovers it), only for the operator. `Ok(false)` when dropped.
    fn offer(&self, order: DueOrder) -> Result<bool, Closed> {
        match self.tx.try_send(order) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(order)) => {
                QueueCounters::add(&self.shared.counters.dropped, order.origin());
                Stats::add(&self.shared.stats.dropped);
                if let Admission::Log { suppressed } = self.shared.queue_full_warnings.admit() {
                    tracing::error!(
                        event = "queue_full",
                        order = order.id,
                        suppressed,
                        "writer queue full: order not queued; raise --queue-size or --concurrency"
                    );
                }
                Ok(false)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }
}

/// Most orders taken from the channel at once and handed out in id order: a burst's orders
/// arrive in the order Redis expires their keys, scattered over the table; handed out sorted,
/// a batch holds neighbouring ids, whose rows share B-tree pages. 128 KiB of entries at most,
/// and each order waits at most one window (no starvation of high ids: a window is only
/// refilled once empty).
const ID_ORDER_WINDOW: usize = 8192;

/// The dispatcher's end: hands out each order once within the dedup window, what is queued at
/// once in id order.
pub(crate) struct OrderQueue {
    rx: mpsc::Receiver<DueOrder>,
    clock: QueueClock,
    counters: Arc<QueueCounters>,
    backlog: Arc<Backlog>,
    recent: RecentlyDispatched,
    /// Orders taken from the channel and not handed out yet, highest id first (handed out from
    /// the end). They still count in the backlog.
    window: Vec<DueOrder>,
}

impl OrderQueue {
    /// The next order not dispatched within the dedup window (the lowest id of what is queued
    /// now, see [`ID_ORDER_WINDOW`]); `None` once the queue is closed and empty. Cancel-safe:
    /// only duplicates are consumed before it returns.
    pub(crate) async fn recv(&mut self) -> Option<DueOrder> {
        if self.window.is_empty() {
            loop {
                let order = self.rx.recv().await?;
                if self.first(&order) {
                    self.window.push(order);
                    self.refill_window();
                    break;
                }
                self.backlog.pop(1);
            }
        }
        self.try_recv()
    }

    /// Like [`Self::recv`] without waiting: `None` when nothing new is queued right now.
    pub(crate) fn try_recv(&mut self) -> Option<DueOrder> {
        if self.window.is_empty() {
            self.refill_window();
        }
        let order = self.window.pop()?;
        self.backlog.pop(1);
        Some(order)
    }

    /// Takes what the channel holds now into the window, up to [`ID_ORDER_WINDOW`], skipping
    /// duplicates, and sorts it.
    fn refill_window(&mut self) {
        let before = self.window.len();
        while self.window.len() < ID_ORDER_WINDOW {
            let Ok(order) = self.rx.try_recv() else {
                break;
            };
            if self.first(&order) {
                self.window.push(order);
            } else {
                self.backlog.pop(1);
            }
        }
        if self.window.len() > before {
            self.window
                .sort_unstable_by_key(|order| std::cmp::Reverse(order.id));
        }
    }

    /// Whether the queue is closed and empty: nothing will ever come.
    pub(crate) fn is_finished(&self) -> bool {
        self.window.is_empty() && self.rx.is_closed() && self.rx.is_empty()
    }

    /// Everything still queued, duplicates included, without waiting: what a stop leaves.
    pub(crate) fn take_rest(&mut self) -> Vec<u64> {
        let mut rest: Vec<u64> = self.window.drain(..).rev().map(|order| order.id).collect();
        while let Ok(order) = self.rx.try_recv() {
            rest.push(order.id);
        }
        self.backlog.pop(rest.len() as u64);
        rest
    }

    /// Refuses new orders; those already queued can still be received.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }

    /// The time base of this queue's orders.
    pub(crate) fn clock(&self) -> QueueClock {
        self.clock
    }

    /// The per-origin counters this queue keeps.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) fn counters(&self) -> Arc<QueueCounters> {
        Arc::clone(&self.counters)
    }

    fn first(&mut self, order: &DueOrder) -> bool {
        let first = self.recent.first(order.id);
        if !first {
            QueueCounters::add(&self.counters.deduplicated, order.origin());
        }
        first
    }
}

/// Order ids dispatched in the last few seconds. Several sources may report the same order (the
/// event and a sweep, or two events): the database makes that harmless, this makes it cheap.
///
/// A fixed table of [`Self::SETS`] sets of two slots (256 KiB), chosen by a hash of the id, each
/// slot an id and when it was dispatched: memory does not grow with a burst. It is lossy: an
/// order whose set took two other orders since is offered again, and is then written twice,
/// which the writer's transaction makes harmless (it finds the order cancelled). Duplicates come
/// moments apart (the deadline watcher's `PTTL` causes the event it races), so with 16,384 slots
/// they are caught unless many thousands of orders pass in between.
struct RecentlyDispatched {
    clock: QueueClock,
    /// `(id, dispatched at in ms of the clock + 1)`; 0 marks an empty slot.
    slots: Box<[[(u64, u64); 2]]>,
}

impl RecentlyDispatched {
    /// How long an order dispatched is not dispatched again.
    const KEEP: Duration = Duration::from_secs(30);
    /// Sets of two slots, a power of two.
    const SETS: usize = 8192;

    fn new(clock: QueueClock) -> Self {
        Self {
            clock,
            slots: vec![[(0, 0); 2]; Self::SETS].into_boxed_slice(),
        }
    }

    /// True the first time `order` is offered within [`Self::KEEP`], as far as the table
    /// remembers.
    fn first(&mut self, order: u64) -> bool {
        let now = self.clock.millis(Instant::now()).saturating_add(1);
        let keep = Self::KEEP.as_millis() as u64;
        let set = &mut self.slots[set_of(order)];
        if let Some(slot) = set.iter_mut().find(|(id, at)| *at != 0 && *id == order) {
            let recent = now.saturating_sub(slot.1) < keep;
            if !recent {
                slot.1 = now;
            }
            return !recent;
        }
        // The older slot (or an empty one) takes it.
        let oldest = if set[0].1 <= set[1].1 { 0 } else { 1 };
        set[oldest] = (order, now);
        true
    }
}

/// The set of [`RecentlyDispatched`] for `order`: ids are sequential, so they are multiplied by
/// a large odd constant (Fibonacci hashing) to spread neighbours and strides alike.
fn set_of(order: u64) -> usize {
    const BITS: u32 = RecentlyDispatched::SETS.trailing_zeros();
    (order.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

/// A key of another type than the orders' that expired (`ORDER_EXPIRE_ON_<TYPE>`): the index
/// of its type in `Settings::key_jobs`, and the id the key carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpiredKey {
    pub(crate) kind: usize,
    pub(crate) id: u64,
}

/// The queue from the keyspace source to the key-job writer, bounded by `capacity` (at least
/// 1). Like an order event, a key never waits for room: a full queue drops it, counts it in
/// `stats.dropped` and says so a few times a minute (no sweep recovers it: no row records it).
pub(crate) fn key_job_queue(
    capacity: usize,
    stats: Arc<Stats>,
) -> (KeyJobSender, mpsc::Receiver<ExpiredKey>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let sender = KeyJobSender {
        tx,
        stats,
        full_warnings: Arc::new(Throttle::per_minute()),
    };
    (sender, rx)
}

/// The keyspace source's end of [`key_job_queue`].
#[derive(Clone)]
pub(crate) struct KeyJobSender {
    tx: mpsc::Sender<ExpiredKey>,
    stats: Arc<Stats>,
    full_warnings: Arc<Throttle>,
}

impl KeyJobSender {
    /// Queues `key` if there is room, else drops it and says so; never waits.
    pub(crate) fn offer(&self, key: ExpiredKey) {
        if let Err(mpsc::error::TrySendError::Full(key)) = self.tx.try_send(key) {
            Stats::add(&self.stats.dropped);
            if let Admission::Log { suppressed } = self.full_warnings.admit() {
                tracing::error!(
                    event = "key_job_queue_full",
                    id = key.id,
                    suppressed,
                    "key job queue full: no job queued for this key; raise --queue-size"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> (QueueSender, OrderQueue, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let (tx, rx) = order_queue(capacity, Arc::clone(&stats));
        (tx, rx, stats)
    }

    #[test]
    fn origins_have_stable_names() {
        let names: Vec<&str> = Origin::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["event", "deadline", "sweep"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_events_and_counts_them() {
        let (tx, mut rx, stats) = queue(1);
        assert_eq!(tx.send(1, Origin::Event).await, Ok(()));
        assert_eq!(
            tx.send(2, Origin::Event).await,
            Ok(()),
            "dropped, not an error"
        );
        let counters = rx.counters();
        assert_eq!(counters.received(Origin::Event), 1);
        assert_eq!(counters.dropped(Origin::Event), 1);
        assert_eq!(Stats::get(&stats.dropped), 1);
        assert_eq!(stats.backlog.len(), 1, "only what entered is waiting");
        assert_eq!(rx.recv().await.map(|o| o.id), Some(1));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(stats.backlog.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_deadlines_and_sweeps_wait() {
        let (tx, mut rx, _) = queue(1);
        tx.send(1, Origin::Sweep).await.expect("room");
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2, Origin::Deadline).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "waits for room");
        assert_eq!(rx.recv().await.map(|o| o.id), Some(1));
        assert_eq!(waiting.await.expect("joined"), Ok(()));
        let second = rx.recv().await.expect("queued");
        assert_eq!((second.id, second.origin()), (2, Origin::Deadline));
        assert_eq!(rx.counters().dropped(Origin::Deadline), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_within_the_window_are_skipped_and_counted() {
        let (tx, mut rx, _) = queue(16);
        tx.send(7, Origin::Event).await.expect("room");
        tx.send(7, Origin::Sweep).await.expect("room");
        tx.send(8, Origin::Deadline).await.expect("room");
        assert_eq!(rx.recv().await.map(|o| o.id), Some(7));
        assert_eq!(rx.recv().await.map(|o| o.id), Some(8));
        assert_eq!(rx.counters().deduplicated(Origin::Sweep), 1);
        tokio::time::advance(RecentlyDispatched::KEEP).await;
        tx.send(7, Origin::Event).await.expect("room");
        assert_eq!(rx.try_recv().map(|o| o.id), Some(7), "window passed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_dedup_window_catches_a_duplicate_among_thousands_in_constant_memory() {
        let mut recent = RecentlyDispatched::new(QueueClock::new());
        let size = std::mem::size_of_val(&*recent.slots);
        assert_eq!(size, 256 * 1024);
        let mut caught = 0;
        for id in 1..=200_000u64 {
            assert!(recent.first(id), "{id} is new");
            // Its duplicate arrives a thousand orders later, as from a second source.
            if id > 1000 && !recent.first(id - 1000) {
                caught += 1;
            }
        }
        assert_eq!(std::mem::size_of_val(&*recent.slots), size, "no growth");
        assert!(caught >= 199_000 * 99 / 100, "caught {caught} of 199000");
        tokio::time::advance(RecentlyDispatched::KEEP).await;
        assert!(recent.first(200_000), "window passed");
        assert!(!recent.first(200_000), "and counted again");
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_queued_at_once_comes_out_in_id_order_one_window_at_a_time() {
        let (tx, mut rx, stats) = queue(2 * ID_ORDER_WINDOW);
        let burst = |from: u64| (0..ID_ORDER_WINDOW as u64).rev().map(move |i| from + i);
        for id in burst(1_000_000) {
            tx.send(id, Origin::Event).await.expect("room");
        }
        assert_eq!(
            rx.recv().await.map(|o| o.id),
            Some(1_000_000),
            "lowest first"
        );
        // Lower ids queued now wait for the next window: none waits longer than one.
        for id in burst(1) {
            tx.send(id, Origin::Event).await.expect("room");
        }
        let mut out = Vec::new();
        while let Some(order) = rx.try_recv() {
            out.push(order.id);
        }
        let window = ID_ORDER_WINDOW as u64;
        let expected: Vec<u64> = (1_000_001..1_000_000 + window).chain(1..=window).collect();
        assert_eq!(out, expected);
        assert_eq!(stats.backlog.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_carries_how_overdue_it_was() {
        let (tx, mut rx, _) = queue(4);
        tx.send_overdue(1, Origin::Sweep, Duration::from_secs(40 * 24 * 3600))
            .await
            .expect("room");
        tx.send(2, Origin::Event).await.expect("room");
        let overdue: Vec<Duration> = [rx.recv().await, rx.recv().await]
            .into_iter()
            .flatten()
            .map(|o| o.overdue())
            .collect();
        assert_eq!(
            overdue,
            [Duration::from_secs(40 * 24 * 3600), Duration::ZERO],
            "days overdue fit, an event is on time"
        );
    }

    #[test]
    fn an_entry_keeps_its_origin_and_overdue_time() {
        let cases = [
            (Origin::Event, Duration::ZERO),
            (Origin::Deadline, Duration::from_millis(1234)),
            (Origin::Sweep, Duration::from_millis(Packed::VALUE_MAX)),
            (Origin::Sweep, Duration::from_secs(40 * 24 * 3600)),
            (Origin::Deadline, Duration::from_secs(u64::MAX)),
        ];
        let read: Vec<(Origin, Duration)> = cases
            .iter()
            .map(|&(origin, overdue)| {
                let packed = Packed::new(origin, overdue);
                (packed.origin(), packed.overdue())
            })
            .collect();
        let max = Duration::from_secs(Packed::VALUE_MAX);
        assert_eq!(
            read,
            [
                cases[0],
                cases[1],
                cases[2],
                cases[3],
                (Origin::Deadline, max)
            ],
            "exact to the millisecond up to days, to the second beyond, capped at 17 years"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_knows_how_long_it_waited() {
        let (tx, mut rx, stats) = queue(4);
        tokio::time::advance(Duration::from_secs(5)).await;
        tx.send(1, Origin::Event).await.expect("room");
        tokio::time::advance(Duration::from_millis(250)).await;
        let order = rx.recv().await.expect("queued");
        let waited = rx.clock().waited(&order, Instant::now());
        assert_eq!(waited, Duration::from_millis(250));
        assert_eq!(stats.backlog.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn senders_see_the_queue_close() {
        let (tx, mut rx, _) = queue(4);
        rx.close();
        assert_eq!(tx.send(1, Origin::Event).await, Err(Closed));
        assert_eq!(tx.send(1, Origin::Sweep).await, Err(Closed));
        drop(tx);
        assert!(rx.is_finished());
    }
}
