//! TLS and ACL users against real servers started here: a TLS-only `redis-server` with a test CA
//! and server and client certificates made by the `openssl` command, a MariaDB whose user
//! requires a client certificate, and a Redis ACL user with only the permissions
//! docs/topologies.md ("ACL users") lists.
//!
//! In each: every unpaid order is cancelled once, the stock is exact and no paid order changes;
//! a wrong CA, or a user missing a permission, stops the start with one line naming the fix.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::Certs;
use common::{App, MariaServer, RedisServer, TestDb, default_key, die_with_parent, wait_until};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(60);

/// A `redis-server` that listens only with TLS and requires a client certificate.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsRedis {
    fn start(certs: &Certs) -> Self {
        for _ in 0..5 {
            let dir = TempDir::new().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port");
            let mut command = Command::new(&common::servers::redis().program);
            command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--tls-cert-file")
                .arg(certs.path("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.path("ca.crt"))
                .args([
                    "--tls-auth-clients",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--notify-keyspace-events", "Ex"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            die_with_parent(&mut command);
            let child = command
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            let mut server = Self {
                child,
                port,
                _dir: dir,
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                if server.try_conn(certs).is_some() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("could not start a TLS redis-server");
    }

    fn try_conn(&self, certs: &Certs) -> Option<redis::Connection> {
        let read = |name: &str| std::fs::read(certs.path(name)).expect("read test certificate");
        let tls = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.crt"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.crt")),
        };
        let mut conn =
            redis::Client::build_with_tls(format!("rediss://127.0.0.1:{}/1", self.port), tls)
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app whose `config/database.php` connects the cache over TLS with phpredis's stream
/// context: `stream` is the PHP array of `ssl` options.
fn tls_app(port: u16, db: &TestDb, stream: &str) -> App {
    app_with(
        port,
        db,
        &format!("'scheme' => 'tls', 'context' => ['stream' => {stream}]"),
        "[]",
    )
}

/// An app whose `config/database.php` has `cache_extra` (PHP entries) in its Redis `cache`
/// connection and `mysql_options` (a PHP array) as its MySQL PDO options.
fn app_with(port: u16, db: &TestDb, cache_extra: &str, mysql_options: &str) -> App {
    let app = App::with_env(&format!(
        "APP_NAME=Laravel\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT={port}\n{}",
        db.env_lines()
    ));
    let root = app
        .env_file()
        .parent()
        .map(Path::to_path_buf)
        .expect("app root");
    std::fs::create_dir_all(root.join("config")).expect("mkdir config");
    std::fs::write(
        root.join("config/database.php"),
        format!(
            "<?php\nreturn [\n    'default' => env('DB_CONNECTION', 'mysql'),\n    'connections' => [\n        'mysql' => ['driver' => 'mysql', 'host' => env('DB_HOST'), 'port' => env('DB_PORT'), 'database' => env('DB_DATABASE'), 'username' => env('DB_USERNAME'), 'password' => env('DB_PASSWORD', ''), 'charset' => 'utf8mb4', 'collation' => 'utf8mb4_unicode_ci', 'prefix' => '', 'strict' => true, 'options' => {mysql_options}],\n    ],\n    'redis' => [\n        'client' => 'phpredis',\n        'options' => ['prefix' => 'laravel_database_'],\n        'cache' => [\n            'host' => env('REDIS_HOST'),\n            'port' => env('REDIS_PORT'),\n            'database' => 1,\n            {cache_extra},\n        ],\n    ],\n];\n"
        ),
    )
    .expect("write config/database.php");
    app
}

/// The stream options for `ca` (a file of `certs`) with the test client certificate.
fn stream(certs: &Certs, ca: &str, verify_peer: bool) -> String {
    format!(
        "['cafile' => '{}', 'local_cert' => '{}', 'local_pk' => '{}', 'verify_peer' => {verify_peer}]",
        certs.path(ca).display(),
        certs.path("client.crt").display(),
        certs.path("client.key").display(),
    )
}

/// Places `n` orders over three products (1000 in stock each), marks every fourth paid, lets
/// all their keys expire through `conn`, and checks the outcome once the worker is done.
async fn expire_and_check(
    db: &TestDb,
    conn: &mut redis::Connection,
    n: usize,
    key: fn(u64) -> String,
) {
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa"] {
        products.push(db.add_product(name, 1000).await);
    }
    let mut ids = Vec::new();
    for i in 0..n {
        let quantity = u32::try_from(i % 5 + 1).unwrap_or(1);
        ids.push(db.place_order(products[i % products.len()], quantity).await);
    }
    let paid: Vec<u64> = ids.iter().copied().step_by(4).collect();
    for id in &paid {
        db.set_status(*id, 1).await;
    }
    for id in &ids {
        let _: () = redis::cmd("SETEX")
            .arg(key(*id))
            .arg(1)
            .arg(id.to_string())
            .query(conn)
            .expect("SETEX");
    }
    let unpaid = n - paid.len();
    wait_until(WAIT, "every unpaid order cancelled", || async {
        db.count_status(2).await == unpaid
    })
    .await;
    for id in &paid {
        assert_eq!(db.status(*id).await, 1, "paid order {id} is untouched");
    }
    // Stock: each product lost its paid orders' quantities only.
    let mut expected = vec![1000_i64; products.len()];
    for (i, id) in ids.iter().enumerate() {
        if paid.contains(id) {
            expected[i % products.len()] -= i64::try_from(i % 5 + 1).unwrap_or(0);
        }
    }
    for (product, want) in products.iter().zip(expected) {
        assert_eq!(db.stock(*product).await, want, "stock of product {product}");
    }
}

fn check_json(app: &App) -> serde_json::Value {
    let output = app.run(&["check", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Runs the worker expecting it to fail at start; returns its one stderr line.
fn failing_start(app: &App) -> String {
    let output = app.run(&[]);
    assert!(!output.status.success(), "must exit non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("order-expire: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line, got:\n{stderr}");
    assert_eq!(stderr.lines().last(), errors.first().copied(), "{stderr}");
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_a_client_certificate_and_verification_every_unpaid_order_is_cancelled_once()
{
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs);
    let db = TestDb::create().await;
    let app = tls_app(redis.port, &db, &stream(&certs, "ca.crt", true));

    let report = check_json(&app);
    let tls = &report["redis"]["tls_options"];
    assert_eq!(report["redis"]["tls"], true, "{report}");
    assert_eq!(tls["verify_peer"], true, "{report}");
    assert_eq!(tls["ca_file"], certs.path("ca.crt").display().to_string());
    assert_eq!(
        tls["client_cert"],
        certs.path("client.crt").display().to_string()
    );
    assert_eq!(tls["setting"], "database.redis.cache.context.stream");
    assert_eq!(report["connections"]["redis"]["ok"], true, "{report}");

    let mut worker = app.start_worker(&[]);
    let mut conn = redis.try_conn(&certs).expect("test connection");
    expire_and_check(&db, &mut conn, 40, default_key).await;
    let cancelled = worker.cancelled_orders();
    let mut unique = cancelled.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), cancelled.len(), "each order cancelled once");
    assert!(worker.stop(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_stops_the_start_in_one_line_and_verify_peer_off_connects_anyway() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs);
    let db = TestDb::create().await;

    let app = tls_app(redis.port, &db, &stream(&certs, "other-ca.crt", true));
    let line = failing_start(&app);
    assert!(
        line.contains("database.redis.cache.context.stream"),
        "{line}"
    );
    assert!(line.contains("cafile"), "{line}");

    let missing = tls_app(redis.port, &db, &stream(&certs, "missing-ca.crt", true));
    let line = failing_start(&missing);
    assert!(line.contains("missing-ca.crt"), "{line}");
    assert!(line.contains("context.stream.cafile"), "{line}");

    let unverified = tls_app(redis.port, &db, &stream(&certs, "other-ca.crt", false));
    assert_eq!(
        check_json(&unverified)["redis"]["tls_options"]["verify_peer"],
        false
    );
    let _worker = unverified.start_worker(&[]);
    let mut conn = redis.try_conn(&certs).expect("test connection");
    expire_and_check(&db, &mut conn, 12, default_key).await;
}

/// The key Laravel 9 writes for order `id` with the stock config and APP_NAME `Laravel`: its
/// cache prefix is `laravel_cache_`, to which RedisStore appends `:`.
fn laravel_9_key(id: u64) -> String {
    format!("laravel_database_laravel_cache_:ORDER_CONFIRM:{id}")
}

/// The ACL line of docs/topologies.md, "ACL users", for the Laravel 9 app of [`acl_app`]
/// (cache database 1, keys as [`laravel_9_key`]), minus `leave_out`.
fn acl_rules(leave_out: &str) -> Vec<String> {
    "on >order-expire-secret resetkeys ~laravel_database_laravel_cache_:ORDER_CONFIRM:* resetchannels &__keyevent@1__:expired -@all +select +ping +subscribe +unsubscribe +pttl +exists +setex +info +config|get"
        .split(' ')
        .filter(|rule| *rule != leave_out)
        .map(str::to_string)
        .collect()
}

fn acl_app(redis: &RedisServer, db: &TestDb) -> App {
    // Laravel 9's stock config sends REDIS_USERNAME (Laravel 8 with phpredis never does).
    App::with_env(&format!(
        "APP_NAME=Laravel\nCACHE_DRIVER=redis\nORDER_EXPIRE_LARAVEL_VERSION=9.52\nREDIS_HOST=127.0.0.1\nREDIS_PORT={}\nREDIS_USERNAME=order-expire\nREDIS_PASSWORD=order-expire-secret\n{}",
        redis.port,
        db.env_lines()
    ))
}

fn set_user(redis: &RedisServer, rules: &[String]) {
    let mut conn = redis.conn(0);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("order-expire")
        .arg("reset")
        .arg(rules)
        .query(&mut conn)
        .expect("ACL SETUSER");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_with_only_the_documented_permissions_runs_the_worker() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    set_user(&redis, &acl_rules(""));
    let app = acl_app(&redis, &db);
    assert_eq!(check_json(&app)["redis"]["username"], "order-expire");
    let worker = app.start_worker(&[]);
    assert_eq!(
        worker.count_event("notifications_unknown"),
        0,
        "{}",
        worker.log()
    );
    let mut conn = redis.conn(1);
    expire_and_check(&db, &mut conn, 20, laravel_9_key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_missing_a_permission_stops_the_start_in_one_line() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    for (leave_out, named) in [
        ("&__keyevent@1__:expired", "__keyevent@1__:expired"),
        ("+subscribe", "subscribe"),
        ("+pttl", "PTTL"),
        ("+exists", "EXISTS"),
        (
            "~laravel_database_laravel_cache_:ORDER_CONFIRM:*",
            "~laravel_database_laravel_cache_:ORDER_CONFIRM:*",
        ),
    ] {
        set_user(&redis, &acl_rules(leave_out));
        let line = failing_start(&acl_app(&redis, &db));
        assert!(
            line.contains("NOPERM") || line.contains("permission"),
            "{leave_out}: {line}"
        );
        assert!(line.contains(named), "{leave_out}: {line}");
        assert!(line.contains("ACL SETUSER"), "{leave_out}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_over_tls_with_the_pdo_ssl_options_and_a_user_that_requires_a_certificate() {
    let certs = Certs::make();
    let maria = MariaServer::start_with(&[
        format!("--ssl-ca={}", certs.path("ca.crt").display()),
        format!("--ssl-cert={}", certs.path("server.crt").display()),
        format!("--ssl-key={}", certs.path("server.key").display()),
    ]);
    let db = TestDb::create_on(&maria.url()).await;
    let mut admin = db.conn().await;
    for statement in [
        "CREATE USER 'shop'@'%' IDENTIFIED BY 'shop-secret' REQUIRE X509".to_string(),
        format!("GRANT ALL ON `{}`.* TO 'shop'@'%'", db.name),
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut admin, statement)
            .await
            .expect("create the TLS user");
    }
    drop(admin);
    let redis = RedisServer::start();
    let shop_env = |app: &App| {
        let env = app.env_file();
        let text = std::fs::read_to_string(&env).expect("read .env");
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("DB_USERNAME=") && !l.starts_with("DB_PASSWORD="))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &env,
            format!("{text}DB_USERNAME=shop\nDB_PASSWORD=shop-secret\n"),
        )
        .expect("write .env");
    };
    let options = format!(
        "[PDO::MYSQL_ATTR_SSL_CA => '{}', PDO::MYSQL_ATTR_SSL_CERT => '{}', PDO::MYSQL_ATTR_SSL_KEY => '{}']",
        certs.path("ca.crt").display(),
        certs.path("client.crt").display(),
        certs.path("client.key").display(),
    );
    let app = app_with(redis.port, &db, "'timeout' => 5", &options);
    shop_env(&app);
    let report = check_json(&app);
    assert_eq!(report["db"]["tls"]["verify_peer"], true, "{report}");
    assert_eq!(
        report["db"]["tls"]["ca_file"],
        certs.path("ca.crt").display().to_string()
    );
    assert_eq!(report["connections"]["mysql"]["ok"], true, "{report}");

    // Without the client certificate the user is refused, in one line.
    let without = app_with(
        redis.port,
        &db,
        "'timeout' => 5",
        &format!(
            "[PDO::MYSQL_ATTR_SSL_CA => '{}']",
            certs.path("ca.crt").display()
        ),
    );
    shop_env(&without);
    let line = failing_start(&without);
    assert!(line.contains("MySQL"), "{line}");

    let _worker = app.start_worker(&[]);
    let mut conn = redis.conn(1);
    expire_and_check(&db, &mut conn, 12, default_key).await;
}
