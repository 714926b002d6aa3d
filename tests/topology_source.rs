//! The worker on a Redis Cluster and under Sentinel, against real servers started here.
//!
//! * a 3-master cluster given by one seed: one subscription per master, orders whose keys live
//!   on every master all cancelled exactly once, `status` finding the worker's subscription on
//!   each master; `schedule` writes to the key's master and `sweep` asks each master about its
//!   own keys;
//! * a `CLUSTER FAILOVER` of one master to its replica: the old master keeps the subscription
//!   open but goes silent, and the topology check moves it to the new master;
//! * a Sentinel with one master, one replica and one sentinel: `SENTINEL FAILOVER` is followed
//!   to the new master (where `status` then finds the worker subscribed), and orders expiring
//!   there are cancelled.
//!
//! The cluster and the Sentinel set-up are the shared harness's (`tests/common/cluster.rs`,
//! `tests/common/sentinel.rs`), with the password Laravel apps set; the app is a configuration
//! cache naming them.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::burst::now_ms;
use common::cluster::RedisCluster;
use common::redis_node::PASSWORD;
use common::sentinel::{SERVICE, SentinelSet};
use common::{App, TestDb, Worker, wait_until, write_config_cache};

const WAIT: Duration = Duration::from_secs(30);

/// The key Laravel 8 writes with the prefixes of [`config_cache_app`].
fn key(id: u64) -> String {
    format!("shop_database_shop_cache:ORDER_CONFIRM:{id}")
}

/// An app whose configuration cache puts the cache store on `redis` (a `database.redis` array)
/// and the orders in `db`; `env` holds order-expire's own settings.
fn config_cache_app(db: &TestDb, redis: &str, env: &str) -> App {
    let app = App::with_env(&format!("CACHE_DRIVER=file\n{env}\n"));
    write_config_cache(&app, &db.config_array(), redis);
    app
}

/// A phpredis cluster connection with `seeds` only (the rest is discovered) and the cluster's
/// password in the global options.
fn cluster_app(db: &TestDb, seeds: &[u16], env: &str) -> App {
    let nodes: Vec<String> = seeds
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{i} => array ('host' => '127.0.0.1', 'port' => {port})"))
        .collect();
    config_cache_app(
        db,
        &format!(
            "array ('client' => 'phpredis', 'options' => array ('cluster' => 'redis', 'prefix' => 'shop_database_', 'password' => '{PASSWORD}'), 'clusters' => array ('cache' => array ({})))",
            nodes.join(", ")
        ),
        env,
    )
}

/// How long after `started_ms` (Unix milliseconds) the worker logged `line`.
fn logged_after(line: &serde_json::Value, started_ms: i64) -> String {
    Worker::timestamp_ms(line).map_or_else(
        || format!("(no timestamp in {line})"),
        |at| format!("{} ms", at - started_ms),
    )
}

/// The `redis` fields of the worker's `listening` lines.
fn listening(worker: &Worker) -> BTreeSet<String> {
    worker
        .events("listening")
        .iter()
        .filter_map(|l| l["redis"].as_str().map(str::to_string))
        .collect()
}

fn endpoints(ports: &[u16]) -> BTreeSet<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

