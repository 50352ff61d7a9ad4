//! Real `taskline-worker` processes against a real `redis-server`: killed
//! with SIGKILL, stopped with SIGTERM (once and twice) and SIGINT, cut off
//! from Redis by a restart, fed bad configuration files, asked to check a
//! config, run with a mixed workload, and run with JSON and text logs.
//!
//! Every worker is a [`WorkerProcess`] (killed on drop, its log printed if
//! the test panics); configuration errors and `--check-config` are captured
//! with `Command::output()`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskline::{Client, Job, JobId, JobState, NewJob};
use taskline_testkit::RedisServer;

use crate::support::{
    WorkerProcess, assert_sound, drained, eventually, redis_with_aof, worker_binary, worker_command,
    write_file,
};

const SEC: Duration = Duration::from_secs(1);

/// A worker config file for `url`: `[redis] url` then `body`.
fn config_text(url: &str, body: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\n\n{body}")
}

async fn connect(url: &str) -> Client {
    Client::connect(url).await.expect("connect the producer client")
}

async fn enqueue(client: &Client, queue: &str, name: &str, payload: Value) -> JobId {
    client.enqueue(queue, NewJob::new(name, &payload).expect("new job")).await.expect("enqueue")
}

async fn job(client: &Client, queue: &str, id: &JobId) -> Job {
    client.get_job(queue, id).await.expect("get_job")
}

/// Waits until `id` is active, leased by some worker, and returns it.
async fn wait_active(client: &Client, queue: &str, id: &JobId, limit: Duration) -> Job {
    eventually("the job is claimed", limit, || async {
        client.get_job(queue, id).await.is_ok_and(|j| j.state == JobState::Active && j.worker.is_some())
    })
    .await;
    job(client, queue, id).await
}

/// Waits until `id` is in `state`.
async fn wait_state(client: &Client, queue: &str, id: &JobId, state: JobState, limit: Duration) {
    eventually(&format!("job {id} is {state}"), limit, || async {
        client.get_job(queue, id).await.is_ok_and(|j| j.state == state)
    })
    .await;
}

/// Waits until the worker's log contains `text`.
async fn wait_log(worker: &WorkerProcess, text: &str, limit: Duration) {
    eventually(&format!("the worker logs {text:?}"), limit, || async { worker.log_text().contains(text) })
        .await;
}

/// Runs `taskline-worker ARGS` to completion and captures its output. The
/// test's own `TASKLINE_*` variables are removed so that no override
/// changes what the file says.
fn run_binary(args: &[&str]) -> Output {
    worker_command(args, &[]).output().expect("run taskline-worker")
}

/// Like [`WorkerProcess::spawn`], with `--json-logs`.
fn spawn_json_logs(config: &Path, log: &Path) -> WorkerProcess {
    let file = std::fs::File::create(log).expect("log file");
    let child = Command::new(worker_binary())
        .arg("--config")
        .arg(config)
        .arg("--json-logs")
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn taskline-worker --json-logs");
    WorkerProcess { child, log: log.to_path_buf() }
}

/// The generated instance id of a process is `<host>-<pid>-<random>`.
fn is_id_of(worker_id: &str, process: &WorkerProcess) -> bool {
    worker_id.contains(&format!("-{}-", process.child.id()))
}

