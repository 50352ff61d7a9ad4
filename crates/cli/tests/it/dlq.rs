//! `taskline dlq list | show | replay | purge`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskline::{JobId, JobState, NewJob};

use crate::support::{
    Env, assert_sound, claim_options, cmd, events, job_exists, key, members, meta_counter, sorted,
};

/// Moves the death of `id` back by `ago` (zset score and `finished_at`).
async fn died_ago(env: &Env, queue: &str, id: &JobId, ago: Duration) {
    let at = (SystemTime::now() - ago).duration_since(UNIX_EPOCH).expect("epoch").as_millis().to_string();
    let mut conn = env.raw().await;
    let _: i64 = cmd(&mut conn, &["ZADD", &key(queue, "dead"), "XX", &at, id.as_str()]).await;
    let _: i64 = cmd(&mut conn, &["HSET", &key(queue, &format!("job:{id}")), "finished_at", &at]).await;
}

/// Ids of the JSON array of jobs on stdout.
fn ids_of(json: &serde_json::Value) -> Vec<String> {
    json.as_array().expect("array").iter().map(|j| j["id"].as_str().expect("id").to_string()).collect()
}

/// `n` dead jobs named `bulk`, made in a few round trips.
async fn dead_many(env: &Env, queue: &str, n: usize) -> Vec<JobId> {
    let jobs =
        (0..n).map(|i| NewJob::new("bulk", &json!({ "i": i }))).collect::<Result<Vec<_>, _>>().expect("jobs");
    env.client.enqueue_bulk(queue, jobs).await.expect("enqueue");
    let claim = env.client.claim(queue, &claim_options(n as u32)).await.expect("claim");
    assert_eq!(claim.jobs.len(), n);
    for job in &claim.jobs {
        env.client.fail(&job.lease, &taskline::Failure::permanent("bulk failure")).await.expect("fail");
    }
    claim.jobs.into_iter().map(|j| j.lease.job_id).collect()
}

