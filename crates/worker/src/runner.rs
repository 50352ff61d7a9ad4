//! Runs one claimed job: dispatch, timeout, cancellation, and recording the
//! outcome so that it is neither lost nor recorded twice.
//!
//! Outcome calls that fail on the connection are resent with the same lease
//! token until they land (the scripts answer a resend with the first
//! outcome), or until the lease is reported lost, or until a hard stop.
//! The job's lease stays in the held leases from the claim until its
//! outcome is recorded or given up, so the heartbeat keeps renewing it
//! while an outcome waits for Redis to come back (finding F2).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskline::{ClaimOptions, ClaimedJob, Completion, Error, FailOutcome, Failure};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::handler::{JobContext, JobError};
use crate::progress::JobReporter;
use crate::worker::Shared;

/// How long a cancelled handler (timeout, lost lease, shutdown) may take to
/// react to `ctx.cancelled()` before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// First and longest pause between resends of an outcome. The cap is well
/// under a heartbeat, so an outcome lands soon after Redis is back.
const RESEND_FIRST: Duration = Duration::from_millis(100);
const RESEND_MAX: Duration = Duration::from_millis(500);

/// How one attempt ended, before it is recorded.
enum Outcome {
    Success(Option<serde_json::Value>),
    Failed(JobError),
    /// Give the job back without spending the attempt.
    Release(Option<Duration>),
    /// The lease was lost: another attempt owns the job; record nothing.
    Discard,
}

/// Runs `job` of queue index `queue` and, while the scheduler agrees, the
/// successors that complete-and-claim hands over. Holds one slot
/// throughout; [`record`] frees it when no successor follows.
pub(crate) async fn run(shared: Arc<Shared>, queue: usize, first: ClaimedJob) {
    let mut next = Some(first);
    while let Some(job) = next.take() {
        let span = info_span!(
            "job",
            id = %job.lease.job_id,
            queue = %job.lease.queue,
            job_name = %job.facts.name,
            attempt = job.facts.attempt,
            correlation_id = job.facts.correlation_id.as_deref().unwrap_or(""),
        );
        next = async {
            if shared.log_payloads {
                info!(payload = %job.facts.payload, "claimed");
            } else {
                info!("claimed");
            }
            let _in_flight = shared.metrics.in_flight(&job.lease.queue);
            let started = Instant::now();
            // Held until the outcome is recorded or given up, not only
            // while the handler runs: the heartbeat must renew the lease of
            // an outcome that waits for Redis.
            let lost = CancellationToken::new();
            shared.leases.insert(job.lease.clone(), lost.clone());
            let outcome = execute(&shared, queue, &job, &lost).await;
            shared.leases.recording(&job.lease);
            let successor = record(&shared, queue, &job, outcome, started).await;
            shared.leases.remove(&job.lease);
            successor
        }
        .instrument(span)
        .await;
    }
}

