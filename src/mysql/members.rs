//! Which workers of one orders table are alive: MySQL named locks as member slots.
//!
//! Every worker hears every `expired` event, so replicas must agree on who writes which order
//! or each order is locked and written once per replica. They agree through the database they
//! already share, with nothing to deploy: each worker holds one of [`SLOTS`] named locks
//! (`GET_LOCK(name, 0)`), and one `SELECT IS_USED_LOCK(...)` over all of them is the set of
//! live workers. Named locks exist on every supported server (MySQL 5.7, MariaDB 10.3 and
//! later), need no grant and no table, and belong to a connection: when a worker dies its
//! connection closes and the server frees its slot at once, which is what lets the others take
//! its orders over without waiting for a lease to run out.
//!
//! The slot is held on a connection of its own, kept for the worker's lifetime (not a pooled
//! one: the pool recycles connections, and a lock held by a connection back in the pool would
//! outlive its holder's intent). When that connection drops the slot is lost with it; the next
//! [`MemberLocks::refresh`] reconnects and takes the first free slot again.
//!
//! Lock names are server-wide, so they are made from the database and the orders table: workers
//! of another app on the same server never count as members. A name holds at most 64
//! characters, hence the hash of that long part.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{Database, MysqlError};

/// How many workers of one orders table can be members; more than that write alone (every
/// order), which is slower but never wrong.
pub(crate) const SLOTS: usize = 64;

/// How long a connect, a `GET_LOCK` round or the live-slot query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The `wait_timeout` of the member slot's connection: a worker reads the slots every 250 ms,
/// so a connection silent this long belongs to a worker that is frozen, cut off or whose host
/// died without closing it; the server closes it then, and frees its slot, whose orders the
/// others take over at their next look. Without it the slot stayed taken for the server's
/// `wait_timeout` (8 hours by default).
pub(crate) const MEMBER_SILENCE: Duration = Duration::from_secs(10);

/// What one refresh saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The slot this worker holds and its connection id; `None` when every slot is taken.
    pub own: Option<(usize, u64)>,
    /// The slots held by live workers (this one included), ascending, each with the
    /// connection id holding it: a slot freed and taken again by a new worker between two
    /// looks is another member.
    pub live: Vec<(usize, u64)>,
}

/// A refresh that failed.
#[derive(Debug)]
pub(crate) struct MembersError {
    /// The server (or a proxy in front of it) refuses named locks themselves: retrying cannot
    /// help, the worker works alone.
    pub refused: bool,
    pub error: Box<MysqlError>,
}

/// This worker's member slot and its view of the others.
pub(crate) struct MemberLocks {
    db: Database,
    /// The name of each slot's lock.
    names: Vec<String>,
    /// `SELECT IS_USED_LOCK(?), ...` over every slot.
    live_sql: String,
    conn: Option<Conn>,
    /// The slot held on `conn`, and the connection id that holds it.
    held: Option<(usize, u64)>,
}

impl MemberLocks {
    /// The slots of the workers of `orders` (the table name as written in SQL) in the pool's
    /// database.
    pub(crate) fn new(db: Database, orders: &str) -> Self {
        let names = slot_names(&db.database, orders);
        let live_sql = format!("SELECT {}", vec!["IS_USED_LOCK(?)"; SLOTS].join(", "));
        Self {
            db,
            names,
            live_sql,
            conn: None,
            held: None,
        }
    }

    /// The name of slot 0's lock, for the start line.
    pub(crate) fn first_name(&self) -> &str {
        &self.names[0]
    }

    /// Makes sure this worker holds a slot (reconnecting and taking the first free one after
    /// a loss), then reads which slots are held. Bounded by [`QUERY_TIMEOUT`] per step; after
    /// a failure the connection is dropped (and the slot with it) and the next call starts
    /// over.
    pub(crate) async fn refresh(&mut self) -> Result<Seen, MembersError> {
        let result = tokio::time::timeout(QUERY_TIMEOUT * 3, self.try_refresh()).await;
        let result = result.unwrap_or_else(|_| {
            Err(MembersError {
                refused: false,
                error: Box::new(MysqlError::Connect {
                    endpoint: self.db.endpoint().to_string(),
                    database: self.db.database.clone(),
                    username: self.db.username.clone(),
                    cause: format!(
                        "no answer to the member check within {} s",
                        (QUERY_TIMEOUT * 3).as_secs()
                    ),
                    hint: "",
                }),
            })
        });
        if result.is_err() {
            self.conn = None;
            self.held = None;
        }
        result
    }

