//! The report of a run: a table for people, the same as JSON for machines,
//! and the verdict that sets the exit code.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::faults::FaultRecord;
use crate::schedule::FaultKind;
use crate::summary::Figures;

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
    /// What happened to the jobs (see [`Figures`]).
    #[serde(flatten)]
    pub figures: Figures,
    /// Jobs in no terminal state: `missing` plus `unsettled`. Must be 0.
    pub lost: u64,
    /// Violations found by `Client::check_queue` at the end. Must be 0.
    pub invariant_violations: u64,
    /// Events read from the stream (one per job an entry lists).
    pub events_read: u64,
    /// False if the stream was trimmed before it was read.
    pub events_whole: bool,
    /// Whether every job was settled before the duration limit.
    pub settled: bool,
    /// Worker processes that misbehaved (exited on their own, or did not
    /// shut down cleanly on SIGTERM).
    pub anomalies: Vec<String>,
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
                self.lost, self.figures.missing, self.figures.unsettled
            ));
        }
        if self.figures.mismatched > 0 {
            failures
                .push(format!("{} jobs ended otherwise than their behaviour says", self.figures.mismatched));
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
        rows.push(("completed".into(), self.figures.completed.to_string()));
        rows.push(("dead".into(), self.figures.dead.values().sum::<u64>().to_string()));
        for (reason, n) in &self.figures.dead {
            rows.push((format!("  {reason}"), n.to_string()));
        }
        rows.push(("  of which attempts spent by faults".into(), self.figures.dead_by_faults.to_string()));
        rows.push((
            "lost (must be 0)".into(),
            format!("{} ({} missing, {} unsettled)", self.lost, self.figures.missing, self.figures.unsettled),
        ));
        rows.push(("mismatched ends (must be 0)".into(), self.figures.mismatched.to_string()));
        rows.push(("executions".into(), self.figures.executions.to_string()));
        rows.push((
            "duplicates".into(),
            format!("{} in {} jobs", self.figures.duplicates, self.figures.jobs_with_duplicates),
        ));
        for (cause, n) in &self.figures.duplicates_by_cause {
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
        for line in self.anomalies.iter().chain(&self.figures.examples) {
            let _ = writeln!(out, "  ! {line}");
        }
        out
    }
}

fn join(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}
