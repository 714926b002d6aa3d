//! What the worker knows about itself: the pipeline's counters and histograms (logged when it
//! stops, served at `/metrics`), the backlog of its queue, and the health of its loops and
//! connections.
//!
//! * this file: [`Stats`], every metric the stages record, registered once in a Prometheus
//!   registry under its name and help. Each handle (one per label value) is made here, up front:
//!   the hot path only increments an atomic, or takes a histogram's short lock, and never builds
//!   a label;
//! * [`backlog`]: how many orders wait in the queue and how old the oldest one is;
//! * [`health`]: the heartbeats of the work loops (liveness: `/healthz` and systemd's watchdog)
//!   and the state of the subscriptions and of MySQL (readiness: `/readyz`).

pub(crate) mod backlog;
pub(crate) mod health;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use self::backlog::Backlog;
use self::health::{Health, HealthOptions};

/// One label and its value, e.g. `("origin", "event")`: label values are static, so a handle is
/// looked up once and kept.
pub(crate) type Label = [(&'static str, &'static str); 1];

/// The Content-Type of [`Stats::encode`]'s output: Prometheus text format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How late a cancellation was, in seconds: 10 ms to 10 min.
const LATENESS_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// From an `expired` event to its commit, in seconds: 1 ms to 30 s.
const EVENT_TO_COMMIT_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Orders per committed transaction: 1 to the largest batch, 512.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A metric's name and help, as `/metrics` shows them.
type Metric = (&'static str, &'static str);

const CANCELLED: Metric = (
    "order_expire_orders_cancelled",
    "Orders cancelled with their stock returned",
);
const SKIPPED: Metric = (
    "order_expire_orders_skipped",
    "Orders left alone when written: paid (status or paid column), already cancelled, or missing",
);
const UNITS_RETURNED: Metric = (
    "order_expire_stock_units_returned",
    "Units of stock returned to products by cancellations",
);
const RECEIVED: Metric = (
    "order_expire_expired_received",
    "Expired orders that entered the writer queue, by where they were found: an expired event, the deadline watcher, or a sweep",
);
const IGNORED: Metric = (
    "order_expire_keys_ignored",
    "Expired keys that queued nothing: not an order key of this app (unrelated), or an order key whose id is not canonical (malformed)",
);
const DEDUPLICATED: Metric = (
    "order_expire_duplicates_skipped",
    "Orders not written again because they were handed to a writer moments before, by origin",
);
const LATENESS: Metric = (
    "order_expire_lateness_seconds",
    "Seconds from an order's deadline (its key's TTL, or created_at + ORDER_EXPIRE_TTL) to the commit that cancelled it",
);
const EVENT_TO_COMMIT: Metric = (
    "order_expire_event_to_commit_seconds",
    "Seconds from receiving an expired event to the commit of its order's transaction",
);
const BATCH_SIZE: Metric = (
    "order_expire_batch_size",
    "Orders per committed cancel transaction",
);
const DROPPED: Metric = (
    "order_expire_queue_dropped",
    "Expired orders and keys turned away by a full queue (a sweep recovers the orders); raise --queue-size",
);
const RECONNECTS: Metric = (
    "order_expire_reconnects",
    "Connections re-established after a loss: the Redis subscription (redis), the database's writes working again after failing (mysql, pgsql)",
);
const RETRIES: Metric = (
    "order_expire_write_retries",
    "Failed write attempts that were retried",
);
const BUSY: Metric = (
    "order_expire_orders_busy",
    "Orders skipped because another transaction held their row (FOR UPDATE SKIP LOCKED: the app mid-payment, another worker) and tried again shortly after",
);
const SWEEP_RECOVERED: Metric = (
    "order_expire_sweep_recovered",
    "Overdue unpaid orders a sweep found without their key and queued",
);
const PARKED: Metric = (
    "order_expire_orders_parked",
    "Orders the database refused with a permanent error; left unpaid until fixed by hand",
);
const KEY_JOBS: Metric = (
    "order_expire_key_jobs_queued",
    "Laravel jobs queued for expired keys of other types (ORDER_EXPIRE_ON_<TYPE>)",
);
const TAKEN_OVER: Metric = (
    "order_expire_taken_over",
    "Set-aside orders this worker wrote after all: their owner left (owner_left), the members changed (rebalanced), or they were still unpaid when their time ran out (not_written)",
);
const EVENTS: Metric = (
    "order_expire_keyspace_events",
    "Expired keyspace events received from Redis, for any key",
);
const LAST_SWEEP: Metric = (
    "order_expire_last_sweep_timestamp_seconds",
    "When the last reconciliation sweep finished, in seconds since the Unix epoch (0: none yet)",
);
const REPLICAS: Metric = (
    "order_expire_replicas",
    "Live workers of this orders table (member slots held), this one included; 1 when working alone",
);
const SET_ASIDE: Metric = (
    "order_expire_set_aside",
    "Expired orders this worker holds back because another live worker owns them",
);

