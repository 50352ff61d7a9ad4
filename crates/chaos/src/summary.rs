//! Turning what the run observed into the figures of the report.

use std::collections::BTreeMap;

use taskline::{JobState, QueueReport};

use crate::accounting::{Stored, Verdict, judge};
use crate::attribution::{Attributor, causes, tally};
use crate::behaviour::PlannedJob;
use crate::events::EventLog;
use crate::faults::FaultRecord;

/// Most examples kept for the report.
const EXAMPLES: usize = 20;

/// The per-job figures of a run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Figures {
    /// Jobs completed.
    pub completed: u64,
    /// Dead jobs by reason.
    pub dead: BTreeMap<String, u64>,
    /// Dead jobs whose attempts lost leases used up.
    pub dead_by_faults: u64,
    /// Ids with no job.
    pub missing: u64,
    /// Jobs not in a terminal state.
    pub unsettled: u64,
    /// Jobs that ended otherwise than expected.
    pub mismatched: u64,
    /// Claims of all jobs.
    pub executions: u64,
    /// Claims beyond what behaviours need.
    pub duplicates: u64,
    /// Duplicates by the fault that explains them.
    pub duplicates_by_cause: BTreeMap<String, u64>,
    /// Jobs with duplicates.
    pub jobs_with_duplicates: u64,
    /// Examples of what went wrong.
    pub examples: Vec<String>,
    /// Examples of duplicated jobs with their causes.
    pub duplicate_samples: Vec<String>,
    /// Jobs with a duplicate no fault explains, with their event timelines.
    pub unexplained_samples: Vec<String>,
}

/// Judges every job and attributes its duplicates.
pub fn figures(
    plan: &[PlannedJob],
    stored: &[Option<Stored>],
    events: &EventLog,
    faults: &[FaultRecord],
    window_ms: u64,
) -> Figures {
    let attributor = Attributor::new(faults, window_ms);
    let events_whole = !events.gap;
    let mut f = Figures::default();
    for (index, planned) in plan.iter().enumerate() {
        let job = stored[index].as_ref();
        let verdict = judge(planned, job);
        match job.map(|j| (j.state, j.dead_reason.clone())) {
            Some((JobState::Completed, _)) => f.completed += 1,
            Some((JobState::Dead, reason)) => {
                *f.dead.entry(reason.unwrap_or_else(|| "(none)".into())).or_insert(0) += 1
            }
            _ => {}
        }
        match &verdict {
            Verdict::AsExpected => {}
            Verdict::DeadByFaults => f.dead_by_faults += 1,
            Verdict::Mismatch(how) => {
                f.mismatched += 1;
                example(&mut f.examples, format!("{}: {how}", planned.id));
            }
            Verdict::Unsettled(state) => {
                f.unsettled += 1;
                example(&mut f.examples, format!("{}: lost, still {state}", planned.id));
            }
            Verdict::Missing => {
                f.missing += 1;
                example(&mut f.examples, format!("{}: lost, no such job", planned.id));
            }
        }
        let job_events = events.jobs.get(index).map(Vec::as_slice).unwrap_or(&[]);
        let claims = events.claims(index).max(job.map_or(0, Stored::claims));
        f.executions += u64::from(claims);
        let extra = claims.saturating_sub(planned.needed_executions);
        if extra > 0 {
            f.duplicates += u64::from(extra);
            f.jobs_with_duplicates += 1;
            let found = causes(job_events, events, job, events_whole);
            let unexplained = tally(extra, &found, &attributor, &mut f.duplicates_by_cause);
            let labels: Vec<String> =
                found.iter().map(|c| format!("{c:?} => {}", attributor.attribute(c))).collect();
            let sample = format!(
                "{} ({}): {claims} claims, {} needed; causes: {}",
                planned.id,
                planned.behaviour.as_str(),
                planned.needed_executions,
                labels.join("; ")
            );
            if unexplained > 0 {
                example(&mut f.unexplained_samples, timeline(&sample, job_events, events));
            } else {
                example(&mut f.duplicate_samples, sample);
            }
        }
    }
    f
}

/// Adds the invariant checker's findings to the examples.
pub fn note_violations(f: &mut Figures, check: &QueueReport) {
    for violation in &check.violations {
        example(&mut f.examples, format!("invariant: {violation}"));
    }
}

/// `sample` followed by the job's events.
fn timeline(sample: &str, job_events: &[crate::events::Event], log: &EventLog) -> String {
    let events: Vec<String> = job_events
        .iter()
        .map(|e| {
            format!("{} {:?} attempt {} {}", e.at_ms, e.kind, e.attempt, log.worker(e.worker).unwrap_or("-"))
        })
        .collect();
    format!("{sample}; events: {}", events.join(", "))
}

fn example(examples: &mut Vec<String>, text: String) {
    if examples.len() < EXAMPLES {
        examples.push(text);
    }
}
