//! The worker-side protocol end to end: complete, complete-and-claim, fail,
//! extend, release, reap, replay and completed-job retention.
//!
//! Every test asserts the reply AND the whole resulting Redis state (the job
//! hash, which structure holds the id, the counters in `meta`), and runs the
//! invariant checker after every operation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use serde_json::json;
use taskline::{
    ClaimOptions, ClaimedJob, Completion, Error, FailOutcome, Failure, FailureKind, JobId, JobState, Lease,
    NewJob, Reaped, Released, Replayed, Retention,
};

use crate::support::{Harness, claim, cmd, stream_events};

type Conn = MultiplexedConnection;
type Fields = BTreeMap<String, String>;

// ---------------------------------------------------------------------------
// Helpers: raw reads of the queue's keys.
// ---------------------------------------------------------------------------

/// `taskline:{q}:<suffix>`.
fn key(q: &str, suffix: &str) -> String {
    format!("taskline:{{{q}}}:{suffix}")
}

fn job_key(q: &str, id: &JobId) -> String {
    key(q, &format!("job:{id}"))
}

/// A time as epoch milliseconds.
fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after the epoch").as_millis() as u64
}

/// The Redis server's clock, in epoch milliseconds (the one clock scripts use).
async fn server_ms(conn: &mut Conn) -> u64 {
    let t: Vec<String> = cmd(conn, &["TIME"]).await;
    t[0].parse::<u64>().expect("secs") * 1000 + t[1].parse::<u64>().expect("micros") / 1000
}

async fn job_fields(conn: &mut Conn, q: &str, id: &JobId) -> Fields {
    cmd(conn, &["HGETALL", &job_key(q, id)]).await
}

async fn job_exists(conn: &mut Conn, q: &str, id: &JobId) -> bool {
    let n: i64 = cmd(conn, &["EXISTS", &job_key(q, id)]).await;
    n == 1
}

/// The score of `id` in the zset `set` (`delayed`, `active`, `completed`,
/// `dead`), as integer ms.
async fn score(conn: &mut Conn, q: &str, set: &str, id: &JobId) -> Option<u64> {
    let s: Option<f64> = cmd(conn, &["ZSCORE", &key(q, set), id.as_str()]).await;
    s.map(|s| s as u64)
}

/// Job ids in the zset `set`, lowest score first: finite scores only, as
/// every reader reads them (`active` also holds its skiplist anchor at
/// +inf, lua/includes/active.lua).
async fn members(conn: &mut Conn, q: &str, set: &str) -> Vec<String> {
    cmd(conn, &["ZRANGEBYSCORE", &key(q, set), "-inf", "(+inf"]).await
}

/// Ids of the ready list of `level`, in the order claims take them (the
/// front of the line is the right end of the list).
async fn ready_line(conn: &mut Conn, q: &str, level: u8) -> Vec<String> {
    let mut ids: Vec<String> = cmd(conn, &["LRANGE", &key(q, &format!("ready:{level}")), "0", "-1"]).await;
    ids.reverse();
    ids
}

async fn meta(conn: &mut Conn, q: &str) -> Fields {
    cmd(conn, &["HGETALL", &key(q, "meta")]).await
}

/// A counter of `meta` (0 when never written).
async fn counter(conn: &mut Conn, q: &str, name: &str) -> u64 {
    let v: Option<String> = cmd(conn, &["HGET", &key(q, "meta"), name]).await;
    v.map_or(0, |v| v.parse().expect("numeric counter"))
}

/// Every structure that lists `id`: `ready:<level>`, `delayed`, `active`,
/// `completed`, `dead`. A sound job is in exactly one.
async fn places(conn: &mut Conn, q: &str, id: &JobId) -> Vec<String> {
    let mut found = Vec::new();
    for level in 0..=taskline::MAX_PRIORITY {
        let ids: Vec<String> = cmd(conn, &["LRANGE", &key(q, &format!("ready:{level}")), "0", "-1"]).await;
        for _ in ids.iter().filter(|x| x.as_str() == id.as_str()) {
            found.push(format!("ready:{level}"));
        }
    }
    for set in ["delayed", "active", "completed", "dead"] {
        if score(conn, q, set, id).await.is_some() {
            found.push(set.to_string());
        }
    }
    found
}

/// Asserts that `id` is listed by `place` and nowhere else.
async fn assert_only_in(conn: &mut Conn, q: &str, id: &JobId, place: &str) {
    assert_eq!(places(conn, q, id).await, vec![place.to_string()], "where job {id} is");
}

/// Every id listed by any structure of the queue, with repetitions.
async fn all_listed(conn: &mut Conn, q: &str) -> Vec<String> {
    let mut all = Vec::new();
    for level in 0..=taskline::MAX_PRIORITY {
        all.extend(ready_line(conn, q, level).await);
    }
    for set in ["delayed", "active", "completed", "dead"] {
        all.extend(members(conn, q, set).await);
    }
    all
}

/// Number of entries in the events stream.
async fn events_len(conn: &mut Conn, q: &str) -> u64 {
    cmd(conn, &["XLEN", &key(q, "events")]).await
}

/// How many events named `event` the stream holds for `id`.
async fn events_of(conn: &mut Conn, q: &str, event: &str, id: &JobId) -> usize {
    let events = stream_events(conn, &key(q, "events")).await;
    events.iter().filter(|e| e.event == event && e.job_id == id.as_str()).count()
}

/// Everything a rejected call must leave untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    job: Fields,
    places: Vec<String>,
    scores: Vec<Option<u64>>,
    meta: Fields,
    events: u64,
}

async fn snapshot(conn: &mut Conn, q: &str, id: &JobId) -> Snapshot {
    let mut scores = Vec::new();
    for set in ["delayed", "active", "completed", "dead"] {
        scores.push(score(conn, q, set, id).await);
    }
    Snapshot {
        job: job_fields(conn, q, id).await,
        places: places(conn, q, id).await,
        scores,
        meta: meta(conn, q).await,
        events: events_len(conn, q).await,
    }
}

fn job(i: usize) -> NewJob {
    NewJob::new("work", &json!({ "n": i })).expect("job")
}

async fn enqueue(h: &Harness, q: &str, new: NewJob) -> JobId {
    let id = h.client.enqueue(q, new).await.expect("enqueue");
    h.assert_sound(q).await;
    id
}

async fn enqueue_n(h: &Harness, q: &str, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(enqueue(h, q, job(i)).await);
    }
    ids
}

/// Claims and asserts soundness afterwards.
async fn claim_jobs(h: &Harness, q: &str, options: &ClaimOptions) -> Vec<ClaimedJob> {
    let c = h.client.claim(q, options).await.expect("claim");
    h.assert_sound(q).await;
    c.jobs
}

/// Claims exactly one job.
async fn claim_one(h: &Harness, q: &str, worker: &str) -> ClaimedJob {
    let mut jobs = claim_jobs(h, q, &claim(1, worker)).await;
    assert_eq!(jobs.len(), 1, "one job claimed");
    jobs.remove(0)
}

fn short_lease(count: u32, worker: &str, lease_ms: u64) -> ClaimOptions {
    ClaimOptions { count, lease: Duration::from_millis(lease_ms), worker: worker.to_string() }
}

fn ids_of(jobs: &[ClaimedJob]) -> Vec<JobId> {
    jobs.iter().map(|j| j.lease.job_id.clone()).collect()
}

fn forged(lease: &Lease, token: &str) -> Lease {
    Lease { token: token.to_string(), ..lease.clone() }
}

fn is_lease_lost<T>(r: &taskline::Result<T>) -> bool {
    matches!(r, Err(Error::LeaseLost { .. }))
}

fn is_not_found<T>(r: &taskline::Result<T>) -> bool {
    matches!(r, Err(Error::JobNotFound { .. }))
}

fn assert_within(what: &str, value: u64, lo: u64, hi: u64) {
    assert!(lo <= value && value <= hi, "{what} = {value} is outside [{lo}, {hi}]");
}

// ---------------------------------------------------------------------------
// complete
// ---------------------------------------------------------------------------

#[tokio::test]
async fn complete_moves_the_job_to_completed_with_its_result() {
    let h = Harness::start().await;
    let q = "complete";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    assert_eq!(claimed.lease.job_id, id);
    assert_eq!(claimed.facts.attempt, 1);
    assert_only_in(&mut conn, q, &id, "active").await;
    assert_eq!(score(&mut conn, q, "active", &id).await, Some(ms(claimed.lease_deadline)));

    let t0 = server_ms(&mut conn).await;
    let result = json!({"sent": true, "n": 7});
    let outcome = h.client.complete(&claimed.lease, Some(&result)).await.expect("complete");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(outcome, Completion::Completed);

    assert_only_in(&mut conn, q, &id, "completed").await;
    let fields = job_fields(&mut conn, q, &id).await;
    assert_eq!(fields["state"], "completed");
    assert_eq!(fields["attempt"], "1");
    let finished: u64 = fields["finished_at"].parse().expect("finished_at");
    assert_within("finished_at", finished, t0, t1);
    assert_eq!(score(&mut conn, q, "completed", &id).await, Some(finished), "score = finish time");
    assert_eq!(counter(&mut conn, q, "completed").await, 1);
    assert_eq!(events_of(&mut conn, q, "completed", &id).await, 1);

    let stored = h.client.get_job(q, &id).await.expect("get_job");
    assert_eq!(stored.state, JobState::Completed);
    assert_eq!(stored.worker.as_deref(), Some("w1"));
    assert!(stored.errors.is_empty());
    let stored_result: serde_json::Value =
        serde_json::from_str(stored.result.as_deref().expect("result stored")).expect("json");
    assert_eq!(stored_result, result);
    assert_eq!(stored.finished_at.map(ms), Some(finished));

    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.delayed, counts.active, counts.completed, counts.dead), (0, 0, 0, 1, 0));
}

