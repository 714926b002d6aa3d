//! Start-up failures: each must end the process with a non-zero status and one line on stderr
//! that names the server (or file) and the cause.

mod common;

use std::time::Duration;

use common::{App, RedisServer, TestDb};

/// Runs the worker, expecting it to fail at start, and returns its single stderr line.
fn failing_start(app: &App) -> String {
    let output = app.run(&[]);
    assert!(!output.status.success(), "must exit non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_mysql_password_is_one_line_naming_host_and_cause() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_PORT={}\n{}",
        redis.port,
        db.env_lines_with_password("definitely-wrong")
    ));
    let line = failing_start(&app);
    assert!(
        line.contains(&db.host_port()),
        "names the MySQL host: {line}"
    );
    assert!(line.contains("Access denied"), "says why: {line}");
    assert!(line.contains("DB_PASSWORD"), "says what to fix: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_is_one_line_naming_host_and_cause() {
    let db = TestDb::create().await;
    let port = {
        let mut redis = RedisServer::start();
        let port = redis.port;
        redis.kill();
        port
    };
    let app = App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_PORT={port}\n{}",
        db.env_lines()
    ));
    let line = failing_start(&app);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")),
        "names the Redis host: {line}"
    );
    assert!(line.to_lowercase().contains("refused"), "says why: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_off_is_explained_and_configure_redis_fixes_it() {
    let redis = RedisServer::start_with(&[]);
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "");
    let line = failing_start(&app);
    assert!(line.contains("notify-keyspace-events"), "{line}");
    assert!(line.contains("--configure-redis"), "{line}");

    let mut worker = app.start_worker(&["--configure-redis"]);
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut redis.conn(0))
        .expect("CONFIG GET");
    assert!(
        flags[1].contains('E') && flags[1].contains('x'),
        "{flags:?}"
    );
    assert!(worker.stop(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_named() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_ORDERS_TABLE=shop_orders");
    let line = failing_start(&app);
    assert!(line.contains("`shop_orders` does not exist"), "{line}");
    assert!(line.contains(&db.name), "names the database: {line}");
}

#[test]
fn a_cache_driver_other_than_redis_is_refused() {
    let app = App::with_env("CACHE_DRIVER=file\n");
    let line = failing_start(&app);
    assert!(
        line.contains("CACHE_DRIVER") && line.contains(".env"),
        "{line}"
    );
}

#[test]
fn an_invalid_env_file_is_reported_as_laravel_would() {
    let app = App::with_env("CACHE_DRIVER=redis\nAPP_NAME=My Shop\n");
    let line = failing_start(&app);
    assert!(line.contains("invalid"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn where_config_is_forbidden_the_worker_warns_and_still_works() {
    // Managed services (ElastiCache, Heroku...) rename or forbid CONFIG.
    let redis = RedisServer::start_with(&[
        "--notify-keyspace-events",
        "Ex",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let db = TestDb::create().await;
    let (_, ids) = {
        let product = db.add_product("Tea", 10).await;
        (product, vec![db.place_order(product, 1).await])
    };
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=1");
    let mut worker = app.start_worker(&[]);
    assert_eq!(
        worker.count_event("notifications_unknown"),
        1,
        "{}",
        worker.log()
    );
    let mut conn = redis.conn(1);
    redis::cmd("SETEX")
        .arg(common::default_key(ids[0]))
        .arg(1)
        .arg(ids[0].to_string())
        .query::<()>(&mut conn)
        .expect("SETEX");
    common::wait_until(Duration::from_secs(30), "the order cancelled", || async {
        db.status(ids[0]).await == 2
    })
    .await;
    assert!(worker.stop(Duration::from_secs(10)).success());
}

/// The worker and `schedule` on a cluster or Sentinel config whose nodes do not answer: exit 1,
/// one line naming what was looked for and each node tried, no secret.
#[test]
fn a_cluster_or_sentinel_nobody_answers_stops_the_start_in_one_line() {
    use common::{CLUSTER_REDIS, SENTINEL_REDIS, config_cache_with_redis};

    for (looked_for, redis) in [
        ("the cluster's masters", CLUSTER_REDIS),
        (
            "the master `shop-master` through the sentinels",
            SENTINEL_REDIS,
        ),
    ] {
        let app = App::with_env("CACHE_DRIVER=file\nORDER_EXPIRE_TTL=60\n");
        config_cache_with_redis(&app, redis);
        for args in [&[][..], &["schedule", "7", "--ttl", "60"][..]] {
            let output = app.run(args);
            assert_eq!(output.status.code(), Some(1), "{looked_for} {args:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
            assert!(
                lines[0].contains(&format!("cannot find {looked_for}")),
                "{args:?}: {}",
                lines[0]
            );
            assert!(
                lines[0].contains("127.0.0.12:"),
                "every node tried: {}",
                lines[0]
            );
            assert!(!lines[0].contains("secret"), "{}", lines[0]);
        }
    }
}
