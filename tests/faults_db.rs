//! Faults between the workers and MySQL (and one between a worker and Redis), each with a
//! burst running: a member slot held by a session that never writes, a replica whose Redis
//! link is cut, a worker frozen (SIGSTOP) inside its cancel transaction, a COMMIT that never
//! arrives, a COMMIT whose reply is lost, a worker whose network is cut without a connection
//! closing, and packet loss and a partition in a network namespace. The faults come from
//! `common::fault_proxy` (our own TCP proxy), from signals, and from `iptables` rules in a
//! namespace of the test's own (`common::netns`).
//!
//! Each test checks what a shop owner would: every unpaid order cancelled, by one cancellation,
//! the paid ones untouched, the stock exact; the app's own `UPDATE products` never waiting on a
//! worker's locks past the bound the contract states (docs/contract.md); `/readyz` never 200
//! while that worker's writes are failing, and no `writes_recovered` without a write. Each
//! prints one JSON line (`fault_summary`) with what it measured.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use common::fault_load::{self, AppCheckouts, Probes};
use common::fault_proxy::{Direction, FaultProxy, MYSQL_COMMIT};
use common::netns::NetNs;
use common::{App, MariaServer, RedisServer, Scrape, TestDb, Worker};

/// The stock each product starts with.
const INITIAL_STOCK: u32 = 1_000_000;
/// One order in this many is paid before its key expires.
const PAY_EVERY: u64 = 10;
/// The products the orders (and the app's checkouts) are spread over.
const PRODUCTS: usize = 10;
/// The longest the app's own statement may wait on a worker's locks while a worker is frozen
/// or cut off: the server rolls an abandoned transaction back 10 s after its last statement,
/// and a statement in progress waits at most 5 s for a lock (docs/contract.md), plus room for
/// a loaded machine.
const APP_WAIT_BOUND: Duration = Duration::from_secs(18);

/// A database with products and unpaid orders, some paid.
struct Shop {
    db: TestDb,
    products: Vec<u64>,
    ids: Vec<u64>,
    paid: HashSet<u64>,
}

impl Shop {
    /// `n` orders over [`PRODUCTS`] products, one in [`PAY_EVERY`] paid; `first_id` the first
    /// order's id.
    async fn open(n: usize, first_id: u64) -> Self {
        Self::open_on(&common::admin_url(), n, first_id).await
    }

    /// The same on the server at `url`.
    async fn open_on(url: &str, n: usize, first_id: u64) -> Self {
        let db = TestDb::create_on(url).await;
        let mut products = Vec::new();
        for i in 0..PRODUCTS {
            products.push(db.add_product(&format!("product {i}"), INITIAL_STOCK).await);
        }
        if first_id > 1 {
            db.conn()
                .await
                .query_drop(format!("ALTER TABLE orders AUTO_INCREMENT = {first_id}"))
                .await
                .expect("set the first order id");
        }
        let ids = db.place_orders(&products, n).await;
        db.conn()
            .await
            .query_drop(format!(
                "UPDATE orders SET status = 1 WHERE id % {PAY_EVERY} = 0"
            ))
            .await
            .expect("pay some orders");
        let paid = ids
            .iter()
            .copied()
            .filter(|id| id % PAY_EVERY == 0)
            .collect();
        Self {
            db,
            products,
            ids,
            paid,
        }
    }

    fn unpaid(&self) -> HashSet<u64> {
        self.ids
            .iter()
            .copied()
            .filter(|id| !self.paid.contains(id))
            .collect()
    }

