//! The runtime in-process: a [`Worker`] with Rust handlers (`handler_fn`)
//! against a private `redis-server`. Handlers record what they see (attempts,
//! start times, in-flight counts, cancellations) into shared state, and the
//! tests compare that with what Redis says about the jobs.
//!
//! Areas: outcomes and their history, backoff, timeouts, jobs the worker
//! cannot run, payload versions, concurrency limits, weighted and strict
//! scheduling, idle behaviour (no hot polling, fast pickup, delayed jobs on
//! time), lost leases, graceful shutdown, and a Redis restart mid-run.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use taskline::{Client, FailureKind, Job, JobId, JobState, NewJob};
use taskline_testkit::RedisServer;
use taskline_worker::{Handler, JobContext, JobError, Worker, handler_fn};

use crate::support::{RunningWorker, assert_sound, config, drained, eventually, redis_with_aof};

/// Default limit of the waits below; tests normally finish far sooner.
const LIMIT: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------
// Helpers

async fn connect(server: &RedisServer) -> Client {
    Client::connect(&server.url()).await.expect("connect client")
}

/// The hash of job `id` of `queue` under the default prefix.
fn job_key(queue: &str, id: &JobId) -> String {
    format!("taskline:{{{queue}}}:job:{id}")
}

fn delayed_key(queue: &str) -> String {
    format!("taskline:{{{queue}}}:delayed")
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after the epoch").as_millis() as u64
}

async fn get(client: &Client, queue: &str, id: &JobId) -> Job {
    client.get_job(queue, id).await.expect("get_job")
}

/// Waits until job `id` satisfies `done`, and returns it.
async fn wait_job(client: &Client, queue: &str, id: &JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
    eventually(what, LIMIT, || async { done(&get(client, queue, id).await) }).await;
    get(client, queue, id).await
}

async fn enqueue(client: &Client, queue: &str, job: NewJob) -> JobId {
    client.enqueue(queue, job).await.expect("enqueue")
}

async fn enqueue_many(client: &Client, queue: &str, name: &str, n: usize) -> Vec<JobId> {
    let jobs = (0..n).map(|i| NewJob::new(name, &i).expect("job")).collect();
    client
        .enqueue_bulk(queue, jobs)
        .await
        .expect("enqueue_bulk")
        .into_iter()
        .map(|o| o.id().clone())
        .collect()
}

/// The result a completed job stored, decoded.
fn result_of(job: &Job) -> Value {
    serde_json::from_str(job.result.as_deref().expect("a stored result")).expect("result is JSON")
}

/// The Redis server's clock, in ms since the epoch.
async fn server_now_ms(conn: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

/// Calls served per command so far (`INFO commandstats`), without INFO
/// itself (the measuring calls).
async fn command_calls(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO");
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, rest) = line.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse::<u64>().ok()?;
            (name != "info").then(|| (name.to_string(), calls))
        })
        .collect()
}

/// Jobs running at once: a handler holds a [`Gauge::enter`] guard while it
/// runs (dropped even when the handler is aborted).
#[derive(Default)]
struct Gauge {
    now: AtomicU32,
    max: AtomicU32,
    /// Runs that ended.
    done: AtomicU32,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }

    fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
        self.0.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a long-running handler saw of its cancellation.
#[derive(Default)]
struct CancelProbe {
    /// Handler runs started.
    started: AtomicU32,
    /// `ctx.cancelled()` resolved inside the handler.
    observed: AtomicBool,
    /// The handler future was dropped (finished or aborted) while its
    /// context said cancelled.
    dropped_cancelled: AtomicBool,
    /// The handler ran to its natural end (not cancelled).
    ran_out: AtomicBool,
}

/// Sets [`CancelProbe::dropped_cancelled`] when dropped with `ctx`
/// cancelled.
struct DropProbe(Arc<CancelProbe>, JobContext);

impl Drop for DropProbe {
    fn drop(&mut self) {
        if self.1.is_cancelled() {
            self.0.dropped_cancelled.store(true, Ordering::SeqCst);
        }
    }
}