#[tokio::test]
async fn complete_without_result_stores_none() {
    let h = Harness::start().await;
    let q = "complete-none";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    assert_eq!(h.client.complete(&claimed.lease, None).await.expect("complete"), Completion::Completed);
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &id, "completed").await;
    assert!(!job_fields(&mut conn, q, &id).await.contains_key("result"));
    assert_eq!(h.client.get_job(q, &id).await.expect("job").result, None);
}

#[tokio::test]
async fn resent_complete_is_already_completed_and_records_nothing() {
    let h = Harness::start().await;
    let q = "complete-resend";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    let first = json!({"v": 1});
    assert_eq!(
        h.client.complete(&claimed.lease, Some(&first)).await.expect("complete"),
        Completion::Completed
    );
    h.assert_sound(q).await;
    let before = snapshot(&mut conn, q, &id).await;

    // The reply was "lost": the worker sends the same completion again, even
    // with a different result. It is acknowledged and changes nothing.
    for _ in 0..2 {
        let again = h.client.complete(&claimed.lease, Some(&json!({"v": 2}))).await.expect("resend");
        h.assert_sound(q).await;
        assert_eq!(again, Completion::AlreadyCompleted);
    }
    assert_eq!(snapshot(&mut conn, q, &id).await, before, "a resend writes nothing");
    assert_eq!(counter(&mut conn, q, "completed").await, 1);
    assert_eq!(job_fields(&mut conn, q, &id).await["result"], r#"{"v":1}"#);
    assert_eq!(events_of(&mut conn, q, "completed", &id).await, 1);
}

#[tokio::test]
async fn complete_with_a_wrong_token_is_lease_lost_and_changes_nothing() {
    let h = Harness::start().await;
    let q = "complete-wrong-token";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    let before = snapshot(&mut conn, q, &id).await;

    for token in ["bogus", "", &format!("{}x", claimed.lease.token)] {
        let r = h.client.complete(&forged(&claimed.lease, token), Some(&json!(1))).await;
        h.assert_sound(q).await;
        assert!(is_lease_lost(&r), "token {token:?}: {r:?}");
    }
    assert_eq!(snapshot(&mut conn, q, &id).await, before, "a rejected complete writes nothing");
    assert_eq!(counter(&mut conn, q, "completed").await, 0);

    // A job that was never claimed has no lease to present either.
    let ready = enqueue(&h, q, job(2)).await;
    let never = Lease { queue: q.into(), job_id: ready.clone(), token: claimed.lease.token.clone() };
    let before = snapshot(&mut conn, q, &ready).await;
    assert!(is_lease_lost(&h.client.complete(&never, None).await));
    h.assert_sound(q).await;
    assert_eq!(snapshot(&mut conn, q, &ready).await, before);

    // The real holder still completes.
    assert_eq!(h.client.complete(&claimed.lease, None).await.expect("complete"), Completion::Completed);
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &id, "completed").await;
}

#[tokio::test]
async fn outcomes_for_an_unknown_job_are_job_not_found() {
    let h = Harness::start().await;
    let q = "unknown";
    let mut conn = h.raw().await;
    enqueue(&h, q, job(1)).await;
    let ghost = JobId::new("no-such-job").expect("id");
    let lease = Lease { queue: q.into(), job_id: ghost.clone(), token: "t.1".into() };
    let meta_before = meta(&mut conn, q).await;

    let r = h.client.complete(&lease, Some(&json!(1))).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = h.client.complete_and_claim(&lease, None, &claim(5, "w")).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = h.client.fail(&lease, &Failure::transient("x", Duration::ZERO)).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = h.client.release(&lease, None).await;
    assert!(is_not_found(&r), "{r:?}");
    h.assert_sound(q).await;

    assert!(!job_exists(&mut conn, q, &ghost).await, "no hash created");
    assert!(places(&mut conn, q, &ghost).await.is_empty());
    assert_eq!(meta(&mut conn, q).await, meta_before);
    // complete_and_claim failed before leasing anything.
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 1);
}

// ---------------------------------------------------------------------------
// complete_and_claim
// ---------------------------------------------------------------------------

#[tokio::test]
async fn complete_and_claim_leases_the_next_jobs_in_the_same_call() {
    let h = Harness::start().await;
    let q = "cac";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 3).await;
    let a = claim_one(&h, q, "w1").await;
    assert_eq!(a.lease.job_id, ids[0]);

    let t0 = server_ms(&mut conn).await;
    let (done, next) =
        h.client.complete_and_claim(&a.lease, Some(&json!("a")), &claim(2, "w2")).await.expect("cac");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(done, Completion::Completed);
    assert!(!next.paused);
    assert_eq!(ids_of(&next.jobs), vec![ids[1].clone(), ids[2].clone()], "FIFO order");
    assert_ne!(next.jobs[0].lease.token, next.jobs[1].lease.token, "one token per lease");
    assert_only_in(&mut conn, q, &ids[0], "completed").await;
    assert_eq!(counter(&mut conn, q, "completed").await, 1);
    for j in &next.jobs {
        assert_eq!(j.facts.attempt, 1);
        assert_eq!(j.lease.queue, q);
        let deadline = ms(j.lease_deadline);
        assert_within("lease deadline", deadline, t0 + 30_000, t1 + 30_000);
        assert_only_in(&mut conn, q, &j.lease.job_id, "active").await;
        assert_eq!(score(&mut conn, q, "active", &j.lease.job_id).await, Some(deadline));
        let f = job_fields(&mut conn, q, &j.lease.job_id).await;
        assert_eq!(f["state"], "active");
        assert_eq!(f["worker"], "w2");
        assert_eq!(f["lease_token"], j.lease.token);
    }

    // Nothing ready: the claim part is empty but the completion is recorded.
    let (done, none) =
        h.client.complete_and_claim(&next.jobs[0].lease, None, &claim(5, "w2")).await.expect("cac");
    h.assert_sound(q).await;
    assert_eq!(done, Completion::Completed);
    assert!(none.jobs.is_empty());
    assert_eq!(none.next_due, None);
    assert_only_in(&mut conn, q, &ids[1], "completed").await;
    assert_only_in(&mut conn, q, &ids[2], "active").await;

    // A delayed job is not leased, but its due time is reported.
    let later = enqueue(&h, q, job(9).delay(Duration::from_secs(60))).await;
    let due = score(&mut conn, q, "delayed", &later).await.expect("delayed");
    let (done, none) =
        h.client.complete_and_claim(&next.jobs[1].lease, None, &claim(5, "w2")).await.expect("cac");
    h.assert_sound(q).await;
    assert_eq!(done, Completion::Completed);
    assert!(none.jobs.is_empty());
    assert_eq!(none.next_due.map(ms), Some(due));
    assert_only_in(&mut conn, q, &later, "delayed").await;
    assert_eq!(counter(&mut conn, q, "completed").await, 3);
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.delayed, counts.active, counts.completed), (0, 1, 0, 3));
}

/// A resend of complete-and-claim after a lost reply must answer with the
/// first outcome. Today it leases a fresh batch: the batch of the lost reply
/// stays leased to nobody until its lease expires, then the reaper charges
/// each of those jobs an attempt they never ran (with max_attempts 1 they go
/// straight to the DLQ as `attempts_exhausted`).
#[tokio::test]
async fn resent_complete_and_claim_does_not_lease_a_second_batch() {
    let h = Harness::start().await;
    let q = "cac-resend";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 5).await;
    let a = claim_one(&h, q, "w1").await;
    let options = claim(2, "w1");
    let (_, first) = h.client.complete_and_claim(&a.lease, None, &options).await.expect("cac");
    h.assert_sound(q).await;
    assert_eq!(ids_of(&first.jobs), ids[1..3].to_vec());

    // The reply above is "lost"; the worker resends the same call.
    let (again, second) = h.client.complete_and_claim(&a.lease, None, &options).await.expect("resend");
    h.assert_sound(q).await;
    assert_eq!(again, Completion::AlreadyCompleted);
    let active: BTreeSet<String> = members(&mut conn, q, "active").await.into_iter().collect();
    let first_batch: BTreeSet<String> = ids[1..3].iter().map(|i| i.to_string()).collect();
    assert_eq!(active, first_batch, "the resend leased more jobs: {:?}", ids_of(&second.jobs));
    assert_eq!(ids_of(&second.jobs), ids_of(&first.jobs), "the resend answers with the first batch");
}

