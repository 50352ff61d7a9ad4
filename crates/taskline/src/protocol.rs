//! The worker-side protocol: claim, complete, fail, extend, release, reap.
//!
//! Every outcome call is fenced by the lease token that `claim` issued and
//! is safe to resend after a lost reply: the scripts answer a resend with the
//! first outcome and record nothing twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::backoff::Backoff;
use tokio::sync::oneshot;

use crate::client::{Args, Client, WeakClient, millis};
use crate::error::{Error, Result};
use crate::job::{FailureKind, JobId, from_epoch_millis, to_epoch_millis};
use crate::keys::QueueKeys;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;

/// Longest error message stored per attempt, in bytes; longer ones are cut.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

/// Proof of ownership of one claimed job: its queue, id and lease token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job's queue.
    pub queue: String,
    /// The job id.
    pub job_id: JobId,
    /// The token issued by the claim that leased it.
    pub token: String,
}

/// What a worker asks of `claim`.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Most jobs to lease in this call.
    pub count: u32,
    /// Lease length; the worker's heartbeat extends it while handlers run.
    pub lease: Duration,
    /// This worker process's own instance id (unique per process).
    pub worker: String,
}

/// A leased job, with everything a handler needs.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The lease to present on complete, fail, extend and release.
    pub lease: Lease,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// When the lease runs out unless extended (server clock).
    pub lease_deadline: SystemTime,
    /// Job name.
    pub name: String,
    /// Payload JSON text.
    pub payload: String,
    /// Payload version.
    pub version: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Per-job timeout, if set at enqueue.
    pub timeout: Option<Duration>,
    /// Per-job backoff override, if set at enqueue.
    pub backoff: Option<Backoff>,
    /// Correlation id, if any.
    pub correlation_id: Option<String>,
    /// Last checkpoint saved by an earlier attempt, if any.
    pub checkpoint: Option<String>,
    /// When the job was enqueued.
    pub created_at: SystemTime,
    /// Priority level.
    pub priority: u8,
    /// How often the job was released unrun before.
    pub releases: u32,
}

/// The result of a claim.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The jobs leased, possibly none.
    pub jobs: Vec<ClaimedJob>,
    /// The queue is paused: nothing is leased until it is resumed.
    pub paused: bool,
    /// When the earliest delayed job is due, so an idle worker can sleep
    /// until then.
    pub next_due: Option<SystemTime>,
    /// The Redis server's clock when the claim ran: compare `next_due` with
    /// this, never with the local clock.
    pub server_time: Option<SystemTime>,
    /// The queue-wide limit that leased fewer jobs than asked, if one did.
    /// When it is the rate or a hold, `next_due` says when the next start
    /// is allowed.
    pub limited: Option<FlowLimit>,
}

/// A queue-wide limit that held a claim back (see `lua/includes/flow.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowLimit {
    /// The global rate limit: the period's starts are used up.
    Rate,
    /// The global concurrency limit: enough jobs of the queue are active.
    Concurrency,
    /// A handler reported rate limiting and held the whole queue.
    Hold,
}

impl FlowLimit {
    /// The limit's name, as in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowLimit::Rate => "rate",
            FlowLimit::Concurrency => "concurrency",
            FlowLimit::Hold => "hold",
        }
    }
}

impl Claim {
    /// How long until the earliest delayed job is due (or, under a rate
    /// limit or hold, the next start is allowed), on the server's clock;
    /// `None` when there is nothing to wait for.
    pub fn next_due_in(&self) -> Option<Duration> {
        let due = self.next_due?;
        Some(due.duration_since(self.server_time?).unwrap_or_default())
    }
}

/// How a completion was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Recorded now.
    Completed,
    /// This lease had already completed the job (a resend); nothing changed.
    AlreadyCompleted,
}

