//! `kind = "command"` handlers running real child processes (small `sh`
//! scripts) under a real worker and a real `redis-server`: each exit class,
//! stdin and environment, results, configurable exit codes, timeouts that
//! kill the child and its children, and graceful shutdown.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use taskline::{Client, FailureKind, JobId, JobState, NewJob};
use taskline_testkit::RedisServer;
use taskline_worker::Config;

use crate::support::{RunningWorker, assert_handler_config_error, config, eventually, settled};

const SEC: Duration = Duration::from_secs(1);

/// Writes an executable `sh` script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A `[handlers.<name>]` table of kind command running `program`.
fn command_handler(name: &str, program: &Path, extra: &str) -> String {
    format!(
        "[handlers.{name}]\nqueue = \"cmd\"\nkind = \"command\"\nprogram = \"{}\"\n{extra}\n",
        program.display()
    )
}

/// Queue `cmd` retries transient failures after an hour, so a failed job
/// stays delayed for the test to look at; then `body`.
fn cmd_config(redis: &str, body: &str) -> Config {
    config(
        redis,
        &format!(
            "[worker]\nshutdown_timeout = \"200ms\"\n\n[queues.cmd]\n\
             backoff = {{ initial = \"1h\", max = \"1h\", jitter = \"none\" }}\n\n{body}"
        ),
    )
}

