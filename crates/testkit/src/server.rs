//! A real `redis-server` child process on a free port, owned by one test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{
    LOG_FILE, Launch, NODES_FILE, POLL_INTERVAL, blocking_connection, free_port, parse_info_field,
    read_lossy, signal, tail, try_signal, wait_for_stopped,
};

/// Environment variable naming the `redis-server` binary to run instead of
/// the one found on `PATH`.
pub const REDIS_SERVER_ENV: &str = "TASKLINE_REDIS_SERVER";

/// How long a graceful shutdown may take before it counts as hung.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting when the port turns out to be taken by another
/// process between our probe and the server's `bind`.
const START_ATTEMPTS: usize = 5;

/// How a server takes part in Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ClusterRole {
    /// Cluster mode off.
    #[default]
    None,
    /// A one-node cluster that owns every slot.
    SingleNode,
    /// A node of a larger cluster, joined and given slots by its owner.
    Member,
}

/// Options for a [`RedisServer`]; create one with [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisServerBuilder {
    pub(crate) appendonly: bool,
    pub(crate) appendfsync: Option<String>,
    pub(crate) cluster: ClusterRole,
    pub(crate) replica_of: Option<u16>,
    pub(crate) sentinel_config: Option<String>,
    pub(crate) tls: bool,
    pub(crate) binary: Option<PathBuf>,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) ready_timeout: Option<Duration>,
}

impl RedisServerBuilder {
    /// Also listens for TLS on a second port, with a self-signed
    /// certificate made by the `openssl` command in the server's directory
    /// (off by default). See [`RedisServer::tls_url`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Turns the append-only file on or off (off by default).
    ///
    /// With AOF on, data written before [`RedisServer::kill`] is still there
    /// after [`RedisServer::restart`]: Redis writes the AOF before it replies,
    /// so even `everysec` survives the death of the process (not of the host).
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// Sets `appendfsync` (`always`, `everysec` or `no`); Redis's default,
    /// `everysec`, when not called.
    pub fn appendfsync(mut self, policy: impl Into<String>) -> Self {
        self.appendfsync = Some(policy.into());
        self
    }

    /// Runs the server as a one-node Redis Cluster that owns all 16384 slots.
    ///
    /// Redis then enforces rules a standalone server does not, such as
    /// rejecting a script whose keys live in different hash slots. Expect
    /// about two extra seconds of start-up: Redis holds a fresh cluster node
    /// in the `fail` state for that long.
    pub fn cluster_enabled(mut self, on: bool) -> Self {
        self.cluster = if on { ClusterRole::SingleNode } else { ClusterRole::None };
        self
    }

    /// Runs the server as a node of a larger cluster: cluster-enabled, but
    /// it claims no slots of its own and is ready as soon as it answers.
    /// [`crate::RedisCluster`] starts its nodes this way, then joins them.
    pub fn cluster_member(mut self, on: bool) -> Self {
        self.cluster = if on { ClusterRole::Member } else { ClusterRole::None };
        self
    }

    /// Starts the server as a replica of the server on `127.0.0.1:port`
    /// (`--replicaof`). It is ready once it answers; the initial sync may
    /// still be under way.
    pub fn replica_of(mut self, port: u16) -> Self {
        self.replica_of = Some(port);
        self
    }

    /// Runs the process as a Redis Sentinel (`redis-server <file>
    /// --sentinel`), with `config` as the first contents of its
    /// configuration file (Sentinel rewrites the file as it learns, and a
    /// restart keeps what it learned). [`crate::SentinelSet`] starts its
    /// sentinels this way.
    pub fn sentinel(mut self, config: impl Into<String>) -> Self {
        self.sentinel_config = Some(config.into());
        self
    }

    /// Passes `--<name> <value>` to `redis-server` after the defaults, so it
    /// overrides them. The value is one argument: `config("maxmemory", "10mb")`.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// How long a start or restart may take until the server answers (and,
    /// in cluster mode, owns every slot); 10 seconds when not called. A
    /// restart replays the AOF before it answers, so a server holding a
    /// large data set needs more.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Runs this binary instead of the one named by [`REDIS_SERVER_ENV`] or
    /// found on `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts the server and waits until it is ready.
    ///
    /// # Panics
    ///
    /// If the binary cannot be run or the server is not ready within the
    /// ready timeout ([`RedisServerBuilder::ready_timeout`], default 10 s);
    /// the message carries the tail of the server's log.
    pub fn start(self) -> RedisServer {
        RedisServer::launch(self)
    }
}

