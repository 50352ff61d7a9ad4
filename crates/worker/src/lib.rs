//! # Taskline worker
//!
//! The runtime that claims jobs under a lease and runs them: a library for
//! Rust teams that register their own handlers, and the `taskline-worker`
//! binary configured by TOML (see `config/worker.toml`).
//!
//! ```no_run
//! use taskline_worker::{Config, JobContext, Worker, handler_fn};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("config/worker.toml".as_ref())?;
//! let worker = Worker::builder(config)
//!     .handler("emails", "send_email", handler_fn(|ctx: JobContext, to: String| async move {
//!         println!("job {} mails {to}", ctx.id);
//!         Ok(None)
//!     }))
//!     .build()?;
//! let shutdown = CancellationToken::new();
//! worker.run(shutdown.clone(), CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, env overrides and validation.
//! - [`handler`]: [`Handler`], [`JobContext`], [`JobError`], [`handler_fn`].
//! - [`worker`]: [`Worker`], its builder and the supervisor: it starts the
//!   components below and stops them in a documented order.
//! - `claimer`: the claim loop: fills free slots with claims and starts a
//!   runner per job, idles on the [`waiter`] when there is no work.
//! - [`scheduler`]: slots, per-queue concurrency, weights and strict queues.
//! - `runner`: one job's run and the recording of its outcome, with the
//!   narrow context every runner shares.
//! - `queues`: each queue's settings and handlers at run time, by
//!   scheduler index.
//! - `progress`: coalesced progress writes and checkpoints of a running job.
//! - [`leases`]: held leases and the [`leases::LeaseRenewer`] heartbeat.
//! - [`reaper`]: recovery of expired leases.
//! - [`metrics`]: the per-worker metrics registry and every metric name.
//! - [`sampler`]: queue depths and the DLQ depth alert.
//! - [`health`]: the `/metrics`, `/healthz` and `/readyz` HTTP server.
//! - [`waiter`]: the blocking idle wait with its watchdog.
//! - [`simulate`]: the built-in `simulate` handler kind.
//! - [`http`]: the `http` handler kind (POST to an endpoint).
//! - [`command`]: the `command` handler kind (run a program), with
//!   [`process_group`] to stop its processes together.
//! - `builtin`: builds the handlers configured in TOML.
//! - [`interpolate`]: `${NAME}` references in configured values.
//! - [`reports`]: progress and checkpoints from `command` handlers (stderr lines).
//! - [`output`]: results and error text of external handlers, size-limited.
//! - [`logging`]: tracing setup (text or JSON).

mod builtin;
mod claimer;
pub mod command;
pub mod config;
pub mod handler;
pub mod health;
pub mod http;
pub mod interpolate;
pub mod leases;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod process_group;
mod progress;
mod queues;
pub mod reaper;
pub mod reports;
mod runner;
pub mod sampler;
pub mod scheduler;
pub mod simulate;
pub mod waiter;
pub mod worker;

pub use config::{Config, ConfigError};
pub use handler::{
    BoxFuture, FnHandler, Handler, HandlerResult, JobContext, JobError, WithMaxVersion, handler_fn,
};
pub use worker::{Worker, WorkerBuilder, WorkerError, WorkerReport};