/// A handler body that works for `work` unless cancelled, recording into
/// `probe`.
async fn cancellable_work(probe: Arc<CancelProbe>, ctx: JobContext, work: Duration) -> Option<Value> {
    probe.started.fetch_add(1, Ordering::SeqCst);
    let _guard = DropProbe(probe.clone(), ctx.clone());
    tokio::select! {
        _ = tokio::time::sleep(work) => {
            probe.ran_out.store(true, Ordering::SeqCst);
            Some(json!("worked"))
        }
        _ = ctx.cancelled() => {
            probe.observed.store(true, Ordering::SeqCst);
            Some(json!("cancelled"))
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Happy path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_completes_every_job_with_its_result() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let seen: Arc<Mutex<Vec<(String, u32, u64)>>> = Arc::default();
    let s = seen.clone();
    let cfg = config(&server.url(), "[queues.q]\nconcurrency = 8\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "double",
        handler_fn(move |ctx: JobContext, n: u64| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((ctx.id.to_string(), ctx.attempt, n));
                Ok(Some(json!({ "doubled": n * 2 })))
            }
        }),
    ));

    let ids = enqueue_many(&client, "q", "double", 50).await;
    let counts = drained(&client, "q", LIMIT).await;
    assert_eq!((counts.completed, counts.dead), (50, 0), "{counts:?}");

    for (n, id) in ids.iter().enumerate() {
        let job = get(&client, "q", id).await;
        assert_eq!(job.state, JobState::Completed, "job {n}");
        assert_eq!(job.facts.attempt, 1, "job {n} ran once");
        assert!(job.errors.is_empty(), "job {n}: {:?}", job.errors);
        assert_eq!(result_of(&job), json!({ "doubled": n * 2 }), "job {n}");
        assert!(job.finished_at.is_some() && job.worker.is_some(), "job {n}: {job:?}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 50, "each job ran exactly once");
    assert_eq!(seen.iter().map(|(id, _, _)| id.clone()).collect::<HashSet<_>>().len(), 50);
    assert!(seen.iter().all(|&(_, attempt, _)| attempt == 1));
    assert_eq!(seen.iter().map(|&(_, _, n)| n).sum::<u64>(), (0..50).sum::<u64>(), "payloads decoded");
    assert_sound(&client, "q").await;
    assert_eq!(worker.stop().await.released_at_shutdown, 0);
}

// ---------------------------------------------------------------------------
// 2. Backoff

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_after_the_backoff() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let starts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let s = starts.clone();
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
backoff = { initial = "100ms", factor = 2.0, max = "1s", jitter = "none" }
"#,
    );
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "flaky",
        handler_fn(move |ctx: JobContext, _: Value| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((ctx.attempt, Instant::now()));
                if ctx.attempt <= 2 {
                    return Err(JobError::transient(format!("upstream 503 on attempt {}", ctx.attempt)));
                }
                Ok(Some(json!("third time lucky")))
            }
        }),
    ));

    let id = enqueue(&client, "q", NewJob::new("flaky", &json!({})).unwrap()).await;
    let job = wait_job(&client, "q", &id, "job completed", |j| j.state == JobState::Completed).await;

    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![1, 2, 3]);
    let first_gap = starts[1].1 - starts[0].1;
    let second_gap = starts[2].1 - starts[1].1;
    // Backoff 100 ms then 200 ms (no jitter), measured on the server clock
    // in whole ms: at most a ms of rounding below the nominal delay.
    assert!(
        first_gap >= Duration::from_millis(99) && first_gap < Duration::from_millis(1_100),
        "attempt 1 -> 2 after {first_gap:?}, expected 100 ms (+ at most ~1 s)"
    );
    assert!(
        second_gap >= Duration::from_millis(199) && second_gap < Duration::from_millis(1_200),
        "attempt 2 -> 3 after {second_gap:?}, expected 200 ms (+ at most ~1 s)"
    );

    assert_eq!(job.facts.attempt, 3);
    assert_eq!(result_of(&job), json!("third time lucky"));
    assert_eq!(job.errors.len(), 2, "{:?}", job.errors);
    for (i, error) in job.errors.iter().enumerate() {
        let attempt = i as u32 + 1;
        assert_eq!(error.attempt, attempt);
        assert_eq!(error.kind, FailureKind::Transient);
        assert_eq!(error.message, format!("upstream 503 on attempt {attempt}"));
        assert_eq!(Some(&error.worker), job.worker.as_ref(), "the error names the worker");
    }
    assert_sound(&client, "q").await;
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Permanent failures, exhausted attempts, retry_after

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_dead_at_once_with_its_reason_and_history() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let calls: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let c = calls.clone();
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
max_attempts = 5
backoff = { initial = "50ms", factor = 1.0, max = "50ms", jitter = "none" }
"#,
    );
    // `charge` fails transiently once, then permanently: two errors in the
    // history. `refund` fails permanently on its first attempt.
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "charge",
        handler_fn(move |ctx: JobContext, _: Value| {
            let c = c.clone();
            async move {
                c.lock().unwrap().push((ctx.name.clone(), ctx.attempt));
                if ctx.name == "charge" && ctx.attempt == 1 {
                    return Err(JobError::transient("gateway timeout"));
                }
                Err(JobError::permanent("card declined").with_reason("card_declined"))
            }
        }),
    ));
    let charge =
        enqueue(&client, "q", NewJob::new("charge", &json!({"card": "4242", "cents": 1999})).unwrap()).await;
    let job = wait_job(&client, "q", &charge, "charge dead", |j| j.state == JobState::Dead).await;

    assert_eq!(job.dead_reason.as_deref(), Some("card_declined"));
    assert_eq!(job.facts.attempt, 2, "dead on the permanent failure, 3 attempts left unused");
    assert_eq!(job.payload_as::<Value>().unwrap(), json!({"card": "4242", "cents": 1999}), "payload kept");
    let history: Vec<(u32, FailureKind, &str)> =
        job.errors.iter().map(|e| (e.attempt, e.kind, e.message.as_str())).collect();
    assert_eq!(
        history,
        vec![(1, FailureKind::Transient, "gateway timeout"), (2, FailureKind::Permanent, "card declined")]
    );
    assert!(job.errors.iter().all(|e| !e.worker.is_empty() && e.at > UNIX_EPOCH), "{:?}", job.errors);
    assert!(job.finished_at.is_some());

    // Nothing runs it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.lock().unwrap().len(), 2);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.delayed, counts.ready, counts.active), (1, 0, 0, 0), "{counts:?}");
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_on_the_first_attempt_spends_no_retry() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let cfg = config(&server.url(), "[queues.q]\nmax_attempts = 5\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "refund",
        handler_fn(move |_ctx: JobContext, _: Value| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err(JobError::permanent("order 17 does not exist")) }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("refund", &json!({"order": 17})).unwrap()).await;
    let job = wait_job(&client, "q", &id, "refund dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("permanent"), "a permanent error without a reason");
    assert_eq!((job.facts.attempt, job.errors.len()), (1, 1));
    assert_eq!(job.errors[0].kind, FailureKind::Permanent);
    assert_eq!(job.errors[0].message, "order 17 does not exist");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_go_dead_as_attempts_exhausted() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
max_attempts = 2
backoff = { initial = "20ms", factor = 1.0, max = "20ms", jitter = "none" }
"#,
    );
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "sync",
        handler_fn(move |ctx: JobContext, _: Value| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err(JobError::transient(format!("still down ({})", ctx.attempt))) }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("sync", &json!(null)).unwrap()).await;
    let job = wait_job(&client, "q", &id, "sync dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("attempts_exhausted"));
    assert_eq!(job.facts.attempt, 2);
    // (job.max_attempts is not checked: the budget of a job that set none
    // lives in the worker's config, and get_job reports the reading
    // client's default.)
    let messages: Vec<&str> = job.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, vec!["still down (1)", "still down (2)"]);
    assert!(job.errors.iter().all(|e| e.kind == FailureKind::Transient));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no third attempt");
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_overrides_the_backoff() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let mut conn = server.connection().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
backoff = { initial = "100ms", factor = 2.0, max = "1s", jitter = "none" }
"#,
    );
    let worker =
        RunningWorker::start(Worker::builder(cfg).handler(
            "q",
            "call_api",
            handler_fn(move |_ctx: JobContext, _: Value| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    Err(JobError::transient("429 Too Many Requests").retry_after(Duration::from_secs(5)))
                }
            }),
        ));
    let id = enqueue(&client, "q", NewJob::new("call_api", &json!({})).unwrap()).await;
    let job = wait_job(&client, "q", &id, "first failure recorded", |j| j.errors.len() == 1).await;
    let now = server_now_ms(&mut conn).await;

    assert_eq!(job.state, JobState::Delayed);
    let score: f64 = redis::cmd("ZSCORE")
        .arg(delayed_key("q"))
        .arg(id.as_str())
        .query_async(&mut conn)
        .await
        .expect("job in the delayed set");
    let failed_at = epoch_ms(job.errors[0].at);
    assert_eq!(
        score as u64,
        failed_at + 5_000,
        "due exactly retry_after (5 s) after the failure, not 100 ms"
    );
    assert_eq!(job.due_at.map(epoch_ms), Some(failed_at + 5_000));
    assert!(score as u64 > now + 3_000, "due ~5 s from now: score {score}, now {now}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried on the 100 ms backoff");
    assert_eq!(get(&client, "q", &id).await.state, JobState::Delayed);
    assert_sound(&client, "q").await;
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Timeouts

