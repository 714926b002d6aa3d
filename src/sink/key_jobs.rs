//! The jobs of other key types (`ORDER_EXPIRE_ON_<TYPE>`): when such a key expires, its job is
//! queued with the id from the key, and nothing else is written.
//!
//! There is no order row to guard these jobs, so no transaction to put them in: the database
//! queue gets a plain `INSERT` of the `jobs` row, the redis queue a push as Laravel's
//! `RedisQueue` does. A write that fails is retried with backoff while the worker runs (it never
//! holds up the orders, which have their own writers), and until the stop deadline once it
//! stops. A retry after an unknown outcome (a lost connection after the server got the write)
//! may queue the job twice: delivery is at least once for the keys the worker hears expire,
//! and a key that expires while no worker listens is missed for good.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jobs::payload_format;
use crate::backoff::Backoff;
use crate::config::{Ident, KeyJobSettings, QueueTarget, Settings};
use crate::db::Database;
use crate::db::jobs::{JobTable, write_jobs};
use crate::job::payload::{JobArgument, JobClass, PayloadFormat, PayloadIds, QueueDriver, payload};
use crate::queue::ExpiredKey;
use crate::redis::{RedisTarget, TargetOrigin};
use crate::stats::Stats;
use crate::stats::health::Heartbeat;

/// Most keys written in one statement or pipeline.
const BATCH: usize = 512;
/// The longest one write may take before it is dropped (rolled back) and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The stop signal and, once it came, the deadline of the writes still queued.
struct Stop<'a> {
    shutdown: &'a CancellationToken,
    deadline: &'a mut Option<Instant>,
    stop_timeout: Duration,
}

/// Where one key type's jobs go.
enum Place {
    /// The database queue's `jobs` table.
    Table(JobTable),
    /// The redis queue's list.
    Redis(Box<RedisPlace>),
}

/// A redis queue's list, on its own connection (opened again after a failure).
struct RedisPlace {
    target: RedisTarget,
    list: String,
    conn: Option<MultiplexedConnection>,
}

/// One key type: its job and where it goes.
struct Kind {
    key_type: String,
    job: JobClass,
    place: Place,
}

/// Writes the jobs of the expired keys of other types.
pub(crate) struct KeyJobWriter {
    kinds: Vec<Kind>,
    db: Database,
    format: PayloadFormat,
    rng: fastrand::Rng,
}

impl KeyJobWriter {
    /// The writer for `settings.key_jobs`, after checking that each `jobs` table exists and
    /// each queue's Redis answers; `None` when no other key type has a job.
    pub(crate) async fn new(
        settings: &Settings,
        db: Database,
    ) -> Result<Option<Self>, crate::Error> {
        if settings.key_jobs.is_empty() {
            return Ok(None);
        }
        let mut kinds = Vec::with_capacity(settings.key_jobs.len());
        for job in &settings.key_jobs {
            kinds.push(Kind {
                key_type: job.key_type.clone(),
                job: JobClass {
                    class: job.class.clone(),
                    argument: JobArgument::Id {
                        property: job.property.clone(),
                    },
                },
                place: place(job, &db).await?,
            });
        }
        Ok(Some(Self {
            kinds,
            db,
            format: payload_format(settings),
            rng: fastrand::Rng::new(),
        }))
    }

    /// The key types, in the order of `Settings::key_jobs` (an [`ExpiredKey`]'s `kind`).
    pub(crate) fn key_types(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(|k| k.key_type.as_str())
    }