const OUTBOX_BACKLOG: Metric = (
    "order_expire_outbox_backlog",
    "Jobs waiting in the redis queue's outbox for their push (parked rows included), as of the last drain",
);
const OUTBOX_PARKED: Metric = (
    "order_expire_outbox_parked",
    "Outbox rows that cannot be pushed (payload NULL, not UTF-8, or over the size limit), parked since the start and left in the outbox",
);

/// Registers each metric under its name and help and hands back its handle, which shares its
/// atomics with the registry's copy.
#[derive(Default)]
struct Registrar {
    registry: Registry,
}

impl Registrar {
    fn counter(&mut self, (name, help): Metric) -> Counter {
        let counter = Counter::default();
        self.registry.register(name, help, counter.clone());
        counter
    }

    fn family(&mut self, (name, help): Metric) -> Family<Label, Counter> {
        let family = Family::<Label, Counter>::default();
        self.registry.register(name, help, family.clone());
        family
    }

    fn histogram(&mut self, (name, help): Metric, buckets: &[f64]) -> Histogram {
        let histogram = Histogram::new(buckets.iter().copied());
        self.registry.register(name, help, histogram.clone());
        histogram
    }

    fn gauge(&mut self, (name, help): Metric) -> Gauge {
        let gauge = Gauge::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    fn float_gauge(&mut self, (name, help): Metric) -> Gauge<f64, AtomicU64> {
        let gauge = Gauge::<f64, AtomicU64>::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// `order_expire_build`: the running order-expire and the app's Laravel version.
    fn build_info(&mut self, laravel: Option<&str>) {
        self.registry.register(
            "order_expire_build",
            "The running order-expire and the app's Laravel version",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("laravel", laravel.unwrap_or("unknown").to_string()),
            ]),
        );
    }
}

/// The pipeline's metrics, shared by every stage. The fields are the handles the stages bump;
/// the registry holds the same handles (they share their atomics) with names and help.
#[derive(Debug)]
pub(crate) struct Stats {
    registry: Registry,
    /// `expired` events received, of any key.
    pub events: Counter,
    /// Events for keys that are not order keys of this app (`keys_ignored{reason="unrelated"}`).
    pub unrelated: Counter,
    /// Order keys whose id could not be read (`keys_ignored{reason="malformed"}`).
    pub malformed: Counter,
    /// Orders and keys that did not fit in their queue.
    pub dropped: Counter,
    /// Orders cancelled with their stock returned.
    pub cancelled: Counter,
    /// Orders left alone because they were paid (their status or their paid column).
    pub skipped_paid: Counter,
    /// Orders left alone because they were already cancelled.
    pub skipped_already_cancelled: Counter,
    /// Orders left alone because no such row exists.
    pub skipped_missing: Counter,
    /// Units of stock returned by the cancellations.
    pub units_returned: Counter,
    /// Orders a permanent MySQL error refused (a value out of range, a constraint): logged once
    /// and not retried by this process.
    pub parked: Counter,
    /// Orders left unwritten when the stop deadline passed.
    pub abandoned: Counter,
    /// Jobs queued for expired keys of other types (`ORDER_EXPIRE_ON_<TYPE>`).
    pub key_jobs: Counter,
    /// Failed write attempts that were retried.
    pub retries: Counter,
    /// Orders skipped because another transaction held their row (`FOR UPDATE SKIP LOCKED`),
    /// and tried again.
    pub busy: Counter,
    /// Redis subscriptions lost and re-established (`reconnects{server="redis"}`).
    pub resubscribes: Counter,
    /// The database's writes working again after failing (`reconnects{server="mysql"}`, or
    /// `"pgsql"` for a PostgreSQL app: the app's connection driver).
    pub database_recoveries: Counter,
    /// Orders a sweep found overdue without their key.
    pub sweep_recovered: Counter,
    /// When the last sweep finished, in seconds since the Unix epoch.
    pub last_sweep: Gauge<f64, AtomicU64>,
    /// Seconds from an order's deadline to the commit that cancelled it.
    pub lateness: Histogram,
    /// Seconds from an `expired` event to the commit of its order's transaction.
    pub event_to_commit: Histogram,
    /// Orders per committed transaction.
    pub batch_size: Histogram,
    /// Orders found due, by origin (label `origin`); the queue keeps one handle per origin.
    pub received: Family<Label, Counter>,
    /// Orders skipped by the dispatcher as reported moments before, by origin.
    pub deduplicated: Family<Label, Counter>,
    /// Live workers of this orders table this worker sees, itself included (1 when alone).
    pub replicas: Gauge,
    /// Orders set aside because another live worker owns them: not written by this one unless
    /// that worker leaves or does not write them in time.
    pub set_aside: Gauge,
    /// Set-aside orders taken back because their owner left (`taken_over{reason="owner_left"}`).
    pub taken_over_owner_left: Counter,
    /// Set-aside orders that became this worker's when the members changed (`reason="rebalanced"`).
    pub taken_over_rebalanced: Counter,
    /// Set-aside orders still unpaid when their time ran out (`reason="not_written"`).
    pub taken_over_not_written: Counter,
    /// Rows waiting in the redis queue's outbox, as of the last drain.
    pub outbox_backlog: Gauge,
    /// Outbox rows parked since the start (they cannot be pushed).
    pub outbox_parked: Gauge,
    /// The order queue's length and the age of its oldest order.
    pub backlog: Arc<Backlog>,
    /// The work loops' heartbeats, the subscriptions and MySQL.
    pub health: Arc<Health>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(None, "mysql", HealthOptions::default())
    }
}

