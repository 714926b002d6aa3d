//! The facts `status` reads, each from where it lives, each bounded by [`FACT_TIMEOUT`]: what
//! it found (the keys of `status --json`), what that says about the verdict, and its lines.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use super::verdict::Findings;
use crate::cmd::scrape::{self, Quantile};
use crate::config::{QueueTarget, Settings};
use crate::db::Database;
use crate::db::jobs::{OUTBOX_TABLE, OutboxBacklog};
use crate::db::members::held_slots;
use crate::db::orders::ReconcileQueries;
use crate::key::KeyPattern;
use crate::redis::{RedisServers, RedisTarget, publishes_expired};
use crate::sink::jobs::job_table;

/// How long one fact (a server's answers, one worker's endpoint) may take to read.
pub(crate) const FACT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most rows a count reads: beyond it, `status` says "at least".
const COUNT_CAP: u64 = 100_000;
/// The oldest overdue orders whose key is checked, looking for the oldest without one.
const OLDEST_CHECKED: usize = 100;
/// How long past its deadline an order without a key may stay unpaid before `status` calls it
/// degraded: a sweep interval (the sweep cancels it at the latest then) and this margin.
const OVERDUE_MARGIN: Duration = Duration::from_secs(60);
/// How old the outbox's oldest row may be (the drainer pushes every few seconds).
const OUTBOX_STALE: Duration = Duration::from_secs(60);

/// One line of the text output: a label and what it says.
pub(crate) type Line = (&'static str, String);

/// Runs `read` for at most [`FACT_TIMEOUT`]; the error as one line.
async fn bounded<T, E: std::fmt::Display>(
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(FACT_TIMEOUT, read).await {
        Ok(result) => result.map_err(|e| crate::logging::one_line(&e.to_string())),
        Err(_) => Err(format!("no answer within {} s", FACT_TIMEOUT.as_secs())),
    }
}

/// A duration as an operator reads it: `42 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub(crate) fn age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// --- Redis: subscribers and notifications on each master -------------------------------------

/// The masters of the cache Redis: who listens on each, and whether it publishes.
#[derive(Debug, Serialize)]
pub(crate) struct RedisFacts {
    /// `standalone`, `cluster` or `sentinel`.
    pub(crate) topology: &'static str,
    /// One entry per server whose `expired` events the workers must hear.
    pub(crate) masters: Vec<MasterFacts>,
    /// Why the masters could not be found (`null` when they were).
    pub(crate) error: Option<String>,
}

/// One master.
#[derive(Debug, Serialize)]
pub(crate) struct MasterFacts {
    /// `host:port` (`tls://` first for TLS).
    pub(crate) redis: String,
    /// The channel the workers subscribe to there.
    pub(crate) channel: String,
    /// `PUBSUB NUMSUB` of the channel (`null`: not allowed, or not read).
    pub(crate) subscribers: Option<u64>,
    /// `notify-keyspace-events` (`null`: `CONFIG` not allowed, or not read).
    pub(crate) notifications: Option<String>,
    /// Whether those flags publish `expired` key events (`null`: unknown).
    pub(crate) publishes_expired: Option<bool>,
    /// Why this master could not be read (`null` when it was).
    pub(crate) error: Option<String>,
}

impl RedisFacts {
    /// Finds the masters (`servers`, or why it could not be built) and reads each at once.
    pub(crate) async fn read(servers: Result<&RedisServers, String>) -> Self {
        let servers = match servers {
            Ok(servers) => servers,
            Err(error) => return Self::failed("unknown", error),
        };
        let topology = match bounded(servers.refresh()).await {
            Ok((_, topology)) => topology,
            Err(error) => return Self::failed(servers.kind(), error),
        };
        let mut masters = join_all(topology.masters().iter().map(MasterFacts::read)).await;
        masters.extend(topology.failed().iter().map(|endpoint| MasterFacts {
            redis: endpoint.clone(),
            channel: crate::redis::expired_channel(0),
            subscribers: None,
            notifications: None,
            publishes_expired: None,
            error: Some("marked failed by the cluster, no replica has taken over".into()),
        }));
        Self {
            topology: servers.kind(),
            masters,
            error: None,
        }
    }

    fn failed(topology: &'static str, error: String) -> Self {
        Self {
            topology,
            masters: Vec::new(),
            error: Some(error),
        }
    }

    pub(crate) fn judge(&self, findings: &mut Findings) {
        if let Some(error) = &self.error {
            findings.unknown(format!("cannot find the cache Redis's masters: {error}"));
        }
        for m in &self.masters {
            if let Some(error) = &m.error {
                findings.unknown(format!("cannot read {}: {error}", m.redis));
                continue;
            }
            if m.subscribers == Some(0) {
                findings.degraded(format!("no subscriber on {} at {}", m.channel, m.redis));
            }
            if m.publishes_expired == Some(false) {
                findings.degraded(format!(
                    "keyspace notifications off at {} (notify-keyspace-events \"{}\", needs Ex)",
                    m.redis,
                    m.notifications.as_deref().unwrap_or_default()
                ));
            }
        }
    }

    pub(crate) fn lines(&self, out: &mut Vec<Line>) {
        if let Some(error) = &self.error {
            out.push(("redis", format!("unknown: {error}")));
        }
        for m in &self.masters {
            if let Some(error) = &m.error {
                out.push(("redis", format!("{}: unknown: {error}", m.redis)));
                continue;
            }
            let subscribers = match m.subscribers {
                Some(n) => format!("{n} on {}", m.channel),
                None => format!(
                    "unknown on {} (PUBSUB NUMSUB is not allowed: grant +pubsub|numsub)",
                    m.channel
                ),
            };
            out.push(("subscribers", format!("{}: {subscribers}", m.redis)));
            let notifications = match (&m.notifications, m.publishes_expired) {
                (Some(flags), Some(true)) => format!("on (\"{flags}\")"),
                (Some(flags), _) => format!("off (\"{flags}\", needs Ex)"),
                (None, _) => "unknown (CONFIG is not allowed)".to_string(),
            };
            out.push(("notifications", format!("{}: {notifications}", m.redis)));
        }
    }
}

impl MasterFacts {
    async fn read(master: &RedisTarget) -> Self {
        let channel = master.expired_channel();
        let read = async {
            let mut conn = master.connect().await?;
            let subscribers = master.subscribers(&mut conn, &channel).await?;
            let flags = master.notification_flags(&mut conn).await?;
            Ok::<_, crate::redis::RedisError>((subscribers, flags))
        };
        let (subscribers, notifications, error) = match bounded(read).await {
            Ok((subscribers, flags)) => (subscribers, flags, None),
            Err(error) => (None, None, Some(error)),
        };
        Self {
            redis: master.endpoint().to_string(),
            publishes_expired: notifications.as_deref().map(publishes_expired),
            channel,
            subscribers,
            notifications,
            error,
        }
    }
}

// --- MySQL: the live workers, the overdue orders, the outbox ---------------------------------

/// The workers of the orders table alive now: the member slots held.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerFacts {
    /// The orders table whose workers these are.
    pub(crate) table: String,
    /// How many hold a slot (`null`: not read).
    pub(crate) live: Option<usize>,
    /// The slots held, each with the MySQL connection id holding it.
    pub(crate) slots: Vec<SlotFact>,
    /// Why the slots could not be read (`null` when they were).
    pub(crate) error: Option<String>,
}