/// A failed attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Transient (retry) or permanent (dead letter).
    pub kind: FailureKind,
    /// For a permanent failure: a short reason code (`invalid_payload`,
    /// `unknown_job`, ...); `permanent` when `None`.
    pub reason: Option<String>,
    /// What went wrong (cut to [`MAX_ERROR_MESSAGE_BYTES`]).
    pub message: String,
    /// Wait before the retry of a transient failure: the backoff the worker
    /// computed with jitter.
    pub retry_delay: Duration,
}

impl Failure {
    /// A transient failure to retry after `retry_delay`.
    pub fn transient(message: impl Into<String>, retry_delay: Duration) -> Self {
        Self { kind: FailureKind::Transient, reason: None, message: message.into(), retry_delay }
    }

    /// A permanent failure: the job goes to the dead letter queue.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            reason: None,
            message: message.into(),
            retry_delay: Duration::ZERO,
        }
    }

    /// Sets the reason code of a permanent failure.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Where a failed job went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled for another attempt at this time.
    Retrying {
        /// When the retry is due (server clock).
        at: SystemTime,
    },
    /// Moved to the dead letter queue.
    Dead {
        /// When it died (server clock).
        at: SystemTime,
        /// Why: `permanent`, `attempts_exhausted`, or the given reason.
        reason: String,
    },
}

/// The result of a lease extension.
#[derive(Debug, Clone, Default)]
pub struct Extended {
    /// The new deadline of the renewed leases (earliest across queues).
    pub deadline: Option<SystemTime>,
    /// Jobs whose lease was lost: cancel their handlers, drop their outcomes.
    pub lost: Vec<Lease>,
}

/// The result of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// False when this lease had already released the job (a resend).
    pub now: bool,
    /// How many times the job has been released in all.
    pub releases: u32,
}

/// The result of reaping expired leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs put back to run again.
    pub retried: u32,
    /// Jobs whose attempts were spent, now dead.
    pub dead: u32,
    /// Every job reaped.
    pub ids: Vec<JobId>,
}

