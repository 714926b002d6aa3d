//! Latency outside bursts: a steady 1,000 events a second, and lateness among many TTL keys.
//!
//! * Steady: one key expiring every millisecond; each order's event-to-commit latency is its
//!   commit time in the worker's log minus the moment the independent subscriber received its
//!   `expired` event.
//! * Lateness: orders whose deadlines are spread over 5 s in a cache database that also holds
//!   many other keys with a TTL (where Redis's own expiry scan would take minutes to reach
//!   them): commit time minus deadline.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::{App, RedisServer};
use crate::database::BenchServer;
use crate::emission::{self, KEY_PREFIX, Subscriber};
use crate::logs::{self, LogTail};
use crate::measure::{wait_drained, worker_args};

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub orders: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub problems: Vec<String>,
}

/// p50, p99 and max of `values` (NaN when empty).
pub fn quantiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        values
            .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (q(0.5), q(0.99), q(1.0))
}

fn latency(values: Vec<f64>, problems: Vec<String>) -> Latency {
    let orders = values.len();
    let (p50_ms, p99_ms, max_ms) = quantiles(values);
    Latency {
        orders,
        p50_ms,
        p99_ms,
        max_ms,
        problems,
    }
}

/// 1,000 events a second for `seconds` through one worker.
pub async fn steady(server: &BenchServer, seconds: u64, extra: &[String]) -> Latency {
    let redis = RedisServer::start();
    let n = (seconds * 1000) as usize;
    let placed = server.place(n).await;
    let app = App::new(&redis, &placed.db, "");
    let worker = app.start_worker(&worker_args(extra));
    let mut tails = vec![LogTail::new(worker.log_path())];
    let subscriber = Subscriber::start(&redis, KEY_PREFIX);
    let start = emission::now_ms() + emission::lead_ms(n);
    emission::expire_at(&redis, KEY_PREFIX, &placed.orders, |i| start + i as u64);
    let done = wait_drained(&mut tails, n).await;
    subscriber.wait_for(n, Duration::from_secs(5)).await;
    let what = format!("steady, {n} orders");
    let mut problems = placed.audit(&what, true).await;
    problems.extend(logs::exactly_once(&what, &placed.orders, &tails));
    if done < n {
        problems.push(format!("{what}: {done} cancelled"));
    }
    let arrivals = subscriber.arrivals();
    let values = tails[0]
        .commits()
        .iter()
        .filter_map(|(order, committed_us)| {
            let arrived = arrivals.get(order)?;
            let arrived_us = arrived.duration_since(UNIX_EPOCH).ok()?.as_micros() as i64;
            Some((committed_us - arrived_us) as f64 / 1000.0)
        })
        .collect();
    latency(values, problems)
}

/// `orders` deadlines spread over 5 s among `background` other keys with a day's TTL.
pub async fn lateness(
    server: &BenchServer,
    background: usize,
    orders: usize,
    extra: &[String],
) -> Latency {
    let redis = RedisServer::start();
    let placed = server.place(orders).await;
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
            .unwrap_or_else(|e| panic!("fill the cache database: {e}"));
    }
    let app = App::new(&redis, &placed.db, "");
    let worker = app.start_worker(&worker_args(extra));
    let mut tails = vec![LogTail::new(worker.log_path())];
    let start = emission::now_ms() + 2000;
    let spread = 5000 / orders.max(1) as u64;
    let deadline = |i: usize| start + i as u64 * spread;
    let deadlines: HashMap<u64, i64> = placed
        .orders
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, deadline(i) as i64 * 1000))
        .collect();
    emission::expire_at(&redis, KEY_PREFIX, &placed.orders, deadline);
    let done = wait_drained(&mut tails, orders).await;
    let what = format!("lateness, {orders} orders among {background} keys");
    let mut problems = placed.audit(&what, true).await;
    problems.extend(logs::exactly_once(&what, &placed.orders, &tails));
    if done < orders {
        problems.push(format!("{what}: {done} cancelled"));
    }
    let values = tails[0]
        .commits()
        .iter()
        .filter_map(|(order, committed_us)| {
            Some((committed_us - deadlines.get(order)?) as f64 / 1000.0)
        })
        .collect();
    latency(values, problems)
}
