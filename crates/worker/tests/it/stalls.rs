//! Leases across Redis stalls: the findings F2 and F3 of RELIABILITY.md.
//!
//! - F3: after Redis was frozen for longer than a lease, the first reaper
//!   pass must not take the leases of live workers (their heartbeats are
//!   queued right behind it); the next passes still recover a dead worker's.
//! - F2: a finished job whose outcome waits for Redis keeps its lease held
//!   and renewed, so the outcome lands when Redis is back instead of being
//!   refused as a lost lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use taskline::{ClaimOptions, Client, JobState, NewJob};
use taskline_testkit::RedisServer;
use taskline_worker::metrics::names;
use taskline_worker::reaper::Reaper;
use taskline_worker::{JobContext, Worker, handler_fn};

use crate::scrape::{free_port, scrape, value, wait_for_value};
use crate::support::{RunningWorker, config, eventually, redis_with_aof};

const LIMIT: Duration = Duration::from_secs(10);

/// Finding F3. Before the fix the pass queued behind the stall reaped
/// against the server's clock after the stall, when every lease had passed
/// its deadline, and took the live worker's job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reap_after_a_stall_longer_than_the_lease_takes_no_live_lease() {
    let q = "f3";
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let reaper = Arc::new(Reaper::new(client.clone(), vec![q.to_string()], Duration::from_secs(3600)));
    assert_eq!(reaper.exec().await, 0, "a pass before the stall");
    let id = client.enqueue(q, NewJob::new("x", &json!({})).expect("job")).await.expect("enqueue");
    let lease = Duration::from_millis(800);
    let options = ClaimOptions { count: 1, lease, worker: "w1".into() };
    let held = client.claim(q, &options).await.expect("claim").jobs.remove(0).lease;

    // Redis freezes for twice the lease with a reaper pass queued behind
    // the stall; the worker holding the lease is alive all along.
    tokio::task::block_in_place(|| server.pause());
    let r = reaper.clone();
    let pass = tokio::spawn(async move { r.exec().await });
    tokio::time::sleep(lease * 2).await;
    tokio::task::block_in_place(|| server.resume());
    assert_eq!(pass.await.expect("pass"), 0, "the first pass after the stall took a live worker's lease");

    // The worker's heartbeat lands and renews the lease; the next pass
    // leaves it alone.
    let extended = client.extend(std::slice::from_ref(&held), lease).await.expect("extend");
    assert!(extended.lost.is_empty(), "the lease survived the stall");
    assert_eq!(reaper.exec().await, 0, "a renewed lease is not reaped");

    // Now the worker dies. A pass takes only leases that had expired by
    // the previous pass: the first pass after the deadline leaves the job,
    // the one after recovers it.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(reaper.exec().await, 0, "one pass of delay after the deadline");
    assert_eq!(reaper.exec().await, 1, "a dead worker's lease is recovered");
    let job = client.get_job(q, &id).await.expect("job");
    assert_eq!((job.state, job.facts.attempt), (JobState::Ready, 1));
    assert_eq!(job.errors[0].message, "lease expired");
}

/// Finding F2. Redis dies just as the handler returns and stays down for
/// longer than the lease. Before the fix the runner dropped the lease when
/// the handler returned, so `taskline_leases_held` fell to 0 while the
/// outcome was still unrecorded and nothing renewed the lease once Redis was
/// back; a resend that arrived after the next reap was refused as a lost
/// lease and the job ran again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_lease_is_held_until_its_outcome_lands_after_an_outage() {
    let q = "f2";
    let server = Arc::new(redis_with_aof());
    let client = Client::connect(&server.url()).await.expect("connect");
    let port = free_port();
    let cfg = config(
        &server.url(),
        &format!(
            "[worker]\nlease = \"1s\"\nheartbeat = \"200ms\"\nreap_interval = \"1s\"\n\
             metrics_addr = \"127.0.0.1:{port}\"\n[queues.{q}]\nconcurrency = 1\n"
        ),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let (s, r) = (server.clone(), runs.clone());
    let worker = RunningWorker::start(Worker::builder(cfg).handler(
        q,
        "work",
        handler_fn(move |_ctx: JobContext, _: serde_json::Value| {
            let (server, runs) = (s.clone(), r.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Redis dies as the first attempt finishes.
                    tokio::task::spawn_blocking(move || server.kill()).await.expect("kill");
                }
                Ok(Some(json!("done")))
            }
        }),
    ));
    let id = client.enqueue(q, NewJob::new("work", &json!({})).expect("job")).await.expect("enqueue");
    eventually("the handler ran", LIMIT, || async { runs.load(Ordering::SeqCst) == 1 }).await;

    // Redis is down: the outcome cannot land, and its lease stays held
    // through several heartbeats.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let samples = scrape(port).await;
    assert_eq!(value(&samples, names::LEASES_HELD, &[]), 1.0, "the finished job's lease is still held");

    // Down for 2.5 s in all, longer than the lease; then back on its AOF.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    tokio::task::block_in_place(|| server.restart());
    eventually("the test client reconnects", LIMIT, || async { client.counts(q).await.is_ok() }).await;
    let done = |job: &taskline::Job| job.state == JobState::Completed;
    eventually("the outcome landed", LIMIT, || async {
        client.get_job(q, &id).await.is_ok_and(|j| done(&j))
    })
    .await;
    let job = client.get_job(q, &id).await.expect("job");
    assert_eq!(job.facts.attempt, 1, "the job ran once");
    assert!(job.errors.is_empty(), "no lease expired: {:?}", job.errors);
    assert_eq!(job.result.as_deref(), Some("\"done\""));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    wait_for_value(port, names::LEASES_HELD, &[], 0.0).await;
    assert_eq!(value(&scrape(port).await, names::LEASE_LOST, &[("queue", q)]), 0.0);
    worker.stop().await;
}
