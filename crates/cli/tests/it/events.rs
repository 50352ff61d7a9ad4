//! `taskline events`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use taskline::Failure;

use crate::support::{Env, binary, claim_options, cmd};

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// A running `taskline events QUEUE --follow --json ARGS...`, its stdout
/// read line by line on a thread.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    /// Starts the follower and returns once it blocks on Redis (`XREAD
    /// BLOCK` shows in `CLIENT LIST`), so whatever happens next is new.
    async fn start(env: &Env, queue: &str, args: &[&str]) -> Follow {
        let mut child = Command::new(binary())
            .args(["events", queue, "--follow", "--json"])
            .args(args)
            .env("REDIS_URL", env.server.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let (tx, lines) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        loop {
            let clients: String = cmd(&mut env.raw().await, &["CLIENT", "LIST"]).await;
            if clients.contains("cmd=xread") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the follower never blocked:\n{clients}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Follow { child, lines }
    }

    /// The next event printed, within 10 s.
    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(Duration::from_secs(10)).expect("an event line within 10 s");
        serde_json::from_str(&line).expect("JSON line")
    }

    /// `(event, job id)` of the next `n` events printed.
    fn next_events(&self, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|_| self.next())
            .map(|e| {
                (e["event"].as_str().unwrap_or("").to_string(), e["id"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let follow = Follow::start(&env, "emails", &["--count", "1"]).await;
    let backlog = follow.next();
    assert_eq!((backlog["event"].as_str(), backlog["id"].as_str()), (Some("enqueued"), Some(first.as_str())));

    // Events after the backlog arrive while the follower blocks.
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    env.client.complete(&claim.jobs[0].lease, None).await.expect("complete");
    let second = env.ready("emails", "send", json!({})).await;
    assert_eq!(
        follow.next_events(3),
        [
            ("claimed".to_string(), first.to_string()),
            ("completed".to_string(), first.to_string()),
            ("enqueued".to_string(), second.to_string())
        ]
    );
}

/// Issue 26: `--follow --count 0` printed every old event of the stream.
#[tokio::test]
async fn events_follow_with_count_0_prints_only_new_events() {
    let env = Env::start().await;
    for _ in 0..3 {
        env.ready("emails", "send", json!({})).await;
    }
    let follow = Follow::start(&env, "emails", &["--count", "0"]).await;
    let new = env.ready("emails", "send", json!({})).await;
    assert_eq!(follow.next_events(1), [("enqueued".to_string(), new.to_string())], "no old event first");
    assert!(follow.lines.recv_timeout(Duration::from_millis(300)).is_err(), "nothing else");
}

/// Issue 26: without `--follow`, `--count 0` said the queue had no events
/// although the stream held them. It shows no past event, and says nothing
/// about the stream.
#[tokio::test]
async fn events_count_0_shows_no_past_event_and_does_not_call_the_stream_empty() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    for json in [false, true] {
        let mut args = vec!["events", "emails", "--count", "0"];
        if json {
            args.push("--json");
        }
        let run = env.run(&args).ok();
        assert_eq!(run.stdout, "", "{run:#?}");
    }
    // An empty stream is still named as such when events were asked for.
    env.ready("quiet", "send", json!({})).await;
    let _: i64 = cmd(&mut env.raw().await, &["DEL", "taskline:{quiet}:events"]).await;
    let run = env.run(&["events", "quiet"]).ok();
    assert!(run.stdout.starts_with("no events in queue quiet"), "{run:#?}");
}

/// Issue 26: the `retrying` event printed `due_at` as epoch milliseconds;
/// human output shows RFC 3339 (UTC), JSON keeps the milliseconds.
#[tokio::test]
async fn times_in_events_are_rfc3339_for_people_and_milliseconds_in_json() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    let claim = env.client.claim("emails", &claim_options(1)).await.expect("claim");
    let retry = Failure::transient("smtp down", Duration::from_secs(3600));
    env.client.fail(&claim.jobs[0].lease, &retry).await.expect("fail");
    let due = env.client.get_job("emails", &claim.jobs[0].lease.job_id).await.expect("job").due_at;
    let due_ms = epoch_ms(due.expect("due"));

    let run = env.run(&["events", "emails"]).ok();
    let retrying = run.stdout.lines().find(|l| l.contains(" retrying ")).expect("a retrying line");
    let due = retrying.split_whitespace().find_map(|w| w.strip_prefix("due_at=")).expect("due_at");
    assert!(!due.contains(&due_ms.to_string()), "{retrying}");
    let parsed: SystemTime = humantime::parse_rfc3339(due).unwrap_or_else(|e| panic!("{due}: {e}"));
    assert_eq!(epoch_ms(parsed), due_ms, "{retrying}");

    let run = env.run(&["events", "emails", "--json"]).ok();
    let retrying: Value = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .find(|e| e["event"] == "retrying")
        .expect("a retrying event");
    assert_eq!(retrying["due_at"], json!(due_ms.to_string()), "{retrying}");
}
