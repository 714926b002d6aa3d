//! A burst through order-expire: N unpaid orders whose keys expire at one instant, drained by
//! one or more workers started with the same `.env`.
//!
//! Every time is measured from the deadline: Redis's emission (the independent subscriber's last
//! event) and the drain (the last commit in any worker's JSON log). CPU per process and the
//! database's status counters cover the window from the deadline to the moment the logs show
//! every order cancelled; peak RSS is each worker's `VmHWM` at the end.

use std::time::{Duration, Instant};

use crate::common::{App, RedisServer, Worker};
use crate::database::{BenchServer, Counters, Placed};
use crate::emission::{self, KEY_PREFIX, Subscriber};
use crate::logs::{self, LogTail};
use crate::process::{self, CpuSample, Watched};

/// A drain that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(30);

/// One burst through order-expire.
#[derive(Debug, Clone)]
pub struct OursRun {
    pub size: usize,
    pub workers: usize,
    pub emission_ms: Option<u64>,
    /// `None` when not every order was cancelled.
    pub drain_ms: Option<u64>,
    pub cancelled: usize,
    /// Each worker's peak RSS, KiB.
    pub peak_rss_kib: Vec<Option<u64>>,
    pub cpu: Vec<(String, f64)>,
    pub counters: Counters,
    /// The `write_path` the workers logged, if they did.
    pub write_paths: Vec<String>,
    /// How long after their start the workers went idle (every order learned); `None` when they
    /// were still busy at the deadline, so the drain includes some of their start-up.
    pub settled_ms: Option<u64>,
    pub problems: Vec<String>,
}

/// The worker's arguments: JSON logs (the benchmark reads commit times from them) and `extra`.
pub fn worker_args(extra: &[String]) -> Vec<&str> {
    let mut args = vec!["--log-format", "json"];
    args.extend(extra.iter().map(String::as_str));
    args
}

/// The processes of a run, by role.
fn watched(server: &BenchServer, redis: &RedisServer, workers: &[Worker]) -> Vec<Watched> {
    let mut list: Vec<Watched> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| Watched::new(format!("worker {}", i + 1), w.pid()))
        .collect();
    list.push(Watched::new("redis-server", redis.pid()));
    list.push(Watched::new("mariadbd", server.pid));
    list.push(Watched::benchmark());
    list
}

