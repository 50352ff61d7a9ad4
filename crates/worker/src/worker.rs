//! The [`Worker`]: builds the runtime from a [`Config`] and supervises its
//! components until shutdown.
//!
//! Components, each a small struct with `run(shutdown)`:
//! - the claimer (`claimer`): fills free slots with claims, picks queues by
//!   the [`Scheduler`], and idles on the [`Waiter`](crate::waiter::Waiter) when there is no work;
//! - one runner task per job (`runner`), started by the claimer;
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
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use taskline::{Client, ClientOptions, QueuePolicy};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::builtin::Builtins;
use crate::claimer::{ClaimSettings, Claimer};
use crate::config::Config;
use crate::handler::Handler;
use crate::health::HealthServer;
use crate::leases::{HeldLeases, LeaseRenewer};
use crate::metrics::Metrics;
use crate::queues::{QueueRuntime, Registered};
use crate::reaper::Reaper;
use crate::runner::{JobStops, RunnerContext};
use crate::sampler::QueueSampler;
use crate::scheduler::{QueueShare, Scheduler};

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
        let running = self.start(&shutdown).await?;
        shutdown.cancelled().await;
        Ok(running.shut_down(&hurry).await)
    }

    /// Connects, writes the configured queue-wide limits and starts every
    /// component; the claimer stops when `shutdown` is cancelled.
    async fn start(self, shutdown: &CancellationToken) -> Result<Running, WorkerError> {
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
        let client =
            Client::builder_for(config.redis.target()).options(client_options(config)).connect().await?;
        metrics.redis_ok();
        apply_flow_settings(&client, config).await?;
        let lease = config.worker.lease;
        let leases = Arc::new(HeldLeases::default());
        let stops = JobStops { stop_claiming: shutdown.child_token(), ..JobStops::default() };
        let jobs = Arc::new(RunnerContext {
            client: client.clone(),
            scheduler: Arc::new(Scheduler::new(queue_shares(config), config.worker.concurrency)),
            leases: leases.clone(),
            metrics: metrics.clone(),
            queues: queue_runtimes(config, self.handlers),
            worker_id: worker_id.clone(),
            lease,
            version_retry_delay: config.worker.version_retry_delay,
            max_version_retries: config.worker.max_version_retries,
            log_payloads: config.worker.log_payloads,
            progress_interval: config.worker.progress_interval,
            stops: stops.clone(),
        });
        let queue_names: Vec<String> = jobs.queues.iter().map(|q| q.name.clone()).collect();
        info!(worker = %worker_id, queues = ?queue_names, concurrency = config.worker.concurrency, "worker started");

        let heartbeat = config.worker.heartbeat.unwrap_or(lease / 3);
        let mut renewer = StopGroup::default();
        renewer.spawn(|stop| {
            LeaseRenewer::new(client.clone(), leases.clone(), lease, heartbeat)
                .with_metrics(metrics.clone())
                .run(stop)
        });
        let mut reaper = StopGroup::default();
        reaper.spawn(|stop| {
            Reaper::new(client.clone(), queue_names, config.worker.reap_interval)
                .with_metrics(metrics.clone())
                .run(stop)
        });
        let mut observers = StopGroup::default();
        if metrics.is_enabled() || config.queues.values().any(|q| q.dlq_alert.is_some()) {
            let queues = config.queues.iter().map(|(name, q)| (name.clone(), q.dlq_alert)).collect();
            let sampler = QueueSampler::new(client.clone(), metrics.clone(), queues);
            observers.spawn(|stop| sampler.run(stop));
        }
        if let Some(server) = server {
            observers.spawn(|stop| server.run(stop));
        }
        let runners = TaskTracker::new();
        let settings = ClaimSettings {
            batch: config.worker.claim_batch,
            lease,
            worker_id: worker_id.clone(),
            idle_wait: config.worker.idle_wait,
        };
        let claimer = Claimer::new(settings, jobs, runners.clone());
        let claimer = tokio::spawn(claimer.run(stops.stop_claiming.clone()));
        Ok(Running {
            worker_id,
            shutdown_timeout: config.worker.shutdown_timeout,
            claimer,
            runners,
            leases,
            stops,
            renewer,
            reaper,
            observers,
        })
    }
}

/// A started worker's components, as the supervisor stops them.
struct Running {
    worker_id: String,
    shutdown_timeout: Duration,
    /// Stops by itself once shutdown is cancelled.
    claimer: JoinHandle<()>,
    /// One task per running job.
    runners: TaskTracker,
    leases: Arc<HeldLeases>,
    stops: JobStops,
    renewer: StopGroup,
    reaper: StopGroup,
    /// The sampler and the HTTP server.
    observers: StopGroup,
}

impl Running {
    /// Stops everything in the order of the module docs (the numbers are
    /// its steps); `hurry` cuts step 2 short.
    async fn shut_down(self, hurry: &CancellationToken) -> WorkerReport {
        info!(running = self.leases.running(), "shutdown: no new jobs; waiting for running ones");
        let _ = self.claimer.await; // 1
        self.runners.close();
        let finished = tokio::select! {
            _ = self.runners.wait() => true, // 2
            _ = tokio::time::sleep(self.shutdown_timeout) => false,
            _ = hurry.cancelled() => false,
        };
        let mut report = WorkerReport::default();
        if !finished {
            report.released_at_shutdown = self.leases.running();
            warn!(
                still_running = self.leases.running(),
                "shutdown: releasing the jobs still running back to their queues"
            );
            self.stops.abort_jobs.cancel(); // 3
            if tokio::time::timeout(OUTCOME_GRACE, self.runners.wait()).await.is_err() {
                self.stops.hard_stop.cancel(); // 4
                self.runners.wait().await;
            }
        }
        self.renewer.stop().await; // 5
        self.reaper.stop().await; // 6
        self.observers.stop().await; // 7
        info!(worker = %self.worker_id, "worker stopped");
        report
    }
}

/// Background tasks stopped together by one token.
#[derive(Default)]
struct StopGroup {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl StopGroup {
    /// Spawns the future `run` makes of the group's stop token.
    fn spawn<F, Fut>(&mut self, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(run(self.stop.clone())));
    }

    /// Cancels the token and waits until every task has returned.
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Each queue's share of the slots, by scheduler index (configuration
/// order).
fn queue_shares(config: &Config) -> Vec<QueueShare> {
    config
        .queues
        .iter()
        .map(|(name, q)| QueueShare {
            name: name.clone(),
            weight: q.weight,
            strict: q.strict,
            concurrency: q.concurrency,
        })
        .collect()
}

/// Each queue's runner settings with its `handlers`, which the builder
/// registered by the same index.
fn queue_runtimes(config: &Config, handlers: Vec<HashMap<String, Registered>>) -> Vec<QueueRuntime> {
    config
        .queues
        .iter()
        .zip(handlers)
        .map(|((name, q), handlers)| QueueRuntime {
            name: name.clone(),
            backoff: q.backoff.to_backoff(),
            timeout: q.timeout,
            handlers,
        })
        .collect()
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
        durability: config.redis.client_durability(),
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
