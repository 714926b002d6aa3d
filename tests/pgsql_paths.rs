//! The other paths of an app on `DB_CONNECTION=pgsql`, against a real PostgreSQL 15 and Redis:
//! the reconciliation sweep and the deadline watcher (orders whose key is gone), the redis
//! queue's outbox, `status` reading the workers' member slots, and a deadlock (SQLSTATE 40P01)
//! retried rather than parked.

mod common;

use std::time::Duration;

use common::fault_proxy::{FaultProxy, PG_COMMIT};
use common::pgsql::{PgServer, env_text};
use common::{App, RedisServer, Scrape, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn ids_param(ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .map(|id| i64::try_from(*id).expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_whose_key_is_gone_are_cancelled_by_the_sweep_and_the_deadline_watcher() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    // Placed an hour ago; their keys are gone (Redis restarted, cache:clear).
    let old = db.place_orders_of_three_products(30).await;
    db.client()
        .await
        .execute(
            "UPDATE orders SET created_at = created_at - interval '1 hour' WHERE id = ANY($1)",
            &[&ids_param(&old)],
        )
        .await
        .expect("age the orders");
    let app = App::pgsql(&redis, &db, "ORDER_EXPIRE_TTL=3");
    let dry = app.run(&["sweep", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(db.count_status(2).await, 0, "a dry run writes nothing");
    let swept = app.run(&["sweep"]);
    assert!(
        swept.status.success(),
        "{}",
        String::from_utf8_lossy(&swept.stderr)
    );
    assert_eq!(
        db.count_status(2).await,
        old.len(),
        "the sweep cancelled every overdue order"
    );
    let summary = String::from_utf8_lossy(&swept.stdout);
    assert!(
        summary.contains(&format!(
            ": {} cancelled, 0 no longer unpaid, 0 refused by PostgreSQL",
            old.len()
        )),
        "the summary names the database: {summary}"
    );
    db.assert_stock_returned(100_000).await;

    // New orders whose keys are never written: the deadline watcher cancels them 3 s after
    // created_at.
    let mut worker = app.start_worker(&[]);
    let fresh = db
        .place_orders(&[db.add_product("Mate", 100_000).await], 10)
        .await;
    wait_until(
        WAIT,
        "the new orders cancelled at their deadline",
        || async { db.count_status(2).await == old.len() + fresh.len() },
    )
    .await;
    db.assert_stock_returned(100_000).await;
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    let stopped = worker.events("stopped").pop().expect("stopped");
    assert_eq!(stopped["cancelled"], fresh.len() as u64, "{stopped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_queue_gets_one_job_per_cancelled_order_through_the_outbox() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(120).await;
    let app = App::pgsql(
        &redis,
        &db,
        "QUEUE_CONNECTION=redis\nORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired",
    );
    let mut worker = app.start_worker(&[]);
    redis.expire_together(&ids, Duration::from_millis(300));
    let mut queue = redis.conn(0);
    let list = "laravel_database_queues:default";
    let expected = ids.len();
    wait_until(WAIT, "one job pushed per cancelled order", || {
        let n: usize = redis::cmd("LLEN")
            .arg(list)
            .query(&mut queue)
            .expect("LLEN");
        async move { n == expected }
    })
    .await;
    assert_eq!(db.count_status(2).await, ids.len());
    let left = db
        .client()
        .await
        .query_one("SELECT COUNT(*) FROM order_expire_outbox", &[])
        .await
        .expect("outbox")
        .get::<_, i64>(0);
    assert_eq!(left, 0, "every pushed row was deleted from the outbox");
    let payloads: Vec<String> = redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query(&mut queue)
        .expect("LRANGE");
    let mut orders_of_jobs: Vec<u64> = payloads
        .iter()
        .map(|p| {
            let json: serde_json::Value = serde_json::from_str(p).expect("JSON payload");
            let command = json["data"]["command"].as_str().expect("data.command");
            command
                .split("s:2:\"id\";i:")
                .nth(1)
                .and_then(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .ok()
                })
                .expect("the order id")
        })
        .collect();
    orders_of_jobs.sort_unstable();
    assert_eq!(orders_of_jobs, ids, "one job for each cancelled order");
    assert_eq!(worker.stop(WAIT).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_counts_the_workers_holding_a_member_slot() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let app = App::pgsql(&redis, &db, "");
    let status = |app: &App| {
        let out = app.run(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    assert_eq!(status(&app)["workers"]["live"], 0, "none running yet");
    let first = app.start_worker(&[]);
    let second = app.start_worker(&[]);
    for worker in [&first, &second] {
        worker.wait_for_event("replicas", 1, WAIT);
    }
    let report = status(&app);
    assert_eq!(report["workers"]["live"], 2, "{report:#}");
    assert!(report["mysql"]["error"].is_null(), "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_is_retried_and_the_orders_are_cancelled_once() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(50).await;
    // The server answers the first three cancellations with a deadlock (SQLSTATE 40P01), as
    // when the app's transactions lock the same rows in another order; a sequence counts
    // them, since it is not rolled back with the failed transaction.
    db.client()
        .await
        .batch_execute(
            "CREATE SEQUENCE deadlocks; \
             CREATE FUNCTION deadlock_first_three() RETURNS trigger AS $$ BEGIN \
               IF nextval('deadlocks') <= 3 THEN \
                 RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; \
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER deadlock_first_three BEFORE UPDATE ON orders FOR EACH ROW \
               WHEN (NEW.status = 2) EXECUTE FUNCTION deadlock_first_three();",
        )
        .await
        .expect("the trigger");
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&[]);
    redis.expire_together(&ids, Duration::from_millis(300));
    wait_until(
        WAIT,
        "every order cancelled after the deadlocks",
        || async { db.count_status(2).await == ids.len() },
    )
    .await;
    db.assert_stock_returned(100_000).await;
    assert_eq!(worker.stop(WAIT).code(), Some(0));
    let stopped = worker.events("stopped").pop().expect("stopped");
    assert_eq!(stopped["cancelled"], ids.len() as u64, "{stopped}");
    assert_eq!(stopped["parked"], 0, "a deadlock parks nothing: {stopped}");
    assert!(
        stopped["retries"].as_u64().unwrap_or(0) >= 3,
        "each deadlock was retried: {stopped}"
    );
    let raised = db
        .client()
        .await
        .query_one("SELECT last_value FROM deadlocks", &[])
        .await
        .expect("sequence")
        .get::<_, i64>(0);
    assert!(
        raised > 3,
        "the server raised its three deadlocks: {raised}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stop_deadline_holds_while_a_write_waits_on_a_row_lock() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let product = db.add_product("Tea", 100).await;
    let order = db.place_orders(&[product], 1).await[0];
    let app = App::pgsql(&redis, &db, "");
    let mut worker = app.start_worker(&["--stop-timeout", "2"]);
    // The app holds the product's row (a stock update in progress): the cancel transaction
    // waits for it after locking the order.
    let mut holder = db.client().await;
    let held = holder.transaction().await.expect("begin");
    held.execute(
        "SELECT id FROM products WHERE id = $1 FOR UPDATE",
        &[&i64::try_from(product).expect("id")],
    )
    .await
    .expect("lock the product");
    redis.expire_together(&[order], Duration::from_millis(200));
    let watcher = db.client().await;
    wait_until(
        WAIT,
        "the worker's write waiting on the row lock",
        || async {
            watcher
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
                == 1
        },
    )
    .await;
    let stopping = std::time::Instant::now();
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
    assert!(
        left[0]["orders"].to_string().contains(&order.to_string()),
        "{}",
        left[0]
    );
    // The abandoned transaction never commits: once the lock is released, nothing was written.
    held.rollback().await.expect("release");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.count_status(2).await, 0, "the order is still unpaid");
    db.assert_stock_returned(100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_commit_reply_is_read_back_and_counted_as_the_database_did() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(2000).await;
    let proxy = FaultProxy::start(pg.port);
    let env = env_text(redis.port, &db, "").replace(
        &format!("DB_PORT={}\n", db.port),
        &format!("DB_PORT={}\n", proxy.port),
    );
    let app = App::with_env(&env);
    let mut worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    proxy.swallow_reply_to(PG_COMMIT);
    redis.expire_together(&ids, Duration::from_millis(500));
    wait_until(WAIT, "every order cancelled", || async {
        db.count_status(2).await == ids.len()
    })
    .await;
    assert_eq!(proxy.swallowed(), 1, "one COMMIT's reply swallowed");
    worker.wait_for_event("commit_confirmed", 1, Duration::from_secs(40));
    db.assert_stock_returned(100_000).await;
    wait_until(WAIT, "the counter at every cancelled order", || async {
        Scrape::take(&addr).get("order_expire_orders_cancelled_total") >= ids.len() as f64
    })
    .await;
    assert_eq!(
        Scrape::take(&addr).get("order_expire_orders_cancelled_total"),
        ids.len() as f64,
        "the counter counts what the database did"
    );
    assert_eq!(worker.stop(WAIT).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_of_another_type_queues_its_job_in_the_jobs_table_and_writes_no_order() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let ids = db.place_orders_of_three_products(5).await;
    let app = App::pgsql(
        &redis,
        &db,
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\OrderIdExpired\nORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY=orderId",
    );
    let mut worker = app.start_worker(&[]);
    let mut conn = redis.conn(1);
    for id in ["41", "42", "43"] {
        common::setex(
            &mut conn,
            &format!("laravel_database_laravel_cache:ORDER_OTHEREVENT:{id}"),
            1,
            id,
        );
    }
    let client = db.client().await;
    wait_until(WAIT, "three jobs queued", || async {
        client
            .query_one("SELECT COUNT(*) FROM jobs WHERE queue = 'default'", &[])
            .await
            .expect("jobs")
            .get::<_, i64>(0)
            == 3
    })
    .await;
    let payloads: Vec<String> = client
        .query("SELECT payload FROM jobs ORDER BY id", &[])
        .await
        .expect("payloads")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in ["41", "42", "43"] {
        assert!(
            payloads
                .iter()
                .any(|p| p.contains("OrderIdExpired") && p.contains(&format!("i:{id};"))),
            "a job with id {id}: {payloads:?}"
        );
    }
    assert_eq!(db.count_status(2).await, 0, "no order written: {ids:?}");
    assert_eq!(worker.stop(WAIT).code(), Some(0));
}

/// Rows of `orders` read so far (sequential and through an index), from the server's own
/// statistics, once they are at least `at_least` and stop moving: a backend reports its reads
/// when it ends, a little after its client is gone.
async fn orders_rows_read(client: &tokio_postgres::Client, at_least: i64) -> i64 {
    let read = || async {
        client
            .query_one(
                "SELECT (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::int8 \
                 FROM pg_stat_user_tables WHERE relname = 'orders'",
                &[],
            )
            .await
            .expect("pg_stat_user_tables")
            .get::<_, i64>(0)
    };
    let mut last = read().await;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read().await;
        if now == last && now >= at_least {
            return now;
        }
        last = now;
    }
    panic!("the statistics of orders kept moving: {last}");
}

/// A sweep over many overdue orders reads each about once: its pages follow the
/// `(status, created_at)` index (ordering by the text of `created_at` had every page read and
/// sort the whole overdue range).
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_reads_each_overdue_order_about_once() {
    const ORDERS: i64 = 30_000;
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_db().await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) \
             SELECT 1, 1, 1, 9.99, 0, \
             (now() AT TIME ZONE 'UTC')::timestamp(0) - interval '1 hour' - g * interval '1 second', \
             (now() AT TIME ZONE 'UTC')::timestamp(0) FROM generate_series(1, $1::int8) AS g",
            &[&ORDERS],
        )
        .await
        .expect("insert orders");
    client
        .batch_execute("ANALYZE orders")
        .await
        .expect("ANALYZE");
    let app = App::pgsql(&redis, &db, "ORDER_EXPIRE_TTL=60");
    let before = orders_rows_read(&client, 0).await;
    let output = app.run(&["sweep", "--dry-run", "--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let finished = common::json_events(&stderr, "sweep_finished");
    assert_eq!(finished.len(), 1, "{stderr}");
    assert_eq!(finished[0]["overdue"], ORDERS, "{}", finished[0]);
    // The count the progress bar starts from reads every overdue order once, at least.
    let read = orders_rows_read(&client, before + ORDERS).await - before;
    let summary = serde_json::json!({
        "test": "pgsql_sweep_rows_read",
        "orders": ORDERS,
        "rows_read": read,
    });
    println!("{summary}");
    // The count the progress starts from, the pages, and a margin.
    assert!(read <= 3 * ORDERS, "{summary}");
}