/// A held member slot.
#[derive(Debug, Serialize)]
pub(crate) struct SlotFact {
    pub(crate) slot: usize,
    pub(crate) connection: u64,
}

impl WorkerFacts {
    pub(crate) async fn read(db: Result<&Database, &str>, settings: &Settings) -> Self {
        let table = settings.schema.orders.as_str().to_string();
        let result = match db {
            Ok(db) => bounded(held_slots(db, &settings.schema.orders.to_string())).await,
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(held) => Self {
                table,
                live: Some(held.len()),
                slots: held
                    .into_iter()
                    .map(|(slot, connection)| SlotFact { slot, connection })
                    .collect(),
                error: None,
            },
            Err(error) => Self {
                table,
                live: None,
                slots: Vec::new(),
                error: Some(error),
            },
        }
    }

    pub(crate) fn judge(&self, findings: &mut Findings) {
        match (self.live, &self.error) {
            (_, Some(error)) => findings.unknown(format!("cannot read the workers: {error}")),
            (Some(0), _) => findings.degraded(format!(
                "no worker holds a member slot of the table {} (none is running)",
                self.table
            )),
            _ => {}
        }
    }

    pub(crate) fn lines(&self, out: &mut Vec<Line>) {
        let text = match (self.live, &self.error) {
            (_, Some(error)) => format!("unknown: {error}"),
            (Some(0) | None, _) => format!("none alive (no member slot of {} is held)", self.table),
            (Some(n), _) => {
                let slots: Vec<String> = self.slots.iter().map(|s| s.slot.to_string()).collect();
                format!(
                    "{n} alive (member slot{} {} of {}): each writes 1/{n} of the orders",
                    if n == 1 { "" } else { "s" },
                    slots.join(", "),
                    self.table
                )
            }
        };
        out.push(("workers", text));
    }
}

