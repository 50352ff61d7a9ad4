//! The `cluster` scenario: Taskline on a Redis Cluster beside one server,
//! in the same run.
//!
//! Four deployments, each measured the same way: one `redis-server`; a
//! cluster of `masters` masters without replicas (what cluster mode itself
//! costs, beside the single server); a cluster whose masters have a replica
//! each (what replication costs the masters); the same with `replicated`
//! durability (every change confirmed by a replica with `WAIT`). On each, `queues` queues
//! share the work evenly: `enqueue` (single enqueues, `concurrency` in
//! flight, spread over the queues) and `saturate` (waiting jobs drained by
//! `taskline-worker` processes that serve every queue).
//!
//! A queue lives on the master that serves its hash tag's slot, so how the
//! work spreads depends on where the queue names hash. Sixteen names over
//! three masters land 4/4/8 as often as 5/5/6; the scenario records where
//! they landed, then moves slots (as an operator would with `CLUSTER
//! SETSLOT` or `redis-cli --cluster reshard`) until each master serves the
//! same number of queues, give or take one, and measures that.
//!
//! Per shard it reports the Redis CPU per job of the jobs that shard
//! served, its share of the jobs, and its bound (1e6 / µs per job: the
//! jobs/s one core could serve at that cost). On this machine the shards
//! share two cores with the clients, so wall-clock throughput does not
//! grow with shards here; the sum of the shards' bounds says what it would
//! be with a core each. Replicas' CPU (applying the masters' writes) is
//! not counted in the masters' figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use taskline::{Client, Durability, NewJob, RedisTarget};
use taskline_testkit::{RedisCluster, RedisServer, hash_slot};
use tokio::task::JoinSet;

use crate::fleet::{self, Fleet};
use crate::redis_stats::{Snapshot, blocked_clients};
use crate::scenarios::Params;

/// Jobs per `enqueue_bulk` call when filling queues for `saturate`.
const FILL_CHUNK: usize = 5_000;
/// Longest a timed part may take.
const TIME_LIMIT: Duration = Duration::from_secs(900);

/// Sizes of the cluster scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterParams {
    /// Masters of the cluster.
    pub masters: usize,
    /// Queues the work is spread over.
    pub queues: usize,
    /// `taskline-worker` processes of `saturate`.
    pub worker_processes: u32,
}

/// One shard's part of a measured stretch.
#[derive(Debug, Clone, Serialize)]
pub struct ShardFigures {
    /// `host:port` of the master.
    pub node: String,
    /// Queues it serves.
    pub queues: usize,
    /// Jobs of those queues.
    pub jobs: u64,
    /// Its share of all the jobs.
    pub share: f64,
    /// Redis CPU µs per job of its own jobs.
    pub redis_cpu_us_per_job: f64,
    /// 1e6 / that: jobs/s one core serving only this shard could do.
    pub bound_jobs_per_sec: f64,
    /// Script calls (EVALSHA/EVAL) per job of its own jobs.
    pub script_calls_per_job: f64,
    /// Blocking waits (BLPOP) per job of its own jobs.
    pub blocking_calls_per_job: f64,
}

/// One scenario on one deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Jobs handled.
    pub jobs: u64,
    /// Jobs per second, wall clock.
    pub jobs_per_sec: f64,
    /// Redis CPU µs per job, all masters together.
    pub redis_cpu_us_per_job: f64,
    /// CPU µs per job of the clients: this process for `enqueue`, the
    /// worker processes for `saturate`.
    pub client_cpu_us_per_job: f64,
    /// Sum of the shards' bounds: jobs/s with a core per shard.
    pub sum_of_shard_bounds: f64,
    /// Script calls per job, all masters together: fewer means bigger
    /// batches (group commit, complete-and-claim).
    pub script_calls_per_job: f64,
    /// Median enqueue call, ms (`enqueue` only).
    pub p50_ms: Option<f64>,
    /// 99th percentile enqueue call, ms (`enqueue` only).
    pub p99_ms: Option<f64>,
    /// Per shard.
    pub shards: Vec<ShardFigures>,
}

