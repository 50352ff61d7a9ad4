//! Errors: each a clear message and the documented exit code (1 for
//! operational errors, 2 for usage and bad input).

use std::net::TcpListener;

use serde_json::json;

use crate::support::{Env, run_at};

#[tokio::test]
async fn an_unknown_queue_is_named_with_the_known_ones() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    env.ready("reports", "build", json!({})).await;
    for args in [
        &["jobs", "emials", "--state", "ready"][..],
        &["job", "emials", "some-id"],
        &["dlq", "list", "emials"],
        &["dlq", "replay", "emials", "--all"],
        &["drain", "emials", "--yes"],
        &["events", "emials"],
        &["resume", "emials"],
    ] {
        let run = env.run(args).code(1);
        assert!(
            run.stderr.contains(
                "unknown queue \"emials\": no queue of that name under prefix \"taskline\"; known queues: emails, reports"
            ),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = env.run(&["--prefix", "other", "dlq", "list", "emails"]).code(1);
    assert!(
        run.stderr.contains("no queues are known under this prefix at all; check --prefix"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_missing_job_is_exit_1_and_a_malformed_id_exit_2() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    let run = env.run(&["job", "emails", "0190-nope"]).code(1);
    assert!(run.stderr.contains("job 0190-nope not found in queue emails"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let run = env.run(&["job", "emails", "has space"]).code(2);
    assert!(run.stderr.contains("invalid job id"), "{}", run.stderr);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let env = Env::start().await;
    let run = env.run(&["jobs", "emails"]).code(2);
    assert!(run.stderr.contains("--state"), "{}", run.stderr);
    let run = env.run(&["frobnicate"]).code(2);
    assert!(run.stderr.contains("unrecognized subcommand"), "{}", run.stderr);
    let run = env.run(&["jobs", "emails", "--state", "finished"]).code(2);
    assert!(run.stderr.contains("unknown job state \"finished\""), "{}", run.stderr);
}

#[test]
fn redis_down_is_a_clear_exit_1() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("redis://user:secret@127.0.0.1:{port}");
    for args in [&["queues"][..], &["dlq", "list", "emails"], &["events", "emails", "--follow"]] {
        let run = run_at(&url, args, None).code(1);
        assert!(
            run.stderr.contains(&format!("cannot reach Redis at redis://user:****@127.0.0.1:{port}: ")),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("is it running? set --redis-url or REDIS_URL"), "{}", run.stderr);
        assert!(!run.stderr.contains("secret"), "the password is masked: {}", run.stderr);
    }
    // Bad input is found before Redis is asked: still exit 2.
    let run = run_at(&url, &["enqueue", "emails", "send", "--payload", "{"], None).code(2);
    assert!(run.stderr.contains("not valid JSON"), "{}", run.stderr);
    let run = run_at("http://localhost", &["queues"], None).code(2);
    assert!(run.stderr.contains("invalid --redis-url"), "{}", run.stderr);
}

/// A TCP server on a free loopback port that answers every connection with
/// `reply` and closes it (at most 20 connections, then it stops).
fn not_redis(reply: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(reply);
        }
    });
    port
}

/// Issue 26: a port that is not Redis printed the parser's raw multi-line
/// output. It is one line naming the address, exit 1.
#[test]
fn a_server_that_is_not_redis_is_named_in_one_line() {
    for reply in [&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..], b"SSH-2.0-OpenSSH_9.2\r\n"] {
        let port = not_redis(reply);
        let url = format!("redis://user:secret@127.0.0.1:{port}");
        for args in [&["queues"][..], &["events", "emails", "--follow"]] {
            let run = run_at(&url, args, None).code(1);
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: one line: {}", run.stderr);
            assert!(
                run.stderr.contains(&format!(
                    "the server at redis://user:****@127.0.0.1:{port} did not answer as Redis"
                )),
                "{args:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("secret"), "the password is masked: {}", run.stderr);
        }
    }
}