/// Unpaid orders past their deadline (`created_at + ORDER_EXPIRE_TTL`), in reconciliation mode.
#[derive(Debug, Serialize)]
pub(crate) struct OverdueFacts {
    /// `ORDER_EXPIRE_TTL`, seconds.
    pub(crate) ttl_seconds: u64,
    /// How long past its deadline an order without a key may stay before the verdict is
    /// `degraded`: the sweep interval plus a minute.
    pub(crate) grace_seconds: u64,
    /// Unpaid orders past the TTL, with or without their key (`null`: not read).
    pub(crate) count: Option<u64>,
    /// The count stopped at its bound: there are at least `count`.
    pub(crate) count_capped: bool,
    /// How many of the oldest had their key checked, and how many still had it (the app gave
    /// them a longer TTL: not due).
    pub(crate) checked: usize,
    pub(crate) still_keyed: usize,
    /// The oldest without its key among those checked (`null`: none).
    pub(crate) oldest: Option<OldestOverdue>,
    /// Why this could not be read (`null` when it was).
    pub(crate) error: Option<String>,
}

/// The oldest overdue order whose key is gone.
#[derive(Debug, Serialize)]
pub(crate) struct OldestOverdue {
    pub(crate) order: u64,
    /// How long past its deadline it is.
    pub(crate) overdue_seconds: u64,
}

impl OverdueFacts {
    /// `None` without `ORDER_EXPIRE_TTL`: no deadline to be past.
    pub(crate) async fn read(
        settings: &Settings,
        db: Result<&Database, &str>,
        redis: Option<&RedisServers>,
    ) -> Option<Self> {
        let ttl = settings.recovery.order_ttl?;
        let mut facts = Self {
            ttl_seconds: ttl.as_secs(),
            grace_seconds: (settings.recovery.sweep_interval + OVERDUE_MARGIN).as_secs(),
            count: None,
            count_capped: false,
            checked: 0,
            still_keyed: 0,
            oldest: None,
            error: None,
        };
        let result = match db {
            Ok(db) => bounded(facts.read_from(settings, ttl, db, redis)).await,
            Err(error) => Err(error.to_string()),
        };
        facts.error = result.err();
        Some(facts)
    }

    async fn read_from(
        &mut self,
        settings: &Settings,
        ttl: Duration,
        db: &Database,
        redis: Option<&RedisServers>,
    ) -> Result<(), crate::Error> {
        let ttl_signed = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        let now = jiff::Timestamp::now();
        let cutoff = settings
            .timezone
            .eloquent(now.checked_sub(ttl_signed).unwrap_or(jiff::Timestamp::MIN));
        // The sweep's own statements, on the `(status, created_at)` index.
        let sql = ReconcileQueries::new(db, &settings.schema, OLDEST_CHECKED);
        let mut conn = db.conn().await.map_err(|e| db.error("connecting", e))?;
        let count = sql
            .count(&mut conn, &cutoff, COUNT_CAP + 1)
            .await
            .map_err(|e| db.error("counting overdue unpaid orders", e))?;
        self.count_capped = count > COUNT_CAP;
        self.count = Some(count.min(COUNT_CAP));
        let oldest = sql
            .page(&mut conn, &cutoff, None)
            .await
            .map_err(|e| db.error("reading the oldest overdue unpaid orders", e))?;
        drop(conn);
        let keyed = match (redis, oldest.is_empty()) {
            (Some(redis), false) => {
                let pattern = KeyPattern::new(&settings.keys);
                let keys = oldest.iter().map(|(id, _)| pattern.key_for(*id));
                redis
                    .connect()
                    .await?
                    .exists(keys, "status")
                    .await?
                    .complete()?
            }
            // Redis is not reachable: its own line says so, and the oldest counts as keyless.
            _ => vec![false; oldest.len()],
        };
        self.checked = oldest.len();
        self.still_keyed = keyed.iter().filter(|k| **k).count();
        let first_keyless = oldest.iter().zip(&keyed).find(|(_, keyed)| !**keyed);
        self.oldest = first_keyless.map(|((order, created), _)| {
            let deadline = created
                .civil()
                .and_then(|c| c.to_zoned(settings.timezone.tz.clone()).ok())
                .and_then(|z| z.timestamp().checked_add(ttl_signed).ok());
            OldestOverdue {
                order: *order,
                overdue_seconds: deadline
                    .map(|d| now.duration_since(d).as_secs().max(0).unsigned_abs())
                    .unwrap_or(0),
            }
        });
        Ok(())
    }

