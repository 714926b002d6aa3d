//! The app's cache Redis whatever its topology: one server, a cluster's masters, or the master
//! the sentinels name now.
//!
//! Keyspace events are published by the server that deletes the key and nowhere else: on a
//! cluster by the master of the key's slot, under Sentinel by whichever server is master at that
//! moment. So the worker must know, and keep knowing, every server whose `expired` events it has
//! to hear. [`RedisServers::refresh`] asks the deployment (`CLUSTER SHARDS` of any reachable
//! node, or `SENTINEL get-master-addr-by-name` of any reachable sentinel, checked with `ROLE`)
//! and keeps the answer as the current [`Topology`], which command connections
//! ([`RoutedConnection`]) follow: a key's command goes to the master of its slot.
//!
//! Every server is reached with the same credentials, database and TLS options, as Laravel's
//! connectors reach them; sentinels get no credentials and no database, as predis sends none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use ::redis::aio::{MultiplexedConnection, PubSub};

use super::cluster::{self, ClusterView, NodeAddr};
use super::sentinel;
use super::slot::{SLOTS, key_slot};
use super::{Access, RedisError, RedisTarget, TargetOrigin};
use crate::config::{RedisEndpoint, RedisSettings, RedisTopology};

/// The servers of the cache Redis, as last found: who to subscribe to, who holds each key.
pub(crate) struct Topology {
    /// The servers whose `expired` events must be heard: the one server, every master of a
    /// cluster, the Sentinel's master.
    masters: Vec<RedisTarget>,
    /// A cluster's masters marked failed: not heard from now, but still masters (see
    /// [`Topology::failed`]).
    failed: Vec<String>,
    /// On a cluster, the master serving each slot.
    slots: Option<SlotOwners>,
}

/// Each slot's master: an index into `nodes`, or [`NO_OWNER`].
struct SlotOwners {
    owner: Vec<u16>,
    nodes: Vec<RedisTarget>,
}

/// A slot no master serves right now (a failed master without a replica).
const NO_OWNER: u16 = u16::MAX;

impl Topology {
    fn one(target: RedisTarget) -> Self {
        Self {
            masters: vec![target],
            failed: Vec::new(),
            slots: None,
        }
    }

    /// The endpoints of the cluster's masters marked failed. Until a replica takes over (the
    /// failed master is then listed as a replica, or not at all) such a master keeps its slots
    /// and may come back, so a subscription to it is kept, reconnecting on its own.
    pub(crate) fn failed(&self) -> &[String] {
        &self.failed
    }

    /// The servers whose `expired` events must be heard.
    pub(crate) fn masters(&self) -> &[RedisTarget] {
        &self.masters
    }

    /// The server holding `key`: the master of its slot on a cluster (`None` while no master
    /// serves it), else the one master.
    pub(crate) fn owner(&self, key: &str) -> Option<&RedisTarget> {
        match &self.slots {
            Some(slots) => {
                let index = *slots.owner.get(usize::from(key_slot(key.as_bytes())))?;
                slots.nodes.get(usize::from(index))
            }
            None => self.masters.first(),
        }
    }

