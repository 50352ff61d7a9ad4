//! Spawning, probing and signalling one `redis-server` process: the
//! plumbing under [`RedisServer`](crate::RedisServer).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::{ClusterRole, REDIS_SERVER_ENV, RedisServerBuilder};

/// How long a server may take to answer `PING` (and, in cluster mode, to
/// report `cluster_state:ok`) before the start counts as failed, unless
/// [`RedisServerBuilder::ready_timeout`] says otherwise.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Connect and reply timeouts of the blocking connections used here.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const PROBE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of the server log shown when a test fails.
const LOG_TAIL_LINES: usize = 50;
/// The developer's own Redis listens here; a test must never touch it.
const RESERVED_PORT: u16 = 6379;

pub(crate) const LOG_FILE: &str = "redis.log";
/// Where the child's stdout and stderr go: Redis reports a bad command line
/// there, before it opens its log file.
const OUTPUT_FILE: &str = "redis.out";
pub(crate) const NODES_FILE: &str = "nodes.conf";
/// A sentinel's configuration file, which Sentinel itself rewrites.
pub(crate) const SENTINEL_FILE: &str = "sentinel.conf";

/// Everything needed to (re)start the same server: same binary, options,
/// ports and directory.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) binary: PathBuf,
    pub(crate) options: RedisServerBuilder,
    pub(crate) port: u16,
    pub(crate) cluster_port: Option<u16>,
    pub(crate) tls_port: Option<u16>,
    pub(crate) dir: PathBuf,
}

/// Why an attempt at starting failed; only `port_taken` is worth a retry.
pub(crate) struct StartFailure {
    pub(crate) reason: String,
    pub(crate) port_taken: bool,
}

impl Launch {
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        if self.options.sentinel_config.is_some() {
            // The file must come first; `--sentinel` then turns the mode on.
            args.0.push(self.dir.join(SENTINEL_FILE).into());
            args.0.push("--sentinel".into());
        }
        args.push("port", self.port.to_string());
        args.push("bind", "127.0.0.1");
        args.push("protected-mode", "no");
        args.push("daemonize", "no");
        args.push("dir", &self.dir);
        args.push("logfile", self.dir.join(LOG_FILE));
        args.push("save", "");
        let options = &self.options;
        args.push("appendonly", yes_no(options.appendonly));
        if let Some(policy) = &options.appendfsync {
            args.push("appendfsync", policy);
        }
        if let Some(port) = options.replica_of {
            // Host and port as two arguments: Redis quotes one that holds a
            // space, and `replicaof` would then see a single value.
            args.push("replicaof", "127.0.0.1");
            args.0.push(port.to_string().into());
        }
        if let Some(cluster_port) = self.cluster_port {
            args.push("cluster-enabled", "yes");
            args.push("cluster-config-file", self.dir.join(NODES_FILE));
            // Explicit, because the default (port + 10000) overflows for
            // ports above 55535, and Redis refuses to start.
            args.push("cluster-port", cluster_port.to_string());
        }
        if let Some(tls_port) = self.tls_port {
            let (cert, key) = self.self_signed_certificate();
            args.push("tls-port", tls_port.to_string());
            args.push("tls-cert-file", &cert);
            args.push("tls-key-file", key);
            args.push("tls-ca-cert-file", cert);
            args.push("tls-auth-clients", "no");
        }
        for (name, value) in &options.extra {
            args.push(name, value);
        }
        args.0
    }

    /// Makes (once) a self-signed certificate for 127.0.0.1 in the server's
    /// directory; returns the certificate and key paths.
    fn self_signed_certificate(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.dir.join("tls-cert.pem"), self.dir.join("tls-key.pem"));
        if !cert.exists() {
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                status.map(|s| s.success()).unwrap_or(false),
                "cannot make a TLS certificate: is the openssl command installed?"
            );
        }
        (cert, key)
    }

    /// Spawns the server and waits until it answers `PING` as the process we
    /// spawned (not some other server that took the port) and, in cluster
    /// mode, until it owns every slot and reports `cluster_state:ok`.
    pub(crate) fn spawn_ready(&self) -> Result<Child, StartFailure> {
        if let Some(config) = &self.options.sentinel_config {
            // Once only: Sentinel records what it learned (replicas, other
            // sentinels, a failover's new master) in the file itself.
            let path = self.dir.join(SENTINEL_FILE);
            if !path.exists() {
                fs::write(&path, config)
                    .map_err(|e| self.failure(format!("cannot write {SENTINEL_FILE}: {e}")))?;
            }
        }
        let log_offset = file_len(&self.dir.join(LOG_FILE));
        let output_offset = file_len(&self.dir.join(OUTPUT_FILE));
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(OUTPUT_FILE))
            .map_err(|e| self.failure(format!("cannot open {OUTPUT_FILE}: {e}")))?;
        let stderr =
            output.try_clone().map_err(|e| self.failure(format!("cannot open {OUTPUT_FILE}: {e}")))?;
        let mut child = Command::new(&self.binary)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                self.failure(format!(
                    "cannot run `{}`: {e}; install Redis 7 (e.g. `apt-get install redis-server`) \
                     or set {REDIS_SERVER_ENV} to the path of redis-server",
                    self.binary.display()
                ))
            })?;

        let ready_timeout = self.options.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
        let deadline = Instant::now() + ready_timeout;
        let mut identified = false;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let output = read_lossy(&self.dir.join(LOG_FILE), log_offset)
                    + &read_lossy(&self.dir.join(OUTPUT_FILE), output_offset);
                return Err(StartFailure {
                    reason: format!("redis-server exited during start-up ({status})"),
                    port_taken: output.contains("Address already in use"),
                });
            }
            if let Ok(mut con) = blocking_connection(&self.url()) {
                identified = identified || self.answers_as(&mut con, child.id());
                let single_node = self.options.cluster == ClusterRole::SingleNode;
                if identified && (!single_node || cluster_ok(&mut con)) {
                    return Ok(child);
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.failure(format!(
                    "redis-server was not ready within {ready_timeout:?}; a large AOF takes longer to load: \
                     raise RedisServerBuilder::ready_timeout"
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server on our port answers `PING` and is process `pid`.
    fn answers_as(&self, con: &mut redis::Connection, pid: u32) -> bool {
        let pong: redis::RedisResult<String> = redis::cmd("PING").query(con);
        if pong.is_err() {
            // Typically `LOADING` while the AOF is replayed.
            return false;
        }
        let info: redis::RedisResult<String> = redis::cmd("INFO").arg("server").query(con);
        info.is_ok_and(|info| parse_info_field(&info, "process_id") == Some(&pid.to_string()))
    }

    pub(crate) fn failure(&self, reason: String) -> StartFailure {
        StartFailure { reason, port_taken: false }
    }

    pub(crate) fn failure_report(&self, failure: &StartFailure) -> String {
        let args: Vec<String> = self.args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        format!(
            "{}\ncommand: {} {}\n{}",
            failure.reason,
            self.binary.display(),
            args.join(" "),
            self.log_report(),
        )
    }

    /// The tail of the log and of the captured stdout/stderr, for a human.
    pub(crate) fn log_report(&self) -> String {
        let log_path = self.dir.join(LOG_FILE);
        let mut report = format!(
            "--- last {LOG_TAIL_LINES} lines of {} (port {}) ---\n{}",
            log_path.display(),
            self.port,
            tail(&read_lossy(&log_path, 0), LOG_TAIL_LINES),
        );
        let output = read_lossy(&self.dir.join(OUTPUT_FILE), 0);
        if !output.trim().is_empty() {
            report.push_str("\n--- redis-server stdout/stderr ---\n");
            report.push_str(&tail(&output, LOG_TAIL_LINES));
        }
        report
    }
}

/// Makes the one-node cluster own every slot (once; `nodes.conf` keeps the
/// assignment across restarts) and reports whether its state is `ok`.
fn cluster_ok(con: &mut redis::Connection) -> bool {
    let info: redis::RedisResult<String> = redis::cmd("CLUSTER").arg("INFO").query(con);
    let Ok(info) = info else {
        return false;
    };
    if parse_info_field(&info, "cluster_slots_assigned") == Some("0") {
        // The state turns `ok` at a later poll, not in this reply.
        let _ = redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(crate::SLOT_COUNT - 1).exec(con);
        return false;
    }
    parse_info_field(&info, "cluster_state") == Some("ok")
}

pub(crate) fn blocking_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(PROBE_CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(PROBE_REPLY_TIMEOUT))?;
    con.set_write_timeout(Some(PROBE_REPLY_TIMEOUT))?;
    Ok(con)
}

/// Sends a signal with the `kill` utility, to stay free of `unsafe` FFI.
pub(crate) fn signal(pid: u32, name: &str) {
    if let Err(e) = try_signal(pid, name) {
        panic!("`kill -{name} {pid}` failed: {e}");
    }
}

pub(crate) fn try_signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(status.to_string()) }
}

