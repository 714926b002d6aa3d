//! `order-expire status` against real servers and a real worker: each verdict, what each fact
//! reads, the JSON shape and the exit status a monitor relies on (0 ok, 1 degraded or unknown).

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use common::{App, RedisServer, TestDb, Worker, default_key, setex, wait_until};
use mysql_async::prelude::Queryable;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn reasons(report: &Value) -> Vec<String> {
    report["reasons"]
        .as_array()
        .expect("reasons is a list")
        .iter()
        .map(|r| r.as_str().expect("a reason is a string").to_string())
        .collect()
}

/// Inserts an unpaid order of product 1 created `age` ago (UTC, as the app's clock).
async fn order_created_ago(db: &TestDb, age: Duration) -> u64 {
    let mut c = db.conn().await;
    c.exec_drop(
        "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) \
         VALUES (1, 1, 1, 9.99, 0, UTC_TIMESTAMP() - INTERVAL ? SECOND, UTC_TIMESTAMP())",
        (age.as_secs(),),
    )
    .await
    .expect("insert order");
    c.last_insert_id().expect("order id")
}

/// A worker whose settings name its metrics endpoint (`ORDER_EXPIRE_METRICS_ADDR`), and that
/// has cancelled three orders by their keys' expiry.
async fn running_worker(redis: &RedisServer, db: &TestDb) -> (App, Worker) {
    let port = closed_port();
    let app = App::new(
        redis,
        db,
        &format!("ORDER_EXPIRE_TTL=900\nORDER_EXPIRE_METRICS_ADDR=127.0.0.1:{port}"),
    );
    let worker = app.start_worker(&[]);
    let product = db.add_product("Tea", 100).await;
    let mut conn = redis.conn(1);
    for _ in 0..3 {
        let id = db.place_order(product, 1).await;
        setex(&mut conn, &default_key(id), 1, &id.to_string());
    }
    wait_until(WAIT, "3 orders cancelled", || async {
        db.count_status(2).await == 3
    })
    .await;
    (app, worker)
}