    /// Waits up to `within` until no order is unpaid; how long it took.
    async fn drained(&self, within: Duration, workers: &[&Worker]) -> Duration {
        let start = Instant::now();
        let mut conn = self.db.conn().await;
        loop {
            let left: Option<u64> = conn
                .query_first("SELECT id FROM orders WHERE status = 0 LIMIT 1")
                .await
                .expect("find an unpaid order");
            if left.is_none() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "order {left:?} still unpaid {within:?} after the deadline; logs:\n{}",
                workers
                    .iter()
                    .map(|w| common::burst::tail(&w.log(), 40))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every unpaid order cancelled and every paid one untouched, the stock exact, and the
    /// workers' logs naming each cancelled order exactly once.
    async fn audit(&self, workers: &[&Worker]) {
        for (id, status) in self.db.statuses().await {
            let expected = if self.paid.contains(&id) { 1 } else { 2 };
            assert_eq!(status, expected, "order {id}");
        }
        self.db
            .assert_stock_returned(i64::from(INITIAL_STOCK))
            .await;
        let unpaid = self.unpaid();
        let start = Instant::now();
        loop {
            let named: usize = workers.iter().map(|w| w.cancelled_orders().len()).sum();
            if named >= unpaid.len() || start.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut seen = HashSet::new();
        for worker in workers {
            for id in worker.cancelled_orders() {
                assert!(seen.insert(id), "order {id} named cancelled twice");
            }
        }
        assert_eq!(
            seen, unpaid,
            "the logs name exactly the unpaid orders as cancelled"
        );
    }
}

/// The members a worker last reported (`replicas_changed`).
fn members(worker: &Worker) -> Option<u64> {
    worker.events("replicas_changed").last()?["members"].as_u64()
}

/// Waits until `worker` reports `n` members.
fn wait_members(worker: &Worker, n: u64, within: Duration) {
    let start = Instant::now();
    while members(worker) != Some(n) {
        assert!(
            start.elapsed() < within,
            "the worker did not see {n} members within {within:?}; log:\n{}",
            common::burst::tail(&worker.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The name of member slot `slot`'s lock, from the name of slot 0's the worker logged.
fn slot_lock(worker: &Worker, slot: usize) -> String {
    let replicas = worker.events("replicas");
    let first = replicas[0]["lock"]
        .as_str()
        .expect("replicas names slot 0's lock");
    let base = first.strip_suffix(":0").expect("slot 0's lock ends in :0");
    format!("{base}:{slot}")
}

/// Sends `signal` to the worker's process.
fn signal(worker: &Worker, signal: i32) {
    let pid = i32::try_from(worker.pid().expect("running")).expect("pid");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The one JSON line of a fault test.
fn summary(
    fault: &str,
    lateness: (i64, i64, i64),
    app: &fault_load::Checkouts,
    extra: serde_json::Value,
) {
    let mut line = serde_json::json!({
        "event": "fault_summary",
        "fault": fault,
        "lateness_p50_ms": lateness.0,
        "lateness_p99_ms": lateness.1,
        "lateness_max_ms": lateness.2,
        "app_checkouts": app.done,
        "app_max_lock_wait_ms": app.max_wait_ms,
        "app_failed_statements": app.failed.len(),
    });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

/// The app's statements never failed and never waited past [`APP_WAIT_BOUND`].
fn assert_app_not_blocked(app: &fault_load::Checkouts) {
    assert!(app.done > 0, "the app's checkouts ran");
    assert!(
        app.failed.is_empty(),
        "the app's statements failed: {:?}",
        &app.failed[..app.failed.len().min(5)]
    );
    assert!(
        app.max_wait_ms <= APP_WAIT_BOUND.as_millis() as u64,
        "the app's UPDATE products waited {} ms on a worker's locks (bound {APP_WAIT_BOUND:?})",
        app.max_wait_ms
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fault_proxy_delays_blackholes_swallows_and_resets() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", proxy.port)).expect("url");
    let ping = |timeout: Duration| -> Result<Duration, String> {
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| e.to_string())?;
        Ok(start.elapsed())
    };
    assert!(ping(Duration::from_secs(2)).is_ok(), "forwards");
    proxy.delay(Some(Direction::ToClient), Duration::from_millis(300));
    let delayed = ping(Duration::from_secs(2)).expect("delayed, not lost");
    assert!(delayed >= Duration::from_millis(300), "{delayed:?}");
    proxy.heal();
    proxy.blackhole(Direction::ToClient);
    assert!(
        ping(Duration::from_millis(500)).is_err(),
        "replies blackholed"
    );
    proxy.heal();
    assert!(ping(Duration::from_secs(2)).is_ok(), "healed");

    // One reply swallowed: that connection goes silent, the next one works.
    let mut conn = client.get_connection().expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    proxy.swallow_reply_to(b"swallow-me");
    let lost = redis::cmd("SET")
        .arg("swallow-me")
        .arg("1")
        .query::<String>(&mut conn);
    assert!(lost.is_err(), "the reply is lost");
    assert_eq!(proxy.swallowed(), 1);
    let mut direct = redis.conn(0);
    let written: Option<String> = redis::cmd("GET")
        .arg("swallow-me")
        .query(&mut direct)
        .expect("GET");
    assert_eq!(written.as_deref(), Some("1"), "the request itself arrived");
    assert!(
        ping(Duration::from_secs(2)).is_ok(),
        "other connections work"
    );

    // Reset: the client sees its connection reset at once.
    let mut conn = client.get_connection().expect("connect");
    redis::cmd("PING").query::<String>(&mut conn).expect("PING");
    proxy.reset_all();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        redis::cmd("PING").query::<String>(&mut conn).is_err(),
        "reset"
    );
    assert_eq!(proxy.open(), 0, "no connection left open");
}

/// Defect: a MySQL session holding a member slot's named lock looks like a live worker that
/// never writes: the net gave its orders back after 30 s, and the dispatcher set them aside
/// again, forever. Now they are cancelled by the net's bound (30 s after they were queued,
/// plus a refresh).
#[tokio::test(flavor = "multi_thread")]
async fn orders_of_a_member_that_never_writes_are_cancelled_within_the_net() {
    // Ids 1..3000: block 1 (1024..2047) belongs to the squatter at slot 1.
    let shop = Shop::open(3000, 1).await;
    let redis = RedisServer::start();
    let app = App::new(&redis, &shop.db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    wait_members(&worker, 1, Duration::from_secs(20));
    let mut squatter = shop.db.conn().await;
    let got: Option<i64> = squatter
        .exec_first("SELECT GET_LOCK(?, 0)", (slot_lock(&worker, 1),))
        .await
        .expect("GET_LOCK");
    assert_eq!(got, Some(1), "the squatter holds slot 1");
    wait_members(&worker, 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));

    let addr = worker.metrics_addr();
    let probes = Probes::start(vec![addr.clone()]);
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    let took = shop.drained(Duration::from_secs(50), &[&worker]).await;
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[&worker]).await;
    assert_app_not_blocked(&app_seen);
    // The paid orders of the squatter's block leave the net last (nothing to write for them).
    let start = Instant::now();
    while Scrape::take(&addr).get("order_expire_set_aside") > 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "orders still set aside: {}",
            Scrape::take(&addr).get("order_expire_set_aside")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lateness = fault_load::lateness_ms(&[&worker], deadline_ms);
    assert!(
        lateness.2 <= 36_000,
        "the squatter's orders were cancelled within the net's bound: {lateness:?}"
    );
    let readyz = &answers[&(0, "/readyz")];
    fault_load::assert_readiness_truthful(&worker, readyz);
    summary(
        "member_slot_squatter",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "drained_ms": took.as_millis() as u64,
            "readyz": fault_load::tally(readyz),
            "healthz": fault_load::tally(&answers[&(0, "/healthz")]),
        }),
    );
    drop(squatter);
}

/// Starts `n` workers, the first `proxied` of them reaching MySQL through `proxy`'s port, each
/// with a metrics endpoint; waits until each sees all, then for the join margin.
fn start_workers(
    redis: &RedisServer,
    shop: &Shop,
    proxy: Option<&FaultProxy>,
    n: usize,
) -> (Vec<App>, Vec<Worker>) {
    let direct = App::new(redis, &shop.db, "");
    let mut apps = vec![direct];
    if let Some(proxy) = proxy {
        let env = App::env_text(redis.port, &shop.db, "");
        let original = format!("DB_PORT={}\n", db_port(shop));
        let env = env.replace(&original, &format!("DB_PORT={}\n", proxy.port));
        assert!(
            env.contains(&format!("DB_PORT={}", proxy.port)),
            "the proxied app's .env"
        );
        apps.push(App::with_env(&env));
    }
    let args = ["--metrics-addr", "127.0.0.1:0"];
    let workers: Vec<Worker> = (0..n)
        .map(|i| {
            let app = if proxy.is_some() && i == n - 1 {
                &apps[1]
            } else {
                &apps[0]
            };
            app.start_worker(&args)
        })
        .collect();
    for worker in &workers {
        wait_members(worker, n as u64, Duration::from_secs(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    (apps, workers)
}

/// Transactions open for at least `secs` seconds that hold row locks, on the shop's database.
async fn long_transactions(shop: &Shop, secs: u64) -> u64 {
    let mut conn = shop.db.conn().await;
    conn.exec_first(
        "SELECT COUNT(*) FROM information_schema.innodb_trx t \
         JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
         WHERE p.db = ? AND t.trx_rows_locked > 0 AND t.trx_started <= NOW() - INTERVAL ? SECOND",
        (shop.db.name.as_str(), secs),
    )
    .await
    .expect("read innodb_trx")
    .unwrap_or(0)
}

/// Defect: a worker frozen (SIGSTOP) inside its cancel transaction held its product locks
/// for the server's `wait_timeout` (8 hours): the app's checkouts failed with ERROR 1205 after
/// 50 s, the other worker stopped cancelling, and its probes said 200. Now the server rolls the
/// frozen transaction back 10 s after its last statement, and frees the frozen worker's member
/// slot 10 s after its last look: the app waits less than the bound, and the other worker takes
/// the frozen one's orders over.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_in_its_cancel_transaction_blocks_the_app_only_briefly() {
    let shop = Shop::open(20_000, 1).await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(db_port(&shop));
    let (_apps, workers) = start_workers(&redis, &shop, Some(&proxy), 2);
    let (alive, frozen) = (&workers[0], &workers[1]);
    let addr = alive.metrics_addr();
    let probes = Probes::start(vec![addr.clone()]);
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    // The second worker is frozen as it is about to commit its first batch: its orders and
    // their products are locked on the server, and nothing more comes from it (its COMMIT,
    // in flight as the process stops, is lost with it).
    let pid = i32::try_from(frozen.pid().expect("running")).expect("pid");
    proxy.on_request(MYSQL_COMMIT, move || {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
    });
    proxy.swallow_request(MYSQL_COMMIT);
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    let start = Instant::now();
    while proxy.swallowed() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the second worker committed nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frozen_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        long_transactions(&shop, 0).await > 0,
        "the frozen worker holds a transaction with locks"
    );
    // Frozen past both bounds: its transaction and its member slot are given up by the server.
    tokio::time::sleep(Duration::from_secs(19)).await;
    let held_after = long_transactions(&shop, 12).await;
    signal(frozen, libc::SIGCONT);
    assert_eq!(
        held_after, 0,
        "the server rolled the frozen transaction back"
    );

    let took = shop
        .drained(Duration::from_secs(60), &[alive, frozen])
        .await;
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[alive, frozen]).await;
    assert_app_not_blocked(&app_seen);
    let readyz = &answers[&(0, "/readyz")];
    fault_load::assert_readiness_truthful(alive, readyz);
    assert!(
        alive
            .events("replicas_changed")
            .iter()
            .any(|l| l["members"] == 1),
        "the frozen worker's slot was freed"
    );
    let lateness = fault_load::lateness_ms(&[alive, frozen], deadline_ms);
    summary(
        "worker_sigstop_in_transaction",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "frozen_ms": 20_000,
            "freeze_after_deadline_ms": frozen_at.duration_since(start).as_millis() as u64,
            "drained_ms": took.as_millis() as u64,
            "readyz": fault_load::tally(readyz),
            "healthz": fault_load::tally(&answers[&(0, "/healthz")]),
            "writes_failing_spans": fault_load::failing_spans(alive, common::burst::now_ms()).len(),
        }),
    );
}

/// One worker through the proxy; the port of the shop's MySQL.
fn db_port(shop: &Shop) -> u16 {
    shop.db
        .host_port()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the database's port")
}

/// Defect: a COMMIT that never reaches the server (the proxy swallows it and keeps both
/// sockets open) left that transaction and its product locks on the server for good: every
/// app checkout on those products failed with 1205, no order was cancelled, and the log said
/// `writes_recovered` while nothing was written. Now the server rolls it back 10 s after the
/// last statement it got, the worker abandons it after 15 s and writes the batch again.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_that_never_arrives_is_rolled_back_and_written_again() {
    let shop = Shop::open(5000, 1).await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(db_port(&shop));
    let env = App::env_text(redis.port, &shop.db, "").replace(
        &format!("DB_PORT={}\n", db_port(&shop)),
        &format!("DB_PORT={}\n", proxy.port),
    );
    let app = App::with_env(&env);
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    let probes = Probes::start(vec![addr.clone()]);
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    proxy.swallow_request(MYSQL_COMMIT);
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    let took = shop.drained(Duration::from_secs(60), &[&worker]).await;
    assert_eq!(proxy.swallowed(), 1, "one COMMIT swallowed");
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[&worker]).await;
    assert_app_not_blocked(&app_seen);
    let readyz = &answers[&(0, "/readyz")];
    fault_load::assert_readiness_truthful(&worker, readyz);
    assert_eq!(
        Scrape::take(&addr).get("order_expire_orders_cancelled_total"),
        shop.unpaid().len() as f64,
        "the counter counts what the database did"
    );
    let lateness = fault_load::lateness_ms(&[&worker], deadline_ms);
    summary(
        "commit_swallowed",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "drained_ms": took.as_millis() as u64,
            "readyz": fault_load::tally(readyz),
            "healthz": fault_load::tally(&answers[&(0, "/healthz")]),
        }),
    );
}

