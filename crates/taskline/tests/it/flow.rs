//! Queue-wide flow control at the protocol level: the global rate limit,
//! global concurrency, handler-reported holds, mutex groups and the
//! priority minimum share, each asserted on the claims' replies and on the
//! Redis state (the invariant checker runs after every change).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use taskline::{ClaimedJob, Failure, FailureKind, FlowLimit, FlowLimits, Group, JobId, NewJob, RateLimit};

use crate::support::{Harness, claim, cmd};

fn job(n: u32) -> NewJob {
    NewJob::new("work", &json!({ "n": n })).expect("job")
}

fn grouped(n: u32, group: &str) -> NewJob {
    job(n).group(Group::new(group))
}

async fn enqueue_many(h: &Harness, q: &str, n: u32) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(h.client.enqueue(q, job(i)).await.expect("enqueue"));
    }
    ids
}

fn rate(max: u32, per_ms: u64) -> RateLimit {
    RateLimit { max, per: Duration::from_millis(per_ms) }
}

#[tokio::test]
async fn a_rate_limit_starts_at_most_max_per_window_and_says_when_to_come_back() {
    let h = Harness::start().await;
    let q = "rated";
    enqueue_many(&h, q, 20).await;
    h.client.set_rate_limit(q, Some(rate(5, 1_000))).await.expect("set rate");

    let first = h.client.claim(q, &claim(10, "w")).await.expect("claim");
    assert_eq!(first.jobs.len(), 5, "5 of the 10 asked may start");
    assert_eq!(first.limited, Some(FlowLimit::Rate));
    let wait = first.next_due_in().expect("the reply says when the next start is allowed");
    assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "wait {wait:?}");

    let second = h.client.claim(q, &claim(10, "w")).await.expect("claim again");
    assert!(second.jobs.is_empty(), "the window's starts are used up");
    assert_eq!(second.limited, Some(FlowLimit::Rate));
    assert!(second.next_due_in().expect("when") <= wait);

    tokio::time::sleep(second.next_due_in().expect("when") + Duration::from_millis(20)).await;
    let third = h.client.claim(q, &claim(10, "w")).await.expect("claim after the wait");
    assert_eq!(third.jobs.len(), 5, "the window slid: 5 more may start");
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 10, "nothing lost, 10 still wait");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_runtime_limit_wins_over_the_configured_one_until_cleared() {
    let h = Harness::start().await;
    let q = "tuned";
    let configured = FlowLimits { rate: Some(rate(100, 1_000)), concurrency: Some(8) };
    let effective = h.client.apply_configured_flow(q, &configured, 20).await.expect("apply config");
    assert_eq!(effective, configured);

    let effective = h.client.set_rate_limit(q, Some(rate(2, 60_000))).await.expect("override rate");
    assert_eq!(effective, FlowLimits { rate: Some(rate(2, 60_000)), concurrency: Some(8) });
    let effective = h.client.set_global_concurrency(q, None).await.expect("lift concurrency");
    assert_eq!(effective.concurrency, None, "an override to 'no limit' is an override too");

    // A worker starting now writes its TOML again; the override stays.
    let effective = h.client.apply_configured_flow(q, &configured, 20).await.expect("reapply");
    assert_eq!(effective, FlowLimits { rate: Some(rate(2, 60_000)), concurrency: None });
    let settings = h.client.flow_settings(q).await.expect("settings");
    assert_eq!(settings.configured, configured);
    assert_eq!(settings.runtime_rate, Some(Some(rate(2, 60_000))));
    assert_eq!(settings.runtime_concurrency, Some(None));
    assert_eq!(settings.share_every, 20);

    enqueue_many(&h, q, 5).await;
    assert_eq!(h.client.claim(q, &claim(5, "w")).await.expect("claim").jobs.len(), 2, "the override rules");

    let effective = h.client.clear_runtime_limits(q).await.expect("clear");
    assert_eq!(effective, configured, "back to the configured limits");
    assert_eq!(h.client.claim(q, &claim(5, "w")).await.expect("claim").jobs.len(), 3);
}

#[tokio::test]
async fn invalid_limits_are_refused_with_a_reason() {
    let h = Harness::start().await;
    let err = h.client.set_rate_limit("q", Some(rate(0, 1_000))).await.expect_err("0 per period");
    assert!(err.to_string().contains("pause the queue instead"), "{err}");
    let err = h.client.set_global_concurrency("q", Some(0)).await.expect_err("0 at once");
    assert!(err.to_string().contains("pause the queue instead"), "{err}");
    let err = h.client.set_rate_limit("bad queue!", None).await.expect_err("bad queue name");
    assert!(err.to_string().contains("invalid queue name"), "{err}");
}

