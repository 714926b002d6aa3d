//! What a fault test measures while its fault is on: the app's own statements on `products`
//! (how long each waited for a lock), the workers' probes (every answer of `/readyz` and
//! `/healthz`, with when), and each order's lateness after its key's deadline; and the one JSON
//! summary line a fault test prints, so its numbers can be quoted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::Worker;
use super::burst::now_ms;

/// The app's checkouts on `products`, one after another, each in its own transaction that
/// takes one unit of a product and gives it back (`stock - 1`, then `stock + 1`: the stock the
/// audit reads does not move), as the app's checkout does with the row locks it takes. The
/// app's sessions keep the server's defaults (`innodb_lock_wait_timeout` 50 s).
pub struct AppCheckouts {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Checkouts>>,
}

/// What the checkouts met.
#[derive(Debug, Default, Clone)]
pub struct Checkouts {
    pub done: usize,
    /// The longest wait of one `UPDATE products`, in milliseconds.
    pub max_wait_ms: u64,
    /// Statements that failed (ERROR 1205 after the app's own lock wait timeout, say).
    pub failed: Vec<String>,
}

impl AppCheckouts {
    /// Starts one loop per product of `products` on `pool`.
    pub fn start(pool: mysql_async::Pool, products: Vec<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let loops: Vec<_> = products
                .into_iter()
                .map(|product| {
                    tokio::spawn(checkout_loop(pool.clone(), product, Arc::clone(&flag)))
                })
                .collect();
            let mut all = Checkouts::default();
            for one in loops {
                let one = one.await.expect("a checkout loop");
                all.done += one.done;
                all.max_wait_ms = all.max_wait_ms.max(one.max_wait_ms);
                all.failed.extend(one.failed);
            }
            all
        });
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops the loops (each finishes its statement) and returns what they met.
    pub async fn finish(mut self) -> Checkouts {
        self.stop.store(true, Ordering::SeqCst);
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(70), task)
            .await
            .expect("the checkouts stop within the app's own lock wait timeout")
            .expect("the checkouts' task")
    }
}

impl Drop for AppCheckouts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn checkout_loop(pool: mysql_async::Pool, product: u64, stop: Arc<AtomicBool>) -> Checkouts {
    let mut seen = Checkouts::default();
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = pool.get_conn().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let started = Instant::now();
        let result: Result<(), mysql_async::Error> = async {
            conn.query_drop("BEGIN").await?;
            conn.exec_drop(
                "UPDATE products SET stock = stock - 1 WHERE id = ?",
                (product,),
            )
            .await?;
            let waited = started.elapsed();
            seen.max_wait_ms = seen.max_wait_ms.max(waited.as_millis() as u64);
            conn.exec_drop(
                "UPDATE products SET stock = stock + 1 WHERE id = ?",
                (product,),
            )
            .await?;
            conn.query_drop("COMMIT").await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => seen.done += 1,
            Err(e) => {
                seen.max_wait_ms = seen.max_wait_ms.max(started.elapsed().as_millis() as u64);
                seen.failed.push(e.to_string());
                let _ = conn.query_drop("ROLLBACK").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// One answer of a probe: when (Unix ms) and the status (`None`: no answer within 2 s).
pub type Answer = (i64, Option<u16>);

/// The answers per worker (its index) and path.
pub type Answers = HashMap<(usize, &'static str), Vec<Answer>>;

/// `/readyz` and `/healthz` of some workers, asked every 200 ms with a 2 s timeout as a
/// Kubernetes probe would, on a thread of its own.
pub struct Probes {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Answers>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probes {
    pub fn start(addrs: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let (flag, store) = (Arc::clone(&stop), Arc::clone(&answers));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                for (i, addr) in addrs.iter().enumerate() {
                    for path in ["/readyz", "/healthz"] {
                        let at = now_ms();
                        let status = probe(addr, path);
                        store
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry((i, path))
                            .or_insert_with(Vec::new)
                            .push((at, status));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    /// Stops asking; the answers of worker `i` to `path`.
    pub fn finish(mut self) -> Answers {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.answers.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `GET path` with a 2 s bound on connecting and on the answer; its status code.
pub fn probe(addr: &str, path: &str) -> Option<u16> {
    let addr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// How many answers were 200, another status, or none.
pub fn tally(answers: &[Answer]) -> serde_json::Value {
    let ok = answers.iter().filter(|(_, s)| *s == Some(200)).count();
    let none = answers.iter().filter(|(_, s)| s.is_none()).count();
    serde_json::json!({ "200": ok, "other": answers.len() - ok - none, "none": none })
}

/// The spans (Unix ms) during which `worker` logged its MySQL writes failing: from each
/// `writes_failing` to the next `writes_recovered` (or `until`).
pub fn failing_spans(worker: &Worker, until: i64) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    let mut open = None;
    for line in worker.json_lines() {
        let at = Worker::timestamp_ms(&line);
        match (line["event"].as_str(), at) {
            (Some("writes_failing"), Some(at)) if open.is_none() => open = Some(at),
            (Some("writes_recovered"), Some(at)) => {
                if let Some(start) = open.take() {
                    spans.push((start, at));
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        spans.push((start, until));
    }
    spans
}

/// Checks that the `/readyz` answers tell the truth about `worker`'s writes: none is 200 inside
/// a span when its writes were failing (a second's margin at each end, for the probe's own
/// period and the log's clock), and every `writes_recovered` line names orders written.
pub fn assert_readiness_truthful(worker: &Worker, readyz: &[Answer]) {
    let spans = failing_spans(worker, now_ms());
    for (start, end) in &spans {
        let lied: Vec<&Answer> = readyz
            .iter()
            .filter(|(at, status)| *at > start + 1000 && *at < end - 1000 && *status == Some(200))
            .collect();
        assert!(
            lied.is_empty(),
            "/readyz said 200 while writes were failing ({start}..{end}): {lied:?}"
        );
    }
    for line in worker.events("writes_recovered") {
        assert!(
            line["orders_written"].as_u64().unwrap_or(0) > 0,
            "writes_recovered with nothing written: {line}"
        );
    }
}

/// Each cancelled order's lateness (ms after `deadline_ms`) over `workers`' logs: p50, p99, max.
pub fn lateness_ms(workers: &[&Worker], deadline_ms: i64) -> (i64, i64, i64) {
    lateness_ms_among(workers, deadline_ms, None)
}

/// The same, for the orders of `among` only (all when `None`).
pub fn lateness_ms_among(
    workers: &[&Worker],
    deadline_ms: i64,
    among: Option<&[u64]>,
) -> (i64, i64, i64) {
    let mut first: HashMap<u64, i64> = HashMap::new();
    for worker in workers {
        for line in worker.events("orders_cancelled") {
            let Some(at) = Worker::timestamp_ms(&line) else {
                continue;
            };
            for id in line["order_ids"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|id| id.parse::<u64>().ok())
            {
                let e = first.entry(id).or_insert(at);
                *e = (*e).min(at);
            }
        }
    }
    let mut values: Vec<i64> = first
        .iter()
        .filter(|(id, _)| among.is_none_or(|among| among.contains(id)))
        .map(|(_, at)| at - deadline_ms)
        .collect();
    values.sort_unstable();
    let at = |q: f64| {
        values
            .get(((values.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (at(0.5), at(0.99), at(1.0))
}