impl Client {
    /// Leases up to `options.count` ready jobs of `queue`, promoting due
    /// delayed jobs first. A paused queue leases nothing.
    pub async fn claim(&self, queue: &str, options: &ClaimOptions) -> Result<Claim> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut args = Args::default();
        args.text(keys.prefix()).push(self.options().events_max_len);
        push_claim_args(&mut args, options, self.options().promote_batch);
        let value = self.run(&SCRIPTS.claim, &claim_keys(&keys), args.0).await?;
        let mut reply = Reply::new(value, "claim")?;
        read_claim(&mut reply, queue, self.options().policy(queue).max_attempts)
    }

    /// Marks the leased job completed, storing `result` (JSON) if given.
    pub async fn complete(&self, lease: &Lease, result: Option<&serde_json::Value>) -> Result<Completion> {
        self.complete_inner(lease, result, None).await.map(|(completion, _)| completion)
    }

    /// Completes the leased job and leases the next jobs in the same round
    /// trip.
    pub async fn complete_and_claim(
        &self,
        lease: &Lease,
        result: Option<&serde_json::Value>,
        claim: &ClaimOptions,
    ) -> Result<(Completion, Claim)> {
        self.complete_inner(lease, result, Some(claim)).await
    }

    async fn complete_inner(
        &self,
        lease: &Lease,
        result: Option<&serde_json::Value>,
        claim: Option<&ClaimOptions>,
    ) -> Result<(Completion, Claim)> {
        self.queue_keys(&lease.queue)?;
        let result = match result {
            Some(value) => serde_json::to_string(value).map_err(Error::InvalidPayload)?,
            None => String::new(),
        };
        let limit = self.options().max_payload_bytes;
        if result.len() > limit {
            return Err(Error::PayloadTooLarge { what: "result", size: result.len(), limit });
        }
        let entry = CompleteEntry { lease: lease.clone(), result, want: claim.map_or(0, |c| c.count) };
        if !self.options().coalesce_calls {
            let mut answers = self.complete_batch(&lease.queue, claim, std::slice::from_ref(&entry)).await?;
            return answers.pop().unwrap_or_else(|| {
                Err(Error::Protocol { script: "complete", detail: "no answer for the job".into() })
            });
        }
        // One lane per queue and claim settings: a batch shares its claim.
        let lane = match claim {
            Some(c) => format!("{}\n{}\n{}", lease.queue, millis(c.lease), c.worker),
            None => lease.queue.clone(),
        };
        let (reply, answer) = oneshot::channel();
        let client = self.downgrade();
        let queue = lease.queue.clone();
        let claim = claim.cloned();
        self.complete_lanes().submit(&lane, CompleteRequest { entry, reply }, move |batch| {
            complete_batch_coalesced(client.clone(), queue.clone(), claim.clone(), batch)
        });
        answer.await.map_err(|_| Error::Protocol {
            script: "complete",
            detail: "the batch of this call was dropped unanswered (runtime shutting down?)".into(),
        })?
    }

    /// Runs `lua/complete.lua` for the completions in `entries` (all of
    /// `queue`), leasing `want` successors for each from `claim` (whose
    /// `count` is ignored). The outer error is the call's; each entry gets
    /// its own answer: a lost lease or a missing job fails that entry only.
    async fn complete_batch(
        &self,
        queue: &str,
        claim: Option<&ClaimOptions>,
        entries: &[CompleteEntry],
    ) -> Result<Vec<Result<(Completion, Claim)>>> {
        let (_, keys) = self.queue_keys(queue)?;
        let policy = self.options().policy(queue);
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .push(policy.retention.keep_last)
            .push(policy.retention.max_age.map(millis).unwrap_or(0));
        match claim {
            Some(options) => {
                args.push(millis(options.lease))
                    .text(&token_prefix())
                    .text(&options.worker)
                    .push(self.options().promote_batch);
            }
            None => {
                args.push(0).text("").text("").push(0);
            }
        }
        args.push(entries.len());
        for entry in entries {
            args.text(entry.lease.job_id.as_str())
                .text(&entry.lease.token)
                .text(&entry.result)
                .push(if claim.is_some() { entry.want } else { 0 });
        }
        let script_keys =
            [keys.meta(), keys.delayed(), keys.active(), keys.levels(), keys.events(), keys.completed()];
        let value = self.run(&SCRIPTS.complete, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "complete")?;
        // The successors leased now, then those handed back to resends;
        // each completion takes its share in order.
        let mut header = read_claim(&mut reply, queue, policy.max_attempts)?;
        let mut fresh = std::mem::take(&mut header.jobs).into_iter();
        let handed_back = reply.count("handed_back")?;
        let mut back = read_claimed_jobs(&mut reply, handed_back, queue, policy.max_attempts)?.into_iter();
        let mut answers = Vec::with_capacity(entries.len());
        for entry in entries {
            let status = reply.string("status")?;
            let k = reply.count("k")? as usize;
            let share = |from: &mut std::vec::IntoIter<ClaimedJob>| -> Result<Claim> {
                let jobs: Vec<ClaimedJob> = from.by_ref().take(k).collect();
                if jobs.len() < k {
                    return Err(Error::Protocol {
                        script: "complete",
                        detail: "fewer records than shares".into(),
                    });
                }
                Ok(Claim { jobs, ..header.clone() })
            };
            let job_id = entry.lease.job_id.as_str();
            answers.push(match status.as_str() {
                "completed" => Ok((Completion::Completed, share(&mut fresh)?)),
                "already" => Ok((Completion::AlreadyCompleted, share(&mut back)?)),
                "lease_lost" => Err(Error::LeaseLost { queue: queue.into(), id: job_id.into() }),
                "not_found" => Err(Error::JobNotFound { queue: queue.into(), id: job_id.into() }),
                other => {
                    return Err(Error::Protocol { script: "complete", detail: format!("status {other:?}") });
                }
            });
        }
        Ok(answers)
    }

    /// Records a failed attempt: retried later or dead, as the script decides
    /// from the kind and the attempts left.
    pub async fn fail(&self, lease: &Lease, failure: &Failure) -> Result<FailOutcome> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let mut args = self.outcome_args(&keys, lease);
        args.text(failure.kind.as_str())
            .text(failure.reason.as_deref().unwrap_or(""))
            .text(truncate(&failure.message, MAX_ERROR_MESSAGE_BYTES))
            .push(millis(failure.retry_delay))
            .push(self.options().policy(&lease.queue).max_attempts);
        let script_keys =
            [keys.meta(), keys.active(), keys.delayed(), keys.dead(), keys.events(), keys.levels()];
        let value = self
            .run(&SCRIPTS.fail, &script_keys, args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        let mut reply = Reply::new(value, "fail")?;
        let outcome = reply.string("outcome")?;
        let at = from_epoch_millis(reply.int("at")?.max(0) as u64);
        let reason = reply.string("reason")?;
        match outcome.as_str() {
            "retrying" => Ok(FailOutcome::Retrying { at }),
            "dead" => Ok(FailOutcome::Dead { at, reason }),
            other => Err(Error::Protocol { script: "fail", detail: format!("outcome {other:?}") }),
        }
    }

    /// Renews every lease in `leases` for `lease` from now, one call per
    /// queue. Leases that were lost are returned in [`Extended::lost`].
    pub async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Extended> {
        let mut by_queue: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for l in leases {
            by_queue.entry(l.queue.as_str()).or_default().push(l);
        }
        let mut extended = Extended::default();
        for (queue, group) in by_queue {
            let (_, keys) = self.queue_keys(queue)?;
            let mut args = Args::default();
            args.text(keys.prefix()).push(millis(lease));
            for l in &group {
                args.text(l.job_id.as_str()).text(&l.token);
            }
            let value = self.run(&SCRIPTS.extend, &[keys.active()], args.0).await?;
            let mut reply = Reply::new(value, "extend")?;
            let deadline = from_epoch_millis(reply.int("deadline")?.max(0) as u64);
            extended.deadline = Some(extended.deadline.map_or(deadline, |d| d.min(deadline)));
            while reply.remaining() > 0 {
                let position = reply.count("lost position")? as usize;
                let lost =
                    position.checked_sub(1).and_then(|i| group.get(i)).ok_or_else(|| Error::Protocol {
                        script: "extend",
                        detail: format!("lost position {position} outside 1..={}", group.len()),
                    })?;
                extended.lost.push((*lost).clone());
            }
        }
        Ok(extended)
    }

    /// Gives the leased job back without spending an attempt: to the front
    /// of its level now, or delayed by `delay`.
    pub async fn release(&self, lease: &Lease, delay: Option<Duration>) -> Result<Released> {
        self.release_inner(lease, delay.unwrap_or_default(), "release", Duration::ZERO).await
    }

    /// Gives the leased job back because its upstream is rate limiting: it
    /// runs again after `retry_after`, without spending an attempt (and
    /// without counting towards [`ClaimedJob::releases`]). With
    /// `hold_queue`, no job of the queue is leased by any worker until
    /// `retry_after` has passed.
    pub async fn release_rate_limited(
        &self,
        lease: &Lease,
        retry_after: Duration,
        hold_queue: bool,
    ) -> Result<Released> {
        let hold = if hold_queue { retry_after } else { Duration::ZERO };
        self.release_inner(lease, retry_after, "rate_limited", hold).await
    }

    async fn release_inner(
        &self,
        lease: &Lease,
        delay: Duration,
        reason: &str,
        hold: Duration,
    ) -> Result<Released> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let mut args = self.outcome_args(&keys, lease);
        args.push(millis(delay)).text(reason).push(millis(hold));
        let script_keys = [keys.meta(), keys.active(), keys.delayed(), keys.levels(), keys.events()];
        let value = self
            .run(&SCRIPTS.release, &script_keys, args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        let mut reply = Reply::new(value, "release")?;
        let now = reply.string("status")? == "released";
        Ok(Released { now, releases: reply.count("releases")? })
    }

    /// Recovers up to `limit` jobs of `queue` whose lease expired: each is
    /// retried after `retry_delay` (zero: at once) or, with its attempts
    /// spent, dead.
    pub async fn reap(&self, queue: &str, limit: u32, retry_delay: Duration) -> Result<Reaped> {
        Ok(self.reap_before(queue, limit, retry_delay, None).await?.0)
    }

    /// Like [`Client::reap`], but only leases whose deadline is before
    /// `cutoff` (server clock; `None` or a later time: now). Also returns
    /// the server time of the call.
    ///
    /// A periodic reaper passes the time its previous pass returned: after
    /// Redis was frozen or down for longer than a lease, every lease in
    /// flight is past its deadline, and reaping against now would take the
    /// leases of live workers whose heartbeats are about to land. Against
    /// the previous pass's time, only leases that had expired before the
    /// stall are taken (see `lua/reap.lua`).
    pub async fn reap_before(
        &self,
        queue: &str,
        limit: u32,
        retry_delay: Duration,
        cutoff: Option<SystemTime>,
    ) -> Result<(Reaped, SystemTime)> {
        let (_, keys) = self.queue_keys(queue)?;
        let cutoff_ms = cutoff.map(|t| to_epoch_millis(t).max(1)).unwrap_or(0);
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .push(limit)
            .push(millis(retry_delay))
            .push(self.options().policy(queue).max_attempts)
            .push(cutoff_ms);
        let script_keys =
            [keys.meta(), keys.active(), keys.delayed(), keys.dead(), keys.levels(), keys.events()];
        let value = self.run(&SCRIPTS.reap, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "reap")?;
        let mut reaped =
            Reaped { retried: reply.count("retried")?, dead: reply.count("dead")?, ids: Vec::new() };
        let now = from_epoch_millis(reply.int("now_ms")?.max(0) as u64);
        while reply.remaining() > 0 {
            reaped.ids.push(JobId::from_stored(reply.string("id")?));
        }
        Ok((reaped, now))
    }
}

