//! No order lost, none late: fault injection against real servers.
//!
//! Each scenario removes the `expired` event an order depends on (worker down, killed, Redis
//! restarted, FLUSHDB, a subscriber cut off for falling behind) or makes Redis publish it late,
//! and checks that every unpaid order is still cancelled exactly once, with its stock back.
//! Figures (how long recovery took) are printed; run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{App, MariaServer, RedisServer, TestDb, default_key, wait_until};

const WAIT: Duration = Duration::from_secs(90);

/// Three products with 100000 in stock each.
async fn products(db: &TestDb) -> Vec<u64> {
    let mut ids = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        ids.push(db.add_product(name, 100_000).await);
    }
    ids
}

async fn assert_stock_restored(db: &TestDb, products: &[u64]) {
    for product in products {
        assert_eq!(
            db.stock(*product).await,
            100_000,
            "stock of product {product} is exact"
        );
    }
}

/// SETEX the keys of `orders` with `ttl` seconds, pipelined, as Laravel writes them.
fn put_keys(redis: &RedisServer, orders: &[u64], ttl: u64) {
    let mut conn = redis.conn(1);
    for chunk in orders.chunks(5000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("SETEX")
                .arg(default_key(*id))
                .arg(ttl)
                .arg(id.to_string())
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("SETEX pipeline");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_that_expired_while_the_worker_was_down_are_cancelled_by_the_first_sweep() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 200).await;
    put_keys(&redis, &orders, 1);
    // No worker is running: the 200 `expired` events are published to nobody.
    let mut conn = redis.conn(1);
    wait_until(WAIT, "the keys to expire", || {
        let n: i64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
        async move { n == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past created_at + TTL
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=1");
    let started = Instant::now();
    let worker = app.start_worker(&[]);
    wait_until(WAIT, "200 orders cancelled", || async {
        db.count_status(2).await == 200
    })
    .await;
    println!(
        "recovered 200 missed orders {:?} after the worker started",
        started.elapsed()
    );
    assert_eq!(
        worker.count_event("sweep_found_overdue"),
        1,
        "{}",
        worker.log()
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_a_10k_burst_then_restart_loses_nothing() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 10_000).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=2");
    let mut worker = app.start_worker(&[]);
    put_keys(&redis, &orders, 2);
    wait_until(WAIT, "a tenth of the burst written", || async {
        db.count_status(2).await >= 1000
    })
    .await;
    App::kill_worker(&mut worker);
    let at_kill = db.count_status(2).await;
    println!("killed with -9 after {at_kill} of 10000 cancellations");

    let started = Instant::now();
    let _worker = app.start_worker(&[]);
    wait_until(WAIT, "10000 orders cancelled", || async {
        db.count_status(2).await == 10_000
    })
    .await;
    println!(
        "the restarted worker finished the burst in {:?}",
        started.elapsed()
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_whose_keys_died_with_a_redis_restart_are_cancelled_at_their_deadline() {
    let mut redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 100).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=4");
    let worker = app.start_worker(&[]);
    put_keys(&redis, &orders, 4);
    let placed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await; // the watcher learns the deadlines
    redis.restart(); // no persistence: every key is gone, no event will ever come
    wait_until(WAIT, "100 orders cancelled", || async {
        db.count_status(2).await == 100
    })
    .await;
    let took = placed.elapsed();
    println!(
        "orders with a 4 s TTL cancelled {took:?} after their keys were written, across a Redis restart"
    );
    assert!(
        worker.count_event("subscription_restored") >= 1,
        "{}",
        worker.log()
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flushdb_of_the_cache_database_is_recovered() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 100).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=3");
    let _worker = app.start_worker(&[]);
    put_keys(&redis, &orders, 3);
    // php artisan cache:clear: FLUSHDB on the cache database, no per-key events.
    redis::cmd("FLUSHDB")
        .query::<()>(&mut redis.conn(1))
        .expect("FLUSHDB");
    let flushed = Instant::now();
    wait_until(WAIT, "100 orders cancelled", || async {
        db.count_status(2).await == 100
    })
    .await;
    println!(
        "flushed orders cancelled {:?} after the flush (TTL 3 s)",
        flushed.elapsed()
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_cut_off_for_falling_behind_is_detected_and_recovered() {
    // A tiny pub/sub output buffer: Redis disconnects the subscriber as soon as a burst queues up.
    let redis = RedisServer::start_with(&[
        "--notify-keyspace-events",
        "Ex",
        // One argument per word: Redis 6.2 does not split a quoted "pubsub 4kb 2kb 1".
        "--client-output-buffer-limit",
        "pubsub",
        "4kb",
        "2kb",
        "1",
    ]);
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 5000).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=1");
    let worker = app.start_worker(&[]);
    put_keys(&redis, &orders, 1);
    wait_until(WAIT, "5000 orders cancelled", || async {
        db.count_status(2).await == 5000
    })
    .await;
    let cut = worker.count_event("subscription_lost");
    println!("subscription cut {cut} time(s) during a 5000-event burst; all orders cancelled");
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn four_workers_through_bursts_return_stock_exactly_once_and_spare_paid_orders() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    // The TTL the workers know is longer than the test: the paid orders below are marked paid
    // one by one before their keys are put, and with a shorter one the reconciliation could
    // rightly cancel an order still unpaid past its deadline without a key while the loop runs.
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=120");
    let workers: Vec<_> = (0..4).map(|_| app.start_worker(&[])).collect();
    let mut all = Vec::new();
    let mut paid = Vec::new();
    for _burst in 0..3 {
        let orders = db.place_orders(&products, 1000).await;
        for id in orders.iter().step_by(10) {
            db.set_status(*id, 1).await;
            paid.push(*id);
        }
        put_keys(&redis, &orders, 1);
        all.extend(orders);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let unpaid = all.len() - paid.len();
    wait_until(WAIT, "all unpaid orders cancelled", || async {
        db.count_status(2).await == unpaid
    })
    .await;
    let started = Instant::now();
    let total = || {
        workers
            .iter()
            .map(|w| w.cancelled_orders().len())
            .sum::<usize>()
    };
    while total() < unpaid && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_worker: Vec<usize> = workers.iter().map(|w| w.cancelled_orders().len()).collect();
    println!("cancellations per worker: {per_worker:?}");
    assert_eq!(
        per_worker.iter().sum::<usize>(),
        unpaid,
        "each order cancelled by exactly one worker"
    );
    assert_eq!(
        db.count_status(1).await,
        paid.len(),
        "no paid order cancelled"
    );
    // Stock: everything came back except the paid orders' units.
    for product in &products {
        let paid_units: Option<i64> = mysql_async::prelude::Queryable::exec_first(
            &mut db.conn().await,
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE status = 1 AND product_id = ?",
            (product,),
        )
        .await
        .expect("paid units");
        assert_eq!(
            db.stock(*product).await,
            100_000 - paid_units.unwrap_or(0),
            "stock of product {product}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_cancelled_at_their_deadline_among_100k_other_ttl_keys() {
    // Redis's own expiry would take minutes to reach these keys (about 200 TTL keys are sampled
    // per second); the deadline watcher makes Redis expire them on time.
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let mut conn = redis.conn(1);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..5000 {
            pipe.cmd("SET")
                .arg(format!(
                    "laravel_database_laravel_cache:page:{}",
                    chunk * 5000 + i
                ))
                .arg("x")
                .arg("EX")
                .arg(86_400)
                .ignore();
        }
        pipe.query::<()>(&mut conn)
            .expect("fill the cache database");
    }
    let orders = db.place_orders(&products, 50).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=3");
    let _worker = app.start_worker(&[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    put_keys(&redis, &orders, 2);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut lateness = Vec::new();
    let mut pending: Vec<u64> = orders.clone();
    let started = Instant::now();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "orders still pending after 30 s: {pending:?}"
        );
        let mut still = Vec::new();
        for id in pending {
            if db.status(id).await == 2 {
                lateness.push(Instant::now().saturating_duration_since(deadline));
            } else {
                still.push(id);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lateness.sort();
    let p = |q: f64| lateness[((lateness.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "lateness after the deadline with 100k other TTL keys: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_command_reports_then_cancels_missed_orders() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 12).await;
    // Orders 0..10 lost their keys (expired unseen); 10 and 11 still have theirs.
    put_keys(&redis, &orders[10..], 600);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=1");

    let dry = app.run(&["sweep", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("would cancel order"))
            .count(),
        10,
        "{stdout}"
    );
    assert_eq!(db.count_status(2).await, 0, "a dry run writes nothing");

    let real = app.run(&["sweep"]);
    let stdout = String::from_utf8_lossy(&real.stdout);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    assert!(stdout.contains("10 cancelled"), "{stdout}");
    assert!(
        stdout.contains("2 with their key still in Redis"),
        "{stdout}"
    );
    assert_eq!(db.count_status(2).await, 10);
    for id in &orders[10..] {
        assert_eq!(
            db.status(*id).await,
            0,
            "order {id} still has its key: not due"
        );
    }

    let without_ttl = App::new(&redis, &db, "");
    let refused = without_ttl.run(&["sweep"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ORDER_EXPIRE_TTL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_restarted_in_the_middle_of_a_burst_loses_nothing() {
    let mut maria = MariaServer::start();
    let redis = RedisServer::start();
    let db = TestDb::create_on(&maria.url()).await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 3000).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=1");
    // One order per transaction on one connection: the burst takes seconds, so the restart
    // lands in the middle of it.
    let worker = app.start_worker(&["--concurrency", "1", "--batch-size", "1"]);
    put_keys(&redis, &orders, 1);
    wait_until(WAIT, "the burst to be under way", || async {
        db.count_status(2).await >= 300
    })
    .await;
    assert!(
        db.count_status(2).await < 2500,
        "the restart must come while the burst is running"
    );
    maria.restart(Duration::from_secs(2));
    let back = Instant::now();
    wait_until(WAIT, "3000 orders cancelled", || async {
        db.count_status(2).await == 3000
    })
    .await;
    println!(
        "MariaDB restarted mid-burst: the rest of the burst was written {:?} after it came back",
        back.elapsed()
    );
    assert_eq!(
        worker.count_event("writes_failing"),
        1,
        "one line per outage:\n{}",
        worker.log()
    );
    assert_eq!(
        worker.count_event("writes_recovered"),
        1,
        "one line on recovery"
    );
    assert_stock_restored(&db, &products).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dead_subscription_is_detected_and_replaced() {
    // The connection stays open but nothing comes through (a dropped NAT entry, a dead host
    // behind a load balancer). The PHP command waits on such a socket until its read timeout.
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let db = TestDb::create().await;
    let products = products(&db).await;
    let orders = db.place_orders(&products, 20).await;
    let app = App::on_port(proxy.port, &db, "ORDER_EXPIRE_TTL=1");
    let worker = app.start_worker(&[]);
    proxy.blackhole();
    let cut = Instant::now();
    put_keys(&redis, &orders, 1); // their events go into the black hole
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.resume(); // new connections work; the old ones stay dead
    wait_until(WAIT, "20 orders cancelled", || async {
        db.count_status(2).await == 20
    })
    .await;
    println!(
        "its orders were cancelled {:?} after the connections went silent",
        cut.elapsed()
    );
    worker.wait_for_event("subscription_lost", 1, Duration::from_secs(40));
    println!(
        "the dead subscription was detected and replaced {:?} after it went silent",
        cut.elapsed()
    );
    assert_stock_restored(&db, &products).await;
}