/// Defect (issue 20, item 10): the reply to a COMMIT lost, the worker retried the batch, found
/// its orders already cancelled and counted them as such: the cancelled counter and the log
/// fell short of the database. Now the orders of a COMMIT without reply are read back, and
/// counted and logged as cancelled when the server did commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_commit_reply_is_counted_as_the_database_did() {
    let shop = Shop::open(5000, 1).await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(db_port(&shop));
    let env = App::env_text(redis.port, &shop.db, "").replace(
        &format!("DB_PORT={}\n", db_port(&shop)),
        &format!("DB_PORT={}\n", proxy.port),
    );
    let app = App::with_env(&env);
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    proxy.swallow_reply_to(MYSQL_COMMIT);
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    let took = shop.drained(Duration::from_secs(60), &[&worker]).await;
    assert_eq!(proxy.swallowed(), 1, "one COMMIT's reply swallowed");
    worker.wait_for_event("commit_confirmed", 1, Duration::from_secs(40));
    let app_seen = checkouts.finish().await;
    shop.audit(&[&worker]).await;
    assert_app_not_blocked(&app_seen);
    let start = Instant::now();
    let unpaid = shop.unpaid().len() as f64;
    while Scrape::take(&addr).get("order_expire_orders_cancelled_total") < unpaid
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        Scrape::take(&addr).get("order_expire_orders_cancelled_total"),
        unpaid,
        "the counter counts what the database did"
    );
    let lateness = fault_load::lateness_ms(&[&worker], deadline_ms);
    summary(
        "commit_reply_lost",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "drained_ms": took.as_millis() as u64,
            "commit_confirmed": worker.count_event("commit_confirmed"),
        }),
    );
}

