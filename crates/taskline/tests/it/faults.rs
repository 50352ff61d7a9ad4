//! Real failures: a flushed script cache, a crashed and restarted Redis,
//! dropped connections, a Redis that is down or frozen, and garbage in the
//! keyspace. The client must recover by itself, every outcome must be safe
//! to resend, and the invariant checker must see what is broken.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{
    ClaimOptions, Client, ClientOptions, Completion, Error, FailOutcome, Failure, JobId, JobState, Lease,
    NewJob, Retention, Violation,
};
use taskline_testkit::RedisServer;

use crate::support::{Harness, assert_sound, claim, cmd, stream_events};

/// How long the client may take to come back after a restart or a kill.
const RECOVERY: Duration = Duration::from_secs(5);
/// The short timeouts of the clients that face a dead or frozen Redis.
const SHORT: Duration = Duration::from_millis(500);

/// A client with short response and connection timeouts.
async fn short_timeout_client(server: &RedisServer) -> Client {
    Client::builder(&server.url())
        .options(ClientOptions { response_timeout: SHORT, connection_timeout: SHORT, ..Default::default() })
        .connect()
        .await
        .expect("connect client")
}

/// A server whose data survives `restart()` (SIGKILL + start again).
/// With `appendfsync no` Redis hands every AOF write to the kernel before
/// it replies and never waits for the disk, so a killed process loses
/// nothing (only a machine crash would). `everysec` is not enough: while a
/// background fsync runs, Redis postpones the write for up to two seconds,
/// and a SIGKILL then loses acknowledged writes (seen on a busy CI disk).
/// `always` makes every write wait for the disk, which there outlasted the
/// 0.5 s response timeout these tests use.
fn durable_server() -> RedisServer {
    RedisServer::builder().appendonly(true).appendfsync("no").start()
}

fn job(n: u32) -> NewJob {
    NewJob::new("work", &json!({ "n": n })).expect("job")
}

fn job_with_id(id: &str) -> NewJob {
    job(0).id(JobId::new(id).expect("job id"))
}

/// Runs `op` until it returns something other than a connection error,
/// as a worker does after an ambiguous failure; panics after `RECOVERY`.
async fn until_answered<T, F, Fut>(what: &str, mut op: F) -> taskline::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskline::Result<T>>,
{
    let deadline = Instant::now() + RECOVERY;
    loop {
        match op().await {
            Err(e) if e.is_connection_error() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.is_connection_error() => panic!("{what}: still failing after {RECOVERY:?}: {e}"),
            other => return other,
        }
    }
}

