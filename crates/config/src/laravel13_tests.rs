//! What Laravel 13 and PHP 8.5 changed, as `Settings` resolves it: the framework's own
//! defaults for an app without config files (hyphenated prefixes), the Redis connectors'
//! host and scheme rules (13.12) and TLS context forms (13.5), and the PDO attribute numbers of
//! a configuration cache written by PHP 8.5. The expected values are what Laravel 13.26 itself
//! resolved for the same files (booted on PHP 8.3, 8.4 and 8.5 at development time).

use std::path::Path;

use crate::error::ConfigError;
use crate::resolved::RedisEndpoint;
use crate::settings::{Overrides, Settings};

/// An app with `files` (path, text) and this `.env`; `ORDER_EXPIRE_PHP_VERSION` pins the PHP
/// unless the `.env` says otherwise.
fn load(files: &[(&str, &str)], env: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let pin = if env.contains("ORDER_EXPIRE_PHP_VERSION") {
        ""
    } else {
        "ORDER_EXPIRE_PHP_VERSION=8.3\n"
    };
    std::fs::write(dir.path().join(".env"), format!("{pin}{env}\n")).expect("write .env");
    Settings::load(&dir.path().join(".env"), &Overrides::new())
}

fn composer(major: u32) -> (&'static str, String) {
    (
        "composer.json",
        format!(r#"{{"require": {{"laravel/framework": "^{major}.0"}}}}"#),
    )
}

fn key_prefix(s: &Settings) -> String {
    format!("{}{}", s.keys.connection_prefix, s.keys.store_prefix)
}

/// No config files at all: the framework's own defaults of each major (the stock files up to
/// 10), prefixes included.
#[test]
fn an_app_without_config_files_gets_its_frameworks_defaults() {
    for (major, env, prefix, database) in [
        (
            8,
            "CACHE_DRIVER=redis",
            "laravel_database_laravel_cache:",
            1,
        ),
        (
            9,
            "CACHE_DRIVER=redis",
            "laravel_database_laravel_cache_:",
            1,
        ),
        (
            10,
            "CACHE_DRIVER=redis",
            "laravel_database_laravel_cache_:",
            1,
        ),
        (
            11,
            "CACHE_STORE=redis\nDB_CONNECTION=mysql",
            "laravel_database_laravel_cache_",
            1,
        ),
        (
            12,
            "CACHE_STORE=redis\nDB_CONNECTION=mysql",
            "laravel_database_laravel_cache_",
            1,
        ),
        (
            13,
            "CACHE_STORE=redis\nDB_CONNECTION=mysql",
            "laravel-database-laravel-cache-",
            1,
        ),
        (
            13,
            "CACHE_STORE=redis\nDB_CONNECTION=mysql\nAPP_NAME=\"My Shop\"",
            "my-shop-database-my-shop-cache-",
            1,
        ),
        (
            13,
            "CACHE_STORE=redis\nDB_CONNECTION=mariadb\nREDIS_CACHE_CONNECTION=default\nREDIS_DB=3",
            "laravel-database-laravel-cache-",
            3,
        ),
    ] {
        let (name, text) = composer(major);
        let s = load(&[(name, &text)], env).expect("resolves");
        assert_eq!(key_prefix(&s), prefix, "Laravel {major} with {env:?}");
        assert_eq!(s.redis.database, database, "Laravel {major} with {env:?}");
        assert_eq!(
            s.config_files,
            [format!("Laravel {major}'s stock config files")]
        );
    }
}

/// Laravel 13's framework config sets the MySQL SSL CA from `MYSQL_ATTR_SSL_CA` for an app
/// without `config/database.php`, as 11 and 12 do.
#[test]
fn the_frameworks_mysql_options_apply_without_a_database_file() {
    for major in [11, 12, 13] {
        let (name, text) = composer(major);
        let s = load(
            &[(name, &text)],
            "CACHE_STORE=redis\nDB_CONNECTION=mysql\nMYSQL_ATTR_SSL_CA=/etc/mysql/ca.pem",
        )
        .expect("resolves");
        let tls = s
            .database
            .mysql()
            .and_then(|m| m.tls.clone())
            .expect("TLS from the framework's options");
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/mysql/ca.pem")));
    }
}

fn database_php(cache_connection: &str) -> String {
    format!(
        "<?php return ['default' => 'mysql', 'connections' => ['mysql' => ['driver' => 'mysql', 'host' => '127.0.0.1', 'database' => 'shop', 'username' => 'shop']], 'redis' => ['client' => env('REDIS_CLIENT', 'phpredis'), 'options' => ['prefix' => ''], 'cache' => {cache_connection}]];"
    )
}

fn redis_app(
    major: u32,
    minor: u32,
    cache_connection: &str,
    env: &str,
) -> Result<Settings, ConfigError> {
    load(
        &[("config/database.php", &database_php(cache_connection))],
        &format!("CACHE_STORE=redis\nORDER_EXPIRE_LARAVEL_VERSION={major}.{minor}\n{env}"),
    )
}

/// PhpRedisConnector::formatHost and PredisConnector::formatHost (13.12): an empty host is
/// refused, and so is a `scheme://` host whose scheme is not the connection's; predis moves a
/// host's scheme into `scheme`.
#[test]
fn hosts_and_schemes_as_laravel_13_reads_them() {
    let message = |major, minor, conn: &str, env: &str| {
        redis_app(major, minor, conn, env)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    };
    let mismatch = "['host' => 'tls://cache.internal', 'port' => 6380, 'scheme' => 'tcp']";
    let m = message(13, 26, mismatch, "");
    assert!(
        m.contains("must match the connection's scheme `tcp`"),
        "{m}"
    );
    let m = message(13, 26, mismatch, "REDIS_CLIENT=predis");
    assert!(m.contains("Laravel refuses it"), "{m}");
    let m = message(12, 0, mismatch, "");
    assert!(
        m.contains("phpredis would be asked for tcp://tls://cache.internal"),
        "{m}"
    );
    // predis before 13.12: the host's tls:// wins.
    let s = redis_app(12, 0, mismatch, "REDIS_CLIENT=predis").expect("resolves");
    assert!(matches!(
        s.redis.endpoint,
        RedisEndpoint::Tls { port: 6380, .. }
    ));
    // The same scheme, whatever its case, is one connection.
    let s = redis_app(
        13,
        26,
        "['host' => 'tls://cache.internal', 'port' => 6380, 'scheme' => 'TLS']",
        "",
    )
    .expect("resolves");
    assert!(matches!(
        s.redis.endpoint,
        RedisEndpoint::Tls { port: 6380, .. }
    ));
    // predis 13.12+: `tcp://host` is host `host` over TCP.
    let s = redis_app(
        13,
        26,
        "['host' => 'tcp://cache.internal', 'port' => 6379]",
        "REDIS_CLIENT=predis",
    )
    .expect("resolves");
    assert_eq!(
        s.redis.endpoint,
        RedisEndpoint::Tcp {
            host: "cache.internal".into(),
            port: 6379
        }
    );
    for client in ["phpredis", "predis"] {
        let m = message(
            13,
            26,
            "['host' => '', 'port' => 6379]",
            &format!("REDIS_CLIENT={client}"),
        );
        assert!(m.contains("a host name is required"), "{client}: {m}");
    }
}

/// PhpRedisConnector::normalizeContext (13.5): a context without `stream` is read as the
/// stream options, or its `ssl` array; before 13.5 only `stream` counted.
#[test]
fn the_tls_context_forms_of_laravel_13_5() {
    let conn = |context: &str| {
        format!(
            "['scheme' => 'tls', 'host' => 'cache.internal', 'port' => 6380, 'context' => {context}]"
        )
    };
    for (context, ca) in [
        (
            "['stream' => ['cafile' => '/ca/stream.pem']]",
            "/ca/stream.pem",
        ),
        ("['ssl' => ['cafile' => '/ca/ssl.pem']]", "/ca/ssl.pem"),
        ("['cafile' => '/ca/flat.pem']", "/ca/flat.pem"),
    ] {
        let s = redis_app(13, 5, &conn(context), "").expect("resolves");
        assert_eq!(
            s.redis.tls.ca_file.as_deref(),
            Some(Path::new(ca)),
            "{context}"
        );
        let before = redis_app(13, 4, &conn(context), "").expect("resolves");
        let expected = context.contains("stream").then(|| Path::new(ca));
        assert_eq!(
            before.redis.tls.ca_file.as_deref(),
            expected,
            "13.4: {context}"
        );
    }
}

/// A configuration cache holds the attribute numbers of the PHP that wrote it: 1008 is the
/// SSL CA on PHP 8.5 and the client certificate before.
#[test]
fn a_config_cache_is_read_with_the_numbers_of_the_apps_php() {
    let cache = "<?php return array (
  'cache' => array ('default' => 'redis', 'prefix' => '', 'stores' => array ('redis' => array ('driver' => 'redis', 'connection' => 'cache'))),
  'database' => array (
    'default' => 'mysql',
    'connections' => array ('mysql' => array ('driver' => 'mysql', 'host' => 'db', 'database' => 'shop', 'username' => 'shop',
      'options' => array (1008 => '/etc/mysql/ca.pem'))),
    'redis' => array ('client' => 'phpredis', 'options' => array ('prefix' => ''), 'cache' => array ('host' => '127.0.0.1', 'port' => '6379', 'database' => '1')),
  ),
);
";
    let files = [("bootstrap/cache/config.php", cache)];
    let s = load(&files, "ORDER_EXPIRE_PHP_VERSION=8.5").expect("resolves");
    let tls = s.database.mysql().and_then(|m| m.tls.clone()).expect("TLS");
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/mysql/ca.pem")));
    assert_eq!(tls.client_cert, None);
    let s = load(&files, "ORDER_EXPIRE_PHP_VERSION=8.4").expect("resolves");
    let tls = s.database.mysql().and_then(|m| m.tls.clone()).expect("TLS");
    assert_eq!(tls.ca_file, None);
    assert_eq!(
        tls.client_cert.as_deref(),
        Some(Path::new("/etc/mysql/ca.pem"))
    );
    assert_eq!(s.php.text, "8.4");
}

