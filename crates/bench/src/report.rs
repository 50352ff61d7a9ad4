//! The report: one table for people, one JSON document for tools.

use serde_json::{Value, json};

/// A row of the table: a figure for Taskline, the same for BullMQ if it
/// ran, and which direction is better.
struct Row {
    label: &'static str,
    path: [&'static str; 2],
    higher_is_better: bool,
}

const ROWS: &[Row] = &[
    Row {
        label: "enqueue, single (jobs/s)",
        path: ["enqueue_single", "jobs_per_sec"],
        higher_is_better: true,
    },
    Row { label: "enqueue, bulk (jobs/s)", path: ["enqueue_bulk", "jobs_per_sec"], higher_is_better: true },
    Row { label: "process, no-op (jobs/s)", path: ["process", "jobs_per_sec"], higher_is_better: true },
    Row {
        label: "process: script calls/job",
        path: ["process", "evalsha_calls_per_job"],
        higher_is_better: false,
    },
    Row {
        label: "process: Redis commands/job",
        path: ["process", "redis_calls_per_job"],
        higher_is_better: false,
    },
    Row {
        label: "process: Redis CPU us/job",
        path: ["process", "redis_cpu_us_per_job"],
        higher_is_better: false,
    },
    Row {
        label: "enqueue single: Redis CPU us/job",
        path: ["enqueue_single", "redis_cpu_us_per_job"],
        higher_is_better: false,
    },
    Row { label: "latency p50 (ms)", path: ["latency", "p50_ms"], higher_is_better: false },
    Row { label: "latency p95 (ms)", path: ["latency", "p95_ms"], higher_is_better: false },
    Row { label: "latency p99 (ms)", path: ["latency", "p99_ms"], higher_is_better: false },
    Row { label: "latency max (ms)", path: ["latency", "max_ms"], higher_is_better: false },
    Row { label: "idle: requests/s", path: ["idle", "requests_per_sec"], higher_is_better: false },
    Row {
        label: "idle: Redis commands/s (in scripts too)",
        path: ["idle", "commands_per_sec"],
        higher_is_better: false,
    },
    Row {
        label: "memory: Redis bytes/waiting job",
        path: ["memory", "redis_bytes_per_waiting_job"],
        higher_is_better: false,
    },
    Row { label: "worker RSS max (KiB)", path: ["rss", "max_kib"], higher_is_better: false },
    Row { label: "worker process RSS: jobs run", path: ["worker_rss", "jobs"], higher_is_better: true },
    Row {
        label: "worker process RSS start (KiB)",
        path: ["worker_rss", "start_kib"],
        higher_is_better: false,
    },
    Row {
        label: "worker process RSS at 1/10 (KiB)",
        path: ["worker_rss", "at_tenth_kib"],
        higher_is_better: false,
    },
    Row { label: "worker process RSS max (KiB)", path: ["worker_rss", "max_kib"], higher_is_better: false },
    Row { label: "worker process RSS end (KiB)", path: ["worker_rss", "end_kib"], higher_is_better: false },
];

/// Per-run figures of `saturate` (one run per process count), with their
/// labels.
const SATURATE_FIELDS: &[(&str, &str)] = &[
    ("jobs/s", "jobs_per_sec"),
    ("Redis commands/job", "redis_calls_per_job"),
    ("Redis CPU us/job", "redis_cpu_us_per_job"),
    ("Redis CPU busy (0-1)", "redis_cpu_utilisation"),
    ("bound 1e6/us (jobs/s)", "redis_cpu_bound_jobs_per_sec"),
    ("workers CPU us/job", "workers_cpu_us_per_job"),
    ("workers CPU (cores)", "workers_cpu_utilisation"),
];

/// Per-test figures of `redis_bound`.
const BOUND_FIELDS: &[(&str, &str)] = &[
    ("req/s", "requests_per_sec"),
    ("Redis CPU us/req", "redis_cpu_us_per_request"),
    ("Redis CPU busy (0-1)", "redis_cpu_utilisation"),
];

fn get(results: &Value, path: [&str; 2]) -> Option<f64> {
    results.get(path[0])?.get(path[1])?.as_f64()
}

/// Taskline/BullMQ ratios, oriented so that > 1 means Taskline is better.
pub fn ratios(taskline: &Value, bullmq: Option<&Value>) -> Value {
    let mut out = serde_json::Map::new();
    let Some(bullmq) = bullmq else { return Value::Object(out) };
    for row in ROWS {
        if let (Some(t), Some(b)) = (get(taskline, row.path), get(bullmq, row.path))
            && t > 0.0
            && b > 0.0
        {
            let ratio = if row.higher_is_better { t / b } else { b / t };
            out.insert(format!("{}.{}", row.path[0], row.path[1]), json!(ratio));
        }
    }
    Value::Object(out)
}

/// The table, as text.
pub fn table(taskline: &Value, bullmq: Option<&Value>) -> String {
    let mut text =
        format!("{:<40} {:>14} {:>14} {:>18}\n", "measure", "taskline", "bullmq", "taskline advantage");
    for row in ROWS {
        let Some(t) = get(taskline, row.path) else { continue };
        let b = bullmq.and_then(|b| get(b, row.path));
        let advantage = match b {
            Some(b) if t > 0.0 && b > 0.0 => {
                format!("{:.2}x", if row.higher_is_better { t / b } else { b / t })
            }
            _ => "-".into(),
        };
        text.push_str(&format!(
            "{:<40} {:>14} {:>14} {:>18}\n",
            row.label,
            number(t),
            b.map(number).unwrap_or_else(|| "-".into()),
            advantage
        ));
    }
    for (label, value) in taskline_only_rows(taskline) {
        text.push_str(&format!("{label:<40} {:>14} {:>14} {:>18}\n", number(value), "-", "-"));
    }
    text
}

/// Rows of the scenarios that have no BullMQ counterpart and more than one
/// run: `saturate` (one per process count) and `redis_bound` (one per test).
fn taskline_only_rows(taskline: &Value) -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    for run in taskline.get("saturate").and_then(Value::as_array).into_iter().flatten() {
        let processes = run.get("worker_processes").and_then(Value::as_u64).unwrap_or(0);
        for (label, field) in SATURATE_FIELDS {
            if let Some(value) = run.get(*field).and_then(Value::as_f64) {
                rows.push((format!("saturate x{processes}: {label}"), value));
            }
        }
    }
    let tests = taskline.get("redis_bound").and_then(|b| b.get("tests")).and_then(Value::as_object);
    for (name, test) in tests.into_iter().flatten() {
        for (label, field) in BOUND_FIELDS {
            if let Some(value) = test.get(*field).and_then(Value::as_f64) {
                rows.push((format!("redis-bench {name}: {label}"), value));
            }
        }
    }
    rows
}

fn number(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.3}") }
}