/// Number of scripts in the server's script cache.
async fn cached_scripts(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = cmd(conn, &["INFO", "memory"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
        .unwrap_or_else(|| panic!("INFO memory has no number_of_cached_scripts:\n{info}"))
        .trim()
        .parse()
        .expect("number")
}

/// A counter of the queue's `meta` hash (0 when unset).
async fn meta_counter(conn: &mut redis::aio::MultiplexedConnection, queue: &str, field: &str) -> i64 {
    let v: Option<i64> = cmd(conn, &["HGET", &format!("taskline:{{{queue}}}:meta"), field]).await;
    v.unwrap_or(0)
}

/// Every event of the queue's stream as (event, id).
async fn events(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<(String, String)> {
    let events = stream_events(conn, &format!("taskline:{{{queue}}}:events")).await;
    events.into_iter().map(|e| (e.event, e.job_id)).collect()
}

/// Every structure of `queue` that lists `id`.
async fn places_of(conn: &mut redis::aio::MultiplexedConnection, queue: &str, id: &str) -> Vec<String> {
    let stem = format!("taskline:{{{queue}}}:");
    let mut places = Vec::new();
    for level in 0..=taskline::MAX_PRIORITY {
        let ids: Vec<String> = cmd(conn, &["LRANGE", &format!("{stem}ready:{level}"), "0", "-1"]).await;
        places.extend(ids.iter().filter(|i| *i == id).map(|_| "ready".to_string()));
    }
    for zset in ["delayed", "active", "completed", "dead"] {
        let score: Option<f64> = cmd(conn, &["ZSCORE", &format!("{stem}{zset}"), id]).await;
        if score.is_some() {
            places.push(zset.to_string());
        }
    }
    places
}

/// Each id has a job hash and is listed in exactly the one structure its
/// state names.
async fn assert_each_in_one_place(
    client: &Client,
    conn: &mut redis::aio::MultiplexedConnection,
    q: &str,
    ids: &[JobId],
) {
    for id in ids {
        let job = client.get_job(q, id).await.unwrap_or_else(|e| panic!("job {id} lost: {e}"));
        let places = places_of(conn, q, id.as_str()).await;
        assert_eq!(places, [job.state.as_str()], "job {id} (state {}) is listed in {places:?}", job.state);
    }
}

/// Runs `fut` and measures how long it took.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = fut.await;
    (result, started.elapsed())
}

fn lease_of(claimed: &taskline::Claim) -> Vec<Lease> {
    claimed.jobs.iter().map(|j| j.lease.clone()).collect()
}

// ---------------------------------------------------------------------------
// NOSCRIPT
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_operation_reloads_its_script_after_script_flush() {
    let h = Harness::start().await;
    let c = &h.client;
    let q = "noscript";
    let mut raw = h.raw().await;

    // Flushes the cache, runs one operation, and proves the script was
    // missing and then loaded again by the client.
    macro_rules! after_flush {
        ($what:literal, $op:expr) => {{
            let _: () = cmd(&mut raw, &["SCRIPT", "FLUSH"]).await;
            assert_eq!(cached_scripts(&mut raw).await, 0, "SCRIPT FLUSH empties the cache");
            let out = $op.await.unwrap_or_else(|e| panic!("{} after SCRIPT FLUSH: {e}", $what));
            assert!(cached_scripts(&mut raw).await >= 1, "{} did not load its script", $what);
            out
        }};
    }

    let first = after_flush!("enqueue", c.enqueue(q, job(1)));
    let bulk = after_flush!("enqueue_bulk", c.enqueue_bulk(q, (2..=6).map(job).collect()));
    assert!(bulk.iter().all(|o| o.is_created()));
    let claimed = after_flush!("claim", c.claim(q, &claim(3, "w1")));
    assert_eq!(claimed.jobs.len(), 3);
    assert_eq!(claimed.jobs[0].lease.job_id, first);
    let leases = lease_of(&claimed);

    let done = after_flush!("complete", c.complete(&leases[0], Some(&json!({"ok": true}))));
    assert_eq!(done, Completion::Completed);
    let (done, next) =
        after_flush!("complete_and_claim", c.complete_and_claim(&leases[1], None, &claim(1, "w1")));
    assert_eq!(done, Completion::Completed);
    assert_eq!(next.jobs.len(), 1);

    let extended = after_flush!(
        "extend",
        c.extend(&[leases[2].clone(), next.jobs[0].lease.clone()], Duration::from_secs(60))
    );
    assert!(extended.lost.is_empty(), "{:?}", extended.lost);
    assert!(extended.deadline.is_some());

    let outcome =
        after_flush!("fail transient", c.fail(&leases[2], &Failure::transient("boom", Duration::ZERO)));
    assert!(matches!(outcome, FailOutcome::Retrying { .. }), "{outcome:?}");
    let outcome =
        after_flush!("fail permanent", c.fail(&next.jobs[0].lease, &Failure::permanent("bad input")));
    assert!(matches!(outcome, FailOutcome::Dead { .. }), "{outcome:?}");
    let dead_id = next.jobs[0].lease.job_id.clone();

    let claimed = after_flush!("claim", c.claim(q, &claim(1, "w1")));
    let released = after_flush!("release", c.release(&claimed.jobs[0].lease, None));
    assert!(released.now);

    let short = ClaimOptions { count: 1, lease: Duration::from_millis(10), worker: "w2".into() };
    let claimed = after_flush!("claim", c.claim(q, &short));
    assert_eq!(claimed.jobs.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reaped = after_flush!("reap", c.reap(q, 10, Duration::ZERO));
    assert_eq!(reaped.ids, [claimed.jobs[0].lease.job_id.clone()]);

    let replayed = after_flush!("replay", c.replay(q, std::slice::from_ref(&dead_id)));
    assert_eq!(replayed.replayed, 1);
    let counts = after_flush!("counts", c.counts(q));
    assert_eq!((counts.ready, counts.active, counts.completed, counts.dead), (4, 0, 2, 0), "{counts:?}");
    h.assert_sound(q).await;
}

// ---------------------------------------------------------------------------
// Restart with AOF
// ---------------------------------------------------------------------------

#[tokio::test]
async fn same_client_keeps_working_across_a_redis_crash_and_restart() {
    let server = durable_server();
    let client = Client::builder(&server.url()).response_timeout(SHORT).connect().await.expect("connect");
    let q = "restart";
    let ids: Vec<JobId> = {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(client.enqueue(q, job(n)).await.expect("enqueue"));
        }
        ids
    };
    let claimed = client.claim(q, &claim(2, "w1")).await.expect("claim");
    assert_eq!(claimed.jobs.len(), 2);
    let leases = lease_of(&claimed);

    server.restart();
    assert_eq!(
        server.info_field("memory", "number_of_cached_scripts").as_deref(),
        Some("0"),
        "a restart empties the script cache"
    );

    // The same client, no reconnect by the test: it recovers by itself.
    let counts = until_answered("counts after restart", || client.counts(q)).await.expect("counts");
    assert_eq!((counts.ready, counts.active, counts.delayed, counts.completed), (3, 2, 0, 0), "{counts:?}");
    for (i, id) in ids.iter().enumerate() {
        let job = client.get_job(q, id).await.expect("job survived the restart");
        let expected = if i < 2 { JobState::Active } else { JobState::Ready };
        assert_eq!(job.state, expected, "job {i}");
    }
    let held = client.get_job(q, &leases[0].job_id).await.expect("job");
    assert_eq!((held.facts.attempt, held.worker.as_deref()), (1, Some("w1")));

    // The leases taken before the crash still hold.
    let extended = client.extend(&leases, Duration::from_secs(30)).await.expect("extend");
    assert!(extended.lost.is_empty(), "leases lost across the restart: {:?}", extended.lost);
    for lease in &leases {
        assert_eq!(client.complete(lease, None).await.expect("complete"), Completion::Completed);
    }
    let rest = client.claim(q, &claim(10, "w2")).await.expect("claim");
    assert_eq!(rest.jobs.len(), 3);
    for j in &rest.jobs {
        assert_eq!(j.facts.attempt, 1);
        client.complete(&j.lease, None).await.expect("complete");
    }
    let counts = client.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.active, counts.completed), (0, 0, 5), "{counts:?}");
    assert_sound(&client, q).await;
}

