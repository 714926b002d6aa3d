//! The PostgreSQL table: the same burst on an app on `DB_CONNECTION=pgsql`, through the floor
//! (the worker's own transactions issued by a client that knows every id, over the worker's
//! connection count), one worker and two workers, on a private PostgreSQL 15 with the
//! durability settings of Debian's package (`fsync` and `synchronous_commit` on, one WAL flush
//! per commit; the tests' servers run with `fsync` off). Each run gets a fresh database and a
//! fresh redis-server, and checks its own outcome (every order cancelled once, stock exact).
//!
//! `cargo bench --bench burst -- --only-pgsql` runs only this part (and with `--write` rewrites
//! its table on the performance page).

use std::time::{Duration, Instant};

use crate::common::pgsql::{PgDb, PgServer};
use crate::common::{App, RedisServer, Worker};
use crate::emission::{self, KEY_PREFIX};
use crate::logs::{self, LogTail};
use crate::measure::{wait_drained, worker_args};

/// What Debian's PostgreSQL 15 package commits with (its `postgresql.conf` keeps the compiled
/// defaults for these), given explicitly over the tests' `fsync=off`.
pub const DEBIAN_DEFAULTS: &[&str] = &[
    "fsync=on",
    "synchronous_commit=on",
    "full_page_writes=on",
    "shared_buffers=128MB",
    "wal_buffers=4MB",
    "max_wal_size=1GB",
];

/// Every product starts with this stock; an order takes one unit.
const INITIAL_STOCK: i32 = 4_000_000;
/// The worker's batch, for the floor client.
const BATCH: usize = 512;

/// One burst size through the floor and each worker count.
#[derive(Debug, Clone, Default)]
pub struct PgRun {
    pub size: usize,
    pub floor_ms: Option<u64>,
    /// (workers, drain ms): `None` when not every order was cancelled.
    pub drains: Vec<(usize, Option<u64>)>,
    pub problems: Vec<String>,
}

/// The private server, started once for the part.
pub fn server() -> PgServer {
    let settings: Vec<String> = DEBIAN_DEFAULTS.iter().map(|s| (*s).to_string()).collect();
    PgServer::start_with(&settings)
}

/// The server's version string.
pub async fn version(server: &PgServer) -> String {
    server
        .client("postgres")
        .await
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|_| "?".into())
}

/// A fresh database with `size` unpaid orders over 4 products.
async fn place(server: &PgServer, size: usize) -> (PgDb, Vec<u64>) {
    let db = server.create_db().await;
    let mut products = Vec::new();
    for name in ["Tea", "Coffee", "Cocoa", "Mate"] {
        products.push(db.add_product(name, INITIAL_STOCK).await);
    }
    let orders = db.place_orders(&products, size).await;
    (db, orders)
}

/// Every order cancelled, the stock exact.
async fn audit(what: &str, db: &PgDb, size: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let cancelled = db.count_status(2).await;
    if cancelled != size {
        problems.push(format!("{what}: {cancelled} of {size} orders cancelled"));
    }
    let client = db.client().await;
    let wrong = client
        .query_one(
            "SELECT COUNT(*) FROM products p WHERE p.stock + COALESCE((SELECT SUM(o.quantity) \
             FROM orders o WHERE o.product_id = p.id AND o.status <> 2), 0) <> $1::int8",
            &[&i64::from(INITIAL_STOCK)],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1);
    if wrong != 0 {
        problems.push(format!(
            "{what}: the stock of {wrong} products is not exact"
        ));
    }
    problems
}

