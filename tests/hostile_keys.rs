//! Keys nobody should trust: non-canonical ids, control characters, huge keys, floods.
//!
//! Laravel writes `ORDER_CONFIRM:<id>` with PHP's decimal form of an integer. Anything else under
//! the app's prefix was written by someone else, and must neither cancel an order nor flood or
//! forge the log.

mod common;

use std::time::Duration;

use common::{App, RedisServer, TestDb, default_key, setex, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// Warnings about malformed keys in a JSON log.
fn malformed_warnings(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "key_malformed")
        .collect()
}

/// Expires `key` at once and waits until an order key written after it is cancelled: Redis
/// publishes in order on one subscription, so by then the worker has read `key`'s event.
async fn expire_then_flush(conn: &mut redis::Connection, db: &TestDb, keys: &[Vec<u8>]) {
    for key in keys {
        redis::cmd("SET")
            .arg(key.as_slice())
            .arg("1")
            .arg("PX")
            .arg(1)
            .query::<()>(conn)
            .expect("SET PX");
    }
    let start = std::time::Instant::now();
    loop {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXISTS").arg(key.as_slice());
        }
        let exists: Vec<i64> = pipe.query(conn).expect("EXISTS");
        if exists.iter().all(|e| *e == 0) {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "keys did not expire within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let product = db.add_product("Flush", 10).await;
    let marker = db.place_order(product, 1).await;
    setex(conn, &default_key(marker), 1, &marker.to_string());
    wait_until(WAIT, "the marker order cancelled", || async {
        db.status(marker).await == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_canonical_id_laravel_writes_cancels_an_order() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let order = db.place_order(product, 3).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--log-format", "json"]);

    let mut conn = redis.conn(1);
    // The order's own key, with 900 s to live.
    setex(&mut conn, &default_key(order), 900, &order.to_string());
    let lookalikes: Vec<Vec<u8>> = [
        format!("0{order}"),
        format!("00{order}"),
        format!("+{order}"),
        format!("{order}\n"),
        format!("{order}.0"),
        format!("٣{order}"),
    ]
    .iter()
    .map(|id| format!("laravel_database_laravel_cache:ORDER_CONFIRM:{id}").into_bytes())
    .collect();
    expire_then_flush(&mut conn, &db, &lookalikes).await;

    assert_eq!(db.status(order).await, 0, "order {order} must stay unpaid");
    assert_eq!(db.stock(product).await, 97, "no stock returned");
    let lines = worker.json_lines();
    assert_eq!(
        malformed_warnings(&lines).len(),
        lookalikes.len(),
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_with_a_newline_cannot_forge_a_log_line() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--log-format", "text"]);

    let forged = "2026-11-29T00:00:00.000000Z  INFO cancelled unpaid orders and returned their stock count=1 orders=[42]";
    let key = format!("laravel_database_laravel_cache:ORDER_CONFIRM:7\n{forged}\r\u{1b}[2K");
    let mut conn = redis.conn(1);
    expire_then_flush(&mut conn, &db, &[key.into_bytes()]).await;

    let log = worker.log();
    let carrying: Vec<&str> = log.lines().filter(|l| l.contains("orders=[42]")).collect();
    assert_eq!(carrying.len(), 1, "{log}");
    assert!(
        carrying[0].contains("ignored a malformed order key") && carrying[0].contains("7\\n2026"),
        "the key stays inside its warning line, escaped: {}",
        carrying[0]
    );
    assert!(
        !log.contains('\u{1b}'),
        "no terminal escape reaches the log"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-11-29T00:00:00.000000Z"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_key_costs_a_short_warning() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--log-format", "json"]);

    let mut key = b"laravel_database_laravel_cache:ORDER_CONFIRM:".to_vec();
    key.extend(std::iter::repeat_n(b'7', 1 << 20));
    let mut conn = redis.conn(1);
    expire_then_flush(&mut conn, &db, &[key]).await;

    let lines = worker.json_lines();
    let warnings = malformed_warnings(&lines);
    assert_eq!(warnings.len(), 1, "{}", worker.log());
    let shown = warnings[0]["key"].as_str().unwrap_or_default();
    assert!(shown.len() < 300, "key shown in {} bytes", shown.len());
    assert!(
        shown.ends_with(&format!("({} bytes)", (1 << 20) + 45)),
        "{shown}"
    );
    assert!(
        worker.log().len() < 16 * 1024,
        "log is {} bytes",
        worker.log().len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_malformed_keys_write_a_few_warnings_and_a_count() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let mut worker = app.start_worker(&["--log-format", "json"]);

    let keys: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("laravel_database_laravel_cache:ORDER_CONFIRM:x{i}").into_bytes())
        .collect();
    let mut conn = redis.conn(1);
    expire_then_flush(&mut conn, &db, &keys).await;
    assert!(worker.stop(Duration::from_secs(20)).success());

    let lines = worker.json_lines();
    let warnings = malformed_warnings(&lines);
    assert!(
        (1..=20).contains(&warnings.len()),
        "{} warnings for 20k malformed keys",
        warnings.len()
    );
    let summary = lines
        .iter()
        .find(|l| l["event"] == "stopped")
        .unwrap_or_else(|| panic!("no stop summary: {}", worker.log()));
    assert_eq!(summary["malformed"], 20_000, "{summary}");
}