/// How a 200 ms timeout is set in [`timeout_case`].
enum TimeoutFrom {
    Job,
    Handler,
    Queue,
}

/// Runs a 10 s handler under a 200 ms timeout set by `from` (the other
/// levels are longer, or unset) and checks the attempt failed as a
/// transient "timed out" after about 200 ms, the handler cancelled.
async fn timeout_case(from: TimeoutFrom) {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let queue_timeout = match from {
        TimeoutFrom::Queue => "200ms",
        _ => "1m",
    };
    let cfg = config(
        &server.url(),
        &format!(
            r#"
[queues.q]
timeout = "{queue_timeout}"
backoff = {{ initial = "10s", factor = 1.0, max = "10s", jitter = "none" }}
"#
        ),
    );
    let probe = Arc::new(CancelProbe::default());
    let p = probe.clone();
    let handler = handler_fn(move |ctx: JobContext, _: Value| {
        let p = p.clone();
        async move { Ok(cancellable_work(p, ctx, Duration::from_secs(10)).await) }
    });
    let builder = Worker::builder(cfg);
    let builder = match from {
        TimeoutFrom::Handler => {
            builder.handler_with_timeout("q", "slow", handler, Duration::from_millis(200))
        }
        _ => builder.handler("q", "slow", handler),
    };
    let worker = RunningWorker::start(builder);
    let mut job = NewJob::new("slow", &json!({})).unwrap();
    if let TimeoutFrom::Job = from {
        job = job.timeout(Duration::from_millis(200));
    }
    let id = enqueue(&client, "q", job).await;
    let job = wait_job(&client, "q", &id, "the attempt failed", |j| j.errors.len() == 1).await;

    let error = &job.errors[0];
    assert_eq!(error.kind, FailureKind::Transient);
    assert!(error.message.contains("timed out"), "{}", error.message);
    assert_eq!(job.state, JobState::Delayed, "retried later, as a transient failure");
    let ran = epoch_ms(error.at) - epoch_ms(job.started_at.expect("started"));
    assert!((195..2_000).contains(&ran), "failed {ran} ms after it started; the timeout is 200 ms");
    assert_eq!(probe.started.load(Ordering::SeqCst), 1);
    assert!(!probe.ran_out.load(Ordering::SeqCst));
    eventually("the handler is dropped", Duration::from_secs(2), || async {
        probe.dropped_cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_cancels_the_handler_and_fails_transient() {
    timeout_case(TimeoutFrom::Job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_timeout_applies_when_the_job_sets_none() {
    timeout_case(TimeoutFrom::Handler).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_applies_when_job_and_handler_set_none() {
    timeout_case(TimeoutFrom::Queue).await;
}

// ---------------------------------------------------------------------------
// 5. Jobs the worker cannot run

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: u64,
    cents: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_bad_payloads_go_dead_with_their_reason() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let cfg = config(&server.url(), "[queues.q]\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "ship_order",
        handler_fn(move |_ctx: JobContext, order: Order| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Some(json!({ "shipped": order.id, "cents": order.cents }))) }
        }),
    ));
    let unknown = enqueue(&client, "q", NewJob::new("launch_rocket", &json!({"to": "moon"})).unwrap()).await;
    let bad = enqueue(&client, "q", NewJob::new("ship_order", &"not an order").unwrap()).await;
    let good =
        enqueue(&client, "q", NewJob::new("ship_order", &json!({"id": 7, "cents": 100})).unwrap()).await;

    let job = wait_job(&client, "q", &unknown, "unknown dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("unknown_job"));
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].kind, FailureKind::Permanent);
    assert!(job.errors[0].message.contains("launch_rocket"), "{}", job.errors[0].message);
    assert_eq!(job.payload_as::<Value>().unwrap(), json!({"to": "moon"}), "payload kept for a replay");

    let job = wait_job(&client, "q", &bad, "bad payload dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("invalid_payload"));
    assert_eq!((job.facts.attempt, job.errors.len()), (1, 1), "not retried");
    assert_eq!(job.errors[0].kind, FailureKind::Permanent);

    let job = wait_job(&client, "q", &good, "good completed", |j| j.state == JobState::Completed).await;
    assert_eq!(result_of(&job), json!({ "shipped": 7, "cents": 100 }));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran only for the decodable payload");
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.completed), (2, 1));
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_transient_and_the_worker_carries_on() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
concurrency = 4
backoff = { initial = "10s", factor = 1.0, max = "10s", jitter = "none" }
"#,
    );
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "maybe_panic",
        handler_fn(move |_ctx: JobContext, boom: bool| async move {
            if boom {
                panic!("kaboom: index out of range");
            }
            Ok(Some(json!("fine")))
        }),
    ));
    let boom = enqueue(&client, "q", NewJob::new("maybe_panic", &true).unwrap()).await;
    let mut good = Vec::new();
    for _ in 0..10 {
        good.push(enqueue(&client, "q", NewJob::new("maybe_panic", &false).unwrap()).await);
    }
    let job = wait_job(&client, "q", &boom, "panic recorded", |j| j.errors.len() == 1).await;
    assert_eq!(job.errors[0].kind, FailureKind::Transient);
    assert!(job.errors[0].message.contains("handler panicked"), "{}", job.errors[0].message);
    assert!(job.errors[0].message.contains("kaboom"), "the panic message is kept: {}", job.errors[0].message);
    assert_eq!(job.state, JobState::Delayed, "retried later like any transient failure");
    for id in &good {
        wait_job(&client, "q", id, "good job completed", |j| j.state == JobState::Completed).await;
    }
    // The worker is still alive and claiming after the panic.
    let late = enqueue(&client, "q", NewJob::new("maybe_panic", &false).unwrap()).await;
    wait_job(&client, "q", &late, "job after the panic completed", |j| j.state == JobState::Completed).await;
    assert_sound(&client, "q").await;
    assert_eq!(worker.stop().await.released_at_shutdown, 0);
}

