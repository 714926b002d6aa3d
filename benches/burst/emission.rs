//! Redis's side of a run: the keys, and an independent subscriber that sees what Redis emits.
//!
//! The subscriber is not the worker: it is a plain `SUBSCRIBE` on the same channel in the
//! benchmark's process, so the time of the last `expired` event it receives is Redis's emission
//! time, the earliest any listener could have known about the last order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::RedisServer;

/// The key Laravel 8 writes for an order with the default prefixes (the worker's).
pub const KEY_PREFIX: &str = "laravel_database_laravel_cache:ORDER_CONFIRM:";
/// The key with `REDIS_PREFIX=` (the only setting under which the PHP command hears events).
pub const KEY_PREFIX_PHP: &str = "laravel_cache:ORDER_CONFIRM:";
/// The cache database's expiry channel (`REDIS_CACHE_DB` 1).
pub const CHANNEL: &str = "__keyevent@1__:expired";

/// Unix milliseconds of `t`.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    millis(SystemTime::now())
}

/// Sleeps until Unix millisecond `at` (at once if it has passed).
pub async fn sleep_until_ms(at: u64) {
    let now = now_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// Collects the `expired` events of order keys: arrival time per order id.
pub struct Subscriber {
    arrivals: Arc<Mutex<HashMap<u64, SystemTime>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    /// Subscribes (and returns once subscribed) to the events of keys `<prefix><id>`.
    pub fn start(redis: &RedisServer, prefix: &str) -> Self {
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut conn = redis.conn(0);
        let (seen, stopped, prefix) =
            (Arc::clone(&arrivals), Arc::clone(&stop), prefix.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut pubsub = conn.as_pubsub();
            let _ = pubsub.set_read_timeout(Some(Duration::from_millis(200)));
            let subscribed = pubsub.subscribe(CHANNEL).is_ok();
            let _ = ready_tx.send(subscribed);
            while !stopped.load(Ordering::Relaxed) {
                let Ok(msg) = pubsub.get_message() else {
                    continue;
                };
                let now = SystemTime::now();
                let payload: String = msg.get_payload().unwrap_or_default();
                let id = payload.strip_prefix(&prefix).and_then(|id| id.parse().ok());
                if let (Some(id), Ok(mut map)) = (id, seen.lock()) {
                    map.insert(id, now);
                }
            }
        });
        let subscribed = ready_rx.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(subscribed, Ok(true)),
            "the emission subscriber could not subscribe to {CHANNEL}"
        );
        Self {
            arrivals,
            thread: Some(thread),
            stop,
        }
    }

    /// How many order keys' events have arrived.
    pub fn count(&self) -> usize {
        self.arrivals.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Waits (at most `timeout`) until `n` events have arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.count() < n && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When the last event arrived.
    pub fn last(&self) -> Option<SystemTime> {
        self.arrivals.lock().ok()?.values().max().copied()
    }

    /// Arrival time per order id.
    pub fn arrivals(&self) -> HashMap<u64, SystemTime> {
        self.arrivals.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Milliseconds from `deadline` (Unix ms) to the last event; `None` when none arrived.
    pub fn emission_ms(&self, deadline: u64) -> Option<u64> {
        self.last().map(|t| millis(t).saturating_sub(deadline))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes each order's key in the cache database (1) to expire at `deadline(i)` (Unix ms), in
/// pipelines of 10,000. Values are the order ids, as the app's `put()` stores them.
pub fn expire_at(
    redis: &RedisServer,
    prefix: &str,
    orders: &[u64],
    deadline: impl Fn(usize) -> u64,
) {
    let mut conn = redis.conn(1);
    for (c, chunk) in orders.chunks(10_000).enumerate() {
        let mut pipe = redis::pipe();
        for (i, id) in chunk.iter().enumerate() {
            pipe.cmd("SET")
                .arg(format!("{prefix}{id}"))
                .arg(id.to_string())
                .arg("PXAT")
                .arg(deadline(c * 10_000 + i))
                .ignore();
        }
        pipe.query::<()>(&mut conn)
            .unwrap_or_else(|e| panic!("SET ... PXAT pipeline: {e}"));
    }
}

/// How far ahead a burst's deadline is set: enough for the keys to be written before it
/// (2 s, plus 10 µs per key).
pub fn lead_ms(keys: usize) -> u64 {
    2_000 + keys as u64 / 100
}