impl Client {
    /// The leading arguments of every outcome script: prefix, cap, id, token.
    pub(crate) fn outcome_args(&self, keys: &QueueKeys, lease: &Lease) -> Args {
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .text(lease.job_id.as_str())
            .text(&lease.token);
        args
    }
}

impl Client {
    /// Applies `queue`'s completed-job retention exactly: at most
    /// `keep_last` completed jobs, none older than `max_age` (see
    /// [`crate::Retention`]). Completions trim in batches as they go; the
    /// worker's maintenance calls this so the bound holds even when no job
    /// finishes. Returns how many jobs were removed.
    pub async fn trim_completed(&self, queue: &str) -> Result<u64> {
        const LIMIT: u64 = 1_000;
        let (_, keys) = self.queue_keys(queue)?;
        let retention = self.options().policy(queue).retention;
        let mut removed = 0;
        loop {
            let mut args = Args::default();
            args.text(keys.prefix())
                .push(retention.keep_last)
                .push(retention.max_age.map(millis).unwrap_or(0))
                .push(LIMIT);
            let value = self.run(&SCRIPTS.trim, &[keys.completed()], args.0).await?;
            let n = Reply::new(redis::Value::Array(vec![value]), "trim")?.int("removed")?.max(0) as u64;
            removed += n;
            if n < LIMIT {
                return Ok(removed);
            }
        }
    }
}

