//! `order-expire sweep`: one reconciliation pass from the command line.
//!
//! The same pass the worker runs in the background (`crate::source::reconcile`), with its result
//! printed: what an operator runs after an outage, or with `--dry-run` to see what is pending.
//! It writes through the worker's own path (queue, dispatcher, writer), so batches, retries and
//! the parking of a refused order behave as in the worker.
//!
//! A long pass shows how far it has got: a bar with the rate and an estimate of the time left
//! when stderr is a terminal (and the log is text), `sweep_progress` log lines every few
//! seconds otherwise (`crate::source::progress`). A `sweep_finished` log line ends every pass.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::Database;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::logging::LogFormat;
use crate::queue::{OrderQueue, order_queue};
use crate::redis::RedisServers;
use crate::sink::dispatch::{DispatchOptions, Observer, dispatch};
use crate::sink::jobs::JobSink;
use crate::sink::share::Share;
use crate::sink::writer::MAX_BATCH;
use crate::sink::{Outcome, Writer};
use crate::source::progress::{LogProgress, Progress};
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
    /// Orders the database refused with a permanent error (a value out of range, a constraint).
    refused: usize,
    /// `MySQL` or `PostgreSQL`, for the summary line.
    database: &'static str,
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
                ": {} cancelled, {} no longer unpaid, {} refused by {}",
                self.cancelled, self.not_unpaid, self.refused, self.database
            )
        }
    }
}

/// How long the writes of a pass may take once the pass has found every overdue order: the
/// database failing for longer ends the command with an error instead of retrying forever.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// Overdue orders that may wait for the writer; the pass waits for room beyond that.
const QUEUE_SIZE: usize = 4096;

/// Counts and prints what the writer did with each overdue order, as the pass goes.
#[derive(Default)]
struct Tally {
    cancelled: AtomicUsize,
    not_unpaid: AtomicUsize,
    refused: AtomicUsize,
    out: Out,
}

impl Observer for Tally {
    fn written(&self, order: u64, outcome: &Outcome) {
        if let Outcome::Cancelled { units, .. } = outcome {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            self.out.line(format_args!(
                "cancelled order {order}: {units} units returned to stock"
            ));
        } else {
            self.not_unpaid.fetch_add(1, Ordering::Relaxed);
            self.out.line(format_args!(
                "order {order} is no longer unpaid: left alone"
            ));
        }
    }

    // One bad row must not stop the pass: say which and go on.
    fn refused(&self, order: u64, error: &dyn fmt::Display) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.out.line(format_args!(
            "order {order} cannot be cancelled, left unpaid: {error}"
        ));
    }
}

/// Where the pass's lines go: stdout, around the bar when both are on one terminal.
#[derive(Default, Clone)]
struct Out {
    /// The bar, when stdout is a terminal too: each line is printed with the bar cleared, then
    /// the bar is drawn again below it.
    bar: Option<ProgressBar>,
}

impl Out {
    fn line(&self, text: fmt::Arguments<'_>) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }
}

/// The pass's bar on stderr: orders examined out of those counted, the rate, the time left.
struct Bar(ProgressBar);

impl Bar {
    /// A bar when stderr is a terminal that draws (`TERM` set, not `dumb`) and the log is text
    /// (JSON log lines are for a machine, which wants `sweep_progress` lines, not a bar
    /// between them).
    fn on_terminal(format: LogFormat, dry_run: bool) -> Option<Self> {
        if format != LogFormat::Text || !std::io::stderr().is_terminal() {
            return None;
        }
        let style = ProgressStyle::with_template(
            "{msg} [{bar:20}] {pos}/{len} orders examined, {rate}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        })
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(if dry_run { "sweep (dry run)" } else { "sweep" });
        // A terminal that cannot draw one (`TERM` unset or `dumb`) gets the log lines instead.
        (!bar.is_hidden()).then_some(Self(bar))
    }

    /// The bar, for the lines printed around it when stdout is the same terminal.
    fn out(&self) -> Out {
        Out {
            bar: std::io::stdout().is_terminal().then(|| self.0.clone()),
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.reset_elapsed();
        // Redrawn while a page waits (MySQL slow, the queue full): the rate falls visibly.
        self.0.enable_steady_tick(Duration::from_millis(250));
    }

    fn advance(&self, examined: u64) {
        if examined > self.0.length().unwrap_or(0) {
            self.0.set_length(examined);
        }
        self.0.set_position(examined);
    }

    fn finish(&self, examined: u64) {
        self.0.set_length(examined);
        self.0.set_position(examined);
        self.0.finish();
    }
}

/// Runs one pass; prints a line per overdue order on stdout. The orders go through the
/// worker's own queue, dispatcher and writer.
async fn run_once(
    settings: &Settings,
    dry_run: bool,
    format: LogFormat,
) -> Result<SweepReport, Error> {
    let redis = RedisServers::new(&settings.redis)?;
    let db = Database::connect(&settings.database, 2).await?;
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
    let bar = Bar::on_terminal(format, dry_run);
    let logged = LogProgress::new("sweep");
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &logged,
    };
    let out = bar.as_ref().map(Bar::out).unwrap_or_default();
    let tally = Arc::new(Tally {
        out: out.clone(),
        ..Tally::default()
    });
    let (overdue, found) = order_queue(QUEUE_SIZE, Arc::clone(&stats));
    let sweeping = async {
        let heartbeat = stats.health.task_heartbeat("sweep");
        let result = reconciler.sweep(&overdue, &heartbeat, Some(progress)).await;
        drop(overdue);
        result
    };
    let handling = async {
        if dry_run {
            print_pending(found, &out).await;
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
    let title = writer.database().title();
    if let Ok(writer) = Arc::try_unwrap(writer) {
        writer.into_database().close().await;
    }
    if !left.is_empty() {
        return Err(Error::Runtime(format!(
            "{title} at {endpoint}: {} overdue orders were not written within {} s ({title} kept failing, see the log); they stay unpaid: run `order-expire sweep` again once {title} answers",
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
        database: title,
    })
}

/// `order-expire sweep`: one pass, then its summary line (and the same as a `sweep_finished`
/// log line, for whoever reads the log). `format` is the log's: a bar is drawn only between
/// text lines.
pub async fn command(settings: &Settings, dry_run: bool, format: LogFormat) -> Result<(), Error> {
    let started = Instant::now();
    let report = run_once(settings, dry_run, format).await?;
    let s = &report.summary;
    tracing::info!(
        event = "sweep_finished",
        examined = s.examined,
        overdue = s.overdue,
        still_keyed = s.still_keyed,
        cancelled = report.cancelled,
        not_unpaid = report.not_unpaid,
        refused = report.refused,
        dry_run,
        took_ms = started.elapsed().as_millis() as u64,
        "sweep finished"
    );
    println!("{report}");
    Ok(())
}

/// `--dry-run`: says what would be cancelled, writes nothing.
async fn print_pending(mut found: OrderQueue, out: &Out) {
    while let Some(order) = found.recv().await {
        out.line(format_args!(
            "would cancel order {}: unpaid, past its deadline, no key in Redis",
            order.id
        ));
    }
}
