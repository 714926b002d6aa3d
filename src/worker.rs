//! The pipeline: keyspace events -> order ids -> the MySQL writer.
//!
//! ```text
//!   Redis `expired` ──► KeyspaceSource ─┐
//!   deadlines (PTTL) ──► DeadlineWatcher ─┼─► bounded queue ──► dispatcher ──► up to N writers
//!   MySQL + EXISTS ───► Reconciler ─────┘    (order ids)      (dedup,         (one tx per order,
//!                                                              semaphore)      retried w/ backoff)
//! ```
//!
//! The reader never waits for the database: it only parses and enqueues. Writers retry an order
//! that fails for a transient reason with capped backoff until it succeeds, so a MySQL outage
//! delays cancellations but loses none that reached the queue; an order that fails with a
//! permanent error (a value out of range, a constraint) is parked, so it cannot block the
//! others. A reconciliation sweep (at start, after every resubscribe and periodically) feeds the
//! same queue with orders whose event was missed. On a stop signal the sources stop, the queue is
//! drained and writes in flight finish until the stop deadline; what is still in flight then is
//! abandoned (MySQL rolls it back) and listed in the log.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::cmd::check::Contract;
use crate::config::Settings;
use crate::config::repository::Source;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::sink::cancel::{CancelError, MAX_BATCH};
use crate::sink::{Database, Outcome, Writer};
use crate::source::deadline::DeadlineWatcher;
use crate::source::keyspace::KeyspaceSource;
use crate::source::redis::RedisTarget;
use crate::source::sweep::Reconciler;
use crate::stats::Stats;

/// The longest one batch transaction may take before it is abandoned (rolled back by the
/// server when the connection drops) and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the stop deadline, how long abandoned writes get to return and the pool to close: the
/// stop is `--stop-timeout` plus at most about this, twice.
const ABANDON_GRACE: Duration = Duration::from_millis(400);
/// Most order ids listed in the line that says what a stop left.
const LEFT_SHOWN: usize = 50;

/// Tuning knobs of the worker, from the command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Orders written concurrently (and MySQL connections used).
    pub concurrency: usize,
    /// Order ids that may wait for a writer.
    pub queue_size: usize,
    /// Turn on keyspace notifications if Redis has them off.
    pub configure_redis: bool,
    /// After a stop signal, how long queued and in-flight orders may still be written.
    pub stop_timeout: Duration,
    /// Most orders written in one transaction.
    pub batch_size: usize,
    /// How long a writer waits for more orders to fill a batch once it has one.
    pub batch_wait: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            queue_size: 1_000_000,
            configure_redis: false,
            stop_timeout: Duration::from_secs(8),
            batch_size: 512,
            batch_wait: Duration::ZERO,
        }
    }
}

