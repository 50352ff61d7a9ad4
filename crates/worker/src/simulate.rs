//! The `simulate` handler kind: a built-in handler whose payload says what
//! to do. It exists for demos, tests, benchmarks and fault drills, so that
//! the stock `taskline-worker` binary can run realistic workloads without
//! any user code.
//!
//! Payload fields (all optional):
//! - `sleep_ms`: work for this long (cancellable);
//! - `fail_times`: fail the first N attempts...
//! - `fail_kind`: ...as `transient` (default) or `permanent`;
//! - `panic`: panic instead of failing (on the failing attempts, or on every
//!   attempt when `fail_times` is absent);
//! - `result`: the JSON value to return on success;
//! - `steps`, `step_ms`, `unit`, `checkpoint_every`: a long job in units:
//!   `steps` steps of `step_ms` each, reporting progress in `unit`s
//!   (default `steps`) after every step and saving the checkpoint
//!   `{"done": n}` every `checkpoint_every` steps. A later attempt resumes
//!   after the checkpoint. With the environment variable
//!   [`WORK_LOG_DIR_ENV`] set to a directory, every step done is appended to
//!   `<dir>/<job id>.log` as `<attempt> <step>` lines: the handler's own
//!   record of the work it did, for resume tests and drills.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handler::{BoxFuture, Handler, HandlerResult, JobContext, JobError};

/// What a simulated job does, read from its payload.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Simulation {
    /// Milliseconds of "work".
    pub sleep_ms: u64,
    /// Attempts that fail before one succeeds.
    pub fail_times: Option<u32>,
    /// `transient` or `permanent`.
    pub fail_kind: Option<String>,
    /// Panic instead of returning an error.
    pub panic: bool,
    /// Returned on success.
    pub result: Option<serde_json::Value>,
    /// Steps of work, with progress reported after each.
    pub steps: u64,
    /// Milliseconds per step.
    pub step_ms: u64,
    /// What a step is called in progress reports (default `steps`).
    pub unit: Option<String>,
    /// Save a checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
}

/// The environment variable naming the directory of the step logs.
pub const WORK_LOG_DIR_ENV: &str = "TASKLINE_SIMULATE_WORK_LOG";

/// The checkpoint of a stepped simulation: steps done.
#[derive(Debug, Serialize, Deserialize)]
struct StepCheckpoint {
    done: u64,
}

/// The `simulate` handler.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimulateHandler;

impl Handler for SimulateHandler {
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            let sim: Simulation = serde_json::from_str(&payload).map_err(|e| {
                JobError::permanent(format!("simulate payload does not decode: {e}"))
                    .with_reason("invalid_payload")
            })?;
            if sim.steps > 0 {
                run_steps(&ctx, &sim).await?;
            }
            if sim.sleep_ms > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(sim.sleep_ms)) => {}
                    _ = ctx.cancelled() => return Err(JobError::transient("cancelled")),
                }
            }
            let failing = match sim.fail_times {
                Some(n) => ctx.attempt <= n,
                None => sim.panic,
            };
            if failing {
                if sim.panic {
                    panic!("simulated panic on attempt {}", ctx.attempt);
                }
                let message = format!("simulated failure on attempt {}", ctx.attempt);
                return Err(match sim.fail_kind.as_deref() {
                    Some("permanent") => JobError::permanent(message).with_reason("simulated"),
                    _ => JobError::transient(message),
                });
            }
            Ok(sim.result)
        })
    }
}

/// Runs the steps of `sim` from the last checkpoint on.
async fn run_steps(ctx: &JobContext, sim: &Simulation) -> Result<(), JobError> {
    let start = match ctx.resume_from::<StepCheckpoint>() {
        Ok(checkpoint) => checkpoint.map_or(0, |c| c.done.min(sim.steps)),
        Err(e) => {
            return Err(JobError::permanent(format!("simulate checkpoint does not decode: {e}"))
                .with_reason("invalid_checkpoint"));
        }
    };
    let unit = sim.unit.as_deref().unwrap_or("steps");
    ctx.progress(start, sim.steps, unit);
    for step in start + 1..=sim.steps {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sim.step_ms)) => {}
            _ = ctx.cancelled() => return Err(JobError::transient("cancelled")),
        }
        record_step(ctx, step)?;
        ctx.progress(step, sim.steps, unit);
        if sim.checkpoint_every > 0 && step % sim.checkpoint_every == 0 {
            ctx.checkpoint(&StepCheckpoint { done: step }).await?;
        }
    }
    Ok(())
}

/// Appends `<attempt> <step>` to the job's step log, when one is set up.
fn record_step(ctx: &JobContext, step: u64) -> Result<(), JobError> {
    let Some(dir) = std::env::var_os(WORK_LOG_DIR_ENV) else {
        return Ok(());
    };
    let path = std::path::Path::new(&dir).join(format!("{}.log", ctx.id));
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    writeln!(file, "{} {step}", ctx.attempt)?;
    Ok(())
}
