//! A real Redis Cluster started by a test: `masters` masters, each with `replicas_per_master`
//! replicas (none is a cluster too), on free loopback ports (each with its bus port, port +
//! 10000, free too); [`RedisCluster::add_replica`] gives one master a replica later.
//!
//! Every node has `notify-keyspace-events Ex` in its own config file (keyspace events are
//! node-local and `CONFIG SET` is not replicated, so a replica promoted later must have it too),
//! a password as Laravel apps set it, no persistence, a small `cluster-node-timeout`, and no
//! wait before a replica's first sync (`repl-diskless-sync-delay 0`: the default 5 s would
//! only slow the start down).
//! [`RedisCluster::start`] returns once every node agrees on the slots and roles and every
//! replica is in sync, so a test starts from a settled cluster. Each change the harness makes
//! ([`RedisCluster::failover`], [`RedisCluster::migrate_slot`]) likewise returns only once it
//! has settled. Keys are written and read on the master of their slot ([`RedisCluster::setex`],
//! [`RedisCluster::get`]), as a cluster client sends them. Everything is killed and removed on
//! drop.

use std::collections::BTreeMap;
use std::time::Duration;

use tempfile::TempDir;

use super::redis_node::{PASSWORD, Process, RedisNode, connect, free_port_with_bus, wait_for};

/// Failure detection between nodes: small, so a test does not wait long, yet well above the
/// pauses of a loaded two-core machine, so that no node is voted out by mistake.
const NODE_TIMEOUT_MS: u32 = 3000;

/// How long the harness waits for the cluster to form or to settle after a change.
const SETTLE: Duration = Duration::from_secs(60);

/// One line of `CLUSTER NODES`, as one node sees another.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The id of the node it replicates, for a replica.
    pub master_id: Option<String>,
    /// The slot ranges it serves (inclusive), for a master.
    pub slots: Vec<(u16, u16)>,
}

pub struct RedisCluster {
    nodes: Vec<RedisNode>,
    /// Where every node, also one added later, keeps its config and log.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, assigns the 16384 slots evenly to the masters, joins everything into
    /// one cluster and attaches the replicas; returns once it is settled.
    pub fn start(masters: usize, replicas_per_master: usize) -> Self {
        assert!(masters > 0, "a cluster needs a master");
        let dir = TempDir::new().expect("temp dir");
        let total = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisNode> = (0..total).map(|_| spawn_node(&dir)).collect();
        let cluster = Self { nodes, dir };

        // Distinct config epochs before the nodes meet, as `redis-cli --cluster create` does.
        for (i, node) in cluster.nodes.iter().enumerate() {
            cluster.command(
                node.port,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            );
        }
        for (i, (first, last)) in slot_ranges(masters).into_iter().enumerate() {
            // ADDSLOTS with every slot, not ADDSLOTSRANGE: Redis 6.2 has only the former.
            cluster.command(
                cluster.nodes[i].port,
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTS")
                    .arg((first..=last).collect::<Vec<u16>>()),
            );
        }
        for node in &cluster.nodes[1..] {
            cluster.meet(node.port);
        }
        cluster.wait_settled("every node to know every other", |views| {
            views.len() == total
        });

        let ids: Vec<String> = cluster.nodes.iter().map(|n| cluster.id(n.port)).collect();
        for r in 0..masters * replicas_per_master {
            cluster.replicate(cluster.nodes[masters + r].port, &ids[r % masters]);
        }
        cluster.wait_settled("the replicas attached and in sync", |views| {
            views.iter().filter(|v| v.master).count() == masters
        });
        cluster
    }

    /// Starts one more node, joins it to the cluster and makes it a replica of the master on
    /// `master`, as `redis-cli --cluster add-node --cluster-slave` does; returns its port once
    /// it is in sync and every node agrees.
    pub fn add_replica(&mut self, master: u16) -> u16 {
        let master_id = self.id(master);
        let node = spawn_node(&self.dir);
        let port = node.port;
        self.nodes.push(node);
        self.meet(port);
        let total = self.nodes.len();
        self.wait_settled(&format!("{port} to know every node"), |views| {
            views.len() == total
        });
        self.replicate(port, &master_id);
        self.wait_settled(&format!("{port} in sync with {master}"), |views| {
            views
                .iter()
                .any(|v| v.port == port && !v.master && v.master_id.as_deref() == Some(&master_id))
        });
        port
    }

