//! The account of every job at the end of a run.
//!
//! Each planned id is read back with `Client::get_job` and judged against
//! its behaviour: completed or dead with the expected reason, or dead with
//! its attempts spent by lost leases (explained by faults), or something
//! else (a mismatch), or not in a terminal state (lost), or gone (lost).

use std::time::Duration;

use anyhow::{Result, anyhow};
use taskline::{Client, Error, Job, JobId, JobState};
use tokio::task::JoinSet;

use crate::behaviour::{Behaviour, Expected, PlannedJob, REASON_EXHAUSTED};
use crate::worker_config::QUEUE;

/// Reads in flight at once.
const PARALLEL: usize = 32;
/// The message the reaper records for a lease that ran out.
pub const LEASE_EXPIRED: &str = "lease expired";

/// What the accounting needs of one stored job.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it is.
    pub state: JobState,
    /// Attempts started.
    pub attempt: u32,
    /// Times released unrun.
    pub releases: u32,
    /// Why it died, for a dead job.
    pub dead_reason: Option<String>,
    /// Every failed attempt: message, worker, time (ms since the epoch).
    pub errors: Vec<(String, String, u64)>,
}

impl Stored {
    fn from_job(job: Job) -> Stored {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
        };
        Stored {
            state: job.state,
            attempt: job.facts.attempt,
            releases: job.facts.releases,
            dead_reason: job.dead_reason,
            errors: job.errors.into_iter().map(|e| (e.message, e.worker, ms(e.at))).collect(),
        }
    }

    /// Claims the hash shows: attempts started plus releases (a release
    /// gives the attempt back).
    pub fn claims(&self) -> u32 {
        self.attempt + self.releases
    }

    /// Failed attempts whose lease ran out.
    pub fn lease_expiries(&self) -> usize {
        self.errors.iter().filter(|(message, _, _)| message == LEASE_EXPIRED).count()
    }
}

/// How one job ended, judged against its behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ended as its behaviour says.
    AsExpected,
    /// Dead with its attempts spent, some of them by lost leases.
    DeadByFaults,
    /// Ended otherwise; the text says how.
    Mismatch(String),
    /// Still ready, delayed or active: lost.
    Unsettled(JobState),
    /// No job hash at all: lost.
    Missing,
}

/// Reads every planned job back. `None` marks a job that does not exist.
pub async fn read_all(client: &Client, plan: &[PlannedJob]) -> Result<Vec<Option<Stored>>> {
    let ids: Vec<String> = plan.iter().map(|j| j.id.clone()).collect();
    let mut tasks = JoinSet::new();
    for lane in 0..PARALLEL {
        let client = client.clone();
        let mine: Vec<(usize, String)> =
            ids.iter().enumerate().skip(lane).step_by(PARALLEL).map(|(i, id)| (i, id.clone())).collect();
        tasks.spawn(async move {
            let mut read = Vec::with_capacity(mine.len());
            for (index, id) in mine {
                read.push((index, read_one(&client, &id).await?));
            }
            Ok::<_, anyhow::Error>(read)
        });
    }
    let mut stored = vec![None; ids.len()];
    while let Some(lane) = tasks.join_next().await {
        for (index, job) in lane.map_err(|e| anyhow!("{e}"))?? {
            stored[index] = job;
        }
    }
    Ok(stored)
}

/// One job, retrying connection errors for a while.
async fn read_one(client: &Client, id: &str) -> Result<Option<Stored>> {
    let job_id = JobId::new(id)?;
    let mut tries = 0;
    loop {
        match client.get_job(QUEUE, &job_id).await {
            Ok(job) => return Ok(Some(Stored::from_job(job))),
            Err(Error::JobNotFound { .. }) => return Ok(None),
            Err(err) if err.is_connection_error() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(anyhow!("cannot read job {id}: {err}")),
        }
    }
}

