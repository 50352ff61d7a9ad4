//! Concurrent calls merged into shared script calls (`coalesce_calls`):
//! every caller still gets its own answer, each job its own outcome, and
//! one job's lost lease or duplicate id never spills onto the others.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::json;
use taskline::{ClaimedJob, Completion, Error, JobId, JobState, Lease, NewJob};

use crate::support::{Harness, claim, cmd};

fn job(i: usize) -> NewJob {
    NewJob::new("work", &json!({ "n": i })).expect("job")
}

/// EVALSHA calls Redis has run since the last `CONFIG RESETSTAT`.
async fn script_calls(h: &Harness) -> u64 {
    let mut conn = h.raw().await;
    let info: String = cmd(&mut conn, &["INFO", "commandstats"]).await;
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map(|calls| calls.parse().expect("calls is a number"))
        .unwrap_or(0)
}

async fn reset_stats(h: &Harness) {
    let mut conn = h.raw().await;
    let _: () = cmd(&mut conn, &["CONFIG", "RESETSTAT"]).await;
}

async fn enqueue_and_claim(h: &Harness, q: &str, enqueue: usize, lease: usize) -> Vec<ClaimedJob> {
    let jobs = (0..enqueue).map(job).collect();
    h.client.enqueue_bulk(q, jobs).await.expect("enqueue_bulk");
    let claimed = h.client.claim(q, &claim(lease as u32, "w1")).await.expect("claim").jobs;
    assert_eq!(claimed.len(), lease);
    claimed
}

#[tokio::test]
async fn concurrent_completions_share_script_calls_and_each_gets_its_own_answer() {
    let h = Harness::start().await;
    let q = "co-complete";
    let jobs = enqueue_and_claim(&h, q, 200, 200).await;
    // Jobs 0..190 complete with their own result; 190..195 present a
    // forged token; 195..200 stay untouched; and 3 ids do not exist.
    let mut leases: Vec<Lease> = jobs.iter().map(|j| j.lease.clone()).collect();
    for lease in &mut leases[190..195] {
        lease.token = "forged.1".into();
    }
    let mut calls: Vec<(Lease, serde_json::Value)> =
        leases[..195].iter().enumerate().map(|(i, lease)| (lease.clone(), json!({ "done": i }))).collect();
    for n in 0..3 {
        let missing = Lease { job_id: JobId::new(format!("missing-{n}")).unwrap(), ..leases[0].clone() };
        calls.push((missing, json!(null)));
    }

    reset_stats(&h).await;
    let answers = join_all(calls.iter().map(|(lease, result)| h.client.complete(lease, Some(result)))).await;
    let script_calls = script_calls(&h).await;

    for (i, answer) in answers.iter().enumerate() {
        match i {
            0..190 => assert_eq!(answer.as_ref().ok(), Some(&Completion::Completed), "job {i}: {answer:?}"),
            190..195 => assert!(matches!(answer, Err(Error::LeaseLost { .. })), "forged {i}: {answer:?}"),
            _ => assert!(matches!(answer, Err(Error::JobNotFound { .. })), "missing {i}: {answer:?}"),
        }
    }
    assert!(
        script_calls < calls.len() as u64 / 2,
        "{} concurrent completions took {script_calls} script calls: they were not merged",
        calls.len()
    );
    for (i, job) in jobs.iter().enumerate() {
        let stored = h.client.get_job(q, &job.lease.job_id).await.expect("get_job");
        if i < 190 {
            assert_eq!(stored.state, JobState::Completed, "job {i}");
            let result: serde_json::Value =
                serde_json::from_str(stored.result.as_deref().expect("a result")).expect("JSON");
            assert_eq!(result, json!({ "done": i }), "job {i} stored another job's result");
        } else {
            assert_eq!(stored.state, JobState::Active, "job {i} was touched by a forged or absent call");
        }
    }
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.completed, counts.active), (190, 10));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn concurrent_complete_and_claim_hands_each_caller_its_own_successor() {
    let h = Harness::start().await;
    let q = "co-cac";
    let first = enqueue_and_claim(&h, q, 100, 40).await;
    let options = claim(1, "w1");
    let answers = join_all(first.iter().map(|j| h.client.complete_and_claim(&j.lease, None, &options))).await;

    let finished: BTreeSet<String> = first.iter().map(|j| j.lease.job_id.to_string()).collect();
    let mut successors = BTreeSet::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let (completion, next) = answer.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(completion, Completion::Completed);
        assert_eq!(next.jobs.len(), 1, "call {i} asked for one successor and got {}", next.jobs.len());
        let successor = &next.jobs[0];
        assert!(!finished.contains(successor.lease.job_id.as_str()), "a completed job was handed out again");
        assert!(successors.insert(successor.lease.job_id.to_string()), "two callers got the same successor");
        assert_eq!(successor.facts.attempt, 1);
    }
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.completed, counts.active, counts.ready), (40, 40, 20));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_resent_completion_gets_back_the_successor_its_batch_leased_for_it() {
    let h = Harness::start().await;
    let q = "co-resend";
    let first = enqueue_and_claim(&h, q, 30, 10).await;
    let options = claim(1, "w1");
    let answers = join_all(first.iter().map(|j| h.client.complete_and_claim(&j.lease, None, &options))).await;
    let handed: Vec<ClaimedJob> = answers.into_iter().map(|a| a.expect("cac").1.jobs.remove(0)).collect();

    // Every reply above is "lost": each caller resends, in batches made up
    // differently (all at once, in reverse order).
    let resends =
        join_all(first.iter().rev().map(|j| h.client.complete_and_claim(&j.lease, None, &options))).await;
    for (resend, (original, successor)) in resends.into_iter().zip(first.iter().zip(&handed).rev()) {
        let (completion, again) = resend.expect("resend");
        assert_eq!(completion, Completion::AlreadyCompleted, "job {}", original.lease.job_id);
        let again: Vec<&Lease> = again.jobs.iter().map(|j| &j.lease).collect();
        assert_eq!(again, vec![&successor.lease], "the resend of {} got another job", original.lease.job_id);
    }
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.completed, counts.active, counts.ready), (10, 10, 10), "a resend leased more jobs");
    // The handed-back leases are the real ones.
    for successor in &handed {
        assert_eq!(h.client.complete(&successor.lease, None).await.expect("complete"), Completion::Completed);
    }
    h.assert_sound(q).await;
}

