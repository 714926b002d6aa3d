//! Faults of one cluster master, on a real Redis Cluster of three masters without replicas
//! (`tests/common/cluster.rs`), the fixture app configured for it as `tests/cluster.rs` does,
//! and orders placed without keys (`ORDER_EXPIRE_TTL=5`: the deadline watcher and the sweep
//! cancel them 5 s after `created_at`):
//!
//! * a master SIGKILLed holds back only the orders whose key would live on it: every other
//!   order is cancelled on time, and `/readyz` names the dead master;
//! * a master the cluster announces at a closed port (`cluster-announce-port`) is followed:
//!   `topology_changed` names it unreachable, `/readyz` says 503 naming it, the orders of the
//!   other masters are cancelled, and once the announcement is right again every order is;
//! * a seed listed first that accepts and never answers does not delay the start.
//!
//! Each test prints one JSON line with what it measured.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::burst::blocking;
use common::cluster::{LARAVEL_CLUSTER_CONFIG, RedisCluster};
use common::redis_node::{PASSWORD, free_port};
use common::{LaravelApp, TestDb, Worker, default_key, http_get, wait_until};

const TTL: u64 = 5;

fn env(db: &TestDb, seed: u16) -> String {
    format!(
        "APP_NAME=Laravel\nAPP_ENV=testing\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={seed}\nREDIS_PASSWORD={PASSWORD}\n{}ORDER_EXPIRE_TTL={TTL}\nORDER_EXPIRE_SWEEP_INTERVAL=5\nORDER_EXPIRE_METRICS_ADDR=127.0.0.1:0\n",
        db.env_lines()
    )
}

/// A worker on `cluster` (seeded with its first master), listening on every master. The
/// cluster serves the slots of its live masters when one is down
/// (`cluster-require-full-coverage no`): with Redis's default it refuses every slot once it
/// marks a master failed.
async fn start(cluster: &RedisCluster, db: &TestDb) -> (LaravelApp, Worker) {
    let masters = cluster.masters();
    for port in cluster.ports() {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg("no")
            .query::<()>(&mut cluster.conn(port))
            .expect("CONFIG SET cluster-require-full-coverage no");
    }
    let laravel = LaravelApp::new(&env(db, masters[0]));
    laravel.set_redis_config(LARAVEL_CLUSTER_CONFIG);
    let worker = laravel.app.start_worker(&[]);
    blocking(|| worker.wait_for_event("listening", masters.len(), Duration::from_secs(30)));
    (laravel, worker)
}

/// Places `n` unpaid orders (no keys); returns them split by whether their key's slot is served
/// by the master on `port`.
async fn orders_by_master(
    cluster: &RedisCluster,
    db: &TestDb,
    n: usize,
    port: u16,
) -> (Vec<u64>, Vec<u64>) {
    let product = db.add_product("Tea", 10_000).await;
    let orders = db.place_orders(&[product], n).await;
    orders
        .into_iter()
        .partition(|id| cluster.master_of_slot(cluster.slot_of(&default_key(*id))) == port)
}

