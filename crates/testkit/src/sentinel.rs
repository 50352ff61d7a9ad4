//! A replicated Redis under Redis Sentinel on free ports of `127.0.0.1`:
//! one primary, its replicas and a quorum of sentinels, owned by one test.
//!
//! The data nodes are plain [`RedisServer`]s (the replicas started with
//! `--replicaof`); each sentinel is a [`RedisServer`] in sentinel mode
//! ([`crate::RedisServerBuilder::sentinel`]) that monitors the primary under
//! [`SentinelSet::master_name`]. The set is ready when every replica is in
//! sync and every sentinel knows every replica and every other sentinel, so
//! a failover can start at once. Killing the primary makes the sentinels
//! promote a replica after the down-after time; dropping the set kills
//! every process.

use std::thread;
use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::process::parse_info_field;

const POLL: Duration = Duration::from_millis(50);

/// Options for a [`SentinelSet`]; create one with [`SentinelSet::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SentinelSetBuilder {
    replicas: usize,
    sentinels: usize,
    master_name: String,
    down_after: Duration,
    ready_timeout: Duration,
}

impl Default for SentinelSetBuilder {
    fn default() -> Self {
        Self {
            replicas: 2,
            sentinels: 3,
            master_name: "taskline".into(),
            down_after: Duration::from_millis(1_000),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl SentinelSetBuilder {
    /// Replicas of the primary (default 2).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Sentinels (default 3; the quorum is a majority of them).
    pub fn sentinels(mut self, n: usize) -> Self {
        self.sentinels = n;
        self
    }

    /// The name the sentinels monitor the primary under (default `taskline`).
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// `down-after-milliseconds` (default 1 s): how long the primary may
    /// be unreachable before the sentinels fail it over.
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// How long starting, and each wait for a failover, may take (default
    /// 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the data nodes and the sentinels and waits until all is known
    /// to all.
    ///
    /// # Panics
    ///
    /// If a process does not start or the set does not settle in time.
    pub fn start(self) -> SentinelSet {
        SentinelSet::create(self)
    }
}

/// A primary, its replicas and the sentinels that watch them; see the
/// module docs.
#[derive(Debug)]
pub struct SentinelSet {
    /// The primary first (at start), then the replicas.
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    options: SentinelSetBuilder,
}

impl SentinelSet {
    /// Returns a builder: 2 replicas, 3 sentinels, master name `taskline`.
    pub fn builder() -> SentinelSetBuilder {
        SentinelSetBuilder::default()
    }

    /// Starts a set with default options; see [`SentinelSetBuilder::start`].
    pub fn start() -> SentinelSet {
        Self::builder().start()
    }

    fn create(options: SentinelSetBuilder) -> SentinelSet {
        let primary = RedisServer::start();
        let port = primary.port();
        let mut data = vec![primary];
        data.extend((0..options.replicas).map(|_| RedisServer::builder().replica_of(port).start()));
        let quorum = options.sentinels / 2 + 1;
        let name = &options.master_name;
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {port} {quorum}\n\
             sentinel down-after-milliseconds {name} {}\n\
             sentinel failover-timeout {name} {}\n\
             sentinel parallel-syncs {name} {}\n",
            options.down_after.as_millis(),
            (options.down_after * 4).as_millis(),
            options.replicas.max(1),
        );
        let sentinels =
            (0..options.sentinels).map(|_| RedisServer::builder().sentinel(config.clone()).start()).collect();
        let set = SentinelSet { data, sentinels, options };
        set.wait_for("replicas in sync and sentinels that know each other", || {
            let synced = (1..set.data.len()).all(|i| set.replica_in_sync(i));
            let known = set.sentinels.iter().all(|s| {
                let replicas: Option<Vec<redis::Value>> =
                    s.try_query(&sentinel_cmd("REPLICAS", &set.options.master_name));
                let peers: Option<Vec<redis::Value>> =
                    s.try_query(&sentinel_cmd("SENTINELS", &set.options.master_name));
                replicas.is_some_and(|r| r.len() == set.options.replicas)
                    && peers.is_some_and(|p| p.len() + 1 == set.sentinels.len())
            });
            (synced && known).then_some(())
        });
        set
    }

    /// The name the sentinels know the primary by.
    pub fn master_name(&self) -> &str {
        &self.options.master_name
    }

    /// URLs of the sentinels, for a client's sentinel list.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// Data node `index`: 0 is the primary at start, then the replicas
    /// (roles change with failovers; see [`SentinelSet::primary_index`]).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.data[index]
    }

    /// Number of data nodes (primary and replicas).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always false: a set has a primary.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sentinel `index`.
    pub fn sentinel(&self, index: usize) -> &RedisServer {
        &self.sentinels[index]
    }

    /// Index of the data node every sentinel names as the primary.
    ///
    /// # Panics
    ///
    /// If the sentinels disagree or name a node that is not ours.
    pub fn primary_index(&self) -> usize {
        self.agreed_primary().unwrap_or_else(|| panic!("the sentinels do not agree on a primary"))
    }

    /// Like [`SentinelSet::primary_index`], but `None` while the sentinels
    /// disagree (during a failover) or do not answer.
    pub fn try_primary_index(&self) -> Option<usize> {
        self.agreed_primary()
    }

    /// The current primary.
    pub fn primary(&self) -> &RedisServer {
        &self.data[self.primary_index()]
    }

    /// SIGKILLs the primary and waits until the sentinels have promoted a
    /// replica and it answers as master; returns its index. The old
    /// primary stays down until [`SentinelSet::restart_node`].
    pub fn kill_primary(&self) -> usize {
        let old = self.primary_index();
        self.data[old].kill();
        self.wait_for_new_primary(old)
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`) and waits until
    /// a replica has been promoted; returns its index. The old primary
    /// becomes a replica.
    pub fn failover(&self) -> usize {
        let old = self.primary_index();
        let _: String = self.sentinels[0].query(&sentinel_cmd("FAILOVER", &self.options.master_name));
        self.wait_for_new_primary(old)
    }

    /// Kills data node `index` (SIGKILL) and starts it again on the same
    /// port; the sentinels turn it into a replica of the current primary.
    /// Waits until it replicates in sync.
    pub fn restart_node(&self, index: usize) {
        self.data[index].restart();
        self.wait_for("the restarted node to replicate the primary", || {
            let primary = self.agreed_primary()?;
            (primary != index && self.replica_in_sync(index)).then_some(())
        });
    }

    fn wait_for_new_primary(&self, old: usize) -> usize {
        self.wait_for("the sentinels to promote a replica", || {
            let new = self.agreed_primary().filter(|&i| i != old)?;
            let info: String = self.data[new].try_query(redis::cmd("INFO").arg("replication"))?;
            (parse_info_field(&info, "role") == Some("master")).then_some(new)
        })
    }

    /// The data node every running sentinel names as primary, if they agree.
    fn agreed_primary(&self) -> Option<usize> {
        let mut agreed = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running() && !s.is_paused()) {
            let (_, port): (String, u16) = sentinel.try_query(
                redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(&self.options.master_name),
            )?;
            let index = self.data.iter().position(|n| n.port() == port)?;
            if agreed.replace(index).is_some_and(|seen| seen != index) {
                return None;
            }
        }
        agreed
    }

    /// Whether data node `index` is a replica whose link to its master is up.
    fn replica_in_sync(&self, index: usize) -> bool {
        let info: Option<String> = self.data[index].try_query(redis::cmd("INFO").arg("replication"));
        info.is_some_and(|info| {
            parse_info_field(&info, "role") == Some("slave")
                && parse_info_field(&info, "master_link_status") == Some("up")
                && parse_info_field(&info, "master_sync_in_progress") == Some("0")
        })
    }

    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .sentinels
                    .iter()
                    .map(|s| format!("--- sentinel on port {} ---\n{}", s.port(), s.log_tail(20)))
                    .collect();
                panic!(
                    "timed out after {:?} waiting for {what}\n{}",
                    self.options.ready_timeout,
                    logs.join("\n")
                );
            }
            thread::sleep(POLL);
        }
    }
}

fn sentinel_cmd(sub: &str, name: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg(sub).arg(name);
    cmd
}
