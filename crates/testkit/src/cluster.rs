//! A real Redis Cluster on free ports of `127.0.0.1`: several masters, each
//! with its replicas, made by `redis-cli --cluster create`, owned by one
//! test.
//!
//! Every node is a [`RedisServer`] started in cluster mode without slots of
//! its own ([`crate::RedisServerBuilder::cluster_member`]); `redis-cli`
//! joins them, splits the 16384 slots over the masters and gives each
//! master its replicas. The cluster is ready only when every running node
//! reports `cluster_state:ok` and all of them agree on the master of every
//! slot. Nodes can then be killed (a replica takes over), failed over
//! gracefully, paused and restarted, and a slot can be moved to another
//! master while clients use it. Dropping the cluster kills every node.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::parse_info_field;
use crate::{RedisServer, SLOT_COUNT, hash_slot};

/// How often the waits below look at the cluster again.
const POLL: Duration = Duration::from_millis(50);
/// Keys one `MIGRATE` moves, as `redis-cli --cluster reshard` does by default.
const MIGRATE_BATCH: usize = 10;

/// Options for a [`RedisCluster`]; create one with [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    node_timeout: Duration,
    ready_timeout: Duration,
    extra: Vec<(String, String)>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 1,
            node_timeout: Duration::from_millis(1_000),
            ready_timeout: Duration::from_secs(30),
            extra: Vec::new(),
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters (default 3; Redis Cluster needs at least 3).
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas of each master (default 1).
    pub fn replicas_per_master(mut self, n: usize) -> Self {
        self.replicas_per_master = n;
        self
    }

    /// `cluster-node-timeout` (default 1 s): how long a master may be
    /// unreachable before its replica takes over.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How long creating the cluster, and each wait for it to settle after
    /// a fault, may take (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Passes `--<name> <value>` to every node (after the cluster's own
    /// settings, so it overrides them).
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Starts every node, creates the cluster and waits until it is ready.
    ///
    /// # Panics
    ///
    /// If a node does not start, `redis-cli --cluster create` fails (its
    /// output is in the message), or the cluster does not settle in time.
    pub fn start(self) -> RedisCluster {
        RedisCluster::create(self)
    }
}

/// What a node is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRole {
    /// Serves slots (perhaps none, after it lost them all).
    Master,
    /// Replicates the master with this node id.
    Replica {
        /// Node id of its master.
        master_id: String,
    },
}

/// One node as the cluster sees it (`CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Index of the node in [`RedisCluster::node`].
    pub index: usize,
    /// The node's cluster id.
    pub id: String,
    /// Master or replica.
    pub role: NodeRole,
    /// Slot ranges it serves (masters only).
    pub slots: Vec<RangeInclusive<u16>>,
    /// Whether the cluster has marked it failed (`fail` flag).
    pub failed: bool,
}

/// A Redis Cluster of real `redis-server` processes; see the module docs.
///
/// Methods block the calling thread while they wait for the cluster to
/// settle (at most the ready timeout).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    options: RedisClusterBuilder,
}

impl RedisCluster {
    /// Returns a builder: 3 masters with one replica each, 1 s node timeout.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// Starts a cluster with default options; see [`RedisClusterBuilder::start`].
    pub fn start() -> RedisCluster {
        Self::builder().start()
    }