    /// Kills the node on `port` (SIGKILL), as a crashed or unplugged host; its port stays closed.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// Every node's port (killed ones included), masters of the start first.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The current masters' ports, in the order of the first slot each serves.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<NodeView> = self
            .view()
            .into_iter()
            .filter(|v| v.master && !v.failed && !v.slots.is_empty())
            .collect();
        masters.sort_by_key(|v| v.slots.iter().map(|s| s.0).min());
        masters.iter().map(|v| v.port).collect()
    }

    /// The replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let id = self.id(master);
        self.view()
            .into_iter()
            .find(|v| !v.master && !v.failed && v.master_id.as_deref() == Some(&id))
            .map(|v| v.port)
            .unwrap_or_else(|| panic!("master {master} has no replica"))
    }

    /// A manual `CLUSTER FAILOVER` of the `master_index`-th master (see [`Self::masters`]): its
    /// replica takes over its slots in a coordinated switch. Returns (old master, new master)
    /// once both report their new role and every node agrees.
    pub fn failover(&self, master_index: usize) -> (u16, u16) {
        let old = self.masters()[master_index];
        let new = self.replica_of(old);
        self.command(new, redis::cmd("CLUSTER").arg("FAILOVER"));
        self.wait_settled(&format!("{new} to replace {old} as master"), |views| {
            views
                .iter()
                .any(|v| v.port == new && v.master && !v.slots.is_empty())
                && views.iter().any(|v| v.port == old && !v.master)
        });
        (old, new)
    }

    /// Moves `slot` and its keys from the master on `from` to the master on `to`, as a
    /// resharding does: `SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` in batches (each key keeps its
    /// TTL), then `SETSLOT NODE` on the target, the source and every other master. Returns the
    /// keys moved.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) -> Vec<String> {
        let from_id = self.id(from);
        let to_id = self.id(to);
        self.command(
            to,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&from_id),
        );
        self.command(
            from,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&to_id),
        );
        let mut moved = Vec::new();
        loop {
            let keys: Vec<String> = self.query(
                from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            );
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("AUTH")
                .arg(PASSWORD)
                .arg("KEYS")
                .arg(&keys);
            let _: String = self.query(from, &mut migrate);
            moved.extend(keys);
        }
        let others: Vec<u16> = self
            .masters()
            .into_iter()
            .filter(|p| *p != from && *p != to)
            .collect();
        for port in [to, from].into_iter().chain(others) {
            self.command(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id),
            );
        }
        self.wait_settled(&format!("slot {slot} served by {to}"), |views| {
            views
                .iter()
                .any(|v| v.port == to && v.slots.iter().any(|s| s.0 <= slot && slot <= s.1))
        });
        moved
    }

    /// The slots of the master on `port` that hold keys whose TTL is above `min_ttl_ms`, with
    /// how many such keys each holds, most first; at most `limit` slots.
    pub fn slots_with_pending_keys(
        &self,
        port: u16,
        min_ttl_ms: i64,
        limit: usize,
    ) -> Vec<(u16, usize)> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) =
                self.query(port, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000));
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("PTTL").arg(key);
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key);
        }
        let answers: Vec<i64> = self.pipeline(port, &pipe);
        let mut per_slot: BTreeMap<u16, usize> = BTreeMap::new();
        for pair in answers.chunks(2) {
            if let [ttl, slot] = pair
                && *ttl > min_ttl_ms
                && let Ok(slot) = u16::try_from(*slot)
            {
                *per_slot.entry(slot).or_default() += 1;
            }
        }
        let mut slots: Vec<(u16, usize)> = per_slot.into_iter().collect();
        slots.sort_by_key(|(_, keys)| std::cmp::Reverse(*keys));
        slots.truncate(limit);
        slots
    }

    /// `SETEX key ttl value` on the master of the key's slot, as Laravel's `RedisStore` writes
    /// through a cluster client; returns that master's port.
    pub fn setex(&self, key: &str, ttl: u64, value: &str) -> u16 {
        let port = self.master_of_key(key);
        self.command(port, redis::cmd("SETEX").arg(key).arg(ttl).arg(value));
        port
    }

    /// `GET key` on the master of the key's slot.
    pub fn get(&self, key: &str) -> Option<String> {
        self.query(self.master_of_key(key), redis::cmd("GET").arg(key))
    }

    /// The port of the master serving the slot of `key`.
    pub fn master_of_key(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.masters()[0];
        self.query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.view()
            .into_iter()
            .find(|v| v.master && v.slots.iter().any(|s| s.0 <= slot && slot <= s.1))
            .map(|v| v.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}\n{}", self.logs()))
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(&self, port: u16) -> usize {
        self.query(port, &mut redis::cmd("DBSIZE"))
    }

    /// A connection to the node on `port` (authenticated; commands time out).
    pub fn conn(&self, port: u16) -> redis::Connection {
        connect(port, Some(PASSWORD))
            .unwrap_or_else(|e| panic!("connect to cluster node {port}: {e}\n{}", self.logs()))
    }

    /// The node id of the node on `port`.
    pub fn id(&self, port: u16) -> String {
        self.query(port, redis::cmd("CLUSTER").arg("MYID"))
    }

    /// The cluster as the first live node that answers sees it.
    pub fn view(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| node_view(n.port).ok())
            .unwrap_or_else(|| panic!("no cluster node answers\n{}", self.logs()))
    }

    /// Waits until every live node reports `cluster_state:ok`, sees the same masters with the
    /// same slots, sees its replicas in sync, and `done` holds for its view.
    fn wait_settled(&self, what: &str, done: impl Fn(&[NodeView]) -> bool) {
        wait_for(
            SETTLE,
            what,
            || {
                let live: Vec<u16> = self
                    .nodes
                    .iter()
                    .filter(|n| n.is_running())
                    .map(|n| n.port)
                    .collect();
                let mut first: Option<String> = None;
                for port in live {
                    let Ok(views) = node_view(port) else {
                        return false;
                    };
                    if !done(&views) || !cluster_ok(port) || !replication_settled(port) {
                        return false;
                    }
                    let summary = layout(&views);
                    match &first {
                        None => first = Some(summary),
                        Some(seen) if *seen != summary => return false,
                        Some(_) => {}
                    }
                }
                true
            },
            || self.logs(),
        );
    }

    /// `CLUSTER MEET` from a live node of the cluster to the node on `port`: gossip then
    /// introduces it to every other.
    fn meet(&self, port: u16) {
        let from = self
            .nodes
            .iter()
            .find(|n| n.is_running() && n.port != port)
            .map_or_else(|| panic!("no live node to meet {port}"), |n| n.port);
        self.command(
            from,
            redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(port),
        );
    }

    /// `CLUSTER REPLICATE`: the node on `replica` follows the master whose node id is `master_id`.
    fn replicate(&self, replica: u16, master_id: &str) {
        self.command(
            replica,
            redis::cmd("CLUSTER").arg("REPLICATE").arg(master_id),
        );
    }

    fn command(&self, port: u16, cmd: &mut redis::Cmd) {
        let _: redis::Value = self.query(port, cmd);
    }

    fn query<T: redis::FromRedisValue>(&self, port: u16, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.conn(port))
            .unwrap_or_else(|e| panic!("{cmd:?} on cluster node {port}: {e}\n{}", self.logs()))
    }

    fn pipeline<T: redis::FromRedisValue>(&self, port: u16, pipe: &redis::Pipeline) -> T {
        pipe.query(&mut self.conn(port))
            .unwrap_or_else(|e| panic!("pipeline on cluster node {port}: {e}\n{}", self.logs()))
    }

    /// The nodes' log tails, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(RedisNode::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Starts one cluster node on a free port pair, retrying when a port was taken meanwhile.
