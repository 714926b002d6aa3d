//! Regression fixtures of our own for every construct the Laravel skeleton's releases (v8.0.0 to
//! master, Laravel 13) and the framework's own config files (11 to 13) write in the files
//! order-expire reads (`app`, `cache`, `database`, `queue`), each evaluated as PHP does on the
//! PHP versions that matter (8.0 to 8.5). `scripts/scan-skeletons` runs the real files of every
//! release; these keep each construct working where that repository is not at hand.

use std::path::Path;

use super::environment::Environment;
use super::php_eval::{Context, evaluate_file};
use super::php_value::PhpValue;
use super::version::PhpVersion;

/// Evaluates `source` (a config file) with `env` on PHP `php`.
fn eval_on(source: &str, env: &str, php: &str) -> PhpValue {
    let env = Environment::parse(env, Box::new(|_| None)).expect("valid .env");
    let php = PhpVersion::new(php, "a test").expect("a version");
    let ctx = Context {
        env: &env,
        base_path: Path::new("/app"),
        php: &php,
    };
    evaluate_file(Path::new("/app/config/database.php"), source, &ctx)
        .expect("evaluates")
        .value
}

fn text(value: &PhpValue, path: &str) -> Option<String> {
    value.lookup(path).and_then(PhpValue::to_php_string)
}

/// One construct: where the releases write it, a file of our own that uses it, the `.env`,
/// and the values it must give (dotted path, PHP's value as text; `None`: null or unset).
struct Construct {
    used_by: &'static str,
    source: &'static str,
    env: &'static str,
    expect: &'static [(&'static str, Option<&'static str>)],
}

const CONSTRUCTS: &[Construct] = &[
    Construct {
        used_by: "every release: env() with and without a default",
        source: "<?php return ['a' => env('A'), 'b' => env('B', '6379'), 'c' => env('C', null)];",
        env: "A=x\nC=null",
        expect: &[("a", Some("x")), ("b", Some("6379")), ("c", None)],
    },
    Construct {
        used_by: "skeleton 8 to 12.0, framework 11 and 12: Str::slug(env(...), '_').'_database_'",
        source: "<?php use Illuminate\\Support\\Str; return ['p' => env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_'), 'c' => env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache')];",
        env: "APP_NAME=\"My Shop\"",
        expect: &[
            ("p", Some("my_shop_database_")),
            ("c", Some("my_shop_cache")),
        ],
    },
    Construct {
        used_by: "skeleton 12.1 and later, framework 13: Str::slug((string) env(...)).'-cache-'",
        source: "<?php use Illuminate\\Support\\Str; return ['c' => env('CACHE_PREFIX', Str::slug((string) env('APP_NAME', 'laravel')).'-cache-'), 'n' => Str::slug((string) env('UNSET_NAME')).'-database-'];",
        env: "APP_NAME=\"Mall 商城\"",
        expect: &[("c", Some("mall-cache-")), ("n", Some("-database-"))],
    },
    Construct {
        used_by: "skeleton 8 and later (app.debug), 11 and later (retry_after): (bool) and (int) casts",
        source: "<?php return ['debug' => (bool) env('APP_DEBUG', false), 'retry' => (int) env('DB_QUEUE_RETRY_AFTER', 90), 'from_env' => (int) env('N')];",
        env: "N=120",
        expect: &[
            ("debug", Some("")),
            ("retry", Some("90")),
            ("from_env", Some("120")),
        ],
    },
    Construct {
        used_by: "every release: storage_path() and database_path()",
        source: "<?php return ['s' => storage_path('framework/cache/data'), 'd' => env('DB_DATABASE', database_path('database.sqlite'))];",
        env: "",
        expect: &[
            ("s", Some("/app/storage/framework/cache/data")),
            ("d", Some("/app/database/database.sqlite")),
        ],
    },
    Construct {
        used_by: "skeleton 8 to 12.10, framework 11 to 12.39: PDO::MYSQL_ATTR_SSL_CA in array_filter",
        source: "<?php return ['options' => extension_loaded('pdo_mysql') ? array_filter([PDO::MYSQL_ATTR_SSL_CA => env('MYSQL_ATTR_SSL_CA')]) : [], 'none' => extension_loaded('pdo_mysql') ? array_filter([PDO::MYSQL_ATTR_SSL_CA => env('UNSET')]) : []];",
        env: "MYSQL_ATTR_SSL_CA=/etc/ca.pem",
        expect: &[("options.1009", Some("/etc/ca.pem")), ("none.1009", None)],
    },
    Construct {
        used_by: "skeleton 12.11 and later (Laravel 13), framework 12.40 to 13.7: PHP_VERSION_ID >= 80500 ? \\Pdo\\Mysql::ATTR_SSL_CA : \\PDO::MYSQL_ATTR_SSL_CA",
        source: "<?php return ['options' => array_filter([(PHP_VERSION_ID >= 80500 ? \\Pdo\\Mysql::ATTR_SSL_CA : \\PDO::MYSQL_ATTR_SSL_CA) => env('MYSQL_ATTR_SSL_CA'), (PHP_VERSION_ID >= 80500 ? Pdo\\Mysql::ATTR_SSL_CA : PDO::MYSQL_ATTR_SSL_CA) => env('MYSQL_ATTR_SSL_CA')])];",
        env: "MYSQL_ATTR_SSL_CA=/etc/ca.pem",
        expect: &[("options.1009", Some("/etc/ca.pem"))],
    },
    Construct {
        used_by: "framework 12.67 and 13.8 and later: use Pdo\\Mysql; Mysql::ATTR_SSL_CA",
        source: "<?php use Pdo\\Mysql; return ['options' => array_filter([Mysql::ATTR_SSL_CA => env('MYSQL_ATTR_SSL_CA')])];",
        env: "MYSQL_ATTR_SSL_CA=/etc/ca.pem",
        expect: &[("options.1009", Some("/etc/ca.pem"))],
    },
    Construct {
        used_by: "skeleton 11 and later (app.previous_keys): spread of array_filter(explode(...))",
        source: "<?php return ['previous_keys' => [...array_filter(explode(',', (string) env('APP_PREVIOUS_KEYS', '')))], 'none' => [...array_filter(explode(',', (string) env('UNSET', '')))]];",
        env: "APP_PREVIOUS_KEYS=a,b",
        expect: &[
            ("previous_keys.0", Some("a")),
            ("previous_keys.1", Some("b")),
            ("none.0", None),
        ],
    },
    Construct {
        used_by: "skeleton 8 and later: Foo::class in app.providers",
        source: "<?php return ['providers' => [Illuminate\\Auth\\AuthServiceProvider::class, App\\Providers\\AppServiceProvider::class]];",
        env: "",
        expect: &[
            ("providers.0", Some("Illuminate\\Auth\\AuthServiceProvider")),
            ("providers.1", Some("App\\Providers\\AppServiceProvider")),
        ],
    },
    Construct {
        used_by: "skeleton 12.4 and later, framework 13.26 (command_retries): integer env() defaults",
        source: "<?php return ['max_retries' => env('REDIS_MAX_RETRIES', 3), 'command_retries' => env('REDIS_COMMAND_RETRIES', 0), 'backoff' => env('REDIS_BACKOFF_ALGORITHM', 'decorrelated_jitter')];",
        env: "REDIS_COMMAND_RETRIES=2",
        expect: &[
            ("max_retries", Some("3")),
            ("command_retries", Some("2")),
            ("backoff", Some("decorrelated_jitter")),
        ],
    },
    Construct {
        used_by: "skeleton 12.11 (filesystems, sslmode), framework 13.17 (pgsql direct): rtrim(), array_filter of env()",
        source: "<?php return ['url' => rtrim(env('APP_URL', 'http://localhost'), '/').'/storage', 'sslmode' => env('DB_SSLMODE', 'prefer'), 'direct' => array_filter(['host' => env('DB_DIRECT_HOST'), 'port' => env('DB_DIRECT_PORT')])];",
        env: "APP_URL=https://shop.example/\nDB_DIRECT_PORT=6432",
        expect: &[
            ("url", Some("https://shop.example/storage")),
            ("sslmode", Some("prefer")),
            ("direct.port", Some("6432")),
            ("direct.host", None),
        ],
    },
];