/// Both scenarios on one deployment.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentReport {
    /// `single`, `cluster`, `cluster+replicas` or `cluster+replicas WAIT`.
    pub deployment: String,
    /// Single enqueues.
    pub enqueue: Figures,
    /// Worker processes draining waiting jobs.
    pub saturate: Figures,
}

/// The whole scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Sizes.
    pub params: ClusterParams,
    /// Queues per master as the names hashed, before balancing.
    pub natural_placement: Vec<usize>,
    /// Slots moved to balance the queues over the masters.
    pub slots_moved: usize,
    /// The deployments, single server first.
    pub deployments: Vec<DeploymentReport>,
}

/// Where the measured queues live: the masters' INFO connections and which
/// queues each serves.
struct Shards {
    nodes: Vec<(String, MultiplexedConnection, Vec<String>)>,
}

impl Shards {
    async fn snapshots(&mut self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for (_, conn, _) in &mut self.nodes {
            out.push(Snapshot::take(conn).await?);
        }
        Ok(out)
    }

    async fn blocked(&mut self) -> Result<u64> {
        let mut sum = 0;
        for (_, conn, _) in &mut self.nodes {
            sum += blocked_clients(conn).await?;
        }
        Ok(sum)
    }

    /// Per-shard figures between two rounds of snapshots, for `per_queue`
    /// jobs on every queue.
    fn figures(
        &self,
        before: &[Snapshot],
        after: &[Snapshot],
        per_queue: u64,
        total: u64,
    ) -> Vec<ShardFigures> {
        self.nodes
            .iter()
            .zip(before.iter().zip(after))
            .map(|((node, _, queues), (b, a))| {
                let jobs = per_queue * queues.len() as u64;
                let cost = b.cost_until(a, jobs.max(1));
                let cpu_us = cost.redis_cpu_us_per_job;
                ShardFigures {
                    node: node.clone(),
                    queues: queues.len(),
                    jobs,
                    share: jobs as f64 / total.max(1) as f64,
                    redis_cpu_us_per_job: cpu_us,
                    bound_jobs_per_sec: if jobs == 0 { 0.0 } else { 1e6 / cpu_us.max(1e-9) },
                    script_calls_per_job: cost.evalsha_calls_per_job,
                    blocking_calls_per_job: a.blocking_calls.saturating_sub(b.blocking_calls) as f64
                        / jobs.max(1) as f64,
                }
            })
            .collect()
    }
}

/// Runs the scenario.
pub async fn run(
    params: &Params,
    cluster_params: &ClusterParams,
    worker_bin: &Path,
) -> Result<ClusterReport> {
    let names: Vec<String> = (0..cluster_params.queues).map(|i| format!("bench-cq-{i}")).collect();
    let masters = cluster_params.masters;
    let start = move |replicas: usize| {
        move || RedisCluster::builder().masters(masters).replicas_per_master(replicas).start()
    };
    let bare = std::sync::Arc::new(tokio::task::spawn_blocking(start(0)).await.context("start the cluster")?);
    let replicated =
        std::sync::Arc::new(tokio::task::spawn_blocking(start(1)).await.context("start the cluster")?);
    let natural = placement(&bare, &names).values().map(Vec::len).collect();
    let mut slots_moved = 0;
    for cluster in [&bare, &replicated] {
        let (cluster, names) = (cluster.clone(), names.clone());
        slots_moved = tokio::task::spawn_blocking(move || balance(&cluster, &names)).await?;
    }
    let single = RedisServer::start();

    let replicated_durability = Durability::Replicated { replicas: 1, timeout: Duration::from_secs(2) };
    let runs: [(&str, Option<&RedisCluster>, Durability); 4] = [
        ("single", None, Durability::Primary),
        ("cluster", Some(&bare), Durability::Primary),
        ("cluster+replicas", Some(&replicated), Durability::Primary),
        ("cluster+replicas WAIT", Some(&replicated), replicated_durability),
    ];
    let mut deployments = Vec::new();
    for (deployment, cluster, durability) in runs {
        eprintln!("taskline: cluster scenario, {deployment} ...");
        let (target, mut shards) = match cluster {
            None => {
                let conn = single.connection().await;
                let shards =
                    Shards { nodes: vec![(format!("127.0.0.1:{}", single.port()), conn, names.clone())] };
                (RedisTarget::server(single.url()), shards)
            }
            Some(cluster) => {
                (RedisTarget::cluster(cluster.seed_urls()), cluster_shards(cluster, &names).await?)
            }
        };
        let client = Client::builder_for(target.clone())
            .coalesce_calls(params.coalesce_calls)
            .durability(durability)
            .connect()
            .await?;
        let enqueue = measure_enqueue(&client, &names, params, &mut shards).await?;
        remove_queues(&mut shards).await?;
        let saturate = measure_saturate(
            &client,
            &target,
            durability,
            &names,
            params,
            cluster_params,
            worker_bin,
            &mut shards,
        )
        .await?;
        remove_queues(&mut shards).await?;
        deployments.push(DeploymentReport { deployment: deployment.into(), enqueue, saturate });
    }
    Ok(ClusterReport { params: cluster_params.clone(), natural_placement: natural, slots_moved, deployments })
}

