//! `taskline doctor QUEUE [--repair]`: a queue corrupted on purpose in every
//! way the checker knows, reported with exit 3, repaired, checked clean, and
//! its jobs then run to the end.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use taskline::{Group, JobState, NewJob};

use crate::support::{Env, assert_sound, claim_options, cmd, events, key, members};

/// Every `(kind, job_id or level)` in a JSON list of violations.
fn kinds(list: &Value) -> BTreeSet<(String, String)> {
    list.as_array()
        .expect("a list of violations")
        .iter()
        .map(|v| {
            let subject = v["job_id"]
                .as_str()
                .or(v["level"].as_str())
                .or(v["group"].as_str())
                .expect("job, level or group");
            (v["kind"].as_str().expect("kind").to_string(), subject.to_string())
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(k, s)| (k.to_string(), s.to_string())).collect()
}

#[tokio::test]
async fn a_sound_queue_passes_and_an_unknown_one_is_an_error() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    let run = env.run(&["doctor", "emails"]).ok();
    assert_eq!(run.stdout.trim(), "queue emails is sound: 1 job, each in exactly one place");
    let json = env.run(&["doctor", "emails", "--json"]).ok().json();
    assert_eq!(json, json!({"queue": "emails", "jobs": 1, "sound": true, "violations": []}));

    let run = env.run(&["doctor", "emials"]).code(1);
    assert!(run.stderr.contains("unknown queue \"emials\""), "{}", run.stderr);
    let run = crate::support::run_at("redis://127.0.0.1:1", &["doctor", "emails"], None).code(1);
    assert!(run.stderr.contains("cannot reach Redis"), "{}", run.stderr);
}

