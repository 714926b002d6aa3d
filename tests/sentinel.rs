//! order-expire on a real Sentinel set-up: one master, one replica and three `redis-sentinel`
//! processes started here (`tests/common/sentinel.rs`), and the fixture Laravel app configured
//! for it with predis as Laravel's docs write it (the sentinels as the connection's entries,
//! `options.replication = 'sentinel'`, the service and the master's password and database in
//! `options.parameters`; the global prefix still applies). The app places its orders through
//! predis, which asks the sentinels for the master; some are paid before their key expires.
//!
//! In the middle of a burst the master is replaced: by `SENTINEL FAILOVER`, and in the second
//! test by killing it (SIGKILL). Keys written just before the switch may be lost (replication is
//! asynchronous, and a client may still write to the old master until the sentinels demote it),
//! and a batch may fail while predis looks for the new master; those orders have no key to
//! expire, and the worker's sweep (every 2 s here) must cancel them at their deadline. Every
//! unpaid order must be cancelled exactly once, the stock exact, no paid order touched; the
//! lateness after the key deadline is printed.
//!
//! The first test shows, with Redis alone, why a subscriber must follow the master, and checks
//! the harness: after a failover only the promoted replica publishes expiries.

mod common;

use std::time::{Duration, Instant};

use common::burst::{self, PLAN, blocking, listening_ports, now_ms};
use common::redis_node::{ExpiredWatch, PASSWORD};
use common::sentinel::{SERVICE, SentinelSet};
use common::{LaravelApp, RedisServer, TestDb, default_key, wait_until};

/// The fixture's `'redis'` array for Sentinel, with predis, as Laravel's docs write it.
const SENTINEL_CONFIG: &str = r"    'redis' => [
        'client' => env('REDIS_CLIENT', 'predis'),

        'options' => [
            'cluster' => env('REDIS_CLUSTER', 'redis'),
            'prefix' => env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_'),
        ],

        'default' => [
            env('REDIS_SENTINEL_1'),
            env('REDIS_SENTINEL_2'),
            env('REDIS_SENTINEL_3'),
            'options' => [
                'replication' => 'sentinel',
                'service' => env('REDIS_SENTINEL_SERVICE', 'mymaster'),
                'parameters' => [
                    'password' => env('REDIS_PASSWORD'),
                    'database' => env('REDIS_DB', '0'),
                ],
            ],
        ],

        'cache' => [
            env('REDIS_SENTINEL_1'),
            env('REDIS_SENTINEL_2'),
            env('REDIS_SENTINEL_3'),
            'options' => [
                'replication' => 'sentinel',
                'service' => env('REDIS_SENTINEL_SERVICE', 'mymaster'),
                'parameters' => [
                    'password' => env('REDIS_PASSWORD'),
                    'database' => env('REDIS_CACHE_DB', '1'),
                ],
            ],
        ],
    ],";

/// When in the burst the master is replaced: once the first deadlines have passed, so that some
/// orders expire before the switch and most after it.
const SWITCH_AT: Duration = Duration::from_secs(7);

/// The app's `.env`: predis, the three sentinels, the service, the password; a 2 s sweep.
fn env(db: &TestDb, sentinels: &[u16]) -> String {
    let sentinel_lines: String = sentinels
        .iter()
        .enumerate()
        .map(|(i, port)| format!("REDIS_SENTINEL_{}=tcp://127.0.0.1:{port}\n", i + 1))
        .collect();
    format!(
        "APP_NAME=Laravel\nAPP_ENV=testing\nCACHE_DRIVER=redis\nREDIS_CLIENT=predis\n{sentinel_lines}REDIS_SENTINEL_SERVICE={SERVICE}\nREDIS_PASSWORD={PASSWORD}\nREDIS_CACHE_DB=1\n{}ORDER_EXPIRE_TTL={}\nORDER_EXPIRE_SWEEP_INTERVAL=2\n",
        db.env_lines(),
        PLAN.ttl
    )
}

#[test]
fn after_a_failover_only_the_promoted_replica_publishes_expiries() {
    let set = SentinelSet::start(3);
    let (master, replica) = (set.master(), set.other_server(set.master()));
    let watch = ExpiredWatch::start(&[master, replica], Some(PASSWORD), 0);
    let psetex = |port: u16, key: &str| {
        redis::cmd("PSETEX")
            .arg(key)
            .arg(300)
            .arg("1")
            .query::<()>(&mut set.conn(port, 0))
            .unwrap_or_else(|e| panic!("PSETEX on {port}: {e}"));
    };

    psetex(master, "harness:before");
    assert_eq!(
        watch.wait_for("harness:before", Duration::from_secs(10)),
        vec![master],
        "the master publishes, its replica does not"
    );

    let (old, new) = set.failover();
    assert_eq!((old, new), (master, replica));
    // The sentinels cut every pub/sub client of the servers they reconfigure: subscribe again.
    drop(watch);
    let watch = ExpiredWatch::start(&[old, new], Some(PASSWORD), 0);
    psetex(new, "harness:after");
    assert_eq!(
        watch.wait_for("harness:after", Duration::from_secs(10)),
        vec![new],
        "after the failover the promoted replica publishes"
    );
}

/// How the master is replaced in the middle of the burst.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
    SentinelFailover,
    KillMaster,
}