// ---------------------------------------------------------------------------
// 1. SIGKILL mid-job

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_the_lease_expires_and_another_worker_completes_it() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nlease = \"1s\"\nreap_interval = \"300ms\"\nidle_wait = \"1s\"\n\n\
             [queues.kill]\n\n[handlers.sim]\nqueue = \"kill\"\nkind = \"simulate\"\n",
        ),
    );
    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    let id = enqueue(&client, "kill", "sim", json!({"sleep_ms": 3000, "result": "done"})).await;
    let leased = wait_active(&client, "kill", &id, 10 * SEC).await;
    let a_id = leased.worker.clone().expect("the active job names its worker");
    assert!(is_id_of(&a_id, &a), "the job is leased by worker A (pid {}): {a_id}", a.child.id());
    assert_eq!(leased.facts.attempt, 1);

    // B starts while A still holds the lease; then A dies without a word.
    let b = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("b.log"));
    wait_log(&b, "worker started", 10 * SEC).await;
    a.signal("KILL");
    let status = a.wait_exit(5 * SEC);
    assert!(!status.success(), "SIGKILL is not a clean exit: {status:?}");
    assert_eq!(
        job(&client, "kill", &id).await.state,
        JobState::Active,
        "right after the kill the job is still leased by the dead worker"
    );

    wait_state(&client, "kill", &id, JobState::Completed, 15 * SEC).await;
    let done = job(&client, "kill", &id).await;
    let b_id = done.worker.clone().expect("the completed job names its worker");
    assert!(is_id_of(&b_id, &b), "worker B (pid {}) completed the job, not {b_id}", b.child.id());
    assert_ne!(a_id, b_id, "each process has its own instance id");
    assert_eq!(done.facts.attempt, 2, "the lost attempt counts: {done:?}");
    assert_eq!(done.result.as_deref(), Some("\"done\""));
    assert_eq!(done.errors.len(), 1, "one failed attempt in the history: {:?}", done.errors);
    let lost = &done.errors[0];
    assert_eq!(lost.attempt, 1);
    assert_eq!(lost.kind, taskline::FailureKind::Transient);
    assert_eq!(lost.message, "lease expired");
    assert_eq!(lost.worker, a_id, "the history names the worker that lost the lease");
    assert!(b.log_text().contains("recovered jobs whose lease expired"), "B logs the recovery");

    let counts = drained(&client, "kill", 5 * SEC).await;
    assert_eq!((counts.completed, counts.dead), (1, 0), "{counts:?}");
    assert_sound(&client, "kill").await;
}

// ---------------------------------------------------------------------------
// 2-4. Graceful shutdown

