//! A private PostgreSQL for the tests: Debian's `postgresql` 15 binaries (`initdb`, `postgres`)
//! with a cluster of its own in a temporary folder, on a free loopback port and a socket
//! directory of its own; stopped on drop (and killed with the test process). PostgreSQL refuses
//! to run as root: as root the cluster is owned by, and the server runs as, the `postgres` user
//! the package creates.
//!
//! [`PgDb`] is a database on it, loaded from `fixtures/schema-pgsql.sql` (the fixture app's
//! migrations as Laravel creates them on PostgreSQL), with what the tests read and write.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{die_with_parent, free_port};

/// Where Debian keeps PostgreSQL 15's server programs (`ORDER_EXPIRE_TEST_PG_BIN` overrides).
fn bin_dir() -> PathBuf {
    std::env::var_os("ORDER_EXPIRE_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The user and group the server runs as: `postgres` when the tests run as root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam reads a static record; it is copied out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root, PostgreSQL needs the postgres user (apt-get install postgresql)"
    );
    // SAFETY: checked non-null above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

/// Makes `path` the server user's (when the tests run as root).
pub fn give_to_server(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn as_server_user(command: &mut Command) {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
}

/// A private PostgreSQL cluster and its server.
pub struct PgServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
}

impl PgServer {
    /// `initdb` (superuser `postgres`, trust on loopback) and the server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The same, with extra `-c name=value` settings (`ssl=on`...).
    pub fn start_with(settings: &[String]) -> Self {
        let dir = Self::init();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: settings.to_vec(),
        };
        server.launch();
        server
    }

    /// A server that takes TCP connections over TLS only, with a client certificate signed by
    /// `certs`' CA (`clientcert=verify-ca`), its own certificate `server.crt`; the tests' own
    /// connections go through the socket.
    pub fn start_tls(certs: &super::certs::Certs) -> Self {
        let dir = Self::init();
        let tls = dir.path().join("tls");
        fs::create_dir_all(&tls).expect("tls dir");
        give_to_server(&tls);
        for name in ["server.crt", "server.key", "ca.crt"] {
            let to = tls.join(name);
            fs::copy(certs.path(name), &to).expect("copy certificate");
            give_to_server(&to);
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        fs::write(
            dir.path().join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        let path = |name: &str| tls.join(name).display().to_string();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: vec![
                "ssl=on".into(),
                format!("ssl_cert_file={}", path("server.crt")),
                format!("ssl_key_file={}", path("server.key")),
                format!("ssl_ca_file={}", path("ca.crt")),
            ],
        };
        server.launch();
        server
    }

    /// A new cluster: `initdb` in a folder of its own.
    fn init() -> TempDir {
        let dir = TempDir::new().expect("temp dir");
        give_to_server(dir.path());
        let mut initdb = Command::new(bin_dir().join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb);
        die_with_parent(&mut initdb);
        let output = initdb
            .output()
            .expect("run initdb (apt-get install postgresql)");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    }

    /// The folder of the server's socket (`host` for a socket connection).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A folder the server user may read, for certificates and keys.
    pub fn files_dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let mut command = Command::new(bin_dir().join("postgres"));
        command
            .arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(d)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .args(
                self.extra
                    .iter()
                    .flat_map(|s| ["-c".to_string(), s.clone()]),
            )
            .stdout(Stdio::null());
        match fs::File::create(d.join("server.log")) {
            Ok(log) => command.stderr(log),
            Err(_) => command.stderr(Stdio::null()),
        };
        as_server_user(&mut command);
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("start postgres");
        let start = Instant::now();
        loop {
            // The postmaster writes `ready` into its pid file once it accepts connections
            // (before that, a connection is refused while the system starts up).
            let ready = fs::read_to_string(d.join("data/postmaster.pid"))
                .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "postgres exited with {status}; its log:\n{}",
                    fs::read_to_string(d.join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "postgres did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: sessions are cut, as a restart does) and starts it
    /// again on the same port after `down_for`.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.launch();
    }

    /// SIGINT (fast shutdown), then SIGKILL after 20 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling the child we started.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A superuser connection to `database`, through the socket.
    pub async fn client(&self, database: &str) -> tokio_postgres::Client {
        connect(&format!(
            "host={} port={} user=postgres dbname={database}",
            self.dir.path().display(),
            self.port
        ))
        .await
    }

    /// Creates a database with the fixture schema.
    pub async fn create_db(&self) -> PgDb {
        let db = self.create_empty_db().await;
        let schema = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/schema-pgsql.sql"),
        )
        .expect("fixtures/schema-pgsql.sql");
        db.client()
            .await
            .batch_execute(&schema)
            .await
            .unwrap_or_else(|e| panic!("schema: {e}"));
        db
    }

    /// Creates an empty database (for Laravel's own migrations).
    pub async fn create_empty_db(&self) -> PgDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("oe_test_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        self.client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        PgDb {
            name,
            socket: self.socket_dir(),
            port: self.port,
            user: "postgres".into(),
            password: String::new(),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects with `NoTls`, the connection driven on the test's runtime.
pub async fn connect(params: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(params, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL ({params}): {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database on a [`PgServer`], and the role the worker connects as.
pub struct PgDb {
    pub name: String,
    /// The server's socket directory, where the tests' own connections go.
    pub socket: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl PgDb {
    /// The `DB_*` lines of a Laravel `.env` for this database.
    pub fn env_lines(&self) -> String {
        format!(
            "DB_CONNECTION=pgsql\nDB_HOST=127.0.0.1\nDB_PORT={}\nDB_DATABASE={}\nDB_USERNAME={}\nDB_PASSWORD=\"{}\"\n",
            self.port, self.name, self.user, self.password
        )
    }

    /// A superuser connection to this database, through the socket.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&format!(
            "host={} port={} user=postgres dbname={}",
            self.socket.display(),
            self.port,
            self.name
        ))
        .await
    }

    /// Creates the role `name` (password `password`) that may connect and read the tables; the
    /// test grants the rest.
    pub async fn create_role(&self, name: &str, password: &str) {
        self.client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}'; \
                 GRANT USAGE ON SCHEMA public TO {name}; \
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name};"
            ))
            .await
            .expect("create role");
    }

    pub async fn add_product(&self, name: &str, stock: i32) -> u64 {
        let row = self
            .client()
            .await
            .query_one(
                "INSERT INTO products (name, stock, created_at, updated_at) \
                 VALUES ($1, $2, now()::timestamp(0), now()::timestamp(0)) RETURNING id",
                &[&name, &stock],
            )
            .await
            .expect("insert product");
        u64::try_from(row.get::<_, i64>(0)).expect("id")
    }

    /// Places `n` unpaid orders over three products of 100 000 in stock each.
    pub async fn place_orders_of_three_products(&self, n: usize) -> Vec<u64> {
        let mut products = Vec::new();
        for name in ["Tea", "Coffee", "Cocoa"] {
            products.push(self.add_product(name, 100_000).await);
        }
        self.place_orders(&products, n).await
    }

    /// Places `n` unpaid orders of quantity 1 over `products` (round robin) in one
    /// transaction, taking their stock; `created_at` in UTC, the app's time zone.
    pub async fn place_orders(&self, products: &[u64], n: usize) -> Vec<u64> {
        let mut client = self.client().await;
        let tx = client.transaction().await.expect("begin");
        let product_ids: Vec<i64> = (0..n)
            .map(|i| i64::try_from(products[i % products.len()]).expect("id"))
            .collect();
        let rows = tx
            .query(
                "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) \
                 SELECT 1, p, 1, 9.99, 0, (now() AT TIME ZONE 'UTC')::timestamp(0), (now() AT TIME ZONE 'UTC')::timestamp(0) \
                 FROM unnest($1::int8[]) WITH ORDINALITY AS t(p, n) ORDER BY n RETURNING id",
                &[&product_ids],
            )
            .await
            .expect("insert orders");
        tx.execute(
            "UPDATE products p SET stock = p.stock - t.n FROM \
             (SELECT p AS id, COUNT(*)::int4 AS n FROM unnest($1::int8[]) AS p GROUP BY p) t WHERE p.id = t.id",
            &[&product_ids],
        )
        .await
        .expect("take stock");
        tx.commit().await.expect("commit");
        let mut ids: Vec<u64> = rows
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(0)).expect("id"))
            .collect();
        ids.sort_unstable();
        ids
    }

    pub async fn set_status(&self, order: u64, status: i16) {
        let id = i64::try_from(order).expect("id");
        self.client()
            .await
            .execute(
                "UPDATE orders SET status = $1 WHERE id = $2",
                &[&status, &id],
            )
            .await
            .expect("update status");
    }

    /// Every order's id and status, in id order.
    pub async fn statuses(&self) -> Vec<(u64, i64)> {
        self.client()
            .await
            .query("SELECT id, status::int8 FROM orders ORDER BY id", &[])
            .await
            .expect("read orders")
            .iter()
            .map(|r| (u64::try_from(r.get::<_, i64>(0)).expect("id"), r.get(1)))
            .collect()
    }

    pub async fn count_status(&self, status: i64) -> usize {
        let row = self
            .client()
            .await
            .query_one(
                "SELECT COUNT(*) FROM orders WHERE status = $1::int8",
                &[&status],
            )
            .await
            .expect("count");
        usize::try_from(row.get::<_, i64>(0)).expect("count")
    }

    /// Asserts that every product's stock plus what its orders not cancelled still hold is
    /// `initial`: each cancelled order returned its units once, none twice, none lost.
    pub async fn assert_stock_returned(&self, initial: i64) {
        let rows = self
            .client()
            .await
            .query(
                "SELECT p.id, p.stock::int8, COALESCE((SELECT SUM(o.quantity) FROM orders o \
                 WHERE o.product_id = p.id AND o.status <> 2), 0)::int8 FROM products p ORDER BY p.id",
                &[],
            )
            .await
            .expect("read stock");
        for row in rows {
            let (product, stock, held): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                stock + held,
                initial,
                "product {product}: stock {stock} + {held} held by orders not cancelled"
            );
        }
    }
}

impl super::App {
    /// An app on `DB_CONNECTION=pgsql`: its `.env` points at `redis` and `db`, followed by
    /// `extra` lines.
    pub fn pgsql(redis: &super::RedisServer, db: &PgDb, extra: &str) -> Self {
        Self::with_env(&env_text(redis.port, db, extra))
    }
}

/// The `.env` of an app on `DB_CONNECTION=pgsql` with its cache on Redis at `redis_port`,
/// followed by `extra` lines.
pub fn env_text(redis_port: u16, db: &PgDb, extra: &str) -> String {
    format!(
        "APP_NAME=Laravel\nAPP_ENV=testing\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PASSWORD=null\nREDIS_PORT={redis_port}\n{}{extra}\n",
        db.env_lines()
    )
}