#[tokio::test]
async fn every_kind_of_corruption_is_reported_repaired_and_its_jobs_then_run() {
    let env = Env::start().await;
    let q = "repairs";
    let mut raw = env.raw().await;

    // One job in each state, made through the protocol.
    let dead = env.dead(q, &[("send", "boom")]).await.remove(0);
    let completed = env.ready(q, "send", json!({"n": "completed"})).await;
    let claim = env.client.claim(q, &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    let active = env.ready(q, "send", json!({"n": "active"})).await;
    env.client.claim(q, &claim_options(1)).await.expect("claim");
    let ready = env.ready(q, "send", json!({"n": "ready"})).await;
    let mismatched = env.ready(q, "send", json!({"n": "mismatched"})).await;
    let high = NewJob::new("send", &json!({"n": "high"})).expect("job").priority(5);
    let high = env.client.enqueue(q, high).await.expect("enqueue");
    let later = NewJob::new("send", &json!({"n": "delayed"})).expect("job").delay(Duration::from_secs(600));
    let delayed = env.client.enqueue(q, later).await.expect("enqueue");
    assert_sound(&env, q).await;

    // Corrupt: five hashes no structure lists, two entries without a hash,
    // a hidden ready level, a state that disagrees with its structure.
    let zrem = |set: &str, id: &str| vec!["ZREM".to_string(), key(q, set), id.to_string()];
    for args in [
        vec!["LREM".to_string(), key(q, "ready:0"), "0".into(), ready.to_string()],
        zrem("delayed", delayed.as_str()),
        zrem("active", active.as_str()),
        zrem("completed", completed.as_str()),
        zrem("dead", dead.as_str()),
        vec!["ZADD".into(), key(q, "delayed"), "1".into(), "ghost-delayed".into()],
        vec!["LPUSH".into(), key(q, "ready:0"), "ghost-ready".into()],
        vec!["ZREM".into(), key(q, "levels"), "5".into()],
        vec!["HSET".into(), key(q, &format!("job:{mismatched}")), "state".into(), "delayed".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _: redis::Value = cmd(&mut raw, &args).await;
    }
    let expected = pairs(&[
        ("unlisted", ready.as_str()),
        ("unlisted", delayed.as_str()),
        ("unlisted", active.as_str()),
        ("unlisted", completed.as_str()),
        ("unlisted", dead.as_str()),
        ("missing_hash", "ghost-delayed"),
        ("missing_hash", "ghost-ready"),
        ("hidden_ready_level", "5"),
        ("state_mismatch", mismatched.as_str()),
    ]);

    // Reported, human and JSON, with exit 3; nothing changed.
    let run = env.run(&["doctor", q]).code(3);
    for (kind, subject) in &expected {
        let line = run.stdout.lines().find(|l| l.starts_with(kind.as_str()) && l.contains(subject.as_str()));
        assert!(line.is_some(), "no line for {kind} {subject}:\n{}", run.stdout);
    }
    assert!(run.stderr.contains(&format!("queue {q} breaks 9 invariant(s)")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("taskline doctor {q} --repair")), "{}", run.stderr);
    let json = env.run(&["doctor", q, "--json"]).code(3).json();
    assert_eq!(json["sound"], false);
    assert_eq!(kinds(&json["violations"]), expected);
    assert_eq!(
        env.client.check_queue(q).await.expect("check").violations.len(),
        9,
        "a check changes nothing"
    );

    // Repaired, every one, in one run.
    let run = env.run(&["doctor", q, "--repair", "--json"]).ok();
    assert!(
        run.stderr.contains(&format!("doctor-repair queue={q} repaired=9 remaining=0")),
        "{}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(kinds(&json["violations"]), expected);
    let repairs = json["repairs"].as_array().expect("repairs");
    assert_eq!(repairs.len(), 9);
    for repair in repairs {
        assert_eq!(repair["repaired"], true, "{repair}");
    }
    assert_eq!(json["remaining"], json!([]));
    assert_eq!(json["sound"], true);

    // A second run is clean, and a repair of a sound queue does nothing.
    let run = env.run(&["doctor", q]).ok();
    assert!(run.stdout.contains("is sound: 7 jobs"), "{}", run.stdout);
    let run = env.run(&["doctor", q, "--repair"]).ok();
    assert!(run.stdout.contains("is sound"), "{}", run.stdout);
    assert!(!run.stderr.contains("doctor-repair"), "nothing repaired, nothing audited: {}", run.stderr);

    // Where each job went.
    for (id, want) in [
        (&ready, JobState::Ready),
        (&mismatched, JobState::Ready), // the ready list wins over the stored state
        (&delayed, JobState::Delayed),
        (&completed, JobState::Completed),
        (&dead, JobState::Dead),
        (&active, JobState::Active),
    ] {
        assert_eq!(env.client.get_job(q, id).await.expect("job").state, want, "job {id}");
    }
    assert!(members(&env, q, "delayed").await.contains(&delayed.to_string()));
    assert!(members(&env, q, "completed").await.contains(&completed.to_string()));
    assert!(members(&env, q, "dead").await.contains(&dead.to_string()));
    assert_eq!(members(&env, q, "levels").await, vec!["0", "5"]);
    let orphans: BTreeSet<String> =
        events(&env, q).await.into_iter().filter(|(e, _)| e == "orphan").map(|(_, id)| id).collect();
    assert_eq!(orphans, BTreeSet::from(["ghost-delayed".to_string(), "ghost-ready".to_string()]));

    // The jobs really run: the active one comes back through the reaper as
    // a lost lease; every ready job is claimed, highest level first, and
    // completes.
    let reaped = env.client.reap(q, 100, Duration::ZERO).await.expect("reap");
    assert_eq!(reaped.ids, vec![active.clone()], "the relisted active job has an expired lease");
    let claim = env.client.claim(q, &claim_options(10)).await.expect("claim");
    let claimed: Vec<String> = claim.jobs.iter().map(|j| j.lease.job_id.to_string()).collect();
    assert_eq!(claimed[0], high.to_string(), "level 5 is served first again");
    assert_eq!(
        claimed.iter().cloned().collect::<BTreeSet<_>>(),
        [&high, &active, &ready, &mismatched].iter().map(|id| id.to_string()).collect::<BTreeSet<_>>()
    );
    for job in &claim.jobs {
        env.client.complete(&job.lease, None).await.expect("complete");
    }
    let again = env.client.get_job(q, &active).await.expect("job");
    assert_eq!((again.state, again.facts.attempt), (JobState::Completed, 2));
    assert_eq!(again.errors[0].message, "lease expired");
    let counts = env.client.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.delayed, counts.active, counts.completed, counts.dead), (0, 1, 0, 5, 1));
    assert_sound(&env, q).await;
}

#[tokio::test]
async fn a_mutex_groups_waiting_job_and_slot_count_are_repaired_and_the_group_still_runs_one_at_a_time() {
    let env = Env::start().await;
    let q = "groups";
    let job = |n: u32| NewJob::new("sync", &json!({ "n": n })).expect("job").group(Group::with_limit("g", 1));
    let first = env.client.enqueue(q, job(1)).await.expect("enqueue");
    let second = env.client.enqueue(q, job(2)).await.expect("enqueue");
    assert_sound(&env, q).await;

    // The waiting job falls out of its group's list, and the slot count
    // goes wrong.
    let mut raw = env.raw().await;
    let _: i64 = cmd(&mut raw, &["LREM", &key(q, "gwait:g"), "0", second.as_str()]).await;
    let _: i64 = cmd(&mut raw, &["HSET", &key(q, "groups"), "g", "5"]).await;
    let json = env.run(&["doctor", q, "--json"]).code(3).json();
    assert_eq!(kinds(&json["violations"]), pairs(&[("unlisted", second.as_str()), ("group_slots", "g")]));

    let run = env.run(&["doctor", q, "--repair"]).ok();
    assert!(run.stdout.contains("through mutex group g"), "{}", run.stdout);
    assert!(run.stdout.contains("slots of mutex group g set from 5 to 1"), "{}", run.stdout);
    env.run(&["doctor", q]).ok();
    let waiting: Vec<String> = cmd(&mut raw, &["LRANGE", &key(q, "gwait:g"), "0", "-1"]).await;
    assert_eq!(waiting, vec![second.to_string()], "the second job waits for the group's one slot");

    // One at a time, as before the damage.
    let claim = env.client.claim(q, &claim_options(10)).await.expect("claim");
    assert_eq!(claim.jobs.len(), 1);
    assert_eq!(claim.jobs[0].lease.job_id, first);
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    let claim = env.client.claim(q, &claim_options(10)).await.expect("claim");
    assert_eq!(claim.jobs.iter().map(|j| j.lease.job_id.clone()).collect::<Vec<_>>(), vec![second]);
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    assert_eq!(env.client.counts(q).await.expect("counts").completed, 2);
    assert_sound(&env, q).await;
}

#[tokio::test]
async fn what_cannot_be_repaired_safely_is_left_and_exits_3() {
    let env = Env::start().await;
    let q = "twice";
    let id = env.ready(q, "send", json!({})).await;
    // Listed twice: ready and delayed. Which one is right is not knowable.
    let _: i64 = cmd(&mut env.raw().await, &["ZADD", &key(q, "delayed"), "1", id.as_str()]).await;
    // A hash with a state that names no structure.
    let odd = env.ready(q, "send", json!({})).await;
    let mut raw = env.raw().await;
    let _: i64 = cmd(&mut raw, &["LREM", &key(q, "ready:0"), "0", odd.as_str()]).await;
    let _: i64 = cmd(&mut raw, &["HSET", &key(q, &format!("job:{odd}")), "state", "limbo"]).await;

    let run = env.run(&["doctor", q, "--repair"]).code(3);
    assert!(run.stdout.contains("repaired 0 of 2 violations"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot be told safely"), "{}", run.stdout);
    assert!(run.stdout.contains("state \"limbo\" names no structure"), "{}", run.stdout);
    assert!(run.stdout.contains("still broken:"), "{}", run.stdout);
    assert!(run.stderr.contains("breaks 2 invariant(s)"), "{}", run.stderr);
    let json = env.run(&["doctor", q, "--repair", "--json"]).code(3).json();
    assert_eq!(
        kinds(&json["remaining"]),
        pairs(&[("in_several_places", id.as_str()), ("unlisted", odd.as_str())])
    );
}