/// The worker's transaction for one batch, as `src/pgsql/orders.rs` writes it.
async fn cancel_batch(client: &mut tokio_postgres::Client, ids: &[i64]) -> Result<u64, String> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let locked = tx
        .query(
            "SELECT id::int8, status::int8, product_id::int8, quantity::int8 FROM orders \
             WHERE id = ANY($1::int8[]) ORDER BY id FOR UPDATE SKIP LOCKED",
            &[&ids],
        )
        .await
        .map_err(|e| e.to_string())?;
    let unpaid: Vec<i64> = locked
        .iter()
        .filter(|r| r.get::<_, i64>(1) == 0)
        .map(|r| r.get(0))
        .collect();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let changed = tx
        .execute(
            "UPDATE orders SET status = 2::int8, updated_at = CAST($1::text AS timestamp) \
             WHERE id = ANY($2::int8[]) AND status = 0::int8",
            &[&now, &unpaid],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut per_product = std::collections::BTreeMap::<i64, i64>::new();
    for row in &locked {
        if row.get::<_, i64>(1) == 0 {
            *per_product.entry(row.get(2)).or_default() += row.get::<_, i64>(3);
        }
    }
    let products: Vec<i64> = per_product.keys().copied().collect();
    let quantities: Vec<i64> = per_product.values().copied().collect();
    tx.query(
        "SELECT id::int8 FROM products WHERE id = ANY($1::int8[]) ORDER BY id FOR UPDATE",
        &[&products],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.execute(
        "UPDATE products AS p SET stock = p.stock + v.quantity, updated_at = CAST($3::text AS timestamp) \
         FROM unnest($1::int8[], $2::int8[]) AS v(id, quantity) WHERE p.id = v.id",
        &[&products, &quantities, &now],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(changed)
}

/// The floor: every batch of the burst through `connections` clients, from the first BEGIN to
/// the last COMMIT.
async fn floor(server: &PgServer, size: usize, connections: usize) -> (Option<u64>, Vec<String>) {
    let (db, orders) = place(server, size).await;
    let ids: Vec<i64> = orders
        .iter()
        .map(|id| i64::try_from(*id).unwrap_or(0))
        .collect();
    let batches: Vec<Vec<i64>> = ids.chunks(BATCH).map(<[i64]>::to_vec).collect();
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(tcp_client(&db).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let mine: Vec<Vec<i64>> = batches
            .iter()
            .skip(c)
            .step_by(connections.max(1))
            .cloned()
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            for batch in mine {
                written += cancel_batch(&mut client, &batch).await?;
            }
            Ok::<u64, String>(written)
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("PostgreSQL floor {size}: {e}")),
            Err(e) => problems.push(format!("PostgreSQL floor {size}: {e}")),
        }
    }
    let took = start.elapsed().as_millis() as u64;
    problems.extend(audit(&format!("PostgreSQL floor {size}"), &db, size).await);
    (problems.is_empty().then_some(took), problems)
}

/// A client over TCP, as the worker connects.
async fn tcp_client(db: &PgDb) -> tokio_postgres::Client {
    crate::common::pgsql::connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        db.port, db.name
    ))
    .await
}

/// `size` orders drained by `workers` workers; the drain from the deadline to the last commit
/// in their logs.
async fn drain(
    server: &PgServer,
    size: usize,
    workers: usize,
    extra: &[String],
) -> (Option<u64>, Vec<String>) {
    let redis = RedisServer::start();
    let (db, orders) = place(server, size).await;
    let learning = 500 * workers as u64 + (size * workers) as u64 / 50;
    let deadline = emission::now_ms() + emission::lead_ms(size) + learning;
    emission::expire_at(&redis, KEY_PREFIX, &orders, |_| deadline);
    let app = App::pgsql(&redis, &db, "");
    let running: Vec<Worker> = (0..workers)
        .map(|_| app.start_worker(&worker_args(extra)))
        .collect();
    let mut tails: Vec<LogTail> = running.iter().map(|w| LogTail::new(w.log_path())).collect();
    emission::sleep_until_ms(deadline).await;
    let done = wait_drained(&mut tails, size).await;
    let what = format!("PostgreSQL, {size} orders, {workers} worker(s)");
    let mut problems = audit(&what, &db, size).await;
    problems.extend(logs::exactly_once(&what, &orders, &tails));
    let drain_ms = (done == size)
        .then(|| tails.iter().filter_map(LogTail::last_commit_us).max())
        .flatten()
        .map(|us| ((us / 1000).max(0) as u64).saturating_sub(deadline));
    drop(running);
    tokio::time::sleep(Duration::from_millis(100)).await;
    (drain_ms, problems)
}

/// The part: each size through the floor and each worker count.
pub async fn run(
    server: &PgServer,
    sizes: &[usize],
    workers: &[usize],
    connections: usize,
    extra: &[String],
) -> Vec<PgRun> {
    let mut runs = Vec::new();
    for size in sizes {
        let mut run = PgRun {
            size: *size,
            ..PgRun::default()
        };
        let (floor_ms, problems) = floor(server, *size, connections).await;
        eprintln!("PostgreSQL floor {size}: {floor_ms:?} ms");
        run.floor_ms = floor_ms;
        run.problems.extend(problems);
        for n in workers {
            let (ms, problems) = drain(server, *size, *n, extra).await;
            eprintln!("PostgreSQL {size} x {n}: drain {ms:?} ms");
            run.drains.push((*n, ms));
            run.problems.extend(problems);
        }
        runs.push(run);
    }
    runs
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0))
}

/// The table of the performance page, with `header` (where the numbers come from) first.
pub fn table(runs: &[PgRun], header: &str) -> String {
    let mut out = format!(
        "{header}\n\n| burst | floor (the worker's transactions, no Redis) | 1 worker | 2 workers |\n|---|---|---|---|\n"
    );
    for run in runs {
        let drain = |n: usize| {
            run.drains
                .iter()
                .find(|(w, _)| *w == n)
                .map_or_else(|| "-".into(), |(_, ms)| secs(*ms))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            run.size,
            secs(run.floor_ms),
            drain(1),
            drain(2)
        ));
    }
    out
}
