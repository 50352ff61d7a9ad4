//! `taskline events`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Env, binary, claim_options};

#[tokio::test]
async fn events_shows_the_latest_lifecycle_events() {
    let env = Env::start().await;
    let dead = env.dead("emails", &[("send", "bad address")]).await.remove(0);

    let run = env.run(&["events", "emails"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    for (line, event) in lines.iter().zip(["enqueued", "claimed", "failed", "dead"]) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words[0].ends_with('Z'), "time first: {line}");
        assert_eq!(&words[1..4], [event, dead.as_str(), "send"], "{line}");
    }
    assert!(lines[1].contains("attempt=1") && lines[1].contains("worker=w1"), "{}", lines[1]);
    assert!(lines[2].contains("error=bad address") && lines[2].contains("kind=permanent"), "{}", lines[2]);
    assert!(lines[3].contains("reason=permanent"), "{}", lines[3]);

    let run = env.run(&["events", "emails", "--count", "1", "--json"]).ok();
    let json: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    assert_eq!(json["event"], "dead");
    assert_eq!(json["id"], dead.as_str());
    assert_eq!(json["name"], "send");
    assert_eq!(json["attempt"], 1);
    assert_eq!(json["reason"], "permanent");
    assert!(json["stream_id"].as_str().is_some_and(|s| s.contains('-')));
}

#[tokio::test]
async fn events_follow_prints_new_events_as_they_happen() {
    let env = Env::start().await;
    let first = env.ready("emails", "send", json!({})).await;
    let mut child = Command::new(binary())
        .args(["events", "emails", "--follow", "--json", "--count", "1"])
        .env("REDIS_URL", env.server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("an event line within 10 s");
        serde_json::from_str(&line).expect("JSON line")
    };
    let backlog = next();
    assert_eq!((backlog["event"].as_str(), backlog["id"].as_str()), (Some("enqueued"), Some(first.as_str())));

    // Events after the backlog arrive while the follower blocks.
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    let second = env.ready("emails", "send", json!({})).await;
    let seen: Vec<(String, String)> = (0..3)
        .map(|_| next())
        .map(|e| (e["event"].as_str().unwrap_or("").to_string(), e["id"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            ("claimed".to_string(), first.to_string()),
            ("completed".to_string(), first.to_string()),
            ("enqueued".to_string(), second.to_string())
        ]
    );
    child.kill().expect("kill");
    child.wait().expect("reap");
}
