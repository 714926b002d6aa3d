//! The throughput and latency benchmark: order-expire against Redis's own emission rate and
//! against the blog post's PHP command, in one run.
//!
//! ```text
//! cargo bench --bench burst                  # bursts of 10k, 50k, 100k, 200k; 60 s steady; PHP
//! cargo bench --bench burst -- --smoke       # small sizes (what `cargo test --all-targets`,
//!                                            # and so CI, runs)
//! cargo bench --bench burst -- --sizes 10000,50000 --steady-seconds 30 --no-php
//! ```
//!
//! Per burst size N, with a fresh private redis-server (notifications on) and a fresh database:
//! N unpaid orders are placed, their keys are set to expire at the same instant (`PXAT`), and
//! we measure
//! * Redis's emission time: deadline to the last `expired` event an independent subscriber sees;
//! * order-expire's drain time: deadline to the moment all N orders are cancelled in MySQL;
//! * their ratio, orders per second, and the worker's peak RSS (`VmHWM`).
//!
//! Then 1,000 events per second for `--steady-seconds`: event-to-commit latency (p50, p99, max),
//! from the independent subscriber's arrival time to the commit time in the worker's JSON log.
//!
//! Then lateness: 200 orders with deadlines spread over 5 s in a cache database that also holds
//! 100,000 other keys with a TTL (Redis alone would publish their `expired` minutes late): commit
//! time minus deadline (p50, p99, max).
//!
//! Then the same bursts through the PHP reference command (`php artisan order:expire` in
//! `fixtures/laravel-app`, with `REDIS_PREFIX=` so that it hears the events at all), waiting as
//! long as it makes progress.
//!
//! Results: a table on stdout and in `docs/bench/results.md`, and `docs/bench/drain.svg` (drain
//! time against burst size for order-expire, PHP and Redis's emission), which the README shows.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{App, LaravelApp, RedisServer, TestDb};
use mysql_async::prelude::Queryable;

struct Options {
    /// Extra arguments for the worker (e.g. `--concurrency 2`).
    worker_args: Vec<String>,
    sizes: Vec<usize>,
    steady_seconds: u64,
    php: bool,
    php_sizes: Option<Vec<usize>>,
    out: Option<String>,
}

