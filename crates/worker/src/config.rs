//! The worker's configuration: a TOML file, then `TASKLINE_*` environment
//! overrides, deserialized into typed structs and validated before anything
//! connects to Redis.
//!
//! `config/worker.toml` is the annotated example and `config/README.md` the
//! reference of every field. In short:
//!
//! - Every field has a default except the queues themselves: a file holding
//!   only `[queues.default]` is a complete configuration.
//! - Durations are strings with units (`"30s"`, `"5m"`, `"1h30m"`).
//! - Unknown fields are errors, so a misspelt option never silently falls
//!   back to its default.
//! - An environment variable `TASKLINE_<SECTION>__<FIELD>` (two underscores
//!   between levels) overrides a field, e.g. `TASKLINE_QUEUES__EMAILS__CONCURRENCY=8`.
//!   Variables without `__` (such as `TASKLINE_REDIS_SERVER`) are not
//!   overrides and are ignored.
//! - Every error is a [`ConfigError`] that names the file and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::Source as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use taskline::names::plain_name_problem;
use taskline::{Backoff, FlowLimits, Jitter, QueueName, RateLimit, Retention};

mod handlers;

pub(crate) use handlers::handler_field;
pub use handlers::{
    DEFAULT_KILL_GRACE, DEFAULT_MAX_RESULT_BYTES, DEFAULT_TRANSIENT_EXIT_CODES, EndpointUrl, HandlerConfig,
    HandlerKind, NamedValues, looks_secret,
};

/// Prefix of environment variables that override configuration fields.
pub const ENV_PREFIX: &str = "TASKLINE_";

/// Separator between nesting levels in an override variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// The file name reported by [`Config::from_toml_str`] and [`Config::validate`].
const STRING_FILE: &str = "<string>";
const UNLOADED_FILE: &str = "<config>";

/// The top-level tables of a configuration file.
const SECTIONS: [&str; 4] = ["redis", "worker", "queues", "handlers"];

/// The error for an array anywhere: no field of the configuration takes one.
const ARRAY_MESSAGE: &str = "invalid type: array, expected a table or a single value";

/// A configuration that cannot be used: where it is and what is wrong.
///
/// Displayed as `<file>: <field>: <message>`, for example
/// `config/worker.toml: worker.lease: invalid duration "30 parsecs": ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    /// The file the configuration came from; `<string>` for
    /// [`Config::from_toml_str`], `<config>` for a bare [`Config::validate`].
    pub file: String,
    /// Dotted path of the offending field (`queues.emails.weight`), or
    /// `line L, column C` for a TOML syntax error, `(file)` when the file
    /// itself cannot be read, or the variable's name for a bad environment
    /// variable.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: UNLOADED_FILE.into(), field: field.into(), message: message.into() }
    }

    fn in_file(mut self, file: &str) -> Self {
        self.file = file.into();
        self
    }
}

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
    /// Connection URL: `redis://`, `rediss://` (TLS), `redis+unix://` or
    /// `unix://`. May carry a password, which is masked whenever the
    /// configuration is printed (including by `Debug`).
    pub url: String,
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
            url: "redis://127.0.0.1:6379".into(),
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
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("coalesce_calls", &self.coalesce_calls)
            .finish()
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

