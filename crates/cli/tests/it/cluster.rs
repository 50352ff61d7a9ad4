//! The `taskline` binary on a real Redis Cluster (3 masters with a replica
//! each) and behind Sentinel: the same commands, plus the node that serves
//! each queue.

use std::collections::BTreeSet;

use serde_json::json;
use taskline::{Client, Failure, NewJob, RedisTarget};
use taskline_testkit::{RedisCluster, SentinelSet};

use crate::support::{Run, binary};

/// Runs the binary with `args` and no REDIS_URL.
fn run(args: &[&str]) -> Run {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("TASKLINE_CLUSTER")
        .env_remove("TASKLINE_SENTINELS")
        .env_remove("TASKLINE_PREFIX")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run taskline");
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_a_cluster_and_queues_name_their_node() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster");
    // Two queues on different masters.
    let mut queues = Vec::new();
    for n in 0.. {
        let name = format!("cli-q{n}");
        let owner = cluster.master_of_key(format!("{{{name}}}"));
        if queues.iter().all(|(o, _)| *o != owner) {
            queues.push((owner, name));
        }
        if queues.len() == 2 {
            break;
        }
    }
    let client =
        Client::builder_for(RedisTarget::cluster(cluster.seed_urls())).connect().await.expect("connect");
    for (_, q) in &queues {
        client.enqueue(q, NewJob::new("work", &json!({"n": 1})).expect("job")).await.expect("enqueue");
        client.enqueue(q, NewJob::new("doomed", &json!({"n": 2})).expect("job")).await.expect("enqueue");
        let claimed = client.claim(q, &crate::support::claim_options(2)).await.expect("claim");
        let doomed = claimed.jobs.iter().find(|j| j.facts.name == "doomed").expect("doomed");
        client.fail(&doomed.lease, &Failure::permanent("bad input")).await.expect("fail");
    }
    let seeds = cluster.seed_urls().join(",");

    let listed = run(&["--cluster", &seeds, "--json", "queues"]).ok().json();
    let rows = listed.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{listed}");
    let mut nodes = BTreeSet::new();
    for (owner, q) in &queues {
        let row = rows.iter().find(|r| r["queue"] == q.as_str()).expect("queue row");
        let port = cluster.node(*owner).port();
        assert_eq!(row["node"], format!("127.0.0.1:{port}"), "{row}");
        nodes.insert(row["node"].to_string());
    }
    assert_eq!(nodes.len(), 2, "the queues are on different nodes");
    let table = run(&["--cluster", &seeds, "queues"]).ok();
    assert!(table.stdout.contains("NODE"), "{}", table.stdout);

    for (_, q) in &queues {
        let dead = run(&["--cluster", &seeds, "--json", "dlq", "list", q]).ok().json();
        assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
        run(&["--cluster", &seeds, "doctor", q]).ok();
        let events = run(&["--cluster", &seeds, "events", q, "--count", "3"]).ok();
        assert!(events.stdout.contains("dead"), "{}", events.stdout);
        run(&["--cluster", &seeds, "dlq", "replay", q, "--all"]).ok();
        assert_eq!(client.counts(q).await.expect("counts").dead, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_primary_through_the_sentinels() {
    let set = tokio::task::spawn_blocking(|| SentinelSet::builder().replicas(1).start()).await.expect("set");
    let client = Client::builder_for(RedisTarget::sentinel(set.sentinel_urls(), set.master_name()))
        .connect()
        .await
        .expect("connect");
    client.enqueue("jobs", NewJob::new("work", &json!({})).expect("job")).await.expect("enqueue");
    let sentinels = set.sentinel_urls().join(",");
    let listed =
        run(&["--sentinels", &sentinels, "--master-name", set.master_name(), "--json", "queues"]).ok().json();
    assert_eq!(listed[0]["queue"], "jobs");
    assert_eq!(listed[0]["node"], format!("127.0.0.1:{}", set.primary().port()));

    let missing = run(&["--sentinels", &sentinels, "queues"]).code(2);
    assert!(missing.stderr.contains("--master-name"), "{}", missing.stderr);
    let wrong = run(&["--sentinels", &sentinels, "--master-name", "nope", "queues"]).code(1);
    assert!(wrong.stderr.contains("\"nope\""), "{}", wrong.stderr);
}
