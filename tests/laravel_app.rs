//! order-expire next to a real Laravel 8 app (`fixtures/laravel-app` on Debian's
//! php-laravel-framework): the schema comes from Laravel's migrations, the orders and their keys
//! from Eloquent and `Cache::store('redis')->put()`, and the settings are compared with what
//! Laravel itself resolves.

mod common;

use std::time::Duration;

use common::{App, LaravelApp, RedisServer, TestDb, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// Places `n` orders through the Laravel app; returns their ids.
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

async fn orders_placed_by_laravel_are_cancelled(extra: &str) {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    let laravel = LaravelApp::new(&App::env_text(redis.port, &db, extra));
    laravel.artisan(&["migrate", "--force"]);
    let mut worker = laravel.app.start_worker(&[]);

    let expiring = place(&laravel, 12, 1);
    let later = place(&laravel, 3, 600);
    wait_until(WAIT, "the 12 expired orders cancelled", || async {
        db.count_status(2).await == 12
    })
    .await;
    for id in &later {
        assert_eq!(db.status(*id).await, 0, "order {id} has not expired yet");
    }
    // 3 products with 1000 each; the 3 unexpired orders still hold one item each.
    let mut c = db.conn().await;
    let stock: Vec<i64> =
        mysql_async::prelude::Queryable::query(&mut c, "SELECT stock FROM products ORDER BY id")
            .await
            .expect("stock");
    assert_eq!(
        stock,
        vec![999, 999, 999],
        "stock back for exactly the cancelled orders"
    );
    assert_eq!(expiring.len(), 12);
    assert!(worker.stop(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_default_prefixes_are_cancelled() {
    orders_placed_by_laravel_are_cancelled("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_an_empty_redis_prefix_are_cancelled() {
    orders_placed_by_laravel_are_cancelled("REDIS_PREFIX=").await;
}

/// `.env` variants whose resolution must match Laravel's own, field by field.
const VARIANTS: &[&str] = &[
    "",
    "APP_NAME=\"My Shop\"",
    "APP_NAME='Mall 商城'",
    "APP_NAME=商城",
    "APP_NAME=\"Café Zürich\"",
    "APP_NAME=\"O'Reilly & Sons\"",
    "APP_NAME=\"A@B Store!\"",
    "APP_NAME=\"Привет мир\"",
    "APP_NAME=",
    "APP_NAME=null",
    "APP_NAME=true",
    "REDIS_PREFIX=",
    "REDIS_PREFIX=null",
    "REDIS_PREFIX=shop:",
    "REDIS_PREFIX=0",
    "REDIS_PREFIX=\"quoted_\"",
    "CACHE_PREFIX=",
    "CACHE_PREFIX=mall",
    "CACHE_PREFIX=a:b",
    "CACHE_PREFIX=0",
    "CACHE_PREFIX=null",
    "REDIS_PREFIX=\nCACHE_PREFIX=",
    "REDIS_CACHE_DB=3",
    "REDIS_CACHE_DB=01",
    "REDIS_CACHE_DB=null",
    "REDIS_CLIENT=predis",
    "REDIS_CLIENT=predis\nREDIS_PREFIX=0",
    "REDIS_CLIENT=predis\nREDIS_PREFIX=",
    "BASE=shop\nREDIS_PREFIX=${BASE}_db_\nCACHE_PREFIX=\"${BASE}_cache\"",
    "APP_NAME=\"My ${UNDEFINED} Shop\"",
    "DB_SOCKET=/run/mysqld/mysqld.sock",
    "DB_HOST=localhost",
    "DB_DATABASE=\"shop db\"\nDB_USERNAME='shop'",
    "DB_PORT=3307\nDB_HOST=db.internal",
    "REDIS_HOST=cache.internal\nREDIS_PORT=6380",
    "REDIS_HOST=tls://cache.internal",
    "REDIS_PASSWORD=\"p@ss#word\"\nAPP_NAME=x#comment",
    "REDIS_URL=redis://cache.internal:6380",
    "REDIS_URL=redis://cache.internal:6380/4",
    "REDIS_URL=redis://user:secret@cache.internal:6390/2\nREDIS_CACHE_DB=7",
    "REDIS_URL=rediss://:secret@cache.internal",
    "REDIS_URL=redis://cache.internal?database=5",
    "REDIS_URL=",
    "DATABASE_URL=mysql://shop:pw@db.internal:3307/shop_db",
    "DATABASE_URL=mysql2://u@db.internal/db2\nDB_PORT=3310",
];

/// Variants compared after `php artisan config:cache`; `true`: with a customised
/// config/database.php (a hard-coded Redis prefix and a table prefix).
const CACHED_VARIANTS: &[(&str, bool)] = &[
    ("", false),
    ("APP_NAME=\"My Shop\"\nREDIS_CACHE_DB=3", false),
    ("REDIS_PREFIX=\nCACHE_PREFIX=", false),
    ("REDIS_URL=redis://user:secret@cache.internal:6390/2", false),
    ("REDIS_CLIENT=predis\nREDIS_PREFIX=0", false),
    (
        "DATABASE_URL=mysql://shop:pw@db.internal:3307/shop_db",
        false,
    ),
    ("", true),
    ("APP_NAME=Mall\nDB_HOST=localhost", true),
];

/// The fields both sides report, as (pointer in Laravel's JSON, pointer in ours).
const FIELDS: &[(&str, &str)] = &[
    ("/redis/database", "/redis/database"),
    ("/redis/prefix", "/redis/prefix"),
    ("/redis/tls", "/redis/tls"),
    ("/cache/prefix", "/cache/prefix"),
    ("/channel", "/channel"),
    ("/key_pattern", "/key_pattern"),
    ("/db/port", "/db/port"),
    ("/db/database", "/db/database"),
    ("/db/username", "/db/username"),
    ("/db/table_prefix", "/db/table_prefix"),
    ("/timezone", "/timezone"),
];

#[test]
fn settings_resolve_as_in_laravel() {
    let mut differences = Vec::new();
    for variant in VARIANTS {
        let env = format!("CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n{variant}\n");
        let laravel = LaravelApp::new(&env);
        let theirs: serde_json::Value =
            serde_json::from_str(laravel.artisan(&["order-expire:config"]).trim())
                .expect("Laravel's JSON");
        let output = laravel.app.run(&["check", "--json", "--no-connect"]);
        assert!(
            output.status.success(),
            "{variant:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ours: serde_json::Value = serde_json::from_slice(&output.stdout).expect("our JSON");
        for (their_field, our_field) in FIELDS {
            if theirs.pointer(their_field) != ours.pointer(our_field) {
                differences.push(format!(
                    "{variant:?} {their_field}: laravel {:?}, ours {:?}",
                    theirs.pointer(their_field),
                    ours.pointer(our_field)
                ));
            }
        }
        // The Redis host and the MySQL host/socket, as each side spells them.
        let their_host = theirs
            .pointer("/redis/host")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let our_host = ours
            .pointer("/redis/host")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if their_host.trim_start_matches("tls://") != our_host {
            differences.push(format!(
                "{variant:?} redis host: laravel {their_host:?}, ours {our_host:?}"
            ));
        }
    }
    // The same after `php artisan config:cache`, with the .env changed afterwards (Laravel, and
    // so order-expire, must now ignore it), and with a customised config/database.php.
    for (variant, customise) in CACHED_VARIANTS {
        let env = format!("CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n{variant}\n");
        let laravel = LaravelApp::new(&env);
        if *customise {
            let path = laravel.dir().join("config/database.php");
            let text = std::fs::read_to_string(&path).expect("database.php");
            let text = text
                .replacen("'prefix' => '',", "'prefix' => 'shop_',", 2)
                .replace(
                    "env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_')",
                    "'hardcoded_'",
                );
            std::fs::write(&path, text).expect("customise database.php");
        }
        laravel.artisan(&["config:cache"]);
        std::fs::write(
            laravel.app.env_file(),
            format!("{env}REDIS_PREFIX=after_cache_\nCACHE_PREFIX=after\n"),
        )
        .expect("change .env");
        let theirs: serde_json::Value =
            serde_json::from_str(laravel.artisan(&["order-expire:config"]).trim())
                .expect("Laravel's JSON");
        let output = laravel.app.run(&["check", "--json", "--no-connect"]);
        assert!(
            output.status.success(),
            "{variant:?} cached: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ours: serde_json::Value = serde_json::from_slice(&output.stdout).expect("our JSON");
        assert_eq!(theirs["source"], "config-cache");
        assert_eq!(ours["source"], "config-cache");
        for (their_field, our_field) in FIELDS {
            if theirs.pointer(their_field) != ours.pointer(our_field) {
                differences.push(format!(
                    "{variant:?} (config:cache{}) {their_field}: laravel {:?}, ours {:?}",
                    if *customise {
                        ", customised database.php"
                    } else {
                        ""
                    },
                    theirs.pointer(their_field),
                    ours.pointer(our_field)
                ));
            }
        }
    }
    println!(
        "{} .env variants and {} config:cache variants compared with Laravel",
        VARIANTS.len(),
        CACHED_VARIANTS.len()
    );
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
