//! `taskline-bench`: throughput, latency and Redis cost of Taskline, side by
//! side with BullMQ on the same Redis in the same run. See BENCHMARKS.md.
//!
//! Starts its own `redis-server` unless `REDIS_URL` is set, runs the chosen
//! scenarios, prints one table and writes a JSON report with the machine,
//! versions and parameters.

mod cluster;
mod fleet;
mod peer;
mod pinning;
mod processes;
mod redis_bound;
mod redis_stats;
mod report;
mod rounds;
mod scenarios;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};
use taskline::Client;
use taskline_testkit::RedisServer;

use crate::peer::Peer;
use crate::scenarios::{Bench, Params};

/// Run when `--scenarios` is not given: one process, a minute or two.
const DEFAULT: &[&str] = &["enqueue_single", "enqueue_bulk", "process", "latency", "idle", "memory"];
/// Run only when named: they start `taskline-worker` processes or
/// `redis-benchmark`, and `worker_rss` is long by design.
const ON_REQUEST: &[&str] = &["saturate", "redis_bound", "worker_rss", "cluster"];

/// Measures Taskline (and BullMQ, when Node.js and its packages are there)
/// on one Redis.
#[derive(Debug, Parser)]
#[command(name = "taskline-bench")]
struct Args {
    /// Jobs per throughput scenario.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Enqueues in flight, and the worker's concurrency.
    #[arg(long, default_value_t = 50)]
    concurrency: u32,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Enqueue rate of the latency scenario, jobs per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Length of the latency scenario, seconds.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Length of the idle scenario, seconds.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Empty queues the idle worker watches.
    #[arg(long, default_value_t = 10)]
    idle_queues: u32,
    /// Scenarios to run, comma-separated (default: the single-process ones;
    /// `saturate`, `redis_bound`, `worker_rss` and `cluster` run only when named).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT.iter().map(|s| s.to_string()))]
    scenarios: Vec<String>,
    /// `saturate`: worker process counts, one run each, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 4])]
    worker_processes: Vec<u32>,
    /// `worker_rss`: jobs one worker process runs through.
    #[arg(long, default_value_t = 1_000_000)]
    rss_jobs: u64,
    /// `redis_bound`: requests of each redis-benchmark test.
    #[arg(long, default_value_t = 200_000)]
    redis_benchmark_requests: u64,
    /// `cluster`: masters of the private Redis Cluster (one replica each).
    #[arg(long, default_value_t = 3)]
    cluster_masters: usize,
    /// `cluster`: queues the work is spread over.
    #[arg(long, default_value_t = 16)]
    cluster_queues: usize,
    /// `cluster`: worker processes of its saturate part.
    #[arg(long, default_value_t = 2)]
    cluster_worker_processes: u32,
    /// The taskline-worker binary (default: next to this executable).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Skip the BullMQ peer even if it is installed.
    #[arg(long)]
    no_peer: bool,
    /// Send one script call per enqueue and per completion instead of
    /// merging concurrent ones (`coalesce_calls = false`), to compare.
    #[arg(long)]
    no_coalesce: bool,
    /// After the scenarios, run Taskline's and BullMQ's `process` in turn
    /// this many times (alternating which goes first) and report each
    /// pair's ratios and their median: on a shared host the pairs, seconds
    /// apart, compare more fairly than the main run, minutes apart.
    /// Needs the BullMQ peer.
    #[arg(long, default_value_t = 0)]
    process_rounds: u32,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    json: PathBuf,
    /// Redis to use instead of a private server.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Let the private Redis share CPUs with the clients instead of giving
    /// it the last CPU of its own (see BENCHMARKS.md).
    #[arg(long)]
    no_pin: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let known = |s: &String| DEFAULT.contains(&s.as_str()) || ON_REQUEST.contains(&s.as_str());
    if let Some(unknown) = args.scenarios.iter().find(|s| !known(s)) {
        anyhow::bail!(
            "unknown scenario {unknown:?}; the scenarios are {}, {}",
            DEFAULT.join(", "),
            ON_REQUEST.join(", ")
        );
    }
    if args.worker_processes.contains(&0) {
        anyhow::bail!("--worker-processes: every count must be at least 1");
    }
    let worker_bin = match args.worker_bin.clone() {
        Some(path) => path,
        None => fleet::sibling_worker()?,
    };
    let (private_server, url) = match &args.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    };
    // Before pinning, which narrows what this process may use.
    let machine = machine();
    let pinning = match (&private_server, args.no_pin) {
        (Some(server), false) => {
            let pid = server.pid().context("the private redis-server has no process")?;
            // A machine that refuses affinity changes still gets its figures.
            match pinning::pin_redis_apart(pid) {
                Ok(Some(p)) => {
                    eprintln!("redis-server on CPU {}, clients on CPUs {:?}", p.redis_cpu, p.client_cpus);
                    Some(p)
                }
                Ok(None) => {
                    eprintln!("one CPU only: Redis and the clients share it");
                    None
                }
                Err(e) => {
                    eprintln!("could not pin Redis apart ({e:#}); Redis and the clients share the CPUs");
                    None
                }
            }
        }
        _ => None,
    };
    // Built after pinning, so that its worker threads are as many as the
    // CPUs left to the clients: two threads time-slicing one CPU stall
    // each other's tasks for whole scheduler slices.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(args, url, machine, pinning, worker_bin));
    drop(private_server);
    result
}