fn spawn_node(dir: &TempDir) -> RedisNode {
    let config = format!(
        "cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {NODE_TIMEOUT_MS}\n\
         cluster-allow-replica-migration no\n\
         notify-keyspace-events Ex\n\
         requirepass {PASSWORD}\n\
         masterauth {PASSWORD}\n\
         repl-diskless-sync-delay 0\n\
         save \"\"\n\
         appendonly no\n"
    );
    for _ in 0..10 {
        let port = free_port_with_bus();
        if let Some(node) =
            RedisNode::spawn(Process::Server, dir.path(), port, &config, Some(PASSWORD))
        {
            return node;
        }
    }
    panic!("could not start a cluster node of redis-server");
}

/// 16384 slots split into `masters` contiguous ranges.
fn slot_ranges(masters: usize) -> Vec<(u16, u16)> {
    let per = 16384 / masters;
    (0..masters)
        .map(|i| {
            let first = i * per;
            let last = if i + 1 == masters {
                16383
            } else {
                first + per - 1
            };
            (first as u16, last as u16)
        })
        .collect()
}

/// `CLUSTER NODES` of the node on `port`, parsed.
fn node_view(port: u16) -> redis::RedisResult<Vec<NodeView>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut connect(port, Some(PASSWORD))?)?;
    Ok(text.lines().filter_map(parse_node_line).collect())
}

