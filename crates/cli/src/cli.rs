//! The command line, as clap parses it. Usage errors exit with code 2.

use clap::{Args, Parser, Subcommand};
use taskline::operator::dead::DeadKind;

/// The operator's tool for Taskline queues: see every queue, inspect jobs,
/// replay or purge dead letters, pause, resume and drain queues, and tail
/// lifecycle events.
///
/// Exit codes: 0 ok; 1 operational error (Redis unreachable, unknown queue,
/// missing job, some named jobs not acted on, declined confirmation); 2
/// usage or bad input (bad arguments, invalid JSON payload, a destructive
/// command without confirmation on a non-terminal); 3 `doctor` found
/// broken invariants (after `--repair`: some remain).
#[derive(Debug, Parser)]
#[command(name = "taskline", version, max_term_width = 100)]
pub struct Cli {
    /// Redis to talk to: redis://[user:password@]host:port[/db], or rediss:// for TLS.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: String,

    /// A Redis Cluster instead of --redis-url: seed node URLs, comma-separated
    /// (a few reachable nodes are enough).
    #[arg(long, env = "TASKLINE_CLUSTER", value_delimiter = ',', hide_env_values = true, global = true)]
    pub cluster: Vec<String>,

    /// A primary behind Redis Sentinel instead of --redis-url: the sentinels'
    /// URLs, comma-separated; needs --master-name.
    #[arg(long, env = "TASKLINE_SENTINELS", value_delimiter = ',', hide_env_values = true, global = true)]
    pub sentinels: Vec<String>,

    /// With --sentinels: the name they monitor the primary under.
    #[arg(long, env = "TASKLINE_MASTER_NAME", global = true)]
    pub master_name: Option<String>,

    /// With --sentinels: the password of the primary and its replicas.
    #[arg(long, env = "TASKLINE_MASTER_PASSWORD", hide_env_values = true, global = true)]
    pub master_password: Option<String>,

    /// Key prefix the queues live under (the workers' `prefix`).
    #[arg(long, env = "TASKLINE_PREFIX", default_value = "taskline", global = true)]
    pub prefix: String,

    /// Print JSON for scripts instead of tables (events: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every known queue: jobs per state, paused flag, throughput and lifetime counters.
    Queues,

    /// List jobs of a queue in one state.
    Jobs(JobsArgs),

    /// Show one job's full record: payload, state, attempts and their errors, progress, result, times.
    Job {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },

    /// Enqueue a job and print its id. The payload comes from --payload, --payload-file, or stdin.
    Enqueue(EnqueueArgs),

    /// The dead letter queue: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),

    /// Pause a queue: workers lease nothing from it until it is resumed (running jobs finish).
    Pause {
        /// The queue.
        queue: String,
    },

    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },

    /// Show a queue's queue-wide limits, or change them at run time for every worker at once.
    Limits(LimitsArgs),

    /// Delete every ready job of a queue (delayed, active, completed and dead jobs stay).
    Drain {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Show a queue's latest lifecycle events, and with --follow the new ones as they happen.
    Events(EventsArgs),

    /// Check that every job of a queue is in exactly one place and its state agrees (exit 3 if not).
    Doctor {
        /// The queue.
        queue: String,
        /// Fix what can be fixed safely, each fix one atomic step that re-checks first.
        #[arg(long)]
        repair: bool,
    },
    /// Serve job status, live progress (Server-Sent Events, WebSocket) and enqueue over HTTP,
    /// plus a demo page at /.
    Serve(ServeArgs),
}

/// `taskline serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Any address but loopback requires a token.
    #[arg(long, env = "TASKLINE_SERVE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
    /// Bearer token every API request must present (`Authorization: Bearer TOKEN`, or
    /// `?access_token=TOKEN` where a browser cannot set headers: EventSource, WebSocket).
    #[arg(long, env = "TASKLINE_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "TASKLINE_SERVE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

/// `taskline limits`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// The queue.
    pub queue: String,
    /// Override the global rate limit: N/PERIOD (`50/1s`, `1000/1m`), or `none` for no limit.
    #[arg(long)]
    pub rate: Option<String>,
    /// Override the global concurrency (jobs active at once across all workers): N, or `none`.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Drop the runtime overrides: the workers' configured limits apply again.
    #[arg(long, conflicts_with_all = ["rate", "concurrency"])]
    pub clear: bool,
}

/// `taskline jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The queue.
    pub queue: String,
    /// The state: ready, delayed, active, completed or dead.
    #[arg(long)]
    pub state: String,
    /// Only jobs with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Most jobs to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
}

/// `taskline enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue.
    pub queue: String,
    /// The job name (routes the job to a handler).
    pub name: String,
    /// The payload as JSON text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the payload (JSON) from this file; `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<String>,
    /// Run after this delay (e.g. 30s, 10m, 1h 30m), on the Redis server's clock.
    #[arg(long)]
    pub delay: Option<String>,
    /// Priority level 0 to 9; higher levels are served first.
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Deduplicate: no second job with this key is enqueued until this one completes or dies.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// Attempts before the job goes to the dead letter queue (default: the workers').
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Mutex group: at most one job of the group runs at a time across all workers.
    #[arg(long, value_name = "KEY")]
    pub group: Option<String>,
    /// Use this job id instead of a generated one.
    #[arg(long)]
    pub id: Option<String>,
    /// Correlation id, carried into logs and events.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Payload schema version.
    #[arg(long, default_value_t = 0)]
    pub payload_version: u32,
}

/// `taskline dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead jobs (oldest death first), optionally filtered.
    List {
        /// The queue.
        queue: String,
        /// Which dead jobs.
        #[command(flatten)]
        filter: FilterArgs,
        /// Most jobs to show (0 shows all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },

    /// Show one dead job's full record.
    Show {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },

    /// Put dead jobs back to ready with a fresh attempt budget, keeping their history.
    Replay(SelectArgs),

    /// Delete dead jobs for good (asks for confirmation; --yes to skip it).
    Purge {
        /// Which dead jobs.
        #[command(flatten)]
        select: SelectArgs,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Filters on dead jobs; every filter given must hold.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only jobs with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only jobs with this text (case-insensitive) in an error message or in the reason they died.
    #[arg(long, value_name = "TEXT")]
    pub error_contains: Option<String>,
    /// Only jobs that died since then: a duration back from now (30m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only jobs that failed this way. The kind of the final failure: transient, permanent (any
    /// permanent failure, whatever its reason); what it was: timeout, lease_expired; or the reason
    /// the job died: attempts_exhausted, unknown_job, unsupported_version, invalid_payload,
    /// invalid_checkpoint, simulated, http_<status>, exit_<code>.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<DeadKind>,
}

impl FilterArgs {
    /// True when no filter is given.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.error_contains.is_none() && self.since.is_none() && self.kind.is_none()
    }
}

/// Which dead jobs a replay or purge acts on: ids, --all, or filters.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// The queue.
    pub queue: String,
    /// Job ids.
    pub ids: Vec<String>,
    /// Every dead job of the queue.
    #[arg(long)]
    pub all: bool,
    /// Every dead job that matches these filters.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `taskline events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The queue.
    pub queue: String,
    /// Keep printing new events as they happen (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many past events to show first: the latest N. With --follow, only events newer than
    /// those follow; 0 shows no past event (with --follow: only new ones).
    #[arg(long, short = 'n', default_value_t = 20)]
    pub count: usize,
}
