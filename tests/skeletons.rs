//! Apps made from the Laravel skeleton, Laravel 8 to 13: order-expire's own fixtures of each
//! vintage of the skeleton's config files (`fixtures/skeletons/`, written with the constructs
//! those releases use), and apps without any config file (the framework's own defaults), each
//! with its `.env.example` set up as a user does: the cache store on Redis, the database on
//! MySQL. The expected keys are the ones Laravel itself computes for the same files (checked at
//! development time with Laravel 13.26 and 12.67 on PHP 8.3, 8.4 and 8.5, and Laravel 8 here);
//! `scripts/scan-skeletons` reads the real files of every release.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{App, LaravelApp, RedisServer, TestDb, wait_until};

/// Copies `fixtures/skeletons/<vintage>` (composer.json and config/) into `app`; `None` leaves
/// the app without config files, with only a composer.json requiring `framework`.
fn make(app: &App, vintage: Option<&str>, framework: &str) {
    let root = app.env_file().parent().expect("app root").to_path_buf();
    std::fs::write(
        root.join("composer.json"),
        format!(r#"{{"require": {{"laravel/framework": "{framework}"}}}}"#),
    )
    .expect("composer.json");
    let Some(vintage) = vintage else { return };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/skeletons")
        .join(vintage);
    std::fs::create_dir_all(root.join("config")).expect("config dir");
    for file in ["app", "cache", "database", "queue"] {
        let name = format!("config/{file}.php");
        std::fs::copy(fixture.join(&name), root.join(&name)).expect("copy config file");
    }
}

/// The vintage's `.env.example`, then `extra`, as the app's `.env`.
fn env_of(vintage: &str, extra: &str) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/skeletons")
        .join(vintage)
        .join("env.example");
    let example = std::fs::read_to_string(example).expect("env.example");
    format!("{example}\n{extra}\n")
}

