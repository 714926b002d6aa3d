//! systemd's `Type=notify` protocol, with a datagram socket of the test as `NOTIFY_SOCKET` and a
//! short `WATCHDOG_USEC` (2 s: pings every second): `READY=1` with a `STATUS=` line, watchdog
//! pings that stop while a loop is stuck (a write blocked on a row lock, a key's job blocked on
//! a locked jobs table, a subscription waiting on a frozen Redis) and resume when it moves, `STOPPING=1` on SIGTERM, and no pings when
//! `WATCHDOG_PID` names another process.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tempfile::TempDir;

use common::{App, RedisServer, TestDb, Worker, default_key, http_get, setex, wait_until};

const WAIT: Duration = Duration::from_secs(30);
/// `WATCHDOG_USEC` in the tests: 2 s, so the worker pings every second.
const WATCHDOG: Duration = Duration::from_secs(2);

/// A `NOTIFY_SOCKET`: every datagram the worker sends, with when it came.
struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buffer) {
                        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                        lock(&received).push((Instant::now(), text));
                    }
                }
            }
        });
        Self {
            path,
            received,
            stop,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// The environment systemd gives a `Type=notify` service with `WatchdogSec=2`.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", WATCHDOG.as_micros().to_string()),
        ]
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        lock(&self.received).clone()
    }

    /// The datagrams holding the line `line` (`READY=1`, `WATCHDOG=1`...).
    fn with_line(&self, line: &str) -> Vec<(Instant, String)> {
        self.messages()
            .into_iter()
            .filter(|(_, text)| text.lines().any(|l| l == line))
            .collect()
    }

    /// When the watchdog was pinged.
    fn pings(&self) -> Vec<Instant> {
        self.with_line("WATCHDOG=1")
            .into_iter()
            .map(|(at, _)| at)
            .collect()
    }

    /// The `STATUS=` values sent, in order.
    fn statuses(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|(_, text)| text.lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|line| line.strip_prefix("STATUS=").map(str::to_string))
            .collect()
    }

    /// Waits for a datagram with the line `line`; returns it.
    fn wait_for(&self, line: &str, worker: &Worker) -> (Instant, String) {
        let start = Instant::now();
        loop {
            if let Some(found) = self.with_line(line).into_iter().next() {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "no {line} within {WAIT:?}; received {:?}; log:\n{}",
                self.messages(),
                worker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the pings after `after` run steadily: three in a row, each within 1.5 s of
    /// the one before (the worker pings every second).
    fn wait_for_steady_pings(&self, after: Instant, worker: &Worker) {
        let start = Instant::now();
        loop {
            let pings: Vec<Instant> = self.pings().into_iter().filter(|p| *p > after).collect();
            let steady = pings.windows(3).any(|w| {
                w[1] - w[0] <= Duration::from_millis(1500)
                    && w[2] - w[1] <= Duration::from_millis(1500)
            });
            if steady {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "the watchdog pings did not resume; pings after: {}; log:\n{}",
                pings.len(),
                worker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The longest time between two pings (or a ping and `until`) within `from..until`.
    fn longest_silence(&self, from: Instant, until: Instant) -> Duration {
        let mut marks: Vec<Instant> = vec![from];
        marks.extend(self.pings().into_iter().filter(|p| *p > from && *p < until));
        marks.push(until);
        marks
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn start(app: &App, socket: &NotifySocket, args: &[&str], extra: &[(&str, &str)]) -> Worker {
    let env = socket.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    app.start_worker_with_env(args, &all)
}

/// Sends `signal` to a process of the test.
fn signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: signalling a child process of this test.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A Redis frozen with SIGSTOP; SIGCONT when dropped, even if the test fails.
struct Frozen(u32);

impl Frozen {
    fn freeze(redis: &RedisServer) -> Self {
        let pid = redis.pid().expect("redis runs");
        signal(pid, libc::SIGSTOP);
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_then_status_and_watchdog_pings_then_stopping() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 10).await;
    let order = db.place_order(product, 1).await;
    let socket = NotifySocket::bind();
    let app = App::new(&redis, &db, "");
    let mut worker = start(&app, &socket, &[], &[]);

    let (ready_at, ready) = socket.wait_for("READY=1", &worker);
    assert!(
        ready.contains("STATUS=listening on 1 node; 0 cancelled; queue 0"),
        "{ready:?}"
    );
    assert_eq!(
        worker.count_event("listening"),
        1,
        "subscribed before READY"
    );
    socket.wait_for_steady_pings(ready_at, &worker);

    setex(&mut redis.conn(1), &default_key(order), 1, "1");
    wait_until(WAIT, "STATUS shows the cancellation", || async {
        socket
            .statuses()
            .iter()
            .any(|s| s.contains("; 1 cancelled;"))
    })
    .await;
    assert_eq!(db.status(order).await, 2);

    let status = worker.stop(WAIT);
    assert!(status.success(), "{status}");
    let stopping = socket.with_line("STOPPING=1");
    assert_eq!(stopping.len(), 1, "{:?}", socket.messages());
    assert!(
        socket
            .statuses()
            .last()
            .is_some_and(|s| s.starts_with("stopping")),
        "{:?}",
        socket.statuses()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_blocked_on_a_row_lock_stops_the_pings_until_it_moves() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 10).await;
    let order = db.place_order(product, 1).await;
    let socket = NotifySocket::bind();
    let app = App::new(&redis, &db, "");
    // The waiting path: where the server has SKIP LOCKED the write would skip the held row
    // and move on instead of blocking.
    let args = ["--metrics-addr", "127.0.0.1:0", "--write-path", "lock-wait"];
    let worker = start(&app, &socket, &args, &[]);
    let addr = worker.metrics_addr();
    let (ready_at, _) = socket.wait_for("READY=1", &worker);
    socket.wait_for_steady_pings(ready_at, &worker);

    let mut lock = db.lock_order(order).await;
    let expired_at = Instant::now();
    setex(&mut redis.conn(1), &default_key(order), 1, "1");
    worker.wait_for_event("loops_stuck", 1, WAIT);
    let stuck = &worker.events("loops_stuck")[0];
    assert!(
        stuck["loops"]
            .as_str()
            .is_some_and(|l| l.starts_with("writer")),
        "{stuck}"
    );
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body:?}");
    assert!(
        socket
            .statuses()
            .iter()
            .any(|s| s.ends_with("; stuck: writer")),
        "{:?}",
        socket.statuses()
    );
    // Held for a while longer: not one ping meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let released_at = Instant::now();
    let silence = socket.longest_silence(expired_at, released_at);
    assert!(
        silence > WATCHDOG + Duration::from_secs(1),
        "systemd would have seen no ping for {silence:?}"
    );
    assert_eq!(db.status(order).await, 0, "still waiting on the lock");

    lock.query_drop("ROLLBACK").await.expect("release the lock");
    worker.wait_for_event("loops_moving", 1, WAIT);
    socket.wait_for_steady_pings(released_at, &worker);
    wait_until(WAIT, "the order cancelled", || async {
        db.status(order).await == 2
    })
    .await;
    assert_eq!(http_get(&addr, "/healthz").0, 200);
}

/// Laravel's `jobs` table (`php artisan queue:table`), for the database queue.
const JOBS_TABLE: &str = "CREATE TABLE jobs (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, \
    queue VARCHAR(255) NOT NULL, payload LONGTEXT NOT NULL, attempts TINYINT UNSIGNED NOT NULL, \
    reserved_at INT UNSIGNED NULL, available_at INT UNSIGNED NOT NULL, \
    created_at INT UNSIGNED NOT NULL, KEY jobs_queue_index (queue))";

#[tokio::test(flavor = "multi_thread")]
async fn a_key_job_blocked_on_a_locked_jobs_table_stops_the_pings_until_it_moves() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    db.conn()
        .await
        .query_drop(JOBS_TABLE)
        .await
        .expect("create the jobs table");
    let socket = NotifySocket::bind();
    let app = App::new(
        &redis,
        &db,
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\OrderIdExpired",
    );
    let worker = start(&app, &socket, &["--metrics-addr", "127.0.0.1:0"], &[]);
    let addr = worker.metrics_addr();
    let (ready_at, _) = socket.wait_for("READY=1", &worker);
    socket.wait_for_steady_pings(ready_at, &worker);

    // The key job's INSERT waits for the table lock the test holds.
    let mut lock = db.conn().await;
    lock.query_drop("LOCK TABLES jobs WRITE")
        .await
        .expect("lock the jobs table");
    let expired_at = Instant::now();
    setex(
        &mut redis.conn(1),
        "laravel_database_laravel_cache:ORDER_OTHEREVENT:7",
        1,
        "7",
    );
    worker.wait_for_event("loops_stuck", 1, WAIT);
    let stuck = &worker.events("loops_stuck")[0];
    assert!(
        stuck["loops"]
            .as_str()
            .is_some_and(|l| l.starts_with("key_jobs ")),
        "{stuck}"
    );
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let released_at = Instant::now();
    let silence = socket.longest_silence(expired_at, released_at);
    assert!(
        silence > WATCHDOG + Duration::from_secs(1),
        "systemd would have seen no ping for {silence:?}"
    );

    lock.query_drop("UNLOCK TABLES")
        .await
        .expect("release the table");
    worker.wait_for_event("loops_moving", 1, WAIT);
    socket.wait_for_steady_pings(released_at, &worker);
    wait_until(WAIT, "the key's job queued", || async {
        let jobs: Option<u64> = db
            .conn()
            .await
            .query_first("SELECT COUNT(*) FROM jobs")
            .await
            .expect("count jobs");
        jobs == Some(1)
    })
    .await;
    assert_eq!(http_get(&addr, "/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_waiting_on_a_frozen_redis_stops_the_pings() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let socket = NotifySocket::bind();
    let app = App::new(&redis, &db, "");
    let worker = start(&app, &socket, &[], &[]);
    let (ready_at, _) = socket.wait_for("READY=1", &worker);
    socket.wait_for_steady_pings(ready_at, &worker);

    // The subscription PINGs Redis every second (half of WATCHDOG_USEC) and waits up to 5 s for
    // the answer: more than the watchdog's 2 s.
    let frozen_at = Instant::now();
    let frozen = Frozen::freeze(&redis);
    worker.wait_for_event("loops_stuck", 1, WAIT);
    let stuck = &worker.events("loops_stuck")[0];
    assert!(
        stuck["loops"]
            .as_str()
            .is_some_and(|l| l.contains(&format!("subscription 127.0.0.1:{}", redis.port))),
        "{stuck}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let thawed_at = Instant::now();
    let silence = socket.longest_silence(frozen_at, thawed_at);
    assert!(
        silence > WATCHDOG,
        "systemd would have seen no ping for {silence:?}"
    );

    drop(frozen);
    socket.wait_for_steady_pings(thawed_at, &worker);
    assert!(worker.count_event("loops_moving") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let socket = NotifySocket::bind();
    let app = App::new(&redis, &db, "");
    let worker = start(&app, &socket, &[], &[("WATCHDOG_PID", "1")]);
    let (ready_at, _) = socket.wait_for("READY=1", &worker);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        socket.pings().is_empty(),
        "pinged {} times since {:?} ago",
        socket.pings().len(),
        ready_at.elapsed()
    );
}
