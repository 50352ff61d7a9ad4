//! A real Redis Cluster: three masters with a replica each, queues whose
//! slots sit on different masters, redirects, failover and clear errors
//! for a deployment that is not what the client was told.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, Completion, Error, NewJob, RedisTarget};
use taskline_testkit::{RedisCluster, RedisServer};

use crate::cluster::lifecycle;
use crate::support::{assert_sound, claim};

/// Queue names, one served by each master of `cluster` (found by trying
/// names until every master has one).
pub(crate) fn queue_per_master(cluster: &RedisCluster) -> Vec<String> {
    let masters = cluster.masters();
    let mut chosen: Vec<(usize, String)> = Vec::new();
    for n in 0.. {
        let name = format!("shard-q{n}");
        let owner = cluster.master_of_key(format!("{{{name}}}"));
        if !chosen.iter().any(|(m, _)| *m == owner) {
            chosen.push((owner, name));
        }
        if chosen.len() == masters.len() {
            break;
        }
    }
    chosen.into_iter().map(|(_, name)| name).collect()
}

pub(crate) async fn cluster_client(cluster: &RedisCluster) -> Client {
    Client::builder_for(RedisTarget::cluster(cluster.seed_urls()))
        .connect()
        .await
        .expect("connect to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_runs_on_three_masters_with_queues_on_each() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster");
    let queues = queue_per_master(&cluster);
    let owners: BTreeSet<usize> = queues.iter().map(|q| cluster.master_of_key(format!("{{{q}}}"))).collect();
    assert_eq!(owners.len(), 3, "each queue on its own master: {queues:?}");

    // Seeded with one replica's address only: the client learns the rest.
    let replica = cluster.replicas_of(cluster.masters()[0])[0];
    let client = Client::builder_for(RedisTarget::cluster([cluster.node(replica).url()]))
        .connect()
        .await
        .expect("connect through a replica");
    for q in &queues {
        lifecycle(&client, q).await;
        assert_sound(&client, q).await;
    }
    let mut registered = client.queues().await.expect("queues");
    registered.sort();
    let mut expected = queues.clone();
    expected.sort();
    assert_eq!(registered, expected);
    // Each queue's keys are on its own master, and only there.
    for q in &queues {
        let owner = cluster.master_of_key(format!("{{{q}}}"));
        for m in cluster.masters() {
            let mut con = cluster.node(m).client().get_multiplexed_async_connection().await.expect("connect");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("taskline:{{{q}}}:*"))
                .query_async(&mut con)
                .await
                .expect("KEYS");
            assert_eq!(
                !keys.is_empty(),
                m == owner,
                "queue {q}: keys on master {m} (owner {owner}): {}",
                keys.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_goes_on_after_a_master_dies_and_its_replica_takes_over() {
    let cluster =
        std::sync::Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster"));
    let q = &queue_per_master(&cluster)[0];
    let owner = cluster.master_of_key(format!("{{{q}}}"));
    let client = cluster_client(&cluster).await;
    for n in 0..20 {
        client.enqueue(q, NewJob::new("work", &json!({ "n": n })).expect("job")).await.expect("enqueue");
    }
    // Let the replica catch up, so the failover loses nothing here.
    wait_replicated(&cluster, owner).await;

    let killer = cluster.clone();
    let promoted = tokio::task::spawn_blocking(move || killer.kill_master(owner)).await.expect("kill");
    assert_ne!(promoted, owner);

    // The promoted replica never loaded the scripts (replicas get effects,
    // not scripts): the first call answers NOSCRIPT and is sent whole.
    let started = Instant::now();
    let mut done = 0;
    while done < 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "work did not resume after the failover");
        match client.claim(q, &claim(5, "after-failover")).await {
            Ok(claimed) => {
                for j in &claimed.jobs {
                    assert_eq!(
                        client.complete(&j.lease, None).await.expect("complete"),
                        Completion::Completed
                    );
                    done += 1;
                }
            }
            Err(err) => {
                assert!(err.is_connection_error(), "unexpected error during failover: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(client.counts(q).await.expect("counts").completed, 20);
    assert_sound(&client, q).await;
}

/// Waits until master `index`'s replica has acknowledged everything.
async fn wait_replicated(cluster: &RedisCluster, index: usize) {
    let mut con = cluster.node(index).client().get_multiplexed_async_connection().await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut con).await.expect("INFO");
        let master_offset = field(&info, "master_repl_offset");
        let replica_offset = info
            .lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")).map(str::to_string));
        if master_offset.is_some() && master_offset == replica_offset {
            return;
        }
        assert!(Instant::now() < deadline, "replica of node {index} did not catch up:\n{info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_is_not_what_was_configured_is_named() {
    // One server given as a cluster.
    let plain = RedisServer::start();
    let err =
        Client::builder_for(RedisTarget::cluster([plain.url()])).connect().await.expect_err("not a cluster");
    assert!(matches!(err, Error::WrongDeployment(_)), "{err:?}");
    assert!(err.to_string().contains("cluster support disabled"), "{err}");
    assert!(err.to_string().contains("[redis] url"), "says what to use instead: {err}");

    // A cluster node given as one server.
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::builder().replicas_per_master(0).start())
        .await
        .expect("cluster");
    let err = Client::connect(&cluster.node(0).url()).await.expect_err("a cluster node is not one server");
    assert!(err.to_string().contains("node of a Redis Cluster of 3 nodes"), "{err}");
    assert!(err.to_string().contains("cluster"), "{err}");

    // Seeds that do not answer.
    let gone = RedisServer::start();
    let dead_url = gone.url();
    drop(gone);
    let err =
        Client::builder_for(RedisTarget::cluster([dead_url.clone()])).connect().await.expect_err("no seed");
    assert!(err.to_string().contains("no seed node of the cluster answered"), "{err}");
    assert!(err.to_string().contains(&dead_url), "names the seeds: {err}");

    // A cluster that lost a master with no replica: cluster_state:fail.
    let masters = cluster.masters();
    cluster.node(masters[0]).kill();
    let seeds: Vec<String> = masters[1..].iter().map(|&i| cluster.node(i).url()).collect();
    let started = Instant::now();
    let err = loop {
        // The survivors notice after the node timeout; until then the
        // cluster still looks whole.
        match Client::builder_for(RedisTarget::cluster(seeds.clone())).connect().await {
            Err(err) if err.to_string().contains("cluster_state:fail") => break err,
            other => assert!(started.elapsed() < Duration::from_secs(15), "still connecting: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(err.to_string().contains("redis-cli --cluster check"), "says how to look: {err}");
}