    pub(crate) fn judge(&self, findings: &mut Findings) {
        if let Some(error) = &self.error {
            findings.unknown(format!("cannot read the overdue orders: {error}"));
        }
        if let Some(oldest) = &self.oldest
            && oldest.overdue_seconds > self.grace_seconds
        {
            findings.degraded(format!(
                "order {} is unpaid {} past its deadline, its key gone (more than a sweep interval and a minute)",
                oldest.order,
                age(oldest.overdue_seconds)
            ));
        }
    }

    pub(crate) fn lines(&self, out: &mut Vec<Line>) {
        let text = match (&self.error, self.count) {
            (Some(error), _) => format!("unknown: {error}"),
            (None, Some(count)) => {
                let mut text = format!(
                    "{}{count} unpaid orders past ORDER_EXPIRE_TTL ({} s)",
                    if self.count_capped { "at least " } else { "" },
                    self.ttl_seconds
                );
                if let Some(oldest) = &self.oldest {
                    text.push_str(&format!(
                        "; the oldest without its key: order {}, {} past its deadline",
                        oldest.order,
                        age(oldest.overdue_seconds)
                    ));
                }
                if self.still_keyed > 0 {
                    text.push_str(&format!(
                        "; {} of the {} oldest still have their key (not due)",
                        self.still_keyed, self.checked
                    ));
                }
                text
            }
            (None, None) => "unknown".to_string(),
        };
        out.push(("overdue", text));
    }
}

/// Jobs written to the outbox and not yet pushed to the redis queue.
#[derive(Debug, Serialize)]
pub(crate) struct OutboxFacts {
    /// The outbox table.
    pub(crate) table: String,
    /// Rows waiting (`null`: not read), counted up to a bound.
    pub(crate) rows: Option<u64>,
    pub(crate) rows_capped: bool,
    /// How long ago the oldest waiting row was written (`null`: none waits, or not read).
    pub(crate) oldest_age_seconds: Option<u64>,
    /// Why this could not be read (`null` when it was).
    pub(crate) error: Option<String>,
}

impl OutboxFacts {
    /// `None` unless jobs go to a redis queue through the outbox.
    pub(crate) async fn read(settings: &Settings, db: Result<&Database, &str>) -> Option<Self> {
        let dispatch = settings.dispatch.as_ref()?;
        if !matches!(dispatch.target, QueueTarget::Redis { .. }) {
            return None;
        }
        let mut facts = Self {
            table: format!("{}{}", settings.database.table_prefix(), OUTBOX_TABLE),
            rows: None,
            rows_capped: false,
            oldest_age_seconds: None,
            error: None,
        };
        let db = match db {
            Ok(db) => db,
            Err(error) => {
                facts.error = Some(error.to_string());
                return Some(facts);
            }
        };
        let read = async {
            let table = job_table(dispatch, settings.database.table_prefix(), db)?;
            let sql = OutboxBacklog::new(db, table.table());
            let mut conn = db.conn().await.map_err(|e| db.error("connecting", e))?;
            let rows = sql
                .count(&mut conn, COUNT_CAP + 1)
                .await
                .map_err(|e| db.error("counting the outbox's rows", e))?;
            let oldest = sql
                .oldest(&mut conn)
                .await
                .map_err(|e| db.error("reading the outbox's oldest row", e))?;
            Ok::<_, crate::db::DbError>((rows, oldest))
        };
        match bounded(read).await {
            Ok((rows, oldest)) => {
                facts.rows_capped = rows > COUNT_CAP;
                facts.rows = Some(rows.min(COUNT_CAP));
                facts.oldest_age_seconds =
                    oldest.map(|at| unix_now().saturating_sub(at).max(0).unsigned_abs());
            }
            Err(error) => facts.error = Some(error),
        }
        Some(facts)
    }

