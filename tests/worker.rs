//! The worker end to end, against a real redis-server and a real MariaDB.
//!
//! Keys are written here the way Laravel 8 writes them (SETEX, both prefixes, the id as value),
//! spelled out literally, so these tests check our key handling against Laravel's format and not
//! against our own code.

mod common;

use std::time::Duration;

use common::{App, RedisServer, TestDb, default_key, setex, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// Three products with 1000 in stock each, and `n` unpaid orders spread over them.
async fn orders(db: &TestDb, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        products.push(db.add_product(name, 1000).await);
    }
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let quantity = u32::try_from(i % 5 + 1).unwrap_or(1);
        ids.push(db.place_order(products[i % products.len()], quantity).await);
    }
    (products, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_expired_orders_are_cancelled_and_their_stock_returned() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (products, ids) = orders(&db, 200).await;
    for product in &products {
        assert!(db.stock(*product).await < 1000, "placing orders took stock");
    }
    let app = App::new(&redis, &db, "");
    let _worker = app.start_worker(&[]);

    let mut conn = redis.conn(1);
    for (i, id) in ids.iter().enumerate() {
        setex(
            &mut conn,
            &default_key(*id),
            if i % 2 == 0 { 1 } else { 2 },
            &id.to_string(),
        );
    }
    wait_until(WAIT, "200 orders cancelled", || async {
        db.count_status(2).await == 200
    })
    .await;
    for product in &products {
        assert_eq!(
            db.stock(*product).await,
            1000,
            "stock of product {product} is back where it started"
        );
    }
    // Eloquent's save() sets updated_at to now, written in the app time zone (UTC by default).
    let mut c = db.conn().await;
    let stale: Option<i64> = mysql_async::prelude::Queryable::query_first(
        &mut c,
        "SELECT COUNT(*) FROM orders WHERE ABS(TIMESTAMPDIFF(SECOND, updated_at, UTC_TIMESTAMP())) > 120",
    )
    .await
    .expect("query");
    assert_eq!(
        stale,
        Some(0),
        "every cancelled order has a fresh updated_at"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paid_orders_stay_paid_and_keep_their_stock() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (products, ids) = orders(&db, 20).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&[]);

    let paid: Vec<u64> = ids.iter().copied().step_by(2).collect();
    for id in &paid {
        db.set_status(*id, 1).await;
    }
    let stock_before: Vec<i64> = futures_stock(&db, &products).await;
    let mut conn = redis.conn(1);
    for id in &ids {
        setex(&mut conn, &default_key(*id), 1, &id.to_string());
    }
    wait_until(WAIT, "10 unpaid orders cancelled", || async {
        db.count_status(2).await == 10
    })
    .await;
    worker.wait_for_event("order_skipped", paid.len(), WAIT);

    for id in &paid {
        assert_eq!(db.status(*id).await, 1, "paid order {id} is still paid");
    }
    // Only the unpaid orders' quantities came back.
    let mut expected = stock_before.clone();
    for (i, id) in ids.iter().enumerate() {
        if !paid.contains(id) {
            expected[i % products.len()] += i64::try_from(i % 5 + 1).unwrap_or(0);
        }
    }
    assert_eq!(futures_stock(&db, &products).await, expected);
}