#[tokio::test(flavor = "multi_thread")]
async fn ok_with_a_worker_running_and_its_endpoint_read_from_the_settings() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (app, worker) = running_worker(&redis, &db).await;

    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["verdict"], "ok", "{report:#}");
    assert_eq!(reasons(&report), Vec::<String>::new());
    assert_eq!(report["channel"], "__keyevent@1__:expired");
    let master = &report["redis"]["masters"][0];
    assert_eq!(report["redis"]["topology"], "standalone");
    assert_eq!(master["redis"], format!("127.0.0.1:{}", redis.port));
    assert_eq!(
        master["subscribers"], 1,
        "the worker's SUBSCRIBE: {report:#}"
    );
    assert_eq!(master["publishes_expired"], true);
    let flags = master["notifications"].as_str().expect("the flags");
    assert!(flags.contains('E') && flags.contains('x'), "{report:#}");
    assert_eq!(report["workers"]["live"], 1);
    assert_eq!(report["workers"]["table"], "orders");
    assert_eq!(report["workers"]["slots"][0]["slot"], 0);
    assert_eq!(report["overdue"]["count"], 0);
    assert_eq!(report["overdue"]["ttl_seconds"], 900);
    assert!(report["outbox"].is_null(), "no redis queue: {report:#}");

    // The endpoint is the settings' own ORDER_EXPIRE_METRICS_ADDR.
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{report:#}");
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["addr"], worker.metrics_addr());
    assert_eq!(endpoint["ready"], true, "{report:#}");
    assert_eq!(endpoint["lateness_count"], 3, "{report:#}");
    let p99 = endpoint["lateness_p99_seconds"].as_f64().expect("a p99");
    assert!((0.0..=10.0).contains(&p99), "{report:#}");
    assert_eq!(endpoint["queue_depth"], 0.0);

    // The text: the verdict first, then one line per fact.
    let text = app.run(&["status"]);
    assert_eq!(text.status.code(), Some(0));
    let text = stdout(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    for label in [
        "subscribers",
        "notifications",
        "workers",
        "overdue",
        "worker",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{label} "))),
            "{label}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn given_endpoints_are_read_and_an_unreachable_one_makes_the_verdict_unknown() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (app, worker) = running_worker(&redis, &db).await;
    let alive = worker.metrics_addr();
    let dead = format!("127.0.0.1:{}", closed_port());

    let (report, code) = app.status_json(&["--metrics-addr", &format!("{alive},{dead}")]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "unknown", "{report:#}");
    let reasons = reasons(&report);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains(&format!("no answer from the worker at {dead}")),
        "{reasons:?}"
    );
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["addr"], alive);
    assert_eq!(endpoints[0]["lateness_count"], 3);
    assert!(endpoints[0]["error"].is_null());
    assert_eq!(endpoints[1]["addr"], dead);
    assert!(endpoints[1]["error"].is_string(), "{report:#}");
    assert!(endpoints[1]["ready"].is_null());

    // A flag that is not HOST:PORT is a usage mistake.
    let wrong = app.run(&["status", "--metrics-addr", "localhost"]);
    assert_eq!(wrong.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_subscriber_and_no_worker_are_degraded() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");

    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "degraded");
    assert_eq!(report["redis"]["masters"][0]["subscribers"], 0);
    assert_eq!(report["workers"]["live"], 0);
    assert!(
        report["overdue"].is_null(),
        "no ORDER_EXPIRE_TTL: {report:#}"
    );
    assert_eq!(
        reasons(&report),
        vec![
            format!(
                "no subscriber on __keyevent@1__:expired at 127.0.0.1:{}",
                redis.port
            ),
            "no worker holds a member slot of the table orders (none is running)".to_string(),
        ]
    );
    let text = app.run(&["status"]);
    assert_eq!(text.status.code(), Some(1));
    let text = stdout(&text);
    assert!(
        text.starts_with(&format!(
            "degraded: no subscriber on __keyevent@1__:expired at 127.0.0.1:{};",
            redis.port
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_turned_off_under_a_running_worker_are_degraded() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let _worker = app.start_worker(&[]);
    let (report, code) = app.status_json(&[]);
    assert_eq!(report["verdict"], "ok", "{report:#}");
    assert_eq!(code, Some(0));

    let mut conn = redis.conn(0);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query(&mut conn)
        .expect("CONFIG SET");
    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "degraded");
    assert_eq!(report["redis"]["masters"][0]["publishes_expired"], false);
    assert_eq!(report["redis"]["masters"][0]["notifications"], "");
    assert_eq!(
        reasons(&report),
        vec![format!(
            "keyspace notifications off at 127.0.0.1:{} (notify-keyspace-events \"\", needs Ex)",
            redis.port
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overdue_orders_are_counted_with_the_oldest_ones_lateness() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    db.add_product("Tea", 100).await;
    // TTL 60 s: the 2 h old order keeps its key (a longer TTL in the app), the 1 h old one
    // lost it, the 10 s old one is not due.
    let keyed = order_created_ago(&db, Duration::from_secs(7200)).await;
    let late = order_created_ago(&db, Duration::from_secs(3600)).await;
    order_created_ago(&db, Duration::from_secs(10)).await;
    setex(
        &mut redis.conn(1),
        &default_key(keyed),
        600,
        &keyed.to_string(),
    );
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=60");

    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(1), "{report:#}");
    let overdue = &report["overdue"];
    assert_eq!(overdue["count"], 2, "{report:#}");
    assert_eq!(overdue["count_capped"], false);
    assert_eq!(overdue["checked"], 2);
    assert_eq!(overdue["still_keyed"], 1);
    assert_eq!(
        overdue["grace_seconds"], 120,
        "the sweep interval and a minute"
    );
    assert_eq!(overdue["oldest"]["order"], late);
    let seconds = overdue["oldest"]["overdue_seconds"]
        .as_u64()
        .expect("seconds");
    assert!((3530..=3560).contains(&seconds), "3540 s late: {report:#}");
    assert!(
        reasons(&report).contains(&format!(
            "order {late} is unpaid 59 min {} s past its deadline, its key gone (more than a sweep interval and a minute)",
            seconds % 60
        )),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outbox_backlog_is_counted_and_a_stale_one_is_degraded() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let mut c = db.conn().await;
    // The table of deploy/laravel's outbox migration.
    c.query_drop(
        "CREATE TABLE order_expire_outbox (id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         order_id bigint unsigned NOT NULL, payload longtext NOT NULL, created_at int unsigned NOT NULL)",
    )
    .await
    .expect("create the outbox");
    let app = App::new(
        &redis,
        &db,
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=redis",
    );
    let (report, _) = app.status_json(&[]);
    assert_eq!(report["outbox"]["rows"], 0, "{report:#}");
    assert!(report["outbox"]["oldest_age_seconds"].is_null());

    c.query_drop(
        "INSERT INTO order_expire_outbox (order_id, payload, created_at) VALUES \
         (1, '{}', UNIX_TIMESTAMP() - 300), (2, '{}', UNIX_TIMESTAMP() - 5), (3, '{}', UNIX_TIMESTAMP())",
    )
    .await
    .expect("outbox rows");
    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(1));
    let outbox = &report["outbox"];
    assert_eq!(outbox["table"], "order_expire_outbox");
    assert_eq!(outbox["rows"], 3, "{report:#}");
    let age = outbox["oldest_age_seconds"].as_u64().expect("an age");
    assert!((300..=310).contains(&age), "{report:#}");
    assert!(
        reasons(&report)
            .iter()
            .any(|r| r.starts_with("the outbox's oldest job has waited 5 min")),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_servers_make_the_verdict_unknown_each_said_once() {
    let db = TestDb::create().await;
    let (redis_port, mysql_port) = (closed_port(), closed_port());
    let env = App::env_text(redis_port, &db, "ORDER_EXPIRE_TTL=60").replace(
        &format!(
            "DB_PORT={}",
            db.host_port().rsplit(':').next().unwrap_or_default()
        ),
        &format!("DB_PORT={mysql_port}"),
    );
    let app = App::with_env(&env);
    let (report, code) = app.status_json(&[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "unknown", "{report:#}");
    let reasons = reasons(&report);
    assert_eq!(
        reasons.len(),
        2,
        "one for Redis, one for MySQL: {reasons:?}"
    );
    assert!(
        reasons[0].contains(&format!("127.0.0.1:{redis_port}")),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains(&format!("127.0.0.1:{mysql_port}")),
        "{reasons:?}"
    );
    assert_eq!(report["database"]["driver"], "mysql", "{report:#}");
    assert!(report["database"]["error"].is_string(), "{report:#}");
    assert!(report["workers"]["live"].is_null());
    assert!(report["overdue"]["count"].is_null());
}
