//! The client crate's operator API, directly: the parts the CLI tests
//! cannot pin from outside.

use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, DeadFilter, JobId};

use crate::support::{Env, claim_options, cmd, job_exists, key};

#[tokio::test]
async fn purge_leaves_jobs_that_are_not_dead_alone() {
    let env = Env::start().await;
    let dead = env.dead("q", &[("a", "boom")]).await.remove(0);
    let ready = env.ready("q", "a", json!({})).await;
    env.client.claim("q", &claim_options(1)).await.expect("claim");
    let missing = JobId::new("missing").expect("id");

    let purged =
        env.client.purge_dead("q", &[dead.clone(), ready.clone(), missing.clone()]).await.expect("purge");
    assert_eq!(purged.purged, 1);
    assert_eq!(purged.not_dead, [ready.clone(), missing]);
    assert!(!job_exists(&env, "q", dead.as_str()).await);
    assert!(job_exists(&env, "q", ready.as_str()).await, "the active job is untouched");
    // Purging again is harmless.
    assert_eq!(
        env.client.purge_dead("q", std::slice::from_ref(&dead)).await.expect("purge").not_dead,
        [dead]
    );
}

#[tokio::test]
async fn find_dead_pages_past_one_chunk_and_counts_all_matches() {
    let env = Env::start().await;
    let mut specs: Vec<(&str, &str)> = Vec::new();
    for i in 0..1_200 {
        specs.push(if i % 3 == 0 { ("wanted", "quota exceeded") } else { ("other", "fine") });
    }
    let ids = env.dead("q", &specs).await;
    let filter = DeadFilter { name: Some("wanted".into()), ..DeadFilter::default() };
    let found = env.client.find_dead("q", &filter, Some(10)).await.expect("find");
    assert_eq!((found.matched, found.jobs.len()), (400, 10));
    let mut pages = 0;
    let all = env.client.find_dead_ids("q", &filter, |_, _| pages += 1).await.expect("ids");
    assert_eq!(all.len(), 400);
    assert_eq!(pages, 2, "1,200 dead jobs are two pages");
    let expected: Vec<JobId> = ids.iter().step_by(3).cloned().collect();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    let mut expected_sorted = expected;
    expected_sorted.sort();
    assert_eq!(all_sorted, expected_sorted);
    let everything = env.client.find_dead("q", &DeadFilter::default(), None).await.expect("all");
    assert_eq!((everything.matched, everything.jobs.len()), (1_200, 1_200));
}

#[tokio::test]
async fn following_blocks_on_its_own_connection_past_the_response_timeout() {
    let env = Env::start().await;
    // A client whose shared connection gives up after 300 ms.
    let client = Client::builder(&env.server.url())
        .response_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    env.ready("q", "a", json!({})).await;
    let mut follower = client.follow_events("q", None).await.expect("follow");
    follower.set_block(Duration::from_millis(1_500));

    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let batch = follower.next_batch().await;
        (batch, started.elapsed(), follower)
    });
    // While the follower blocks, the shared connection answers at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    client.counts("q").await.expect("counts while following");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "shared connection stalled: {:?}",
        started.elapsed()
    );

    let (batch, waited, mut follower) = waiting.await.expect("join");
    assert_eq!(batch.expect("a timed-out block is not an error"), Vec::new());
    assert!(waited >= Duration::from_millis(1_400), "blocked the whole time: {waited:?}");

    // New events are returned, after the last seen.
    let id = env.ready("q", "a", json!({})).await;
    let batch = follower.next_batch().await.expect("read");
    assert_eq!(batch.len(), 1);
    assert_eq!((batch[0].event.as_str(), batch[0].job_id.as_str()), ("enqueued", id.as_str()));
    assert_eq!(follower.last_id(), batch[0].stream_id);
}

#[tokio::test]
async fn drain_deletes_ready_jobs_and_skips_stray_entries() {
    let env = Env::start().await;
    let first = env.ready("q", "a", json!({})).await;
    // A stray id without a job hash, as a broken writer could leave.
    let mut conn = env.raw().await;
    let _: i64 = cmd(&mut conn, &["LPUSH", &key("q", "ready:0"), "ghost"]).await;
    let drained = env.client.drain_ready("q").await.expect("drain");
    assert_eq!((drained.drained, drained.skipped), (1, 1));
    assert!(!job_exists(&env, "q", first.as_str()).await);
    assert_eq!(env.client.drain_ready("q").await.expect("drain again"), taskline::Drained::default());
}