/// Each master of a `status --json` report, with its subscribers.
fn subscribers(report: &serde_json::Value) -> BTreeSet<(String, u64)> {
    report["redis"]["masters"]
        .as_array()
        .map(|masters| {
            masters
                .iter()
                .map(|m| {
                    (
                        m["redis"].as_str().unwrap_or_default().to_string(),
                        m["subscribers"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `status` finds the worker's one subscription on each of `masters` (the worker
/// may still be subscribing to a master it has just found), then asks for an `ok` verdict on
/// the `topology` with every master publishing its `expired` events.
async fn assert_status_sees_each_master(app: &App, topology: &str, masters: &[u16]) {
    let expected = one_subscriber_each(masters);
    wait_until(
        WAIT,
        "status finds one subscriber on each master",
        || async { subscribers(&app.status_json(&[]).0) == expected },
    )
    .await;
    let (report, code) = app.status_json(&[]);
    assert_eq!(report["verdict"], "ok", "{report:#}");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["redis"]["topology"], topology, "{report:#}");
    assert_eq!(subscribers(&report), expected, "{report:#}");
    for master in report["redis"]["masters"].as_array().into_iter().flatten() {
        assert_eq!(master["publishes_expired"], true, "{report:#}");
    }
}

fn one_subscriber_each(ports: &[u16]) -> BTreeSet<(String, u64)> {
    ports
        .iter()
        .map(|p| (format!("127.0.0.1:{p}"), 1))
        .collect()
}

/// Waits until every order of `db` (all `orders`, of `product` with stock 1000) is cancelled,
/// then checks the stock is whole again and that `worker` cancelled each exactly once.
async fn assert_each_cancelled_once(db: &TestDb, worker: &Worker, orders: &[u64], product: u64) {
    wait_until(
        WAIT,
        &format!("{} orders cancelled", orders.len()),
        || async { db.count_status(2).await == orders.len() },
    )
    .await;
    assert_eq!(db.stock(product).await, 1000, "stock exact");
    // The log line follows the commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cancelled = worker.cancelled_orders();
    cancelled.sort_unstable();
    let mut expected = orders.to_vec();
    expected.sort_unstable();
    assert_eq!(cancelled, expected, "each order cancelled exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_master_of_a_cluster_is_heard_and_each_order_is_cancelled_once() {
    let cluster = RedisCluster::start(3, 0);
    let masters = cluster.masters();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let orders = db.place_orders(&[product], 60).await;
    // One seed: the worker finds the other masters itself.
    let app = cluster_app(&db, &masters[..1], "");

    let worker = app.start_worker(&[]);
    wait_until(WAIT, "a listening line per master", || async {
        listening(&worker).len() == 3
    })
    .await;
    assert_eq!(listening(&worker), endpoints(&masters));
    for line in worker.events("listening") {
        assert_eq!(
            line["channel"], "__keyevent@0__:expired",
            "db 0 on a cluster"
        );
    }

    let mut holders = BTreeSet::new();
    for id in &orders {
        holders.insert(cluster.setex(&key(*id), 2, &id.to_string()));
    }
    assert_eq!(holders.len(), 3, "the keys live on every master");
    assert_each_cancelled_once(&db, &worker, &orders, product).await;
    // status asks every master, found from the one seed, for its subscribers: the worker's.
    assert_status_sees_each_master(&app, "cluster", &masters).await;
    assert_eq!(
        worker.count_event("deadline_watcher_failing"),
        0,
        "PTTL routed to each key's master:\n{}",
        worker.log()
    );
    assert_eq!(
        worker.count_event("topology_changed"),
        0,
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schedule_and_sweep_reach_each_keys_master() {
    let cluster = RedisCluster::start(3, 0);
    let masters = cluster.masters();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = cluster_app(&db, &masters, "ORDER_EXPIRE_TTL=60");

    // schedule: SETEX on the master of the key's slot, as Laravel's cluster connection writes it.
    // (ids no order has, so that the sweep below does not see these keys)
    for id in 900_001u64..=900_006 {
        let output = app.run(&["schedule", &id.to_string(), "--ttl", "600"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            cluster.get(&key(id)).as_deref(),
            Some(id.to_string().as_str())
        );
    }

    // sweep: 30 overdue orders, 15 of them still keyed on various masters.
    let orders = db.place_orders(&[product], 30).await;
    {
        use mysql_async::prelude::Queryable;
        db.conn()
            .await
            .query_drop("UPDATE orders SET created_at = UTC_TIMESTAMP() - INTERVAL 1 HOUR")
            .await
            .expect("age the orders");
    }
    let mut holders = BTreeSet::new();
    for id in orders.iter().step_by(2) {
        holders.insert(cluster.setex(&key(*id), 600, &id.to_string()));
    }
    assert!(holders.len() > 1, "the keys span masters");
    let output = app.run(&["sweep"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(
            "sweep: 30 unpaid orders past the TTL examined, 15 with their key still in Redis (left alone), 15 without it: 15 cancelled"
        ),
        "{stdout}"
    );
    assert_eq!(db.count_status(2).await, 15);
    for id in orders.iter().skip(1).step_by(2) {
        assert_eq!(db.status(*id).await, 2, "order {id} had no key");
    }

    // check lists the masters it would subscribe to.
    let output = app.run(&["check", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    assert!(output.status.success(), "{report:#}");
    let subscribed: BTreeSet<String> = report["connections"]["redis"]["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .filter_map(|s| s["redis"].as_str().map(str::to_string))
        .collect();
    assert_eq!(subscribed, endpoints(&masters));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_failover_moves_the_subscription_to_the_promoted_replica() {
    let mut cluster = RedisCluster::start(3, 0);
    let masters = cluster.masters();
    let old = masters[0];
    let promoted = cluster.add_replica(old);
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = cluster_app(&db, &[masters[1]], "");
    let worker = app.start_worker(&[]);
    wait_until(WAIT, "three listening lines", || async {
        listening(&worker).len() == 3
    })
    .await;
    assert!(!listening(&worker).contains(&format!("127.0.0.1:{promoted}")));

    let started_ms = now_ms();
    // CLUSTER FAILOVER on the replica; returns once every node agrees on the new roles.
    assert_eq!(cluster.failover(0), (old, promoted));
    // While the nodes' views converge, one look may already show the old master demoted and
    // not yet its replica promoted, or the reverse; the old subscription then stays until the
    // slots have a heard master, so the change can come in two steps but never leaves them
    // unheard.
    let added = format!("127.0.0.1:{promoted}");
    let old_endpoint = format!("127.0.0.1:{old}");
    wait_until(
        WAIT,
        "topology changes that add the promoted replica and drop the old master",
        || async {
            let changes = worker.events("topology_changed");
            let adds = changes.iter().any(|e| {
                e["added"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(added.as_str())
            });
            adds && changes.iter().any(|e| e["removed"] == old_endpoint)
        },
    )
    .await;
    let changes = worker.events("topology_changed");
    let change = changes
        .iter()
        .find(|e| {
            e["added"]
                .as_str()
                .unwrap_or_default()
                .contains(added.as_str())
        })
        .expect("the change that adds the promoted replica");
    println!(
        "cluster failover followed {} after CLUSTER FAILOVER ({} topology change(s))",
        logged_after(change, started_ms),
        changes.len()
    );
    assert!(
        changes.iter().all(|e| e["kind"] == "cluster"),
        "{changes:?}"
    );
    assert_eq!(change["added"], added);
    for step in &changes {
        let masters = step["masters"].as_str().unwrap_or_default();
        assert!(
            masters.split(',').any(|m| m == old_endpoint || m == added),
            "at every step the old master or the promoted replica is heard: {changes:?}"
        );
    }
    let mut heard: Vec<u16> = masters.iter().copied().filter(|p| *p != old).collect();
    heard.push(promoted);
    let last = changes.last().expect("at least one change");
    assert_eq!(
        last["masters"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect::<BTreeSet<_>>(),
        endpoints(&heard)
    );
    assert!(listening(&worker).contains(&format!("127.0.0.1:{promoted}")));

    // Orders whose keys live on the promoted master are heard from it.
    let orders = db.place_orders(&[product], 30).await;
    let mut on_promoted = Vec::new();
    for id in &orders {
        if cluster.setex(&key(*id), 1, &id.to_string()) == promoted {
            on_promoted.push(*id);
        }
    }
    assert!(
        !on_promoted.is_empty(),
        "some keys live on the promoted master"
    );
    assert_each_cancelled_once(&db, &worker, &orders, product).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_is_followed_to_the_new_master() {
    let set = SentinelSet::start(1);
    let master = set.master();
    let replica = set.other_server(master);

    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = config_cache_app(
        &db,
        &format!(
            "array ('client' => 'predis', 'options' => array ('prefix' => 'shop_database_'), 'cache' => array (0 => 'tcp://127.0.0.1:{}', 'options' => array ('replication' => 'sentinel', 'service' => '{SERVICE}', 'parameters' => array ('password' => '{PASSWORD}', 'database' => 1))))",
            set.sentinel_ports()[0]
        ),
        "",
    );
    let worker = app.start_worker(&[]);
    assert_eq!(listening(&worker), endpoints(&[master]), "{}", worker.log());
    assert_eq!(
        worker.events("listening")[0]["channel"],
        "__keyevent@1__:expired"
    );

    let started_ms = now_ms();
    // SENTINEL FAILOVER, retried while the sentinel refuses it (NOGOODSLAVE until it has checked
    // the replica's link); returns once the sentinel names the replica and it is a master.
    assert_eq!(set.failover(), (master, replica));
    worker.wait_for_event("failover_followed", 1, WAIT);
    let followed = &worker.events("failover_followed")[0];
    println!(
        "sentinel failover followed {} after SENTINEL FAILOVER",
        logged_after(followed, started_ms)
    );
    println!("failover_followed took_ms {}", followed["took_ms"]);
    assert_eq!(followed["from"], format!("127.0.0.1:{master}"));
    assert_eq!(followed["to"], format!("127.0.0.1:{replica}"));
    assert!(followed["took_ms"].as_u64().is_some(), "{followed}");
    let change = &worker.events("topology_changed")[0];
    assert_eq!(change["kind"], "sentinel");
    assert_eq!(change["masters"], format!("127.0.0.1:{replica}"));
    // status asks the master the sentinels name now, where the worker is subscribed.
    assert_status_sees_each_master(&app, "sentinel", &[replica]).await;

    // schedule writes to the new master, in the cache database.
    let output = app.run(&["schedule", "900001", "--ttl", "600"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: Option<String> = redis::cmd("GET")
        .arg(key(900_001))
        .query(&mut set.conn(replica, 1))
        .expect("GET on the new master");
    assert_eq!(written.as_deref(), Some("900001"));
    // The new master's expiries cancel the orders.
    let orders = db.place_orders(&[product], 20).await;
    let mut conn = set.conn(replica, 1);
    for id in &orders {
        common::setex(&mut conn, &key(*id), 1, &id.to_string());
    }
    assert_each_cancelled_once(&db, &worker, &orders, product).await;
}
