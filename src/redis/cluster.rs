//! What a Redis Cluster node says of the cluster: its masters and which slots each one serves,
//! from `CLUSTER SHARDS` (Redis 7), else `CLUSTER SLOTS` (older servers).
//!
//! Each master publishes the `expired` events of its own keys only, so the worker must know
//! every master to subscribe to each, and the owner of each slot to send a key's `PTTL` or
//! `EXISTS` where the key lives. `CLUSTER SHARDS` also lists masters that serve no slot yet
//! (a node being resharded into receives keys, with their TTL, before it owns their slot), and
//! which nodes the cluster has marked failed; `CLUSTER SLOTS` only lists the slot owners.

use ::redis::Value;
use ::redis::aio::MultiplexedConnection;

use super::{RedisError, RedisTarget};

/// A node as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// The longest host name a server may announce (a DNS name is at most 253 bytes); a longer one
/// is refused, and never printed whole.
pub(crate) const MAX_HOST: usize = 255;

/// `host` as announced by a server, refused (with its length and its first bytes only) when
/// longer than [`MAX_HOST`].
pub(crate) fn announced_host(host: String) -> Result<String, String> {
    if host.len() <= MAX_HOST {
        return Ok(host);
    }
    let start: String = host.chars().take(32).collect();
    Err(format!(
        "an announced host of {} bytes (at most {MAX_HOST}), starting {:?}",
        host.len(),
        crate::logging::escape_controls(&start)
    ))
}

/// A range of slots and the master serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) owner: NodeAddr,
}

/// One node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterView {
    /// The masters whose `expired` events must be heard: every master the cluster has not marked
    /// failed, with or without slots, sorted.
    pub(crate) masters: Vec<NodeAddr>,
    /// Masters the cluster has marked failed that still own slots (`CLUSTER SHARDS` only):
    /// until a replica takes over they may come back. A failed master that was replaced is
    /// listed without slots, and is not one of these.
    pub(crate) failed: Vec<NodeAddr>,
    /// The slot ranges and their owners (a failed master still owns its slots until a replica
    /// takes over).
    pub(crate) slots: Vec<SlotRange>,
}

/// Asks the node behind `conn` for its view of the cluster: `CLUSTER SHARDS`, else
/// `CLUSTER SLOTS`. Advertised addresses that are unknown (`?`, empty) are the asked node's
/// host, as clients are told to read them; `tls` picks the nodes' TLS ports.
pub(crate) async fn view(
    target: &RedisTarget,
    conn: &mut MultiplexedConnection,
    tls: bool,
) -> Result<ClusterView, RedisError> {
    let asked = target.host();
    let shards: ::redis::RedisResult<Value> = ::redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(conn)
        .await;
    let (command, parsed) = match shards {
        Ok(reply) => ("CLUSTER SHARDS", parse_shards(&reply, asked, tls)),
        Err(e) if cluster_disabled(&e) => return Err(not_a_cluster(target)),
        Err(e) if e.is_io_error() || e.is_timeout() => {
            return Err(target.command_error("CLUSTER SHARDS", e));
        }
        // Redis before 7.0 has no SHARDS; an ACL user may be allowed SLOTS only.
        Err(_) => {
            let reply: Value = ::redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(conn)
                .await
                .map_err(|e| {
                    if cluster_disabled(&e) {
                        not_a_cluster(target)
                    } else {
                        target.command_error("CLUSTER SLOTS", e)
                    }
                })?;
            ("CLUSTER SLOTS", parse_slots(&reply, asked))
        }
    };
    parsed.map_err(|reason| RedisError::Reply {
        endpoint: target.endpoint().to_string(),
        command,
        reason,
    })
}

fn cluster_disabled(e: &::redis::RedisError) -> bool {
    e.to_string().contains("cluster support disabled")
}

fn not_a_cluster(target: &RedisTarget) -> RedisError {
    RedisError::NotACluster {
        endpoint: target.endpoint().to_string(),
    }
}

/// Reads a `CLUSTER SHARDS` reply (RESP2 arrays of name/value pairs, or RESP3 maps).
pub(crate) fn parse_shards(reply: &Value, asked: &str, tls: bool) -> Result<ClusterView, String> {
    let shards = items(reply).ok_or("expected a list of shards")?;
    let mut masters = Vec::new();
    let mut failed = Vec::new();
    let mut slots = Vec::new();
    for shard in shards {
        let fields = pairs(shard).ok_or("expected a shard's fields")?;
        let ranges = field(&fields, "slots")
            .and_then(items)
            .ok_or("a shard without `slots`")?;
        let nodes = field(&fields, "nodes")
            .and_then(items)
            .ok_or("a shard without `nodes`")?;
        let mut owner = None;
        for node in nodes {
            let node = pairs(node).ok_or("expected a node's fields")?;
            if field(&node, "role").and_then(text).as_deref() != Some("master") {
                continue;
            }
            let addr = shard_node_addr(&node, asked, tls)?;
            if field(&node, "health").and_then(text).as_deref() == Some("fail") {
                // Replaced by a replica, it stays listed as a master without slots.
                if !ranges.is_empty() {
                    failed.push(addr.clone());
                }
            } else {
                masters.push(addr.clone());
            }
            owner = Some(addr);
        }
        let Some(owner) = owner else {
            continue; // no master: nobody serves these slots right now
        };
        if ranges.len() % 2 != 0 {
            return Err("odd number of slot bounds".into());
        }
        for bounds in ranges.chunks(2) {
            slots.push(SlotRange {
                first: slot_number(&bounds[0])?,
                last: slot_number(&bounds[1])?,
                owner: owner.clone(),
            });
        }
    }
    masters.sort();
    masters.dedup();
    failed.sort();
    failed.dedup();
    Ok(ClusterView {
        masters,
        failed,
        slots,
    })
}

