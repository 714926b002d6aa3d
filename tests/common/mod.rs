//! Test harness: real servers, started per test and always stopped.
//!
//! * [`RedisServer`]: a private `redis-server` on a free loopback port, keyspace notifications
//!   on, no persistence; killed on drop (and by the kernel if the test process dies).
//! * [`TestDb`]: a private database on the local MariaDB, loaded from `fixtures/schema.sql`;
//!   dropped on drop. The server is `ORDER_EXPIRE_TEST_MYSQL_URL`, default
//!   `mysql://root@127.0.0.1:3306` (`scripts/test` sets it up).
//! * [`MariaServer`]: a private database server of its own (its datadir and port), for the
//!   tests that stop and restart it; [`pgsql::PgServer`] and [`pgsql::PgDb`]: a private
//!   PostgreSQL cluster and a database on it, for the tests of apps on `DB_CONNECTION=pgsql`.
//! * [`servers`]: which Redis (or Valkey) and which database server those are: this machine's
//!   own, or the server of the matrix that `ORDER_EXPIRE_TEST_REDIS_SERVER` and
//!   `ORDER_EXPIRE_TEST_DB` name (`scripts/test --matrix`).
//! * [`App`]: a Laravel app folder holding a `.env` for both.
//! * [`Worker`]: the `order-expire` binary as a child process, its output in a log file.
//! * [`cluster::RedisCluster`] and [`sentinel::SentinelSet`]: real Redis Cluster and Sentinel
//!   topologies (of [`redis_node::RedisNode`]s), and [`burst`]: orders placed by the Laravel app
//!   while a test changes the topology, and the audit of the outcome.
//! * [`http_get`] and [`Scrape`]: the worker's `/metrics`, `/healthz` and `/readyz`, read over
//!   a plain TCP connection.

#![allow(dead_code)]

pub mod burst;
pub mod certs;
pub mod cluster;
pub mod fault_load;
pub mod fault_proxy;
pub mod netns;
pub mod pgsql;
pub mod proxy;
pub mod redis_node;
pub mod sentinel;
pub mod servers;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tempfile::TempDir;

/// The binary under test, built once by cargo for all integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_order-expire");

/// The key Laravel 8 writes for order `id` with APP_NAME unset (or `Laravel`) and default prefixes.
pub fn default_key(id: u64) -> String {
    format!("laravel_database_laravel_cache:ORDER_CONFIRM:{id}")
}

/// Makes a child die with the test process, so no server outlives a crashed test run.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server with `notify-keyspace-events Ex`.
    pub fn start() -> Self {
        Self::start_with(&["--notify-keyspace-events", "Ex"])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn_redis(port, dir.path(), &extra) {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                    extra,
                };
            }
        }
        panic!(
            "could not start {}; its output:\n{}",
            servers::redis().program.display(),
            fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (all keys are lost: no persistence) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(child) = spawn_redis(self.port, self.dir.path(), &self.extra) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// A synchronous connection to database `db`.
    pub fn conn(&self, db: i64) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/{db}", self.port))
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    /// Sets the key of every order of `ids` (Laravel 8's default key, cache database 1) to
    /// expire at one instant, `after` from now (`SET ... PXAT`), as a sale whose checkouts all
    /// time out together would; returns that instant. Fails if writing the keys took longer.
    pub fn expire_together(&self, ids: &[u64], after: Duration) -> Instant {
        let deadline = Instant::now() + after;
        let deadline_ms = burst::now_ms() as u64 + after.as_millis() as u64;
        let mut conn = self.conn(1);
        for chunk in ids.chunks(10_000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("SET")
                    .arg(default_key(*id))
                    .arg(id.to_string())
                    .arg("PXAT")
                    .arg(deadline_ms)
                    .ignore();
            }
            pipe.query::<()>(&mut conn).expect("SET PXAT pipeline");
        }
        assert!(
            Instant::now() < deadline,
            "the keys were set before their deadline"
        );
        deadline
    }

    /// Stops the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `redis-server` on `port` and waits until it answers; `None` if it exits (port taken).
