//! The producer side and claim: enqueue (one, delayed, scheduled, unique,
//! bulk), validation before anything reaches Redis, priorities, batch
//! claims, pause/resume, `next_due`, events and the queue registry.
//!
//! Every test runs against its own `redis-server` and checks both the
//! client's answer and the Redis state it leaves behind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskline::{
    Backoff, Counts, EnqueueOutcome, Error, Failure, Jitter, JobId, JobState, NewJob, Retention, UniqueMode,
};

use crate::support::{Harness, claim, cmd, stream_events};

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// The full name of a key of queue `q` under the default prefix.
fn key(q: &str, suffix: &str) -> String {
    format!("taskline:{{{q}}}:{suffix}")
}

/// Milliseconds since the Unix epoch.
fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after the epoch").as_millis() as u64
}

/// The Redis server's clock, in ms since the epoch (the one clock).
async fn server_now_ms(h: &Harness) -> u64 {
    let mut conn = h.raw().await;
    let (secs, micros): (u64, u64) = cmd(&mut conn, &["TIME"]).await;
    secs * 1000 + micros / 1000
}

async fn dbsize(h: &Harness) -> u64 {
    let mut conn = h.raw().await;
    cmd(&mut conn, &["DBSIZE"]).await
}

async fn counts(h: &Harness, q: &str) -> Counts {
    h.client.counts(q).await.expect("counts")
}

fn counts_of(ready: u64, delayed: u64, active: u64, completed: u64, dead: u64) -> Counts {
    Counts { ready, delayed, active, completed, dead, paused: false }
}

/// A plain job named `name` with payload `{"n": n}`.
fn job(name: &str, n: u64) -> NewJob {
    NewJob::new(name, &json!({ "n": n })).expect("job")
}

/// Every event of the queue's stream, oldest first, as field maps.
async fn events(h: &Harness, q: &str) -> Vec<HashMap<String, String>> {
    let mut conn = h.raw().await;
    let events = stream_events(&mut conn, &key(q, "events")).await;
    events
        .into_iter()
        .map(|e| {
            let mut fields: HashMap<String, String> = e.extra.into_iter().collect();
            fields.insert("event".into(), e.event);
            fields.insert("id".into(), e.job_id);
            fields.insert("name".into(), e.name);
            fields.insert("attempt".into(), e.attempt.to_string());
            if let Some(c) = e.correlation_id {
                fields.insert("correlation_id".into(), c);
            }
            fields
        })
        .collect()
}

/// Score of `member` in zset `zset_key`, in ms.
async fn zscore(h: &Harness, zset_key: &str, member: &str) -> Option<u64> {
    let mut conn = h.raw().await;
    let score: Option<f64> = cmd(&mut conn, &["ZSCORE", zset_key, member]).await;
    score.map(|s| s as u64)
}

/// Claims everything ready in `queue` in batches, returning ids in claim order.
async fn claim_all_ids(h: &Harness, q: &str, batch: u32) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = h.client.claim(q, &claim(batch, "w-drain")).await.expect("claim");
        if got.jobs.is_empty() {
            return ids;
        }
        ids.extend(got.jobs.into_iter().map(|j| j.lease.job_id.to_string()));
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(2),
        factor: 3.0,
        max: Duration::from_secs(60),
        jitter: Jitter::Full,
    }
}

fn assert_duplicate(result: taskline::Result<JobId>, existing_id: &str, cause_contains: &str) {
    match result {
        Err(Error::DuplicateJob { existing, cause }) => {
            assert_eq!(existing, existing_id, "DuplicateJob must name the job that is there");
            assert!(cause.contains(cause_contains), "cause {cause:?} should mention {cause_contains:?}");
        }
        other => panic!("expected DuplicateJob naming {existing_id}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Enqueue one job
// ---------------------------------------------------------------------------

#[tokio::test]
async fn enqueue_one_job_stores_a_ready_record() {
    let h = Harness::start().await;
    let q = "emails";
    let before = server_now_ms(&h).await;
    let id = h
        .client
        .enqueue(
            q,
            NewJob::new("send_email", &json!({"to": "ada@example.com", "n": 1}))
                .expect("job")
                .version(3)
                .priority(4)
                .correlation_id("req-77"),
        )
        .await
        .expect("enqueue");
    let after = server_now_ms(&h).await;

    let uuid = uuid::Uuid::parse_str(id.as_str()).expect("generated id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "generated ids are UUIDv7: {id}");

    let job = h.client.get_job(q, &id).await.expect("get_job");
    assert_eq!(job.id, id);
    assert_eq!(job.queue, q);
    assert_eq!(job.state, JobState::Ready);
    assert_eq!(job.facts.attempt, 0);
    assert_eq!(job.facts.name, "send_email");
    assert_eq!(
        job.payload_as::<serde_json::Value>().expect("json"),
        json!({"to": "ada@example.com", "n": 1})
    );
    assert_eq!(job.facts.version, 3);
    assert_eq!(job.facts.priority, 4);
    assert_eq!(job.facts.max_attempts, 5, "default attempt budget");
    assert_eq!(job.facts.correlation_id.as_deref(), Some("req-77"));
    assert_eq!(job.unique_key, None);
    assert_eq!(job.facts.timeout, None);
    assert!(job.errors.is_empty());
    let created = ms(job.facts.created_at);
    assert!(
        before <= created && created <= after,
        "created_at {created} not in [{before}, {after}] (server clock)"
    );
    assert_eq!(job.due_at.map(ms), Some(created), "a job without delay is due when created");

    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 0, 0));
    // It sits at the back of its level's ready list, and the level is known.
    let mut conn = h.raw().await;
    let listed: Vec<String> = cmd(&mut conn, &["LRANGE", &key(q, "ready:4"), "0", "-1"]).await;
    assert_eq!(listed, vec![id.to_string()]);
    let levels: Vec<String> = cmd(&mut conn, &["ZRANGE", &key(q, "levels"), "0", "-1"]).await;
    assert_eq!(levels, vec!["4".to_string()]);
    let enqueued: String = cmd(&mut conn, &["HGET", &key(q, "meta"), "enqueued"]).await;
    assert_eq!(enqueued, "1");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn generated_ids_are_distinct_and_time_ordered() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(h.client.enqueue("q", job("j", n)).await.expect("enqueue"));
    }
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "UUIDv7 ids sort in enqueue order");
    h.assert_sound("q").await;
}

#[tokio::test]
async fn client_default_max_attempts_applies_and_per_job_overrides_it() {
    let h = Harness::start_with(|b| b.default_max_attempts(3)).await;
    let default_id = h.client.enqueue("q", job("j", 1)).await.expect("enqueue");
    let custom_id = h.client.enqueue("q", job("j", 2).max_attempts(9)).await.expect("enqueue");
    assert_eq!(h.client.get_job("q", &default_id).await.expect("get").facts.max_attempts, 3);
    assert_eq!(h.client.get_job("q", &custom_id).await.expect("get").facts.max_attempts, 9);
    h.assert_sound("q").await;
}

#[tokio::test]
async fn claimed_job_carries_what_was_enqueued() {
    let h = Harness::start().await;
    let id = h
        .client
        .enqueue(
            "q",
            NewJob::new("resize", &json!({"w": 10}))
                .expect("job")
                .version(2)
                .priority(7)
                .max_attempts(4)
                .timeout(Duration::from_secs(12))
                .backoff(backoff())
                .correlation_id("corr-1"),
        )
        .await
        .expect("enqueue");
    let got = h.client.claim("q", &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs.len(), 1);
    let c = &got.jobs[0];
    assert_eq!(c.lease.job_id, id);
    assert_eq!(c.lease.queue, "q");
    assert_eq!(c.facts.name, "resize");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&c.facts.payload).expect("json"), json!({"w": 10}));
    assert_eq!(c.facts.version, 2);
    assert_eq!(c.facts.priority, 7);
    assert_eq!(c.facts.max_attempts, 4);
    assert_eq!(c.facts.timeout, Some(Duration::from_secs(12)));
    assert_eq!(c.facts.backoff, Some(backoff()), "the per-job backoff round-trips");
    assert_eq!(h.client.get_job("q", &id).await.expect("get").facts.backoff, Some(backoff()));
    assert_eq!(c.facts.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(c.facts.checkpoint, None);
    assert_eq!(c.facts.releases, 0);
    h.assert_sound("q").await;
}

