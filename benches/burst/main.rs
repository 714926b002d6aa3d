//! The throughput and latency benchmark: order-expire against the physical limits of a burst
//! (Redis's emission and what the database alone can do) and against the blog post's PHP
//! command, all in one run on private servers.
//!
//! ```text
//! cargo bench --bench burst                  # the full run: bursts of 10k-200k through the
//!                                            # floor and 1, 2 and 4 workers, 1M pending orders,
//!                                            # 60 s steady, lateness, PHP (about 20 minutes)
//! cargo bench --bench burst -- --smoke       # every section at small sizes (what
//!                                            # `cargo test --all-targets`, and so CI, runs)
//! cargo bench --bench burst -- --sizes 100000 --workers 1,2 --no-php --no-million
//! cargo bench --bench burst -- --only-pgsql  # the PostgreSQL table alone (`--write` to keep it)
//! ```
//!
//! One private MariaDB (Debian's settings, `database.rs`) serves every section, so its counters
//! and CPU are the run's own; every run gets a fresh database and a fresh redis-server with
//! keyspace notifications on. Per burst size N:
//! * the floor (`floor.rs`): the worker's own transactions on a fresh copy of the burst, issued
//!   by a client that knows every id, over the worker's connection count;
//! * order-expire with each worker count (`measure.rs`): N unpaid orders whose keys expire at
//!   one instant (`PXAT`); Redis's emission (an independent subscriber's last event) and the
//!   drain (the last commit in the workers' JSON logs), both from the deadline; peak RSS, CPU per
//!   process and the database's row counters over the drain.
//!
//! Then the memory of 1M pending orders (`measure.rs`), a steady 1,000 events a second against
//! the database's own single-order commit latency at that rate, lateness among 100,000 other
//! TTL keys (`steady.rs`), the same bursts through the PHP command (`php.rs`), and the
//! PostgreSQL table: a burst on an app on `DB_CONNECTION=pgsql` through the floor, one and two
//! workers, on a private PostgreSQL 15 (`pgsql.rs`).
//!
//! Every section checks its own outcome (every order cancelled exactly once, stock exact): a
//! failed check makes the run exit non-zero; a missed performance target never does. The full
//! run writes `docs/bench/results.md`, `docs/bench/drain.svg` and the numbers of
//! `docs/performance.md` (`report.rs`, `chart.rs`, `page.rs`).

#[path = "../../tests/common/mod.rs"]
mod common;

mod chart;
mod database;
mod emission;
mod floor;
mod logs;
mod measure;
mod options;
mod page;
mod pgsql;
mod php;
mod process;
mod report;
mod results;
mod steady;
mod targets;

use std::path::Path;

use database::BenchServer;
use options::Options;
use process::cpu_line;
use results::Results;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = Options::parse(&args);
    let started = std::time::Instant::now();
    eprintln!(
        "{} run: sizes {:?}, workers {:?}, steady {} s, 1M burst {:?}, PHP {:?}",
        if o.smoke { "smoke" } else { "full" },
        o.sizes,
        o.workers,
        o.steady_seconds,
        o.million,
        o.php.then_some(&o.php_sizes)
    );
    if o.only_pgsql {
        let problems = pgsql_part(&o).await;
        finish(started, &problems);
        return;
    }
    let server = BenchServer::start().await;
    eprintln!(
        "private MariaDB on port {}: pid {:?} from its pid file, {:?} from its listening socket; {}",
        server.port(),
        server.pid,
        server.pid_by_socket,
        database::DEBIAN_DEFAULTS.join(" ")
    );
    if server.pid.is_none() || server.pid != server.pid_by_socket {
        eprintln!("the two ways of finding mariadbd disagree: its CPU figures may be wrong");
    }
    let mut r = Results::new(o.clone());
    for size in &o.sizes {
        let f = floor::burst(&server, *size, o.connections).await;
        eprintln!(
            "floor {size}: {:?} ms; CPU {}; {}",
            f.drain_ms,
            cpu_line(&f.cpu),
            f.counters.line()
        );
        r.floors.push(f);
        for workers in &o.workers {
            let run = measure::burst(&server, *size, *workers, &o.worker_args).await;
            eprintln!(
                "order-expire {size} x {workers}: idle {:?} ms after start, emission {:?} ms, drain {:?} ms, peak RSS {:?} KiB{}; CPU {}; {}",
                run.settled_ms,
                run.emission_ms,
                run.drain_ms,
                run.peak_rss_kib,
                if run.write_paths.is_empty() {
                    String::new()
                } else {
                    format!(", write_path {}", run.write_paths.join(","))
                },
                cpu_line(&run.cpu),
                run.counters.line()
            );
            r.ours.push(run);
        }
    }
    if let Some(size) = o.million {
        let m = measure::million(&server, size, &o.worker_args).await;
        eprintln!(
            "pending {size}: RSS idle {:?} KiB, pending {:?} KiB, peak {:?} KiB ({:?} bytes per order), emission {:?} ms, drain {:?} ms",
            m.base_kib,
            m.pending_kib,
            m.peak_kib,
            m.bytes_per_order(),
            m.emission_ms,
            m.drain_ms
        );
        r.million = Some(m);
    }
    let single = floor::single_commits(&server, o.steady_seconds, o.connections).await;
    eprintln!(
        "database single commits at 1k/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {}",
        single.p50_ms, single.p99_ms, single.max_ms, single.orders
    );
    r.single = Some(single);
    let s = steady::steady(&server, o.steady_seconds, &o.worker_args).await;
    eprintln!(
        "steady 1k/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {}",
        s.p50_ms, s.p99_ms, s.max_ms, s.orders
    );
    r.steady = Some(s);
    let l = steady::lateness(&server, o.lateness_keys, 200, &o.worker_args).await;
    eprintln!(
        "lateness among {} TTL keys: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        o.lateness_keys, l.p50_ms, l.p99_ms, l.max_ms
    );
    r.lateness = Some(l);
    if o.php {
        for size in &o.php_sizes {
            let p = php::burst(&server, *size).await;
            eprintln!(
                "PHP {size}: drain {:?} ms ({} cancelled), CPU {} s",
                p.drain_ms,
                p.cancelled,
                p.cpu_s
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "-".into())
            );
            r.php.push(p);
        }
    }
    let header = header(&server).await;
    println!(
        "{header}\n\n{}\n{}",
        report::summary(&r),
        report::details(&r)
    );
    if o.write {
        write_outputs(&r, &header);
    }
    let mut problems = r.problems();
    drop(server);
    problems.extend(pgsql_part(&o).await);
    finish(started, &problems);
}

