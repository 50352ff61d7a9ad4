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

use taskline::{ClaimOptions, ClaimedJob, Client, Completion, Error, FailOutcome, Failure};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::handler::{JobContext, JobError};
use crate::leases::HeldLeases;
use crate::metrics::Metrics;
use crate::progress::JobReporter;
use crate::queues::QueueRuntime;
use crate::scheduler::Scheduler;

/// How long a cancelled handler (timeout, lost lease, shutdown) may take to
/// react to `ctx.cancelled()` before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// First and longest pause between resends of an outcome. The cap is well
/// under a heartbeat, so an outcome lands soon after Redis is back.
const RESEND_FIRST: Duration = Duration::from_millis(100);
const RESEND_MAX: Duration = Duration::from_millis(500);

/// What every runner uses, shared by all of them: the claimer hands each
/// runner it starts an `Arc` of it.
pub(crate) struct RunnerContext {
    pub client: Client,
    /// The slot table: a runner frees its job's slot, or hands it to the
    /// successor that complete-and-claim leased.
    pub scheduler: Arc<Scheduler>,
    /// Every running job's lease, renewed by the heartbeat.
    pub leases: Arc<HeldLeases>,
    /// Where outcomes, Redis errors and in-flight jobs are counted.
    pub metrics: Metrics,
    /// By scheduler index: each queue's settings and handlers.
    pub queues: Vec<QueueRuntime>,
    /// This worker's instance id, written into the leases it takes.
    pub worker_id: String,
    /// Lease length of a successor taken by complete-and-claim.
    pub lease: Duration,
    /// How long a job whose payload version is too new waits before it
    /// runs again, and how many times it is handed back so.
    pub version_retry_delay: Duration,
    pub max_version_retries: u32,
    pub log_payloads: bool,
    /// Least time between two progress writes of one job.
    pub progress_interval: Duration,
    pub stops: JobStops,
}

/// The supervisor's signals to running jobs, in the order it gives them
/// (see the shutdown order in `worker`).
#[derive(Clone, Default)]
pub(crate) struct JobStops {
    /// Cancelled at the start of shutdown: take no successor by
    /// complete-and-claim (the claimer stops on the same token).
    pub stop_claiming: CancellationToken,
    /// Cancelled when running jobs must stop and be released.
    pub abort_jobs: CancellationToken,
    /// Cancelled when outcome resends must give up.
    pub hard_stop: CancellationToken,
}

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
pub(crate) async fn run(ctx: Arc<RunnerContext>, queue: usize, first: ClaimedJob) {
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
            if ctx.log_payloads {
                info!(payload = %job.facts.payload, "claimed");
            } else {
                info!("claimed");
            }
            let _in_flight = ctx.metrics.in_flight(&job.lease.queue);
            let started = Instant::now();
            // Held until the outcome is recorded or given up, not only
            // while the handler runs: the heartbeat must renew the lease of
            // an outcome that waits for Redis.
            let lost = CancellationToken::new();
            ctx.leases.insert(job.lease.clone(), lost.clone());
            let outcome = execute(&ctx, queue, &job, &lost).await;
            ctx.leases.recording(&job.lease);
            let successor = record(&ctx, queue, &job, outcome, started).await;
            ctx.leases.remove(&job.lease);
            successor
        }
        .instrument(span)
        .await;
    }
}

