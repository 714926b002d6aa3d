//! `order-expire check`: the resolved settings, and what the servers say.

mod common;

use common::servers::DbFamily;
use common::{App, RedisServer, TestDb};

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json prints one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_settings_and_healthy_connections() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(
        &redis,
        &db,
        "APP_NAME=\"Mall Shop\"\nREDIS_CACHE_DB=2\nORDER_EXPIRE_TTL=900",
    );
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["source"], ".env");
    assert_eq!(
        report["config_files"],
        serde_json::json!(["Laravel 8's stock config files"]),
        "no config/ folder beside the .env"
    );
    assert_eq!(report["redis"]["port"], redis.port);
    assert_eq!(report["redis"]["database"], 2);
    assert_eq!(report["redis"]["prefix"], "mall_shop_database_");
    assert_eq!(report["cache"]["prefix"], "mall_shop_cache");
    assert_eq!(report["channel"], "__keyevent@2__:expired");
    assert_eq!(
        report["key_pattern"],
        "mall_shop_database_mall_shop_cache:ORDER_CONFIRM:*"
    );
    assert_eq!(report["db"]["database"], db.name.as_str());
    assert_eq!(report["order_ttl"], 900);
    assert_eq!(
        report["metrics_addr"],
        serde_json::Value::Null,
        "off by default"
    );
    assert_eq!(report["connections"]["redis"]["ok"], true);
    assert_eq!(report["connections"]["mysql"]["ok"], true, "{report:#}");

    let text = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{stdout}");
    assert!(
        stdout.contains("mall_shop_database_mall_shop_cache:ORDER_CONFIRM:*"),
        "{stdout}"
    );
}

