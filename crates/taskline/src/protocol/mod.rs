//! The worker-side protocol: claim, complete, fail, extend, release, reap.
//!
//! Every outcome call is fenced by the lease token that `claim` issued and
//! is safe to resend after a lost reply: the scripts answer a resend with the
//! first outcome and record nothing twice.
//!
//! This module holds the types the calls take and return. Each script has
//! a file of its own, as in `lua/`, with the [`Client`](crate::Client)
//! wrapper that owns its key order and arguments and the decoding of its
//! reply: `claim`, `complete`, `fail`, `extend`, `release`, `reap` and
//! `trim`; `fence` holds the arguments every fenced outcome call starts
//! with (see `lua/includes/fence.lua`).

use std::time::{Duration, SystemTime};

use crate::job::{FailureKind, JobFacts, JobId};

mod claim;
mod complete;
mod extend;
mod fail;
mod fence;
mod reap;
mod release;
mod trim;

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
    /// The lease to present on complete, fail, extend and release; it names
    /// the job's queue and id.
    pub lease: Lease,
    /// When the lease runs out unless extended (server clock).
    pub lease_deadline: SystemTime,
    /// Name, payload, this attempt's number and the other facts of the job
    /// as the claim read them.
    pub facts: JobFacts,
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
