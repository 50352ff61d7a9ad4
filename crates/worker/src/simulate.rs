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
//! - `result`: the JSON value to return on success.

use std::time::Duration;

use serde::Deserialize;

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
