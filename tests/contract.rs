//! The contract with the app, under hostile but legitimate use: which signals cancel an order in
//! each mode, a stop that keeps its deadline while a write waits on a row lock, process signals,
//! and permanent SQL errors that are parked instead of retried forever.
//!
//! Every test reads the worker's `--log-format json` lines and exit codes, against a real
//! redis-server and a real MariaDB.

mod common;

use std::time::{Duration, Instant};

use common::{App, RedisServer, TestDb, Worker, default_key, setex, wait_until};
use mysql_async::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(30);

fn check_json(app: &App) -> serde_json::Value {
    let output = app.run(&["check", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json is not JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Sends `signal` to the worker's process.
fn send(worker: &Worker, signal: i32) {
    let pid = i32::try_from(worker.pid().expect("worker running")).expect("pid");
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_only_a_key_deleted_before_its_deadline_keeps_the_order() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let deleted = db.place_order(product, 3).await;
    let expiring = db.place_order(product, 4).await;
    let app = App::new(&redis, &db, "");
    let contract = check_json(&app)["contract"].clone();
    assert_eq!(contract["mode"], "events-only", "{contract}");
    assert_eq!(contract["guard"], "status = 0", "{contract}");
    let worker = app.start_worker(&["--log-format", "json"]);

    for order in [deleted, expiring] {
        let scheduled = app.run(&["schedule", &order.to_string(), "--ttl", "3"]);
        assert!(scheduled.status.success(), "{scheduled:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The app forgets the key when the order is paid: the PHP worker then never hears of it.
    let mut conn = redis.conn(1);
    let removed: i64 = redis::cmd("DEL")
        .arg(default_key(deleted))
        .query(&mut conn)
        .expect("DEL");
    assert_eq!(removed, 1, "the key was there to delete");

    wait_until(WAIT, "the order whose key expired cancelled", || async {
        db.status(expiring).await == 2
    })
    .await;
    // Past the deleted key's deadline, with a margin for the watcher's next ticks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        db.status(deleted).await,
        0,
        "a deleted key protects its order; log:\n{}",
        worker.log()
    );
    assert_eq!(
        db.stock(product).await,
        100 - 3,
        "only the expired order's stock came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_mode_a_paid_column_protects_an_order_whose_key_is_gone() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    db.conn()
        .await
        .query_drop("ALTER TABLE orders ADD paid_at timestamp NULL DEFAULT NULL")
        .await
        .expect("add paid_at");
    let product = db.add_product("Tea", 100).await;
    let paid_deleted = db.place_order(product, 1).await;
    let paid_expired = db.place_order(product, 2).await;
    let unpaid_deleted = db.place_order(product, 4).await;
    // Paid before the worker starts: on a loaded machine the orders' 3 s could pass while it
    // starts, and an order past its deadline before it was paid is rightly cancelled.
    for order in [paid_deleted, paid_expired] {
        db.conn()
            .await
            .exec_drop(
                "UPDATE orders SET paid_at = UTC_TIMESTAMP() WHERE id = ?",
                (order,),
            )
            .await
            .expect("mark paid");
    }
    let app = App::new(
        &redis,
        &db,
        "ORDER_EXPIRE_TTL=3\nORDER_EXPIRE_PAID_COLUMN=paid_at",
    );
    let contract = check_json(&app)["contract"].clone();
    assert_eq!(contract["mode"], "reconciliation", "{contract}");
    assert_eq!(
        contract["guard"], "status = 0 and paid_at is null",
        "{contract}"
    );
    let worker = app.start_worker(&["--log-format", "json"]);

    let mut conn = redis.conn(1);
    for order in [paid_deleted, paid_expired, unpaid_deleted] {
        setex(&mut conn, &default_key(order), 3, &order.to_string());
    }
    for order in [paid_deleted, unpaid_deleted] {
        let _: i64 = redis::cmd("DEL")
            .arg(default_key(order))
            .query(&mut conn)
            .expect("DEL");
    }

    // In this mode the database decides: a key deleted alone does not protect an order.
    wait_until(
        WAIT,
        "the unpaid order cancelled at its deadline",
        || async { db.status(unpaid_deleted).await == 2 },
    )
    .await;
    // The paid order whose key expired is reported paid when its event comes. The deadline
    // watcher's reads skip paid orders, so the one whose key was deleted need not reach the
    // writer at all: it must be left alone, past its deadline and a margin for the watcher's
    // next ticks.
    wait_until(
        WAIT,
        "the paid order whose key expired reported paid",
        || async {
            worker
                .events("order_skipped")
                .iter()
                .any(|line| line["outcome"] == "paid" && line["order_id"] == paid_expired)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for order in [paid_deleted, paid_expired] {
        assert_eq!(
            db.status(order).await,
            0,
            "paid order {order} left alone; log:\n{}",
            worker.log()
        );
    }
    assert_eq!(
        db.stock(product).await,
        100 - 1 - 2,
        "only the unpaid order's stock came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_column_that_does_not_exist_is_refused_at_start() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_PAID_COLUMN=paid_at");
    let output = app.run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("ORDER_EXPIRE_PAID_COLUMN"), "{stderr}");
}

/// Holds `SELECT ... FOR UPDATE` on a product row from a connection of the test, as another
/// request of the app would.
async fn lock_product(db: &TestDb, product: u64) -> mysql_async::Conn {
    let mut conn = db.conn().await;
    conn.query_drop("BEGIN").await.expect("begin");
    conn.exec_drop("SELECT * FROM products WHERE id = ? FOR UPDATE", (product,))
        .await
        .expect("lock product");
    conn
}

/// Waits until the worker's transaction holds `order`'s row lock: it is then waiting for the
/// product row the test holds, since it cannot commit without it.
async fn wait_for_lock_wait(db: &TestDb, worker: &Worker, order: u64) {
    let start = Instant::now();
    loop {
        let mut conn = db.conn().await;
        conn.query_drop("BEGIN").await.expect("begin");
        let held = conn
            .exec_drop(
                "SELECT id FROM orders WHERE id = ? FOR UPDATE NOWAIT",
                (order,),
            )
            .await
            .is_err();
        let _ = conn.query_drop("ROLLBACK").await;
        if held {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "the worker never locked order {order}; log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker whose write of `order` waits on a row lock held by `lock` (a test session's
/// `SELECT ... FOR UPDATE` on the order's product), started with `--stop-timeout`.
struct StuckWrite {
    _redis: RedisServer,
    db: TestDb,
    product: u64,
    order: u64,
    worker: Worker,
    lock: mysql_async::Conn,
}

async fn worker_stuck_on_a_row_lock(stop_timeout: &str) -> StuckWrite {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let order = db.place_order(product, 5).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--log-format", "json", "--stop-timeout", stop_timeout]);
    let lock = lock_product(&db, product).await;
    setex(
        &mut redis.conn(1),
        &default_key(order),
        1,
        &order.to_string(),
    );
    wait_for_lock_wait(&db, &worker, order).await;
    StuckWrite {
        _redis: redis,
        db,
        product,
        order,
        worker,
        lock,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_timeout_is_a_deadline_while_a_write_waits_on_a_row_lock() {
    let StuckWrite {
        _redis,
        db,
        product,
        order,
        mut worker,
        mut lock,
    } = worker_stuck_on_a_row_lock("2").await;

    let stopping = Instant::now();
    let status = worker.stop(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}; log:\n{}", worker.log());
    assert!(
        took < Duration::from_millis(3500),
        "stopped {took:?} after SIGTERM with --stop-timeout 2; log:\n{}",
        worker.log()
    );
    let left = worker.events("orders_left");
    assert_eq!(
        left.len(),
        1,
        "one line lists what was left; log:\n{}",
        worker.log()
    );
    assert_eq!(left[0]["count"], 1, "{}", left[0]);
    assert_eq!(left[0]["recovery"], "off", "{}", left[0]);
    assert!(
        left[0]["orders"].to_string().contains(&order.to_string()),
        "{}",
        left[0]
    );

    // The abandoned transaction never commits: once the lock is released, nothing was written.
    conn_rollback(&mut lock).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.status(order).await, 0, "the order is still unpaid");
    assert_eq!(db.stock(product).await, 95, "no stock came back");
}

async fn conn_rollback(conn: &mut mysql_async::Conn) {
    conn.query_drop("ROLLBACK").await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    let StuckWrite {
        _redis,
        db,
        product,
        order,
        mut worker,
        mut lock,
    } = worker_stuck_on_a_row_lock("60").await;

    send(&worker, libc::SIGINT);
    worker.wait_for_event("stopping", 1, WAIT);
    assert_eq!(worker.events("stopping")[0]["signal"], "SIGINT");
    let second = Instant::now();
    let status = worker.stop(Duration::from_secs(30)); // a second signal: SIGTERM
    assert!(
        second.elapsed() < Duration::from_secs(1),
        "exited {:?} after the second signal",
        second.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?}; log:\n{}",
        worker.log()
    );
    conn_rollback(&mut lock).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.status(order).await, 0, "nothing half-written");
    assert_eq!(db.stock(product).await, 95);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr_is_logged_and_ignored_and_sighup_stops_cleanly() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let order = db.place_order(product, 5).await;
    let app = App::new(&redis, &db, "");
    let mut worker = app.start_worker(&["--log-format", "json"]);

    for (n, (signal, name)) in [(libc::SIGUSR1, "SIGUSR1"), (libc::SIGUSR2, "SIGUSR2")]
        .into_iter()
        .enumerate()
    {
        send(&worker, signal);
        worker.wait_for_event("signal_ignored", n + 1, WAIT);
        assert_eq!(worker.events("signal_ignored")[n]["signal"], name);
    }
    // Still working.
    setex(
        &mut redis.conn(1),
        &default_key(order),
        1,
        &order.to_string(),
    );
    wait_until(WAIT, "the order cancelled after SIGUSR1/2", || async {
        db.status(order).await == 2
    })
    .await;

    send(&worker, libc::SIGHUP);
    worker.wait_for_event("stopping", 1, WAIT);
    assert_eq!(worker.events("stopping")[0]["signal"], "SIGHUP");
    worker.wait_for_event("stopped", 1, WAIT);
    let status = worker.stop(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", worker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_that_does_not_fit_the_column_is_refused_at_start() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_CANCELLED_STATUS=300");
    let output = app.run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("ORDER_EXPIRE_CANCELLED_STATUS") && error[0].contains("tinyint"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_that_fails_permanently_is_parked_and_blocks_no_other() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let full = db.add_product("Full", 10).await;
    let tea = db.add_product("Tea", 100).await;
    let bad = db.place_order(full, 1).await;
    let mut good = Vec::new();
    for _ in 0..5 {
        good.push(db.place_order(tea, 2).await);
    }
    // Returning one unit would overflow `int unsigned`: ERROR 1264, whatever the retry.
    db.conn()
        .await
        .exec_drop(
            "UPDATE products SET stock = 4294967295 WHERE id = ?",
            (full,),
        )
        .await
        .expect("fill stock");
    let app = App::new(
        &redis,
        &db,
        "ORDER_EXPIRE_TTL=1\nORDER_EXPIRE_SWEEP_INTERVAL=1",
    );
    let mut worker = app.start_worker(&["--log-format", "json"]);
    let mut conn = redis.conn(1);
    for order in std::iter::once(bad).chain(good.iter().copied()) {
        setex(&mut conn, &default_key(order), 1, &order.to_string());
    }
    wait_until(WAIT, "the five good orders cancelled", || async {
        db.count_status(2).await == 5
    })
    .await;
    wait_until(WAIT, "the bad order parked", || async {
        worker
            .events("order_parked")
            .iter()
            .any(|line| line["order_id"] == bad)
    })
    .await;
    // Sweeps every second find the bad order again; it is not retried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let parked: Vec<serde_json::Value> = worker
        .events("order_parked")
        .into_iter()
        .filter(|line| line["order_id"] == bad)
        .collect();
    assert_eq!(parked.len(), 1, "parked once; log:\n{}", worker.log());
    assert_eq!(parked[0]["level"], "ERROR", "{}", parked[0]);
    assert!(
        parked[0]["error"].as_str().unwrap_or("").contains("1264"),
        "{}",
        parked[0]
    );
    assert_eq!(db.status(bad).await, 0);
    assert_eq!(db.stock(tea).await, 100, "the good orders' stock came back");
    assert!(worker.stop(Duration::from_secs(15)).success());
    let stopped = worker.events("stopped");
    assert_eq!(stopped.len(), 1, "{}", worker.log());
    assert_eq!(stopped[0]["parked"], 1, "{}", stopped[0]);
    assert_eq!(
        worker.count_event("writes_failing"),
        0,
        "a permanent error is not an outage; log:\n{}",
        worker.log()
    );
}