    fn create(options: RedisClusterBuilder) -> RedisCluster {
        assert!(options.masters >= 3, "Redis Cluster needs at least 3 masters");
        let count = options.masters * (1 + options.replicas_per_master);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                let mut builder = RedisServer::builder()
                    .cluster_member(true)
                    .config("cluster-node-timeout", options.node_timeout.as_millis().to_string())
                    // A replica may take over however long it was cut off
                    // from its master, and replicas stay where they were
                    // put: tests rely on a known shape.
                    .config("cluster-replica-validity-factor", "0")
                    .config("cluster-allow-replica-migration", "no");
                for (name, value) in &options.extra {
                    builder = builder.config(name, value);
                }
                builder.start()
            })
            .collect();
        let cluster = RedisCluster { nodes, options };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create
            .arg("--cluster-replicas")
            .arg(cluster.options.replicas_per_master.to_string())
            .arg("--cluster-yes");
        let output = create.output().unwrap_or_else(|e| {
            panic!("cannot run redis-cli: {e}; install Debian's redis-tools (it comes with redis-server)")
        });
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{text}",
            output.status
        );
        cluster.wait_until_ok();
        cluster
    }

    /// Node `index` (0-based, in start order; roles change with failovers).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// Number of nodes, masters and replicas.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// URLs of every node, for a client's seed list.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster's shape as a running node sees it.
    ///
    /// # Panics
    ///
    /// If no node answers.
    pub fn topology(&self) -> Vec<ClusterNode> {
        for node in self.live_nodes() {
            if let Some(view) = self.view_of(node) {
                return view;
            }
        }
        panic!("no node of the cluster answers CLUSTER NODES")
    }

    /// Indexes of the nodes that are masters serving at least one slot.
    pub fn masters(&self) -> Vec<usize> {
        self.topology()
            .into_iter()
            .filter(|n| n.role == NodeRole::Master && !n.slots.is_empty() && !n.failed)
            .map(|n| n.index)
            .collect()
    }

    /// Indexes of the replicas of master `index`.
    pub fn replicas_of(&self, index: usize) -> Vec<usize> {
        let topology = self.topology();
        let id = &topology.iter().find(|n| n.index == index).expect("node").id;
        topology
            .iter()
            .filter(|n| matches!(&n.role, NodeRole::Replica { master_id } if master_id == id))
            .map(|n| n.index)
            .collect()
    }

    /// Index of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        self.topology()
            .into_iter()
            .find(|n| n.role == NodeRole::Master && n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.index)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Index of the master serving the slot of `key`.
    pub fn master_of_key(&self, key: impl AsRef<[u8]>) -> usize {
        self.master_of_slot(hash_slot(key.as_ref()))
    }

    /// SIGKILLs master `index` and waits until one of its replicas has
    /// taken over its slots and the cluster is `ok` again; returns the new
    /// master's index. The killed node stays down until
    /// [`RedisCluster::restart_node`].
    pub fn kill_master(&self, index: usize) -> usize {
        let replicas = self.replicas_of(index);
        assert!(!replicas.is_empty(), "node {index} has no replica to take over");
        let slots = self.slots_of(index);
        self.nodes[index].kill();
        let promoted = self.wait_for("a replica to take over the killed master's slots", || {
            let topology = self.settled_topology()?;
            let owner = topology.iter().find(|n| n.role == NodeRole::Master && n.slots == slots)?;
            replicas.contains(&owner.index).then_some(owner.index)
        });
        self.wait_until_ok();
        promoted
    }

    /// Promotes replica `index` with `CLUSTER FAILOVER` (its master hands
    /// over without losing writes) and waits until every node agrees.
    pub fn failover(&self, index: usize) {
        let _: String = self.nodes[index].query(redis::cmd("CLUSTER").arg("FAILOVER"));
        self.wait_for("the graceful failover to complete", || {
            let topology = self.settled_topology()?;
            let node = topology.iter().find(|n| n.index == index)?;
            (node.role == NodeRole::Master && !node.slots.is_empty()).then_some(())
        });
        self.wait_until_ok();
    }

    /// Kills node `index` (SIGKILL) and starts it again on the same port
    /// and directory; it rejoins the cluster (as a replica, if it lost its
    /// slots meanwhile). Waits until the cluster is `ok` and every node,
    /// this one included, agrees on its shape.
    pub fn restart_node(&self, index: usize) {
        self.nodes[index].restart();
        self.wait_until_ok();
    }

    /// Moves `slot` to master `to` while clients keep using it: the slot
    /// is marked importing on `to` and migrating on its owner, its keys go
    /// over [`MIGRATE_BATCH`] at a time with `pause` between batches (as
    /// `redis-cli --cluster reshard` moves them), then every master is told
    /// the new owner. Returns the number of keys moved.
    pub fn migrate_slot(&self, slot: u16, to: usize, pause: Duration) -> usize {
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let topology = self.topology();
        let id_of = |index: usize| topology.iter().find(|n| n.index == index).expect("node").id.clone();
        let (from_id, to_id) = (id_of(from), id_of(to));
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let setslot = |node: &RedisServer, state: &str, id: &str| {
            let _: String = node.query(redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id));
        };
        setslot(target, "IMPORTING", &from_id);
        setslot(source, "MIGRATING", &to_id);
        let mut moved = 0;
        loop {
            let keys: Vec<Vec<u8>> =
                source.query(redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(MIGRATE_BATCH));
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg("127.0.0.1").arg(target.port()).arg("").arg(0).arg(5_000).arg("KEYS");
            for key in &keys {
                migrate.arg(key.as_slice());
            }
            let _: String = source.query(&migrate);
            moved += keys.len();
            thread::sleep(pause);
        }
        // The new owner first, then the old one, then everyone else, as
        // the cluster specification orders it.
        setslot(target, "NODE", &to_id);
        setslot(source, "NODE", &to_id);
        for index in self.masters() {
            if index != from && index != to {
                setslot(&self.nodes[index], "NODE", &to_id);
            }
        }
        self.wait_for("every node to see the slot's new owner", || {
            let topology = self.settled_topology()?;
            let owner = topology.iter().find(|n| n.slots.iter().any(|r| r.contains(&slot)))?;
            (owner.index == to).then_some(())
        });
        moved
    }

    /// Waits until every running node reports `cluster_state:ok` with all
    /// slots served and all of them agree on the master of every slot.
    ///
    /// # Panics
    ///
    /// If that does not happen within the ready timeout.
    pub fn wait_until_ok(&self) {
        self.wait_for("cluster_state:ok on every node, agreeing on every slot's master", || {
            let live: Vec<&RedisServer> = self.live_nodes().collect();
            for node in &live {
                let info: String = node.try_query(redis::cmd("CLUSTER").arg("INFO"))?;
                let ok = parse_info_field(&info, "cluster_state") == Some("ok")
                    && parse_info_field(&info, "cluster_slots_ok") == Some(&SLOT_COUNT.to_string());
                if !ok {
                    return None;
                }
            }
            self.settled_topology().map(|_| ())
        });
    }

    /// The topology, if every running node sees the same masters for the
    /// same slots; `None` while they disagree.
    fn settled_topology(&self) -> Option<Vec<ClusterNode>> {
        let mut agreed: Option<BTreeMap<u16, usize>> = None;
        let mut first = None;
        for node in self.live_nodes() {
            let view = self.view_of(node)?;
            let owners: BTreeMap<u16, usize> = view
                .iter()
                .filter(|n| n.role == NodeRole::Master && !n.failed)
                .flat_map(|n| n.slots.iter().map(move |r| (*r.start(), n.index)))
                .collect();
            match &agreed {
                None => agreed = Some(owners),
                Some(seen) if *seen == owners => {}
                Some(_) => return None,
            }
            first.get_or_insert(view);
        }
        first
    }

    fn slots_of(&self, index: usize) -> Vec<RangeInclusive<u16>> {
        self.topology().into_iter().find(|n| n.index == index).map(|n| n.slots).unwrap_or_default()
    }

    /// Nodes that run and are not paused.
    fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running() && !n.is_paused())
    }

    /// `CLUSTER NODES` as `node` sees it, or `None` if it does not answer.
    fn view_of(&self, node: &RedisServer) -> Option<Vec<ClusterNode>> {
        let text: String = node.try_query(redis::cmd("CLUSTER").arg("NODES"))?;
        Some(text.lines().filter_map(|line| self.parse_node_line(line)).collect())
    }

    fn parse_node_line(&self, line: &str) -> Option<ClusterNode> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (id, addr, flags, master) = (fields.first()?, fields.get(1)?, fields.get(2)?, fields.get(3)?);
        let port: u16 = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
        let index = self.nodes.iter().position(|n| n.port() == port)?;
        let flags: Vec<&str> = flags.split(',').collect();
        let role = if flags.contains(&"master") {
            NodeRole::Master
        } else {
            NodeRole::Replica { master_id: master.to_string() }
        };
        let slots = fields.iter().skip(8).filter_map(|s| parse_slot_range(s)).collect();
        Some(ClusterNode { index, id: id.to_string(), role, slots, failed: flags.contains(&"fail") })
    }

    /// Polls `check` until it returns a value; panics after the ready
    /// timeout with `what` and the cluster's view.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = self
                    .live_nodes()
                    .map(|n| {
                        let nodes: Option<String> = n.try_query(redis::cmd("CLUSTER").arg("NODES"));
                        format!("node on port {}:\n{}", n.port(), nodes.unwrap_or_default())
                    })
                    .collect();
                panic!(
                    "timed out after {:?} waiting for {what}\n{}",
                    self.options.ready_timeout,
                    views.join("\n")
                );
            }
            thread::sleep(POLL);
        }
    }
}

/// `"0-5460"` or `"5461"`; `None` for the `[slot->-id]` entries of slots in
/// migration.
fn parse_slot_range(text: &str) -> Option<RangeInclusive<u16>> {
    if text.starts_with('[') {
        return None;
    }
    match text.split_once('-') {
        Some((start, end)) => Some(start.parse().ok()?..=end.parse().ok()?),
        None => {
            let slot = text.parse().ok()?;
            Some(slot..=slot)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slot_ranges() {
        assert_eq!(parse_slot_range("0-5460"), Some(0..=5460));
        assert_eq!(parse_slot_range("5461"), Some(5461..=5461));
        assert_eq!(parse_slot_range("[93->-e7d1eec]"), None);
        assert_eq!(parse_slot_range("x"), None);
    }
}