/// `active` holds an anchor member at +inf that keeps the zset in Redis's
/// skiplist encoding (lua/includes/active.lua). It outlives the last lease,
/// and nothing takes it for a job: not the counts, the listing, the global
/// concurrency limit, the doctor or the reaper.
#[tokio::test]
async fn active_keeps_its_skiplist_anchor_and_nothing_takes_it_for_a_job() {
    let h = Harness::start().await;
    let q = "active-anchor";
    let mut conn = h.raw().await;
    enqueue_n(&h, q, 3).await;
    h.client.set_global_concurrency(q, Some(1)).await.expect("set");
    let a = claim_one(&h, q, "w1").await;
    let encoding: String = cmd(&mut conn, &["OBJECT", "ENCODING", &key(q, "active")]).await;
    assert_eq!(encoding, "skiplist", "one lease is enough for the skiplist encoding");
    assert_eq!(h.client.counts(q).await.expect("counts").active, 1);
    let listed = h.client.list_jobs(q, JobState::Active, 0, 10).await.expect("list");
    assert_eq!(listed, vec![a.lease.job_id.clone()]);
    let past = h.client.list_jobs(q, JobState::Active, 1, 10).await.expect("list");
    assert!(past.is_empty(), "the page after the one lease holds only the anchor: {past:?}");
    assert_eq!(h.client.complete(&a.lease, None).await.expect("complete"), Completion::Completed);

    // No job leased: the key stays, holding the anchor alone.
    let members: u64 = cmd(&mut conn, &["ZCARD", &key(q, "active")]).await;
    assert_eq!(members, 1, "the anchor outlives the last lease");
    assert_eq!(h.client.counts(q).await.expect("counts").active, 0);
    assert!(h.client.list_jobs(q, JobState::Active, 0, 10).await.expect("list").is_empty());
    h.assert_sound(q).await;
    let reaped = h.client.reap(q, 10, Duration::ZERO).await.expect("reap");
    assert!(reaped.ids.is_empty(), "the anchor is no expired lease: {reaped:?}");
    // Global concurrency 1 with nothing leased: the anchor takes no slot.
    let b = claim_jobs(&h, q, &claim(5, "w2")).await;
    assert_eq!(b.len(), 1, "the one slot is free");
    let encoding: String = cmd(&mut conn, &["OBJECT", "ENCODING", &key(q, "active")]).await;
    assert_eq!(encoding, "skiplist");
}

// ---------------------------------------------------------------------------
// fail
// ---------------------------------------------------------------------------

#[tokio::test]
async fn transient_failure_with_attempts_left_backs_off_in_delayed() {
    let h = Harness::start().await;
    let q = "fail-transient";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    let delay = 150;

    let t0 = server_ms(&mut conn).await;
    let outcome = h
        .client
        .fail(&claimed.lease, &Failure::transient("upstream 503", Duration::from_millis(delay)))
        .await
        .expect("fail");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    let FailOutcome::Retrying { at } = outcome.clone() else { panic!("expected Retrying, got {outcome:?}") };
    let at = ms(at);
    assert_within("retry due time", at, t0 + delay, t1 + delay);

    assert_only_in(&mut conn, q, &id, "delayed").await;
    assert_eq!(score(&mut conn, q, "delayed", &id).await, Some(at));
    let f = job_fields(&mut conn, q, &id).await;
    assert_eq!(f["state"], "delayed");
    assert_eq!(f["due_at"], at.to_string());
    assert_eq!(f["attempt"], "1");
    assert_eq!(counter(&mut conn, q, "retried").await, 1);
    assert_eq!(counter(&mut conn, q, "dead").await, 0);
    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!(stored.errors.len(), 1);
    let e = &stored.errors[0];
    assert_eq!(
        (e.attempt, e.kind, e.message.as_str(), e.worker.as_str()),
        (1, FailureKind::Transient, "upstream 503", "w1")
    );
    assert_within("error time", ms(e.at), t0, t1);
    assert_eq!(stored.dead_reason, None);

    // A resend answers the first outcome and records no second error.
    let before = snapshot(&mut conn, q, &id).await;
    let again = h
        .client
        .fail(&claimed.lease, &Failure::transient("other text", Duration::from_secs(60)))
        .await
        .expect("resend");
    h.assert_sound(q).await;
    assert_eq!(again, outcome);
    assert_eq!(snapshot(&mut conn, q, &id).await, before);
    // The same lease cannot complete the job it gave up.
    assert!(is_lease_lost(&h.client.complete(&claimed.lease, None).await));
    h.assert_sound(q).await;

    // Not due yet: a claim leases nothing and reports when it is due.
    let early = h.client.claim(q, &claim(5, "w2")).await.expect("claim");
    h.assert_sound(q).await;
    if server_ms(&mut conn).await < at {
        assert!(early.jobs.is_empty(), "claimed before its due time");
        assert_eq!(early.next_due.map(ms), Some(at));
    }
    tokio::time::sleep(Duration::from_millis(delay + 50)).await;
    let retry = if early.jobs.is_empty() { claim_one(&h, q, "w2").await } else { early.jobs[0].clone() };
    assert_eq!(retry.lease.job_id, id);
    assert_eq!(retry.facts.attempt, 2);
    assert_only_in(&mut conn, q, &id, "active").await;
    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!((stored.state, stored.facts.attempt, stored.errors.len()), (JobState::Active, 2, 1));
    // The earlier lease is stale now.
    assert!(is_lease_lost(&h.client.fail(&claimed.lease, &Failure::permanent("late")).await));
    h.assert_sound(q).await;
    assert_eq!(h.client.complete(&retry.lease, None).await.expect("complete"), Completion::Completed);
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &id, "completed").await;
}

#[tokio::test]
async fn permanent_failure_goes_dead_at_once_keeping_everything() {
    let h = Harness::start().await;
    let q = "fail-permanent";
    let mut conn = h.raw().await;
    let plain = enqueue(&h, q, NewJob::new("work", &json!({"to": "ada"})).expect("job")).await;
    let coded = enqueue(&h, q, NewJob::new("work", &json!({"to": 42})).expect("job")).await;
    let jobs = claim_jobs(&h, q, &claim(2, "w1")).await;
    assert_eq!(ids_of(&jobs), vec![plain.clone(), coded.clone()]);

    let cases = [
        (&jobs[0], Failure::permanent("no such user"), "permanent"),
        (
            &jobs[1],
            Failure::permanent("to must be a string").with_reason("invalid_payload"),
            "invalid_payload",
        ),
    ];
    for (n, (claimed, failure, reason)) in cases.iter().enumerate() {
        let id = &claimed.lease.job_id;
        let payload_before = job_fields(&mut conn, q, id).await["payload"].clone();
        let t0 = server_ms(&mut conn).await;
        let outcome = h.client.fail(&claimed.lease, failure).await.expect("fail");
        let t1 = server_ms(&mut conn).await;
        h.assert_sound(q).await;
        let FailOutcome::Dead { at, reason: got } = outcome.clone() else {
            panic!("expected Dead, got {outcome:?}")
        };
        assert_eq!(got, *reason);
        let at = ms(at);
        assert_within("time of death", at, t0, t1);

        assert_only_in(&mut conn, q, id, "dead").await;
        assert_eq!(score(&mut conn, q, "dead", id).await, Some(at));
        let f = job_fields(&mut conn, q, id).await;
        assert_eq!(f["state"], "dead");
        assert_eq!(f["dead_reason"], *reason);
        assert_eq!(f["died_at"], at.to_string());
        assert_eq!(f["finished_at"], at.to_string());
        assert_eq!(f["payload"], payload_before, "payload kept");
        assert_eq!(f["attempt"], "1", "dead on the first of 5 attempts");
        let stored = h.client.get_job(q, id).await.expect("job");
        assert_eq!(stored.errors.len(), 1);
        assert_eq!(stored.errors[0].kind, FailureKind::Permanent);
        assert_eq!(stored.errors[0].message, failure.message);
        assert_eq!(stored.errors[0].attempt, 1);
        assert_eq!(stored.errors[0].worker, "w1");
        assert_eq!(counter(&mut conn, q, "dead").await, n as u64 + 1);
        assert_eq!(counter(&mut conn, q, "retried").await, 0);
        assert_eq!(events_of(&mut conn, q, "failed", id).await, 1, "every failed attempt is announced");
        assert_eq!(events_of(&mut conn, q, "dead", id).await, 1);

        // A resend (even as a transient failure) answers the same Dead.
        let before = snapshot(&mut conn, q, id).await;
        for resend in [failure.clone(), Failure::transient("again", Duration::ZERO)] {
            let again = h.client.fail(&claimed.lease, &resend).await.expect("resend");
            h.assert_sound(q).await;
            assert_eq!(again, outcome);
        }
        assert_eq!(snapshot(&mut conn, q, id).await, before, "one error entry, one death");
        assert!(is_lease_lost(&h.client.release(&claimed.lease, None).await));
        assert!(is_lease_lost(&h.client.complete(&claimed.lease, None).await));
        h.assert_sound(q).await;
        assert_eq!(snapshot(&mut conn, q, id).await, before);
    }
    assert_eq!(members(&mut conn, q, "dead").await.len(), 2);
    assert_eq!(h.client.counts(q).await.expect("counts").dead, 2);
}

