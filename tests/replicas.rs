//! Replicas share the work: several workers of one orders table split a burst between them
//! (each order locked and written by one of them), one killed with SIGKILL mid-burst leaves
//! nothing behind (the survivor takes its orders over), and a worker alone behaves as before.
//! Also the database's own counters for one, two and four workers on the same burst, on a
//! private MariaDB so that nothing else moves them.
//!
//! `ORDER_EXPIRE_TEST_BURST=100000 ORDER_EXPIRE_TEST_BIN=target/release/order-expire` runs
//! the measurement on a bigger burst with a release build (docs/performance.md, "Replicas on one burst").
//!
//! Every check reads what a user would: the orders' statuses and the products' stock in the
//! database, each worker's JSON log (`orders_cancelled`, `replicas_changed`) and its /metrics.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use common::{App, MariaServer, RedisServer, Scrape, TestDb, Worker};

/// The stock each product starts with.
const INITIAL_STOCK: u32 = 1_000_000;
/// One order in this many is paid before its key expires.
const PAY_EVERY: u64 = 10;
/// How long a burst may take to drain.
const DRAIN: Duration = Duration::from_secs(90);

/// Places `n` unpaid orders over three products, pays one in [`PAY_EVERY`]; returns the ids
/// and the paid ones.
async fn place(db: &TestDb, n: usize) -> (Vec<u64>, HashSet<u64>) {
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        products.push(db.add_product(name, INITIAL_STOCK).await);
    }
    let ids = db.place_orders(&products, n).await;
    let paid: HashSet<u64> = ids
        .iter()
        .copied()
        .filter(|id| id % PAY_EVERY == 0)
        .collect();
    db.conn()
        .await
        .query_drop(format!(
            "UPDATE orders SET status = 1 WHERE id % {PAY_EVERY} = 0"
        ))
        .await
        .expect("pay some orders");
    (ids, paid)
}

/// The orders of `ids` not in `paid`: those the workers must cancel.
fn unpaid_among(ids: &[u64], paid: &HashSet<u64>) -> HashSet<u64> {
    ids.iter()
        .copied()
        .filter(|id| !paid.contains(id))
        .collect()
}