/// Runs the handler of `job`; `lost` is cancelled when its lease is lost.
async fn execute(shared: &Shared, queue: usize, job: &ClaimedJob, lost: &CancellationToken) -> Outcome {
    let Some(registered) = shared.handlers[queue].get(&job.facts.name) else {
        return Outcome::Failed(
            JobError::permanent(format!(
                "no handler for job name {:?} on queue {:?}; register one, or enqueue it to a queue whose workers handle it",
                job.facts.name, job.lease.queue
            ))
            .with_reason("unknown_job"),
        );
    };
    let supported = registered.handler.max_version();
    if job.facts.version > supported {
        if job.facts.releases < shared.max_version_retries {
            warn!(
                version = job.facts.version,
                supported,
                releases = job.facts.releases,
                "payload version is newer than this worker's handler (a deploy under way?); handing the job back"
            );
            return Outcome::Release(Some(shared.version_retry_delay));
        }
        return Outcome::Failed(
            JobError::permanent(format!(
                "payload version {} is newer than the handler supports ({supported}) after {} returns; deploy a worker that handles it, then replay",
                job.facts.version, job.facts.releases
            ))
            .with_reason("unsupported_version"),
        );
    }

    let timeout = job.facts.timeout.or(registered.timeout).or(shared.queues[queue].timeout);
    let cancel = lost.child_token();
    let (reporter, flusher) =
        JobReporter::new(shared.client.clone(), job.lease.clone(), shared.progress_interval);
    let stop_flusher = CancellationToken::new();
    let flusher = tokio::spawn(flusher.run(stop_flusher.clone()));
    let ctx = JobContext {
        id: job.lease.job_id.clone(),
        queue: job.lease.queue.clone(),
        name: job.facts.name.clone(),
        attempt: job.facts.attempt,
        max_attempts: job.facts.max_attempts,
        version: job.facts.version,
        correlation_id: job.facts.correlation_id.clone(),
        checkpoint: job.facts.checkpoint.clone(),
        worker: shared.worker_id.clone(),
        cancel: cancel.clone(),
        reporter: Some(Arc::new(reporter)),
    };
    // Its own task, so a panic is caught as a JoinError instead of taking
    // the worker down.
    let mut task = tokio::spawn(registered.handler.handle(ctx, job.facts.payload.clone()));
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        joined = &mut task => match joined {
            Ok(Ok(result)) => Outcome::Success(result),
            Ok(Err(err)) => Outcome::Failed(err),
            Err(join) => Outcome::Failed(JobError::transient(format!("handler panicked: {}", panic_message(join)))),
        },
        _ = deadline => {
            Outcome::Failed(JobError::transient(format!("timed out after {}", humantime::format_duration(timeout.unwrap_or_default()))))
        }
        _ = lost.cancelled() => Outcome::Discard,
        _ = shared.abort_jobs.cancelled() => Outcome::Release(None),
    };
    cancel.cancel();
    if !task.is_finished() {
        // Let a handler that watches `ctx.cancelled()` wind down (save a
        // checkpoint, close a connection) before it is dropped.
        let _ = tokio::time::timeout(CANCEL_GRACE, &mut task).await;
    }
    task.abort();
    // The last report lands before the outcome: once the job is completed
    // or failed, its lease no longer admits progress writes.
    stop_flusher.cancel();
    if let Ok(flusher) = flusher.await
        && !matches!(outcome, Outcome::Discard)
    {
        flusher.final_flush().await;
    }
    outcome
}

