//! `taskline jobs` and `taskline job`.

use std::time::Duration;

use serde_json::json;
use taskline::{Failure, NewJob};

use crate::support::{Env, claim_options, cmd, key};

#[tokio::test]
async fn jobs_lists_one_state_by_name_up_to_the_limit() {
    let env = Env::start().await;
    let a = env.ready("emails", "send", json!({"n": 1})).await;
    let b = env.ready("emails", "digest", json!({"n": 2})).await;
    let c = env.ready("emails", "send", json!({"n": 3})).await;
    let dead = env.dead("other", &[("x", "boom")]).await;
    let _ = dead;

    let run = env.run(&["jobs", "emails", "--state", "ready"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME"), "{}", run.stdout);
    assert!(
        lines[1].starts_with(a.as_str()) && lines[1].contains("send"),
        "claim order first: {}",
        run.stdout
    );
    assert!(lines[2].starts_with(b.as_str()) && lines[2].contains("digest"));
    assert!(lines[3].starts_with(c.as_str()));
    assert_eq!(lines.len(), 4, "{}", run.stdout);

    let run = env.run(&["jobs", "emails", "--state", "ready", "--name", "send", "--limit", "1"]).ok();
    assert!(run.stdout.lines().nth(1).is_some_and(|l| l.starts_with(a.as_str())), "{}", run.stdout);
    assert!(!run.stdout.contains(c.as_str()), "limit 1: {}", run.stdout);
    assert!(run.stdout.contains("(first 1 job; --limit to see more)"), "{}", run.stdout);

    let json = env.run(&["jobs", "emails", "--state", "ready", "--name", "send", "--json"]).ok().json();
    let ids: Vec<&str> =
        json.as_array().expect("array").iter().map(|j| j["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [a.as_str(), c.as_str()]);
    assert_eq!(json[0]["payload"], json!({"n": 1}));
    assert_eq!(json[0]["state"], "ready");

    let run = env.run(&["jobs", "emails", "--state", "dead"]).ok();
    assert_eq!(run.stdout.trim(), "no dead jobs in queue emails");
    assert_eq!(env.run(&["jobs", "emails", "--state", "dead", "--json"]).ok().json(), json!([]));
}

#[tokio::test]
async fn job_shows_the_full_record_with_every_attempt_error() {
    let env = Env::start().await;
    let job = NewJob::new("send", &json!({"to": "ada@example.com"}))
        .expect("job")
        .max_attempts(3)
        .correlation_id("flow-7")
        .priority(4);
    let id = env.client.enqueue("emails", job).await.expect("enqueue");
    // Attempt 1 fails transiently; attempt 2 fails for good.
    let first = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    let retry = Failure::transient("smtp timeout", Duration::ZERO);
    env.client.fail(&first.jobs[0].lease, &retry).await.expect("fail");
    let second = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    assert_eq!(second.jobs.len(), 1, "the retry was due at once");
    let permanent = Failure::permanent("mailbox does not exist");
    env.client.fail(&second.jobs[0].lease, &permanent).await.expect("fail");
    // Nothing writes progress yet: seed it as the hash stores it.
    let _: () = cmd(
        &mut env.raw().await,
        &["HSET", &key("emails", &format!("job:{id}")), "progress", r#"{"pct":40}"#],
    )
    .await;

    let run = env.run(&["job", "emails", id.as_str()]).ok();
    let out = &run.stdout;
    for (label, value) in [
        ("id", id.as_str()),
        ("name", "send"),
        ("state", "dead (permanent)"),
        ("attempt", "2 of 3"),
        ("priority", "4"),
        ("correlation id", "flow-7"),
        ("worker", "w1"),
        ("progress", r#"{"pct":40}"#),
    ] {
        assert_eq!(field(out, label), Some(value), "{label} in:\n{out}");
    }
    assert!(out.contains("payload\n  {\n    \"to\": \"ada@example.com\"\n  }\n"), "{out}");
    assert!(out.contains("errors (2):"), "{out}");
    let error_lines: Vec<&str> =
        out.lines().filter(|l| l.contains("transient") || l.contains("permanent  ")).collect();
    assert_eq!(error_lines.len(), 2, "{out}");
    assert!(
        error_lines[0].contains("1  transient")
            && error_lines[0].contains("w1")
            && error_lines[0].contains("smtp timeout")
    );
    assert!(error_lines[1].contains("2  permanent") && error_lines[1].contains("mailbox does not exist"));

    let json = env.run(&["job", "emails", id.as_str(), "--json"]).ok().json();
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["state"], "dead");
    assert_eq!(json["payload"], json!({"to": "ada@example.com"}));
    assert_eq!(json["attempt"], 2);
    assert_eq!(json["max_attempts"], 3);
    assert_eq!(json["dead_reason"], "permanent");
    assert_eq!(json["progress"], json!({"pct": 40}));
    assert_eq!(json["errors"][0]["kind"], "transient");
    assert_eq!(json["errors"][0]["message"], "smtp timeout");
    assert_eq!(json["errors"][0]["worker"], "w1");
    assert_eq!(json["errors"][1]["attempt"], 2);
    assert_eq!(json["errors"][1]["kind"], "permanent");
    for time in ["created_at", "started_at", "finished_at"] {
        assert!(json[time].as_str().is_some_and(|t| t.ends_with('Z')), "{time}: {json}");
    }
}

#[tokio::test]
async fn job_shows_the_result_of_a_completed_job() {
    let env = Env::start().await;
    let id = env.ready("emails", "send", json!({})).await;
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, Some(&json!({"sent": true}))).await.expect("complete");
    let run = env.run(&["job", "emails", id.as_str()]).ok();
    assert_eq!(field(&run.stdout, "state"), Some("completed"), "{}", run.stdout);
    assert_eq!(field(&run.stdout, "result"), Some(r#"{"sent":true}"#), "{}", run.stdout);
    assert!(run.stdout.contains("errors: none"), "{}", run.stdout);
    let json = env.run(&["job", "emails", id.as_str(), "--json"]).ok().json();
    assert_eq!(json["result"], json!({"sent": true}));
    assert_eq!(json["errors"], json!([]));
}

/// The value of `label` in a detailed record (`label   value` lines).
fn field<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines().find_map(|line| {
        let rest = line.strip_prefix(label)?;
        rest.starts_with("  ").then(|| rest.trim())
    })
}