impl Config {
    /// Loads `path`, applies the `TASKLINE_*` overrides of the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut env = HashMap::new();
        for (key, value) in std::env::vars_os() {
            // Names that are not Unicode cannot be overrides; skip them.
            let Ok(key) = key.into_string() else { continue };
            if env_field_path(&key).is_none() {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(key.clone(), "the value is not valid UTF-8").in_file(&file))?;
            env.insert(key, value);
        }
        Self::load_with_env(path, env)
    }

    /// Like [`Config::load`], with the environment given as a map (for
    /// tests). Entries that are not overrides are ignored.
    pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new("(file)", format!("cannot read the configuration file: {e}")).in_file(&file)
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::new("(file)", format!("the file is not UTF-8 text: {e}")).in_file(&file)
        })?;
        Self::parse(&text, &file, env)
    }

    /// Parses and validates TOML text, without environment overrides.
    /// Errors name the file `<string>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, STRING_FILE, HashMap::new())
    }

    fn parse(text: &str, file: &str, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let overrides = EnvOverrides::new(env).map_err(|e| e.in_file(file))?;
        let source = config::File::from_str(text, config::FileFormat::Toml);
        // The builder reads top-level keys as path expressions, and a key
        // like "a[400000000]" would make it allocate a huge array: refuse
        // unknown sections before the builder sees them.
        let top = source
            .collect()
            .map_err(|e| locate(convert_error(e, &overrides), text, &overrides).in_file(file))?;
        if let Some(key) = top.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            let sections: Vec<String> = SECTIONS.iter().map(|s| format!("`{s}`")).collect();
            let message = format!("unknown field, expected one of {}", sections.join(", "));
            return Err(ConfigError::new(field_path(&[key]), message).in_file(file));
        }
        let convert = |e| convert_error(e, &overrides).in_file(file);
        let merged = config::Config::builder()
            .add_source(source)
            .add_source(overrides.source())
            .build()
            .map_err(convert)?;
        let tree = merged.collect().map_err(convert)?;
        let config: Config = merged.try_deserialize().map_err(convert)?;
        // serde lets a struct be written as an array of its fields in order;
        // no field takes an array, so any array is a mistake.
        if let Some(path) = first_array(tree) {
            return Err(overrides.attribute(ConfigError::new(path, ARRAY_MESSAGE)).in_file(file));
        }
        overrides.check_case(&config).map_err(|e| e.in_file(file))?;
        config.validate().map_err(|e| overrides.attribute(e).in_file(file))?;
        Ok(config)
    }

    /// Checks every value and every cross-reference. The loaders call it;
    /// errors it returns name the file `<config>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.worker.validate()?;
        if self.queues.is_empty() {
            return Err(ConfigError::new(
                "queues",
                "no queues are configured; add at least one, e.g. a [queues.default] table",
            ));
        }
        for (name, queue) in &self.queues {
            queue.validate(name)?;
        }
        for (name, handler) in &self.handlers {
            handler.validate(name, &self.queues)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, every field included, with the
    /// Redis password masked as `****`; for `--check-config`. Unset optional
    /// fields appear as comments. Without secrets, the text loads back into
    /// an equal configuration.
    pub fn redacted(&self) -> String {
        let mut out = String::from("# Effective taskline-worker configuration; secrets are masked.\n");
        let r = &self.redis;
        out += "\n[redis]\n";
        line(&mut out, "url", &toml_string(&mask_url(&r.url)));
        line(&mut out, "prefix", &toml_string(&r.prefix));
        line(&mut out, "response_timeout", &toml_duration(r.response_timeout));
        line(&mut out, "connection_timeout", &toml_duration(r.connection_timeout));
        line(&mut out, "coalesce_calls", &r.coalesce_calls.to_string());

        let w = &self.worker;
        out += "\n[worker]\n";
        match &w.id {
            Some(id) => line(&mut out, "id", &toml_string(id)),
            None => out += "# id is not set: generated at start (hostname-pid-random)\n",
        }
        line(&mut out, "concurrency", &w.concurrency.to_string());
        line(&mut out, "lease", &toml_duration(w.lease));
        match w.heartbeat {
            Some(h) => line(&mut out, "heartbeat", &toml_duration(h)),
            None => {
                let derived = format_duration(w.heartbeat_interval());
                let _ = writeln!(out, "# heartbeat is not set: lease / 3 = {derived}");
            }
        }
        line(&mut out, "shutdown_timeout", &toml_duration(w.shutdown_timeout));
        line(&mut out, "reap_interval", &toml_duration(w.reap_interval));
        line(&mut out, "idle_wait", &toml_duration(w.idle_wait));
        line(&mut out, "claim_batch", &w.claim_batch.to_string());
        line(&mut out, "max_payload_bytes", &w.max_payload_bytes.to_string());
        line(&mut out, "events_max_len", &w.events_max_len.to_string());
        line(&mut out, "progress_interval", &toml_duration(w.progress_interval));
        line(&mut out, "max_checkpoint_bytes", &w.max_checkpoint_bytes.to_string());
        line(&mut out, "log_format", &toml_string(w.log_format.as_str()));
        line(&mut out, "log_payloads", &w.log_payloads.to_string());
        line(&mut out, "version_retry_delay", &toml_duration(w.version_retry_delay));
        line(&mut out, "max_version_retries", &w.max_version_retries.to_string());
        match w.metrics_addr {
            Some(addr) => line(&mut out, "metrics_addr", &toml_string(&addr.to_string())),
            None => out += "# metrics_addr is not set: no /metrics, /healthz, /readyz server\n",
        }

        for (name, q) in &self.queues {
            let _ = writeln!(out, "\n[{}]", field_path(&["queues", name]));
            line(&mut out, "weight", &q.weight.to_string());
            line(&mut out, "strict", &q.strict.to_string());
            line(&mut out, "concurrency", &q.concurrency.to_string());
            line(&mut out, "max_attempts", &q.max_attempts.to_string());
            match q.timeout {
                Some(t) => line(&mut out, "timeout", &toml_duration(t)),
                None => out += "# timeout is not set: no per-attempt timeout\n",
            }
            let b = &q.backoff;
            let backoff = format!(
                "{{ initial = {}, factor = {}, max = {}, jitter = {} }}",
                toml_duration(b.initial),
                toml_float(b.factor),
                toml_duration(b.max),
                toml_string(jitter_name(b.jitter)),
            );
            line(&mut out, "backoff", &backoff);
            let max_age = q.retention.max_age.map_or_else(|| toml_string("none"), toml_duration);
            let retention = format!("{{ keep_last = {}, max_age = {max_age} }}", q.retention.keep_last);
            line(&mut out, "retention", &retention);
            match q.dlq_alert {
                Some(n) => line(&mut out, "dlq_alert", &n.to_string()),
                None => out += "# dlq_alert is not set: no dead-letter depth alert\n",
            }
            match q.rate_limit {
                Some(r) => line(&mut out, "rate_limit", &toml_string(&r.to_string())),
                None => out += "# rate_limit is not set: no global rate limit\n",
            }
            match q.global_concurrency {
                Some(n) => line(&mut out, "global_concurrency", &n.to_string()),
                None => out += "# global_concurrency is not set: no limit across workers\n",
            }
            line(&mut out, "priority_min_share", &toml_float(q.priority_min_share));
        }

        for (name, h) in &self.handlers {
            h.write_toml(&mut out, name);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Validation

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !SCHEMES.iter().any(|s| self.url.starts_with(s)) {
            return Err(ConfigError::new(
                "redis.url",
                format!(
                    "{:?} is not a Redis URL; it must start with {}, e.g. \"redis://127.0.0.1:6379\"",
                    mask_url(&self.url),
                    quoted_list(&SCHEMES)
                ),
            ));
        }
        // The same rule as the client's: the queue's {hash tag} must be the
        // first braces of every key.
        let p = &self.prefix;
        if p.is_empty() || p.len() > 64 || p.chars().any(|c| !c.is_ascii_graphic() || c == '{' || c == '}') {
            return Err(ConfigError::new(
                "redis.prefix",
                format!("{p:?} must be 1 to 64 printable ASCII characters without braces or spaces"),
            ));
        }
        positive("redis.response_timeout", self.response_timeout)?;
        positive("redis.connection_timeout", self.connection_timeout)
    }
}

impl WorkerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.id
            && let Some(problem) = plain_name_problem(id, 100)
        {
            return Err(ConfigError::new("worker.id", format!("{id:?}: {problem}")));
        }
        at_least_one("worker.concurrency", self.concurrency)?;
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "worker.lease",
                format!(
                    "{} is too short; a lease must be at least 1s so heartbeats can keep it alive",
                    format_duration(self.lease)
                ),
            ));
        }
        if let Some(heartbeat) = self.heartbeat {
            positive("worker.heartbeat", heartbeat)?;
            if heartbeat >= self.lease {
                return Err(ConfigError::new(
                    "worker.heartbeat",
                    format!(
                        "{} must be shorter than worker.lease ({}), or leases expire between heartbeats; \
                         leave it unset for lease / 3",
                        format_duration(heartbeat),
                        format_duration(self.lease)
                    ),
                ));
            }
        }
        positive("worker.reap_interval", self.reap_interval)?;
        positive("worker.idle_wait", self.idle_wait)?;
        at_least_one("worker.claim_batch", self.claim_batch)?;
        if self.max_payload_bytes == 0 {
            return Err(ConfigError::new("worker.max_payload_bytes", "must be at least 1"));
        }
        positive("worker.progress_interval", self.progress_interval)?;
        if self.max_checkpoint_bytes == 0 {
            return Err(ConfigError::new("worker.max_checkpoint_bytes", "must be at least 1"));
        }
        positive("worker.version_retry_delay", self.version_retry_delay)
    }
}

