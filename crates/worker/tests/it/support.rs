//! Shared helpers: a private Redis, configs, in-process workers and worker
//! processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskline::{Client, Counts, Job, JobId, JobState};
use taskline_testkit::RedisServer;
use taskline_worker::{Config, ConfigError, Worker, WorkerBuilder, WorkerError, WorkerReport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A config for `url` from TOML `body` (queues, handlers, worker settings);
/// `[redis] url` is filled in.
pub fn config(url: &str, body: &str) -> Config {
    Config::from_toml_str(&format!("[redis]\nurl = \"{url}\"\n{body}"))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

/// An in-process worker running in a task, stoppable like a signalled
/// process.
pub struct RunningWorker {
    /// Cancel to start a graceful shutdown (SIGTERM).
    pub shutdown: CancellationToken,
    /// Cancel to cut the wait for running jobs short (second signal).
    pub hurry: CancellationToken,
    handle: JoinHandle<WorkerReport>,
}

impl RunningWorker {
    /// Builds the worker from `builder` and starts it.
    pub fn start(builder: WorkerBuilder) -> RunningWorker {
        let worker = builder.build().expect("build worker");
        let shutdown = CancellationToken::new();
        let hurry = CancellationToken::new();
        let (s, h) = (shutdown.clone(), hurry.clone());
        let handle = tokio::spawn(async move { worker.run(s, h).await.expect("worker run") });
        RunningWorker { shutdown, hurry, handle }
    }

    /// Starts a worker with only the handlers of `config`.
    pub fn start_config(config: Config) -> RunningWorker {
        Self::start(Worker::builder(config))
    }

    /// Shuts down gracefully and returns the report.
    pub async fn stop(self) -> WorkerReport {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
    }
}

/// Polls `check` every 20 ms until it returns true, or panics after
/// `limit` with `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// Waits until `queue` has nothing ready, delayed or active, and returns
/// its counts.
pub async fn drained(client: &Client, queue: &str, limit: Duration) -> Counts {
    let mut last = Counts::default();
    let start = Instant::now();
    while start.elapsed() < limit {
        last = client.counts(queue).await.expect("counts");
        if last.ready + last.delayed + last.active == 0 {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("queue {queue} not drained after {limit:?}: {last:?}");
}

/// Panics with every violation if `queue` breaks an invariant.
pub async fn assert_sound(client: &Client, queue: &str) {
    let report = client.check_queue(queue).await.expect("check_queue");
    assert!(report.is_sound(), "queue {queue} breaks invariants: {:?}", report.violations);
}

/// The `taskline-worker` binary built for these tests.
pub fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_taskline-worker"))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

pub use taskline_testkit::WorkerProcess;

/// Starts a private Redis with AOF, for restart tests. `appendfsync no`
/// still writes every change to the kernel before Redis replies, so a
/// SIGKILLed server loses nothing, and no call waits for a busy disk.
/// (`everysec` may postpone that write while an fsync runs.)
pub fn redis_with_aof() -> RedisServer {
    RedisServer::builder().appendonly(true).appendfsync("no").start()
}

/// Waits until job `id` of `queue` has settled for now: completed, dead,
/// or delayed after a failed attempt; returns it.
pub async fn settled(client: &Client, queue: &str, id: &JobId) -> Job {
    eventually(&format!("job {id} settles"), Duration::from_secs(15), || async {
        client.get_job(queue, id).await.is_ok_and(|j| {
            matches!(j.state, JobState::Completed | JobState::Dead)
                || (j.state == JobState::Delayed && !j.errors.is_empty())
        })
    })
    .await;
    client.get_job(queue, id).await.expect("get_job")
}

/// A `taskline-worker ARGS` command with the test's own `TASKLINE_*`
/// variables removed (so no override changes what a file says) and `env`
/// added.
pub fn worker_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(worker_binary());
    command.args(args).env_remove("RUST_BACKTRACE").stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TASKLINE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// Asserts that handler `h` of `kind` on queue `q`, with the TOML lines
/// `extra`, is refused (by loading, or else by building the worker, which
/// checks what only the machine can tell) with an error on `field` whose
/// message contains `message`.
pub fn assert_handler_config_error(kind: &str, extra: &str, field: &str, message: &str) {
    let text = format!("[queues.q]\n[handlers.h]\nqueue = \"q\"\nkind = \"{kind}\"\n{extra}\n");
    let err: ConfigError = match Config::from_toml_str(&text) {
        Err(err) => err,
        Ok(config) => match Worker::builder(config).build() {
            Err(WorkerError::Config(err)) => err,
            Err(other) => panic!("{extra}: {other}"),
            Ok(_) => panic!("{extra}: accepted"),
        },
    };
    assert_eq!(err.field, field, "{extra}: {err}");
    assert!(err.message.contains(message), "{extra}: {err}");
}