/// Each server is named by its family and its own version: Valkey as Valkey (its
/// `valkey_version`, not the Redis version it reports for compatibility), MySQL apart from
/// MariaDB; with how the worker sets its sessions up there.
#[tokio::test(flavor = "multi_thread")]
async fn check_names_each_servers_family_and_own_version() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    let (cache, database) = (common::servers::redis(), common::servers::database());
    let found = &report["connections"]["redis"];
    assert_eq!(found["family"], cache.family.as_str(), "{found:#}");
    assert_eq!(found["version"], cache.version.as_str(), "{found:#}");
    let found = &report["connections"]["mysql"];
    let (family, title) = match database.family {
        DbFamily::MySql => ("mysql", "MySQL"),
        DbFamily::MariaDb => ("mariadb", "MariaDB"),
    };
    assert_eq!(found["family"], family, "{found:#}");
    assert_eq!(found["version"], database.version.as_str(), "{found:#}");
    let session = found["session"].as_str().unwrap_or_default();
    assert!(session.contains("READ COMMITTED"), "{found:#}");
    // MariaDB 11.6.2 and later turn snapshot isolation on by default.
    let snapshot = database.family == DbFamily::MariaDb
        && common::servers::version_at_least(&database.version, 11, 7);
    assert_eq!(
        session.contains("innodb_snapshot_isolation is ON"),
        snapshot,
        "{found:#}"
    );

    let text = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    let redis_title = if cache.family == "valkey" {
        "Valkey"
    } else {
        "Redis"
    };
    assert!(
        stdout.contains(&format!("ok ({redis_title} {}", cache.version)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ok ({title} {})", database.version)),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_prints_json_and_fails_when_a_server_is_wrong() {
    let redis = RedisServer::start_with(&[]); // notifications off
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "DB_PASSWORD=wrong-password\n");
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["connections"]["redis"]["ok"], false);
    assert!(
        report["connections"]["redis"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("notify-keyspace-events")
    );
    assert_eq!(report["connections"]["mysql"]["ok"], false);
    assert!(
        report["connections"]["mysql"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("Access denied")
    );
    assert_eq!(report["db"]["password"], "***", "secrets are masked");

    let offline = app.run(&["check", "--json", "--no-connect"]);
    assert!(offline.status.success());
    assert!(json(&offline)["connections"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_says_which_index_the_sweep_needs() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut db.conn().await,
        "DROP INDEX orders_status_created_at_index ON orders",
    )
    .await
    .expect("drop the index");
    let app = App::new(&redis, &db, "");
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert!(
        output.status.success(),
        "a missing index is a warning, not a failure: {report:#}"
    );
    let warnings = report["connections"]["mysql"]["warnings"].to_string();
    assert!(
        warnings.contains(
            "CREATE INDEX orders_status_created_at_index ON `orders` (`status`, `created_at`)"
        ),
        "{warnings}"
    );
}

#[test]
fn a_configuration_cache_is_read_instead_of_the_env_file() {
    let app = App::with_env("CACHE_DRIVER=file\nAPP_NAME=Ignored\n");
    let root = app.env_file().parent().expect("app root").to_path_buf();
    std::fs::create_dir_all(root.join("bootstrap/cache")).expect("mkdir");
    std::fs::write(
        root.join("bootstrap/cache/config.php"),
        "<?php return array (\n  'app' => array ('timezone' => 'Asia/Shanghai'),\n  'cache' => array ('default' => 'redis', 'stores' => array ('redis' => array ('driver' => 'redis', 'connection' => 'cache')), 'prefix' => 'shop_cache'),\n  'database' => array ('default' => 'mysql', 'connections' => array ('mysql' => array ('driver' => 'mysql', 'url' => NULL, 'host' => 'db.internal', 'port' => '3307', 'database' => 'shop', 'username' => 'shop', 'password' => 'secret', 'unix_socket' => '', 'prefix' => 'shop_')), 'redis' => array ('client' => 'phpredis', 'options' => array ('prefix' => 'shop_database_'), 'cache' => array ('url' => NULL, 'host' => 'cache.internal', 'password' => NULL, 'port' => '6380', 'database' => '2'))),\n);\n",
    )
    .expect("write");
    let output = app.run(&["check", "--json", "--no-connect"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["source"], "config-cache");
    assert!(
        report["config_files"][0]
            .as_str()
            .is_some_and(|f| f.ends_with("bootstrap/cache/config.php")),
        "{report:#}"
    );
    assert_eq!(
        report["key_pattern"],
        "shop_database_shop_cache:ORDER_CONFIRM:*"
    );
    assert_eq!(report["channel"], "__keyevent@2__:expired");
    assert_eq!(report["redis"]["host"], "cache.internal");
    assert_eq!(report["db"]["host"], "db.internal");
    assert_eq!(report["db"]["table_prefix"], "shop_");
    assert_eq!(report["db"]["orders_table"], "shop_orders");
    assert_eq!(report["timezone"], "Asia/Shanghai");
}

/// A Laravel 11 slim app: only `config/app.php` of its own. Laravel fills in the framework's
/// `cache.php` and `database.php` (CACHE_STORE, REDIS_CACHE_CONNECTION, DB_URL, no `:` after
/// the cache prefix); so must order-expire.
#[test]
fn a_laravel_11_slim_app_gets_the_frameworks_config() {
    let app = App::with_env(
        "CACHE_STORE=redis\nDB_CONNECTION=mariadb\nDB_URL=mysql://shop:pw@db.internal:3307/shop\nREDIS_CACHE_CONNECTION=default\nREDIS_DB=4\nAPP_NAME=\"Slim Shop\"\n",
    );
    let root = app.env_file().parent().expect("app root").to_path_buf();
    std::fs::create_dir_all(root.join("config")).expect("mkdir");
    std::fs::write(
        root.join("config/app.php"),
        "<?php\n\nreturn [\n    'name' => env('APP_NAME', 'Laravel'),\n    'timezone' => 'Asia/Shanghai',\n    'providers' => ServiceProvider::defaultProviders()->merge([])->toArray(),\n];\n",
    )
    .expect("write app.php");
    std::fs::write(
        root.join("composer.lock"),
        r#"{"packages": [{"name": "laravel/framework", "version": "v11.31.0"}]}"#,
    )
    .expect("write composer.lock");
    let output = app.run(&["check", "--json", "--no-connect"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["source"], "config");
    assert_eq!(report["laravel"]["major"], 11);
    assert_eq!(
        report["config_files"],
        serde_json::json!([
            root.join("config/app.php").display().to_string(),
            "Laravel 11's stock config files"
        ])
    );
    assert_eq!(report["timezone"], "Asia/Shanghai");
    assert_eq!(report["channel"], "__keyevent@4__:expired");
    assert_eq!(
        report["key_pattern"],
        "slim_shop_database_slim_shop_cache_ORDER_CONFIRM:*"
    );
    assert_eq!(report["db"]["host"], "db.internal");
    assert_eq!(report["db"]["port"], 3307);
    assert_eq!(report["db"]["database"], "shop");
}

/// `check --json --no-connect` on a cluster and a Sentinel config: the topology, its nodes,
/// db 0 on a cluster; both are followed by the worker, so no problem is reported.
#[test]
fn check_shows_the_redis_topology() {
    use common::{CLUSTER_REDIS, SENTINEL_REDIS, config_cache_with_redis};

    let standalone = App::with_env("CACHE_DRIVER=redis\nREDIS_HOST=cache.internal\n");
    let output = standalone.run(&["check", "--json", "--no-connect"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["redis"]["topology"], "standalone");
    assert_eq!(
        report["redis"]["nodes"],
        serde_json::json!(["cache.internal:6379"])
    );
    assert_eq!(report["problems"], serde_json::json!([]));

    let cluster = App::with_env("CACHE_DRIVER=file\n");
    config_cache_with_redis(&cluster, CLUSTER_REDIS);
    let output = cluster.run(&["check", "--json", "--no-connect"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["redis"]["topology"], "cluster");
    assert_eq!(
        report["redis"]["nodes"],
        serde_json::json!(["127.0.0.11:7000", "127.0.0.12:7001", "127.0.0.13:7002"])
    );
    assert_eq!(report["redis"]["database"], 0, "no SELECT on a cluster");
    assert_eq!(report["channel"], "__keyevent@0__:expired");
    assert_eq!(report["redis"]["password"], "***");
    assert_eq!(
        report["key_pattern"],
        "shop_database_shop_cache:ORDER_CONFIRM:*"
    );
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("cluster-secret"),
        "secrets never printed"
    );

    let sentinel = App::with_env("CACHE_DRIVER=file\n");
    config_cache_with_redis(&sentinel, SENTINEL_REDIS);
    let output = sentinel.run(&["check", "--json", "--no-connect"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["redis"]["topology"], "sentinel");
    assert_eq!(report["redis"]["service"], "shop-master");
    assert_eq!(
        report["redis"]["nodes"],
        serde_json::json!(["127.0.0.11:26379", "127.0.0.12:26379"])
    );
    assert_eq!(report["redis"]["database"], 2);
    assert_eq!(report["channel"], "__keyevent@2__:expired");
    assert_eq!(report["redis"]["client"], "predis");
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("sentinel-secret"),
        "secrets never printed"
    );

    // The text form names the topology too.
    let output = sentinel.run(&["check", "--no-connect"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("topology") && l.contains("shop-master")),
        "{text}"
    );
}

/// `check` beside the app's running worker (after a deploy, say) passes: the metrics port that
/// worker holds is a warning naming it, not a problem. `--no-connect` does not ask the endpoint,
/// so there the taken port still fails.
#[tokio::test(flavor = "multi_thread")]
async fn check_beside_the_running_worker_warns_of_its_metrics_port_and_passes() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let app = App::new(&redis, &db, &format!("ORDER_EXPIRE_METRICS_ADDR={addr}"));
    let worker = app.start_worker(&["--log-format", "json"]);
    assert_eq!(worker.metrics_addr(), addr);

    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&addr) && warnings.contains("running order-expire worker"),
        "{report:#}"
    );
    let offline = app.run(&["check", "--no-connect"]);
    assert_eq!(offline.status.code(), Some(1));
}

/// `check` fails exactly where the worker refuses to start: a missing outbox and a metrics port
/// already taken fail both; a queue Redis that is down fails neither (the jobs wait in the
/// outbox), and `check` says so on its own line.
#[tokio::test(flavor = "multi_thread")]
async fn check_fails_exactly_where_the_worker_refuses_to_start() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let dispatch = "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=redis";
    let mut verdicts = Vec::new();

    // The outbox is missing.
    let app = App::new(&redis, &db, dispatch);
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    let error = report["connections"]["mysql"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("order_expire_outbox"), "{report:#}");
    let worker = app.run(&[]);
    assert_eq!(
        (output.status.code(), worker.status.code()),
        (Some(1), Some(1))
    );
    verdicts.push(("outbox_missing", output.status.code(), worker.status.code()));

    mysql_async::prelude::Queryable::query_drop(
        &mut db.conn().await,
        "CREATE TABLE order_expire_outbox (id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         order_id bigint unsigned NOT NULL, payload longtext NOT NULL, created_at int unsigned NOT NULL)",
    )
    .await
    .expect("create the outbox");

    // The metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address");
    let app = App::new(
        &redis,
        &db,
        &format!("{dispatch}\nORDER_EXPIRE_METRICS_ADDR={addr}"),
    );
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert!(
        report["problems"].to_string().contains(&addr.to_string()),
        "{report:#}"
    );
    let offline = app.run(&["check", "--no-connect"]);
    let worker = app.run(&[]);
    assert_eq!(
        (
            output.status.code(),
            offline.status.code(),
            worker.status.code()
        ),
        (Some(1), Some(1), Some(1))
    );
    verdicts.push((
        "metrics_port_taken",
        output.status.code(),
        worker.status.code(),
    ));
    drop(taken);

    // The queue's Redis is down: both go on.
    let queue_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let app = App::new(&redis, &db, dispatch);
    common::queue_redis_at(&app, queue_port);
    let output = app.run(&["check", "--json"]);
    let report = json(&output);
    assert!(output.status.success(), "{report:#}");
    let queue = &report["connections"]["queue"];
    assert_eq!(queue["ok"], false, "{report:#}");
    let error = queue["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&queue_port.to_string()) && error.contains("queue connection `redis`"),
        "{error}"
    );
    assert!(!error.contains("REDIS_HOST"), "{error}");
    let text = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("queue       FAILED"), "{stdout}");
    let mut worker = app.start_worker(&[]);
    worker.stop(std::time::Duration::from_secs(20));
    verdicts.push(("queue_redis_down", output.status.code(), Some(0)));
    println!(
        "{}",
        serde_json::json!({
            "test": "check_matches_the_worker",
            "cases": verdicts.iter().map(|(case, check, worker)| serde_json::json!({
                "case": case, "check_exit": check, "worker_exit": worker,
            })).collect::<Vec<_>>(),
        })
    );
}
