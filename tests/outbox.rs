//! The redis queue's outbox under odd rows and a missing queue Redis, against real servers:
//!
//! * a row whose payload is NULL is parked with one JSON log line, and every job after it is
//!   pushed (it used to panic the drainer, break the JSON log with a backtrace, and push
//!   nothing more);
//! * the drain's memory is bounded by its page, not by the rows: 20 rows of 15 MB are parked
//!   unread, 24 rows of 2 MB are pushed a few at a time, and the peak RSS stays low;
//! * a queue Redis that is down does not stop the start: orders are cancelled, their jobs wait
//!   in the outbox and are pushed once it is back.
//!
//! Each test prints one JSON line with what it measured.

mod common;

use std::time::Duration;

use common::{App, RedisServer, Scrape, TestDb, Worker, default_key, setex, wait_until};
use mysql_async::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(60);
const LIST: &str = "laravel_database_queues:default";

/// The outbox as an app may have it: the migration's columns, `payload` nullable.
async fn create_outbox(db: &TestDb) {
    db.conn()
        .await
        .query_drop(
            "CREATE TABLE order_expire_outbox (id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             order_id bigint unsigned NOT NULL, payload longtext NULL, created_at int unsigned NOT NULL)",
        )
        .await
        .expect("create the outbox");
}

/// An app whose jobs go to a redis queue on the cache Redis (the stock `default` connection).
fn app(redis: &RedisServer, db: &TestDb) -> App {
    App::new(
        redis,
        db,
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=redis\nORDER_EXPIRE_METRICS_ADDR=127.0.0.1:0",
    )
}

/// The same, with the queue Redis (the `default` connection) at `queue_port`.
fn app_with_queue_at(redis: &RedisServer, db: &TestDb, queue_port: u16) -> App {
    let app = app(redis, db);
    common::queue_redis_at(&app, queue_port);
    app
}

fn llen(redis: &RedisServer) -> usize {
    redis::cmd("LLEN")
        .arg(LIST)
        .query(&mut redis.conn(0))
        .expect("LLEN")
}

async fn outbox_rows(db: &TestDb) -> u64 {
    let n: Option<u64> = db
        .conn()
        .await
        .query_first("SELECT COUNT(*) FROM order_expire_outbox")
        .await
        .expect("count the outbox");
    n.unwrap_or(0)
}

/// Places `n` unpaid orders and lets their keys expire in a second.
async fn expiring_orders(redis: &RedisServer, db: &TestDb, n: usize) -> Vec<u64> {
    let product = db.add_product("Tea", 10_000).await;
    let orders = db.place_orders(&[product], n).await;
    let mut conn = redis.conn(1);
    for id in &orders {
        setex(&mut conn, &default_key(*id), 1, &id.to_string());
    }
    orders
}

/// Every line of the worker's log, and those that are not one JSON object.
fn non_json_lines(worker: &Worker) -> (usize, Vec<String>) {
    let log = worker.log();
    let bad = log
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).map_or(true, |v| !v.is_object()))
        .map(str::to_string)
        .collect();
    (log.lines().count(), bad)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_null_payload_is_parked_in_one_json_line_and_the_jobs_after_it_are_pushed() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    create_outbox(&db).await;
    db.conn()
        .await
        .query_drop(
            "INSERT INTO order_expire_outbox (order_id, payload, created_at) VALUES \
             (900001, NULL, UNIX_TIMESTAMP()), (900002, '{\"job\":\"before\"}', UNIX_TIMESTAMP())",
        )
        .await
        .expect("outbox rows");
    let null_row: u64 = db
        .conn()
        .await
        .query_first("SELECT id FROM order_expire_outbox WHERE payload IS NULL")
        .await
        .expect("the NULL row")
        .expect("the NULL row");
    let app = app(&redis, &db);
    let mut worker = app.start_worker(&[]);
    let orders = expiring_orders(&redis, &db, 50).await;
    wait_until(WAIT, "every order cancelled", || async {
        db.count_status(2).await == orders.len()
    })
    .await;
    wait_until(
        WAIT,
        "the row before and every order's job pushed",
        || async { llen(&redis) == orders.len() + 1 && outbox_rows(&db).await == 1 },
    )
    .await;
    let scrape = Scrape::take(&worker.metrics_addr());
    worker.stop(Duration::from_secs(20));

    let parked = worker.events("outbox_row_parked");
    assert_eq!(parked.len(), 1, "parked once: {parked:?}");
    assert_eq!(parked[0]["id"], null_row);
    assert_eq!(parked[0]["order_id"], 900001);
    assert_eq!(parked[0]["reason"], "null_payload");
    assert_eq!(worker.count_event("panic"), 0, "{}", worker.log());
    let (lines, bad) = non_json_lines(&worker);
    assert!(bad.is_empty(), "lines that are not JSON: {bad:?}");
    assert_eq!(scrape.get("order_expire_outbox_parked"), 1.0);
    assert_eq!(
        outbox_rows(&db).await,
        1,
        "the parked row is left for the operator"
    );
    println!(
        "{}",
        serde_json::json!({
            "test": "outbox_null_payload",
            "pushed": llen(&redis),
            "parked": parked.len(),
            "log_lines": lines,
            "non_json_lines": bad.len(),
            "panics": 0,
        })
    );
}