/// A worker of queue `queue` (with `queue_fields`) whose handler `sim`
/// simulates, with the given shutdown timeout.
fn shutdown_config(
    dir: &Path,
    url: &str,
    queue: &str,
    queue_fields: &str,
    shutdown_timeout: &str,
) -> PathBuf {
    write_file(
        dir,
        "worker.toml",
        &config_text(
            url,
            &format!(
                "[worker]\nshutdown_timeout = \"{shutdown_timeout}\"\nidle_wait = \"1s\"\n\n\
                 [queues.{queue}]\n{queue_fields}\n[handlers.sim]\nqueue = \"{queue}\"\nkind = \"simulate\"\n"
            ),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_job_releases_it_to_the_front_and_another_worker_completes_it() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One job at a time, so a second job waits behind the long one.
    let config = shutdown_config(dir.path(), &server.url(), "term", "concurrency = 1\n", "200ms");
    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    // Long enough that A cannot finish it before its deadline; short enough
    // for B to run it to the end within the test's budget.
    let long = enqueue(&client, "term", "sim", json!({"sleep_ms": 5000})).await;
    let leased = wait_active(&client, "term", &long, 10 * SEC).await;
    assert!(is_id_of(leased.worker.as_deref().unwrap_or(""), &a), "A runs the job: {leased:?}");
    let behind = enqueue(&client, "term", "sim", json!({})).await;

    let signalled = Instant::now();
    a.signal("TERM");
    let status = a.wait_exit(3 * SEC);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0; log:\n{}", a.log_text());
    assert!(signalled.elapsed() < 3 * SEC, "A did not wait for the 5 s job");

    let released = job(&client, "term", &long).await;
    assert_eq!(released.state, JobState::Ready, "the job is back in ready: {released:?}");
    assert_eq!(released.facts.attempt, 0, "the released attempt is not spent");
    assert_eq!(released.facts.releases, 1);
    assert!(released.errors.is_empty(), "a release is not a failure: {:?}", released.errors);
    assert_eq!(
        client.list_jobs("term", JobState::Ready, 0, 10).await.expect("list"),
        vec![long.clone(), behind.clone()],
        "the released job is at the front, ahead of the one enqueued after it"
    );
    let log = a.log_text();
    assert!(log.contains("released back to the queue"), "A logs the release:\n{log}");
    assert!(log.contains("worker stopped"), "A logs its stop:\n{log}");

    let b = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("b.log"));
    wait_state(&client, "term", &long, JobState::Completed, 15 * SEC).await;
    wait_state(&client, "term", &behind, JobState::Completed, 5 * SEC).await;
    let done = job(&client, "term", &long).await;
    assert!(is_id_of(done.worker.as_deref().unwrap_or(""), &b), "B completed it: {done:?}");
    assert_eq!(done.facts.attempt, 1, "B's run is the first counted attempt");
    assert_eq!(done.facts.releases, 1);
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    let next = job(&client, "term", &behind).await;
    assert!(done.started_at < next.started_at, "B ran the released job first: {done:?} {next:?}");
    assert_sound(&client, "term").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_job_finish_and_claims_nothing_new() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shutdown_config(dir.path(), &server.url(), "short", "", "5s");
    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    let id = enqueue(&client, "short", "sim", json!({"sleep_ms": 500, "result": 7})).await;
    wait_active(&client, "short", &id, 10 * SEC).await;

    let signalled = Instant::now();
    a.signal("TERM");
    wait_log(&a, "signal received", 2 * SEC).await;
    // Enqueued after the worker stopped claiming: it must stay ready.
    let late = enqueue(&client, "short", "sim", json!({})).await;
    let status = a.wait_exit(5 * SEC);
    assert_eq!(status.code(), Some(0), "log:\n{}", a.log_text());
    assert!(
        signalled.elapsed() < 4 * SEC,
        "the worker exits once its jobs are done, not at the end of shutdown_timeout"
    );

    let done = job(&client, "short", &id).await;
    assert_eq!(done.state, JobState::Completed, "the running job finished: {done:?}");
    assert_eq!(done.facts.attempt, 1);
    assert_eq!(done.facts.releases, 0, "nothing was released");
    assert_eq!(done.result.as_deref(), Some("7"));
    let waiting = job(&client, "short", &late).await;
    assert_eq!(waiting.state, JobState::Ready, "no claim after SIGTERM: {waiting:?}");
    assert_eq!(waiting.facts.attempt, 0);
    assert!(!a.log_text().contains("released back"), "log:\n{}", a.log_text());
    assert_sound(&client, "short").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_releases_running_jobs_at_once() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shutdown_config(dir.path(), &server.url(), "hurry", "", "30s");
    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    let id = enqueue(&client, "hurry", "sim", json!({"sleep_ms": 10_000})).await;
    wait_active(&client, "hurry", &id, 10 * SEC).await;

    let signalled = Instant::now();
    a.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.child.try_wait().expect("try_wait").is_none(), "one signal waits for the running job");
    assert_eq!(job(&client, "hurry", &id).await.state, JobState::Active, "still running after one signal");
    a.signal("TERM");
    let status = a.wait_exit(3 * SEC);
    assert_eq!(status.code(), Some(0), "log:\n{}", a.log_text());
    assert!(signalled.elapsed() < 3 * SEC, "the second signal cut the 30 s wait short");

    let released = job(&client, "hurry", &id).await;
    assert_eq!(released.state, JobState::Ready, "{released:?}");
    assert_eq!((released.facts.attempt, released.facts.releases), (0, 1), "{released:?}");
    let log = a.log_text();
    assert!(log.contains("second signal"), "log:\n{log}");
    assert!(log.contains("released back to the queue"), "log:\n{log}");
    assert_sound(&client, "hurry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_a_zero_shutdown_timeout_releases_at_once() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shutdown_config(dir.path(), &server.url(), "int", "", "0s");
    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    let id = enqueue(&client, "int", "sim", json!({"sleep_ms": 10_000})).await;
    wait_active(&client, "int", &id, 10 * SEC).await;

    a.signal("INT");
    let status = a.wait_exit(3 * SEC);
    assert_eq!(status.code(), Some(0), "SIGINT is a graceful shutdown too; log:\n{}", a.log_text());
    let released = job(&client, "int", &id).await;
    assert_eq!(
        (released.state, released.facts.attempt, released.facts.releases),
        (JobState::Ready, 0, 1),
        "{released:?}"
    );
    assert_sound(&client, "int").await;
}

// ---------------------------------------------------------------------------
// 5. Redis restarted under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_redis_restart_and_every_job_completes() {
    const JOBS: usize = 300;
    let server = redis_with_aof();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One job at a time per worker, so the run lasts long enough to restart
    // Redis in the middle of it; a short lease so that an outcome given up
    // on is recovered quickly.
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nlease = \"2s\"\nreap_interval = \"500ms\"\nidle_wait = \"1s\"\n\n\
             [queues.restart]\nconcurrency = 1\n\n[handlers.sim]\nqueue = \"restart\"\nkind = \"simulate\"\n",
        ),
    );
    let jobs: Vec<NewJob> =
        (0..JOBS).map(|_| NewJob::new("sim", &json!({"sleep_ms": 5})).expect("new job")).collect();
    let ids: Vec<JobId> = client
        .enqueue_bulk("restart", jobs)
        .await
        .expect("enqueue_bulk")
        .iter()
        .map(|outcome| outcome.id().clone())
        .collect();
    assert_eq!(ids.len(), JOBS);

    let mut a = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("a.log"));
    let mut b = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("b.log"));
    eventually("a third of the jobs completed", 20 * SEC, || async {
        client.counts("restart").await.is_ok_and(|c| c.completed >= (JOBS / 3) as u64)
    })
    .await;
    let before = client.counts("restart").await.expect("counts");
    server.restart();
    assert!(before.completed < JOBS as u64, "the restart happened mid-run: {before:?}");

    eventually("every job completed after the restart", 30 * SEC, || async {
        client.counts("restart").await.is_ok_and(|c| c.completed == JOBS as u64)
    })
    .await;
    let counts = drained(&client, "restart", 5 * SEC).await;
    assert_eq!((counts.completed, counts.dead), (JOBS as u64, 0), "{counts:?}");
    for id in &ids {
        assert_eq!(job(&client, "restart", id).await.state, JobState::Completed, "job {id}");
    }
    assert_sound(&client, "restart").await;

    assert!(a.child.try_wait().expect("try_wait").is_none(), "worker A still runs:\n{}", a.log_text());
    assert!(b.child.try_wait().expect("try_wait").is_none(), "worker B still runs:\n{}", b.log_text());
    let after = enqueue(&client, "restart", "sim", json!({"result": "after"})).await;
    wait_state(&client, "restart", &after, JobState::Completed, 15 * SEC).await;
    assert_sound(&client, "restart").await;

    // The restart was felt, and logged, by both.
    for (name, worker) in [("A", &a), ("B", &b)] {
        let log = worker.log_text();
        assert!(log.contains("WARN"), "worker {name} logs the lost connection:\n{log}");
    }
    // Both still stop cleanly.
    a.signal("TERM");
    b.signal("TERM");
    assert_eq!(a.wait_exit(10 * SEC).code(), Some(0));
    assert_eq!(b.wait_exit(10 * SEC).code(), Some(0));
}

