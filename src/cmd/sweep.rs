//! `order-expire sweep`: one reconciliation pass from the command line.
//!
//! The same pass the worker runs in the background (`crate::source::reconcile`), with its result
//! printed: what an operator runs after an outage, or with `--dry-run` to see what is pending.
//! It writes through the worker's own path (queue, dispatcher, writer), so batches, retries and
//! the parking of a refused order behave as in the worker.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::mysql::Database;
use crate::queue::{OrderQueue, order_queue};
use crate::redis::RedisServers;
use crate::sink::dispatch::{DispatchOptions, Observer, dispatch};
use crate::sink::jobs::JobSink;
use crate::sink::share::Share;
use crate::sink::writer::MAX_BATCH;
use crate::sink::{Outcome, Writer};
use crate::source::reconcile::{Reconciler, SweepSummary};
use crate::stats::Stats;

/// The result of `order-expire sweep`.
#[derive(Debug, Default)]
struct SweepReport {
    /// What the pass found: orders examined, overdue, still keyed.
    summary: SweepSummary,
    /// `--dry-run`: the overdue orders were listed, not written.
    dry_run: bool,
    /// Overdue orders cancelled, their stock returned.
    cancelled: usize,
    /// Overdue orders no longer unpaid when written (paid, already cancelled, gone): left alone.
    not_unpaid: usize,
    /// Orders MySQL refused with a permanent error (a value out of range, a constraint).
    refused: usize,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "sweep: {} unpaid orders past the TTL examined, {} with their key still in Redis (left alone), {} without it",
            s.examined, s.still_keyed, s.overdue
        )?;
        if self.dry_run {
            write!(f, " (dry run: nothing written)")
        } else {
            write!(
                f,
                ": {} cancelled, {} no longer unpaid, {} refused by MySQL",
                self.cancelled, self.not_unpaid, self.refused
            )
        }
    }
}

/// How long the writes of a pass may take once the pass has found every overdue order: MySQL
/// failing for longer ends the command with an error instead of retrying forever.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// Overdue orders that may wait for the writer; the pass waits for room beyond that.
const QUEUE_SIZE: usize = 4096;

/// Counts and prints what the writer did with each overdue order, as the pass goes.
#[derive(Default)]
struct Tally {
    cancelled: AtomicUsize,
    not_unpaid: AtomicUsize,
    refused: AtomicUsize,
}

impl Observer for Tally {
    fn written(&self, order: u64, outcome: &Outcome) {
        if let Outcome::Cancelled { units, .. } = outcome {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            println!("cancelled order {order}: {units} units returned to stock");
        } else {
            self.not_unpaid.fetch_add(1, Ordering::Relaxed);
            println!("order {order} is no longer unpaid: left alone");
        }
    }

    // One bad row must not stop the pass: say which and go on.
    fn refused(&self, order: u64, error: &dyn fmt::Display) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        println!("order {order} cannot be cancelled, left unpaid: {error}");
    }
}

/// Runs one pass; prints a line per overdue order on stdout. The orders go through the
/// worker's own queue, dispatcher and writer.
async fn run_once(settings: &Settings, dry_run: bool) -> Result<SweepReport, Error> {
    let redis = RedisServers::new(&settings.redis)?;
    let db = Database::connect(&settings.mysql, 2).await?;
    // The jobs of the orders it cancels go where the worker's would (a redis queue's outbox
    // rows are pushed by the next drain of a running worker).
    let jobs = JobSink::new(settings, &db).await?;
    let writer = Arc::new(
        Writer::new(db.clone(), &settings.schema, settings.timezone.clone())
            .await?
            .with_jobs(jobs),
    );
    let reconciler = Reconciler::new(settings, db, redis, KeyPattern::new(&settings.keys)).ok_or_else(|| {
        Error::Usage(format!(
            "ORDER_EXPIRE_TTL is not set in {}: set it (or --order-ttl) to the TTL in seconds the app passes to Cache::put(), so that a missing key can be told from an early one",
            settings.env_file.display()
        ))
    })?;

    let stats = Arc::new(Stats::default());
    let tally = Arc::new(Tally::default());
    let (overdue, found) = order_queue(QUEUE_SIZE, Arc::clone(&stats));
    let sweeping = async {
        let heartbeat = stats.health.task_heartbeat("sweep");
        let result = reconciler.sweep(&overdue, &heartbeat).await;
        drop(overdue);
        result
    };
    let handling = async {
        if dry_run {
            print_pending(found).await;
            return Vec::new();
        }
        let options = DispatchOptions {
            concurrency: 1,
            batch_size: MAX_BATCH,
            batch_wait: Duration::ZERO,
            stop_timeout: WRITE_DEADLINE,
            recovery_on: true,
        };
        let never = CancellationToken::new();
        dispatch(
            found,
            Arc::clone(&writer),
            Arc::clone(&tally),
            Share::alone(Arc::clone(&stats)),
            &options,
            &never,
            &stats,
        )
        .await
    };
    let (summary, left) = tokio::join!(sweeping, handling);
    let summary = summary?;
    let endpoint = writer.database().endpoint().to_string();
    if let Ok(writer) = Arc::try_unwrap(writer) {
        writer.into_database().close().await;
    }
    if !left.is_empty() {
        return Err(Error::Runtime(format!(
            "MySQL at {endpoint}: {} overdue orders were not written within {} s (MySQL kept failing, see the log); they stay unpaid: run `order-expire sweep` again once MySQL answers",
            left.len(),
            WRITE_DEADLINE.as_secs()
        )));
    }
    Ok(SweepReport {
        summary,
        dry_run,
        cancelled: tally.cancelled.load(Ordering::Relaxed),
        not_unpaid: tally.not_unpaid.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
    })
}

/// `order-expire sweep`: one pass, then its summary line.
pub async fn command(settings: &Settings, dry_run: bool) -> Result<(), Error> {
    let report = run_once(settings, dry_run).await?;
    println!("{report}");
    Ok(())
}

/// `--dry-run`: says what would be cancelled, writes nothing.
async fn print_pending(mut found: OrderQueue) {
    while let Some(order) = found.recv().await {
        println!(
            "would cancel order {}: unpaid, past its deadline, no key in Redis",
            order.id
        );
    }
}
