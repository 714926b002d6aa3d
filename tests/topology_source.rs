//! The worker on a Redis Cluster and under Sentinel, against real servers started here.
//!
//! * a 3-master cluster given by one seed: one subscription per master, orders whose keys live
//!   on every master all cancelled exactly once; `schedule` writes to the key's master and
//!   `sweep` asks each master about its own keys;
//! * a `CLUSTER FAILOVER` of one master to its replica: the old master keeps the subscription
//!   open but goes silent, and the topology check moves it to the new master;
//! * a Sentinel with one master and one replica: `SENTINEL FAILOVER` is followed to the new
//!   master, and orders expiring there are cancelled.
//!
//! The cluster and the Sentinel set are built here from `redis-server` alone (`--cluster-enabled`,
//! `redis-cli --cluster create`, `redis-server <file> --sentinel`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{App, RedisServer, TestDb, Worker, run_bounded, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The key Laravel 8 writes with the prefixes of [`config_cache`].
fn key(id: u64) -> String {
    format!("shop_database_shop_cache:ORDER_CONFIRM:{id}")
}

/// A synchronous query against the server on `port` (database 0), bounded by the client's
/// own timeouts.
fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    command.query(&mut conn)
}

/// Waits (bounded) until `check` holds.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Redis Cluster of loopback `redis-server`s, stopped on drop.
struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    /// `masters` masters sharing the slots, no replica.
    fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters).map(|_| cluster_node()).collect();
        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        for node in &nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        command.arg("--cluster-yes");
        let output = run_bounded(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        for node in &self.nodes {
            wait_for("cluster_state:ok on every node", || {
                query::<String>(node.port, redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
    }

    /// Adds a replica of the node on `master` and waits until it is in sync.
    fn add_replica(&mut self, master: u16) -> u16 {
        let replica = cluster_node();
        let id: String = query(master, redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID");
        let mut command = Command::new("redis-cli");
        command
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{}", replica.port))
            .arg(format!("127.0.0.1:{master}"))
            .args(["--cluster-slave", "--cluster-master-id"])
            .arg(&id);
        let output = run_bounded(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "redis-cli --cluster add-node failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let port = replica.port;
        wait_for("the replica in sync", || {
            query::<String>(port, redis::cmd("INFO").arg("replication"))
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        self.nodes.push(replica);
        self.wait_until_ok();
        port
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// SETEX on whichever node takes the key (the others answer MOVED); returns its port.
    fn setex(&self, key: &str, ttl: u64, value: &str) -> u16 {
        for node in &self.nodes {
            let reply: redis::RedisResult<()> =
                query(node.port, redis::cmd("SETEX").arg(key).arg(ttl).arg(value));
            if reply.is_ok() {
                return node.port;
            }
        }
        panic!("no node of the cluster took {key}");
    }

    /// GET on whichever node holds the key's slot.
    fn get(&self, key: &str) -> Option<String> {
        self.nodes
            .iter()
            .find_map(|node| query::<Option<String>>(node.port, redis::cmd("GET").arg(key)).ok())?
    }
}

fn cluster_node() -> RedisServer {
    RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        "3000",
        "--notify-keyspace-events",
        "Ex",
    ])
}

/// The `DB_*` settings of `db`, for a configuration cache.
fn mysql_array(db: &TestDb) -> String {
    let lines = db.env_lines();
    let value = |name: &str| {
        lines
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .trim_matches('"')
            .replace('\'', "\\'")
    };
    format!(
        "array ('driver' => 'mysql', 'url' => NULL, 'host' => '{}', 'port' => '{}', 'database' => '{}', 'username' => '{}', 'password' => '{}', 'unix_socket' => '', 'prefix' => '')",
        value("DB_HOST"),
        value("DB_PORT"),
        value("DB_DATABASE"),
        value("DB_USERNAME"),
        value("DB_PASSWORD")
    )
}

/// An app whose configuration cache puts the cache store on `redis` (a `database.redis` array)
/// and the orders in `db`; `env` holds order-expire's own settings.
fn config_cache(db: &TestDb, redis: &str, env: &str) -> App {
    let app = App::with_env(&format!("CACHE_DRIVER=file\n{env}\n"));
    let root = app.env_file().parent().expect("app root").to_path_buf();
    std::fs::create_dir_all(root.join("bootstrap/cache")).expect("mkdir");
    std::fs::write(
        root.join("bootstrap/cache/config.php"),
        format!(
            "<?php return array (\n  'app' => array ('timezone' => 'UTC'),\n  'cache' => array ('default' => 'redis', 'stores' => array ('redis' => array ('driver' => 'redis', 'connection' => 'cache')), 'prefix' => 'shop_cache'),\n  'database' => array ('default' => 'mysql', 'connections' => array ('mysql' => {}), 'redis' => {redis}),\n);\n",
            mysql_array(db)
        ),
    )
    .expect("write config cache");
    app
}

/// A phpredis cluster connection with `seeds` only: the rest is discovered.
fn cluster_app(db: &TestDb, seeds: &[u16], env: &str) -> App {
    let nodes: Vec<String> = seeds
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{i} => array ('host' => '127.0.0.1', 'port' => {port})"))
        .collect();
    config_cache(
        db,
        &format!(
            "array ('client' => 'phpredis', 'options' => array ('cluster' => 'redis', 'prefix' => 'shop_database_'), 'clusters' => array ('cache' => array ({})))",
            nodes.join(", ")
        ),
        env,
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

/// Each of `orders` cancelled exactly once by `worker`.
fn assert_cancelled_once(worker: &Worker, orders: &[u64]) {
    let mut cancelled = worker.cancelled_orders();
    cancelled.sort_unstable();
    let mut expected = orders.to_vec();
    expected.sort_unstable();
    assert_eq!(cancelled, expected, "each order cancelled exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_master_of_a_cluster_is_heard_and_each_order_is_cancelled_once() {
    let cluster = Cluster::start(3);
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let orders = db.place_orders(&[product], 60).await;
    // One seed: the worker finds the other masters itself.
    let app = cluster_app(&db, &cluster.ports()[..1], "");

    let worker = app.start_worker(&[]);
    wait_until(WAIT, "a listening line per master", || async {
        listening(&worker).len() == 3
    })
    .await;
    assert_eq!(listening(&worker), endpoints(&cluster.ports()));
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
    wait_until(WAIT, "60 orders cancelled", || async {
        db.count_status(2).await == 60
    })
    .await;
    assert_eq!(db.stock(product).await, 1000, "stock exact");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_cancelled_once(&worker, &orders);
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
    let cluster = Cluster::start(3);
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = cluster_app(&db, &cluster.ports(), "ORDER_EXPIRE_TTL=60");

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
    assert_eq!(subscribed, endpoints(&cluster.ports()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_failover_moves_the_subscription_to_the_promoted_replica() {
    let mut cluster = Cluster::start(3);
    let old = cluster.ports()[0];
    let promoted = cluster.add_replica(old);
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = cluster_app(&db, &[cluster.ports()[1]], "");
    let worker = app.start_worker(&[]);
    wait_until(WAIT, "three listening lines", || async {
        listening(&worker).len() == 3
    })
    .await;
    assert!(!listening(&worker).contains(&format!("127.0.0.1:{promoted}")));

    let failover: String = query(promoted, redis::cmd("CLUSTER").arg("FAILOVER"))
        .expect("CLUSTER FAILOVER on the replica");
    assert_eq!(failover, "OK");
    let started = Instant::now();
    worker.wait_for_event("topology_changed", 1, WAIT);
    println!(
        "cluster failover followed {:?} after CLUSTER FAILOVER",
        started.elapsed()
    );
    let change = &worker.events("topology_changed")[0];
    assert_eq!(change["kind"], "cluster");
    assert_eq!(change["added"], format!("127.0.0.1:{promoted}"));
    assert_eq!(change["removed"], format!("127.0.0.1:{old}"));
    let mut heard = cluster.ports();
    heard.retain(|p| *p != old);
    assert_eq!(
        change["masters"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect::<BTreeSet<_>>(),
        endpoints(&heard)
    );
    assert!(listening(&worker).contains(&format!("127.0.0.1:{promoted}")));

    // Orders whose keys live on the promoted master are heard from it.
    cluster.wait_until_ok();
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
    wait_until(WAIT, "30 orders cancelled", || async {
        db.count_status(2).await == 30
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_cancelled_once(&worker, &orders);
    assert_eq!(db.stock(product).await, 1000);
}

/// A Sentinel watching one master, stopped on drop.
struct Sentinel {
    server: Option<std::process::Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// A sentinel (quorum 1) for `service` at 127.0.0.1:`master`.
    fn start(service: &str, master: u16) -> Self {
        let dir = tempfile::TempDir::new().expect("temp dir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {service} 127.0.0.1 {master} 1\nsentinel down-after-milliseconds {service} 2000\nsentinel failover-timeout {service} 10000\n",
                    dir.path().display()
                ),
            )
            .expect("write sentinel.conf");
            let mut command = Command::new("redis-server");
            command
                .arg(&conf)
                .arg("--sentinel")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            common::die_with_parent(&mut command);
            let mut child = command.spawn().expect("redis-server --sentinel");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if query::<String>(port, &redis::cmd("PING")).is_ok() {
                    return Self {
                        server: Some(child),
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a sentinel");
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_is_followed_to_the_new_master() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    let _: () = query(
        replica.port,
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(master.port),
    )
    .expect("REPLICAOF");
    wait_for("the replica in sync", || {
        query::<String>(replica.port, redis::cmd("INFO").arg("replication"))
            .is_ok_and(|info| info.contains("master_link_status:up"))
    });
    let sentinel = Sentinel::start("shop-master", master.port);
    // The sentinel learns of the replica from the master's INFO.
    wait_for("the sentinel to know the replica", || {
        query::<Vec<redis::Value>>(
            sentinel.port,
            redis::cmd("SENTINEL").arg("REPLICAS").arg("shop-master"),
        )
        .is_ok_and(|replicas| !replicas.is_empty())
    });

    let db = TestDb::create().await;
    let product = db.add_product("Tea", 1000).await;
    let app = config_cache(
        &db,
        &format!(
            "array ('client' => 'predis', 'options' => array ('prefix' => 'shop_database_'), 'cache' => array (0 => 'tcp://127.0.0.1:{}', 'options' => array ('replication' => 'sentinel', 'service' => 'shop-master', 'parameters' => array ('database' => 1))))",
            sentinel.port
        ),
        "",
    );
    let worker = app.start_worker(&[]);
    assert_eq!(
        listening(&worker),
        endpoints(&[master.port]),
        "{}",
        worker.log()
    );
    assert_eq!(
        worker.events("listening")[0]["channel"],
        "__keyevent@1__:expired"
    );

    // Refused (NOGOODSLAVE) until the sentinel has checked the replica's link.
    let started = Instant::now();
    wait_for("SENTINEL FAILOVER to be accepted", || {
        query::<String>(
            sentinel.port,
            redis::cmd("SENTINEL").arg("FAILOVER").arg("shop-master"),
        )
        .is_ok()
    });
    worker.wait_for_event("failover_followed", 1, WAIT);
    println!(
        "sentinel failover followed {:?} after SENTINEL FAILOVER",
        started.elapsed()
    );
    let followed = &worker.events("failover_followed")[0];
    println!("failover_followed took_ms {}", followed["took_ms"]);
    assert_eq!(followed["from"], format!("127.0.0.1:{}", master.port));
    assert_eq!(followed["to"], format!("127.0.0.1:{}", replica.port));
    assert!(followed["took_ms"].as_u64().is_some(), "{followed}");
    let change = &worker.events("topology_changed")[0];
    assert_eq!(change["kind"], "sentinel");
    assert_eq!(change["masters"], format!("127.0.0.1:{}", replica.port));

    // schedule writes to the new master, in the cache database.
    let output = app.run(&["schedule", "900001", "--ttl", "600"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: Option<String> = redis::cmd("GET")
        .arg(key(900_001))
        .query(&mut replica.conn(1))
        .expect("GET on the new master");
    assert_eq!(written.as_deref(), Some("900001"));
    // The new master's expiries cancel the orders.
    let orders = db.place_orders(&[product], 20).await;
    let mut conn = replica.conn(1);
    for id in &orders {
        common::setex(&mut conn, &key(*id), 1, &id.to_string());
    }
    wait_until(WAIT, "20 orders cancelled", || async {
        db.count_status(2).await == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_cancelled_once(&worker, &orders);
    assert_eq!(db.stock(product).await, 1000);
}