/// A master's address in `CLUSTER SHARDS`: its preferred `endpoint`, else its `ip`, else the
/// asked host; the TLS port on a TLS connection, when the node has one.
fn shard_node_addr(node: &[(&Value, &Value)], asked: &str, tls: bool) -> Result<NodeAddr, String> {
    let known = |name: &str| {
        field(node, name)
            .and_then(text)
            .filter(|h| !h.is_empty() && h != "?")
    };
    let host = announced_host(
        known("endpoint")
            .or_else(|| known("ip"))
            .unwrap_or_else(|| asked.to_string()),
    )?;
    let (preferred, other) = if tls {
        ("tls-port", "port")
    } else {
        ("port", "tls-port")
    };
    let port = field(node, preferred)
        .or_else(|| field(node, other))
        .and_then(int)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("a node without a port")?;
    Ok(NodeAddr { host, port })
}

/// Reads a `CLUSTER SLOTS` reply: `[first, last, [host, port, id, ...], replicas...]` per range.
pub(crate) fn parse_slots(reply: &Value, asked: &str) -> Result<ClusterView, String> {
    let ranges = items(reply).ok_or("expected a list of slot ranges")?;
    let mut slots = Vec::new();
    for range in ranges {
        let range = items(range).ok_or("expected a slot range")?;
        let [first, last, master, ..] = range else {
            return Err("a slot range without its master".into());
        };
        let master = items(master).ok_or("expected the master's address")?;
        let host = announced_host(
            master
                .first()
                .and_then(text)
                .filter(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| asked.to_string()),
        )?;
        let port = master
            .get(1)
            .and_then(int)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or("a master without a port")?;
        slots.push(SlotRange {
            first: slot_number(first)?,
            last: slot_number(last)?,
            owner: NodeAddr { host, port },
        });
    }
    let mut masters: Vec<NodeAddr> = slots.iter().map(|r| r.owner.clone()).collect();
    masters.sort();
    masters.dedup();
    Ok(ClusterView {
        masters,
        failed: Vec::new(),
        slots,
    })
}

fn slot_number(value: &Value) -> Result<u16, String> {
    int(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| usize::from(*n) < super::slot::SLOTS)
        .ok_or_else(|| "a slot number out of range".to_string())
}

/// The elements of an array (or set) reply.
pub(super) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// The name/value pairs of a RESP3 map, or of a RESP2 array of alternating names and values.
fn pairs(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(map) => Some(map.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(items) if items.len() % 2 == 0 => {
            Some(items.chunks(2).map(|p| (&p[0], &p[1])).collect())
        }
        _ => None,
    }
}

fn field<'a>(pairs: &[(&Value, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs
        .iter()
        .find(|(k, _)| text(k).as_deref() == Some(name))
        .map(|(_, v)| *v)
}

