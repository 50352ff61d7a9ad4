//! Progress reports and checkpoints: fenced by the lease token, stored on
//! the job, emitted as events, and handed to the next attempt.

use std::time::Duration;

use serde_json::json;
use taskline::{ClaimOptions, ClaimedJob, Error, Failure, JobId, NewJob, Progress};

use crate::support::{Harness, claim};

async fn enqueue(h: &Harness, queue: &str) -> JobId {
    h.client.enqueue(queue, NewJob::new("export", &json!({})).expect("job")).await.expect("enqueue")
}

async fn claim_one(h: &Harness, queue: &str, options: &ClaimOptions) -> ClaimedJob {
    let mut jobs = h.client.claim(queue, options).await.expect("claim").jobs;
    assert_eq!(jobs.len(), 1, "one job leased");
    jobs.remove(0)
}

#[tokio::test]
async fn a_stale_attempt_cannot_write_checkpoint_or_progress() {
    let h = Harness::start().await;
    let q = "stale-checkpoint";
    let id = enqueue(&h, q).await;
    let short = ClaimOptions { lease: Duration::from_millis(50), ..claim(1, "worker-a") };
    let a = claim_one(&h, q, &short).await;
    h.client.save_checkpoint(&a.lease, r#"{"done":100}"#).await.expect("A's checkpoint, lease held");
    tokio::time::sleep(Duration::from_millis(120)).await;
    h.client.reap(q, 10, Duration::ZERO).await.expect("reap");

    let b = claim_one(&h, q, &claim(1, "worker-b")).await;
    assert_eq!(
        (b.facts.attempt, b.facts.checkpoint.as_deref()),
        (2, Some(r#"{"done":100}"#)),
        "B resumes from A's"
    );
    h.client.save_checkpoint(&b.lease, r#"{"done":300}"#).await.expect("B's checkpoint");
    h.client.report_progress(&b.lease, &Progress::new(300, 1000, "rows")).await.expect("B's progress");

    let stale = h.client.save_checkpoint(&a.lease, r#"{"done":200}"#).await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");
    let stale = h.client.report_progress(&a.lease, &Progress::new(200, 1000, "rows")).await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");

    let job = h.client.get_job(q, &id).await.expect("job");
    assert_eq!(job.facts.checkpoint.as_deref(), Some(r#"{"done":300}"#), "B's checkpoint survives");
    assert_eq!(job.progress.as_deref(), Some(r#"{"done":300,"total":1000,"unit":"rows"}"#));
    h.assert_sound(q).await;

    // B fails; attempt 3 gets B's checkpoint, not A's late write.
    h.client.fail(&b.lease, &Failure::transient("boom", Duration::ZERO)).await.expect("fail");
    let c = claim_one(&h, q, &claim(1, "worker-c")).await;
    assert_eq!((c.facts.attempt, c.facts.checkpoint.as_deref()), (3, Some(r#"{"done":300}"#)));
}

#[tokio::test]
async fn progress_is_stored_and_emitted_as_an_event() {
    let h = Harness::start().await;
    let q = "progress-events";
    let id = enqueue(&h, q).await;
    let a = claim_one(&h, q, &claim(1, "w")).await;
    let report = Progress::new(12_000, 40_000, "rows").with_message("exporting orders");
    h.client.report_progress(&a.lease, &report).await.expect("progress");

    let job = h.client.get_job(q, &id).await.expect("job");
    let stored: Progress = serde_json::from_str(job.progress.as_deref().expect("stored")).expect("json");
    assert_eq!(stored, report);
    let events = h.client.read_events(q, None, 100).await.expect("events");
    let e = events.iter().find(|e| e.event == "progress").expect("a progress event");
    assert_eq!((e.job_id.as_str(), e.attempt), (id.as_str(), 1));
    let field = |k: &str| e.extra.get(k).map(String::as_str);
    assert_eq!(
        (field("done"), field("total"), field("unit"), field("message")),
        (Some("12000"), Some("40000"), Some("rows"), Some("exporting orders"))
    );

    h.client.complete(&a.lease, None).await.expect("complete");
    let after = h.client.report_progress(&a.lease, &Progress::new(1, 1, "rows")).await;
    assert!(matches!(after, Err(Error::LeaseLost { .. })), "a finished attempt writes nothing: {after:?}");
}

#[tokio::test]
async fn oversize_or_invalid_checkpoints_are_refused_before_sending() {
    let h = Harness::start_with(|b| {
        b.options(taskline::ClientOptions { max_checkpoint_bytes: 100, ..Default::default() })
    })
    .await;
    let q = "checkpoint-limits";
    let id = enqueue(&h, q).await;
    let a = claim_one(&h, q, &claim(1, "w")).await;

    let big = format!("\"{}\"", "x".repeat(200));
    let err = h.client.save_checkpoint(&a.lease, &big).await.expect_err("too large");
    assert!(matches!(err, Error::PayloadTooLarge { what: "checkpoint", size: 202, limit: 100 }), "{err}");
    assert!(err.to_string().contains("checkpoint is 202 bytes, over the 100-byte limit"), "{err}");
    let err = h.client.save_checkpoint(&a.lease, "{not json").await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidPayload(_)), "{err}");
    assert_eq!(h.client.get_job(q, &id).await.expect("job").facts.checkpoint, None);
}
