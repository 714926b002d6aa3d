//! Apps on `DB_CONNECTION=pgsql`: the worker against a real PostgreSQL 15 (a private cluster per
//! test) and a real redis-server, with the contract it keeps on MySQL: every unpaid order
//! cancelled once with its stock, paid ones untouched, replicas sharing the work, restarts and
//! outages survived, readiness, the schema and privilege checks at start, and `check`.

mod common;

use std::time::{Duration, Instant};

use common::certs::Certs;
use common::pgsql::{PgDb, PgServer};
use common::{App, RedisServer, Scrape, Worker, http_get, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn stopped(worker: &Worker) -> serde_json::Value {
    worker
        .events("stopped")
        .pop()
        .unwrap_or_else(|| panic!("no stopped event; log:\n{}", worker.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_orders_are_cancelled_once_with_their_stock_and_paid_ones_stay() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(300).await;
    let paid: Vec<u64> = ids.iter().copied().step_by(3).collect();
    for id in &paid {
        db.set_status(*id, 1).await;
    }
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&[]);
    redis.expire_together(&ids, Duration::from_millis(500));
    let unpaid = ids.len() - paid.len();
    wait_until(WAIT, "every unpaid order cancelled", || async {
        db.count_status(2).await == unpaid
    })
    .await;
    // A second round of the same events (a replayed notification) changes nothing.
    redis.expire_together(&ids, Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (id, status) in db.statuses().await {
        let expected = if paid.contains(&id) { 1 } else { 2 };
        assert_eq!(status, expected, "order {id}");
    }
    db.assert_stock_returned(100_000).await;
    // updated_at as Eloquent writes it: now, in the app's time zone (UTC), timestamp(0).
    let stale = db
        .client()
        .await
        .query_one(
            "SELECT COUNT(*) FROM orders WHERE status = 2 AND \
             abs(extract(epoch FROM (updated_at - (now() AT TIME ZONE 'UTC')))) > 120",
            &[],
        )
        .await
        .expect("query")
        .get::<_, i64>(0);
    assert_eq!(stale, 0, "every cancelled order has a fresh updated_at");
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    let stopped = stopped(&worker);
    assert_eq!(stopped["cancelled"], unpaid as u64, "{stopped}");
    assert_eq!(stopped["parked"], 0, "{stopped}");
    let start = worker
        .json_lines()
        .into_iter()
        .find(|l| l["driver"] == "pgsql")
        .unwrap_or_else(|| panic!("no start line naming the driver; log:\n{}", worker.log()));
    assert_eq!(start["write_path"], "skip-locked", "{start}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_burst_and_one_killed_midway_loses_no_order() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(6000).await;
    let app = App::pgsql(&redis, &db, "ORDER_EXPIRE_TTL=3600");
    let args = ["--batch-size", "64", "--metrics-addr", "127.0.0.1:0"];
    let mut first = app.start_worker(&args);
    let second = app.start_worker(&args);
    // Each sees both members, then the join margin passes (a newcomer owns orders only a
    // moment after it is seen).
    let addrs = [first.metrics_addr(), second.metrics_addr()];
    wait_until(WAIT, "both workers see two members", || {
        let seen = addrs
            .iter()
            .all(|a| Scrape::take(a).get("order_expire_replicas") == 2.0);
        async move { seen }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let slots: Vec<serde_json::Value> = [&first, &second]
        .iter()
        .map(|w| w.events("replicas")[0]["slot"].clone())
        .collect();
    assert_ne!(
        slots[0], slots[1],
        "each worker holds its own slot: {slots:?}"
    );
    redis.expire_together(&ids, Duration::from_millis(500));
    wait_until(WAIT, "the first worker cancelled some", || async {
        !first.cancelled_orders().is_empty()
    })
    .await;
    App::kill_worker(&mut first);
    wait_until(WAIT, "every order cancelled", || async {
        db.count_status(2).await == ids.len()
    })
    .await;
    db.assert_stock_returned(100_000).await;
    let (by_first, by_second) = (first.cancelled_orders(), second.cancelled_orders());
    assert!(
        !by_first.is_empty() && !by_second.is_empty(),
        "both workers wrote a share: {} and {}",
        by_first.len(),
        by_second.len()
    );
    let twice: Vec<&u64> = by_first
        .iter()
        .filter(|id| by_second.contains(id))
        .collect();
    assert!(
        twice.is_empty(),
        "orders cancelled by both workers: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_restart_mid_burst_loses_no_order() {
    let redis = RedisServer::start();
    let mut pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(4000).await;
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&[
        "--batch-size",
        "32",
        "--concurrency",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    redis.expire_together(&ids, Duration::from_millis(300));
    wait_until(WAIT, "some orders cancelled", || async {
        db.count_status(2).await >= 100
    })
    .await;
    pg.restart(Duration::from_secs(2));
    wait_until(WAIT, "every order cancelled after the restart", || async {
        db.count_status(2).await == ids.len()
    })
    .await;
    db.assert_stock_returned(100_000).await;
    // The writes that failed and worked again are counted under the app's own driver.
    let recovered = worker.count_event("writes_recovered") as f64;
    let scrape = Scrape::take(&worker.metrics_addr());
    assert_eq!(
        scrape.get("order_expire_reconnects_total{server=\"pgsql\"}"),
        recovered,
        "{}",
        worker.log()
    );
    assert!(recovered >= 1.0, "{}", worker.log());
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    let stopped = stopped(&worker);
    assert_eq!(stopped["cancelled"], ids.len() as u64, "{stopped}");
    assert!(
        stopped["retries"].as_u64().unwrap_or(0) > 0,
        "writes failed during the restart and were retried: {stopped}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_postgresql_is_down() {
    let redis = RedisServer::start();
    let mut pg = PgServer::start();
    let db = pg.create_db().await;
    let app = App::pgsql(&redis, &db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    wait_for_status(&addr, "/readyz", 200, "started").await;
    pg.stop();
    let reason = wait_for_status(&addr, "/readyz", 503, "PostgreSQL stopped").await;
    assert!(
        reason.contains("PostgreSQL does not answer"),
        "names the database: {reason}"
    );
    assert_eq!(
        http_get(&addr, "/healthz").0,
        200,
        "the worker itself is fine"
    );
    pg.restart(Duration::ZERO);
    wait_for_status(&addr, "/readyz", 200, "PostgreSQL back").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reads_the_workers_on_postgresql_and_names_it_when_it_is_down() {
    let redis = RedisServer::start();
    let mut pg = PgServer::start();
    let db = pg.create_db().await;
    let app = App::pgsql(&redis, &db, "ORDER_EXPIRE_TTL=900");
    let _worker = app.start_worker(&[]);
    wait_until(WAIT, "status sees the worker's member slot", || async {
        app.status_json(&[]).0["workers"]["live"] == 1
    })
    .await;
    let (report, code) = app.status_json(&[]);
    assert_eq!(report["verdict"], "ok", "{report:#}");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["database"]["driver"], "pgsql", "{report:#}");
    assert!(report["database"]["error"].is_null(), "{report:#}");
    assert_eq!(report["overdue"]["count"], 0, "{report:#}");

    pg.stop();
    let (report, code) = app.status_json(&[]);
    assert_eq!(report["verdict"], "unknown", "{report:#}");
    assert_eq!(code, Some(1), "{report:#}");
    let error = report["database"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("PostgreSQL"), "{report:#}");
    assert!(report["workers"]["live"].is_null(), "{report:#}");
}

/// Runs the worker expecting it to refuse to start; returns its last stderr line.
fn refused_start(app: &App) -> String {
    let output = app.run(&["--log-format", "json"]);
    assert!(!output.status.success(), "the worker refused to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("order-expire: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line; stderr:\n{stderr}");
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_update_rights_is_refused_at_start_in_one_line() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let mut db = pg.create_db().await;
    db.create_role("shop_reader", "s3cret").await;
    db.user = "shop_reader".into();
    db.password = "s3cret".into();
    let line = refused_start(&App::pgsql(&redis, &db, ""));
    assert!(line.contains("may not UPDATE table orders"), "{line}");
    assert!(
        line.contains("GRANT SELECT, UPDATE ON \"orders\" TO shop_reader"),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
    // With the grants the same user starts.
    db.client()
        .await
        .batch_execute("GRANT UPDATE ON orders, products TO shop_reader")
        .await
        .expect("grant");
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&[]);
    assert_eq!(worker.stop(WAIT).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_check_refuses_a_status_that_does_not_fit_and_warns_without_the_index() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let line = refused_start(&App::pgsql(
        &redis,
        &db,
        "ORDER_EXPIRE_CANCELLED_STATUS=40000",
    ));
    assert!(
        line.contains("does not fit orders.status, which is `smallint`"),
        "{line}"
    );
    db.client()
        .await
        .batch_execute("DROP INDEX orders_status_created_at_index")
        .await
        .expect("drop index");
    let app = App::pgsql(&redis, &db, "");
    let report = check_json(&app);
    assert_eq!(
        report["connections"]["pgsql"]["sweep_index"], false,
        "{report:#}"
    );
    let warnings = report["connections"]["pgsql"]["warnings"].to_string();
    assert!(
        warnings.contains("CREATE INDEX orders_status_created_at_index ON \\\"orders\\\" (\\\"status\\\", \\\"created_at\\\")"),
        "{warnings}"
    );
}

fn check_json(app: &App) -> serde_json::Value {
    let output = app.run(&["check", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_the_resolved_connection_masked_and_what_it_found() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let mut db = pg.create_db().await;
    db.create_role("shop", "p4ss w0rd").await;
    db.client()
        .await
        .batch_execute("GRANT UPDATE ON orders, products TO shop")
        .await
        .expect("grant");
    db.user = "shop".into();
    db.password = "p4ss w0rd".into();
    // DATABASE_URL wins over the DB_* lines, password and all (percent-encoded).
    let app = App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={}\nDB_CONNECTION=pgsql\nDB_HOST=ignored.invalid\n\
         DATABASE_URL=postgres://shop:p4ss%20w0rd@127.0.0.1:{}/{}?sslmode=disable\n",
        redis.port, db.port, db.name
    ));
    let report = check_json(&app);
    let d = &report["db"];
    assert_eq!(d["driver"], "pgsql", "{report:#}");
    assert_eq!(
        (d["host"].as_str(), d["port"].as_u64()),
        (Some("127.0.0.1"), Some(u64::from(db.port)))
    );
    assert_eq!(d["password"], "***");
    assert_eq!(d["sslmode"], "disable");
    assert_eq!(d["search_path"][0], "public");
    let found = &report["connections"]["pgsql"];
    assert_eq!(found["ok"], true, "{report:#}");
    assert_eq!(found["family"], "postgresql");
    assert!(
        found["server"]
            .as_str()
            .is_some_and(|s| s.starts_with("PostgreSQL 15.")),
        "{found}"
    );
    assert_eq!(found["write_path"], "skip-locked");
    assert_eq!(found["sweep_index"], true);
    let text = app.run(&["check"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(!text.contains("p4ss"), "{text}");
    assert!(
        text.contains(&format!(
            "pgsql       127.0.0.1:{}, database {}, user shop, password ***",
            db.port, db.name
        )),
        "{text}"
    );
    assert!(text.contains("write path  skip-locked"), "{text}");
    assert!(text.contains("set search_path to \"public\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_directory_as_host_and_a_row_the_app_holds_is_written_once_released() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(20).await;
    let app = App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={}\nDB_CONNECTION=pgsql\nDB_HOST={}\nDB_PORT={}\nDB_DATABASE={}\nDB_USERNAME=postgres\n",
        redis.port,
        pg.socket_dir().display(),
        db.port,
        db.name
    ));
    let report = check_json(&app);
    assert_eq!(report["connections"]["pgsql"]["ok"], true, "{report:#}");
    let mut worker = app.start_worker(&[]);
    // The app holds the first order's row, as a payment in progress would.
    let mut holder = db.client().await;
    let payment = holder.transaction().await.expect("begin");
    let held = i64::try_from(ids[0]).expect("id");
    payment
        .execute("SELECT id FROM orders WHERE id = $1 FOR UPDATE", &[&held])
        .await
        .expect("lock the order");
    redis.expire_together(&ids, Duration::from_millis(300));
    wait_until(WAIT, "the free orders cancelled", || async {
        db.count_status(2).await == ids.len() - 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        db.count_status(2).await,
        ids.len() - 1,
        "the held order waits"
    );
    payment.rollback().await.expect("release");
    wait_until(WAIT, "the held order cancelled once released", || async {
        db.count_status(2).await == ids.len()
    })
    .await;
    db.assert_stock_returned(100_000).await;
    assert_eq!(worker.stop(WAIT).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_out_of_range_parks_the_order_and_the_others_are_cancelled() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let full = db.add_product("Full", i32::MAX).await;
    let normal = db.add_product("Normal", 100).await;
    let parked = db.place_orders(&[full], 1).await;
    let fine = db.place_orders(&[normal], 5).await;
    // The app refilled the product to the top since: returning 1 more is out of range.
    let full_id = i64::try_from(full).expect("id");
    db.client()
        .await
        .execute(
            "UPDATE products SET stock = 2147483647 WHERE id = $1",
            &[&full_id],
        )
        .await
        .expect("refill");
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&[]);
    let all: Vec<u64> = parked.iter().chain(&fine).copied().collect();
    redis.expire_together(&all, Duration::from_millis(300));
    worker.wait_for_event("order_parked", 1, WAIT);
    wait_until(WAIT, "the other orders cancelled", || async {
        db.count_status(2).await == fine.len()
    })
    .await;
    let event = &worker.events("order_parked")[0];
    assert_eq!(event["order_id"], parked[0], "{event}");
    assert!(
        event["error"].as_str().is_some_and(|e| e.contains("22003")),
        "{event}"
    );
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    assert_eq!(stopped(&worker)["parked"], 1);
}

/// An app whose `DATABASE_URL` reaches `db` over TLS with `query` (sslmode and the files).
fn tls_app(redis: &RedisServer, db: &PgDb, query: &str) -> App {
    App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={}\nDB_CONNECTION=pgsql\n\
         DATABASE_URL=postgres://postgres@127.0.0.1:{}/{}?{query}\n",
        redis.port, db.port, db.name
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_verify_full_and_a_client_certificate_every_unpaid_order_is_cancelled_once() {
    let certs = Certs::make();
    let redis = RedisServer::start();
    let pg = PgServer::start_tls(&certs);
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(200).await;
    let files = |ca: &str| {
        format!(
            "sslrootcert={}&sslcert={}&sslkey={}",
            certs.path(ca).display(),
            certs.path("client.crt").display(),
            certs.path("client.key").display()
        )
    };
    let app = tls_app(
        &redis,
        &db,
        &format!("sslmode=verify-full&{}", files("ca.crt")),
    );
    let report = check_json(&app);
    assert_eq!(report["connections"]["pgsql"]["ok"], true, "{report:#}");
    assert_eq!(report["db"]["sslmode"], "verify-full");
    assert_eq!(report["db"]["tls"]["verify_peer"], true);
    assert_eq!(
        report["db"]["tls"]["ca_file"],
        certs.path("ca.crt").display().to_string()
    );
    let mut worker = app.start_worker(&[]);
    redis.expire_together(&ids, Duration::from_millis(300));
    wait_until(WAIT, "every order cancelled over TLS", || async {
        db.count_status(2).await == ids.len()
    })
    .await;
    db.assert_stock_returned(100_000).await;
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    assert_eq!(stopped(&worker)["cancelled"], ids.len() as u64);

    // A CA that signed neither certificate: refused in one line, before anything is written.
    let line = refused_start(&tls_app(
        &redis,
        &db,
        &format!("sslmode=verify-full&{}", files("other-ca.crt")),
    ));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    // Without TLS the server refuses the connection (hostnossl ... reject).
    let line = refused_start(&tls_app(&redis, &db, "sslmode=disable"));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
}
