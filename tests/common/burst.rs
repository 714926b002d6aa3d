//! A burst of orders placed by the fixture Laravel app (`php artisan orders:place`, Eloquent and
//! `Cache::store('redis')->put()` through the app's own Redis client) while a test changes the
//! Redis topology under it, and the audit of what the worker made of it.
//!
//! The database is the truth the audit reads: a batch the app could not finish (its Redis
//! client gave up in the middle of a failover) still leaves orders, some without a key, and
//! those must be cancelled too. The batches' output only adds each key's deadline, for the
//! lateness the tests print.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;

use super::{TestDb, Worker};

/// The stock `orders:place` gives each product it creates.
const INITIAL_STOCK: i64 = 1000;

/// How long one `php artisan orders:place` may take: its Redis client may retry for a while
/// during a failover (predis asks the sentinels again for up to 20 s).
const BATCH_TIMEOUT: Duration = Duration::from_secs(90);

/// How long after the burst every unpaid order may take to be cancelled: the TTL, a batch still
/// retrying, two sweeps, and room for a loaded machine.
const DRAIN: Duration = Duration::from_secs(45);

/// How long the worker may take to report listening on a new master once the burst is over.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The burst the topology tests place: batches of 20 orders for 14 s, keys of 5 s, one order in
/// 7 paid.
pub const PLAN: Plan = Plan {
    batch: 20,
    ttl: 5,
    pay_every: 7,
    duration: Duration::from_secs(14),
};

/// What to place.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Orders per `orders:place` run.
    pub batch: usize,
    /// The TTL of every key (`--ttl`), also the worker's `ORDER_EXPIRE_TTL`.
    pub ttl: u64,
    /// One order in `pay_every` of each batch is paid (status 1) as soon as its batch returns,
    /// well before its key expires.
    pub pay_every: usize,
    /// How long new batches keep starting.
    pub duration: Duration,
}

/// An order the app placed, with its key's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub id: u64,
    /// Unix milliseconds, read by the app when its `put()` returned.
    pub deadline_ms: i64,
    pub paid: bool,
}

/// What the burst placed.
#[derive(Debug, Default)]
pub struct Burst {
    pub orders: Vec<Placed>,
    /// The batches the app could not finish, with their error output.
    pub failed_batches: Vec<String>,
}

impl Burst {
    pub fn paid(&self) -> HashSet<u64> {
        self.orders
            .iter()
            .filter(|o| o.paid)
            .map(|o| o.id)
            .collect()
    }
}

/// Starts placing batches in the background from the Laravel app in `app_dir`; the handle
/// yields the [`Burst`] once the last batch started before `plan.duration` has returned.
pub fn start(
    app_dir: PathBuf,
    pool: mysql_async::Pool,
    plan: Plan,
) -> tokio::task::JoinHandle<Burst> {
    tokio::spawn(async move {
        let mut burst = Burst::default();
        let start = Instant::now();
        while start.elapsed() < plan.duration {
            match place_batch(&app_dir, plan).await {
                Ok(placed) => {
                    for (i, (id, deadline_ms)) in placed.into_iter().enumerate() {
                        let paid = i % plan.pay_every == plan.pay_every / 2 && pay(&pool, id).await;
                        burst.orders.push(Placed {
                            id,
                            deadline_ms,
                            paid,
                        });
                    }
                }
                Err(error) => burst.failed_batches.push(error),
            }
        }
        burst
    })
}

/// Runs a blocking harness step (a failover, a migration) from the test's task without stalling
/// the burst's.
pub fn blocking<T>(step: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(step)
}

/// Waits until the burst of [`start`] is over, checks that the app placed a real one (100
/// orders at least), then audits it (see [`audit`]), giving the worker [`DRAIN`] to finish.
pub async fn finish(
    placing: tokio::task::JoinHandle<Burst>,
    db: &TestDb,
    worker: &Worker,
) -> (Burst, Audit) {
    let burst = placing.await.expect("the burst task");
    assert!(
        burst.orders.len() >= 100,
        "the app placed a real burst ({} orders; failed batches: {:?})",
        burst.orders.len(),
        burst.failed_batches
    );
    let audit = audit(db, worker, &burst, DRAIN).await;
    (burst, audit)
}