    async fn try_refresh(&mut self) -> Result<Seen, MembersError> {
        let db = self.db.clone();
        let db = &db;
        let failed = |action: &'static str| {
            move |source: mysql_async::Error| MembersError {
                refused: refuses_named_locks(&source),
                error: Box::new(db.error(action, source)),
            }
        };
        let conn =
            match &mut self.conn {
                Some(conn) => conn,
                None => {
                    self.held = None;
                    self.conn
                        .insert(Conn::new(self.db.opts.clone()).await.map_err(|e| {
                            MembersError {
                                refused: false,
                                error: Box::new(self.db.error("connecting for the member slot", e)),
                            }
                        })?)
                }
            };
        if self.held.is_none() {
            conn.query_drop(format!(
                "SET SESSION wait_timeout = {}",
                MEMBER_SILENCE.as_secs()
            ))
            .await
            .map_err(failed("SET SESSION wait_timeout (member slot)"))?;
        }
        let mut holders = read_holders(conn, &self.live_sql, &self.names)
            .await
            .map_err(failed("IS_USED_LOCK (member slots)"))?;
        // Our slot is ours only while the server says our connection holds it.
        if let Some((slot, id)) = self.held
            && holders[slot] != Some(id)
        {
            self.held = None;
        }
        if self.held.is_none() {
            let id: Option<u64> = conn
                .query_first("SELECT CONNECTION_ID()")
                .await
                .map_err(failed("CONNECTION_ID()"))?;
            let id = id.unwrap_or_default();
            for (slot, holder) in holders.iter_mut().enumerate() {
                if holder.is_some() {
                    continue;
                }
                let got: Option<Option<i64>> = conn
                    .exec_first("SELECT GET_LOCK(?, 0)", (self.names[slot].as_str(),))
                    .await
                    .map_err(failed("GET_LOCK (member slot)"))?;
                match got.flatten() {
                    Some(1) => {
                        self.held = Some((slot, id));
                        *holder = Some(id);
                        break;
                    }
                    // Taken meanwhile by another worker: try the next one.
                    Some(_) => *holder = Some(0),
                    None => {
                        return Err(MembersError {
                            refused: true,
                            error: Box::new(self.db.error(
                                "GET_LOCK (member slot)",
                                mysql_async::Error::Other("GET_LOCK returned NULL".into()),
                            )),
                        });
                    }
                }
            }
        }
        Ok(Seen {
            own: self.held,
            live: (0..SLOTS)
                .filter_map(|s| holders[s].map(|id| (s, id)))
                .collect(),
        })
    }
}

/// The slots held now, each with the connection id holding it, read without taking one: the
/// live workers of `orders` (the table name as written in SQL) as `status` counts them. Bounded
/// by [`QUERY_TIMEOUT`].
pub(crate) async fn held_slots(
    db: &Database,
    orders: &str,
) -> Result<Vec<(usize, u64)>, MysqlError> {
    let names = slot_names(&db.database, orders);
    let sql = format!("SELECT {}", vec!["IS_USED_LOCK(?)"; SLOTS].join(", "));
    let read = async {
        let mut conn = db.conn().await.map_err(|e| db.error("connecting", e))?;
        read_holders(&mut conn, &sql, &names)
            .await
            .map_err(|e| db.error("IS_USED_LOCK (member slots)", e))
    };
    let holders = tokio::time::timeout(QUERY_TIMEOUT * 2, read)
        .await
        .map_err(|_| MysqlError::Connect {
            endpoint: db.endpoint().to_string(),
            database: db.database.clone(),
            username: db.username.clone(),
            cause: format!(
                "no answer to the member check within {} s",
                (QUERY_TIMEOUT * 2).as_secs()
            ),
            hint: "",
        })??;
    Ok(holders
        .into_iter()
        .enumerate()
        .filter_map(|(slot, holder)| holder.map(|id| (slot, id)))
        .collect())
}

/// Whether `error` says the server (or a proxy) will not run named-lock functions at all, as
/// opposed to a moment's failure (a lost connection, a shutdown, a killed query) that the next
/// refresh may not meet.
fn refuses_named_locks(error: &mysql_async::Error) -> bool {
    /// Server errors of the moment: the connection or the query was cut, not refused.
    const TRANSIENT: [u16; 6] = [
        1040, // too many connections
        1053, // server shutdown in progress
        1205, // lock wait timeout
        1317, // query interrupted
        1927, // connection killed (MariaDB)
        3024, // maximum statement execution time exceeded (MySQL)
    ];
    matches!(error, mysql_async::Error::Server(e) if !TRANSIENT.contains(&e.code))
}

/// The connection id holding each slot's lock, `None` where it is free.
async fn read_holders(
    conn: &mut Conn,
    sql: &str,
    names: &[String],
) -> Result<Vec<Option<u64>>, mysql_async::Error> {
    let row: Option<Row> = conn.exec_first(sql, names.to_vec()).await?;
    let Some(row) = row else {
        return Ok(vec![None; names.len()]);
    };
    Ok((0..names.len())
        .map(|i| row.get::<Option<u64>, _>(i).flatten())
        .collect())
}

/// The lock name of each slot: `order-expire:<hash of database and table>:<slot>`, at most 36
/// characters whatever the names' lengths.
fn slot_names(database: &str, orders: &str) -> Vec<String> {
    let key = format!("{database}.{orders}");
    let hash = fnv1a(key.as_bytes());
    (0..SLOTS)
        .map(|slot| format!("order-expire:{hash:016x}:{slot}"))
        .collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not), so every
/// version of the worker names the same slots.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: String::new(),
            state: String::new(),
        })
    }

    #[test]
    fn a_refusal_of_named_locks_is_told_from_a_moments_failure() {
        // Access denied, no such function, a proxy's own refusal: the worker works alone.
        for code in [1044, 1142, 1227, 1305, 1064, 9001] {
            assert!(refuses_named_locks(&server_error(code)), "{code}");
        }
        // A connection cut or a server going down: the next look tries again.
        for code in [1040, 1053, 1205, 1317, 1927, 3024] {
            assert!(!refuses_named_locks(&server_error(code)), "{code}");
        }
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other("reset")));
        assert!(!refuses_named_locks(&io));
    }

    #[test]
    fn slot_names_fit_a_named_lock_and_differ_per_table() {
        let long = "x".repeat(64);
        let names = slot_names(&long, &format!("`{long}`"));
        assert_eq!(names.len(), SLOTS);
        assert!(names.iter().all(|n| n.len() <= 64), "{names:?}");
        assert_ne!(
            slot_names("shop", "`orders`"),
            slot_names("shop", "`orders2`")
        );
        assert_ne!(
            slot_names("shop", "`orders`"),
            slot_names("shop2", "`orders`")
        );
        assert_eq!(
            slot_names("shop", "`orders`")[3],
            slot_names("shop", "`orders`")[3]
        );
    }
}