// ---------------------------------------------------------------------------
// Lost connections: resending an outcome is safe
// ---------------------------------------------------------------------------

/// Kills every normal client connection except the caller's own.
async fn kill_client_connections(server: &RedisServer) {
    let mut raw = server.connection().await;
    let killed: i64 = cmd(&mut raw, &["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(killed >= 1, "CLIENT KILL found no client connection to kill");
}

#[tokio::test]
async fn resent_complete_after_a_dropped_connection_is_already_completed() {
    let h = Harness::start().await;
    let q = "lost-complete";
    let id = h.client.enqueue(q, job(1)).await.expect("enqueue");
    let lease = h.client.claim(q, &claim(1, "w1")).await.expect("claim").jobs.remove(0).lease;
    assert_eq!(h.client.complete(&lease, Some(&json!(42))).await.expect("complete"), Completion::Completed);

    kill_client_connections(&h.server).await;
    let result = json!(42);
    let resent = until_answered("resend complete", || h.client.complete(&lease, Some(&result))).await;
    assert_eq!(resent.expect("resend"), Completion::AlreadyCompleted);

    let mut raw = h.raw().await;
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 1, "one completion recorded");
    let completed = events(&mut raw, q).await.into_iter().filter(|(e, _)| e == "completed").count();
    assert_eq!(completed, 1, "one completed event");
    let job = h.client.get_job(q, &id).await.expect("job");
    assert_eq!((job.state, job.result.as_deref()), (JobState::Completed, Some("42")));
    assert_eq!(h.client.counts(q).await.expect("counts").completed, 1);
    h.assert_sound(q).await;
}

#[tokio::test]
async fn resent_fail_after_a_dropped_connection_records_one_error() {
    let h = Harness::start().await;
    let q = "lost-fail";
    let ids =
        [h.client.enqueue(q, job(1)).await.expect("enqueue"), h.client.enqueue(q, job(2)).await.expect("e")];
    let leases = lease_of(&h.client.claim(q, &claim(2, "w1")).await.expect("claim"));
    let retry = Failure::transient("timeout", Duration::from_secs(60));
    let first_retry = h.client.fail(&leases[0], &retry).await.expect("fail");
    let permanent = Failure::permanent("bad input").with_reason("invalid_payload");
    let first_dead = h.client.fail(&leases[1], &permanent).await.expect("fail");

    kill_client_connections(&h.server).await;
    let resent_retry =
        until_answered("resend fail", || h.client.fail(&leases[0], &retry)).await.expect("resend");
    let resent_dead =
        until_answered("resend fail", || h.client.fail(&leases[1], &permanent)).await.expect("resend");
    assert_eq!(resent_retry, first_retry, "a resend answers the first outcome");
    assert_eq!(resent_dead, first_dead, "a resend answers the first outcome");
    assert!(matches!(&resent_dead, FailOutcome::Dead { reason, .. } if reason == "invalid_payload"));

    for id in &ids {
        let job = h.client.get_job(q, id).await.expect("job");
        assert_eq!(job.errors.len(), 1, "job {id} records one error: {:?}", job.errors);
        assert_eq!(job.facts.attempt, 1);
    }
    let mut raw = h.raw().await;
    assert_eq!(meta_counter(&mut raw, q, "retried").await, 1);
    assert_eq!(meta_counter(&mut raw, q, "dead").await, 1);
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.delayed, counts.dead, counts.active), (1, 1, 0), "{counts:?}");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn resent_release_after_a_dropped_connection_releases_once() {
    let h = Harness::start().await;
    let q = "lost-release";
    let ids =
        [h.client.enqueue(q, job(1)).await.expect("enqueue"), h.client.enqueue(q, job(2)).await.expect("e")];
    let leases = lease_of(&h.client.claim(q, &claim(2, "w1")).await.expect("claim"));
    let now = h.client.release(&leases[0], None).await.expect("release");
    let later = h.client.release(&leases[1], Some(Duration::from_secs(60))).await.expect("release");
    assert!(now.now && later.now);
    assert_eq!((now.releases, later.releases), (1, 1));

    kill_client_connections(&h.server).await;
    for lease in &leases {
        let resent =
            until_answered("resend release", || h.client.release(lease, None)).await.expect("resend");
        assert!(!resent.now, "a resend is reported as such");
        assert_eq!(resent.releases, 1, "released once");
    }
    let mut raw = h.raw().await;
    assert_eq!(meta_counter(&mut raw, q, "released").await, 2);
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.delayed, counts.active), (1, 1, 0), "{counts:?}");
    for id in &ids {
        let job = h.client.get_job(q, id).await.expect("job");
        assert_eq!((job.facts.attempt, job.facts.releases), (0, 1), "release spends no attempt, once");
    }
    // The released job is claimable again, as attempt 1.
    let again = h.client.claim(q, &claim(5, "w2")).await.expect("claim");
    assert_eq!(again.jobs.len(), 1);
    assert_eq!((again.jobs[0].facts.attempt, again.jobs[0].facts.releases), (1, 1));
    h.assert_sound(q).await;
}