// ---------------------------------------------------------------------------
// Delays and scheduled times (server clock)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn delayed_job_waits_then_a_claim_promotes_and_leases_it() {
    let h = Harness::start().await;
    let q = "later";
    let delay = Duration::from_millis(250);
    let id = h.client.enqueue(q, job("j", 1).delay(delay)).await.expect("enqueue");

    let stored = h.client.get_job(q, &id).await.expect("get");
    assert_eq!(stored.state, JobState::Delayed);
    let due = ms(stored.due_at.expect("due_at"));
    assert_eq!(
        due,
        ms(stored.facts.created_at) + 250,
        "due = enqueue time + delay, both on the server clock"
    );
    assert_eq!(zscore(&h, &key(q, "delayed"), id.as_str()).await, Some(due), "delayed zset score = due ms");
    assert_eq!(counts(&h, q).await, counts_of(0, 1, 0, 0, 0));
    h.assert_sound(q).await;

    // Not claimable before it is due.
    let early = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    let claimed_at = server_now_ms(&h).await;
    if claimed_at < due {
        assert!(early.jobs.is_empty(), "a delayed job must not be leased before it is due");
        assert_eq!(early.next_due.map(ms), Some(due));
        assert_eq!(counts(&h, q).await, counts_of(0, 1, 0, 0, 0));
    }

    // Wait (on the server clock) until it is due, then claim.
    let now = server_now_ms(&h).await;
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now) + 20)).await;
    let got = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    assert_eq!(got.jobs.len(), 1, "the due job is promoted and leased by the claim");
    assert_eq!(got.jobs[0].lease.job_id, id);
    assert_eq!(got.jobs[0].facts.attempt, 1);
    assert_eq!(got.next_due, None, "no delayed job remains");
    assert_eq!(h.client.get_job(q, &id).await.expect("get").state, JobState::Active);
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 1, 0, 0));
    let mut conn = h.raw().await;
    let in_delayed: u64 = cmd(&mut conn, &["ZCARD", &key(q, "delayed")]).await;
    assert_eq!(in_delayed, 0);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn far_delayed_job_is_not_claimable() {
    let h = Harness::start().await;
    let id = h.client.enqueue("q", job("j", 1).delay(Duration::from_secs(60))).await.expect("enqueue");
    let got = h.client.claim("q", &claim(10, "w1")).await.expect("claim");
    assert!(got.jobs.is_empty());
    assert!(!got.paused);
    let job = h.client.get_job("q", &id).await.expect("get");
    assert_eq!(job.state, JobState::Delayed);
    assert_eq!(job.facts.attempt, 0, "an unclaimed job spends no attempt");
    assert_eq!(counts(&h, "q").await, counts_of(0, 1, 0, 0, 0));
    h.assert_sound("q").await;
}

#[tokio::test]
async fn run_at_is_read_on_the_server_clock() {
    let h = Harness::start().await;
    let q = "sched";
    let server_now = server_now_ms(&h).await;
    let past = UNIX_EPOCH + Duration::from_millis(server_now - 5_000);
    let future = UNIX_EPOCH + Duration::from_millis(server_now + 60_000);

    let past_id = h.client.enqueue(q, job("j", 1).run_at(past)).await.expect("enqueue past");
    let future_id = h.client.enqueue(q, job("j", 2).run_at(future)).await.expect("enqueue future");

    let p = h.client.get_job(q, &past_id).await.expect("get");
    assert_eq!(p.state, JobState::Ready, "run_at in the past (server clock) is ready at once");
    assert_eq!(p.due_at.map(ms), Some(ms(past)));

    let f = h.client.get_job(q, &future_id).await.expect("get");
    assert_eq!(f.state, JobState::Delayed, "run_at in the future (server clock) is delayed");
    assert_eq!(f.due_at.map(ms), Some(ms(future)));
    assert_eq!(
        zscore(&h, &key(q, "delayed"), future_id.as_str()).await,
        Some(ms(future)),
        "the due time is exactly run_at in ms"
    );
    assert_eq!(counts(&h, q).await, counts_of(1, 1, 0, 0, 0));

    let got = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    let ids: Vec<_> = got.jobs.iter().map(|j| j.lease.job_id.clone()).collect();
    assert_eq!(ids, vec![past_id], "only the past-due job is claimable");
    assert_eq!(got.next_due.map(ms), Some(ms(future)));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn run_at_wins_over_delay() {
    let h = Harness::start().await;
    let server_now = server_now_ms(&h).await;
    let past = UNIX_EPOCH + Duration::from_millis(server_now - 1_000);
    let id = h
        .client
        .enqueue("q", job("j", 1).delay(Duration::from_secs(3600)).run_at(past))
        .await
        .expect("enqueue");
    let stored = h.client.get_job("q", &id).await.expect("get");
    assert_eq!(stored.state, JobState::Ready);
    assert_eq!(stored.due_at.map(ms), Some(ms(past)));
    h.assert_sound("q").await;
}

// ---------------------------------------------------------------------------
// Caller-chosen ids
// ---------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_caller_id_is_rejected_and_changes_nothing() {
    let h = Harness::start().await;
    let q = "orders";
    let id = JobId::new("order-42").expect("id");
    let first = h
        .client
        .enqueue(q, NewJob::new("charge", &json!({"v": 1})).expect("job").id(id.clone()))
        .await
        .expect("first enqueue");
    assert_eq!(first, id);
    let events_before = events(&h, q).await.len();

    let second = h
        .client
        .enqueue(q, NewJob::new("charge", &json!({"v": 2})).expect("job").id(id.clone()).priority(9))
        .await;
    let err = second.as_ref().expect_err("duplicate").to_string();
    assert!(err.contains("order-42"), "message names the id: {err}");
    assert_duplicate(second, "order-42", "order-42");

    let stored = h.client.get_job(q, &id).await.expect("get");
    assert_eq!(
        stored.payload_as::<serde_json::Value>().expect("json"),
        json!({"v": 1}),
        "original payload intact"
    );
    assert_eq!(stored.facts.priority, 0, "original options intact");
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 0, 0));
    let mut conn = h.raw().await;
    let enqueued: String = cmd(&mut conn, &["HGET", &key(q, "meta"), "enqueued"]).await;
    assert_eq!(enqueued, "1", "the enqueued counter counts only created jobs");
    let high: u64 = cmd(&mut conn, &["LLEN", &key(q, "ready:9")]).await;
    assert_eq!(high, 0);
    assert_eq!(events(&h, q).await.len(), events_before, "a rejected duplicate emits no event");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_job_rejected_for_its_id_does_not_take_its_unique_key() {
    let h = Harness::start().await;
    let id = JobId::new("x-1").expect("id");
    h.client.enqueue("q", job("j", 1).id(id.clone())).await.expect("first");
    let dup = h.client.enqueue("q", job("j", 2).id(id.clone()).unique("k", UniqueMode::UntilFinished)).await;
    assert_duplicate(dup, "x-1", "x-1");
    let mut conn = h.raw().await;
    let lock: Option<String> = cmd(&mut conn, &["GET", &key("q", "unique:k")]).await;
    assert_eq!(lock, None, "the rejected job must not hold the unique key");
    let other =
        h.client.enqueue("q", job("j", 3).unique("k", UniqueMode::UntilFinished)).await.expect("free key");
    assert_eq!(h.client.get_job("q", &other).await.expect("get").unique_key.as_deref(), Some("k"));
    h.assert_sound("q").await;
}

