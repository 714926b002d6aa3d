//! Our reading of the app next to its own Laravel's: `check --compare` shows every resolved
//! setting on which they differ.
//!
//! Both sides go through the same resolver; what differs is where Laravel's configuration came
//! from (our evaluator of `config/*.php`, or the values the app's Laravel computed), so a
//! difference is a construct our evaluator reads otherwise than PHP. Secrets are compared, never
//! shown.

use super::dispatch::QueueTarget;
use super::resolved::{DatabaseSettings, MysqlTls, RedisTls};
use super::settings::Settings;

/// One resolved setting on which the two readings differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What it is, e.g. `redis.prefix` or `mysql.port`.
    pub field: &'static str,
    /// Our reading (`***` for a secret).
    pub ours: String,
    /// Laravel's (`***` for a secret).
    pub laravel: String,
}

/// Every field of `ours` and `laravel` that differs, in a fixed order.
pub fn differences(ours: &Settings, laravel: &Settings) -> Vec<Difference> {
    let (a, b) = (fields(ours), fields(laravel));
    a.into_iter()
        .zip(b)
        .filter(|((_, x, _), (_, y, _))| x != y)
        .map(|((field, x, secret), (_, y, _))| {
            let shown = |v: String| if secret { "***".to_string() } else { v };
            Difference {
                field,
                ours: shown(x),
                laravel: shown(y),
            }
        })
        .collect()
}

/// The resolved settings that come from Laravel's configuration: (name, value, secret).
fn fields(s: &Settings) -> Vec<(&'static str, String, bool)> {
    let r = &s.redis;
    let plain = |name, value: String| (name, value, false);
    let mut out = vec![
        plain("redis.topology", r.topology.to_string()),
        plain("redis.database", r.database.to_string()),
        plain("redis.client", r.client.clone()),
        plain("redis.username", format!("{:?}", r.username)),
        ("redis.password", format!("{:?}", r.password), true),
        plain("redis.tls", redis_tls(&r.tls)),
        plain("redis.prefix", s.keys.connection_prefix.clone()),
        plain("cache.prefix", s.keys.store_prefix.clone()),
        plain("timezone", s.timezone.name.clone()),
    ];
    let queue = s.dispatch.as_ref().map_or_else(String::new, |d| {
        let target = match &d.target {
            QueueTarget::Database { table } => format!("table {table}"),
            QueueTarget::Redis { redis, prefix } => format!(
                "list {prefix}queues:{} on {} database {}",
                d.queue, redis.endpoint, redis.database
            ),
        };
        format!("{} ({}), {target}", d.connection, d.target.driver())
    });
    out.extend(database_fields(s));
    out.push(plain("dispatch.queue", queue));
    out
}

/// The database connection's fields, named by its driver (`mysql.*` or `pgsql.*`).
fn database_fields(s: &Settings) -> Vec<(&'static str, String, bool)> {
    let plain = |name, value: String| (name, value, false);
    match &s.database {
        DatabaseSettings::Mysql(m) => vec![
            plain("mysql.endpoint", m.endpoint()),
            plain("mysql.database", m.database.clone()),
            plain("mysql.username", m.username.clone()),
            ("mysql.password", m.password.clone(), true),
            plain("mysql.table_prefix", m.table_prefix.clone()),
            plain("mysql.session", m.session.statements().join("; ")),
            plain(
                "mysql.tls",
                m.tls.as_ref().map_or_else(String::new, mysql_tls),
            ),
        ],
        DatabaseSettings::Pgsql(p) => vec![
            plain("pgsql.endpoint", p.endpoint()),
            plain("pgsql.database", p.database.clone()),
            plain("pgsql.username", p.username.clone()),
            ("pgsql.password", p.password.clone(), true),
            plain("pgsql.table_prefix", p.table_prefix.clone()),
            plain("pgsql.session", p.session.statements().join("; ")),
            plain(
                "pgsql.tls",
                format!(
                    "{}, root {:?}, cert {:?}, key {:?}",
                    p.tls.mode.name(),
                    p.tls.root_cert,
                    p.tls.client_cert,
                    p.tls.client_key
                ),
            ),
        ],
    }
}

fn redis_tls(t: &RedisTls) -> String {
    format!(
        "ca {:?}, cert {:?}, key {:?}, verify {}",
        t.ca_file, t.client_cert, t.client_key, t.verify_peer
    )
}

fn mysql_tls(t: &MysqlTls) -> String {
    format!(
        "ca {:?}, cert {:?}, key {:?}, verify {}",
        t.ca_file, t.client_cert, t.client_key, t.verify_peer
    )
}
