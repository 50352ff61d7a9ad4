//! Running the real `taskline-bench` binary, shared by the test files.

use std::process::Command;

use serde_json::Value;

/// Runs `taskline-bench` with `args` and `--no-peer --json <tmp>` against
/// its own private redis-server; panics unless it succeeds. Returns the
/// printed table and the JSON report.
pub fn run_bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_taskline-bench"))
        .args(args)
        .args(["--no-peer", "--json"])
        .arg(&report)
        .env_remove("REDIS_URL")
        .output()
        .expect("run taskline-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let doc = serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    (stdout, doc)
}
