//! `Client::repair`: each repair re-checks its violation inside the script,
//! so a report that went stale (the queue moved on since the check) changes
//! nothing. The repairs themselves are exercised end to end by the CLI's
//! `doctor` tests.

use serde_json::json;
use taskline::{NewJob, RepairOutcome, Violation};

use crate::support::{Harness, cmd};

fn key(queue: &str, suffix: &str) -> String {
    format!("taskline:{{{queue}}}:{suffix}")
}

fn skipped(outcome: RepairOutcome) -> String {
    match outcome {
        RepairOutcome::Skipped(why) => why,
        RepairOutcome::Repaired(what) => panic!("a stale violation was repaired: {what}"),
    }
}

#[tokio::test]
async fn a_stale_violation_is_skipped_and_changes_nothing() {
    let h = Harness::start().await;
    let q = "stale";
    let mut raw = h.raw().await;
    let id = h.client.enqueue(q, NewJob::new("x", &json!({})).expect("job")).await.expect("enqueue");
    let ready_key = key(q, "ready:0");

    // Unlisted, then listed again before the repair runs.
    let _: i64 = cmd(&mut raw, &["LREM", &ready_key, "0", id.as_str()]).await;
    let report = h.client.check_queue(q).await.expect("check");
    assert_eq!(report.violations, vec![Violation::Unlisted { id: id.to_string(), state: "ready".into() }]);
    let _: i64 = cmd(&mut raw, &["LPUSH", &ready_key, id.as_str()]).await;
    let why = skipped(h.client.repair(q, &report.violations[0]).await.expect("repair"));
    assert_eq!(why, "a structure lists the job again");
    let listed: Vec<String> = cmd(&mut raw, &["LRANGE", &ready_key, "0", "-1"]).await;
    assert_eq!(listed, vec![id.to_string()], "not pushed a second time");

    // A state mismatch fixed by the queue itself (here: by hand).
    let job_key = key(q, &format!("job:{id}"));
    let _: i64 = cmd(&mut raw, &["HSET", &job_key, "state", "delayed"]).await;
    let report = h.client.check_queue(q).await.expect("check");
    assert!(matches!(report.violations[..], [Violation::StateMismatch { .. }]), "{:?}", report.violations);
    let _: i64 = cmd(&mut raw, &["HSET", &job_key, "state", "ready"]).await;
    assert_eq!(
        skipped(h.client.repair(q, &report.violations[0]).await.expect("repair")),
        "the state agrees now"
    );

    // A missing hash that a producer has written since (same caller id).
    let ghost = Violation::MissingHash { id: id.to_string(), place: "ready".into() };
    assert_eq!(skipped(h.client.repair(q, &ghost).await.expect("repair")), "the job hash exists again");

    // A hidden level that a push has shown again.
    let hidden = Violation::HiddenReadyLevel { level: "0".into() };
    assert_eq!(skipped(h.client.repair(q, &hidden).await.expect("repair")), "the level is in levels again");

    let repaired: Option<u64> = cmd(&mut raw, &["HGET", &key(q, "meta"), "repaired"]).await;
    assert_eq!(repaired, None, "no repair was counted");
    h.assert_sound(q).await;
    let claimed = h.client.claim(q, &crate::support::claim(5, "w1")).await.expect("claim");
    assert_eq!(claimed.jobs.len(), 1, "the job runs exactly once");
}
