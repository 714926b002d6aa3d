//! An idle worker does not keep scanning the orders table when the `(status, created_at)`
//! index is missing: 200,000 orders, none of them due, the index dropped. The server's own
//! counter of rows read from the table (MariaDB's `information_schema.TABLE_STATISTICS`, with
//! `userstat` on; where this account may not turn it on, the server's `Handler_read_*` totals)
//! shows it: in events-only mode the deadline watcher reads new orders by id only, and `check`'s
//! warning says nothing needs the index in that mode; in reconciliation mode (a sweep every 2 s)
//! sweeps that find nothing back off, and the worker says so at start (`sweep_index_missing`).
//! With the index, a sweep over orders that all share one `created_at` second (a flash sale, an
//! import) reads each once, not each page again from the start of that second.
//! Prints one JSON line per measurement.

mod common;

use std::time::Duration;

use common::{App, RedisServer, TestDb};
use mysql_async::prelude::Queryable;

const ROWS: usize = 200_000;

/// Rows read from `db`'s `orders` so far, and the counter it comes from.
async fn rows_read(db: &TestDb) -> (u64, &'static str) {
    let mut c = db.conn().await;
    let userstat: Option<u64> = c
        .query_first("SELECT @@GLOBAL.userstat")
        .await
        .ok()
        .flatten();
    if userstat == Some(1) {
        let n: Option<u64> = c
            .exec_first(
                "SELECT ROWS_READ FROM information_schema.TABLE_STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'orders'",
                (db.name.as_str(),),
            )
            .await
            .expect("TABLE_STATISTICS");
        return (n.unwrap_or(0), "TABLE_STATISTICS.ROWS_READ");
    }
    let rows: Vec<(String, String)> = c
        .query("SHOW GLOBAL STATUS LIKE 'Handler_read%'")
        .await
        .expect("SHOW GLOBAL STATUS");
    let total = rows.iter().filter_map(|(_, v)| v.parse::<u64>().ok()).sum();
    (total, "global Handler_read_*")
}

/// Turns the server's per-table statistics on when this account may.
async fn per_table_statistics(db: &TestDb) {
    let _ = db.conn().await.query_drop("SET GLOBAL userstat = 1").await;
}

async fn orders_none_due(db: &TestDb) {
    let product = db.add_product("Tea", 1_000_000).await;
    let mut c = db.conn().await;
    c.query_drop("DROP INDEX orders_status_created_at_index ON orders")
        .await
        .expect("drop the index");
    for chunk in 0..ROWS / 10_000 {
        let values =
            vec![format!("(1, {product}, 1, 9.99, 1, UTC_TIMESTAMP(), UTC_TIMESTAMP())"); 10_000]
                .join(",");
        c.query_drop(format!(
            "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) VALUES {values}"
        ))
        .await
        .unwrap_or_else(|e| panic!("insert chunk {chunk}: {e}"));
    }
}

async fn idle_reads(mode: &str, extra: &str, window: Duration) -> serde_json::Value {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    per_table_statistics(&db).await;
    orders_none_due(&db).await;
    let app = App::new(&redis, &db, extra);
    let check = app.run(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("check --json");
    let check_warning = report["connections"]["mysql"]["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut worker = app.start_worker(&[]);
    // The first look (and, with reconciliation, the first sweep) read the table once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, counter) = rows_read(&db).await;
    tokio::time::sleep(window).await;
    let (after, _) = rows_read(&db).await;
    worker.stop(Duration::from_secs(20));
    let summary = serde_json::json!({
        "test": "idle_scans_without_the_index",
        "mode": mode,
        "orders": ROWS,
        "window_s": window.as_secs(),
        "rows_read": after.saturating_sub(before),
        "counter": counter,
        "worker_warnings": worker.count_event("sweep_index_missing"),
        "check_warning": check_warning,
    });
    println!("{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_in_events_only_mode_reads_only_new_orders() {
    let summary = idle_reads("events-only", "", Duration::from_secs(10)).await;
    let read = summary["rows_read"].as_u64().unwrap_or(u64::MAX);
    // Each 200 ms look re-reads its last 256 ids: about 12,800 rows in 10 s, whatever the table.
    assert!(read < ROWS as u64 / 10, "{summary}");
    assert_eq!(summary["worker_warnings"], 0, "{summary}");
    let warning = summary["check_warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("nothing needs it in events-only mode"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sweeps_without_the_index_back_off() {
    let window = Duration::from_secs(30);
    let summary = idle_reads(
        "reconciliation",
        "ORDER_EXPIRE_TTL=60\nORDER_EXPIRE_SWEEP_INTERVAL=2",
        window,
    )
    .await;
    let read = summary["rows_read"].as_u64().unwrap_or(u64::MAX);
    // A sweep every 2 s would read the table 15 times in 30 s; backing off (4, 8, 16 s...), 3.
    assert!(read <= 4 * ROWS as u64, "{summary}");
    assert_eq!(summary["worker_warnings"], 1, "{summary}");
    let warning = summary["check_warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("each reconciliation sweep reads the whole orders table"),
        "{summary}"
    );
}

/// Overdue orders created in the same second: a sweep's pages must not read that second again
/// from its first order on each page (20 pages of 1,000: 250,000 rows read before, 40,000 now:
/// the count the progress starts from, and the pages).
const SAME_SECOND: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_over_orders_of_one_second_reads_each_once() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    per_table_statistics(&db).await;
    let product = db.add_product("Tea", 1_000_000).await;
    let mut c = db.conn().await;
    for chunk in 0..SAME_SECOND / 10_000 {
        let values = vec![
            format!(
                "(1, {product}, 1, 9.99, 0, UTC_TIMESTAMP() - INTERVAL 1 HOUR, UTC_TIMESTAMP())"
            );
            10_000
        ]
        .join(",");
        c.query_drop(format!(
            "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) VALUES {values}"
        ))
        .await
        .unwrap_or_else(|e| panic!("insert chunk {chunk}: {e}"));
    }
    // One second for all of them, whatever second each chunk was inserted in.
    c.query_drop("UPDATE orders SET created_at = (SELECT MIN(created_at) FROM (SELECT created_at FROM orders) AS o)")
        .await
        .expect("one created_at second");
    // With the index statistics InnoDB recomputes after such a change (in the background, soon
    // after); with the stale ones MariaDB may read the second from its start by `ref`, as
    // before, never more.
    c.query_drop("ANALYZE TABLE orders")
        .await
        .expect("ANALYZE TABLE");
    drop(c);
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=60");
    let (before, counter) = rows_read(&db).await;
    let output = app.run(&["sweep", "--dry-run", "--log-format", "json"]);
    let (after, _) = rows_read(&db).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let finished = common::json_events(&String::from_utf8_lossy(&output.stderr), "sweep_finished");
    assert_eq!(finished.len(), 1, "one sweep_finished line");
    assert_eq!(finished[0]["overdue"], SAME_SECOND, "{}", finished[0]);
    let read = after.saturating_sub(before);
    // A server-wide counter would count the other tests' reads too.
    assert_eq!(
        counter, "TABLE_STATISTICS.ROWS_READ",
        "MariaDB's userstat is needed"
    );
    let summary = serde_json::json!({
        "test": "sweep_over_one_second",
        "orders": SAME_SECOND,
        "rows_read": read,
        "counter": counter,
    });
    println!("{summary}");
    // Once for the count the progress starts from, once for the pages, and a margin.
    assert!(read <= 3 * SAME_SECOND as u64, "{summary}");
}