#[tokio::test]
async fn resent_complete_is_already_completed_even_when_retention_deleted_the_job() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 0, max_age: None })).await;
    let q = "lost-complete-keep0";
    h.client.enqueue(q, job(1)).await.expect("enqueue");
    let lease = h.client.claim(q, &claim(1, "w1")).await.expect("claim").jobs.remove(0).lease;
    assert_eq!(h.client.complete(&lease, None).await.expect("complete"), Completion::Completed);

    kill_client_connections(&h.server).await;
    let resent = until_answered("resend complete", || h.client.complete(&lease, None)).await;
    assert!(
        matches!(resent, Ok(Completion::AlreadyCompleted)),
        "the worker cannot tell a lost reply from a missing job: {resent:?}"
    );
    let mut raw = h.raw().await;
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 1);
    // The marker answers only the token that completed the job.
    let stranger = Lease { token: "not-the-token".into(), ..lease.clone() };
    let err = h.client.complete(&stranger, None).await.expect_err("another token");
    assert!(matches!(err, Error::JobNotFound { .. } | Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 1);
}

/// Once retention has removed a completed job, a resent completion cannot
/// be told from an unknown id: it is JOB_NOT_FOUND (documented in
/// complete.lua), changes nothing, and a resending worker treats it as
/// "nothing left to record".
#[tokio::test]
async fn resent_complete_after_retention_removed_the_job_is_not_found_and_changes_nothing() {
    let h = Harness::start_with(|b| b.retention(Retention { keep_last: 1, max_age: None })).await;
    let q = "lost-complete-trimmed";
    h.client.enqueue_bulk(q, vec![job(1), job(2)]).await.expect("enqueue");
    let leases = lease_of(&h.client.claim(q, &claim(2, "w1")).await.expect("claim"));
    assert_eq!(h.client.complete(&leases[0], None).await.expect("complete"), Completion::Completed);
    assert_eq!(h.client.complete(&leases[1], None).await.expect("complete"), Completion::Completed);
    // The worker's maintenance applies keep_last = 1 exactly.
    assert_eq!(h.client.trim_completed(q).await.expect("trim"), 1);
    assert!(
        matches!(h.client.get_job(q, &leases[0].job_id).await, Err(Error::JobNotFound { .. })),
        "retention removed the first job"
    );

    kill_client_connections(&h.server).await;
    let resent = until_answered("resend complete", || h.client.complete(&leases[0], None)).await;
    assert!(matches!(resent, Err(Error::JobNotFound { .. })), "{resent:?}");
    let mut raw = h.raw().await;
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 2);
    assert_sound(&h.client, q).await;
}

