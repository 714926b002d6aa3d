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

async fn orders_placed_by_laravel_are_cancelled(extra: &str, edits: &[Edit]) {
    orders_placed_by_laravel_are_cancelled_with(extra, &[], edits).await;
}

/// The same with `files` (path, text) added to the app first; returns what `check --json`
/// resolved.
async fn orders_placed_by_laravel_are_cancelled_with(
    extra: &str,
    files: &[(&str, &str)],
    edits: &[Edit],
) -> serde_json::Value {
    let redis = RedisServer::start();
    let db = TestDb::create_empty().await;
    let laravel = LaravelApp::new(&App::env_text(redis.port, &db, extra));
    add_files(&laravel, files);
    customise(&laravel, edits);
    let ours = our_view(&laravel, extra);
    laravel.artisan(&["migrate", "--force"]);
    // The table prefix the customised config/database.php may set.
    let config = laravel_view(&laravel);
    let prefix = config["db"]["table_prefix"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let session_tz = config["db"]["timezone"].as_str().map(str::to_string);
    let mut worker = laravel.app.start_worker(&[]);

    let expiring = place(&laravel, 12, 1);
    let later = place(&laravel, 3, 600);
    let mut c = db.conn().await;
    let count_cancelled = format!("SELECT COUNT(*) FROM `{prefix}orders` WHERE status = 2");
    wait_until(WAIT, "the 12 expired orders cancelled", || {
        let db = &db;
        let sql = count_cancelled.clone();
        async move {
            let mut c = db.conn().await;
            let n: Option<u64> = mysql_async::prelude::Queryable::query_first(&mut c, sql)
                .await
                .expect("count");
            n == Some(12)
        }
    })
    .await;
    for id in &later {
        let status: Option<i64> = mysql_async::prelude::Queryable::exec_first(
            &mut c,
            format!("SELECT status FROM `{prefix}orders` WHERE id = ?"),
            (id,),
        )
        .await
        .expect("status");
        assert_eq!(status, Some(0), "order {id} has not expired yet");
    }
    // 3 products with 1000 each; the 3 unexpired orders still hold one item each.
    let stock: Vec<i64> = mysql_async::prelude::Queryable::query(
        &mut c,
        format!("SELECT stock FROM `{prefix}products` ORDER BY id"),
    )
    .await
    .expect("stock");
    assert_eq!(
        stock,
        vec![999, 999, 999],
        "stock back for exactly the cancelled orders"
    );
    // updated_at as Eloquent writes it: now in the app time zone (UTC here), read back in a
    // session set up as Laravel sets it up (the connection's `timezone` key, if any).
    if let Some(tz) = &session_tz {
        mysql_async::prelude::Queryable::query_drop(&mut c, format!("SET time_zone = '{tz}'"))
            .await
            .expect("session time zone");
    }
    let skew: Option<i64> = mysql_async::prelude::Queryable::query_first(
        &mut c,
        format!(
            "SELECT MAX(ABS(TIMESTAMPDIFF(SECOND, updated_at, UTC_TIMESTAMP()))) FROM `{prefix}orders` WHERE status = 2"
        ),
    )
    .await
    .expect("updated_at");
    assert!(
        skew.is_some_and(|s| s < 120),
        "updated_at of cancelled orders is now in the app time zone, as Laravel reads it; off by {skew:?} s"
    );
    assert_eq!(expiring.len(), 12);
    assert!(worker.stop(Duration::from_secs(10)).success());
    ours
}

/// Writes `files` (path in the app, text) into the copied fixture app.
fn add_files(laravel: &LaravelApp, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = laravel.dir().join(path);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write file");
    }
}