fn spawn_redis(port: u16, dir: &Path, extra: &[String]) -> Option<Child> {
    let mut command = Command::new(&servers::redis().program);
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    // Its output, for the message when it does not start (a directive this version lacks).
    match fs::File::create(dir.join("server.log")) {
        Ok(log) => {
            let copy = log
                .try_clone()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null());
            command.stdout(log).stderr(copy);
        }
        Err(_) => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", servers::redis().program.display()));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
        {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A private database server (its own datadir and port), for tests that stop and restart it:
/// this machine's MariaDB, or the MariaDB or MySQL `ORDER_EXPIRE_TEST_DB` names.
pub struct MariaServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    /// The address it listens on, and the namespace it runs in ([`MariaServer::start_in`]).
    host: std::net::Ipv4Addr,
    netns: Option<String>,
}

impl MariaServer {
    /// Initialises a datadir and starts the server on a free port; root has an empty password
    /// and may connect from 127.0.0.1.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The same, with extra server arguments (`--ssl-ca=...`).
    pub fn start_with(extra: &[String]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        initialise_datadir(dir.path());
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: extra.to_vec(),
            host: std::net::Ipv4Addr::LOCALHOST,
            netns: None,
        };
        server.launch();
        server
    }

    /// The same, inside the network namespace `netns`, listening on its address; root may
    /// connect from anywhere (the tests reach it over the veth pair), and over the server's
    /// socket file, which no rule of the namespace touches ([`MariaServer::socket`]).
    pub async fn start_in(netns: &netns::NetNs) -> Self {
        let dir = TempDir::new().expect("temp dir");
        initialise_datadir(dir.path());
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: Vec::new(),
            host: netns.ns_ip,
            netns: Some(netns.name.clone()),
        };
        server.launch();
        let opts = mysql_async::OptsBuilder::default()
            .user(Some("root"))
            .socket(Some(server.socket().display().to_string()));
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .expect("connect over the socket");
        for statement in [
            "CREATE USER IF NOT EXISTS 'root'@'%'",
            "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION",
        ] {
            conn.query_drop(statement).await.expect(statement);
        }
        conn.disconnect().await.ok();
        server
    }

    /// The server's socket file.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("m.sock")
    }

    pub fn url(&self) -> String {
        format!("mysql://root@{}:{}", self.host, self.port)
    }

    /// The server's family (MariaDB or MySQL).
    pub fn family(&self) -> servers::DbFamily {
        servers::database().family
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let program = servers::database();
        let mut command = match &self.netns {
            None => Command::new(&program.server),
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(&program.server);
                command
            }
        };
        command
            .args(["--no-defaults", "--user=root", "--skip-name-resolve"])
            .arg(format!("--bind-address={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("m.sock").display()))
            .arg(format!("--pid-file={}", d.join("m.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            // Its own temporary files: servers started side by side never share one.
            .arg(format!("--tmpdir={}", d.display()))
            .arg("--innodb-buffer-pool-size=32M");
        match program.family {
            servers::DbFamily::MariaDb => {
                command.arg("--innodb-log-file-size=8M");
            }
            // No X Protocol listener (it would take port 33060), and no directory
            // restriction for LOAD DATA (the default needs a folder of the package).
            servers::DbFamily::MySql => {
                command.args(["--mysqlx=OFF", "--secure-file-priv="]);
            }
        }
        command
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.server.display()));
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect((self.host, self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited with {status}; its log:\n{}",
                    program.server.display(),
                    fs::read_to_string(d.join("error.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} did not start within 60 s",
                program.server.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM (waiting for it) and starts it again on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: signalling our own child process.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes `dir/data` a new datadir whose root has an empty password (MySQL: also as
/// `root@127.0.0.1`, as `--skip-name-resolve` matches TCP clients by address).
fn initialise_datadir(dir: &Path) {
    let program = servers::database();
    let datadir = format!("--datadir={}", dir.join("data").display());
    let mut command = match program.family {
        servers::DbFamily::MariaDb => {
            let mut command = Command::new(&program.install_db);
            command.args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]);
            command
        }
        servers::DbFamily::MySql => {
            let init = dir.join("init.sql");
            fs::write(
                &init,
                "CREATE USER 'root'@'127.0.0.1';\nGRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n",
            )
            .expect("write init.sql");
            let mut command = Command::new(&program.server);
            command
                .args(["--no-defaults", "--initialize-insecure", "--user=root"])
                .arg(format!("--init-file={}", init.display()))
                .arg(format!("--log-error={}", dir.join("init.log").display()));
            command
        }
    };
    command.arg(datadir).env("TMPDIR", dir);
    let output = run_bounded(command, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "initialising a datadir with {} failed:\n{}\n{}{}",
        program.server.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        fs::read_to_string(dir.join("init.log")).unwrap_or_default()
    );
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The MySQL server the tests may create databases on.
pub fn admin_url() -> String {
    std::env::var("ORDER_EXPIRE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub struct TestDb {
    pub name: String,
    pub pool: mysql_async::Pool,
    opts: mysql_async::Opts,
}

impl TestDb {
    /// Creates an empty private database with the fixture schema.
    pub async fn create() -> Self {
        Self::create_on(&admin_url()).await
    }

    /// The same, on the server at `url`.
    pub async fn create_on(url: &str) -> Self {
        let db = Self::create_empty_on(url).await;
        let schema =
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/schema.sql"))
                .expect("fixtures/schema.sql");
        let mut conn = db.pool.get_conn().await.expect("connect to test database");
        for statement in split_sql(&schema) {
            conn.query_drop(&statement)
                .await
                .unwrap_or_else(|e| panic!("schema statement failed: {e}\n{statement}"));
        }
        drop(conn);
        db
    }

    /// A private database without tables (for Laravel's own migrations).
    pub async fn create_empty() -> Self {
        Self::create_empty_on(&admin_url()).await
    }

    async fn create_empty_on(url: &str) -> Self {
        let opts = mysql_async::Opts::from_url(url)
            .expect("ORDER_EXPIRE_TEST_MYSQL_URL is a mysql:// URL");
        let name = format!(
            "oe_test_{}_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_micros())
                .unwrap_or(0)
        );
        let mut admin = mysql_async::Conn::new(opts.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test MySQL at {url}: {e}"));
        admin
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            ))
            .await
            .expect("create test database");
        admin.disconnect().await.ok();

        let db_opts = mysql_async::OptsBuilder::from_opts(opts.clone()).db_name(Some(name.clone()));
        let pool = mysql_async::Pool::new(db_opts);
        Self { name, pool, opts }
    }

    /// The `DB_*` lines of a Laravel `.env` for this database.
    pub fn env_lines(&self) -> String {
        self.env_lines_with_password(self.opts.pass().unwrap_or(""))
    }

    pub fn env_lines_with_password(&self, password: &str) -> String {
        format!(
            "DB_CONNECTION=mysql\nDB_HOST={}\nDB_PORT={}\nDB_DATABASE={}\nDB_USERNAME={}\nDB_PASSWORD=\"{}\"\n",
            self.opts.ip_or_hostname(),
            self.opts.tcp_port(),
            self.name,
            self.opts.user().unwrap_or("root"),
            password
        )
    }

    /// This database as the `mysql` connection of a configuration cache (a PHP array).
    pub fn config_array(&self) -> String {
        mysql_config_array(
            self.opts.ip_or_hostname(),
            self.opts.tcp_port(),
            &self.name,
            self.opts.user().unwrap_or("root"),
            self.opts.pass().unwrap_or(""),
        )
    }

    pub fn host_port(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        self.pool
            .get_conn()
            .await
            .expect("test database connection")
    }

    pub async fn add_product(&self, name: &str, stock: u32) -> u64 {
        let mut c = self.conn().await;
        c.exec_drop(
            "INSERT INTO products (name, stock, created_at, updated_at) VALUES (?, ?, UTC_TIMESTAMP(), UTC_TIMESTAMP())",
            (name, stock),
        )
        .await
        .expect("insert product");
        c.last_insert_id().expect("product id")
    }

    /// Places an unpaid order as the app does: insert it and take its stock, in one transaction.
    pub async fn place_order(&self, product: u64, quantity: u32) -> u64 {
        let mut c = self.conn().await;
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .expect("begin");
        tx.exec_drop(
            "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) \
             VALUES (1, ?, ?, 9.99, 0, UTC_TIMESTAMP(), UTC_TIMESTAMP())",
            (product, quantity),
        )
        .await
        .expect("insert order");
        let id = tx.last_insert_id().expect("order id");
        tx.exec_drop(
            "UPDATE products SET stock = stock - ? WHERE id = ?",
            (quantity, product),
        )
        .await
        .expect("take stock");
        tx.commit().await.expect("commit");
        id
    }

    /// Places `n` unpaid orders of quantity 1 over `products` (round robin) in one transaction,
    /// taking their stock, as `n` checkouts would; returns their ids.
    pub async fn place_orders(&self, products: &[u64], n: usize) -> Vec<u64> {
        let mut c = self.conn().await;
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .expect("begin");
        let mut ids = Vec::with_capacity(n);
        for chunk_start in (0..n).step_by(1000) {
            let chunk = (chunk_start..n.min(chunk_start + 1000))
                .map(|i| {
                    format!(
                        "(1, {}, 1, 9.99, 0, UTC_TIMESTAMP(), UTC_TIMESTAMP())",
                        products[i % products.len()]
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            tx.query_drop(format!(
                "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) VALUES {chunk}"
            ))
            .await
            .expect("insert orders");
            let first = tx.last_insert_id().expect("first id");
            let count = n.min(chunk_start + 1000) - chunk_start;
            ids.extend(first..first + count as u64);
        }
        for (i, product) in products.iter().enumerate() {
            let taken = (0..n).filter(|k| k % products.len() == i).count();
            tx.exec_drop(
                "UPDATE products SET stock = stock - ? WHERE id = ?",
                (taken, product),
            )
            .await
            .expect("take stock");
        }
        tx.commit().await.expect("commit");
        ids
    }

    /// Holds `SELECT ... FOR UPDATE` on order `id` in an open transaction, as a request of the
    /// app would: a worker writing the order waits until the test sends `ROLLBACK`.
    pub async fn lock_order(&self, id: u64) -> mysql_async::Conn {
        let mut conn = self.conn().await;
        conn.query_drop("BEGIN").await.expect("begin");
        conn.exec_drop("SELECT id FROM orders WHERE id = ? FOR UPDATE", (id,))
            .await
            .expect("lock the order");
        conn
    }

    pub async fn set_status(&self, order: u64, status: i64) {
        self.conn()
            .await
            .exec_drop("UPDATE orders SET status = ? WHERE id = ?", (status, order))
            .await
            .expect("update status");
    }

    pub async fn status(&self, order: u64) -> i64 {
        self.conn()
            .await
            .exec_first("SELECT status FROM orders WHERE id = ?", (order,))
            .await
            .expect("select status")
            .expect("order exists")
    }

    pub async fn stock(&self, product: u64) -> i64 {
        self.conn()
            .await
            .exec_first("SELECT stock FROM products WHERE id = ?", (product,))
            .await
            .expect("select stock")
            .expect("product exists")
    }

    pub async fn count_status(&self, status: i64) -> usize {
        let n: Option<i64> = self
            .conn()
            .await
            .exec_first("SELECT COUNT(*) FROM orders WHERE status = ?", (status,))
            .await
            .expect("count");
        usize::try_from(n.unwrap_or(0)).unwrap_or(0)
    }

    /// Every order's id and status, in id order.
    pub async fn statuses(&self) -> Vec<(u64, i64)> {
        self.conn()
            .await
            .query("SELECT id, status FROM orders ORDER BY id")
            .await
            .expect("read orders")
    }

    /// Asserts that every product's stock plus what its orders not cancelled still hold is
    /// `initial`: each cancelled order returned its units once, none twice, none lost.
    pub async fn assert_stock_returned(&self, initial: i64) {
        let stock: Vec<(u64, i64, i64)> = self
            .conn()
            .await
            .query(
                "SELECT p.id, p.stock, COALESCE((SELECT SUM(o.quantity) FROM orders o \
                 WHERE o.product_id = p.id AND o.status <> 2), 0) FROM products p ORDER BY p.id",
            )
            .await
            .expect("read stock");
        for (product, stock, held) in stock {
            assert_eq!(
                stock + held,
                initial,
                "product {product}: stock {stock} + {held} held by orders not cancelled"
            );
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let opts = self.opts.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a separate thread may block on its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut c = mysql_async::Conn::new(opts).await.ok()?;
                c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await
                    .ok()?;
                c.disconnect().await.ok()
            })
        })
        .join();
    }
}

/// Splits the fixture schema into statements (it has no `;` inside strings).
fn split_sql(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A Laravel app folder with a `.env`.
pub struct App {
    dir: TempDir,
}

/// A copy of `fixtures/laravel-app` (a real Laravel 8 on Debian's packages) with its own `.env`.
pub struct LaravelApp {
    pub app: App,
}

impl LaravelApp {
    /// Copies the fixture app into a temporary folder and writes `env` as its `.env`.
    pub fn new(env: &str) -> Self {
        let app = App::with_env(env);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/laravel-app"),
            app.dir.path(),
        );
        fs::write(app.env_file(), env).expect("write .env");
        Self { app }
    }

    /// Runs `php artisan ARGS` (bounded) and returns its output; fails the test if it fails.
    pub fn artisan(&self, args: &[&str]) -> String {
        let mut command = Command::new("php");
        command
            .current_dir(self.app.dir.path())
            .arg("artisan")
            .args(args)
            .env_clear();
        let output = run_bounded(command, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "php artisan {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn dir(&self) -> &Path {
        self.app.dir.path()
    }

    /// Replaces the `'redis' => [...]` array of the copied `config/database.php` (the last
    /// entry of the file) with `redis`, as an app on a cluster or Sentinel edits it.
    pub fn set_redis_config(&self, redis: &str) {
        let path = self.dir().join("config/database.php");
        let text = fs::read_to_string(&path).expect("read config/database.php");
        let at = text
            .find("    'redis' => [")
            .expect("config/database.php has a redis array");
        fs::write(&path, format!("{}{}\n];\n", &text[..at], redis.trim_end()))
            .expect("write config/database.php");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            fs::create_dir_all(&target).expect("create dir");
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != ".env" {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

impl App {
    /// An app whose `.env` points at `redis` and `db`, followed by `extra` lines.
    pub fn new(redis: &RedisServer, db: &TestDb, extra: &str) -> Self {
        Self::on_port(redis.port, db, extra)
    }

    /// The same, with Redis reached through `redis_port` (a proxy, say).
    pub fn on_port(redis_port: u16, db: &TestDb, extra: &str) -> Self {
        Self::with_env(&Self::env_text(redis_port, db, extra))
    }

    /// The `.env` text for `redis` and `db` followed by `extra` lines, as [`App::new`] writes it.
    pub fn env_text(redis_port: u16, db: &TestDb, extra: &str) -> String {
        format!(
            "APP_NAME=Laravel\nAPP_ENV=testing\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PASSWORD=null\nREDIS_PORT={redis_port}\n{}{extra}\n",
            db.env_lines()
        )
    }

    pub fn with_env(text: &str) -> Self {
        let dir = TempDir::new().expect("temp dir");
        fs::write(dir.path().join(".env"), text).expect("write .env");
        Self { dir }
    }

    pub fn env_file(&self) -> PathBuf {
        self.dir.path().join(".env")
    }

    /// Runs a one-shot command (`schedule`, or a worker expected to fail) to completion, bounded.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .arg("--env")
            .arg(self.env_file())
            .args(args);
        run_bounded(command, Duration::from_secs(30))
    }

    /// `status --json ARGS`: the report it prints and its exit code.
    pub fn status_json(&self, args: &[&str]) -> (serde_json::Value, Option<i32>) {
        let output = self.run(&[&["status", "--json"], args].concat());
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json prints one object ({e}):\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (report, output.status.code())
    }

    pub fn start_worker(&self, args: &[&str]) -> Worker {
        Worker::start(self, args, &[])
    }

    /// The same, with `env` in the worker's (otherwise empty) environment.
    pub fn start_worker_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Worker {
        Worker::start(self, args, env)
    }

    /// Stops the worker with SIGKILL: no clean shutdown, as in a crash or an OOM kill.
    pub fn kill_worker(worker: &mut Worker) {
        if let Some(mut child) = worker.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON objects among the lines of `text` (a command's `--log-format json` stderr).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Those of them whose `event` is `name`.
pub fn json_events(text: &str, name: &str) -> Vec<serde_json::Value> {
    json_lines(text)
        .into_iter()
        .filter(|l| l["event"] == name)
        .collect()
}

/// Runs `command` to completion (bounded), failing the test with both streams unless it exits 0.
pub fn run_ok(command: Command, timeout: Duration) -> Output {
    let shown = format!("{command:?}");
    let output = run_bounded(command, timeout);
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` (order-expire, or a tool a test needs) to completion, killing it after
/// `timeout`.
pub fn run_bounded(mut command: Command, timeout: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(&mut command);
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    // Both pipes are read while the command runs: one that writes more than a pipe holds
    // would otherwise block until the timeout.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{program} did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&joined(stdout)),
                    String::from_utf8_lossy(&joined(stderr))
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for {program}: {e}"),
        }
    };
    Output {
        status,
        stdout: joined(stdout),
        stderr: joined(stderr),
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    })
}

/// What a [`drain`] thread read: empty if the pipe was not there, the thread failed, or the
/// pipe is still open a second after the command ended (a process it started holds it).
fn joined(reader: Option<std::thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(reader) = reader else {
        return Vec::new();
    };
    let start = Instant::now();
    while !reader.is_finished() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !reader.is_finished() {
        return Vec::new();
    }
    reader.join().unwrap_or_default()
}

/// A running worker; killed on drop if the test did not stop it.
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Worker {
    /// The binary is [`BIN`], or `ORDER_EXPIRE_TEST_BIN` when set (a release build, to measure).
    fn start(app: &App, args: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = std::env::var_os("ORDER_EXPIRE_TEST_BIN").unwrap_or_else(|| BIN.into());
        let mut command = Command::new(bin);
        command
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .arg("--env")
            .arg(app.env_file());
        // Tests read the log's fields, not its sentences: JSON unless a test asks for text.
        if !args.contains(&"--log-format") {
            command.args(["--log-format", "json"]);
        }
        command.args(args);
        Self::spawn(command)
    }

    /// Runs `command`, a worker started another way (inside a container, say), with its output
    /// in the log file, and waits until it listens.
    pub fn spawn(mut command: Command) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let log = dir.path().join("worker.log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        command.stdout(out).stderr(err);
        die_with_parent(&mut command);
        let child = command.spawn().expect("spawn order-expire");
        let mut worker = Self {
            child: Some(child),
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while worker.count_event("listening") == 0 && !worker.log().contains("event=\"listening\"")
        {
            // A worker that refused to start has said why: no need to wait for it.
            if let Some(Ok(Some(status))) = worker.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the worker exited ({status}) before listening; log:\n{}",
                    worker.log()
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "the worker did not start listening within 20 s; log:\n{}",
                    worker.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        worker
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file, for a reader that follows it as it grows (the benchmark).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The worker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log's JSON lines, parsed.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        json_lines(&self.log())
    }

    /// The log lines whose `event` field is `name`.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        json_events(&self.log(), name)
    }

    /// When the worker wrote `line`: its `timestamp` field, in Unix milliseconds.
    pub fn timestamp_ms(line: &serde_json::Value) -> Option<i64> {
        line["timestamp"]
            .as_str()?
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|at| at.as_millisecond())
    }

    /// How many log lines have `event` = `name`.
    pub fn count_event(&self, name: &str) -> usize {
        self.events(name).len()
    }

    /// The orders this worker reported cancelled (the `order_ids` of its `orders_cancelled`
    /// events).
    pub fn cancelled_orders(&self) -> Vec<u64> {
        self.events("orders_cancelled")
            .iter()
            .filter_map(|line| line["order_ids"].as_str().map(str::to_string))
            .flat_map(|ids| {
                ids.split(',')
                    .filter_map(|id| id.parse().ok())
                    .collect::<Vec<u64>>()
            })
            .collect()
    }

    /// The address of the worker's metrics endpoint (`--metrics-addr`, port 0 allowed), from its
    /// `metrics_listening` event.
    pub fn metrics_addr(&self) -> String {
        self.wait_for_event("metrics_listening", 1, Duration::from_secs(10));
        self.events("metrics_listening")[0]["addr"]
            .as_str()
            .expect("metrics_listening has an addr")
            .to_string()
    }

    /// Waits until `times` log lines have `event` = `name`; fails with the log otherwise.
    pub fn wait_for_event(&self, name: &str, times: usize, timeout: Duration) {
        let start = Instant::now();
        while self.count_event(name) < times {
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {times} x event {name:?} in the worker log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("worker running");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "worker did not stop within {timeout:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes keys as Laravel's RedisStore does: `SETEX <key> <ttl> <value>`.
pub fn setex(conn: &mut redis::Connection, key: &str, ttl: u64, value: &str) {
    redis::cmd("SETEX")
        .arg(key)
        .arg(ttl)
        .arg(value)
        .query::<()>(conn)
        .expect("SETEX");
}

/// Appends to a file (for tests that edit a `.env`).
pub fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

/// A `bootstrap/cache/config.php` whose `database.redis` array is `redis` (PHP `array (...)`
/// syntax or `[...]`): the Laravel 8 stock settings otherwise, MySQL at `db.internal`, which no
/// test reaches (for commands that read the settings without connecting).
pub fn config_cache_with_redis(app: &App, redis: &str) {
    let mysql = mysql_config_array("db.internal", 3307, "shop", "shop", "secret");
    write_config_cache(app, &mysql, redis);
}

/// A MySQL connection of a configuration cache, as `php artisan config:cache` writes it (PHP
/// `var_export` syntax, every string single-quoted and escaped).
fn mysql_config_array(host: &str, port: u16, database: &str, user: &str, password: &str) -> String {
    let quoted = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "array ('driver' => 'mysql', 'url' => NULL, 'host' => {}, 'port' => '{port}', 'database' => {}, 'username' => {}, 'password' => {}, 'unix_socket' => '', 'prefix' => '')",
        quoted(host),
        quoted(database),
        quoted(user),
        quoted(password)
    )
}

/// A `bootstrap/cache/config.php` with the cache store on Redis connection `cache` (prefix
/// `shop_cache`), `redis` as the `database.redis` array and `mysql` as the MySQL connection
/// (see [`TestDb::config_array`]): what the app's `php artisan config:cache` leaves, read in
/// place of its `config/*.php`.
pub fn write_config_cache(app: &App, mysql: &str, redis: &str) {
    let root = app.env_file().parent().expect("app root").to_path_buf();
    fs::create_dir_all(root.join("bootstrap/cache")).expect("mkdir");
    fs::write(
        root.join("bootstrap/cache/config.php"),
        format!(
            "<?php return array (\n  'app' => array ('timezone' => 'UTC'),\n  'cache' => array ('default' => 'redis', 'stores' => array ('redis' => array ('driver' => 'redis', 'connection' => 'cache')), 'prefix' => 'shop_cache'),\n  'database' => array ('default' => 'mysql', 'connections' => array ('mysql' => {mysql}), 'redis' => {redis}),\n);\n"
        ),
    )
    .expect("write config cache");
}

/// Writes the app's `config/database.php`: Laravel 8's stock one, with the `default` Redis
/// connection (the redis queue's) at `queue_port` instead of `REDIS_PORT`, so that the queue's
/// Redis is another server than the cache's.
pub fn queue_redis_at(app: &App, queue_port: u16) {
    let stock = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/config/src/stock/laravel8/database.php"),
    )
    .expect("the stock database.php");
    let (before, after) = stock
        .split_once("'default' => [")
        .expect("the redis default connection");
    let after = after.replacen("env('REDIS_PORT', '6379')", &format!("'{queue_port}'"), 1);
    let root = app.env_file().parent().expect("app root").to_path_buf();
    fs::create_dir_all(root.join("config")).expect("mkdir config");
    fs::write(
        root.join("config/database.php"),
        format!("{before}'default' => [{after}"),
    )
    .expect("write config/database.php");
}

/// A Redis Cluster config: three seeds, the password in the global options.
pub const CLUSTER_REDIS: &str = "array ('client' => 'phpredis', 'options' => array ('cluster' => 'redis', 'prefix' => 'shop_database_', 'password' => 'cluster-secret'), 'clusters' => array ('cache' => array (0 => array ('host' => '127.0.0.11', 'port' => 7000, 'database' => 3), 1 => array ('host' => '127.0.0.12', 'port' => 7001), 2 => array ('host' => '127.0.0.13', 'port' => 7002))))";

/// A predis Sentinel config: two sentinels, service `shop-master`, database 2.
pub const SENTINEL_REDIS: &str = "array ('client' => 'predis', 'options' => array ('prefix' => 'shop_database_'), 'cache' => array (0 => 'tcp://127.0.0.11:26379', 1 => 'tcp://127.0.0.12:26379', 'options' => array ('replication' => 'sentinel', 'service' => 'shop-master', 'parameters' => array ('password' => 'sentinel-secret', 'database' => 2))))";

/// `GET path` from the HTTP endpoint at `addr` (`host:port`), bounded: the status code and
/// the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    let response = String::from_utf8(response).expect("a UTF-8 answer");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP answer: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    (status, body.to_string())
}

/// One scrape of `/metrics`: each sample's value by its series as written, e.g.
/// `order_expire_orders_skipped_total{reason="paid"}`.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Scrapes the worker's endpoint at `addr`.
    pub fn take(addr: &str) -> Self {
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("a sample line: {line:?}"));
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("a value: {line:?}")),
                };
                (series.to_string(), value)
            })
            .collect();
        Self {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of `series`; fails the test when the scrape does not have it.
    pub fn get(&self, series: &str) -> f64 {
        self.samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{}", self.text))
    }

    /// The series whose name starts with `prefix`.
    pub fn series(&self, prefix: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter(|(series, _)| series.starts_with(prefix))
            .map(|(series, value)| (series.clone(), *value))
            .collect()
    }
}
