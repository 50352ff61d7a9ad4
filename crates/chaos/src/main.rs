//! `taskline-chaos`: the fault-injection suite. Runs a seeded workload
//! through real `taskline-worker` processes against a private
//! `redis-server` with AOF, injects faults on a seeded schedule, then
//! accounts for every job. See RELIABILITY.md.
//!
//! ```sh
//! cargo build -p taskline-worker -p taskline-chaos
//! target/debug/taskline-chaos --jobs 5000 --workers 4 --seed 1 --fsync always
//! ```
//!
//! Exit code: 0 when no job was lost, none ended otherwise than its
//! behaviour says and no invariant was violated; 1 when one was; 2 when the
//! run itself could not be carried out.
//!
//! # Layout
//!
//! - `behaviour`: the job mix and what each job must become;
//! - `workload`: the seeded plan and its enqueue;
//! - `worker_config`: timings and the workers' TOML;
//! - `workers`: the worker processes;
//! - `schedule`: the seeded fault schedule;
//! - `faults`: injecting one fault;
//! - `events`: tailing the event stream;
//! - `accounting`: reading jobs back and judging them;
//! - `attribution`: duplicates and the faults that explain them;
//! - `summary`: the figures; `report`: the table and JSON;
//! - `run`: one run, start to finish.

mod accounting;
mod attribution;
mod behaviour;
mod events;
mod faults;
mod report;
mod run;
mod schedule;
mod summary;
mod worker_config;
mod workers;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::run::{RunOptions, run};

/// Redis AOF fsync policy of the run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fsync {
    /// fsync after every write: nothing acknowledged is lost in a crash.
    Always,
    /// fsync once a second: the last second may be lost in a crash.
    Everysec,
}

/// Runs a seeded workload through real workers while injecting faults
/// (worker SIGKILL/SIGTERM, Redis restart, CLIENT KILL, Redis SIGSTOP), then
/// accounts for every job. Build the worker first:
/// `cargo build -p taskline-worker`.
#[derive(Debug, Parser)]
#[command(name = "taskline-chaos")]
struct Args {
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 5_000)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Job slots per worker process.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Seed of the workload and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest run, in seconds; jobs unsettled then count as lost.
    #[arg(long, default_value_t = 600)]
    duration_limit: u64,
    /// Redis appendfsync policy.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
    /// Faults of each kind injected at least, even if the jobs settle first.
    #[arg(long, default_value_t = 2)]
    min_faults_per_kind: usize,
    /// Shortest wait between faults, ms.
    #[arg(long, default_value_t = 1_000)]
    fault_gap_min_ms: u64,
    /// Longest wait between faults, ms.
    #[arg(long, default_value_t = 3_000)]
    fault_gap_max_ms: u64,
    /// The taskline-worker binary; default: next to this executable.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the run's directory (worker config and logs, Redis log) here.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
    /// RUST_LOG of the workers (their logs are in the run directory).
    #[arg(long, default_value = "warn")]
    worker_log: String,
    /// Print only the final table.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner().await {
        Ok(passed) => {
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("taskline-chaos: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_inner() -> Result<bool> {
    let args = Args::parse();
    if args.workers == 0 || args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs, --workers and --concurrency must be at least 1");
    }
    let worker_bin = match args.worker_bin.clone() {
        Some(path) => path,
        None => sibling_worker()?,
    };
    if !worker_bin.is_file() {
        bail!(
            "no taskline-worker binary at {}; build it first (cargo build -p taskline-worker) or pass --worker-bin",
            worker_bin.display()
        );
    }
    let options = RunOptions {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        jobs: args.jobs,
        workers: args.workers,
        concurrency: args.concurrency,
        seed: args.seed,
        duration_limit: Duration::from_secs(args.duration_limit),
        fsync: match args.fsync {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
        }
        .into(),
        worker_bin,
        min_faults_per_kind: args.min_faults_per_kind,
        gap: (Duration::from_millis(args.fault_gap_min_ms), Duration::from_millis(args.fault_gap_max_ms)),
        keep_dir: args.keep_dir.clone(),
        worker_log_level: args.worker_log.clone(),
        quiet: args.quiet,
    };
    let report = run(&options).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for failure in report.failures() {
        eprintln!("taskline-chaos: FAIL: {failure}");
    }
    Ok(report.passed)
}

/// `taskline-worker` in the directory of this executable.
fn sibling_worker() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    Ok(dir.join(format!("taskline-worker{}", std::env::consts::EXE_SUFFIX)))
}