/// Defect 9: a worker whose network is cut without its connections closing (its host died, a
/// NAT entry dropped) stayed a member for the server's `wait_timeout` (8 hours): its orders
/// waited for the 30 s net. Now the server closes its silent member connection after 10 s and
/// the other worker takes its orders over at its next look.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_cut_off_without_a_close_is_no_member_after_the_bound() {
    let shop = Shop::open(5000, 1).await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(db_port(&shop));
    let (_apps, workers) = start_workers(&redis, &shop, Some(&proxy), 2);
    let (alive, cut) = (&workers[0], &workers[1]);
    let addr = alive.metrics_addr();
    let probes = Probes::start(vec![addr.clone()]);
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    let cut_ms = common::burst::now_ms();
    let cut_at = Instant::now();
    proxy.cut_off();
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    let start = Instant::now();
    while members(alive) != Some(1) {
        assert!(
            start.elapsed() < Duration::from_secs(16),
            "the cut-off worker is still a member {:?} after the cut",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_ms = alive
        .events("replicas_changed")
        .iter()
        .rev()
        .find(|l| l["members"] == 1)
        .and_then(Worker::timestamp_ms)
        .expect("when the member left")
        - cut_ms;
    let took = shop.drained(Duration::from_secs(40), &[alive]).await;
    proxy.heal();
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[alive, cut]).await;
    assert_app_not_blocked(&app_seen);
    let readyz = &answers[&(0, "/readyz")];
    fault_load::assert_readiness_truthful(alive, readyz);
    let lateness = fault_load::lateness_ms(&[alive, cut], deadline_ms);
    assert!(
        lateness.2 < 20_000,
        "the cut-off worker's orders were taken over before the 30 s net: {lateness:?}"
    );
    summary(
        "member_cut_off_silently",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "member_gone_after_ms": gone_ms,
            "drained_ms": took.as_millis() as u64,
            "readyz": fault_load::tally(readyz),
            "healthz": fault_load::tally(&answers[&(0, "/healthz")]),
        }),
    );
}

