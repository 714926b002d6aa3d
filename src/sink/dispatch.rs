//! The dispatcher: hands queued orders to at most N concurrent batch writes, retries what fails,
//! and stops at a deadline.
//!
//! It is generic over the [`BatchWriter`] so that its decisions (batch filling, backoff, the
//! split of a batch that keeps failing, the parking of an order MySQL refuses, the drain and the
//! abandonment at the stop deadline) are tested without servers, under a paused clock; the
//! worker and the `sweep` command run it over the MySQL [`Writer`].

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::share::Share;
use super::writer::{CancelError, MAX_BATCH};
use super::{Outcome, Writer};
use crate::backoff::Backoff;
use crate::queue::{DueOrder, OrderQueue, Origin, QueueClock};
use crate::stats::Stats;
use crate::stats::health::{Health, Heartbeat};

/// The longest one attempt at a batch may take before it is dropped and retried: above the
/// writer's own bound on its transaction (15 s) plus ending an abandoned connection and reading
/// back a `COMMIT` without reply, so that it only catches a writer that hangs elsewhere.
const WRITE_TIMEOUT: Duration = Duration::from_secs(40);
/// After the stop deadline, how long abandoned writes get to return: the stop is the deadline
/// plus at most about this.
pub(crate) const ABANDON_GRACE: Duration = Duration::from_millis(400);
/// Most order ids listed in the line that says what a stop left.
const LEFT_SHOWN: usize = 50;
/// Failed attempts of a batch before its orders are written one by one.
const SPLIT_AFTER: u32 = 3;
/// The first wait before orders skipped because another transaction held their rows are tried
/// again, doubling up to [`BUSY_RETRY_MAX`]: a payment holds its row for milliseconds, a
/// stuck request for longer.
const BUSY_RETRY: Duration = Duration::from_millis(20);
const BUSY_RETRY_MAX: Duration = Duration::from_secs(1);

/// Why a write failed, as far as the dispatcher's decisions go.
pub(crate) trait WriteFailure: fmt::Display + Send + Sync + 'static {
    /// Another transaction held the rows (a deadlock, a lock wait): try again at once.
    fn is_lock_conflict(&self) -> bool;
    /// The server refuses the write itself (a value out of range, a constraint): retrying
    /// cannot help.
    fn is_permanent(&self) -> bool;
    /// A lock conflict that waited the whole lock wait timeout: a row held that long is an
    /// outage of the writes (a frozen or cut-off transaction), not a race.
    fn is_lock_wait_timeout(&self) -> bool {
        false
    }
}

/// Writes a batch of due orders in one transaction: cancels those still unpaid and returns
/// their stock, and says what it did with each.
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// The error of a failed batch; nothing of the batch is written then.
    type Error: WriteFailure;
    /// Most orders in one batch.
    const MAX_BATCH: usize;
    /// Writes `orders` (at most [`Self::MAX_BATCH`], no duplicates).
    fn write_batch(
        &self,
        orders: &[u64],
    ) -> impl Future<Output = Result<Vec<(u64, Outcome)>, Self::Error>> + Send;
}

impl WriteFailure for CancelError {
    fn is_lock_conflict(&self) -> bool {
        CancelError::is_lock_conflict(self)
    }

    fn is_permanent(&self) -> bool {
        CancelError::is_permanent(self)
    }

    fn is_lock_wait_timeout(&self) -> bool {
        CancelError::is_lock_wait_timeout(self)
    }
}

impl BatchWriter for Writer {
    type Error = CancelError;
    const MAX_BATCH: usize = MAX_BATCH;

    fn write_batch(
        &self,
        orders: &[u64],
    ) -> impl Future<Output = Result<Vec<(u64, Outcome)>, CancelError>> + Send {
        self.cancel_batch(orders)
    }
}

/// Hears what happened to each order, besides the log and the counters: the `sweep` command
/// prints it. The worker's observer is `()`.
pub(crate) trait Observer: Send + Sync + 'static {
    /// `order` was written (or left alone) with `outcome`.
    fn written(&self, _order: u64, _outcome: &Outcome) {}
    /// `order` was refused by a permanent error and parked.
    fn refused(&self, _order: u64, _error: &dyn fmt::Display) {}
}