/// Runs one `php artisan orders:place`; its orders' ids and deadlines.
async fn place_batch(app_dir: &Path, plan: Plan) -> Result<Vec<(u64, i64)>, String> {
    let mut command = tokio::process::Command::new("php");
    command
        .current_dir(app_dir)
        .env_clear()
        .arg("artisan")
        .arg("orders:place")
        .arg(plan.batch.to_string())
        .arg(format!("--ttl={}", plan.ttl))
        .arg(format!("--stock={INITIAL_STOCK}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BATCH_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("orders:place did not return within {BATCH_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run php: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "orders:place failed: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("orders:place printed no JSON ({e}): {stdout}"))?;
    let ids = json["orders"].as_array().cloned().unwrap_or_default();
    let deadlines = json["deadlines_ms"].as_array().cloned().unwrap_or_default();
    Ok(ids
        .iter()
        .zip(&deadlines)
        .filter_map(|(id, deadline)| Some((id.as_u64()?, deadline.as_i64()?)))
        .collect())
}

/// Marks an order paid, as the app's payment callback would; false if it was no longer unpaid.
async fn pay(pool: &mysql_async::Pool, id: u64) -> bool {
    let Ok(mut conn) = pool.get_conn().await else {
        return false;
    };
    conn.exec_drop(
        "UPDATE orders SET status = 1 WHERE id = ? AND status = 0",
        (id,),
    )
    .await
    .is_ok()
        && conn.affected_rows() == 1
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the audit found.
#[derive(Debug)]
pub struct Audit {
    pub orders: usize,
    pub paid: usize,
    pub cancelled: usize,
}

/// Waits (up to `timeout`) until no order of the database is left unpaid, then checks what a
/// shop owner would check: every order not paid is cancelled, and by exactly one cancellation
/// (the worker's `orders_cancelled` events name each one once); every paid order is untouched;
/// each product's stock is its initial stock less what the orders still hold.
async fn audit(db: &TestDb, worker: &Worker, burst: &Burst, timeout: Duration) -> Audit {
    let start = Instant::now();
    loop {
        let left = unpaid(db).await;
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "{} orders still unpaid {timeout:?} after the burst (first: {:?}); worker log tail:\n{}",
            left.len(),
            &left[..left.len().min(20)],
            tail(&worker.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rows = db.statuses().await;
    let paid = burst.paid();
    let mut cancelled: Vec<u64> = Vec::new();
    for (id, status) in &rows {
        if paid.contains(id) {
            assert_eq!(*status, 1, "paid order {id} was touched");
        } else {
            assert_eq!(*status, 2, "order {id} is not cancelled");
            cancelled.push(*id);
        }
    }

    // The log line follows the commit: give it a moment to appear.
    let start = Instant::now();
    while worker.cancelled_orders().len() < cancelled.len()
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reported = worker.cancelled_orders();
    let mut seen = HashSet::new();
    let twice: Vec<u64> = reported
        .iter()
        .copied()
        .filter(|id| !seen.insert(*id))
        .collect();
    assert!(
        twice.is_empty(),
        "orders cancelled more than once: {twice:?}"
    );
    let expected: HashSet<u64> = cancelled.iter().copied().collect();
    assert_eq!(
        seen, expected,
        "the worker's cancellations are exactly the unpaid orders"
    );

    db.assert_stock_returned(INITIAL_STOCK).await;
    Audit {
        orders: rows.len(),
        paid: paid.len(),
        cancelled: cancelled.len(),
    }
}

async fn unpaid(db: &TestDb) -> Vec<u64> {
    db.conn()
        .await
        .query("SELECT id FROM orders WHERE status = 0 ORDER BY id")
        .await
        .expect("read unpaid orders")
}

/// Lateness of cancellations after the key deadline, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Lateness {
    pub orders: usize,
    pub p50_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
}

impl std::fmt::Display for Lateness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} orders, p50 {} ms, p99 {} ms, max {} ms",
            self.orders, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// How late the worker cancelled the unpaid orders of `burst` that `which` selects (the cancel
/// time is the `timestamp` of the `orders_cancelled` line naming the order).
pub fn lateness(worker: &Worker, burst: &Burst, which: impl Fn(&Placed) -> bool) -> Lateness {
    let cancelled_at = cancel_times(worker);
    let mut values: Vec<i64> = burst
        .orders
        .iter()
        .filter(|o| !o.paid && which(o))
        .filter_map(|o| Some(cancelled_at.get(&o.id)? - o.deadline_ms))
        .collect();
    values.sort_unstable();
    let at = |q: f64| {
        values
            .get(((values.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Lateness {
        orders: values.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// Unix milliseconds of the commit that cancelled each order, from the worker's JSON log.
fn cancel_times(worker: &Worker) -> HashMap<u64, i64> {
    let mut times = HashMap::new();
    for line in worker.events("orders_cancelled") {
        let Some(at) = Worker::timestamp_ms(&line) else {
            continue;
        };
        let ids = line["order_ids"].as_str().unwrap_or("");
        for id in ids.split(',').filter_map(|id| id.parse().ok()) {
            times.entry(id).or_insert(at);
        }
    }
    times
}

/// The ports of the Redis servers the worker reported `listening` on (`redis` = `host:port`).
pub fn listening_ports(worker: &Worker) -> Vec<u16> {
    worker
        .events("listening")
        .iter()
        .filter_map(|line| line["redis"].as_str()?.rsplit(':').next()?.parse().ok())
        .collect()
}

/// Waits until the worker reports listening on the server on `port` (the new master after a
/// change); fails with the log's tail after [`LISTEN_TIMEOUT`].
pub async fn wait_listening_on(worker: &Worker, port: u16) {
    let start = Instant::now();
    while !listening_ports(worker).contains(&port) {
        assert!(
            start.elapsed() < LISTEN_TIMEOUT,
            "timed out after {LISTEN_TIMEOUT:?} waiting for the worker to listen on the new master {port}; worker log tail:\n{}",
            tail(&worker.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
