//! Tests of the `pgsql` connection as `Settings` resolves it, on the stock files of each Laravel
//! major and on an app's own `config/database.php` (PostgresConnector's keys).

use std::path::{Path, PathBuf};

use crate::environment::Environment;
use crate::pgsql::{PgsqlSettings, SslMode};
use crate::settings::{Overrides, Settings};
use crate::version::LaravelVersion;

fn stock(env: &str, major: &str) -> Result<PgsqlSettings, String> {
    let env = Environment::parse(env, Box::new(|_| None)).expect("valid .env");
    let version = LaravelVersion::given(major);
    Settings::resolve_for(Path::new("/app/.env"), &env, &Overrides::new(), version)
        .map_err(|e| e.to_string())
        .map(|s| s.database.pgsql().cloned().expect("a pgsql connection"))
}

/// An app whose `config/database.php` has the `pgsql` connection `connection` (PHP).
fn app(connection: &str, laravel: &str) -> Result<PgsqlSettings, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(
        dir.path().join(".env"),
        format!("CACHE_DRIVER=redis\nORDER_EXPIRE_LARAVEL_VERSION={laravel}\nDB_PASSWORD=s3cret\n"),
    )
    .expect("write .env");
    std::fs::write(
        dir.path().join("config/database.php"),
        format!("<?php\nreturn [\n'default' => 'pgsql',\n'connections' => ['pgsql' => {connection}],\n'redis' => ['client' => 'phpredis', 'cache' => ['host' => '127.0.0.1', 'port' => '6379', 'database' => '1']],\n];\n"),
    )
    .expect("write database.php");
    Settings::load(&dir.path().join(".env"), &Overrides::new())
        .map_err(|e| e.to_string())
        .map(|s| s.database.pgsql().cloned().expect("a pgsql connection"))
}

#[test]
fn the_laravel_8_skeleton_connection_with_its_schema() {
    let p = stock(
        "CACHE_DRIVER=redis\nDB_CONNECTION=pgsql\nDB_DATABASE=shop\nDB_USERNAME=shop\nDB_PASSWORD=pw",
        "8",
    )
    .expect("resolves");
    assert_eq!(p.endpoint(), "127.0.0.1:5432");
    assert_eq!((p.database.as_str(), p.username.as_str()), ("shop", "shop"));
    assert_eq!(p.tls.mode, SslMode::Prefer);
    assert_eq!(
        p.session.statements(),
        vec!["set names 'utf8'", "set search_path to \"public\""]
    );
}

#[test]
fn search_path_from_laravel_9_and_the_url_of_laravel_11() {
    for major in ["9", "10"] {
        let p = stock("CACHE_DRIVER=redis\nDB_CONNECTION=pgsql", major).expect("resolves");
        assert_eq!(p.session.search_path, vec!["public"], "{major}");
    }
    let p = stock(
        "CACHE_STORE=redis\nDB_CONNECTION=pgsql\nDB_URL=postgres://app:p%40ss@db.internal:6432/shop?sslmode=require",
        "11",
    )
    .expect("resolves");
    assert_eq!(p.endpoint(), "db.internal:6432");
    assert_eq!(
        (
            p.database.as_str(),
            p.username.as_str(),
            p.password.as_str()
        ),
        ("shop", "app", "p@ss")
    );
    assert_eq!(p.tls.mode, SslMode::Require);
    assert!(!format!("{p:?}").contains("p@ss"));
}

#[test]
fn laravel_9_splits_a_search_path_and_laravel_8_quotes_the_schema_whole() {
    let p = app(
        "['driver' => 'pgsql', 'host' => 'h', 'database' => 'd', 'username' => 'u', 'search_path' => 'shop, \"public\"']",
        "9.52",
    )
    .expect("resolves");
    assert_eq!(p.session.search_path, vec!["shop", "public"]);
    let p = app(
        "['driver' => 'pgsql', 'host' => 'h', 'database' => 'd', 'username' => 'u', 'schema' => ['shop', 'public']]",
        "8.83",
    )
    .expect("resolves");
    assert_eq!(p.session.search_path, vec!["shop", "public"]);
    let refused = app(
        "['driver' => 'pgsql', 'host' => 'h', 'database' => 'd', 'username' => 'u', 'schema' => 'a\"; drop']",
        "8.83",
    )
    .expect_err("a quote in a schema");
    assert!(refused.contains("schema"), "{refused}");
}

#[test]
fn a_socket_directory_the_write_side_and_tls_files() {
    let p = app(
        "['driver' => 'pgsql', 'host' => '/var/run/postgresql', 'port' => '5433', 'database' => 'd', 'username' => 'u', 'password' => env('DB_PASSWORD')]",
        "8.83",
    )
    .expect("resolves");
    assert_eq!(p.endpoint(), "unix:/var/run/postgresql/.s.PGSQL.5433");
    assert_eq!(p.socket_dir(), Some(PathBuf::from("/var/run/postgresql")));
    assert_eq!(p.password, "s3cret");
    let p = app(
        "['driver' => 'pgsql', 'read' => ['host' => ['r1']], 'write' => ['host' => ['w1', 'w2']], 'database' => 'd', 'username' => 'u', 'sslmode' => 'verify-full', 'sslrootcert' => 'certs/ca.pem', 'sslcert' => '/etc/c.pem', 'sslkey' => '/etc/k.pem', 'timezone' => 'Asia/Shanghai', 'application_name' => 'shop']",
        "10.48",
    )
    .expect("resolves");
    assert_eq!(p.host, "w1");
    assert_eq!(p.tls.mode, SslMode::VerifyFull);
    assert!(
        p.tls
            .root_cert
            .as_ref()
            .is_some_and(|c| c.ends_with("certs/ca.pem"))
    );
    assert_eq!(p.tls.client_key, Some(PathBuf::from("/etc/k.pem")));
    assert!(
        p.session
            .statements()
            .contains(&"set time zone 'Asia/Shanghai'".to_string())
    );
    let refused = app(
        "['driver' => 'pgsql', 'host' => 'h', 'database' => 'd', 'username' => 'u', 'sslmode' => 'verify-ca']",
        "10.48",
    )
    .expect_err("verify-ca without a root");
    assert!(refused.contains("sslrootcert"), "{refused}");
    let refused = app(
        "['driver' => 'pgsql', 'host' => 'h', 'database' => 'd', 'username' => 'u', 'sslmode' => 'sometimes']",
        "10.48",
    )
    .expect_err("an unknown sslmode");
    assert!(refused.contains("verify-full"), "{refused}");
}

#[test]
fn sqlite_is_still_refused_and_names_pgsql_as_a_choice() {
    let e = stock("CACHE_DRIVER=redis\nDB_CONNECTION=sqlite", "8").expect_err("sqlite");
    assert!(e.contains("pgsql"), "{e}");
}