/// The PHP version: the setting, else what composer.json pins or allows, else the lowest of
/// the Laravel version; a PHP older than the app runs on is not the app's.
#[test]
fn the_php_version_and_where_it_was_found() {
    let (name, text) = composer(13);
    let absent = "ORDER_EXPIRE_PHP=/nonexistent/php";
    let error = load(&[(name, &text)], &format!("CACHE_STORE=redis\n{absent}"))
        .map(|_| ())
        .expect_err("no such php")
        .to_string();
    assert!(
        error.starts_with("ORDER_EXPIRE_PHP=\"/nonexistent/php\""),
        "{error}"
    );
    let floor = load(
        &[(name, &text)],
        "CACHE_STORE=redis\nDB_CONNECTION=mysql\nORDER_EXPIRE_CONFIG_SOURCE=evaluator\nORDER_EXPIRE_PHP_VERSION=",
    )
    .expect("resolves");
    assert_eq!(
        (floor.php.id, floor.php.source.as_str()),
        (80300, "the lowest Laravel 13 runs on")
    );
    let pinned = r#"{"require": {"php": "^8.2", "laravel/framework": "^12.0"}, "config": {"platform": {"php": "8.4.3"}}}"#;
    let s = load(
        &[("composer.json", pinned)],
        "CACHE_STORE=redis\nDB_CONNECTION=mysql\nORDER_EXPIRE_CONFIG_SOURCE=evaluator\nORDER_EXPIRE_PHP_VERSION=",
    )
    .expect("resolves");
    assert_eq!(s.php.id, 80403);
    let bad = load(
        &[(name, &text)],
        "CACHE_STORE=redis\nORDER_EXPIRE_PHP_VERSION=7.4",
    )
    .map(|_| ())
    .expect_err("PHP 8 only")
    .to_string();
    assert!(bad.contains("expected a PHP 8 version"), "{bad}");
}