#[tokio::test]
async fn the_same_id_may_live_in_two_queues() {
    let h = Harness::start().await;
    let id = JobId::new("shared").expect("id");
    h.client.enqueue("a", job("j", 1).id(id.clone())).await.expect("a");
    h.client.enqueue("b", job("j", 2).id(id.clone())).await.expect("b: ids are per queue");
    assert_eq!(counts(&h, "a").await.ready, 1);
    assert_eq!(counts(&h, "b").await.ready, 1);
    h.assert_sound("a").await;
    h.assert_sound("b").await;
}

#[tokio::test]
async fn a_retained_completed_job_still_holds_its_id() {
    let h = Harness::start().await;
    let id = JobId::new("once").expect("id");
    h.client.enqueue("q", job("j", 1).id(id.clone())).await.expect("enqueue");
    let got = h.client.claim("q", &claim(1, "w1")).await.expect("claim");
    h.client.complete(&got.jobs[0].lease, None).await.expect("complete");
    let again = h.client.enqueue("q", job("j", 2).id(id.clone())).await;
    assert_duplicate(again, "once", "once");
    let stored = h.client.get_job("q", &id).await.expect("get");
    assert_eq!(stored.state, JobState::Completed, "the completed record is untouched");
    assert_eq!(stored.facts.payload, r#"{"n":1}"#);
    assert_eq!(counts(&h, "q").await, counts_of(0, 0, 0, 1, 0));
    h.assert_sound("q").await;
}

#[tokio::test]
async fn an_id_is_free_again_once_retention_removed_the_job() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 0, max_age: None })).await;
    let id = JobId::new("again").expect("id");
    h.client.enqueue("q", job("j", 1).id(id.clone())).await.expect("enqueue");
    let got = h.client.claim("q", &claim(1, "w1")).await.expect("claim");
    h.client.complete(&got.jobs[0].lease, None).await.expect("complete");
    assert!(matches!(h.client.get_job("q", &id).await, Err(Error::JobNotFound { .. })));
    let second = h.client.enqueue("q", job("j", 2).id(id.clone())).await.expect("id reusable");
    assert_eq!(second, id);
    let stored = h.client.get_job("q", &id).await.expect("get");
    assert_eq!((stored.state, stored.facts.attempt), (JobState::Ready, 0));
    assert_eq!(stored.facts.payload, r#"{"n":2}"#);
    h.assert_sound("q").await;
}

// ---------------------------------------------------------------------------
// Unique keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unique_until_finished_is_held_until_the_job_completes() {
    let h = Harness::start().await;
    let q = "uniq";
    let lock = key(q, "unique:report-7");
    let first = h
        .client
        .enqueue(q, job("report", 1).unique("report-7", UniqueMode::UntilFinished))
        .await
        .expect("first");

    let mut conn = h.raw().await;
    let holder: String = cmd(&mut conn, &["GET", &lock]).await;
    assert_eq!(holder, first.as_str());
    let pttl: i64 = cmd(&mut conn, &["PTTL", &lock]).await;
    assert!(
        pttl > 86_000_000 && pttl <= 86_400_000,
        "until_finished holds a 24 h backstop TTL, got {pttl} ms"
    );
    assert_eq!(h.client.get_job(q, &first).await.expect("get").unique_key.as_deref(), Some("report-7"));

    let second = h.client.enqueue(q, job("report", 2).unique("report-7", UniqueMode::UntilFinished)).await;
    assert_duplicate(second, first.as_str(), "report-7");
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 0, 0));

    // Still held while the job runs.
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs.len(), 1);
    let while_active =
        h.client.enqueue(q, job("report", 3).unique("report-7", UniqueMode::UntilFinished)).await;
    assert_duplicate(while_active, first.as_str(), "report-7");

    // Completion frees the key.
    h.client.complete(&got.jobs[0].lease, None).await.expect("complete");
    let exists: u64 = cmd(&mut conn, &["EXISTS", &lock]).await;
    assert_eq!(exists, 0, "completion releases an until_finished key");
    let third = h
        .client
        .enqueue(q, job("report", 4).unique("report-7", UniqueMode::UntilFinished))
        .await
        .expect("key free after completion");
    let holder: String = cmd(&mut conn, &["GET", &lock]).await;
    assert_eq!(holder, third.as_str());
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 1, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn unique_until_finished_is_freed_when_the_job_dies() {
    let h = Harness::start().await;
    let q = "uniq";
    let lock = key(q, "unique:k");
    let first = h.client.enqueue(q, job("j", 1).unique("k", UniqueMode::UntilFinished)).await.expect("first");
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs[0].lease.job_id, first);
    h.client.fail(&got.jobs[0].lease, &Failure::permanent("bad input")).await.expect("fail");
    assert_eq!(h.client.get_job(q, &first).await.expect("get").state, JobState::Dead);

    let mut conn = h.raw().await;
    let exists: u64 = cmd(&mut conn, &["EXISTS", &lock]).await;
    assert_eq!(exists, 0, "death releases an until_finished key");
    let second = h.client.enqueue(q, job("j", 2).unique("k", UniqueMode::UntilFinished)).await.expect("free");
    let holder: String = cmd(&mut conn, &["GET", &lock]).await;
    assert_eq!(holder, second.as_str());
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 0, 1));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn unique_until_finished_backstop_starts_at_the_due_time() {
    let h = Harness::start().await;
    let id = h
        .client
        .enqueue("q", job("j", 1).delay(Duration::from_secs(600)).unique("k", UniqueMode::UntilFinished))
        .await
        .expect("enqueue");
    let mut conn = h.raw().await;
    let holder: String = cmd(&mut conn, &["GET", &key("q", "unique:k")]).await;
    assert_eq!(holder, id.as_str());
    let pttl: i64 = cmd(&mut conn, &["PTTL", &key("q", "unique:k")]).await;
    assert!(
        pttl > 86_400_000 + 590_000 && pttl <= 86_400_000 + 600_000,
        "backstop = delay + 24 h, got {pttl} ms"
    );
    let dup = h.client.enqueue("q", job("j", 2).unique("k", UniqueMode::UntilFinished)).await;
    assert_duplicate(dup, id.as_str(), "\"k\"");
    h.assert_sound("q").await;
}

#[tokio::test]
async fn unique_for_ttl_is_held_after_completion_until_it_expires() {
    let h = Harness::start().await;
    let q = "ttl";
    let lock = key(q, "unique:sync-user-1");
    let ttl = Duration::from_millis(300);
    let first =
        h.client.enqueue(q, job("sync", 1).unique("sync-user-1", UniqueMode::For(ttl))).await.expect("first");

    let mut conn = h.raw().await;
    let pttl: i64 = cmd(&mut conn, &["PTTL", &lock]).await;
    assert!(pttl > 0 && pttl <= 300, "the lock lives for the TTL, got {pttl} ms");
    let holder: String = cmd(&mut conn, &["GET", &lock]).await;
    assert_eq!(holder, first.as_str());

    // Completion does not release a TTL key.
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    h.client.complete(&got.jobs[0].lease, None).await.expect("complete");
    let exists: u64 = cmd(&mut conn, &["EXISTS", &lock]).await;
    let pttl_after: i64 = cmd(&mut conn, &["PTTL", &lock]).await;
    if pttl_after > 0 {
        assert_eq!(exists, 1);
        let dup = h.client.enqueue(q, job("sync", 2).unique("sync-user-1", UniqueMode::For(ttl))).await;
        assert_duplicate(dup, first.as_str(), "sync-user-1");
        assert_eq!(counts(&h, q).await, counts_of(0, 0, 0, 1, 0));
    }

    // After the TTL the key is free.
    let remaining: i64 = cmd(&mut conn, &["PTTL", &lock]).await;
    tokio::time::sleep(Duration::from_millis(remaining.max(0) as u64 + 30)).await;
    let exists: u64 = cmd(&mut conn, &["EXISTS", &lock]).await;
    assert_eq!(exists, 0, "the TTL key expired");
    let second = h
        .client
        .enqueue(q, job("sync", 3).unique("sync-user-1", UniqueMode::For(ttl)))
        .await
        .expect("key expired");
    let holder: String = cmd(&mut conn, &["GET", &lock]).await;
    assert_eq!(holder, second.as_str());
    let pttl: i64 = cmd(&mut conn, &["PTTL", &lock]).await;
    assert!(pttl > 0 && pttl <= 300, "{pttl}");
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 1, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn unique_keys_are_per_queue() {
    let h = Harness::start().await;
    h.client.enqueue("a", job("j", 1).unique("k", UniqueMode::UntilFinished)).await.expect("a");
    h.client.enqueue("b", job("j", 2).unique("k", UniqueMode::UntilFinished)).await.expect("b");
    h.assert_sound("a").await;
    h.assert_sound("b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_of_one_unique_key_create_exactly_one_job() {
    let h = Harness::start().await;
    let q = "race";
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for n in 0..20 {
        let client = h.client.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.enqueue(q, job("j", n).unique("only-one", UniqueMode::UntilFinished)).await
        }));
    }
    let mut created = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(id) => created.push(id),
            Err(Error::DuplicateJob { existing, .. }) => duplicates.push(existing),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one enqueue wins");
    assert_eq!(duplicates.len(), 19);
    assert!(
        duplicates.iter().all(|d| d == created[0].as_str()),
        "every loser names the winner: {duplicates:?}"
    );
    assert_eq!(counts(&h, q).await, counts_of(1, 0, 0, 0, 0));
    let mut conn = h.raw().await;
    let holder: String = cmd(&mut conn, &["GET", &key(q, "unique:only-one")]).await;
    assert_eq!(holder, created[0].as_str());
    h.assert_sound(q).await;
}