/// Judges one job.
pub fn judge(plan: &PlannedJob, stored: Option<&Stored>) -> Verdict {
    let Some(job) = stored else { return Verdict::Missing };
    match (job.state, plan.expected()) {
        (JobState::Ready | JobState::Delayed | JobState::Active, _) => Verdict::Unsettled(job.state),
        (JobState::Completed, Expected::Completed) => {
            if plan.behaviour == Behaviour::TransientThenSucceed && job.attempt < plan.needed_executions {
                Verdict::Mismatch(format!(
                    "completed on attempt {} but its first {} attempts fail",
                    job.attempt,
                    plan.needed_executions - 1
                ))
            } else {
                Verdict::AsExpected
            }
        }
        (JobState::Completed, Expected::Dead(reason)) => {
            Verdict::Mismatch(format!("completed, but a {} job must die ({reason})", plan.behaviour.as_str()))
        }
        (JobState::Dead, expected) => {
            let reason = job.dead_reason.as_deref().unwrap_or("");
            match expected {
                Expected::Dead(want) if want == reason => Verdict::AsExpected,
                _ if reason == REASON_EXHAUSTED && job.lease_expiries() > 0 => Verdict::DeadByFaults,
                _ => Verdict::Mismatch(format!(
                    "dead ({reason}) after {} attempts, but a {} job must {}; errors: {:?}",
                    job.attempt,
                    plan.behaviour.as_str(),
                    match expected {
                        Expected::Completed => "complete".to_string(),
                        Expected::Dead(want) => format!("die ({want})"),
                    },
                    job.errors.iter().map(|(m, _, _)| m.as_str()).collect::<Vec<_>>()
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn planned(behaviour: Behaviour) -> PlannedJob {
        PlannedJob::new(0, behaviour, Duration::from_secs(2), &mut StdRng::seed_from_u64(0))
    }

    fn stored(state: JobState, attempt: u32, reason: Option<&str>, errors: &[&str]) -> Stored {
        Stored {
            state,
            attempt,
            releases: 0,
            dead_reason: reason.map(str::to_string),
            errors: errors.iter().map(|m| (m.to_string(), "w0-g0".into(), 0)).collect(),
        }
    }

    #[test]
    fn expected_ends_pass() {
        let ok = stored(JobState::Completed, 1, None, &[]);
        assert_eq!(judge(&planned(Behaviour::Succeed), Some(&ok)), Verdict::AsExpected);
        let perm = stored(JobState::Dead, 1, Some("simulated"), &["simulated failure on attempt 1"]);
        assert_eq!(judge(&planned(Behaviour::Permanent), Some(&perm)), Verdict::AsExpected);
        let panic = stored(JobState::Dead, 3, Some("attempts_exhausted"), &["handler panicked: x"; 3]);
        assert_eq!(judge(&planned(Behaviour::Panic), Some(&panic)), Verdict::AsExpected);
    }

    #[test]
    fn lost_and_wrong_ends_are_flagged() {
        assert_eq!(judge(&planned(Behaviour::Succeed), None), Verdict::Missing);
        let active = stored(JobState::Active, 1, None, &[]);
        assert_eq!(judge(&planned(Behaviour::Succeed), Some(&active)), Verdict::Unsettled(JobState::Active));
        let done = stored(JobState::Completed, 1, None, &[]);
        assert!(matches!(judge(&planned(Behaviour::Hang), Some(&done)), Verdict::Mismatch(_)));
        assert!(matches!(
            judge(&planned(Behaviour::TransientThenSucceed), Some(&done)),
            Verdict::Mismatch(_)
        ));
    }

    #[test]
    fn attempts_spent_by_lost_leases_are_explained() {
        let spent = stored(JobState::Dead, 8, Some("attempts_exhausted"), &[LEASE_EXPIRED; 8]);
        assert_eq!(judge(&planned(Behaviour::Succeed), Some(&spent)), Verdict::DeadByFaults);
        let odd = stored(JobState::Dead, 8, Some("attempts_exhausted"), &["boom"; 8]);
        assert!(matches!(judge(&planned(Behaviour::Succeed), Some(&odd)), Verdict::Mismatch(_)));
    }
}