/// Waits until the kernel reports the process stopped (or no longer
/// stopped): signal delivery is asynchronous, and a test that pauses a
/// server must be able to rely on it being frozen. Linux only; elsewhere it
/// returns at once.
pub(crate) fn wait_for_stopped(pid: u32, stopped: bool) {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok(text) = fs::read_to_string(&stat) else {
            return;
        };
        // The state follows the parenthesised command name.
        let state = text.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
        if matches!(state, Some("T" | "t")) == stopped {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// A port that was free on 127.0.0.1 a moment ago. Another process may take
/// it before the server binds it; callers retry on `Address already in use`.
pub(crate) fn free_port(avoid: &[u16]) -> u16 {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            && let Ok(addr) = listener.local_addr()
            && addr.port() != RESERVED_PORT
            && !avoid.contains(&addr.port())
        {
            return addr.port();
        }
    }
    panic!("cannot find a free TCP port on 127.0.0.1");
}

pub(crate) fn parse_info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':').map(str::trim_end))
}

/// A command line of `--name value` pairs.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) {
        self.0.push(format!("--{name}").into());
        self.0.push(value.as_ref().to_os_string());
    }
}

fn yes_no(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's text from byte `offset` on; empty if it does not exist.
pub(crate) fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:42\r\ntcp_port:1234\r\n";
        assert_eq!(parse_info_field(info, "process_id"), Some("42"));
        assert_eq!(parse_info_field(info, "tcp_port"), Some("1234"));
        assert_eq!(parse_info_field(info, "redis"), None);
        assert_eq!(parse_info_field(info, "missing"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn free_port_avoids_listed_ports() {
        let first = free_port(&[]);
        let second = free_port(&[first]);
        assert_ne!(first, second);
        assert_ne!(first, RESERVED_PORT);
    }
}