/// Follows the workers' logs until `n` orders are reported cancelled in all, or nothing moves
/// for [`STALL`]. Returns how many were.
pub async fn wait_drained(tails: &mut [LogTail], n: usize) -> usize {
    let mut last = 0;
    let mut moved = Instant::now();
    loop {
        for t in tails.iter_mut() {
            t.poll();
        }
        let done: usize = tails.iter().map(LogTail::cancelled).sum();
        if done >= n {
            return done;
        }
        if done > last {
            last = done;
            moved = Instant::now();
        } else if moved.elapsed() > STALL {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Time for `workers` freshly started workers to learn `size` pending orders (their deadline
/// watchers read every unpaid order and its key's TTL once) before the burst: half a second to
/// start each, and 20 µs per order and worker.
fn learning_ms(size: usize, workers: usize) -> u64 {
    500 * workers as u64 + (size * workers) as u64 / 50
}

/// Waits until the run is idle: the workers, redis-server and mariadbd together use less than
/// 50 ms of CPU in half a second (a worker learning orders keeps all three busy: it reads the
/// orders and asks Redis for each key's TTL). Gives up at Unix millisecond `until`. Returns how
/// long it took.
async fn wait_idle(procs: &[Watched], until: u64) -> Option<u64> {
    let start = Instant::now();
    let mut sample = CpuSample::take(procs);
    while emission::now_ms() + 500 < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used: f64 = sample
            .until_now()
            .iter()
            .filter(|(role, _)| role != "benchmark")
            .map(|(_, s)| s)
            .sum();
        if used < 0.05 {
            return Some(start.elapsed().as_millis() as u64);
        }
        sample = CpuSample::take(procs);
    }
    None
}

/// A burst of `size` orders through `workers` workers (each with `extra` arguments).
///
/// The keys are written before the workers start, with a deadline far enough ahead for them to
/// learn every order, as workers that were running while the orders were placed would have:
/// the drain measures the burst, not the workers' start-up.
pub async fn burst(server: &BenchServer, size: usize, workers: usize, extra: &[String]) -> OursRun {
    let redis = RedisServer::start();
    let placed = server.place(size).await;
    let subscriber = Subscriber::start(&redis, KEY_PREFIX);
    let deadline = emission::now_ms() + emission::lead_ms(size) + learning_ms(size, workers);
    emission::expire_at(&redis, KEY_PREFIX, &placed.orders, |_| deadline);
    let mut problems = Vec::new();
    if emission::now_ms() + learning_ms(size, workers) > deadline {
        problems.push(format!(
            "{size} x {workers}: the keys were not all written in time to be learned before their deadline"
        ));
    }
    let app = App::new(&redis, &placed.db, "");
    let running: Vec<Worker> = (0..workers)
        .map(|_| app.start_worker(&worker_args(extra)))
        .collect();
    let mut tails: Vec<LogTail> = running.iter().map(|w| LogTail::new(w.log_path())).collect();
    let procs = watched(server, &redis, &running);
    let settled_ms = wait_idle(&procs, deadline).await;
    emission::sleep_until_ms(deadline).await;
    let cpu = CpuSample::take(&procs);
    let status = server.status().await;
    let done = wait_drained(&mut tails, size).await;
    let cpu = cpu.until_now();
    let counters = server.status().await.since(&status);
    subscriber.wait_for(size, Duration::from_secs(5)).await;
    let what = format!("order-expire, {size} orders, {workers} worker(s)");
    problems.extend(finish(&what, &placed, &tails).await);
    let drain_ms = (done == size)
        .then(|| tails.iter().filter_map(LogTail::last_commit_us).max())
        .flatten()
        .map(|us| ((us / 1000).max(0) as u64).saturating_sub(deadline));
    OursRun {
        size,
        workers,
        emission_ms: subscriber.emission_ms(deadline),
        drain_ms,
        cancelled: done,
        peak_rss_kib: running
            .iter()
            .map(|w| w.pid().and_then(process::peak_rss_kib))
            .collect(),
        cpu,
        counters,
        write_paths: tails
            .iter()
            .filter_map(|t| t.write_path().map(str::to_string))
            .collect(),
        settled_ms,
        problems,
    }
}

/// The correctness check of a run through order-expire: the rows (every order cancelled, stock
/// exact) and the logs (each order reported by exactly one worker).
async fn finish(what: &str, placed: &Placed, tails: &[LogTail]) -> Vec<String> {
    let mut problems = placed.audit(what, true).await;
    problems.extend(logs::exactly_once(what, &placed.orders, tails));
    problems
}

/// The memory of pending orders: one worker, `size` orders expiring at one instant.
#[derive(Debug, Clone)]
pub struct MillionRun {
    pub size: usize,
    /// The worker's RSS idle, before any order existed, KiB.
    pub base_kib: Option<u64>,
    /// Its RSS with every order placed and its key written, just before the deadline, KiB.
    pub pending_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    pub emission_ms: Option<u64>,
    pub drain_ms: Option<u64>,
    pub problems: Vec<String>,
}

impl MillionRun {
    /// (peak - base) per order, in bytes.
    pub fn bytes_per_order(&self) -> Option<f64> {
        let (peak, base) = (self.peak_kib?, self.base_kib?);
        Some(peak.saturating_sub(base) as f64 * 1024.0 / self.size.max(1) as f64)
    }
}

/// Keys are written with a distant deadline as their orders are placed (the worker learns them
/// as it would in production), then all moved to one instant.
const PLACEHOLDER_TTL_MS: u64 = 3_600_000;

/// The 1M-order burst: the worker starts on an empty database and idles (its base RSS), the
/// orders are placed in chunks with their keys (as an app would, the worker watching), then
/// every key is set to expire at one instant. `(peak - base) / size` is what a pending order
/// costs.
pub async fn million(server: &BenchServer, size: usize, extra: &[String]) -> MillionRun {
    let redis = RedisServer::start();
    let mut placed = server.empty().await;
    let app = App::new(&redis, &placed.db, "");
    let worker = app.start_worker(&worker_args(extra));
    let mut tails = vec![LogTail::new(worker.log_path())];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_kib = worker.pid().and_then(process::rss_kib);
    let far = emission::now_ms() + PLACEHOLDER_TTL_MS;
    let mut left = size;
    while left > 0 {
        let chunk = left.min(50_000);
        let ids = placed.add_orders(chunk).await;
        emission::expire_at(&redis, KEY_PREFIX, &ids, |_| far);
        left -= chunk;
    }
    // Let the worker learn every order (its discovery reads new orders every 200 ms) before
    // the burst: it goes idle once it has, as a worker running while the orders were placed
    // would be. Without this the burst met orders still being learned, whose keys were gone.
    let procs = watched(server, &redis, std::slice::from_ref(&worker));
    wait_idle(&procs, emission::now_ms() + 120_000).await;
    let pending_kib = worker.pid().and_then(process::rss_kib);
    let subscriber = Subscriber::start(&redis, KEY_PREFIX);
    let deadline = emission::now_ms() + emission::lead_ms(size);
    emission::expire_at(&redis, KEY_PREFIX, &placed.orders, |_| deadline);
    emission::sleep_until_ms(deadline).await;
    let done = wait_drained(&mut tails, size).await;
    subscriber.wait_for(size, Duration::from_secs(5)).await;
    let problems = finish(
        &format!("order-expire, {size} pending orders"),
        &placed,
        &tails,
    )
    .await;
    MillionRun {
        size,
        base_kib,
        pending_kib,
        peak_kib: worker.pid().and_then(process::peak_rss_kib),
        emission_ms: subscriber.emission_ms(deadline),
        drain_ms: (done == size)
            .then(|| tails[0].last_commit_us())
            .flatten()
            .map(|us| ((us / 1000).max(0) as u64).saturating_sub(deadline)),
        problems,
    }
}
