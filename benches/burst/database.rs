//! The benchmark's own MariaDB: a private server with Debian's settings, its status counters and
//! its process, and the fresh database each run gets.
//!
//! A private server (not the machine's shared one) makes every figure the benchmark's own: the
//! `SHOW GLOBAL STATUS` counters move only with what the run does, and the CPU read is that of
//! the `mariadbd` serving the run (looking a process up by name picks whichever server comes
//! first). It runs with the settings of Debian's MariaDB 10.11 package that shape this work
//! ([`DEBIAN_DEFAULTS`]), not the small ones the tests start their servers with.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use mysql_async::prelude::Queryable;

use crate::common::{MariaServer, TestDb};

/// What Debian 12's `mariadb-server` (10.11) runs with, as far as it matters for committing
/// small transactions: the compiled defaults for InnoDB (which the package leaves alone) and the
/// character set of its `50-server.cnf`. Given explicitly because `tests/common`'s server starts
/// with a 32 MB buffer pool and an 8 MB redo log, which would make the database the bottleneck
/// for reasons no installation has.
pub const DEBIAN_DEFAULTS: &[&str] = &[
    // Every order of a 1M burst, with its indexes, stays in memory.
    "--innodb-buffer-pool-size=128M",
    // Large enough that a 200k burst never waits for a checkpoint.
    "--innodb-log-file-size=96M",
    "--innodb-log-buffer-size=16M",
    // One redo log fsync per commit (group commit shares it between concurrent commits): the
    // cost a single-order transaction pays.
    "--innodb-flush-log-at-trx-commit=1",
    "--innodb-flush-method=O_DIRECT",
    "--innodb-doublewrite=ON",
    "--innodb-io-capacity=200",
    // No binary log: Debian's package does not enable one.
    "--skip-log-bin",
    "--max-connections=151",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// Every product starts with this stock; an order takes one unit.
pub const INITIAL_STOCK: u32 = 4_000_000;

/// The private server.
pub struct BenchServer {
    server: MariaServer,
    /// Found through the connection once the server is up.
    pub pid: Option<u32>,
    /// The process holding its listening socket: the fallback, looked up too so that each run
    /// shows the two agree.
    pub pid_by_socket: Option<u32>,
}

impl BenchServer {
    pub async fn start() -> Self {
        let extra: Vec<String> = DEBIAN_DEFAULTS.iter().map(|s| (*s).to_string()).collect();
        let server = MariaServer::start_with(&extra);
        let mut bench = Self {
            pid_by_socket: pid_listening_on(server.port),
            server,
            pid: None,
        };
        bench.pid = bench.find_pid().await;
        bench
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    async fn conn(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        let opts = mysql_async::Opts::from_url(&self.url()).map_err(mysql_async::Error::Url)?;
        mysql_async::Conn::new(opts).await
    }

    /// The server's process: the pid file it names (`@@pid_file`), else the process holding
    /// its listening socket.
    async fn find_pid(&self) -> Option<u32> {
        let from_file = async {
            let mut conn = self.conn().await.ok()?;
            let path: String = conn.query_first("SELECT @@pid_file").await.ok()??;
            let _ = conn.disconnect().await;
            fs::read_to_string(path).ok()?.trim().parse().ok()
        };
        match from_file.await {
            Some(pid) => Some(pid),
            None => self.pid_by_socket,
        }
    }

    /// The server's version string.
    pub async fn version(&self) -> String {
        let version = async {
            let mut conn = self.conn().await.ok()?;
            let v: Option<String> = conn.query_first("SELECT VERSION()").await.ok()?;
            let _ = conn.disconnect().await;
            v
        };
        version.await.unwrap_or_else(|| "?".into())
    }

    /// `SHOW GLOBAL STATUS`, the numeric counters.
    pub async fn status(&self) -> Status {
        let mut counters = BTreeMap::new();
        if let Ok(mut conn) = self.conn().await {
            let rows: Vec<(String, String)> =
                conn.query("SHOW GLOBAL STATUS").await.unwrap_or_default();
            for (name, value) in rows {
                if let Ok(v) = value.parse::<u64>() {
                    counters.insert(name, v);
                }
            }
            let _ = conn.disconnect().await;
        }
        Status(counters)
    }

    /// A fresh database with the fixture schema and `n` unpaid orders of one unit each, over
    /// three products. Ids start at 1 in every fresh database, so each run of a burst size writes
    /// the same rows.
    pub async fn place(&self, n: usize) -> Placed {
        let db = TestDb::create_on(&self.url()).await;
        let mut placed = Placed::empty(db).await;
        placed.add_orders(n).await;
        placed
    }

    /// A fresh database with the schema and the products, without orders yet.
    pub async fn empty(&self) -> Placed {
        Placed::empty(TestDb::create_on(&self.url()).await).await
    }
}

/// The process listening on loopback TCP `port`: its socket's inode in `/proc/net/tcp`, then
/// the process with that socket open.
fn pid_listening_on(port: u16) -> Option<u32> {
    let tcp = fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        // State 0A is LISTEN.
        (u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == "0A")
            .then(|| fields.get(9).map(|s| (*s).to_string()))
            .flatten()
    })?;
    let wanted = format!("socket:[{inode}]");
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let fds = fs::read_dir(entry.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == Path::new(&wanted)))
            .then_some(pid)
    })
}