/// Extra worker arguments from `--worker-args`.
static WORKER_ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// The worker's arguments: JSON logs (the benchmark reads commit times from them) plus extras.
fn worker_args() -> Vec<&'static str> {
    let mut args = vec!["--log-format", "json"];
    args.extend(WORKER_ARGS.get().into_iter().flatten().map(String::as_str));
    args
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn mariadb_pid() -> Option<u32> {
    let out = std::process::Command::new("pidof")
        .arg("mariadbd")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn options() -> Options {
    let mut o = Options {
        worker_args: Vec::new(),
        sizes: vec![10_000, 50_000, 100_000, 200_000],
        steady_seconds: 60,
        php: true,
        php_sizes: None,
        out: Some("docs/bench".into()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` (CI) runs this without it, and
    // then it is the smoke run, so the benchmark cannot rot.
    if !args.iter().any(|a| a == "--bench") {
        o.sizes = vec![1_000, 5_000];
        o.steady_seconds = 5;
        o.php_sizes = Some(vec![1_000]);
        o.out = None;
    }
    let mut i = 0;
    let list = |v: &str| {
        v.split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect::<Vec<usize>>()
    };
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => {
                o.sizes = vec![1_000, 5_000];
                o.steady_seconds = 5;
                o.php_sizes = Some(vec![1_000]);
                o.out = None;
            }
            "--sizes" => {
                i += 1;
                o.sizes = list(args.get(i).map(String::as_str).unwrap_or(""));
            }
            "--php-sizes" => {
                i += 1;
                o.php_sizes = Some(list(args.get(i).map(String::as_str).unwrap_or("")));
            }
            "--steady-seconds" => {
                i += 1;
                o.steady_seconds = args.get(i).and_then(|s| s.parse().ok()).unwrap_or(60);
            }
            "--no-php" => o.php = false,
            "--worker-args" => {
                i += 1;
                o.worker_args = args
                    .get(i)
                    .map(|a| a.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
            }
            "--out" => {
                i += 1;
                o.out = args.get(i).cloned();
            }
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other}"),
        }
        i += 1;
    }
    o
}

/// Collects `expired` events for order keys: arrival time per order id.
struct Subscriber {
    arrivals: Arc<Mutex<HashMap<u64, SystemTime>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    fn start(redis: &RedisServer, prefix: &str) -> Self {
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut conn = redis.conn(0);
        let (a, s, prefix) = (Arc::clone(&arrivals), Arc::clone(&stop), prefix.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut pubsub = conn.as_pubsub();
            let _ = pubsub.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = pubsub.subscribe("__keyevent@1__:expired");
            let _ = ready_tx.send(());
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(msg) = pubsub.get_message() else {
                    continue;
                };
                let now = SystemTime::now();
                let payload: String = msg.get_payload().unwrap_or_default();
                let id = payload.strip_prefix(&prefix).and_then(|id| id.parse().ok());
                if let (Some(id), Ok(mut map)) = (id, a.lock()) {
                    map.insert(id, now);
                }
            }
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        Self {
            arrivals,
            thread: Some(thread),
            stop,
        }
    }

    fn last(&self) -> Option<SystemTime> {
        self.arrivals.lock().ok()?.values().max().copied()
    }

    fn arrivals(&self) -> HashMap<u64, SystemTime> {
        self.arrivals.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sets every order's key to expire at `deadline` (epoch ms), pipelined.
fn expire_all_at(redis: &RedisServer, prefix: &str, orders: &[u64], deadline: u64) {
    let mut conn = redis.conn(1);
    for chunk in orders.chunks(10_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{id}"))
                .arg(id.to_string())
                .arg("PXAT")
                .arg(deadline)
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("SET PXAT pipeline");
    }
}

async fn place(db: &TestDb, n: usize) -> Vec<u64> {
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        products.push(db.add_product(name, 4_000_000).await);
    }
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        ids.extend(db.place_orders(&products, chunk.len()).await);
    }
    ids
}

/// Waits until none of the `n` orders is unpaid any more, or until there has been no progress
/// for `stall`. Counting the shrinking set of unpaid orders keeps the poll cheap (an index range
/// on `status = 0`) even on 200k rows. Returns when that was seen and how many were cancelled.
async fn wait_cancelled(db: &TestDb, n: usize, stall: Duration) -> (SystemTime, usize) {
    let mut last_left = usize::MAX;
    let mut last_progress = Instant::now();
    let mut conn = db.conn().await;
    loop {
        let left: usize = conn
            .query_first::<i64, _>("SELECT COUNT(*) FROM orders WHERE status = 0")
            .await
            .ok()
            .flatten()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(n);
        let now = SystemTime::now();
        if left == 0 {
            return (now, n);
        }
        if left < last_left {
            last_left = left;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall {
            return (now, n.saturating_sub(left));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Debug, Clone)]
struct Burst {
    size: usize,
    emission_ms: u64,
    drain_ms: Option<u64>,
    done: usize,
    rss_kib: Option<u64>,
}

const KEY_PREFIX_DEFAULT: &str = "laravel_database_laravel_cache:ORDER_CONFIRM:";
const KEY_PREFIX_PHP: &str = "laravel_cache:ORDER_CONFIRM:";

async fn burst_ours(size: usize) -> Burst {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let orders = place(&db, size).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&worker_args());
    let subscriber = Subscriber::start(&redis, KEY_PREFIX_DEFAULT);
    let deadline = millis(SystemTime::now()) + 3000;
    expire_all_at(&redis, KEY_PREFIX_DEFAULT, &orders, deadline);
    let pids = [worker.pid(), mariadb_pid(), redis.pid()];
    let before: Vec<Option<f64>> = pids.iter().map(|p| p.and_then(cpu_seconds)).collect();
    let (_, done) = wait_cancelled(&db, size, Duration::from_secs(30)).await;
    let after: Vec<Option<f64>> = pids.iter().map(|p| p.and_then(cpu_seconds)).collect();
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.unwrap_or(0.0) - b.unwrap_or(0.0))
        .collect();
    eprintln!(
        "  CPU seconds from 3 s before the deadline to the last commit: worker {:.2}, mariadbd {:.2}, redis-server {:.2}",
        cpu[0], cpu[1], cpu[2]
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // the last log lines
    let emission = subscriber
        .last()
        .map(millis)
        .unwrap_or(deadline)
        .saturating_sub(deadline);
    // The last commit, to the microsecond, from the worker's own log.
    let last_commit_ms = commit_times(&worker.log())
        .into_iter()
        .map(|(_, us)| us / 1000)
        .max();
    Burst {
        size,
        emission_ms: emission,
        drain_ms: (done == size)
            .then_some(last_commit_ms)
            .flatten()
            .map(|ms| (ms.max(0) as u64).saturating_sub(deadline)),
        done,
        rss_kib: worker.pid().and_then(peak_rss_kib),
    }
}

async fn burst_php(size: usize) -> Burst {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let orders = place(&db, size).await;
    // REDIS_PREFIX= so that the command hears the events at all (phpredis prefixes SUBSCRIBE).
    let laravel = LaravelApp::new(&App::env_text(
        redis.port,
        &db,
        "REDIS_PREFIX=\nLOG_CHANNEL=stderr",
    ));
    let mut php = std::process::Command::new("php");
    php.current_dir(laravel.dir())
        .args(["artisan", "order:expire"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = php.spawn().expect("php");
    // Wait until the command has subscribed.
    let mut conn = redis.conn(0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("__keyevent@1__:expired")
            .query(&mut conn)
            .unwrap_or_default();
        if n.first().is_some_and(|(_, c)| *c > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let subscriber = Subscriber::start(&redis, KEY_PREFIX_PHP);
    let deadline = millis(SystemTime::now()) + 3000;
    expire_all_at(&redis, KEY_PREFIX_PHP, &orders, deadline);
    let (end, done) = wait_cancelled(&db, size, Duration::from_secs(30)).await;
    let emission = subscriber
        .last()
        .map(millis)
        .unwrap_or(deadline)
        .saturating_sub(deadline);
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Burst {
        size,
        emission_ms: emission,
        drain_ms: (done == size).then(|| millis(end).saturating_sub(deadline)),
        done,
        rss_kib: rss,
    }
}

struct Steady {
    events: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn steady(seconds: u64) -> Steady {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let n = (seconds * 1000) as usize;
    let orders = place(&db, n).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&worker_args());
    let subscriber = Subscriber::start(&redis, KEY_PREFIX_DEFAULT);
    let start = millis(SystemTime::now()) + 2000;
    let mut conn = redis.conn(1);
    for chunk in orders.iter().enumerate().collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for (i, id) in chunk {
            pipe.cmd("SET")
                .arg(format!("{KEY_PREFIX_DEFAULT}{id}"))
                .arg(id.to_string())
                .arg("PXAT")
                .arg(start + *i as u64)
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("SET PXAT pipeline");
    }
    wait_cancelled(&db, n, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let arrivals = subscriber.arrivals();
    let latencies: Vec<f64> = commit_times(&worker.log())
        .into_iter()
        .filter_map(|(order, committed_us)| {
            let arrived = arrivals.get(&order)?;
            let arrived_us = arrived.duration_since(UNIX_EPOCH).ok()?.as_micros() as i64;
            Some((committed_us - arrived_us) as f64 / 1000.0)
        })
        .collect();
    let (p50_ms, p99_ms, max_ms) = quantiles(latencies.clone());
    Steady {
        events: latencies.len(),
        p50_ms,
        p99_ms,
        max_ms,
    }
}

/// Commit time (epoch µs) per order, from the worker's JSON log.
fn commit_times(log: &str) -> Vec<(u64, i64)> {
    log.lines()
        .filter_map(|line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            if v["event"] != "orders_cancelled" {
                return None;
            }
            let committed = v["timestamp"]
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()?
                .as_microsecond();
            let ids: Vec<u64> = v["order_ids"]
                .as_str()?
                .split(',')
                .filter_map(|id| id.parse().ok())
                .collect();
            Some(ids.into_iter().map(move |id| (id, committed)))
        })
        .flatten()
        .collect()
}

/// p50, p99 and max of `values`.
fn quantiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        values
            .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (q(0.5), q(0.99), q(1.0))
}

/// Lateness after the deadline when the cache database holds `background` other keys with a
/// TTL (where Redis's own expiry would take minutes): `orders` deadlines spread over 5 s.
async fn lateness(background: usize, orders_n: usize) -> Steady {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let orders = place(&db, orders_n).await;
    let mut conn = redis.conn(1);
    for chunk_start in (0..background).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk_start..(chunk_start + 10_000).min(background) {
            pipe.cmd("SET")
                .arg(format!("laravel_database_laravel_cache:page:{i}"))
                .arg("x")
                .arg("EX")
                .arg(86_400)
                .ignore();
        }
        pipe.query::<()>(&mut conn)
            .expect("fill the cache database");
    }
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&worker_args());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = millis(SystemTime::now()) + 2000;
    let spread = 5000 / orders_n.max(1) as u64;
    let mut deadlines = HashMap::new();
    let mut pipe = redis::pipe();
    for (i, id) in orders.iter().enumerate() {
        let deadline = start + i as u64 * spread;
        deadlines.insert(*id, deadline as i64 * 1000);
        pipe.cmd("SET")
            .arg(format!("{KEY_PREFIX_DEFAULT}{id}"))
            .arg(id.to_string())
            .arg("PXAT")
            .arg(deadline)
            .ignore();
    }
    pipe.query::<()>(&mut conn).expect("SET PXAT");
    wait_cancelled(&db, orders_n, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late: Vec<f64> = commit_times(&worker.log())
        .into_iter()
        .filter_map(|(order, committed_us)| {
            Some((committed_us - deadlines.get(&order)?) as f64 / 1000.0)
        })
        .collect();
    let (p50_ms, p99_ms, max_ms) = quantiles(late.clone());
    Steady {
        events: late.len(),
        p50_ms,
        p99_ms,
        max_ms,
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map(|m| format!("{:.2} s", m as f64 / 1000.0))
        .unwrap_or_else(|| "did not finish".into())
}

fn report(
    ours: &[Burst],
    php: &[Burst],
    steady: &Steady,
    late: &Steady,
    background: usize,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| burst | Redis emission | order-expire drain | drain / emission | order-expire orders/s | peak RSS | PHP command drain | PHP orders/s | speed-up |"
    );
    let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for b in ours {
        let php = php.iter().find(|p| p.size == b.size);
        let rate = |x: &Burst| {
            x.drain_ms
                .map(|d| x.size as f64 / (d.max(1) as f64 / 1000.0))
        };
        let ours_rate = rate(b);
        let php_rate = php.and_then(rate);
        let php_partial = php.map(|p| (p.done as f64) / 30.0f64.max(1.0));
        let _ = writeln!(
            t,
            "| {} | {:.2} s | {} | {} | {} | {} | {} | {} | {} |",
            b.size,
            b.emission_ms as f64 / 1000.0,
            secs(b.drain_ms),
            b.drain_ms
                .map(|d| format!("{:.2}", d as f64 / b.emission_ms.max(1) as f64))
                .unwrap_or("-".into()),
            ours_rate.map(|r| format!("{r:.0}")).unwrap_or("-".into()),
            b.rss_kib
                .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
                .unwrap_or("-".into()),
            php.map(|p| if p.drain_ms.is_some() {
                secs(p.drain_ms)
            } else {
                format!("stalled at {} of {}", p.done, p.size)
            })
            .unwrap_or("not run".into()),
            php_rate.map(|r| format!("{r:.0}")).unwrap_or("-".into()),
            match (ours_rate, php_rate) {
                (Some(a), Some(b)) => format!("{:.0}x", a / b),
                _ => "-".into(),
            },
        );
        let _ = php_partial;
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Steady 1,000 events/s: {} events, event-to-commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
        steady.events, steady.p50_ms, steady.p99_ms, steady.max_ms
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Lateness after the deadline with {background} other keys with a TTL in the cache database: {} orders, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms.",
        late.events, late.p50_ms, late.p99_ms, late.max_ms
    );
    t
}

fn chart(path: &Path, ours: &[Burst], php: &[Burst]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = ours.iter().map(|b| b.size).max().unwrap_or(1) as f64 / 1000.0;
    let max_y = ours
        .iter()
        .chain(php)
        .filter_map(|b| b.drain_ms)
        .chain(ours.iter().map(|b| b.emission_ms))
        .max()
        .unwrap_or(1000) as f64
        / 1000.0;
    let mut c = ChartBuilder::on(&root)
        .caption("Drain time of a same-second burst", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x * 1.05, (0.05f64..max_y * 1.5).log_scale())?;
    c.configure_mesh()
        .x_desc("orders expiring in the same second (thousands)")
        .y_desc("seconds after the deadline (log)")
        .draw()?;
    let series = |bursts: &[Burst], f: &dyn Fn(&Burst) -> Option<u64>| -> Vec<(f64, f64)> {
        bursts
            .iter()
            .filter_map(|b| Some((b.size as f64 / 1000.0, f(b)? as f64 / 1000.0)))
            .collect()
    };
    let lines = [
        ("PHP order:expire", RED, series(php, &|b| b.drain_ms)),
        ("order-expire", BLUE, series(ours, &|b| b.drain_ms)),
        (
            "Redis emission (last expired event)",
            BLACK,
            series(ours, &|b| Some(b.emission_ms)),
        ),
    ];
    for (name, color, points) in lines {
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        c.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let _ = WORKER_ARGS.set(o.worker_args.clone());
    let mut ours = Vec::new();
    for size in &o.sizes {
        let b = burst_ours(*size).await;
        eprintln!(
            "order-expire {size}: emission {} ms, drain {:?} ms, rss {:?} KiB",
            b.emission_ms, b.drain_ms, b.rss_kib
        );
        ours.push(b);
    }
    let steady = steady(o.steady_seconds).await;
    eprintln!(
        "steady: p50 {:.2} ms p99 {:.2} ms max {:.2} ms over {} events",
        steady.p50_ms, steady.p99_ms, steady.max_ms, steady.events
    );
    let background = if o.out.is_some() { 100_000 } else { 10_000 };
    let late = lateness(background, 200).await;
    eprintln!(
        "lateness among {background} TTL keys: p50 {:.0} ms p99 {:.0} ms max {:.0} ms",
        late.p50_ms, late.p99_ms, late.max_ms
    );
    let mut php = Vec::new();
    if o.php {
        for size in o.php_sizes.clone().unwrap_or_else(|| o.sizes.clone()) {
            let b = burst_php(size).await;
            eprintln!("php {size}: drain {:?} ms ({} done)", b.drain_ms, b.done);
            php.push(b);
        }
    }
    let table = report(&ours, &php, &steady, &late, background);
    println!("{table}");
    if let Some(out) = &o.out {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(out);
        std::fs::create_dir_all(&dir).expect("output dir");
        let header = format!(
            "Generated by `cargo bench --bench burst` on {} ({} cores).\n\n",
            jiff::Timestamp::now().strftime("%Y-%m-%d"),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        std::fs::write(dir.join("results.md"), format!("{header}{table}"))
            .expect("write results.md");
        if let Err(e) = chart(&dir.join("drain.svg"), &ours, &php) {
            eprintln!("chart: {e}");
        }
    }
    // A smoke run must show that the pipeline works at all.
    assert!(
        ours.iter().all(|b| b.drain_ms.is_some()),
        "order-expire did not drain every burst"
    );
    assert!(steady.events > 0, "no latency measured");
    assert!(late.events > 0, "no lateness measured");
}
