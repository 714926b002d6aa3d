//! The metrics endpoint (`--metrics-addr`): `/metrics` scraped during a real burst and checked
//! against what happened in the database, checked by Prometheus's own parser (`promtool check
//! metrics`); `/readyz` following the Redis subscription and MySQL; `/healthz`; the queue's
//! backlog while a writer waits on a row lock.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use common::{
    App, MariaServer, RedisServer, Scrape, TestDb, Worker, default_key, http_get, setex, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

/// Runs Prometheus's own parser and linter over an exposition; fails the test with its
/// complaints. `scripts/test` installs it (Debian's `prometheus` package).
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- exposition:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes each key with `SETEX key ttl id`, in one pipeline, as Laravel's `put()` would.
fn expire_all(redis: &RedisServer, keys: &[String], ttl: u64) {
    let mut pipe = redis::pipe();
    for key in keys {
        let id = key.rsplit(':').next().unwrap_or("0");
        pipe.cmd("SETEX").arg(key).arg(ttl).arg(id).ignore();
    }
    pipe.query::<()>(&mut redis.conn(1))
        .expect("SETEX pipeline");
}

/// The series of a counter with one label, as the exposition writes it.
fn labelled(name: &str, label: &str, value: &str) -> String {
    format!("{name}{{{label}=\"{value}\"}}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_counted_exactly_while_it_drains() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let burst = Burst::place(&db).await;

    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0", "--batch-size", "8"]);
    let addr = worker.metrics_addr();
    let before = Scrape::take(&addr);
    assert_eq!(before.get("order_expire_orders_cancelled_total"), 0.0);
    promtool_check(&before.text);

    let mut keys: Vec<String> = burst
        .ids
        .iter()
        .chain(&burst.missing)
        .map(|id| default_key(*id))
        .collect();
    keys.push("laravel_database_laravel_cache:ORDER_CONFIRM:05".into());
    keys.push("laravel_database_laravel_cache:SESSION:abc".into());
    expire_all(&redis, &keys, 2);

    let scrapes = scrape_until_drained(&worker, &addr).await;
    assert_counters_only_grow(&scrapes);
    let end = Scrape::take(&addr);
    promtool_check(&end.text);
    assert_outcomes_counted(&end, &db, &burst, &worker).await;
    assert_intake_and_timing_counted(&end, keys.len(), redis.port);
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
}

/// The burst of [`a_burst_is_counted_exactly_while_it_drains`]: orders of three products, some
/// paid, some already cancelled, and ids of orders that do not exist.
const ORDERS: usize = 2000;
const PAID: usize = 100;
const ALREADY_CANCELLED: usize = 50;
const MISSING: usize = 5;
const EXPECTED_CANCELLED: f64 = (ORDERS - PAID - ALREADY_CANCELLED) as f64;
const CANCELLED_TOTAL: &str = "order_expire_orders_cancelled_total";

struct Burst {
    products: Vec<u64>,
    ids: Vec<u64>,
    missing: Vec<u64>,
}

impl Burst {
    async fn place(db: &TestDb) -> Self {
        let mut products = Vec::new();
        for name in ["Tea", "Coffee", "Cocoa"] {
            products.push(db.add_product(name, 10_000).await);
        }
        let ids = db.place_orders(&products, ORDERS).await;
        let mut conn = db.conn().await;
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        conn.query_drop(format!(
            "UPDATE orders SET status = 1 WHERE id IN ({})",
            list(&ids[..PAID])
        ))
        .await
        .expect("pay some orders");
        conn.query_drop(format!(
            "UPDATE orders SET status = 2 WHERE id IN ({})",
            list(&ids[PAID..PAID + ALREADY_CANCELLED])
        ))
        .await
        .expect("cancel some orders");
        drop(conn);
        let newest = *ids.last().expect("orders");
        let missing: Vec<u64> = (1..=MISSING as u64).map(|i| newest + 1000 + i).collect();
        Self {
            products,
            ids,
            missing,
        }
    }
}

/// Scrapes `/metrics` every 20 ms until the burst is written; every scrape, in order.
async fn scrape_until_drained(worker: &Worker, addr: &str) -> Vec<Scrape> {
    let started = Instant::now();
    let mut scrapes: Vec<Scrape> = Vec::new();
    loop {
        let scrape = Scrape::take(addr);
        let done = scrape.get(CANCELLED_TOTAL) >= EXPECTED_CANCELLED
            && scrape.get("order_expire_event_to_commit_seconds_count")
                >= (ORDERS + MISSING) as f64;
        scrapes.push(scrape);
        if done {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the burst did not drain; log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scrapes
}

/// Scraped while it drained: counters only grow, and some scrape saw the burst half done.
fn assert_counters_only_grow(scrapes: &[Scrape]) {
    let during: Vec<&Scrape> = scrapes
        .iter()
        .filter(|s| (1.0..EXPECTED_CANCELLED).contains(&s.get(CANCELLED_TOTAL)))
        .collect();
    assert!(
        !during.is_empty(),
        "no scrape during the burst: {} scrapes",
        scrapes.len()
    );
    promtool_check(&during[0].text);
    for pair in scrapes.windows(2) {
        for series in [
            CANCELLED_TOTAL,
            "order_expire_stock_units_returned_total",
            "order_expire_lateness_seconds_count",
            "order_expire_batch_size_sum",
        ] {
            assert!(
                pair[1].get(series) >= pair[0].get(series),
                "{series} went down"
            );
        }
    }
}

/// What became of each order, counted as the database shows it.
async fn assert_outcomes_counted(end: &Scrape, db: &TestDb, burst: &Burst, worker: &Worker) {
    let skipped = "order_expire_orders_skipped_total";
    let cancelled_in_db = db.count_status(2).await - ALREADY_CANCELLED;
    assert_eq!(cancelled_in_db as f64, EXPECTED_CANCELLED);
    assert_eq!(end.get(CANCELLED_TOTAL), EXPECTED_CANCELLED);
    assert_eq!(worker.cancelled_orders().len() as f64, EXPECTED_CANCELLED);
    assert_eq!(end.get(&labelled(skipped, "reason", "paid")), PAID as f64);
    assert_eq!(
        end.get(&labelled(skipped, "reason", "already_cancelled")),
        ALREADY_CANCELLED as f64
    );
    assert_eq!(
        end.get(&labelled(skipped, "reason", "missing")),
        MISSING as f64
    );
    // Every order has quantity 1: one unit back per cancellation, as the products show.
    let mut stock = 0;
    for product in &burst.products {
        stock += db.stock(*product).await;
    }
    let taken = ORDERS as i64;
    assert_eq!(
        stock,
        3 * 10_000 - taken + end.get("order_expire_stock_units_returned_total") as i64
    );
    assert_eq!(
        end.get("order_expire_stock_units_returned_total"),
        EXPECTED_CANCELLED
    );
}

/// What was heard, when it was written, and the state of the queue and the subscription.
fn assert_intake_and_timing_counted(end: &Scrape, keys: usize, redis_port: u16) {
    let received = "order_expire_expired_received_total";
    let ignored = "order_expire_keys_ignored_total";
    assert_eq!(
        end.get(&labelled(received, "origin", "event")),
        (ORDERS + MISSING) as f64
    );
    assert_eq!(end.get(&labelled(received, "origin", "deadline")), 0.0);
    assert_eq!(end.get(&labelled(received, "origin", "sweep")), 0.0);
    assert_eq!(end.get(&labelled(ignored, "reason", "malformed")), 1.0);
    assert_eq!(end.get(&labelled(ignored, "reason", "unrelated")), 1.0);
    assert_eq!(end.get("order_expire_keyspace_events_total"), keys as f64);
    // One lateness per cancellation, one event-to-commit per order heard; every batch counted.
    assert_eq!(
        end.get("order_expire_lateness_seconds_count"),
        EXPECTED_CANCELLED
    );
    assert_eq!(
        end.get("order_expire_lateness_seconds_bucket{le=\"+Inf\"}"),
        EXPECTED_CANCELLED
    );
    assert_eq!(
        end.get("order_expire_event_to_commit_seconds_count"),
        (ORDERS + MISSING) as f64
    );
    assert_eq!(
        end.get("order_expire_batch_size_sum"),
        (ORDERS + MISSING) as f64
    );
    assert!(end.get("order_expire_batch_size_count") >= ((ORDERS + MISSING) / 8) as f64);
    let buckets = end.series("order_expire_lateness_seconds_bucket");
    assert_eq!(
        buckets.len(),
        16,
        "15 bounds from 10 ms to 10 min, and +Inf"
    );
    assert!(
        end.text
            .contains("order_expire_lateness_seconds_bucket{le=\"0.01\"}")
    );
    assert!(
        end.text
            .contains("order_expire_lateness_seconds_bucket{le=\"600\"}")
    );
    assert_eq!(end.get("order_expire_queue_depth"), 0.0);
    assert_eq!(end.get("order_expire_oldest_pending_seconds"), 0.0);
    assert_eq!(end.get("order_expire_queue_dropped_total"), 0.0);
    assert_eq!(
        end.get(&format!(
            "order_expire_subscription_up{{node=\"127.0.0.1:{}\"}}",
            redis_port
        )),
        1.0
    );
    assert_eq!(
        end.get(&labelled(
            "order_expire_reconnects_total",
            "server",
            "redis"
        )),
        0.0
    );
    assert_eq!(end.series("order_expire_build_info").len(), 1);
}

/// Polls `path` until it answers `status`; returns the body.
async fn wait_for_status(addr: &str, path: &str, status: u16, what: &str) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(addr, path);
        if code == status {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path} never answered {status} ({what}); last: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one_line(body: &str) -> bool {
    body.ends_with('\n') && body.trim_end().lines().count() == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_redis_subscription() {
    let mut redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    let node = format!(
        "order_expire_subscription_up{{node=\"127.0.0.1:{}\"}}",
        redis.port
    );
    wait_for_status(&addr, "/readyz", 200, "started").await;
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".into()));

    redis.kill();
    let reason = wait_for_status(&addr, "/readyz", 503, "Redis stopped").await;
    assert!(one_line(&reason), "{reason:?}");
    assert!(
        reason.contains(&redis.port.to_string()),
        "names the node: {reason}"
    );
    assert_eq!(Scrape::take(&addr).get(&node), 0.0);
    assert_eq!(
        http_get(&addr, "/healthz").0,
        200,
        "the worker itself is fine"
    );

    redis.restart();
    wait_for_status(&addr, "/readyz", 200, "Redis back").await;
    let scrape = Scrape::take(&addr);
    assert_eq!(scrape.get(&node), 1.0);
    assert_eq!(
        scrape.get(&labelled(
            "order_expire_reconnects_total",
            "server",
            "redis"
        )),
        1.0
    );
    assert_eq!(worker.count_event("subscription_restored"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_says_when_mysql_does_not_answer() {
    let mut maria = MariaServer::start();
    let redis = RedisServer::start();
    let db = TestDb::create_on(&maria.url()).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    wait_for_status(&addr, "/readyz", 200, "started").await;

    // The restart blocks this thread (its mariadbd dies with the thread that started it), so
    // a thread of its own watches /readyz meanwhile.
    let watching = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                let (code, body) = http_get(&addr, "/readyz");
                if code == 503 {
                    return Some(body);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    maria.restart(Duration::from_secs(5));
    let reason = watching
        .join()
        .expect("the watching thread")
        .expect("/readyz answered 503 while MariaDB was down");
    assert!(one_line(&reason), "{reason:?}");
    assert!(reason.contains("MySQL"), "{reason}");
    wait_for_status(&addr, "/readyz", 200, "MariaDB back").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backlog_shows_orders_waiting_behind_a_blocked_writer() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let ids = db.place_orders(&[product], 5).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--concurrency",
        "1",
        "--write-path",
        "lock-wait",
    ]);
    let addr = worker.metrics_addr();

    // The only writer waits for the first order's row lock; the others queue behind it.
    let mut lock = db.lock_order(ids[0]).await;
    setex(&mut redis.conn(1), &default_key(ids[0]), 1, "1");
    wait_until(WAIT, "the first order handed to the writer", || async {
        Scrape::take(&addr).get(&labelled(
            "order_expire_expired_received_total",
            "origin",
            "event",
        )) == 1.0
    })
    .await;
    expire_all(
        &redis,
        &ids[1..]
            .iter()
            .map(|id| default_key(*id))
            .collect::<Vec<_>>(),
        1,
    );
    // One waits in the dispatcher for the writer, three in the queue.
    wait_until(WAIT, "three orders queued", || async {
        Scrape::take(&addr).get("order_expire_queue_depth") == 3.0
    })
    .await;
    let first = Scrape::take(&addr).get("order_expire_oldest_pending_seconds");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = Scrape::take(&addr).get("order_expire_oldest_pending_seconds");
    assert!(later >= 1.5 && later > first, "{first} then {later}");

    lock.query_drop("ROLLBACK").await.expect("release the lock");
    wait_until(WAIT, "all five cancelled", || async {
        db.count_status(2).await == 5
    })
    .await;
    // The counters follow the commit the test just saw.
    wait_until(WAIT, "all five counted", || async {
        Scrape::take(&addr).get("order_expire_orders_cancelled_total") == 5.0
    })
    .await;
    let end = Scrape::take(&addr);
    assert_eq!(end.get("order_expire_queue_depth"), 0.0);
    assert_eq!(end.get("order_expire_oldest_pending_seconds"), 0.0);
    assert_eq!(end.get("order_expire_orders_cancelled_total"), 5.0);
    // Each waited behind the lock for more than a second and a half after its deadline.
    assert_eq!(
        end.get("order_expire_lateness_seconds_bucket{le=\"1\"}"),
        0.0
    );
    assert_eq!(end.get("order_expire_lateness_seconds_count"), 5.0);
}

#[test]
fn a_taken_port_or_a_bad_address_stops_the_start_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port();
    let app = App::with_env("CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT=1\n");
    for (args, names) in [
        (
            vec!["--metrics-addr".to_string(), format!("127.0.0.1:{port}")],
            "--metrics-addr",
        ),
        (
            vec!["--metrics-addr".to_string(), "localhost:9464".to_string()],
            "--metrics-addr",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = app.run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(names), "{stderr}");
    }
    drop(taken);
}

#[test]
fn check_shows_the_address_from_the_env_file_or_the_flag() {
    let app = App::with_env(
        "CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nORDER_EXPIRE_METRICS_ADDR=127.0.0.1:9464\n",
    );
    let report = |args: &[&str]| -> serde_json::Value {
        let output = app.run(args);
        serde_json::from_slice(&output.stdout).expect("check --json prints JSON")
    };
    let from_env = report(&["check", "--json", "--no-connect"]);
    assert_eq!(from_env["metrics_addr"], "127.0.0.1:9464");
    let from_flag = report(&[
        "--metrics-addr",
        "[::1]:9000",
        "check",
        "--json",
        "--no-connect",
    ]);
    assert_eq!(from_flag["metrics_addr"], "[::1]:9000", "the flag wins");
}

#[test]
fn the_help_documents_the_flag_and_its_setting() {
    let output = Command::new(common::BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--metrics-addr <HOST:PORT>"), "{help}");
    assert!(help.contains("ORDER_EXPIRE_METRICS_ADDR"), "{help}");
}
