//! `taskline pause | resume | drain`.

use std::time::Duration;

use serde_json::json;
use taskline::{JobState, NewJob, UniqueMode};

use crate::support::{
    Env, assert_sound, claim_options, cmd, events, job_exists, key, members, meta_counter, sorted,
};

#[tokio::test]
async fn pause_and_resume_set_the_flag_workers_obey() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;

    let run = env.run(&["pause", "emails"]).ok();
    assert!(run.stdout.starts_with("paused queue emails"), "{}", run.stdout);
    assert!(run.stderr.contains("pause queue=emails"), "audit line: {}", run.stderr);
    assert!(env.client.counts("emails").await.expect("counts").paused);
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    assert!(claim.paused && claim.jobs.is_empty(), "a paused queue leases nothing");

    let json = env.run(&["resume", "emails", "--json"]).ok().json();
    assert_eq!(json, json!({"queue": "emails", "paused": false}));
    assert!(!env.client.counts("emails").await.expect("counts").paused);
    assert_eq!(env.client.claim("emails", &claim_options(1)).await.expect("claim").jobs.len(), 1);

    let run = env.run(&["pause", "emials"]).code(1);
    assert!(run.stderr.contains("unknown queue \"emials\""), "{}", run.stderr);
    let paused: Option<String> = cmd(&mut env.raw().await, &["HGET", &key("emials", "meta"), "paused"]).await;
    assert_eq!(paused, None, "a typo creates nothing");
}

#[tokio::test]
async fn drain_removes_ready_jobs_only_and_asks_first() {
    let env = Env::start().await;
    let dead = env.dead("emails", &[("send", "boom")]).await.remove(0);
    let active = env.ready("emails", "send", json!({"n": "active"})).await;
    env.client.claim("emails", &claim_options(1)).await.expect("claim");
    let later = NewJob::new("send", &json!({})).expect("job").delay(Duration::from_secs(600));
    let delayed = env.client.enqueue("emails", later).await.expect("enqueue");
    let unique =
        NewJob::new("send", &json!({})).expect("job").unique("u1", UniqueMode::UntilFinished).priority(5);
    let mut ready = vec![env.client.enqueue("emails", unique).await.expect("enqueue")];
    ready.push(env.ready("emails", "send", json!({"n": 1})).await);
    ready.push(env.ready("emails", "send", json!({"n": 2})).await);

    // No terminal, no --yes: refused, nothing changed.
    let run = env.run(&["drain", "emails"]).code(2);
    assert!(
        run.stderr.contains("refusing to delete 3 ready jobs from queue emails without confirmation"),
        "{}",
        run.stderr
    );
    assert_eq!(env.client.counts("emails").await.expect("counts").ready, 3);

    let run = env.run(&["drain", "emails", "--yes"]).ok();
    assert_eq!(run.stdout.trim(), "drained 3 ready jobs from queue emails");
    assert!(run.stderr.contains("drain queue=emails drained=3 skipped=0"), "audit line: {}", run.stderr);

    let counts = env.client.counts("emails").await.expect("counts");
    assert_eq!((counts.ready, counts.delayed, counts.active, counts.dead), (0, 1, 1, 1));
    for id in &ready {
        assert!(!job_exists(&env, "emails", id.as_str()).await, "hash of {id} deleted");
    }
    for (id, state) in [(&dead, JobState::Dead), (&active, JobState::Active), (&delayed, JobState::Delayed)] {
        assert_eq!(env.client.get_job("emails", id).await.expect("kept").state, state);
    }
    let lock: Option<String> = cmd(&mut env.raw().await, &["GET", &key("emails", "unique:u1")]).await;
    assert_eq!(lock, None, "the drained job's unique key is free again");
    assert_eq!(meta_counter(&env, "emails", "drained").await, 3);
    let drained: Vec<String> =
        events(&env, "emails").await.into_iter().filter(|(e, _)| e == "drained").map(|(_, id)| id).collect();
    assert_eq!(sorted(drained), sorted(&ready));
    assert_sound(&env, "emails").await;

    let json = env.run(&["drain", "emails", "--json"]).ok().json();
    assert_eq!(
        json,
        json!({"queue": "emails", "drained": 0, "skipped": 0}),
        "nothing to drain needs no confirmation"
    );
}

#[tokio::test]
async fn drain_of_many_ready_jobs_works_in_batches() {
    let env = Env::start().await;
    let jobs = (0..2_345)
        .map(|i| NewJob::new("bulk", &json!({ "i": i })))
        .collect::<Result<Vec<_>, _>>()
        .expect("jobs");
    env.client.enqueue_bulk("bulk", jobs).await.expect("enqueue");
    let json = env.run(&["drain", "bulk", "--yes", "--json"]).ok().json();
    assert_eq!(json["drained"], 2_345);
    assert_eq!(env.client.counts("bulk").await.expect("counts").ready, 0);
    let left: Vec<String> = cmd(&mut env.raw().await, &["KEYS", &key("bulk", "job:*")]).await;
    assert!(left.is_empty(), "{} job hashes left", left.len());
    assert!(members(&env, "bulk", "levels").await.is_empty());
}
