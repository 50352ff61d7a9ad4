//! The queue sampler: keeps `taskline_queue_jobs{queue,state}` current and
//! raises each queue's dead-letter depth alert.
//!
//! One queue per tick, round-robin, with one `Client::counts` call (a
//! single script): at most one Redis command per [`SAMPLE_EVERY`] whatever
//! the number of queues, so a queue is sampled every `queues x 1 s`. Its
//! round trips also keep `/readyz` honest while the worker is idle.
//!
//! The DLQ alert of a queue with `dlq_alert = N` fires when its dead count
//! reaches N: one warning in the log and `taskline_dlq_alert{queue} = 1`;
//! when the count falls below N again (replay, purge), one info line and the
//! gauge back to 0.

use std::time::Duration;

use taskline::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Interval between two samples (of two different queues when there are
/// several).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The alert state of one queue's dead letter depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqAlert {
    threshold: Option<u64>,
    firing: bool,
}

/// A change of a [`DlqAlert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// The dead count reached the threshold.
    Fired,
    /// The dead count fell below the threshold.
    Cleared,
}

impl DlqAlert {
    /// An alert at `threshold` dead jobs; `None` never fires.
    pub fn new(threshold: Option<u64>) -> Self {
        Self { threshold, firing: false }
    }

    /// Whether the alert is firing.
    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Takes a new dead count; the change it causes, if any.
    pub fn observe(&mut self, dead: u64) -> Option<AlertChange> {
        let threshold = self.threshold?;
        let firing = dead >= threshold;
        if firing == self.firing {
            return None;
        }
        self.firing = firing;
        Some(if firing { AlertChange::Fired } else { AlertChange::Cleared })
    }
}

/// Samples the counts of some queues, one per tick.
pub struct QueueSampler {
    client: Client,
    metrics: Metrics,
    queues: Vec<(String, DlqAlert)>,
    next: usize,
}

impl QueueSampler {
    /// A sampler of `queues`, each with its `dlq_alert` threshold.
    pub fn new(client: Client, metrics: Metrics, queues: Vec<(String, Option<u64>)>) -> Self {
        let queues = queues.into_iter().map(|(name, t)| (name, DlqAlert::new(t))).collect();
        Self { client, metrics, queues, next: 0 }
    }

    /// Runs until `shutdown`; the first sample is taken at once.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.exec() => {}
            }
        }
    }

    /// Samples the next queue in turn.
    pub async fn exec(&mut self) {
        self.metrics.upkeep();
        if self.queues.is_empty() {
            return;
        }
        let index = self.next % self.queues.len();
        self.next = index + 1;
        let (queue, alert) = &mut self.queues[index];
        let counts = match self.client.counts(queue).await {
            Ok(counts) => counts,
            Err(err) => {
                self.metrics.redis_error("counts");
                warn!(queue = %queue, error = %err, "could not sample the queue's counts");
                return;
            }
        };
        self.metrics.redis_ok();
        self.metrics.queue_counts(queue, &counts);
        let threshold = alert.threshold;
        match alert.observe(counts.dead) {
            Some(AlertChange::Fired) => warn!(
                queue = %queue,
                dead = counts.dead,
                threshold,
                "dead letter queue at or above its alert threshold; inspect with `taskline dlq list {queue}`"
            ),
            Some(AlertChange::Cleared) => {
                info!(queue = %queue, dead = counts.dead, threshold, "dead letter queue back below its alert threshold")
            }
            None => {}
        }
        if threshold.is_some() {
            self.metrics.dlq_alert(queue, alert.is_firing());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alert_changes_once_per_crossing() {
        let mut alert = DlqAlert::new(Some(3));
        assert_eq!(alert.observe(0), None);
        assert_eq!(alert.observe(2), None);
        assert_eq!(alert.observe(3), Some(AlertChange::Fired));
        assert_eq!(alert.observe(5), None, "fires once, not on every sample");
        assert!(alert.is_firing());
        assert_eq!(alert.observe(2), Some(AlertChange::Cleared));
        assert_eq!(alert.observe(0), None);
        assert_eq!(alert.observe(4), Some(AlertChange::Fired));
    }

    #[test]
    fn no_threshold_never_fires() {
        let mut alert = DlqAlert::new(None);
        assert_eq!(alert.observe(u64::MAX), None);
        assert!(!alert.is_firing());
    }
}
