//! The pipeline: keyspace events -> order ids -> the MySQL writer.
//!
//! ```text
//!   Redis `expired` ──► KeyspaceSource ─┐
//!   deadlines (PTTL) ──► DeadlineWatcher ─┼─► bounded queue ──► dispatcher ──► up to N writers
//!   MySQL + EXISTS ───► Reconciler ─────┘    (order ids)      (dedup,         (one tx per order,
//!                                                              semaphore)      retried w/ backoff)
//! ```
//!
//! There is one `KeyspaceSource` per server that publishes the cache's expiries (the one
//! server, each master of a cluster, the Sentinel's master), kept in step with the topology by a
//! `TopologySource`; a change of masters starts a sweep like a resubscribe does.
//!
//! The reader never waits for the database: it only parses and enqueues. Writers retry an order
//! that fails for a transient reason with capped backoff until it succeeds, so a MySQL outage
//! delays cancellations but loses none that reached the queue; an order that fails with a
//! permanent error (a value out of range, a constraint) is parked, so it cannot block the
//! others. A reconciliation sweep (at start, after every resubscribe and periodically) feeds the
//! same queue with orders whose event was missed. On a stop signal the sources stop, the queue is
//! drained and writes in flight finish until the stop deadline; what is still in flight then is
//! abandoned (MySQL rolls it back) and listed in the log.
//!
//! Replicas of one orders table split the work: once subscribed, the worker takes a member
//! slot in MySQL (`sink::share`), and the dispatcher writes only its own blocks of ids, setting
//! the others' aside until their owner leaves or leaves them unwritten.
//!
//! Keys of other types with a job (`ORDER_EXPIRE_ON_<TYPE>`) take a side path: the keyspace
//! source hands them to their own queue and writer (`sink::key_jobs`), which queues each job
//! with the id and writes no SQL on the orders; the deadline watcher and the sweep are for
//! orders only.
//!
//! Beside the pipeline: the metrics and probes endpoint when `--metrics-addr` is set (bound
//! first, so a taken port stops the start at once), a MySQL check for readiness on a connection
//! of its own, and the systemd notifications (`READY=1` once subscribed with MySQL checked; the
//! watchdog, pinged while the loops move; `STOPPING=1`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::ConfigSource;
use crate::config::Settings;
use crate::contract::Contract;
use crate::db::Database;
use crate::db::members::MemberLocks;
use crate::db::orders::UnpaidQuery;
use crate::db::probe::DbProbe;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::queue::{KeyJobSender, OrderQueue, QueueSender, key_job_queue, order_queue};
use crate::redis::{RedisServers, RedisTarget};
use crate::sink::Writer;
use crate::sink::dispatch::{ABANDON_GRACE, DispatchOptions, dispatch};
use crate::sink::jobs::JobSink;
use crate::sink::key_jobs::KeyJobWriter;
use crate::sink::outbox::OutboxDrainer;
use crate::sink::share::Share;
use crate::source::deadline::DeadlineWatcher;
use crate::source::keyspace::KeyspaceSource;
use crate::source::progress::{LogProgress, Progress};
use crate::source::reconcile::Reconciler;
use crate::source::topology::{SourceFactory, TopologySource};
use crate::stats::Stats;
use crate::stats::health::{DEFAULT_STALL_AFTER, HealthOptions, Heartbeat};
use crate::systemd;
use crate::throttle::Throttle;

/// How often MySQL is checked for readiness.
const MYSQL_CHECK_EVERY: Duration = Duration::from_secs(2);

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
    /// Wait for rows another transaction holds even where the server could skip them
    /// (`--write-path lock-wait`).
    pub lock_wait: bool,
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
            lock_wait: false,
        }
    }
}

