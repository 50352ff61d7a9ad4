//! Scenarios with real `taskline-worker` processes: saturation with several
//! processes, and one process's resident memory over a long run.
//!
//! Both start their workers on a paused queue and wait until every worker
//! is idle in its blocking wait, then resume the queue and start the clock.
//! So process start-up (connecting, loading scripts, the first reap) is
//! outside the timed part, and the "start" memory is that of a ready worker.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use taskline::keys::QueueKeys;
use taskline::{NewJob, QueueName};

use crate::fleet::{self, Fleet};
use crate::redis_stats::{CommandCost, Snapshot, blocked_clients, command_costs, command_times, used_memory};
use crate::scenarios::{Bench, Throughput, throughput};

/// Jobs per `enqueue_bulk` call of the producer: the producer never holds
/// more than this many jobs in memory.
const ENQUEUE_CHUNK: u64 = 10_000;
/// Most jobs waiting at once in the long RSS run; the producer tops the
/// queue up to this, so Redis memory stays bounded however long the run.
const RSS_BACKLOG: u64 = 100_000;
/// How often the long run samples the worker's memory.
const RSS_SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Longest any timed part may take before the scenario gives up.
const TIME_LIMIT: Duration = Duration::from_secs(1800);

/// N worker processes against one Redis: throughput and where the CPU went.
#[derive(Debug, Clone, Serialize)]
pub struct Saturation {
    /// `taskline-worker` processes.
    pub worker_processes: u32,
    /// Job slots of each.
    pub concurrency_per_process: u32,
    /// Jobs, wall time, jobs/s and Redis cost per job.
    #[serde(flatten)]
    pub throughput: Throughput,
    /// Redis CPU seconds per wall second during the run: near 1.0 means the
    /// single-threaded server was the bottleneck.
    pub redis_cpu_utilisation: f64,
    /// 1e6 / Redis CPU µs per job: the most jobs/s a single-threaded Redis
    /// could do at this cost per job if it did nothing else.
    pub redis_cpu_bound_jobs_per_sec: f64,
    /// CPU the worker processes used per job, µs (all processes together).
    pub workers_cpu_us_per_job: f64,
    /// Worker CPU seconds per wall second, all processes together (in cores).
    pub workers_cpu_utilisation: f64,
    /// Largest resident set of any worker at the end, KiB.
    pub worker_rss_max_kib: u64,
    /// Where Redis's time went, per command, most first (`INFO
    /// commandstats`; EVALSHA's time includes its inner commands).
    pub commands: Vec<CommandCost>,
}

/// One memory sample of the long run.
#[derive(Debug, Clone, Serialize)]
pub struct RssSample {
    /// Since the queue was resumed.
    pub seconds: f64,
    /// Jobs completed by then.
    pub completed: u64,
    /// The worker's resident set, KiB.
    pub rss_kib: u64,
}

/// One worker process's resident memory over a long run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRss {
    /// Jobs processed.
    pub jobs: u64,
    /// Wall time from resume to the last completion (the producer tops the
    /// queue up meanwhile, on the same Redis).
    pub seconds: f64,
    /// Jobs per second, producer running alongside.
    pub jobs_per_sec: f64,
    /// Ready and idle, before the first job, KiB.
    pub start_kib: u64,
    /// Highest sample, KiB.
    pub max_kib: u64,
    /// The first sample after a tenth of the jobs, KiB: the warmed-up size
    /// that later samples are compared with.
    pub at_tenth_kib: u64,
    /// After the last job, KiB.
    pub end_kib: u64,
    /// Highest Redis `used_memory` sampled, bytes.
    pub redis_used_memory_max: u64,
    /// Every sample, about one per second.
    pub samples: Vec<RssSample>,
}

impl Bench {
    /// For each count in `worker_processes`: N waiting jobs, then that many
    /// `taskline-worker` processes; timed from resume to the N-th completion.
    pub async fn saturate(&mut self) -> Result<Vec<Saturation>> {
        let mut runs = Vec::new();
        for &processes in &self.params.worker_processes.clone() {
            eprintln!("taskline: saturate, {processes} worker process(es) ...");
            runs.push(self.saturate_with(processes).await?);
        }
        Ok(runs)
    }

    async fn saturate_with(&mut self, processes: u32) -> Result<Saturation> {
        let queue = self.queue(&format!("saturate-{processes}"));
        let jobs = self.params.jobs;
        self.client.pause(&queue).await?;
        self.enqueue_chunked(&queue, jobs).await?;
        let dir = tempfile::tempdir().context("temporary directory for the worker config")?;
        let mut fleet = self.start_ready_fleet(&queue, dir.path(), processes).await?;

        let times_before = command_times(&mut self.raw).await?;
        let before = Snapshot::take(&mut self.raw).await?;
        let workers_cpu_before = fleet.cpu_seconds();
        let started = Instant::now();
        self.client.resume(&queue).await?;
        self.wait_completed(&queue, jobs, started, &mut fleet).await?;
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        let times_after = command_times(&mut self.raw).await?;
        let workers_cpu = fleet.cpu_seconds() - workers_cpu_before;
        let worker_rss_max_kib = fleet.max_rss_kib();
        fleet.stop().await?;
        self.check_all_completed(&queue, jobs).await?;

        let cost = before.cost_until(&after, jobs);
        let redis_cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
        Ok(Saturation {
            worker_processes: processes,
            concurrency_per_process: self.params.concurrency.max(1),
            redis_cpu_utilisation: redis_cpu / seconds,
            redis_cpu_bound_jobs_per_sec: 1e6 / cost.redis_cpu_us_per_job.max(1e-9),
            workers_cpu_us_per_job: workers_cpu.max(0.0) * 1e6 / jobs.max(1) as f64,
            workers_cpu_utilisation: workers_cpu.max(0.0) / seconds,
            worker_rss_max_kib,
            commands: command_costs(&times_before, &times_after, jobs),
            throughput: throughput(jobs, seconds, cost),
        })
    }

