//! What a frontend asks about one job: its status now
//! ([`Client::job_status`]). Following it as it changes, and waiting for
//! its final outcome, is [`crate::watch`].

use std::time::SystemTime;

use serde::Serialize;

use crate::client::Client;
use crate::error::Result;
use crate::job::{AttemptError, Job, JobId, JobState};
use crate::progress::Progress;
use crate::time::to_epoch_millis;

/// A job's status: the part of its record a person waiting for it cares
/// about. Serializes to the JSON that `taskline serve` answers with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// The job name.
    pub name: String,
    /// Where the job is now.
    pub state: JobState,
    /// Attempts started (1 while the first runs).
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// The latest progress report, if the handler made one.
    pub progress: Option<Progress>,
    /// The handler's result, once completed (`null` when it returned none).
    pub result: Option<serde_json::Value>,
    /// The latest failed attempt's error, if any attempt failed.
    pub last_error: Option<AttemptError>,
    /// Why it died, for a dead job.
    pub dead_reason: Option<String>,
    /// When it was enqueued, in ms since the Unix epoch (server clock).
    pub created_at_ms: u64,
    /// When its latest attempt started, in ms since the epoch.
    pub started_at_ms: Option<u64>,
    /// When it completed or died, in ms since the epoch.
    pub finished_at_ms: Option<u64>,
}

impl JobStatus {
    /// True when the job completed or died: nothing more happens to it
    /// unless an operator replays it.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The status part of a full record. A progress report or result that
    /// does not decode (written by something other than Taskline) reads as
    /// absent rather than failing the whole status.
    pub fn from_job(job: &Job) -> JobStatus {
        let ms = |t: Option<SystemTime>| t.map(to_epoch_millis);
        JobStatus {
            id: job.id.clone(),
            queue: job.queue.clone(),
            name: job.facts.name.clone(),
            state: job.state,
            attempt: job.facts.attempt,
            max_attempts: job.facts.max_attempts,
            progress: job.progress.as_deref().and_then(|p| serde_json::from_str(p).ok()),
            result: job.result.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            last_error: job.errors.last().cloned(),
            dead_reason: job.dead_reason.clone(),
            created_at_ms: to_epoch_millis(job.facts.created_at),
            started_at_ms: ms(job.started_at),
            finished_at_ms: ms(job.finished_at),
        }
    }
}

impl JobState {
    /// Completed or dead: the end of the job's lifecycle (until a replay).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead)
    }
}

impl Client {
    /// The status of job `id` of `queue`: state, progress, attempts, and
    /// the result or the last error. [`crate::Error::JobNotFound`] when there is
    /// no such job (any more).
    pub async fn job_status(&self, queue: &str, id: &JobId) -> Result<JobStatus> {
        Ok(JobStatus::from_job(&self.get_job(queue, id).await?))
    }
}