#[tokio::test]
async fn transient_failures_past_max_attempts_die_as_attempts_exhausted() {
    let h = Harness::start().await;
    let q = "exhausted";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1).max_attempts(2)).await;

    let first = claim_one(&h, q, "w1").await;
    assert_eq!((first.facts.attempt, first.facts.max_attempts), (1, 2));
    let r = h.client.fail(&first.lease, &Failure::transient("timeout 1", Duration::from_millis(10))).await;
    h.assert_sound(q).await;
    assert!(matches!(r, Ok(FailOutcome::Retrying { .. })), "{r:?}");
    assert_only_in(&mut conn, q, &id, "delayed").await;
    tokio::time::sleep(Duration::from_millis(40)).await;

    let second = claim_one(&h, q, "w2").await;
    assert_eq!((second.lease.job_id.clone(), second.facts.attempt), (id.clone(), 2));
    let outcome = h
        .client
        .fail(&second.lease, &Failure::transient("timeout 2", Duration::from_millis(10)))
        .await
        .expect("fail");
    h.assert_sound(q).await;
    let FailOutcome::Dead { at, reason } = outcome.clone() else { panic!("expected Dead, got {outcome:?}") };
    assert_eq!(reason, "attempts_exhausted");
    assert_only_in(&mut conn, q, &id, "dead").await;
    assert_eq!(score(&mut conn, q, "dead", &id).await, Some(ms(at)));

    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!(stored.state, JobState::Dead);
    assert_eq!(stored.dead_reason.as_deref(), Some("attempts_exhausted"));
    let history: Vec<(u32, FailureKind, &str, &str)> =
        stored.errors.iter().map(|e| (e.attempt, e.kind, e.message.as_str(), e.worker.as_str())).collect();
    assert_eq!(
        history,
        vec![(1, FailureKind::Transient, "timeout 1", "w1"), (2, FailureKind::Transient, "timeout 2", "w2")]
    );
    assert_eq!(counter(&mut conn, q, "retried").await, 1);
    assert_eq!(counter(&mut conn, q, "dead").await, 1);

    let again =
        h.client.fail(&second.lease, &Failure::transient("timeout 2", Duration::ZERO)).await.expect("resend");
    h.assert_sound(q).await;
    assert_eq!(again, outcome);
    assert_eq!(h.client.get_job(q, &id).await.expect("job").errors.len(), 2);
    assert_eq!(counter(&mut conn, q, "dead").await, 1);
}

// ---------------------------------------------------------------------------
// stale workers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reaped_worker_cannot_touch_the_next_attempt() {
    let h = Harness::start().await;
    let q = "stale";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let a = claim_jobs(&h, q, &short_lease(1, "worker-a", 50)).await.remove(0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped { retried: 1, dead: 0, ids: vec![id.clone()] });

    let b = claim_one(&h, q, "worker-b").await;
    assert_eq!((b.lease.job_id.clone(), b.facts.attempt), (id.clone(), 2));
    assert_ne!(a.lease.token, b.lease.token);
    let before = snapshot(&mut conn, q, &id).await;

    let r = h.client.complete(&a.lease, Some(&json!("stale"))).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    let r = h.client.complete_and_claim(&a.lease, None, &claim(5, "worker-a")).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    let r = h.client.fail(&a.lease, &Failure::transient("stale", Duration::ZERO)).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    let r = h.client.fail(&a.lease, &Failure::permanent("stale")).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    let r = h.client.release(&a.lease, None).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    let ext = h.client.extend(std::slice::from_ref(&a.lease), Duration::from_secs(60)).await.expect("extend");
    h.assert_sound(q).await;
    assert_eq!(ext.lost, vec![a.lease.clone()]);
    assert_eq!(snapshot(&mut conn, q, &id).await, before, "B's attempt untouched");

    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!(
        (stored.state, stored.facts.attempt, stored.worker.as_deref()),
        (JobState::Active, 2, Some("worker-b"))
    );
    assert_eq!(stored.errors.len(), 1);
    assert_eq!(stored.errors[0].message, "lease expired");
    assert_eq!(stored.errors[0].worker, "worker-a");

    assert_eq!(
        h.client.complete(&b.lease, Some(&json!("b"))).await.expect("complete"),
        Completion::Completed
    );
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &id, "completed").await;
    assert_eq!(job_fields(&mut conn, q, &id).await["result"], r#""b""#);
    assert_eq!(counter(&mut conn, q, "completed").await, 1);
    // And A still cannot complete after B did.
    assert!(is_lease_lost(&h.client.complete(&a.lease, None).await));
    h.assert_sound(q).await;
}

/// A worker whose lease was reaped into the DLQ (its last attempt) later
/// reports its failure. It does not hold the lease, so the call must be
/// rejected with LeaseLost; today it is acknowledged as if recorded
/// (`Dead{attempts_exhausted}`) while its error is silently dropped.
#[tokio::test]
async fn a_stale_fail_after_the_reaper_buried_the_job_is_lease_lost() {
    let h = Harness::start().await;
    let q = "stale-dead";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1).max_attempts(1)).await;
    let a = claim_jobs(&h, q, &short_lease(1, "worker-a", 50)).await.remove(0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped { retried: 0, dead: 1, ids: vec![id.clone()] });
    let before = snapshot(&mut conn, q, &id).await;

    let r = h.client.fail(&a.lease, &Failure::transient("handler error", Duration::ZERO)).await;
    h.assert_sound(q).await;
    assert_eq!(snapshot(&mut conn, q, &id).await, before);
    assert!(is_lease_lost(&r), "the reaper ended this lease, not the worker's fail: {r:?}");
}

// ---------------------------------------------------------------------------
// extend
// ---------------------------------------------------------------------------

#[tokio::test]
async fn extend_moves_the_deadlines_of_held_leases_later() {
    let h = Harness::start().await;
    let q = "extend";
    let mut conn = h.raw().await;
    enqueue_n(&h, q, 3).await;
    let jobs = claim_jobs(&h, q, &short_lease(2, "w1", 1_000)).await;
    let leases: Vec<Lease> = jobs.iter().map(|j| j.lease.clone()).collect();
    let mut old = Vec::new();
    for j in &jobs {
        old.push(score(&mut conn, q, "active", &j.lease.job_id).await.expect("active"));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let t0 = server_ms(&mut conn).await;
    let ext = h.client.extend(&leases, Duration::from_secs(10)).await.expect("extend");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert!(ext.lost.is_empty(), "{:?}", ext.lost);
    let deadline = ms(ext.deadline.expect("deadline"));
    assert_within("new deadline", deadline, t0 + 10_000, t1 + 10_000);
    for (j, old) in jobs.iter().zip(old) {
        let id = &j.lease.job_id;
        assert_eq!(score(&mut conn, q, "active", id).await, Some(deadline));
        assert!(deadline > old + 8_000, "deadline moved later: {old} -> {deadline}");
        let f = job_fields(&mut conn, q, id).await;
        assert_eq!((f["state"].as_str(), f["lease_token"].as_str()), ("active", j.lease.token.as_str()));
    }
    // A renewed lease outlives its original length: nothing is reaped.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped::default());
    // The third job was not claimed and is untouched.
    assert_eq!(h.client.counts(q).await.expect("counts").ready, 1);
}

#[tokio::test]
async fn extend_reports_lost_leases_and_leaves_them_alone() {
    let h = Harness::start().await;
    let q = "extend-lost";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 4).await;
    let reaped_job = claim_jobs(&h, q, &short_lease(1, "dying", 50)).await.remove(0);
    let held = claim_one(&h, q, "w1").await;
    let wrong = claim_one(&h, q, "w1").await;
    let done = claim_one(&h, q, "w1").await;
    assert_eq!(ids_of(&[reaped_job.clone(), held.clone(), wrong.clone(), done.clone()]), ids);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(h.client.reap(q, 100, Duration::ZERO).await.expect("reap").ids, vec![ids[0].clone()]);
    h.assert_sound(q).await;
    h.client.complete(&done.lease, None).await.expect("complete");
    h.assert_sound(q).await;

    let wrong_lease = forged(&wrong.lease, "not-the-token");
    let before_reaped = snapshot(&mut conn, q, &ids[0]).await;
    let before_wrong = snapshot(&mut conn, q, &ids[2]).await;
    let before_done = snapshot(&mut conn, q, &ids[3]).await;
    let old_held = score(&mut conn, q, "active", &ids[1]).await.expect("active");

    let leases = [reaped_job.lease.clone(), held.lease.clone(), wrong_lease.clone(), done.lease.clone()];
    let ext = h.client.extend(&leases, Duration::from_secs(120)).await.expect("extend");
    h.assert_sound(q).await;
    assert_eq!(ext.lost, vec![reaped_job.lease.clone(), wrong_lease, done.lease.clone()]);
    let deadline = ms(ext.deadline.expect("deadline"));
    assert_eq!(score(&mut conn, q, "active", &ids[1]).await, Some(deadline));
    assert!(deadline > old_held);
    assert_eq!(snapshot(&mut conn, q, &ids[0]).await, before_reaped, "reaped job not re-activated");
    assert_eq!(snapshot(&mut conn, q, &ids[2]).await, before_wrong, "wrong token: score unchanged");
    assert_eq!(snapshot(&mut conn, q, &ids[3]).await, before_done, "completed job not re-activated");
    assert_only_in(&mut conn, q, &ids[0], "ready:0").await;
    assert_only_in(&mut conn, q, &ids[3], "completed").await;
}

#[tokio::test]
async fn extend_renews_leases_across_two_queues_in_one_call() {
    let h = Harness::start().await;
    let (qa, qb) = ("alpha", "beta");
    let mut conn = h.raw().await;
    let ida = enqueue(&h, qa, job(1)).await;
    let idb = enqueue(&h, qb, job(2)).await;
    let unclaimed = enqueue(&h, qb, job(3)).await;
    let a = claim_jobs(&h, qa, &short_lease(1, "w", 1_000)).await.remove(0);
    let b = claim_jobs(&h, qb, &short_lease(1, "w", 1_000)).await.remove(0);
    let stale_b = Lease { queue: qb.into(), job_id: unclaimed.clone(), token: b.lease.token.clone() };

    let t0 = server_ms(&mut conn).await;
    let ext =
        h.client.extend(&[b.lease.clone(), a.lease.clone(), stale_b.clone()], Duration::from_secs(30)).await;
    let t1 = server_ms(&mut conn).await;
    let ext = ext.expect("extend");
    h.assert_sound(qa).await;
    h.assert_sound(qb).await;
    assert_eq!(ext.lost, vec![stale_b], "only the forged lease is lost");
    let deadline = ms(ext.deadline.expect("deadline"));
    assert_within("earliest deadline", deadline, t0 + 30_000, t1 + 30_000);
    let sa = score(&mut conn, qa, "active", &ida).await.expect("alpha active");
    let sb = score(&mut conn, qb, "active", &idb).await.expect("beta active");
    assert_within("alpha deadline", sa, t0 + 30_000, t1 + 30_000);
    assert_within("beta deadline", sb, t0 + 30_000, t1 + 30_000);
    assert_eq!(deadline, sa.min(sb), "the reported deadline is the earliest");
    assert_only_in(&mut conn, qa, &ida, "active").await;
    assert_only_in(&mut conn, qb, &idb, "active").await;
    assert_only_in(&mut conn, qb, &unclaimed, "ready:0").await;
    assert!(job_fields(&mut conn, qa, &idb).await.is_empty(), "no cross-queue writes");
}

