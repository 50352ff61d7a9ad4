//! End-to-end demo (the README's first command runs it through
//! `scripts/demo`): starts two real `taskline-worker` processes, enqueues a
//! mix of jobs, shows progress, and ends with a summary of where every job
//! went. Uses `REDIS_URL` when set, else starts a private `redis-server`.
//!
//! The workers run the built-in `simulate` handler, whose payload says what
//! to do: succeed, fail transiently a few times, fail permanently, or panic.

use std::error::Error;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::{Client, JobState, NewJob};
use taskline_testkit::RedisServer;

const WORKERS: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start();
            let url = server.url();
            println!("started a private redis-server at {url}");
            (Some(server), url)
        }
    };
    let suffix = &taskline::JobId::generate().to_string()[24..];
    let (images, payments) = (format!("demo-images-{suffix}"), format!("demo-payments-{suffix}"));
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, worker_config(&url, &images, &payments))?;

    let binary = worker_binary()?;
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|n| {
            let log = std::fs::File::create(dir.path().join(format!("worker-{n}.log")))?;
            Command::new(&binary).arg("--config").arg(&config).stdout(Stdio::null()).stderr(log).spawn()
        })
        .collect::<Result<_, _>>()?;
    println!("started {WORKERS} taskline-worker processes (logs in {})", dir.path().display());

    let client = Client::connect(&url).await?;
    let mut image_jobs = Vec::new();
    for i in 0..40 {
        image_jobs.push(NewJob::new("resize_image", &json!({"sleep_ms": 30, "result": {"image": i}}))?);
    }
    for i in 0..4 {
        // Invalid input: fails permanently, straight to the dead letter queue.
        image_jobs.push(NewJob::new(
            "resize_image",
            &json!({"fail_times": 99, "fail_kind": "permanent", "image": i}),
        )?);
    }
    // Nobody handles this name: dead with reason unknown_job.
    image_jobs.push(NewJob::new("transcode_video", &json!({"video": 1}))?);
    let mut payment_jobs = Vec::new();
    for i in 0..8 {
        // The gateway answers 503 twice, then accepts: retried with backoff.
        payment_jobs.push(NewJob::new("charge_card", &json!({"sleep_ms": 20, "fail_times": 2, "order": i}))?);
    }
    for i in 0..2 {
        // Always crashes: retried until its 3 attempts are spent.
        payment_jobs
            .push(NewJob::new("charge_card", &json!({"panic": true, "order": 100 + i}))?.max_attempts(3));
    }
    let total = image_jobs.len() + payment_jobs.len();
    client.enqueue_bulk(&images, image_jobs).await?;
    client.enqueue_bulk(&payments, payment_jobs).await?;
    println!("enqueued {total} jobs on queues {images} and {payments}\n");

    let started = Instant::now();
    loop {
        let (a, b) = (client.counts(&images).await?, client.counts(&payments).await?);
        println!(
            "  ready {:>3}  delayed {:>3}  active {:>3}  completed {:>3}  dead {:>3}",
            a.ready + b.ready,
            a.delayed + b.delayed,
            a.active + b.active,
            a.completed + b.completed,
            a.dead + b.dead
        );
        if a.ready + a.delayed + a.active + b.ready + b.delayed + b.active == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the demo did not finish within 60 s; see the worker logs".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut completed = 0;
    let mut dead = Vec::new();
    for queue in [&images, &payments] {
        completed += client.counts(queue).await?.completed;
        for id in client.list_jobs(queue, JobState::Dead, 0, 100).await? {
            dead.push(client.get_job(queue, &id).await?);
        }
    }
    println!("\nall {total} jobs accounted for in {:.1?}:", started.elapsed());
    println!("  completed: {completed} (8 of them after two transient failures each)");
    println!("  dead:      {} (kept in the dead letter queue until replayed or purged)", dead.len());
    for job in &dead {
        let last = job.errors.last().map(|e| e.message.as_str()).unwrap_or("");
        println!(
            "    {} {:<16} on {:<22} reason {:<18} after {} attempt(s): {last}",
            job.id,
            job.facts.name,
            job.queue,
            job.dead_reason.as_deref().unwrap_or(""),
            job.errors.len()
        );
    }
    println!(
        "\ndead letters live in the zset taskline:{{<queue>}}:dead; a job's record in the hash taskline:{{<queue>}}:job:<id>"
    );

    for worker in &mut workers {
        Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status()?;
    }
    for worker in &mut workers {
        let status = worker.wait()?;
        println!("worker {} stopped gracefully: {status}", worker.id());
    }
    if completed + dead.len() as u64 != total as u64 {
        return Err(format!("{} jobs unaccounted for", total as u64 - completed - dead.len() as u64).into());
    }
    Ok(())
}

/// The `taskline-worker` binary next to this example (`target/<profile>/`),
/// or `TASKLINE_WORKER_BIN`.
fn worker_binary() -> Result<PathBuf, Box<dyn Error>> {
    if let Ok(path) = std::env::var("TASKLINE_WORKER_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let candidate =
        exe.parent().and_then(|examples| examples.parent()).map(|dir| dir.join("taskline-worker"));
    match candidate {
        Some(path) if path.exists() => Ok(path),
        _ => Err(
            "taskline-worker is not built: run `cargo build -p taskline-worker` first (scripts/demo does)"
                .into(),
        ),
    }
}

fn worker_config(url: &str, images: &str, payments: &str) -> String {
    format!(
        r#"
[redis]
url = "{url}"

[worker]
concurrency = 8
shutdown_timeout = "5s"

[queues.{images}]
weight = 3
concurrency = 6

[queues.{payments}]
strict = true
concurrency = 2
backoff = {{ initial = "200ms", factor = 2.0, max = "2s", jitter = "equal" }}

[handlers.resize_image]
queue = "{images}"
kind = "simulate"

[handlers.charge_card]
queue = "{payments}"
kind = "simulate"
"#
    )
}
