//! order-expire on a real Redis Cluster: three masters, each with a replica, started here
//! (`tests/common/cluster.rs`), and the fixture Laravel app configured for it as apps write it
//! (`redis.clusters.cache`, the password in the cluster options, phpredis). The app places its
//! orders through its own `RedisCluster` client, so the keys spread over every slot of every
//! master; some are paid before their key expires. In the middle of the burst one master is
//! failed over (`CLUSTER FAILOVER`) and slots holding pending keys are migrated to another
//! master. Every unpaid order must be cancelled exactly once, the stock exact, no paid order
//! touched; the lateness after the key deadline is printed.
//!
//! The first test shows, with Redis alone, what makes a cluster hard for a subscriber and checks
//! the harness: each expiry is published only by the master holding the key, by the promoted
//! replica after a failover, and by the target after a migration.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::burst::{self, PLAN, blocking, listening_ports, now_ms};
use common::cluster::{LARAVEL_CLUSTER_CONFIG, RedisCluster};
use common::redis_node::{ExpiredWatch, PASSWORD};
use common::{LaravelApp, TestDb};

/// When in the burst a master is failed over, and when slots are migrated.
const FAILOVER_AT: Duration = Duration::from_secs(7);
const MIGRATION_AT: Duration = Duration::from_secs(10);

/// The app's `.env`: the first master as the one seed, the cluster's password, a short sweep.
fn env(db: &TestDb, seed: u16) -> String {
    format!(
        "APP_NAME=Laravel\nAPP_ENV=testing\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={seed}\nREDIS_PASSWORD={PASSWORD}\n{}ORDER_EXPIRE_TTL={}\nORDER_EXPIRE_SWEEP_INTERVAL=5\n",
        db.env_lines(),
        PLAN.ttl
    )
}

/// A key whose slot the master on `master` serves.
fn key_on(cluster: &RedisCluster, master: u16, tag: &str) -> String {
    (0..10_000)
        .map(|i| format!("harness:{tag}:{i}"))
        .find(|key| cluster.master_of_key(key) == master)
        .unwrap_or_else(|| panic!("no key lands on master {master}"))
}

fn psetex(cluster: &RedisCluster, port: u16, key: &str, ms: u64) {
    redis::cmd("PSETEX")
        .arg(key)
        .arg(ms)
        .arg("1")
        .query::<()>(&mut cluster.conn(port))
        .unwrap_or_else(|e| panic!("PSETEX {key} on {port}: {e}"));
}

#[test]
fn each_expiry_is_published_only_by_the_master_holding_the_key() {
    let cluster = RedisCluster::start(3, 1);
    let watch = ExpiredWatch::start(&cluster.ports(), Some(PASSWORD), 0);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for (i, &master) in masters.iter().enumerate() {
        let key = key_on(&cluster, master, &format!("m{i}"));
        psetex(&cluster, master, &key, 300);
        assert_eq!(
            watch.wait_for(&key, Duration::from_secs(10)),
            vec![master],
            "{key} expired on master {master} only (replicas publish no expiry)"
        );
    }

    let (old, new) = cluster.failover(0);
    let key = key_on(&cluster, new, "after-failover");
    psetex(&cluster, new, &key, 300);
    assert_eq!(
        watch.wait_for(&key, Duration::from_secs(10)),
        vec![new],
        "after the failover, the promoted replica publishes; the old master {old} does not"
    );

    let (from, to) = (masters[1], masters[2]);
    let key = key_on(&cluster, from, "migrated");
    psetex(&cluster, from, &key, 1500);
    let moved = cluster.migrate_slot(cluster.slot_of(&key), from, to);
    assert!(moved.contains(&key), "the key moved with its slot");
    assert_eq!(
        watch.wait_for(&key, Duration::from_secs(10)),
        vec![to],
        "a migrated key expires on its new master"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_unpaid_order_is_cancelled_once_through_a_cluster_failover_and_a_slot_migration() {
    let cluster = blocking(|| RedisCluster::start(3, 1));
    let masters = cluster.masters();
    let db = TestDb::create().await;
    let laravel = LaravelApp::new(&env(&db, masters[0]));
    laravel.set_redis_config(LARAVEL_CLUSTER_CONFIG);
    let mut worker = laravel.app.start_worker(&[]);
    blocking(|| worker.wait_for_event("listening", masters.len(), Duration::from_secs(30)));
    let mut listening = listening_ports(&worker);
    listening.sort_unstable();
    let mut expected = masters.clone();
    expected.sort_unstable();
    assert_eq!(listening, expected, "one subscription per master");

    let started = Instant::now();
    let placing = burst::start(laravel.dir().to_path_buf(), db.pool.clone(), PLAN);

    // Failover once the first deadlines have passed, so that some orders expire before it and
    // most after; migrate a little later, while the keys written meanwhile are pending.
    tokio::time::sleep(FAILOVER_AT).await;
    for &master in &masters {
        assert!(
            blocking(|| cluster.dbsize(master)) > 0,
            "the app's keys land on every master, {master} too"
        );
    }
    let (old, new) = blocking(|| cluster.failover(0));
    let failover_done = now_ms();
    let failover_took = started.elapsed().saturating_sub(FAILOVER_AT);

    tokio::time::sleep(MIGRATION_AT.saturating_sub(started.elapsed())).await;
    let (from, to) = (masters[1], masters[2]);
    let slots = blocking(|| cluster.slots_with_pending_keys(from, 2000, 20));
    assert!(
        !slots.is_empty(),
        "master {from} holds pending keys to migrate"
    );
    let moved: Vec<String> = blocking(|| {
        slots
            .iter()
            .flat_map(|(slot, _)| cluster.migrate_slot(*slot, from, to))
            .collect()
    });
    // The orders behind the moved keys (`...:ORDER_CONFIRM:<id>`).
    let migrated: HashSet<u64> = moved
        .iter()
        .filter_map(|key| key.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(!migrated.is_empty(), "order keys were migrated: {moved:?}");
    let migration_done = now_ms();

    let (burst, audit) = burst::finish(placing, &db, &worker).await;
    burst::wait_listening_on(&worker, new).await;

    let all = burst::lateness(&worker, &burst, |_| true);
    let after_failover = burst::lateness(&worker, &burst, |o| o.deadline_ms >= failover_done);
    let after_migration = burst::lateness(&worker, &burst, |o| o.deadline_ms >= migration_done);
    let migrated_orders = burst::lateness(&worker, &burst, |o| migrated.contains(&o.id));
    println!(
        "cluster (3 masters + 3 replicas), CLUSTER FAILOVER of {old} to {new} at {:.0} s (settled {:.1} s later) and {} slots ({} keys) migrated {from} -> {to} mid-burst: \
         {} orders ({} paid, untouched), {} cancelled exactly once, stock exact, {} app batches failed; \
         lateness after the key deadline: all {all}; deadline after the failover {after_failover}; after the migration {after_migration}; the migrated keys' orders {migrated_orders}; \
         topology_changed x{}, listening x{}",
        FAILOVER_AT.as_secs_f64(),
        failover_took.as_secs_f64(),
        slots.len(),
        moved.len(),
        audit.orders,
        audit.paid,
        audit.cancelled,
        burst.failed_batches.len(),
        worker.count_event("topology_changed"),
        worker.count_event("listening"),
    );
    assert!(worker.stop(Duration::from_secs(15)).success());
}
