//! Injecting one fault into the running system, and its record.
//!
//! Worker faults pick the worker that holds the most leases (so a SIGKILL
//! lands mid-job and a SIGTERM catches running jobs), then restart the slot
//! after a short hold. Redis faults act on the private `redis-server` through
//! the test kit; its methods block, so they run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use taskline::{Client, JobState};
use taskline_testkit::RedisServer;

use crate::schedule::{FaultKind, PlannedFault};
use crate::worker_config::{QUEUE, WorkerSettings};
use crate::workers::Fleet;

/// Most active jobs inspected to find the busiest worker.
const SAMPLE: u64 = 500;
/// Extra time a SIGTERMed worker gets past its own shutdown deadline and
/// the runtime's 10 s grace for recording released outcomes.
const TERM_SLACK: Duration = Duration::from_secs(15);

/// What was injected, when, and to whom.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// The fault.
    pub kind: FaultKind,
    /// When it began, ms since the Unix epoch (the host's clock, which is
    /// also Redis's).
    pub start_ms: u64,
    /// When the system was whole again (worker restarted, Redis answering).
    pub end_ms: u64,
    /// The worker instance hit, for worker faults.
    pub target: Option<String>,
    /// Leases the target held (worker faults) or active jobs in the queue
    /// (other faults) when it was injected, from a sample of at most 500.
    pub in_flight: u64,
    /// What happened, in words.
    pub detail: String,
}

/// Injects faults into one run.
#[derive(Debug)]
pub struct Injector {
    server: Arc<RedisServer>,
    client: Client,
    settings: WorkerSettings,
}

impl Injector {
    /// An injector for the run on `server`, observing through `client`.
    pub fn new(server: Arc<RedisServer>, client: Client, settings: WorkerSettings) -> Injector {
        Injector { server, client, settings }
    }

    /// Injects `fault`; a worker that misbehaves on the way is noted in
    /// `anomalies`.
    pub async fn inject(
        &self,
        fault: PlannedFault,
        fleet: &mut Fleet,
        anomalies: &mut Vec<String>,
    ) -> Result<FaultRecord> {
        let leases = self.leases_by_worker().await;
        let start_ms = now_ms();
        let mut record = FaultRecord {
            kind: fault.kind,
            start_ms,
            end_ms: start_ms,
            target: None,
            in_flight: leases.values().sum(),
            detail: String::new(),
        };
        match fault.kind {
            FaultKind::WorkerSigkill | FaultKind::WorkerSigterm => {
                let slot = busiest(fleet, &leases, fault.pick);
                let instance = fleet.instance(slot).to_string();
                record.in_flight = leases.get(&instance).copied().unwrap_or(0);
                let (signal, limit) = if fault.kind == FaultKind::WorkerSigkill {
                    ("KILL", Duration::from_secs(5))
                } else {
                    ("TERM", self.settings.shutdown_timeout + TERM_SLACK)
                };
                let stopped = fleet.stop(slot, signal, limit).await;
                record.detail = match stopped.status {
                    Some(status) => format!("SIG{signal} sent; exited with {status}"),
                    None => format!("SIG{signal} sent; still running after {limit:?}, killed"),
                };
                if fault.kind == FaultKind::WorkerSigterm && !stopped.status.is_some_and(|s| s.success()) {
                    anomalies.push(format!(
                        "{instance}: graceful shutdown did not end cleanly: {}",
                        record.detail
                    ));
                }
                record.target = Some(instance);
                tokio::time::sleep(fault.hold).await;
                fleet.restart(slot)?;
                record.detail = format!(
                    "{}; restarted as {} after {:?}",
                    record.detail,
                    fleet.instance(slot),
                    fault.hold
                );
            }
            FaultKind::RedisRestart => {
                let server = self.server.clone();
                record.detail = "redis-server killed (SIGKILL) and started on the same AOF".into();
                if let Err(err) = blocking(move || server.restart()).await {
                    // Redis gets `run::REDIS_READY_TIMEOUT` to load its AOF; should
                    // a restart still fail, note it and try once more.
                    anomalies.push(format!("redis restart failed, retried: {err:#}"));
                    let server = self.server.clone();
                    blocking(move || server.restart()).await.context("redis restart, second try")?;
                    record.detail.push_str(" (second try)");
                }
            }
            FaultKind::ClientKill => {
                let mut conn = self.server.client().get_multiplexed_async_connection().await?;
                let killed: i64 =
                    redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query_async(&mut conn).await?;
                record.detail = format!("{killed} client connections killed");
            }
            FaultKind::RedisPause => {
                let server = self.server.clone();
                let hold = fault.hold;
                blocking(move || {
                    server.pause();
                    std::thread::sleep(hold);
                    server.resume();
                })
                .await
                .context("redis pause")?;
                record.detail = format!("redis-server stopped (SIGSTOP) for {hold:?}, then SIGCONT");
            }
        }
        record.end_ms = now_ms();
        Ok(record)
    }

    /// Leases held per worker instance, from a sample of active jobs.
    /// Empty when Redis cannot be asked.
    async fn leases_by_worker(&self) -> BTreeMap<String, u64> {
        let mut held = BTreeMap::new();
        let Ok(ids) = self.client.list_jobs(QUEUE, JobState::Active, 0, SAMPLE).await else {
            return held;
        };
        for id in ids {
            if let Ok(job) = self.client.get_job(QUEUE, &id).await
                && job.state == JobState::Active
                && let Some(worker) = job.worker
            {
                *held.entry(worker).or_insert(0) += 1;
            }
        }
        held
    }
}

/// The slot of the live worker holding the most leases; `pick` breaks ties.
fn busiest(fleet: &Fleet, leases: &BTreeMap<String, u64>, pick: u64) -> usize {
    let count = |slot: usize| leases.get(fleet.instance(slot)).copied().unwrap_or(0);
    let most = (0..fleet.len()).map(count).max().unwrap_or(0);
    let candidates: Vec<usize> = (0..fleet.len()).filter(|slot| count(*slot) == most).collect();
    candidates[(pick % candidates.len() as u64) as usize]
}

/// Runs a blocking test-kit call on the blocking pool; its panics become errors.
async fn blocking(f: impl FnOnce() + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow!("{e}"))
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