impl Observer for () {}

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub(crate) struct DispatchOptions {
    /// Batches written concurrently (and connections used).
    pub concurrency: usize,
    /// Most orders written in one transaction (capped by the writer's own maximum).
    pub batch_size: usize,
    /// How long a batch waits for more orders once it has one.
    pub batch_wait: Duration,
    /// After the stop (or the queue's end), how long queued and in-flight orders may still be
    /// written.
    pub stop_timeout: Duration,
    /// Whether a sweep recovers what a stop leaves (only changes what the last line advises).
    pub recovery_on: bool,
}

/// A failed attempt: the writer's error, or no answer in time.
enum AttemptError<E> {
    Writer(E),
    NoAnswer(Duration),
}

impl<E: WriteFailure> AttemptError<E> {
    fn is_lock_conflict(&self) -> bool {
        matches!(self, Self::Writer(e) if e.is_lock_conflict())
    }

    fn is_permanent(&self) -> bool {
        matches!(self, Self::Writer(e) if e.is_permanent())
    }

    fn is_lock_wait_timeout(&self) -> bool {
        matches!(self, Self::Writer(e) if e.is_lock_wait_timeout())
    }
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Writer(e) => e.fmt(f),
            Self::NoAnswer(after) => {
                write!(
                    f,
                    "no answer from the database within {} s",
                    after.as_secs()
                )
            }
        }
    }
}

/// What every write task shares: the writer, the counters, and what the stop and the permanent
/// errors leave behind.
struct Writing<W, O> {
    writer: Arc<W>,
    observer: Arc<O>,
    stats: Arc<Stats>,
    /// The time base of the queued orders, for how long each waited.
    clock: QueueClock,
    health: WriteHealth,
    /// Fired when the stop deadline passes: writes in flight and retries are abandoned.
    give_up: CancellationToken,
    /// Orders a permanent error refused: never written again by this process.
    parked: Mutex<HashSet<u64>>,
    /// Orders abandoned at the stop deadline, for the last log line.
    abandoned: Mutex<Vec<u64>>,
}

impl<W: BatchWriter, O: Observer> Writing<W, O> {
    fn is_parked(&self, order: u64) -> bool {
        lock(&self.parked).contains(&order)
    }

    /// Logs and counts an order that a permanent error refused, once.
    fn park(&self, order: u64, error: &AttemptError<W::Error>) {
        if lock(&self.parked).insert(order) {
            Stats::add(&self.stats.parked);
            self.observer.refused(order, error);
            tracing::error!(event = "order_parked", order_id = order, error = %error,
                "order cannot be cancelled: the database refuses the write with a permanent error; it stays unpaid and this worker does not retry it: fix the row and cancel the order by hand");
        }
    }

    fn abandon(&self, batch: &[DueOrder]) {
        lock(&self.abandoned).extend(batch.iter().map(|o| o.id));
    }

    /// One attempt at `batch`, bounded by [`WRITE_TIMEOUT`]; `None` when the stop deadline
    /// passed first (the write is dropped, and with it its transaction).
    async fn attempt(
        &self,
        batch: &[u64],
    ) -> Option<Result<Vec<(u64, Outcome)>, AttemptError<W::Error>>> {
        tokio::select! {
            biased;
            () = self.give_up.cancelled() => None,
            attempt = tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_batch(batch)) => {
                Some(match attempt {
                    Ok(result) => result.map_err(AttemptError::Writer),
                    Err(_) => Err(AttemptError::NoAnswer(WRITE_TIMEOUT)),
                })
            }
        }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands queued orders to at most `concurrency` writes until `shutdown` or the queue's end.
/// Then it writes what was already received until the stop deadline, abandons what is still in
/// flight (the server rolls those transactions back: nothing is half-written) and logs what was
/// left. Only this worker's share of the orders is written ([`Share`]): those another live
/// worker owns are set aside there, and are not left by this one's stop. Returns the orders
/// left unwritten, sorted.
pub(crate) async fn dispatch<W: BatchWriter, O: Observer>(
    mut orders: OrderQueue,
    writer: Arc<W>,
    observer: Arc<O>,
    share: Arc<Share>,
    options: &DispatchOptions,
    shutdown: &CancellationToken,
    stats: &Arc<Stats>,
) -> Vec<u64> {
    let writers = Writers {
        share,
        slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
        tracker: TaskTracker::new(),
        writing: Arc::new(Writing {
            writer,
            observer,
            stats: Arc::clone(stats),
            clock: orders.clock(),
            health: WriteHealth::default(),
            give_up: CancellationToken::new(),
            parked: Mutex::new(HashSet::new()),
            abandoned: Mutex::new(Vec::new()),
        }),
        batch_size: options.batch_size.clamp(1, W::MAX_BATCH),
    };
    let carried = writers
        .run_until_stop(&mut orders, options.batch_wait, shutdown)
        .await;
    // Stopping: no new events arrive (the sources have stopped); finish what was already
    // received, until the deadline.
    orders.close();
    let deadline = tokio::time::Instant::now() + options.stop_timeout;
    let mut left = writers.drain_until(&mut orders, carried, deadline).await;
    left.extend(writers.wait_or_abandon(deadline).await);
    left.extend(writers.share.take_released());
    left.sort_unstable();
    left.dedup();
    report_left(&left, stats, options.recovery_on);
    left
}

/// The concurrent batch writes: at most `slots` at a time, tracked so the stop can wait for
/// them or abandon them.
struct Writers<W, O> {
    /// Which orders are this worker's.
    share: Arc<Share>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    writing: Arc<Writing<W, O>>,
    batch_size: usize,
}

impl<W: BatchWriter, O: Observer> Writers<W, O> {
    /// Writes `batch` in a task of its own, holding a writer's `permit` until it is done. The
    /// task has its own heartbeat: a write stuck on a row lock stops the watchdog.
    fn spawn(&self, batch: Vec<DueOrder>, permit: OwnedSemaphorePermit) {
        let writing = Arc::clone(&self.writing);
        let heartbeat = writing.stats.health.task_heartbeat("writer");
        self.tracker.spawn(async move {
            write_batch(&writing, batch, &heartbeat).await;
            drop(permit);
        });
    }