#[tokio::test]
async fn global_concurrency_caps_active_jobs_and_a_finish_wakes_a_waiting_worker() {
    let h = Harness::start().await;
    let q = "capped";
    let mut conn = h.raw().await;
    enqueue_many(&h, q, 10).await;
    h.client.set_global_concurrency(q, Some(3)).await.expect("set");
    let _: i64 = cmd(&mut conn, &["DEL", &format!("taskline:{{{q}}}:wake")]).await;

    let a = h.client.claim(q, &claim(10, "a")).await.expect("claim a");
    assert_eq!(a.jobs.len(), 3);
    assert_eq!(a.limited, Some(FlowLimit::Concurrency));
    let b = h.client.claim(q, &claim(10, "b")).await.expect("claim b");
    assert!(b.jobs.is_empty(), "another worker gets nothing while 3 are active");
    assert_eq!(b.limited, Some(FlowLimit::Concurrency));
    let wake_len: i64 = cmd(&mut conn, &["LLEN", &format!("taskline:{{{q}}}:wake")]).await;
    assert_eq!(wake_len, 0, "nothing to wake anyone for yet");

    h.client.complete(&a.jobs[0].lease, None).await.expect("complete");
    let wake_len: i64 = cmd(&mut conn, &["LLEN", &format!("taskline:{{{q}}}:wake")]).await;
    assert_eq!(wake_len, 1, "the freed slot wakes one waiting worker");
    let b = h.client.claim(q, &claim(10, "b")).await.expect("claim b again");
    assert_eq!(b.jobs.len(), 1, "exactly the freed slot");
    assert_eq!(h.client.counts(q).await.expect("counts").active, 3);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_rate_limited_release_spends_no_attempt_and_can_hold_the_queue() {
    let h = Harness::start().await;
    let q = "upstream";
    enqueue_many(&h, q, 3).await;
    let claimed = h.client.claim(q, &claim(1, "w")).await.expect("claim");
    let first = &claimed.jobs[0];
    let released =
        h.client.release_rate_limited(&first.lease, Duration::from_millis(400), true).await.expect("release");
    assert_eq!(released.releases, 0, "rate-limited returns do not count as releases");

    let held = h.client.claim(q, &claim(5, "w")).await.expect("claim while held");
    assert!(held.jobs.is_empty(), "the whole queue is held");
    assert_eq!(held.limited, Some(FlowLimit::Hold));
    let wait = held.next_due_in().expect("until when");
    assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(400), "wait {wait:?}");

    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let after = h.client.claim(q, &claim(5, "w")).await.expect("claim after the hold");
    assert_eq!(after.jobs.len(), 3, "the hold ended and the deferred job is due again");
    let again = after.jobs.iter().find(|j| j.lease.job_id == first.lease.job_id).expect("deferred job");
    assert_eq!(again.facts.attempt, 1, "the rate-limited attempt was not spent");
    assert_eq!(again.facts.releases, 0);
    h.assert_sound(q).await;
}

/// Claims up to `n` jobs in one call; returns them.
async fn claim_up_to(h: &Harness, q: &str, n: usize) -> Vec<ClaimedJob> {
    let claimed = h.client.claim(q, &claim(n as u32, "w")).await.expect("claim");
    claimed.jobs
}

fn group_of(job: &ClaimedJob) -> String {
    let payload: serde_json::Value = serde_json::from_str(&job.facts.payload).expect("json");
    payload["n"].as_u64().map(|n| if n < 100 { "a" } else { "b" }.to_string()).expect("n")
}