/// A worker can hold two leases of one job at once: its first attempt was
/// reaped while the handler stalled, and it claimed the job again. Its
/// heartbeat then extends both; the stale one must be reported lost (so its
/// handler is cancelled) and the current one kept. The script reports lost
/// pairs by job id only, and the client maps the id back to the FIRST lease
/// of that job in the call, so it names the wrong lease.
#[tokio::test]
async fn extend_names_the_stale_lease_when_a_worker_holds_two_leases_of_one_job() {
    let h = Harness::start().await;
    let q = "extend-same-job";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let old = claim_jobs(&h, q, &short_lease(1, "w1", 50)).await.remove(0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(h.client.reap(q, 100, Duration::ZERO).await.expect("reap").ids, vec![id.clone()]);
    h.assert_sound(q).await;
    let new = claim_one(&h, q, "w1").await;
    assert_eq!((new.lease.job_id.clone(), new.facts.attempt), (id.clone(), 2));

    let ext = h.client.extend(&[new.lease.clone(), old.lease.clone()], Duration::from_secs(60)).await;
    h.assert_sound(q).await;
    let ext = ext.expect("extend");
    assert_eq!(score(&mut conn, q, "active", &id).await, ext.deadline.map(ms), "the live lease was renewed");
    assert_eq!(ext.lost, vec![old.lease.clone()], "the stale lease, not the live one, is lost");
}

// ---------------------------------------------------------------------------
// release
// ---------------------------------------------------------------------------

#[tokio::test]
async fn release_returns_the_job_to_the_front_without_spending_an_attempt() {
    let h = Harness::start().await;
    let q = "release";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 3).await;
    let jobs = claim_jobs(&h, q, &claim(2, "w1")).await;
    assert_eq!(ids_of(&jobs), ids[..2].to_vec());
    let b = &jobs[1];
    assert_eq!((b.facts.attempt, b.facts.releases), (1, 0));

    let released = h.client.release(&b.lease, None).await.expect("release");
    h.assert_sound(q).await;
    assert_eq!(released, Released { now: true, releases: 1 });
    assert_only_in(&mut conn, q, &ids[1], "ready:0").await;
    assert_eq!(
        ready_line(&mut conn, q, 0).await,
        vec![ids[1].to_string(), ids[2].to_string()],
        "front of the line"
    );
    let f = job_fields(&mut conn, q, &ids[1]).await;
    assert_eq!((f["state"].as_str(), f["attempt"].as_str(), f["releases"].as_str()), ("ready", "0", "1"));
    assert_eq!(counter(&mut conn, q, "released").await, 1);
    assert_eq!(events_of(&mut conn, q, "released", &ids[1]).await, 1);
    assert!(h.client.get_job(q, &ids[1]).await.expect("job").errors.is_empty(), "a release is not a failure");

    // Resend: acknowledged, nothing decremented or counted twice.
    let before = snapshot(&mut conn, q, &ids[1]).await;
    let again = h.client.release(&b.lease, None).await.expect("resend");
    h.assert_sound(q).await;
    assert_eq!(again, Released { now: false, releases: 1 });
    assert_eq!(snapshot(&mut conn, q, &ids[1]).await, before);
    // The released lease cannot complete or fail any more.
    assert!(is_lease_lost(&h.client.complete(&b.lease, None).await));
    assert!(is_lease_lost(&h.client.fail(&b.lease, &Failure::permanent("x")).await));
    h.assert_sound(q).await;
    assert_eq!(snapshot(&mut conn, q, &ids[1]).await, before);

    // Claimed again before the older ready job, with the same attempt number.
    let again = claim_one(&h, q, "w2").await;
    assert_eq!(again.lease.job_id, ids[1]);
    assert_eq!((again.facts.attempt, again.facts.releases), (1, 1));
    assert_only_in(&mut conn, q, &ids[2], "ready:0").await;

    // The old lease is stale now.
    let r = h.client.release(&b.lease, None).await;
    assert!(is_lease_lost(&r), "{r:?}");
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &ids[1], "active").await;

    // A second release counts up.
    assert_eq!(
        h.client.release(&again.lease, None).await.expect("release"),
        Released { now: true, releases: 2 }
    );
    h.assert_sound(q).await;
    assert_eq!(counter(&mut conn, q, "released").await, 2);
    assert_eq!(h.client.get_job(q, &ids[1]).await.expect("job").facts.releases, 2);
}

#[tokio::test]
async fn release_keeps_the_priority_level() {
    let h = Harness::start().await;
    let q = "release-priority";
    let mut conn = h.raw().await;
    let low = enqueue(&h, q, job(0)).await;
    let hi1 = enqueue(&h, q, job(1).priority(3)).await;
    let hi2 = enqueue(&h, q, job(2).priority(3)).await;
    let first = claim_one(&h, q, "w1").await;
    assert_eq!((first.lease.job_id.clone(), first.facts.priority), (hi1.clone(), 3));
    h.client.release(&first.lease, None).await.expect("release");
    h.assert_sound(q).await;
    assert_eq!(ready_line(&mut conn, q, 3).await, vec![hi1.to_string(), hi2.to_string()]);
    assert_eq!(ready_line(&mut conn, q, 0).await, vec![low.to_string()]);
    let order = ids_of(&claim_jobs(&h, q, &claim(3, "w2")).await);
    assert_eq!(order, vec![hi1, hi2, low]);
}

#[tokio::test]
async fn release_with_a_delay_goes_to_delayed() {
    let h = Harness::start().await;
    let q = "release-delay";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    let delay = 120;

    let t0 = server_ms(&mut conn).await;
    let released =
        h.client.release(&claimed.lease, Some(Duration::from_millis(delay))).await.expect("release");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(released, Released { now: true, releases: 1 });
    assert_only_in(&mut conn, q, &id, "delayed").await;
    let due = score(&mut conn, q, "delayed", &id).await.expect("delayed");
    assert_within("release due time", due, t0 + delay, t1 + delay);
    let f = job_fields(&mut conn, q, &id).await;
    assert_eq!((f["state"].as_str(), f["attempt"].as_str()), ("delayed", "0"));
    assert_eq!(f["due_at"], due.to_string());
    assert_eq!(counter(&mut conn, q, "released").await, 1);

    let before = snapshot(&mut conn, q, &id).await;
    let again = h.client.release(&claimed.lease, Some(Duration::from_secs(60))).await.expect("resend");
    h.assert_sound(q).await;
    assert_eq!(again, Released { now: false, releases: 1 });
    assert_eq!(snapshot(&mut conn, q, &id).await, before);

    tokio::time::sleep(Duration::from_millis(delay + 40)).await;
    let next = claim_one(&h, q, "w2").await;
    assert_eq!((next.lease.job_id.clone(), next.facts.attempt, next.facts.releases), (id.clone(), 1, 1));
    assert_only_in(&mut conn, q, &id, "active").await;
}