/// Starts `n` workers on `app`, each with a metrics endpoint and `args`, and waits until each
/// sees all of them, then for the join margin to pass (a newcomer owns orders only a moment
/// after it is seen).
fn start_workers(app: &App, n: usize, args: &[&str]) -> Vec<Worker> {
    let mut all = vec!["--metrics-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let workers: Vec<Worker> = (0..n).map(|_| app.start_worker(&all)).collect();
    let start = Instant::now();
    while !workers.iter().all(|w| members(w) == Some(n as u64)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the {n} workers did not see each other within 20 s; last replicas_changed: {:?}",
            workers
                .iter()
                .map(|w| w.events("replicas_changed").last().cloned())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    workers
}

/// The members a worker last reported (`replicas_changed`).
fn members(worker: &Worker) -> Option<u64> {
    worker.events("replicas_changed").last()?["members"].as_u64()
}

/// Waits until no order is unpaid; returns when that was seen.
async fn drained(db: &TestDb, workers: &[&Worker]) -> Instant {
    let start = Instant::now();
    let mut conn = db.conn().await;
    loop {
        // One row at most: the poll must not move the server's counters the test reads.
        let left: Option<u64> = conn
            .query_first("SELECT id FROM orders WHERE status = 0 LIMIT 1")
            .await
            .expect("find an unpaid order");
        if left.is_none() {
            return Instant::now();
        }
        assert!(
            start.elapsed() < DRAIN,
            "order {left:?} still unpaid {DRAIN:?} after the burst; logs:\n{}",
            workers
                .iter()
                .map(|w| common::burst::tail(&w.log(), 30))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks what a shop owner would: every unpaid order cancelled, every paid one untouched, and
/// each product's stock back exactly (a second cancellation would return it twice).
async fn audit(db: &TestDb, ids: &[u64], paid: &HashSet<u64>) {
    let rows = db.statuses().await;
    assert_eq!(rows.len(), ids.len());
    for (id, status) in rows {
        let expected = if paid.contains(&id) { 1 } else { 2 };
        assert_eq!(status, expected, "order {id}");
    }
    db.assert_stock_returned(i64::from(INITIAL_STOCK)).await;
}

/// The orders each worker's log says it cancelled; fails if one worker names an order twice
/// or two workers name the same order.
fn cancelled_by_each(workers: &[&Worker]) -> Vec<HashSet<u64>> {
    let mut everyone = HashSet::new();
    workers
        .iter()
        .enumerate()
        .map(|(i, worker)| {
            let mut mine = HashSet::new();
            for id in worker.cancelled_orders() {
                assert!(mine.insert(id), "worker {i} cancelled order {id} twice");
                assert!(everyone.insert(id), "order {id} cancelled by two workers");
            }
            mine
        })
        .collect()
}

/// Waits until the workers' logs name `expected` cancellations in all (a log line follows its
/// commit).
async fn logged(workers: &[&Worker], expected: usize) {
    let start = Instant::now();
    while workers
        .iter()
        .map(|w| w.cancelled_orders().len())
        .sum::<usize>()
        < expected
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the logs name fewer than {expected} cancellations"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Orders a worker locked and wrote in committed transactions (cancelled or left alone).
fn locked(scrape: &Scrape) -> f64 {
    scrape.get("order_expire_batch_size_sum")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_split_a_burst_and_write_each_order_once() {
    const ORDERS: usize = 20_000;
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (ids, paid) = place(&db, ORDERS).await;
    let unpaid = unpaid_among(&ids, &paid);
    let app = App::new(&redis, &db, "");
    let workers = start_workers(&app, 2, &[]);
    let both: Vec<&Worker> = workers.iter().collect();

    let deadline = redis.expire_together(&ids, Duration::from_secs(4));
    let done = drained(&db, &both).await;
    println!(
        "{ORDERS} orders ({} unpaid) drained by 2 workers {} ms after their keys' deadline",
        unpaid.len(),
        done.saturating_duration_since(deadline).as_millis()
    );
    audit(&db, &ids, &paid).await;
    logged(&both, unpaid.len()).await;

    let each = cancelled_by_each(&both);
    let all: HashSet<u64> = each.iter().flatten().copied().collect();
    assert_eq!(all, unpaid, "the logs name exactly the unpaid orders");
    let scrapes: Vec<Scrape> = workers
        .iter()
        .map(|w| Scrape::take(&w.metrics_addr()))
        .collect();
    for (i, (mine, scrape)) in each.iter().zip(&scrapes).enumerate() {
        let share = mine.len() as f64 / unpaid.len() as f64;
        println!(
            "worker {i}: cancelled {} ({:.1} %), locked {} orders, already cancelled {}, set aside now {}, replicas {}",
            mine.len(),
            share * 100.0,
            locked(scrape),
            scrape.get("order_expire_orders_skipped_total{reason=\"already_cancelled\"}"),
            scrape.get("order_expire_set_aside"),
            scrape.get("order_expire_replicas"),
        );
        assert!(
            (0.35..=0.65).contains(&share),
            "worker {i} wrote {:.1} % of the orders: the work was not split",
            share * 100.0
        );
        assert_eq!(scrape.get("order_expire_replicas"), 2.0);
    }
    // Split, not repeated: the orders locked by both together are the burst, give or take.
    let locked_total: f64 = scrapes.iter().map(locked).sum();
    println!("orders locked by both together: {locked_total} for a burst of {ORDERS}");
    assert!(
        locked_total <= ORDERS as f64 * 1.1,
        "the two workers locked {locked_total} orders for a burst of {ORDERS}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_burst_leaves_its_orders_to_the_survivor() {
    const ORDERS: usize = 20_000;
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (ids, paid) = place(&db, ORDERS).await;
    let unpaid = ids.len() - paid.len();
    // No ORDER_EXPIRE_TTL: no sweep, so only the takeover can save the dead worker's orders.
    // Small batches on one connection, so that the burst lasts long enough to kill in it.
    let app = App::new(&redis, &db, "");
    let mut workers = start_workers(&app, 2, &["--concurrency", "1", "--batch-size", "16"]);

    let deadline = redis.expire_together(&ids, Duration::from_secs(4));
    let mut conn = db.conn().await;
    let start = Instant::now();
    loop {
        let cancelled: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM orders WHERE status = 2")
            .await
            .expect("count cancelled");
        if cancelled.unwrap_or(0) >= (unpaid / 5) as i64 {
            break;
        }
        assert!(start.elapsed() < DRAIN, "the burst did not start draining");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(conn);
    let (survivor, victim) = {
        let (a, b) = workers.split_at_mut(1);
        (&a[0], &mut b[0])
    };
    let left_at_kill = db.count_status(0).await;
    App::kill_worker(victim);
    let killed = Instant::now();
    let killed_ms = common::burst::now_ms();
    assert!(
        left_at_kill > unpaid / 5,
        "the kill came in the middle of the burst ({left_at_kill} of {unpaid} orders still unpaid)"
    );
    let done = drained(&db, &[survivor]).await;
    println!(
        "killed one worker {} ms after the deadline with {left_at_kill} of {unpaid} orders unpaid; the survivor finished {} ms after the kill",
        killed.saturating_duration_since(deadline).as_millis(),
        done.saturating_duration_since(killed).as_millis()
    );
    audit(&db, &ids, &paid).await;

    let scrape = Scrape::take(&survivor.metrics_addr());
    let taken_over = scrape.get("order_expire_taken_over_total{reason=\"owner_left\"}");
    println!(
        "the survivor took over {taken_over} orders; replicas now {}; set aside now {}",
        scrape.get("order_expire_replicas"),
        scrape.get("order_expire_set_aside")
    );
    assert!(
        taken_over > 0.0,
        "the survivor took the dead worker's orders over"
    );
    assert_eq!(scrape.get("order_expire_replicas"), 1.0);
    assert_eq!(scrape.get("order_expire_set_aside"), 0.0);
    let changed = survivor.events("replicas_changed");
    let left = changed.last().expect("replicas_changed");
    assert_eq!(
        left["members"].as_u64(),
        Some(1),
        "the survivor saw the member leave: {changed:?}"
    );
    let seen_after = Worker::timestamp_ms(left).expect("a timestamp") - killed_ms;
    println!("the survivor saw the member leave {seen_after} ms after the kill");
    assert!(
        seen_after < 2_000,
        "the member check runs every 250 ms: seen {seen_after} ms after the kill"
    );
    // Both logs together never name an order twice (the victim's last commit may be unlogged).
    let victim_ref: &Worker = victim;
    cancelled_by_each(&[survivor, victim_ref]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_alone_writes_every_order_as_before() {
    const ORDERS: usize = 2_000;
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let (ids, paid) = place(&db, ORDERS).await;
    let unpaid = unpaid_among(&ids, &paid);
    let app = App::new(&redis, &db, "");
    let workers = start_workers(&app, 1, &[]);
    let worker = &workers[0];
    let changed = worker.events("replicas_changed");
    assert_eq!(
        changed.len(),
        1,
        "one membership, never changed: {changed:?}"
    );
    assert_eq!(changed[0]["rank"], 0);
    assert_eq!(worker.count_event("replicas"), 1, "joined at start");

    redis.expire_together(&ids, Duration::from_secs(1));
    drained(&db, &[worker]).await;
    audit(&db, &ids, &paid).await;
    logged(&[worker], unpaid.len()).await;
    let each = cancelled_by_each(&[worker]);
    assert_eq!(each[0], unpaid);
    // The paid orders' last batch may commit after the last cancellation.
    let addr = worker.metrics_addr();
    let start = Instant::now();
    while locked(&Scrape::take(&addr)) < ORDERS as f64 && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scrape = Scrape::take(&addr);
    assert_eq!(scrape.get("order_expire_replicas"), 1.0);
    assert_eq!(scrape.get("order_expire_set_aside"), 0.0);
    assert_eq!(locked(&scrape), ORDERS as f64, "each order locked once");
    for reason in ["owner_left", "rebalanced", "not_written"] {
        let series = format!("order_expire_taken_over_total{{reason=\"{reason}\"}}");
        assert_eq!(scrape.get(&series), 0.0, "{series}");
    }
}

/// The server's counters that grow with the work of locking and reading order rows.
/// `Rows_read` is MariaDB's alone (MySQL has none): it is shown where the server has it; the
/// counters asserted on are on every server.
const LOCK_COUNTERS: [&str; 5] = [
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
    "Rows_read",
    "Handler_update",
    "Handler_read_key",
];

async fn server_counters(conn: &mut mysql_async::Conn) -> Vec<Option<i64>> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW GLOBAL STATUS")
        .await
        .expect("SHOW GLOBAL STATUS");
    LOCK_COUNTERS
        .iter()
        .map(|name| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.parse().ok())
        })
        .collect()
}

/// One burst drained by `n` workers on a fresh database of `maria`: the drain time and the
/// server counters' deltas over it.
async fn measure(maria: &MariaServer, n: usize, orders: usize) -> (Duration, Vec<Option<i64>>) {
    let redis = RedisServer::start();
    let db = TestDb::create_on(&maria.url()).await;
    let (ids, paid) = place(&db, orders).await;
    let app = App::new(&redis, &db, "");
    let workers = start_workers(&app, n, &[]);
    let all: Vec<&Worker> = workers.iter().collect();
    let mut admin = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&maria.url()).expect("the private server's URL"),
    )
    .await
    .expect("connect to the private MariaDB");
    let before = server_counters(&mut admin).await;
    let deadline = redis.expire_together(&ids, Duration::from_secs(4));
    let done = drained(&db, &all).await;
    // Let the last commits' log lines and any late duplicate write land before reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server_counters(&mut admin).await;
    audit(&db, &ids, &paid).await;
    drop(workers);
    let deltas = before
        .iter()
        .zip(&after)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    (done.saturating_duration_since(deadline), deltas)
}

/// The burst of [`more_workers_lock_no_more_rows_than_one`]: 20,000 orders, or
/// `ORDER_EXPIRE_TEST_BURST` (at most 1,000,000).
fn measured_burst() -> usize {
    match std::env::var("ORDER_EXPIRE_TEST_BURST") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|n| (1_000..=1_000_000).contains(n))
            .unwrap_or_else(|| panic!("ORDER_EXPIRE_TEST_BURST={n:?}: 1000 to 1000000 orders")),
        Err(_) => 20_000,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_workers_lock_no_more_rows_than_one() {
    let orders = measured_burst();
    let maria = MariaServer::start();
    let mut results = Vec::new();
    for n in [1, 2, 4] {
        let (drain, deltas) = measure(&maria, n, orders).await;
        let shown: Vec<String> = LOCK_COUNTERS
            .iter()
            .zip(&deltas)
            .map(|(name, d)| match d {
                Some(d) => format!("{name} +{d}"),
                None => format!("{name} (not on this server)"),
            })
            .collect();
        println!(
            "{n} worker(s), {orders} orders: drained {} ms after the deadline; {}",
            drain.as_millis(),
            shown.join(", ")
        );
        results.push((n, drain, deltas));
    }
    let one = &results[0].2;
    let counter = |deltas: &[Option<i64>], name: &str| {
        let at = LOCK_COUNTERS.iter().position(|c| *c == name).unwrap_or(0);
        deltas[at].unwrap_or_else(|| panic!("no {name} in SHOW GLOBAL STATUS"))
    };
    for (n, _, deltas) in &results[1..] {
        // Handler_read_key: one per order the writers look up by id (the lock and the update),
        // plus a handful per query of the deadline watchers. Without the split each worker
        // looks every order up itself.
        let (read_key, one_read_key) = (
            counter(deltas, "Handler_read_key"),
            counter(one, "Handler_read_key"),
        );
        assert!(
            read_key as f64 <= one_read_key as f64 * 1.1,
            "{n} workers: Handler_read_key +{read_key} against +{one_read_key} for one"
        );
        let (updated, one_updated) = (
            counter(deltas, "Handler_update"),
            counter(one, "Handler_update"),
        );
        assert!(
            updated <= one_updated + one_updated / 10,
            "{n} workers updated {updated} rows, one {one_updated}"
        );
    }
}