/// Queue names by the master that serves them.
fn placement(cluster: &RedisCluster, names: &[String]) -> BTreeMap<usize, Vec<String>> {
    let mut by_master: BTreeMap<usize, Vec<String>> =
        cluster.masters().into_iter().map(|m| (m, Vec::new())).collect();
    for name in names {
        by_master.entry(cluster.master_of_key(format!("{{{name}}}"))).or_default().push(name.clone());
    }
    by_master
}

/// Moves queue slots from the fullest master to the emptiest until they
/// differ by at most one queue; returns the slots moved.
fn balance(cluster: &RedisCluster, names: &[String]) -> usize {
    let mut moved = 0;
    loop {
        let by_master = placement(cluster, names);
        let (fullest, most) =
            by_master.iter().max_by_key(|(_, q)| q.len()).map(|(m, q)| (*m, q.clone())).expect("masters");
        let (emptiest, least) =
            by_master.iter().min_by_key(|(_, q)| q.len()).map(|(m, q)| (*m, q.len())).expect("masters");
        if most.len() <= least + 1 {
            return moved;
        }
        let slot = hash_slot(format!("{{{}}}", most[0]).as_bytes());
        debug_assert_eq!(cluster.master_of_slot(slot), fullest);
        cluster.migrate_slot(slot, emptiest, Duration::ZERO);
        moved += 1;
    }
}

async fn cluster_shards(cluster: &RedisCluster, names: &[String]) -> Result<Shards> {
    let mut nodes = Vec::new();
    for (master, queues) in placement(cluster, names) {
        let node = cluster.node(master);
        nodes.push((format!("127.0.0.1:{}", node.port()), node.connection().await, queues));
    }
    Ok(Shards { nodes })
}