/// The worker's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib(worker: &Worker) -> f64 {
    let pid = worker.pid().expect("the worker runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_holds_a_page_of_payloads_not_every_row() {
    const MIB: usize = 1024 * 1024;
    const HUGE: usize = 20;
    const LARGE: usize = 24;
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    create_outbox(&db).await;
    let app = app(&redis, &db);
    let mut worker = app.start_worker(&[]);
    let addr = worker.metrics_addr();
    let before = peak_rss_mib(&worker);

    // In one transaction, so that the drain finds them all at once.
    let mut c = db.conn().await;
    c.query_drop("BEGIN").await.expect("begin");
    for i in 0..HUGE {
        c.exec_drop(
            "INSERT INTO order_expire_outbox (order_id, payload, created_at) VALUES (?, REPEAT('h', ?), UNIX_TIMESTAMP())",
            (800_000 + i, 15 * MIB),
        )
        .await
        .expect("a 15 MB row");
    }
    for i in 0..LARGE {
        c.exec_drop(
            "INSERT INTO order_expire_outbox (order_id, payload, created_at) VALUES (?, REPEAT('l', ?), UNIX_TIMESTAMP())",
            (810_000 + i, 2 * MIB),
        )
        .await
        .expect("a 2 MB row");
    }
    c.query_drop("COMMIT").await.expect("commit");
    drop(c);

    wait_until(WAIT, "every 2 MB row pushed", || async {
        llen(&redis) == LARGE && outbox_rows(&db).await == HUGE as u64
    })
    .await;
    wait_until(Duration::from_secs(10), "the gauges set", || async {
        let scrape = Scrape::take(&addr);
        scrape.get("order_expire_outbox_parked") == HUGE as f64
            && scrape.get("order_expire_outbox_backlog") == HUGE as f64
    })
    .await;
    let peak = peak_rss_mib(&worker);
    worker.stop(Duration::from_secs(20));
    let parked = worker.events("outbox_row_parked");
    assert_eq!(parked.len(), HUGE, "each 15 MB row parked once");
    assert!(
        parked.iter().all(|p| p["reason"] == "too_large"),
        "{parked:?}"
    );
    let pushed: Vec<usize> = redis::cmd("LRANGE")
        .arg(LIST)
        .arg(0)
        .arg(-1)
        .query::<Vec<Vec<u8>>>(&mut redis.conn(0))
        .expect("LRANGE")
        .iter()
        .map(Vec::len)
        .collect();
    assert!(
        pushed.iter().all(|n| *n == 2 * MIB),
        "whole payloads pushed"
    );
    println!(
        "{}",
        serde_json::json!({
            "test": "outbox_bounded_drain",
            "rows_15mb_parked": parked.len(),
            "rows_2mb_pushed": pushed.len(),
            "rss_before_mib": before.round(),
            "peak_rss_mib": peak.round(),
        })
    );
    // The Kubernetes manifest limits a pod to 160 Mi.
    assert!(
        peak < 128.0,
        "the drain of {} MB of payloads raised the peak RSS from {before:.0} to {peak:.0} MiB",
        HUGE * 15 + LARGE * 2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_redis_outage_does_not_stop_the_start_and_its_jobs_wait_in_the_outbox() {
    let redis = RedisServer::start();
    let mut queue = RedisServer::start();
    queue.kill();
    let db = TestDb::create().await;
    create_outbox(&db).await;
    let app = app_with_queue_at(&redis, &db, queue.port);
    let mut worker = app.start_worker(&[]);
    let orders = expiring_orders(&redis, &db, 40).await;
    wait_until(WAIT, "every order cancelled", || async {
        db.count_status(2).await == orders.len()
    })
    .await;
    wait_until(WAIT, "every job in the outbox", || async {
        outbox_rows(&db).await == orders.len() as u64
    })
    .await;
    worker.wait_for_event("outbox_failing", 1, Duration::from_secs(10));
    let failing = worker.events("outbox_failing");
    let error = failing[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&queue.port.to_string()) && error.contains("queue connection `redis`"),
        "{error}"
    );
    assert!(!error.contains("REDIS_HOST"), "{error}");
    let readyz = common::http_get(&worker.metrics_addr(), "/readyz").0;

    let back = std::time::Instant::now();
    queue.restart();
    wait_until(WAIT, "every job pushed once the queue is back", || async {
        llen(&queue) == orders.len() && outbox_rows(&db).await == 0
    })
    .await;
    let pushed_after = back.elapsed();
    worker.stop(Duration::from_secs(20));
    assert_eq!(worker.count_event("outbox_drains"), 1);
    db.assert_stock_returned(10_000).await;
    println!(
        "{}",
        serde_json::json!({
            "test": "queue_redis_outage",
            "cancelled": orders.len(),
            "waited_in_outbox": orders.len(),
            "readyz_during_outage": readyz,
            "pushed_within_ms_of_return": pushed_after.as_millis(),
        })
    );
}