    /// One `taskline-worker` process through `rss_jobs` jobs, the producer
    /// keeping at most `RSS_BACKLOG` waiting; its RSS sampled every second.
    pub async fn worker_rss(&mut self) -> Result<WorkerRss> {
        let queue = self.queue("worker-rss");
        let total = self.params.rss_jobs;
        self.client.pause(&queue).await?;
        let mut enqueued = total.min(RSS_BACKLOG);
        self.enqueue_chunked(&queue, enqueued).await?;
        let dir = tempfile::tempdir().context("temporary directory for the worker config")?;
        let mut fleet = self.start_ready_fleet(&queue, dir.path(), 1).await?;
        let pid = fleet.pids()[0];
        let start_kib = fleet::rss_kib(pid).unwrap_or(0);

        let started = Instant::now();
        self.client.resume(&queue).await?;
        let mut samples: Vec<RssSample> = Vec::new();
        let mut next_sample = started;
        let mut redis_used_memory_max = 0;
        loop {
            let completed = self.completed(&queue).await?;
            if Instant::now() >= next_sample || completed >= total {
                let rss_kib = fleet::rss_kib(pid).unwrap_or(0);
                samples.push(RssSample { seconds: started.elapsed().as_secs_f64(), completed, rss_kib });
                redis_used_memory_max = redis_used_memory_max.max(used_memory(&mut self.raw).await?);
                next_sample += RSS_SAMPLE_EVERY;
            }
            if completed >= total {
                break;
            }
            // Top the queue up one chunk at a time, so neither the producer
            // nor Redis ever holds the whole run.
            if enqueued < total && enqueued - completed < RSS_BACKLOG {
                let chunk = ENQUEUE_CHUNK.min(total - enqueued);
                self.enqueue_chunked(&queue, chunk).await?;
                enqueued += chunk;
                continue;
            }
            fleet.check_running()?;
            if started.elapsed() > TIME_LIMIT {
                bail!("the RSS run did not finish in {TIME_LIMIT:?}: {completed} of {total} completed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        fleet.stop().await?;
        self.check_all_completed(&queue, total).await?;

        let at_tenth_kib =
            samples.iter().find(|s| s.completed >= total / 10).map(|s| s.rss_kib).unwrap_or(start_kib);
        Ok(WorkerRss {
            jobs: total,
            seconds,
            jobs_per_sec: total as f64 / seconds.max(1e-9),
            start_kib,
            max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(start_kib).max(start_kib),
            at_tenth_kib,
            end_kib: samples.last().map(|s| s.rss_kib).unwrap_or(start_kib),
            redis_used_memory_max,
            samples,
        })
    }

    /// `count` no-op jobs in calls of `ENQUEUE_CHUNK`.
    async fn enqueue_chunked(&self, queue: &str, count: u64) -> Result<()> {
        let template = self.job(None)?;
        let mut left = count;
        while left > 0 {
            let chunk = left.min(ENQUEUE_CHUNK);
            let jobs: Vec<NewJob> = (0..chunk).map(|_| template.clone()).collect();
            self.client.enqueue_bulk(queue, jobs).await?;
            left -= chunk;
        }
        Ok(())
    }

    /// Starts `processes` workers on the (paused) `queue` and waits until
    /// each is parked in its blocking wait: ready, and idle.
    async fn start_ready_fleet(&mut self, queue: &str, dir: &Path, processes: u32) -> Result<Fleet> {
        let config = dir.join("worker.toml");
        std::fs::write(
            &config,
            fleet::worker_toml(&self.url, queue, self.params.concurrency, self.params.coalesce_calls),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let blocked_before = blocked_clients(&mut self.raw).await?;
        let mut fleet = Fleet::start(&self.worker_bin, &config, dir, processes)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while blocked_clients(&mut self.raw).await? < blocked_before + u64::from(processes) {
            fleet.check_running()?;
            if Instant::now() > deadline {
                bail!("{processes} worker(s) did not become ready (idle in a blocking wait) within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(fleet)
    }

    /// Polls the queue's completion counter until it reaches `jobs`.
    async fn wait_completed(
        &mut self,
        queue: &str,
        jobs: u64,
        started: Instant,
        fleet: &mut Fleet,
    ) -> Result<()> {
        loop {
            let completed = self.completed(queue).await?;
            if completed >= jobs {
                return Ok(());
            }
            fleet.check_running()?;
            if started.elapsed() > TIME_LIMIT {
                bail!("processing did not finish in {TIME_LIMIT:?}: {completed} of {jobs} completed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Jobs of `queue` completed since it was created (the counter in its
    /// metadata; retention trims the records, not the counter).
    async fn completed(&mut self, queue: &str) -> Result<u64> {
        let key = QueueKeys::new(&self.client.options().prefix, &QueueName::new(queue)?).meta();
        let completed: Option<u64> =
            redis::cmd("HGET").arg(&key).arg("completed").query_async(&mut self.raw).await?;
        Ok(completed.unwrap_or(0))
    }

    /// Every job completed: none dead, waiting, delayed or running.
    async fn check_all_completed(&mut self, queue: &str, jobs: u64) -> Result<()> {
        let counts = self.client.counts(queue).await?;
        let completed = self.completed(queue).await?;
        if completed != jobs || counts.dead + counts.ready + counts.delayed + counts.active != 0 {
            bail!("not every job completed: {completed} of {jobs} completed, then {counts:?}");
        }
        Ok(())
    }
}
