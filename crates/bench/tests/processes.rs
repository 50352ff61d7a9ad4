//! The multi-process scenarios must not rot either: `saturate` with one and
//! two real `taskline-worker` processes, `worker_rss` through a few thousand
//! jobs, and `redis_bound` with a few requests. Asserted: every job
//! completed, and every figure is there and positive. No speed is asserted.
//!
//! An integration test of this crate cannot see another package's binary
//! (`CARGO_BIN_EXE_taskline-worker`), so the test builds `taskline-worker`
//! with the same cargo, target directory and profile as the bench, which
//! puts it next to `taskline-bench`, where the bench looks by default.

mod support;

use std::path::Path;

use serde_json::Value;

use std::process::Command;

use support::run_bench;

fn positive(value: &Value, field: &str) -> f64 {
    let x = value[field].as_f64().unwrap_or(0.0);
    assert!(x > 0.0, "{field} should be positive in {value}");
    x
}

#[test]
fn worker_processes_complete_every_job_and_report_their_cost() {
    let bench = Path::new(env!("CARGO_BIN_EXE_taskline-bench"));
    taskline_testkit::build_worker_next_to(bench);
    let (stdout, doc) = run_bench(&[
        "--scenarios",
        "saturate,worker_rss,redis_bound",
        "--jobs",
        "400",
        "--concurrency",
        "8",
        "--worker-processes",
        "1,2",
        "--rss-jobs",
        "3000",
        "--redis-benchmark-requests",
        "500",
    ]);
    assert!(stdout.contains("saturate x2: jobs/s"), "table missing:\n{stdout}");
    assert!(stdout.contains("worker process RSS max (KiB)"), "table missing:\n{stdout}");
    let t = &doc["taskline"];

    let runs = t["saturate"].as_array().expect("one saturate run per process count");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (run, processes) in runs.iter().zip([1, 2]) {
        assert_eq!(run["worker_processes"], processes);
        // The scenario fails unless the completion counter equals the job
        // count and nothing is left dead, waiting, delayed or running.
        assert_eq!(run["jobs"], 400, "every job completed: {run}");
        positive(run, "jobs_per_sec");
        let script_calls = positive(run, "evalsha_calls_per_job");
        assert!(positive(run, "redis_calls_per_job") > script_calls, "scripts run inner commands: {run}");
        let us = positive(run, "redis_cpu_us_per_job");
        let bound = positive(run, "redis_cpu_bound_jobs_per_sec");
        assert!((bound * us - 1e6).abs() < 1.0, "the bound is 1e6 / µs per job: {run}");
        let busy = positive(run, "redis_cpu_utilisation");
        assert!(busy <= 1.5, "one Redis thread cannot use much more than a core: {run}");
        assert!(run["workers_cpu_utilisation"].as_f64().is_some_and(|x| x >= 0.0), "{run}");
        positive(run, "worker_rss_max_kib");
    }

    let rss = &t["worker_rss"];
    assert_eq!(rss["jobs"], 3000, "every job completed: {rss}");
    let start = positive(rss, "start_kib");
    let max = positive(rss, "max_kib");
    assert!(max >= start && max >= positive(rss, "end_kib"), "{rss}");
    let samples = rss["samples"].as_array().expect("samples");
    assert_eq!(samples.last().map(|s| s["completed"].clone()), Some(Value::from(3000)), "{rss}");

    let bound = &t["redis_bound"];
    if bound["skipped"].is_null() {
        for test in ["ping", "hset", "evalsha_noop", "evalsha_16"] {
            positive(&bound["tests"][test], "requests_per_sec");
            positive(&bound["tests"][test], "redis_cpu_us_per_request");
        }
    } else {
        assert!(bound["skipped"].as_str().is_some_and(|why| why.contains("redis-benchmark")), "{bound}");
    }
    assert_eq!(doc["params"]["worker_processes"], serde_json::json!([1, 2]));
}

#[test]
fn a_missing_worker_binary_is_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_taskline-bench"))
        .args(["--scenarios", "saturate", "--jobs", "10", "--worker-processes", "1", "--no-peer"])
        .args(["--worker-bin", "/nonexistent/taskline-worker", "--json", "/dev/null"])
        .env_remove("REDIS_URL")
        .output()
        .expect("run taskline-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no taskline-worker binary at /nonexistent/taskline-worker"), "{stderr}");
}