/// Runs the worker until `shutdown` is cancelled. Start-up problems (unreachable servers, wrong
/// credentials, missing tables, notifications off) are returned as errors; after start-up,
/// failures are retried and never end the worker.
pub(crate) async fn run(
    settings: &Settings,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> Result<Arc<Stats>, Error> {
    let watchdog = systemd::watchdog_interval();
    let stats = Arc::new(Stats::new(
        settings.laravel.as_ref().map(|v| v.text.as_str()),
        settings.database.driver(),
        HealthOptions {
            stall_after: watchdog.unwrap_or(DEFAULT_STALL_AFTER),
            database: settings.database.title(),
        },
    ));
    stats.health.bind_stop(shutdown.clone());
    let _reporting = start_reporting(settings, &stats, watchdog, &shutdown).await?;

    let redis = RedisServers::new(&settings.redis)?;
    let (_, topology) = redis.refresh().await?;
    for master in topology.masters() {
        check_master(master, settings, options).await?;
    }

    let (writer, outbox) = open_writer(settings, options).await?;
    let key_writer = KeyJobWriter::new(settings, writer.database().clone()).await?;
    log_start(settings, &writer);
    let (key_sender, key_queue) = key_job_queue(options.queue_size, Arc::clone(&stats));
    let key_jobs = key_writer.as_ref().map(|w| {
        let types = w
            .key_types()
            .map(|t| (t.to_string(), KeyPattern::of_type(&settings.keys, t)))
            .collect();
        (types, key_sender)
    });
    let (sources, orders) = start_sources(
        settings, options, &redis, &writer, key_jobs, &stats, &shutdown,
    )
    .await?;
    // Join the other workers of this orders table once subscribed (every event from the
    // moment it holds a slot reaches it), and before the first order is written, so that the
    // first burst is already split.
    let share_stop = CancellationToken::new();
    let (share, share_task) = Share::join(
        Arc::clone(&stats),
        MemberLocks::new(
            writer.database().clone(),
            &settings.schema.orders.to_string(),
        ),
        writer.database().clone(),
        UnpaidQuery::new(writer.database(), &settings.schema),
        share_stop.clone(),
    )
    .await;
    // The key jobs have their own writer: a slow or failing queue never holds up the orders.
    let key_task = key_writer.map(|w| {
        tokio::spawn(w.run(
            key_queue,
            shutdown.clone(),
            options.stop_timeout,
            Arc::clone(&stats),
            stats.health.heartbeat("key_jobs"),
        ))
    });
    // The drainer stops after the writers: its own token is cancelled once they are done.
    let outbox_stop = CancellationToken::new();
    let outbox_task = outbox.map(|drainer| {
        tokio::spawn(drainer.run(
            outbox_stop.clone(),
            stats.health.heartbeat("outbox"),
            Arc::clone(&stats),
        ))
    });
    let contract = Contract::new(settings);
    tracing::info!(event = "contract", mode = contract.mode, guard = %contract.guard, "{}", contract.promise());
    // Subscribed, and the writer has just checked MySQL's schema: ready.
    stats.health.database_checked(Ok(()));
    let _mysql_checks = AbortOnDropHandle::new(tokio::spawn(check_mysql(
        DbProbe::new(writer.database().clone()),
        Arc::clone(&stats),
        shutdown.clone(),
    )));
    stats.health.started();
    systemd::ready(&stats);

    let dispatching = DispatchOptions {
        concurrency: options.concurrency,
        batch_size: options.batch_size,
        batch_wait: options.batch_wait,
        stop_timeout: options.stop_timeout,
        recovery_on: settings.recovery.order_ttl.is_some(),
    };
    dispatch(
        orders,
        Arc::clone(&writer),
        Arc::new(()),
        Arc::clone(&share),
        &dispatching,
        &shutdown,
        &stats,
    )
    .await;
    leave_share(&share, share_stop, share_task, settings, &stats).await;
    outbox_stop.cancel();
    if let Some(task) = key_task {
        // It stops at its own deadline, counted from the same stop signal.
        stop_within(task, options.stop_timeout + ABANDON_GRACE).await;
    }
    finish(outbox_task, sources, writer).await;
    log_stopped(&stats);
    Ok(stats)
}

/// What reports on the worker while it runs: the HTTP endpoint (`--metrics-addr`) and systemd's
/// notifications; both stop when the returned handles are dropped.
struct Reporting {
    _endpoint: Option<AbortOnDropHandle<()>>,
    _systemd: AbortOnDropHandle<()>,
}

/// Binds the endpoint (a port taken stops the start) and starts telling systemd how it goes.
async fn start_reporting(
    settings: &Settings,
    stats: &Arc<Stats>,
    watchdog: Option<Duration>,
    shutdown: &CancellationToken,
) -> Result<Reporting, Error> {
    let endpoint = match settings.metrics_addr {
        Some(addr) => {
            let endpoint = Endpoint::bind(addr).await?;
            Some(AbortOnDropHandle::new(tokio::spawn(
                endpoint.serve(Arc::clone(stats)),
            )))
        }
        None => None,
    };
    let systemd = AbortOnDropHandle::new(tokio::spawn(systemd::supervise(
        Arc::clone(stats),
        watchdog,
        shutdown.clone(),
    )));
    Ok(Reporting {
        _endpoint: endpoint,
        _systemd: systemd,
    })
}

/// Gives up this worker's member slot once its writes are done (the others take its orders
/// over only once it has stopped writing), and reports orders given back to it too late.
async fn leave_share(
    share: &Share,
    share_stop: CancellationToken,
    share_task: Option<JoinHandle<()>>,
    settings: &Settings,
    stats: &Stats,
) {
    share_stop.cancel();
    if let Some(task) = share_task {
        let _ = tokio::time::timeout(ABANDON_GRACE, task).await;
    }
    // Orders given back (their owner left) after the dispatcher had finished: this worker's,
    // and unwritten.
    let late = share.take_released();
    if !late.is_empty() {
        Stats::add_n(&stats.abandoned, late.len() as u64);
        tracing::warn!(event = "orders_left", count = late.len(), orders = ?&late[..late.len().min(50)],
            recovery = if settings.recovery.order_ttl.is_some() { "on" } else { "off" },
            "stopped as another worker left: its orders came back to this one too late to be written; they are still unpaid");
    }
}

/// Waits for `task` at most `limit`, then aborts it.
async fn stop_within(task: JoinHandle<()>, limit: Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(limit, task).await.is_err() {
        abort.abort();
    }
}

/// Makes sure a master publishes `expired` events (turning them on with `--configure-redis`)
/// and lets the user run what the worker sends; at start any failure stops the worker.
async fn check_master(
    master: &RedisTarget,
    settings: &Settings,
    options: &WorkerOptions,
) -> Result<(), Error> {
    let mut conn = master.connect().await?;
    master
        .ensure_notifications(&mut conn, options.configure_redis)
        .await?;
    master
        .check_permissions(&mut conn, KeyPattern::new(&settings.keys).prefix())
        .await?;
    Ok(())
}

/// The MySQL writer (with the Laravel job sink when `ORDER_EXPIRE_DISPATCH` is set), and the
/// outbox drainer when jobs go to a redis queue.
async fn open_writer(
    settings: &Settings,
    options: &WorkerOptions,
) -> Result<(Arc<Writer>, Option<OutboxDrainer>), Error> {
    let db = Database::connect(&settings.database, options.concurrency).await?;
    let (path, why) = db.server().await?.write_path(options.lock_wait);
    let jobs = JobSink::new(settings, &db).await?;
    let outbox = match &jobs {
        Some(jobs) => OutboxDrainer::new(settings, db.clone(), jobs.outbox_written()).await?,
        None => None,
    };
    let writer = Writer::new(db, &settings.schema, settings.timezone.clone())
        .await?
        .with_jobs(jobs)
        .with_write_path(path, why);
    Ok((Arc::new(writer), outbox))
}

/// What the worker writes to, and where its settings came from, as its first lines.
fn log_start(settings: &Settings, writer: &Writer) {
    if let Some(dispatch) = &settings.dispatch {
        tracing::info!(job = %dispatch.class, connection = %dispatch.connection,
            driver = dispatch.target.driver(), queue = %dispatch.queue,
            "queueing a Laravel job for every cancelled order");
    }
    for job in &settings.key_jobs {
        tracing::info!(event = "key_job", key_type = %job.key_type, job = %job.class, property = %job.property,
            connection = %job.connection, driver = job.target.driver(), queue = %job.queue, delivery = "at-least-once",
            "queueing a Laravel job with the id whenever a key of this type expires");
    }
    tracing::info!(mysql = %writer.database().endpoint(), driver = settings.database.driver(),
        database = %settings.database.database(),
        orders = %settings.schema.orders, products = %settings.schema.products,
        timezone = %settings.timezone.name, write_path = %writer.write_path().0,
        write_path_reason = writer.write_path().1, "writing to {}", writer.database().title());
    match &settings.source {
        ConfigSource::ConfigCache(cache) => {
            tracing::info!(file = %cache.display(), "read the app's configuration cache (Laravel ignores .env while it exists)");
        }
        ConfigSource::Config => tracing::info!(
            "read the app's config/app.php, config/cache.php and config/database.php with its .env"
        ),
        ConfigSource::Env => tracing::info!(
            "no config/ folder beside the .env: using the stock config files of the app's Laravel version"
        ),
        ConfigSource::Laravel { php, because } => tracing::info!(
            php = %php, because = %because,
            "asked the app's own Laravel for its configuration (nothing of it booted but the .env and the config)"
        ),
    }
}

/// Subscribes (before anything else, so that nothing expires unseen), then starts the three
/// event sources on one queue; returns their tasks and the queue's receiving end.
async fn start_sources(
    settings: &Settings,
    options: &WorkerOptions,
    redis: &RedisServers,
    writer: &Writer,
    key_jobs: Option<(Vec<(String, KeyPattern)>, KeyJobSender)>,
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
) -> Result<(Vec<JoinHandle<()>>, OrderQueue), Error> {
    // Reconnects of the subscription trigger a sweep: whatever expired meanwhile was missed.
    let resubscribed = Arc::new(Notify::new());
    let pattern = KeyPattern::new(&settings.keys);
    let reconciler = Reconciler::new(
        settings,
        writer.database().clone(),
        redis.clone(),
        pattern.clone(),
    );
    let sources = TopologySource::new(
        redis.clone(),
        keyspace_sources(&pattern, stats, &resubscribed, key_jobs),
        options.configure_redis,
        Arc::clone(&resubscribed),
    );
    // Subscribe before the first sweep, so that nothing expires unseen between the two.
    let subscriptions = sources.subscribe().await?;
    let (queue, orders) = order_queue(options.queue_size, Arc::clone(stats));
    let watcher = DeadlineWatcher::new(settings, writer.database().clone(), redis.clone(), pattern);
    let watching = stats.health.heartbeat("deadline watcher");
    let mut tasks = vec![
        tokio::spawn(sources.run(
            subscriptions,
            queue.clone(),
            shutdown.clone(),
            stats.health.heartbeat("topology"),
        )),
        tokio::spawn(watcher.run(queue.clone(), shutdown.clone(), watching)),
    ];
    match reconciler {
        Some(reconciler) => tasks.push(tokio::spawn(reconcile_loop(
            reconciler,
            queue,
            resubscribed,
            Sweeps {
                interval: settings.recovery.sweep_interval,
                unindexed: sweep_index_missing(settings, writer.database()).await,
            },
            Arc::clone(stats),
            shutdown.clone(),
        ))),
        None => tracing::warn!(
            "ORDER_EXPIRE_TTL is not set, so orders whose expired event is missed (worker down, \
             Redis restarted, cache:clear) are not recovered: set it to the TTL the app passes to put()"
        ),
    }
    Ok((tasks, orders))
}

/// Makes each master's keyspace subscription: the same keys, queues and counters for all, and
/// one limit on their malformed-key warnings.
fn keyspace_sources(
    pattern: &KeyPattern,
    stats: &Arc<Stats>,
    resubscribed: &Arc<Notify>,
    key_jobs: Option<(Vec<(String, KeyPattern)>, KeyJobSender)>,
) -> SourceFactory {
    let pattern = pattern.clone();
    let stats = Arc::clone(stats);
    let resubscribed = Arc::clone(resubscribed);
    let warnings = Arc::new(Throttle::per_minute());
    Box::new(move |target| {
        let source = KeyspaceSource::new(target, pattern.clone(), Arc::clone(&stats))
            .on_resubscribe(Arc::clone(&resubscribed))
            .with_warnings(Arc::clone(&warnings));
        match &key_jobs {
            Some((types, queue)) => source.with_key_jobs(types.clone(), queue.clone()),
            None => source,
        }
    })
}

/// Waits (briefly: nothing may hold the exit past the stop deadline) for the outbox drainer,
/// the sources and the MySQL pool.
async fn finish(
    outbox_task: Option<JoinHandle<()>>,
    sources: Vec<JoinHandle<()>>,
    writer: Arc<Writer>,
) {
    if let Some(task) = outbox_task {
        let abort = task.abort_handle();
        if tokio::time::timeout(ABANDON_GRACE, task).await.is_err() {
            abort.abort();
            tracing::warn!(
                "the outbox was not drained at exit; the next start pushes what is left"
            );
        }
    }
    // The sources stop on the same signal; none may hold the exit past the deadline.
    for task in sources {
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
        tracing::debug!("database connections still busy at exit; the server rolls them back");
    }
}

/// The stop summary: every counter, on the `stopped` event.
fn log_stopped(stats: &Stats) {
    tracing::info!(
        event = "stopped",
        events = Stats::get(&stats.events),
        cancelled = Stats::get(&stats.cancelled),
        key_jobs = Stats::get(&stats.key_jobs),
        skipped = stats.skipped(),
        unrelated = Stats::get(&stats.unrelated),
        malformed = Stats::get(&stats.malformed),
        retries = Stats::get(&stats.retries),
        dropped = Stats::get(&stats.dropped),
        parked = Stats::get(&stats.parked),
        abandoned = Stats::get(&stats.abandoned),
        "stopped"
    );
}

/// Checks MySQL for readiness every [`MYSQL_CHECK_EVERY`], until `shutdown`.
async fn check_mysql(mut probe: DbProbe, stats: Arc<Stats>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(MYSQL_CHECK_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let result = probe.check().await.map_err(|e| e.to_string());
        stats.health.database_checked(result);
    }
}

/// When a sweep finished, in seconds since the Unix epoch (for the metric).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The longest wait between two sweeps that found nothing while the `(status, created_at)`
/// index is missing: each such sweep reads the whole orders table.
const UNINDEXED_IDLE_SWEEP: Duration = Duration::from_secs(300);

/// How often sweeps run.
struct Sweeps {
    /// `ORDER_EXPIRE_SWEEP_INTERVAL`.
    interval: Duration,
    /// The `(status, created_at)` index is missing: sweeps that find nothing back off.
    unindexed: bool,
}

impl Sweeps {
    /// The wait after a sweep that found `overdue` orders, the last wait being `last`: the
    /// interval, doubled after each idle sweep up to [`UNINDEXED_IDLE_SWEEP`] without the index.
    fn next(&self, last: Duration, overdue: usize) -> Duration {
        if !self.unindexed || overdue > 0 {
            return self.interval;
        }
        (last * 2).min(UNINDEXED_IDLE_SWEEP.max(self.interval))
    }
}

/// Whether the sweeps' index is missing, said once at start (reconciliation mode only: in
/// events-only mode nothing reads the orders by status).
async fn sweep_index_missing(settings: &Settings, db: &Database) -> bool {
    match db.missing_sweep_index(&settings.schema).await {
        Ok(Some(statement)) => {
            tracing::warn!(event = "sweep_index_missing", add = %statement,
                idle_sweeps_every_s = UNINDEXED_IDLE_SWEEP.as_secs(),
                "no index on the orders' ({}, created_at): each reconciliation sweep reads the whole orders table, so sweeps that find nothing back off to one every 5 min (a sweep that finds an overdue order, or a resubscription, brings ORDER_EXPIRE_SWEEP_INTERVAL back); add the index", settings.schema.order_status.as_str());
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "cannot tell whether the sweeps' index exists");
            false
        }
    }
}