async fn every_unpaid_order_is_cancelled_once_when_the_master_is_replaced(switch: Switch) {
    let mut set = blocking(|| SentinelSet::start(3));
    let first = set.master();
    let db = TestDb::create().await;
    let laravel = LaravelApp::new(&env(&db, &set.sentinel_ports()));
    laravel.set_redis_config(SENTINEL_CONFIG);
    let mut worker = laravel.app.start_worker(&[]);
    assert_eq!(
        listening_ports(&worker),
        vec![first],
        "the worker listens on the master the sentinels name"
    );

    let started = Instant::now();
    let placing = burst::start(laravel.dir().to_path_buf(), db.pool.clone(), PLAN);
    tokio::time::sleep(SWITCH_AT).await;
    let (old, new) = blocking(|| match switch {
        Switch::SentinelFailover => set.failover(),
        Switch::KillMaster => set.kill_old_master(),
    });
    let switched = now_ms();
    let switch_took = started.elapsed().saturating_sub(SWITCH_AT);
    assert_eq!(old, first);

    let (burst, audit) = burst::finish(placing, &db, &worker).await;
    burst::wait_listening_on(&worker, new).await;

    let followed_ms: Vec<String> = worker
        .events("failover_followed")
        .iter()
        .map(|e| e["took_ms"].to_string())
        .collect();
    let all = burst::lateness(&worker, &burst, |_| true);
    let after = burst::lateness(&worker, &burst, |o| o.deadline_ms >= switched);
    let how = match switch {
        Switch::SentinelFailover => "SENTINEL FAILOVER",
        Switch::KillMaster => "master killed (SIGKILL)",
    };
    println!(
        "sentinel (1 master + 1 replica + 3 sentinels), {how} at {:.0} s, new master {new} named by the sentinels {:.1} s later: \
         {} orders ({} paid, untouched), {} cancelled exactly once, stock exact, {} app batches failed; \
         lateness after the key deadline: all {all}; deadline after the switch {after}; \
         failover_followed took_ms {followed_ms:?}, sweep_found_overdue x{}",
        SWITCH_AT.as_secs_f64(),
        switch_took.as_secs_f64(),
        audit.orders,
        audit.paid,
        audit.cancelled,
        burst.failed_batches.len(),
        worker.count_event("sweep_found_overdue"),
    );
    assert!(worker.stop(Duration::from_secs(15)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_unpaid_order_is_cancelled_once_through_a_sentinel_failover() {
    every_unpaid_order_is_cancelled_once_when_the_master_is_replaced(Switch::SentinelFailover)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_unpaid_order_is_cancelled_once_when_the_master_is_killed() {
    every_unpaid_order_is_cancelled_once_when_the_master_is_replaced(Switch::KillMaster).await;
}

/// Anyone who can publish where the worker hears announcements (a sentinel listed before the
/// real ones that is a plain Redis here) can send `+switch-master` at will: 5,000 of them make at
/// most the throttle's ten `failover_announced` lines a minute, the worker stays on the master
/// the sentinels name, and it keeps cancelling.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bogus_failover_announcements_is_logged_ten_times_a_minute() {
    const BOGUS: usize = 5_000;
    let set = blocking(|| SentinelSet::start(3));
    let master = set.master();
    let loud = blocking(RedisServer::start);
    let mut sentinels = vec![loud.port];
    sentinels.extend(set.sentinel_ports());
    let db = TestDb::create().await;
    let laravel = LaravelApp::new(&env(&db, &sentinels));
    laravel.set_redis_config(SENTINEL_CONFIG);
    let mut worker = laravel.app.start_worker(&[]);
    assert_eq!(listening_ports(&worker), vec![master]);

    let mut publisher = loud.conn(0);
    let subscribers = |publisher: &mut redis::Connection| -> i64 {
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("+switch-master")
            .query::<(String, i64)>(publisher)
            .map(|(_, n)| n)
            .unwrap_or(0)
    };
    let started = Instant::now();
    while subscribers(&mut publisher) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker never subscribed to +switch-master on the first listed sentinel:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let payload = format!("{SERVICE} 127.0.0.1 1 127.0.0.1 2");
    let mut pipe = redis::pipe();
    for _ in 0..BOGUS {
        pipe.cmd("PUBLISH")
            .arg("+switch-master")
            .arg(&payload)
            .ignore();
    }
    pipe.query::<()>(&mut publisher)
        .expect("publish the announcements");

    // The worker keeps cancelling on the master the real sentinels name.
    let product = db.add_product("Tea", 10).await;
    let order = db.place_order(product, 1).await;
    let mut conn = set.conn(master, 1);
    redis::cmd("PSETEX")
        .arg(default_key(order))
        .arg(200)
        .arg(order.to_string())
        .query::<()>(&mut conn)
        .expect("write the order's key");
    wait_until(
        Duration::from_secs(30),
        "the order cancelled after the flood",
        || async { db.status(order).await == 2 },
    )
    .await;
    let announced = worker.count_event("failover_announced");
    println!(
        "{}",
        serde_json::json!({
            "fault": "bogus +switch-master flood",
            "published": BOGUS,
            "failover_announced_lines": announced,
            "listening_on": listening_ports(&worker),
        })
    );
    assert!(
        (1..=10).contains(&announced),
        "{announced} failover_announced lines for {BOGUS} announcements"
    );
    assert!(
        listening_ports(&worker).iter().all(|port| *port == master),
        "the worker followed a bogus announcement: {:?}",
        listening_ports(&worker)
    );
    assert!(worker.stop(Duration::from_secs(15)).success());
}
