//! The floor: what the database alone takes for the same work.
//!
//! A minimal client that knows every order id up front (no Redis, no queue, no parsing) runs the
//! worker's own transaction (`src/sink/writer.rs` `cancel_batch`, the statements of
//! `src/mysql/orders.rs` `WriteStatements` for the fixture schema) on a fresh copy of the same
//! burst, with the worker's batch size and connection count. Nothing can drain a burst faster
//! than this on the same server, so the drain is judged against it.
//!
//! The second measure is the database's own latency for one order per transaction at a steady
//! 1,000 a second: what the worker's event-to-commit latency is judged against.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, IsolationLevel, Params, TxOpts, Value};
use tokio::sync::Mutex;

use crate::database::{BenchServer, Counters, Placed};
use crate::process::{CpuSample, Watched};

/// The worker's largest batch and the list lengths its statements are prepared for
/// (`src/mysql/orders.rs` `MAX_BATCH` and `BUCKETS`).
const MAX_BATCH: usize = 512;
const BUCKETS: [usize; 4] = [1, 8, 64, MAX_BATCH];
const UNPAID: i64 = 0;
/// An order row as the lock reads it: id, status, product, quantity, paid (always false here).
type LockedOrder = (u64, i64, Option<u64>, Option<i64>, bool);
const CANCELLED: i64 = 2;

/// The first bucket length that holds `n` values.
fn bucket(n: usize) -> usize {
    BUCKETS
        .iter()
        .position(|b| *b >= n)
        .unwrap_or(BUCKETS.len() - 1)
}

/// `values` padded to its bucket length by repeating the last one, as the worker sends them.
fn padded<T: Clone>(values: &[T]) -> Vec<T> {
    let mut out = values.to_vec();
    if let Some(last) = values.last() {
        out.resize(BUCKETS[bucket(values.len())], last.clone());
    }
    out
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The worker's statements for the fixture schema (lines on the order row, `updated_at` on
/// both tables, no paid column), one per bucket length.
struct Statements {
    lock: Vec<String>,
    cancel: Vec<String>,
    stock: Vec<String>,
}

impl Statements {
    fn new() -> Self {
        let each = |build: &dyn Fn(usize, &str) -> String| -> Vec<String> {
            BUCKETS
                .iter()
                .map(|n| build(*n, &placeholders(*n)))
                .collect()
        };
        Self {
            lock: each(&|_, list| {
                format!(
                    "SELECT `id`, `status`, `product_id`, `quantity`, 0 FROM `orders` WHERE `id` IN ({list}) ORDER BY `id` FOR UPDATE"
                )
            }),
            cancel: each(&|_, list| {
                format!(
                    "UPDATE `orders` SET `status` = ?, `orders`.`updated_at` = ? WHERE `id` IN ({list}) AND `status` = ?"
                )
            }),
            stock: each(&|n, list| {
                let cases = vec!["WHEN ? THEN ?"; n].join(" ");
                format!(
                    "UPDATE `products` SET `stock` = `stock` + CASE `id` {cases} ELSE 0 END, `products`.`updated_at` = ? WHERE `id` IN ({list})"
                )
            }),
        }
    }

    /// The worker's transaction for `ids` (sorted, at most [`MAX_BATCH`]): lock in id order,
    /// cancel the unpaid, return their units per product, commit. Returns the orders cancelled.
    async fn cancel_batch(&self, conn: &mut Conn, ids: &[u64]) -> Result<usize, String> {
        let mut options = TxOpts::default();
        options.with_isolation_level(IsolationLevel::ReadCommitted);
        let mut tx = conn
            .start_transaction(options)
            .await
            .map_err(|e| format!("BEGIN: {e}"))?;
        let rows: Vec<LockedOrder> = tx
            .exec(&self.lock[bucket(ids.len())], padded(ids))
            .await
            .map_err(|e| format!("locking: {e}"))?;
        let unpaid: Vec<&LockedOrder> = rows.iter().filter(|r| r.1 == UNPAID && !r.4).collect();
        if !unpaid.is_empty() {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string();
            let ids: Vec<u64> = unpaid.iter().map(|r| r.0).collect();
            let mut params: Vec<Value> = vec![CANCELLED.into(), now.clone().into()];
            params.extend(padded(&ids).into_iter().map(Value::from));
            params.push(UNPAID.into());
            tx.exec_drop(&self.cancel[bucket(ids.len())], Params::Positional(params))
                .await
                .map_err(|e| format!("cancelling: {e}"))?;
            if tx.affected_rows() != ids.len() as u64 {
                return Err("orders changed under their row locks".into());
            }
            let mut per_product: BTreeMap<u64, u64> = BTreeMap::new();
            for (_, _, product, quantity, _) in &unpaid {
                if let (Some(p), Some(q)) = (product, quantity) {
                    *per_product.entry(*p).or_default() += u64::try_from(*q).unwrap_or(0);
                }
            }
            let pairs = padded(&per_product.into_iter().collect::<Vec<_>>());
            let mut params: Vec<Value> = Vec::with_capacity(pairs.len() * 3 + 1);
            for (product, units) in &pairs {
                params.push((*product).into());
                params.push((*units).into());
            }
            params.push(now.into());
            params.extend(pairs.iter().map(|(p, _)| Value::from(*p)));
            tx.exec_drop(&self.stock[bucket(pairs.len())], Params::Positional(params))
                .await
                .map_err(|e| format!("returning stock: {e}"))?;
        }
        tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
        Ok(unpaid.len())
    }
}

/// `connections` connections to the run's database, with the session the worker sets up.
async fn connect(placed: &Placed, connections: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = placed.db.conn().await;
        conn.query_drop("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'")
            .await
            .unwrap_or_else(|e| panic!("floor client session: {e}"));
        conns.push(conn);
    }
    conns
}