/// The background reconciliation: a sweep now, after every resubscribe, and every interval
/// (backing off while idle without the index: [`Sweeps::next`]).
async fn reconcile_loop(
    reconciler: Reconciler,
    queue: QueueSender,
    resubscribed: Arc<Notify>,
    sweeps: Sweeps,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut interval = sweeps.interval;
    let heartbeat = stats.health.heartbeat("sweep loop");
    let mut failing = false;
    // The first pass may meet the backlog of an outage: it says how far it has got when it
    // lasts more than a few seconds. The later ones find what a moment missed.
    let at_start = LogProgress::new("sweep at start");
    let mut progress: Option<&dyn Progress> = Some(&at_start);
    loop {
        let started = Instant::now();
        tokio::select! {
            result = reconciler.sweep(&queue, &heartbeat, progress.take()) => match result {
                Ok(summary) => {
                    interval = sweeps.next(interval, summary.overdue);
                    stats.last_sweep.set(unix_now());
                    Stats::add_n(&stats.sweep_recovered, summary.overdue as u64);
                    if failing {
                        tracing::info!("sweeps work again");
                        failing = false;
                    }
                    if summary.overdue > 0 {
                        tracing::info!(event = "sweep_found_overdue", overdue = summary.overdue, examined = summary.examined,
                            took_ms = started.elapsed().as_millis() as u64,
                            "sweep found overdue unpaid orders whose expired event was missed; cancelling them");
                    } else {
                        tracing::debug!(examined = summary.examined, still_keyed = summary.still_keyed,
                            took_ms = started.elapsed().as_millis() as u64, "sweep: nothing missed");
                    }
                }
                Err(e) => {
                    interval = sweeps.interval;
                    if !failing {
                        tracing::warn!(error = %e, "sweep failed; trying again at the next interval");
                        failing = true;
                    }
                }
            },
            () = shutdown.cancelled() => return,
        }
        if pause(&heartbeat, interval, &resubscribed, &shutdown).await {
            return;
        }
    }
}

/// Waits `interval` or a resubscribe, beating meanwhile; `true` at the stop.
async fn pause(
    heartbeat: &Heartbeat,
    interval: Duration,
    resubscribed: &Notify,
    shutdown: &CancellationToken,
) -> bool {
    let next = async {
        tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = resubscribed.notified() => false,
            () = shutdown.cancelled() => true,
        }
    };
    heartbeat.waiting(next).await
}
