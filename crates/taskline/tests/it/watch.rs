//! `job_status`, `watch` and `wait_for`: what a caller waiting on one job
//! sees, with the protocol driven step by step.

use std::time::Duration;

use serde_json::json;
use taskline::{Client, Error, Failure, JobId, JobState, JobUpdate, NewJob, Progress};

use crate::support::{Harness, claim};

const LIMIT: Duration = Duration::from_secs(10);

async fn enqueue(client: &Client, queue: &str) -> JobId {
    client.enqueue(queue, NewJob::new("export", &json!({})).expect("job")).await.expect("enqueue")
}

/// Claims the one ready (or due) job of `queue`.
async fn claim_one(client: &Client, queue: &str) -> taskline::ClaimedJob {
    let mut jobs = client.claim(queue, &claim(1, "w")).await.expect("claim").jobs;
    assert_eq!(jobs.len(), 1, "one job leased");
    jobs.remove(0)
}

/// Every update of `watch` until it ends (bounded by [`LIMIT`]).
async fn collect(mut watch: taskline::JobWatch) -> Vec<JobUpdate> {
    tokio::time::timeout(LIMIT, async {
        let mut updates = Vec::new();
        while let Some(update) = watch.next().await {
            updates.push(update.expect("update"));
        }
        updates
    })
    .await
    .expect("the watch ends at the terminal state")
}

/// `(state, attempt)` of each update that tells a state.
fn states(updates: &[JobUpdate]) -> Vec<(JobState, u32)> {
    updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::Status(s) => Some((s.state, s.attempt)),
            JobUpdate::State { state, attempt, .. } => Some((*state, *attempt)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn watch_started_mid_way_sees_every_state_change_until_completed() {
    let h = Harness::start().await;
    let (c, q) = (&h.client, "watched");
    let id = enqueue(c, q).await;
    let first = claim_one(c, q).await;
    c.fail(&first.lease, &Failure::transient("timeout 1", Duration::ZERO)).await.expect("fail 1");

    // Mid-way: attempt 1 failed, the job waits for its retry.
    let watch = c.watch(q, &id).await.expect("watch");
    let second = claim_one(c, q).await;
    c.report_progress(&second.lease, &Progress::new(10, 40, "rows")).await.expect("progress");
    c.fail(&second.lease, &Failure::transient("timeout 2", Duration::ZERO)).await.expect("fail 2");
    let third = claim_one(c, q).await;
    c.complete(&third.lease, Some(&json!({"rows": 40}))).await.expect("complete");

    let updates = collect(watch).await;
    assert_eq!(
        states(&updates),
        vec![
            (JobState::Delayed, 1),
            (JobState::Active, 2),
            (JobState::Delayed, 2),
            (JobState::Active, 3),
            (JobState::Completed, 3)
        ],
        "{updates:#?}"
    );
    assert!(
        updates.contains(&JobUpdate::Progress { attempt: 2, progress: Progress::new(10, 40, "rows") }),
        "{updates:#?}"
    );
    let Some(JobUpdate::Status(last)) = updates.last() else { panic!("ends with a status: {updates:#?}") };
    assert_eq!(last.result, Some(json!({"rows": 40})));
    assert_eq!(last.last_error.as_ref().map(|e| e.message.as_str()), Some("timeout 2"));
}

#[tokio::test]
async fn watch_reads_the_record_when_events_are_missing() {
    let h = Harness::start().await;
    // This client's scripts emit no events at all: a worst-case gap.
    let silent = Client::builder(&h.server.url()).events_max_len(0).connect().await.expect("connect");
    let q = "silent";
    let id = enqueue(&silent, q).await;
    let watch = h.client.watch(q, &id).await.expect("watch");
    let job = claim_one(&silent, q).await;
    silent.complete(&job.lease, Some(&json!("done"))).await.expect("complete");

    let updates = collect(watch).await;
    assert_eq!(states(&updates).first(), Some(&(JobState::Ready, 0)), "{updates:#?}");
    let Some(JobUpdate::Status(last)) = updates.last() else { panic!("ends with a status: {updates:#?}") };
    assert_eq!((last.state, last.result.clone()), (JobState::Completed, Some(json!("done"))));
}

#[tokio::test]
async fn wait_for_returns_the_result_the_final_error_or_times_out() {
    let h = Harness::start().await;
    let (c, q) = (&h.client, "waited");

    let id = enqueue(c, q).await;
    let waiter = {
        let (c, id) = (c.clone(), id.clone());
        tokio::spawn(async move { c.wait_for(q, &id, LIMIT).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = claim_one(c, q).await;
    c.complete(&job.lease, Some(&json!({"url": "/exports/7.csv"}))).await.expect("complete");
    assert_eq!(waiter.await.expect("join").expect("completed"), Some(json!({"url": "/exports/7.csv"})));

    let id = enqueue(c, q).await;
    let job = claim_one(c, q).await;
    c.fail(&job.lease, &Failure::permanent("no such customer")).await.expect("fail");
    let err = c.wait_for(q, &id, LIMIT).await.expect_err("dead");
    assert!(
        matches!(&err, Error::JobDead { reason, last_error: Some(e), .. } if reason == "permanent" && e == "no such customer"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no such customer"), "{err}");

    let id = enqueue(c, q).await;
    let err = c.wait_for(q, &id, Duration::from_millis(300)).await.expect_err("times out");
    assert!(matches!(err, Error::WaitTimedOut { .. }), "{err:?}");

    let missing = c.wait_for(q, &JobId::new("nope").expect("id"), LIMIT).await.expect_err("missing");
    assert!(matches!(missing, Error::JobNotFound { .. }), "{missing:?}");
}

#[tokio::test]
async fn job_status_shows_state_progress_attempts_and_last_error() {
    let h = Harness::start().await;
    let (c, q) = (&h.client, "status");
    let id = enqueue(c, q).await;
    let first = claim_one(c, q).await;
    c.fail(&first.lease, &Failure::transient("flaky upstream", Duration::ZERO)).await.expect("fail");
    let second = claim_one(c, q).await;
    c.report_progress(&second.lease, &Progress::new(3, 4, "files").with_message("zipping"))
        .await
        .expect("progress");

    let status = c.job_status(q, &id).await.expect("status");
    assert_eq!((status.state, status.attempt, status.max_attempts), (JobState::Active, 2, 5));
    assert_eq!(status.progress, Some(Progress::new(3, 4, "files").with_message("zipping")));
    assert_eq!(status.last_error.as_ref().map(|e| e.message.as_str()), Some("flaky upstream"));
    assert_eq!(status.result, None);
    let json = serde_json::to_value(&status).expect("serialize");
    assert_eq!(json["state"], "active");
    assert_eq!(json["progress"]["done"], 3);
}
