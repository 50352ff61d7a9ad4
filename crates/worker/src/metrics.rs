//! The worker's metrics: every metric name in one place ([`names`]), and
//! [`Metrics`], the per-worker registry the components record into and the
//! HTTP server renders in the Prometheus text format.
//!
//! # One registry per worker, no global recorder
//!
//! Each [`Metrics`] owns its own `metrics-exporter-prometheus` recorder
//! (`PrometheusBuilder::build_recorder`) and records into it directly
//! through the `metrics::Recorder` trait. Nothing is installed globally:
//! the `metrics::counter!` macros and `metrics::with_local_recorder` are not
//! used, because a global recorder can be installed once per process (two
//! workers in one test process would share, and double, their numbers) and a
//! thread-local one does not follow a task across `.await` points and
//! threads. Passing the handle explicitly keeps every worker's numbers its
//! own, which is what `/metrics` of one process must show, and keeps tests
//! that run several workers side by side independent.
//!
//! A worker without `metrics_addr` gets [`Metrics::disabled`]: every call is
//! a no-op, so nothing accumulates that no one scrapes.
//!
//! # Readiness
//!
//! [`Metrics`] also remembers the outcome of the latest Redis round trips
//! ([`Metrics::redis_ok`], [`Metrics::redis_error`]) for `/readyz`: ready
//! while the most recent round trip succeeded, less than [`READY_WITHIN`]
//! ago.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::metrics::{Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use taskline::Counts;

/// The name of every metric the worker exports.
pub mod names {
    /// Counter `{queue, name}`: jobs completed.
    pub const JOBS_COMPLETED: &str = "taskline_jobs_completed_total";
    /// Counter `{queue, name}`: attempts that failed (retried or dead).
    pub const JOBS_FAILED: &str = "taskline_jobs_failed_total";
    /// Counter `{queue, name}`: failed attempts scheduled for a retry.
    pub const JOBS_RETRIED: &str = "taskline_jobs_retried_total";
    /// Counter `{queue, name}`: jobs moved to the dead letter queue.
    pub const JOBS_DEAD: &str = "taskline_jobs_dead_total";
    /// Counter `{queue, name}`: jobs released back without spending an
    /// attempt (shutdown, payload version too new).
    pub const JOBS_RELEASED: &str = "taskline_jobs_released_total";
    /// Counter `{queue}`: leases lost while a job ran or before its outcome
    /// was recorded (the outcome is discarded).
    pub const LEASE_LOST: &str = "taskline_lease_lost_total";
    /// Counter `{queue, limit}`: claims that leased fewer jobs than asked
    /// because of a queue-wide limit (`rate`, `concurrency`, `hold`); each
    /// is followed by a wait, not a retry loop.
    pub const FLOW_LIMITED: &str = "taskline_flow_limited_total";
    /// Counter `{queue, name}`: jobs whose handler reported that its
    /// upstream is rate limiting; they run again later, attempt not spent.
    pub const JOBS_RATE_LIMITED: &str = "taskline_jobs_rate_limited_total";
    /// Counter `{op}`: Redis calls that failed, by operation (`claim`,
    /// `complete`, `fail`, `release`, `extend`, `reap`, `trim`, `counts`).
    pub const REDIS_ERRORS: &str = "taskline_redis_errors_total";
    /// Counter: times Redis answered again after failing (the connection
    /// was re-established, or the server came back from a restart or a
    /// stall).
    pub const REDIS_RECONNECTS: &str = "taskline_redis_reconnects_total";
    /// Histogram `{queue, name}`: seconds the handler ran, of the jobs that
    /// completed.
    pub const JOB_DURATION: &str = "taskline_job_duration_seconds";
    /// Gauge: leases this worker renews, of running jobs and of finished
    /// jobs whose outcome is still being recorded (sampled every heartbeat).
    pub const LEASES_HELD: &str = "taskline_leases_held";
    /// Gauge `{queue}`: jobs of this worker running now.
    pub const JOBS_IN_FLIGHT: &str = "taskline_jobs_in_flight";
    /// Gauge `{queue, state}`: jobs per state (`ready`, `delayed`, `active`,
    /// `completed`, `dead`), sampled from Redis every few seconds.
    pub const QUEUE_JOBS: &str = "taskline_queue_jobs";
    /// Gauge `{queue}`: 1 while the dead-letter depth is at or above the
    /// queue's `dlq_alert` threshold, else 0 (queues with a threshold only).
    pub const DLQ_ALERT: &str = "taskline_dlq_alert";
}

/// `/readyz` fails when the last successful Redis round trip is older than
/// this (the sampler makes one every second or so).
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of the job duration histogram's buckets.
const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