// ---------------------------------------------------------------------------
// 6. Bad configuration files

#[test]
fn bad_config_files_are_rejected_with_exit_code_2_naming_field_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Were a file accepted, the worker would fail to connect (exit 1), not
    // hang: nothing listens on port 1.
    let url = "redis://127.0.0.1:1/";
    let handler = "[handlers.sim]\nqueue = \"q\"\nkind = \"simulate\"\n";
    let cases: [(&str, String, &str, &str); 7] = [
        ("weight", format!("[queues.q]\nweight = 0\n{handler}"), "queues.q.weight", "at least 1"),
        ("queue-concurrency", "[queues.q]\nconcurrency = 0\n".into(), "queues.q.concurrency", "at least 1"),
        (
            "worker-concurrency",
            "[worker]\nconcurrency = 0\n[queues.q]\n".into(),
            "worker.concurrency",
            "at least 1",
        ),
        ("lease", "[worker]\nlease = \"30 parsecs\"\n[queues.q]\n".into(), "worker.lease", "30 parsecs"),
        ("colour", "[worker]\ncolour = \"red\"\n[queues.q]\n".into(), "worker.colour", "unknown field"),
        (
            "handler",
            "[queues.q]\n[handlers.sim]\nqueue = \"nowhere\"\nkind = \"simulate\"\n".into(),
            "handlers.sim.queue",
            "nowhere",
        ),
        ("toml", "[queues.q\nweight = 1\n".into(), "line 4, column 10", "invalid TOML"),
    ];
    for (name, body, field, detail) in cases {
        let path = write_file(dir.path(), &format!("{name}.toml"), &config_text(url, &body));
        let output = run_binary(&["--config", path.to_str().expect("utf-8 path")]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "case {name}: exit code 2; stderr:\n{stderr}");
        let named = format!("{}: {field}", path.display());
        assert!(stderr.contains(&named), "case {name}: stderr names {named:?}:\n{stderr}");
        assert!(stderr.contains(detail), "case {name}: stderr says {detail:?}:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "case {name}: one line:\n{stderr}");
        assert!(output.stdout.is_empty(), "case {name}: nothing on stdout");
    }

    let missing = dir.path().join("missing.toml");
    let output = run_binary(&["--config", missing.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "missing file; stderr:\n{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "names the file:\n{stderr}");
    assert!(stderr.contains("cannot read"), "says what is wrong:\n{stderr}");

    // --check-config rejects the same files the same way.
    let path = dir.path().join("lease.toml");
    let output = run_binary(&["--check-config", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("worker.lease"));
}

// ---------------------------------------------------------------------------
// 7. --check-config

#[test]
fn check_config_prints_the_effective_config_with_the_password_masked_without_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1: nothing listens, so this succeeds only if it does not connect.
    let path = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            "redis://user:s3cret@127.0.0.1:1/",
            "[worker]\nlease = \"7s\"\n\n[queues.emails]\nweight = 3\n\n\
             [handlers.send]\nqueue = \"emails\"\nkind = \"simulate\"\n",
        ),
    );
    let started = Instant::now();
    let output = run_binary(&["--check-config", "--config", path.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(started.elapsed() < 5 * SEC, "no connection attempt, no timeout");
    assert!(!stdout.contains("s3cret"), "the password leaks on stdout:\n{stdout}");
    assert!(!stderr.contains("s3cret"), "the password leaks on stderr:\n{stderr}");
    assert!(stdout.contains("redis://user:****@127.0.0.1:1/"), "the masked url is shown:\n{stdout}");
    assert!(stdout.contains("lease = \"7s\""), "the file's values are shown:\n{stdout}");
    assert!(stdout.contains("shutdown_timeout = \"30s\""), "the defaults are shown:\n{stdout}");
    assert!(stdout.contains("[queues.emails]") && stdout.contains("[handlers.send]"), "{stdout}");
    assert!(stderr.contains("is valid"), "stderr:\n{stderr}");

    // The printed config is itself a valid config with the same settings.
    let printed = taskline_worker::Config::from_toml_str(&stdout).expect("the printed config loads back");
    let original = taskline_worker::Config::load_with_env(&path, Default::default()).expect("load");
    assert_eq!(printed.worker, original.worker);
    assert_eq!(printed.queues, original.queues);
    assert_eq!(printed.handlers, original.handlers);
}

// ---------------------------------------------------------------------------
// 8. A mixed workload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_ends_with_exact_completed_and_dead_counts() {
    const EACH: usize = 4;
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nidle_wait = \"1s\"\n\n\
             [queues.mixed]\nconcurrency = 8\n\
             backoff = { initial = \"50ms\", factor = 2.0, max = \"1s\", jitter = \"none\" }\n\n\
             [handlers.sim]\nqueue = \"mixed\"\nkind = \"simulate\"\n",
        ),
    );
    let mut worker = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("worker.log"));

    let mut ok = Vec::new();
    let mut flaky = Vec::new();
    let mut permanent = Vec::new();
    let mut panics = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..EACH {
        ok.push(enqueue(&client, "mixed", "sim", json!({"sleep_ms": 10, "result": {"n": i}})).await);
        flaky.push(
            enqueue(&client, "mixed", "sim", json!({"fail_times": 2, "fail_kind": "transient", "result": i}))
                .await,
        );
        permanent
            .push(enqueue(&client, "mixed", "sim", json!({"fail_times": 1, "fail_kind": "permanent"})).await);
        let job = NewJob::new("sim", &json!({"panic": true})).expect("new job").max_attempts(2);
        panics.push(client.enqueue("mixed", job).await.expect("enqueue"));
        unknown.push(enqueue(&client, "mixed", "no_such_job", json!({})).await);
    }

    let counts = drained(&client, "mixed", 20 * SEC).await;
    assert_eq!(counts.completed, (2 * EACH) as u64, "{counts:?}");
    assert_eq!(counts.dead, (3 * EACH) as u64, "{counts:?}");

    for (i, id) in ok.iter().enumerate() {
        let j = job(&client, "mixed", id).await;
        assert_eq!((j.state, j.facts.attempt), (JobState::Completed, 1), "{j:?}");
        assert_eq!(
            serde_json::from_str::<Value>(j.result.as_deref().unwrap_or("")).ok(),
            Some(json!({"n": i}))
        );
    }
    for id in &flaky {
        let j = job(&client, "mixed", id).await;
        assert_eq!(
            (j.state, j.facts.attempt),
            (JobState::Completed, 3),
            "succeeds on the third attempt: {j:?}"
        );
        assert_eq!(j.errors.len(), 2, "{:?}", j.errors);
        assert!(j.errors.iter().all(|e| e.kind == taskline::FailureKind::Transient), "{:?}", j.errors);
        assert_eq!(j.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), vec![1, 2]);
        // Backoff without jitter: 50 ms, then 100 ms, measured on Redis's clock.
        let gap = j.errors[1].at.duration_since(j.errors[0].at).unwrap_or_default();
        assert!(gap >= Duration::from_millis(50), "the first retry waited its backoff: {gap:?}");
        let finished = j.finished_at.expect("finished_at");
        let gap = finished.duration_since(j.errors[1].at).unwrap_or_default();
        assert!(gap >= Duration::from_millis(100), "the second retry waited twice as long: {gap:?}");
    }
    for id in &permanent {
        let j = job(&client, "mixed", id).await;
        assert_eq!(j.state, JobState::Dead, "{j:?}");
        assert_eq!(j.dead_reason.as_deref(), Some("simulated"), "{j:?}");
        assert_eq!(j.facts.attempt, 1, "a permanent failure is not retried");
        assert_eq!(j.errors.len(), 1);
        assert_eq!(j.errors[0].kind, taskline::FailureKind::Permanent);
        assert!(j.errors[0].message.contains("simulated failure"), "{:?}", j.errors);
    }
    for id in &panics {
        let j = job(&client, "mixed", id).await;
        assert_eq!(j.state, JobState::Dead, "{j:?}");
        assert_eq!(j.dead_reason.as_deref(), Some("attempts_exhausted"), "{j:?}");
        assert_eq!(j.facts.attempt, 2, "both attempts ran");
        assert_eq!(j.errors.len(), 2);
        assert!(j.errors.iter().all(|e| e.message.contains("panicked")), "{:?}", j.errors);
    }
    for id in &unknown {
        let j = job(&client, "mixed", id).await;
        assert_eq!(j.state, JobState::Dead, "{j:?}");
        assert_eq!(j.dead_reason.as_deref(), Some("unknown_job"), "{j:?}");
        assert_eq!(j.errors.len(), 1);
        assert_eq!(j.errors[0].kind, taskline::FailureKind::Permanent);
    }
    let mut dead = client.list_jobs("mixed", JobState::Dead, 0, 100).await.expect("list dead");
    let mut expected: Vec<JobId> = permanent.iter().chain(&panics).chain(&unknown).cloned().collect();
    dead.sort();
    expected.sort();
    assert_eq!(dead, expected, "exactly these jobs are dead");
    assert_sound(&client, "mixed").await;

    // Panics and unknown jobs did not take the worker down, and it still works.
    assert!(worker.child.try_wait().expect("try_wait").is_none(), "the worker is alive");
    let last = enqueue(&client, "mixed", "sim", json!({})).await;
    wait_state(&client, "mixed", &last, JobState::Completed, 10 * SEC).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(10 * SEC).code(), Some(0));
}

