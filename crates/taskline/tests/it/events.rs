//! The events stream's wire format: every entry the scripts write lists
//! its jobs in the current layout (`ids`, `names`, `attempts`,
//! `correlation_ids`; see `operator/events.rs`), whether it holds one job
//! or a batch, and reads back as one event per job.

use serde_json::json;
use taskline::keys::QueueKeys;
use taskline::{Completion, Failure, NewJob, Progress, QueueName};

use crate::support::{Harness, claim, cmd, stream_events};

#[tokio::test]
async fn every_entry_written_is_in_the_current_layout() {
    let h = Harness::start().await;
    let q = "wire";
    let events_key = QueueKeys::new("taskline", &QueueName::new(q).expect("name")).events();
    let job = |n: u32| NewJob::new("work", &json!({ "n": n })).expect("job");
    let a = h.client.enqueue(q, job(1).correlation_id("order-7")).await.expect("enqueue a");
    let b = h.client.enqueue(q, job(2)).await.expect("enqueue b");
    let jobs = h.client.claim(q, &claim(2, "w1")).await.expect("claim").jobs;
    assert_eq!(jobs.len(), 2);
    let (la, lb) = (&jobs[0].lease, &jobs[1].lease);
    h.client.report_progress(la, &Progress::new(1, 2, "rows")).await.expect("progress");
    h.client.save_checkpoint(la, r#"{"row":1}"#).await.expect("checkpoint");
    assert_eq!(h.client.complete(la, None).await.expect("complete"), Completion::Completed);
    h.client.fail(lb, &Failure::permanent("bad input")).await.expect("fail");
    h.client.replay(q, std::slice::from_ref(&b)).await.expect("replay");

    let mut conn = h.raw().await;
    let entries: Vec<(String, Vec<String>)> = cmd(&mut conn, &["XRANGE", &events_key, "-", "+"]).await;
    for (stream_id, fields) in &entries {
        let names: Vec<&str> = fields.iter().step_by(2).map(String::as_str).collect();
        assert!(names.contains(&"ids") && names.contains(&"names"), "{stream_id}: {names:?}");
        assert!(
            !names.iter().any(|n| ["id", "name", "correlation_id"].contains(n)),
            "{stream_id}: {names:?}"
        );
    }

    let events = stream_events(&mut conn, &events_key).await;
    let seen: Vec<(&str, &str, u32, Option<&str>)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.job_id.as_str(), e.attempt, e.correlation_id.as_deref()))
        .collect();
    let (a, b) = (a.as_str(), b.as_str());
    let cid = Some("order-7");
    assert_eq!(
        seen,
        vec![
            ("enqueued", a, 0, cid),
            ("enqueued", b, 0, None),
            ("claimed", a, 1, cid),
            ("claimed", b, 1, None),
            ("progress", a, 1, cid),
            ("checkpoint", a, 1, cid),
            ("completed", a, 1, cid),
            ("failed", b, 1, None),
            ("dead", b, 1, None),
            ("replayed", b, 0, None),
        ]
    );
    assert!(events.iter().all(|e| e.name == "work"), "{events:?}");
    let dead = &events[8];
    assert_eq!(dead.extra.get("reason").map(String::as_str), Some("permanent"), "{dead:?}");
}