// ---------------------------------------------------------------------------
// 6. Payload versions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_payload_version_is_released_then_dead_after_the_bound() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let versions: Arc<Mutex<Vec<u32>>> = Arc::default();
    let v = versions.clone();
    let cfg = config(
        &server.url(),
        r#"
[worker]
version_retry_delay = "300ms"
max_version_retries = 2
[queues.q]
"#,
    );
    let worker = RunningWorker::start(
        Worker::builder(cfg).handler(
            "q",
            "render",
            handler_fn(move |ctx: JobContext, _: Value| {
                v.lock().unwrap().push(ctx.version);
                async move { Ok(None) }
            })
            .max_version(1),
        ),
    );
    let current = enqueue(&client, "q", NewJob::new("render", &json!({})).unwrap().version(1)).await;
    let future = enqueue(&client, "q", NewJob::new("render", &json!({})).unwrap().version(2)).await;

    wait_job(&client, "q", &current, "version 1 completed", |j| j.state == JobState::Completed).await;

    let job = wait_job(&client, "q", &future, "released once", |j| {
        j.facts.releases == 1 && j.state == JobState::Delayed
    })
    .await;
    assert_eq!(job.facts.attempt, 0, "a release spends no attempt");
    assert!(job.errors.is_empty(), "a release records no error: {:?}", job.errors);

    let job = wait_job(&client, "q", &future, "future version dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("unsupported_version"));
    assert_eq!(job.facts.releases, 2, "released max_version_retries times first");
    assert_eq!(job.facts.attempt, 1, "only the final claim counts as an attempt");
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].kind, FailureKind::Permanent);
    let waited = epoch_ms(job.finished_at.unwrap()) - epoch_ms(job.facts.created_at);
    assert!(waited >= 600, "two returns of 300 ms each before dying, took {waited} ms");
    assert_eq!(*versions.lock().unwrap(), vec![1], "the handler never saw version 2");
    assert_sound(&client, "q").await;
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 7. Concurrency limits