// ---------------------------------------------------------------------------
// Redis down, Redis frozen
// ---------------------------------------------------------------------------

/// Whether something listens on the port of our stopped server.
fn port_taken_by_another_process(server: &RedisServer) -> bool {
    !server.is_running() && std::net::TcpStream::connect(("127.0.0.1", server.port())).is_ok()
}

/// Asserts that `result` is a connection error whose message points at Redis.
fn assert_connection_error<T: std::fmt::Debug>(what: &str, result: taskline::Result<T>, started: Instant) {
    let elapsed = started.elapsed();
    let err = result.expect_err(&format!("{what} must fail while Redis is down"));
    assert!(err.is_connection_error(), "{what}: not a connection error: {err:?}");
    let message = err.to_string().to_lowercase();
    assert!(message.contains("redis") && message.contains("check"), "{what}: message gives no hint: {err}");
    // Short timeouts (0.5 s) plus the manager's two reconnect retries.
    assert!(elapsed < Duration::from_secs(4), "{what} took {elapsed:?} to fail");
}

#[tokio::test]
async fn calls_fail_fast_while_redis_is_down_and_recover_after_restart() {
    let server = durable_server();
    let client = short_timeout_client(&server).await;
    let q = "down";
    let id = client.enqueue(q, job(1)).await.expect("enqueue");
    let lease = client.claim(q, &claim(1, "w1")).await.expect("claim").jobs.remove(0).lease;
    assert_eq!(lease.job_id, id);

    server.kill();
    // Each call while Redis is down. Another test's server may grab the
    // freed port meanwhile; then this scenario cannot be observed here.
    macro_rules! while_down {
        ($what:literal, $call:expr) => {{
            let started = Instant::now();
            let result = $call.await;
            if port_taken_by_another_process(&server) {
                eprintln!(
                    "port {} was taken by another process while Redis was down; skipping",
                    server.port()
                );
                return;
            }
            assert_connection_error($what, result, started);
        }};
    }
    while_down!("counts", client.counts(q));
    while_down!("complete", client.complete(&lease, None));
    while_down!("enqueue", client.enqueue(q, job(2)));
    while_down!("get_job", client.get_job(q, &id));
    while_down!(
        "connect",
        Client::builder(&server.url())
            .options(ClientOptions {
                response_timeout: SHORT,
                connection_timeout: SHORT,
                ..Default::default()
            })
            .connect()
    );

    server.restart();
    let counts = until_answered("counts after restart", || client.counts(q)).await.expect("counts");
    assert_eq!((counts.active, counts.ready), (1, 0), "no call reached Redis while it was down");
    assert_eq!(client.complete(&lease, None).await.expect("complete"), Completion::Completed);
    let id2 = client.enqueue(q, job(2)).await.expect("enqueue after recovery");
    let claimed = client.claim(q, &claim(1, "w1")).await.expect("claim after recovery");
    assert_eq!(claimed.jobs[0].lease.job_id, id2);
    assert_sound(&client, q).await;
}

