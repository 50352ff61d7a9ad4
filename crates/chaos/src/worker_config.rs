//! The worker side of a run: the timings every worker uses, and the TOML
//! file they are started with.
//!
//! Leases are short so that a lost lease is recovered within seconds, which
//! is what lets a short run inject many faults and still settle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// The queue every job of a run goes to.
pub const QUEUE: &str = "chaos";

/// The job name the `simulate` handler is registered for.
pub const JOB_NAME: &str = "sim";

/// Bound of the queue's event stream. The runner tails the stream as it
/// grows, so the bound only has to cover how far the reader may lag.
pub const EVENTS_MAX_LEN: u64 = 1_000_000;

/// Timings and sizes shared by the worker config, the workload (slow jobs
/// outlast the lease) and the attribution of duplicates to faults.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// `worker.lease`.
    pub lease: Duration,
    /// `worker.heartbeat` (lease / 3).
    pub heartbeat: Duration,
    /// `worker.reap_interval`.
    pub reap_interval: Duration,
    /// `worker.shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// The queue's `timeout`: a backstop above every job's own work.
    pub queue_timeout: Duration,
    /// Job slots per worker process (`worker.concurrency` and the queue's).
    pub concurrency: u32,
    /// Completed jobs kept (`retention.keep_last`): at least the job count,
    /// so that every completed job can be accounted for at the end.
    pub keep_completed: u64,
}

impl WorkerSettings {
    /// The settings of a run of `jobs` jobs with `concurrency` slots per worker.
    pub fn new(jobs: u64, concurrency: u32) -> Self {
        Self {
            lease: Duration::from_secs(2),
            heartbeat: Duration::from_millis(666),
            reap_interval: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(15),
            concurrency,
            keep_completed: jobs.max(1_000) * 2,
        }
    }

    /// The TOML text of the worker configuration for Redis at `url`.
    pub fn toml(&self, url: &str) -> String {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        format!(
            "[redis]\nurl = \"{url}\"\n\n\
             [worker]\nconcurrency = {c}\nlease = \"{lease}\"\nheartbeat = \"{hb}\"\n\
             reap_interval = \"{reap}\"\nshutdown_timeout = \"{shutdown}\"\nidle_wait = \"1s\"\n\
             claim_batch = 4\nevents_max_len = {events}\n\n\
             [queues.{QUEUE}]\nconcurrency = {c}\nmax_attempts = 5\n\
             backoff = {{ initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = \"equal\" }}\n\
             timeout = \"{timeout}\"\nretention = {{ keep_last = {keep}, max_age = \"none\" }}\n\n\
             [handlers.{JOB_NAME}]\nqueue = \"{QUEUE}\"\nkind = \"simulate\"\n",
            c = self.concurrency,
            lease = ms(self.lease),
            hb = ms(self.heartbeat),
            reap = ms(self.reap_interval),
            shutdown = ms(self.shutdown_timeout),
            events = EVENTS_MAX_LEN,
            timeout = ms(self.queue_timeout),
            keep = self.keep_completed,
        )
    }

    /// Writes the configuration to `dir/worker.toml` and returns its path.
    pub fn write(&self, dir: &Path, url: &str) -> Result<PathBuf> {
        let path = dir.join("worker.toml");
        std::fs::write(&path, self.toml(url)).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// How long after a fault ends a lease it broke can still be reaped:
    /// the lease runs out, the next reaper pass leaves it (a pass reaps only
    /// leases that had expired by the previous one, finding F3), the pass
    /// after (with its jitter) takes it, plus slack for a loaded machine.
    pub fn recovery_window(&self) -> Duration {
        self.lease + self.heartbeat + self.reap_interval * 3 + Duration::from_secs(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_the_queue_handler_and_retention() {
        let text = WorkerSettings::new(10_000, 8).toml("redis://127.0.0.1:1/");
        assert!(text.contains("[queues.chaos]"), "{text}");
        assert!(text.contains("[handlers.sim]"), "{text}");
        assert!(text.contains("keep_last = 20000"), "{text}");
        assert!(text.contains("lease = \"2000ms\""), "{text}");
    }
}