    /// The masters' endpoints, comma-separated, for logs.
    pub(crate) fn names(&self) -> String {
        self.masters
            .iter()
            .map(RedisTarget::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// On a cluster, the endpoint of each slot's master, by slot (`None` where no master serves
    /// it); `None` for one server or a Sentinel's master.
    pub(crate) fn slot_owners(&self) -> Option<Vec<Option<&str>>> {
        self.slots.as_ref().map(|s| {
            s.owner
                .iter()
                .map(|i| s.nodes.get(usize::from(*i)).map(RedisTarget::endpoint))
                .collect::<Vec<_>>()
        })
    }

    /// Whether both name the same masters and the same slot owners.
    fn same_as(&self, other: &Self) -> bool {
        self.names() == other.names()
            && self.failed == other.failed
            && self.slot_owners() == other.slot_owners()
    }
}

/// The deployment, as configured.
enum Layout {
    Standalone(RedisTarget),
    Cluster {
        seeds: Vec<RedisEndpoint>,
        /// The nodes are reached over TLS (the seeds are).
        tls: bool,
    },
    Sentinel {
        sentinels: Vec<RedisEndpoint>,
        service: String,
        tls: bool,
        /// How sentinels are reached: no credentials, no database.
        access: Access,
    },
}

/// The cache store's Redis, whatever its topology; cheap to clone, shared by the subscriptions,
/// the deadline watcher and the sweep so that all follow the same topology.
#[derive(Clone)]
pub(crate) struct RedisServers(Arc<Inner>);

struct Inner {
    layout: Layout,
    /// How the data servers are reached.
    access: Access,
    /// The current topology and its generation, bumped at each change.
    current: Mutex<Option<(u64, Arc<Topology>)>>,
    /// The connection the last discovery went through (a cluster node, a sentinel), reused by
    /// the next; the lock also keeps two discoveries from running at once.
    discovery: tokio::sync::Mutex<Option<(RedisTarget, MultiplexedConnection)>>,
}

impl RedisServers {
    /// The cache Redis of `settings`. Nothing is contacted yet.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let any_tls = settings
            .topology
            .nodes()
            .iter()
            .any(|n| matches!(n, RedisEndpoint::Tls { .. }))
            || matches!(settings.endpoint, RedisEndpoint::Tls { .. });
        let mut access = Access::new(settings, any_tls)?;
        let layout = match &settings.topology {
            RedisTopology::Standalone(endpoint) => {
                Layout::Standalone(RedisTarget::at(endpoint, &access)?)
            }
            RedisTopology::Cluster { seeds } => {
                access.acl_extra = " +cluster|shards +cluster|slots";
                Layout::Cluster {
                    seeds: seeds.clone(),
                    tls: any_tls,
                }
            }
            RedisTopology::Sentinel { sentinels, service } => {
                access.acl_extra = " +role";
                let sentinel_access = Access {
                    username: None,
                    password: None,
                    database: 0,
                    acl_extra: "",
                    ..access.clone()
                };
                Layout::Sentinel {
                    sentinels: sentinels.clone(),
                    service: service.clone(),
                    tls: any_tls,
                    access: sentinel_access,
                }
            }
        };
        Ok(Self(Arc::new(Inner {
            layout,
            access,
            current: Mutex::new(None),
            discovery: tokio::sync::Mutex::new(None),
        })))
    }

    /// `standalone`, `cluster` or `sentinel`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.0.layout {
            Layout::Standalone(_) => "standalone",
            Layout::Cluster { .. } => "cluster",
            Layout::Sentinel { .. } => "sentinel",
        }
    }

    /// The Sentinel service (the master's name), under Sentinel.
    pub(crate) fn service(&self) -> Option<&str> {
        match &self.0.layout {
            Layout::Sentinel { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The topology as last found, with its generation; `None` before the first discovery.
    pub(crate) fn current(&self) -> Option<(u64, Arc<Topology>)> {
        match self.0.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current topology, found first if it is not known yet.
    pub(crate) async fn topology(&self) -> Result<(u64, Arc<Topology>), RedisError> {
        match self.current() {
            Some(current) => Ok(current),
            None => self.refresh().await,
        }
    }

    /// Asks the deployment for its servers now, and keeps the answer as the current topology
    /// (a new generation when it changed).
    pub(crate) async fn refresh(&self) -> Result<(u64, Arc<Topology>), RedisError> {
        let found = match &self.0.layout {
            Layout::Standalone(target) => Topology::one(target.clone()),
            Layout::Cluster { seeds, tls } => self.discover_cluster(seeds, *tls).await?,
            Layout::Sentinel {
                sentinels,
                service,
                tls,
                access,
            } => {
                self.discover_master(sentinels, service, *tls, access)
                    .await?
            }
        };
        let mut current = match self.0.current.lock() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = match current.as_ref() {
            Some((generation, known)) if known.same_as(&found) => (*generation, Arc::clone(known)),
            Some((generation, _)) => (generation + 1, Arc::new(found)),
            None => (0, Arc::new(found)),
        };
        *current = Some(next.clone());
        Ok(next)
    }

    /// The server at `host:port` of this deployment (a cluster's redirection names one).
    pub(crate) fn node(&self, host: &str, port: u16) -> Result<RedisTarget, RedisError> {
        let tls = match &self.0.layout {
            Layout::Standalone(target) => matches!(target.addr, RedisEndpoint::Tls { .. }),
            Layout::Cluster { tls, .. } | Layout::Sentinel { tls, .. } => *tls,
        };
        Ok(RedisTarget::at(&endpoint(host, port, tls), &self.0.access)?
            .with_origin(TargetOrigin::ClusterAnnounced))
    }

    /// A pub/sub connection to the first sentinel that answers, subscribed to its failover
    /// announcements, and that sentinel's endpoint; `None` unless under Sentinel.
    pub(crate) async fn switch_master_events(
        &self,
    ) -> Result<Option<(PubSub, String)>, RedisError> {
        let Layout::Sentinel {
            sentinels, access, ..
        } = &self.0.layout
        else {
            return Ok(None);
        };
        let mut tried = String::new();
        for addr in sentinels {
            let sentinel = RedisTarget::at(addr, access)?;
            match sentinel::switch_master_events(&sentinel).await {
                Ok(pubsub) => return Ok(Some((pubsub, sentinel.endpoint().to_string()))),
                Err(e) => note(&mut tried, &e),
            }
        }
        Err(RedisError::NoServer {
            what: "a sentinel to hear failovers from".into(),
            tried,
            hint: SENTINEL_HINT,
        })
    }

    /// Reads a failover announcement of this deployment's service; `None` for anything else.
    pub(crate) fn switch_master(&self, payload: &[u8]) -> Option<super::SwitchMaster> {
        let message = sentinel::parse_switch_master(payload)?;
        (Some(message.service.as_str()) == self.service()).then_some(message)
    }

    /// The cluster's masters and slots, from the node the last discovery used, else from any
    /// known master or seed that answers.
    async fn discover_cluster(
        &self,
        seeds: &[RedisEndpoint],
        tls: bool,
    ) -> Result<Topology, RedisError> {
        let mut discovery = self.0.discovery.lock().await;
        if let Some((target, conn)) = discovery.as_mut() {
            match cluster::view(target, conn, tls).await {
                Ok(view) => return self.cluster_topology(&view, tls),
                Err(e) => {
                    tracing::debug!(redis = %target.endpoint(), error = %e, "cluster topology from the last node failed");
                    *discovery = None;
                }
            }
        }
        let mut candidates: Vec<RedisEndpoint> = self
            .current()
            .map(|(_, t)| t.masters.iter().map(|m| m.addr.clone()).collect())
            .unwrap_or_default();
        for seed in seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        // Every candidate at once: a seed that accepts and never answers costs its own timeout
        // (connect 5 s, a command 10 s), not the others'. The first view wins.
        let mut attempts = futures_util::stream::FuturesUnordered::new();
        for addr in &candidates {
            let target = RedisTarget::at(addr, &self.0.access)?;
            attempts.push(async move {
                let mut conn = target.connect().await?;
                let view = cluster::view(&target, &mut conn, tls).await?;
                Ok::<_, RedisError>((target, conn, view))
            });
        }
        let mut tried = String::new();
        while let Some(result) = futures_util::StreamExt::next(&mut attempts).await {
            match result {
                Ok((target, conn, view)) => {
                    let topology = self.cluster_topology(&view, tls)?;
                    *discovery = Some((target, conn));
                    return Ok(topology);
                }
                Err(e @ RedisError::NotACluster { .. }) => return Err(e),
                Err(e) => note(&mut tried, &e),
            }
        }
        Err(RedisError::NoServer {
            what: format!("cluster's masters (seeds {})", joined(seeds)),
            tried,
            hint: "check the nodes of the cache connection under database.redis.clusters in config/database.php, its password, and that the cluster is up",
        })
    }

    /// The [`Topology`] of a cluster view: a target per master and per slot owner.
    fn cluster_topology(&self, view: &ClusterView, tls: bool) -> Result<Topology, RedisError> {
        // The targets of the current topology are reused: a TLS client is costly to build.
        let mut known: BTreeMap<String, RedisTarget> = BTreeMap::new();
        if let Some((_, current)) = self.current() {
            let slot_owners = current.slots.iter().flat_map(|s| s.nodes.iter());
            for target in current.masters.iter().chain(slot_owners) {
                known.insert(target.endpoint().to_string(), target.clone());
            }
        }
        let mut target = |addr: &NodeAddr| -> Result<RedisTarget, RedisError> {
            let at = endpoint(&addr.host, addr.port, tls);
            let name = at.to_string();
            if let Some(target) = known.get(&name) {
                return Ok(target.clone());
            }
            let target =
                RedisTarget::at(&at, &self.0.access)?.with_origin(TargetOrigin::ClusterAnnounced);
            known.insert(name, target.clone());
            Ok(target)
        };
        let mut index: BTreeMap<&NodeAddr, u16> = BTreeMap::new();
        let mut nodes = Vec::new();
        let mut owner = vec![NO_OWNER; SLOTS];
        for range in &view.slots {
            let i = match index.get(&range.owner) {
                Some(i) => *i,
                None => {
                    let i = u16::try_from(nodes.len()).unwrap_or(NO_OWNER);
                    nodes.push(target(&range.owner)?);
                    index.insert(&range.owner, i);
                    i
                }
            };
            for slot in range.first..=range.last {
                if let Some(entry) = owner.get_mut(usize::from(slot)) {
                    *entry = i;
                }
            }
        }
        let masters = view
            .masters
            .iter()
            .map(&mut target)
            .collect::<Result<Vec<_>, _>>()?;
        let failed = view
            .failed
            .iter()
            .map(|m| endpoint(&m.host, m.port, tls).to_string())
            .collect();
        Ok(Topology {
            masters,
            failed,
            slots: Some(SlotOwners { owner, nodes }),
        })
    }

    /// The master of `service` as a sentinel names it and `ROLE` confirms, asking the sentinel
    /// that answered last first (on its kept connection), then the others in order.
    async fn discover_master(
        &self,
        sentinels: &[RedisEndpoint],
        service: &str,
        tls: bool,
        access: &Access,
    ) -> Result<Topology, RedisError> {
        let mut discovery = self.0.discovery.lock().await;
        let mut kept = discovery.take();
        let mut order: Vec<&RedisEndpoint> = sentinels.iter().collect();
        if let Some((sentinel, _)) = &kept
            && let Some(i) = order.iter().position(|a| **a == sentinel.addr)
        {
            let last = order.remove(i);
            order.insert(0, last);
        }
        let mut tried = String::new();
        for addr in order {
            let (sentinel, mut conn) = match kept.take().filter(|(s, _)| s.addr == *addr) {
                Some(kept) => kept,
                None => {
                    let sentinel = RedisTarget::at(addr, access)?;
                    match sentinel.connect().await {
                        Ok(conn) => (sentinel, conn),
                        Err(e) => {
                            note(&mut tried, &e);
                            continue;
                        }
                    }
                }
            };
            let named = match sentinel::master_addr(&sentinel, &mut conn, service).await {
                Ok(named) => named,
                Err(e) => {
                    note(&mut tried, &e);
                    continue;
                }
            };
            let endpoint = sentinel.endpoint().to_string();
            // This sentinel answers: the next discovery asks it first, on this connection.
            *discovery = Some((sentinel, conn));
            let verified = match named {
                Some(master) => self.verified_master(&master, service, tls).await,
                None => Err(RedisError::Reply {
                    endpoint,
                    command: "SENTINEL get-master-addr-by-name",
                    reason: format!("no master named `{service}` is monitored there"),
                }),
            };
            match verified {
                Ok(master) => return Ok(Topology::one(master)),
                Err(e) => note(&mut tried, &e),
            }
        }
        Err(RedisError::NoServer {
            what: format!(
                "master `{service}` through the sentinels ({})",
                joined(sentinels)
            ),
            tried,
            hint: SENTINEL_HINT,
        })
    }

    /// The server at `addr`, once `ROLE` on it says `master`.
    async fn verified_master(
        &self,
        addr: &NodeAddr,
        service: &str,
        tls: bool,
    ) -> Result<RedisTarget, RedisError> {
        let master = RedisTarget::at(&endpoint(&addr.host, addr.port, tls), &self.0.access)?
            .with_origin(TargetOrigin::SentinelAnnounced);
        let mut conn = master.connect().await?;
        let role = sentinel::role(&master, &mut conn).await?;
        if role != "master" {
            return Err(RedisError::Reply {
                endpoint: master.endpoint().to_string(),
                command: "ROLE",
                reason: format!(
                    "the sentinels name it master of `{service}` but it is a {role} (a failover in progress?)"
                ),
            });
        }
        Ok(master)
    }
}

const SENTINEL_HINT: &str = "check the sentinels of the cache connection in config/database.php, its options.service, and options.parameters (the master's password)";

fn endpoint(host: &str, port: u16, tls: bool) -> RedisEndpoint {
    let host = host.to_string();
    if tls {
        RedisEndpoint::Tls { host, port }
    } else {
        RedisEndpoint::Tcp { host, port }
    }
}

fn joined(nodes: &[RedisEndpoint]) -> String {
    nodes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds what went wrong with one server to the list of attempts: each error names its server;
/// an unreachable one is just `host:port: cause`, the list's own hint saying what to check.
fn note(tried: &mut String, error: &RedisError) {
    if !tried.is_empty() {
        tried.push_str("; ");
    }
    let _ = match error {
        RedisError::Connect {
            endpoint, cause, ..
        } => write!(tried, "{endpoint}: {cause}"),
        other => write!(tried, "{other}"),
    };
}