impl QueueConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let field = |leaf: &[&str]| {
            let mut parts = vec!["queues", name];
            parts.extend_from_slice(leaf);
            field_path(&parts)
        };
        if let Err(err) = QueueName::new(name) {
            let reason = match err {
                taskline::Error::InvalidQueueName { reason, .. } => reason,
                other => other.to_string(),
            };
            return Err(ConfigError::new(field(&[]), format!("invalid queue name {name:?}: {reason}")));
        }
        at_least_one(&field(&["weight"]), self.weight)?;
        at_least_one(&field(&["concurrency"]), self.concurrency)?;
        at_least_one(&field(&["max_attempts"]), self.max_attempts)?;
        let b = &self.backoff;
        if !(b.factor.is_finite() && b.factor >= 1.0) {
            return Err(ConfigError::new(
                field(&["backoff", "factor"]),
                format!("{} must be a finite number >= 1.0 (2.0 doubles each delay)", b.factor),
            ));
        }
        if b.max < b.initial {
            return Err(ConfigError::new(
                field(&["backoff", "max"]),
                format!(
                    "{} is below backoff.initial ({}); the cap must be at least the first delay",
                    format_duration(b.max),
                    format_duration(b.initial)
                ),
            ));
        }
        if let Some(timeout) = self.timeout {
            positive(&field(&["timeout"]), timeout)?;
        }
        if self.dlq_alert == Some(0) {
            return Err(ConfigError::new(
                field(&["dlq_alert"]),
                "must be at least 1, got 0; leave it unset for no alert",
            ));
        }
        if self.global_concurrency == Some(0) {
            return Err(ConfigError::new(
                field(&["global_concurrency"]),
                "must be at least 1, got 0; leave it unset for no limit, or pause the queue",
            ));
        }
        let share = self.priority_min_share;
        if !(share.is_finite() && (0.0..=0.5).contains(&share)) {
            return Err(ConfigError::new(
                field(&["priority_min_share"]),
                format!("{share} must be between 0.0 (strict priority) and 0.5, e.g. 0.05 for one job in 20"),
            ));
        }
        Ok(())
    }
}

