//! The [`Worker`]: builds the runtime from a [`Config`] and supervises its
//! components until shutdown.
//!
//! Components, each a small struct with `run(shutdown)`:
//! - the claimer (in this file): fills free slots with claims, picks queues
//!   by the [`Scheduler`], and idles on the [`Waiter`] when there is no work;
//! - one runner task per job (`runner`);
//! - the [`LeaseRenewer`] heartbeat;
//! - the [`Reaper`] of expired leases;
//! - the [`QueueSampler`] of queue depths and DLQ alerts, and the
//!   [`HealthServer`] of `/metrics`, `/healthz` and `/readyz` (when
//!   `metrics_addr` is set; the sampler also runs for `dlq_alert` alone).
//!
//! Shutdown order, and why:
//! 1. the claimer stops, so no new job starts;
//! 2. running jobs get `shutdown_timeout` to finish (a second signal cuts it
//!    short);
//! 3. jobs still running are cancelled and released to the front of their
//!    queues, attempt not spent;
//! 4. runners get a grace period to record those outcomes; if Redis is
//!    unreachable they give up, and the leases expire so another worker
//!    runs the jobs again;
//! 5. the lease renewer stops only now, because until step 4 ends a job may
//!    still need its lease;
//! 6. the reaper stops; it holds nothing that must outlive the process;
//! 7. the sampler and the HTTP server stop last, after the runners, so that
//!    `/metrics` shows the final outcomes and `/healthz` answers for as long
//!    as the process still works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskline::{Backoff, Claim, ClaimOptions, Client, ClientOptions, QueueName, QueuePolicy};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::builtin::Builtins;
use crate::config::Config;
use crate::handler::Handler;
use crate::health::HealthServer;
use crate::leases::{HeldLeases, LeaseRenewer};
use crate::metrics::Metrics;
use crate::reaper::Reaper;
use crate::runner;
use crate::sampler::QueueSampler;
use crate::scheduler::{QueueShare, Scheduler};
use crate::waiter::{Waiter, WakeListener, Woken};

/// How often an idle claimer looks at every queue although no wake token
/// came (the safety net for a lost token).
const FULL_LOOK_EVERY: Duration = Duration::from_secs(60);

/// How long runners get to record the outcome of released jobs once
/// shutdown has cancelled them (step 4 above).
const OUTCOME_GRACE: Duration = Duration::from_secs(10);