#[tokio::test]
async fn concurrent_enqueues_share_script_calls_and_keep_every_job() {
    let h = Harness::start().await;
    let q = "co-enqueue";
    reset_stats(&h).await;
    let ids = join_all((0..400).map(|i| h.client.enqueue(q, job(i)))).await;
    let script_calls = script_calls(&h).await;
    let ids: BTreeSet<String> = ids.into_iter().map(|r| r.expect("enqueue").to_string()).collect();
    assert_eq!(ids.len(), 400, "every call got its own job");
    assert!(
        script_calls < 200,
        "400 concurrent enqueues took {script_calls} script calls: they were not merged"
    );
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 400);

    // The same caller-chosen id from many callers at once: one job.
    let same = join_all((0..20).map(|i| h.client.enqueue(q, job(i).id(JobId::new("shared").unwrap())))).await;
    let created = same.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "{same:?}");
    for r in same.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(Error::DuplicateJob { existing, .. }) if existing == "shared"), "{r:?}");
    }
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 401);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn without_coalescing_every_call_is_its_own_script_call() {
    let h = Harness::start_with(|b| b.coalesce_calls(false)).await;
    let q = "co-off";
    // Load the script first: calls that meet NOSCRIPT are sent twice.
    h.client.enqueue(q, job(0)).await.expect("enqueue");
    reset_stats(&h).await;
    let ids = join_all((1..=50).map(|i| h.client.enqueue(q, job(i)))).await;
    assert!(ids.iter().all(|r| r.is_ok()));
    let calls = script_calls(&h).await;
    assert_eq!(calls, 50, "50 enqueues took {calls} script calls");
}

#[tokio::test]
async fn a_bulk_enqueue_keeps_its_order_across_grouped_and_plain_jobs() {
    let h = Harness::start().await;
    let q = "co-order";
    let jobs = vec![
        job(0),
        job(1).group(taskline::Group::new("g")),
        job(2),
        job(3).delay(std::time::Duration::from_secs(3600)),
        job(4),
        job(5).priority(3),
        job(6),
    ];
    let outcomes = h.client.enqueue_bulk(q, jobs).await.expect("enqueue_bulk");
    let ids: Vec<String> = outcomes.iter().map(|o| o.id().to_string()).collect();
    let claimed = h.client.claim(q, &claim(10, "w1")).await.expect("claim").jobs;
    let order: Vec<String> = claimed.iter().map(|j| j.lease.job_id.to_string()).collect();
    // Priority 3 first, then level 0 in enqueue order; the delayed job waits.
    let expected =
        vec![ids[5].clone(), ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[4].clone(), ids[6].clone()];
    assert_eq!(order, expected);
    h.assert_sound(q).await;
}