#[tokio::test]
async fn list_filters_by_name_error_text_and_time_of_death() {
    let env = Env::start().await;
    let ids = env
        .dead(
            "emails",
            &[("send", "SMTP timeout"), ("send", "bad address"), ("digest", "Bad Address format")],
        )
        .await;
    let (old, bad, digest) = (&ids[0], &ids[1], &ids[2]);
    died_ago(&env, "emails", old, Duration::from_secs(2 * 3600)).await;

    let run = env.run(&["dlq", "list", "emails"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("DIED") && lines[0].contains("REASON"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with(old.as_str())
            && lines[1].contains("permanent")
            && lines[1].contains("SMTP timeout")
    );
    assert!(lines[2].starts_with(bad.as_str()) && lines[2].contains("bad address"));
    assert!(lines[3].starts_with(digest.as_str()));
    assert_eq!(lines[4], "(3 dead jobs)");

    let list = |args: &[&str]| {
        let mut all = vec!["dlq", "list", "emails", "--json"];
        all.extend_from_slice(args);
        ids_of(&env.run(&all).ok().json())
    };
    assert_eq!(list(&["--name", "send"]), [old.to_string(), bad.to_string()]);
    assert_eq!(list(&["--error-contains", "BAD ADDRESS"]), [bad.to_string(), digest.to_string()]);
    assert_eq!(list(&["--error-contains", "permanent"]).len(), 3, "the reason it died matches too");
    assert_eq!(list(&["--since", "1h"]), [bad.to_string(), digest.to_string()]);
    assert_eq!(list(&["--since", "3h"]).len(), 3);
    assert_eq!(list(&["--since", "2000-01-01T00:00:00Z"]).len(), 3);
    assert_eq!(list(&["--since", "2999-01-01T00:00:00+02:00"]).len(), 0);
    assert_eq!(list(&["--name", "send", "--since", "1h"]), [bad.to_string()]);

    let run = env.run(&["dlq", "list", "emails", "--limit", "1"]).ok();
    assert!(run.stdout.contains("(showing 1 of 3 dead jobs; --limit 0 shows all)"), "{}", run.stdout);
    let run = env.run(&["dlq", "list", "emails", "--name", "send", "--limit", "1"]).ok();
    assert!(run.stdout.contains("(showing 1 of 2 matching dead jobs;"), "{}", run.stdout);
    let run = env.run(&["dlq", "list", "emails", "--name", "nope"]).ok();
    assert_eq!(run.stdout.trim(), "no dead jobs match in queue emails");
    let run = env.run(&["dlq", "list", "emails", "--since", "yesterday"]).code(2);
    assert!(run.stderr.contains("invalid --since \"yesterday\""), "{}", run.stderr);
}

#[tokio::test]
async fn show_prints_a_dead_job_and_refuses_others() {
    let env = Env::start().await;
    let dead = env.dead("emails", &[("send", "bad address")]).await.remove(0);
    let ready = env.ready("emails", "send", json!({})).await;

    let run = env.run(&["dlq", "show", "emails", dead.as_str()]).ok();
    assert!(run.stdout.contains("dead (permanent)") && run.stdout.contains("bad address"), "{}", run.stdout);
    let json = env.run(&["dlq", "show", "emails", dead.as_str(), "--json"]).ok().json();
    assert_eq!((json["state"].as_str(), json["dead_reason"].as_str()), (Some("dead"), Some("permanent")));
    assert_eq!(json["errors"][0]["message"], "bad address");

    let run = env.run(&["dlq", "show", "emails", ready.as_str()]).code(1);
    assert!(run.stderr.contains("is ready, not in the dead letter queue"), "{}", run.stderr);
    let run = env.run(&["dlq", "show", "emails", "no-such-job"]).code(1);
    assert!(run.stderr.contains("job no-such-job not found in queue emails"), "{}", run.stderr);
}

#[tokio::test]
async fn replay_of_a_filtered_subset_replays_exactly_that_subset() {
    let env = Env::start().await;
    let ids = env
        .dead(
            "emails",
            &[
                ("a", "timeout talking to smtp"),
                ("a", "bad address"),
                ("b", "timeout"),
                ("a", "Timeout again"),
                ("b", "x"),
            ],
        )
        .await;
    let subset = [ids[0].to_string(), ids[3].to_string()];

    let run = env.run(&["dlq", "replay", "emails", "--name", "a", "--error-contains", "timeout"]).ok();
    assert_eq!(run.stdout.trim(), "replayed 2 dead jobs from queue emails");
    assert!(run.stderr.contains("replay queue=emails replayed=2 not_dead=0"), "audit line: {}", run.stderr);

    let ready: Vec<String> = env
        .client
        .list_jobs("emails", JobState::Ready, 0, 100)
        .await
        .expect("ready")
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(sorted(&ready), sorted(subset.iter()));
    assert_eq!(sorted(members(&env, "emails", "dead").await), sorted([&ids[1], &ids[2], &ids[4]]));
    for id in [&ids[0], &ids[3]] {
        let job = env.client.get_job("emails", id).await.expect("job");
        assert_eq!((job.state, job.facts.attempt, job.replays), (JobState::Ready, 0, 1));
        assert_eq!(job.errors.len(), 1, "history kept");
        assert_eq!(job.last_dead_reason.as_deref(), Some("permanent"));
        assert!(job.replayed_at.is_some());
    }
    assert_eq!(meta_counter(&env, "emails", "replayed").await, 2);
    let replayed: Vec<String> =
        events(&env, "emails").await.into_iter().filter(|(e, _)| e == "replayed").map(|(_, id)| id).collect();
    assert_eq!(sorted(replayed), sorted(subset.iter()));
    assert_sound(&env, "emails").await;
}

#[tokio::test]
async fn replay_by_id_reports_ids_that_are_not_dead_and_exits_1() {
    let env = Env::start().await;
    let dead = env.dead("emails", &[("send", "boom")]).await.remove(0);
    let ready = env.ready("emails", "send", json!({})).await;

    let run =
        env.run(&["dlq", "replay", "emails", dead.as_str(), ready.as_str(), "missing-id", "--json"]).code(1);
    assert_eq!(
        run.json(),
        json!({"replayed": 1, "queue": "emails", "not_dead": [ready.as_str(), "missing-id"]})
    );
    assert!(
        run.stderr.contains(&format!("left alone: {ready} (ready), missing-id (no such job)")),
        "{}",
        run.stderr
    );
    assert_eq!(env.client.get_job("emails", &dead).await.expect("job").state, JobState::Ready);
    assert_eq!(env.client.counts("emails").await.expect("counts").dead, 0);

    let run = env.run(&["dlq", "replay", "emails"]).code(2);
    assert!(run.stderr.contains("say which dead jobs"), "{}", run.stderr);
    let run = env.run(&["dlq", "replay", "emails", dead.as_str(), "--all"]).code(2);
    assert!(run.stderr.contains("not a mix"), "{}", run.stderr);
}

#[tokio::test]
async fn purge_without_confirmation_changes_nothing() {
    let env = Env::start().await;
    let ids = env.dead("emails", &[("send", "a"), ("send", "b")]).await;
    let events_before = events(&env, "emails").await;

    for args in [
        &["dlq", "purge", "emails", "--all"][..],
        &["dlq", "purge", "emails", "--name", "send"],
        &["dlq", "purge", "emails", ids[0].as_str()],
    ] {
        let run = env.run(args).code(2);
        assert!(run.stderr.contains("refusing to purge"), "{}", run.stderr);
        assert!(run.stderr.contains("pass --yes"), "{}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    assert_eq!(sorted(members(&env, "emails", "dead").await), sorted(&ids));
    for id in &ids {
        assert!(job_exists(&env, "emails", id.as_str()).await);
    }
    assert_eq!(events(&env, "emails").await, events_before, "no event either");
    assert_eq!(meta_counter(&env, "emails", "purged").await, 0);
}

#[tokio::test]
async fn purge_with_yes_removes_the_selected_dead_jobs_and_logs_it() {
    let env = Env::start().await;
    let ids =
        env.dead("emails", &[("send", "bad address"), ("send", "timeout"), ("digest", "bad address")]).await;
    let ready = env.ready("emails", "send", json!({})).await;

    let run = env.run(&["dlq", "purge", "emails", "--error-contains", "bad address", "--yes"]).ok();
    assert_eq!(run.stdout.trim(), "purged 2 dead jobs from queue emails");
    assert!(
        run.stderr.contains("purge queue=emails purged=2 not_dead=0 user="),
        "audit line: {}",
        run.stderr
    );

    assert_eq!(members(&env, "emails", "dead").await, [ids[1].as_str()]);
    assert!(!job_exists(&env, "emails", ids[0].as_str()).await);
    assert!(!job_exists(&env, "emails", ids[2].as_str()).await);
    assert!(job_exists(&env, "emails", ids[1].as_str()).await);
    assert_eq!(meta_counter(&env, "emails", "purged").await, 2);
    let purged: Vec<String> =
        events(&env, "emails").await.into_iter().filter(|(e, _)| e == "purged").map(|(_, id)| id).collect();
    assert_eq!(sorted(purged), sorted([&ids[0], &ids[2]]));

    // By id, JSON: a job that is not dead is left alone, exit 1.
    let run =
        env.run(&["dlq", "purge", "emails", ids[1].as_str(), ready.as_str(), "--yes", "--json"]).code(1);
    assert_eq!(run.json(), json!({"purged": 1, "queue": "emails", "not_dead": [ready.as_str()]}));
    assert!(job_exists(&env, "emails", ready.as_str()).await, "a ready job is never purged");
    assert_eq!(env.client.counts("emails").await.expect("counts").dead, 0);
    assert_sound(&env, "emails").await;
}

#[tokio::test]
async fn replay_and_purge_of_large_sets_work_in_chunks() {
    let env = Env::start().await;
    let ids = dead_many(&env, "bulk", 2_500).await;
    let keep = env.dead("bulk", &[("other", "kept")]).await.remove(0);

    let json = env.run(&["dlq", "replay", "bulk", "--name", "bulk", "--json"]).ok().json();
    assert_eq!(json, json!({"replayed": 2500, "queue": "bulk", "not_dead": []}));
    let counts = env.client.counts("bulk").await.expect("counts");
    assert_eq!((counts.ready, counts.dead), (2_500, 1));
    assert_eq!(members(&env, "bulk", "dead").await, [keep.as_str()]);

    // Kill them again, then purge every dead job.
    let claim = env.client.claim("bulk", &claim_options(2_500)).await.expect("claim");
    for job in &claim.jobs {
        env.client.fail(&job.lease, &taskline::Failure::permanent("again")).await.expect("fail");
    }
    let json = env.run(&["dlq", "purge", "bulk", "--all", "--yes", "--json"]).ok().json();
    assert_eq!(json, json!({"purged": 2501, "queue": "bulk", "not_dead": []}));
    assert_eq!(env.client.counts("bulk").await.expect("counts").dead, 0);
    let left: Vec<String> = cmd(&mut env.raw().await, &["KEYS", &key("bulk", "job:*")]).await;
    assert!(left.is_empty(), "{} job hashes left", left.len());
    assert_eq!(meta_counter(&env, "bulk", "purged").await, 2_501);
    let _ = ids;
}
