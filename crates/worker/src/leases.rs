//! Held leases and the heartbeat that keeps them alive.
//!
//! Every running job registers its lease in [`HeldLeases`]. The
//! [`LeaseRenewer`] extends all of them in one call per queue every
//! heartbeat; a lease the server reports lost gets its job cancelled, and
//! the job's outcome is discarded (another attempt owns the job now).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskline::{Client, JobId, Lease};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// The leases this process holds, with the token that cancels each job.
#[derive(Debug, Default)]
pub struct HeldLeases {
    inner: Mutex<HashMap<JobId, (Lease, CancellationToken)>>,
}

impl HeldLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, (Lease, CancellationToken)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running job; `lost` is cancelled if its lease is lost.
    pub fn insert(&self, lease: Lease, lost: CancellationToken) {
        self.lock().insert(lease.job_id.clone(), (lease, lost));
    }

    /// Forgets a job that stopped running.
    pub fn remove(&self, id: &JobId) {
        self.lock().remove(id);
    }

    /// How many leases are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no lease is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn snapshot(&self) -> Vec<Lease> {
        self.lock().values().map(|(lease, _)| lease.clone()).collect()
    }

    /// Cancels the job of a lost lease if it still runs under that token;
    /// false when the job had already finished (the heartbeat raced its
    /// completion, and nothing was lost).
    fn lost(&self, lease: &Lease) -> bool {
        match self.lock().get(&lease.job_id) {
            Some((held, token)) if held.token == lease.token => {
                token.cancel();
                true
            }
            _ => false,
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
        if held.is_empty() {
            return;
        }
        match self.client.extend(&held, self.lease).await {
            Ok(extended) => {
                self.metrics.redis_ok();
                debug!(held = held.len(), lost = extended.lost.len(), "leases extended");
                for lease in &extended.lost {
                    if self.leases.lost(lease) {
                        self.metrics.lease_lost(lease.queue.as_str());
                        warn!(job_id = %lease.job_id, queue = %lease.queue, "lease lost; cancelling the job and discarding its outcome");
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