/// How long the run took; exits non-zero when a correctness check failed.
fn finish(started: std::time::Instant, problems: &[String]) {
    eprintln!("took {:.0} s", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        eprintln!("correctness checks failed:");
        for p in problems {
            eprintln!("  {p}");
        }
        std::process::exit(1);
    }
}

/// The PostgreSQL part (`pgsql.rs`): prints its table, writes it between its markers of the
/// performance page when the run writes; returns its correctness problems.
async fn pgsql_part(o: &Options) -> Vec<String> {
    if o.pgsql_sizes.is_empty() {
        return Vec::new();
    }
    let server = pgsql::server();
    let workers: Vec<usize> = if o.only_pgsql || o.workers.is_empty() {
        vec![1, 2]
    } else {
        o.workers.iter().copied().filter(|w| *w <= 2).collect()
    };
    let runs = pgsql::run(
        &server,
        &o.pgsql_sizes,
        &workers,
        o.connections,
        &o.worker_args,
    )
    .await;
    let header = format!(
        "Generated by `cargo bench --bench burst` on {}: {} cores, PostgreSQL {} (private server: {}).",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        pgsql::version(&server).await,
        pgsql::DEBIAN_DEFAULTS.join(" ")
    );
    let table = pgsql::table(&runs, &header);
    println!("{table}");
    if o.write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(page::PATH);
        let rewritten = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                page::rewrite_between(&text, &table, (page::PGSQL_BEGIN, page::PGSQL_END))
            })
            .and_then(|new| std::fs::write(&path, new).map_err(|e| e.to_string()));
        if let Err(e) = rewritten {
            eprintln!("cannot write the PostgreSQL table of {}: {e}", page::PATH);
        }
    }
    runs.into_iter().flat_map(|r| r.problems).collect()
}

/// Where the numbers come from: date, cores, server versions and settings.
async fn header(server: &BenchServer) -> String {
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    format!(
        "Generated by `cargo bench --bench burst` on {}: {} cores, redis-server {redis}, MariaDB {} (private server: {}).",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        server.version().await,
        database::DEBIAN_DEFAULTS.join(" ")
    )
}

/// `docs/bench/results.md`, `docs/bench/drain.svg` and the numbers of `docs/performance.md`.
fn write_outputs(r: &Results, header: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("docs/bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create docs/bench: {e}");
        return;
    }
    if let Err(e) = std::fs::write(dir.join("results.md"), report::document(r, header)) {
        eprintln!("cannot write docs/bench/results.md: {e}");
    }
    if let Err(e) = chart::draw(&dir.join("drain.svg"), r) {
        eprintln!("cannot draw docs/bench/drain.svg: {e}");
    }
    let path = root.join(page::PATH);
    let body = format!("{header}\n\n{}", report::summary(r));
    match std::fs::read_to_string(&path).map_err(|e| e.to_string()) {
        Ok(text) => match page::rewrite(&text, &body) {
            Ok(new) => {
                if let Err(e) = std::fs::write(&path, new) {
                    eprintln!("cannot write {}: {e}", page::PATH);
                }
            }
            Err(e) => eprintln!("{e}"),
        },
        Err(e) => eprintln!("cannot read {}: {e}", page::PATH),
    }
}
