//! A primary with two replicas under three sentinels: the client finds the
//! primary through them, follows a failover (a killed primary, and a
//! requested one that leaves the old primary answering as a replica) and
//! never writes to a replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, Completion, Error, NewJob, RedisTarget};
use taskline_testkit::SentinelSet;

use crate::support::{assert_sound, claim};

async fn sentinel_client(set: &SentinelSet) -> Client {
    Client::builder_for(RedisTarget::sentinel(set.sentinel_urls(), set.master_name()))
        .connect()
        .await
        .expect("connect through the sentinels")
}

fn job(n: u32) -> NewJob {
    NewJob::new("work", &json!({ "n": n })).expect("job")
}

/// Retries `f` on connection errors (what a failover looks like to a
/// caller) for up to 30 s.
async fn until_ok<T>(what: &str, mut f: impl AsyncFnMut() -> taskline::Result<T>) -> T {
    let started = Instant::now();
    loop {
        match f().await {
            Ok(value) => return value,
            Err(err) if err.is_connection_error() && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// Waits until the replicas have every write the primary acknowledged.
async fn wait_for_replicas(set: &SentinelSet) {
    let mut con = set.primary().client().get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("SET").arg("sync-probe").arg(1).query_async(&mut con).await.expect("SET");
    let acked: u32 = redis::cmd("WAIT").arg(2).arg(5_000).query_async(&mut con).await.expect("WAIT");
    assert_eq!(acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_workers_follow_a_killed_primary_to_its_replica() {
    let set = Arc::new(tokio::task::spawn_blocking(SentinelSet::start).await.expect("sentinel set"));
    let client = sentinel_client(&set).await;
    for n in 0..20 {
        client.enqueue("jobs", job(n)).await.expect("enqueue");
    }
    wait_for_replicas(&set).await;

    let killer = set.clone();
    let promoted = tokio::task::spawn_blocking(move || killer.kill_primary()).await.expect("failover");
    assert_ne!(promoted, 0);

    // The same client, unaided: calls fail while the primary is gone, then
    // reach the promoted replica (which has no scripts loaded).
    until_ok("enqueue after the failover", async || client.enqueue("jobs", job(20)).await).await;
    let mut done = 0;
    while done < 21 {
        let claimed = until_ok("claim", async || client.claim("jobs", &claim(5, "w")).await).await;
        for j in &claimed.jobs {
            assert_eq!(client.complete(&j.lease, None).await.expect("complete"), Completion::Completed);
            done += 1;
        }
    }
    assert_sound(&client, "jobs").await;
    // It is the promoted node that holds the queue now.
    let mut con = set.node(promoted).client().get_multiplexed_async_connection().await.expect("connect");
    let completed: u64 =
        redis::cmd("ZCARD").arg("taskline:{jobs}:completed").query_async(&mut con).await.expect("ZCARD");
    assert_eq!(completed, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_failover_turns_writes_to_the_new_primary_never_to_the_old() {
    let set = Arc::new(tokio::task::spawn_blocking(SentinelSet::start).await.expect("sentinel set"));
    let client = sentinel_client(&set).await;
    client.enqueue("jobs", job(0)).await.expect("enqueue");

    let switcher = set.clone();
    let promoted = tokio::task::spawn_blocking(move || switcher.failover()).await.expect("failover");
    // Until the sentinels have turned the old primary into a replica, it
    // still takes writes that its resync will then drop: the loss the
    // default durability admits (README, "High availability"). Once it is a
    // replica, our connection to it, still open, gets READONLY for writes,
    // which sends the client back to the sentinels.
    let deadline = Instant::now() + Duration::from_secs(20);
    while set.node(0).info_field("replication", "role").as_deref() != Some("slave") {
        assert!(Instant::now() < deadline, "the old primary was never demoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let mut refused = 0;
    loop {
        match client.enqueue("jobs", job(1)).await {
            Ok(_) => break,
            Err(err) => {
                assert!(err.is_connection_error(), "{err}");
                refused += 1;
                assert!(started.elapsed() < Duration::from_secs(30), "no write reached the new primary");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut con = set.node(promoted).client().get_multiplexed_async_connection().await.expect("connect");
    let waiting: u64 =
        redis::cmd("LLEN").arg("taskline:{jobs}:ready:0").query_async(&mut con).await.expect("LLEN");
    assert_eq!(waiting, 2, "both jobs are on the new primary");
    assert!(refused > 0, "the first write went to the old primary and was refused");
    assert_eq!(client.counts("jobs").await.expect("counts").ready, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_master_name_is_a_clear_error() {
    let set = tokio::task::spawn_blocking(|| SentinelSet::builder().replicas(1).start()).await.expect("set");
    let err = Client::builder_for(RedisTarget::sentinel(set.sentinel_urls(), "no-such-master"))
        .connect()
        .await
        .expect_err("unknown master");
    assert!(matches!(err, Error::WrongDeployment(_)), "{err:?}");
    assert!(err.to_string().contains("\"no-such-master\""), "{err}");
    assert!(err.to_string().contains("master name"), "says what to check: {err}");
}