/// This process's CPU seconds, user and system.
fn own_cpu_seconds() -> f64 {
    fleet::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn job(params: &Params, name: &str) -> Result<NewJob> {
    let payload = serde_json::json!({ "data": "x".repeat(params.payload_bytes.saturating_sub(20)) });
    Ok(NewJob::new(name, &payload)?)
}

fn handler_name(queue: &str) -> String {
    format!("noop-{queue}")
}

async fn measure_enqueue(
    client: &Client,
    names: &[String],
    params: &Params,
    shards: &mut Shards,
) -> Result<Figures> {
    let tasks = params.concurrency.max(1) as usize;
    let per_queue = params.jobs / names.len() as u64;
    let total = per_queue * names.len() as u64;
    // Task t enqueues to queues t, t + tasks, ...: every queue gets
    // `per_queue` jobs, as evenly in time as the tasks run.
    let mut work: Vec<Vec<(String, NewJob)>> = vec![Vec::new(); tasks];
    for round in 0..per_queue as usize {
        for (q, name) in names.iter().enumerate() {
            let slot = (round * names.len() + q) % tasks;
            work[slot].push((name.clone(), job(params, &handler_name(name))?));
        }
    }
    let before = shards.snapshots().await?;
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for batch in work {
        let client = client.clone();
        set.spawn(async move {
            let mut latencies = Vec::with_capacity(batch.len());
            for (queue, job) in batch {
                let sent = Instant::now();
                client.enqueue(&queue, job).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = set.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = own_cpu_seconds() - cpu_before;
    let after = shards.snapshots().await?;
    latencies.sort();
    let pick =
        |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).map(|d| d.as_secs_f64() * 1e3);
    Ok(summarize(
        shards.figures(&before, &after, per_queue, total),
        total,
        seconds,
        client_cpu,
        pick(0.5),
        pick(0.99),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn measure_saturate(
    client: &Client,
    target: &RedisTarget,
    durability: Durability,
    names: &[String],
    params: &Params,
    cluster_params: &ClusterParams,
    worker_bin: &Path,
    shards: &mut Shards,
) -> Result<Figures> {
    let per_queue = params.jobs / names.len() as u64;
    let total = per_queue * names.len() as u64;
    for name in names {
        client.pause(name).await?;
        let template = job(params, &handler_name(name))?;
        let mut left = per_queue as usize;
        while left > 0 {
            let chunk = left.min(FILL_CHUNK);
            client.enqueue_bulk(name, vec![template.clone(); chunk]).await?;
            left -= chunk;
        }
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, worker_toml(target, durability, names, params))?;
    let processes = cluster_params.worker_processes.max(1);
    let blocked_before = shards.blocked().await?;
    let mut workers = Fleet::start(worker_bin, &config, dir.path(), processes)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while shards.blocked().await? < blocked_before + u64::from(processes) {
        workers.check_running()?;
        if Instant::now() > deadline {
            bail!("the workers did not become idle within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = shards.snapshots().await?;
    let cpu_before = workers.cpu_seconds();
    let started = Instant::now();
    for name in names {
        client.resume(name).await?;
    }
    loop {
        let mut done = 0;
        for name in names {
            done += client.queue_summary(name).await?.counter("completed");
        }
        if done >= total {
            break;
        }
        workers.check_running()?;
        if started.elapsed() > TIME_LIMIT {
            bail!("saturate did not finish in {TIME_LIMIT:?}: {done} of {total}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let workers_cpu = workers.cpu_seconds() - cpu_before;
    let after = shards.snapshots().await?;
    workers.stop().await?;
    Ok(summarize(shards.figures(&before, &after, per_queue, total), total, seconds, workers_cpu, None, None))
}

fn summarize(
    shards: Vec<ShardFigures>,
    jobs: u64,
    seconds: f64,
    client_cpu: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
) -> Figures {
    let redis_cpu_us: f64 = shards.iter().map(|s| s.redis_cpu_us_per_job * s.jobs as f64).sum();
    Figures {
        jobs,
        jobs_per_sec: jobs as f64 / seconds.max(1e-9),
        redis_cpu_us_per_job: redis_cpu_us / jobs.max(1) as f64,
        client_cpu_us_per_job: client_cpu.max(0.0) * 1e6 / jobs.max(1) as f64,
        sum_of_shard_bounds: shards.iter().map(|s| s.bound_jobs_per_sec).sum(),
        script_calls_per_job: shards.iter().map(|s| s.script_calls_per_job * s.jobs as f64).sum::<f64>()
            / jobs.max(1) as f64,
        p50_ms,
        p99_ms,
        shards,
    }
}

/// Workers that serve every queue, with the deployment's settings.
fn worker_toml(target: &RedisTarget, durability: Durability, names: &[String], params: &Params) -> String {
    let concurrency = params.concurrency.max(1);
    let mut text = format!("[redis]\ncoalesce_calls = {}\n", params.coalesce_calls);
    match target {
        RedisTarget::Cluster(c) => {
            let seeds: Vec<String> = c.nodes.iter().map(|u| format!("{u:?}")).collect();
            text += &format!("cluster = [{}]\n", seeds.join(", "));
        }
        RedisTarget::Server(url) => text += &format!("url = {url:?}\n"),
        RedisTarget::Sentinel(_) => unreachable!("the scenario runs no Sentinel"),
    }
    if let Durability::Replicated { replicas, timeout } = durability {
        text += &format!(
            "durability = \"replicated\"\nreplicas = {replicas}\nreplication_timeout = \"{}ms\"\n",
            timeout.as_millis()
        );
    }
    text += &format!(
        "[worker]\nconcurrency = {concurrency}\nclaim_batch = {}\nidle_wait = \"1s\"\n",
        concurrency.min(50)
    );
    for name in names {
        text += &format!(
            "[queues.\"{name}\"]\nconcurrency = {concurrency}\n[handlers.{}]\nqueue = \"{name}\"\nkind = \"simulate\"\n",
            handler_name(name)
        );
    }
    text
}

/// Deletes every key of the scenario's queues on every shard (between
/// scenarios, outside the timing). `DEL`, not `UNLINK`, so no freeing in
/// the background adds to the next measurement.
async fn remove_queues(shards: &mut Shards) -> Result<()> {
    for (_, conn, _) in &mut shards.nodes {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("taskline:{bench-cq-*")
                .arg("COUNT")
                .arg(1_000)
                .query_async(conn)
                .await?;
            // One key per DEL: on a cluster, keys of two slots may not share a command.
            for key in keys {
                let _: u64 = redis::cmd("DEL").arg(key).query_async(conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// The cluster scenario's table.
pub fn table(report: &ClusterReport) -> String {
    let mut out = format!(
        "cluster: {} masters, {} queues; names hashed {:?} queues per master, {} slot(s) moved to balance\n",
        report.params.masters, report.params.queues, report.natural_placement, report.slots_moved
    );
    out += &format!(
        "{:<20} {:<9} {:>10} {:>11} {:>12} {:>13} {:>9} {:>9}  {}\n",
        "deployment",
        "scenario",
        "jobs/s",
        "redis µs/j",
        "client µs/j",
        "Σ shard bound",
        "p50 ms",
        "p99 ms",
        "share per shard"
    );
    for d in &report.deployments {
        for (scenario, f) in [("enqueue", &d.enqueue), ("saturate", &d.saturate)] {
            let shares: Vec<String> = f
                .shards
                .iter()
                .map(|s| {
                    format!(
                        "{:.0}% @{:.1}µs {:.2}c {:.2}b",
                        s.share * 100.0,
                        s.redis_cpu_us_per_job,
                        s.script_calls_per_job,
                        s.blocking_calls_per_job
                    )
                })
                .collect();
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            out += &format!(
                "{:<22} {:<9} {:>9.0} {:>10.1} {:>11.1} {:>8.3} {:>13.0} {:>7} {:>7}  {}\n",
                d.deployment,
                scenario,
                f.jobs_per_sec,
                f.redis_cpu_us_per_job,
                f.client_cpu_us_per_job,
                f.script_calls_per_job,
                f.sum_of_shard_bounds,
                ms(f.p50_ms),
                ms(f.p99_ms),
                shares.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            jobs: 100,
            concurrency: 8,
            payload_bytes: 100,
            rate: 1,
            latency_seconds: 1,
            idle_seconds: 1,
            idle_queues: 1,
            worker_processes: vec![1],
            rss_jobs: 1,
            redis_benchmark_requests: 1,
            coalesce_calls: false,
        }
    }

    #[test]
    fn the_workers_config_serves_every_queue_on_the_deployment_with_its_durability() {
        let names = vec!["bench-cq-0".to_string(), "bench-cq-1".to_string()];
        let target = RedisTarget::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        let durability = Durability::Replicated { replicas: 1, timeout: Duration::from_secs(2) };
        let text = worker_toml(&target, durability, &names, &params());
        let config = taskline_worker::Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.redis.cluster.len(), 2);
        assert_eq!(config.redis.client_durability(), durability);
        assert!(!config.redis.coalesce_calls);
        assert_eq!(config.queues.len(), 2);
        assert_eq!(config.handlers["noop-bench-cq-1"].queue, "bench-cq-1");

        let single =
            worker_toml(&RedisTarget::server("redis://127.0.0.1:1"), Durability::Primary, &names, &params());
        let config = taskline_worker::Config::from_toml_str(&single).expect("single-server config");
        assert_eq!(config.redis.url, "redis://127.0.0.1:1");
        assert!(config.redis.cluster.is_empty());
    }
}
