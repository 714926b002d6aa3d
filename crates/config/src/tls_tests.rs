//! Tests of the Redis TLS options as `Settings` resolves them from an app's
//! `config/database.php`, for phpredis (`context.stream`) and predis (`ssl`).

use std::path::Path;

use crate::error::ConfigError;
use crate::resolved::{RedisEndpoint, RedisSettings};
use crate::settings::{Overrides, Settings};

/// The Redis settings of an app whose `config/database.php` has the `cache` connection
/// `connection` (PHP), the client `client` and the global `options` (PHP).
fn redis(client: &str, connection: &str, options: &str) -> Result<RedisSettings, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(
        dir.path().join(".env"),
        "CACHE_DRIVER=redis\nORDER_EXPIRE_LARAVEL_VERSION=8.83\n",
    )
    .expect("write .env");
    std::fs::write(
        dir.path().join("config/database.php"),
        format!(
            "<?php\nreturn [\n'default' => 'mysql',\n'connections' => ['mysql' => ['driver' => 'mysql', 'host' => '127.0.0.1', 'port' => '3306', 'database' => 'shop', 'username' => 'shop', 'password' => '']],\n'redis' => ['client' => '{client}', 'options' => {options}, 'cache' => {connection}],\n];\n"
        ),
    )
    .expect("write database.php");
    Settings::load(&dir.path().join(".env"), &Overrides::new()).map(|s| s.redis)
}