// ---------------------------------------------------------------------------
// reap
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reap_recovers_only_expired_leases() {
    let h = Harness::start().await;
    let q = "reap";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 2).await;
    let dying = claim_jobs(&h, q, &short_lease(1, "dying-worker", 50)).await.remove(0);
    let alive = claim_one(&h, q, "live-worker").await;
    let older = enqueue(&h, q, job(3)).await;
    let alive_deadline = score(&mut conn, q, "active", &ids[1]).await.expect("active");
    let alive_before = snapshot(&mut conn, q, &ids[1]).await;
    // Not expired yet (checked on the server clock): nothing to reap.
    if server_ms(&mut conn).await + 5 < ms(dying.lease_deadline) {
        assert_eq!(h.client.reap(q, 100, Duration::ZERO).await.expect("reap"), Reaped::default());
        h.assert_sound(q).await;
    }
    tokio::time::sleep(Duration::from_millis(120)).await;

    let t0 = server_ms(&mut conn).await;
    let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped { retried: 1, dead: 0, ids: vec![dying.lease.job_id.clone()] });

    // The live lease is untouched (same deadline, same fields).
    assert_eq!(score(&mut conn, q, "active", &ids[1]).await, Some(alive_deadline));
    let mut alive_now = snapshot(&mut conn, q, &ids[1]).await;
    alive_now.meta = alive_before.meta.clone();
    alive_now.events = alive_before.events;
    assert_eq!(alive_now, alive_before);

    // The reaped job is back at the front of the line, its attempt counted.
    assert_only_in(&mut conn, q, &ids[0], "ready:0").await;
    assert_eq!(ready_line(&mut conn, q, 0).await, vec![ids[0].to_string(), older.to_string()]);
    let stored = h.client.get_job(q, &ids[0]).await.expect("job");
    assert_eq!((stored.state, stored.facts.attempt), (JobState::Ready, 1));
    assert_eq!(stored.errors.len(), 1);
    let e = &stored.errors[0];
    assert_eq!(
        (e.attempt, e.kind, e.message.as_str(), e.worker.as_str()),
        (1, FailureKind::Transient, "lease expired", "dying-worker")
    );
    assert_within("reap time", ms(e.at), t0, t1);
    assert_eq!(counter(&mut conn, q, "reaped").await, 1);
    assert_eq!(counter(&mut conn, q, "retried").await, 1);
    assert_eq!(counter(&mut conn, q, "dead").await, 0);
    assert_eq!(events_of(&mut conn, q, "lease_expired", &ids[0]).await, 1);

    // Reaping again finds nothing.
    assert_eq!(h.client.reap(q, 100, Duration::ZERO).await.expect("reap"), Reaped::default());
    h.assert_sound(q).await;
    assert_eq!(counter(&mut conn, q, "reaped").await, 1);

    let next = claim_one(&h, q, "w3").await;
    assert_eq!((next.lease.job_id.clone(), next.facts.attempt), (ids[0].clone(), 2));
    h.client.complete(&alive.lease, None).await.expect("the live lease still completes");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn reap_honours_its_limit() {
    let h = Harness::start().await;
    let q = "reap-limit";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 3).await;
    claim_jobs(&h, q, &short_lease(3, "dying", 40)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = h.client.reap(q, 2, Duration::ZERO).await.expect("reap");
    h.assert_sound(q).await;
    assert_eq!((first.retried, first.dead, first.ids.len()), (2, 0, 2));
    assert_eq!(h.client.counts(q).await.expect("counts").active, 1);
    let rest = h.client.reap(q, 2, Duration::ZERO).await.expect("reap");
    h.assert_sound(q).await;
    assert_eq!(rest.ids.len(), 1);
    let all: BTreeSet<JobId> = first.ids.into_iter().chain(rest.ids).collect();
    assert_eq!(all, ids.iter().cloned().collect());
    assert_eq!(counter(&mut conn, q, "reaped").await, 3);
    assert_eq!(ready_line(&mut conn, q, 0).await.len(), 3);
}

#[tokio::test]
async fn reap_buries_a_job_whose_attempts_are_spent() {
    let h = Harness::start().await;
    let q = "reap-dead";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1).max_attempts(1)).await;
    claim_jobs(&h, q, &short_lease(1, "dying-worker", 50)).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let t0 = server_ms(&mut conn).await;
    let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped { retried: 0, dead: 1, ids: vec![id.clone()] });

    assert_only_in(&mut conn, q, &id, "dead").await;
    let died = score(&mut conn, q, "dead", &id).await.expect("dead");
    assert_within("time of death", died, t0, t1);
    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!(stored.state, JobState::Dead);
    assert_eq!(stored.dead_reason.as_deref(), Some("attempts_exhausted"));
    assert_eq!(stored.finished_at.map(ms), Some(died));
    assert_eq!(stored.errors.len(), 1);
    assert_eq!(
        (stored.errors[0].message.as_str(), stored.errors[0].worker.as_str()),
        ("lease expired", "dying-worker")
    );
    assert_eq!(counter(&mut conn, q, "dead").await, 1);
    assert_eq!(counter(&mut conn, q, "reaped").await, 1);
    assert_eq!(counter(&mut conn, q, "retried").await, 0);
}

#[tokio::test]
async fn reap_with_a_retry_delay_puts_the_job_in_delayed() {
    let h = Harness::start().await;
    let q = "reap-delay";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1)).await;
    claim_jobs(&h, q, &short_lease(1, "dying", 50)).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let delay = 100;
    let t0 = server_ms(&mut conn).await;
    let reaped = h.client.reap(q, 100, Duration::from_millis(delay)).await.expect("reap");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(reaped, Reaped { retried: 1, dead: 0, ids: vec![id.clone()] });
    assert_only_in(&mut conn, q, &id, "delayed").await;
    let due = score(&mut conn, q, "delayed", &id).await.expect("delayed");
    assert_within("due time", due, t0 + delay, t1 + delay);
    let f = job_fields(&mut conn, q, &id).await;
    assert_eq!(
        (f["state"].as_str(), f["due_at"].as_str(), f["attempt"].as_str()),
        ("delayed", due.to_string().as_str(), "1")
    );

    tokio::time::sleep(Duration::from_millis(delay + 40)).await;
    let next = claim_one(&h, q, "w2").await;
    assert_eq!((next.lease.job_id.clone(), next.facts.attempt), (id, 2));
}

// ---------------------------------------------------------------------------
// replay
// ---------------------------------------------------------------------------

#[tokio::test]
async fn replay_puts_a_dead_job_back_with_its_history() {
    let h = Harness::start().await;
    let q = "replay";
    let mut conn = h.raw().await;
    let id = enqueue(&h, q, job(1).max_attempts(3)).await;
    let first = claim_one(&h, q, "w1").await;
    h.client
        .fail(&first.lease, &Failure::permanent("bad input").with_reason("invalid_payload"))
        .await
        .expect("fail");
    h.assert_sound(q).await;
    let errors_before = h.client.get_job(q, &id).await.expect("job").errors;

    let t0 = server_ms(&mut conn).await;
    let replayed = h.client.replay(q, std::slice::from_ref(&id)).await.expect("replay");
    let t1 = server_ms(&mut conn).await;
    h.assert_sound(q).await;
    assert_eq!(replayed, Replayed { replayed: 1, not_dead: vec![] });
    assert_only_in(&mut conn, q, &id, "ready:0").await;
    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!((stored.state, stored.facts.attempt, stored.replays), (JobState::Ready, 0, 1));
    assert_within("replayed_at", stored.replayed_at.map(ms).expect("replayed_at"), t0, t1);
    assert_eq!(stored.last_dead_reason.as_deref(), Some("invalid_payload"));
    assert_eq!(stored.dead_reason, None);
    assert_eq!(stored.finished_at, None);
    assert_eq!(stored.errors, errors_before, "history kept");
    assert!(!job_fields(&mut conn, q, &id).await.contains_key("died_at"));
    assert_eq!(counter(&mut conn, q, "replayed").await, 1);
    assert_eq!(events_of(&mut conn, q, "replayed", &id).await, 1);
    // The dead attempt's lease stays dead.
    assert!(is_lease_lost(&h.client.fail(&first.lease, &Failure::permanent("again")).await));
    assert!(is_lease_lost(&h.client.complete(&first.lease, None).await));
    h.assert_sound(q).await;

    // Replaying again: no longer dead.
    let again = h.client.replay(q, std::slice::from_ref(&id)).await.expect("replay");
    h.assert_sound(q).await;
    assert_eq!(again, Replayed { replayed: 0, not_dead: vec![id.clone()] });
    assert_eq!(h.client.get_job(q, &id).await.expect("job").replays, 1);

    // A fresh attempt budget: claimed as attempt 1, and it completes.
    let run = claim_one(&h, q, "w2").await;
    assert_eq!((run.lease.job_id.clone(), run.facts.attempt, run.facts.max_attempts), (id.clone(), 1, 3));
    assert_eq!(
        h.client.complete(&run.lease, Some(&json!("ok"))).await.expect("complete"),
        Completion::Completed
    );
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &id, "completed").await;
    let stored = h.client.get_job(q, &id).await.expect("job");
    assert_eq!((stored.state, stored.replays, stored.errors.len()), (JobState::Completed, 1, 1));
    assert_eq!(stored.last_dead_reason.as_deref(), Some("invalid_payload"));
}

#[tokio::test]
async fn replay_leaves_jobs_that_are_not_dead_alone() {
    let h = Harness::start().await;
    let q = "replay-not-dead";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 4).await;
    let delayed = enqueue(&h, q, job(9).delay(Duration::from_secs(60))).await;
    let jobs = claim_jobs(&h, q, &claim(3, "w1")).await;
    h.client.complete(&jobs[0].lease, None).await.expect("complete");
    h.client.fail(&jobs[1].lease, &Failure::permanent("boom")).await.expect("fail");
    h.assert_sound(q).await;
    // ids[0] completed, ids[1] dead, ids[2] active, ids[3] ready, `delayed` delayed.
    let ghost = JobId::new("never-enqueued").expect("id");
    let others = [ids[0].clone(), ids[2].clone(), ids[3].clone(), delayed.clone()];
    let mut before = Vec::new();
    for id in &others {
        before.push(snapshot(&mut conn, q, id).await);
    }

    let asked =
        [ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[3].clone(), delayed.clone(), ghost.clone()];
    let replayed = h.client.replay(q, &asked).await.expect("replay");
    h.assert_sound(q).await;
    assert_eq!(
        replayed,
        Replayed {
            replayed: 1,
            not_dead: vec![ids[0].clone(), ids[2].clone(), ids[3].clone(), delayed, ghost.clone()]
        }
    );
    for (id, before) in others.iter().zip(before) {
        let mut now = snapshot(&mut conn, q, id).await;
        now.meta = before.meta.clone();
        now.events = before.events;
        assert_eq!(now, before, "job {id} untouched");
    }
    assert!(!job_exists(&mut conn, q, &ghost).await);
    assert_eq!(counter(&mut conn, q, "replayed").await, 1);
    assert_eq!(
        ready_line(&mut conn, q, 0).await,
        vec![ids[3].to_string(), ids[1].to_string()],
        "replayed to the back"
    );

    // Nothing dead at all: nothing changes, not even the counter.
    let meta_before = meta(&mut conn, q).await;
    let none = h.client.replay(q, &[ids[0].clone()]).await.expect("replay");
    h.assert_sound(q).await;
    assert_eq!(none, Replayed { replayed: 0, not_dead: vec![ids[0].clone()] });
    assert_eq!(meta(&mut conn, q).await, meta_before);
}

