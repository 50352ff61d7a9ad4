//! One run, start to finish: Redis, workers, workload, faults, account.
//!
//! 1. Start a private `redis-server` with AOF on, tail its event stream.
//! 2. Start the worker processes, then enqueue the whole workload.
//! 3. Wait a durability barrier, then inject faults on the seeded schedule
//!    until every job is settled and every kind was injected its quota.
//! 4. Wait until the queue stays settled, stop the workers with SIGTERM.
//! 5. Check the invariants, read every job back, judge and attribute.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use taskline::keys::QueueKeys;
use taskline::{Client, Counts, QueueName};
use taskline_testkit::RedisServer;

use crate::events::EventTail;
use crate::faults::{FaultRecord, Injector};
use crate::report::{Params, Report};
use crate::schedule::{FaultKind, Schedule};
use crate::summary::{figures, note_violations};
use crate::worker_config::{EVENTS_MAX_LEN, QUEUE, WorkerSettings};
use crate::workers::Fleet;
use crate::workload;

/// Wait between the last acknowledged enqueue and the first fault. With
/// `appendfsync everysec` Redis may hold an acknowledged write in memory
/// for up to 2 s before writing it to the AOF; a crash before then may
/// lose the enqueue itself, which no queue can recover.
const DURABILITY_BARRIER: Duration = Duration::from_secs(3);
/// How often the queue's counts are read.
const POLL: Duration = Duration::from_millis(250);
/// How often progress is printed.
const PROGRESS: Duration = Duration::from_secs(5);
/// How long the workers get to stop at the end.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// How long a (re)started `redis-server` may take to load its AOF before
/// the restart counts as failed (finding F4: the test kit's default 10 s
/// was too short for 500,000 stored jobs).
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The command line, for the report.
    pub command: String,
    /// Jobs to enqueue.
    pub jobs: usize,
    /// Worker processes.
    pub workers: usize,
    /// Job slots per worker.
    pub concurrency: u32,
    /// Seed of the workload and of the fault schedule.
    pub seed: u64,
    /// Longest run; what is unsettled then counts as lost.
    pub duration_limit: Duration,
    /// Redis `appendfsync`: `always` or `everysec`.
    pub fsync: String,
    /// The `taskline-worker` binary.
    pub worker_bin: PathBuf,
    /// Faults of each kind injected at least.
    pub min_faults_per_kind: usize,
    /// Shortest and longest wait between faults.
    pub gap: (Duration, Duration),
    /// Keep the run's directory (config, worker logs, Redis log) here.
    pub keep_dir: Option<PathBuf>,
    /// `RUST_LOG` of the workers.
    pub worker_log_level: String,
    /// No progress lines.
    pub quiet: bool,
}

