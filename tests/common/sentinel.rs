//! A real Sentinel set-up started by a test: one master, one replica and as many sentinels
//! (the same server program with `--sentinel`) as the test asks for (the quorum their
//! majority: 2 of 3, 1 of 1) on free loopback ports, monitoring the service [`SERVICE`].
//!
//! Both servers have `notify-keyspace-events Ex` in their own config file (the replica becomes
//! the master on a failover, and `CONFIG SET` on the old master would not follow it) and the
//! same password, and the replica syncs at once (`repl-diskless-sync-delay 0`). The sentinels
//! have no password (predis sends none to them) and know the servers' through
//! `sentinel auth-pass`. Failure detection is quick
//! (`down-after-milliseconds` 2 s) and a failed election is retried soon (`failover-timeout`
//! 10 s). [`SentinelSet::start`] returns once the replica is in sync and every sentinel knows
//! the replica and every other sentinel, so a failover can start at once. Everything is killed
//! and removed on drop.

use std::time::Duration;

use tempfile::TempDir;

use super::redis_node::{PASSWORD, Process, RedisNode, connect, connect_db, free_port, wait_for};

/// The master's name in the sentinels, as Laravel's `options.service` names it.
pub const SERVICE: &str = "mymaster";

/// How long the harness waits for the set-up to form or for a failover to complete.
const SETTLE: Duration = Duration::from_secs(60);

pub struct SentinelSet {
    /// The two servers: the first is the master at start.
    servers: Vec<RedisNode>,
    sentinels: Vec<RedisNode>,
    _dir: TempDir,
}

impl SentinelSet {
    /// Starts the master, its replica and `sentinels` sentinels; returns once all is settled.
    pub fn start(sentinels: usize) -> Self {
        assert!(sentinels > 0, "a Sentinel set-up needs a sentinel");
        let quorum = sentinels / 2 + 1;
        let dir = TempDir::new().expect("temp dir");
        let master = spawn(&dir, Process::Server, &server_config(None), Some(PASSWORD));
        let replica = spawn(
            &dir,
            Process::Server,
            &server_config(Some(master.port)),
            Some(PASSWORD),
        );
        let sentinel_config = format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {} {quorum}\n\
             sentinel auth-pass {SERVICE} {PASSWORD}\n\
             sentinel down-after-milliseconds {SERVICE} 2000\n\
             sentinel failover-timeout {SERVICE} 10000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            master.port
        );
        let sentinels = (0..sentinels)
            .map(|_| spawn(&dir, Process::Sentinel, &sentinel_config, None))
            .collect();
        let set = Self {
            servers: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        let (master, replica) = (set.servers[0].port, set.servers[1].port);
        wait_for(
            SETTLE,
            "the replica in sync and every sentinel aware of it and of every other sentinel",
            || {
                replica_in_sync(replica, master)
                    && set.sentinels.iter().all(|s| {
                        sentinel_master_state(s.port).is_some_and(|state| {
                            state.flags == "master"
                                && state.replicas == 1
                                && state.other_sentinels + 1 == set.sentinels.len()
                        })
                    })
            },
            || set.logs(),
        );
        set
    }