// ---------------------------------------------------------------------------
// 9. JSON logs

/// Parses every line of `text` as JSON; panics naming the first that is not.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_lines_and_a_completed_job_carries_its_span() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nidle_wait = \"1s\"\n\n[queues.logs]\n\n\
             [handlers.sim]\nqueue = \"logs\"\nkind = \"simulate\"\n",
        ),
    );
    let mut worker = spawn_json_logs(&config, &dir.path().join("worker.log"));
    let id = enqueue(&client, "logs", "sim", json!({"result": 1})).await;
    wait_state(&client, "logs", &id, JobState::Completed, 10 * SEC).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(10 * SEC).code(), Some(0));

    let log = worker.log_text();
    let lines = json_lines(&log);
    assert!(lines.len() >= 3, "start, job and stop lines:\n{log}");
    let completed: Vec<&str> =
        log.lines().filter(|line| line.contains(id.as_str()) && line.contains("completed")).collect();
    assert_eq!(completed.len(), 1, "one completed line for the job:\n{log}");
    let line: Value = serde_json::from_str(completed[0]).expect("json");
    assert_eq!(line["message"], "completed", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    let span = &line["span"];
    assert_eq!(span["id"], id.as_str(), "{line}");
    assert_eq!(span["queue"], "logs", "{line}");
    assert_eq!(span["attempt"], 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_stay_json_when_a_handler_panics() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nidle_wait = \"1s\"\n\n[queues.logs]\nmax_attempts = 1\n\n\
             [handlers.sim]\nqueue = \"logs\"\nkind = \"simulate\"\n",
        ),
    );
    let mut worker = spawn_json_logs(&config, &dir.path().join("worker.log"));
    let id = enqueue(&client, "logs", "sim", json!({"panic": true})).await;
    wait_state(&client, "logs", &id, JobState::Dead, 10 * SEC).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(10 * SEC).code(), Some(0));
    let log = worker.log_text();
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR" && l.to_string().contains("simulated panic")),
        "the panic is reported as a JSON line:\n{log}"
    );
}