/// `SHOW GLOBAL STATUS` at one moment.
#[derive(Debug, Clone, Default)]
pub struct Status(BTreeMap<String, u64>);

/// The counters a run's database work is shown by, in the order they are printed. MariaDB 10.11
/// has no `Innodb_rows_read` or `Innodb_rows_updated` any more; the server-level counters below
/// count the same rows for InnoDB tables.
pub const COUNTERS: &[&str] = &[
    ROWS_EXAMINED,
    "Handler_update",
    "Handler_read_key",
    "Handler_read_next",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
    "Innodb_data_fsyncs",
    "Com_commit",
];

/// The measure of "rows examined and locked": every row the server asked InnoDB for, however
/// it was found (a key lookup per id of an `IN` list, the next row of a range, a scan). In the
/// worker's transaction every such row is locked as it is read, by `SELECT ... FOR UPDATE` or by
/// the `UPDATE`'s search, so a second worker re-locking orders another one already cancelled adds
/// to it. The others show the rest: `Handler_update` (rows changed: stays the same however
/// often the work is repeated, the database's own exactly-once), `Handler_read_key` and
/// `Handler_read_next` (the access paths `Rows_read` is the sum of, which change with the plan),
/// `Innodb_row_lock_waits` and `Innodb_row_lock_time` (ms) (workers queueing behind each
/// other's locks), `Innodb_data_fsyncs` and `Com_commit` (what the transactions cost in flushes).
pub const ROWS_EXAMINED: &str = "Rows_read";

impl Status {
    /// What each counter of [`COUNTERS`] the server has grew by since `before`.
    pub fn since(&self, before: &Status) -> Counters {
        Counters(
            COUNTERS
                .iter()
                .filter_map(|name| {
                    let now = self.0.get(*name)?;
                    let then = before.0.get(*name)?;
                    Some(((*name).to_string(), now.saturating_sub(*then)))
                })
                .collect(),
        )
    }
}

/// Counter deltas over a run.
#[derive(Debug, Clone, Default)]
pub struct Counters(pub Vec<(String, u64)>);

impl Counters {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A run's database: its orders (ids in order) and products.
pub struct Placed {
    pub db: TestDb,
    pub orders: Vec<u64>,
    pub products: Vec<u64>,
}

impl Placed {
    async fn empty(db: TestDb) -> Self {
        let mut products = Vec::new();
        for name in ["Tea", "Coffee", "Cocoa"] {
            products.push(db.add_product(name, INITIAL_STOCK).await);
        }
        Self {
            db,
            orders: Vec::new(),
            products,
        }
    }

    /// Places `n` more unpaid orders, in transactions of at most 50,000; returns their ids.
    pub async fn add_orders(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(50_000);
            ids.extend(self.db.place_orders(&self.products, chunk).await);
            left -= chunk;
        }
        self.orders.extend_from_slice(&ids);
        ids
    }

    /// The run's own correctness check, from the rows: every order cancelled (status 2), none
    /// left unpaid, and, when `stock_returned`, every product's stock back where it started.
    /// Returns what is wrong, if anything.
    pub async fn audit(&self, what: &str, stock_returned: bool) -> Vec<String> {
        let n = self.orders.len();
        let mut problems = Vec::new();
        let cancelled = self.db.count_status(2).await;
        let unpaid = self.db.count_status(0).await;
        if cancelled != n || unpaid != 0 {
            problems.push(format!(
                "{what}: {cancelled} of {n} orders cancelled, {unpaid} still unpaid"
            ));
        }
        if stock_returned {
            for product in &self.products {
                let stock = self.db.stock(*product).await;
                if stock != i64::from(INITIAL_STOCK) {
                    problems.push(format!(
                        "{what}: product {product} has stock {stock}, expected {INITIAL_STOCK}"
                    ));
                }
            }
        }
        problems
    }
}
