//! The measured scenarios. Each prepares its own fresh queue, times only
//! the part it is named after, and reads Redis's own counters around it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use taskline::keys::QueueKeys;
use taskline::{Client, NewJob, QueueName};
use taskline_worker::{Config, JobContext, Worker, handler_fn};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::JOB_NAME;
use crate::redis_stats::{Cost, Snapshot, used_memory};

/// What every scenario is sized by.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Jobs per throughput scenario.
    pub jobs: u64,
    /// Enqueues in flight, and the worker's concurrency.
    pub concurrency: u32,
    /// Approximate payload size in bytes.
    pub payload_bytes: usize,
    /// Jobs per second in the latency scenario.
    pub rate: u32,
    /// Length of the latency scenario.
    pub latency_seconds: u64,
    /// Length of the idle scenario.
    pub idle_seconds: u64,
    /// Empty queues the idle worker watches.
    pub idle_queues: u32,
    /// Worker process counts of the saturation scenario, one run each.
    pub worker_processes: Vec<u32>,
    /// Jobs of the worker RSS run.
    pub rss_jobs: u64,
    /// Requests of each `redis-benchmark` test.
    pub redis_benchmark_requests: u64,
    /// Concurrent enqueues and completions share script calls
    /// (`coalesce_calls`, the default); false for comparison.
    pub coalesce_calls: bool,
}

/// A throughput figure with its Redis cost.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Jobs handled.
    pub jobs: u64,
    /// Wall time of the timed part.
    pub seconds: f64,
    /// Jobs per second.
    pub jobs_per_sec: f64,
    /// Redis cost per job.
    #[serde(flatten)]
    pub cost: Cost,
}

/// Enqueue-to-handler-start latency of an idle worker.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Jobs measured.
    pub samples: usize,
    /// Percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Enqueue rate, jobs per second.
    pub rate: u32,
}

/// Redis load of a worker with nothing to do.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Empty queues watched.
    pub queues: u32,
    /// Length of the measurement.
    pub seconds: f64,
    /// Requests per second the idle worker sends (script calls and blocking
    /// waits: what crosses the network).
    pub requests_per_sec: f64,
    /// Redis commands per second it causes, counting those run inside
    /// scripts.
    pub commands_per_sec: f64,
}

/// Memory figures.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Jobs held waiting.
    pub jobs: u64,
    /// Redis `used_memory` growth per waiting job.
    pub redis_bytes_per_waiting_job: f64,
}

/// Resident memory of this process (producer and in-process worker) during
/// the processing scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rss {
    /// Before the worker started, KiB.
    pub start_kib: u64,
    /// After the last job, KiB.
    pub end_kib: u64,
    /// Highest sample, KiB.
    pub max_kib: u64,
}

/// Runs scenarios against one Redis.
pub struct Bench {
    /// Redis URL.
    pub url: String,
    /// Client for producing and reading.
    pub client: Client,
    /// Raw connection for INFO and counters.
    pub raw: MultiplexedConnection,
    /// Sizes.
    pub params: Params,
    /// Unique per run, so queues never collide.
    pub run_id: String,
    /// The `taskline-worker` binary of the multi-process scenarios.
    pub worker_bin: PathBuf,
}

impl Bench {
    pub(crate) fn queue(&self, scenario: &str) -> String {
        format!("bench-{}-{scenario}", self.run_id)
    }

