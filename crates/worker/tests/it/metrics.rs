//! The metrics endpoint of an in-process worker: `/metrics` scraped over
//! plain HTTP and parsed, counters compared with the jobs processed, the
//! sampled queue gauges, the DLQ alert firing and clearing, and `/readyz`
//! following a Redis outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use taskline::{Client, JobId, NewJob};
use taskline_testkit::RedisServer;
use taskline_worker::{JobContext, JobError, Worker, handler_fn};

use crate::scrape::{free_port, get, scrape, value, wait_for_value};
use crate::support::{RunningWorker, config, drained, eventually};

const LIMIT: Duration = Duration::from_secs(8);

async fn enqueue(client: &Client, name: &str, payload: serde_json::Value, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(client.enqueue("q", NewJob::new(name, &payload).expect("job")).await.expect("enqueue"));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_and_the_dlq_alert_fires_and_clears() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let port = free_port();
    let cfg = config(
        &server.url(),
        &format!(
            r#"
[worker]
metrics_addr = "127.0.0.1:{port}"
[queues.q]
concurrency = 8
max_attempts = 3
backoff = {{ initial = "10ms", factor = 1.0, max = "10ms", jitter = "none" }}
dlq_alert = 3
[handlers.ok]
queue = "q"
kind = "simulate"
[handlers.flaky]
queue = "q"
kind = "simulate"
"#
        ),
    );
    // `bad` fails permanently until the test "deploys a fix".
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        "q",
        "bad",
        handler_fn(move |_ctx: JobContext, _n: u32| {
            let fixed = f.load(Ordering::SeqCst);
            async move { if fixed { Ok(None) } else { Err(JobError::permanent("bad input")) } }
        }),
    ));

    enqueue(&client, "ok", json!({}), 5).await;
    enqueue(&client, "flaky", json!({"fail_times": 1}), 2).await;
    let dead_ids = enqueue(&client, "bad", json!(7), 3).await;
    let counts = drained(&client, "q", LIMIT).await;
    assert_eq!((counts.completed, counts.dead), (7, 3), "{counts:?}");

    // A runner counts an outcome just after Redis recorded it, and the
    // sampler sees the final counts within a tick or two: wait for both.
    let job = |name| [("queue", "q"), ("name", name)];
    wait_for_value(port, "taskline_jobs_completed_total", &job("ok"), 5.0).await;
    wait_for_value(port, "taskline_jobs_completed_total", &job("flaky"), 2.0).await;
    wait_for_value(port, "taskline_jobs_dead_total", &job("bad"), 3.0).await;
    wait_for_value(port, "taskline_queue_jobs", &[("queue", "q"), ("state", "dead")], 3.0).await;
    wait_for_value(port, "taskline_dlq_alert", &[("queue", "q")], 1.0).await;
    let m = scrape(port).await;
    assert_eq!(value(&m, "taskline_jobs_completed_total", &job("ok")), 5.0);
    assert_eq!(value(&m, "taskline_jobs_completed_total", &job("flaky")), 2.0);
    assert_eq!(value(&m, "taskline_jobs_completed_total", &job("bad")), 0.0);
    assert_eq!(value(&m, "taskline_jobs_failed_total", &job("flaky")), 2.0);
    assert_eq!(value(&m, "taskline_jobs_retried_total", &job("flaky")), 2.0);
    assert_eq!(value(&m, "taskline_jobs_failed_total", &job("bad")), 3.0);
    assert_eq!(value(&m, "taskline_jobs_dead_total", &job("bad")), 3.0);
    assert_eq!(value(&m, "taskline_jobs_retried_total", &job("bad")), 0.0);
    assert_eq!(value(&m, "taskline_jobs_released_total", &job("ok")), 0.0);
    assert_eq!(value(&m, "taskline_lease_lost_total", &[("queue", "q")]), 0.0);
    // The histogram counts completions only, and has buckets.
    assert_eq!(value(&m, "taskline_job_duration_seconds_count", &job("ok")), 5.0);
    assert_eq!(value(&m, "taskline_job_duration_seconds_count", &job("flaky")), 2.0);
    assert_eq!(value(&m, "taskline_job_duration_seconds_count", &job("bad")), 0.0);
    let inf_bucket = [("queue", "q"), ("name", "ok"), ("le", "+Inf")];
    assert_eq!(value(&m, "taskline_job_duration_seconds_bucket", &inf_bucket), 5.0);
    assert_eq!(value(&m, "taskline_jobs_in_flight", &[("queue", "q")]), 0.0);
    for (state, want) in
        [("ready", 0.0), ("delayed", 0.0), ("active", 0.0), ("completed", 7.0), ("dead", 3.0)]
    {
        assert_eq!(value(&m, "taskline_queue_jobs", &[("queue", "q"), ("state", state)]), want, "{state}");
    }
    assert!(!m.keys().any(|k| k.starts_with("taskline_redis_errors_total")), "no Redis error: {m:?}");

    // A fix is deployed, the dead letters are replayed and complete: the
    // alert clears.
    fixed.store(true, Ordering::SeqCst);
    client.replay("q", &dead_ids).await.expect("replay");
    let counts = drained(&client, "q", LIMIT).await;
    assert_eq!((counts.completed, counts.dead), (10, 0), "{counts:?}");
    wait_for_value(port, "taskline_dlq_alert", &[("queue", "q")], 0.0).await;
    wait_for_value(port, "taskline_jobs_completed_total", &job("bad"), 3.0).await;
    let m = scrape(port).await;
    assert_eq!(value(&m, "taskline_queue_jobs", &[("queue", "q"), ("state", "dead")]), 0.0);
    assert_eq!(value(&m, "taskline_jobs_completed_total", &job("bad")), 3.0);
    assert_eq!(value(&m, "taskline_jobs_dead_total", &job("bad")), 3.0, "counters never go down");
    assert_eq!(value(&m, "taskline_job_duration_seconds_count", &job("bad")), 3.0);

    worker.stop().await;
    assert!(get(port, "/healthz").await.is_none(), "the server stops with the worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_redis_is_down_and_healthz_stays_200() {
    let server = RedisServer::start();
    let port = free_port();
    // Short Redis timeouts: the body's first lines still belong to [redis].
    let cfg = config(
        &server.url(),
        &format!(
            "response_timeout = \"1s\"\nconnection_timeout = \"1s\"\n[worker]\nmetrics_addr = \"127.0.0.1:{port}\"\n[queues.q]\n"
        ),
    );
    let worker = RunningWorker::start_config(cfg);
    let status = |path: &'static str| async move { get(port, path).await.map(|(s, _)| s) };
    eventually("/readyz 200", LIMIT, || async { status("/readyz").await == Some(200) }).await;
    assert_eq!(status("/healthz").await, Some(200));

    server.kill();
    eventually("/readyz 503 while Redis is down", LIMIT, || async { status("/readyz").await == Some(503) })
        .await;
    assert_eq!(status("/healthz").await, Some(200), "the process itself is alive");
    let m = scrape(port).await;
    // The idle wait or the sampler, whichever noticed first.
    let errors: f64 =
        m.iter().filter(|(k, _)| k.starts_with("taskline_redis_errors_total{")).map(|(_, v)| v).sum();
    assert!(errors >= 1.0, "Redis errors are counted: {m:?}");
    assert!(!m.keys().any(|k| k.starts_with("taskline_redis_reconnects_total")), "not back yet: {m:?}");

    server.restart();
    eventually("/readyz 200 after Redis is back", LIMIT, || async { status("/readyz").await == Some(200) })
        .await;
    let m = scrape(port).await;
    let reconnects = m.get("taskline_redis_reconnects_total").copied().unwrap_or(0.0);
    assert!(reconnects >= 1.0, "the way back is counted: {m:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_process_keep_their_own_metrics() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let (pa, pb) = (free_port(), free_port());
    let body = |port: u16, queue: &str| {
        format!(
            "[worker]\nmetrics_addr = \"127.0.0.1:{port}\"\n[queues.{queue}]\n[handlers.ok]\nqueue = \"{queue}\"\nkind = \"simulate\"\n"
        )
    };
    let a = RunningWorker::start_config(config(&server.url(), &body(pa, "qa")));
    let b = RunningWorker::start_config(config(&server.url(), &body(pb, "qb")));
    for _ in 0..4 {
        client.enqueue("qa", NewJob::new("ok", &json!({})).expect("job")).await.expect("enqueue");
    }
    client.enqueue("qb", NewJob::new("ok", &json!({})).expect("job")).await.expect("enqueue");
    drained(&client, "qa", LIMIT).await;
    drained(&client, "qb", LIMIT).await;
    let done = |q| [("queue", q), ("name", "ok")];
    wait_for_value(pa, "taskline_jobs_completed_total", &done("qa"), 4.0).await;
    wait_for_value(pb, "taskline_jobs_completed_total", &done("qb"), 1.0).await;
    let (ma, mb) = (scrape(pa).await, scrape(pb).await);
    assert_eq!(value(&ma, "taskline_jobs_completed_total", &done("qa")), 4.0);
    assert_eq!(value(&ma, "taskline_jobs_completed_total", &done("qb")), 0.0);
    assert_eq!(value(&mb, "taskline_jobs_completed_total", &done("qb")), 1.0);
    assert_eq!(value(&mb, "taskline_jobs_completed_total", &done("qa")), 0.0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_stops_the_worker_at_start() {
    let server = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = config(&server.url(), &format!("[worker]\nmetrics_addr = \"127.0.0.1:{port}\"\n[queues.q]\n"));
    let worker = Worker::builder(cfg).build().expect("build");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let err = worker.run(shutdown.clone(), shutdown).await.expect_err("the address is taken");
    assert!(err.to_string().contains("worker.metrics_addr"), "{err}");
}