// ---------------------------------------------------------------------------
// Bulk
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bulk_enqueue_of_ten_thousand_jobs_keeps_fifo_order() {
    let h = Harness::start().await;
    let q = "bulk";
    let jobs: Vec<NewJob> = (0..10_000).map(|n| job("j", n)).collect();
    let outcomes = h.client.enqueue_bulk(q, jobs).await.expect("bulk");
    assert_eq!(outcomes.len(), 10_000);
    assert!(outcomes.iter().all(EnqueueOutcome::is_created), "every job is created");
    let ids: Vec<String> = outcomes.iter().map(|o| o.id().to_string()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10_000, "ids are distinct");
    assert_eq!(counts(&h, q).await, counts_of(10_000, 0, 0, 0, 0));
    let mut conn = h.raw().await;
    let enqueued: String = cmd(&mut conn, &["HGET", &key(q, "meta"), "enqueued"]).await;
    assert_eq!(enqueued, "10000");
    // Outcome i belongs to job i.
    for i in [0usize, 1, 999, 1_000, 9_999] {
        let stored = h.client.get_job(q, outcomes[i].id()).await.expect("get");
        assert_eq!(stored.payload_as::<serde_json::Value>().expect("json"), json!({ "n": i }));
    }
    h.assert_sound(q).await;

    let first = h.client.claim(q, &claim(5, "w1")).await.expect("claim");
    let first_ids: Vec<String> = first.jobs.iter().map(|j| j.lease.job_id.to_string()).collect();
    assert_eq!(first_ids, ids[..5], "the first claims return the first jobs enqueued");
    let rest = claim_all_ids(&h, q, 1_000).await;
    assert_eq!(rest, ids[5..], "claims return every job in enqueue order, across chunks");
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 10_000, 0, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn bulk_reports_duplicate_ids_and_creates_the_rest() {
    let h = Harness::start().await;
    let q = "bulkdup";
    let taken = JobId::new("pre-existing").expect("id");
    h.client.enqueue(q, NewJob::new("j", &json!("old")).expect("job").id(taken.clone())).await.expect("seed");
    let x = JobId::new("x").expect("id");
    let jobs = vec![
        NewJob::new("j", &json!("a")).expect("job").id(x.clone()),
        NewJob::new("j", &json!("b")).expect("job"),
        NewJob::new("j", &json!("c")).expect("job").id(x.clone()),
        NewJob::new("j", &json!("d")).expect("job").id(taken.clone()),
        NewJob::new("j", &json!("e")).expect("job"),
    ];
    let outcomes = h.client.enqueue_bulk(q, jobs).await.expect("bulk");
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], EnqueueOutcome::Created(x.clone()));
    assert!(outcomes[1].is_created());
    assert_eq!(
        outcomes[2],
        EnqueueOutcome::DuplicateId(x.clone()),
        "a repeat inside one bulk is a duplicate"
    );
    assert_eq!(outcomes[3], EnqueueOutcome::DuplicateId(taken.clone()));
    assert!(outcomes[4].is_created());

    assert_eq!(
        h.client.get_job(q, &x).await.expect("get").facts.payload,
        "\"a\"",
        "the first of the repeats wins"
    );
    assert_eq!(h.client.get_job(q, &taken).await.expect("get").facts.payload, "\"old\"");
    assert_eq!(counts(&h, q).await, counts_of(4, 0, 0, 0, 0));
    let ids = claim_all_ids(&h, q, 10).await;
    let expected: Vec<String> =
        [taken.as_str(), x.as_str(), outcomes[1].id().as_str(), outcomes[4].id().as_str()]
            .map(String::from)
            .into();
    assert_eq!(ids, expected);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn bulk_jobs_with_and_without_options_each_keep_their_own() {
    // Jobs travel with only the options they set, so one script call holds
    // groups of different lengths: each option must land on its own job.
    let h = Harness::start().await;
    let q = "bulkmixed";
    let jobs = vec![
        job("plain", 0),
        job("full", 1)
            .max_attempts(4)
            .timeout(Duration::from_secs(12))
            .backoff(backoff())
            .correlation_id("corr-1")
            .unique("full-1", UniqueMode::For(Duration::from_secs(60)))
            .delay(Duration::from_secs(600)),
        job("plain", 2),
        job("traced", 3).correlation_id("corr-3"),
    ];
    let outcomes = h.client.enqueue_bulk(q, jobs).await.expect("bulk");
    assert!(outcomes.iter().all(EnqueueOutcome::is_created), "{outcomes:?}");
    let stored = |i: usize| h.client.get_job(q, outcomes[i].id());

    for i in [0, 2] {
        let plain = stored(i).await.expect("get");
        assert_eq!(plain.payload_as::<serde_json::Value>().expect("json"), json!({ "n": i }));
        assert_eq!(plain.state, JobState::Ready);
        assert_eq!(plain.facts.max_attempts, 5, "a job without the option has the default budget");
        assert_eq!(
            (plain.facts.timeout, plain.facts.backoff, plain.facts.correlation_id, plain.unique_key),
            (None, None, None, None)
        );
    }
    let full = stored(1).await.expect("get");
    assert_eq!(full.payload_as::<serde_json::Value>().expect("json"), json!({ "n": 1 }));
    assert_eq!(full.state, JobState::Delayed);
    assert_eq!(full.facts.max_attempts, 4);
    assert_eq!(full.facts.timeout, Some(Duration::from_secs(12)));
    assert_eq!(full.facts.backoff, Some(backoff()));
    assert_eq!(full.facts.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(full.unique_key.as_deref(), Some("full-1"));
    let delay = ms(full.due_at.expect("due_at")) - ms(full.facts.created_at);
    assert_eq!(delay, 600_000, "the delay is the full job's own");
    let traced = stored(3).await.expect("get");
    assert_eq!(traced.facts.name, "traced");
    assert_eq!(traced.state, JobState::Ready);
    assert_eq!(traced.facts.correlation_id.as_deref(), Some("corr-3"));
    assert_eq!((traced.facts.max_attempts, traced.unique_key), (5, None));

    assert_eq!(counts(&h, q).await, counts_of(3, 1, 0, 0, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn bulk_reports_duplicate_unique_keys() {
    let h = Harness::start().await;
    let q = "bulkuniq";
    let jobs = vec![
        job("j", 1).unique("k", UniqueMode::UntilFinished),
        job("j", 2).unique("k", UniqueMode::UntilFinished),
        job("j", 3).unique("other", UniqueMode::For(Duration::from_secs(60))),
    ];
    let outcomes = h.client.enqueue_bulk(q, jobs).await.expect("bulk");
    assert!(outcomes[0].is_created());
    assert_eq!(outcomes[1], EnqueueOutcome::DuplicateUnique(outcomes[0].id().clone()));
    assert!(outcomes[2].is_created());
    assert_eq!(counts(&h, q).await, counts_of(2, 0, 0, 0, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn bulk_with_one_invalid_job_enqueues_nothing() {
    let h = Harness::start_with(|b| b.max_payload_bytes(1024)).await;
    let q = "bulkbad";

    let mut jobs: Vec<NewJob> = (0..5).map(|n| job("j", n)).collect();
    jobs.push(job("j", 5).priority(10));
    jobs.push(job("j", 6));
    let err = h.client.enqueue_bulk(q, jobs).await.expect_err("priority 10");
    assert!(matches!(err, Error::InvalidOption { option: "priority", .. }), "{err}");

    let mut jobs: Vec<NewJob> = (0..5).map(|n| job("j", n)).collect();
    jobs.push(NewJob::new("j", &"x".repeat(2_000)).expect("job"));
    let err = h.client.enqueue_bulk(q, jobs).await.expect_err("oversize");
    assert!(matches!(err, Error::PayloadTooLarge { limit: 1024, .. }), "{err}");

    // The bad job is in the second chunk: the first chunk must not be sent.
    let mut jobs: Vec<NewJob> = (0..1_500).map(|n| job("j", n)).collect();
    jobs[1_400] = job("bad name", 1_400);
    let err = h.client.enqueue_bulk(q, jobs).await.expect_err("bad name");
    assert!(matches!(err, Error::InvalidJobName { .. }), "{err}");

    assert_eq!(dbsize(&h).await, 0, "nothing reached Redis");
    assert_eq!(counts(&h, q).await, Counts::default());
    assert!(h.client.queues().await.expect("queues").is_empty(), "the queue was not even registered");
}

// ---------------------------------------------------------------------------
// Validation before anything reaches Redis
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_queue_names_are_rejected() {
    let h = Harness::start().await;
    let long = "q".repeat(101);
    for name in ["", "a b", "a{b}", "a}b", "tab\tq", "é", long.as_str()] {
        match h.client.enqueue(name, job("j", 1)).await {
            Err(Error::InvalidQueueName { name: rejected, reason }) => {
                assert_eq!(rejected, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: expected InvalidQueueName, got {other:?}"),
        }
        let bulk = h.client.enqueue_bulk(name, vec![job("j", 1)]).await;
        assert!(matches!(bulk, Err(Error::InvalidQueueName { .. })), "{name:?}: bulk {bulk:?}");
        let claimed = h.client.claim(name, &claim(1, "w1")).await;
        assert!(matches!(claimed, Err(Error::InvalidQueueName { .. })), "{name:?}: claim");
    }
    // The longest valid name works.
    let max = "q".repeat(100);
    h.client.enqueue(&max, job("j", 1)).await.expect("100 bytes is allowed");
    let mut conn = h.raw().await;
    let keys: Vec<String> = cmd(&mut conn, &["KEYS", "*"]).await;
    assert!(keys.iter().all(|k| k == "taskline:queues" || k.contains(&format!("{{{max}}}"))), "{keys:?}");
}

#[tokio::test]
async fn bulk_of_zero_jobs_still_validates_the_queue_name() {
    let h = Harness::start().await;
    let result = h.client.enqueue_bulk("a b", Vec::new()).await;
    assert!(
        matches!(result, Err(Error::InvalidQueueName { .. })),
        "an invalid queue name is an error whatever the batch size, got {result:?}"
    );
}

#[tokio::test]
async fn invalid_job_names_are_rejected() {
    let h = Harness::start().await;
    let long = "n".repeat(201);
    for name in ["", "two words", "tab\tname", "line\nbreak", "nul\0", long.as_str()] {
        match h.client.enqueue("q", NewJob::new(name, &json!({})).expect("job")).await {
            Err(Error::InvalidJobName { name: rejected, .. }) => assert_eq!(rejected, name),
            other => panic!("{name:?}: expected InvalidJobName, got {other:?}"),
        }
    }
    assert_eq!(dbsize(&h).await, 0, "nothing reached Redis");
    // Unicode and 200 bytes are fine.
    h.client.enqueue("q", NewJob::new("émail.envoyer", &json!({})).expect("job")).await.expect("unicode");
    h.client.enqueue("q", NewJob::new("n".repeat(200), &json!({})).expect("job")).await.expect("200 bytes");
    h.assert_sound("q").await;
}

#[tokio::test]
async fn invalid_job_ids_are_rejected_on_construction() {
    for id in ["", "has space", "line\nbreak"] {
        assert!(matches!(JobId::new(id), Err(Error::InvalidJobId { .. })), "{id:?}");
    }
    assert!(matches!(JobId::new("i".repeat(201)), Err(Error::InvalidJobId { .. })));
    assert!(JobId::new("i".repeat(200)).is_ok());
    assert!("order:42".parse::<JobId>().is_ok());
}

#[tokio::test]
async fn oversize_payload_is_rejected_with_size_limit_and_advice() {
    let h = Harness::start_with(|b| b.max_payload_bytes(1024)).await;
    // A JSON string of n chars is n + 2 bytes.
    let at_limit = NewJob::new("j", &"x".repeat(1022)).expect("job");
    assert_eq!(at_limit.payload_json().len(), 1024);
    let over = NewJob::new("j", &"x".repeat(1023)).expect("job");

    let err = h.client.enqueue("q", over).await.expect_err("over the limit");
    match &err {
        Error::PayloadTooLarge { what, size, limit } => {
            assert_eq!(*what, "payload");
            assert_eq!(*size, 1025);
            assert_eq!(*limit, 1024);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("1025") && message.contains("1024"), "{message}");
    assert!(message.contains("max_payload_bytes"), "says which option to raise: {message}");
    assert!(message.contains("enqueue a reference"), "says what to do: {message}");
    assert_eq!(dbsize(&h).await, 0, "nothing reached Redis");

    let id = h.client.enqueue("q", at_limit).await.expect("exactly at the limit is accepted");
    assert_eq!(h.client.get_job("q", &id).await.expect("get").facts.payload.len(), 1024);
    h.assert_sound("q").await;
}

#[tokio::test]
async fn out_of_range_options_are_rejected() {
    let h = Harness::start().await;
    let cases: Vec<(NewJob, &str)> = vec![
        (job("j", 1).priority(10), "priority"),
        (job("j", 1).priority(255), "priority"),
        (job("j", 1).max_attempts(0), "max_attempts"),
        (job("j", 1).unique("k", UniqueMode::For(Duration::ZERO)), "unique"),
        (job("j", 1).unique("", UniqueMode::UntilFinished), "unique key"),
        (job("j", 1).unique("k".repeat(201), UniqueMode::UntilFinished), "unique key"),
        (job("j", 1).correlation_id(""), "correlation id"),
        (job("j", 1).correlation_id("c".repeat(201)), "correlation id"),
        (job("j", 1).correlation_id("line\nbreak"), "correlation id"),
        (job("j", 1).backoff(Backoff { factor: 0.5, ..backoff() }), "backoff.factor"),
        (job("j", 1).backoff(Backoff { factor: f64::NAN, ..backoff() }), "backoff.factor"),
        (job("j", 1).backoff(Backoff { max: Duration::from_secs(1), ..backoff() }), "backoff.max"),
    ];
    for (bad, expected) in cases {
        match h.client.enqueue("q", bad).await {
            Err(Error::InvalidOption { option, reason }) => {
                assert_eq!(option, expected);
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidOption {expected}, got {other:?}"),
        }
    }
    assert_eq!(dbsize(&h).await, 0, "nothing reached Redis");
    // The edges of the ranges are fine.
    h.client.enqueue("q", job("j", 1).priority(9).max_attempts(1)).await.expect("priority 9, 1 attempt");
    h.assert_sound("q").await;
}

#[tokio::test]
async fn invalid_json_payloads_are_rejected() {
    let h = Harness::start().await;
    for text in ["{not json", "", "{\"a\":1", "[1,]", "nul"] {
        let err = NewJob::from_json("j", text).expect_err(text);
        assert!(matches!(err, Error::InvalidPayload(_)), "{text:?}: {err}");
    }
    // A value serde_json cannot serialize (a map with non-string keys).
    let mut bad = HashMap::new();
    bad.insert((1, 2), 3);
    let err = NewJob::new("j", &bad).expect_err("non-string keys");
    assert!(matches!(err, Error::InvalidPayload(_)), "{err}");

    let ok = NewJob::from_json("j", r#"  {"a": [1, 2]}  "#).expect("valid JSON text");
    let id = h.client.enqueue("q", ok).await.expect("enqueue");
    assert_eq!(
        h.client.get_job("q", &id).await.expect("get").payload_as::<serde_json::Value>().expect("json"),
        json!({"a": [1, 2]})
    );
    assert_eq!(counts(&h, "q").await.ready, 1);
    h.assert_sound("q").await;
}

// ---------------------------------------------------------------------------
// Priorities and claims
// ---------------------------------------------------------------------------

#[tokio::test]
async fn higher_priority_levels_are_claimed_first_fifo_within_a_level() {
    let h = Harness::start().await;
    let q = "prio";
    let mut by_level: HashMap<u8, Vec<String>> = HashMap::new();
    for round in 0..3 {
        for level in [0u8, 5, 9] {
            let id = h.client.enqueue(q, job("j", round).priority(level)).await.expect("enqueue");
            by_level.entry(level).or_default().push(id.to_string());
        }
    }
    let expected: Vec<String> = [9u8, 5, 0].iter().flat_map(|l| by_level[l].clone()).collect();
    // Batches of 4 cross level boundaries: 9 9 9 5 | 5 5 0 0 | 0.
    let mut claimed = Vec::new();
    for want in [4usize, 4, 1] {
        let got = h.client.claim(q, &claim(4, "w1")).await.expect("claim");
        assert_eq!(got.jobs.len(), want);
        claimed.extend(got.jobs.iter().map(|j| j.lease.job_id.to_string()));
        h.assert_sound(q).await;
    }
    assert_eq!(claimed, expected);
    let got = h.client.claim(q, &claim(4, "w1")).await.expect("claim");
    assert!(got.jobs.is_empty());
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 9, 0, 0));
    // Emptied levels are forgotten.
    let mut conn = h.raw().await;
    let levels: Vec<String> = cmd(&mut conn, &["ZRANGE", &key(q, "levels"), "0", "-1"]).await;
    assert!(levels.is_empty(), "{levels:?}");
}

#[tokio::test]
async fn a_new_higher_priority_job_overtakes_waiting_ones() {
    let h = Harness::start().await;
    let q = "prio2";
    let low: Vec<JobId> = {
        let mut v = Vec::new();
        for n in 0..3 {
            v.push(h.client.enqueue(q, job("j", n)).await.expect("enqueue"));
        }
        v
    };
    let first = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(first.jobs[0].lease.job_id, low[0]);
    let urgent = h.client.enqueue(q, job("j", 99).priority(3)).await.expect("urgent");
    let next = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(next.jobs[0].lease.job_id, urgent);
    let rest = claim_all_ids(&h, q, 10).await;
    assert_eq!(rest, vec![low[1].to_string(), low[2].to_string()]);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_delayed_job_keeps_its_priority_when_promoted() {
    let h = Harness::start().await;
    let q = "prio3";
    let low = h.client.enqueue(q, job("j", 0)).await.expect("low");
    let server_now = server_now_ms(&h).await;
    let urgent = h
        .client
        .enqueue(q, job("j", 1).priority(8).run_at(UNIX_EPOCH + Duration::from_millis(server_now + 150)))
        .await
        .expect("urgent");
    assert_eq!(h.client.get_job(q, &urgent).await.expect("get").state, JobState::Delayed);
    let now = server_now_ms(&h).await;
    tokio::time::sleep(Duration::from_millis((server_now + 150).saturating_sub(now) + 20)).await;
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs[0].lease.job_id, urgent, "promoted into level 8, ahead of level 0");
    assert_eq!(got.jobs[0].facts.priority, 8);
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs[0].lease.job_id, low);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn claim_batch_leases_distinct_tokens_with_deadlines_in_active() {
    let h = Harness::start().await;
    let q = "batch";
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(h.client.enqueue(q, job("j", n)).await.expect("enqueue"));
    }
    let before = server_now_ms(&h).await;
    let got = h.client.claim(q, &claim(3, "worker-a")).await.expect("claim");
    let after = server_now_ms(&h).await;
    assert_eq!(got.jobs.len(), 3);
    assert!(!got.paused);
    assert_eq!(got.jobs.iter().map(|j| j.lease.job_id.clone()).collect::<Vec<_>>(), ids[..3]);

    let tokens: HashSet<&str> = got.jobs.iter().map(|j| j.lease.token.as_str()).collect();
    assert_eq!(tokens.len(), 3, "each leased job has its own token");
    assert!(tokens.iter().all(|t| !t.is_empty()));
    for c in &got.jobs {
        assert_eq!(c.facts.attempt, 1);
        let deadline = ms(c.lease_deadline);
        assert!(
            deadline >= before + 30_000 && deadline <= after + 30_000,
            "deadline {deadline} is not now + 30 s (server clock {before}..{after})"
        );
        assert_eq!(
            zscore(&h, &key(q, "active"), c.lease.job_id.as_str()).await,
            Some(deadline),
            "active score = lease deadline ms"
        );
        let stored = h.client.get_job(q, &c.lease.job_id).await.expect("get");
        assert_eq!(stored.state, JobState::Active);
        assert_eq!(stored.facts.attempt, 1);
        assert_eq!(stored.worker.as_deref(), Some("worker-a"));
        let started = ms(stored.started_at.expect("started_at"));
        assert!(before <= started && started <= after);
    }
    // A second claim gets fresh tokens for the remaining jobs.
    assert_eq!(counts(&h, q).await, counts_of(2, 0, 3, 0, 0));
    let second = h.client.claim(q, &claim(3, "worker-b")).await.expect("claim");
    assert_eq!(second.jobs.len(), 2);
    assert!(second.jobs.iter().all(|j| !tokens.contains(j.lease.token.as_str())), "tokens are never reused");
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 5, 0, 0));
    h.assert_sound(q).await;
}

/// The i-th job of a claim gets the token "<call nonce>.<i>", past the
/// numbers the scripts keep written out (1 to 32) as well.
#[tokio::test]
async fn a_large_claim_numbers_its_tokens_one_to_n() {
    let h = Harness::start().await;
    let q = "batch-40";
    h.client.enqueue_bulk(q, (0..40).map(|n| job("j", n)).collect()).await.expect("bulk");
    let got = h.client.claim(q, &claim(40, "worker-a")).await.expect("claim");
    assert_eq!(got.jobs.len(), 40);
    let (nonce, _) = got.jobs[0].lease.token.rsplit_once('.').expect("nonce.i");
    let tokens: Vec<&str> = got.jobs.iter().map(|j| j.lease.token.as_str()).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("{nonce}.{i}")).collect();
    assert_eq!(tokens, expected);
    for job in &got.jobs {
        assert_eq!(
            h.client.complete(&job.lease, None).await.expect("complete"),
            taskline::Completion::Completed
        );
    }
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 0, 40, 0));
}

#[tokio::test]
async fn claim_of_an_empty_or_unknown_queue_returns_nothing() {
    let h = Harness::start().await;
    let got = h.client.claim("nobody-here", &claim(5, "w1")).await.expect("claim");
    assert!(got.jobs.is_empty());
    assert!(!got.paused);
    assert_eq!(got.next_due, None);
    h.client.enqueue("q", job("j", 1)).await.expect("enqueue");
    let zero = h.client.claim("q", &claim(0, "w1")).await.expect("claim 0");
    assert!(zero.jobs.is_empty(), "count 0 leases nothing");
    assert_eq!(counts(&h, "q").await, counts_of(1, 0, 0, 0, 0));
    h.assert_sound("q").await;
}

#[tokio::test]
async fn pause_stops_claims_but_not_enqueues() {
    let h = Harness::start().await;
    let q = "pausable";
    let first = h.client.enqueue(q, job("j", 1)).await.expect("enqueue");
    h.client.pause(q).await.expect("pause");
    assert!(counts(&h, q).await.paused);

    let got = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    assert!(got.paused, "claim reports the pause");
    assert!(got.jobs.is_empty(), "a paused queue leases nothing");
    let second = h.client.enqueue(q, job("j", 2)).await.expect("enqueue works while paused");
    assert_eq!(counts(&h, q).await, Counts { ready: 2, paused: true, ..Counts::default() });
    assert_eq!(h.client.get_job(q, &first).await.expect("get").facts.attempt, 0);
    h.assert_sound(q).await;

    h.client.resume(q).await.expect("resume");
    assert!(!counts(&h, q).await.paused);
    let got = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    assert!(!got.paused);
    assert_eq!(got.jobs.iter().map(|j| j.lease.job_id.clone()).collect::<Vec<_>>(), vec![first, second]);
    assert_eq!(counts(&h, q).await, counts_of(0, 0, 2, 0, 0));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn claim_reports_the_earliest_delayed_due_time() {
    let h = Harness::start().await;
    let q = "due";
    h.client.enqueue(q, job("j", 0)).await.expect("ready job");
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(got.next_due, None, "no delayed job: no next_due");

    let later = h.client.enqueue(q, job("j", 1).delay(Duration::from_secs(120))).await.expect("enqueue");
    let sooner = h.client.enqueue(q, job("j", 2).delay(Duration::from_secs(60))).await.expect("enqueue");
    let sooner_due = h.client.get_job(q, &sooner).await.expect("get").due_at.expect("due");
    let later_due = h.client.get_job(q, &later).await.expect("get").due_at.expect("due");
    assert!(sooner_due < later_due);

    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert!(got.jobs.is_empty());
    assert_eq!(got.next_due, Some(sooner_due), "next_due is the earliest delayed job");

    // Also while paused, so an idle worker knows when to look again.
    h.client.pause(q).await.expect("pause");
    let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    assert!(got.paused);
    assert_eq!(got.next_due, Some(sooner_due));
    h.assert_sound(q).await;
}

// ---------------------------------------------------------------------------
// Events and the registry
// ---------------------------------------------------------------------------

#[tokio::test]
async fn enqueue_and_claim_emit_events() {
    let h = Harness::start().await;
    let q = "ev";
    let id = h.client.enqueue(q, job("notify", 1).correlation_id("trace-9")).await.expect("enqueue");
    let delayed =
        h.client.enqueue(q, job("notify", 2).delay(Duration::from_secs(60))).await.expect("enqueue");
    h.client.claim(q, &claim(1, "worker-7")).await.expect("claim");

    let all = events(&h, q).await;
    let find = |event: &str, job_id: &JobId| {
        all.iter()
            .find(|e| {
                e.get("event").map(String::as_str) == Some(event) && e.get("id") == Some(&job_id.to_string())
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {event} event for {job_id} in {all:?}"))
    };
    let enq = find("enqueued", &id);
    assert_eq!(enq.get("name").map(String::as_str), Some("notify"));
    assert_eq!(enq.get("state").map(String::as_str), Some("ready"));
    assert_eq!(enq.get("correlation_id").map(String::as_str), Some("trace-9"));
    let enq_delayed = find("enqueued", &delayed);
    assert_eq!(enq_delayed.get("state").map(String::as_str), Some("delayed"));
    let claimed = find("claimed", &id);
    assert_eq!(claimed.get("worker").map(String::as_str), Some("worker-7"));
    assert_eq!(claimed.get("attempt").map(String::as_str), Some("1"));
    assert_eq!(claimed.get("correlation_id").map(String::as_str), Some("trace-9"));
    // In order: both enqueues, then the claim.
    let kinds: Vec<&str> = all.iter().filter_map(|e| e.get("event").map(String::as_str)).collect();
    assert_eq!(kinds, vec!["enqueued", "enqueued", "claimed"]);
    h.assert_sound(q).await;
}

/// An entry lists at most 100 jobs: a bulk enqueue of 250 writes three, and
/// each of them carries the shared fields (`event`, `state`), not only the
/// first.
#[tokio::test]
async fn a_large_batch_splits_into_entries_that_each_carry_the_shared_fields() {
    let h = Harness::start().await;
    let q = "ev-split";
    let ids: Vec<String> = h
        .client
        .enqueue_bulk(q, (0..250).map(|n| job("bulk", n)).collect())
        .await
        .expect("bulk")
        .into_iter()
        .map(|outcome| outcome.id().to_string())
        .collect();
    let mut conn = h.raw().await;
    let entries: u64 = cmd(&mut conn, &["XLEN", &key(q, "events")]).await;
    assert_eq!(entries, 3, "100 + 100 + 50 jobs");
    let all = events(&h, q).await;
    let listed: Vec<String> = all.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(listed, ids);
    for e in &all {
        assert_eq!(
            (e["event"].as_str(), e["state"].as_str(), e["name"].as_str(), e["attempt"].as_str()),
            ("enqueued", "ready", "bulk", "0")
        );
    }
}

/// The entry lists the jobs in claim order, a correlation id with the job
/// that has one (lua/includes/events.lua).
#[tokio::test]
async fn a_claim_records_all_its_jobs_in_one_stream_entry() {
    let h = Harness::start().await;
    let q = "ev-batch";
    let ids = h
        .client
        .enqueue_bulk(q, vec![job("a", 1), job("b", 2).correlation_id("trace-2"), job("c", 3)])
        .await
        .expect("bulk")
        .into_iter()
        .map(|outcome| outcome.id().to_string())
        .collect::<Vec<_>>();
    let mut conn = h.raw().await;
    let before: u64 = cmd(&mut conn, &["XLEN", &key(q, "events")]).await;
    let got = h.client.claim(q, &claim(10, "worker-3")).await.expect("claim");
    assert_eq!(got.jobs.len(), 3);
    let after: u64 = cmd(&mut conn, &["XLEN", &key(q, "events")]).await;
    assert_eq!(after - before, 1, "one entry for the whole claim");

    let claimed: Vec<(String, String, Option<String>, Option<String>)> =
        stream_events(&mut conn, &key(q, "events"))
            .await
            .into_iter()
            .filter(|e| e.event == "claimed")
            .map(|e| (e.job_id, e.name, e.correlation_id, e.extra.get("worker").cloned()))
            .collect();
    let worker = Some("worker-3".to_string());
    assert_eq!(
        claimed,
        vec![
            (ids[0].clone(), "a".to_string(), None, worker.clone()),
            (ids[1].clone(), "b".to_string(), Some("trace-2".to_string()), worker.clone()),
            (ids[2].clone(), "c".to_string(), None, worker),
        ]
    );

    // The enqueued and completed entries carry the correlation id too.
    for job in &got.jobs {
        assert_eq!(
            h.client.complete(&job.lease, None).await.expect("complete"),
            taskline::Completion::Completed
        );
    }
    let all = stream_events(&mut conn, &key(q, "events")).await;
    let traced = |event: &str| -> Vec<(String, Option<String>)> {
        all.iter()
            .filter(|e| e.event == event)
            .map(|e| (e.job_id.clone(), e.correlation_id.clone()))
            .collect()
    };
    let expected =
        vec![(ids[0].clone(), None), (ids[1].clone(), Some("trace-2".to_string())), (ids[2].clone(), None)];
    assert_eq!(traced("enqueued"), expected);
    assert_eq!(traced("completed"), expected);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn events_max_len_zero_writes_no_stream() {
    let h = Harness::start_with(|b| b.events_max_len(0)).await;
    let q = "quiet";
    h.client.enqueue(q, job("j", 1)).await.expect("enqueue");
    h.client
        .enqueue_bulk(q, vec![job("j", 2), job("j", 3).delay(Duration::from_millis(1))])
        .await
        .expect("bulk");
    let got = h.client.claim(q, &claim(10, "w1")).await.expect("claim");
    assert!(!got.jobs.is_empty());
    let mut conn = h.raw().await;
    let exists: u64 = cmd(&mut conn, &["EXISTS", &key(q, "events")]).await;
    assert_eq!(exists, 0, "no event stream when events are disabled");
    h.assert_sound(q).await;
}

/// `n` plain jobs, each waiting for the previous one: one event per entry.
async fn enqueue_one_at_a_time(h: &Harness, q: &str, n: u64) {
    for i in 0..n {
        h.client.enqueue(q, job("j", i)).await.expect("enqueue");
    }
}

#[tokio::test]
async fn event_stream_is_capped() {
    let h = Harness::start_with(|b| b.events_max_len(100)).await;
    let q = "capped";
    enqueue_one_at_a_time(&h, q, 500).await;
    let mut conn = h.raw().await;
    let len: u64 = cmd(&mut conn, &["XLEN", &key(q, "events")]).await;
    // MAXLEN ~ trims whole radix-tree nodes (100 entries by default), so the
    // stream may exceed the cap by up to one node, never by much more.
    assert!((100..=300).contains(&len), "stream length {len} is not bounded near 100");
    // In bulk: entries of up to 100 jobs each, and the bound still counts
    // events.
    h.client.enqueue_bulk(q, (0..20_000).map(|n| job("j", n)).collect()).await.expect("bulk");
    let events = stream_events(&mut conn, &key(q, "events")).await.len();
    assert!((100..=400).contains(&events), "{events} events are not bounded near 100");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn a_large_entry_does_not_trim_away_a_stream_of_small_ones() {
    let h = Harness::start_with(|b| b.events_max_len(1_000)).await;
    let q = "mixed";
    enqueue_one_at_a_time(&h, q, 1_500).await;
    // One entry of 100 jobs: trimming to 1,000 / 100 entries would leave
    // about one radix-tree node of single-job entries.
    h.client.enqueue_bulk(q, (0..100).map(|n| job("j", n)).collect()).await.expect("bulk");
    let mut conn = h.raw().await;
    let events = stream_events(&mut conn, &key(q, "events")).await.len();
    assert!((500..=1_500).contains(&events), "{events} events are not kept near 1,000");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn queues_lists_every_queue_enqueued_to() {
    let h = Harness::start().await;
    assert!(h.client.queues().await.expect("queues").is_empty());
    h.client.enqueue("reports", job("j", 1)).await.expect("enqueue");
    h.client.enqueue("emails", job("j", 2)).await.expect("enqueue");
    h.client.enqueue("emails", job("j", 3)).await.expect("enqueue");
    h.client.enqueue_bulk("billing.v2", vec![job("j", 4)]).await.expect("bulk");
    h.client.enqueue("bad name", job("j", 5)).await.expect_err("invalid");
    let expected = vec!["billing.v2".to_string(), "emails".to_string(), "reports".to_string()];
    assert_eq!(h.client.queues().await.expect("queues"), expected, "sorted, each once, invalid ones absent");

    let mut conn = h.raw().await;
    let mut members: Vec<String> = cmd(&mut conn, &["SMEMBERS", "taskline:queues"]).await;
    members.sort();
    assert_eq!(members, expected);

    // Another client sees the same registry.
    let other = taskline::Client::connect(&h.server.url()).await.expect("connect");
    assert_eq!(other.queues().await.expect("queues"), expected);
    for q in &expected {
        h.assert_sound(q).await;
    }
}

// ---------------------------------------------------------------------------
// Time values outside what Redis can store (regressions of fixed bugs)
// ---------------------------------------------------------------------------

/// A time option that cannot be stored must be refused before Redis
/// (`InvalidOption`), or the job must be stored readably and scheduled in
/// the future: `get_job` works, it is delayed, not claimable, and `claim`
/// reports it in `next_due`.
async fn assert_rejected_or_scheduled(h: &Harness, q: &str, result: taskline::Result<JobId>) {
    match result {
        Err(Error::InvalidOption { .. }) => {
            assert_eq!(dbsize(h).await, 0, "a rejected job leaves nothing behind");
        }
        Ok(id) => {
            let stored = h.client.get_job(q, &id).await.expect("a stored job must be readable");
            assert_eq!(stored.state, JobState::Delayed, "a far-future job must not run now");
            let got = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
            assert!(got.jobs.is_empty());
            assert!(got.next_due.is_some(), "a delayed job must show in next_due");
            h.assert_sound(q).await;
        }
        Err(other) => panic!("expected InvalidOption or a scheduled job, got {other:?}"),
    }
}

#[tokio::test]
async fn bulk_with_an_unstorable_unique_ttl_enqueues_nothing() {
    let h = Harness::start().await;
    let jobs = vec![job("j", 1), job("j", 2), job("j", 3).unique("k", UniqueMode::For(Duration::MAX))];
    let result = h.client.enqueue_bulk("q", jobs).await;
    assert!(matches!(result, Err(Error::InvalidOption { .. })), "expected InvalidOption, got {result:?}");
    assert_eq!(counts(&h, "q").await, Counts::default(), "one bad job enqueues nothing");
    assert_eq!(dbsize(&h).await, 0);
}

#[tokio::test]
async fn huge_delay_with_an_until_finished_key_does_not_panic() {
    let h = Harness::start().await;
    let client = h.client.clone();
    let joined = tokio::spawn(async move {
        client.enqueue("q", job("j", 1).delay(Duration::MAX).unique("k", UniqueMode::UntilFinished)).await
    })
    .await;
    let result = joined.unwrap_or_else(|e| panic!("enqueue panicked: {e}"));
    assert_rejected_or_scheduled(&h, "q", result).await;
}

#[tokio::test]
async fn huge_delay_is_rejected_or_stored_readably() {
    let h = Harness::start().await;
    let result = h.client.enqueue("q", job("j", 1).delay(Duration::MAX)).await;
    assert_rejected_or_scheduled(&h, "q", result).await;
}

#[tokio::test]
async fn run_at_beyond_the_millisecond_range_does_not_run_at_once() {
    let h = Harness::start().await;
    let far = UNIX_EPOCH + Duration::from_millis(u64::MAX) + Duration::from_secs(1);
    let result = h.client.enqueue("q", job("j", 1).run_at(far)).await;
    assert_rejected_or_scheduled(&h, "q", result).await;
}

#[tokio::test]
async fn listing_ready_jobs_pages_in_claim_order_across_levels() {
    let h = Harness::start().await;
    let q = "paging";
    let mut expected = Vec::new();
    for level in [9u8, 5, 0] {
        for i in 0..4 {
            let id = h
                .client
                .enqueue(
                    q,
                    NewJob::new("p", &json!({ "level": level, "i": i })).expect("job").priority(level),
                )
                .await
                .expect("enqueue");
            expected.push(id);
        }
    }
    for offset in 0..13u64 {
        for limit in 1..6u64 {
            let page = h.client.list_jobs(q, JobState::Ready, offset, limit).await.expect("list");
            let from = (offset as usize).min(expected.len());
            let to = (from + limit as usize).min(expected.len());
            assert_eq!(page, expected[from..to].to_vec(), "offset {offset}, limit {limit}");
        }
    }
    let claimed: Vec<JobId> = h
        .client
        .claim(q, &claim(12, "w"))
        .await
        .expect("claim")
        .jobs
        .into_iter()
        .map(|j| j.lease.job_id)
        .collect();
    assert_eq!(claimed, expected, "the listing order is the claim order");
}