    /// Deletes every key of this run's queues, between scenarios and
    /// outside their timing, so that each scenario starts from the same
    /// Redis: otherwise the jobs the enqueue scenarios leave behind (some
    /// 200 MB) slow the later ones, while the BullMQ peer obliterates its
    /// queues after each scenario. `DEL`, not `UNLINK`: freeing in the
    /// background would add its CPU to the next scenario's figures.
    pub async fn remove_run_queues(&mut self) -> Result<()> {
        let pattern = format!("{}:{{bench-{}-*", self.client.options().prefix, self.run_id);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut self.raw)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut self.raw).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) fn job(&self, sent_ns: Option<u128>) -> Result<NewJob> {
        let pad = self.params.payload_bytes.saturating_sub(40);
        let payload = match sent_ns {
            Some(ns) => serde_json::json!({ "sent_ns": ns.to_string(), "data": "x".repeat(pad) }),
            None => serde_json::json!({ "data": "x".repeat(pad + 20) }),
        };
        Ok(NewJob::new(JOB_NAME, &payload)?)
    }

    /// N single enqueues with `concurrency` in flight.
    pub async fn enqueue_single(&mut self) -> Result<Throughput> {
        let queue = self.queue("enqueue-single");
        let per_task = self.params.jobs / u64::from(self.params.concurrency.max(1));
        let jobs = per_task * u64::from(self.params.concurrency.max(1));
        let before = Snapshot::take(&mut self.raw).await?;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..self.params.concurrency.max(1) {
            let (client, queue) = (self.client.clone(), queue.clone());
            let template = self.job(None)?;
            tasks.spawn(async move {
                for _ in 0..per_task {
                    client.enqueue(&queue, template.clone()).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        Ok(throughput(jobs, seconds, before.cost_until(&after, jobs)))
    }

    /// N jobs through `enqueue_bulk` (1,000 per round trip).
    pub async fn enqueue_bulk(&mut self) -> Result<Throughput> {
        let queue = self.queue("enqueue-bulk");
        let template = self.job(None)?;
        let jobs: Vec<NewJob> = (0..self.params.jobs).map(|_| template.clone()).collect();
        let before = Snapshot::take(&mut self.raw).await?;
        let started = Instant::now();
        self.client.enqueue_bulk(&queue, jobs).await?;
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        Ok(throughput(self.params.jobs, seconds, before.cost_until(&after, self.params.jobs)))
    }

    /// N waiting no-op jobs, then one in-process worker of `concurrency`;
    /// timed from the worker's start to the last completion.
    pub async fn process(&mut self) -> Result<(Throughput, Rss)> {
        let queue = self.queue("process");
        let template = self.job(None)?;
        self.client.enqueue_bulk(&queue, (0..self.params.jobs).map(|_| template.clone()).collect()).await?;
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let handler = handler_fn(move |_ctx: JobContext, _payload: serde_json::Value| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        });
        let worker = Worker::builder(self.worker_config(std::slice::from_ref(&queue))?)
            .handler(&queue, JOB_NAME, handler)
            .build()?;
        let mut rss = Rss { start_kib: rss_kib(), ..Rss::default() };
        let before = Snapshot::take(&mut self.raw).await?;
        let started = Instant::now();
        let (shutdown, running) = start(worker);
        let completed_key = QueueKeys::new(&self.client.options().prefix, &QueueName::new(&queue)?).meta();
        loop {
            rss.max_kib = rss.max_kib.max(rss_kib());
            let completed: Option<u64> =
                redis::cmd("HGET").arg(&completed_key).arg("completed").query_async(&mut self.raw).await?;
            if completed.unwrap_or(0) >= self.params.jobs {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("processing did not finish in 10 minutes: {} handled", done.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        rss.end_kib = rss_kib();
        stop(shutdown, running).await?;
        Ok((throughput(self.params.jobs, seconds, before.cost_until(&after, self.params.jobs)), rss))
    }

    /// An idle worker; jobs enqueued at a steady rate; enqueue-to-start
    /// latency of each.
    pub async fn latency(&mut self) -> Result<Latency> {
        let queue = self.queue("latency");
        let samples: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let handler = handler_fn(move |_ctx: JobContext, payload: serde_json::Value| {
            let sink = sink.clone();
            async move {
                let now = now_ns();
                let sent: u128 = payload["sent_ns"].as_str().and_then(|s| s.parse().ok()).unwrap_or(now);
                sink.lock().await.push(now.saturating_sub(sent) as f64 / 1e6);
                Ok(None)
            }
        });
        let worker = Worker::builder(self.worker_config(std::slice::from_ref(&queue))?)
            .handler(&queue, JOB_NAME, handler)
            .build()?;
        let (shutdown, running) = start(worker);
        tokio::time::sleep(Duration::from_millis(500)).await; // let it go idle
        let total = u64::from(self.params.rate) * self.params.latency_seconds;
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(self.params.rate.max(1))));
        let mut sends = JoinSet::new();
        for _ in 0..total {
            tick.tick().await;
            let (client, queue, job) = (self.client.clone(), queue.clone(), self.job(Some(now_ns()))?);
            sends.spawn(async move { client.enqueue(&queue, job).await });
        }
        while let Some(sent) = sends.join_next().await {
            sent??;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while (samples.lock().await.len() as u64) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop(shutdown, running).await?;
        let mut ms = samples.lock().await.clone();
        if ms.len() as u64 != total {
            bail!("only {} of {total} latency samples arrived", ms.len());
        }
        ms.sort_by(f64::total_cmp);
        Ok(Latency {
            samples: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
            rate: self.params.rate,
        })
    }

    /// A worker watching `idle_queues` empty queues: Redis commands per
    /// second it causes.
    pub async fn idle(&mut self) -> Result<Idle> {
        let queues: Vec<String> =
            (0..self.params.idle_queues).map(|i| self.queue(&format!("idle-{i}"))).collect();
        let mut config = self.worker_config(&queues)?;
        config.worker.idle_wait = Duration::from_secs(5);
        let worker = Worker::builder(config).build()?;
        let (shutdown, running) = start(worker);
        tokio::time::sleep(Duration::from_secs(1)).await; // startup reap and first claims
        let before = Snapshot::take(&mut self.raw).await?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(self.params.idle_seconds)).await;
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        stop(shutdown, running).await?;
        let commands = after.calls.saturating_sub(before.calls).saturating_sub(2) as f64;
        let requests = (after.script_calls + after.blocking_calls)
            .saturating_sub(before.script_calls + before.blocking_calls) as f64;
        Ok(Idle {
            queues: self.params.idle_queues,
            seconds,
            requests_per_sec: requests / seconds,
            commands_per_sec: commands / seconds,
        })
    }

    /// Redis memory per waiting job.
    pub async fn memory(&mut self) -> Result<Memory> {
        let queue = self.queue("memory");
        let template = self.job(None)?;
        let before = used_memory(&mut self.raw).await?;
        self.client.enqueue_bulk(&queue, (0..self.params.jobs).map(|_| template.clone()).collect()).await?;
        let after = used_memory(&mut self.raw).await?;
        Ok(Memory {
            jobs: self.params.jobs,
            redis_bytes_per_waiting_job: after.saturating_sub(before) as f64 / self.params.jobs.max(1) as f64,
        })
    }

    fn worker_config(&self, queues: &[String]) -> Result<Config> {
        let concurrency = self.params.concurrency.max(1);
        let mut text = format!(
            "[redis]\nurl = \"{}\"\ncoalesce_calls = {}\n[worker]\nconcurrency = {concurrency}\nclaim_batch = {}\nidle_wait = \"1s\"\n",
            self.url,
            self.params.coalesce_calls,
            concurrency.min(50)
        );
        for queue in queues {
            text.push_str(&format!("[queues.\"{queue}\"]\nconcurrency = {concurrency}\n"));
        }
        Config::from_toml_str(&text).context("benchmark worker config")
    }
}

pub(crate) fn throughput(jobs: u64, seconds: f64, cost: Cost) -> Throughput {
    Throughput { jobs, seconds, jobs_per_sec: jobs as f64 / seconds.max(1e-9), cost }
}

fn start(
    worker: Worker,
) -> (CancellationToken, tokio::task::JoinHandle<Result<(), taskline_worker::WorkerError>>) {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move { worker.run(token, CancellationToken::new()).await.map(|_| ()) });
    (shutdown, handle)
}

async fn stop(
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), taskline_worker::WorkerError>>,
) -> Result<()> {
    shutdown.cancel();
    running.await.context("worker task")??;
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// This process's resident set size in KiB (0 where /proc is missing).
pub fn rss_kib() -> u64 {
    crate::fleet::rss_kib("self").unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
    }
}