    /// Normal operation: waits for an order, then for a free writer, then takes what else is
    /// queued (waiting at most `batch_wait` for more) into the same batch; until `shutdown` or
    /// the queue's end. Returns an order received as the stop came while it waited for a
    /// writer: every writer may be stuck on a row lock, so the stop phase writes it first if
    /// one frees up before the deadline. Its heartbeat beats while it waits: for orders (which
    /// may never come) and for a free writer (each write has its own heartbeat).
    async fn run_until_stop(
        &self,
        orders: &mut OrderQueue,
        batch_wait: Duration,
        shutdown: &CancellationToken,
    ) -> Option<DueOrder> {
        let heartbeat = self.writing.stats.health.heartbeat("dispatcher");
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return None,
                order = heartbeat.waiting(self.share.next(orders)) => order?,
            };
            let permit = tokio::select! {
                permit = heartbeat.waiting(Arc::clone(&self.slots).acquire_owned()) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Some(first),
                },
                () = shutdown.cancelled() => return Some(first),
            };
            let batch = self.batch_from(first, orders, batch_wait).await;
            self.spawn(batch, permit);
        }
    }

    /// A batch for `first` (from [`Share::next`]): what else is queued (waiting at most `wait`
    /// for more) sorted out, then filled up with orders given back. `first` itself is this
    /// worker's already, given back or kept as it came, and is not sorted out again: an order
    /// given back because its owner left it unwritten would be set aside for that owner once
    /// more, with its old queue time, and handed back and set aside forever.
    async fn batch_from(
        &self,
        first: DueOrder,
        orders: &mut OrderQueue,
        wait: Duration,
    ) -> Vec<DueOrder> {
        let mut batch = fill_batch(first, orders, self.batch_size, wait).await;
        let mut rest = batch.split_off(1);
        self.share.sort_out(&mut rest, &orders.clock());
        batch.append(&mut rest);
        self.share.fill_up(&mut batch, orders, self.batch_size);
        batch
    }

    /// The stop phase: writes the `carried` order and what is still queued while writers free
    /// up before `deadline`; returns what could not be handed to one.
    async fn drain_until(
        &self,
        orders: &mut OrderQueue,
        carried: Option<DueOrder>,
        deadline: tokio::time::Instant,
    ) -> Vec<u64> {
        let mut left = Vec::new();
        let mut next = carried;
        loop {
            let order = match next.take() {
                Some(order) => order,
                None => match tokio::time::timeout_at(deadline, self.share.next(orders)).await {
                    Ok(Some(order)) => order,
                    Ok(None) | Err(_) => break,
                },
            };
            match tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned()).await {
                Ok(Ok(permit)) => {
                    let batch = self.batch_from(order, orders, Duration::ZERO).await;
                    self.spawn(batch, permit);
                }
                Ok(Err(_)) | Err(_) => {
                    left.push(order.id);
                    break;
                }
            }
        }
        left.extend(orders.take_rest());
        left
    }

    /// Waits for the writes in flight until `deadline`; past it, abandons them (their
    /// connections are dropped, so the server rolls them back: nothing is half-written) and
    /// returns the orders they held.
    async fn wait_or_abandon(&self, deadline: tokio::time::Instant) -> Vec<u64> {
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            self.writing.give_up.cancel();
            let _ = tokio::time::timeout(ABANDON_GRACE, self.tracker.wait()).await;
        }
        lock(&self.writing.abandoned).drain(..).collect()
    }
}

