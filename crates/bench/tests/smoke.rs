//! The benchmark command must not rot: run it with a tiny job count and
//! check the report's shape and that every job was handled. No speed is
//! asserted; benchmarks are not timed tests.

mod support;

use std::process::Command;

use support::run_bench;

#[test]
fn a_tiny_run_reports_every_scenario() {
    let (stdout, doc) = run_bench(&[
        "--jobs",
        "300",
        "--concurrency",
        "8",
        "--rate",
        "100",
        "--latency-seconds",
        "1",
        "--idle-seconds",
        "1",
        "--idle-queues",
        "3",
    ]);
    assert!(stdout.contains("process, no-op (jobs/s)"), "table missing:\n{stdout}");
    let t = &doc["taskline"];
    for scenario in ["enqueue_single", "enqueue_bulk", "process"] {
        assert!(t[scenario]["jobs"].as_u64().unwrap_or(0) >= 296, "{scenario}: {}", t[scenario]);
        assert!(t[scenario]["jobs_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{scenario}");
        assert!(t[scenario]["redis_calls_per_job"].as_f64().unwrap_or(0.0) > 0.0, "{scenario}");
    }
    assert_eq!(t["process"]["jobs"], 300, "every job processed");
    // Completions share script calls, so a job may cost less than one.
    assert!(t["process"]["evalsha_calls_per_job"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(t["latency"]["samples"], 100, "one sample per job enqueued in the latency run");
    assert!(
        t["latency"]["p99_ms"].as_f64().unwrap_or(-1.0) >= t["latency"]["p50_ms"].as_f64().unwrap_or(0.0)
    );
    assert!(t["idle"]["commands_per_sec"].as_f64().is_some());
    assert!(t["memory"]["redis_bytes_per_waiting_job"].as_f64().unwrap_or(0.0) > 100.0);
    assert!(doc["machine"]["cpus"].as_u64().unwrap_or(0) >= 1);
    assert!(doc["versions"]["redis"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(doc["params"]["jobs"], 300);
    assert!(doc["bullmq"].is_null() && doc["bullmq_skipped"].is_string());
    // The private Redis gets a CPU the clients do not use, where there are two.
    let pinning = &doc["pinning"];
    if doc["machine"]["cpus"].as_u64().unwrap_or(0) >= 2 {
        let redis_cpu = &pinning["redis_cpu"];
        let clients = pinning["client_cpus"].as_array().expect("client CPUs listed");
        assert!(redis_cpu.is_u64() && !clients.is_empty() && !clients.contains(redis_cpu), "{pinning}");
    } else {
        assert!(pinning.is_null(), "{pinning}");
    }
}

#[test]
fn an_unknown_scenario_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_taskline-bench"))
        .args(["--scenarios", "warp_speed", "--no-peer"])
        .output()
        .expect("run taskline-bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scenario \"warp_speed\""));
}

/// On a Redis it did not start (`--redis-url`), the benchmark pins nothing
/// and leaves none of its queues behind: each scenario deletes its own.
#[test]
fn a_run_on_a_given_redis_leaves_no_queue_behind() {
    let server = taskline_testkit::RedisServer::start();
    let mut con = redis::Client::open(server.url()).expect("url").get_connection().expect("connect");
    let _: () = redis::cmd("SET").arg("not-the-bench").arg("kept").query(&mut con).expect("set");
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_taskline-bench"))
        .args(["--scenarios", "enqueue_single,enqueue_bulk,process", "--jobs", "200", "--concurrency", "8"])
        .args(["--no-peer", "--redis-url", &server.url(), "--json"])
        .arg(&report)
        .output()
        .expect("run taskline-bench");
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(doc["taskline"]["process"]["jobs"], 200, "every job processed");
    assert!(doc["pinning"].is_null(), "pinned a Redis it did not start: {}", doc["pinning"]);
    let left: Vec<String> = redis::cmd("KEYS").arg("taskline:{bench-*").query(&mut con).expect("keys");
    assert!(left.is_empty(), "queue keys left behind: {left:?}");
    let kept: String = redis::cmd("GET").arg("not-the-bench").query(&mut con).expect("get");
    assert_eq!(kept, "kept", "the run touched a key that is not its own");
}