/// Waits until none of `ids` is unpaid.
async fn cancelled(shop: &Shop, ids: &[u64], within: Duration) {
    let start = Instant::now();
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut conn = shop.db.conn().await;
    loop {
        let left: Option<u64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM orders WHERE status = 0 AND id IN ({list})"
            ))
            .await
            .expect("count unpaid orders");
        if left == Some(0) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{left:?} orders still unpaid after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kernel-level faults, in a network namespace of the test's own with the database server
/// inside: 20 % of the packets between the worker and MySQL lost both ways while half a burst
/// expires, then every packet to the server dropped for 15 s (a partition: nothing closes)
/// while the other half expires. The app's checkouts reach the server over its socket file,
/// which no rule touches, and must never wait on the worker's locks past the bound.
#[tokio::test(flavor = "multi_thread")]
async fn packet_loss_and_a_partition_in_a_network_namespace() {
    let netns = NetNs::create();
    let maria = MariaServer::start_in(&netns).await;
    let shop = Shop::open_on(&maria.url(), 6000, 1).await;
    let redis = RedisServer::start();
    let app = App::new(&redis, &shop.db, "");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    let over_socket = mysql_async::OptsBuilder::default()
        .user(Some("root"))
        .socket(Some(maria.socket().display().to_string()))
        .db_name(Some(shop.db.name.clone()));
    let probes = Probes::start(vec![addr.clone()]);
    let checkouts = AppCheckouts::start(mysql_async::Pool::new(over_socket), shop.products.clone());
    let (first, second) = shop.ids.split_at(shop.ids.len() / 2);
    let unpaid = shop.unpaid();
    let first_unpaid: Vec<u64> = first
        .iter()
        .copied()
        .filter(|id| unpaid.contains(id))
        .collect();

    netns.lose(maria.port, 20);
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(first, Duration::from_secs(2));
    cancelled(&shop, &first_unpaid, Duration::from_secs(60)).await;
    let lossy = fault_load::lateness_ms_among(&[&worker], deadline_ms, Some(first));
    netns.heal();

    // The partition starts half a second before the second half's deadline: its writes
    // meet a server that answers nothing and closes nothing, until the rule goes.
    let second_deadline_ms = common::burst::now_ms() + 1000;
    redis.expire_together(second, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    netns.drop_port(maria.port);
    let partition_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    netns.heal();
    let partition_ms = partition_at.elapsed().as_millis() as i64;
    let took = shop.drained(Duration::from_secs(60), &[&worker]).await;
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[&worker]).await;
    assert_app_not_blocked(&app_seen);
    let readyz = &answers[&(0, "/readyz")];
    fault_load::assert_readiness_truthful(&worker, readyz);
    let start = Instant::now();
    while Scrape::take(&addr).get("order_expire_orders_cancelled_total") < unpaid.len() as f64
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        Scrape::take(&addr).get("order_expire_orders_cancelled_total"),
        unpaid.len() as f64,
        "the counter counts what the database did"
    );
    let partition = fault_load::lateness_ms_among(&[&worker], second_deadline_ms, Some(second));
    assert!(
        partition.0 >= partition_ms - 1000,
        "nothing was written through the partition: {partition:?}"
    );
    summary(
        "netns_loss20_then_partition15s",
        partition,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "loss_lateness_p50_ms": lossy.0,
            "loss_lateness_p99_ms": lossy.1,
            "drained_after_heal_ms": took.as_millis() as u64,
            "readyz": fault_load::tally(readyz),
            "healthz": fault_load::tally(&answers[&(0, "/healthz")]),
        }),
    );
}

