//! The reaper: recovers jobs whose lease expired because their worker died.
//!
//! Every worker runs one; reaping is idempotent, so several reapers on the
//! same queue are harmless. Each pass handles every configured queue, in
//! batches until a queue has no expired lease left, and then applies the
//! queue's completed-job retention exactly (completions only trim in
//! batches), so Redis memory stays flat even when no job finishes.
//!
//! A pass reaps only leases that expired before the server time of the
//! previous successful pass of the same queue (finding F3 in
//! RELIABILITY.md): after Redis was frozen or down for longer than a lease,
//! every lease in flight is past its deadline, and the first pass after the
//! stall must not take the leases of live workers whose heartbeats are about
//! to land. Those heartbeats renew them before the next pass, which then
//! takes only the leases of workers that are really gone. In steady state
//! this delays the recovery of a dead worker's jobs by one interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use taskline::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Expired leases recovered per script call.
const BATCH: u32 = 100;

/// Periodically reaps the expired leases of some queues.
pub struct Reaper {
    client: Client,
    queues: Vec<String>,
    interval: Duration,
    passes: std::sync::atomic::AtomicU64,
    /// Per queue, the server time of the last successful reap: the next
    /// pass's cutoff. A queue not yet reaped by this process is reaped
    /// against now, to recover what a crashed predecessor left behind.
    cutoffs: Mutex<HashMap<String, SystemTime>>,
    metrics: Metrics,
}

/// Retention is applied on every this-many reaper passes: completions trim
/// as they go, so this only catches the overshoot and aged-out jobs.
const TRIM_EVERY_PASSES: u64 = 4;

impl Reaper {
    /// A reaper of `queues` every `interval` (with up to 20 % jitter, so a
    /// fleet of workers started together does not reap in lockstep).
    pub fn new(client: Client, queues: Vec<String>, interval: Duration) -> Self {
        Self {
            client,
            queues,
            interval,
            passes: std::sync::atomic::AtomicU64::new(0),
            cutoffs: Mutex::new(HashMap::new()),
            metrics: Metrics::disabled(),
        }
    }

    /// Counts Redis errors into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown`; the first pass runs at once, to recover what a
    /// crashed predecessor left behind.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.exec().await;
            let jitter = self.interval.mul_f64(rand::random::<f64>() * 0.2);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval + jitter) => {}
            }
        }
    }

    /// One pass over every queue. Returns how many jobs were reaped.
    pub async fn exec(&self) -> u32 {
        let pass = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let trim = pass.is_multiple_of(TRIM_EVERY_PASSES);
        let mut total = 0;
        for queue in &self.queues {
            total += self.reap_queue(queue).await;
            if !trim {
                continue;
            }
            if let Err(err) = self.client.trim_completed(queue).await {
                self.metrics.redis_error("trim");
                warn!(queue = %queue, error = %err, "retention trim failed; retrying next pass");
            }
        }
        total
    }

    /// Reaps `queue` in batches, against the previous pass's cutoff, and
    /// records this pass's server time as the next cutoff.
    async fn reap_queue(&self, queue: &str) -> u32 {
        let cutoff = self.cutoffs.lock().unwrap_or_else(|p| p.into_inner()).get(queue).copied();
        let mut this_pass = None;
        let mut total = 0;
        loop {
            match self.client.reap_before(queue, BATCH, Duration::ZERO, cutoff).await {
                Ok((reaped, server_time)) => {
                    // The earliest call of the pass: every heartbeat after
                    // it renews the live leases before the next pass.
                    this_pass.get_or_insert(server_time);
                    let n = reaped.ids.len() as u32;
                    total += n;
                    if n > 0 {
                        info!(queue = %queue, retried = reaped.retried, dead = reaped.dead, ids = ?reaped.ids, "recovered jobs whose lease expired");
                    }
                    if n < BATCH {
                        break;
                    }
                }
                Err(err) => {
                    self.metrics.redis_error("reap");
                    warn!(queue = %queue, error = %err, "reap failed; retrying next pass");
                    break;
                }
            }
        }
        if let Some(server_time) = this_pass {
            self.cutoffs.lock().unwrap_or_else(|p| p.into_inner()).insert(queue.to_string(), server_time);
        }
        total
    }
}
