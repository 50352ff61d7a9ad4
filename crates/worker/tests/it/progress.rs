//! Progress reports and checkpoints from handlers, in-process: coalescing
//! of a tight loop of reports into a few writes, the exact final value, and
//! a checkpoint handed to the next attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, JobId, JobState, NewJob, Progress};
use taskline_testkit::RedisServer;
use taskline_worker::{JobContext, JobError, Worker, handler_fn};

use crate::support::{RunningWorker, config, eventually};

const LIMIT: Duration = Duration::from_secs(15);

/// Calls of `command` (e.g. `evalsha`) so far, from INFO commandstats.
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut conn = server.connection().await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|line| line.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// The `progress` events of job `id` in `queue`'s stream, oldest first.
async fn progress_events(client: &Client, queue: &str, id: &JobId) -> Vec<taskline::Event> {
    let events = client.read_events(queue, None, 100_000).await.expect("read events");
    events.into_iter().filter(|e| e.event == "progress" && e.job_id == id.as_str()).collect()
}

async fn wait_state(client: &Client, queue: &str, id: &JobId, state: JobState) {
    eventually(&format!("job {id} is {state}"), LIMIT, || async {
        client.get_job(queue, id).await.is_ok_and(|j| j.state == state)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_progress_calls_cost_a_few_writes_and_end_exact() {
    const CALLS: u64 = 100_000;
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let ran_for: Arc<Mutex<Duration>> = Arc::default();
    let r = ran_for.clone();
    // The loop yields now and then and spans about 1.5 s, so the flusher
    // really runs alongside it: the bound is about coalescing, not about a
    // loop too short to be seen.
    let handler = handler_fn(move |ctx: JobContext, _: serde_json::Value| {
        let r = r.clone();
        async move {
            let started = Instant::now();
            for done in 1..=CALLS {
                if done == CALLS {
                    ctx.progress_with_message(done, CALLS, "rows", "all rows exported");
                } else {
                    ctx.progress(done, CALLS, "rows");
                }
                if done % 1_000 == 0 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
            *r.lock().unwrap() = started.elapsed();
            Ok(None)
        }
    });
    let cfg = config(&server.url(), "[worker]\nprogress_interval = \"250ms\"\n\n[queues.export]\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler("export", "export", handler));
    let before = calls(&server, "evalsha").await;

    let id =
        client.enqueue("export", NewJob::new("export", &json!({})).expect("job")).await.expect("enqueue");
    wait_state(&client, "export", &id, JobState::Completed).await;
    worker.stop().await;

    let job = client.get_job("export", &id).await.expect("get_job");
    let stored: Progress =
        serde_json::from_str(job.progress.as_deref().expect("progress stored")).expect("json");
    assert_eq!(
        stored,
        Progress::new(CALLS, CALLS, "rows").with_message("all rows exported"),
        "exact final value"
    );

    let writes = progress_events(&client, "export", &id).await;
    let ran_for = *ran_for.lock().unwrap();
    // One write per 250 ms interval while the loop runs, plus the first
    // report and the final flush.
    let expected_most = (ran_for.as_millis() / 250) as usize + 3;
    assert!(ran_for >= Duration::from_secs(1), "the loop ran long enough to measure: {ran_for:?}");
    assert!(
        writes.len() >= 2 && writes.len() <= expected_most,
        "{} progress writes in {ran_for:?} (at most {expected_most})",
        writes.len()
    );
    let last = writes.last().expect("a progress event");
    assert_eq!(last.extra.get("done").map(String::as_str), Some("100000"), "{last:?}");
    assert_eq!(last.extra.get("message").map(String::as_str), Some("all rows exported"));
    let dones: Vec<u64> = writes.iter().map(|e| e.extra["done"].parse().expect("number")).collect();
    assert!(dones.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {dones:?}");

    // Every script call Redis served while the job ran: the claim, the
    // completion, heartbeats and maintenance included. A few hundred at most.
    let script_calls = calls(&server, "evalsha").await - before;
    assert!(script_calls <= 300, "{script_calls} script calls for {CALLS} progress reports");
}

/// What one attempt found to resume from: `(attempt, checkpoint)`.
type Resumed = (u32, Option<u64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_attempt_receives_the_checkpoint() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let seen: Arc<Mutex<Vec<Resumed>>> = Arc::default();
    let s = seen.clone();
    let handler = handler_fn(move |ctx: JobContext, _: serde_json::Value| {
        let s = s.clone();
        async move {
            let resumed: Option<u64> = ctx.resume_from().map_err(JobError::from)?;
            s.lock().unwrap().push((ctx.attempt, resumed));
            if ctx.attempt == 1 {
                ctx.checkpoint(&500_u64).await?;
                return Err(JobError::transient("interrupted at row 500").retry_after(Duration::ZERO));
            }
            Ok(Some(json!({ "resumed_at": resumed })))
        }
    });
    let worker = RunningWorker::start(Worker::builder(config(&server.url(), "[queues.q]\n")).handler(
        "q",
        "resumable",
        handler,
    ));
    let id = client.enqueue("q", NewJob::new("resumable", &json!({})).expect("job")).await.expect("enqueue");
    wait_state(&client, "q", &id, JobState::Completed).await;
    worker.stop().await;

    assert_eq!(*seen.lock().unwrap(), vec![(1, None), (2, Some(500))]);
    let job = client.get_job("q", &id).await.expect("get_job");
    assert_eq!(job.facts.checkpoint.as_deref(), Some("500"));
    assert_eq!(job.result.as_deref(), Some(r#"{"resumed_at":500}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_checkpoint_fails_the_attempt_with_a_clear_error() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let handler = handler_fn(move |ctx: JobContext, _: serde_json::Value| async move {
        ctx.checkpoint(&"x".repeat(2_000)).await?;
        Ok(None)
    });
    let cfg =
        config(&server.url(), "[worker]\nmax_checkpoint_bytes = 1000\n\n[queues.q]\nmax_attempts = 1\n");
    let worker = RunningWorker::start(Worker::builder(cfg).handler("q", "big", handler));
    let id = client.enqueue("q", NewJob::new("big", &json!({})).expect("job")).await.expect("enqueue");
    wait_state(&client, "q", &id, JobState::Dead).await;
    worker.stop().await;

    let job = client.get_job("q", &id).await.expect("get_job");
    let message = &job.errors.last().expect("an error recorded").message;
    assert!(message.contains("checkpoint is 2002 bytes, over the 1000-byte limit"), "{message}");
    assert_eq!(job.facts.checkpoint, None, "nothing stored");
}
