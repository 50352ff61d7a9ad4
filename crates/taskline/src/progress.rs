//! Progress reports and checkpoints of a running job, written by the
//! attempt that holds its lease (`lua/progress.lua`, `lua/checkpoint.lua`).
//!
//! Both are fenced by the lease token like every outcome call: a stale
//! attempt gets [`Error::LeaseLost`] and writes nothing. The client writes
//! what it is given; coalescing many reports into a few writes per second
//! is the worker's job (`JobContext::progress` in `taskline-worker`).

use serde::{Deserialize, Serialize};

use crate::args::truncate;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::protocol::Lease;
use crate::scripts::SCRIPTS;

/// Longest unit name stored, in bytes; longer ones are cut.
pub const MAX_UNIT_BYTES: usize = 64;

/// Longest progress message stored, in bytes; longer ones are cut.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// How far a job has come, in units the handler chose: "12,000 of 40,000
/// rows". Stored as JSON in the job's `progress` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done so far.
    pub done: u64,
    /// Units in all; 0 when the total is not known.
    pub total: u64,
    /// What is counted (`rows`, `bytes`, `files`, ...).
    pub unit: String,
    /// Free text about the current step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Progress {
    /// `done` of `total` `unit`s, without a message.
    pub fn new(done: u64, total: u64, unit: impl Into<String>) -> Self {
        Self { done, total, unit: unit.into(), message: None }
    }

    /// Adds a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// `done / total` between 0 and 1, or `None` when the total is unknown.
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).clamp(0.0, 1.0))
    }

    /// The report with unit and message cut to their limits, as stored.
    fn bounded(&self) -> Progress {
        Progress {
            done: self.done,
            total: self.total,
            unit: truncate(&self.unit, MAX_UNIT_BYTES).to_string(),
            message: self.message.as_deref().map(|m| truncate(m, MAX_MESSAGE_BYTES).to_string()),
        }
    }
}

impl Client {
    /// Stores `progress` on the leased job and emits a `progress` event.
    /// Every call is one Redis round trip: coalesce frequent reports before
    /// calling this.
    pub async fn report_progress(&self, lease: &Lease, progress: &Progress) -> Result<()> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let progress = progress.bounded();
        let json = serde_json::to_string(&progress).map_err(Error::InvalidPayload)?;
        let mut args = self.outcome_args(&keys, lease);
        args.text(&json)
            .push(progress.done)
            .push(progress.total)
            .text(&progress.unit)
            .text(progress.message.as_deref().unwrap_or(""));
        self.run(&SCRIPTS.progress, &[keys.events()], args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        Ok(())
    }

    /// Stores `checkpoint` (JSON text) on the leased job: the next attempt
    /// of the job receives it in [`crate::JobFacts::checkpoint`]. Fails
    /// with [`Error::PayloadTooLarge`] over `max_checkpoint_bytes` (nothing
    /// is sent) and with [`Error::LeaseLost`] when this lease no longer holds
    /// the job (nothing is written).
    pub async fn save_checkpoint(&self, lease: &Lease, checkpoint: &str) -> Result<()> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let limit = self.options().max_checkpoint_bytes;
        if checkpoint.len() > limit {
            return Err(Error::PayloadTooLarge { what: "checkpoint", size: checkpoint.len(), limit });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(checkpoint).map_err(Error::InvalidPayload)?;
        let mut args = self.outcome_args(&keys, lease);
        args.text(checkpoint);
        self.run(&SCRIPTS.checkpoint, &[keys.events()], args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_is_bounded_and_unknown_without_a_total() {
        assert_eq!(Progress::new(1, 4, "rows").fraction(), Some(0.25));
        assert_eq!(Progress::new(9, 4, "rows").fraction(), Some(1.0));
        assert_eq!(Progress::new(9, 0, "rows").fraction(), None);
    }

    #[test]
    fn long_units_and_messages_are_cut() {
        let p = Progress::new(1, 2, "u".repeat(100)).with_message("m".repeat(5000)).bounded();
        assert_eq!(p.unit.len(), MAX_UNIT_BYTES);
        assert_eq!(p.message.map(|m| m.len()), Some(MAX_MESSAGE_BYTES));
    }

    #[test]
    fn the_stored_json_omits_an_absent_message() {
        let json = serde_json::to_string(&Progress::new(3, 10, "rows")).expect("json");
        assert_eq!(json, r#"{"done":3,"total":10,"unit":"rows"}"#);
    }
}
