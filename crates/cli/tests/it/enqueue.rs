//! `taskline enqueue`.

use taskline::{JobId, JobState};

use crate::support::{Env, claim_options, cmd, key, members};

#[tokio::test]
async fn enqueue_prints_the_id_and_stores_the_job() {
    let env = Env::start().await;
    let run = env
        .run(&[
            "enqueue",
            "emails",
            "send",
            "--payload",
            r#"{"to":"ada@example.com"}"#,
            "--priority",
            "7",
            "--max-attempts",
            "2",
            "--unique-key",
            "ada",
            "--correlation-id",
            "c-1",
        ])
        .ok();
    let id = JobId::new(run.stdout.trim()).expect("stdout is the id alone");
    let job = env.client.get_job("emails", &id).await.expect("stored");
    assert_eq!(job.facts.name, "send");
    assert_eq!(job.facts.payload, r#"{"to":"ada@example.com"}"#);
    assert_eq!((job.state, job.facts.priority, job.facts.max_attempts), (JobState::Ready, 7, 2));
    assert_eq!(job.unique_key.as_deref(), Some("ada"));
    assert_eq!(job.facts.correlation_id.as_deref(), Some("c-1"));
    let holder: Option<String> = cmd(&mut env.raw().await, &["GET", &key("emails", "unique:ada")]).await;
    assert_eq!(holder.as_deref(), Some(id.as_str()));

    // The unique key is held: a second enqueue is refused (exit 1) and names the holder.
    let dup = env.run(&["enqueue", "emails", "send", "--payload", "{}", "--unique-key", "ada"]).code(1);
    assert!(dup.stderr.contains(id.as_str()), "{}", dup.stderr);
    assert_eq!(env.client.counts("emails").await.expect("counts").ready, 1);
}

#[tokio::test]
async fn enqueue_reads_the_payload_from_a_file_or_stdin_and_delays() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload.json");
    std::fs::write(&file, r#"{"from":"file"}"#).expect("write");
    let path = file.to_str().expect("utf-8 path");

    let from_file = env.run(&["enqueue", "emails", "send", "--payload-file", path]).ok();
    let id = JobId::new(from_file.stdout.trim()).expect("id");
    assert_eq!(env.client.get_job("emails", &id).await.expect("job").facts.payload, r#"{"from":"file"}"#);

    let from_stdin = env.run_with_stdin(&["enqueue", "emails", "send", "--delay", "10m", "--json"], "[1, 2]");
    let json = from_stdin.ok().json();
    assert_eq!(
        (json["queue"].as_str(), json["name"].as_str(), json["state"].as_str()),
        (Some("emails"), Some("send"), Some("delayed"))
    );
    let id = JobId::new(json["id"].as_str().expect("id")).expect("valid");
    let job = env.client.get_job("emails", &id).await.expect("job");
    assert_eq!((job.facts.payload.as_str(), job.state), ("[1, 2]", JobState::Delayed));
    let due = job.due_at.expect("due").duration_since(job.facts.created_at).expect("later");
    assert_eq!(due.as_secs(), 600);
    assert_eq!(members(&env, "emails", "delayed").await, [id.as_str()]);
}

#[tokio::test]
async fn enqueue_rejects_bad_json_with_exit_2_and_writes_nothing() {
    let env = Env::start().await;
    let run = env.run(&["enqueue", "emails", "send", "--payload", r#"{"to": }"#]).code(2);
    assert!(run.stderr.contains("the payload from --payload is not valid JSON"), "{}", run.stderr);
    assert!(run.stderr.contains("line 1 column"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let run = env.run_with_stdin(&["enqueue", "emails", "send"], "not json").code(2);
    assert!(run.stderr.contains("the payload from stdin is not valid JSON"), "{}", run.stderr);
    let run = env.run(&["enqueue", "emails", "send"]).code(2);
    assert!(run.stderr.contains("the payload from stdin is empty"), "{}", run.stderr);
    let run = env.run(&["enqueue", "emails", "send", "--payload", "{}", "--delay", "soon"]).code(2);
    assert!(run.stderr.contains("invalid --delay \"soon\""), "{}", run.stderr);
    let run = env.run(&["enqueue", "emails", "send", "--payload", "{}", "--priority", "12"]).code(2);
    assert!(run.stderr.contains("priority"), "{}", run.stderr);
    let run = env.run(&["enqueue", "bad queue", "send", "--payload", "{}"]).code(2);
    assert!(run.stderr.contains("invalid queue name"), "{}", run.stderr);
    let keys: Vec<String> = cmd(&mut env.raw().await, &["KEYS", "*"]).await;
    assert!(keys.is_empty(), "nothing written: {keys:?}");
}

#[tokio::test]
async fn enqueue_with_a_group_holds_the_second_job_back_and_shows_the_group() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = env.run(&["enqueue", "sync", "account", "--payload", "{}", "--group", "account:42"]).ok();
        ids.push(JobId::new(run.stdout.trim()).expect("id"));
    }
    assert_eq!(env.client.counts("sync").await.expect("counts").ready, 2, "both are ready");
    let claimed = env.client.claim("sync", &claim_options(5)).await.expect("claim");
    assert_eq!(claimed.jobs.len(), 1, "one job of the group at a time");
    let shown = env.run(&["job", "sync", ids[1].as_str()]).ok();
    assert!(shown.stdout.contains("account:42"), "{}", shown.stdout);
    let json = env.run(&["job", "sync", ids[1].as_str(), "--json"]).ok().json();
    assert_eq!(json["group"], "account:42");
}
