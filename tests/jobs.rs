//! `ORDER_EXPIRE_DISPATCH`: one Laravel job per cancelled order on the app's own queue, run by
//! the real `php artisan queue:work` of the Laravel 8 fixture (`fixtures/laravel-app`), whose
//! `App\Jobs\OrderExpired` records each run (order id, the status it saw) in
//! `expired_job_runs`.
//!
//! database queue: the `jobs` row is written in the cancel transaction, so there is exactly one
//! per cancelled order, through bursts, `kill -9` and concurrent workers. redis queue: the
//! outbox is pushed after the commit, so every cancelled order's job runs at least once.
//!
//! Other key types (`ORDER_EXPIRE_ON_<TYPE>`): `App\Jobs\OrderIdExpired` is queued with the id
//! of each `ORDER_OTHEREVENT:<id>` key that expires, at least once, and nothing is written to
//! the orders or the products.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{App, LaravelApp, RedisServer, TestDb, default_key, wait_until};
use mysql_async::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(90);

/// A Laravel app with its own Redis and database, migrated.
struct Shop {
    redis: RedisServer,
    db: TestDb,
    laravel: LaravelApp,
}

async fn shop(extra: &str) -> Shop {
    shop_with(&format!(
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\n{extra}"
    ))
    .await
}

/// The same with only the settings `env` (no order job unless it sets one).
async fn shop_with(env: &str) -> Shop {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    let laravel = LaravelApp::new(&App::env_text(redis.port, &db, env));
    // The outbox's migration, shipped for apps with a redis queue.
    let migration = "2024_01_01_000000_create_order_expire_outbox_table.php";
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/laravel")
            .join(migration),
        laravel.dir().join("database/migrations").join(migration),
    )
    .expect("copy the outbox migration");
    laravel.artisan(&["migrate", "--force"]);
    Shop { redis, db, laravel }
}

/// `n` orders, every tenth of them paid (with a key all the same, as when the app forgets to
/// delete it); returns (unpaid, paid).
async fn burst(shop: &Shop, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        products.push(shop.db.add_product(name, 100_000).await);
    }
    let orders = shop.db.place_orders(&products, n).await;
    let (paid, unpaid): (Vec<u64>, Vec<u64>) = orders.iter().partition(|id| *id % 10 == 0);
    let list: Vec<String> = paid.iter().map(u64::to_string).collect();
    let mut c = shop.db.conn().await;
    c.query_drop(format!(
        "UPDATE orders SET status = 1 WHERE id IN ({})",
        list.join(",")
    ))
    .await
    .expect("mark paid");
    (unpaid, paid)
}

/// Writes every order's key as Laravel's cache does, expiring in `ttl` seconds.
fn put_keys(redis: &RedisServer, orders: &[u64], ttl: u64) {
    let mut conn = redis.conn(1);
    let mut pipe = redis::pipe();
    for id in orders {
        pipe.cmd("SETEX")
            .arg(default_key(*id))
            .arg(ttl)
            .arg(id.to_string())
            .ignore();
    }
    pipe.query::<()>(&mut conn).expect("SETEX pipeline");
}

async fn count(db: &TestDb, sql: &str) -> u64 {
    let mut c = db.conn().await;
    let n: Option<u64> = c.query_first(sql).await.expect("count");
    n.unwrap_or(0)
}

async fn wait_cancelled(db: &TestDb, n: usize) {
    wait_until(WAIT, "every unpaid order cancelled", || async {
        db.count_status(2).await == n
    })
    .await;
}

/// The order id each `jobs` row carries, read from its payload as Laravel's worker reads it.
async fn orders_of_jobs_rows(db: &TestDb) -> Vec<u64> {
    let mut c = db.conn().await;
    let payloads: Vec<String> = c
        .query("SELECT payload FROM jobs ORDER BY id")
        .await
        .expect("jobs rows");
    payloads.iter().map(|p| order_of_payload(p)).collect()
}