// ---------------------------------------------------------------------------
// retention
// ---------------------------------------------------------------------------

/// Enqueues `n` jobs with ids `<stem>-00`, `<stem>-01`, ... (so id order is
/// enqueue order), claims them all and returns the claims in order.
async fn enqueue_and_claim_named(h: &Harness, q: &str, stem: &str, n: usize) -> Vec<ClaimedJob> {
    for i in 0..n {
        enqueue(h, q, job(i).id(JobId::new(format!("{stem}-{i:02}")).expect("id"))).await;
    }
    let jobs = claim_jobs(h, q, &claim(n as u32, "w1")).await;
    assert_eq!(jobs.len(), n);
    jobs
}

/// Slack before a completion trims a batch (TRIM_SLACK in complete.lua).
const TRIM_SLACK: usize = 50;

#[tokio::test]
async fn retention_keeps_the_newest_completed_jobs_within_a_bounded_slack() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 3, max_age: None })).await;
    let q = "keep-last";
    let mut conn = h.raw().await;
    let total = 3 + TRIM_SLACK + 7;
    let jobs = enqueue_and_claim_named(&h, q, "job", total).await;
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(
            h.client.complete(&j.lease, Some(&json!(i))).await.expect("complete"),
            Completion::Completed
        );
        let kept = members(&mut conn, q, "completed").await;
        assert!(
            kept.len() < 3 + TRIM_SLACK,
            "after job {i}: {} kept, bound is keep_last + slack",
            kept.len()
        );
        for newest in &jobs[(i + 1).saturating_sub(3)..=i] {
            assert!(
                kept.contains(&newest.lease.job_id.to_string()),
                "after job {i}: a newest job was trimmed"
            );
        }
    }
    h.assert_sound(q).await;
    // One batch ran at completion TRIM_SLACK (back to 3); 10 more since.
    assert_eq!(members(&mut conn, q, "completed").await.len(), 3 + 10);

    // Maintenance brings the set to exactly keep_last, newest first kept.
    assert_eq!(h.client.trim_completed(q).await.expect("trim"), 10);
    h.assert_sound(q).await;
    for (i, j) in jobs.iter().enumerate() {
        let id = &j.lease.job_id;
        if i < total - 3 {
            assert!(!job_exists(&mut conn, q, id).await, "trimmed job {id} lost its hash");
            assert!(places(&mut conn, q, id).await.is_empty());
            assert!(is_not_found(&h.client.get_job(q, id).await));
        } else {
            assert_only_in(&mut conn, q, id, "completed").await;
            assert_eq!(job_fields(&mut conn, q, id).await["result"], i.to_string());
        }
    }
    assert_eq!(counter(&mut conn, q, "completed").await, total as u64, "the counter counts all completions");
    assert_eq!(h.client.counts(q).await.expect("counts").completed, 3);
}

#[tokio::test]
async fn keep_last_zero_deletes_the_job_on_completion() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 0, max_age: None })).await;
    let q = "keep-none";
    let mut conn = h.raw().await;
    let jobs = enqueue_and_claim_named(&h, q, "gone", 2).await;
    let id = &jobs[0].lease.job_id;
    assert_eq!(
        h.client.complete(&jobs[0].lease, Some(&json!(1))).await.expect("complete"),
        Completion::Completed
    );
    h.assert_sound(q).await;
    assert!(!job_exists(&mut conn, q, id).await);
    assert!(places(&mut conn, q, id).await.is_empty());
    assert!(members(&mut conn, q, "completed").await.is_empty());
    assert_eq!(counter(&mut conn, q, "completed").await, 1);
    assert_eq!(events_of(&mut conn, q, "completed", id).await, 1, "the completion is still observable");
    assert_only_in(&mut conn, q, &jobs[1].lease.job_id, "active").await;

    // The hash is gone, but a short-lived marker remembers the completing
    // token: a resend after a lost reply is still AlreadyCompleted, and it
    // changes nothing.
    let marker = format!("taskline:{{{q}}}:done:{id}");
    let ttl: i64 = cmd(&mut conn, &["PTTL", &marker]).await;
    assert!(ttl > 0 && ttl <= 30_000, "the done marker expires within 30 seconds: {ttl}");
    let meta_before = meta(&mut conn, q).await;
    let r = h.client.complete(&jobs[0].lease, None).await;
    assert!(matches!(r, Ok(Completion::AlreadyCompleted)), "{r:?}");
    h.assert_sound(q).await;
    assert_eq!(meta(&mut conn, q).await, meta_before);
    assert!(!job_exists(&mut conn, q, id).await);

    // Another token for that id is not the completer: the job is simply gone.
    let mut forged = jobs[0].lease.clone();
    forged.token = "forged.1".into();
    let r = h.client.complete(&forged, None).await;
    assert!(is_not_found(&r), "{r:?}");
}