/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`; nodes still in
/// handshake, or without an address, are left out.
fn parse_node_line(line: &str) -> Option<NodeView> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, addr, flags, master, _, _, _, _, slots @ ..] = fields.as_slice() else {
        return None;
    };
    if flags.contains("handshake") || flags.contains("noaddr") {
        return None;
    }
    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let slots = slots
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(NodeView {
        id: (*id).to_string(),
        port,
        master: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?"),
        master_id: (*master != "-").then(|| (*master).to_string()),
        slots,
    })
}

/// Who serves what, and who replicates whom: equal on every node once the cluster has settled.
fn layout(views: &[NodeView]) -> String {
    let mut lines: Vec<String> = views
        .iter()
        .map(|v| {
            format!(
                "{} {} {:?} {:?}",
                v.port,
                if v.master { "master" } else { "replica" },
                v.master_id,
                v.slots
            )
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn cluster_ok(port: u16) -> bool {
    connect(port, Some(PASSWORD))
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}

/// A master has all its replicas online; a replica has its link to its master up and no sync in
/// progress.
fn replication_settled(port: u16) -> bool {
    let Ok(info) = connect(port, Some(PASSWORD)).and_then(|mut c| {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut c)
    }) else {
        return false;
    };
    if info.contains("role:master") {
        return !info.lines().any(|l| {
            l.starts_with("slave") && l.contains("state=") && !l.contains("state=online")
        });
    }
    info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
}

/// The fixture's `'redis'` array for a cluster, as a Laravel 8 app on phpredis writes it: the
/// nodes under `clusters`, the password in the options (phpredis's `RedisCluster` takes it from
/// the merged options, not from a node), and the node's `database` ignored as Laravel ignores
/// it on a cluster (db 0 only).
pub const LARAVEL_CLUSTER_CONFIG: &str = r"    'redis' => [
        'client' => env('REDIS_CLIENT', 'phpredis'),

        'options' => [
            'cluster' => env('REDIS_CLUSTER', 'redis'),
            'prefix' => env('REDIS_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_database_'),
        ],

        'clusters' => [
            'options' => ['password' => env('REDIS_PASSWORD')],

            'default' => [
                [
                    'host' => env('REDIS_HOST', '127.0.0.1'),
                    'password' => env('REDIS_PASSWORD', null),
                    'port' => env('REDIS_PORT', '6379'),
                    'database' => 0,
                ],
            ],

            'cache' => [
                [
                    'host' => env('REDIS_HOST', '127.0.0.1'),
                    'password' => env('REDIS_PASSWORD', null),
                    'port' => env('REDIS_PORT', '6379'),
                    'database' => env('REDIS_CACHE_DB', '1'),
                ],
            ],
        ],
    ],";