async fn enqueue(client: &Client, name: &str, payload: &Value) -> JobId {
    client.enqueue("cmd", NewJob::new(name, payload).expect("job")).await.expect("enqueue")
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The pids a script wrote into `file`, once it exists.
async fn pids_in(file: &Path) -> Vec<u32> {
    eventually("the script writes its pids", 10 * SEC, || async {
        std::fs::read_to_string(file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let text = std::fs::read_to_string(file).expect("pids");
    text.split_whitespace().map(|p| p.parse().expect("a pid")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_0_completes_with_stdout_as_result_after_reading_stdin_and_the_job_env() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let program = script(
        dir.path(),
        "echo.sh",
        r#"cat > "$OUT/$TASKLINE_JOB_ID.stdin"
env > "$OUT/$TASKLINE_JOB_ID.env"
pwd > "$OUT/$TASKLINE_JOB_ID.pwd"
echo "{\"args\": \"$1 $2\", \"greeting\": \"$GREETING\"}""#,
    );
    let extra = format!(
        "args = [\"one\", \"two words\"]\nenv = {{ OUT = \"{}\", GREETING = \"hi there\", SEARCH = \"p:${{PATH}}\" }}\n\
         working_dir = \"{}\"",
        out.display(),
        dir.path().display()
    );
    let worker =
        RunningWorker::start_config(cmd_config(&server.url(), &command_handler("echo", &program, &extra)));

    // Non-ASCII text, and a payload near the 512 KiB limit.
    let small = json!({"text": "zoë ✓ 日本語", "n": 1});
    let large = json!({"blob": "ü".repeat(240_000)});
    for payload in [small, large] {
        let job = NewJob::new("echo", &payload).expect("job").correlation_id("corr-1").version(2);
        let id = client.enqueue("cmd", job).await.expect("enqueue");
        let done = settled(&client, "cmd", &id).await;
        assert_eq!(done.state, JobState::Completed, "{done:?}");
        let result: Value = serde_json::from_str(done.result.as_deref().expect("a result")).expect("json");
        assert_eq!(result, json!({"args": "one two words", "greeting": "hi there"}));
        let stdin = std::fs::read_to_string(out.join(format!("{id}.stdin"))).expect("stdin copy");
        assert_eq!(stdin, done.facts.payload, "the payload arrives intact on stdin");
        let env = std::fs::read_to_string(out.join(format!("{id}.env"))).expect("env copy");
        for want in [
            format!("TASKLINE_JOB_ID={id}"),
            "TASKLINE_JOB_NAME=echo".into(),
            "TASKLINE_QUEUE=cmd".into(),
            "TASKLINE_ATTEMPT=1".into(),
            "TASKLINE_MAX_ATTEMPTS=5".into(),
            "TASKLINE_PAYLOAD_VERSION=2".into(),
            "TASKLINE_CORRELATION_ID=corr-1".into(),
        ] {
            assert!(env.lines().any(|l| l == want), "{want} in the child's env:\n{env}");
        }
        assert!(!env.contains("TASKLINE_REDIS"), "the worker's own settings are not passed on:\n{env}");
        let path = std::env::var("PATH").expect("PATH");
        assert!(env.lines().any(|l| l == format!("SEARCH=p:{path}")), "${{PATH}} is expanded:\n{env}");
        let pwd = std::fs::read_to_string(out.join(format!("{id}.pwd"))).expect("pwd");
        assert_eq!(Path::new(pwd.trim()), dir.path().canonicalize().expect("canonical"));
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_map_to_outcomes_with_the_stderr_tail_as_the_error() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let tempfail = script(dir.path(), "tempfail.sh", "echo 'smtp busy' >&2; exit 75");
    let invalid = script(dir.path(), "invalid.sh", "echo 'line one' >&2; echo 'no such user' >&2; exit 3");
    let killed = script(dir.path(), "killed.sh", "echo 'going down' >&2; kill -KILL $$");
    let chatty = script(
        dir.path(),
        "chatty.sh",
        "i=0; while [ $i -lt 500 ]; do echo \"noise $i\" >&2; i=$((i+1)); done; echo 'the end' >&2; exit 1",
    );
    let plain = script(dir.path(), "plain.sh", "echo 'not json'");
    let custom = script(dir.path(), "custom.sh", "exit 3");
    let body = [
        command_handler("tempfail", &tempfail, ""),
        command_handler("invalid", &invalid, ""),
        command_handler("killed", &killed, ""),
        command_handler("chatty", &chatty, ""),
        command_handler("plain", &plain, ""),
        command_handler("custom", &custom, "transient_exit_codes = [3, 4]"),
    ]
    .concat();
    let worker = RunningWorker::start_config(cmd_config(&server.url(), &body));
    let cases = [
        ("tempfail", JobState::Delayed, Some(FailureKind::Transient), "exit code 75: smtp busy"),
        ("invalid", JobState::Dead, Some(FailureKind::Permanent), "exit code 3: line one\nno such user"),
        ("killed", JobState::Delayed, Some(FailureKind::Transient), "killed by SIGKILL: going down"),
        ("custom", JobState::Delayed, Some(FailureKind::Transient), "exit code 3: (nothing on stderr)"),
        ("plain", JobState::Completed, None, ""),
    ];
    for (name, state, kind, message) in cases {
        let id = enqueue(&client, name, &json!({})).await;
        let job = settled(&client, "cmd", &id).await;
        assert_eq!(job.state, state, "{name}: {job:?}");
        assert_eq!(job.errors.last().map(|e| e.kind), kind, "{name}");
        if let Some(error) = job.errors.last() {
            assert_eq!(error.message, message, "{name}");
        }
        if name == "invalid" {
            assert_eq!(job.dead_reason.as_deref(), Some("exit_3"));
        }
        if name == "plain" {
            assert_eq!(job.result, None, "stdout that is not JSON is no result");
        }
    }
    let id = enqueue(&client, "chatty", &json!({})).await;
    let job = settled(&client, "cmd", &id).await;
    let message = &job.errors[0].message;
    assert!(message.starts_with("exit code 1: …") && message.ends_with("noise 499\nthe end"), "{message}");
    assert!(message.len() < 2200, "only the tail of stderr: {} bytes", message.len());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_sends_sigterm_to_the_whole_group() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(
        dir.path(),
        "polite.sh",
        r#"trap 'echo term > "$DIR/term"; exit 0' TERM
sleep 300 &
echo "$$ $!" > "$DIR/pids"
wait"#,
    );
    let extra =
        format!("timeout = \"500ms\"\nkill_grace = \"5s\"\nenv = {{ DIR = \"{}\" }}", dir.path().display());
    let worker =
        RunningWorker::start_config(cmd_config(&server.url(), &command_handler("polite", &program, &extra)));
    let id = enqueue(&client, "polite", &json!({})).await;
    let pids = pids_in(&dir.path().join("pids")).await;
    let job = settled(&client, "cmd", &id).await;
    assert_eq!((job.state, job.errors[0].kind), (JobState::Delayed, FailureKind::Transient));
    assert!(job.errors[0].message.contains("timed out after 500ms"), "{}", job.errors[0].message);
    eventually("the script and its sleep are gone", 5 * SEC, || async { pids.iter().all(|p| !alive(*p)) })
        .await;
    assert!(dir.path().join("term").exists(), "the script got SIGTERM first and ran its trap");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_with_its_children() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    // SIG_IGN is inherited: neither the script nor its sleep stops on TERM.
    let program = script(
        dir.path(),
        "stubborn.sh",
        r#"trap '' TERM
sleep 300 &
echo "$$ $!" > "$DIR/pids"
wait"#,
    );
    let extra =
        format!("timeout = \"300ms\"\nkill_grace = \"2s\"\nenv = {{ DIR = \"{}\" }}", dir.path().display());
    let worker = RunningWorker::start_config(cmd_config(
        &server.url(),
        &command_handler("stubborn", &program, &extra),
    ));
    let id = enqueue(&client, "stubborn", &json!({})).await;
    let pids = pids_in(&dir.path().join("pids")).await;
    let job = settled(&client, "cmd", &id).await;
    assert_eq!(job.state, JobState::Delayed);
    assert!(pids.iter().all(|p| alive(*p)), "SIGTERM alone does not stop them");
    eventually("SIGKILL after the grace ends both", 5 * SEC, || async { pids.iter().all(|p| !alive(*p)) })
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_running_at_shutdown_is_stopped_and_its_job_released() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(dir.path(), "long.sh", "sleep 300 &\necho \"$$ $!\" > \"$DIR/pids\"\nwait");
    let extra = format!("kill_grace = \"1s\"\nenv = {{ DIR = \"{}\" }}", dir.path().display());
    let worker =
        RunningWorker::start_config(cmd_config(&server.url(), &command_handler("long", &program, &extra)));
    let id = enqueue(&client, "long", &json!({})).await;
    let pids = pids_in(&dir.path().join("pids")).await;
    let report = worker.stop().await;
    assert_eq!(report.released_at_shutdown, 1);
    let job = client.get_job("cmd", &id).await.expect("job");
    assert_eq!(job.state, JobState::Ready, "released, not lost: {job:?}");
    assert!(job.errors.is_empty(), "the attempt is not spent");
    eventually("the command and its child are gone", 5 * SEC, || async { pids.iter().all(|p| !alive(*p)) })
        .await;
}

#[test]
fn bad_command_handler_configs_are_refused_naming_the_field() {
    let cases = [
        ("", "handlers.h.program", "missing; kind = \"command\" needs the program"),
        ("program = \"sh\"\nurl = \"http://x/\"", "handlers.h.url", "belongs to kind = \"http\""),
        ("program = \"sh\"\ntransient_exit_codes = [0]", "handlers.h.transient_exit_codes", "from 1 to 255"),
        ("program = \"sh\"\nargs = \"-v\"", "handlers.h.args", "invalid type"),
        ("program = \"sh\"\nargs = [[\"-v\"]]", "handlers.h.args", "invalid type"),
        ("program = \"sh\"\nenv = { A = \"${B\" }", "handlers.h.env.A", "unclosed"),
    ];
    for (extra, field, message) in cases {
        assert_handler_config_error("command", extra, field, message);
    }
}

#[test]
fn a_program_that_cannot_run_stops_the_worker_at_build() {
    let cases = [
        ("program = \"no-such-program-taskline\"", "handlers.h.program", "not found on PATH"),
        ("program = \"/etc/passwd\"", "handlers.h.program", "not an executable file"),
        ("program = \"sh\"\nworking_dir = \"/no/such/dir\"", "handlers.h.working_dir", "not a directory"),
        (
            "program = \"sh\"\nenv = { A = \"${TASKLINE_TEST_UNSET_VAR}\" }",
            "handlers.h.env.A",
            "TASKLINE_TEST_UNSET_VAR is not set",
        ),
    ];
    for (extra, field, message) in cases {
        assert_handler_config_error("command", extra, field, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reports_progress_and_checkpoints_on_stderr_and_resumes_from_its_checkpoint() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(
        dir.path(),
        "upload.sh",
        r#"if [ -z "$TASKLINE_CHECKPOINT" ]; then
  echo 'taskline:progress {"done": 1, "total": 4, "unit": "files"}' >&2
  echo 'taskline:checkpoint {"files": 2}' >&2
  echo 'taskline:progress {"done": 2, "total": 4, "unit": "files", "message": "half way"}' >&2
  echo 'upload interrupted' >&2
  exit 75
fi
echo 'taskline:progress {"done": 4, "total": 4, "unit": "files"}' >&2
echo "{\"resumed_from\": $TASKLINE_CHECKPOINT}""#,
    );
    let body = format!(
        "[queues.cmd]\nbackoff = {{ initial = \"50ms\", max = \"50ms\", jitter = \"none\" }}\n\n{}",
        command_handler("upload", &program, "")
    );
    let worker = RunningWorker::start_config(config(&server.url(), &body));
    let id = enqueue(&client, "upload", &json!({})).await;
    eventually("the job completes on its second attempt", 15 * SEC, || async {
        client.get_job("cmd", &id).await.is_ok_and(|j| j.state == JobState::Completed)
    })
    .await;
    worker.stop().await;

    let job = client.get_job("cmd", &id).await.expect("get_job");
    assert_eq!(job.facts.attempt, 2);
    assert_eq!(
        job.result.as_deref(),
        Some(r#"{"resumed_from":{"files":2}}"#),
        "attempt 2 got the checkpoint"
    );
    assert_eq!(job.facts.checkpoint.as_deref(), Some(r#"{"files":2}"#));
    assert_eq!(job.progress.as_deref(), Some(r#"{"done":4,"total":4,"unit":"files"}"#));
    assert_eq!(job.errors[0].message, "exit code 75: upload interrupted", "report lines are not error text");
    let events = client.read_events("cmd", None, 1_000).await.expect("events");
    let messages: Vec<_> =
        events.iter().filter(|e| e.event == "progress").filter_map(|e| e.extra.get("message")).collect();
    assert!(messages.iter().all(|m| m.as_str() == "half way"), "{messages:?}");
}