/// Everything that can stop a worker from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A handler was registered for a queue the configuration lacks.
    #[error(
        "handler {name:?} is registered for queue {queue:?}, which is not configured; add [queues.{queue}] to the config"
    )]
    UnknownQueue {
        /// The queue named.
        queue: String,
        /// The handler's job name.
        name: String,
    },
    /// Two handlers for one job name on one queue.
    #[error("two handlers for job {name:?} on queue {queue:?}; register each job name once per queue")]
    DuplicateHandler {
        /// The queue.
        queue: String,
        /// The job name.
        name: String,
    },
    /// Redis could not be reached at start.
    #[error(transparent)]
    Client(#[from] taskline::Error),
    /// The metrics server could not listen on `worker.metrics_addr`.
    #[error("cannot serve metrics on {addr} (worker.metrics_addr): {source}")]
    MetricsServer {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
}

/// A handler with its per-handler settings.
pub(crate) struct Registered {
    pub handler: Arc<dyn Handler>,
    pub timeout: Option<Duration>,
}

/// Per-queue settings the runners use, by scheduler index.
pub(crate) struct QueueRuntime {
    pub name: String,
    pub backoff: Backoff,
    pub timeout: Option<Duration>,
}

/// State shared by the claimer and every runner.
pub(crate) struct Shared {
    pub client: Client,
    pub scheduler: Scheduler,
    pub leases: Arc<HeldLeases>,
    pub queues: Vec<QueueRuntime>,
    pub handlers: Vec<HashMap<String, Registered>>,
    pub worker_id: String,
    pub lease: Duration,
    pub claim_batch: u32,
    pub idle_wait: Duration,
    pub version_retry_delay: Duration,
    pub max_version_retries: u32,
    pub log_payloads: bool,
    /// Least time between two progress writes of one job.
    pub progress_interval: Duration,
    /// Where outcomes, Redis errors and in-flight jobs are counted.
    pub metrics: Metrics,
    /// Cancelled at the start of shutdown: claim nothing more.
    pub stop_claiming: CancellationToken,
    /// Cancelled when running jobs must stop and be released.
    pub abort_jobs: CancellationToken,
    /// Cancelled when outcome resends must give up.
    pub hard_stop: CancellationToken,
}

/// Builds a [`Worker`]: a configuration plus the Rust handlers of your own
/// job names. Handlers configured in TOML (`[handlers.NAME]`) are added by
/// [`WorkerBuilder::build`].
pub struct WorkerBuilder {
    config: Config,
    handlers: Vec<PendingHandler>,
}

/// A handler waiting for [`WorkerBuilder::build`] to check its queue.
struct PendingHandler {
    queue: String,
    name: String,
    handler: Arc<dyn Handler>,
    timeout: Option<Duration>,
}

impl WorkerBuilder {
    /// Registers `handler` for jobs named `name` on `queue`.
    pub fn handler(mut self, queue: &str, name: &str, handler: impl Handler) -> Self {
        self.handlers.push(PendingHandler {
            queue: queue.to_string(),
            name: name.to_string(),
            handler: Arc::new(handler),
            timeout: None,
        });
        self
    }

    /// Like [`WorkerBuilder::handler`], with a default per-attempt timeout.
    pub fn handler_with_timeout(
        mut self,
        queue: &str,
        name: &str,
        handler: impl Handler,
        timeout: Duration,
    ) -> Self {
        self.handlers.push(PendingHandler {
            queue: queue.to_string(),
            name: name.to_string(),
            handler: Arc::new(handler),
            timeout: Some(timeout),
        });
        self
    }

    /// Validates everything and returns a worker ready to [`Worker::run`].
    pub fn build(self) -> Result<Worker, WorkerError> {
        let config = self.config;
        config.validate()?;
        let mut handlers = self.handlers;
        let mut builtins = Builtins::default();
        for (name, handler) in &config.handlers {
            handlers.push(PendingHandler {
                queue: handler.queue.clone(),
                name: name.clone(),
                handler: builtins.build(name, handler)?,
                timeout: handler.timeout,
            });
        }
        let queue_names: Vec<String> = config.queues.keys().cloned().collect();
        // By queue index, then job name: the runner looks a handler up per
        // job without building a key.
        let mut registry: Vec<HashMap<String, Registered>> =
            queue_names.iter().map(|_| HashMap::new()).collect();
        for PendingHandler { queue, name, handler, timeout } in handlers {
            let Some(index) = queue_names.iter().position(|q| *q == queue) else {
                return Err(WorkerError::UnknownQueue { queue, name });
            };
            if registry[index].insert(name.clone(), Registered { handler, timeout }).is_some() {
                return Err(WorkerError::DuplicateHandler { queue, name });
            }
        }
        Ok(Worker { config, handlers: registry })
    }
}

/// A worker process's runtime. Create with [`Worker::builder`], start with
/// [`Worker::run`].
pub struct Worker {
    config: Config,
    handlers: Vec<HashMap<String, Registered>>,
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Jobs still running when the shutdown deadline passed, released back.
    pub released_at_shutdown: usize,
}

impl Worker {
    /// Starts building a worker from `config`.
    pub fn builder(config: Config) -> WorkerBuilder {
        WorkerBuilder { config, handlers: Vec::new() }
    }

    /// This worker's instance id: the configured one, else
    /// `<hostname>-<pid>-<random>`, unique per process so that replicas
    /// never mistake each other's jobs for their own.
    pub fn instance_id(&self) -> String {
        self.config.worker.id.clone().unwrap_or_else(generate_instance_id)
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully (see
    /// the module docs). Cancelling `hurry` (a second signal) cuts the wait
    /// for running jobs short.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        hurry: CancellationToken,
    ) -> Result<WorkerReport, WorkerError> {
        let worker_id = self.instance_id();
        let config = &self.config;
        // One registry per worker, passed explicitly (see `metrics`).
        let metrics = if config.worker.metrics_addr.is_some() { Metrics::new() } else { Metrics::disabled() };
        let server = match config.worker.metrics_addr {
            Some(addr) => Some(
                HealthServer::bind(addr, metrics.clone())
                    .await
                    .map_err(|source| WorkerError::MetricsServer { addr, source })?,
            ),
            None => None,
        };
        let client = Client::builder(&config.redis.url).options(client_options(config)).connect().await?;
        metrics.redis_ok();
        apply_flow_settings(&client, config).await?;
        let shares: Vec<QueueShare> = config
            .queues
            .iter()
            .map(|(name, q)| QueueShare {
                name: name.clone(),
                weight: q.weight,
                strict: q.strict,
                concurrency: q.concurrency,
            })
            .collect();
        let queues: Vec<QueueRuntime> = config
            .queues
            .iter()
            .map(|(name, q)| QueueRuntime {
                name: name.clone(),
                backoff: q.backoff.to_backoff(),
                timeout: q.timeout,
            })
            .collect();
        let lease = config.worker.lease;
        let heartbeat = config.worker.heartbeat.unwrap_or(lease / 3);
        let leases = Arc::new(HeldLeases::default());
        let shared = Arc::new(Shared {
            client: client.clone(),
            scheduler: Scheduler::new(shares, config.worker.concurrency),
            leases: leases.clone(),
            queues,
            handlers: self.handlers,
            worker_id: worker_id.clone(),
            lease,
            claim_batch: config.worker.claim_batch,
            idle_wait: config.worker.idle_wait,
            version_retry_delay: config.worker.version_retry_delay,
            max_version_retries: config.worker.max_version_retries,
            log_payloads: config.worker.log_payloads,
            progress_interval: config.worker.progress_interval,
            metrics: metrics.clone(),
            stop_claiming: shutdown.child_token(),
            abort_jobs: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
        });
        let queue_names: Vec<String> = shared.queues.iter().map(|q| q.name.clone()).collect();
        info!(worker = %worker_id, queues = ?queue_names, concurrency = config.worker.concurrency, "worker started");

        let renewer_stop = CancellationToken::new();
        let renewer = tokio::spawn(
            LeaseRenewer::new(client.clone(), leases.clone(), lease, heartbeat)
                .with_metrics(metrics.clone())
                .run(renewer_stop.clone()),
        );
        let reaper_stop = CancellationToken::new();
        let reaper = tokio::spawn(
            Reaper::new(client.clone(), queue_names, config.worker.reap_interval)
                .with_metrics(metrics.clone())
                .run(reaper_stop.clone()),
        );
        let observe_stop = CancellationToken::new();
        let mut observers = Vec::new();
        if metrics.is_enabled() || config.queues.values().any(|q| q.dlq_alert.is_some()) {
            let queues = config.queues.iter().map(|(name, q)| (name.clone(), q.dlq_alert)).collect();
            let sampler = QueueSampler::new(client.clone(), metrics.clone(), queues);
            observers.push(tokio::spawn(sampler.run(observe_stop.clone())));
        }
        if let Some(server) = server {
            observers.push(tokio::spawn(server.run(observe_stop.clone())));
        }
        let runners = TaskTracker::new();
        let redis_client = redis::Client::open(config.redis.url.as_str()).map_err(taskline::Error::from)?;
        let claimer = tokio::spawn(claim_loop(shared.clone(), runners.clone(), Waiter::new(redis_client)));

        shutdown.cancelled().await;
        info!(running = leases.running(), "shutdown: no new jobs; waiting for running ones");
        let _ = claimer.await; // 1
        runners.close();
        let deadline = config.worker.shutdown_timeout;
        let finished = tokio::select! {
            _ = runners.wait() => true,                      // 2
            _ = tokio::time::sleep(deadline) => false,
            _ = hurry.cancelled() => false,
        };
        let mut report = WorkerReport::default();
        if !finished {
            report.released_at_shutdown = leases.running();
            warn!(
                still_running = leases.running(),
                "shutdown: releasing the jobs still running back to their queues"
            );
            shared.abort_jobs.cancel(); // 3
            if tokio::time::timeout(OUTCOME_GRACE, runners.wait()).await.is_err() {
                shared.hard_stop.cancel(); // 4
                runners.wait().await;
            }
        }
        renewer_stop.cancel(); // 5
        let _ = renewer.await;
        reaper_stop.cancel(); // 6
        let _ = reaper.await;
        observe_stop.cancel(); // 7
        for observer in observers {
            let _ = observer.await;
        }
        info!(worker = %worker_id, "worker stopped");
        Ok(report)
    }
}

/// Writes each queue's queue-wide limits from the configuration to Redis
/// (see `taskline::flow`), and says which limits are in force: an
/// operator's runtime override may differ from this worker's TOML.
async fn apply_flow_settings(client: &Client, config: &Config) -> Result<(), WorkerError> {
    for (name, q) in &config.queues {
        let share_every = taskline::flow::share_every(q.priority_min_share);
        let effective = client.apply_configured_flow(name, &q.flow_limits(), share_every).await?;
        if effective != q.flow_limits() {
            warn!(
                queue = %name,
                configured = ?q.flow_limits(),
                in_force = ?effective,
                "an operator's runtime limits override this worker's configured ones (taskline limits {name} --clear returns to the configured ones)"
            );
        } else if effective.rate.is_some() || effective.concurrency.is_some() {
            info!(queue = %name, rate = ?effective.rate.map(|r| r.to_string()), global_concurrency = ?effective.concurrency, "queue-wide limits in force");
        }
    }
    Ok(())
}

/// Client settings from the worker configuration.
fn client_options(config: &Config) -> ClientOptions {
    ClientOptions {
        prefix: config.redis.prefix.clone(),
        max_payload_bytes: config.worker.max_payload_bytes,
        max_checkpoint_bytes: config.worker.max_checkpoint_bytes,
        events_max_len: config.worker.events_max_len,
        response_timeout: config.redis.response_timeout,
        connection_timeout: config.redis.connection_timeout,
        coalesce_calls: config.redis.coalesce_calls,
        queues: config
            .queues
            .iter()
            .map(|(name, q)| {
                (
                    name.clone(),
                    QueuePolicy { max_attempts: q.max_attempts, retention: q.retention.to_retention() },
                )
            })
            .collect(),
        ..ClientOptions::default()
    }
}

fn generate_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The claimer: keeps every free slot busy, and idles without polling.
async fn claim_loop(shared: Arc<Shared>, runners: TaskTracker, waiter: Waiter) {
    let names = shared.scheduler.names();
    let wake_keys: Vec<String> = names
        .iter()
        .map(|name| {
            let queue = QueueName::new(name).expect("queue names are validated with the config");
            taskline::keys::QueueKeys::new(&shared.client.options().prefix, &queue).wake()
        })
        .collect();
    let mut listener = WakeListener::spawn(waiter, wake_keys.clone(), shared.stop_claiming.clone());
    let mut trouble = Duration::ZERO;
    let mut last_full_look = Instant::now();
    loop {
        if shared.stop_claiming.is_cancelled() {
            return;
        }
        let picks = shared.scheduler.reserve(shared.claim_batch);
        if picks.is_empty() {
            // No queue with room has known work. Wake the due ones, else
            // wait for whichever comes first: a wake token, a freed slot
            // (a busy queue may take more), the next due job or allowed
            // start, or the idle limit (a safety net for a missed token).
            let now = Instant::now();
            if shared.scheduler.wake_due(now) {
                continue;
            }
            let until_due = shared.scheduler.next_due().map(|at| at.saturating_duration_since(now));
            let due_timer = async {
                match until_due {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                woken = listener.next(shared.idle_wait) => match woken {
                    Woken::Key(key) => match wake_keys.iter().position(|k| *k == key) {
                        Some(q) => shared.scheduler.wake(q),
                        None => shared.scheduler.wake_all(),
                    },
                    // The safety net for a missed wake token (a worker that
                    // took one and died): look at every queue now and then,
                    // not on every timeout, so that idle costs stay flat
                    // whatever the number of queues.
                    Woken::Timeout if last_full_look.elapsed() >= FULL_LOOK_EVERY => {
                        last_full_look = Instant::now();
                        shared.scheduler.wake_all();
                    }
                    Woken::Timeout => {}
                    Woken::Failed => {
                        shared.metrics.redis_error("wait");
                        trouble = backoff(trouble);
                        if sleep_or_stop(&shared, trouble).await {
                            return;
                        }
                        shared.scheduler.wake_all();
                    }
                },
                _ = shared.scheduler.slot_freed() => {}
                _ = due_timer => {}
                _ = shared.stop_claiming.cancelled() => return,
            }
            continue;
        }
        for (q, count) in picks {
            let options = ClaimOptions { count, lease: shared.lease, worker: shared.worker_id.clone() };
            match shared.client.claim(&names[q], &options).await {
                Ok(claim) => {
                    shared.metrics.redis_ok();
                    trouble = Duration::ZERO;
                    note_claim(&shared, q, &claim);
                    let got = claim.jobs.len() as u32;
                    shared.scheduler.unreserve(q, count - got.min(count), got < count);
                    for job in claim.jobs {
                        runners.spawn(runner::run(shared.clone(), q, job));
                    }
                }
                Err(err) => {
                    shared.metrics.redis_error("claim");
                    shared.scheduler.unreserve(q, count, true);
                    trouble = backoff(trouble);
                    warn!(queue = %names[q], error = %err, retry_in = ?trouble, "claim failed; backing off");
                    if sleep_or_stop(&shared, trouble).await {
                        return;
                    }
                    shared.scheduler.wake_all();
                }
            }
        }
    }
}

/// Takes note of what a claim of queue index `q` reported besides its
/// jobs: when the queue's next job is due (or its next start allowed), and
/// whether a queue-wide limit held it back.
pub(crate) fn note_claim(shared: &Shared, q: usize, claim: &Claim) {
    shared.scheduler.set_due(q, claim.next_due_in().map(|d| Instant::now() + d));
    if let Some(limit) = claim.limited {
        shared.metrics.flow_limited(&shared.queues[q].name, limit);
    }
}

/// Next pause after a Redis failure: 100 ms doubling to 5 s.
fn backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Sleeps `pause`; true if shutdown began meanwhile.
async fn sleep_or_stop(shared: &Shared, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = shared.stop_claiming.cancelled() => true,
    }
}