/// A handler that sleeps `work` while counted by `gauge`.
fn gauged(gauge: Arc<Gauge>, work: Duration) -> impl Handler {
    handler_fn(move |_ctx: JobContext, _: Value| {
        let gauge = gauge.clone();
        async move {
            let _in = gauge.enter();
            tokio::time::sleep(work).await;
            Ok(None)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_queue_concurrency_is_never_exceeded() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let gauge = Arc::new(Gauge::default());
    let cfg = config(&server.url(), "[worker]\nconcurrency = 20\n[queues.q]\nconcurrency = 3\n");
    enqueue_many(&client, "q", "work", 40).await;
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "work",
        gauged(gauge.clone(), Duration::from_millis(20)),
    ));
    let counts = drained(&client, "q", LIMIT).await;
    assert_eq!(counts.completed, 40);
    assert_eq!(gauge.max(), 3, "max in flight must be exactly the queue's concurrency");
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_concurrency_caps_all_queues_together() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let total = Arc::new(Gauge::default());
    let (a, b) = (Arc::new(Gauge::default()), Arc::new(Gauge::default()));
    let cfg = config(
        &server.url(),
        "[worker]\nconcurrency = 4\n[queues.a]\nconcurrency = 10\n[queues.b]\nconcurrency = 10\n",
    );
    enqueue_many(&client, "a", "work", 20).await;
    enqueue_many(&client, "b", "work", 20).await;
    let both = |own: Arc<Gauge>| {
        let total = total.clone();
        handler_fn(move |_ctx: JobContext, _: Value| {
            let (own, total) = (own.clone(), total.clone());
            async move {
                let _in = (own.enter(), total.enter());
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(None)
            }
        })
    };
    let worker = RunningWorker::start(Worker::builder(cfg).handler("a", "work", both(a.clone())).handler(
        "b",
        "work",
        both(b.clone()),
    ));
    assert_eq!(drained(&client, "a", LIMIT).await.completed, 20);
    assert_eq!(drained(&client, "b", LIMIT).await.completed, 20);
    assert_eq!(total.max(), 4, "max in flight across queues must be exactly worker.concurrency");
    assert!(a.max() >= 1 && b.max() >= 1 && a.max() <= 4 && b.max() <= 4, "a {} b {}", a.max(), b.max());
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 8. Weighted and strict scheduling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_queues_are_served_by_weight() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let order: Arc<Mutex<Vec<u8>>> = Arc::default();
    let cfg = config(
        &server.url(),
        r#"
[worker]
concurrency = 4
shutdown_timeout = "2s"
[queues.heavy]
weight = 3
concurrency = 4
[queues.light]
weight = 1
concurrency = 4
"#,
    );
    enqueue_many(&client, "heavy", "work", 1_000).await;
    enqueue_many(&client, "light", "work", 1_000).await;
    let record = |tag: u8| {
        let order = order.clone();
        handler_fn(move |_ctx: JobContext, _: Value| {
            order.lock().unwrap().push(tag);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(None)
            }
        })
    };
    let worker = RunningWorker::start(Worker::builder(cfg).handler("heavy", "work", record(0)).handler(
        "light",
        "work",
        record(1),
    ));
    eventually("400 starts", Duration::from_secs(20), || async { order.lock().unwrap().len() >= 400 }).await;
    worker.stop().await;

    let order = order.lock().unwrap().clone();
    let heavy = order[..400].iter().filter(|&&q| q == 0).count();
    let share = heavy as f64 / 400.0;
    assert!(
        (0.70..=0.80).contains(&share),
        "weight-3 queue got {share:.3} of the first 400 starts, expected 0.75 ± 0.05"
    );
    assert_sound(&client, "heavy").await;
    assert_sound(&client, "light").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_queue_is_drained_before_weighted_queues_get_a_slot() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let cfg = config(
        &server.url(),
        r#"
[worker]
concurrency = 3
[queues.bulk]
weight = 100
concurrency = 3
[queues.critical]
strict = true
concurrency = 3
"#,
    );
    enqueue_many(&client, "bulk", "work", 20).await;
    enqueue_many(&client, "critical", "work", 20).await;
    let record = |tag: &'static str| {
        let order = order.clone();
        handler_fn(move |_ctx: JobContext, _: Value| {
            order.lock().unwrap().push(tag);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(None)
            }
        })
    };
    let worker = RunningWorker::start(Worker::builder(cfg).handler("bulk", "work", record("bulk")).handler(
        "critical",
        "work",
        record("critical"),
    ));
    drained(&client, "critical", LIMIT).await;
    drained(&client, "bulk", LIMIT).await;
    worker.stop().await;
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 40);
    assert!(
        order[..20].iter().all(|&q| q == "critical"),
        "a bulk job started before the strict queue was drained: {order:?}"
    );
}

// ---------------------------------------------------------------------------
// 9. An idle queue yields its share

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_queue_yields_its_share() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let gauge = Arc::new(Gauge::default());
    let idle_calls = Arc::new(AtomicU32::new(0));
    let i = idle_calls.clone();
    let cfg = config(
        &server.url(),
        r#"
[worker]
concurrency = 4
[queues.busy]
weight = 1
concurrency = 4
[queues.idle]
weight = 9
concurrency = 4
"#,
    );
    enqueue_many(&client, "busy", "work", 40).await;
    let mut conn = server.connection().await;
    let before = command_calls(&mut conn).await;
    let worker = RunningWorker::start(
        Worker::builder(cfg)
            .handler("busy", "work", gauged(gauge.clone(), Duration::from_millis(25)))
            .handler(
                "idle",
                "work",
                handler_fn(move |_ctx: JobContext, _: Value| {
                    i.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(None) }
                }),
            ),
    );
    // Waits without asking Redis, so that only the worker's calls count.
    eventually("40 runs", LIMIT, || async { gauge.done.load(Ordering::SeqCst) == 40 }).await;
    let scripts = command_calls(&mut conn).await["evalsha"] - before.get("evalsha").copied().unwrap_or(0);
    assert_eq!(gauge.max(), 4, "the weight-1 queue must get every slot while the weight-9 queue is empty");
    assert_eq!(idle_calls.load(Ordering::SeqCst), 0);
    // About one script per job (complete-and-claim) plus a few claims; an
    // empty queue that kept its turn would be claimed again and again.
    assert!(scripts <= 120, "{scripts} script calls for 40 jobs: is the empty queue claimed in a loop?");
    assert_eq!(drained(&client, "busy", LIMIT).await.completed, 40);
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 10. Idle without hot polling, yet fast pickup and delayed jobs on time

fn ten_idle_queues() -> String {
    let mut body = String::from("[worker]\nidle_wait = \"30s\"\n");
    for n in 0..10 {
        body += &format!("[queues.q{n}]\n");
    }
    body
}