/// One burst through the floor client.
#[derive(Debug, Clone)]
pub struct FloorRun {
    pub size: usize,
    /// First statement to last commit; `None` when the run failed.
    pub drain_ms: Option<u64>,
    pub cpu: Vec<(String, f64)>,
    pub counters: Counters,
    pub problems: Vec<String>,
}

/// Cancels a fresh burst of `size` orders with the worker's transaction, batches of
/// [`MAX_BATCH`] in id order shared by `connections` connections.
pub async fn burst(server: &BenchServer, size: usize, connections: usize) -> FloorRun {
    let placed = server.place(size).await;
    let conns = connect(&placed, connections).await;
    let batches: Arc<Vec<Vec<u64>>> = Arc::new(
        placed
            .orders
            .chunks(MAX_BATCH)
            .map(<[u64]>::to_vec)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let sql = Arc::new(Statements::new());
    let procs = [
        Watched::new("mariadbd", server.pid),
        Watched::new("client (benchmark)", None),
    ];
    let cpu = CpuSample::take(&procs);
    let status = server.status().await;
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (batches, next, sql) = (Arc::clone(&batches), Arc::clone(&next), Arc::clone(&sql));
            tokio::spawn(async move {
                let mut cancelled = 0;
                let mut last_commit = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    cancelled += sql.cancel_batch(&mut conn, batch).await?;
                    last_commit = Some(Instant::now());
                }
                Ok::<_, String>((cancelled, last_commit))
            })
        })
        .collect();
    let mut problems = Vec::new();
    let mut cancelled = 0;
    let mut last = None;
    for task in tasks {
        match task.await {
            Ok(Ok((n, at))) => {
                cancelled += n;
                last = last.max(at);
            }
            Ok(Err(e)) => problems.push(format!("floor, {size} orders: {e}")),
            Err(e) => problems.push(format!("floor, {size} orders: client task: {e}")),
        }
    }
    let cpu = cpu.until_now();
    let counters = server.status().await.since(&status);
    if cancelled != size {
        problems.push(format!("floor, {size} orders: cancelled {cancelled}"));
    }
    problems.extend(placed.audit(&format!("floor, {size} orders"), true).await);
    FloorRun {
        size,
        drain_ms: problems
            .is_empty()
            .then(|| last.map(|at| at.duration_since(start).as_millis() as u64))
            .flatten(),
        cpu,
        counters,
        problems,
    }
}

/// The database's single-order commit latency at a steady rate.
#[derive(Debug, Clone)]
pub struct SingleCommits {
    pub orders: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub problems: Vec<String>,
}

/// One order per transaction, one every millisecond for `seconds`, over `connections`
/// connections: each commit's latency from the moment its order was due (a late start counts).
pub async fn single_commits(
    server: &BenchServer,
    seconds: u64,
    connections: usize,
) -> SingleCommits {
    let n = (seconds * 1000) as usize;
    let placed = server.place(n).await;
    let conns = connect(&placed, connections).await;
    let sql = Arc::new(Statements::new());
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Instant)>(n.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (rx, sql) = (Arc::clone(&rx), Arc::clone(&sql));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((id, due)) = next else { break };
                    sql.cancel_batch(&mut conn, &[id]).await?;
                    latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    for (i, id) in placed.orders.iter().enumerate() {
        let due = start + Duration::from_millis(i as u64);
        tokio::time::sleep_until(due.into()).await;
        if tx.send((*id, due)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut problems = Vec::new();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => problems.push(format!("floor, single commits: {e}")),
            Err(e) => problems.push(format!("floor, single commits: client task: {e}")),
        }
    }
    problems.extend(placed.audit("floor, single commits", true).await);
    let (p50_ms, p99_ms, max_ms) = crate::steady::quantiles(latencies.clone());
    SingleCommits {
        orders: latencies.len(),
        p50_ms,
        p99_ms,
        max_ms,
        problems,
    }
}