#[tokio::test]
async fn retention_max_age_drops_old_completed_jobs() {
    let h = Harness::start_with(|b| {
        b.retention(Retention { keep_last: 100, max_age: Some(Duration::from_millis(300)) })
    })
    .await;
    let q = "max-age";
    let mut conn = h.raw().await;
    let jobs = enqueue_and_claim_named(&h, q, "aged", 18).await;
    let ids = ids_of(&jobs);
    for j in &jobs[..2] {
        h.client.complete(&j.lease, None).await.expect("complete");
    }
    assert_eq!(members(&mut conn, q, "completed").await.len(), 2, "young jobs are kept");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Maintenance removes what aged out, even with no job finishing.
    assert_eq!(h.client.trim_completed(q).await.expect("trim"), 2);
    h.assert_sound(q).await;
    for id in &ids[..2] {
        assert!(!job_exists(&mut conn, q, id).await, "aged-out job {id} lost its hash");
    }

    // Completions check age every 16th completion (the counter counts all).
    for j in &jobs[2..4] {
        h.client.complete(&j.lease, None).await.expect("complete");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for j in &jobs[4..15] {
        h.client.complete(&j.lease, None).await.expect("complete");
    }
    assert_eq!(counter(&mut conn, q, "completed").await, 15);
    assert_eq!(members(&mut conn, q, "completed").await.len(), 13, "no age check before the 16th");
    h.client.complete(&jobs[15].lease, None).await.expect("complete");
    h.assert_sound(q).await;
    let kept = members(&mut conn, q, "completed").await;
    assert!(!kept.contains(&ids[2].to_string()) && !kept.contains(&ids[3].to_string()), "{kept:?}");
    assert!(kept.contains(&ids[15].to_string()));
}

#[tokio::test]
async fn dead_jobs_are_never_trimmed() {
    let h = Harness::start_with(|b| {
        b.retention(Retention { keep_last: 1, max_age: Some(Duration::from_millis(50)) })
    })
    .await;
    let q = "dead-kept";
    let mut conn = h.raw().await;
    let jobs = enqueue_and_claim_named(&h, q, "d", 6).await;
    for j in &jobs[..3] {
        h.client.fail(&j.lease, &Failure::permanent("broken")).await.expect("fail");
        h.assert_sound(q).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for j in &jobs[3..] {
        h.client.complete(&j.lease, None).await.expect("complete");
        h.assert_sound(q).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.client.trim_completed(q).await.expect("trim");
    h.assert_sound(q).await;
    assert!(members(&mut conn, q, "completed").await.is_empty(), "completed jobs aged out");
    assert_eq!(members(&mut conn, q, "dead").await.len(), 3);
    for j in &jobs[..3] {
        let id = &j.lease.job_id;
        assert_only_in(&mut conn, q, id, "dead").await;
        let stored = h.client.get_job(q, id).await.expect("dead job kept");
        assert_eq!(stored.state, JobState::Dead);
        assert_eq!(
            stored.facts.payload,
            format!(r#"{{"n":{}}}"#, id.as_str()[2..].parse::<u32>().expect("n"))
        );
        assert_eq!(stored.errors.len(), 1);
    }
    assert_eq!(h.client.counts(q).await.expect("counts").dead, 3);
}

// ---------------------------------------------------------------------------
// the whole-state invariant
// ---------------------------------------------------------------------------

/// Asserts the doctor's invariants and that every enqueued id is listed by
/// exactly one structure, with nothing else listed and counts agreeing.
async fn assert_accounted(h: &Harness, conn: &mut Conn, q: &str, ids: &BTreeSet<String>) {
    h.assert_sound(q).await;
    let listed = all_listed(conn, q).await;
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), unique.len(), "an id is listed twice: {listed:?}");
    assert_eq!(&unique, ids, "listed ids differ from the enqueued ids");
    let c = h.client.counts(q).await.expect("counts");
    assert_eq!(c.ready + c.delayed + c.active + c.completed + c.dead, ids.len() as u64, "{c:?}");
}

#[tokio::test]
async fn a_mixed_run_keeps_every_job_in_exactly_one_place() {
    let h = Harness::start().await;
    let q = "mixed";
    let mut conn = h.raw().await;
    let new: Vec<NewJob> = (0..50)
        .map(|i| job(i).priority((i % 3) as u8).max_attempts(if i % 5 == 0 { 1 } else { 3 }))
        .collect();
    let outcomes = h.client.enqueue_bulk(q, new).await.expect("enqueue");
    assert!(outcomes.iter().all(|o| o.is_created()));
    let ids: BTreeSet<String> = outcomes.iter().map(|o| o.id().to_string()).collect();
    assert_eq!(ids.len(), 50);
    assert_accounted(&h, &mut conn, q, &ids).await;

    let (mut completed, mut dead) = (0u64, 0u64);
    for round in 0..5usize {
        // A worker that will die holding its leases.
        let dying = claim_jobs(&h, q, &short_lease(3, &format!("dying-{round}"), 40)).await;
        assert_accounted(&h, &mut conn, q, &ids).await;
        // A healthy worker doing a bit of everything.
        let live = claim_jobs(&h, q, &claim(8, &format!("live-{round}"))).await;
        assert_accounted(&h, &mut conn, q, &ids).await;
        for (i, j) in live.iter().enumerate() {
            let id = &j.lease.job_id;
            match (i + round) % 6 {
                0 | 1 => {
                    assert_eq!(
                        h.client.complete(&j.lease, None).await.expect("complete"),
                        Completion::Completed
                    );
                    completed += 1;
                    assert_only_in(&mut conn, q, id, "completed").await;
                }
                2 => {
                    let out =
                        h.client.fail(&j.lease, &Failure::transient("flaky", Duration::from_millis(5))).await;
                    match out.expect("fail") {
                        FailOutcome::Retrying { .. } => {
                            assert!(j.facts.attempt < j.facts.max_attempts);
                            assert_only_in(&mut conn, q, id, "delayed").await;
                        }
                        FailOutcome::Dead { reason, .. } => {
                            assert_eq!(
                                (reason.as_str(), j.facts.attempt),
                                ("attempts_exhausted", j.facts.max_attempts)
                            );
                            dead += 1;
                            assert_only_in(&mut conn, q, id, "dead").await;
                        }
                    }
                }
                3 => {
                    let out = h.client.fail(&j.lease, &Failure::permanent("bad")).await.expect("fail");
                    assert!(matches!(out, FailOutcome::Dead { ref reason, .. } if reason == "permanent"));
                    dead += 1;
                    assert_only_in(&mut conn, q, id, "dead").await;
                }
                4 => {
                    assert!(h.client.release(&j.lease, None).await.expect("release").now);
                    assert_only_in(&mut conn, q, id, &format!("ready:{}", j.facts.priority)).await;
                }
                _ => {
                    let r =
                        h.client.release(&j.lease, Some(Duration::from_millis(5))).await.expect("release");
                    assert!(r.now);
                    assert_only_in(&mut conn, q, id, "delayed").await;
                }
            }
            assert_accounted(&h, &mut conn, q, &ids).await;
        }
        tokio::time::sleep(Duration::from_millis(70)).await;
        let reaped = h.client.reap(q, 100, Duration::ZERO).await.expect("reap");
        assert_accounted(&h, &mut conn, q, &ids).await;
        let dying_ids: BTreeSet<JobId> = ids_of(&dying).into_iter().collect();
        assert_eq!(reaped.ids.iter().cloned().collect::<BTreeSet<_>>(), dying_ids, "round {round}");
        let spent = dying.iter().filter(|j| j.facts.attempt >= j.facts.max_attempts).count() as u32;
        assert_eq!((reaped.dead, reaped.retried), (spent, dying.len() as u32 - spent));
        dead += u64::from(spent);
    }
    assert_eq!(counter(&mut conn, q, "completed").await, completed);
    assert_eq!(counter(&mut conn, q, "dead").await, dead);

    // Drain: everything left is run to completion.
    let mut drained = false;
    for _ in 0..100 {
        let c = h.client.counts(q).await.expect("counts");
        if c.ready + c.delayed + c.active == 0 {
            drained = true;
            break;
        }
        for j in claim_jobs(&h, q, &claim(50, "drainer")).await {
            h.client.complete(&j.lease, None).await.expect("complete");
            completed += 1;
            assert_accounted(&h, &mut conn, q, &ids).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(drained, "the queue drains");
    let c = h.client.counts(q).await.expect("counts");
    assert_eq!((c.completed, c.dead), (completed, dead));
    assert_eq!(completed + dead, 50);
    assert!(dead > 0 && completed > 0, "the run exercised both ends: {completed} completed, {dead} dead");
    let done: BTreeSet<String> = members(&mut conn, q, "completed").await.into_iter().collect();
    let buried: BTreeSet<String> = members(&mut conn, q, "dead").await.into_iter().collect();
    assert!(done.is_disjoint(&buried));
    assert_eq!(done.union(&buried).cloned().collect::<BTreeSet<_>>(), ids);
    for id in &ids {
        let f: Fields = cmd(&mut conn, &["HGETALL", &key(q, &format!("job:{id}"))]).await;
        let expected = if done.contains(id) { "completed" } else { "dead" };
        assert_eq!(f["state"], expected, "job {id}");
    }
    assert_eq!(counter(&mut conn, q, "enqueued").await, 50);
    assert_eq!(counter(&mut conn, q, "completed").await, completed);
    assert_eq!(counter(&mut conn, q, "dead").await, dead);

    // Replay the whole DLQ and drain again: every job ends completed.
    let dead_ids: Vec<JobId> = buried.iter().map(|s| JobId::new(s.clone()).expect("id")).collect();
    let replayed = h.client.replay(q, &dead_ids).await.expect("replay");
    assert_eq!((replayed.replayed as u64, replayed.not_dead.len()), (dead, 0));
    assert_accounted(&h, &mut conn, q, &ids).await;
    let rest = claim_jobs(&h, q, &claim(50, "drainer")).await;
    assert_eq!(rest.len() as u64, dead);
    assert!(rest.iter().all(|j| j.facts.attempt == 1), "a replay restores the attempt budget");
    for j in rest {
        h.client.complete(&j.lease, None).await.expect("complete");
        assert_accounted(&h, &mut conn, q, &ids).await;
    }
    let c = h.client.counts(q).await.expect("counts");
    assert_eq!((c.ready, c.delayed, c.active, c.completed, c.dead), (0, 0, 0, 50, 0));
    assert_eq!(counter(&mut conn, q, "replayed").await, dead);
}

/// Completed jobs are scored by finish time in whole milliseconds, and a
/// batch trim removes the lowest (score, id) entries. The job completing
/// now must never be among them, even when it ties in the millisecond with
/// older jobs whose ids sort after its own.
#[tokio::test]
async fn a_batch_trim_never_removes_the_job_completing_now() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 1, max_age: None })).await;
    let mut conn = h.raw().await;
    let q = "tie";
    let mut newer = Vec::new();
    for i in 0..TRIM_SLACK {
        newer.push(job(i + 10).id(JobId::new(format!("b-{i:03}")).expect("id")));
    }
    h.client.enqueue_bulk(q, newer).await.expect("enqueue");
    let last = enqueue(&h, q, job(1).id(JobId::new("a-last").expect("id"))).await;
    let jobs = claim_jobs(&h, q, &claim(TRIM_SLACK as u32 + 1, "w1")).await;
    for j in &jobs {
        h.client.complete(&j.lease, None).await.expect("complete");
    }
    h.assert_sound(q).await;
    // Completion 51 trimmed a batch: whatever the ties, `a-last` (completed
    // last, sorting first by id) is kept.
    let kept = members(&mut conn, q, "completed").await;
    assert!(kept.contains(&last.to_string()), "the job completed last was trimmed: {kept:?}");
    assert!(kept.len() <= 2, "the batch trimmed down to keep_last (plus a tie): {kept:?}");
}

#[tokio::test]
async fn a_lease_past_its_deadline_holds_until_it_is_reaped() {
    let h = Harness::start().await;
    let q = "late";
    let mut conn = h.raw().await;
    let ids = enqueue_n(&h, q, 2).await;
    let jobs = claim_jobs(&h, q, &short_lease(2, "slow", 30)).await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    // Expired on the server clock but not reaped: the token still holds.
    assert_eq!(h.client.complete(&jobs[0].lease, None).await.expect("complete"), Completion::Completed);
    h.assert_sound(q).await;
    let ext =
        h.client.extend(std::slice::from_ref(&jobs[1].lease), Duration::from_secs(30)).await.expect("extend");
    h.assert_sound(q).await;
    assert!(ext.lost.is_empty());
    assert_eq!(h.client.reap(q, 100, Duration::ZERO).await.expect("reap"), Reaped::default());
    h.assert_sound(q).await;
    assert_only_in(&mut conn, q, &ids[0], "completed").await;
    assert_only_in(&mut conn, q, &ids[1], "active").await;
    assert_eq!(counter(&mut conn, q, "reaped").await, 0);
}

#[tokio::test]
async fn long_error_messages_are_cut_on_a_char_boundary() {
    let h = Harness::start().await;
    let q = "long-error";
    let id = enqueue(&h, q, job(1)).await;
    let claimed = claim_one(&h, q, "w1").await;
    let message = "é".repeat(taskline::protocol::MAX_ERROR_MESSAGE_BYTES); // twice the limit in bytes
    h.client.fail(&claimed.lease, &Failure::transient(message, Duration::from_secs(60))).await.expect("fail");
    h.assert_sound(q).await;
    let stored = h.client.get_job(q, &id).await.expect("job");
    let kept = &stored.errors[0].message;
    assert_eq!(kept.len(), taskline::protocol::MAX_ERROR_MESSAGE_BYTES);
    assert!(kept.chars().all(|c| c == 'é'));
}