/// Records `outcome`; returns the successor job when complete-and-claim
/// leased one, which inherits the slot. When it returns `None` the slot has
/// been freed.
async fn record(
    shared: &Shared,
    queue: usize,
    job: &ClaimedJob,
    outcome: Outcome,
    started: Instant,
) -> Option<ClaimedJob> {
    let elapsed = started.elapsed();
    let lease = &job.lease;
    match outcome {
        Outcome::Success(result) => {
            if !shared.stop_claiming.is_cancelled() && shared.scheduler.hand_over(queue) {
                let claim = ClaimOptions { count: 1, lease: shared.lease, worker: shared.worker_id.clone() };
                let reply = resend(shared, "complete", &lease.queue, || {
                    shared.client.complete_and_claim(lease, result.as_ref(), &claim)
                })
                .await;
                return match reply {
                    Some((completion, mut claim)) => {
                        log_completion(shared, job, completion, elapsed);
                        crate::worker::note_claim(shared, queue, &claim);
                        let successor = claim.jobs.pop();
                        if successor.is_none() {
                            shared.scheduler.unreserve(queue, 1, true);
                        }
                        successor
                    }
                    None => {
                        shared.scheduler.unreserve(queue, 1, false);
                        None
                    }
                };
            }
            // hand_over said no: the slot is already free for the claimer.
            if let Some(completion) =
                resend(shared, "complete", &lease.queue, || shared.client.complete(lease, result.as_ref()))
                    .await
            {
                log_completion(shared, job, completion, elapsed);
            }
            return None;
        }
        Outcome::Failed(err) if err.rate_limited => {
            let wait = err.retry_after.unwrap_or_default();
            if let Some(released) = resend(shared, "release", &lease.queue, || {
                shared.client.release_rate_limited(lease, wait, err.hold_queue)
            })
            .await
            {
                shared.metrics.rate_limited(&lease.queue, &job.facts.name);
                info!(
                    retry_in = %humantime::format_duration(wait),
                    queue_held = err.hold_queue,
                    releases = released.releases,
                    "rate limited by the upstream; runs again later, attempt not spent"
                );
            }
        }
        Outcome::Failed(err) => {
            let retry_delay = err.retry_after.unwrap_or_else(|| {
                job.facts.backoff.unwrap_or(shared.queues[queue].backoff).delay(job.facts.attempt)
            });
            let failure = Failure {
                kind: err.kind,
                reason: err.reason.clone(),
                message: err.message.clone(),
                retry_delay,
            };
            match resend(shared, "fail", &lease.queue, || shared.client.fail(lease, &failure)).await {
                Some(FailOutcome::Retrying { .. }) => {
                    shared.metrics.retried(&lease.queue, &job.facts.name);
                    warn!(
                        error = %err.message,
                        kind = err.kind.as_str(),
                        retry_in = %humantime::format_duration(Duration::from_millis(retry_delay.as_millis() as u64)),
                        "failed; retry scheduled"
                    );
                }
                Some(FailOutcome::Dead { reason, .. }) => {
                    shared.metrics.dead(&lease.queue, &job.facts.name);
                    error!(
                        error = %err.message,
                        kind = err.kind.as_str(),
                        reason = %reason,
                        "failed; moved to the dead letter queue"
                    );
                }
                None => {}
            }
        }
        Outcome::Release(delay) => {
            if let Some(released) =
                resend(shared, "release", &lease.queue, || shared.client.release(lease, delay)).await
            {
                shared.metrics.released(&lease.queue, &job.facts.name);
                info!(releases = released.releases, delay = ?delay, "released back to the queue");
            }
        }
        Outcome::Discard => {
            warn!("lease lost while running; outcome discarded (another attempt owns the job)")
        }
    }
    shared.scheduler.finish(queue);
    None
}

fn log_completion(shared: &Shared, job: &ClaimedJob, completion: Completion, elapsed: Duration) {
    shared.metrics.completed(&job.lease.queue, &job.facts.name, elapsed);
    match completion {
        Completion::Completed => info!(took_ms = elapsed.as_millis() as u64, "completed"),
        Completion::AlreadyCompleted => info!("completed (confirmed on resend)"),
    }
}

/// Sends an outcome call until it lands. Connection errors are retried
/// with the same lease token (safe: the scripts are idempotent per token);
/// a lost lease or a missing job ends it with `None`.
async fn resend<T, F, Fut>(shared: &Shared, what: &'static str, queue: &str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskline::Result<T>>,
{
    let mut pause = RESEND_FIRST;
    loop {
        match call().await {
            Ok(value) => {
                shared.metrics.redis_ok();
                return Some(value);
            }
            Err(Error::LeaseLost { .. }) => {
                shared.metrics.redis_ok();
                shared.metrics.lease_lost(queue);
                // The heartbeat renewed the lease until now, so it really
                // ran out: Redis was unreachable for longer than the lease,
                // or this process stalled.
                warn!(
                    what,
                    "lease lost before the outcome was recorded (Redis was unreachable for longer than the lease, or this worker stalled); outcome discarded, another attempt owns the job"
                );
                return None;
            }
            Err(Error::JobNotFound { .. }) => {
                // Completed and removed by retention (a resend after a lost
                // reply with keep_last = 0), or purged by an operator.
                warn!(what, "job no longer exists; nothing to record");
                return None;
            }
            Err(err) if err.is_connection_error() => {
                shared.metrics.redis_error(what);
                warn!(what, error = %err, retry_in = ?pause, "could not record the outcome; resending with the same lease");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shared.hard_stop.cancelled() => {
                        error!(what, "shutting down with the outcome unrecorded; the lease will expire and the job run again");
                        return None;
                    }
                }
                pause = (pause * 2).min(RESEND_MAX);
            }
            Err(err) => {
                shared.metrics.redis_error(what);
                error!(what, error = %err, "could not record the outcome; the lease will expire and the job run again");
                return None;
            }
        }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return join.to_string();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into())
}