#[tokio::test]
async fn frozen_redis_times_out_or_answers_late_and_loses_nothing() {
    let server = RedisServer::start();
    let client = short_timeout_client(&server).await;
    let q = "frozen";
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(client.enqueue(q, job_with_id(&format!("before-{n}"))).await.expect("enqueue"));
    }
    let leases = lease_of(&client.claim(q, &claim(5, "w1")).await.expect("claim"));
    // Load the complete and fail scripts, so the calls stuck in the socket
    // below run after the resume instead of coming back NOSCRIPT.
    client.complete(&leases[3], None).await.expect("complete");
    client.fail(&leases[4], &Failure::transient("flaky", Duration::ZERO)).await.expect("fail");

    server.pause();
    // Calls in flight while Redis is frozen: each times out (outcome
    // unknown) or is answered after the resume, never before.
    let enqueue = tokio::spawn(timed({
        let c = client.clone();
        async move { c.enqueue(q, job_with_id("during")).await.map(|_| ()) }
    }));
    let complete = tokio::spawn(timed({
        let (c, l) = (client.clone(), leases[0].clone());
        async move { c.complete(&l, None).await.map(|_| ()) }
    }));
    let fail = tokio::spawn(timed({
        let (c, l) = (client.clone(), leases[1].clone());
        async move { c.fail(&l, &Failure::transient("flaky", Duration::ZERO)).await.map(|_| ()) }
    }));
    let claimed = tokio::spawn(timed({
        let c = client.clone();
        async move { c.claim(q, &claim(1, "w2")).await.map(|_| ()) }
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.resume();

    let mut complete_answered = false;
    for (what, task) in [("enqueue", enqueue), ("complete", complete), ("fail", fail), ("claim", claimed)] {
        let (result, elapsed) = task.await.expect("task");
        match result {
            Ok(()) => {
                assert!(elapsed >= Duration::from_millis(900), "{what} answered by a frozen Redis");
                complete_answered |= what == "complete";
            }
            Err(err) => assert!(err.is_connection_error(), "{what} during the pause: {err:?}"),
        }
    }

    // Resend what is unknown, as a worker would; each resend is safe.
    ids.push(JobId::new("during").expect("id"));
    match until_answered("resend enqueue", || client.enqueue(q, job_with_id("during"))).await {
        Ok(id) => assert_eq!(id.as_str(), "during"),
        Err(Error::DuplicateJob { existing, .. }) => assert_eq!(existing, "during"),
        Err(e) => panic!("resend enqueue: {e}"),
    }
    let done =
        until_answered("resend complete", || client.complete(&leases[0], None)).await.expect("complete");
    assert!(!complete_answered || done == Completion::AlreadyCompleted, "{done:?}");
    let flaky = Failure::transient("flaky", Duration::ZERO);
    until_answered("resend fail", || client.fail(&leases[1], &flaky)).await.expect("fail");
    // A claim whose reply was lost leased a job to nobody; it stays active
    // until its lease runs out, and is then reaped. Either way it is listed once.

    let mut raw = server.connection().await;
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 2, "each job completed once");
    assert_eq!(meta_counter(&mut raw, q, "retried").await, 2, "each failure recorded once");
    assert_eq!(meta_counter(&mut raw, q, "enqueued").await, 7, "each job enqueued once");
    let failed = client.get_job(q, &leases[1].job_id).await.expect("job");
    assert_eq!(failed.errors.len(), 1);
    assert_each_in_one_place(&client, &mut raw, q, &ids).await;
    let counts = client.counts(q).await.expect("counts");
    assert_eq!(
        counts.ready + counts.delayed + counts.active + counts.completed + counts.dead,
        7,
        "{counts:?}"
    );
    assert_sound(&client, q).await;
}

#[tokio::test]
async fn reply_lost_to_a_timeout_is_recorded_and_the_resend_says_so() {
    let server = RedisServer::start();
    let client = short_timeout_client(&server).await;
    let q = "lost-reply";
    client.enqueue_bulk(q, vec![job(1), job(2)]).await.expect("enqueue");
    let mut leases = lease_of(&client.claim(q, &claim(2, "w1")).await.expect("claim"));
    // Loads the complete script, so the EVALSHA stuck in the socket below
    // does not come back NOSCRIPT (which would mean it never ran).
    client.complete(&leases.remove(0), None).await.expect("complete");
    let lease = leases.remove(0);

    server.pause();
    let err = client.complete(&lease, None).await.expect_err("Redis is frozen: the reply cannot come");
    assert!(err.is_connection_error(), "{err:?}");
    server.resume();

    // The command sat in the socket and ran after the resume: the outcome
    // of the timed-out call was "completed", and the resend says so.
    let resent = until_answered("resend complete", || client.complete(&lease, None)).await.expect("resend");
    assert_eq!(resent, Completion::AlreadyCompleted);
    let mut raw = server.connection().await;
    assert_eq!(meta_counter(&mut raw, q, "completed").await, 2, "each job completed once");
    assert_sound(&client, q).await;
}

// ---------------------------------------------------------------------------
// Garbage in Redis
// ---------------------------------------------------------------------------

/// Pushes an id with no job hash to the front of the level-0 ready line.
async fn seed_ghost(raw: &mut redis::aio::MultiplexedConnection, q: &str, ghost: &str) {
    let _: i64 = cmd(raw, &["LPUSH", &format!("taskline:{{{q}}}:ready:0"), ghost]).await;
    let _: i64 = cmd(raw, &["ZADD", &format!("taskline:{{{q}}}:levels"), "0", "0"]).await;
}

#[tokio::test]
async fn claim_skips_an_id_without_job_hash_and_reports_an_orphan() {
    let h = Harness::start().await;
    let q = "ghosts";
    let mut raw = h.raw().await;
    seed_ghost(&mut raw, q, "ghost").await;
    let real = [h.client.enqueue(q, job(1)).await.expect("e"), h.client.enqueue(q, job(2)).await.expect("e")];

    // The checker sees the ghost before claim drops it.
    let report = h.client.check_queue(q).await.expect("check");
    assert_eq!(
        report.violations,
        [Violation::MissingHash { id: "ghost".into(), place: "ready".into() }],
        "{report:?}"
    );

    let claimed = h.client.claim(q, &claim(3, "w1")).await.expect("claim");
    let got: Vec<&JobId> = claimed.jobs.iter().map(|j| &j.lease.job_id).collect();
    assert_eq!(got, [&real[0], &real[1]], "the ghost is not returned, the real jobs are");
    let orphans: Vec<_> = events(&mut raw, q).await.into_iter().filter(|(e, _)| e == "orphan").collect();
    assert_eq!(orphans, [("orphan".to_string(), "ghost".to_string())]);
    let ready: i64 = cmd(&mut raw, &["LLEN", &format!("taskline:{{{q}}}:ready:0")]).await;
    assert_eq!(ready, 0, "the ghost is gone from the ready list");
    for j in &claimed.jobs {
        h.client.complete(&j.lease, None).await.expect("complete");
    }
    h.assert_sound(q).await;
}

#[tokio::test]
async fn an_orphan_does_not_use_up_the_claim_count() {
    let h = Harness::start().await;
    let q = "ghost-count";
    let mut raw = h.raw().await;
    seed_ghost(&mut raw, q, "ghost").await;
    let real = h.client.enqueue(q, job(1)).await.expect("enqueue");

    let claimed = h.client.claim(q, &claim(1, "w1")).await.expect("claim");
    let got: Vec<&JobId> = claimed.jobs.iter().map(|j| &j.lease.job_id).collect();
    assert_eq!(got, [&real], "an idle worker asking for one job must get the ready one");
}

#[tokio::test]
async fn orphans_in_delayed_and_active_are_dropped_with_an_event() {
    let h = Harness::start().await;
    let q = "ghosts-zsets";
    let mut raw = h.raw().await;
    let real = h.client.enqueue(q, job(1)).await.expect("enqueue");
    let _: i64 = cmd(&mut raw, &["ZADD", &format!("taskline:{{{q}}}:delayed"), "1", "ghost-delayed"]).await;
    let _: i64 = cmd(&mut raw, &["ZADD", &format!("taskline:{{{q}}}:active"), "1", "ghost-active"]).await;

    let reaped = h.client.reap(q, 10, Duration::ZERO).await.expect("reap");
    assert_eq!((reaped.retried, reaped.dead, reaped.ids.len()), (0, 0, 0), "{reaped:?}");
    let claimed = h.client.claim(q, &claim(5, "w1")).await.expect("claim");
    assert_eq!(claimed.jobs.len(), 1);
    assert_eq!(claimed.jobs[0].lease.job_id, real);
    let mut orphans: Vec<String> =
        events(&mut raw, q).await.into_iter().filter(|(e, _)| e == "orphan").map(|(_, id)| id).collect();
    orphans.sort();
    assert_eq!(orphans, ["ghost-active", "ghost-delayed"]);
    let counts = h.client.counts(q).await.expect("counts");
    assert_eq!((counts.delayed, counts.active), (0, 1), "{counts:?}");
    h.assert_sound(q).await;
}

#[tokio::test]
async fn check_queue_reports_each_seeded_violation() {
    let h = Harness::start().await;
    let q = "broken";
    let stem = format!("taskline:{{{q}}}:");
    let mut raw = h.raw().await;
    h.client.enqueue_bulk(q, (0..3).map(job).collect()).await.expect("enqueue");
    h.assert_sound(q).await;

    // A job hash that no structure lists.
    let _: i64 =
        cmd(&mut raw, &["HSET", &format!("{stem}job:unlisted"), "id", "unlisted", "state", "ready"]).await;
    // A job listed in two structures.
    let twice = h.client.enqueue(q, job(9)).await.expect("enqueue");
    let _: i64 = cmd(&mut raw, &["ZADD", &format!("{stem}delayed"), "1", twice.as_str()]).await;
    // A ready list whose level is missing from `levels`.
    let _: i64 =
        cmd(&mut raw, &["HSET", &format!("{stem}job:hidden"), "id", "hidden", "state", "ready"]).await;
    let _: i64 = cmd(&mut raw, &["LPUSH", &format!("{stem}ready:7"), "hidden"]).await;
    // A job whose state disagrees with where it is.
    let _: i64 =
        cmd(&mut raw, &["HSET", &format!("{stem}job:liar"), "id", "liar", "state", "completed"]).await;
    let _: i64 = cmd(&mut raw, &["ZADD", &format!("{stem}dead"), "1", "liar"]).await;

    let report = h.client.check_queue(q).await.expect("check");
    assert!(!report.is_sound());
    assert_eq!(report.jobs, 7, "every job hash is read");
    let mut violations = report.violations.clone();
    violations.sort_by_key(|v| v.to_string());
    let mut expected = vec![
        Violation::Unlisted { id: "unlisted".into(), state: "ready".into() },
        Violation::InSeveralPlaces { id: twice.to_string(), places: vec!["ready".into(), "delayed".into()] },
        Violation::HiddenReadyLevel { level: "7".into() },
        Violation::StateMismatch { id: "liar".into(), stored: "completed".into(), place: "dead".into() },
    ];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(violations, expected, "{report:?}");

    // And the assertion every test relies on does fail on it.
    let client = h.client.clone();
    let q2 = q.to_string();
    let outcome = tokio::spawn(async move { assert_sound(&client, &q2).await }).await;
    let panic = outcome.expect_err("assert_sound must fail on a broken queue").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("unlisted") && message.contains("several places"), "{message}");
}