#[test]
fn every_construct_the_releases_use_evaluates_as_in_php() {
    for construct in CONSTRUCTS {
        for php in ["8.0.30", "8.2.36", "8.3.33", "8.4.25"] {
            let value = eval_on(construct.source, construct.env, php);
            for (path, expected) in construct.expect {
                assert_eq!(
                    text(&value, path).as_deref(),
                    *expected,
                    "{} on PHP {php}: {path} in {value:?}",
                    construct.used_by
                );
            }
        }
    }
}

/// PHP 8.5 renumbered the MySQL attributes: the skeleton's line picks `\Pdo\Mysql` there, the
/// older branch elsewhere, and both are the same attribute, whichever number it has.
#[test]
fn the_ssl_ca_attribute_follows_the_php_version() {
    let skeleton = "<?php return ['options' => array_filter([(PHP_VERSION_ID >= 80500 ? \\Pdo\\Mysql::ATTR_SSL_CA : \\PDO::MYSQL_ATTR_SSL_CA) => env('MYSQL_ATTR_SSL_CA')]), 'branch' => PHP_VERSION_ID >= 80500 ? 'pdo\\\\mysql' : 'pdo', 'version' => PHP_VERSION];";
    for (php, key, branch) in [
        ("8.0.30", "1009", "pdo"),
        ("8.3.33", "1009", "pdo"),
        ("8.4.25", "1009", "pdo"),
        ("8.5.0", "1008", "pdo\\mysql"),
        ("8.5.10", "1008", "pdo\\mysql"),
    ] {
        let value = eval_on(skeleton, "MYSQL_ATTR_SSL_CA=ca.pem", php);
        assert_eq!(
            text(&value, &format!("options.{key}")).as_deref(),
            Some("ca.pem"),
            "PHP {php}: {value:?}"
        );
        assert_eq!(text(&value, "branch").as_deref(), Some(branch), "PHP {php}");
        assert_eq!(text(&value, "version").as_deref(), Some(php));
    }
}

/// What is PHP outside the subset, in the files of 9 and 10 (`Facade::defaultAliases()`,
/// `ServiceProvider::defaultProviders()`), stays unevaluated and is only named where it is.
#[test]
fn the_collection_calls_of_9_and_10_are_unevaluated_values_not_errors() {
    let source = "<?php use Illuminate\\Support\\Facades\\Facade; use Illuminate\\Support\\ServiceProvider; return ['timezone' => 'UTC', 'providers' => ServiceProvider::defaultProviders()->merge([App\\Providers\\AppServiceProvider::class])->toArray(), 'aliases' => Facade::defaultAliases()->merge([])->toArray()];";
    let value = eval_on(source, "", "8.2.0");
    assert_eq!(text(&value, "timezone").as_deref(), Some("UTC"));
    for key in ["providers", "aliases"] {
        assert!(
            matches!(value.lookup(key), Some(PhpValue::Unevaluated(_))),
            "{key}: {value:?}"
        );
    }
}
