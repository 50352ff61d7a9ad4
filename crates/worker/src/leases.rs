//! Held leases and the heartbeat that keeps them alive.
//!
//! Every claimed job registers its lease in [`HeldLeases`] before its
//! handler starts, and keeps it there until its outcome is recorded or given
//! up (finding F2 in RELIABILITY.md: an outcome resent across a Redis outage
//! must not outlive its lease). The [`LeaseRenewer`] extends all of them in
//! one call per queue every heartbeat; a lease the server reports lost gets
//! its running job cancelled, and the job's outcome is discarded (another
//! attempt owns the job now).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskline::{Client, JobId, Lease};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// One held lease.
#[derive(Debug)]
struct Held {
    lease: Lease,
    /// Cancelled when the lease is reported lost.
    lost: CancellationToken,
    /// The handler is done; its outcome is being recorded.
    recording: bool,
}

/// What a lost lease's job was doing.
#[derive(Debug, PartialEq, Eq)]
enum LostWhile {
    /// Its handler ran; it has been cancelled.
    Running,
    /// Its outcome was being recorded; the resend will be refused and say so.
    Recording,
    /// The lease is no longer held (the heartbeat raced its removal).
    NotHeld,
}

/// The leases this process holds, with the token that cancels each job.
#[derive(Debug, Default)]
pub struct HeldLeases {
    inner: Mutex<HashMap<JobId, Held>>,
}

impl HeldLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a claimed job; `lost` is cancelled if its lease is lost.
    pub fn insert(&self, lease: Lease, lost: CancellationToken) {
        self.lock().insert(lease.job_id.clone(), Held { lease, lost, recording: false });
    }

    /// Marks the job of `lease` as done running: its outcome is being
    /// recorded, and the heartbeat keeps renewing its lease meanwhile.
    pub fn recording(&self, lease: &Lease) {
        if let Some(held) = self.lock().get_mut(&lease.job_id).filter(|h| h.lease.token == lease.token) {
            held.recording = true;
        }
    }

    /// Forgets `lease` once its outcome is recorded or given up. A newer
    /// lease of the same job (the job came back to this worker) stays.
    pub fn remove(&self, lease: &Lease) {
        let mut held = self.lock();
        if held.get(&lease.job_id).is_some_and(|h| h.lease.token == lease.token) {
            held.remove(&lease.job_id);
        }
    }

    /// How many leases are held (running jobs and outcomes being recorded).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no lease is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many held leases belong to jobs whose handler still runs.
    pub fn running(&self) -> usize {
        self.lock().values().filter(|h| !h.recording).count()
    }

    fn snapshot(&self) -> Vec<Lease> {
        self.lock().values().map(|h| h.lease.clone()).collect()
    }

    /// Cancels the job of a lost lease if it still runs under that token.
    fn lost(&self, lease: &Lease) -> LostWhile {
        match self.lock().get(&lease.job_id) {
            Some(held) if held.lease.token == lease.token => {
                held.lost.cancel();
                if held.recording { LostWhile::Recording } else { LostWhile::Running }
            }
            _ => LostWhile::NotHeld,
        }
    }
}

/// Extends every held lease each heartbeat.
pub struct LeaseRenewer {
    client: Client,
    leases: Arc<HeldLeases>,
    lease: Duration,
    heartbeat: Duration,
    metrics: Metrics,
}

impl LeaseRenewer {
    /// A renewer that extends `leases` to `lease` from now every `heartbeat`.
    pub fn new(client: Client, leases: Arc<HeldLeases>, lease: Duration, heartbeat: Duration) -> Self {
        Self { client, leases, lease, heartbeat, metrics: Metrics::disabled() }
    }

    /// Counts lost leases and Redis errors into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown`. It must stop last among the job-related
    /// components: a job still recording its outcome needs its lease.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; leases are fresh
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.exec().await,
            }
        }
    }

    /// One heartbeat: extend everything held; cancel what was lost.
    pub async fn exec(&self) {
        let held = self.leases.snapshot();
        self.metrics.leases_held(held.len());
        if held.is_empty() {
            return;
        }
        match self.client.extend(&held, self.lease).await {
            Ok(extended) => {
                self.metrics.redis_ok();
                debug!(held = held.len(), lost = extended.lost.len(), "leases extended");
                for lease in &extended.lost {
                    match self.leases.lost(lease) {
                        LostWhile::Running => {
                            self.metrics.lease_lost(lease.queue.as_str());
                            warn!(job_id = %lease.job_id, queue = %lease.queue, "lease lost; cancelling the job and discarding its outcome");
                        }
                        // The outcome's resend meets LEASE_LOST and reports
                        // (and counts) the loss itself.
                        LostWhile::Recording => {
                            debug!(job_id = %lease.job_id, queue = %lease.queue, "lease lost while its outcome was being recorded")
                        }
                        LostWhile::NotHeld => {}
                    }
                }
            }
            // The leases stay valid until their deadline; the next beat
            // tries again. Past the deadline another worker may reap them:
            // at-least-once, never lost.
            Err(err) => {
                self.metrics.redis_error("extend");
                warn!(error = %err, held = held.len(), "could not extend leases; retrying next heartbeat")
            }
        }
    }
}
