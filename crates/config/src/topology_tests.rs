//! Tests of the Redis topology as `Settings` resolves it from an app's own
//! `config/database.php`: clusters, predis Sentinel, usernames per client and version.

use std::path::Path;

use crate::error::ConfigError;
use crate::resolved::{RedisEndpoint, RedisTopology};
use crate::settings::{Overrides, Settings};

const STOCK_APP: &str = include_str!("stock/laravel8/app.php");
const STOCK_CACHE: &str = include_str!("stock/laravel8/cache.php");
const STOCK_DATABASE: &str = include_str!("stock/laravel8/database.php");
const STOCK_QUEUE: &str = include_str!("stock/laravel8/queue.php");

/// The settings of an app whose `database.redis` array is `redis` (PHP), with `.env` `env`.
fn resolve(redis: &str, env: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let start = STOCK_DATABASE
        .find("'redis' => [")
        .expect("stock redis block");
    let end = STOCK_DATABASE.rfind("];").expect("end of the stock file");
    let database = format!(
        "{}'redis' => {redis},\n{}",
        &STOCK_DATABASE[..start],
        &STOCK_DATABASE[end..]
    );
    for (name, text) in [
        ("app.php", STOCK_APP),
        ("cache.php", STOCK_CACHE),
        ("database.php", database.as_str()),
        ("queue.php", STOCK_QUEUE),
    ] {
        std::fs::write(config.join(name), text).expect("write config");
    }
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, format!("CACHE_DRIVER=redis\n{env}\n")).expect("write .env");
    Settings::load(&env_file, &Overrides::new())
}

fn tcp(host: &str, port: u16) -> RedisEndpoint {
    RedisEndpoint::Tcp {
        host: host.into(),
        port,
    }
}

fn error(redis: &str, env: &str) -> String {
    match resolve(redis, env) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("expected an error, got {:?}", s.redis),
    }
}

const CLUSTER: &str = "[
    'client' => env('REDIS_CLIENT', 'phpredis'),
    'options' => ['cluster' => 'redis', 'prefix' => 'global_', 'password' => env('REDIS_PASSWORD')],
    'clusters' => [
        'options' => ['prefix' => 'clusters_'],
        'cache' => [
            ['host' => '10.0.0.1', 'port' => 7000, 'database' => 5, 'password' => 'node-secret'],
            ['host' => '10.0.0.2', 'port' => '7001'],
            'options' => ['prefix' => 'own_'],
        ],
    ],
]";

#[test]
fn a_cluster_is_used_when_no_plain_connection_has_the_name() {
    let s = resolve(CLUSTER, "REDIS_PASSWORD=opt-secret").expect("resolves");
    assert_eq!(
        s.redis.topology,
        RedisTopology::Cluster {
            seeds: vec![tcp("10.0.0.1", 7000), tcp("10.0.0.2", 7001)]
        }
    );
    assert_eq!(s.redis.endpoint, tcp("10.0.0.1", 7000));
    assert_eq!(
        s.redis.database, 0,
        "a node's database is ignored: no SELECT on a cluster"
    );
    // phpredis: the merged options give the password and the prefix (the cluster's own wins).
    assert_eq!(s.redis.password.as_deref(), Some("opt-secret"));
    assert_eq!(s.keys.connection_prefix, "own_");
}

#[test]
fn cluster_options_merge_global_then_clusters_then_own() {
    let without_own = CLUSTER.replace("'options' => ['prefix' => 'own_'],", "");
    let s = resolve(&without_own, "").expect("resolves");
    assert_eq!(s.keys.connection_prefix, "clusters_");
    assert_eq!(s.redis.password, None, "no password in the merged options");
    let only_global = without_own.replace("'options' => ['prefix' => 'clusters_'],", "");
    let s = resolve(&only_global, "").expect("resolves");
    assert_eq!(s.keys.connection_prefix, "global_");
}

#[test]
fn predis_takes_a_clusters_password_from_its_nodes() {
    let s = resolve(CLUSTER, "REDIS_CLIENT=predis\nREDIS_PASSWORD=opt-secret").expect("resolves");
    assert_eq!(s.redis.password.as_deref(), Some("node-secret"));
    assert_eq!(s.redis.database, 0);
    assert_eq!(s.keys.connection_prefix, "own_");
}

#[test]
fn a_plain_connection_wins_over_a_cluster_of_the_same_name() {
    let both = CLUSTER.replace(
        "'clusters' => [",
        "'cache' => ['host' => '10.9.9.9', 'port' => 6390, 'database' => 3],\n    'clusters' => [",
    );
    let s = resolve(&both, "").expect("resolves");
    assert_eq!(
        s.redis.topology,
        RedisTopology::Standalone(tcp("10.9.9.9", 6390))
    );
    assert_eq!(s.redis.database, 3);
}

#[test]
fn cluster_seeds_may_be_urls_and_tls() {
    let redis = "[
        'client' => 'phpredis',
        'clusters' => ['cache' => [
            ['url' => 'tls://10.0.0.1:7000'],
            ['host' => '10.0.0.2', 'port' => 7001, 'scheme' => 'tls'],
        ]],
    ]";
    let s = resolve(redis, "").expect("resolves");
    assert_eq!(
        s.redis.topology,
        RedisTopology::Cluster {
            seeds: vec![
                RedisEndpoint::Tls {
                    host: "10.0.0.1".into(),
                    port: 7000
                },
                RedisEndpoint::Tls {
                    host: "10.0.0.2".into(),
                    port: 7001
                },
            ]
        }
    );
}

