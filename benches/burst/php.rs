//! The same bursts through the PHP reference command, `php artisan order:expire` in
//! `fixtures/laravel-app`, on the same private MariaDB.
//!
//! It runs with `REDIS_PREFIX=` so that it hears the events at all (phpredis prefixes the
//! channel it subscribes to). It writes no log the benchmark could read, so its drain ends when
//! the database shows no unpaid order left, polled every 100 ms (its drains take seconds to
//! minutes, so the poll's resolution does not matter). Its own check is that every order ends
//! cancelled; it returns no stock (one of the defects order-expire fixes), so stock is not
//! checked.
//!
//! Its redis-server has no output buffer limit for subscribers: the command reads about a
//! thousand events a second, so a 200k burst leaves Redis holding some 20 MB of events for it,
//! and with the default limit (`pubsub 32mb 8mb 60`) Redis disconnects it after a minute and it
//! never hears the rest. Lifting the limit measures how fast it works, not that defect.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::common::{App, LaravelApp, RedisServer, die_with_parent};
use crate::database::BenchServer;
use crate::emission::{self, CHANNEL, KEY_PREFIX_PHP, Subscriber};
use crate::process;

/// A drain that makes no progress for this long has stalled.
const STALL: Duration = Duration::from_secs(30);

/// One burst through the PHP command.
#[derive(Debug, Clone)]
pub struct PhpRun {
    pub size: usize,
    pub emission_ms: Option<u64>,
    /// `None` when it did not cancel every order.
    pub drain_ms: Option<u64>,
    pub cancelled: usize,
    pub peak_rss_kib: Option<u64>,
    pub cpu_s: Option<f64>,
    pub problems: Vec<String>,
}

/// Waits until the PHP command has subscribed (bounded).
fn wait_subscribed(redis: &RedisServer) {
    let mut conn = redis.conn(0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(CHANNEL)
            .query(&mut conn)
            .unwrap_or_default();
        if n.first().is_some_and(|(_, c)| *c > 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("php artisan order:expire did not subscribe within 30 s");
}

pub async fn burst(server: &BenchServer, size: usize) -> PhpRun {
    let redis = RedisServer::start_with(&[
        "--notify-keyspace-events",
        "Ex",
        "--client-output-buffer-limit",
        "pubsub",
        "0",
        "0",
        "0",
    ]);
    let placed = server.place(size).await;
    let laravel = LaravelApp::new(&App::env_text(
        redis.port,
        &placed.db,
        "REDIS_PREFIX=\nLOG_CHANNEL=stderr",
    ));
    let mut php = Command::new("php");
    php.current_dir(laravel.dir())
        .args(["artisan", "order:expire"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut php);
    let mut child = php
        .spawn()
        .unwrap_or_else(|e| panic!("php must be installed (scripts/test installs it): {e}"));
    wait_subscribed(&redis);
    let subscriber = Subscriber::start(&redis, KEY_PREFIX_PHP);
    let deadline = emission::now_ms() + emission::lead_ms(size);
    emission::expire_at(&redis, KEY_PREFIX_PHP, &placed.orders, |_| deadline);
    emission::sleep_until_ms(deadline).await;
    let cpu_before = process::cpu_seconds(child.id());
    let mut conn = placed.db.conn().await;
    let mut last_left = usize::MAX;
    let mut moved = Instant::now();
    let (end, left) = loop {
        let left: usize = conn
            .query_first::<i64, _>("SELECT COUNT(*) FROM orders WHERE status = 0")
            .await
            .ok()
            .flatten()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(size);
        let now = emission::now_ms();
        if left == 0 {
            break (now, 0);
        }
        if left < last_left {
            last_left = left;
            moved = Instant::now();
        } else if moved.elapsed() > STALL {
            break (now, left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(conn);
    let cpu_s = process::cpu_seconds(child.id())
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    let peak_rss_kib = process::peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let problems = placed
        .audit(&format!("PHP command, {size} orders"), false)
        .await;
    PhpRun {
        size,
        emission_ms: subscriber.emission_ms(deadline),
        drain_ms: (left == 0).then(|| end.saturating_sub(deadline)),
        cancelled: size - left,
        peak_rss_kib,
        cpu_s,
        problems,
    }
}