#[tokio::test]
async fn corrupt_job_field_is_a_named_error_not_a_panic() {
    let h = Harness::start().await;
    let q = "corrupt";
    let mut raw = h.raw().await;
    let id = h.client.enqueue(q, job(1)).await.expect("enqueue");
    let key = format!("taskline:{{{q}}}:job:{id}");

    let _: i64 = cmd(&mut raw, &["HSET", &key, "attempt", "x"]).await;
    let err = h.client.get_job(q, &id).await.expect_err("corrupt attempt");
    assert!(
        matches!(&err, Error::CorruptJob { id: bad, field: "attempt", .. } if bad == id.as_str()),
        "{err:?}"
    );
    assert!(err.to_string().contains("attempt"), "{err}");

    let _: i64 = cmd(&mut raw, &["HSET", &key, "attempt", "0", "state", "limbo"]).await;
    let err = h.client.get_job(q, &id).await.expect_err("corrupt state");
    assert!(matches!(&err, Error::CorruptJob { field: "state", .. }), "{err:?}");

    let _: i64 = cmd(&mut raw, &["HSET", &key, "state", "ready", "errors", "1", "error:1", "{nope"]).await;
    let err = h.client.get_job(q, &id).await.expect_err("corrupt error history");
    assert!(matches!(&err, Error::CorruptJob { field: "errors", .. }), "{err:?}");
}