/// A string reply as text.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// An integer reply, or a string holding one.
pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(fields: &[(&str, Value)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), v.clone()])
                .collect(),
        )
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().map(|s| Value::Int(*s)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    fn cluster_node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        node(&[
            ("id", bulk("e3a5b5a6d4c1")),
            ("port", Value::Int(port)),
            ("ip", bulk(ip)),
            ("endpoint", bulk(ip)),
            ("role", bulk(role)),
            ("replication-offset", Value::Int(1234)),
            ("health", bulk(health)),
        ])
    }

    fn addr(host: &str, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// The RESP2 reply of `CLUSTER SHARDS` on Redis 7.0, three shards with a replica each.
    #[test]
    fn shards_give_the_masters_and_their_slots() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![
                    cluster_node("127.0.0.1", 7000, "master", "online"),
                    cluster_node("127.0.0.1", 7003, "replica", "online"),
                ],
            ),
            shard(
                &[10923, 16383],
                vec![
                    cluster_node("127.0.0.1", 7005, "replica", "online"),
                    cluster_node("127.0.0.1", 7002, "master", "online"),
                ],
            ),
            shard(
                &[5461, 10000, 10001, 10922],
                vec![cluster_node("127.0.0.1", 7001, "master", "online")],
            ),
        ]);
        let view = parse_shards(&reply, "seed", false).expect("parsed");
        assert_eq!(
            view.masters,
            vec![
                addr("127.0.0.1", 7000),
                addr("127.0.0.1", 7001),
                addr("127.0.0.1", 7002)
            ]
        );
        assert_eq!(view.slots.len(), 4);
        assert_eq!(
            view.slots[1],
            SlotRange {
                first: 10923,
                last: 16383,
                owner: addr("127.0.0.1", 7002)
            }
        );
        assert_eq!(view.slots[3].owner, addr("127.0.0.1", 7001));
    }

    #[test]
    fn a_failed_master_owns_its_slots_until_replaced_and_an_empty_master_is_heard() {
        let reply = Value::Array(vec![
            shard(
                &[0, 8191],
                vec![
                    cluster_node("127.0.0.1", 7000, "master", "fail"),
                    cluster_node("127.0.0.1", 7003, "replica", "online"),
                ],
            ),
            shard(
                &[8192, 16383],
                vec![cluster_node("127.0.0.1", 7001, "master", "online")],
            ),
            shard(
                &[],
                vec![cluster_node("127.0.0.1", 7006, "master", "online")],
            ),
            // replaced by its replica: still a master, without slots
            shard(&[], vec![cluster_node("127.0.0.1", 7007, "master", "fail")]),
        ]);
        let view = parse_shards(&reply, "seed", false).expect("parsed");
        assert_eq!(
            view.masters,
            vec![addr("127.0.0.1", 7001), addr("127.0.0.1", 7006)]
        );
        assert_eq!(view.failed, vec![addr("127.0.0.1", 7000)]);
        assert_eq!(view.slots[0].owner, addr("127.0.0.1", 7000));
    }

    #[test]
    fn shards_as_resp3_maps_with_hostnames_and_tls_ports() {
        let map = |fields: Vec<(&str, Value)>| {
            Value::Map(fields.into_iter().map(|(k, v)| (bulk(k), v)).collect())
        };
        let reply = Value::Array(vec![map(vec![
            (
                "slots",
                Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            ),
            (
                "nodes",
                Value::Array(vec![map(vec![
                    ("port", Value::Int(6379)),
                    ("tls-port", Value::Int(6380)),
                    ("ip", bulk("10.0.0.5")),
                    ("endpoint", bulk("redis-0.internal")),
                    ("hostname", bulk("redis-0.internal")),
                    ("role", bulk("master")),
                    ("health", bulk("online")),
                ])]),
            ),
        ])]);
        let tls = parse_shards(&reply, "seed", true).expect("parsed");
        assert_eq!(tls.masters, vec![addr("redis-0.internal", 6380)]);
        let plain = parse_shards(&reply, "seed", false).expect("parsed");
        assert_eq!(plain.masters, vec![addr("redis-0.internal", 6379)]);
    }

    #[test]
    fn an_unknown_endpoint_is_the_asked_host() {
        let reply = Value::Array(vec![shard(
            &[0, 16383],
            vec![node(&[
                ("port", Value::Int(7000)),
                ("ip", bulk("")),
                ("endpoint", bulk("?")),
                ("role", bulk("master")),
                ("health", bulk("online")),
            ])],
        )]);
        let view = parse_shards(&reply, "seed.internal", false).expect("parsed");
        assert_eq!(view.masters, vec![addr("seed.internal", 7000)]);
    }

    #[test]
    fn malformed_shards_are_refused() {
        for reply in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![shard(
                &[0],
                vec![cluster_node("127.0.0.1", 7000, "master", "online")],
            )]),
            Value::Array(vec![shard(
                &[0, 20000],
                vec![cluster_node("127.0.0.1", 7000, "master", "online")],
            )]),
            Value::Array(vec![shard(
                &[0, 16383],
                vec![cluster_node("127.0.0.1", 0, "master", "online")],
            )]),
        ] {
            assert!(parse_shards(&reply, "seed", false).is_err(), "{reply:?}");
        }
    }

    /// The RESP2 reply of `CLUSTER SLOTS` (Redis 6 and 7).
    #[test]
    fn slots_give_the_slot_owners() {
        let master = |host: &str, port: i64| {
            Value::Array(vec![
                bulk(host),
                Value::Int(port),
                bulk("9f3e"),
                Value::Array(vec![]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                master("127.0.0.1", 7000),
                master("127.0.0.1", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), master("?", 7001)]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                master("127.0.0.1", 7000),
            ]),
        ]);
        let view = parse_slots(&reply, "seed").expect("parsed");
        assert_eq!(
            view.masters,
            vec![addr("127.0.0.1", 7000), addr("seed", 7001)]
        );
        assert_eq!(view.slots[1].owner, addr("seed", 7001));
        assert_eq!(view.slots[2].first, 10923);
        assert!(parse_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])]), "s").is_err());
    }
}