/// Runs the suite once and reports.
pub async fn run(o: &RunOptions) -> Result<Report> {
    let started = Instant::now();
    let deadline = started + o.duration_limit;
    let say = |line: String| {
        if !o.quiet {
            eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
        }
    };
    let dir = tempfile::Builder::new().prefix("taskline-chaos-").tempdir()?;
    let settings = WorkerSettings::new(o.jobs as u64, o.concurrency);
    let fsync = o.fsync.clone();
    let server = Arc::new(
        tokio::task::spawn_blocking(move || {
            RedisServer::builder()
                .appendonly(true)
                .appendfsync(fsync)
                // Rewrite the AOF often, so that a restart replays a short
                // tail after the RDB base (restarts stay short), and give a
                // restart's load all the time it needs: with 500,000 jobs
                // stored, replaying took longer than the default 10 s.
                .config("auto-aof-rewrite-percentage", "10")
                .config("auto-aof-rewrite-min-size", "16mb")
                .ready_timeout(REDIS_READY_TIMEOUT)
                .start()
        })
        .await
        .map_err(|e| anyhow!("cannot start redis-server: {e}"))?,
    );
    let url = server.url();
    say(format!("redis-server at {url} (appendfsync {}); run directory {}", o.fsync, dir.path().display()));
    let client = Client::builder(&url).events_max_len(EVENTS_MAX_LEN).connect().await?;
    let plan = workload::plan(o.jobs, o.seed, settings.lease);
    let keys = QueueKeys::new(&client.options().prefix, &QueueName::new(QUEUE)?);
    let tail = EventTail::spawn(redis::Client::open(url.as_str())?, keys.events(), plan.len());
    let config = settings.write(dir.path(), &url)?;
    let mut fleet =
        Fleet::start(&o.worker_bin, &config, &dir.path().join("logs"), &o.worker_log_level, o.workers)?;

    workload::enqueue(&client, &plan).await.context("enqueue the workload")?;
    say(format!("{} jobs enqueued; {} workers running", plan.len(), fleet.len()));

    let mut schedule = Schedule::new(o.seed, o.min_faults_per_kind, o.gap.0, o.gap.1);
    let injector = Injector::new(server.clone(), client.clone(), settings);
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut anomalies = Vec::new();
    let mut next_fault = Instant::now() + DURABILITY_BARRIER + schedule.gap();
    let mut last_progress = Instant::now();
    while Instant::now() < deadline {
        restart_exited(&mut fleet, &mut anomalies)?;
        let counts = client.counts(QUEUE).await.ok();
        if counts.is_some_and(|c| is_settled(&c, plan.len())) && schedule.quota_met() {
            break;
        }
        if Instant::now() >= next_fault {
            let record = injector.inject(schedule.next_fault(), &mut fleet, &mut anomalies).await?;
            say(format!(
                "fault {}{} ({} in flight): {}",
                record.kind.as_str(),
                record.target.as_deref().map(|t| format!(" of {t}")).unwrap_or_default(),
                record.in_flight,
                record.detail
            ));
            faults.push(record);
            next_fault = Instant::now() + schedule.gap();
        }
        if last_progress.elapsed() >= PROGRESS {
            last_progress = Instant::now();
            say(progress(counts.as_ref(), faults.len()));
        }
        tokio::time::sleep(POLL).await;
    }
    let settled = wait_settled(&client, &mut fleet, &mut anomalies, plan.len(), deadline).await?;
    say(format!(
        "{}; stopping the workers",
        if settled { "all jobs settled" } else { "duration limit reached" }
    ));
    for stopped in fleet.stop_all(settings.shutdown_timeout + STOP_LIMIT).await {
        if !stopped.status.is_some_and(|s| s.success()) {
            anomalies.push(format!("{}: final SIGTERM ended with {:?}", stopped.instance, stopped.status));
        }
    }

    let events = tail.finish().await;
    let check = client.check_queue(QUEUE).await.context("check_queue")?;
    let stored = crate::accounting::read_all(&client, &plan).await?;
    let window_ms = settings.recovery_window().as_millis() as u64;
    let mut f = figures(&plan, &stored, &events, &faults, window_ms);
    note_violations(&mut f, &check);
    if let Some(keep) = &o.keep_dir {
        keep_run_dir(dir, &server, keep)?;
    }

    let mut fault_counts = std::collections::BTreeMap::new();
    for kind in FaultKind::ALL {
        fault_counts
            .insert(kind.as_str().to_string(), faults.iter().filter(|f| f.kind == kind).count() as u64);
    }
    let lost = f.missing + f.unsettled;
    let violations = check.violations.len() as u64;
    Ok(Report {
        params: Params {
            command: o.command.clone(),
            jobs: plan.len() as u64,
            workers: o.workers,
            concurrency: o.concurrency,
            seed: o.seed,
            fsync: o.fsync.clone(),
            duration_limit_s: o.duration_limit.as_secs(),
            min_faults_per_kind: o.min_faults_per_kind,
            lease_ms: settings.lease.as_millis() as u64,
            reap_interval_ms: settings.reap_interval.as_millis() as u64,
        },
        jobs: plan.len() as u64,
        behaviours: workload::census(&plan),
        faults: fault_counts,
        lost,
        invariant_violations: violations,
        events_read: events.read,
        events_whole: !events.gap,
        settled,
        anomalies,
        fault_log: faults,
        wall_time_s: started.elapsed().as_secs_f64(),
        passed: lost == 0 && f.mismatched == 0 && violations == 0,
        figures: f,
    })
}

/// Nothing ready, delayed or active, and every job completed or dead.
fn is_settled(c: &Counts, jobs: usize) -> bool {
    c.ready + c.delayed + c.active == 0 && c.completed + c.dead >= jobs as u64
}

fn progress(counts: Option<&Counts>, faults: usize) -> String {
    match counts {
        Some(c) => format!(
            "completed {} dead {} | ready {} delayed {} active {} | faults {faults}",
            c.completed, c.dead, c.ready, c.delayed, c.active
        ),
        None => format!("counts unavailable (Redis down?) | faults {faults}"),
    }
}

/// Restarts workers that exited without being told to, noting each.
fn restart_exited(fleet: &mut Fleet, anomalies: &mut Vec<String>) -> Result<()> {
    for (slot, instance, status) in fleet.exited() {
        fleet.restart(slot)?;
        anomalies
            .push(format!("{instance} exited on its own ({status}); restarted as {}", fleet.instance(slot)));
    }
    Ok(())
}

/// Waits until the queue reads settled twice in a row, a second apart, or
/// until `deadline`. Returns whether it settled.
async fn wait_settled(
    client: &Client,
    fleet: &mut Fleet,
    anomalies: &mut Vec<String>,
    jobs: usize,
    deadline: Instant,
) -> Result<bool> {
    let mut streak = 0;
    while Instant::now() < deadline {
        restart_exited(fleet, anomalies)?;
        let settled = client.counts(QUEUE).await.is_ok_and(|c| is_settled(&c, jobs));
        streak = if settled { streak + 1 } else { 0 };
        if streak >= 2 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(false)
}

/// Keeps the run directory (config, worker logs) at `keep`, with the Redis
/// log beside it.
fn keep_run_dir(dir: tempfile::TempDir, server: &RedisServer, keep: &std::path::Path) -> Result<()> {
    let kept = dir.keep();
    std::fs::write(kept.join("redis.log"), server.log())?;
    if keep.exists() {
        std::fs::remove_dir_all(keep).with_context(|| format!("cannot replace {}", keep.display()))?;
    }
    if std::fs::rename(&kept, keep).is_err() {
        copy_dir(&kept, keep)?;
        std::fs::remove_dir_all(&kept)?;
    }
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
