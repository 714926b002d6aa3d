//! `order-expire status`: what an operator asks first, read from the servers and the workers,
//! with a verdict and an exit status a monitor can use (as Laravel's `queue:monitor` and
//! `horizon:status` are used).
//!
//! From the app's settings (the same `--env` as every command), one line per fact:
//!
//! * on each master of the cache Redis (the one server, every master of a cluster, the
//!   Sentinel's master): how many connections are subscribed to the `expired` channel now
//!   (`PUBSUB NUMSUB`), and whether keyspace notifications are on (`CONFIG GET`; "unknown"
//!   where `CONFIG` is refused, as managed services do);
//! * the live workers of the orders table (the member slots they hold, `crate::db::members`)
//!   and so the share of the orders each writes;
//! * in reconciliation mode, the unpaid orders past their deadline, and how late the oldest one
//!   whose key is gone is;
//! * with a redis queue's outbox, the jobs waiting for their push and the oldest one's age;
//! * for each worker endpoint (`--metrics-addr`, else the settings' `ORDER_EXPIRE_METRICS_ADDR`),
//!   its readiness, its lateness p99 and its queue depth.
//!
//! The first line is the verdict: `ok`, `degraded: <reasons>` or `unknown: <reasons>` (a fact
//! that decides it could not be read). Exit status 0 for `ok`, 1 otherwise. `--json` prints the
//! same as one object. Every connection and read is bounded ([`facts::FACT_TIMEOUT`]), the facts
//! are read side by side, and nothing is written (an `EXISTS` on a key past its TTL makes
//! Redis expire it, as any read of it does).

mod facts;
mod verdict;

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Settings;
use crate::db::Database;
use crate::error::Error;
use crate::redis::{RedisServers, expired_channel};
use facts::{
    EndpointFacts, FACT_TIMEOUT, Line, OutboxFacts, OverdueFacts, RedisFacts, WorkerFacts,
};
use verdict::Findings;
pub use verdict::Verdict;

/// Everything `status` found; the field names are the keys of `status --json`.
#[derive(Debug, Serialize)]
struct Report {
    /// `ok`, `degraded` or `unknown`.
    verdict: Verdict,
    /// Why, when not `ok`: what degrades first, then what could not be read.
    reasons: Vec<String>,
    /// The channel the workers subscribe to, `__keyevent@<db>__:expired`.
    channel: String,
    /// The cache Redis's masters.
    redis: RedisFacts,
    /// The app's database, where the workers, the overdue orders and the outbox are read.
    database: DatabaseFacts,
    /// The live workers.
    workers: WorkerFacts,
    /// The overdue unpaid orders (`null` without `ORDER_EXPIRE_TTL`).
    overdue: Option<OverdueFacts>,
    /// The outbox (`null` unless jobs go to a redis queue).
    outbox: Option<OutboxFacts>,
    /// Each worker endpoint read.
    endpoints: Vec<EndpointFacts>,
}

