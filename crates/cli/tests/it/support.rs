//! Shared helpers: a private Redis, a client to seed and inspect it, and a
//! runner for the real `taskline` binary.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use taskline::{ClaimOptions, Client, Failure, JobId, NewJob};
use taskline_testkit::RedisServer;

/// A private redis-server and a client connected to it.
pub struct Env {
    /// The server; dropping it kills the process.
    pub server: RedisServer,
    /// A client with default options.
    pub client: Client,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Panics unless the run exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success:\n{self:#?}");
        self
    }

    /// Panics unless the run exited with `code`.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit code {code}:\n{self:#?}");
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self:#?}"))
    }
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_taskline")
}

/// Runs the binary with `args`, `url` as REDIS_URL, stdin closed (so never
/// a terminal), and `stdin` piped in when given.
pub fn run_at(url: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("REDIS_URL", url)
        .env_remove("TASKLINE_PREFIX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn taskline");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for taskline");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

impl Env {
    /// Starts a server and connects a client.
    pub async fn start() -> Env {
        let server = RedisServer::start();
        let client = Client::connect(&server.url()).await.expect("connect client");
        Env { server, client }
    }

    /// Runs the binary against this server.
    pub fn run(&self, args: &[&str]) -> Run {
        run_at(&self.server.url(), args, None)
    }

    /// Runs the binary against this server with `stdin` piped in.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_at(&self.server.url(), args, Some(stdin))
    }

    /// Enqueues a ready job named `name` with `payload`.
    pub async fn ready(&self, queue: &str, name: &str, payload: Value) -> JobId {
        self.client.enqueue(queue, NewJob::new(name, &payload).expect("job")).await.expect("enqueue")
    }

    /// Makes dead jobs: enqueues one per `(name, error message)`, claims
    /// them and fails each permanently with its message. The queue must
    /// have no other ready job. Returns the ids in order.
    pub async fn dead(&self, queue: &str, jobs: &[(&str, &str)]) -> Vec<JobId> {
        let mut ids = Vec::new();
        let mut messages = BTreeMap::new();
        for (i, (name, message)) in jobs.iter().enumerate() {
            let id = self.ready(queue, name, serde_json::json!({ "n": i })).await;
            messages.insert(id.clone(), *message);
            ids.push(id);
        }
        let claim = self.client.claim(queue, &claim_options(jobs.len() as u32)).await.expect("claim");
        assert_eq!(claim.jobs.len(), jobs.len(), "the queue had other ready jobs");
        for job in claim.jobs {
            let message = messages[&job.lease.job_id];
            self.client.fail(&job.lease, &Failure::permanent(message)).await.expect("fail");
        }
        ids
    }

    /// A raw connection for inspecting state.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        self.server.connection().await
    }
}

/// Claim options of the test worker `w1`.
pub fn claim_options(count: u32) -> ClaimOptions {
    ClaimOptions { count, lease: Duration::from_secs(60), worker: "w1".to_string() }
}

/// `taskline:{q}:<suffix>`.
pub fn key(queue: &str, suffix: &str) -> String {
    format!("taskline:{{{queue}}}:{suffix}")
}

/// Runs a raw command and returns its reply.
pub async fn cmd<T: redis::FromRedisValue>(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Members of the zset `set` of `queue`, lowest score first.
pub async fn members(env: &Env, queue: &str, set: &str) -> Vec<String> {
    cmd(&mut env.raw().await, &["ZRANGE", &key(queue, set), "0", "-1"]).await
}

/// True when the job hash exists.
pub async fn job_exists(env: &Env, queue: &str, id: &str) -> bool {
    let n: i64 = cmd(&mut env.raw().await, &["EXISTS", &key(queue, &format!("job:{id}"))]).await;
    n == 1
}

/// A counter of the queue's meta hash (0 when never written).
pub async fn meta_counter(env: &Env, queue: &str, field: &str) -> u64 {
    let v: Option<u64> = cmd(&mut env.raw().await, &["HGET", &key(queue, "meta"), field]).await;
    v.unwrap_or(0)
}

/// The `event` field of every entry of the queue's event stream, oldest first,
/// with the job id.
pub async fn events(env: &Env, queue: &str) -> Vec<(String, String)> {
    let events = env.client.read_events(queue, None, 100_000).await.expect("read events");
    events.into_iter().map(|e| (e.event, e.job_id)).collect()
}

/// Panics with every violation if `queue` breaks an invariant.
pub async fn assert_sound(env: &Env, queue: &str) {
    let report = env.client.check_queue(queue).await.expect("check_queue");
    assert!(report.is_sound(), "queue {queue} breaks invariants: {:?}", report.violations);
}

/// Sorted strings.
pub fn sorted<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    v.sort();
    v
}