/// Counts and logs the orders a stop left unwritten.
fn report_left(left: &[u64], stats: &Stats, recovery_on: bool) {
    if left.is_empty() {
        return;
    }
    Stats::add_n(&stats.abandoned, left.len() as u64);
    let shown: Vec<u64> = left.iter().copied().take(LEFT_SHOWN).collect();
    if recovery_on {
        tracing::warn!(event = "orders_left", count = left.len(), orders = ?shown, recovery = "on",
            "stopped before these expired orders were written (writes in flight rolled back); they are still unpaid and the next start's sweep cancels them");
    } else {
        tracing::warn!(event = "orders_left", count = left.len(), orders = ?shown, recovery = "off",
            "stopped before these expired orders were written (writes in flight rolled back); they are still unpaid and, with ORDER_EXPIRE_TTL not set, nothing cancels them later: cancel them by hand, or set ORDER_EXPIRE_TTL and run `order-expire sweep`");
    }
}

/// Adds to `first` what is already queued, waiting at most `wait` for more, up to `size`.
async fn fill_batch(
    first: DueOrder,
    orders: &mut OrderQueue,
    size: usize,
    wait: Duration,
) -> Vec<DueOrder> {
    let mut batch = vec![first];
    let until = tokio::time::Instant::now() + wait;
    while batch.len() < size {
        let next = match orders.try_recv() {
            Some(order) => Some(order),
            None if wait.is_zero() || orders.is_finished() => None,
            None => tokio::time::timeout_at(until, orders.recv())
                .await
                .ok()
                .flatten(),
        };
        match next {
            Some(order) => batch.push(order),
            None => break,
        }
    }
    batch
}

/// Whether writes are failing, shared by all writers so that an outage is logged once when it
/// starts and once when it ends, not once per order and retry.
#[derive(Default)]
struct WriteHealth {
    failing_since: Mutex<Option<Instant>>,
}

impl WriteHealth {
    /// A write failed: logged once per outage, and the worker not ready until a write works
    /// (`health`: readiness).
    fn failed(&self, health: &Health, order: u64, error: &dyn fmt::Display) {
        health.writes_failing(Some(error.to_string()));
        let mut since = lock(&self.failing_since);
        if since.is_none() {
            *since = Some(Instant::now());
            tracing::warn!(
                event = "writes_failing",
                order_id = order,
                %error,
                "{} writes are failing; every order is kept and retried with backoff",
                health.database()
            );
        } else {
            tracing::debug!(order_id = order, %error, "write failed again");
        }
    }

    /// A write committed `written` orders (cancelled or left alone, not skipped as held by
    /// another transaction); `true` when writes were failing until now. A commit that wrote
    /// nothing (every row held elsewhere) is no recovery.
    fn succeeded(&self, health: &Health, written: usize) -> bool {
        if written == 0 {
            return false;
        }
        health.writes_failing(None);
        let mut since = lock(&self.failing_since);
        let Some(start) = since.take() else {
            return false;
        };
        tracing::info!(
            event = "writes_recovered",
            failing_for_ms = start.elapsed().as_millis() as u64,
            orders_written = written,
            "{} writes succeed again",
            health.database()
        );
        true
    }
}