/// One completion of a batch: the lease, the result's JSON text ("" for
/// none) and how many successors to lease for it.
struct CompleteEntry {
    lease: Lease,
    result: String,
    want: u32,
}

/// One coalesced completion call and where its answer goes.
pub(crate) struct CompleteRequest {
    entry: CompleteEntry,
    reply: oneshot::Sender<Result<(Completion, Claim)>>,
}

/// Runs one batch of coalesced completions and answers each caller.
async fn complete_batch_coalesced(
    client: WeakClient,
    queue: String,
    claim: Option<ClaimOptions>,
    batch: Vec<CompleteRequest>,
) {
    let Some(client) = client.upgrade() else { return };
    let (entries, replies): (Vec<CompleteEntry>, Vec<_>) =
        batch.into_iter().map(|r| (r.entry, r.reply)).unzip();
    match client.complete_batch(&queue, claim.as_ref(), &entries).await {
        // complete_batch answers every entry or fails as a whole.
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_batch_member("complete")));
            }
        }
    }
}

fn claim_keys(keys: &QueueKeys) -> [String; 5] {
    [keys.meta(), keys.delayed(), keys.active(), keys.levels(), keys.events()]
}

/// Appends the claim arguments shared by `claim.lua` and `complete.lua`:
/// count, lease_ms, token_prefix, worker, promote_limit.
fn push_claim_args(args: &mut Args, options: &ClaimOptions, promote_limit: u32) {
    args.push(options.count)
        .push(millis(options.lease))
        .text(&token_prefix())
        .text(&options.worker)
        .push(promote_limit);
}