    /// Writes the jobs of the keys `queue` hands over until `shutdown`; then what is still
    /// queued, until `stop_timeout` has passed since the stop. `heartbeat` beats while it waits
    /// for a key and between attempts, not while an attempt waits for the server: a write stuck
    /// longer than the watchdog allows stops the pings.
    pub(crate) async fn run(
        mut self,
        mut queue: mpsc::Receiver<ExpiredKey>,
        shutdown: CancellationToken,
        stop_timeout: Duration,
        stats: std::sync::Arc<Stats>,
        heartbeat: Heartbeat,
    ) {
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_some() {
                // Stopping (perhaps noticed during a retry): no new key, what is queued is written.
                queue.close();
            }
            heartbeat.beat();
            let first = match deadline {
                None => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        deadline = Some(Instant::now() + stop_timeout);
                        continue;
                    }
                    key = heartbeat.waiting(queue.recv()) => key,
                },
                Some(_) => queue.recv().await,
            };
            let Some(first) = first else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(key) => batch.push(key),
                    Err(_) => break,
                }
            }
            for kind in 0..self.kinds.len() {
                let ids: Vec<u64> = batch
                    .iter()
                    .filter(|k| k.kind == kind)
                    .map(|k| k.id)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let stop = Stop {
                    shutdown: &shutdown,
                    deadline: &mut deadline,
                    stop_timeout,
                };
                let written = self
                    .write_retrying(kind, &ids, stop, &stats, &heartbeat)
                    .await;
                if !written {
                    let left = queue_len_after_close(&mut queue);
                    let abandoned = ids.len() + left;
                    Stats::add_n(&stats.abandoned, abandoned as u64);
                    tracing::warn!(
                        event = "key_jobs_abandoned",
                        abandoned,
                        "the stop deadline passed before these keys' jobs could be queued; they are lost (no row records them)"
                    );
                    return;
                }
            }
        }
    }

    /// Writes `ids`' jobs of kind `kind`, retrying with backoff; `false` when the stop deadline
    /// passed first.
    async fn write_retrying(
        &mut self,
        kind: usize,
        ids: &[u64],
        stop: Stop<'_>,
        stats: &Stats,
        heartbeat: &Heartbeat,
    ) -> bool {
        let Stop {
            shutdown,
            deadline,
            stop_timeout,
        } = stop;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failing = false;
        loop {
            heartbeat.beat();
            let attempt = tokio::time::timeout(WRITE_TIMEOUT, self.write(kind, ids));
            let answered = match *deadline {
                Some(at) => match tokio::time::timeout_at(at, attempt).await {
                    Ok(answered) => answered,
                    Err(_) => return false,
                },
                None => attempt.await,
            };
            // A connection that went silent would hold the writer forever; the attempt is
            // dropped (a transaction in it rolls back) and retried.
            let result = answered
                .unwrap_or_else(|_| Err(format!("no answer within {} s", WRITE_TIMEOUT.as_secs())));
            match result {
                Ok(()) => {
                    Stats::add_n(&stats.key_jobs, ids.len() as u64);
                    if failing {
                        tracing::info!(event = "key_jobs_written_again", key_type = %self.kinds[kind].key_type,
                            "key jobs are queued again");
                    }
                    tracing::debug!(key_type = %self.kinds[kind].key_type, jobs = ids.len(), "queued key jobs");
                    return true;
                }
                Err(error) => {
                    Stats::add(&stats.retries);
                    if !failing {
                        tracing::warn!(event = "key_jobs_failed", key_type = %self.kinds[kind].key_type, %error,
                            "cannot queue the jobs of expired keys; retrying with backoff");
                        failing = true;
                    }
                }
            }
            let delay = backoff.next_delay();
            match *deadline {
                Some(at) => {
                    if Instant::now() + delay >= at {
                        return false;
                    }
                    heartbeat.idle(delay).await;
                }
                None => tokio::select! {
                    () = heartbeat.idle(delay) => {}
                    () = shutdown.cancelled() => {
                        *deadline = Some(Instant::now() + stop_timeout);
                    }
                },
            }
        }
    }

    /// One attempt: one `INSERT` (database queue) or one pipeline of pushes (redis queue).
    async fn write(&mut self, kind: usize, ids: &[u64]) -> Result<(), String> {
        let now = jiff::Timestamp::now().as_second();
        let Kind { job, place, .. } = &mut self.kinds[kind];
        let driver = match place {
            Place::Table(_) => QueueDriver::Database,
            Place::Redis(_) => QueueDriver::Redis,
        };
        let rows: Vec<(u64, String)> = ids
            .iter()
            .map(|id| {
                let payload_ids = PayloadIds::random(&mut self.rng, now);
                (*id, payload(job, self.format, driver, *id, &payload_ids))
            })
            .collect();
        match place {
            Place::Table(table) => {
                let mut conn = self.db.conn().await.map_err(|e| e.to_string())?;
                let mut tx = conn
                    .begin_default()
                    .await
                    .map_err(|e| format!("BEGIN: {e}"))?;
                write_jobs(&mut tx, table, &rows, now)
                    .await
                    .map_err(|e| format!("INSERT INTO {}: {e}", table.table()))?;
                tx.commit().await.map_err(|e| format!("COMMIT: {e}"))
            }
            Place::Redis(redis) => {
                let RedisPlace { target, list, conn } = &mut **redis;
                let redis = match conn {
                    Some(c) => c,
                    None => conn.insert(target.connect().await.map_err(|e| e.to_string())?),
                };
                let payloads: Vec<&str> = rows.iter().map(|(_, p)| p.as_str()).collect();
                let pushed = target.push_jobs(redis, list, &payloads).await;
                if pushed.is_err() {
                    *conn = None;
                }
                pushed.map_err(|e| e.to_string())
            }
        }
    }
}

/// How many keys were still queued when the writer gave up (the queue is closed by then).
fn queue_len_after_close(queue: &mut mpsc::Receiver<ExpiredKey>) -> usize {
    queue.close();
    let mut left = 0;
    while queue.try_recv().is_ok() {
        left += 1;
    }
    left
}

/// Where a key type's jobs go; fails at start when the `jobs` table is missing or the queue's
/// Redis does not answer.
async fn place(job: &KeyJobSettings, db: &Database) -> Result<Place, crate::Error> {
    Ok(match &job.target {
        QueueTarget::Database { table } => {
            let table = Ident::new(table)
                .map_err(|reason| db.schema_error(format!("table {table}: {reason}")))?;
            db.require_table(
                &table,
                &format!(
                    "create Laravel's jobs table (php artisan queue:table, then php artisan migrate) or unset {}{}",
                    crate::config::keys::ON_PREFIX,
                    job.key_type
                ),
            )
            .await?;
            db.require_privileges(&table, &["INSERT"]).await?;
            Place::Table(JobTable::Jobs {
                table,
                queue: job.queue.clone(),
            })
        }
        QueueTarget::Redis { redis, prefix } => {
            let target = RedisTarget::new(redis)?.with_origin(TargetOrigin::Queue {
                connection: job.connection.clone(),
            });
            let conn = target.connect().await?;
            Place::Redis(Box::new(RedisPlace {
                target,
                list: format!("{prefix}queues:{}", job.queue),
                conn: Some(conn),
            }))
        }
    })
}
