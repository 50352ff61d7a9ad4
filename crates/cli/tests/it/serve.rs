//! `taskline serve` over real HTTP against a real `redis-server`: status,
//! SSE and WebSocket streams of a running job, enqueue, the bearer token,
//! bad input, and the demo page's requests with a real worker.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use taskline::{JobId, JobState, Progress};
use taskline_worker::{Config, Worker, WorkerError, WorkerReport};
use tokio_util::sync::CancellationToken;

use crate::http::{Serve, call, get, post_json, read_sse, read_ws};
use crate::support::{Env, claim_options};

/// Enqueues `{"name": "export"}` on queue `q` over HTTP; the new id.
async fn enqueue_over_http(serve: &Serve) -> JobId {
    let reply =
        post_json(serve.addr, "/queues/q/jobs", r#"{"name": "export", "payload": {"rows": 3}}"#).await;
    assert_eq!(reply.status, 201, "{reply:#?}");
    JobId::new(reply.json()["id"].as_str().expect("id")).expect("valid id")
}

/// `(type, state)` of the updates that tell a state.
fn states(updates: &[Value]) -> Vec<(String, String)> {
    updates
        .iter()
        .filter(|u| u["state"].is_string())
        .map(|u| {
            (u["type"].as_str().unwrap_or("").to_string(), u["state"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// The `done` of every progress update, in order.
fn progress_dones(updates: &[Value]) -> Vec<u64> {
    updates
        .iter()
        .filter(|u| u["type"] == "progress")
        .filter_map(|u| u["progress"]["done"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sse_and_websocket_follow_a_running_job() {
    let env = Env::start().await;
    let serve = Serve::start(&env.server.url(), &[]);
    let id = enqueue_over_http(&serve).await;

    let ready = get(serve.addr, &format!("/queues/q/jobs/{id}")).await;
    assert_eq!((ready.status.as_u16(), ready.content_type.as_str()), (200, "application/json"), "{ready:#?}");
    assert_eq!(
        (ready.json()["state"].clone(), ready.json()["name"].clone()),
        (json!("ready"), json!("export"))
    );

    let job = env.client.claim("q", &claim_options(1)).await.expect("claim").jobs.remove(0);
    let path = format!("/queues/q/jobs/{id}");
    let (sse_live, sse_first) = tokio::sync::oneshot::channel();
    let (ws_live, ws_first) = tokio::sync::oneshot::channel();
    let sse = tokio::spawn({
        let (addr, path) = (serve.addr, format!("{path}/events"));
        async move { read_sse(addr, &path, sse_live).await }
    });
    let ws = tokio::spawn({
        let (addr, path) = (serve.addr, format!("{path}/ws"));
        async move { read_ws(addr, &path, ws_live).await }
    });
    sse_first.await.expect("SSE stream is live");
    ws_first.await.expect("WebSocket stream is live");

    for done in 1..=3 {
        env.client.report_progress(&job.lease, &Progress::new(done, 3, "rows")).await.expect("progress");
    }
    let active = get(serve.addr, &path).await.json();
    assert_eq!(
        (active["state"].clone(), active["progress"].clone()),
        (json!("active"), json!({"done": 3, "total": 3, "unit": "rows"}))
    );
    env.client.complete(&job.lease, Some(&json!({"exported": 3}))).await.expect("complete");

    let sse = sse.await.expect("SSE task");
    let names: Vec<&str> = sse.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"), "{sse:#?}");
    assert_eq!(&names[names.len() - 2..], ["status", "end"], "{sse:#?}");
    let updates: Vec<Value> = sse.iter().filter(|(e, _)| e != "end").map(|(_, d)| d.clone()).collect();
    assert_eq!(progress_dones(&updates), vec![1, 2, 3], "{updates:#?}");
    assert_eq!(
        states(&updates),
        vec![("status".into(), "active".into()), ("status".into(), "completed".into())],
        "{updates:#?}"
    );
    assert_eq!(updates.last().expect("final")["result"], json!({"exported": 3}));

    let (messages, reason) = ws.await.expect("WebSocket task");
    assert_eq!(messages, updates, "the WebSocket carries the same updates as SSE");
    assert_eq!(reason, "job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let env = Env::start().await;
    let serve = Serve::start(&env.server.url(), &["--token", "s3cret-token"]);
    let id = env.ready("q", "export", json!({})).await;
    let path = format!("/queues/q/jobs/{id}");

    let missing = get(serve.addr, &path).await;
    assert_eq!(
        (missing.status.as_u16(), missing.error_code()),
        (401, "missing_token".into()),
        "{missing:#?}"
    );
    let wrong = call(serve.addr, "GET", &path, &[("authorization", "Bearer nope")], b"").await;
    assert_eq!((wrong.status.as_u16(), wrong.error_code()), (401, "invalid_token".into()), "{wrong:#?}");
    let post = post_json(serve.addr, "/queues/q/jobs", r#"{"name": "x"}"#).await;
    assert_eq!(post.status, 401, "enqueue needs the token too: {post:#?}");

    let right = call(serve.addr, "GET", &path, &[("authorization", "Bearer s3cret-token")], b"").await;
    assert_eq!(right.status, 200, "{right:#?}");
    assert_eq!(right.json()["id"], json!(id.as_str()));
    let query = get(serve.addr, &format!("{path}?access_token=s3cret-token")).await;
    assert_eq!(query.status, 200, "the token as a query parameter (EventSource, WebSocket): {query:#?}");
    assert_eq!(get(serve.addr, "/").await.status, 200, "the page itself holds no data");

    let ws = format!("ws://{}{path}/ws", serve.addr);
    let refused = tokio_tungstenite::connect_async(ws.as_str()).await.expect_err("no token, no WebSocket");
    assert!(refused.to_string().contains("401"), "{refused}");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}?access_token=s3cret-token"))
        .await
        .expect("with the token");
    let first = socket.next().await.expect("a message").expect("text");
    let first: Value = serde_json::from_str(first.to_text().expect("text")).expect("JSON");
    assert_eq!((first["type"].clone(), first["state"].clone()), (json!("status"), json!("ready")));
}

#[tokio::test]
async fn serving_beyond_loopback_without_a_token_is_refused() {
    let env = Env::start().await;
    let run = env.run(&["serve", "--bind", "0.0.0.0:0"]).code(2);
    assert!(run.stderr.contains("refusing to serve on 0.0.0.0:0 without a token"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_json_errors() {
    let env = Env::start().await;
    let serve = Serve::start(&env.server.url(), &["--max-body-bytes", "2000"]);
    let a = serve.addr;
    let cases: Vec<(&str, crate::http::Reply, u16, &str)> = vec![
        ("malformed JSON", post_json(a, "/queues/q/jobs", "{not json").await, 400, "invalid_body"),
        ("no name", post_json(a, "/queues/q/jobs", r#"{"payload": 1}"#).await, 400, "invalid_body"),
        (
            "unknown field",
            post_json(a, "/queues/q/jobs", r#"{"name": "x", "delay": 5}"#).await,
            400,
            "invalid_body",
        ),
        (
            "bad queue",
            post_json(a, "/queues/bad%20queue/jobs", r#"{"name": "x"}"#).await,
            400,
            "invalid_queue_name",
        ),
        (
            "bad priority",
            post_json(a, "/queues/q/jobs", r#"{"name": "x", "priority": 42}"#).await,
            400,
            "invalid_option",
        ),
        (
            "zero attempts",
            post_json(a, "/queues/q/jobs", r#"{"name": "x", "max_attempts": 0}"#).await,
            400,
            "invalid_option",
        ),
        (
            "not JSON",
            call(a, "POST", "/queues/q/jobs", &[("content-type", "text/plain")], b"{}").await,
            415,
            "not_json",
        ),
        (
            "oversize",
            post_json(a, "/queues/q/jobs", &format!(r#"{{"name": "x", "payload": "{}"}}"#, "x".repeat(5000)))
                .await,
            413,
            "body_too_large",
        ),
        ("unknown job", get(a, "/queues/q/jobs/no-such-job").await, 404, "job_not_found"),
        ("unknown route", get(a, "/nothing/here").await, 404, "not_found"),
    ];
    for (what, reply, status, code) in cases {
        assert_eq!(
            (reply.status.as_u16(), reply.error_code()),
            (status, code.to_string()),
            "{what}: {reply:#?}"
        );
        assert!(!reply.json()["message"].as_str().unwrap_or("").is_empty(), "{what}: a message says why");
    }

    let first = post_json(a, "/queues/q/jobs", r#"{"name": "x", "id": "order-7"}"#).await;
    assert_eq!(first.status, 201, "{first:#?}");
    let again = post_json(a, "/queues/q/jobs", r#"{"name": "x", "id": "order-7"}"#).await;
    assert_eq!((again.status.as_u16(), again.error_code()), (409, "duplicate_job".into()), "{again:#?}");
    assert_eq!(env.client.counts("q").await.expect("counts").ready, 1, "only the valid job was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_enqueues_a_job_and_its_progress_reaches_100_percent() {
    let env = Env::start().await;
    let serve = Serve::start(&env.server.url(), &[]);
    let page = get(serve.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
    assert!(page.body.contains("new EventSource("), "the page follows the job over SSE");
    assert!(page.body.contains(r#"fetch("/queues/demo/jobs""#), "the page enqueues on queue demo");
    // The job the page posts, exactly as the page holds it.
    let job_json = page
        .body
        .split(r#"<script type="application/json" id="demo-job">"#)
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the page holds its demo job");

    let worker = DemoWorker::start(&env);
    let created = post_json(serve.addr, "/queues/demo/jobs", job_json).await;
    assert_eq!(created.status, 201, "{created:#?}");
    let events_url = created.json()["events_url"].as_str().expect("events_url").to_string();
    let (live, _) = tokio::sync::oneshot::channel();
    let events = read_sse(serve.addr, &events_url, live).await;
    worker.stop().await;

    let updates: Vec<Value> = events.iter().filter(|(e, _)| e != "end").map(|(_, d)| d.clone()).collect();
    let dones = progress_dones(&updates);
    assert!(dones.len() >= 3, "live progress along the way, not just the end: {dones:?}");
    assert!(dones.windows(2).all(|w| w[0] < w[1]), "the bar only moves forward: {dones:?}");
    let last = updates.last().expect("a final status");
    assert_eq!(last["state"], json!(JobState::Completed.as_str()), "{last:#}");
    assert_eq!(last["progress"], json!({"done": 100, "total": 100, "unit": "rows"}), "100%");
}

/// The shipped demo worker (`config/demo.toml`), in-process, pointed at
/// the test's Redis.
pub struct DemoWorker {
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<WorkerReport, WorkerError>>,
}

impl DemoWorker {
    /// Loads `config/demo.toml` and starts the worker.
    pub fn start(env: &Env) -> DemoWorker {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/demo.toml"));
        let mut config = Config::load(path).expect("config/demo.toml loads");
        config.redis.url = env.server.url();
        let worker = Worker::builder(config).build().expect("demo worker");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let running = tokio::spawn(async move { worker.run(token, CancellationToken::new()).await });
        DemoWorker { shutdown, running }
    }

    /// Shuts the worker down gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.running).await;
        stopped.expect("the demo worker stops").expect("join").expect("run");
    }
}
