//! Resume after SIGKILL: a real `taskline-worker` process runs a stepped
//! `simulate` job that saves a checkpoint every few steps and logs each
//! step it does to a file (its own record of the work). The process is
//! killed halfway; the next attempt, on another worker, must start right
//! after the last checkpoint, so the work done twice is at most one
//! checkpoint interval.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use taskline::{Client, JobState, NewJob, Progress};
use taskline_testkit::RedisServer;
use taskline_worker::simulate::WORK_LOG_DIR_ENV;

use crate::support::{WorkerProcess, eventually, worker_binary, write_file};

const STEPS: u64 = 40;
const CHECKPOINT_EVERY: u64 = 5;

/// The step log: `(attempt, step)` per line, in the order done.
fn steps_done(path: &Path) -> Vec<(u32, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (attempt, step) = line.split_once(' ').expect("`<attempt> <step>`");
            (attempt.parse().expect("attempt"), step.parse().expect("step"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_halfway_resumes_from_its_last_checkpoint() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let work_log = dir.path().join("steps");
    std::fs::create_dir(&work_log).expect("step log dir");
    let config = write_file(
        dir.path(),
        "worker.toml",
        &format!(
            "[redis]\nurl = \"{}\"\n\n[worker]\nlease = \"1s\"\nreap_interval = \"300ms\"\n\n\
             [queues.export]\n\n[handlers.export]\nqueue = \"export\"\nkind = \"simulate\"\n",
            server.url()
        ),
    );
    let env = [(WORK_LOG_DIR_ENV, work_log.as_path())];
    let mut a = WorkerProcess::spawn_with_env(&worker_binary(), &config, &dir.path().join("a.log"), &env);
    let payload =
        json!({"steps": STEPS, "step_ms": 50, "checkpoint_every": CHECKPOINT_EVERY, "unit": "rows"});
    let id = client.enqueue("export", NewJob::new("export", &payload).expect("job")).await.expect("enqueue");
    let log = work_log.join(format!("{id}.log"));

    eventually("half the steps are done", Duration::from_secs(15), || async {
        steps_done(&log).len() as u64 >= STEPS / 2
    })
    .await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5));
    let before_kill = steps_done(&log);
    let killed_at = before_kill.last().expect("steps before the kill").1;
    assert!(before_kill.iter().all(|&(attempt, _)| attempt == 1), "{before_kill:?}");

    let _b = WorkerProcess::spawn_with_env(&worker_binary(), &config, &dir.path().join("b.log"), &env);
    eventually("the job completes on worker B", Duration::from_secs(20), || async {
        client.get_job("export", &id).await.is_ok_and(|j| j.state == JobState::Completed)
    })
    .await;

    let done = steps_done(&log);
    let first: Vec<u64> = done.iter().filter(|d| d.0 == 1).map(|d| d.1).collect();
    let second: Vec<u64> = done.iter().filter(|d| d.0 == 2).map(|d| d.1).collect();
    assert_eq!(first, (1..=killed_at).collect::<Vec<_>>(), "attempt 1 ran in order until the kill");
    let resumed_after = second.first().expect("attempt 2 did work") - 1;
    assert!(
        resumed_after.is_multiple_of(CHECKPOINT_EVERY)
            && resumed_after <= killed_at
            && killed_at - resumed_after <= CHECKPOINT_EVERY,
        "attempt 2 starts right after the last checkpoint before step {killed_at}: after {resumed_after}"
    );
    assert!(resumed_after > 0, "attempt 2 resumed instead of restarting");
    assert_eq!(second, (resumed_after + 1..=STEPS).collect::<Vec<_>>(), "attempt 2 finished the job");
    assert!(
        done.len() as u64 <= STEPS + CHECKPOINT_EVERY,
        "{} steps done for a {STEPS}-step job: at most one checkpoint interval more",
        done.len()
    );

    let job = client.get_job("export", &id).await.expect("get_job");
    assert_eq!(job.facts.attempt, 2);
    let progress: Progress = serde_json::from_str(job.progress.as_deref().expect("progress")).expect("json");
    assert_eq!(progress, Progress::new(STEPS, STEPS, "rows"));
    assert_eq!(job.facts.checkpoint.as_deref(), Some(r#"{"done":40}"#));
}