/// Runs the handler of `job`; `lost` is cancelled when its lease is lost.
async fn execute(ctx: &RunnerContext, queue: usize, job: &ClaimedJob, lost: &CancellationToken) -> Outcome {
    let Some(registered) = ctx.queues[queue].handlers.get(&job.facts.name) else {
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
        if job.facts.releases < ctx.max_version_retries {
            warn!(
                version = job.facts.version,
                supported,
                releases = job.facts.releases,
                "payload version is newer than this worker's handler (a deploy under way?); handing the job back"
            );
            return Outcome::Release(Some(ctx.version_retry_delay));
        }
        return Outcome::Failed(
            JobError::permanent(format!(
                "payload version {} is newer than the handler supports ({supported}) after {} returns; deploy a worker that handles it, then replay",
                job.facts.version, job.facts.releases
            ))
            .with_reason("unsupported_version"),
        );
    }

    let timeout = job.facts.timeout.or(registered.timeout).or(ctx.queues[queue].timeout);
    let cancel = lost.child_token();
    let (reporter, flusher) = JobReporter::new(ctx.client.clone(), job.lease.clone(), ctx.progress_interval);
    let stop_flusher = CancellationToken::new();
    let flusher = tokio::spawn(flusher.run(stop_flusher.clone()));
    let job_context = JobContext {
        id: job.lease.job_id.clone(),
        queue: job.lease.queue.clone(),
        name: job.facts.name.clone(),
        attempt: job.facts.attempt,
        max_attempts: job.facts.max_attempts,
        version: job.facts.version,
        correlation_id: job.facts.correlation_id.clone(),
        checkpoint: job.facts.checkpoint.clone(),
        worker: ctx.worker_id.clone(),
        cancel: cancel.clone(),
        reporter: Some(Arc::new(reporter)),
    };
    // Its own task, so a panic is caught as a JoinError instead of taking
    // the worker down.
    let mut task = tokio::spawn(registered.handler.handle(job_context, job.facts.payload.clone()));
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
        _ = ctx.stops.abort_jobs.cancelled() => Outcome::Release(None),
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
    ctx: &RunnerContext,
    queue: usize,
    job: &ClaimedJob,
    outcome: Outcome,
    started: Instant,
) -> Option<ClaimedJob> {
    let elapsed = started.elapsed();
    let lease = &job.lease;
    match outcome {
        Outcome::Success(result) => {
            if !ctx.stops.stop_claiming.is_cancelled() && ctx.scheduler.hand_over(queue) {
                let claim = ClaimOptions { count: 1, lease: ctx.lease, worker: ctx.worker_id.clone() };
                let reply = resend(ctx, "complete", &lease.queue, || {
                    ctx.client.complete_and_claim(lease, result.as_ref(), &claim)
                })
                .await;
                return match reply {
                    Some((completion, mut claim)) => {
                        log_completion(ctx, job, completion, elapsed);
                        ctx.scheduler.note_claim(queue, &claim, &ctx.metrics);
                        let successor = claim.jobs.pop();
                        if successor.is_none() {
                            ctx.scheduler.unreserve(queue, 1, true);
                        }
                        successor
                    }
                    None => {
                        ctx.scheduler.unreserve(queue, 1, false);
                        None
                    }
                };
            }
            // hand_over said no: the slot is already free for the claimer.
            if let Some(completion) =
                resend(ctx, "complete", &lease.queue, || ctx.client.complete(lease, result.as_ref())).await
            {
                log_completion(ctx, job, completion, elapsed);
            }
            return None;
        }
        Outcome::Failed(err) if err.rate_limited => {
            let wait = err.retry_after.unwrap_or_default();
            if let Some(released) = resend(ctx, "release", &lease.queue, || {
                ctx.client.release_rate_limited(lease, wait, err.hold_queue)
            })
            .await
            {
                ctx.metrics.rate_limited(&lease.queue, &job.facts.name);
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
                job.facts.backoff.unwrap_or(ctx.queues[queue].backoff).delay(job.facts.attempt)
            });
            let failure = Failure {
                kind: err.kind,
                reason: err.reason.clone(),
                message: err.message.clone(),
                retry_delay,
            };
            match resend(ctx, "fail", &lease.queue, || ctx.client.fail(lease, &failure)).await {
                Some(FailOutcome::Retrying { .. }) => {
                    ctx.metrics.retried(&lease.queue, &job.facts.name);
                    warn!(
                        error = %err.message,
                        kind = err.kind.as_str(),
                        retry_in = %humantime::format_duration(Duration::from_millis(retry_delay.as_millis() as u64)),
                        "failed; retry scheduled"
                    );
                }
                Some(FailOutcome::Dead { reason, .. }) => {
                    ctx.metrics.dead(&lease.queue, &job.facts.name);
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
                resend(ctx, "release", &lease.queue, || ctx.client.release(lease, delay)).await
            {
                ctx.metrics.released(&lease.queue, &job.facts.name);
                info!(releases = released.releases, delay = ?delay, "released back to the queue");
            }
        }
        Outcome::Discard => {
            warn!("lease lost while running; outcome discarded (another attempt owns the job)")
        }
    }
    ctx.scheduler.finish(queue);
    None
}

fn log_completion(ctx: &RunnerContext, job: &ClaimedJob, completion: Completion, elapsed: Duration) {
    ctx.metrics.completed(&job.lease.queue, &job.facts.name, elapsed);
    match completion {
        Completion::Completed => info!(took_ms = elapsed.as_millis() as u64, "completed"),
        Completion::AlreadyCompleted => info!("completed (confirmed on resend)"),
    }
}

/// Sends an outcome call until it lands. Connection errors are retried
/// with the same lease token (safe: the scripts are idempotent per token);
/// a lost lease or a missing job ends it with `None`.
async fn resend<T, F, Fut>(ctx: &RunnerContext, what: &'static str, queue: &str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskline::Result<T>>,
{
    let mut pause = RESEND_FIRST;
    loop {
        match call().await {
            Ok(value) => {
                ctx.metrics.redis_ok();
                return Some(value);
            }
            Err(Error::LeaseLost { .. }) => {
                ctx.metrics.redis_ok();
                ctx.metrics.lease_lost(queue);
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
                ctx.metrics.redis_error(what);
                warn!(what, error = %err, retry_in = ?pause, "could not record the outcome; resending with the same lease");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.stops.hard_stop.cancelled() => {
                        error!(what, "shutting down with the outcome unrecorded; the lease will expire and the job run again");
                        return None;
                    }
                }
                pause = (pause * 2).min(RESEND_MAX);
            }
            Err(err) => {
                ctx.metrics.redis_error(what);
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
