//! The write path: on a server with `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1+, MariaDB 10.6+) an
//! order the app holds mid-payment is skipped, not waited for, and written once the app lets
//! go (cancelled after a ROLLBACK, left alone after the app marks it paid and commits), while
//! the orders around it are cancelled at once; on the others (MariaDB 10.5) and with
//! `--write-path lock-wait` the worker waits as every server can. The path is in the worker's
//! start line and in `check`.

mod common;

use std::time::Duration;

use mysql_async::prelude::Queryable;

use common::{App, RedisServer, Scrape, TestDb, Worker, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// The `write_path` the worker logged at start.
fn logged_path(worker: &Worker) -> String {
    worker
        .json_lines()
        .iter()
        .find_map(|line| line["write_path"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no write_path in the start lines:\n{}", worker.log()))
}

fn busy(worker: &Worker) -> f64 {
    Scrape::take(&worker.metrics_addr()).get("order_expire_orders_busy_total")
}

/// The server's `check --json` write path, with `args` before `check`.
fn checked_path(app: &App, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["check", "--json"]);
    let output = app.run(&all);
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    let mysql = &report["connections"]["mysql"];
    assert!(
        mysql["write_path_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{mysql}"
    );
    mysql["write_path"]
        .as_str()
        .expect("write_path")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_the_app_holds_is_skipped_then_written_when_it_lets_go() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let rolled_back = db.place_order(product, 2).await;
    let paid_meanwhile = db.place_order(product, 3).await;
    let free = db.place_order(product, 1).await;
    let app = App::new(&redis, &db, "");
    if !common::servers::database().has_skip_locked() {
        // MariaDB 10.5: no SKIP LOCKED, so the worker takes the waiting path, which
        // lock_wait_waits_for_the_app_as_every_server_can follows through.
        assert_eq!(checked_path(&app, &[]), "lock-wait");
        let worker = app.start_worker(&[]);
        assert_eq!(logged_path(&worker), "lock-wait");
        return;
    }
    assert_eq!(checked_path(&app, &[]), "skip-locked");
    assert_eq!(
        checked_path(&app, &["--write-path", "lock-wait"]),
        "lock-wait"
    );
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    assert_eq!(logged_path(&worker), "skip-locked");

    // Two requests of the app hold their orders, as a payment in progress would.
    let mut request_a = db.lock_order(rolled_back).await;
    let mut request_b = db.lock_order(paid_meanwhile).await;
    redis.expire_together(
        &[rolled_back, paid_meanwhile, free],
        Duration::from_millis(300),
    );
    wait_until(
        WAIT,
        "the free order cancelled while the others are held",
        || async { db.status(free).await == 2 },
    )
    .await;
    wait_until(WAIT, "the held orders counted busy", || async {
        busy(&worker) >= 2.0
    })
    .await;
    assert_eq!(db.status(rolled_back).await, 0, "held: not written");
    assert_eq!(db.status(paid_meanwhile).await, 0, "held: not written");

    // The app pays one and commits; the other request fails and rolls back.
    request_b
        .exec_drop(
            "UPDATE orders SET status = 1 WHERE id = ?",
            (paid_meanwhile,),
        )
        .await
        .expect("pay");
    request_b.query_drop("COMMIT").await.expect("commit");
    request_a.query_drop("ROLLBACK").await.expect("rollback");
    wait_until(WAIT, "the rolled-back order cancelled", || async {
        db.status(rolled_back).await == 2
    })
    .await;
    // A few more retries' time: the paid order stays paid.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.status(paid_meanwhile).await,
        1,
        "paid meanwhile: untouched"
    );
    assert_eq!(
        db.stock(product).await,
        100 - 3,
        "stock of the two cancelled back, once"
    );
    let mut cancelled = worker.cancelled_orders();
    cancelled.sort_unstable();
    assert_eq!(cancelled, [rolled_back, free], "each cancelled once");
    let scrape = Scrape::take(&worker.metrics_addr());
    assert_eq!(
        scrape.get("order_expire_orders_skipped_total{reason=\"paid\"}"),
        1.0,
        "the paid one was seen paid, under its lock"
    );
    println!(
        "held orders skipped and tried again {} times",
        scrape.get("order_expire_orders_busy_total")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_wait_waits_for_the_app_as_every_server_can() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let held = db.place_order(product, 2).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0", "--write-path", "lock-wait"]);
    assert_eq!(logged_path(&worker), "lock-wait");

    let mut request = db.lock_order(held).await;
    redis.expire_together(&[held], Duration::from_millis(300));
    // The worker's locking read stays in the server's process list while the row is held.
    wait_until(WAIT, "the worker's write waiting on the row", || async {
        let waiting: Option<i64> = db
            .conn()
            .await
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = ? AND INFO LIKE '%FOR UPDATE' AND TIME >= 1",
                (db.name.as_str(),),
            )
            .await
            .expect("PROCESSLIST");
        waiting.unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(db.status(held).await, 0, "held: not written yet");
    request.query_drop("ROLLBACK").await.expect("rollback");
    wait_until(WAIT, "the held order cancelled", || async {
        db.status(held).await == 2
    })
    .await;
    // The log line follows the commit the test just saw.
    worker.wait_for_event("orders_cancelled", 1, WAIT);
    assert_eq!(busy(&worker), 0.0, "nothing skipped on the waiting path");
    assert_eq!(worker.cancelled_orders(), [held]);
    assert_eq!(db.stock(product).await, 100);
}