/// Defect (the other way to it): a replica whose Redis link is cut misses the events of its
/// own orders, while the other worker sets them aside for it; in events-only mode nothing else
/// finds them. The net gave them back after 30 s and the dispatcher set them aside again,
/// forever. Now the other worker writes them at the net's bound; the cut-off worker's
/// `/readyz` is not 200 while it is not subscribed.
#[tokio::test(flavor = "multi_thread")]
async fn orders_a_replica_missed_while_its_redis_link_was_cut_are_cancelled_within_the_net() {
    let shop = Shop::open(4000, 1).await;
    let redis = RedisServer::start();
    let redis_proxy = FaultProxy::start(redis.port);
    let direct = App::new(&redis, &shop.db, "");
    let cut_app = App::on_port(redis_proxy.port, &shop.db, "");
    let args = ["--metrics-addr", "127.0.0.1:0"];
    let alive = direct.start_worker(&args);
    let cut = cut_app.start_worker(&args);
    for worker in [&alive, &cut] {
        wait_members(worker, 2, Duration::from_secs(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let probes = Probes::start(vec![alive.metrics_addr(), cut.metrics_addr()]);
    let checkouts = AppCheckouts::start(shop.db.pool.clone(), shop.products.clone());
    redis_proxy.cut_off();
    let cut_ms = common::burst::now_ms();
    let deadline_ms = common::burst::now_ms() + 2000;
    redis.expire_together(&shop.ids, Duration::from_secs(2));
    // Past the subscription's check of a silent link: an idle PING every 15 s, answered
    // within 5 s.
    tokio::time::sleep(Duration::from_secs(24)).await;
    redis_proxy.heal();
    let healed_ms = common::burst::now_ms();
    let took = shop.drained(Duration::from_secs(40), &[&alive, &cut]).await;
    let app_seen = checkouts.finish().await;
    let answers = probes.finish();
    shop.audit(&[&alive, &cut]).await;
    assert_app_not_blocked(&app_seen);
    fault_load::assert_readiness_truthful(&alive, &answers[&(0, "/readyz")]);
    // The cut-off worker is not ready while cut off: from its PING's timeout on (at most 20 s
    // after the cut), until it is subscribed again after the heal.
    let cut_readyz = &answers[&(1, "/readyz")];
    let lied: Vec<_> = cut_readyz
        .iter()
        .filter(|(at, status)| *at > cut_ms + 21_000 && *at < healed_ms && *status == Some(200))
        .collect();
    assert!(
        lied.is_empty(),
        "/readyz 200 while cut off from Redis: {lied:?}"
    );
    assert!(
        cut_readyz
            .iter()
            .any(|(at, s)| *at > cut_ms && *at < healed_ms && *s != Some(200)),
        "the cut-off worker said it was not ready"
    );
    let lateness = fault_load::lateness_ms(&[&alive, &cut], deadline_ms);
    assert!(
        lateness.2 <= 36_000,
        "the missed orders were cancelled within the net's bound: {lateness:?}"
    );
    summary(
        "replica_redis_link_cut_24s",
        lateness,
        &app_seen,
        serde_json::json!({
            "orders": shop.ids.len(),
            "drained_ms": took.as_millis() as u64,
            "readyz_alive": fault_load::tally(&answers[&(0, "/readyz")]),
            "readyz_cut": fault_load::tally(cut_readyz),
            "healthz_cut": fault_load::tally(&answers[&(1, "/healthz")]),
        }),
    );
}