/// Runs the scenarios against `url` and reports.
async fn run(
    args: Args,
    url: String,
    machine: Value,
    pinning: Option<pinning::Pinning>,
    worker_bin: PathBuf,
) -> Result<()> {
    let params = Params {
        jobs: args.jobs,
        concurrency: args.concurrency,
        payload_bytes: args.payload_bytes,
        rate: args.rate,
        latency_seconds: args.latency_seconds,
        idle_seconds: args.idle_seconds,
        idle_queues: args.idle_queues,
        worker_processes: args.worker_processes.clone(),
        rss_jobs: args.rss_jobs,
        redis_benchmark_requests: args.redis_benchmark_requests,
        coalesce_calls: !args.no_coalesce,
    };
    let client = Client::builder(&url)
        .coalesce_calls(!args.no_coalesce)
        .connect()
        .await
        .context("connect to Redis")?;
    let mut raw = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
    let redis_version = redis_stats::redis_version(&mut raw).await?;
    let run_id = taskline::JobId::generate().to_string()[24..].to_string();
    let mut bench =
        Bench { url: url.clone(), client, raw, params: params.clone(), run_id: run_id.clone(), worker_bin };

    let wants = |name: &str| args.scenarios.iter().any(|s| s == name);
    let mut results = serde_json::Map::new();
    if wants("enqueue_single") {
        eprintln!("taskline: enqueue_single ...");
        results.insert("enqueue_single".into(), json!(bench.enqueue_single().await?));
        bench.remove_run_queues().await?;
    }
    if wants("enqueue_bulk") {
        eprintln!("taskline: enqueue_bulk ...");
        results.insert("enqueue_bulk".into(), json!(bench.enqueue_bulk().await?));
        bench.remove_run_queues().await?;
    }
    if wants("process") {
        eprintln!("taskline: process ...");
        let (throughput, rss) = bench.process().await?;
        results.insert("process".into(), json!(throughput));
        results.insert("rss".into(), json!(rss));
        bench.remove_run_queues().await?;
    }
    if wants("latency") {
        eprintln!("taskline: latency ...");
        results.insert("latency".into(), json!(bench.latency().await?));
        bench.remove_run_queues().await?;
    }
    if wants("idle") {
        eprintln!("taskline: idle ...");
        results.insert("idle".into(), json!(bench.idle().await?));
        bench.remove_run_queues().await?;
    }
    if wants("memory") {
        eprintln!("taskline: memory ...");
        results.insert("memory".into(), json!(bench.memory().await?));
        bench.remove_run_queues().await?;
    }
    if wants("saturate") {
        results.insert("saturate".into(), json!(bench.saturate().await?));
    }
    if wants("redis_bound") {
        eprintln!("taskline: redis_bound ...");
        results.insert("redis_bound".into(), json!(bench.redis_bound().await?));
    }
    let mut cluster_report = None;
    if wants("cluster") {
        let cluster_params = cluster::ClusterParams {
            masters: args.cluster_masters,
            queues: args.cluster_queues.max(1),
            worker_processes: args.cluster_worker_processes,
        };
        let report = cluster::run(&params, &cluster_params, &bench.worker_bin).await?;
        results.insert("cluster".into(), json!(report));
        cluster_report = Some(report);
    }
    if wants("worker_rss") {
        eprintln!("taskline: worker_rss ({} jobs) ...", params.rss_jobs);
        results.insert("worker_rss".into(), json!(bench.worker_rss().await?));
    }
    let taskline = Value::Object(results);

    let peer_scenarios: Vec<&str> =
        ["enqueue_single", "enqueue_bulk", "process", "latency"].into_iter().filter(|s| wants(s)).collect();
    let peer = if args.no_peer || peer_scenarios.is_empty() {
        Peer::Skipped("not requested".into())
    } else {
        eprintln!("bullmq: {} ...", peer_scenarios.join(", "));
        peer::run(&url, &params, &peer_scenarios, &format!("bench-{run_id}-bullmq"))
    };
    let (bullmq, peer_note) = match &peer {
        Peer::Ran(report) => (report.get("results").cloned(), None),
        Peer::Skipped(why) => (None, Some(why.clone())),
    };

    // A failed round loses only the rounds, not the report.
    let (rounds, rounds_note) = if args.process_rounds == 0 {
        (None, None)
    } else if bullmq.is_none() || !wants("process") {
        (None, Some("skipped: they need the process scenario and the BullMQ peer".to_string()))
    } else {
        match rounds::run(&mut bench, args.process_rounds, &format!("bench-{run_id}-bullmq")).await {
            Ok(rounds) => (Some(rounds), None),
            Err(err) => (None, Some(format!("failed: {err:#}"))),
        }
    };

    println!("{}", report::table(&taskline, bullmq.as_ref()));
    if let Some(report) = &cluster_report {
        println!("{}", cluster::table(report));
    }
    if let Some(note) = &peer_note {
        println!("BullMQ: skipped: {note}");
    }
    if let Some(rounds) = &rounds {
        println!("process rounds (Taskline and BullMQ back to back):\n{}", rounds::table(rounds));
    } else if let Some(note) = &rounds_note {
        println!("process rounds: {note}");
    }
    let document = json!({
        "machine": machine,
        "versions": {
            "taskline": env!("CARGO_PKG_VERSION"),
            "redis": redis_version,
            "bullmq": match &peer { Peer::Ran(r) => r.get("bullmq_version").cloned(), Peer::Skipped(_) => None },
            "node": match &peer { Peer::Ran(r) => r.get("node_version").cloned(), Peer::Skipped(_) => None },
        },
        "params": params,
        "pinning": pinning,
        "taskline": taskline,
        "bullmq": bullmq,
        "bullmq_skipped": peer_note,
        "ratios": report::ratios(&taskline, bullmq.as_ref()),
        "process_rounds": rounds,
        "process_rounds_note": rounds_note,
    });
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)?)?;
    println!("report written to {}", args.json.display());
    Ok(())
}

/// What the numbers came from.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|m| m.trim().to_string()))
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}