/// An app helper (composer.json `autoload.files`, as apps declare `app/helpers.php`) that
/// computes the Redis prefix: PHP order-expire does not evaluate, so the app's own Laravel is
/// asked; the worker hears the keys Laravel writes, with the prefix Laravel computed.
#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_a_prefix_from_an_app_helper_are_cancelled() {
    let helpers = "<?php\n\nuse Illuminate\\Support\\Str;\n\nfunction shop_redis_prefix(): string\n{\n    return 'helper_'.Str::slug(env('APP_NAME', 'laravel'), '_').'_';\n}\n";
    let ours = orders_placed_by_laravel_are_cancelled_with(
        "APP_NAME=\"Mall Shop\"",
        &[("app/helpers.php", helpers)],
        &[
            (
                "config/database.php",
                REDIS_PREFIX_EXPR,
                "shop_redis_prefix()",
            ),
            (
                "composer.json",
                "\"psr-4\": {",
                "\"files\": [\"app/helpers.php\"],\n        \"psr-4\": {",
            ),
        ],
    )
    .await;
    assert_eq!(ours["source"], "laravel", "{ours}");
    assert_eq!(ours["redis"]["prefix"], "helper_mall_shop_", "{ours}");
    let because = ours["laravel_itself"].as_str().unwrap_or("");
    assert!(
        because.starts_with("config/database.php:")
            && because.contains("shop_redis_prefix()")
            && because.contains("database.redis.options.prefix"),
        "{because}"
    );
}

/// A package's class constant (a PSR-4 package under vendor/) as the cache prefix.
#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_a_cache_prefix_from_a_package_constant_are_cancelled() {
    let package = "<?php\n\nnamespace Acme\\ShopKeys;\n\nfinal class Prefixes\n{\n    public const CACHE = 'acme_orders';\n}\n";
    let ours = orders_placed_by_laravel_are_cancelled_with(
        "",
        &[("vendor/acme/shop-keys/src/Prefixes.php", package)],
        &[
            ("config/cache.php", CACHE_PREFIX_EXPR, "\\Acme\\ShopKeys\\Prefixes::CACHE"),
            (
                "composer.json",
                "\"App\\\\\": \"app/\"",
                "\"App\\\\\": \"app/\",\n            \"Acme\\\\ShopKeys\\\\\": \"vendor/acme/shop-keys/src/\"",
            ),
        ],
    )
    .await;
    assert_eq!(ours["source"], "laravel", "{ours}");
    assert_eq!(
        ours["key_pattern"], "laravel_database_acme_orders:ORDER_CONFIRM:*",
        "{ours}"
    );
}