async fn unpaid(db: &TestDb, orders: &[u64]) -> BTreeSet<u64> {
    let statuses = db.statuses().await;
    let wanted: BTreeSet<u64> = orders.iter().copied().collect();
    statuses
        .into_iter()
        .filter(|(id, status)| wanted.contains(id) && *status == 0)
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_master_holds_back_only_the_orders_of_its_own_slots() {
    let mut cluster = blocking(|| RedisCluster::start(3, 0));
    let masters = cluster.masters();
    let dead = masters[2];
    let db = TestDb::create().await;
    let (_laravel, mut worker) = start(&cluster, &db).await;
    let addr = worker.metrics_addr();
    // The slots' owners, read while every node answers.
    let (on_dead, elsewhere) = orders_by_master(&cluster, &db, 60, dead).await;
    assert!(!on_dead.is_empty() && !elsewhere.is_empty());
    cluster.kill(dead);
    let killed = Instant::now();

    while !unpaid(&db, &elsewhere).await.is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the live masters' orders {:?} still unpaid 30 s after the kill; log:\n{}",
            unpaid(&db, &elsewhere).await,
            common::burst::tail(&worker.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    let (status, readyz) = http_get(&addr, "/readyz");
    // The dead master's orders: their key's state is unknown, so they wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = unpaid(&db, &on_dead).await;
    worker.stop(Duration::from_secs(20));
    db.assert_stock_returned(10_000).await;
    println!(
        "{}",
        serde_json::json!({
            "test": "cluster_dead_master",
            "orders": on_dead.len() + elsewhere.len(),
            "on_live_masters_cancelled": elsewhere.len(),
            "within_ms_of_kill": took.as_millis(),
            "on_dead_master_held": held.len(),
            "readyz": status,
        })
    );
    assert_eq!(
        held.len(),
        on_dead.len(),
        "the dead master's orders wait for it"
    );
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains(&dead.to_string()), "{readyz}");
    assert!(
        took < Duration::from_secs(TTL + 12),
        "cancelled {took:?} after the kill, the deadline being {TTL} s after the orders"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_announced_at_a_closed_port_is_followed_and_readiness_says_so() {
    let cluster = blocking(|| RedisCluster::start(3, 0));
    let masters = cluster.masters();
    let moved = masters[1];
    let db = TestDb::create().await;
    let (_laravel, mut worker) = start(&cluster, &db).await;
    let addr = worker.metrics_addr();
    let (on_moved, elsewhere) = orders_by_master(&cluster, &db, 50, moved).await;
    assert!(!on_moved.is_empty() && !elsewhere.is_empty());

    let closed = free_port();
    let announce = |port: u16| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-announce-port")
            .arg(port)
            .query::<()>(&mut cluster.conn(moved))
            .expect("CONFIG SET cluster-announce-port");
    };
    announce(closed);
    let announced = Instant::now();
    let unreachable_named = || {
        worker.events("topology_changed").iter().any(|e| {
            e["unreachable"]
                .as_str()
                .is_some_and(|u| u.contains(&closed.to_string()))
        })
    };
    wait_until(
        Duration::from_secs(30),
        "topology_changed naming the closed port",
        || async { unreachable_named() },
    )
    .await;
    let followed = announced.elapsed();
    let (status, readyz) = http_get(&addr, "/readyz");
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains(&closed.to_string()), "{readyz}");
    wait_until(
        Duration::from_secs(30),
        "the other masters' orders cancelled",
        || async { unpaid(&db, &elsewhere).await.is_empty() },
    )
    .await;
    let held = unpaid(&db, &on_moved).await.len();
    let failed = worker.events("subscribe_failed");
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the cluster announces this address"),
        "{error}"
    );
    assert!(!error.contains("REDIS_HOST"), "{error}");

    announce(0);
    let restored = Instant::now();
    wait_until(Duration::from_secs(30), "every order cancelled", || async {
        unpaid(&db, &on_moved).await.is_empty()
    })
    .await;
    let all_after = restored.elapsed();
    wait_until(Duration::from_secs(20), "/readyz 200 again", || async {
        http_get(&addr, "/readyz").0 == 200
    })
    .await;
    worker.stop(Duration::from_secs(20));
    db.assert_stock_returned(10_000).await;
    println!(
        "{}",
        serde_json::json!({
            "test": "cluster_master_at_closed_port",
            "orders": on_moved.len() + elsewhere.len(),
            "topology_changed_within_ms": followed.as_millis(),
            "readyz_while_unreachable": status,
            "other_masters_cancelled": elsewhere.len(),
            "held_while_unreachable": held,
            "all_cancelled_within_ms_of_fix": all_after.as_millis(),
        })
    );
}

/// The seeds are asked at once: one listed first that accepts connections and never answers
/// (a host behind a dead load balancer) does not delay the start by its timeout (5 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_seed_that_never_answers_does_not_delay_the_start() {
    let cluster = blocking(|| RedisCluster::start(3, 0));
    let masters = cluster.masters();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("a hung seed");
    let hung_port = hung.local_addr().expect("its port").port();
    std::thread::spawn(move || {
        // Accepts and holds every connection, answering nothing.
        let mut held = Vec::new();
        for stream in hung.incoming().flatten() {
            held.push(stream);
        }
    });
    let db = TestDb::create().await;
    let laravel = LaravelApp::new(&env(&db, masters[0]));
    laravel.set_redis_config(&LARAVEL_CLUSTER_CONFIG.replacen(
        "            'cache' => [\n",
        &format!(
            "            'cache' => [\n                ['host' => '127.0.0.1', 'port' => {hung_port}, 'password' => env('REDIS_PASSWORD', null)],\n"
        ),
        1,
    ));
    let started = Instant::now();
    let mut worker = laravel.app.start_worker(&[]);
    blocking(|| worker.wait_for_event("listening", masters.len(), Duration::from_secs(30)));
    let took = started.elapsed();
    worker.stop(Duration::from_secs(20));
    println!(
        "{}",
        serde_json::json!({
            "test": "cluster_hung_seed_first",
            "seeds": 2,
            "listening_on_every_master_within_ms": took.as_millis(),
        })
    );
    assert!(
        took < Duration::from_millis(4500),
        "started in {took:?}: the hung seed's 5 s timeout was waited for"
    );
}
