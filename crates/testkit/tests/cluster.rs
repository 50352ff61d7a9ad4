//! Behaviour of `RedisCluster` against real `redis-server` processes.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use taskline_testkit::{NodeRole, RedisCluster, SLOT_COUNT, hash_slot};

fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run kill -0")
        .success()
}

fn set(cluster: &RedisCluster, node: usize, key: &str, value: &str) -> redis::RedisResult<()> {
    let mut con = cluster.node(node).client().get_connection()?;
    redis::cmd("SET").arg(key).arg(value).query(&mut con)
}

fn get(cluster: &RedisCluster, node: usize, key: &str) -> redis::RedisResult<Option<String>> {
    let mut con = cluster.node(node).client().get_connection()?;
    redis::cmd("GET").arg(key).query(&mut con)
}

/// Waits until `node`'s replicas have every write it acknowledged so far.
fn wait_replicated(cluster: &RedisCluster, node: usize, key: &str) {
    let mut con = cluster.node(node).client().get_connection().expect("connect");
    // WAIT counts the writes of this connection: touch the key here first.
    let _: () = redis::cmd("SET").arg(key).arg("synced").query(&mut con).expect("SET");
    let acked: u32 = redis::cmd("WAIT").arg(1).arg(5_000).query(&mut con).expect("WAIT");
    assert_eq!(acked, 1, "the replica did not acknowledge");
}

#[test]
fn three_masters_each_with_a_replica_serve_every_slot() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.len(), 6);
    let topology = cluster.topology();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{topology:?}");
    for &m in &masters {
        assert_eq!(cluster.replicas_of(m).len(), 1, "master {m}: {topology:?}");
    }
    let mut covered = BTreeSet::new();
    for node in topology.iter().filter(|n| n.role == NodeRole::Master) {
        for range in &node.slots {
            covered.extend(range.clone());
        }
    }
    assert_eq!(covered.len(), SLOT_COUNT as usize, "every slot has a master");

    // A key lives on the master of its slot; another master redirects.
    let key = "{emails}:probe";
    let owner = cluster.master_of_key(key);
    assert_eq!(owner, cluster.master_of_slot(hash_slot(key.as_bytes())));
    set(&cluster, owner, key, "v").expect("SET on the owner");
    let other = masters.iter().copied().find(|&m| m != owner).expect("another master");
    let err = get(&cluster, other, key).expect_err("another master redirects");
    assert!(err.to_string().to_lowercase().contains("moved"), "{err}");

    let pids: Vec<u32> = (0..cluster.len()).filter_map(|i| cluster.node(i).pid()).collect();
    assert_eq!(pids.len(), 6);
    drop(cluster);
    assert!(pids.iter().all(|&pid| !process_exists(pid)), "dropping the cluster kills every node");
}

#[test]
fn a_killed_master_is_replaced_by_its_replica_and_rejoins_as_replica() {
    let cluster = RedisCluster::start();
    let key = "{orders}:1";
    let owner = cluster.master_of_key(key);
    let replica = cluster.replicas_of(owner)[0];
    set(&cluster, owner, key, "paid").expect("SET");
    wait_replicated(&cluster, owner, "{orders}:sync");

    let promoted = cluster.kill_master(owner);
    assert_eq!(promoted, replica, "its own replica takes over");
    assert_eq!(cluster.master_of_key(key), promoted);
    assert_eq!(
        get(&cluster, promoted, key).expect("GET").as_deref(),
        Some("paid"),
        "replicated data survives"
    );
    assert!(!cluster.node(owner).is_running());

    cluster.restart_node(owner);
    let topology = cluster.topology();
    let old = topology.iter().find(|n| n.index == owner).expect("old master");
    assert!(matches!(old.role, NodeRole::Replica { .. }), "the old master comes back as a replica: {old:?}");
    assert_eq!(cluster.replicas_of(promoted), vec![owner]);
}

#[test]
fn a_graceful_failover_swaps_a_master_and_its_replica() {
    let cluster = RedisCluster::start();
    let key = "{reports}:x";
    let owner = cluster.master_of_key(key);
    let replica = cluster.replicas_of(owner)[0];
    set(&cluster, owner, key, "1").expect("SET");

    cluster.failover(replica);
    assert_eq!(cluster.master_of_key(key), replica);
    assert_eq!(cluster.replicas_of(replica), vec![owner]);
    // CLUSTER FAILOVER waits for the replica to catch up: nothing is lost.
    assert_eq!(get(&cluster, replica, key).expect("GET").as_deref(), Some("1"));
}

#[test]
fn a_slot_moves_to_another_master_with_its_keys() {
    let cluster = RedisCluster::start();
    let slot = hash_slot(b"{images}");
    let from = cluster.master_of_slot(slot);
    let to = cluster.masters().into_iter().find(|&m| m != from).expect("another master");
    for i in 0..35 {
        set(&cluster, from, &format!("{{images}}:{i}"), &i.to_string()).expect("SET");
    }

    let moved = cluster.migrate_slot(slot, to, Duration::ZERO);
    assert_eq!(moved, 35);
    assert_eq!(cluster.master_of_slot(slot), to);
    assert_eq!(get(&cluster, to, "{images}:34").expect("GET").as_deref(), Some("34"));
    let err = get(&cluster, from, "{images}:0").expect_err("the old owner redirects");
    assert!(err.to_string().to_lowercase().contains("moved"), "{err}");
    // Its neighbours stayed where they were.
    assert_eq!(cluster.master_of_slot(slot + 1), from);
}