/// Runs the worker until `shutdown` is cancelled. Start-up problems (unreachable servers, wrong
/// credentials, missing tables, notifications off) are returned as errors; after start-up,
/// failures are retried and never end the worker.
pub async fn run(
    settings: &Settings,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> Result<Arc<Stats>, Error> {
    let stats = Arc::new(Stats::default());

    let redis = RedisTarget::new(&settings.redis)?;
    let mut conn = redis.connect().await?;
    redis
        .ensure_notifications(&mut conn, options.configure_redis)
        .await?;
    drop(conn);

    let db = Database::connect(&settings.mysql, options.concurrency).await?;
    let writer = Arc::new(Writer::new(db, &settings.schema, settings.timezone.clone()).await?);
    tracing::info!(mysql = %writer.database().endpoint(), database = %settings.mysql.database,
        orders = %settings.schema.orders, products = %settings.schema.products,
        timezone = %settings.timezone.name, "writing to MySQL");
    match &settings.source {
        Source::ConfigCache(cache) => {
            tracing::info!(file = %cache.display(), "read the app's configuration cache (Laravel ignores .env while it exists)");
        }
        Source::Config => tracing::info!(
            "read the app's config/app.php, config/cache.php and config/database.php with its .env"
        ),
        Source::Env => tracing::info!(
            "no config/ folder beside the .env: using the stock config files of the app's Laravel version"
        ),
    }

    // Reconnects of the subscription trigger a sweep: whatever expired meanwhile was missed.
    let resubscribed = Arc::new(Notify::new());
    let reconciler = Reconciler::new(settings, writer.database().clone(), redis.clone());
    let source = KeyspaceSource::new(
        redis.clone(),
        KeyPattern::new(&settings.keys),
        Arc::clone(&stats),
    )
    .on_resubscribe(Arc::clone(&resubscribed));
    // Subscribe before the first sweep, so that nothing expires unseen between the two.
    let subscription = source.subscribe().await?;
    let (queue, orders) = mpsc::channel(options.queue_size.max(1));
    let watcher = DeadlineWatcher::new(settings, writer.database().clone(), redis.clone());
    let mut tasks = vec![
        tokio::spawn(source.run(subscription, queue.clone(), shutdown.clone())),
        tokio::spawn(watcher.run(queue.clone(), shutdown.clone())),
    ];
    match reconciler {
        Some(reconciler) => tasks.push(tokio::spawn(sweep_loop(
            reconciler,
            queue,
            resubscribed,
            settings.recovery.sweep_interval,
            shutdown.clone(),
        ))),
        None => tracing::warn!(
            "ORDER_EXPIRE_TTL is not set, so orders whose expired event is missed (worker down, \
             Redis restarted, cache:clear) are not recovered: set it to the TTL the app passes to put()"
        ),
    }
    let contract = Contract::new(settings);
    tracing::info!(mode = contract.mode, guard = %contract.guard, "{}", contract.promise());

    let recovery_on = settings.recovery.order_ttl.is_some();
    dispatch(orders, &writer, options, &shutdown, &stats, recovery_on).await;

    // The sources stop on the same signal; none may hold the exit past the deadline.
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout(ABANDON_GRACE, task).await {
            Ok(Err(e)) if !e.is_cancelled() => {
                tracing::error!(error = %e, "a source task failed");
            }
            Ok(_) => {}
            Err(_) => abort.abort(),
        }
    }
    // Closing waits for connections to come back; an abandoned one may be stuck on a lock.
    if let Ok(writer) = Arc::try_unwrap(writer)
        && tokio::time::timeout(ABANDON_GRACE, writer.into_database().close())
            .await
            .is_err()
    {
        tracing::debug!("MySQL connections still busy at exit; the server rolls them back");
    }
    tracing::info!(
        events = Stats::get(&stats.events),
        cancelled = Stats::get(&stats.cancelled),
        skipped = Stats::get(&stats.skipped),
        unrelated = Stats::get(&stats.unrelated),
        malformed = Stats::get(&stats.malformed),
        retries = Stats::get(&stats.retries),
        dropped = Stats::get(&stats.dropped),
        parked = Stats::get(&stats.parked),
        abandoned = Stats::get(&stats.abandoned),
        "stopped"
    );
    Ok(stats)
}