/// The entries of a JSON object in order, duplicate keys kept (a
/// `serde_json::Value` would silently keep only the last of them).
fn object_entries(text: &str) -> Vec<(String, Value)> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, Value>()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, Entries).expect("a JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_job_name_under_a_key_of_its_own() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nidle_wait = \"1s\"\n\n[queues.logs]\n\n\
             [handlers.send_invoice]\nqueue = \"logs\"\nkind = \"simulate\"\n",
        ),
    );
    let mut worker = spawn_json_logs(&config, &dir.path().join("worker.log"));
    let id = enqueue(&client, "logs", "send_invoice", json!({})).await;
    wait_state(&client, "logs", &id, JobState::Completed, 10 * SEC).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(10 * SEC).code(), Some(0));

    let log = worker.log_text();
    let line = log
        .lines()
        .find(|line| line.contains(id.as_str()) && line.contains("\"completed\""))
        .unwrap_or_else(|| panic!("no completed line for {id}:\n{log}"));
    let value: Value = serde_json::from_str(line).expect("json");
    // `value` has already dropped duplicate keys: read the raw span text.
    let raw_span = &line[line.find("\"span\":").expect("a span") + "\"span\":".len()..];
    let raw_span = &raw_span[..=raw_span.find('}').expect("end of the span")];
    let mut keys: Vec<String> = object_entries(raw_span).into_iter().map(|(k, _)| k).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "no duplicate keys in the span {raw_span}");
    let span = value["span"].as_object().expect("the span is an object");
    assert!(span.values().any(|v| v == "send_invoice"), "a JSON reader sees the job name: {}", value["span"]);
}