/// Waits until the worker's idle BLPOP is in flight (the claimer idles).
async fn wait_blocked(conn: &mut MultiplexedConnection) {
    for _ in 0..250 {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.expect("CLIENT LIST");
        if clients.lines().any(|l| l.contains("cmd=blpop")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the worker never blocked on its wake lists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_does_not_poll_yet_picks_up_a_new_job_at_once() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let mut conn = server.connection().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let cfg = config(&server.url(), &ten_idle_queues());
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q7",
        "ping",
        handler_fn(move |_ctx: JobContext, _: Value| {
            let _ = tx.send(Instant::now());
            async move { Ok(None) }
        }),
    ));
    wait_blocked(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = command_calls(&mut conn).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = command_calls(&mut conn).await;
    let delta: BTreeMap<&String, u64> = after
        .iter()
        .map(|(name, calls)| (name, calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    let total: u64 = delta.values().sum();
    assert!(total <= 10, "an idle worker with 10 queues sent {total} commands in 2 s: {delta:?}");

    // idle_wait is 30 s: only the wake token can explain a fast start.
    let enqueued = Instant::now();
    enqueue(&client, "q7", NewJob::new("ping", &json!({})).unwrap()).await;
    let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the job started within 5 s")
        .expect("a start");
    let pickup = started - enqueued;
    assert!(pickup < Duration::from_millis(500), "picked up after {pickup:?}");
    drained(&client, "q7", LIMIT).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_starts_on_time_on_an_idle_worker() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let mut conn = server.connection().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let cfg = config(&server.url(), &ten_idle_queues());
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q3",
        "later",
        handler_fn(move |_ctx: JobContext, _: Value| {
            let _ = tx.send(Instant::now());
            async move { Ok(None) }
        }),
    ));
    wait_blocked(&mut conn).await;
    let enqueued = Instant::now();
    let id =
        enqueue(&client, "q3", NewJob::new("later", &json!({})).unwrap().delay(Duration::from_millis(700)))
            .await;
    let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the delayed job started within 5 s")
        .expect("a start");
    let after = started - enqueued;
    assert!(after >= Duration::from_millis(699), "started {after:?} after enqueue, before its 700 ms delay");
    assert!(after < Duration::from_millis(1_700), "started {after:?} after enqueue: more than 1 s late");
    let job = wait_job(&client, "q3", &id, "completed", |j| j.state == JobState::Completed).await;
    let due = epoch_ms(job.due_at.expect("due_at"));
    let start = epoch_ms(job.started_at.expect("started_at"));
    assert!(
        start >= due && start - due < 1_000,
        "started {} ms after due (server clock)",
        start as i64 - due as i64
    );
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 11. Lost lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cancels_the_handler_and_discards_its_outcome() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let mut conn = server.connection().await;
    let probe = Arc::new(CancelProbe::default());
    let p = probe.clone();
    let cfg = config(
        &server.url(),
        r#"
[worker]
lease = "1s"
reap_interval = "500ms"
[queues.q]
"#,
    );
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "long",
        handler_fn(move |ctx: JobContext, _: Value| {
            let p = p.clone();
            async move {
                if ctx.attempt == 1 {
                    return Ok(cancellable_work(p, ctx, Duration::from_secs(3)).await);
                }
                Ok(Some(json!("second attempt")))
            }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("long", &json!({})).unwrap()).await;
    eventually("attempt 1 runs", LIMIT, || async { probe.started.load(Ordering::SeqCst) == 1 }).await;
    let forged = Instant::now();
    let _: () = redis::cmd("HSET")
        .arg(job_key("q", &id))
        .arg("lease_token")
        .arg("other")
        .query_async(&mut conn)
        .await
        .expect("forge the lease");

    // The next heartbeat (lease / 3 = 333 ms) finds the lease lost.
    eventually("the handler is cancelled", Duration::from_secs(2), || async {
        probe.dropped_cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        forged.elapsed() < Duration::from_millis(1_500),
        "cancelled only {:?} after the loss",
        forged.elapsed()
    );
    assert!(!probe.ran_out.load(Ordering::SeqCst), "the handler was not cancelled");

    // Nothing recorded by this worker: the job is as forged.
    let fields: BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(job_key("q", &id)).query_async(&mut conn).await.unwrap();
    assert_eq!(fields.get("state").map(String::as_str), Some("active"), "{fields:?}");
    assert_eq!(fields.get("lease_token").map(String::as_str), Some("other"), "{fields:?}");
    let job = get(&client, "q", &id).await;
    assert!(job.errors.is_empty() && job.result.is_none(), "an outcome was recorded: {job:?}");

    // The reaper recovers it after the lease expires; attempt 2 completes.
    let job = wait_job(&client, "q", &id, "completed by attempt 2", |j| j.state == JobState::Completed).await;
    assert_eq!(job.facts.attempt, 2);
    assert_eq!(result_of(&job), json!("second attempt"));
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "lease expired");
    assert_eq!(probe.started.load(Ordering::SeqCst), 1);
    assert_sound(&client, "q").await;
    worker.stop().await;
}

// ---------------------------------------------------------------------------
// 12. Graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_a_long_job_which_another_worker_completes() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let body = "[worker]\nshutdown_timeout = \"300ms\"\n[queues.q]\n";
    let probe = Arc::new(CancelProbe::default());
    let p = probe.clone();
    let first = RunningWorker::start(Worker::builder(config(&server.url(), body)).handler(
        "q",
        "export",
        handler_fn(move |ctx: JobContext, _: Value| {
            let p = p.clone();
            async move { Ok(cancellable_work(p, ctx, Duration::from_secs(5)).await) }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("export", &json!({})).unwrap()).await;
    eventually("the job runs", LIMIT, || async { probe.started.load(Ordering::SeqCst) == 1 }).await;

    let stopping = Instant::now();
    let report = first.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2), "stop took {:?}", stopping.elapsed());
    assert_eq!(report.released_at_shutdown, 1);
    assert!(!probe.ran_out.load(Ordering::SeqCst));
    assert!(probe.dropped_cancelled.load(Ordering::SeqCst), "the handler was not cancelled");

    let job = get(&client, "q", &id).await;
    assert_eq!(job.state, JobState::Ready, "released back to ready");
    assert_eq!((job.facts.attempt, job.facts.releases), (0, 1), "attempt not spent");
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    assert_sound(&client, "q").await;

    let second = RunningWorker::start(Worker::builder(config(&server.url(), body)).handler(
        "q",
        "export",
        handler_fn(|ctx: JobContext, _: Value| async move { Ok(Some(json!({ "attempt": ctx.attempt }))) }),
    ));
    let job =
        wait_job(&client, "q", &id, "completed by the second worker", |j| j.state == JobState::Completed)
            .await;
    assert_eq!(result_of(&job), json!({ "attempt": 1 }), "the release did not use up an attempt");
    assert_sound(&client, "q").await;
    assert_eq!(second.stop().await.released_at_shutdown, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_job_finish_within_the_timeout() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let probe = Arc::new(CancelProbe::default());
    let p = probe.clone();
    let cfg = config(&server.url(), "[worker]\nshutdown_timeout = \"3s\"\n[queues.q]\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "short",
        handler_fn(move |ctx: JobContext, _: Value| {
            let p = p.clone();
            async move { Ok(cancellable_work(p, ctx, Duration::from_millis(400)).await) }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("short", &json!({})).unwrap()).await;
    eventually("the job runs", LIMIT, || async { probe.started.load(Ordering::SeqCst) == 1 }).await;
    let report = worker.stop().await;
    assert_eq!(report.released_at_shutdown, 0);
    assert!(probe.ran_out.load(Ordering::SeqCst), "the job was cut short");
    let job = get(&client, "q", &id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!((job.facts.attempt, job.facts.releases), (1, 0));
    assert_eq!(result_of(&job), json!("worked"));
    assert_sound(&client, "q").await;
}

// ---------------------------------------------------------------------------
// 13. Redis restart mid-run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rides_out_a_redis_restart() {
    let server = redis_with_aof();
    let client = connect(&server).await;
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let cfg = config(&server.url(), "[worker]\nidle_wait = \"30s\"\n[queues.q]\nconcurrency = 4\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "work",
        handler_fn(move |_ctx: JobContext, n: u64| {
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(Some(json!(n)))
            }
        }),
    ));
    let ids = enqueue_many(&client, "q", "work", 200).await;
    eventually("60 jobs started", LIMIT, || async { started.load(Ordering::SeqCst) >= 60 }).await;
    tokio::task::block_in_place(|| server.restart());
    let at_restart = started.load(Ordering::SeqCst);
    assert!(at_restart < 200, "the restart came too late to matter ({at_restart} started)");
    // The test's own client fails its first command on the dead connection.
    eventually("the test client reconnects", LIMIT, || async { client.counts("q").await.is_ok() }).await;

    let counts = drained(&client, "q", Duration::from_secs(20)).await;
    assert_eq!((counts.completed, counts.dead), (200, 0), "{counts:?}");
    for (n, id) in ids.iter().enumerate() {
        let job = get(&client, "q", id).await;
        assert_eq!(job.state, JobState::Completed, "job {n}");
        assert_eq!(result_of(&job), json!(n), "job {n}");
    }
    assert_sound(&client, "q").await;

    // Still alive and idling on a fresh blocking connection: a new job is
    // picked up by its wake token (idle_wait is 30 s).
    let enqueued = Instant::now();
    let late = enqueue(&client, "q", NewJob::new("work", &999).unwrap()).await;
    wait_job(&client, "q", &late, "job after the restart completed", |j| j.state == JobState::Completed)
        .await;
    assert!(enqueued.elapsed() < Duration::from_secs(3), "took {:?}", enqueued.elapsed());
    assert_eq!(worker.stop().await.released_at_shutdown, 0);
}

// ---------------------------------------------------------------------------
// Cooperative cancellation: `JobContext::cancelled` promises a handler that
// "does long work should select on it and stop early". These check that a
// handler gets to run its own cancellation branch (say, to save a
// checkpoint) when the runtime cancels it.

/// A handler that, when cancelled, does a short async clean-up (10 ms) and
/// records that it finished it.
fn cleaning_handler(probe: Arc<CancelProbe>, cleaned: Arc<AtomicBool>) -> impl Handler {
    handler_fn(move |ctx: JobContext, _: Value| {
        let (probe, cleaned) = (probe.clone(), cleaned.clone());
        async move {
            let out = cancellable_work(probe.clone(), ctx, Duration::from_secs(10)).await;
            if probe.observed.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await; // e.g. save a checkpoint
                cleaned.store(true, Ordering::SeqCst);
            }
            Ok(out)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_handler_can_react_to_its_cancellation() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let probe = Arc::new(CancelProbe::default());
    let cleaned = Arc::new(AtomicBool::new(false));
    let cfg = config(
        &server.url(),
        "[queues.q]\nbackoff = { initial = \"10s\", factor = 1.0, max = \"10s\", jitter = \"none\" }\n",
    );
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "slow",
        cleaning_handler(probe.clone(), cleaned.clone()),
    ));
    let job = NewJob::new("slow", &json!({})).unwrap().timeout(Duration::from_millis(200));
    let id = enqueue(&client, "q", job).await;
    wait_job(&client, "q", &id, "the attempt timed out", |j| j.errors.len() == 1).await;
    eventually("the handler is gone", Duration::from_secs(2), || async {
        probe.dropped_cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert!(probe.observed.load(Ordering::SeqCst), "the handler's ctx.cancelled() never fired");
    assert!(cleaned.load(Ordering::SeqCst), "the handler was dropped during its clean-up");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_released_at_shutdown_can_react_to_its_cancellation() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let probe = Arc::new(CancelProbe::default());
    let cleaned = Arc::new(AtomicBool::new(false));
    let cfg = config(&server.url(), "[worker]\nshutdown_timeout = \"200ms\"\n[queues.q]\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "slow",
        cleaning_handler(probe.clone(), cleaned.clone()),
    ));
    let id = enqueue(&client, "q", NewJob::new("slow", &json!({})).unwrap()).await;
    eventually("the job runs", LIMIT, || async { probe.started.load(Ordering::SeqCst) == 1 }).await;
    assert_eq!(worker.stop().await.released_at_shutdown, 1);
    assert_eq!(get(&client, "q", &id).await.state, JobState::Ready);
    assert!(probe.observed.load(Ordering::SeqCst), "the handler's ctx.cancelled() never fired");
    assert!(cleaned.load(Ordering::SeqCst), "the handler was dropped during its clean-up");
}

// ---------------------------------------------------------------------------
// A second signal (hurry) cuts the shutdown wait short

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hurry_cuts_the_shutdown_wait_short() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let probe = Arc::new(CancelProbe::default());
    let p = probe.clone();
    let cfg = config(&server.url(), "[worker]\nshutdown_timeout = \"30s\"\n[queues.q]\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "export",
        handler_fn(move |ctx: JobContext, _: Value| {
            let p = p.clone();
            async move { Ok(cancellable_work(p, ctx, Duration::from_secs(5)).await) }
        }),
    ));
    let id = enqueue(&client, "q", NewJob::new("export", &json!({})).unwrap()).await;
    eventually("the job runs", LIMIT, || async { probe.started.load(Ordering::SeqCst) == 1 }).await;

    worker.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = get(&client, "q", &id).await;
    assert_eq!(job.state, JobState::Active, "within shutdown_timeout the job keeps running");
    assert!(!probe.dropped_cancelled.load(Ordering::SeqCst));

    let hurried = Instant::now();
    worker.hurry.cancel();
    let report = worker.stop().await;
    assert!(hurried.elapsed() < Duration::from_secs(2), "stop took {:?} after hurry", hurried.elapsed());
    assert_eq!(report.released_at_shutdown, 1);
    let job = get(&client, "q", &id).await;
    assert_eq!((job.state, job.facts.attempt, job.facts.releases), (JobState::Ready, 0, 1));
    assert_sound(&client, "q").await;
}

// ---------------------------------------------------------------------------
// Handlers configured in TOML (`[handlers.NAME]`, kind "simulate")

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_simulate_handlers_run_jobs() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let cfg = config(
        &server.url(),
        r#"
[queues.q]
backoff = { initial = "50ms", factor = 1.0, max = "50ms", jitter = "none" }
[handlers.sim]
queue = "q"
kind = "simulate"
timeout = "200ms"
"#,
    );
    let worker = RunningWorker::start_config(cfg);
    let flaky = NewJob::new("sim", &json!({"fail_times": 1, "result": {"ok": true}})).unwrap();
    let flaky = enqueue(&client, "q", flaky).await;
    let stuck = NewJob::new("sim", &json!({"sleep_ms": 5000})).unwrap().max_attempts(1);
    let stuck = enqueue(&client, "q", stuck).await;

    let job = wait_job(&client, "q", &flaky, "flaky completed", |j| j.state == JobState::Completed).await;
    assert_eq!(job.facts.attempt, 2);
    assert_eq!(result_of(&job), json!({"ok": true}));
    assert_eq!(job.errors[0].message, "simulated failure on attempt 1");

    let job = wait_job(&client, "q", &stuck, "stuck dead", |j| j.state == JobState::Dead).await;
    assert_eq!(job.dead_reason.as_deref(), Some("attempts_exhausted"));
    assert!(job.errors[0].message.contains("timed out"), "the handler's 200 ms timeout: {:?}", job.errors);
    assert_sound(&client, "q").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_handler_max_version_hands_newer_jobs_back() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let cfg = config(
        &server.url(),
        r#"
[worker]
version_retry_delay = "100ms"
max_version_retries = 1
[queues.q]
[handlers.sim]
queue = "q"
kind = "simulate"
max_version = 1
"#,
    );
    let worker = RunningWorker::start_config(cfg);
    let id = enqueue(&client, "q", NewJob::new("sim", &json!({})).unwrap().version(2)).await;
    let job =
        wait_job(&client, "q", &id, "finished", |j| matches!(j.state, JobState::Completed | JobState::Dead))
            .await;
    assert_eq!(job.state, JobState::Dead, "a version-2 job ran on a max_version = 1 handler");
    assert_eq!(job.dead_reason.as_deref(), Some("unsupported_version"));
    assert_eq!(job.facts.releases, 1);
    worker.stop().await;
}

/// Issue 4's retention check: 50,000 jobs processed with keep-last 1,000.
/// Completions trim in batches and the worker's maintenance trims exactly,
/// so the completed set ends at 1,000, the older job hashes are gone, and
/// dead jobs are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_completed_jobs_at_keep_last_over_50000_jobs() {
    const JOBS: usize = 50_000;
    const DEAD: usize = 20;
    let server = RedisServer::start();
    let client = connect(&server).await;
    let q = "retained";
    let cfg = config(
        &server.url(),
        "[worker]\nconcurrency = 50\nclaim_batch = 50\nreap_interval = \"200ms\"\nevents_max_len = 0\n\n\
         [queues.retained]\nconcurrency = 50\nretention = { keep_last = 1000, max_age = \"none\" }\n",
    );
    let ok = handler_fn(|_ctx: JobContext, payload: Value| async move {
        if payload["die"].as_bool().unwrap_or(false) {
            return Err(JobError::permanent("bad input"));
        }
        Ok(None)
    });
    let mut jobs: Vec<NewJob> =
        (0..DEAD).map(|_| NewJob::new("r", &json!({"die": true})).expect("job")).collect();
    jobs.extend((0..JOBS).map(|i| NewJob::new("r", &json!({ "i": i })).expect("job")));
    client.enqueue_bulk(q, jobs).await.expect("enqueue");
    let worker = RunningWorker::start(Worker::builder(cfg).handler(q, "r", ok));
    drained(&client, q, Duration::from_secs(120)).await;
    let mut conn = server.connection().await;
    let meta = format!("taskline:{{{q}}}:meta");
    let completed_total: u64 =
        redis::cmd("HGET").arg(&meta).arg("completed").query_async(&mut conn).await.expect("hget");
    assert_eq!(completed_total, JOBS as u64, "every job completed once");
    // The maintenance trim runs every 4th reaper pass (200 ms apart).
    eventually("the completed set back at keep_last", Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.counts(q).await.expect("counts").completed == 1_000 }
    })
    .await;
    worker.stop().await;

    let counts = client.counts(q).await.expect("counts");
    assert_eq!((counts.completed, counts.dead, counts.ready, counts.active), (1_000, DEAD as u64, 0, 0));
    let mut job_hashes = 0usize;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("taskline:{{{q}}}:job:*"))
            .arg("COUNT")
            .arg(5_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        job_hashes += keys.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(job_hashes, 1_000 + DEAD, "only the kept completed jobs and the dead ones keep a hash");
    assert_sound(&client, q).await;
}