fn order_of_payload(payload: &str) -> u64 {
    let json: serde_json::Value = serde_json::from_str(payload).expect("payload is JSON");
    let command = json["data"]["command"].as_str().expect("data.command");
    let digits: String = command
        .split("s:2:\"id\";i:")
        .nth(1)
        .expect("the model identifier's id")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("an order id")
}

/// Each order id with how often it appears.
fn tally(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Runs Laravel's own queue worker until the queue is empty.
fn queue_work(shop: &Shop, connection: &str) {
    shop.laravel.artisan(&[
        "queue:work",
        connection,
        "--stop-when-empty",
        "--tries=1",
        "--quiet",
    ]);
}

/// The runs `App\Jobs\OrderExpired::handle()` recorded: order id -> (runs, statuses seen).
async fn job_runs(db: &TestDb) -> BTreeMap<u64, (usize, BTreeSet<i64>)> {
    let mut c = db.conn().await;
    let rows: Vec<(u64, i64)> = c
        .query("SELECT order_id, status_seen FROM expired_job_runs")
        .await
        .expect("job runs");
    let mut runs: BTreeMap<u64, (usize, BTreeSet<i64>)> = BTreeMap::new();
    for (order, status) in rows {
        let entry = runs.entry(order).or_default();
        entry.0 += 1;
        entry.1.insert(status);
    }
    runs
}

/// Every cancelled order's job ran (exactly once when `exactly_once`) and saw it cancelled; no
/// paid order's job ran; Laravel's worker failed none.
async fn assert_jobs_ran(shop: &Shop, unpaid: &[u64], paid: &[u64], exactly_once: bool) {
    let runs = job_runs(&shop.db).await;
    let ran: BTreeSet<u64> = runs.keys().copied().collect();
    let expected: BTreeSet<u64> = unpaid.iter().copied().collect();
    assert_eq!(ran.len(), expected.len(), "one job per cancelled order ran");
    assert_eq!(
        ran, expected,
        "the jobs ran for exactly the cancelled orders"
    );
    for id in paid {
        assert!(!runs.contains_key(id), "no job for paid order {id}");
    }
    for (order, (times, statuses)) in &runs {
        if exactly_once {
            assert_eq!(*times, 1, "order {order}'s job ran {times} times");
        }
        assert_eq!(
            statuses,
            &BTreeSet::from([2]),
            "order {order}'s job saw it cancelled"
        );
    }
    assert_eq!(count(&shop.db, "SELECT COUNT(*) FROM failed_jobs").await, 0);
}

/// The top-level keys of a JSON object, in order (serde_json would sort them).
fn top_level_keys(json: &str) -> Vec<String> {
    let (mut keys, mut depth, mut in_string, mut escaped, mut start) =
        (Vec::new(), 0, false, false, 0);
    let bytes = json.as_bytes();
    for (i, c) in json.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                if depth == 1 && bytes.get(i + 1) == Some(&b':') {
                    keys.push(json[start..i].to_string());
                }
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                start = i + 1;
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn database_queue_burst_runs_one_job_per_cancelled_order() {
    let shop = shop("QUEUE_CONNECTION=database").await;
    let (unpaid, paid) = burst(&shop, 2000).await;
    let mut worker = shop.laravel.app.start_worker(&[]);
    put_keys(&shop.redis, &[unpaid.clone(), paid.clone()].concat(), 2);
    wait_cancelled(&shop.db, unpaid.len()).await;
    worker.stop(Duration::from_secs(20));

    let rows = tally(orders_of_jobs_rows(&shop.db).await);
    assert_eq!(rows.len(), unpaid.len(), "one jobs row per cancelled order");
    assert!(rows.values().all(|n| *n == 1), "no order has two jobs rows");

    // Our payload has the fields, in the order, of the one Laravel's own dispatch() stores.
    let mut c = shop.db.conn().await;
    let ours: Option<String> = c
        .query_first("SELECT payload FROM jobs ORDER BY id LIMIT 1")
        .await
        .expect("a jobs row");
    let ours = ours.expect("a jobs row");
    queue_work(&shop, "database");
    assert_jobs_ran(&shop, &unpaid, &paid, true).await;
    assert_eq!(count(&shop.db, "SELECT COUNT(*) FROM jobs").await, 0);

    let laravels = shop
        .laravel
        .artisan(&["jobs:sample", &unpaid[0].to_string()]);
    assert_eq!(top_level_keys(&ours), top_level_keys(laravels.trim()));
    let ours_json: serde_json::Value = serde_json::from_str(&ours).expect("JSON");
    let laravel_json: serde_json::Value = serde_json::from_str(laravels.trim()).expect("JSON");
    for key in [
        "displayName",
        "job",
        "maxTries",
        "maxExceptions",
        "failOnTimeout",
        "backoff",
        "timeout",
        "retryUntil",
    ] {
        assert_eq!(ours_json[key], laravel_json[key], "{key}");
    }
    assert_eq!(
        ours_json["data"]["commandName"],
        laravel_json["data"]["commandName"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn database_queue_kill_9_mid_burst_then_restart_keeps_one_job_per_order() {
    let shop = shop("QUEUE_CONNECTION=database\nORDER_EXPIRE_TTL=2").await;
    let (unpaid, paid) = burst(&shop, 2000).await;
    let mut worker = shop.laravel.app.start_worker(&["--batch-size", "16"]);
    put_keys(&shop.redis, &[unpaid.clone(), paid.clone()].concat(), 2);
    wait_until(WAIT, "part of the burst cancelled", || async {
        shop.db.count_status(2).await >= 100
    })
    .await;
    App::kill_worker(&mut worker);
    let at_kill = shop.db.count_status(2).await;
    assert!(at_kill < unpaid.len(), "killed in the middle of the burst");
    let mut restarted = shop.laravel.app.start_worker(&[]);
    wait_cancelled(&shop.db, unpaid.len()).await;
    restarted.stop(Duration::from_secs(20));

    let rows = tally(orders_of_jobs_rows(&shop.db).await);
    let expected: BTreeSet<u64> = unpaid.iter().copied().collect();
    assert_eq!(rows.keys().copied().collect::<BTreeSet<_>>(), expected);
    assert!(rows.values().all(|n| *n == 1), "no order has two jobs rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_queue_two_workers_write_one_job_per_order() {
    let shop = shop("QUEUE_CONNECTION=database").await;
    let (unpaid, paid) = burst(&shop, 2000).await;
    let mut first = shop.laravel.app.start_worker(&[]);
    let mut second = shop.laravel.app.start_worker(&[]);
    put_keys(&shop.redis, &[unpaid.clone(), paid.clone()].concat(), 2);
    wait_cancelled(&shop.db, unpaid.len()).await;
    first.stop(Duration::from_secs(20));
    second.stop(Duration::from_secs(20));
    let rows = tally(orders_of_jobs_rows(&shop.db).await);
    assert_eq!(rows.len(), unpaid.len(), "one jobs row per cancelled order");
    assert!(rows.values().all(|n| *n == 1), "no order has two jobs rows");
}

/// The outbox is empty and the redis queue holds `n` jobs.
async fn wait_pushed(shop: &Shop, n: usize) {
    wait_until(WAIT, "every job pushed to the redis queue", || async {
        let mut conn = shop.redis.conn(0);
        let queued: usize = redis::cmd("LLEN")
            .arg("laravel_database_queues:default")
            .query(&mut conn)
            .expect("LLEN");
        queued >= n && count(&shop.db, "SELECT COUNT(*) FROM order_expire_outbox").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_queue_burst_runs_every_cancelled_orders_job() {
    let shop = shop("QUEUE_CONNECTION=redis").await;
    let (unpaid, paid) = burst(&shop, 2000).await;
    let mut worker = shop.laravel.app.start_worker(&[]);
    put_keys(&shop.redis, &[unpaid.clone(), paid.clone()].concat(), 2);
    wait_cancelled(&shop.db, unpaid.len()).await;
    wait_pushed(&shop, unpaid.len()).await;
    worker.stop(Duration::from_secs(20));
    let mut conn = shop.redis.conn(0);
    let notify: usize = redis::cmd("LLEN")
        .arg("laravel_database_queues:default:notify")
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!(
        notify,
        unpaid.len(),
        "one notification per job, pushed with it"
    );

    queue_work(&shop, "redis");
    assert_jobs_ran(&shop, &unpaid, &paid, false).await;
    let left: usize = redis::cmd("LLEN")
        .arg("laravel_database_queues:default")
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!(left, 0, "Laravel's worker took every job");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_queue_kill_9_mid_burst_then_restart_loses_no_job() {
    let shop = shop("QUEUE_CONNECTION=redis\nORDER_EXPIRE_TTL=2").await;
    let (unpaid, paid) = burst(&shop, 2000).await;
    let mut worker = shop.laravel.app.start_worker(&["--batch-size", "16"]);
    put_keys(&shop.redis, &[unpaid.clone(), paid.clone()].concat(), 2);
    wait_until(WAIT, "part of the burst cancelled", || async {
        shop.db.count_status(2).await >= 100
    })
    .await;
    App::kill_worker(&mut worker);
    assert!(shop.db.count_status(2).await < unpaid.len());
    let mut restarted = shop.laravel.app.start_worker(&[]);
    wait_cancelled(&shop.db, unpaid.len()).await;
    wait_pushed(&shop, unpaid.len()).await;
    restarted.stop(Duration::from_secs(20));
    queue_work(&shop, "redis");
    assert_jobs_ran(&shop, &unpaid, &paid, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_order_expire_cannot_write_is_refused_at_start() {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    for (extra, named) in [
        ("QUEUE_CONNECTION=sync", "QUEUE_CONNECTION"),
        ("QUEUE_CONNECTION=sqs", "QUEUE_CONNECTION"),
        ("QUEUE_CONNECTION=beanstalkd", "QUEUE_CONNECTION"),
        (
            "QUEUE_CONNECTION=database\nORDER_EXPIRE_DISPATCH_CONNECTION=nowhere",
            "ORDER_EXPIRE_DISPATCH_CONNECTION",
        ),
    ] {
        let laravel = LaravelApp::new(&App::env_text(
            redis.port,
            &db,
            &format!("ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\n{extra}"),
        ));
        let output = laravel.app.run(&["check", "--no-connect"]);
        assert_eq!(output.status.code(), Some(1), "{extra}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{extra}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_outbox_or_jobs_table_stops_the_start_with_the_migration_to_run() {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    for (queue, table, fix) in [
        (
            "redis",
            "order_expire_outbox",
            "deploy/laravel/2024_01_01_000000_create_order_expire_outbox_table.php",
        ),
        ("database", "queue_jobs", "php artisan queue:table"),
    ] {
        let laravel = LaravelApp::new(&App::env_text(
            redis.port,
            &db,
            &format!("ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION={queue}"),
        ));
        laravel.artisan(&["migrate", "--force"]);
        if queue == "database" {
            // The fixture's migrations create `jobs`; point the queue at a table that is not there.
            std::fs::write(
                laravel.dir().join("config/queue.php"),
                "<?php return ['default' => env('QUEUE_CONNECTION'), 'connections' => ['database' => ['driver' => 'database', 'table' => 'queue_jobs', 'queue' => 'default']]];",
            )
            .expect("write config/queue.php");
        }
        let output = laravel.app.run(&[]);
        assert_eq!(output.status.code(), Some(1), "{queue}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.contains(table) && last.contains(fix),
            "{queue}: {stderr}"
        );
    }
}

/// The key the app writes for an event of another type, `ORDER_OTHEREVENT:<id>`.
fn other_key(id: &str) -> String {
    format!("laravel_database_laravel_cache:ORDER_OTHEREVENT:{id}")
}

/// Every order and product row, to show they are left as they were.
async fn orders_and_stock(db: &TestDb) -> (Vec<(u64, i64, String)>, Vec<(u64, i64)>) {
    let mut c = db.conn().await;
    let orders: Vec<(u64, i64, String)> = c
        .query("SELECT id, status, CAST(updated_at AS CHAR) FROM orders ORDER BY id")
        .await
        .expect("orders");
    let stock: Vec<(u64, i64)> = c
        .query("SELECT id, stock FROM products ORDER BY id")
        .await
        .expect("products");
    (orders, stock)
}

/// `ORDER_EXPIRE_ON_ORDER_OTHEREVENT`: each `ORDER_OTHEREVENT:<id>` key that expires queues
/// `App\Jobs\OrderIdExpired` with the id (no order job configured), Laravel's worker runs each
/// at least once, the orders and products are untouched, and `...:05` queues nothing.
async fn other_key_type_runs_its_job(queue: &str) {
    let shop = shop_with(&format!(
        "QUEUE_CONNECTION={queue}\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\OrderIdExpired\nORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY=orderId"
    ))
    .await;
    let (unpaid, paid) = burst(&shop, 300).await;
    let ids: Vec<u64> = [unpaid, paid]
        .concat()
        .into_iter()
        .filter(|id| *id != 5)
        .collect();
    let before = orders_and_stock(&shop.db).await;

    let check = shop.laravel.app.run(&["check", "--no-connect", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&check.stdout).expect("check --json prints JSON");
    assert_eq!(report["key_jobs"][0]["key_type"], "ORDER_OTHEREVENT");
    assert_eq!(report["key_jobs"][0]["job"], "App\\Jobs\\OrderIdExpired");
    assert_eq!(report["key_jobs"][0]["property"], "orderId");
    assert_eq!(report["key_jobs"][0]["delivery"], "at-least-once");
    assert_eq!(
        report["key_jobs"][0]["pattern"],
        format!("{}*", other_key(""))
    );

    let mut worker = shop.laravel.app.start_worker(&[]);
    assert_eq!(worker.count_event("key_job"), 1);
    let mut conn = shop.redis.conn(1);
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("SETEX")
            .arg(other_key(&id.to_string()))
            .arg(2)
            .arg(id.to_string())
            .ignore();
    }
    pipe.cmd("SETEX")
        .arg(other_key("05"))
        .arg(2)
        .arg("5")
        .ignore();
    pipe.query::<()>(&mut conn).expect("SETEX pipeline");

    wait_until(WAIT, "every key's job queued", || async {
        let queued = if queue == "database" {
            count(&shop.db, "SELECT COUNT(*) FROM jobs").await as usize
        } else {
            let mut conn = shop.redis.conn(0);
            redis::cmd("LLEN")
                .arg("laravel_database_queues:default")
                .query::<usize>(&mut conn)
                .expect("LLEN")
        };
        queued >= ids.len() && worker.count_event("key_malformed") >= 1
    })
    .await;
    worker.stop(Duration::from_secs(20));
    let malformed = worker.events("key_malformed");
    assert_eq!(malformed[0]["key_type"], "ORDER_OTHEREVENT");
    let stopped = worker.events("stopped");
    assert!(stopped[0]["key_jobs"].as_u64().expect("key_jobs") >= ids.len() as u64);

    queue_work(&shop, queue);
    let runs = job_runs(&shop.db).await;
    let expected: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        runs.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "each id's job ran, and none for the malformed key"
    );
    assert!(!runs.contains_key(&5), "`...:05` queued nothing");
    assert_eq!(count(&shop.db, "SELECT COUNT(*) FROM failed_jobs").await, 0);
    assert_eq!(
        count(&shop.db, "SELECT COUNT(*) FROM expired_job_runs WHERE job_class <> 'App\\\\Jobs\\\\OrderIdExpired'").await,
        0
    );
    assert_eq!(
        orders_and_stock(&shop.db).await,
        before,
        "no SQL on the orders or the products"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_key_type_database_queue_runs_its_job_with_the_id() {
    other_key_type_runs_its_job("database").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_key_type_redis_queue_runs_its_job_with_the_id() {
    other_key_type_runs_its_job("redis").await;
}