/// A fresh random nonce for the lease tokens of one claiming call.
fn token_prefix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Reads `{paused, next_due_ms, now_ms, n, limit, records...}` (see
/// `claim_jobs.lua`).
fn read_claim(reply: &mut Reply, queue: &str, default_max_attempts: u32) -> Result<Claim> {
    let paused = reply.int("paused")? == 1;
    let next_due = reply.int("next_due_ms")?;
    let now = reply.int("now_ms")?;
    let n = reply.count("n")?;
    let limited = read_limit(reply)?;
    Ok(Claim {
        jobs: read_claimed_jobs(reply, n, queue, default_max_attempts)?,
        paused,
        next_due: (next_due >= 0).then(|| from_epoch_millis(next_due as u64)),
        server_time: (now > 0).then(|| from_epoch_millis(now as u64)),
        limited,
    })
}

fn read_limit(reply: &mut Reply) -> Result<Option<FlowLimit>> {
    Ok(match reply.string("limit")?.as_str() {
        "rate" => Some(FlowLimit::Rate),
        "concurrency" => Some(FlowLimit::Concurrency),
        "hold" => Some(FlowLimit::Hold),
        _ => None,
    })
}

/// Reads `n` leased-job records (see `claim_jobs.lua`): nine values, then
/// the count of optional fields the job has and their name, value pairs.
/// A stored `max_attempts` of 0 means the queue's default.
fn read_claimed_jobs(
    reply: &mut Reply,
    n: u32,
    queue: &str,
    default_max_attempts: u32,
) -> Result<Vec<ClaimedJob>> {
    let mut jobs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let id = JobId::from_stored(reply.string("id")?);
        let token = reply.string("lease_token")?;
        let attempt = reply.count("attempt")?;
        let lease_deadline = from_epoch_millis(reply.int("lease_deadline")?.max(0) as u64);
        let name = reply.string("name")?;
        let payload = reply.string("payload")?;
        let version = reply.count("version")?;
        let created_at = from_epoch_millis(reply.int("created_at")?.max(0) as u64);
        let priority = reply.count("priority")?.min(u8::MAX as u32) as u8;
        let options = read_optional_fields(reply, &id)?;
        let max_attempts = match options.max_attempts {
            0 => default_max_attempts,
            n => n,
        };
        let OptionalFields { timeout_ms, backoff, correlation_id, checkpoint, releases, .. } = options;
        jobs.push(ClaimedJob {
            lease: Lease { queue: queue.to_string(), job_id: id, token },
            attempt,
            lease_deadline,
            name,
            payload,
            version,
            max_attempts,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
            backoff,
            correlation_id,
            checkpoint,
            created_at,
            priority,
            releases,
        });
    }
    Ok(jobs)
}

/// The optional fields of a leased-job record, as stored (absent: 0 or
/// `None`).
#[derive(Default)]
struct OptionalFields {
    max_attempts: u32,
    timeout_ms: i64,
    backoff: Option<Backoff>,
    correlation_id: Option<String>,
    checkpoint: Option<String>,
    releases: u32,
}

