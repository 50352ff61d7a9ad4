//! `taskline queues`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskline::NewJob;

use crate::support::{Env, claim_options, cmd, key};

#[tokio::test]
async fn queues_shows_counts_paused_flag_throughput_and_counters() {
    let env = Env::start().await;
    // emails: 1 dead, 1 completed, 1 active, 2 ready, 1 delayed.
    env.dead("emails", &[("send", "bad address")]).await;
    env.ready("emails", "send", json!({"n": 1})).await;
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    env.ready("emails", "send", json!({"n": 2})).await;
    env.client.claim("emails", &claim_options(1)).await.expect("claim");
    env.ready("emails", "send", json!({"n": 3})).await;
    env.ready("emails", "send", json!({"n": 4})).await;
    let later = NewJob::new("send", &json!({})).expect("job").delay(Duration::from_secs(600));
    env.client.enqueue("emails", later).await.expect("enqueue");
    // reports: paused, one ready job.
    env.ready("reports", "build", json!({})).await;
    env.client.pause("reports").await.expect("pause");

    let run = env.run(&["queues"]).ok();
    let lines: Vec<Vec<&str>> = run.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        [
            "QUEUE",
            "STATE",
            "READY",
            "DELAYED",
            "ACTIVE",
            "COMPLETED",
            "DEAD",
            "DONE/MIN",
            "ENQUEUED",
            "DONE",
            "RETRIED",
            "DIED"
        ],
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[1],
        ["emails", "running", "2", "1", "1", "1", "1", "1", "6", "1", "0", "1"],
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[2],
        ["reports", "paused", "1", "0", "0", "0", "0", "0", "1", "0", "0", "0"],
        "{}",
        run.stdout
    );

    let json = env.run(&["queues", "--json"]).ok().json();
    assert_eq!(
        json[0],
        json!({
            "queue": "emails",
            "paused": false,
            "counts": {"ready": 2, "delayed": 1, "active": 1, "completed": 1, "dead": 1},
            "completed_last_minute": 1,
            "completed_last_minute_is_lower_bound": false,
            "totals": {"enqueued": 6, "completed": 1, "retried": 0, "dead": 1, "replayed": 0, "purged": 0, "drained": 0},
        })
    );
    assert_eq!(json[1]["queue"], "reports");
    assert_eq!(json[1]["paused"], true);
    assert_eq!(json.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn queues_without_any_queue_says_so() {
    let env = Env::start().await;
    let run = env.run(&["queues"]).ok();
    assert!(run.stdout.contains("no queues under prefix \"taskline\""), "{}", run.stdout);
    assert_eq!(env.run(&["queues", "--json"]).ok().json(), json!([]));
}

#[tokio::test]
async fn throughput_is_marked_as_a_lower_bound_when_retention_trimmed_the_minute() {
    let env = Env::start().await;
    // Retention kept 2 of the 3 jobs that completed within the minute.
    env.ready("fast", "tick", json!({})).await;
    let claim = env.client.claim("fast", &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("epoch").as_millis().to_string();
    let mut conn = env.raw().await;
    let _: i64 = cmd(&mut conn, &["ZADD", &key("fast", "completed"), &now, "kept-2"]).await;
    let _: i64 = cmd(&mut conn, &["HSET", &key("fast", "meta"), "completed", "3"]).await;
    let run = env.run(&["queues"]).ok();
    let row: Vec<&str> = run.stdout.lines().nth(1).expect("row").split_whitespace().collect();
    assert_eq!(&row[5..10], ["2", "0", ">=2", "1", "3"], "{}", run.stdout);
    let json = env.run(&["queues", "--json"]).ok().json();
    assert_eq!(json[0]["completed_last_minute"], 2);
    assert_eq!(json[0]["completed_last_minute_is_lower_bound"], true);
}
