//! Behaviour of `SentinelSet` against real `redis-server` processes.

use taskline_testkit::SentinelSet;

fn role(set: &SentinelSet, node: usize) -> String {
    set.node(node).info_field("replication", "role").expect("role")
}

#[test]
fn the_sentinels_watch_a_primary_and_its_replicas() {
    let set = SentinelSet::start();
    assert_eq!(set.len(), 3);
    assert_eq!(set.sentinel_urls().len(), 3);
    assert_eq!(set.primary_index(), 0);
    assert_eq!(role(&set, 0), "master");
    assert_eq!((role(&set, 1), role(&set, 2)), ("slave".to_string(), "slave".to_string()));
    assert_eq!(set.node(0).info_field("replication", "connected_slaves").as_deref(), Some("2"));
    let sentinel = set.sentinel(0);
    assert_eq!(sentinel.info_field("server", "redis_mode").as_deref(), Some("sentinel"));
}

#[test]
fn killing_the_primary_promotes_a_replica_that_kept_the_data() {
    let set = SentinelSet::start();
    let mut con = set.primary().client().get_connection().expect("connect");
    let _: () = redis::cmd("SET").arg("job").arg("kept").query(&mut con).expect("SET");
    let acked: u32 = redis::cmd("WAIT").arg(2).arg(5_000).query(&mut con).expect("WAIT");
    assert_eq!(acked, 2);

    let promoted = set.kill_primary();
    assert_ne!(promoted, 0);
    assert_eq!(set.primary_index(), promoted);
    assert_eq!(role(&set, promoted), "master");
    let mut con = set.node(promoted).client().get_connection().expect("connect");
    let value: Option<String> = redis::cmd("GET").arg("job").query(&mut con).expect("GET");
    assert_eq!(value.as_deref(), Some("kept"));

    set.restart_node(0);
    assert_eq!(role(&set, 0), "slave", "the old primary comes back as a replica");
    assert_eq!(set.primary_index(), promoted);
}

#[test]
fn a_requested_failover_demotes_the_primary() {
    let set = SentinelSet::start();
    let promoted = set.failover();
    assert_ne!(promoted, 0);
    assert_eq!(role(&set, promoted), "master");
    // The sentinels reconfigure the old primary as a replica.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while role(&set, 0) != "slave" {
        assert!(std::time::Instant::now() < deadline, "the old primary stayed a master");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
