//! Durability across failover, on a primary with two replicas under
//! Sentinel: what the default mode may lose, and what `Replicated` keeps.
//!
//! The replicas are frozen (SIGSTOP) and cut off (the primary drops their
//! links) while jobs are enqueued, the primary is killed, and the replicas
//! thawed so one of them is promoted without the writes made meanwhile:
//! the window of asynchronous replication, made wide enough to see.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, Durability, Error, JobId, NewJob, RedisTarget};
use taskline_testkit::SentinelSet;

use crate::support::claim;

fn job(n: u32) -> NewJob {
    NewJob::new("work", &json!({ "n": n })).expect("job").id(JobId::new(format!("job-{n}")).expect("id"))
}

async fn connect(set: &SentinelSet, durability: Durability) -> Client {
    Client::builder_for(RedisTarget::sentinel(set.sentinel_urls(), set.master_name()))
        .durability(durability)
        .connect()
        .await
        .expect("connect")
}

const REPLICATED: Durability = Durability::Replicated { replicas: 1, timeout: Duration::from_millis(300) };

/// Freezes every replica and cuts its link, runs `during`, kills the
/// primary, thaws the replicas and waits for one of them to be promoted.
async fn fail_over_behind_the_replicas(set: &Arc<SentinelSet>, during: impl AsyncFnOnce()) {
    let primary = set.primary_index();
    let replicas: Vec<usize> = (0..set.len()).filter(|&i| i != primary).collect();
    for &r in &replicas {
        set.node(r).pause();
    }
    // A frozen replica still receives into its socket buffer and would
    // apply that on waking: close the links, so nothing written from now
    // on reaches a replica.
    let mut con = set.node(primary).client().get_multiplexed_async_connection().await.expect("connect");
    let _: u32 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut con)
        .await
        .expect("CLIENT KILL");
    during().await;
    set.node(primary).kill();
    for &r in &replicas {
        set.node(r).resume();
    }
    let set = set.clone();
    let promoted = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(index) = set.try_primary_index()
                && index != primary
                && set.node(index).info_field("replication", "role").as_deref() == Some("master")
            {
                return index;
            }
            assert!(Instant::now() < deadline, "no replica was promoted");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("promotion");
    assert_ne!(promoted, primary);
}

/// Reads `queue`'s ready count from the new primary once it answers.
async fn ready_after_failover(client: &Client, queue: &str) -> u64 {
    let started = Instant::now();
    loop {
        match client.counts(queue).await {
            Ok(counts) => return counts.ready,
            Err(err) if err.is_connection_error() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("counts after the failover: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mode_may_lose_what_the_primary_acknowledged_last() {
    let set = Arc::new(tokio::task::spawn_blocking(SentinelSet::start).await.expect("set"));
    let client = connect(&set, Durability::Primary).await;
    let replicated = connect(&set, REPLICATED).await;
    for n in 0..10 {
        replicated.enqueue("q", job(n)).await.expect("enqueue, replicated");
    }
    let mut acknowledged = 10;
    fail_over_behind_the_replicas(&set, async || {
        for n in 10..15 {
            client.enqueue("q", job(n)).await.expect("the primary acknowledges without its replicas");
            acknowledged += 1;
        }
    })
    .await;
    let kept = ready_after_failover(&client, "q").await;
    assert_eq!(acknowledged, 15);
    assert_eq!(kept, 10, "the five enqueues the replicas never saw are lost, as documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_acknowledges_only_what_survives_and_resends_safely() {
    let set = Arc::new(tokio::task::spawn_blocking(SentinelSet::start).await.expect("set"));
    let client = connect(&set, REPLICATED).await;
    for n in 0..10 {
        client.enqueue("q", job(n)).await.expect("enqueue");
    }
    let mut refused = Vec::new();
    fail_over_behind_the_replicas(&set, async || {
        for n in 10..15 {
            match client.enqueue("q", job(n)).await {
                Err(Error::NotReplicated { acked: 0, wanted: 1, .. }) => refused.push(n),
                other => panic!("enqueue {n} with frozen replicas: {other:?}"),
            }
        }
        // Claims do not wait for replicas: a lost lease only runs a job again.
        let claimed = client.claim("q", &claim(1, "w")).await.expect("claim without replicas");
        assert_eq!(claimed.jobs.len(), 1);
    })
    .await;
    assert_eq!(refused, [10, 11, 12, 13, 14], "every unconfirmed enqueue was reported, none acknowledged");
    assert_eq!(ready_after_failover(&client, "q").await, 10, "every acknowledged job survived the failover");

    // Resending a refused enqueue with the same id is safe: here the first
    // try was lost with the old primary, so it is stored now, once.
    let started = Instant::now();
    loop {
        match client.enqueue("q", job(10)).await {
            Ok(id) => {
                assert_eq!(id.as_str(), "job-10");
                break;
            }
            Err(err) if err.is_connection_error() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("resend: {err}"),
        }
    }
    match client.enqueue("q", job(10)).await {
        Err(Error::DuplicateJob { existing, .. }) => assert_eq!(existing, "job-10"),
        other => panic!("a second resend must find the job stored: {other:?}"),
    }
    assert_eq!(client.counts("q").await.expect("counts").ready, 11);
}

#[tokio::test]
async fn replicated_durability_needs_a_replica_and_a_timeout() {
    let err = Client::builder("redis://127.0.0.1:1")
        .durability(Durability::Replicated { replicas: 0, timeout: Duration::from_secs(1) })
        .connect()
        .await
        .expect_err("no replicas");
    assert!(err.to_string().contains("at least 1 replica"), "{err}");
}