/// Writes one batch. A transient failure (connection, deadlock, lock wait, timeout) is retried
/// with capped backoff, and a batch that keeps failing is split into single orders. A permanent
/// failure (a value out of range, a constraint) splits the batch in halves at once, down to the
/// one order that fails, which is parked: so one bad order never holds up the others. When the
/// stop deadline passes the write in flight is dropped and the batch recorded as abandoned.
/// `heartbeat` beats before each attempt and while backing off, not during an attempt: one
/// longer than the watchdog allows is stuck.
async fn write_batch<W: BatchWriter, O: Observer>(
    writing: &Writing<W, O>,
    mut batch: Vec<DueOrder>,
    heartbeat: &Heartbeat,
) {
    batch.retain(|order| !writing.is_parked(order.id));
    if batch.is_empty() {
        return;
    }
    // In id order, so that each outcome finds its order (see `record`).
    batch.sort_unstable_by_key(|order| order.id);
    let mut ids: Vec<u64> = batch.iter().map(|order| order.id).collect();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(10));
    let mut busy_backoff = Backoff::new(BUSY_RETRY, BUSY_RETRY_MAX);
    loop {
        heartbeat.beat();
        // A transaction on a silently dead connection would wait forever; give it a bound. The
        // stop deadline drops it at once: dropping the connection rolls the transaction back.
        let Some(attempt) = writing.attempt(&ids).await else {
            writing.abandon(&batch);
            return;
        };
        match attempt {
            Ok(outcomes) => {
                let (busy, written): (Vec<_>, Vec<_>) = outcomes
                    .into_iter()
                    .partition(|(_, outcome)| *outcome == Outcome::Busy);
                if writing
                    .health
                    .succeeded(&writing.stats.health, written.len())
                {
                    Stats::add(&writing.stats.database_recoveries);
                }
                record(written, &batch, writing);
                if busy.is_empty() {
                    return;
                }
                // Rows another transaction holds, skipped: the rest is written; these are
                // tried again shortly, until that transaction ends.
                Stats::add_n(&writing.stats.busy, busy.len() as u64);
                tracing::debug!(
                    orders = busy.len(),
                    "orders held by another transaction; trying them again shortly"
                );
                batch.retain(|order| busy.binary_search_by_key(&order.id, |(id, _)| *id).is_ok());
                ids = batch.iter().map(|order| order.id).collect();
                tokio::select! {
                    () = heartbeat.idle(busy_backoff.next_delay()) => {}
                    () = writing.give_up.cancelled() => {
                        writing.abandon(&batch);
                        return;
                    }
                }
            }
            Err(e) if e.is_permanent() => {
                if let [order] = batch[..] {
                    writing.park(order.id, &e);
                    return;
                }
                tracing::debug!(orders = batch.len(), error = %e,
                    "permanent error in a batch; splitting it to find the order");
                let second = batch.split_off(batch.len() / 2);
                Box::pin(write_batch(writing, batch, heartbeat)).await;
                Box::pin(write_batch(writing, second, heartbeat)).await;
                return;
            }
            Err(e) if e.is_lock_conflict() => {
                // Another transaction held the rows; rolled back, so simply try again.
                Stats::add(&writing.stats.retries);
                if e.is_lock_wait_timeout() {
                    writing.health.failed(&writing.stats.health, ids[0], &e);
                }
                tracing::debug!(orders = batch.len(), error = %e, "lock conflict; retrying");
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
            }
            Err(e) => {
                Stats::add(&writing.stats.retries);
                writing.health.failed(&writing.stats.health, ids[0], &e);
                if batch.len() > 1 && backoff.attempts() + 1 >= SPLIT_AFTER {
                    tracing::debug!(
                        orders = batch.len(),
                        "batch keeps failing; writing its orders one by one"
                    );
                    for order in batch {
                        Box::pin(write_batch(writing, vec![order], heartbeat)).await;
                    }
                    return;
                }
                tokio::select! {
                    () = heartbeat.idle(backoff.next_delay()) => {}
                    () = writing.give_up.cancelled() => {
                        writing.abandon(&batch);
                        return;
                    }
                }
            }
        }
    }
}