    pub(crate) fn judge(&self, findings: &mut Findings) {
        if let Some(error) = &self.error {
            findings.unknown(format!("cannot read the outbox: {error}"));
        }
        if let Some(waited) = self.oldest_age_seconds
            && waited > OUTBOX_STALE.as_secs()
        {
            findings.degraded(format!(
                "the outbox's oldest job has waited {} for its push to the redis queue",
                age(waited)
            ));
        }
    }

    pub(crate) fn lines(&self, out: &mut Vec<Line>) {
        let text = match (&self.error, self.rows, self.oldest_age_seconds) {
            (Some(error), _, _) => format!("unknown: {error}"),
            (None, Some(rows), Some(waited)) => format!(
                "{}{rows} jobs waiting for the redis queue in {}, the oldest written {} ago",
                if self.rows_capped { "at least " } else { "" },
                self.table,
                age(waited)
            ),
            _ => format!("empty ({})", self.table),
        };
        out.push(("outbox", text));
    }
}

// --- The workers' endpoints --------------------------------------------------------------------

/// What one worker's endpoint said.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointFacts {
    /// `host:port`.
    pub(crate) addr: String,
    /// `/readyz` answered 200 (`null`: not read).
    pub(crate) ready: Option<bool>,
    /// Its reason when not ready.
    pub(crate) not_ready: Option<String>,
    /// The lateness p99 since the worker started (`null`: no order cancelled yet, or not read).
    pub(crate) lateness_p99_seconds: Option<f64>,
    /// The p99 lies beyond the histogram's last bucket: the value is that bound, a floor.
    pub(crate) lateness_p99_beyond: bool,
    /// Orders the lateness histogram counts.
    pub(crate) lateness_count: Option<u64>,
    /// `order_expire_queue_depth`: expired orders waiting for a writer.
    pub(crate) queue_depth: Option<f64>,
    /// Why the endpoint could not be read (`null` when it was).
    pub(crate) error: Option<String>,
}

impl EndpointFacts {
    /// Reads every endpoint at once.
    pub(crate) async fn read_all(addrs: &[String]) -> Vec<Self> {
        join_all(addrs.iter().map(|addr| Self::read(addr))).await
    }

    async fn read(addr: &str) -> Self {
        let mut facts = Self {
            addr: addr.to_string(),
            ready: None,
            not_ready: None,
            lateness_p99_seconds: None,
            lateness_p99_beyond: false,
            lateness_count: None,
            queue_depth: None,
            error: None,
        };
        match bounded(scrape::read(addr)).await {
            Ok(view) => {
                facts.ready = Some(view.ready.is_ok());
                facts.not_ready = view.ready.err();
                if let Some(Quantile { seconds, beyond }) = view.lateness_p99 {
                    facts.lateness_p99_seconds = Some(seconds);
                    facts.lateness_p99_beyond = beyond;
                }
                facts.lateness_count = Some(view.lateness_count);
                facts.queue_depth = view.queue_depth;
            }
            Err(error) => facts.error = Some(error),
        }
        facts
    }

    pub(crate) fn judge(&self, findings: &mut Findings) {
        if let Some(error) = &self.error {
            findings.unknown(format!(
                "no answer from the worker at {}: {error}",
                self.addr
            ));
        }
        if let Some(reason) = &self.not_ready {
            findings.degraded(format!(
                "the worker at {} is not ready: {reason}",
                self.addr
            ));
        }
    }

    pub(crate) fn lines(&self, out: &mut Vec<Line>) {
        if let Some(error) = &self.error {
            out.push(("worker", format!("{}: unknown: {error}", self.addr)));
            return;
        }
        let ready = match &self.not_ready {
            Some(reason) => format!("not ready: {reason}"),
            None => "ready".to_string(),
        };
        let count = self.lateness_count.unwrap_or(0);
        let lateness = match self.lateness_p99_seconds {
            Some(p99) if self.lateness_p99_beyond => {
                format!("lateness p99 over {p99} s ({count} orders since it started)")
            }
            Some(p99) => format!("lateness p99 {p99:.3} s ({count} orders since it started)"),
            None => "lateness p99 none yet (no order cancelled since it started)".to_string(),
        };
        let depth = self
            .queue_depth
            .map_or_else(|| "unknown".to_string(), |d| format!("{d}"));
        out.push((
            "worker",
            format!("{}: {ready}; {lateness}; queue depth {depth}", self.addr),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_as_an_operator_says_them() {
        assert_eq!(age(42), "42 s");
        assert_eq!(age(192), "3 min 12 s");
        assert_eq!(age(7500), "2 h 5 min");
        assert_eq!(age(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
    }
}
