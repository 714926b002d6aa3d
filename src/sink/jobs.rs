//! The Laravel job queued for each cancelled order (`ORDER_EXPIRE_DISPATCH`), written in the
//! cancel transaction itself.
//!
//! * database queue: the `jobs` row commits with the cancellation or not at all, so the job
//!   exists if and only if the order was cancelled, exactly once, whatever crashes;
//! * redis queue: a push cannot join a database transaction, so the payload goes into our outbox
//!   table in the same transaction, and [`super::outbox`] pushes it after the commit: a crash
//!   between the commit and the push leaves the row for the next drain (at least once).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::{DispatchArgument, DispatchSettings, Ident, QueueTarget, Settings};
use crate::db::jobs::{JobTable, OUTBOX_MIGRATION, OUTBOX_TABLE, write_jobs};
use crate::db::{Database, DbError, DriverError, Tx};
use crate::job::payload::{JobArgument, JobClass, PayloadFormat, PayloadIds, QueueDriver, payload};

/// Builds and writes the job rows of a batch.
pub(crate) struct JobSink {
    job: JobClass,
    format: PayloadFormat,
    driver: QueueDriver,
    table: JobTable,
    rng: Mutex<fastrand::Rng>,
    /// Woken after a commit that wrote outbox rows (redis queue).
    outbox_written: Arc<Notify>,
}

impl JobSink {
    /// The sink for `settings.dispatch`, after checking that its table exists; `None` when no
    /// job is dispatched.
    pub(crate) async fn new(settings: &Settings, db: &Database) -> Result<Option<Self>, DbError> {
        let Some(dispatch) = &settings.dispatch else {
            return Ok(None);
        };
        let table = job_table(dispatch, settings.database.table_prefix(), db)?;
        let fix = match &table {
            JobTable::Jobs { .. } => format!(
                "create Laravel's jobs table (php artisan queue:table, then php artisan migrate) or unset {}",
                crate::config::keys::DISPATCH
            ),
            JobTable::Outbox { .. } => format!(
                "the redis queue needs order-expire's outbox: copy {OUTBOX_MIGRATION} into the app's database/migrations and run php artisan migrate"
            ),
        };
        db.require_table(table.table(), &fix).await?;
        let privileges: &[&str] = match &table {
            JobTable::Jobs { .. } => &["INSERT"],
            JobTable::Outbox { .. } => &["INSERT", "SELECT", "DELETE"],
        };
        db.require_privileges(table.table(), privileges).await?;
        Ok(Some(Self {
            job: job_class(dispatch),
            format: payload_format(settings),
            driver: match dispatch.target {
                QueueTarget::Database { .. } => QueueDriver::Database,
                QueueTarget::Redis { .. } => QueueDriver::Redis,
            },
            table,
            rng: Mutex::new(fastrand::Rng::new()),
            outbox_written: Arc::new(Notify::new()),
        }))
    }

    /// Woken whenever a commit wrote outbox rows.
    pub(crate) fn outbox_written(&self) -> Arc<Notify> {
        Arc::clone(&self.outbox_written)
    }

    /// Writes one job per order of `cancelled`, inside the transaction that cancels them.
    pub(crate) async fn write(
        &self,
        tx: &mut Tx<'_>,
        cancelled: &[u64],
    ) -> Result<(), DriverError> {
        let now = jiff::Timestamp::now().as_second();
        let rows: Vec<(u64, String)> = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cancelled
                .iter()
                .map(|id| {
                    let ids = PayloadIds::random(&mut rng, now);
                    (*id, payload(&self.job, self.format, self.driver, *id, &ids))
                })
                .collect()
        };
        write_jobs(tx, &self.table, &rows, now).await
    }

    /// After the commit: wakes the outbox drainer when rows were written there.
    pub(crate) fn committed(&self, cancelled: usize) {
        if cancelled > 0 && matches!(self.table, JobTable::Outbox { .. }) {
            self.outbox_written.notify_one();
        }
    }
}

/// The payload fields the app's Laravel version writes. composer.json holds a constraint
/// (`^8.0`), not the installed minor: it is read as the newest of its major, as an unknown minor.
pub(crate) fn payload_format(settings: &Settings) -> PayloadFormat {
    let (major, minor) = settings.laravel.as_ref().map_or((8, None), |v| {
        (
            v.major,
            (v.source != "composer.json").then(|| v.minor()).flatten(),
        )
    });
    PayloadFormat::of_laravel(major, minor)
}

/// The table a batch's jobs go to: the queue's `jobs` table, or our outbox (with the app's
/// table prefix, as the migration creates it).
pub(crate) fn job_table(
    dispatch: &DispatchSettings,
    table_prefix: &str,
    db: &Database,
) -> Result<JobTable, DbError> {
    let ident = |name: String| {
        Ident::new(&name).map_err(|reason| db.schema_error(format!("table {name}: {reason}")))
    };
    Ok(match &dispatch.target {
        QueueTarget::Database { table } => JobTable::Jobs {
            table: ident(table.clone())?,
            queue: dispatch.queue.clone(),
        },
        QueueTarget::Redis { .. } => JobTable::Outbox {
            table: ident(format!("{table_prefix}{OUTBOX_TABLE}"))?,
        },
    })
}

/// The job class as the payload module describes it.
fn job_class(dispatch: &DispatchSettings) -> JobClass {
    JobClass {
        class: dispatch.class.clone(),
        argument: match &dispatch.argument {
            DispatchArgument::Model { model, connection } => JobArgument::Model {
                property: dispatch.property.clone(),
                model: model.clone(),
                connection: connection.clone(),
            },
            DispatchArgument::Id => JobArgument::Id {
                property: dispatch.property.clone(),
            },
        },
    }
}