fn at_least_one(field: &str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1, got 0"));
    }
    Ok(())
}

fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be longer than zero, e.g. \"1s\""));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Environment overrides

/// The `TASKLINE_*__*` variables of an environment, with the field each sets.
struct EnvOverrides {
    /// `(variable, dotted field path)`, e.g. `("TASKLINE_WORKER__LEASE", "worker.lease")`.
    fields: Vec<(String, String)>,
    vars: HashMap<String, String>,
}

/// The dotted field path an override variable sets, or `None` when the
/// variable is not an override (wrong prefix or no `__`). Like the `config`
/// crate, this lowercases the name.
fn env_field_path(var: &str) -> Option<String> {
    let lower = var.to_lowercase();
    let rest = lower.strip_prefix(&ENV_PREFIX.to_lowercase())?;
    rest.contains(ENV_SEPARATOR).then(|| rest.replace(ENV_SEPARATOR, "."))
}

impl EnvOverrides {
    fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut fields = Vec::new();
        let mut vars = HashMap::new();
        for (var, value) in env {
            let Some(path) = env_field_path(&var) else { continue };
            // An empty value means unset, as in most deployment templates.
            if value.is_empty() {
                continue;
            }
            // Refuse anything the config crate would read as more than a
            // plain path (brackets index arrays).
            let plain =
                path.split('.').all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'));
            if !plain {
                return Err(ConfigError::new(
                    var,
                    "not a configuration field; write TASKLINE_<SECTION>__<FIELD>, \
                     e.g. TASKLINE_QUEUES__EMAILS__CONCURRENCY",
                ));
            }
            fields.push((var.clone(), path));
            vars.insert(var, value);
        }
        fields.sort();
        Ok(Self { fields, vars })
    }

    fn source(&self) -> config::Environment {
        // No `try_parsing`: values stay strings (an id "007" keeps its
        // zeros), and the deserializer still parses numbers and booleans
        // for fields of those types.
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .source(Some(self.vars.clone().into_iter().collect()))
    }

    /// The variable that set `field` or a field inside or around it.
    fn variable_for(&self, field: &str) -> Option<&str> {
        let related = |path: &str| {
            path == field
                || path.strip_prefix(field).is_some_and(|r| r.starts_with('.'))
                || field.strip_prefix(path).is_some_and(|r| r.starts_with('.'))
        };
        self.fields.iter().find(|(_, path)| related(path)).map(|(var, _)| var.as_str())
    }

    /// Mentions the override variable in an error about a field it set.
    fn attribute(&self, mut err: ConfigError) -> ConfigError {
        if let Some(var) = self.variable_for(&err.field) {
            let _ = write!(err.message, " (set by the environment variable {var})");
        }
        err
    }

    /// Environment names are lowercased, so `TASKLINE_QUEUES__EMAILS__...`
    /// cannot reach a queue named `Emails`: it would quietly create a second
    /// queue. Refuse that.
    fn check_case(&self, config: &Config) -> Result<(), ConfigError> {
        for (var, path) in &self.fields {
            let mut parts = path.splitn(3, '.');
            let (Some(section), Some(name)) = (parts.next(), parts.next()) else { continue };
            let names: Vec<&String> = match section {
                "queues" => config.queues.keys().collect(),
                "handlers" => config.handlers.keys().collect(),
                _ => continue,
            };
            if let Some(twin) = names.iter().find(|n| n.as_str() != name && n.to_lowercase() == name) {
                return Err(ConfigError::new(
                    var.clone(),
                    format!(
                        "environment names are lowercased, so this sets {section}.{name}, not {section}.{twin}; \
                         use lowercase {section} names to override them from the environment"
                    ),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Errors of the config crate

/// Turns an error of the `config` crate into one that names the field.
fn convert_error(err: config::ConfigError, overrides: &EnvOverrides) -> ConfigError {
    if let config::ConfigError::FileParse { cause, .. } = &err {
        return syntax_error(&cause.to_string());
    }
    let (key, message) = describe(err);
    // serde speaks of Rust types ("expected struct QueueConfig", "a map");
    // say what to write in TOML.
    let message =
        match message.split_once(", expected struct ").or_else(|| message.split_once(", expected a map")) {
            Some((head, _)) => format!("{head}, expected a table"),
            None => message,
        };
    let key = key.unwrap_or_default();
    // An index in the key means serde read an array as a struct's fields in
    // order; no field takes an array, so say that instead.
    if let Some((field, _)) = key.split_once('[') {
        // ...except a handler's list fields, whose elements have a type.
        let list_field = field.rsplit('.').next().is_some_and(|leaf| handlers::ARRAY_FIELDS.contains(&leaf));
        let message = if list_field { format!("an element: {message}") } else { ARRAY_MESSAGE.to_string() };
        return overrides.attribute(ConfigError::new(field, message));
    }
    let join = |leaf: &str| if key.is_empty() { leaf.to_string() } else { format!("{key}.{leaf}") };
    let converted = match message.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
        Some((name, rest)) => ConfigError::new(
            join(name),
            format!("unknown field{rest}; check the spelling against config/README.md"),
        ),
        None if key.is_empty() => ConfigError::new("(root)", message),
        None => ConfigError::new(key.clone(), message),
    };
    overrides.attribute(converted)
}

/// The key and the bare message of a `config` crate error.
fn describe(err: config::ConfigError) -> (Option<String>, String) {
    match err {
        config::ConfigError::Type { unexpected, expected, key, .. } => {
            (key, format!("invalid type: {unexpected}, expected {expected}"))
        }
        config::ConfigError::At { error, key, .. } => {
            let (inner_key, message) = describe(*error);
            (key.or(inner_key), message)
        }
        config::ConfigError::NotFound(key) => (Some(key), "missing; this field is required".into()),
        config::ConfigError::Message(message) => (None, message),
        other => (None, other.to_string()),
    }
}

/// The path of some array in a merged configuration tree, if there is one.
fn first_array(tree: config::Map<String, config::Value>) -> Option<String> {
    let mut stack: Vec<(Vec<String>, config::Value)> = tree.into_iter().map(|(k, v)| (vec![k], v)).collect();
    while let Some((path, value)) = stack.pop() {
        match value.kind {
            // A handler's list fields (`args`, ...) are the only arrays.
            config::ValueKind::Array(_)
                if path.len() == 3
                    && path[0] == "handlers"
                    && handlers::ARRAY_FIELDS.contains(&path[2].as_str()) => {}
            config::ValueKind::Array(_) => {
                return Some(field_path(&path.iter().map(String::as_str).collect::<Vec<_>>()));
            }
            config::ValueKind::Table(table) => {
                for (key, value) in table {
                    let mut inner = path.clone();
                    inner.push(key);
                    stack.push((inner, value));
                }
            }
            _ => {}
        }
    }
    None
}

/// A TOML syntax error: `line L, column C` as the field, the last line of
/// the parser's report (without its source excerpt) as the message.
fn syntax_error(report: &str) -> ConfigError {
    let location = report
        .lines()
        .next()
        .and_then(|first| first.split_once(" at "))
        .map(|(_, at)| at.trim().to_string())
        .filter(|at| at.starts_with("line "));
    let what = report.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(report).trim();
    let what = if what == "recursion limit" { "tables or arrays nested too deeply" } else { what };
    ConfigError::new(location.unwrap_or_else(|| UNLOCATED.into()), format!("invalid TOML: {what}"))
}

/// The field of a TOML error the parser reported without a place.
const UNLOCATED: &str = "(toml)";

/// Gives a TOML error that the parser reported without a place (a number
/// out of range, for one) the line where it is: the end of the shortest
/// prefix of `text`, in whole lines, that fails the same way. Only on the
/// error path, and configuration files are small.
fn locate(mut err: ConfigError, text: &str, overrides: &EnvOverrides) -> ConfigError {
    if err.field != UNLOCATED {
        return err;
    }
    let mut end = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        end += line.len();
        let prefix = config::File::from_str(&text[..end], config::FileFormat::Toml);
        if let Err(e) = prefix.collect()
            && convert_error(e, overrides).message == err.message
        {
            err.field = format!("line {}", index + 1);
            break;
        }
    }
    err
}

// ---------------------------------------------------------------------------
// Deserializers

/// A duration written as a string with units: `"30s"`, `"5m"`, `"1h30m"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match d.deserialize_any(DurationVisitor { allow_none: false })? {
        Some(duration) => Ok(duration),
        None => Err(de::Error::custom("invalid duration: a value is required, e.g. \"30s\"")),
    }
}

/// Like [`duration`], and `"none"` means `None`.
/// `"50/1s"`: see [`RateLimit`]'s `FromStr`.
fn optional_rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<RateLimit>().map(Some).map_err(|e| de::Error::custom(e.to_string()))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor { allow_none: true })
}

