//! End-to-end demo: a producer enqueues a mix of jobs and a small in-process
//! worker runs them through the real protocol (claim, complete, fail with
//! backoff), showing progress and ending with a summary of where every job
//! went. Uses `REDIS_URL` when set, else starts a private `redis-server`.
//!
//! Run: `cargo run -p taskline --example demo`

use std::error::Error;
use std::time::{Duration, Instant};

use serde_json::json;
use taskline::keys::QueueKeys;
use taskline::{Backoff, ClaimOptions, Client, Failure, Jitter, JobState, NewJob, QueueName};
use taskline_testkit::RedisServer;

const WORKERS: usize = 4;

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
    let client = Client::connect(&url).await?;
    let queue = format!("demo-{}", &uuid_suffix());

    // A quick backoff so the demo's retries happen within seconds.
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        factor: 2.0,
        max: Duration::from_secs(2),
        jitter: Jitter::Equal,
    };
    let mut jobs = Vec::new();
    for i in 0..30 {
        jobs.push(NewJob::new("resize_image", &json!({"image": i}))?);
    }
    for i in 0..8 {
        // Fails transiently twice, then succeeds.
        jobs.push(NewJob::new("charge_card", &json!({"order": i}))?.backoff(backoff));
    }
    for i in 0..4 {
        // Invalid input: fails permanently on the first attempt.
        jobs.push(NewJob::new("send_sms", &json!({"phone": format!("not-a-number-{i}")}))?);
    }
    for i in 0..2 {
        // Always times out: exhausts 3 attempts.
        jobs.push(NewJob::new("call_partner_api", &json!({"call": i}))?.max_attempts(3).backoff(backoff));
    }
    let total = jobs.len();
    client.enqueue_bulk(&queue, jobs).await?;
    println!("enqueued {total} jobs on queue {queue}; running {WORKERS} workers\n");

    let started = Instant::now();
    let workers: Vec<_> =
        (0..WORKERS).map(|n| tokio::spawn(work(client.clone(), queue.clone(), n))).collect();
    loop {
        let c = client.counts(&queue).await?;
        println!(
            "  ready {:>3}  delayed {:>3}  active {:>3}  completed {:>3}  dead {:>3}",
            c.ready, c.delayed, c.active, c.completed, c.dead
        );
        if c.ready + c.delayed + c.active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for w in workers {
        w.abort();
    }

    let counts = client.counts(&queue).await?;
    println!("\nall {total} jobs accounted for in {:.1?}:", started.elapsed());
    println!("  completed: {}", counts.completed);
    println!("  dead:      {} (in the dead letter queue, kept until replayed or purged)", counts.dead);
    for id in client.list_jobs(&queue, JobState::Dead, 0, 100).await? {
        let job = client.get_job(&queue, &id).await?;
        assert_eq!(job.state, JobState::Dead);
        let last = job.errors.last().map(|e| e.message.as_str()).unwrap_or("");
        println!(
            "    {} {:<16} reason {:<18} after {} attempt(s), last error: {last}",
            job.id,
            job.name,
            job.dead_reason.unwrap_or_default(),
            job.errors.len()
        );
    }
    let keys = QueueKeys::new(&client.options().prefix, &QueueName::new(&queue)?);
    println!("\ndead letters: zset {}; each job's full record: hash {}", keys.dead(), keys.job("<id>"));
    assert_eq!(counts.completed + counts.dead, total as u64, "every job must be completed or dead");
    Ok(())
}

/// One worker: claim a job, run it, record the outcome; about one round trip
/// per job thanks to complete-and-claim.
async fn work(client: Client, queue: String, n: usize) -> taskline::Result<()> {
    let options =
        ClaimOptions { count: 1, lease: Duration::from_secs(30), worker: format!("demo-worker-{n}") };
    let mut claim = client.claim(&queue, &options).await?;
    loop {
        let Some(job) = claim.jobs.pop() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            claim = client.claim(&queue, &options).await?;
            continue;
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // the "work"
        let failure = match job.name.as_str() {
            "charge_card" if job.attempt <= 2 => {
                Some(Failure::transient("payment gateway returned 503", retry(&job)))
            }
            "send_sms" => {
                Some(Failure::permanent("phone number is not a number").with_reason("invalid_payload"))
            }
            "call_partner_api" => Some(Failure::transient("partner API timed out after 10s", retry(&job))),
            _ => None,
        };
        match failure {
            None => {
                claim = client.complete_and_claim(&job.lease, Some(&json!({"ok": true})), &options).await?.1
            }
            Some(failure) => {
                client.fail(&job.lease, &failure).await?;
                claim = client.claim(&queue, &options).await?;
            }
        }
    }
}

fn retry(job: &taskline::ClaimedJob) -> Duration {
    job.backoff.unwrap_or_default().delay(job.attempt)
}

fn uuid_suffix() -> String {
    taskline::JobId::generate().as_str()[24..].to_string()
}