/// phpredis hands the merged options' `context` to RedisCluster as its `ssl` options (no
/// `stream` level); predis reads the first node's `ssl` parameters.
#[test]
fn cluster_tls_options_are_read_where_each_client_reads_them() {
    let phpredis = "[
        'client' => 'phpredis',
        'options' => ['context' => ['cafile' => '/global.pem']],
        'clusters' => [
            'options' => ['context' => ['cafile' => '/clusters.pem', 'verify_peer' => false]],
            'cache' => [['host' => 'tls://10.0.0.1', 'port' => 7000]],
        ],
    ]";
    let tls = resolve(phpredis, "").expect("resolves").redis.tls;
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/clusters.pem")));
    assert!(!tls.verify_peer);
    assert_eq!(tls.setting, "database.redis.clusters.options.context");

    let predis = "[
        'client' => 'predis',
        'clusters' => ['cache' => [
            ['host' => '10.0.0.1', 'port' => 7000, 'scheme' => 'tls', 'ssl' => ['cafile' => '/node.pem']],
        ]],
    ]";
    let tls = resolve(predis, "").expect("resolves").redis.tls;
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/node.pem")));
    assert!(tls.verify_peer, "PHP's default");
    assert_eq!(tls.setting, "database.redis.clusters.cache.0.ssl");
}

const SENTINEL: &str = "[
    'client' => env('REDIS_CLIENT', 'predis'),
    'options' => ['prefix' => 'shop_'],
    'cache' => [
        env('REDIS_SENTINEL_1', 'tcp://10.0.0.1:26379'),
        env('REDIS_SENTINEL_2', '10.0.0.2:26380'),
        ['host' => '10.0.0.3'],
        'options' => [
            'replication' => 'sentinel',
            'service' => env('REDIS_SENTINEL_SERVICE', 'mymaster'),
            'parameters' => ['password' => env('REDIS_PASSWORD'), 'database' => env('REDIS_CACHE_DB', 2)],
        ],
    ],
]";

#[test]
fn a_predis_sentinel_connection_lists_sentinels_and_a_service() {
    let s = resolve(
        SENTINEL,
        "REDIS_PASSWORD=pw\nREDIS_SENTINEL_SERVICE=shop-master",
    )
    .expect("resolves");
    assert_eq!(
        s.redis.topology,
        RedisTopology::Sentinel {
            sentinels: vec![
                tcp("10.0.0.1", 26379),
                tcp("10.0.0.2", 26380),
                tcp("10.0.0.3", 6379)
            ],
            service: "shop-master".into(),
        }
    );
    assert_eq!(s.redis.password.as_deref(), Some("pw"));
    assert_eq!(s.redis.database, 2);
    assert_eq!(
        s.keys.connection_prefix, "shop_",
        "the global prefix still applies"
    );
}

#[test]
fn the_sentinel_service_defaults_to_mymaster_and_global_parameters_apply() {
    let redis = "[
        'client' => 'predis',
        'options' => ['replication' => 'sentinel', 'parameters' => ['database' => 4]],
        'cache' => ['tcp://10.0.0.1:26379'],
    ]";
    let s = resolve(redis, "").expect("resolves");
    match &s.redis.topology {
        RedisTopology::Sentinel { service, .. } => assert_eq!(service, "mymaster"),
        other => panic!("expected sentinel, got {other:?}"),
    }
    assert_eq!(s.redis.database, 4);
}

#[test]
fn sentinel_with_phpredis_or_the_namoshek_client_is_refused_by_name() {
    let e = error(SENTINEL, "REDIS_CLIENT=phpredis");
    assert!(e.contains("predis"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = error(SENTINEL, "REDIS_CLIENT=phpredis-sentinel");
    assert!(e.contains("namoshek/laravel-redis-sentinel"), "{e}");
    assert!(e.contains("REDIS_CLIENT"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn usernames_follow_the_client_and_the_version() {
    let url = "REDIS_URL=redis://shop:pw@10.0.0.5:6379";
    let s = resolve_stock(&format!("{url}\nREDIS_CLIENT=predis"));
    assert_eq!(
        s.redis.username.as_deref(),
        Some("shop"),
        "predis sends it on Laravel 8"
    );
    let s = resolve_stock(url);
    assert_eq!(
        s.redis.username, None,
        "phpredis sends only the password on Laravel 8"
    );
    let s = resolve_stock(&format!("{url}\nORDER_EXPIRE_LARAVEL_VERSION=9"));
    assert_eq!(
        s.redis.username.as_deref(),
        Some("shop"),
        "Laravel 9 sends it"
    );
}

fn resolve_stock(env: &str) -> Settings {
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, format!("CACHE_DRIVER=redis\n{env}\n")).expect("write .env");
    Settings::load(Path::new(&env_file), &Overrides::new()).expect("resolves")
}

#[test]
fn a_missing_connection_names_both_places_laravel_looks() {
    let e = error(
        "['client' => 'phpredis', 'default' => ['host' => 'h', 'port' => 1]]",
        "",
    );
    assert!(e.contains("database.redis.clusters.cache"), "{e}");
}

#[test]
fn a_bare_sentinel_host_is_refused_as_predis_would_misread_it() {
    let e = error(SENTINEL, "REDIS_SENTINEL_2=10.0.0.2");
    assert!(e.contains("database.redis.cache.1"), "{e}");
    assert!(e.contains("tcp://10.0.0.2:<port>"), "{e}");
    assert_eq!(e.lines().count(), 1);
}
