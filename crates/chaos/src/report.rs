//! The report of a run: a table for people, the same as JSON for machines,
//! and the verdict that sets the exit code.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::faults::FaultRecord;
use crate::schedule::FaultKind;

/// What the run was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// The command line, for rerunning it.
    pub command: String,
    /// Jobs enqueued.
    pub jobs: u64,
    /// Worker processes.
    pub workers: usize,
    /// Job slots per worker.
    pub concurrency: u32,
    /// The seed of the workload and the fault schedule.
    pub seed: u64,
    /// Redis `appendfsync`.
    pub fsync: String,
    /// Longest run allowed, seconds.
    pub duration_limit_s: u64,
    /// Faults of each kind injected at least.
    pub min_faults_per_kind: usize,
    /// Worker lease, ms.
    pub lease_ms: u64,
    /// Reaper interval, ms.
    pub reap_interval_ms: u64,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The parameters.
    pub params: Params,
    /// Jobs enqueued.
    pub jobs: u64,
    /// Jobs per behaviour.
    pub behaviours: BTreeMap<String, u64>,
    /// Faults injected per kind.
    pub faults: BTreeMap<String, u64>,
    /// Jobs completed.
    pub completed: u64,
    /// Dead jobs per reason.
    pub dead: BTreeMap<String, u64>,
    /// Dead jobs whose attempts were spent by lost leases, not by their
    /// behaviour (counted in `dead` too).
    pub dead_by_faults: u64,
    /// Jobs in no terminal state: `missing` plus `unsettled`. Must be 0.
    pub lost: u64,
    /// Enqueued ids with no job at all.
    pub missing: u64,
    /// Jobs still ready, delayed or active at the end.
    pub unsettled: u64,
    /// Jobs that ended otherwise than their behaviour says. Must be 0.
    pub mismatched: u64,
    /// Executions (claims) of all jobs.
    pub executions: u64,
    /// Executions beyond what the behaviours need.
    pub duplicates: u64,
    /// Duplicates per fault that explains them.
    pub duplicates_by_cause: BTreeMap<String, u64>,
    /// Jobs run more often than needed.
    pub jobs_with_duplicates: u64,
    /// Violations found by `Client::check_queue` at the end. Must be 0.
    pub invariant_violations: u64,
    /// Event stream entries read.
    pub events_read: u64,
    /// False if the stream was trimmed before it was read.
    pub events_whole: bool,
    /// Whether every job was settled before the duration limit.
    pub settled: bool,
    /// Worker processes that misbehaved (exited on their own, or did not
    /// shut down cleanly on SIGTERM).
    pub anomalies: Vec<String>,
    /// Up to 20 examples of lost or mismatched jobs and violations.
    pub examples: Vec<String>,
    /// Up to 20 jobs run more often than needed, with the causes found.
    pub duplicate_samples: Vec<String>,
    /// Up to 20 jobs with a duplicate no fault explains, with their events.
    pub unexplained_samples: Vec<String>,
    /// Every fault injected, in order.
    pub fault_log: Vec<FaultRecord>,
    /// Seconds from start to the end of the accounting.
    pub wall_time_s: f64,
    /// No job lost, none mismatched, no invariant violated.
    pub passed: bool,
}

impl Report {
    /// Why the run failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.lost > 0 {
            failures.push(format!(
                "{} jobs lost ({} missing, {} unsettled)",
                self.lost, self.missing, self.unsettled
            ));
        }
        if self.mismatched > 0 {
            failures.push(format!("{} jobs ended otherwise than their behaviour says", self.mismatched));
        }
        if self.invariant_violations > 0 {
            failures.push(format!("{} invariant violations", self.invariant_violations));
        }
        failures
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> =
            vec![("jobs".into(), self.jobs.to_string()), ("  by behaviour".into(), join(&self.behaviours))];
        let total_faults: u64 = self.faults.values().sum();
        rows.push(("faults injected".into(), total_faults.to_string()));
        for kind in FaultKind::ALL {
            rows.push((
                format!("  {}", kind.as_str()),
                self.faults.get(kind.as_str()).copied().unwrap_or(0).to_string(),
            ));
        }
        rows.push(("completed".into(), self.completed.to_string()));
        rows.push(("dead".into(), self.dead.values().sum::<u64>().to_string()));
        for (reason, n) in &self.dead {
            rows.push((format!("  {reason}"), n.to_string()));
        }
        rows.push(("  of which attempts spent by faults".into(), self.dead_by_faults.to_string()));
        rows.push((
            "lost (must be 0)".into(),
            format!("{} ({} missing, {} unsettled)", self.lost, self.missing, self.unsettled),
        ));
        rows.push(("mismatched ends (must be 0)".into(), self.mismatched.to_string()));
        rows.push(("executions".into(), self.executions.to_string()));
        rows.push((
            "duplicates".into(),
            format!("{} in {} jobs", self.duplicates, self.jobs_with_duplicates),
        ));
        for (cause, n) in &self.duplicates_by_cause {
            rows.push((format!("  {cause}"), n.to_string()));
        }
        rows.push(("invariant violations (must be 0)".into(), self.invariant_violations.to_string()));
        rows.push((
            "events read".into(),
            format!("{}{}", self.events_read, if self.events_whole { "" } else { " (gap)" }),
        ));
        rows.push(("worker anomalies".into(), self.anomalies.len().to_string()));
        rows.push(("wall time".into(), format!("{:.1} s", self.wall_time_s)));
        rows.push(("result".into(), if self.passed { "PASS".into() } else { "FAIL".into() }));

        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out, "taskline-chaos: {}", self.params.command);
        for (key, value) in rows {
            let _ = writeln!(out, "{key:<width$}  {value}");
        }
        for line in self.anomalies.iter().chain(&self.examples) {
            let _ = writeln!(out, "  ! {line}");
        }
        out
    }
}

fn join(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}