/// Logs and counts the outcome of one committed batch (`batch`: its orders, in id order): one
/// line for the orders cancelled (a line per order would cost more than the write itself during
/// a burst), one per order left alone or needing attention. The histograms get the batch's
/// size, each event's time to this commit, and each cancellation's lateness after its deadline.
fn record<W, O: Observer>(
    outcomes: Vec<(u64, Outcome)>,
    batch: &[DueOrder],
    writing: &Writing<W, O>,
) {
    let (stats, observer, clock) = (&writing.stats, writing.observer.as_ref(), writing.clock);
    let committed = tokio::time::Instant::now();
    stats.batch_size.observe(outcomes.len() as f64);
    let mut cancelled = Vec::new();
    let mut units_returned = 0u64;
    for (order, outcome) in outcomes {
        observer.written(order, &outcome);
        let due = batch
            .binary_search_by_key(&order, |o| o.id)
            .ok()
            .map(|at| batch[at]);
        if let Some(due) = due.filter(|d| d.origin() == Origin::Event) {
            let waited = clock.waited(&due, committed);
            stats.event_to_commit.observe(waited.as_secs_f64());
        }
        match outcome {
            Outcome::Cancelled {
                units,
                missing_products,
            } => {
                Stats::add(&stats.cancelled);
                if let Some(due) = due {
                    let waited = clock.waited(&due, committed);
                    stats
                        .lateness
                        .observe((waited + due.overdue()).as_secs_f64());
                }
                cancelled.push(order);
                units_returned += units;
                if !missing_products.is_empty() {
                    tracing::warn!(
                        event = "stock_not_returned",
                        order_id = order,
                        stock_returned = units,
                        ?missing_products,
                        "cancelled unpaid order; some of its products no longer exist, so their stock was not returned"
                    );
                }
            }
            Outcome::AlreadyCancelled => {
                Stats::add(&stats.skipped_already_cancelled);
                tracing::debug!(
                    event = "order_skipped",
                    order_id = order,
                    outcome = "already_cancelled",
                    "order already cancelled (by another worker or an earlier event); nothing written"
                );
            }
            Outcome::NotUnpaid { status } => {
                Stats::add(&stats.skipped_paid);
                tracing::info!(
                    event = "order_skipped",
                    order_id = order,
                    outcome = "not_unpaid",
                    status,
                    "order is not unpaid (paid?); left alone"
                );
            }
            Outcome::Paid => {
                Stats::add(&stats.skipped_paid);
                tracing::info!(
                    event = "order_skipped",
                    order_id = order,
                    outcome = "paid",
                    "order is paid (its paid column is set); left alone"
                );
            }
            // Split off by the caller, which tries them again.
            Outcome::Busy => {}
            Outcome::Missing => {
                Stats::add(&stats.skipped_missing);
                tracing::info!(
                    event = "order_skipped",
                    order_id = order,
                    outcome = "missing",
                    "no such order; nothing written"
                );
            }
        }
    }
    Stats::add_n(&stats.units_returned, units_returned);
    if !cancelled.is_empty() {
        let order_ids: Vec<String> = cancelled.iter().map(u64::to_string).collect();
        tracing::info!(
            event = "orders_cancelled",
            outcome = "cancelled",
            count = cancelled.len(),
            order_ids = %order_ids.join(","),
            stock_returned = units_returned,
            "cancelled unpaid orders and returned their stock"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Origin, QueueSender, order_queue};

    /// What the fake writer does with one batch.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Reply {
        Commit,
        Transient,
        Permanent,
        Hang,
    }

    #[derive(Debug)]
    struct FakeError(Reply);

    impl fmt::Display for FakeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fake {:?}", self.0)
        }
    }

    impl WriteFailure for FakeError {
        fn is_lock_conflict(&self) -> bool {
            false
        }

        fn is_permanent(&self) -> bool {
            self.0 == Reply::Permanent
        }
    }

    /// Decides the reply to a batch, given the batch and the attempt's number (from 1).
    type Script = Box<dyn Fn(&[u64], usize) -> Reply + Send + Sync>;

    /// An in-memory writer: records every batch it is given (and when), answers with `reply`.
    struct FakeWriter {
        reply: Script,
        calls: Mutex<Vec<(tokio::time::Instant, Vec<u64>)>>,
    }

    impl FakeWriter {
        fn new(reply: impl Fn(&[u64], usize) -> Reply + Send + Sync + 'static) -> Arc<Self> {
            Arc::new(Self {
                reply: Box::new(reply),
                calls: Mutex::new(Vec::new()),
            })
        }

        fn batches(&self) -> Vec<Vec<u64>> {
            lock(&self.calls).iter().map(|(_, b)| b.clone()).collect()
        }

        fn times(&self) -> Vec<tokio::time::Instant> {
            lock(&self.calls).iter().map(|(at, _)| *at).collect()
        }
    }

    impl BatchWriter for FakeWriter {
        type Error = FakeError;
        const MAX_BATCH: usize = 8;

        async fn write_batch(&self, orders: &[u64]) -> Result<Vec<(u64, Outcome)>, FakeError> {
            let attempt = {
                let mut calls = lock(&self.calls);
                calls.push((tokio::time::Instant::now(), orders.to_vec()));
                calls.len()
            };
            match (self.reply)(orders, attempt) {
                Reply::Commit => Ok(orders
                    .iter()
                    .map(|&id| {
                        let cancelled = Outcome::Cancelled {
                            units: 1,
                            missing_products: Vec::new(),
                        };
                        (id, cancelled)
                    })
                    .collect()),
                Reply::Hang => std::future::pending().await,
                failure => Err(FakeError(failure)),
            }
        }
    }

    fn options(batch_size: usize) -> DispatchOptions {
        DispatchOptions {
            concurrency: 1,
            batch_size,
            batch_wait: Duration::ZERO,
            stop_timeout: Duration::from_secs(2),
            recovery_on: true,
        }
    }

    async fn queued(ids: &[u64], stats: &Arc<Stats>) -> (QueueSender, OrderQueue) {
        let (tx, rx) = order_queue(1024, Arc::clone(stats));
        for &id in ids {
            tx.send(id, Origin::Sweep).await.expect("room");
        }
        (tx, rx)
    }

    /// Runs the dispatcher over `ids` until the queue ends; returns what it left.
    async fn run(
        writer: &Arc<FakeWriter>,
        ids: &[u64],
        batch_size: usize,
    ) -> (Vec<u64>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let (tx, rx) = queued(ids, &stats).await;
        drop(tx);
        let never = CancellationToken::new();
        let left = dispatch(
            rx,
            Arc::clone(writer),
            Arc::new(()),
            Share::alone(Arc::clone(&stats)),
            &options(batch_size),
            &never,
            &stats,
        )
        .await;
        (left, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_fill_up_to_the_batch_size() {
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let (left, stats) = run(&writer, &[1, 2, 3, 4, 5], 2).await;
        assert_eq!(writer.batches(), [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(Stats::get(&stats.cancelled), 5);
        assert!(left.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn commits_feed_the_histograms_with_each_orders_deadline() {
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let stats = Arc::new(Stats::default());
        let (tx, rx) = order_queue(16, Arc::clone(&stats));
        tx.send(1, Origin::Event).await.expect("room");
        tx.send_overdue(2, Origin::Sweep, Duration::from_secs(90))
            .await
            .expect("room");
        tokio::time::advance(Duration::from_millis(300)).await;
        drop(tx);
        let never = CancellationToken::new();
        let share = Share::alone(Arc::clone(&stats));
        dispatch(rx, writer, Arc::new(()), share, &options(8), &never, &stats).await;
        assert_eq!((stats.batch_size.count(), stats.batch_size.sum()), (1, 2.0));
        assert_eq!(stats.event_to_commit.count(), 1, "the event only");
        assert!((stats.event_to_commit.sum() - 0.3).abs() < 0.01);
        assert_eq!(stats.lateness.count(), 2);
        assert!(
            (stats.lateness.sum() - 90.6).abs() < 0.01,
            "{}",
            stats.lateness.sum()
        );
        assert_eq!(Stats::get(&stats.units_returned), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_batch_size_is_capped_by_the_writer() {
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let ids: Vec<u64> = (1..=10).collect();
        run(&writer, &ids, 512).await;
        let sizes: Vec<usize> = writer.batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, [FakeWriter::MAX_BATCH, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_reported_twice_within_the_window_is_written_once() {
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let (_, stats) = run(&writer, &[7, 7, 8, 7], 8).await;
        assert_eq!(writer.batches(), [vec![7, 8]]);
        assert_eq!(Stats::get(&stats.cancelled), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff() {
        let writer = FakeWriter::new(|_, attempt| {
            if attempt <= 2 {
                Reply::Transient
            } else {
                Reply::Commit
            }
        });
        let (left, stats) = run(&writer, &[3], 8).await;
        assert_eq!(writer.batches(), [vec![3], vec![3], vec![3]]);
        assert_eq!(Stats::get(&stats.retries), 2);
        assert_eq!(Stats::get(&stats.cancelled), 1);
        assert!(left.is_empty());
        let times = writer.times();
        assert!(
            times[1] - times[0] >= Duration::from_millis(25),
            "backs off"
        );
        assert!(times[2] - times[1] >= Duration::from_millis(50), "longer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_keeps_failing_is_written_one_by_one() {
        let writer = FakeWriter::new(|batch, _| {
            if batch.len() > 1 {
                Reply::Transient
            } else {
                Reply::Commit
            }
        });
        let (_, stats) = run(&writer, &[1, 2, 3], 8).await;
        let batches = writer.batches();
        assert_eq!(
            batches[..SPLIT_AFTER as usize],
            vec![vec![1, 2, 3]; SPLIT_AFTER as usize]
        );
        assert_eq!(batches[SPLIT_AFTER as usize..], [vec![1], vec![2], vec![3]]);
        assert_eq!(Stats::get(&stats.cancelled), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_refused_for_good_is_parked_and_the_others_written() {
        let writer = FakeWriter::new(|batch, _| {
            if batch.contains(&3) {
                Reply::Permanent
            } else {
                Reply::Commit
            }
        });
        let (left, stats) = run(&writer, &[1, 2, 3, 4], 8).await;
        assert_eq!(Stats::get(&stats.cancelled), 3);
        assert_eq!(Stats::get(&stats.parked), 1);
        assert_eq!(
            Stats::get(&stats.retries),
            0,
            "a permanent error is not retried"
        );
        assert!(left.is_empty(), "a parked order is not left by the stop");
        let tries_of_3 = writer.batches().iter().filter(|b| b.contains(&3)).count();
        assert_eq!(tries_of_3, 3, "[1,2,3,4], [3,4], [3]");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_drains_what_was_queued() {
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let stats = Arc::new(Stats::default());
        let (_tx, rx) = queued(&[1, 2, 3], &stats).await;
        let stop = CancellationToken::new();
        stop.cancel();
        let left = dispatch(
            rx,
            Arc::clone(&writer),
            Arc::new(()),
            Share::alone(Arc::clone(&stats)),
            &options(1),
            &stop,
            &stats,
        )
        .await;
        assert!(left.is_empty());
        assert_eq!(Stats::get(&stats.cancelled), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_given_back_is_written_not_set_aside_again() {
        // Slot 9 is held by a member that never writes (a session squatting its named lock):
        // order 1025 is in its block. The net gives it back; it must be written here then,
        // even though its owner still looks alive.
        let writer = FakeWriter::new(|_, _| Reply::Commit);
        let stats = Arc::new(Stats::default());
        let share = Share::among(Arc::clone(&stats), 3, &[3, 9]);
        let (tx, rx) = queued(&[1025], &stats).await;
        let stop = CancellationToken::new();
        let dispatching = tokio::spawn({
            let (writer, stop, stats, share) = (
                Arc::clone(&writer),
                stop.clone(),
                Arc::clone(&stats),
                Arc::clone(&share),
            );
            async move { dispatch(rx, writer, Arc::new(()), share, &options(8), &stop, &stats).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stats.set_aside.get(), 1, "set aside for slot 9");
        assert!(writer.batches().is_empty());
        share.give_back_all();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(writer.batches(), [vec![1025]], "written once given back");
        assert_eq!(stats.set_aside.get(), 0, "not set aside again");
        assert_eq!(Stats::get(&stats.cancelled), 1);
        drop(tx);
        stop.cancel();
        let left = dispatching.await.expect("dispatcher returns");
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_hangs_is_abandoned_at_the_stop_deadline() {
        let writer = FakeWriter::new(|batch, _| {
            if batch.contains(&9) {
                Reply::Hang
            } else {
                Reply::Commit
            }
        });
        let stats = Arc::new(Stats::default());
        let (tx, rx) = queued(&[9], &stats).await;
        let stop = CancellationToken::new();
        let dispatching = tokio::spawn({
            let (writer, stop, stats) = (Arc::clone(&writer), stop.clone(), Arc::clone(&stats));
            async move {
                let share = Share::alone(Arc::clone(&stats));
                dispatch(rx, writer, Arc::new(()), share, &options(1), &stop, &stats).await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The only writer hangs on 9: what arrives now waits, and is left at the deadline.
        tx.send(10, Origin::Event).await.expect("room");
        let stopped_at = tokio::time::Instant::now();
        stop.cancel();
        let left = dispatching.await.expect("dispatcher returns");
        let took = tokio::time::Instant::now() - stopped_at;
        assert_eq!(left, [9, 10]);
        assert_eq!(Stats::get(&stats.abandoned), 2);
        assert!(
            took >= options(1).stop_timeout,
            "waited for the deadline: {took:?}"
        );
        assert!(
            took <= options(1).stop_timeout + ABANDON_GRACE,
            "no longer: {took:?}"
        );
    }
}
