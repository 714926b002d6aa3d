//! `order-expire sweep`: one reconciliation pass from the command line.
//!
//! The same pass the worker runs in the background ([`crate::source::sweep`]), with its result
//! printed: what an operator runs after an outage, or with `--dry-run` to see what is pending.

use std::fmt;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::error::Error;
use crate::sink::{Database, Outcome, Writer};
use crate::source::redis::RedisTarget;
use crate::source::sweep::{Reconciler, SweepSummary};

/// The result of `order-expire sweep`.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub summary: SweepSummary,
    pub dry_run: bool,
    pub cancelled: usize,
    pub not_unpaid: usize,
    /// Orders MySQL refused with a permanent error (a value out of range, a constraint).
    pub refused: usize,
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

/// Runs one pass; prints a line per overdue order on stdout.
pub async fn run_once(settings: &Settings, dry_run: bool) -> Result<SweepReport, Error> {
    let redis = RedisTarget::new(&settings.redis)?;
    let db = Database::connect(&settings.mysql, 2).await?;
    let writer = Writer::new(db.clone(), &settings.schema, settings.timezone.clone()).await?;
    let reconciler = Reconciler::new(settings, db, redis).ok_or_else(|| {
        Error::Usage(format!(
            "ORDER_EXPIRE_TTL is not set in {}: set it (or --order-ttl) to the TTL in seconds the app passes to Cache::put(), so that a missing key can be told from an early one",
            settings.env_file.display()
        ))
    })?;

    let (overdue, mut found) = mpsc::channel(1024);
    let sweeping = async {
        let result = reconciler.sweep(&overdue).await;
        drop(overdue);
        result
    };
    let handling = async {
        let mut report = SweepReport {
            dry_run,
            ..SweepReport::default()
        };
        while let Some(order) = found.recv().await {
            if dry_run {
                println!("would cancel order {order}: unpaid, past its deadline, no key in Redis");
                continue;
            }
            match writer.cancel(order).await {
                Ok(Outcome::Cancelled { units, .. }) => {
                    report.cancelled += 1;
                    println!("cancelled order {order}: {units} units returned to stock");
                }
                Ok(_) => {
                    report.not_unpaid += 1;
                    println!("order {order} is no longer unpaid: left alone");
                }
                // One bad row must not stop the pass: say which and go on.
                Err(source) if source.is_permanent() => {
                    report.refused += 1;
                    println!("order {order} cannot be cancelled, left unpaid: {source}");
                }
                Err(source) => {
                    return Err(Error::Cancel {
                        endpoint: writer.database().endpoint().to_string(),
                        order,
                        source,
                    });
                }
            }
        }
        Ok(report)
    };
    let (summary, report) = tokio::join!(sweeping, handling);
    let mut report = report?;
    report.summary = summary?;
    writer.into_database().close().await;
    Ok(report)
}