fn error(client: &str, connection: &str) -> String {
    match redis(client, connection, "[]") {
        Err(e) => e.to_string(),
        Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

#[test]
fn phpredis_reads_the_stream_context_with_php_defaults() {
    let r = redis(
        "phpredis",
        "['scheme' => 'tls', 'host' => 'redis.internal', 'port' => 6380, 'database' => 1, 'context' => ['stream' => ['cafile' => '/etc/ssl/redis-ca.pem', 'local_cert' => 'certs/client.pem']]]",
        "[]",
    )
    .expect("resolves");
    assert!(
        matches!(r.endpoint, RedisEndpoint::Tls { ref host, port: 6380 } if host == "redis.internal")
    );
    assert_eq!(
        r.tls.ca_file.as_deref(),
        Some(Path::new("/etc/ssl/redis-ca.pem"))
    );
    let cert = r.tls.client_cert.expect("client certificate");
    assert!(cert.ends_with("certs/client.pem"), "{}", cert.display());
    assert_eq!(
        r.tls.client_key.as_ref(),
        Some(&cert),
        "the key is read from local_cert"
    );
    assert!(r.tls.verify_peer);
    assert_eq!(r.tls.setting, "database.redis.cache.context.stream");
}

#[test]
fn phpredis_takes_the_merged_options_context_first() {
    let r = redis(
        "phpredis",
        "['host' => 'tls://redis.internal', 'port' => 6380, 'context' => ['stream' => ['cafile' => '/own.pem']]]",
        "['context' => ['stream' => ['cafile' => '/global.pem', 'local_cert' => '/c.pem', 'local_pk' => '/k.pem', 'verify_peer' => false]]]",
    )
    .expect("resolves");
    assert_eq!(r.tls.ca_file.as_deref(), Some(Path::new("/global.pem")));
    assert_eq!(r.tls.client_key.as_deref(), Some(Path::new("/k.pem")));
    assert!(!r.tls.verify_peer);
    assert_eq!(r.tls.setting, "database.redis.options.context.stream");
}

#[test]
fn predis_reads_its_ssl_parameters_and_sends_the_url_username_on_laravel_8() {
    let r = redis(
        "predis",
        "['url' => 'rediss://worker:secret@redis.internal:6380', 'ssl' => ['cafile' => '/ca.pem', 'verify_peer' => 0], 'context' => ['stream' => ['cafile' => '/ignored.pem']]]",
        "[]",
    )
    .expect("resolves");
    assert!(
        matches!(r.endpoint, RedisEndpoint::Tls { .. }),
        "{:?}",
        r.endpoint
    );
    assert_eq!(r.tls.ca_file.as_deref(), Some(Path::new("/ca.pem")));
    assert!(!r.tls.verify_peer);
    assert_eq!(r.username.as_deref(), Some("worker"));
    assert_eq!(r.tls.setting, "database.redis.cache.ssl");
}

#[test]
fn phpredis_on_laravel_8_sends_no_username() {
    let r = redis(
        "phpredis",
        "['url' => 'rediss://worker:secret@redis.internal:6380']",
        "[]",
    )
    .expect("resolves");
    assert_eq!(r.username, None);
    assert_eq!(r.tls.ca_file, None, "the system's trust store");
    assert!(r.tls.verify_peer);
}

#[test]
fn unsupported_options_are_refused_naming_the_setting() {
    for (options, named, fix) in [
        (
            "'verify_peer_name' => false",
            "context.stream.verify_peer_name",
            "verify_peer",
        ),
        (
            "'capath' => '/etc/ssl/certs'",
            "context.stream.capath",
            "cafile",
        ),
        (
            "'passphrase' => 'Hunter2Passphrase'",
            "context.stream.passphrase",
            "local_pk",
        ),
    ] {
        let e = error(
            "phpredis",
            &format!(
                "['scheme' => 'tls', 'host' => 'h', 'port' => 6380, 'context' => ['stream' => [{options}]]]"
            ),
        );
        assert!(e.contains(named), "{e}");
        assert!(e.contains(fix), "{e}");
        assert!(!e.contains("Hunter2Passphrase"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn verify_peer_name_off_is_fine_without_verify_peer() {
    let r = redis(
        "phpredis",
        "['scheme' => 'tls', 'host' => 'h', 'port' => 6380, 'context' => ['stream' => ['verify_peer' => false, 'verify_peer_name' => false]]]",
        "[]",
    )
    .expect("resolves");
    assert!(!r.tls.verify_peer);
}

/// The MySQL settings' TLS of an app whose `mysql` connection has the PDO `options` (PHP).
fn mysql_tls(options: &str) -> Result<Option<crate::resolved::MysqlTls>, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(
        dir.path().join(".env"),
        "CACHE_DRIVER=redis\nORDER_EXPIRE_LARAVEL_VERSION=8.83\nMYSQL_ATTR_SSL_CA=/etc/mysql/ca.pem\n",
    )
    .expect("write .env");
    std::fs::write(
        dir.path().join("config/database.php"),
        format!(
            "<?php\nreturn [\n'default' => 'mysql',\n'connections' => ['mysql' => ['driver' => 'mysql', 'host' => 'db', 'port' => '3306', 'database' => 'shop', 'username' => 'shop', 'password' => '', 'options' => {options}]],\n'redis' => ['client' => 'phpredis', 'cache' => ['host' => '127.0.0.1', 'port' => 6379]],\n];\n"
        ),
    )
    .expect("write database.php");
    Settings::load(&dir.path().join(".env"), &Overrides::new())
        .map(|s| s.database.mysql().and_then(|m| m.tls.clone()))
}

#[test]
fn mysql_tls_comes_from_the_pdo_ssl_attributes_as_mysqlnd_reads_them() {
    // Laravel 8's stock option, fed by MYSQL_ATTR_SSL_CA.
    let tls = mysql_tls(
        "extension_loaded('pdo_mysql') ? array_filter([PDO::MYSQL_ATTR_SSL_CA => env('MYSQL_ATTR_SSL_CA')]) : []",
    )
    .expect("resolves")
    .expect("tls on");
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/mysql/ca.pem")));
    assert!(
        tls.verify_peer,
        "mysqlnd verifies once an SSL attribute is set"
    );
    assert_eq!(tls.client_cert, None);
    assert_eq!(tls.setting, "database.connections.mysql.options");

    let tls = mysql_tls(
        "[PDO::MYSQL_ATTR_SSL_CERT => '/c.pem', PDO::MYSQL_ATTR_SSL_KEY => '/k.pem', PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT => false]",
    )
    .expect("resolves")
    .expect("tls on");
    assert_eq!(tls.ca_file, None);
    assert_eq!(tls.client_cert.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(tls.client_key.as_deref(), Some(Path::new("/k.pem")));
    assert!(!tls.verify_peer);

    assert_eq!(mysql_tls("[]").expect("resolves"), None);
    assert_eq!(
        mysql_tls("array_filter([PDO::MYSQL_ATTR_SSL_CA => null])").expect("resolves"),
        None
    );
    let e = mysql_tls("[PDO::MYSQL_ATTR_SSL_CAPATH => '/etc/ssl/certs']")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("MYSQL_ATTR_SSL_CA"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