async fn futures_stock(db: &TestDb, products: &[u64]) -> Vec<i64> {
    let mut stock = Vec::new();
    for p in products {
        stock.push(db.stock(*p).await);
    }
    stock
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_of_other_apps_types_or_with_bad_ids_change_nothing() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (products, ids) = orders(&db, 6).await;
    let stock_before = futures_stock(&db, &products).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&[]);

    let id = ids[0];
    let mut conn = redis.conn(1);
    let foreign = [
        format!("shop_database_shop_cache:ORDER_CONFIRM:{id}"), // another app's prefix
        format!("laravel_database_laravel_cache:ORDER_OTHEREVENT:{id}"), // another key type
        format!("laravel_database_laravel_cache:ORDER_CONFIRMED:{id}"),
        format!("laravel_cache:ORDER_CONFIRM:{id}"), // no connection prefix
        format!("laravel_database_ORDER_CONFIRM:{id}"), // no cache prefix
        format!("ORDER_CONFIRM:{id}"),
    ];
    let malformed = [
        format!("laravel_database_laravel_cache:ORDER_CONFIRM:{id}abc"),
        "laravel_database_laravel_cache:ORDER_CONFIRM:abc".to_string(),
        "laravel_database_laravel_cache:ORDER_CONFIRM:".to_string(),
        format!("laravel_database_laravel_cache:ORDER_CONFIRM:-{id}"),
        "laravel_database_laravel_cache:ORDER_CONFIRM:99999999999999999999999".to_string(),
    ];
    for key in foreign.iter().chain(&malformed) {
        setex(&mut conn, key, 1, &id.to_string());
    }
    // The same key in another database of the same server is not the cache database's.
    setex(
        &mut redis.conn(0),
        &default_key(ids[1]),
        1,
        &ids[1].to_string(),
    );
    // A real order key that expires after all of them: once it is cancelled, the worker has
    // seen every event above.
    let sentinel = ids[5];
    setex(&mut conn, &default_key(sentinel), 3, &sentinel.to_string());
    wait_until(WAIT, "the sentinel order cancelled", || async {
        db.status(sentinel).await == 2
    })
    .await;

    for other in &ids[..5] {
        assert_eq!(db.status(*other).await, 0, "order {other} untouched");
    }
    let mut expected = stock_before;
    expected[5 % products.len()] += 1; // the sentinel's quantity: i % 5 + 1 with i = 5
    assert_eq!(futures_stock(&db, &products).await, expected);
    assert_eq!(
        worker.count_event("key_malformed"),
        malformed.len(),
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_return_stock_exactly_once() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (products, ids) = orders(&db, 500).await;
    let app = App::new(&redis, &db, "");
    let first = app.start_worker(&[]);
    let second = app.start_worker(&[]);

    let mut conn = redis.conn(1);
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("SETEX")
            .arg(default_key(*id))
            .arg(1)
            .arg(id.to_string())
            .ignore();
    }
    pipe.query::<()>(&mut conn).expect("SETEX pipeline");

    wait_until(WAIT, "500 orders cancelled", || async {
        db.count_status(2).await == 500
    })
    .await;
    // Both workers receive all 500 events; each order is cancelled by exactly one of them.
    let reported = || {
        let mut all = first.cancelled_orders();
        all.extend(second.cancelled_orders());
        all
    };
    let started = std::time::Instant::now();
    while reported().len() < 500 && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut distinct = reported();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        (reported().len(), distinct.len()),
        (500, 500),
        "every order cancelled once, by one worker"
    );
    for product in &products {
        assert_eq!(
            db.stock(*product).await,
            1000,
            "stock of product {product} returned exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_redis_prefix_works_too() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (products, ids) = orders(&db, 10).await;
    let app = App::new(&redis, &db, "REDIS_PREFIX=");
    let _worker = app.start_worker(&[]);

    let mut conn = redis.conn(1);
    // With REDIS_PREFIX= Laravel's key has only the cache prefix; the default-prefixed key of
    // order 0 belongs to an app configured differently and must be ignored.
    setex(&mut conn, &default_key(ids[0]), 1, &ids[0].to_string());
    for id in &ids[1..] {
        setex(
            &mut conn,
            &format!("laravel_cache:ORDER_CONFIRM:{id}"),
            1,
            &id.to_string(),
        );
    }
    wait_until(WAIT, "9 orders cancelled", || async {
        db.count_status(2).await == 9
    })
    .await;
    assert_eq!(db.status(ids[0]).await, 0);
    let _ = products;
}

#[tokio::test(flavor = "multi_thread")]
async fn app_name_and_cache_db_decide_the_key_and_channel() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (_, ids) = orders(&db, 3).await;
    // Laravel 8: Str::slug('My Shop', '_') = my_shop; REDIS_CACHE_DB=3 moves keys and channel.
    let app = App::new(&redis, &db, "APP_NAME=\"My Shop\"\nREDIS_CACHE_DB=3");
    let _worker = app.start_worker(&[]);
    let mut conn = redis.conn(3);
    for id in &ids {
        setex(
            &mut conn,
            &format!("my_shop_database_my_shop_cache:ORDER_CONFIRM:{id}"),
            1,
            &id.to_string(),
        );
    }
    wait_until(WAIT, "3 orders cancelled", || async {
        db.count_status(2).await == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn order_lines_in_an_items_table_return_each_products_stock() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let tea = db.add_product("Tea", 100).await;
    let cake = db.add_product("Cake", 100).await;
    let mut c = db.conn().await;
    use mysql_async::prelude::Queryable;
    c.query_drop("INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) VALUES (1, 0, 0, 5, 0, NOW(), NOW())")
        .await
        .expect("order");
    let order = c.last_insert_id().expect("id");
    for (product, quantity) in [(tea, 2u32), (cake, 3), (tea, 1)] {
        c.exec_drop(
            "INSERT INTO order_items (order_id, product_id, quantity, created_at, updated_at) VALUES (?, ?, ?, NOW(), NOW())",
            (order, product, quantity),
        )
        .await
        .expect("item");
        c.exec_drop(
            "UPDATE products SET stock = stock - ? WHERE id = ?",
            (quantity, product),
        )
        .await
        .expect("stock");
    }
    let app = App::new(&redis, &db, "ORDER_EXPIRE_ITEMS_TABLE=order_items");
    let _worker = app.start_worker(&[]);
    setex(
        &mut redis.conn(1),
        &default_key(order),
        1,
        &order.to_string(),
    );
    wait_until(WAIT, "the order cancelled", || async {
        db.status(order).await == 2
    })
    .await;
    assert_eq!((db.stock(tea).await, db.stock(cake).await), (100, 100));
}

#[tokio::test(flavor = "multi_thread")]
async fn updated_at_is_written_in_the_app_time_zone() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (_, ids) = orders(&db, 1).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TIMEZONE=Asia/Shanghai");
    let _worker = app.start_worker(&[]);
    setex(
        &mut redis.conn(1),
        &default_key(ids[0]),
        1,
        &ids[0].to_string(),
    );
    wait_until(WAIT, "the order cancelled", || async {
        db.status(ids[0]).await == 2
    })
    .await;
    let offset: Option<i64> = mysql_async::prelude::Queryable::exec_first(
        &mut db.conn().await,
        "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), updated_at) FROM orders WHERE id = ?",
        (ids[0],),
    )
    .await
    .expect("query");
    let offset = offset.expect("updated_at set");
    assert!(
        (8 * 3600 - 120..=8 * 3600 + 5).contains(&offset),
        "updated_at is UTC+8, got offset {offset} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_subscription_is_restored() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (_, ids) = orders(&db, 2).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&[]);
    let mut conn = redis.conn(1);
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query::<i64>(&mut conn)
        .expect("CLIENT KILL");
    worker.wait_for_event("subscription_restored", 1, WAIT);
    for id in &ids {
        setex(&mut conn, &default_key(*id), 1, &id.to_string());
    }
    wait_until(WAIT, "2 orders cancelled", || async {
        db.count_status(2).await == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscription_survives_two_minutes_of_silence() {
    // The PHP command dies after 60 s without events (phpredis read timeout).
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (_, ids) = orders(&db, 1).await;
    let app = App::new(&redis, &db, "");
    let worker = app.start_worker(&[]);
    tokio::time::sleep(Duration::from_secs(125)).await;
    setex(
        &mut redis.conn(1),
        &default_key(ids[0]),
        1,
        &ids[0].to_string(),
    );
    wait_until(
        Duration::from_secs(20),
        "the order cancelled after 125 s idle",
        || async { db.status(ids[0]).await == 2 },
    )
    .await;
    assert_eq!(
        worker.count_event("subscription_lost"),
        0,
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_worker_cleanly() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let mut worker = app.start_worker(&[]);
    let status = worker.stop(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        worker.log()
    );
    assert_eq!(worker.count_event("stopped"), 1);
}
