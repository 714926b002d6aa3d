//! Progress on long work: a reconciliation pass over a large backlog says how far it has got,
//! as `sweep_progress` log lines (examined, total, rate, estimate) when no terminal watches, and
//! as a bar on stderr when one does; the worker's first pass at start does the same. A pass
//! reports once it has lasted 3 s: Redis is held for 4 s in the middle of each, so that it
//! does on any machine.

mod common;

use std::fs::File;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use common::{App, BIN, RedisServer, TestDb, json_lines, run_bounded, wait_until};
use mysql_async::prelude::Queryable;
use serde_json::Value;

/// A backlog of fifty pages: a pass of a few seconds in a debug build on a CI machine (it
/// cancels some 15-40 thousand orders a second).
const LARGE: u64 = 50_000;

/// Inserts `n` unpaid orders of product 1, created a day ago and one second apart, so that the
/// sweep's `(status, created_at)` pages walk the index as they do on a real table.
async fn overdue_orders(db: &TestDb, n: u64) {
    db.add_product("Tea", 1_000_000).await;
    let mut c = db.conn().await;
    for start in (0..n).step_by(5000) {
        let rows: Vec<String> = (start..n.min(start + 5000))
            .map(|i| {
                format!(
                    "(1, 1, 1, 9.99, 0, UTC_TIMESTAMP() - INTERVAL {} SECOND, UTC_TIMESTAMP())",
                    86_400 + i
                )
            })
            .collect();
        c.query_drop(format!(
            "INSERT INTO orders (user_id, product_id, quantity, amount, status, created_at, updated_at) VALUES {}",
            rows.join(",")
        ))
        .await
        .expect("insert orders");
    }
}

/// The `sweep_progress` lines among `lines`, checked: counts that grow, each interim line with a
/// rate and an estimate against the total counted at the start, the last one `done` with the
/// total the pass examined. Returns that total.
fn checked_progress(lines: &[Value], counted: u64, log: &str) -> u64 {
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "sweep_progress")
        .collect();
    assert!(
        progress.len() >= 2,
        "an interim line and a last one: {progress:#?}\n{log}"
    );
    let examined: Vec<u64> = progress
        .iter()
        .map(|l| l["examined"].as_u64().expect("examined"))
        .collect();
    assert!(
        examined.windows(2).all(|w| w[0] < w[1]),
        "growing counts: {examined:?}"
    );
    let (last, interim) = progress.split_last().expect("lines");
    for line in interim {
        assert_eq!(line["done"], false, "{line}");
        assert_eq!(line["total"], counted, "{line}");
        assert!(line["rate_per_s"].as_u64().expect("rate") > 0, "{line}");
        assert!(line["eta_s"].is_u64(), "{line}");
    }
    assert_eq!(last["done"], true, "{last}");
    let total = last["examined"].as_u64().expect("examined");
    assert_eq!(last["total"], total, "{last}");
    total
}

/// `order-expire --env <app> ARGS` with JSON logs, its streams in files (a pass over a large
/// table writes megabytes, more than a pipe holds until the command exits).
struct Run {
    child: Child,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(app: &App, args: &[&str]) -> Self {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let child = Command::new(BIN)
            .env_clear()
            .arg("--env")
            .arg(app.env_file())
            .args(["--log-format", "json"])
            .args(args)
            .stdout(File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn order-expire");
        Self { child, dir }
    }

    /// Waits (bounded) for the exit: its status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("order-expire did not exit within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        (status, stderr)
    }
}

/// Once the pass is writing (an order cancelled), holds every Redis client for 4 s
/// (`CLIENT PAUSE`), as an overloaded Redis would: the pass's next `EXISTS` waits, so it lasts
/// longer than the 3 s after which it reports, however fast this machine cancels the rest.
async fn stall_redis_once_writing(redis: &RedisServer, db: &TestDb) {
    wait_until(Duration::from_secs(60), "the pass to write", || async {
        db.count_status(2).await > 0
    })
    .await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .query(&mut redis.conn(0))
        .expect("CLIENT PAUSE");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_pass_logs_its_progress_at_the_workers_start_and_by_hand() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    overdue_orders(&db, LARGE).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=60");

    // The worker's first reconciliation meets the whole backlog.
    let started = Instant::now();
    let mut worker = app.start_worker(&[]);
    stall_redis_once_writing(&redis, &db).await;
    wait_until(
        Duration::from_secs(120),
        "the backlog cancelled",
        || async { db.count_status(2).await == LARGE as usize },
    )
    .await;
    worker.wait_for_event("sweep_found_overdue", 1, Duration::from_secs(10));
    worker.stop(Duration::from_secs(20));
    println!(
        "the worker's first pass: {LARGE} orders in {:?}",
        started.elapsed()
    );
    let log = worker.log();
    let total = checked_progress(&worker.json_lines(), LARGE, &log);
    assert_eq!(total, LARGE);
    let found = &worker.events("sweep_found_overdue")[0];
    assert_eq!(found["examined"], total, "{found}");
    assert!(
        worker
            .events("sweep_progress")
            .iter()
            .all(|l| l["pass"] == "sweep at start")
    );

    // The same backlog again, swept by hand.
    db.conn()
        .await
        .query_drop("UPDATE orders SET status = 0")
        .await
        .expect("unpaid again");
    let started = Instant::now();
    let sweep = Run::start(&app, &["sweep"]);
    stall_redis_once_writing(&redis, &db).await;
    let (status, stderr) = sweep.finish();
    println!("sweep by hand: {LARGE} orders in {:?}", started.elapsed());
    assert!(status.success(), "{stderr}");
    let lines = json_lines(&stderr);
    let total = checked_progress(&lines, LARGE, &stderr);
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "sweep_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{stderr}");
    assert_eq!(finished[0]["examined"], total);
    assert_eq!(finished[0]["cancelled"], LARGE);
    assert_eq!(db.count_status(2).await, LARGE as usize);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_on_a_terminal_draws_a_bar_on_stderr() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    overdue_orders(&db, 3000).await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=60");
    // `script` gives the command a terminal (stdout to /dev/null: what remains is stderr);
    // `stty` gives that terminal a size, as a real one has.
    let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
    let inner = format!(
        "stty cols 120 rows 40; {} --env {} sweep --dry-run > /dev/null",
        quote(BIN),
        quote(&app.env_file().to_string_lossy())
    );
    let mut command = Command::new("script");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .args(["-qec", &inner, "/dev/null"]);
    let output = run_bounded(command, Duration::from_secs(60));
    let screen = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{screen}");
    assert!(
        screen.contains("sweep (dry run) [") && screen.contains("3000/3000 orders examined"),
        "the bar, to the end: {screen:?}"
    );
    assert!(
        screen.contains("/s, eta "),
        "a rate and an estimate: {screen:?}"
    );
    assert!(
        !screen.contains("sweep_progress"),
        "no log lines beside the bar: {screen:?}"
    );
    assert_eq!(db.count_status(2).await, 0, "a dry run writes nothing");
}