// ---------------------------------------------------------------------------
// 10. Log hygiene: no false alarms, no terminal escapes in files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_reports_no_lease_lost_when_none_was() {
    const JOBS: usize = 150;
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A heartbeat much shorter than a job, so that extends often race with
    // completions. No lease can expire: the lease is 30 s and nobody reaps.
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nheartbeat = \"5ms\"\nidle_wait = \"1s\"\n\n\
             [queues.beat]\nconcurrency = 4\n\n[handlers.sim]\nqueue = \"beat\"\nkind = \"simulate\"\n",
        ),
    );
    let worker = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("worker.log"));
    // Flushing the script cache makes each heartbeat take an extra round
    // trip (NOSCRIPT, load, run again), as after a Redis restart or failover.
    let mut flusher = server.connection().await;
    let flushing = tokio::spawn(async move {
        loop {
            let _: redis::RedisResult<()> = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut flusher).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let jobs = (0..JOBS).map(|_| NewJob::new("sim", &json!({"sleep_ms": 3})).expect("new job")).collect();
    client.enqueue_bulk("beat", jobs).await.expect("enqueue_bulk");
    eventually("every job completed", 20 * SEC, || async {
        client.counts("beat").await.is_ok_and(|c| c.completed == JOBS as u64)
    })
    .await;
    flushing.abort();
    let counts = drained(&client, "beat", 5 * SEC).await;
    assert_eq!((counts.completed, counts.dead), (JOBS as u64, 0), "{counts:?}");
    for id in client.list_jobs("beat", JobState::Completed, 0, JOBS as u64).await.expect("list") {
        let j = job(&client, "beat", &id).await;
        assert_eq!((j.facts.attempt, j.errors.len()), (1, 0), "every job ran once, no lease was lost: {j:?}");
    }
    let log = worker.log_text();
    let false_alarms: Vec<&str> = log.lines().filter(|l| l.contains("lease lost")).collect();
    assert!(false_alarms.is_empty(), "no lease was lost, yet the log says so:\n{}", false_alarms.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_written_to_a_file_have_no_colour_escapes() {
    let server = RedisServer::start();
    let client = connect(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &config_text(
            &server.url(),
            "[worker]\nidle_wait = \"1s\"\n\n[queues.text]\n\n\
             [handlers.sim]\nqueue = \"text\"\nkind = \"simulate\"\n",
        ),
    );
    let mut worker = WorkerProcess::spawn(&worker_binary(), &config, &dir.path().join("worker.log"));
    let id = enqueue(&client, "text", "sim", json!({})).await;
    wait_state(&client, "text", &id, JobState::Completed, 10 * SEC).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(10 * SEC).code(), Some(0));
    let log = worker.log_text();
    assert!(log.contains("completed") && log.contains(id.as_str()), "log:\n{log}");
    assert!(!log.contains('\u{1b}'), "escape sequences in a log file:\n{log:?}");
    let line =
        log.lines().find(|l| l.contains(id.as_str()) && l.contains("completed")).expect("a completed line");
    assert!(line.contains("queue=text"), "plain key=value fields: {line:?}");
}
