//! `taskline-worker` processes on a real 3-master Redis Cluster while a
//! master is SIGKILLed mid-run and its replica takes over: with
//! `replicated` durability every acknowledged job is accounted for; with
//! the default, the test records how many acknowledged enqueues were lost.
//! Producers and workers recover unaided.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskline::{Client, Durability, JobId, JobState, NewJob, RedisTarget};
use taskline_testkit::{RedisCluster, WorkerProcess};

use crate::support::{Produced, enqueue_until_acknowledged, eventually, worker_binary};

const JOBS: usize = 600;
/// Acknowledged writes may stall this long around the failover: the node
/// timeout (1 s), the replica's election, the restart of the killed node
/// as the new master's replica (with `replicated` durability nothing can
/// be confirmed before that), and slack for a loaded machine.
const RECOVERY: Duration = Duration::from_secs(15);

/// Six queues, two on each master.
fn queues(cluster: &RedisCluster) -> Vec<String> {
    let mut per_master: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for n in 0.. {
        let name = format!("e2e-q{n}");
        let owner = cluster.master_of_key(format!("{{{name}}}"));
        let list = per_master.entry(owner).or_default();
        if list.len() < 2 {
            list.push(name);
        }
        if per_master.len() == 3 && per_master.values().all(|l| l.len() == 2) {
            break;
        }
    }
    per_master.into_values().flatten().collect()
}

fn worker_config(cluster: &RedisCluster, queues: &[String], durability: &str) -> String {
    let seeds: Vec<String> = cluster.seed_urls().iter().map(|u| format!("{u:?}")).collect();
    let mut text = format!(
        "[redis]\ncluster = [{}]\ndurability = \"{durability}\"\nreplicas = 1\nreplication_timeout = \"500ms\"\n\
         [worker]\nconcurrency = 12\nlease = \"5s\"\nreap_interval = \"1s\"\nidle_wait = \"2s\"\nshutdown_timeout = \"5s\"\n",
        seeds.join(", ")
    );
    for q in queues {
        text += &format!(
            "[queues.{q}]\nmax_attempts = 20\n[queues.{q}.retention]\nkeep_last = 100000\nmax_age = \"none\"\n\
             [handlers.work-{q}]\nqueue = \"{q}\"\nkind = \"simulate\"\n"
        );
    }
    text
}

/// What a run found.
struct Outcome {
    acknowledged: usize,
    lost: Vec<JobId>,
    produced: Produced,
}

/// Runs the scenario with `durability` for producers and workers.
async fn run(durability: &str) -> Outcome {
    let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster"));
    let queues = queues(&cluster);
    let victim_queue = queues[0].clone();
    let victim = cluster.master_of_key(format!("{{{victim_queue}}}"));
    let client_durability = match durability {
        "replicated" => Durability::Replicated { replicas: 1, timeout: Duration::from_millis(500) },
        _ => Durability::Primary,
    };
    let producer = Client::builder_for(RedisTarget::cluster(cluster.seed_urls()))
        .durability(client_durability)
        .connect()
        .await
        .expect("producer");

    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, worker_config(&cluster, &queues, durability)).expect("config");
    let binary = worker_binary();
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn(&binary, &config, &dir.path().join(format!("worker-{i}.log"))))
        .collect();

    let mut produced = Produced::default();
    let mut killer = None;
    for i in 0..JOBS {
        let q = &queues[i % queues.len()];
        let name = format!("work-{q}");
        let job = NewJob::new(name, &json!({ "sleep_ms": 5 })).expect("job");
        let id = JobId::new(format!("job-{i}")).expect("id");
        enqueue_until_acknowledged(&producer, q, job, &id, RECOVERY * 2, &mut produced).await;
        if i == JOBS / 3 {
            // Mid-run: SIGKILL the victim's master; its replica takes over,
            // then the killed node comes back as the new master's replica.
            let cluster = cluster.clone();
            killer = Some(tokio::task::spawn_blocking(move || {
                let promoted = cluster.kill_master(victim);
                cluster.restart_node(victim);
                promoted
            }));
        }
        // About 9 s of producing, so the failover falls in the middle.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let promoted = killer.expect("the kill ran").await.expect("failover");
    assert_ne!(promoted, victim);
    // The producer met the failover: a write to the victim's queue waited
    // for the replica's promotion (the node timeout is 1 s).
    let stalled = produced.longest_outage.get(&victim_queue).copied().unwrap_or_default();
    assert!(stalled > Duration::from_millis(500), "the producer never met the failover ({stalled:?})");
    assert_eq!(cluster.master_of_key(format!("{{{victim_queue}}}")), promoted);

    // Every job that exists ends completed; the workers recover unaided.
    let observer =
        Client::builder_for(RedisTarget::cluster(cluster.seed_urls())).connect().await.expect("observer");
    eventually("every queue drains", Duration::from_secs(120), || async {
        let mut idle = true;
        for q in &queues {
            match observer.counts(q).await {
                Ok(c) => idle &= c.ready + c.delayed + c.active == 0,
                Err(_) => idle = false,
            }
        }
        idle
    })
    .await;
    let mut lost = Vec::new();
    for (q, ids) in &produced.acked {
        for chunk in ids.chunks(500) {
            let jobs = observer.get_jobs(q, chunk).await.expect("get_jobs");
            for (id, job) in chunk.iter().zip(jobs) {
                match job {
                    Some(job) => {
                        assert_eq!(job.state, JobState::Completed, "job {id} in {q}: {:?}", job.state)
                    }
                    None => lost.push(id.clone()),
                }
            }
        }
        let report = observer.check_queue(q).await.expect("check_queue");
        assert!(report.is_sound(), "queue {q} after the failover: {:?}", report.violations);
    }
    for mut worker in workers {
        worker.signal("TERM");
        let status = worker.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "worker exited with {status}:\n{}", worker.log_text());
    }
    let acknowledged = produced.acked.values().map(Vec::len).sum();
    Outcome { acknowledged, lost, produced }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_loses_no_acknowledged_job_when_a_master_dies() {
    let outcome = run("replicated").await;
    assert_eq!(outcome.acknowledged, JOBS);
    assert!(outcome.lost.is_empty(), "acknowledged jobs lost: {:?}", outcome.lost);
    for (q, outage) in &outcome.produced.longest_outage {
        assert!(*outage < RECOVERY, "writes to {q} stalled {outage:?}");
    }
    eprintln!(
        "replicated: {} acknowledged, 0 lost, {} resends, longest outage {:?}",
        outcome.acknowledged, outcome.produced.resends, outcome.produced.longest_outage
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_durability_records_what_a_dead_master_took_with_it() {
    let outcome = run("primary").await;
    assert_eq!(outcome.acknowledged, JOBS);
    for (q, outage) in &outcome.produced.longest_outage {
        assert!(*outage < RECOVERY, "writes to {q} stalled {outage:?}");
    }
    // Asynchronous replication: what the primary acknowledged in its last
    // moments may be gone. Recorded, not hidden; invariants hold either way
    // (checked in `run`).
    eprintln!(
        "primary: {} acknowledged, {} lost with the killed master ({:?}), {} resends, longest wait {:?}",
        outcome.acknowledged,
        outcome.lost.len(),
        outcome.lost,
        outcome.produced.resends,
        outcome.produced.longest_outage
    );
    assert!(outcome.lost.len() < JOBS / 6, "far more lost than one replication window: {:?}", outcome.lost);
}