    /// The sentinels' ports, for the app's `REDIS_SENTINEL_*` settings.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The master's port as the first sentinel that answers reports it.
    pub fn master(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| master_addr(s.port))
            .unwrap_or_else(|| panic!("no sentinel answers\n{}", self.logs()))
    }

    /// The server that is not the master.
    pub fn other_server(&self, port: u16) -> u16 {
        self.servers
            .iter()
            .map(|s| s.port)
            .find(|p| *p != port)
            .expect("two servers")
    }

    /// `SENTINEL FAILOVER`: the sentinels promote the replica without waiting for agreement,
    /// the old master stays up and is turned into a replica later. Returns (old master, new
    /// master) once every sentinel reports the new one and it says it is a master.
    pub fn failover(&self) -> (u16, u16) {
        let old = self.master();
        let new = self.other_server(old);
        let sentinel = self.sentinels[0].port;
        // A sentinel refuses while it has no replica it deems good yet (NOGOODSLAVE) or while a
        // failover is in progress (INPROG): try again until it takes the order.
        wait_for(
            SETTLE,
            "a sentinel to accept SENTINEL FAILOVER",
            || {
                connect(sentinel, None)
                    .and_then(|mut c| {
                        redis::cmd("SENTINEL")
                            .arg("FAILOVER")
                            .arg(SERVICE)
                            .query::<String>(&mut c)
                    })
                    .is_ok()
            },
            || self.logs(),
        );
        self.wait_for_master(new);
        (old, new)
    }

    /// Kills the master (SIGKILL, no goodbye: what a crashed host looks like) and waits until
    /// the sentinels agree it is down, elect a leader and promote the replica. Returns (old
    /// master, new master).
    pub fn kill_old_master(&mut self) -> (u16, u16) {
        let old = self.master();
        let new = self.other_server(old);
        if let Some(server) = self.servers.iter_mut().find(|s| s.port == old) {
            server.kill();
        }
        self.wait_for_master(new);
        (old, new)
    }

    /// A connection to database `db` of the server on `port` (authenticated; commands time out).
    pub fn conn(&self, port: u16, db: u32) -> redis::Connection {
        connect_db(port, Some(PASSWORD), db)
            .unwrap_or_else(|e| panic!("connect to server {port}: {e}\n{}", self.logs()))
    }

    /// Waits until every sentinel reports `new` as the master and `new` says it is one.
    fn wait_for_master(&self, new: u16) {
        wait_for(
            SETTLE,
            &format!("the sentinels to report {new} as the master"),
            || {
                self.sentinels
                    .iter()
                    .all(|s| master_addr(s.port) == Some(new))
                    && role(new).as_deref() == Some("master")
            },
            || self.logs(),
        );
    }

    /// The log tails of every process, for a failure message.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .chain(&self.sentinels)
            .map(RedisNode::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A server's config; `replica_of` makes it a replica of that port.
fn server_config(replica_of: Option<u16>) -> String {
    let mut config = format!(
        "notify-keyspace-events Ex\n\
         requirepass {PASSWORD}\n\
         masterauth {PASSWORD}\n\
         repl-diskless-sync-delay 0\n\
         save \"\"\n\
         appendonly no\n"
    );
    if let Some(master) = replica_of {
        config.push_str(&format!("replicaof 127.0.0.1 {master}\n"));
    }
    config
}

/// Starts `process` on a free port, retrying when a port was taken meanwhile.
fn spawn(dir: &TempDir, process: Process, config: &str, password: Option<&str>) -> RedisNode {
    for _ in 0..10 {
        if let Some(node) = RedisNode::spawn(process, dir.path(), free_port(), config, password) {
            return node;
        }
    }
    panic!("could not start a {process:?}");
}

/// What a sentinel says about the service.
struct MasterState {
    flags: String,
    replicas: u64,
    other_sentinels: usize,
}

fn sentinel_master_state(sentinel: u16) -> Option<MasterState> {
    let fields: Vec<String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(SERVICE)
        .query(&mut connect(sentinel, None).ok()?)
        .ok()?;
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1).cloned())
    };
    Some(MasterState {
        flags: get("flags")?,
        replicas: get("num-slaves")?.parse().ok()?,
        other_sentinels: get("num-other-sentinels")?.parse().ok()?,
    })
}

/// The master's port according to the sentinel on `sentinel`.
fn master_addr(sentinel: u16) -> Option<u16> {
    let addr: Vec<String> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(SERVICE)
        .query(&mut connect(sentinel, None).ok()?)
        .ok()?;
    addr.get(1)?.parse().ok()
}

/// `master` or `slave`, as the server on `port` reports itself.
fn role(port: u16) -> Option<String> {
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut connect(port, Some(PASSWORD)).ok()?)
        .ok()?;
    match role.first()? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The replica on `replica` follows `master`, its link up and no sync in progress.
fn replica_in_sync(replica: u16, master: u16) -> bool {
    connect(replica, Some(PASSWORD))
        .and_then(|mut c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
        })
        .is_ok_and(|info| {
            info.contains(&format!("master_port:{master}"))
                && info.contains("master_link_status:up")
                && info.contains("master_sync_in_progress:0")
        })
}