#[tokio::test]
async fn claim_of_a_corrupt_job_loses_nothing() {
    let h = Harness::start().await;
    let q = "corrupt-claim";
    let mut raw = h.raw().await;
    let bad = h.client.enqueue(q, job(1)).await.expect("enqueue");
    let good = h.client.enqueue(q, job(2)).await.expect("enqueue");
    let _: i64 = cmd(&mut raw, &["HSET", &format!("taskline:{{{q}}}:job:{bad}"), "attempt", "x"]).await;

    let claimed = h.client.claim(q, &claim(2, "w1")).await;
    // Whatever claim answers, the corrupt job must still be somewhere and
    // the good job must be claimable.
    let places = places_of(&mut raw, q, bad.as_str()).await;
    assert_eq!(places.len(), 1, "corrupt job {bad} is listed in {places:?} after claim ({claimed:?})");
    let mut got: Vec<JobId> =
        claimed.map(|c| c.jobs.into_iter().map(|j| j.lease.job_id).collect()).unwrap_or_default();
    if got.is_empty() {
        got = h
            .client
            .claim(q, &claim(2, "w1"))
            .await
            .expect("second claim")
            .jobs
            .into_iter()
            .map(|j| j.lease.job_id)
            .collect();
    }
    assert!(got.contains(&good), "the good job is claimable: {got:?}");
}