#[tokio::test]
async fn a_mutex_group_runs_one_job_at_a_time_while_other_jobs_flow_past() {
    let h = Harness::start().await;
    let q = "groups";
    for n in 0..3 {
        h.client.enqueue(q, grouped(n, "a")).await.expect("a");
    }
    for n in 100..102 {
        h.client.enqueue(q, grouped(n, "b")).await.expect("b");
    }
    let free = h.client.enqueue(q, job(500)).await.expect("ungrouped");
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 6, "waiting group jobs count as ready");
    h.assert_sound(q).await;

    let running = claim_up_to(&h, q, 10).await;
    assert_eq!(running.len(), 3, "one of a, one of b, and the ungrouped job: {running:?}");
    assert!(running.iter().any(|j| j.lease.job_id == free));
    assert!(h.client.claim(q, &claim(10, "w")).await.expect("claim").jobs.is_empty());
    h.assert_sound(q).await;

    // a's job completes: a's next job becomes claimable, b stays busy.
    let a0 = running.iter().find(|j| j.facts.payload.contains("\"n\":0")).expect("a's first job");
    h.client.complete(&a0.lease, None).await.expect("complete");
    let next = claim_up_to(&h, q, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(group_of(&next[0]), "a");
    h.assert_sound(q).await;

    // b's job fails into backoff: the slot passes to b's next job.
    let b0 = running.iter().find(|j| j.facts.payload.contains("\"n\":100")).expect("b's first job");
    let failure = Failure {
        kind: FailureKind::Transient,
        reason: None,
        message: "flaky".into(),
        retry_delay: Duration::from_secs(60),
    };
    h.client.fail(&b0.lease, &failure).await.expect("fail");
    let next_b = claim_up_to(&h, q, 10).await;
    assert_eq!(next_b.len(), 1);
    assert_eq!(group_of(&next_b[0]), "b");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_group_slot_is_freed_when_its_lease_is_reaped() {
    let h = Harness::start().await;
    let q = "crashy";
    h.client.enqueue(q, grouped(0, "a")).await.expect("a0");
    h.client.enqueue(q, grouped(1, "a")).await.expect("a1");
    let short = taskline::ClaimOptions { count: 5, lease: Duration::from_millis(100), worker: "dies".into() };
    let held = h.client.claim(q, &short).await.expect("claim");
    assert_eq!(held.jobs.len(), 1, "a holds one slot");
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Reaped with a delay: the crashed job backs off and a's next job runs.
    let reaped = h.client.reap(q, 10, Duration::from_secs(30)).await.expect("reap");
    assert_eq!(reaped.retried, 1);
    let next = h.client.claim(q, &claim(5, "w")).await.expect("claim");
    assert_eq!(next.jobs.len(), 1);
    assert!(next.jobs[0].facts.payload.contains("\"n\":1"), "a's second job took the freed slot");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_group_limit_above_one_runs_that_many_at_once() {
    let h = Harness::start().await;
    let q = "wide";
    for n in 0..6 {
        h.client.enqueue(q, job(n).group(Group::with_limit("tenant", 2))).await.expect("enqueue");
    }
    assert_eq!(claim_up_to(&h, q, 10).await.len(), 2);
    h.assert_sound(q).await;
    let err = h.client.enqueue(q, job(9).group(Group::with_limit("tenant", 0))).await.expect_err("limit 0");
    assert!(err.to_string().contains("at least 1"), "{err}");
}

#[tokio::test]
async fn draining_a_queue_removes_waiting_group_jobs_too() {
    let h = Harness::start().await;
    let q = "drained";
    for n in 0..4 {
        h.client.enqueue(q, grouped(n, "a")).await.expect("enqueue");
    }
    let drained = h.client.drain_ready(q).await.expect("drain");
    assert_eq!(drained.drained, 4);
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 0);
    let mut conn = h.raw().await;
    let groups: BTreeMap<String, String> =
        cmd(&mut conn, &["HGETALL", &format!("taskline:{{{q}}}:groups")]).await;
    assert!(groups.is_empty(), "no slot left held: {groups:?}");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn lower_priorities_keep_their_minimum_share_under_high_priority_load() {
    let h = Harness::start().await;
    let q = "shared";
    h.client.apply_configured_flow(q, &FlowLimits::default(), 4).await.expect("one in 4");
    for n in 0..40 {
        h.client.enqueue(q, job(n).priority(9)).await.expect("high");
    }
    for n in 0..40 {
        h.client.enqueue(q, job(n).priority(0)).await.expect("low");
    }
    let mut levels = Vec::new();
    for _ in 0..20 {
        let claimed = h.client.claim(q, &claim(1, "w")).await.expect("claim");
        levels.push(claimed.jobs[0].facts.priority);
    }
    assert_eq!(levels[0], 9, "a run starts with the highest level");
    assert_eq!(levels.iter().filter(|&&l| l == 0).count(), 5, "one in 4 goes to level 0: {levels:?}");

    // Batched claims keep the same share.
    let batch = h.client.claim(q, &claim(8, "w")).await.expect("batch");
    assert_eq!(batch.jobs.iter().filter(|j| j.facts.priority == 0).count(), 2);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn without_a_share_priority_is_strict() {
    let h = Harness::start().await;
    let q = "strict";
    for n in 0..5 {
        h.client.enqueue(q, job(n).priority(0)).await.expect("low");
        h.client.enqueue(q, job(n).priority(5)).await.expect("high");
    }
    let claimed = h.client.claim(q, &claim(5, "w")).await.expect("claim");
    assert!(claimed.jobs.iter().all(|j| j.facts.priority == 5), "strict: high first");
}

#[tokio::test]
async fn complete_and_claim_refills_its_own_slot_at_the_concurrency_limit() {
    let h = Harness::start().await;
    let q = "refill";
    enqueue_many(&h, q, 5).await;
    h.client.set_global_concurrency(q, Some(2)).await.expect("set");
    let held = h.client.claim(q, &claim(5, "w")).await.expect("claim");
    assert_eq!(held.jobs.len(), 2);
    let (_, next) =
        h.client.complete_and_claim(&held.jobs[0].lease, None, &claim(1, "w")).await.expect("complete");
    assert_eq!(next.jobs.len(), 1, "the finishing job's slot passes straight to its successor");
    assert_eq!(h.client.counts(q).await.expect("counts").active, 2);
    h.assert_sound(q).await;
}