struct DurationVisitor {
    allow_none: bool,
}

impl DurationVisitor {
    fn integer<E: de::Error>(n: impl fmt::Display) -> Result<Option<Duration>, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a duration is a string with a unit, e.g. \"{n}s\" for seconds or \"{n}ms\" \
             for milliseconds"
        )))
    }
}

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"5m\" or \"1h30m\"")?;
        if self.allow_none {
            f.write_str(", or \"none\"")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if self.allow_none && text == "none" {
            return Ok(None);
        }
        humantime::parse_duration(text).map(Some).map_err(|e| {
            E::custom(format!("invalid duration {text:?}: {e}; write e.g. \"30s\", \"5m\" or \"1h30m\""))
        })
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Self::integer(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Self::integer(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a duration is a string with a unit, e.g. \"30s\", \"1s500ms\" or \"5m\""
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An optional `"ip:port"` socket address; `"none"` or unset means `None`.
fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "none" || text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "invalid address {text:?}: write an IP address and a port, e.g. \"127.0.0.1:9464\", \
             \"0.0.0.0:9464\" or \"[::1]:9464\" (host names are not accepted)"
        ))
    })
}

/// A jitter name with a message that lists the choices.
fn jitter<'de, D: Deserializer<'de>>(d: D) -> Result<Jitter, D::Error> {
    let name = String::deserialize(d)?;
    [Jitter::None, Jitter::Full, Jitter::Equal].into_iter().find(|j| jitter_name(*j) == name).ok_or_else(
        || de::Error::custom(format!("unknown jitter {name:?}; use \"none\", \"full\" or \"equal\"")),
    )
}

fn jitter_name(jitter: Jitter) -> &'static str {
    match jitter {
        Jitter::None => "none",
        Jitter::Full => "full",
        Jitter::Equal => "equal",
    }
}

// ---------------------------------------------------------------------------
// Printing

/// `url` with its password (and any `pass` / `password` query parameter)
/// replaced by `****`. User info without a `:` is masked whole: it may be a
/// token.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let mut out = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    let rest = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out += &format!("{user}:****@"),
                None => out += "****@",
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => {
                        format!("{k}=****")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out + path + "?" + &params.join("&")
        }
        None => out + rest,
    }
}

/// A duration the way it is written in the file: `"1h30m"`, `"1s500ms"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect()
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

fn toml_duration(d: Duration) -> String {
    toml_string(&format_duration(d))
}

fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // `{:?}` keeps the fraction: 2.0, not 2 (which TOML reads as an integer).
        format!("{x:?}")
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A dotted key with segments quoted where TOML needs it:
/// `queues."billing.v2".weight`.
pub(crate) fn field_path(parts: &[&str]) -> String {
    let bare =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    parts.iter().map(|p| if bare(p) { p.to_string() } else { toml_string(p) }).collect::<Vec<_>>().join(".")
}

fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}