/// `check --json --no-connect` of an app, which must succeed.
fn check(app: &App) -> serde_json::Value {
    let output = app.run(&["check", "--json", "--no-connect"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The setup a user adds to `.env.example`: both cache variable names, as the releases differ.
const ON_REDIS: &str = "CACHE_DRIVER=redis\nCACHE_STORE=redis\nDB_CONNECTION=mysql";

#[test]
fn every_vintage_of_the_skeletons_files_resolves_as_laravel_does() {
    let cases: &[(&str, &str, &str, &str, usize)] = &[
        // vintage, composer constraint, extra .env, key pattern, notes
        (
            "laravel8",
            "^8.75",
            "",
            "laravel_database_laravel_cache:ORDER_CONFIRM:*",
            0,
        ),
        (
            "laravel8",
            "^8.75",
            "APP_NAME=\"My Shop\"",
            "my_shop_database_my_shop_cache:ORDER_CONFIRM:*",
            0,
        ),
        (
            "laravel10",
            "^10.10",
            "",
            "laravel_database_laravel_cache_:ORDER_CONFIRM:*",
            2,
        ),
        (
            "laravel11",
            "^11.0",
            "",
            "laravel_database_ORDER_CONFIRM:*",
            0,
        ),
        (
            "laravel12.1",
            "^12.0",
            "",
            "laravel-database-laravel-cache-ORDER_CONFIRM:*",
            0,
        ),
        (
            "laravel13",
            "^12.0",
            "APP_NAME=\"Mall 商城\"",
            "mall-database-mall-cache-ORDER_CONFIRM:*",
            0,
        ),
        (
            "laravel13",
            "^13.0",
            "",
            "laravel-database-laravel-cache-ORDER_CONFIRM:*",
            0,
        ),
        // A Laravel 13 app upgraded from 12.0 keeps its files: their prefixes stay.
        (
            "laravel11",
            "^13.0",
            "CACHE_PREFIX=shop_",
            "laravel_database_shop_ORDER_CONFIRM:*",
            0,
        ),
    ];
    for (vintage, framework, extra, pattern, notes) in cases {
        let app = App::with_env(&env_of(vintage, &format!("{ON_REDIS}\n{extra}")));
        make(&app, Some(vintage), framework);
        let ours = check(&app);
        let label = format!("{vintage} on {framework} with {extra:?}");
        assert_eq!(ours["key_pattern"], *pattern, "{label}: {ours}");
        assert_eq!(ours["channel"], "__keyevent@1__:expired", "{label}");
        assert_eq!(ours["source"], "config", "{label}");
        assert_eq!(
            ours["notes"].as_array().map(Vec::len),
            Some(*notes),
            "{label}: {}",
            ours["notes"]
        );
        assert!(
            ours["laravel"]["source"] == "composer.json"
                && ours["laravel"]["version"] == *framework,
            "{label}: {}",
            ours["laravel"]
        );
    }
}

/// The skeleton's PDO line on each PHP the app may run: the CA file is the same attribute,
/// 1009 up to PHP 8.4 and 1008 on 8.5.
#[test]
fn the_mysql_ssl_ca_of_laravel_13_on_every_php() {
    for php in ["8.3", "8.4", "8.5"] {
        let app = App::with_env(&env_of(
            "laravel13",
            &format!(
                "{ON_REDIS}\nMYSQL_ATTR_SSL_CA=/etc/mysql/ca.pem\nORDER_EXPIRE_PHP_VERSION={php}"
            ),
        ));
        make(&app, Some("laravel13"), "^13.0");
        let ours = check(&app);
        assert_eq!(
            ours["db"]["tls"]["ca_file"], "/etc/mysql/ca.pem",
            "PHP {php}"
        );
        assert_eq!(ours["db"]["tls"]["client_cert"], serde_json::Value::Null);
        assert!(
            ours["php"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{php} (from ORDER_EXPIRE_PHP_VERSION"))),
            "{}",
            ours["php"]
        );
    }
}

/// An app without config files gets its framework's own defaults, `patterns` for the default
/// `APP_NAME` and for `My Shop`: one test per Laravel major.
fn without_config_files(major: u32, patterns: [&str; 2]) {
    for (name, pattern) in ["", "APP_NAME=\"My Shop\""].into_iter().zip(patterns) {
        let app = App::with_env(&format!("{ON_REDIS}\n{name}\n"));
        make(&app, None, &format!("^{major}.0"));
        let ours = check(&app);
        assert_eq!(ours["key_pattern"], pattern, "Laravel {major} {name:?}");
        assert_eq!(ours["source"], ".env");
        assert_eq!(
            ours["config_files"],
            serde_json::json!([format!("Laravel {major}'s stock config files")])
        );
    }
}

#[test]
fn laravel_8_without_config_files() {
    without_config_files(
        8,
        [
            "laravel_database_laravel_cache:ORDER_CONFIRM:*",
            "my_shop_database_my_shop_cache:ORDER_CONFIRM:*",
        ],
    );
}

#[test]
fn laravel_9_without_config_files() {
    without_config_files(
        9,
        [
            "laravel_database_laravel_cache_:ORDER_CONFIRM:*",
            "my_shop_database_my_shop_cache_:ORDER_CONFIRM:*",
        ],
    );
}

#[test]
fn laravel_10_without_config_files() {
    without_config_files(
        10,
        [
            "laravel_database_laravel_cache_:ORDER_CONFIRM:*",
            "my_shop_database_my_shop_cache_:ORDER_CONFIRM:*",
        ],
    );
}

#[test]
fn laravel_11_without_config_files() {
    without_config_files(
        11,
        [
            "laravel_database_laravel_cache_ORDER_CONFIRM:*",
            "my_shop_database_my_shop_cache_ORDER_CONFIRM:*",
        ],
    );
}

#[test]
fn laravel_12_without_config_files() {
    without_config_files(
        12,
        [
            "laravel_database_laravel_cache_ORDER_CONFIRM:*",
            "my_shop_database_my_shop_cache_ORDER_CONFIRM:*",
        ],
    );
}

#[test]
fn laravel_13_without_config_files() {
    without_config_files(
        13,
        [
            "laravel-database-laravel-cache-ORDER_CONFIRM:*",
            "my-shop-database-my-shop-cache-ORDER_CONFIRM:*",
        ],
    );
}

/// Places `n` orders through the Laravel 8 fixture (Eloquent and `Cache::store('redis')->put()`);
/// returns their ids.
fn place(laravel: &LaravelApp, n: usize, ttl: u64) -> Vec<u64> {
    let out = laravel.artisan(&["orders:place", &n.to_string(), &format!("--ttl={ttl}")]);
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).expect("orders:place prints JSON");
    json["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect()
}

/// Starts the worker on an app made from `vintage` (or none) on `framework` and waits until
/// the orders it places expire and are cancelled with their stock back. Laravel 12.11+ and 13
/// do not run on this host's PHP, so the orders are placed by the Laravel 8 fixture app on the
/// same Redis and database (its migrations make the tables, Eloquent the rows, its cache store
/// the keys): its prefixes are set so that its keys are exactly the ones the app's Laravel
/// writes, `key_prefix` + id (the connection prefix carries it all, the store prefix is empty,
/// as Laravel 8 would otherwise add a `:`).
async fn orders_expire(vintage: Option<&str>, framework: &str, key_prefix: &str) {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    let base = format!(
        "REDIS_PORT={}\n{}CACHE_DRIVER=redis\nCACHE_STORE=redis",
        redis.port,
        db.env_lines()
    );
    let env = match vintage {
        Some(v) => env_of(v, &base),
        None => format!("{base}\n"),
    };
    let app = App::with_env(&env);
    make(&app, vintage, framework);
    let ours = check(&app);
    assert_eq!(
        ours["key_pattern"],
        format!("{key_prefix}*"),
        "the worker listens for what Laravel writes"
    );
    let connection_prefix = key_prefix
        .strip_suffix("ORDER_CONFIRM:")
        .expect("a prefix of ORDER_CONFIRM keys");
    let placer = LaravelApp::new(&App::env_text(
        redis.port,
        &db,
        &format!("REDIS_PREFIX={connection_prefix}\nCACHE_PREFIX="),
    ));
    placer.artisan(&["migrate", "--force"]);
    let mut worker = app.start_worker(&[]);
    let expiring = place(&placer, 5, 1).len();
    let later = place(&placer, 2, 600);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*ORDER_CONFIRM:*")
        .query(&mut redis.conn(1))
        .expect("KEYS");
    for id in &later {
        assert!(
            keys.contains(&format!("{key_prefix}{id}")),
            "the placing app writes the keys the app's Laravel writes: {keys:?}"
        );
    }
    wait_until(
        Duration::from_secs(30),
        "the expired orders cancelled",
        || {
            let db = &db;
            async move { db.count_status(2).await == expiring }
        },
    )
    .await;
    for id in &later {
        assert_eq!(db.status(*id).await, 0, "order {id} has not expired");
    }
    // 3 products of 1000; the 2 unexpired orders still hold one item each.
    let mut stock = Vec::new();
    for product in 1..=3 {
        stock.push(db.stock(product).await);
    }
    stock.sort_unstable();
    assert_eq!(
        stock,
        vec![999, 999, 1000],
        "stock back for the 5 cancelled"
    );
    assert!(worker.stop(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_laravel_13_app_cancels_its_orders() {
    orders_expire(
        Some("laravel13"),
        "^13.0",
        "laravel-database-laravel-cache-ORDER_CONFIRM:",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_laravel_13_app_without_config_files_cancels_its_orders() {
    orders_expire(
        None,
        "^13.0",
        "laravel-database-laravel-cache-ORDER_CONFIRM:",
    )
    .await;
}

/// Skeleton v12.11.2 on Laravel 12: the same files as 13's, the framework's 12 defaults.
#[tokio::test(flavor = "multi_thread")]
async fn a_laravel_12_11_app_cancels_its_orders() {
    orders_expire(
        Some("laravel13"),
        "^12.0",
        "laravel-database-laravel-cache-ORDER_CONFIRM:",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_laravel_12_app_without_config_files_cancels_its_orders() {
    orders_expire(
        None,
        "^12.0",
        "laravel_database_laravel_cache_ORDER_CONFIRM:",
    )
    .await;
}
