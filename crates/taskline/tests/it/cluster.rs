//! Redis Cluster: every script touches the keys of one queue, all in the
//! slot of the queue's hash tag. Run against a one-node cluster that owns
//! every slot (no redirects), where Redis 7 rejects a script that touches
//! two slots.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use taskline::keys::QueueKeys;
use taskline::{
    ClaimOptions, Client, Completion, Error, FailOutcome, Failure, JobId, JobState, NewJob, QueueName,
    Retention, UniqueMode,
};
use taskline_testkit::{RedisServer, hash_slot};

use crate::support::{assert_sound, claim};

/// Two queues with `.` and `:` in their names, in different slots.
const QUEUES: [&str; 2] = ["billing.v2:eu", "tenant:42.jobs"];

fn job(n: u32) -> NewJob {
    NewJob::new("work", &json!({ "n": n })).expect("job")
}

async fn raw_query(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await
}

/// Every key of the server, by SCAN.
async fn all_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(conn).await.expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Claims (with retries while delayed jobs come due) and completes every
/// job of the queue until nothing is ready, delayed or active.
async fn drain(c: &Client, q: &str) {
    for _ in 0..60 {
        let counts = c.counts(q).await.expect("counts");
        if counts.ready + counts.delayed + counts.active == 0 {
            return;
        }
        let claimed = c.claim(q, &claim(10, "drainer")).await.expect("claim");
        for j in &claimed.jobs {
            assert_eq!(c.complete(&j.lease, None).await.expect("complete"), Completion::Completed);
        }
        if claimed.jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("queue {q} did not drain: {:?}", c.counts(q).await);
}

/// The whole lifecycle on one queue; every call must succeed. Ends with one
/// job parked in each state so that every kind of key exists.
pub(crate) async fn lifecycle(c: &Client, q: &str) {
    // Enqueue: unique keys (held until finished, and for a time), bulk with
    // priorities and a caller id holding braces, delayed.
    let unique = c.enqueue(q, job(1).unique("order-1", UniqueMode::UntilFinished)).await.expect("enqueue");
    match c.enqueue(q, job(2).unique("order-1", UniqueMode::UntilFinished)).await {
        Err(Error::DuplicateJob { existing, .. }) => assert_eq!(existing, unique.as_str()),
        other => panic!("duplicate unique key accepted: {other:?}"),
    }
    c.enqueue(q, job(3).unique("{other}:ttl", UniqueMode::For(Duration::from_secs(600))))
        .await
        .expect("enqueue");
    let braces = JobId::new("bulk{x}.1").expect("id");
    let bulk = c
        .enqueue_bulk(q, vec![job(4).priority(5), job(5).id(braces.clone()), job(6), job(7).priority(9)])
        .await
        .expect("bulk");
    assert!(bulk.iter().all(|o| o.is_created()), "{bulk:?}");
    c.enqueue(q, job(8).delay(Duration::from_millis(200))).await.expect("enqueue delayed");
    let counts = c.counts(q).await.expect("counts");
    assert_eq!((counts.ready, counts.delayed), (6, 1), "{counts:?}");

    // Claim, complete-and-claim.
    let first = c.claim(q, &claim(2, "w1")).await.expect("claim");
    assert_eq!(first.jobs.len(), 2);
    assert_eq!((first.jobs[0].facts.priority, first.jobs[1].facts.priority), (9, 5), "highest level first");
    assert!(first.next_due.is_some(), "the delayed job is reported");
    let (done, next) = c
        .complete_and_claim(&first.jobs[0].lease, Some(&json!({"ok": 1})), &claim(1, "w1"))
        .await
        .expect("c&c");
    assert_eq!(done, Completion::Completed);
    assert_eq!(next.jobs.len(), 1);

    // Fail: transient (retried), permanent (dead).
    let retry = c.fail(&first.jobs[1].lease, &Failure::transient("503", Duration::ZERO)).await.expect("fail");
    assert!(matches!(retry, FailOutcome::Retrying { .. }), "{retry:?}");
    let dead_id = next.jobs[0].lease.job_id.clone();
    let dead = c.fail(&next.jobs[0].lease, &Failure::permanent("bad").with_reason("invalid_payload")).await;
    assert!(matches!(dead.expect("fail"), FailOutcome::Dead { reason, .. } if reason == "invalid_payload"));

    // Extend, release now and release later.
    let held = c.claim(q, &claim(3, "w2")).await.expect("claim");
    assert_eq!(held.jobs.len(), 3);
    let leases: Vec<_> = held.jobs.iter().map(|j| j.lease.clone()).collect();
    let extended = c.extend(&leases, Duration::from_secs(60)).await.expect("extend");
    assert!(extended.lost.is_empty(), "{:?}", extended.lost);
    assert!(c.release(&leases[0], None).await.expect("release").now);
    assert!(c.release(&leases[1], Some(Duration::from_millis(100))).await.expect("release later").now);
    assert_eq!(c.complete(&leases[2], None).await.expect("complete"), Completion::Completed);

    // Reap an expired lease.
    let short = ClaimOptions { count: 1, lease: Duration::from_millis(20), worker: "w3".into() };
    let lost = c.claim(q, &short).await.expect("claim");
    assert_eq!(lost.jobs.len(), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let reaped = c.reap(q, 10, Duration::ZERO).await.expect("reap");
    assert_eq!(reaped.ids, [lost.jobs[0].lease.job_id.clone()]);
    assert_eq!(reaped.retried, 1);

    // Replay the dead job.
    let replayed = c.replay(q, std::slice::from_ref(&dead_id)).await.expect("replay");
    assert_eq!(replayed.replayed, 1, "{replayed:?}");

    // Pause and resume.
    c.pause(q).await.expect("pause");
    let paused = c.claim(q, &claim(5, "w4")).await.expect("claim while paused");
    assert!(paused.paused && paused.jobs.is_empty());
    assert!(c.counts(q).await.expect("counts").paused);
    c.resume(q).await.expect("resume");

    drain(c, q).await;
    let counts = c.counts(q).await.expect("counts");
    assert_eq!((counts.completed, counts.dead), (7, 0), "{counts:?}");
    assert_eq!(c.get_job(q, &braces).await.expect("job").state, JobState::Completed);

    // Park one job in each state: dead, active, delayed, ready (taking the
    // unique key that its first holder gave up when it died).
    c.enqueue(q, job(10)).await.expect("enqueue");
    let doomed = c.claim(q, &claim(1, "w5")).await.expect("claim").jobs.remove(0);
    c.fail(&doomed.lease, &Failure::permanent("parked")).await.expect("fail");
    c.enqueue(q, job(11)).await.expect("enqueue");
    let active = c.claim(q, &claim(1, "w5")).await.expect("claim");
    assert_eq!(active.jobs.len(), 1);
    c.enqueue(q, job(12).delay(Duration::from_secs(600))).await.expect("enqueue delayed");
    c.enqueue(q, job(13).unique("order-1", UniqueMode::UntilFinished))
        .await
        .expect("unique key was released");
    let counts = c.counts(q).await.expect("counts");
    assert_eq!(
        (counts.ready, counts.delayed, counts.active, counts.completed, counts.dead),
        (1, 1, 1, 7, 1),
        "{counts:?}"
    );
    assert_sound(c, q).await;
}

#[tokio::test]
async fn whole_lifecycle_runs_on_a_cluster_and_keeps_each_queue_in_its_slot() {
    let server = RedisServer::builder().cluster_enabled(true).start();
    let mut raw = server.connection().await;

    // Negative controls: this server does reject a script whose declared
    // keys live in two slots, and a script with a shebang that derives a key
    // of another slot at run time.
    let declared =
        raw_query(&mut raw, &["EVAL", "return redis.call('MGET', KEYS[1], KEYS[2])", "2", "{a}x", "{b}y"])
            .await
            .expect_err("two declared keys in two slots");
    assert!(declared.to_string().to_uppercase().contains("CROSSSLOT"), "{declared}");
    let derived = raw_query(&mut raw, &["EVAL", "#!lua\nreturn redis.call('GET', '{b}y')", "1", "{a}x"])
        .await
        .expect_err("a derived key in another slot");
    assert!(derived.to_string().contains("same slot"), "{derived}");
    // A script without a shebang (as Taskline's are) runs in compatibility
    // mode: Redis 7 lets it touch any slot the node owns, so for derived keys
    // only the key scan below proves that they stay in the queue's slot.
    raw_query(&mut raw, &["EVAL", "return redis.call('GET', '{b}y')", "1", "{a}x"])
        .await
        .expect("compat mode");
    raw_query(&mut raw, &["EVAL", "#!lua\nreturn redis.call('GET', '{a}y')", "1", "{a}x"])
        .await
        .expect("same slot");

    let slots: Vec<u16> = QUEUES.iter().map(|q| hash_slot(q.as_bytes())).collect();
    assert_ne!(slots[0], slots[1], "the two queues must live in different slots");
    for (q, slot) in QUEUES.iter().zip(&slots) {
        assert_eq!(server.key_slot(q), *slot, "local and server slot functions agree");
    }

    let client = Client::connect(&server.url()).await.expect("connect");
    // Completions that delete the job at once (keep_last = 0) leave a
    // marker key derived inside the script; it must carry the tag too.
    let forgetful = Client::builder(&server.url())
        .retention(Retention { keep_last: 0, max_age: None })
        .connect()
        .await
        .expect("connect");
    for q in QUEUES {
        lifecycle(&client, q).await;
        let id = client.enqueue(q, job(20).priority(9)).await.expect("enqueue");
        let lease = client.claim(q, &claim(1, "w6")).await.expect("claim").jobs.remove(0).lease;
        assert_eq!(lease.job_id, id);
        assert_eq!(forgetful.complete(&lease, None).await.expect("complete"), Completion::Completed);
        assert_eq!(forgetful.complete(&lease, None).await.expect("resend"), Completion::AlreadyCompleted);
        assert_sound(&client, q).await;
    }
    let registered = client.queues().await.expect("queues");
    assert_eq!(registered, QUEUES.iter().map(|q| q.to_string()).collect::<Vec<_>>());

    let keys = all_keys(&mut raw).await;
    for (q, slot) in QUEUES.iter().zip(&slots) {
        let stem = format!("taskline:{{{q}}}:");
        let mine: Vec<&String> = keys.iter().filter(|k| k.starts_with(&stem)).collect();
        for key in &mine {
            assert_eq!(hash_slot(key.as_bytes()), *slot, "key {key} is not in the slot of queue {q}");
            assert_eq!(server.key_slot(key), *slot, "server: key {key} is not in the slot of queue {q}");
        }
        let kinds: BTreeSet<&str> = mine
            .iter()
            .map(|k| {
                let suffix = &k[stem.len()..];
                let kind = suffix.split(':').next().unwrap_or_default();
                if suffix.starts_with("job:") || suffix.starts_with("ready:") || suffix.starts_with("unique:")
                {
                    kind
                } else {
                    suffix
                }
            })
            .collect();
        let expected: BTreeSet<&str> =
            ["active", "completed", "dead", "delayed", "events", "job", "levels", "meta", "ready", "unique"]
                .into();
        assert!(expected.is_subset(&kinds), "queue {q} lacks some kind of key: {kinds:?}");
        assert!(
            mine.iter().any(|k| k.ends_with("job:bulk{x}.1")),
            "a job id with braces keeps the queue tag"
        );
        assert!(mine.iter().any(|k| k.ends_with("unique:{other}:ttl")), "so does a unique key with braces");
        assert!(mine.iter().any(|k| k[stem.len()..].starts_with("done:")), "the done marker is scanned too");
    }
    // No key outside the queues, except the cross-queue registry.
    for key in &keys {
        assert!(
            key == "taskline:queues" || QUEUES.iter().any(|q| key.starts_with(&format!("taskline:{{{q}}}:"))),
            "unexpected key {key}"
        );
    }
}

#[test]
fn every_queue_key_has_the_slot_of_the_queue_name() {
    let names = [
        "emails",
        "a",
        "0",
        "billing.v2",
        "tenant:42",
        "a.b:c.d",
        "::",
        "..",
        "x-y_z",
        "Queue-With-CAPS",
        &"q".repeat(100),
    ];
    let mut slots = BTreeSet::new();
    for prefix in ["taskline", "app:jobs", "t.l"] {
        for name in names {
            let queue = QueueName::new(name).expect(name);
            let keys = QueueKeys::new(prefix, &queue);
            let slot = hash_slot(name.as_bytes());
            slots.insert(slot);
            let mut all = vec![
                keys.prefix().to_string(),
                keys.meta(),
                keys.levels(),
                keys.delayed(),
                keys.active(),
                keys.completed(),
                keys.dead(),
                keys.events(),
                keys.wake(),
            ];
            all.extend((0..=taskline::MAX_PRIORITY).map(|level| keys.ready(level)));
            for id in ["1", "01900000-0000-7000-8000-000000000000", "a{b}c", "}", "{", "{x}", "job:1"] {
                all.push(keys.job(id));
            }
            for unique in ["k", "order:1", "{other}", "}{", "a.b"] {
                all.push(keys.unique(unique));
            }
            for key in &all {
                assert!(key.starts_with(&format!("{prefix}:{{{name}}}:")), "{key}");
                assert_eq!(hash_slot(key.as_bytes()), slot, "key {key} of queue {name:?} is in another slot");
            }
        }
    }
    assert!(slots.len() > 5, "the sample spreads over several slots: {slots:?}");
}
