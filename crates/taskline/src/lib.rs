//! # Taskline
//!
//! A Redis-backed distributed job queue. Producers enqueue JSON jobs and
//! return at once; workers claim them under a lease, run them, and record
//! the outcome. Every state change is one atomic Lua script (`lua/`), so a
//! job is at every moment in exactly one place: ready, delayed, active,
//! completed or dead. Nothing silently disappears.
//!
//! ```no_run
//! # async fn demo() -> taskline::Result<()> {
//! use std::time::Duration;
//! use taskline::{Client, NewJob};
//!
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let job = NewJob::new("send_email", &serde_json::json!({"to": "ada@example.com"}))?
//!     .delay(Duration::from_secs(30))
//!     .max_attempts(3);
//! let id = client.enqueue("emails", job).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`client`]: [`Client`] and its options.
//! - [`connection`]: what a client connects to, [`RedisTarget`]: one
//!   server, a primary behind Sentinel, or a Redis Cluster.
//! - [`producer`]: `enqueue` and `enqueue_bulk`.
//! - [`protocol`]: the worker side: `claim`, `complete`, `fail`, `extend`,
//!   `release`, `reap`, all fenced by lease tokens and safe to resend; a
//!   file per script beside the types in `protocol/mod.rs`.
//! - [`progress`]: progress reports and checkpoints of a running job.
//! - [`status`]: `job_status`, for whoever waits on a job.
//! - [`watch`]: `watch`, a stream of one job's progress and state changes,
//!   and `wait_for`, which follows it to the end.
//! - [`admin`]: `get_job`, `counts`, `replay`, `pause`, `resume`.
//! - [`doctor`]: the invariant checker (every job in exactly one place).
//! - [`repair`]: safe repairs of what the checker found.
//! - [`operator`]: what the `taskline` CLI needs: queue summaries, purge
//!   of dead letters, drain of ready jobs, the event stream, DLQ filters.
//! - [`job`]: ids, states, [`NewJob`] and the stored [`Job`].
//! - [`backoff`]: the retry delay policy.
//! - [`keys`]: every Redis key name, built in one place.
//! - [`names`]: validation of queue names, job names and ids.
//! - [`error`]: the [`Error`] enum.
//! - `scripts`: the registry of Lua scripts (private).
//! - Private helpers that many modules share, so that none of them imports
//!   another for them: `args` (script arguments), `time` (milliseconds as
//!   the scripts take them), `reply` (reading script replies), `requests`
//!   (what waits in the coalescing lanes of `coalesce`).

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod admin;
mod args;
pub mod backoff;
pub mod client;
mod coalesce;
pub mod connection;
pub mod doctor;
pub mod error;
pub mod flow;
pub mod job;
pub mod keys;
pub mod names;
pub mod operator;
pub mod producer;
pub mod progress;
pub mod protocol;
pub mod repair;
mod reply;
mod requests;
mod scripts;
pub mod status;
mod time;
pub mod watch;

pub use admin::{Counts, Replayed};
pub use backoff::{Backoff, Jitter};
pub use client::{Client, ClientBuilder, ClientOptions, Durability, QueuePolicy, Retention};
pub use connection::{ClusterTarget, RedisTarget, SentinelTarget};
pub use doctor::{QueueReport, Violation};
pub use error::{Error, Result};
pub use flow::{FlowLimits, FlowSettings, RateLimit};
pub use job::{
    AttemptError, EnqueueOptions, FailureKind, Group, Job, JobFacts, JobId, JobState, MAX_PRIORITY, NewJob,
    UniqueMode,
};
pub use names::QueueName;
pub use operator::dead::{DeadFilter, DeadMatches};
pub use operator::events::{Event, EventFollower};
pub use operator::{Drained, Purged, QueueSummary};
pub use producer::EnqueueOutcome;
pub use progress::Progress;
pub use protocol::{
    Claim, ClaimOptions, ClaimedJob, Completion, Extended, FailOutcome, Failure, FlowLimit, Lease, Reaped,
    Released,
};
pub use repair::{Repair, RepairOutcome, RepairReport};
pub use status::JobStatus;
pub use watch::{JobUpdate, JobWatch};