/// A `redis-server` process on `127.0.0.1` and a free port, with its own
/// temporary directory; dropping it kills the process and removes the
/// directory.
///
/// Methods that act on the process take `&self`, so one server can be shared
/// (for example in an `Arc`) between a test and the tasks it spawns. They
/// block the calling thread while they wait for the server, for at most a few
/// seconds; in a current-thread Tokio test, other tasks wait meanwhile.
#[derive(Debug)]
pub struct RedisServer {
    process: Mutex<Process>,
    launch: Launch,
    // Declared last so the directory outlives the process during drop.
    dir: TempDir,
}

/// The running process, if any. A std mutex: it is never held across an
/// `.await`, and `Drop` must be able to take it.
#[derive(Debug)]
struct Process {
    child: Option<Child>,
    paused: bool,
}

impl RedisServer {
    /// Returns a builder with default options: no AOF, no cluster.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a server with default options; see [`RedisServerBuilder::start`].
    pub fn start() -> RedisServer {
        Self::builder().start()
    }

    fn launch(options: RedisServerBuilder) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("taskline-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for redis-server: {e}"));
        let binary = options
            .binary
            .clone()
            .or_else(|| std::env::var_os(REDIS_SERVER_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let mut attempt = 1;
        loop {
            let port = free_port(&[]);
            let launch = Launch {
                binary: binary.clone(),
                options: options.clone(),
                port,
                cluster_port: (options.cluster != ClusterRole::None).then(|| free_port(&[port])),
                tls_port: options.tls.then(|| free_port(&[port])),
                dir: dir.path().to_path_buf(),
            };
            match launch.spawn_ready() {
                Ok(child) => {
                    return RedisServer {
                        process: Mutex::new(Process { child: Some(child), paused: false }),
                        launch,
                        dir,
                    };
                }
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    // A cluster node records its own address; start afresh.
                    let _ = fs::remove_file(dir.path().join(NODES_FILE));
                }
                Err(failure) => panic!("{}", launch.failure_report(&failure)),
            }
        }
    }

    /// The server's URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.launch.url()
    }

    /// The TLS URL, `rediss://127.0.0.1:TLS_PORT/#insecure` (the certificate
    /// is self-signed, so verification is skipped).
    ///
    /// # Panics
    ///
    /// If the server was not built with [`RedisServerBuilder::tls`].
    pub fn tls_url(&self) -> String {
        let port = self.launch.tls_port.expect("tls_url needs RedisServer::builder().tls(true)");
        format!("rediss://127.0.0.1:{port}/#insecure")
    }

    /// The TCP port the server listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.launch.port
    }

    /// The server's working directory (`--dir`): AOF, `nodes.conf`, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The whole server log so far, across restarts.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path(), 0)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// The process id of the running server, or `None` once it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// Whether a server process is running (a paused one counts).
    pub fn is_running(&self) -> bool {
        let mut process = self.lock();
        match process.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                process.child = None;
                process.paused = false;
                false
            }
            None => false,
        }
    }

    /// Whether the server runs with cluster mode on (a one-node cluster, or
    /// a node of a [`crate::RedisCluster`]).
    pub fn is_cluster(&self) -> bool {
        self.launch.options.cluster != ClusterRole::None
    }

    /// A client for this server; connecting is up to the caller.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap_or_else(|e| panic!("invalid redis url {}: {e}", self.url()))
    }

    /// A new multiplexed async connection to this server.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached; to observe the error instead, use
    /// [`RedisServer::client`].
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to redis-server at {}: {e}", self.url()))
    }

    /// Kills the server with `SIGKILL` and reaps it, as a crash would; a
    /// no-op if it is not running. Nothing is flushed: only data already in
    /// the AOF survives a later [`RedisServer::restart`].
    pub fn kill(&self) {
        let mut process = self.lock();
        kill_process(&mut process);
    }

    /// Stops the server gracefully with `SIGTERM` (Redis flushes the AOF and
    /// closes clients) and waits for it to exit; a no-op if it is not running.
    ///
    /// # Panics
    ///
    /// If the server has not exited 10 seconds later; it is killed first.
    pub fn shutdown(&self) {
        let mut process = self.lock();
        let Some(mut child) = process.child.take() else {
            return;
        };
        if std::mem::take(&mut process.paused) {
            signal(child.id(), "CONT");
        }
        signal(child.id(), "TERM");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        drop(process);
        panic!(
            "redis-server on port {} did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\n{}",
            self.port(),
            self.launch.log_report(),
        );
    }

    /// Kills the server (as [`RedisServer::kill`]) and starts it again on the
    /// same port and directory, so AOF data survives; waits until it is ready.
    /// Starts it if it was stopped.
    ///
    /// # Panics
    ///
    /// If the server does not come back within the ready timeout
    /// ([`RedisServerBuilder::ready_timeout`]); the message carries its log.
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }

    /// Like [`RedisServer::restart`], but stops the server gracefully first
    /// (as [`RedisServer::shutdown`]).
    pub fn restart_graceful(&self) {
        self.shutdown();
        self.start_again();
    }

    fn start_again(&self) {
        let mut process = self.lock();
        let mut attempt = 1;
        loop {
            match self.launch.spawn_ready() {
                Ok(child) => {
                    process.child = Some(child);
                    process.paused = false;
                    return;
                }
                // Someone grabbed our port while it was free; it may let go.
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(failure) => {
                    drop(process);
                    panic!("{}", self.launch.failure_report(&failure));
                }
            }
        }
    }

    /// Freezes the server with `SIGSTOP`: connections stay open and new ones
    /// are accepted by the kernel, but nothing is answered, as with a hung or
    /// partitioned server. Returns once the process is stopped.
    ///
    /// # Panics
    ///
    /// If the server is not running.
    pub fn pause(&self) {
        let mut process = self.lock();
        let pid = running_pid(&process, self.port());
        if !process.paused {
            signal(pid, "STOP");
            wait_for_stopped(pid, true);
            process.paused = true;
        }
    }

    /// Lets a server frozen by [`RedisServer::pause`] run again (`SIGCONT`);
    /// a no-op if it is not paused.
    pub fn resume(&self) {
        let mut process = self.lock();
        if let Some(pid) = process.child.as_ref().map(Child::id)
            && process.paused
        {
            signal(pid, "CONT");
            wait_for_stopped(pid, false);
            process.paused = false;
        }
    }

    /// Whether the server is frozen by [`RedisServer::pause`].
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// The hash slot of `key` according to the server (`CLUSTER KEYSLOT`).
    /// Compare with the local [`crate::hash_slot`].
    ///
    /// # Panics
    ///
    /// If the server is not cluster-enabled, or cannot be reached.
    pub fn key_slot(&self, key: impl AsRef<[u8]>) -> u16 {
        assert!(self.is_cluster(), "key_slot needs a server started with cluster_enabled(true)");
        self.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key.as_ref()))
    }

    /// One field of `INFO <section>`, such as
    /// `info_field("persistence", "aof_enabled")`; `None` if absent.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = self.query(redis::cmd("INFO").arg(section));
        parse_info_field(&info, field).map(str::to_owned)
    }

    /// Runs one command on a short-lived blocking connection; `None` if
    /// the server does not answer or answers with an error.
    pub(crate) fn try_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        blocking_connection(&self.url()).and_then(|mut con| cmd.query(&mut con)).ok()
    }

    /// Runs one command on a short-lived blocking connection; panics on an
    /// error.
    pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        blocking_connection(&self.url())
            .and_then(|mut con| cmd.query(&mut con))
            .unwrap_or_else(|e| panic!("redis-server at {}: {e}", self.url()))
    }

    fn lock(&self) -> MutexGuard<'_, Process> {
        // A panic while holding the lock leaves a usable `Process`.
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(PoisonError::into_inner);
        kill_process(process);
        if thread::panicking() {
            eprintln!("{}", self.launch.log_report());
        }
    }
}

/// SIGKILLs and reaps the child, if any. A stopped process dies of SIGKILL
/// too, but it is resumed first so nothing is left half-frozen.
fn kill_process(process: &mut Process) {
    if let Some(mut child) = process.child.take() {
        if std::mem::take(&mut process.paused) {
            let _ = try_signal(child.id(), "CONT");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn running_pid(process: &Process, port: u16) -> u32 {
    process
        .child
        .as_ref()
        .map(Child::id)
        .unwrap_or_else(|| panic!("redis-server on port {port} is not running"))
}