impl Stats {
    /// Registers every metric; `laravel` is the app's Laravel version for `build_info`, `driver`
    /// the app's database driver (`mysql` or `pgsql`), the `server` of its reconnects.
    pub(crate) fn new(laravel: Option<&str>, driver: &'static str, health: HealthOptions) -> Self {
        let mut r = Registrar::default();
        let skipped = r.family(SKIPPED);
        let ignored = r.family(IGNORED);
        let reconnects = r.family(RECONNECTS);
        let taken_over = r.family(TAKEN_OVER);
        r.build_info(laravel);
        let backlog = Arc::new(Backlog::new());
        r.registry
            .register_collector(Box::new(Arc::clone(&backlog)));
        let health = Arc::new(Health::new(health));
        r.registry.register_collector(Box::new(Arc::clone(&health)));
        let label = |family: &Family<Label, Counter>, name, value| {
            family.get_or_create_owned(&[(name, value)])
        };
        Self {
            cancelled: r.counter(CANCELLED),
            units_returned: r.counter(UNITS_RETURNED),
            received: r.family(RECEIVED),
            deduplicated: r.family(DEDUPLICATED),
            lateness: r.histogram(LATENESS, &LATENESS_BUCKETS),
            event_to_commit: r.histogram(EVENT_TO_COMMIT, &EVENT_TO_COMMIT_BUCKETS),
            batch_size: r.histogram(BATCH_SIZE, &BATCH_SIZE_BUCKETS),
            dropped: r.counter(DROPPED),
            retries: r.counter(RETRIES),
            busy: r.counter(BUSY),
            last_sweep: r.float_gauge(LAST_SWEEP),
            sweep_recovered: r.counter(SWEEP_RECOVERED),
            parked: r.counter(PARKED),
            key_jobs: r.counter(KEY_JOBS),
            replicas: r.gauge(REPLICAS),
            set_aside: r.gauge(SET_ASIDE),
            outbox_backlog: r.gauge(OUTBOX_BACKLOG),
            outbox_parked: r.gauge(OUTBOX_PARKED),
            events: r.counter(EVENTS),
            // Not served at /metrics: the worker's stop line reports it.
            abandoned: Counter::default(),
            unrelated: label(&ignored, "reason", "unrelated"),
            malformed: label(&ignored, "reason", "malformed"),
            skipped_paid: label(&skipped, "reason", "paid"),
            skipped_already_cancelled: label(&skipped, "reason", "already_cancelled"),
            skipped_missing: label(&skipped, "reason", "missing"),
            resubscribes: label(&reconnects, "server", "redis"),
            database_recoveries: label(&reconnects, "server", driver),
            taken_over_owner_left: label(&taken_over, "reason", "owner_left"),
            taken_over_rebalanced: label(&taken_over, "reason", "rebalanced"),
            taken_over_not_written: label(&taken_over, "reason", "not_written"),
            backlog,
            health,
            registry: r.registry,
        }
    }

    pub(crate) fn add(counter: &Counter) {
        counter.inc();
    }

    pub(crate) fn add_n(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    pub(crate) fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    /// Orders left alone when written, whatever the reason.
    pub(crate) fn skipped(&self) -> u64 {
        [
            &self.skipped_paid,
            &self.skipped_already_cancelled,
            &self.skipped_missing,
        ]
        .into_iter()
        .map(Self::get)
        .sum()
    }

    /// Every metric in Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an encoder error would leave the text cut short.
        if let Err(e) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::debug!(error = %e, "encoding the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_the_registered_atomics() {
        let stats = Stats::new(Some("8.83.26"), "mysql", HealthOptions::default());
        Stats::add_n(&stats.cancelled, 3);
        Stats::add(&stats.skipped_paid);
        stats.lateness.observe(0.2);
        let text = stats.encode();
        assert!(
            text.contains("\norder_expire_orders_cancelled_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("order_expire_orders_skipped_total{reason=\"paid\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("order_expire_lateness_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("order_expire_build_info{version=\"")
                && text.contains("laravel=\"8.83.26\"} 1\n"),
            "{text}"
        );
        assert_eq!(stats.skipped(), 1);
    }
}