/// Runs a reconciliation sweep now, after every resubscribe, and every `interval`.
async fn sweep_loop(
    reconciler: Reconciler,
    queue: mpsc::Sender<u64>,
    resubscribed: Arc<Notify>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let started = Instant::now();
        tokio::select! {
            result = reconciler.sweep(&queue) => match result {
                Ok(summary) => {
                    if failing {
                        tracing::info!("sweeps work again");
                        failing = false;
                    }
                    if summary.overdue > 0 {
                        tracing::info!(overdue = summary.overdue, examined = summary.examined,
                            took_ms = started.elapsed().as_millis() as u64,
                            "sweep found overdue unpaid orders whose expired event was missed; cancelling them");
                    } else {
                        tracing::debug!(examined = summary.examined, still_keyed = summary.still_keyed,
                            took_ms = started.elapsed().as_millis() as u64, "sweep: nothing missed");
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "sweep failed; trying again at the next interval");
                        failing = true;
                    }
                }
            },
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = resubscribed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Order ids dispatched in the last few seconds. Several sources may report the same order (the
/// event and a sweep, or two events): the database makes that harmless, this makes it cheap.
struct RecentlyDispatched {
    seen: HashMap<u64, Instant>,
    prune_at: usize,
}

impl RecentlyDispatched {
    const KEEP: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self {
            seen: HashMap::new(),
            prune_at: 1024,
        }
    }

    /// True the first time `order` is offered within [`Self::KEEP`].
    fn first(&mut self, order: u64) -> bool {
        let now = Instant::now();
        if self.seen.len() >= self.prune_at {
            self.seen
                .retain(|_, at| now.duration_since(*at) < Self::KEEP);
            self.prune_at = (self.seen.len() * 2).max(1024);
        }
        match self.seen.insert(order, now) {
            Some(at) => now.duration_since(at) >= Self::KEEP,
            None => true,
        }
    }
}

/// What every writer task shares: the writer, the counters, and what the stop and the permanent
/// errors leave behind.
struct Writing {
    writer: Arc<Writer>,
    stats: Arc<Stats>,
    health: WriteHealth,
    /// Fired when the stop deadline passes: writes in flight and retries are abandoned.
    give_up: CancellationToken,
    /// Orders a permanent error refused: never written again by this process.
    parked: Mutex<HashSet<u64>>,
    /// Orders abandoned at the stop deadline, for the last log line.
    abandoned: Mutex<Vec<u64>>,
}

impl Writing {
    fn is_parked(&self, order: u64) -> bool {
        lock(&self.parked).contains(&order)
    }

    /// Logs and counts an order that a permanent error refused, once.
    fn park(&self, order: u64, error: &CancelError) {
        if lock(&self.parked).insert(order) {
            Stats::add(&self.stats.parked);
            tracing::error!(order_id = order, error = %error,
                "order cannot be cancelled: MySQL refuses the write with a permanent error; it stays unpaid and this worker does not retry it: fix the row and cancel the order by hand");
        }
    }

    fn abandon(&self, batch: &[u64]) {
        lock(&self.abandoned).extend_from_slice(batch);
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands queued order ids to at most `concurrency` writers. On shutdown it writes what was
/// already received until the stop deadline, then abandons what is still in flight (the server
/// rolls those transactions back: nothing is half-written) and logs what was left.
async fn dispatch(
    mut orders: mpsc::Receiver<u64>,
    writer: &Arc<Writer>,
    options: &WorkerOptions,
    shutdown: &CancellationToken,
    stats: &Arc<Stats>,
    recovery_on: bool,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let writing = Arc::new(Writing {
        writer: Arc::clone(writer),
        stats: Arc::clone(stats),
        health: WriteHealth::default(),
        give_up: CancellationToken::new(),
        parked: Mutex::new(HashSet::new()),
        abandoned: Mutex::new(Vec::new()),
    });
    let spawn = |batch: Vec<u64>, permit| {
        let writing = Arc::clone(&writing);
        tracker.spawn(async move {
            write_batch(&writing, batch).await;
            drop(permit);
        });
    };
    let batch_size = options.batch_size.clamp(1, MAX_BATCH);
    let mut recent = RecentlyDispatched::new();

    // Normal operation: wait for an order, then for a free writer, then take what else is
    // queued (waiting at most `batch_wait` for more) into the same batch.
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            order = orders.recv() => match order {
                Some(order) => order,
                None => break,
            },
        };
        if !recent.first(first) {
            continue;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            // Every writer may be stuck (a row lock): the stop must not wait for one.
            () = shutdown.cancelled() => {
                writing.abandon(&[first]);
                break;
            }
        };
        let batch = fill_batch(
            first,
            &mut orders,
            &mut recent,
            batch_size,
            options.batch_wait,
        )
        .await;
        spawn(batch, permit);
    }

    // Stopping: no new events arrive (the sources have stopped); finish what was already
    // received, until the deadline.
    orders.close();
    let deadline = tokio::time::Instant::now() + options.stop_timeout;
    let mut left = Vec::new();
    loop {
        let order = match tokio::time::timeout_at(deadline, orders.recv()).await {
            Ok(Some(order)) => order,
            Ok(None) | Err(_) => break,
        };
        if !recent.first(order) {
            continue;
        }
        match tokio::time::timeout_at(deadline, Arc::clone(&slots).acquire_owned()).await {
            Ok(Ok(permit)) => {
                let batch =
                    fill_batch(order, &mut orders, &mut recent, batch_size, Duration::ZERO).await;
                spawn(batch, permit);
            }
            Ok(Err(_)) | Err(_) => {
                left.push(order);
                break;
            }
        }
    }
    while let Ok(order) = orders.try_recv() {
        left.push(order);
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        // The deadline: writes in flight are dropped (their connection with them, so the
        // server rolls them back) and retries stop; each task returns at once.
        writing.give_up.cancel();
        let _ = tokio::time::timeout(ABANDON_GRACE, tracker.wait()).await;
    }
    left.extend(lock(&writing.abandoned).drain(..));
    left.sort_unstable();
    left.dedup();
    if !left.is_empty() {
        Stats::add_n(&stats.abandoned, left.len() as u64);
        let shown: Vec<u64> = left.iter().copied().take(LEFT_SHOWN).collect();
        if recovery_on {
            tracing::warn!(count = left.len(), orders = ?shown, recovery = "on",
                "stopped before these expired orders were written (writes in flight rolled back); they are still unpaid and the next start's sweep cancels them");
        } else {
            tracing::warn!(count = left.len(), orders = ?shown, recovery = "off",
                "stopped before these expired orders were written (writes in flight rolled back); they are still unpaid and, with ORDER_EXPIRE_TTL not set, nothing cancels them later: cancel them by hand, or set ORDER_EXPIRE_TTL and run `order-expire sweep`");
        }
    }
}

/// Adds to `first` what is already queued, waiting at most `wait` for more, up to `size`.
async fn fill_batch(
    first: u64,
    orders: &mut mpsc::Receiver<u64>,
    recent: &mut RecentlyDispatched,
    size: usize,
    wait: Duration,
) -> Vec<u64> {
    let mut batch = vec![first];
    let until = tokio::time::Instant::now() + wait;
    while batch.len() < size {
        let next = match orders.try_recv() {
            Ok(order) => Some(order),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) if wait.is_zero() => None,
            Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(until, orders.recv())
                .await
                .ok()
                .flatten(),
        };
        match next {
            Some(order) if recent.first(order) => batch.push(order),
            Some(_) => {}
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
    fn failed(&self, order: u64, error: &dyn std::fmt::Display) {
        let mut since = lock(&self.failing_since);
        if since.is_none() {
            *since = Some(Instant::now());
            tracing::warn!(order, %error, "MySQL writes are failing; every order is kept and retried with backoff");
        } else {
            tracing::debug!(order, %error, "write failed again");
        }
    }

    fn succeeded(&self) {
        let mut since = lock(&self.failing_since);
        if let Some(start) = since.take() {
            tracing::info!(
                failing_for_ms = start.elapsed().as_millis() as u64,
                "MySQL writes succeed again"
            );
        }
    }
}

/// Writes one batch. A transient failure (connection, deadlock, lock wait, timeout) is retried
/// with capped backoff, and a batch that keeps failing is split into single orders. A permanent
/// failure (a value out of range, a constraint) splits the batch in halves at once, down to the
/// one order that fails, which is parked: so one bad order never holds up the others. When the
/// stop deadline passes the write in flight is dropped and the batch recorded as abandoned.
async fn write_batch(writing: &Writing, mut batch: Vec<u64>) {
    const SPLIT_AFTER: u32 = 3;
    batch.retain(|order| !writing.is_parked(*order));
    if batch.is_empty() {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(10));
    loop {
        // A transaction on a silently dead connection would wait forever; give it a bound. The
        // stop deadline drops it at once: dropping the connection rolls the transaction back.
        let attempt = tokio::select! {
            biased;
            () = writing.give_up.cancelled() => {
                writing.abandon(&batch);
                return;
            }
            attempt = tokio::time::timeout(WRITE_TIMEOUT, writing.writer.cancel_batch(&batch)) => {
                attempt.unwrap_or_else(|_| {
                    Err(CancelError::Unexpected(format!(
                        "no answer from MySQL within {} s",
                        WRITE_TIMEOUT.as_secs()
                    )))
                })
            }
        };
        match attempt {
            Ok(outcomes) => {
                writing.health.succeeded();
                record(outcomes, &writing.stats);
                return;
            }
            Err(e) if e.is_permanent() => {
                if let [order] = batch[..] {
                    writing.park(order, &e);
                    return;
                }
                tracing::debug!(orders = batch.len(), error = %e,
                    "permanent error in a batch; splitting it to find the order");
                let second = batch.split_off(batch.len() / 2);
                Box::pin(write_batch(writing, batch)).await;
                Box::pin(write_batch(writing, second)).await;
                return;
            }
            Err(e) if e.is_lock_conflict() => {
                // Another transaction held the rows; rolled back, so simply try again.
                Stats::add(&writing.stats.retries);
                tracing::debug!(orders = batch.len(), error = %e, "lock conflict; retrying");
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
            }
            Err(e) => {
                Stats::add(&writing.stats.retries);
                writing.health.failed(batch[0], &e);
                if batch.len() > 1 && backoff.attempts() + 1 >= SPLIT_AFTER {
                    tracing::debug!(
                        orders = batch.len(),
                        "batch keeps failing; writing its orders one by one"
                    );
                    for order in batch {
                        Box::pin(write_batch(writing, vec![order])).await;
                    }
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = writing.give_up.cancelled() => {
                        writing.abandon(&batch);
                        return;
                    }
                }
            }
        }
    }
}

/// Logs and counts the outcome of one committed batch: one line for the orders cancelled (a
/// line per order would cost more than the write itself during a burst), one per order left
/// alone or needing attention.
fn record(outcomes: Vec<(u64, Outcome)>, stats: &Stats) {
    let mut cancelled = Vec::new();
    let mut units_returned = 0u64;
    for (order, outcome) in outcomes {
        match outcome {
            Outcome::Cancelled {
                units,
                missing_products,
            } => {
                Stats::add(&stats.cancelled);
                cancelled.push(order);
                units_returned += units;
                if !missing_products.is_empty() {
                    tracing::warn!(
                        order,
                        stock_returned = units,
                        ?missing_products,
                        "cancelled unpaid order; some of its products no longer exist, so their stock was not returned"
                    );
                }
            }
            Outcome::AlreadyCancelled => {
                Stats::add(&stats.skipped);
                tracing::debug!(
                    order,
                    "order already cancelled (by another worker or an earlier event); nothing written"
                );
            }
            Outcome::NotUnpaid { status } => {
                Stats::add(&stats.skipped);
                tracing::info!(order, status, "order is not unpaid (paid?); left alone");
            }
            Outcome::Paid => {
                Stats::add(&stats.skipped);
                tracing::info!(
                    order,
                    outcome = "paid",
                    "order is paid (its paid column is set); left alone"
                );
            }
            Outcome::Missing => {
                Stats::add(&stats.skipped);
                tracing::info!(order, "no such order; nothing written");
            }
        }
    }
    if !cancelled.is_empty() {
        tracing::info!(
            count = cancelled.len(),
            orders = ?cancelled,
            stock_returned = units_returned,
            "cancelled unpaid orders and returned their stock"
        );
    }
}
