//! The shape of the configuration: one struct per table, its defaults, and
//! the serde attributes that read it (`deny_unknown_fields` everywhere, so a
//! misspelt option is an error rather than a silent default).
//!
//! Fields hold Rust types (`Duration`, `SocketAddr`, [`RateLimit`]); the
//! deserializers in [`super::deserialize`] read the text users write.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use taskline::{Backoff, Durability, FlowLimits, Jitter, RateLimit, RedisTarget, Retention, SentinelTarget};

use super::HandlerConfig;
use super::deserialize::{
    duration, jitter, optional_duration, optional_rate_limit, optional_socket_addr, string_list,
};
use super::mask_url;

/// The whole worker configuration.
///
/// `Config::default()` has every default but no queue, so it does not pass
/// [`Config::validate`] until one is added.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Redis is and how to talk to it (`[redis]`).
    pub redis: RedisConfig,
    /// Settings of this worker process (`[worker]`).
    pub worker: WorkerSettings,
    /// The queues this worker consumes, by name (`[queues.<name>]`). At least
    /// one is required.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Built-in handlers, by the job name they run (`[handlers.<job name>]`).
    pub handlers: BTreeMap<String, HandlerConfig>,
}

/// The Redis connection (`[redis]`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL of one server: `redis://`, `rediss://` (TLS),
    /// `redis+unix://` or `unix://`. May carry a password, which is masked
    /// whenever the configuration is printed (including by `Debug`). Leave
    /// it at its default when `cluster` or `sentinel` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs; a few
    /// reachable nodes are enough, credentials and TLS come from the first).
    /// In the environment: one comma-separated list.
    #[serde(deserialize_with = "string_list")]
    pub cluster: Vec<String>,
    /// A primary found through Redis Sentinel (`[redis.sentinel]`).
    pub sentinel: Option<SentinelConfig>,
    /// When a state change counts as made: `"primary"` (the default) once
    /// the primary ran it, `"replicated"` only once `replicas` replicas
    /// confirm it (`WAIT`) within `replication_timeout`
    /// ([`taskline::Durability`]).
    pub durability: DurabilityMode,
    /// With `durability = "replicated"`: replicas that must confirm each
    /// change.
    pub replicas: u32,
    /// With `durability = "replicated"`: longest wait for the replicas.
    #[serde(deserialize_with = "duration")]
    pub replication_timeout: Duration,
    /// Prefix of every Redis key; workers and producers must agree on it.
    pub prefix: String,
    /// Longest wait for the reply to one ordinary command. Blocking reads use
    /// their own connection with a longer timeout.
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest wait to establish a connection.
    #[serde(deserialize_with = "duration")]
    pub connection_timeout: Duration,
    /// Merge completions that finish together into one script call
    /// ([`taskline::ClientOptions::coalesce_calls`]).
    pub coalesce_calls: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            cluster: Vec::new(),
            sentinel: None,
            durability: DurabilityMode::Primary,
            replicas: 1,
            replication_timeout: Duration::from_secs(1),
            prefix: "taskline".into(),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            coalesce_calls: true,
        }
    }
}

impl fmt::Debug for RedisConfig {
    // Hand-written so that logging a configuration never leaks the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &mask_url(&self.url))
            .field("cluster", &self.cluster.iter().map(|u| mask_url(u)).collect::<Vec<_>>())
            .field("sentinel", &self.sentinel)
            .field("durability", &self.durability)
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("coalesce_calls", &self.coalesce_calls)
            .finish()
    }
}

/// The `url` of a `[redis]` table that sets none.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

impl RedisConfig {
    /// What the client connects to: the cluster, the primary behind
    /// Sentinel, or the one server at `url`.
    pub fn target(&self) -> RedisTarget {
        if !self.cluster.is_empty() {
            return RedisTarget::cluster(self.cluster.clone());
        }
        match &self.sentinel {
            Some(s) => RedisTarget::Sentinel(SentinelTarget {
                sentinels: s.nodes.clone(),
                master_name: s.master_name.clone(),
                username: s.username.clone(),
                password: s.password.clone(),
                db: s.db,
                tls: s.tls,
                tls_insecure: s.tls_insecure,
            }),
            None => RedisTarget::server(self.url.clone()),
        }
    }

    /// The durability the client applies.
    pub fn client_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::Primary => Durability::Primary,
            DurabilityMode::Replicated => {
                Durability::Replicated { replicas: self.replicas, timeout: self.replication_timeout }
            }
        }
    }
}

