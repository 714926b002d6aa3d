//! The pipeline: keyspace events -> order ids -> the MySQL writer.
//!
//! ```text
//!   Redis `expired` ──► KeyspaceSource ──► bounded queue ──► dispatcher ──► up to N writers
//!                       (parses keys)       (order ids)      (semaphore)     (one tx per order,
//!                                                                              retried w/ backoff)
//! ```
//!
//! The reader never waits for the database: it only parses and enqueues. Writers retry a failed
//! order with capped backoff until it succeeds, so a MySQL outage delays cancellations but loses
//! none that reached the queue. On SIGTERM the source stops, the queue is drained and writes in
//! flight finish, all within the stop deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::sink::{Database, Outcome, Writer};
use crate::source::keyspace::KeyspaceSource;
use crate::source::redis::RedisTarget;
use crate::stats::Stats;

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
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            queue_size: 1_000_000,
            configure_redis: false,
            stop_timeout: Duration::from_secs(8),
        }
    }
}

/// Runs the worker until `shutdown` is cancelled. Start-up problems (unreachable servers, wrong
/// credentials, missing tables, notifications off) are returned as errors; after start-up,
/// failures are retried and never end the worker.
pub async fn run(settings: &Settings, options: &WorkerOptions, shutdown: CancellationToken) -> Result<Arc<Stats>, Error> {
    let stats = Arc::new(Stats::default());

    let redis = RedisTarget::new(&settings.redis)?;
    let mut conn = redis.connect().await?;
    redis.ensure_notifications(&mut conn, options.configure_redis).await?;
    drop(conn);

    let db = Database::connect(&settings.mysql, options.concurrency).await?;
    let writer = Arc::new(Writer::new(db, &settings.schema, settings.timezone.clone()).await?);
    tracing::info!(mysql = %writer.database().endpoint(), database = %settings.mysql.database,
        orders = %settings.schema.orders, products = %settings.schema.products,
        timezone = %settings.timezone.name, "writing to MySQL");

    let source = KeyspaceSource::new(redis, KeyPattern::new(&settings.keys), Arc::clone(&stats));
    let subscription = source.subscribe().await?;
    let (queue, orders) = mpsc::channel(options.queue_size.max(1));
    let source_task = tokio::spawn(source.run(subscription, queue, shutdown.clone()));

    dispatch(orders, &writer, options, &shutdown, &stats).await;

    if let Err(e) = source_task.await {
        tracing::error!(error = %e, "the event source task failed");
    }
    if let Ok(writer) = Arc::try_unwrap(writer) {
        writer.into_database().close().await;
    }
    tracing::info!(
        events = Stats::get(&stats.events),
        cancelled = Stats::get(&stats.cancelled),
        skipped = Stats::get(&stats.skipped),
        unrelated = Stats::get(&stats.unrelated),
        malformed = Stats::get(&stats.malformed),
        retries = Stats::get(&stats.retries),
        dropped = Stats::get(&stats.dropped),
        "stopped"
    );
    Ok(stats)
}

/// Hands queued order ids to at most `concurrency` writers; on shutdown drains the queue until
/// the stop deadline.
async fn dispatch(
    mut orders: mpsc::Receiver<u64>,
    writer: &Arc<Writer>,
    options: &WorkerOptions,
    shutdown: &CancellationToken,
    stats: &Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    // Fired when the stop deadline passes: retries give up, what is left is reported.
    let give_up = CancellationToken::new();

    let spawn = |order: u64, permit| {
        let writer = Arc::clone(writer);
        let stats = Arc::clone(stats);
        let give_up = give_up.clone();
        tracker.spawn(async move {
            write_with_retry(&writer, order, &stats, &give_up).await;
            drop(permit);
        });
    };

    // Normal operation.
    loop {
        let order = tokio::select! {
            () = shutdown.cancelled() => break,
            order = orders.recv() => match order {
                Some(order) => order,
                None => break,
            },
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        spawn(order, permit);
    }

    // Stopping: no new events arrive (the source has stopped); finish what was already received.
    orders.close();
    let deadline = tokio::time::Instant::now() + options.stop_timeout;
    let mut left = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, async {
            let order = orders.recv().await?;
            let permit = Arc::clone(&slots).acquire_owned().await.ok()?;
            Some((order, permit))
        })
        .await;
        match next {
            Ok(Some((order, permit))) => spawn(order, permit),
            Ok(None) => break,
            Err(_) => {
                while let Ok(order) = orders.try_recv() {
                    left.push(order);
                }
                break;
            }
        }
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        give_up.cancel();
        // Writes in flight get a moment to commit or roll back; retries stop at once.
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    if !left.is_empty() {
        tracing::warn!(count = left.len(), orders = ?left.iter().take(50).collect::<Vec<_>>(),
            "stopped before these expired orders were written; they are still unpaid");
    }
}

/// Writes one order, retrying with capped backoff until it succeeds or `give_up` fires.
async fn write_with_retry(writer: &Writer, order: u64, stats: &Stats, give_up: &CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(10));
    loop {
        match writer.cancel(order).await {
            Ok(outcome) => {
                record(order, outcome, stats);
                return;
            }
            Err(e) => {
                Stats::add(&stats.retries);
                if backoff.attempts() == 0 {
                    tracing::warn!(order, error = %e, "writing the cancellation failed; retrying with backoff");
                } else {
                    tracing::debug!(order, error = %e, attempt = backoff.attempts() + 1, "retry failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = give_up.cancelled() => {
                        tracing::warn!(order, error = %e, "stopped while retrying; the order is still unpaid");
                        return;
                    }
                }
            }
        }
    }
}

fn record(order: u64, outcome: Outcome, stats: &Stats) {
    match outcome {
        Outcome::Cancelled {
            units,
            missing_products,
        } => {
            Stats::add(&stats.cancelled);
            if missing_products.is_empty() {
                tracing::info!(order, stock_returned = units, "cancelled unpaid order and returned its stock");
            } else {
                tracing::warn!(order, stock_returned = units, ?missing_products,
                    "cancelled unpaid order; some of its products no longer exist, so their stock was not returned");
            }
        }
        Outcome::AlreadyCancelled => {
            Stats::add(&stats.skipped);
            tracing::debug!(order, "order already cancelled (by another worker or an earlier event); nothing written");
        }
        Outcome::NotUnpaid { status } => {
            Stats::add(&stats.skipped);
            tracing::info!(order, status, "order is not unpaid (paid?); left alone");
        }
        Outcome::Missing => {
            Stats::add(&stats.skipped);
            tracing::info!(order, "no such order; nothing written");
        }
    }
}