const METADATA: Metadata<'static> = Metadata::new("taskline_worker", Level::INFO, Some(module_path!()));

/// The per-worker metrics registry and Redis health; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
    health: Arc<Health>,
}

struct Inner {
    recorder: PrometheusRecorder,
}

/// When Redis last answered and last failed, in ms since `start` (0: never).
struct Health {
    start: Instant,
    last_ok: AtomicU64,
    last_err: AtomicU64,
    /// A Redis call failed and none has succeeded since.
    failing: AtomicBool,
}

impl Health {
    fn now(&self) -> u64 {
        // +1 so that 0 keeps meaning "never".
        self.start.elapsed().as_millis() as u64 + 1
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("enabled", &self.is_enabled()).finish()
    }
}

impl Metrics {
    /// A registry that records and renders.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::JOB_DURATION.into()), &DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| (name, unit, help);
        let counters = [
            describe(names::JOBS_COMPLETED, None, "Jobs completed."),
            describe(names::JOBS_FAILED, None, "Attempts that failed (retried or dead)."),
            describe(names::JOBS_RETRIED, None, "Failed attempts scheduled for a retry."),
            describe(names::JOBS_DEAD, None, "Jobs moved to the dead letter queue."),
            describe(names::JOBS_RELEASED, None, "Jobs released back without spending an attempt."),
            describe(names::LEASE_LOST, None, "Leases lost; the outcome was discarded."),
            describe(names::FLOW_LIMITED, None, "Claims held back by a queue-wide limit, by limit."),
            describe(names::JOBS_RATE_LIMITED, None, "Jobs deferred because their upstream rate limited."),
            describe(names::REDIS_ERRORS, None, "Redis calls that failed, by operation."),
            describe(names::REDIS_RECONNECTS, None, "Times Redis answered again after failing."),
        ];
        for (name, unit, help) in counters {
            recorder.describe_counter(name.into(), unit, help.into());
        }
        recorder.describe_histogram(
            names::JOB_DURATION.into(),
            Some(Unit::Seconds),
            "Seconds the handler ran, of completed jobs.".into(),
        );
        recorder.describe_gauge(
            names::JOBS_IN_FLIGHT.into(),
            None,
            "Jobs of this worker running now.".into(),
        );
        recorder.describe_gauge(
            names::LEASES_HELD.into(),
            None,
            "Leases this worker renews: running jobs and outcomes being recorded.".into(),
        );
        recorder.describe_gauge(names::QUEUE_JOBS.into(), None, "Jobs per queue and state (sampled).".into());
        recorder.describe_gauge(
            names::DLQ_ALERT.into(),
            None,
            "1 while the dead letter depth is at or above the queue's dlq_alert threshold.".into(),
        );
        Metrics { inner: Some(Arc::new(Inner { recorder })), health: Arc::new(Health::new()) }
    }

    /// A registry that records nothing (no `metrics_addr`); readiness is
    /// still tracked.
    pub fn disabled() -> Metrics {
        Metrics { inner: None, health: Arc::new(Health::new()) }
    }

    /// Whether this registry records.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Everything recorded, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.inner.as_ref().map(|i| i.recorder.handle().render()).unwrap_or_default()
    }

    /// Folds recorded histogram samples into their buckets so that memory
    /// stays flat between scrapes; the sampler calls it every tick.
    pub fn upkeep(&self) {
        if let Some(inner) = &self.inner {
            inner.recorder.handle().run_upkeep();
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) {
        if let Some(inner) = &self.inner {
            inner.recorder.register_counter(&Key::from_parts(name, labels), &METADATA).increment(1);
        }
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        if let Some(inner) = &self.inner {
            inner.recorder.register_gauge(&Key::from_parts(name, labels), &METADATA).set(value);
        }
    }

    /// A job completed after `took`.
    pub fn completed(&self, queue: &str, name: &str, took: Duration) {
        self.counter(names::JOBS_COMPLETED, job_labels(queue, name));
        if let Some(inner) = &self.inner {
            let key = Key::from_parts(names::JOB_DURATION, job_labels(queue, name));
            inner.recorder.register_histogram(&key, &METADATA).record(took.as_secs_f64());
        }
    }

    /// An attempt failed and a retry is scheduled.
    pub fn retried(&self, queue: &str, name: &str) {
        self.counter(names::JOBS_FAILED, job_labels(queue, name));
        self.counter(names::JOBS_RETRIED, job_labels(queue, name));
    }

    /// An attempt failed and the job is dead.
    pub fn dead(&self, queue: &str, name: &str) {
        self.counter(names::JOBS_FAILED, job_labels(queue, name));
        self.counter(names::JOBS_DEAD, job_labels(queue, name));
    }

    /// A job was released back without spending its attempt.
    pub fn released(&self, queue: &str, name: &str) {
        self.counter(names::JOBS_RELEASED, job_labels(queue, name));
    }

    /// A claim of `queue` was held back by a queue-wide limit.
    pub fn flow_limited(&self, queue: &str, limit: taskline::FlowLimit) {
        self.counter(
            names::FLOW_LIMITED,
            vec![Label::new("queue", queue.to_string()), Label::new("limit", limit.as_str())],
        );
    }

    /// A handler reported rate limiting; the job was deferred.
    pub fn rate_limited(&self, queue: &str, name: &str) {
        self.counter(names::JOBS_RATE_LIMITED, job_labels(queue, name));
    }

    /// A lease was lost.
    pub fn lease_lost(&self, queue: &str) {
        self.counter(names::LEASE_LOST, vec![Label::new("queue", queue.to_string())]);
    }

    /// A Redis round trip succeeded. The first success after a failure
    /// counts as a reconnect.
    pub fn redis_ok(&self) {
        let h = &self.health;
        h.last_ok.store(h.now(), Ordering::Relaxed);
        if h.failing.swap(false, Ordering::Relaxed) {
            self.counter(names::REDIS_RECONNECTS, Vec::new());
        }
    }

    /// A Redis call of operation `op` failed.
    pub fn redis_error(&self, op: &'static str) {
        self.health.last_err.store(self.health.now(), Ordering::Relaxed);
        self.health.failing.store(true, Ordering::Relaxed);
        self.counter(names::REDIS_ERRORS, vec![Label::new("op", op)]);
    }

    /// True while the latest Redis round trip succeeded, within
    /// [`READY_WITHIN`].
    pub fn is_ready(&self) -> bool {
        let h = &self.health;
        let ok = h.last_ok.load(Ordering::Relaxed);
        let err = h.last_err.load(Ordering::Relaxed);
        ok != 0 && ok >= err && h.now().saturating_sub(ok) <= READY_WITHIN.as_millis() as u64
    }

    /// Counts one more running job of `queue` until the guard drops.
    pub fn in_flight(&self, queue: &str) -> InFlight {
        let gauge = self.inner.as_ref().map(|inner| {
            let key = Key::from_parts(names::JOBS_IN_FLIGHT, vec![Label::new("queue", queue.to_string())]);
            inner.recorder.register_gauge(&key, &METADATA)
        });
        if let Some(g) = &gauge {
            g.increment(1.0);
        }
        InFlight(gauge)
    }

    /// Sets how many leases the heartbeat renews.
    pub fn leases_held(&self, n: usize) {
        self.gauge(names::LEASES_HELD, Vec::new(), n as f64);
    }

    /// Sets the sampled per-state depths of `queue`.
    pub fn queue_counts(&self, queue: &str, counts: &Counts) {
        let states = [
            ("ready", counts.ready),
            ("delayed", counts.delayed),
            ("active", counts.active),
            ("completed", counts.completed),
            ("dead", counts.dead),
        ];
        for (state, n) in states {
            let labels = vec![Label::new("queue", queue.to_string()), Label::new("state", state)];
            self.gauge(names::QUEUE_JOBS, labels, n as f64);
        }
    }

    /// Sets `queue`'s DLQ alert gauge.
    pub fn dlq_alert(&self, queue: &str, firing: bool) {
        let labels = vec![Label::new("queue", queue.to_string())];
        self.gauge(names::DLQ_ALERT, labels, if firing { 1.0 } else { 0.0 });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Health {
    fn new() -> Health {
        Health {
            start: Instant::now(),
            last_ok: AtomicU64::new(0),
            last_err: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }
}

fn job_labels(queue: &str, name: &str) -> Vec<Label> {
    vec![Label::new("queue", queue.to_string()), Label::new("name", name.to_string())]
}

/// Holds one unit of `taskline_jobs_in_flight{queue}`; see
/// [`Metrics::in_flight`].
pub struct InFlight(Option<::metrics::Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.completed("q", "job", Duration::from_millis(3));
        assert!(a.render().contains("taskline_jobs_completed_total{queue=\"q\",name=\"job\"} 1"));
        assert!(!b.render().contains("taskline_jobs_completed_total{"));
    }

    #[test]
    fn readiness_follows_the_latest_round_trip() {
        let m = Metrics::disabled();
        assert!(!m.is_ready(), "not ready before any round trip");
        m.redis_ok();
        assert!(m.is_ready());
        std::thread::sleep(Duration::from_millis(2));
        m.redis_error("claim");
        assert!(!m.is_ready());
        std::thread::sleep(Duration::from_millis(2));
        m.redis_ok();
        assert!(m.is_ready());
    }
}