impl Report {
    /// Reads every fact, side by side.
    async fn read(settings: &Settings, endpoints: &[String]) -> Self {
        let servers = RedisServers::new(&settings.redis).map_err(|e| e.to_string());
        let db = match tokio::time::timeout(FACT_TIMEOUT, Database::connect(&settings.database, 4))
            .await
        {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) => Err(crate::logging::one_line(&e.to_string())),
            Err(_) => Err(format!(
                "cannot connect to {} at {}: no answer within {} s",
                settings.database.title(),
                settings.database.endpoint(),
                FACT_TIMEOUT.as_secs()
            )),
        };
        let database = DatabaseFacts {
            driver: settings.database.driver(),
            endpoint: settings.database.endpoint(),
            error: db.as_ref().err().cloned(),
        };
        // What the facts read there say when it could not be reached (the reason is said once,
        // on the `database` line).
        let not_reached = format!("{} not reached", settings.database.title());
        let db_ref = db.as_ref().map_err(|_| not_reached.as_str());
        let (redis, workers, overdue, outbox, endpoints) = tokio::join!(
            RedisFacts::read(servers.as_ref().map_err(Clone::clone)),
            WorkerFacts::read(db_ref, settings),
            OverdueFacts::read(settings, db_ref, servers.as_ref().ok()),
            OutboxFacts::read(settings, db_ref),
            EndpointFacts::read_all(endpoints),
        );
        if let Ok(db) = db {
            db.close().await;
        }
        let channel = redis.masters.first().map_or_else(
            || expired_channel(settings.redis.database),
            |m| m.channel.clone(),
        );
        let mut report = Self {
            verdict: Verdict::Ok,
            reasons: Vec::new(),
            channel,
            redis,
            database,
            workers,
            overdue,
            outbox,
            endpoints,
        };
        (report.verdict, report.reasons) = report.judge().verdict();
        report
    }

    fn judge(&self) -> Findings {
        let mut findings = Findings::default();
        self.redis.judge(&mut findings);
        if let Some(error) = &self.database.error {
            // Nothing read there is known: one reason for all of it.
            findings.unknown(error.clone());
        } else {
            self.workers.judge(&mut findings);
            if let Some(overdue) = &self.overdue {
                overdue.judge(&mut findings);
            }
            if let Some(outbox) = &self.outbox {
                outbox.judge(&mut findings);
            }
        }
        for endpoint in &self.endpoints {
            endpoint.judge(&mut findings);
        }
        findings
    }

    /// The verdict line, then one line per fact.
    fn text(&self) -> String {
        let mut out = String::new();
        match self.verdict {
            Verdict::Ok => out.push_str("ok\n"),
            other => {
                let _ = writeln!(out, "{}: {}", other.name(), self.reasons.join("; "));
            }
        }
        let mut lines: Vec<Line> = Vec::new();
        self.redis.lines(&mut lines);
        if let Some(error) = &self.database.error {
            lines.push(("database", format!("unknown: {error}")));
        }
        self.workers.lines(&mut lines);
        match &self.overdue {
            Some(overdue) => overdue.lines(&mut lines),
            None => lines.push((
                "overdue",
                "not measured: ORDER_EXPIRE_TTL is not set (reconciliation off)".into(),
            )),
        }
        if let Some(outbox) = &self.outbox {
            outbox.lines(&mut lines);
        }
        for endpoint in &self.endpoints {
            endpoint.lines(&mut lines);
        }
        if self.endpoints.is_empty() {
            lines.push((
                "worker",
                "no endpoint to read: give --metrics-addr HOST:PORT (or set ORDER_EXPIRE_METRICS_ADDR)"
                    .into(),
            ));
        }
        for (label, text) in lines {
            let _ = writeln!(out, "{label:<13} {text}");
        }
        out
    }
}

/// The app's database as `status` reached it.
#[derive(Debug, Serialize)]
struct DatabaseFacts {
    /// `mysql` or `pgsql`: the app's connection driver (a `mariadb` connection is `mysql`).
    driver: &'static str,
    /// `host:port` (or `unix:`).
    endpoint: String,
    /// Why it could not be reached (`null` when it was): then none of the facts read there is
    /// known, and this is their one reason.
    error: Option<String>,
}

/// The worker endpoints to read: those given (`--metrics-addr`, each `HOST:PORT`), else the
/// settings' own `ORDER_EXPIRE_METRICS_ADDR`, where a worker started with these settings
/// listens (an address of every interface, `0.0.0.0` or `::`, is read on the loopback).
fn endpoints(settings: &Settings, given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        let mut addrs = given.to_vec();
        addrs.dedup();
        return addrs;
    }
    settings
        .metrics_addr
        .map(|addr| vec![super::scrape::reachable(addr).to_string()])
        .unwrap_or_default()
}

/// `order-expire status`: prints the report (one JSON object with `json`) and returns its
/// verdict, whose [`Verdict::exit_code`] the process exits with.
pub async fn command(settings: &Settings, json: bool, given: &[String]) -> Result<Verdict, Error> {
    let report = Report::read(settings, &endpoints(settings, given)).await;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Runtime(format!("cannot print the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(report.verdict)
}