/// Reads a record's count of optional fields and their name, value pairs.
fn read_optional_fields(reply: &mut Reply, id: &JobId) -> Result<OptionalFields> {
    let mut fields = OptionalFields::default();
    for _ in 0..reply.count("optional field count")? {
        let field = reply.string("optional field name")?;
        match field.as_str() {
            "max_attempts" => fields.max_attempts = reply.count("max_attempts")?,
            "timeout_ms" => fields.timeout_ms = reply.int("timeout_ms")?,
            // An empty stored backoff reads as none, as an absent one.
            "backoff" => {
                if let Some(text) = reply.opt_string("backoff")? {
                    let backoff = serde_json::from_str(&text).map_err(|e| Error::CorruptJob {
                        id: id.to_string(),
                        field: "backoff",
                        detail: e.to_string(),
                    })?;
                    fields.backoff = Some(backoff);
                }
            }
            "correlation_id" => fields.correlation_id = reply.opt_string("correlation_id")?,
            "checkpoint" => fields.checkpoint = reply.opt_string("checkpoint")?,
            "releases" => fields.releases = reply.count("releases")?,
            other => {
                return Err(
                    reply.protocol_error(format!("record of job {id}: unknown optional field {other:?}"))
                );
            }
        }
    }
    Ok(fields)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{Error, Reply, read_claimed_jobs, truncate};

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A record as claim_jobs.lua writes it, with `optional` name, value pairs.
    fn record(id: &str, optional: &[(&str, &str)]) -> Vec<Value> {
        let mut values: Vec<Value> =
            [id, "tok.1", "2", "1700000000000", "send", "{}", "1", "1690000000000", "5"].map(text).to_vec();
        values.push(Value::Int(optional.len() as i64));
        for (field, value) in optional {
            values.extend([text(field), text(value)]);
        }
        values
    }

    #[test]
    fn claimed_records_carry_only_the_optional_fields_a_job_has() {
        let mut values = record("a", &[]);
        values.extend(record("b", &[("releases", "3"), ("max_attempts", "7"), ("correlation_id", "c-1")]));
        let mut reply = Reply::new(Value::Array(values), "claim").expect("array");
        let jobs = read_claimed_jobs(&mut reply, 2, "q", 25).expect("two records");
        assert_eq!(reply.remaining(), 0, "every value read");
        let (a, b) = (&jobs[0], &jobs[1]);
        assert_eq!((a.lease.job_id.as_str(), a.attempt, a.priority), ("a", 2, 5));
        assert_eq!((a.max_attempts, a.releases, a.correlation_id.as_deref()), (25, 0, None), "defaults");
        assert_eq!((a.timeout, a.backoff.is_none(), a.checkpoint.as_deref()), (None, true, None));
        assert_eq!((b.max_attempts, b.releases, b.correlation_id.as_deref()), (7, 3, Some("c-1")));
    }

    #[test]
    fn an_empty_backoff_reads_as_none_and_a_garbled_one_names_the_job() {
        let mut reply = Reply::new(Value::Array(record("a", &[("backoff", "")])), "claim").expect("array");
        let jobs = read_claimed_jobs(&mut reply, 1, "q", 25).expect("one record");
        assert!(jobs[0].backoff.is_none());
        let mut reply =
            Reply::new(Value::Array(record("b", &[("backoff", "{not json")])), "claim").expect("array");
        match read_claimed_jobs(&mut reply, 1, "q", 25) {
            Err(Error::CorruptJob { id, field, .. }) => assert_eq!((id.as_str(), field), ("b", "backoff")),
            other => panic!("expected a corrupt-job error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_optional_field_is_a_protocol_error() {
        let mut reply = Reply::new(Value::Array(record("a", &[("colour", "red")])), "claim").expect("array");
        match read_claimed_jobs(&mut reply, 1, "q", 25) {
            Err(Error::Protocol { script, detail }) => {
                assert_eq!(script, "claim");
                assert!(detail.contains("colour"), "{detail}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello", 3), "hel");
        assert_eq!(truncate("héllo", 2), "h", "é is two bytes and must not be split");
    }
}
