//! Which workers of one orders table are alive: PostgreSQL session-level advisory locks as
//! member slots, the same [`SLOTS`] slots as on MySQL.
//!
//! Each worker holds one of the slots with `pg_try_advisory_lock(key, slot)` on a connection of
//! its own, kept for its lifetime (not a pooled one: a lock held by a connection back in the
//! pool would outlive its holder's intent). `pg_locks` lists who holds which slot: the live
//! workers. A session-level advisory lock belongs to its session, so when a worker dies its
//! connection closes and the server frees the slot at once, as MySQL frees a named lock. They
//! need no grant and no table.
//!
//! Advisory locks are per database; the key is a hash of the orders table's name (as written in
//! SQL), so workers of another table in the same database never count as members.

use std::time::Duration;

use super::error::PgQueryError;
use super::{Database, PgsqlError};

/// As many slots as on MySQL: more workers than that write alone (every order).
pub(crate) const SLOTS: usize = 64;

/// How long a connect, a lock round or the live-slot query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Who holds the slots of `key`: `(slot, backend pid)`, ascending.
const HOLDERS: &str = "SELECT objid::int8, pid::int8 FROM pg_locks \
     WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::int8::oid \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     ORDER BY objid";

/// What one refresh saw: this worker's slot and backend pid, and every held slot.
pub(crate) struct Seen {
    pub(crate) own: Option<(usize, u64)>,
    pub(crate) live: Vec<(usize, u64)>,
}

/// This worker's member slot and its view of the others.
pub(crate) struct MemberLocks {
    db: Database,
    key: i32,
    name: String,
    conn: Option<tokio_postgres::Client>,
    held: Option<(usize, u64)>,
}

impl MemberLocks {
    pub(crate) fn new(db: Database, orders: &str) -> Self {
        let key = lock_key(orders);
        Self {
            name: format!("pg_advisory_lock({key}, 0..{SLOTS})"),
            db,
            key,
            conn: None,
            held: None,
        }
    }

    /// The first slot's lock, for the start line.
    pub(crate) fn first_name(&self) -> &str {
        &self.name
    }

    /// Makes sure this worker holds a slot, then reads which slots are held; after a failure
    /// the connection is dropped (and the slot with it) and the next call starts over.
    pub(crate) async fn refresh(&mut self) -> Result<Seen, PgsqlError> {
        let result = tokio::time::timeout(QUERY_TIMEOUT * 3, self.try_refresh()).await;
        let result = result.unwrap_or_else(|_| {
            Err(self.db.error(
                "the member check",
                PgQueryError::Pool(format!(
                    "no answer within {} s",
                    (QUERY_TIMEOUT * 3).as_secs()
                )),
            ))
        });
        if result.is_err() {
            self.conn = None;
            self.held = None;
        }
        result
    }

    async fn try_refresh(&mut self) -> Result<Seen, PgsqlError> {
        if self
            .conn
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.held = None;
            let conn = self
                .db
                .own_connection()
                .await
                .map_err(|e| self.db.error("connecting for the member slot", e))?;
            // A worker reads the slots every 250 ms: a session silent for MEMBER_SILENCE
            // belongs to a worker frozen or cut off, and the server ends it (PostgreSQL 14+),
            // freeing its slot for the others to take its orders over. Older servers have no
            // such bound; their sessions end when the connection does.
            let silence = format!(
                "SET idle_session_timeout = '{}s'",
                crate::mysql::members::MEMBER_SILENCE.as_secs()
            );
            if let Err(e) = conn.batch_execute(&silence).await {
                tracing::debug!(error = %e, "idle_session_timeout (PostgreSQL 14+) not set on the member slot's session");
            }
            self.conn = Some(conn);
        }
        let Some(conn) = &self.conn else {
            return Ok(Seen {
                own: None,
                live: Vec::new(),
            });
        };
        let failed = |action: &'static str| move |e: tokio_postgres::Error| (action, e);
        let result: Result<Seen, (&str, tokio_postgres::Error)> = async {
            let mut holders = read_holders(conn, self.key)
                .await
                .map_err(failed("pg_locks (member slots)"))?;
            let pid: i32 = conn
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(failed("pg_backend_pid()"))?
                .get(0);
            let pid = u64::try_from(pid).unwrap_or(0);
            if let Some((slot, id)) = self.held
                && holders.get(slot).copied().flatten() != Some(id)
            {
                self.held = None;
            }
            if self.held.is_none() {
                let free: Vec<usize> = (0..SLOTS).filter(|s| holders[*s].is_none()).collect();
                for slot in free {
                    let slot_key = i32::try_from(slot).unwrap_or(0);
                    let got: bool = conn
                        .query_one(
                            "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                            &[&self.key, &slot_key],
                        )
                        .await
                        .map_err(failed("pg_try_advisory_lock (member slot)"))?
                        .get(0);
                    if got {
                        self.held = Some((slot, pid));
                        holders[slot] = Some(pid);
                        break;
                    }
                    holders[slot] = Some(0);
                }
            }
            Ok(Seen {
                own: self.held,
                live: (0..SLOTS)
                    .filter_map(|s| holders[s].map(|id| (s, id)))
                    .collect(),
            })
        }
        .await;
        result.map_err(|(action, e)| self.db.error(action, e.into()))
    }
}

/// The holder of each slot (`None` where free).
async fn read_holders(
    conn: &tokio_postgres::Client,
    key: i32,
) -> Result<Vec<Option<u64>>, tokio_postgres::Error> {
    // The key is 31 bits: the same number as the oid in classid.
    let class = i64::from(key);
    let rows = conn.query(HOLDERS, &[&class]).await?;
    let mut holders = vec![None; SLOTS];
    for row in rows {
        let slot: i64 = row.get(0);
        let pid: i64 = row.get(1);
        if let Some(h) = usize::try_from(slot).ok().and_then(|s| holders.get_mut(s)) {
            *h = u64::try_from(pid).ok();
        }
    }
    Ok(holders)
}

/// The slots held now, read without taking one (`status`).
pub(crate) async fn held_slots(
    db: &Database,
    orders: &str,
) -> Result<Vec<(usize, u64)>, PgsqlError> {
    let key = lock_key(orders);
    let read = async {
        let conn = db.conn().await.map_err(|e| db.error("connecting", e))?;
        read_holders(&conn, key)
            .await
            .map_err(|e| db.error("pg_locks (member slots)", e.into()))
    };
    let holders = tokio::time::timeout(QUERY_TIMEOUT * 2, read)
        .await
        .map_err(|_| {
            db.error(
                "the member check",
                PgQueryError::Pool(format!(
                    "no answer within {} s",
                    (QUERY_TIMEOUT * 2).as_secs()
                )),
            )
        })??;
    Ok(holders
        .into_iter()
        .enumerate()
        .filter_map(|(slot, holder)| holder.map(|id| (slot, id)))
        .collect())
}

/// The advisory lock key of an orders table: FNV-1a of `order-expire:<table>`, folded to 31
/// bits (stable across builds and platforms, so every version of the worker uses the same).
fn lock_key(orders: &str) -> i32 {
    let hash = format!("order-expire:{orders}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    i32::try_from((hash ^ (hash >> 32)) & 0x7fff_ffff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_orders_table_has_its_own_stable_key() {
        assert_eq!(lock_key("\"orders\""), lock_key("\"orders\""));
        assert_ne!(lock_key("\"orders\""), lock_key("\"orders2\""));
        assert!(lock_key("\"orders\"") >= 0);
    }
}