/// A primary found through Redis Sentinel (`[redis.sentinel]`).
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The sentinels, as `redis://host:port` URLs (with the sentinels' own
    /// credentials, if they have any). In the environment: one
    /// comma-separated list.
    #[serde(deserialize_with = "string_list")]
    pub nodes: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub master_name: String,
    /// ACL user on the primary and replicas, if any.
    pub username: Option<String>,
    /// Password on the primary and replicas, if any (masked when printed).
    pub password: Option<String>,
    /// Database number on the data nodes.
    pub db: i64,
    /// Connect to the data nodes with TLS.
    pub tls: bool,
    /// With `tls`: skip certificate verification (self-signed test servers).
    pub tls_insecure: bool,
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("nodes", &self.nodes.iter().map(|u| mask_url(u)).collect::<Vec<_>>())
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `redis.durability`: when a state change counts as made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityMode {
    /// Once the primary ran it (`"primary"`, the default).
    #[default]
    Primary,
    /// Once `redis.replicas` replicas confirm it (`"replicated"`).
    Replicated,
}

impl DurabilityMode {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replicated => "replicated",
        }
    }
}

impl<'de> Deserialize<'de> for DurabilityMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "primary" => Ok(Self::Primary),
            "replicated" => Ok(Self::Replicated),
            other => Err(de::Error::custom(format!(
                "unknown durability {other:?}; use \"primary\" (the default) or \"replicated\""
            ))),
        }
    }
}

/// Settings of this worker process (`[worker]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Instance id of this process, unique among live workers. `None`
    /// (the default) means one is generated at start
    /// (`hostname-pid-random`); replicas must never share one.
    pub id: Option<String>,
    /// Job slots of this process across all queues.
    pub concurrency: u32,
    /// How long a claimed job stays leased without a heartbeat; a job whose
    /// worker died is recovered after this long.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// Interval of lease extensions while handlers run; `None` means a third
    /// of `lease` (see [`WorkerSettings::heartbeat_interval`]). Must be
    /// shorter than `lease`.
    #[serde(deserialize_with = "optional_duration")]
    pub heartbeat: Option<Duration>,
    /// On SIGTERM, how long running jobs may finish before they are
    /// cancelled and released back to their queues.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Interval at which expired leases of dead workers are recovered.
    #[serde(deserialize_with = "duration")]
    pub reap_interval: Duration,
    /// Longest blocking wait for new work while idle.
    #[serde(deserialize_with = "duration")]
    pub idle_wait: Duration,
    /// Most jobs leased by one claim call.
    pub claim_batch: u32,
    /// Size limit in bytes of payloads and results handled by the worker's
    /// client ([`taskline::ClientOptions::max_payload_bytes`]).
    pub max_payload_bytes: usize,
    /// Bound of each queue's event stream; 0 disables events
    /// ([`taskline::ClientOptions::events_max_len`]).
    pub events_max_len: u64,
    /// Least time between two progress writes of one job: a handler's
    /// `ctx.progress` calls in between are coalesced, the latest kept.
    #[serde(deserialize_with = "duration")]
    pub progress_interval: Duration,
    /// Size limit in bytes of one checkpoint (`ctx.checkpoint`)
    /// ([`taskline::ClientOptions::max_checkpoint_bytes`]).
    pub max_checkpoint_bytes: usize,
    /// Log line format.
    pub log_format: LogFormat,
    /// Whether job payloads appear in logs (they may hold personal data).
    pub log_payloads: bool,
    /// A job whose payload version is newer than its handler supports is
    /// released back to its queue, to run after this delay (a rolling
    /// deploy may be under way).
    #[serde(deserialize_with = "duration")]
    pub version_retry_delay: Duration,
    /// ... and goes to the DLQ after this many such returns.
    pub max_version_retries: u32,
    /// Where the HTTP server of `/metrics`, `/healthz` and `/readyz`
    /// listens (`"127.0.0.1:9464"`); `None` (the default) runs no server.
    /// Port 0 picks a free port.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            id: None,
            concurrency: 50,
            lease: Duration::from_secs(30),
            heartbeat: None,
            shutdown_timeout: Duration::from_secs(30),
            reap_interval: Duration::from_secs(15),
            idle_wait: Duration::from_secs(5),
            claim_batch: 10,
            max_payload_bytes: 512 * 1024,
            events_max_len: 10_000,
            progress_interval: Duration::from_millis(250),
            max_checkpoint_bytes: 64 * 1024,
            log_format: LogFormat::Text,
            log_payloads: false,
            version_retry_delay: Duration::from_secs(30),
            max_version_retries: 10,
            metrics_addr: None,
        }
    }
}