/// The app's MySQL connection has a `timezone` key: Laravel sets the session time zone, so a
/// TIMESTAMP literal means something else than in a default session. order-expire must write
/// `updated_at` in the same session Eloquent would.
#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_on_a_connection_with_a_time_zone_get_eloquents_updated_at() {
    orders_placed_by_laravel_are_cancelled(
        "",
        &[(
            "config/database.php",
            "'strict' => true,",
            "'strict' => true,\n            'timezone' => '+08:00',",
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_default_prefixes_are_cancelled() {
    orders_placed_by_laravel_are_cancelled("", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_an_empty_redis_prefix_are_cancelled() {
    orders_placed_by_laravel_are_cancelled("REDIS_PREFIX=", &[]).await;
}

/// The app edited its config files: a hard-coded Redis prefix built from a variable, a table
/// prefix on its tables, and its own cache prefix. order-expire must read the files, not assume
/// the stock ones.
#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_with_a_customised_config_are_cancelled() {
    orders_placed_by_laravel_are_cancelled(
        "APP_NAME=\"Mall Shop\"",
        &[
            (
                "config/database.php",
                "use Illuminate\\Support\\Str;",
                "use Illuminate\\Support\\Str;\n\n$shop = Str::slug(env('APP_NAME', 'laravel'), '_');",
            ),
            (
                "config/database.php",
                REDIS_PREFIX_EXPR,
                "\"{$shop}_kv_\"",
            ),
            ("config/database.php", "'prefix' => '',", "'prefix' => 'shop_',"),
            ("config/cache.php", CACHE_PREFIX_EXPR, "'orders_cache'"),
        ],
    )
    .await;
}

/// An edit of a fixture file: (file, text, replacement); every occurrence is replaced.
type Edit = (&'static str, &'static str, &'static str);

/// The stock expressions the variants replace.
const REDIS_PREFIX_EXPR: &str =
    "env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_')";
const CACHE_PREFIX_EXPR: &str =
    "env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache')";

/// Applies `edits` to the copied fixture app; each must change its file.
fn customise(laravel: &LaravelApp, edits: &[Edit]) {
    for (file, from, to) in edits {
        let path = laravel.dir().join(file);
        let text = std::fs::read_to_string(&path).expect("read config file");
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replace(from, to)).expect("customise config file");
    }
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

/// Variants in which the app edited its config files (no configuration cache): order-expire
/// evaluates config/*.php as PHP would. Each: a label, the .env lines, the edits.
const CONFIG_VARIANTS: &[(&str, &str, &[Edit])] = &[
    (
        "hard-coded Redis prefix",
        "",
        &[("config/database.php", REDIS_PREFIX_EXPR, "'hardcoded_'")],
    ),
    (
        "table prefix",
        "",
        &[(
            "config/database.php",
            "'prefix' => '',",
            "'prefix' => 'shop_',",
        )],
    ),
    (
        "cache store on the default connection",
        "REDIS_DB=5\nREDIS_CACHE_DB=3",
        &[(
            "config/cache.php",
            "'connection' => 'cache',",
            "'connection' => 'default',",
        )],
    ),
    (
        "store-level prefix",
        "CACHE_PREFIX=ignored",
        &[(
            "config/cache.php",
            "'lock_connection' => 'default',",
            "'lock_connection' => 'default',\n            'prefix' => 'store_only',",
        )],
    ),
    (
        "hard-coded cache prefix",
        "CACHE_PREFIX=ignored",
        &[("config/cache.php", CACHE_PREFIX_EXPR, "'mall_cache'")],
    ),
    (
        "charset without a collation, session time zone",
        "",
        &[
            (
                "config/database.php",
                "'charset' => 'utf8mb4',",
                "'charset' => 'utf8',",
            ),
            (
                "config/database.php",
                "'collation' => 'utf8mb4_unicode_ci',",
                "'collation' => null,",
            ),
            (
                "config/database.php",
                "'strict' => true,",
                "'strict' => true,\n            'timezone' => '+08:00',",
            ),
        ],
    ),
    (
        "app time zone",
        "",
        &[(
            "config/app.php",
            "'timezone' => 'UTC',",
            "'timezone' => 'Asia/Shanghai',",
        )],
    ),
    (
        "renamed default connection",
        "DB_CONNECTION=main\nDB_DATABASE=shop",
        &[("config/database.php", "'mysql' => [", "'main' => [")],
    ),
    (
        "hard-coded REDIS_URL with a database",
        "REDIS_URL=redis://ignored:1/1",
        &[(
            "config/database.php",
            "'url' => env('REDIS_URL'),",
            "'url' => 'redis://cache.internal:6390/4',",
        )],
    ),
    (
        "variable and interpolation",
        "APP_NAME=\"Mall Shop\"",
        &[
            (
                "config/database.php",
                "use Illuminate\\Support\\Str;",
                "use Illuminate\\Support\\Str;\n\n$shop = Str::slug(env('APP_NAME', 'laravel'), '_');",
            ),
            ("config/database.php", REDIS_PREFIX_EXPR, "\"{$shop}_kv_\""),
        ],
    ),
    (
        "cast, arithmetic and ?:",
        "REDIS_CACHE_DB=2\nREDIS_PREFIX=",
        &[
            (
                "config/database.php",
                "'database' => env('REDIS_CACHE_DB', '1'),",
                "'database' => (int) env('REDIS_CACHE_DB', 1) + 2,",
            ),
            (
                "config/database.php",
                REDIS_PREFIX_EXPR,
                "env('REDIS_PREFIX') ?: 'fallback_'",
            ),
        ],
    ),
    (
        "?? and a ternary on the environment",
        "APP_ENV=production",
        &[(
            "config/cache.php",
            CACHE_PREFIX_EXPR,
            "env('APP_ENV') === 'production' ? (env('NOT_SET') ?? 'prod_cache') : 'dev_cache'",
        )],
    ),
    (
        "predis with a connection-level prefix",
        "REDIS_CLIENT=predis",
        &[(
            "config/database.php",
            "'database' => env('REDIS_CACHE_DB', '1'),",
            "'database' => env('REDIS_CACHE_DB', '1'),\n            'prefix' => 'conn_',",
        )],
    ),
    (
        "values order-expire does not need are outside its PHP",
        "",
        &[(
            "config/database.php",
            "'migrations' => 'migrations',",
            "'migrations' => collect(['migrations'])->first(),",
        )],
    ),
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
    ("/source", "/source"),
    ("/redis/database", "/redis/database"),
    ("/redis/prefix", "/redis/prefix"),
    ("/redis/tls", "/redis/tls"),
    ("/redis/client", "/redis/client"),
    ("/cache/prefix", "/cache/prefix"),
    ("/channel", "/channel"),
    ("/key_pattern", "/key_pattern"),
    ("/db/port", "/db/port"),
    ("/db/database", "/db/database"),
    ("/db/username", "/db/username"),
    ("/db/table_prefix", "/db/table_prefix"),
    ("/db/charset", "/db/charset"),
    ("/db/collation", "/db/collation"),
    ("/db/timezone", "/db/timezone"),
    ("/timezone", "/timezone"),
];

/// What Laravel itself resolves for the app (the fixture's `php artisan order-expire:config`).
fn laravel_view(laravel: &LaravelApp) -> serde_json::Value {
    serde_json::from_str(laravel.artisan(&["order-expire:config"]).trim()).expect("Laravel's JSON")
}

/// What order-expire resolves for the app (`check --json --no-connect`), which must succeed.
fn our_view(laravel: &LaravelApp, label: &str) -> serde_json::Value {
    our_view_with(laravel, label, &[])
}

/// The same with more `check` arguments.
fn our_view_with(laravel: &LaravelApp, label: &str, args: &[&str]) -> serde_json::Value {
    let output = laravel
        .app
        .run(&[&["check", "--json", "--no-connect"], args].concat());
    assert!(
        output.status.success(),
        "{label}: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).expect("our JSON")
}

/// Compares what Laravel resolves for the app with `check --json --compare`, which also asks
/// the app's own Laravel through order-expire's boot script and compares every resolved
/// setting with our reading; records differences of both.
fn compare(laravel: &LaravelApp, label: &str, differences: &mut Vec<String>) {
    let theirs = laravel_view(laravel);
    let ours = our_view_with(laravel, label, &["--compare"]);
    let comparison = &ours["comparison"];
    // Read from the app's own Laravel already, ours has nothing of its own to compare.
    let asked = ours["source"] == "laravel";
    if !asked
        && (comparison["laravel_php"]
            .as_str()
            .is_none_or(|php| !php.starts_with("8."))
            || comparison["differences"] != serde_json::json!([]))
    {
        differences.push(format!("{label} check --compare: {comparison}"));
    }
    for side in [&theirs, &ours] {
        assert!(
            side["key_pattern"].is_string() && side["channel"].is_string(),
            "{label}: both sides report the key pattern and channel: {side}"
        );
    }
    for (their_field, our_field) in FIELDS {
        if asked && *their_field == "/source" {
            continue;
        }
        if theirs.pointer(their_field) != ours.pointer(our_field) {
            differences.push(format!(
                "{label} {their_field}: laravel {:?}, ours {:?}",
                theirs.pointer(their_field),
                ours.pointer(our_field)
            ));
        }
    }
    // The Redis host, as each side spells it.
    let host = |v: &serde_json::Value| {
        v.pointer("/redis/host")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .trim_start_matches("tls://")
            .to_string()
    };
    if host(&theirs) != host(&ours) {
        differences.push(format!(
            "{label} redis host: laravel {:?}, ours {:?}",
            host(&theirs),
            host(&ours)
        ));
    }
}

#[test]
fn settings_resolve_as_in_laravel() {
    let mut differences = Vec::new();
    let base = "CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n";
    for variant in VARIANTS {
        let laravel = LaravelApp::new(&format!("{base}{variant}\n"));
        compare(&laravel, &format!("{variant:?}"), &mut differences);
    }
    // The app's own config files, edited.
    for (label, variant, edits) in CONFIG_VARIANTS {
        let laravel = LaravelApp::new(&format!("{base}{variant}\n"));
        customise(&laravel, edits);
        compare(
            &laravel,
            &format!("{label} ({variant:?})"),
            &mut differences,
        );
    }
    // The same after `php artisan config:cache`, with the .env changed afterwards (Laravel, and
    // so order-expire, must now ignore it), and with a customised config/database.php.
    for (variant, customised) in CACHED_VARIANTS {
        let env = format!("{base}{variant}\n");
        let laravel = LaravelApp::new(&env);
        if *customised {
            customise(
                &laravel,
                &[
                    (
                        "config/database.php",
                        "'prefix' => '',",
                        "'prefix' => 'shop_',",
                    ),
                    ("config/database.php", REDIS_PREFIX_EXPR, "'hardcoded_'"),
                ],
            );
        }
        laravel.artisan(&["config:cache"]);
        std::fs::write(
            laravel.app.env_file(),
            format!("{env}REDIS_PREFIX=after_cache_\nCACHE_PREFIX=after\n"),
        )
        .expect("change .env");
        let label = format!(
            "{variant:?} (config:cache{})",
            if *customised {
                ", customised database.php"
            } else {
                ""
            }
        );
        compare(&laravel, &label, &mut differences);
    }
    let total = VARIANTS.len() + CONFIG_VARIANTS.len() + CACHED_VARIANTS.len();
    println!(
        "{total} variants compared with Laravel: {} .env, {} edited config files, {} config:cache",
        VARIANTS.len(),
        CONFIG_VARIANTS.len(),
        CACHED_VARIANTS.len()
    );
    assert!(total >= 30);
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// `check --json --no-connect` with `env` as its whole process environment.
fn check_with_env(laravel: &LaravelApp, env: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-expire"));
    command
        .env_clear()
        .envs(env.iter().copied())
        .arg("--env")
        .arg(laravel.app.env_file())
        .args(["check", "--json", "--no-connect"]);
    common::run_bounded(command, Duration::from_secs(60))
}

/// The last line on stderr of a run that must fail.
fn failure(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().last().unwrap_or("").to_string()
}

/// A value order-expire needs, written in PHP it does not evaluate. Without PHP on the host,
/// `check` fails with one line naming the construct, the setting it feeds and both ways out;
/// with php and the app's vendor/autoload.php it asks the app's own Laravel and says so in one
/// line; `ORDER_EXPIRE_CONFIG_SOURCE` forces a source; after `php artisan config:cache` the
/// cache is read.
#[test]
fn a_needed_value_outside_the_evaluated_php_is_asked_of_laravel_itself() {
    let laravel = LaravelApp::new("CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n");
    customise(
        &laravel,
        &[(
            "config/database.php",
            REDIS_PREFIX_EXPR,
            "collect(['shop', 'kv'])->implode('_')",
        )],
    );
    let no_php = tempfile::tempdir().expect("an empty PATH");
    let line = failure(&check_with_env(&laravel, &[("PATH", no_php.path())]));
    for needle in [
        "config/database.php:",
        "`collect(['shop', 'kv'])->implode('_')`",
        "needed for database.redis.options.prefix",
        "there is no php on this host",
        "php artisan config:cache",
        "where php and the app's vendor/ are",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }

    let ours = our_view(&laravel, "with php");
    assert_eq!(
        (&ours["source"], &ours["redis"]["prefix"]),
        (&serde_json::json!("laravel"), &serde_json::json!("shop_kv")),
        "{ours}"
    );
    // `--env .env` in the app's folder, as a user types it: Laravel runs there too.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-expire"));
    command.env_clear().current_dir(laravel.dir()).args([
        "--env",
        ".env",
        "check",
        "--json",
        "--no-connect",
    ]);
    let relative = common::run_bounded(command, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&relative.stderr);
    assert!(relative.status.success(), "--env .env: {stderr}");
    let relative: serde_json::Value = serde_json::from_slice(&relative.stdout).expect("JSON");
    assert_eq!(relative["redis"]["prefix"], "shop_kv", "{relative}");
    let text = laravel.app.run(&["check", "--no-connect"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let config_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("config "))
        .unwrap_or("");
    assert!(
        config_line.contains("from Laravel itself (php 8.")
            && config_line.contains("because config/database.php:")
            && config_line.contains("collect(['shop', 'kv'])->implode('_')"),
        "{text}"
    );
    let mut differences = Vec::new();
    compare(&laravel, "asked of Laravel itself", &mut differences);
    assert!(differences.is_empty(), "{differences:?}");

    let env = std::fs::read_to_string(laravel.app.env_file()).expect("read .env");
    for (source, needle) in [
        (
            "evaluator",
            "ORDER_EXPIRE_CONFIG_SOURCE=evaluator keeps it from running PHP",
        ),
        ("config-cache", "bootstrap/cache/config.php does not exist"),
    ] {
        std::fs::write(
            laravel.app.env_file(),
            format!("{env}ORDER_EXPIRE_CONFIG_SOURCE={source}\n"),
        )
        .expect("write .env");
        let line = failure(&laravel.app.run(&["check", "--json", "--no-connect"]));
        assert!(line.contains(needle), "{source}: {line}");
    }
    std::fs::write(
        laravel.app.env_file(),
        format!("{env}ORDER_EXPIRE_CONFIG_SOURCE=laravel\n"),
    )
    .expect("write .env");
    let forced = our_view(&laravel, "forced");
    assert_eq!(
        forced["laravel_itself"],
        "ORDER_EXPIRE_CONFIG_SOURCE=laravel"
    );

    std::fs::write(laravel.app.env_file(), &env).expect("write .env");
    laravel.artisan(&["config:cache"]);
    let cached = our_view(&laravel, "after config:cache");
    assert_eq!(cached["source"], "config-cache");
    compare(&laravel, "after config:cache", &mut differences);
    assert!(differences.is_empty(), "{differences:?}");
}

/// A value in PHP order-expire does not evaluate that feeds no setting it reads never stops
/// the start: `check` passes and names it in a note.
#[test]
fn an_unneeded_value_outside_the_evaluated_php_is_a_note() {
    let laravel = LaravelApp::new("CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n");
    customise(
        &laravel,
        &[(
            "config/database.php",
            "'migrations' => 'migrations',",
            "'migrations' => collect(['migrations'])->first(),",
        )],
    );
    let ours = our_view(&laravel, "unneeded");
    assert_eq!(ours["source"], "config");
    let notes = ours["notes"].as_array().cloned().unwrap_or_default();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("config/database.php:")
                && n.contains("collect(['migrations'])->first()"))),
        "{notes:?}"
    );
}

/// `.env` variants for the queue a job per cancelled order goes to, with the edits to the app's
/// config files each needs, and whether `php artisan config:cache` runs first.
const QUEUE_VARIANTS: &[(&str, &[Edit], bool)] = &[
    ("QUEUE_CONNECTION=database", &[], false),
    ("QUEUE_CONNECTION=redis", &[], false),
    (
        "QUEUE_CONNECTION=redis\nREDIS_QUEUE=orders\nREDIS_PREFIX=shop_\nREDIS_DB=3",
        &[],
        false,
    ),
    ("QUEUE_CONNECTION=redis\nAPP_NAME=\"My Shop\"", &[], false),
    ("QUEUE_CONNECTION=redis\nREDIS_PREFIX=", &[], false),
    (
        "QUEUE_CONNECTION=redis\nREDIS_URL=redis://127.0.0.1:6380/4",
        &[],
        false,
    ),
    (
        "QUEUE_CONNECTION=database",
        &[(
            "config/database.php",
            "'prefix' => '',",
            "'prefix' => 'shop_',",
        )],
        false,
    ),
    (
        "QUEUE_CONNECTION=redis\nREDIS_QUEUE=orders\nREDIS_PREFIX=cached_\nREDIS_DB=2",
        &[],
        true,
    ),
    (
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_DISPATCH_QUEUE=expired",
        &[],
        false,
    ),
];

/// The queue order-expire writes a job to (`check --json`'s `dispatch`) is the one Laravel's own
/// QueueManager builds for the app (the fixture's `order-expire:config`): connection, driver,
/// queue name, and the table (with its prefix) or the Redis list key (with the connection's
/// prefix) and database.
#[test]
fn queue_settings_resolve_as_in_laravel() {
    let mut differences = Vec::new();
    let base =
        "CACHE_DRIVER=redis\nDB_CONNECTION=mysql\nORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\n";
    for (variant, edits, cached) in QUEUE_VARIANTS {
        let laravel = LaravelApp::new(&format!("{base}{variant}\n"));
        customise(&laravel, edits);
        if *cached {
            laravel.artisan(&["config:cache"]);
        }
        let theirs = laravel_view(&laravel);
        let ours = our_view(&laravel, &format!("{variant:?}"));
        let mut fields = vec!["connection", "driver", "table", "key", "redis_database"];
        // Laravel has no setting for another queue name than the connection's own: that
        // variant checks ours against the override instead.
        if variant.contains("ORDER_EXPIRE_DISPATCH_QUEUE") {
            assert_eq!(ours["dispatch"]["queue"], "expired", "{ours}");
        } else {
            fields.push("queue");
        }
        for field in fields {
            let their_value = theirs["queue"].get(field).cloned().unwrap_or_default();
            let our_value = ours["dispatch"].get(field).cloned().unwrap_or_default();
            if their_value != our_value {
                differences.push(format!(
                    "{variant:?} {field}: laravel {their_value}, ours {our_value}"
                ));
            }
        }
    }
    println!(
        "{} queue variants compared with Laravel",
        QUEUE_VARIANTS.len()
    );
    assert!(differences.is_empty(), "{differences:#?}");
}

/// The plain `cache` connection of the fixture's config/database.php, where the topology
/// variants put a cluster or a Sentinel connection (the plain one renamed).
const CACHE_CONNECTION: &str = "        'cache' => [\n            'url' => env('REDIS_URL'),";

/// A cluster for the cache connection, with options at all three levels and a node database.
const CLUSTER: &str = "        'clusters' => [
            'options' => ['prefix' => env('CLUSTER_PREFIX', 'clusters_'), 'password' => env('REDIS_PASSWORD')],
            'cache' => [
                ['host' => '127.0.0.11', 'port' => 7000, 'database' => 5, 'password' => env('REDIS_PASSWORD')],
                ['host' => 'tls://127.0.0.12', 'port' => '7001'],
                ['url' => 'redis://127.0.0.13:7002'],
                'options' => ['prefix' => env('OWN_PREFIX')],
            ],
        ],

        'cache_plain' => [\n            'url' => env('REDIS_URL'),";

/// A predis Sentinel connection as Laravel's docs and tests write it.
const SENTINEL: &str = "        'cache' => [
            env('REDIS_SENTINEL_1', 'tcp://127.0.0.11:26379'),
            env('REDIS_SENTINEL_2', 'tcp://127.0.0.12:26380'),
            ['host' => '127.0.0.13', 'port' => 26381],
            'options' => [
                'replication' => 'sentinel',
                'service' => env('REDIS_SENTINEL_SERVICE', 'mymaster'),
                'parameters' => ['password' => env('REDIS_PASSWORD'), 'database' => env('REDIS_CACHE_DB', 1)],
            ],
        ],

        'cache_plain' => [\n            'url' => env('REDIS_URL'),";

/// Clusters (phpredis and predis) and predis Sentinel: the topology, its nodes, the password,
/// database, prefix, channel and key pattern must be what Laravel's own connectors build.
#[test]
fn redis_topologies_resolve_as_in_laravel() {
    let base = "CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n";
    let cases: &[(&str, &str, &str)] = &[
        ("phpredis cluster", "REDIS_PASSWORD=secret", CLUSTER),
        (
            "phpredis cluster, own prefix",
            "OWN_PREFIX=own_\nREDIS_CACHE_DB=4",
            CLUSTER,
        ),
        (
            "phpredis cluster, no password, empty prefixes",
            "CLUSTER_PREFIX=\nREDIS_PREFIX=",
            CLUSTER,
        ),
        (
            "predis cluster",
            "REDIS_CLIENT=predis\nREDIS_PASSWORD=secret\nOWN_PREFIX=own_",
            CLUSTER,
        ),
        (
            "predis cluster, inherited prefix",
            "REDIS_CLIENT=predis",
            CLUSTER,
        ),
        (
            "predis sentinel",
            "REDIS_CLIENT=predis\nREDIS_PASSWORD=secret\nREDIS_CACHE_DB=3\nREDIS_SENTINEL_SERVICE=shop",
            SENTINEL,
        ),
        (
            "predis sentinel, defaults",
            "REDIS_CLIENT=predis\nREDIS_SENTINEL_2=127.0.0.12:26390",
            SENTINEL,
        ),
        (
            "predis sentinel, no prefix",
            "REDIS_CLIENT=predis\nREDIS_PREFIX=",
            SENTINEL,
        ),
    ];
    let mut differences = Vec::new();
    for (label, env, replacement) in cases {
        let laravel = LaravelApp::new(&format!("{base}{env}\n"));
        customise(
            &laravel,
            &[("config/database.php", CACHE_CONNECTION, replacement)],
        );
        let theirs = laravel_view(&laravel);
        let output = laravel.app.run(&["check", "--json", "--no-connect"]);
        let ours: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{label}: our JSON ({e}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert!(
            output.status.success(),
            "{label}: the worker follows it, so check passes: {ours:#}"
        );
        println!("{label}: laravel {}", theirs["topology"]);
        let password_set =
            |v: &serde_json::Value| serde_json::Value::Bool(v["redis"]["password"] == "***");
        let pairs = [
            (
                "kind",
                theirs["topology"]["kind"].clone(),
                ours["redis"]["topology"].clone(),
            ),
            (
                "nodes",
                theirs["topology"]["nodes"].clone(),
                ours["redis"]["nodes"].clone(),
            ),
            (
                "password",
                theirs["topology"]["password_set"].clone(),
                password_set(&ours),
            ),
            (
                "database",
                theirs["redis"]["database"].clone(),
                ours["redis"]["database"].clone(),
            ),
            (
                "prefix",
                theirs["redis"]["prefix"].clone(),
                ours["redis"]["prefix"].clone(),
            ),
            (
                "channel",
                theirs["channel"].clone(),
                ours["channel"].clone(),
            ),
            (
                "key_pattern",
                theirs["key_pattern"].clone(),
                ours["key_pattern"].clone(),
            ),
        ];
        for (field, t, o) in pairs {
            if t != o {
                differences.push(format!("{label} {field}: laravel {t}, ours {o}"));
            }
        }
        if theirs["topology"]["kind"] == "sentinel"
            && theirs["topology"]["service"] != ours["redis"]["service"]
        {
            differences.push(format!(
                "{label} service: laravel {}, ours {}",
                theirs["topology"]["service"], ours["redis"]["service"]
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// A `pgsql` app's connection resolves as Laravel resolves it, and `check --compare` (which asks
/// the app's own Laravel) finds no difference: the skeleton's connection, Laravel 8's
/// `DATABASE_URL`, a socket directory as host, and the same after `php artisan config:cache`.
#[test]
fn pgsql_settings_resolve_as_in_laravel() {
    let mut differences = Vec::new();
    let base = "CACHE_DRIVER=redis\nDB_CONNECTION=pgsql\n";
    let variants = [
        "",
        "DB_HOST=db.internal\nDB_PORT=5433\nDB_DATABASE=shop\nDB_USERNAME=shop\nDB_PASSWORD=pw",
        "DATABASE_URL=postgres://shop:pw@db.internal:5434/shop_db",
        "DB_HOST=/var/run/postgresql",
    ];
    for (i, variant) in variants.iter().enumerate() {
        let env = format!("{base}{variant}\n");
        let laravel = LaravelApp::new(&env);
        let mut label = format!("{variant:?}");
        // The last one also after config:cache, the .env changed afterwards.
        if i + 1 == variants.len() {
            laravel.artisan(&["config:cache"]);
            std::fs::write(laravel.app.env_file(), format!("{env}DB_PORT=6000\n"))
                .expect("change .env");
            label.push_str(" (config:cache)");
        }
        compare(&laravel, &label, &mut differences);
        let (theirs, ours) = (laravel_view(&laravel), our_view(&laravel, &label));
        assert_eq!(ours["db"]["driver"], "pgsql", "{label}: {ours}");
        assert!(theirs["db"]["host"].is_string(), "{label}: {theirs}");
        assert!(theirs["db"]["port"].is_u64(), "{label}: {theirs}");
        for field in ["/db/connection", "/db/host"] {
            let ours_field = if field == "/db/connection" {
                "/db/driver"
            } else {
                field
            };
            if theirs.pointer(field) != ours.pointer(ours_field) {
                differences.push(format!(
                    "{label} {field}: laravel {:?}, ours {:?}",
                    theirs.pointer(field),
                    ours.pointer(ours_field)
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
