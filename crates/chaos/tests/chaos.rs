//! The CI run of the fault-injection suite: a short seeded run of the real
//! `taskline-chaos` binary against real `taskline-worker` processes and a
//! private `redis-server`, asserting that every job is accounted for.
//!
//! An integration test of this crate cannot see `CARGO_BIN_EXE_taskline-worker`
//! (another package's binary), so the test builds it with the same cargo,
//! target directory and profile as the chaos binary, which puts it next to
//! `taskline-chaos` where the runner looks by default. The build is a no-op
//! when the binary is fresh.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Jobs of the CI run: what the 2-core CI machine settles in about a minute
/// (about 600 jobs/s under faults), so the faults land while jobs run.
const JOBS: u64 = 30_000;
/// The seed of the CI run; change it only on purpose.
const SEED: &str = "20251127";
const FAULT_KINDS: [&str; 5] =
    ["worker_sigkill", "worker_sigterm", "redis_restart", "client_kill", "redis_pause"];

#[test]
fn a_short_seeded_run_loses_nothing() {
    let chaos = PathBuf::from(env!("CARGO_BIN_EXE_taskline-chaos"));
    let worker = taskline_testkit::build_worker_next_to(&chaos);
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let output = Command::new(&chaos)
        .args(["--jobs", &JOBS.to_string(), "--workers", "4", "--seed", SEED, "--fsync", "always"])
        .args(["--duration-limit", "240"])
        .arg("--worker-bin")
        .arg(&worker)
        .arg("--json")
        .arg(&report_path)
        .output()
        .expect("run taskline-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| panic!("no report ({e}); {context}"));
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    let n = |key: &str| report[key].as_u64().unwrap_or_else(|| panic!("report.{key} missing; {context}"));

    assert_eq!(n("jobs"), JOBS, "{context}");
    assert_eq!(n("lost"), 0, "no job may be lost; {context}");
    assert_eq!(n("missing"), 0, "{context}");
    assert_eq!(n("unsettled"), 0, "{context}");
    assert_eq!(n("invariant_violations"), 0, "{context}");
    assert_eq!(n("mismatched"), 0, "every job ends as its behaviour says; {context}");
    let dead: u64 =
        report["dead"].as_object().expect("dead by reason").values().filter_map(Value::as_u64).sum();
    assert_eq!(n("completed") + dead, JOBS, "every job completed or dead; {context}");
    for kind in FAULT_KINDS {
        let injected = report["faults"][kind].as_u64().unwrap_or(0);
        assert!(injected >= 2, "fault {kind} injected {injected} times, want at least 2; {context}");
    }
    assert!(n("executions") >= JOBS, "{context}");
    assert_eq!(report["passed"], true, "{context}");
    assert!(output.status.success(), "taskline-chaos exit status {}; {context}", output.status);
    assert!(stdout.contains("lost (must be 0)"), "the table is printed; {context}");
}