impl WorkerSettings {
    /// The heartbeat interval in effect: `heartbeat`, else a third of `lease`.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }
}

/// Format of log lines (`worker.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (`"text"`, the default).
    #[default]
    Text,
    /// One JSON object per line (`"json"`), for log collectors.
    Json,
}

impl LogFormat {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => {
                Err(de::Error::custom(format!("unknown log format {other:?}; use \"text\" or \"json\"")))
            }
        }
    }
}

/// One queue this worker consumes (`[queues.<name>]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Share of this process's claims among the weighted (non-strict) queues
    /// under contention; an idle queue yields its share.
    pub weight: u32,
    /// A strict queue is always served before every weighted queue.
    pub strict: bool,
    /// Most jobs of this queue running at once in this process.
    pub concurrency: u32,
    /// Attempts of a job that does not set its own, before it is dead.
    pub max_attempts: u32,
    /// Retry delays of transient failures, for jobs without their own.
    pub backoff: BackoffConfig,
    /// Per-attempt timeout of jobs that set none and whose handler sets none;
    /// `None` (the default) means no timeout.
    #[serde(deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// How many completed jobs are kept, and for how long.
    pub retention: RetentionConfig,
    /// Dead-letter depth at which this queue's DLQ alert fires (a warning
    /// in the log and `taskline_dlq_alert{queue} = 1`); `None` (the
    /// default) means no alert. At least 1.
    pub dlq_alert: Option<u64>,
    /// Most jobs of this queue started per period across all workers
    /// (`"50/1s"`), on the Redis server's clock; `None` means no limit.
    /// An operator's runtime override (`taskline limits`) wins over it.
    #[serde(deserialize_with = "optional_rate_limit")]
    pub rate_limit: Option<RateLimit>,
    /// Most jobs of this queue active at once across all worker processes,
    /// on top of each process's `concurrency`; `None` means no limit.
    pub global_concurrency: Option<u32>,
    /// Under sustained load at a higher priority, each lower priority level
    /// still gets at least this fraction of the jobs started (0 = strict
    /// priority, at most 0.5).
    pub priority_min_share: f64,
}

impl QueueConfig {
    /// The queue-wide limits this configuration writes to Redis.
    pub fn flow_limits(&self) -> FlowLimits {
        FlowLimits { rate: self.rate_limit, concurrency: self.global_concurrency }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            weight: 1,
            strict: false,
            concurrency: 10,
            max_attempts: 5,
            backoff: BackoffConfig::default(),
            timeout: None,
            retention: RetentionConfig::default(),
            dlq_alert: None,
            rate_limit: None,
            global_concurrency: None,
            priority_min_share: 0.05,
        }
    }
}

/// Exponential retry backoff of a queue (`backoff = { ... }`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay after the first failed attempt, before jitter.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// Growth of the delay per further attempt (at least 1.0).
    pub factor: f64,
    /// Cap of the delay, before jitter (at least `initial`).
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    /// Randomness mixed into each delay: `"none"`, `"full"` or `"equal"`.
    #[serde(deserialize_with = "jitter")]
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self::from(Backoff::default())
    }
}

impl From<Backoff> for BackoffConfig {
    fn from(b: Backoff) -> Self {
        Self { initial: b.initial, factor: b.factor, max: b.max, jitter: b.jitter }
    }
}

impl BackoffConfig {
    /// The client crate's backoff policy with these numbers.
    pub fn to_backoff(&self) -> Backoff {
        Backoff { initial: self.initial, factor: self.factor, max: self.max, jitter: self.jitter }
    }
}

/// Completed-job retention of a queue (`retention = { ... }`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Most completed jobs kept; 0 deletes a job as soon as it completes.
    pub keep_last: u64,
    /// Completed jobs older than this are removed; `None` (written `"none"`)
    /// keeps them until `keep_last` pushes them out.
    #[serde(deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = Retention::default();
        Self { keep_last: r.keep_last, max_age: r.max_age }
    }
}

impl RetentionConfig {
    /// The client crate's retention with these numbers.
    pub fn to_retention(&self) -> Retention {
        Retention { keep_last: self.keep_last, max_age: self.max_age }
    }
}
