//! The `Client`: a connection to Redis plus the settings every call uses.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::{Script, Value};

use crate::coalesce::{self, Lanes};
use crate::connection::{Connection, RedisTarget, Timeouts};
use crate::error::{Error, Result};
use crate::keys::{QueueKeys, queue_registry};
use crate::names::{QueueName, validate_prefix};
use crate::requests::{CompleteRequest, EnqueueRequest};
use crate::time::{MAX_SCHEDULE, millis};

/// How many completed jobs a queue keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most completed jobs kept; 0 deletes a job as soon as it completes.
    pub keep_last: u64,
    /// Completed jobs older than this are removed; `None` keeps them until
    /// `keep_last` pushes them out.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    /// Bounded by default: the last 1,000 completed jobs, at most a day old.
    fn default() -> Self {
        Self { keep_last: 1_000, max_age: Some(Duration::from_secs(24 * 3600)) }
    }
}

/// Per-queue settings that apply when outcomes are recorded: what a worker's
/// configuration says about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Attempts of a job that did not set its own.
    pub max_attempts: u32,
    /// Completed-job retention.
    pub retention: Retention,
}

/// Settings of a [`Client`]. Build one with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Key prefix of every key (default `taskline`).
    pub prefix: String,
    /// Largest payload or result accepted, in bytes (default 512 KiB).
    pub max_payload_bytes: usize,
    /// Largest checkpoint accepted, in bytes (default 64 KiB).
    pub max_checkpoint_bytes: usize,
    /// Attempts of a job that does not set its own (default 5), for queues
    /// without an entry in `queues`. Applied when failures are recorded, so
    /// it is the recording client's (the worker's) setting that counts.
    pub default_max_attempts: u32,
    /// Backstop lifetime of an `UntilFinished` unique key after the job's
    /// due time (default 24 h).
    pub unique_backstop: Duration,
    /// Completed-job retention applied when a job completes, for queues
    /// without an entry in `queues`.
    pub retention: Retention,
    /// Per-queue overrides of `default_max_attempts` and `retention`.
    pub queues: HashMap<String, QueuePolicy>,
    /// Bound of the number of events in each queue's stream, kept
    /// approximately (default 10,000; 0 disables events). One stream entry
    /// may list several jobs; the stream is trimmed to this bound divided
    /// by the queue's recent average jobs per entry.
    pub events_max_len: u64,
    /// Most due delayed jobs one claim promotes (default 200).
    pub promote_batch: u32,
    /// Longest wait for one reply (default 5 s). Blocking reads must use
    /// their own connection with a longer timeout.
    pub response_timeout: Duration,
    /// Longest wait for a connection (default 5 s).
    pub connection_timeout: Duration,
    /// Merge concurrent enqueues of one queue, and concurrent completions
    /// of one queue, into one script call each (default true): a call that
    /// finds others of its kind in flight goes out with whatever queued up
    /// behind them, so Redis runs one script per batch. A lone call is
    /// never held back. Every call still gets its own answer, and each
    /// job its own outcome; false sends one script call per call.
    pub coalesce_calls: bool,
    /// When a state change counts as made: on the primary (default), or
    /// only once replicas confirm it (see [`Durability`]).
    pub durability: Durability,
}

/// How far a state change must have travelled before a call reports it
/// made. Redis replicates asynchronously, so a primary that dies right
/// after answering can take its last writes with it when a replica takes
/// over; which mode to pick is a trade between that window and the cost of
/// waiting for replicas on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Made once the primary ran the script. A failover within the
    /// replication lag (normally well under a millisecond) may lose the
    /// latest acknowledged changes: an enqueue is then gone; a completion,
    /// failure or release is undone, so the job is still leased and runs
    /// again after its lease expires. Each script's effects replicate as
    /// one transaction, so a replica never holds half a change: no job is
    /// ever in two places or in none.
    #[default]
    Primary,
    /// Made only once `replicas` replicas confirm it (`WAIT`, on the node
    /// that ran the script), within `timeout`; otherwise the call fails with
    /// [`Error::NotReplicated`] and may be resent. Applies to the changes a
    /// caller relies on: enqueue, complete, fail, release, checkpoint,
    /// replay, purge, drain, limits and repairs. Claims, lease extensions,
    /// reaping, trimming and progress do not wait: losing one of them only
    /// runs a job again (at least once) or loses a progress report.
    Replicated {
        /// Replicas that must confirm each change (at least 1).
        replicas: u32,
        /// Longest wait for them.
        timeout: Duration,
    },
}

impl ClientOptions {
    /// The policy of `queue`: its entry in `queues`, else the defaults.
    pub fn policy(&self, queue: &str) -> QueuePolicy {
        self.queues
            .get(queue)
            .copied()
            .unwrap_or(QueuePolicy { max_attempts: self.default_max_attempts, retention: self.retention })
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            prefix: "taskline".into(),
            max_payload_bytes: 512 * 1024,
            max_checkpoint_bytes: 64 * 1024,
            default_max_attempts: 5,
            unique_backstop: Duration::from_secs(24 * 3600),
            retention: Retention::default(),
            queues: HashMap::new(),
            events_max_len: 10_000,
            promote_batch: 200,
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            coalesce_calls: true,
            durability: Durability::Primary,
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    target: RedisTarget,
    options: ClientOptions,
}

impl ClientBuilder {
    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.prefix = prefix.into();
        self
    }

    /// Sets the payload size limit in bytes.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.options.max_payload_bytes = bytes;
        self
    }

    /// Sets the completed-job retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.options.retention = retention;
        self
    }

    /// Sets the events stream bound (0 disables events).
    pub fn events_max_len(mut self, len: u64) -> Self {
        self.options.events_max_len = len;
        self
    }

    /// Sets the default attempt budget.
    pub fn default_max_attempts(mut self, attempts: u32) -> Self {
        self.options.default_max_attempts = attempts;
        self
    }

    /// Sets the reply timeout.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.options.response_timeout = timeout;
        self
    }

    /// Merges concurrent calls into batches, or not (see
    /// [`ClientOptions::coalesce_calls`]).
    pub fn coalesce_calls(mut self, coalesce: bool) -> Self {
        self.options.coalesce_calls = coalesce;
        self
    }

    /// Sets the durability mode (see [`Durability`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Validates the options and connects.
    pub async fn connect(self) -> Result<Client> {
        let options = self.options;
        validate_prefix(&options.prefix)?;
        if options.unique_backstop > MAX_SCHEDULE {
            return Err(Error::InvalidOption {
                option: "unique_backstop",
                reason: "must be at most 100 years".into(),
            });
        }
        if let Some((queue, _)) = options.queues.iter().find(|(_, p)| p.max_attempts == 0) {
            return Err(Error::InvalidOption {
                option: "max_attempts",
                reason: format!("queue {queue:?}: must be at least 1"),
            });
        }
        if let Durability::Replicated { replicas, timeout } = options.durability
            && (replicas == 0 || timeout.is_zero())
        {
            return Err(Error::InvalidOption {
                option: "durability",
                reason: "replicated durability needs at least 1 replica and a timeout above zero".into(),
            });
        }
        if options.default_max_attempts == 0 {
            return Err(Error::InvalidOption {
                option: "default_max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        install_tls_provider();
        let timeouts = Timeouts { response: options.response_timeout, connect: options.connection_timeout };
        let conn = Connection::open(&self.target, timeouts).await?;
        let inner = Inner {
            conn,
            options,
            registered: Mutex::new(HashSet::new()),
            target: self.target,
            enqueue_lanes: Lanes::new(coalesce::ENQUEUE),
            complete_lanes: Lanes::new(coalesce::COMPLETE),
        };
        Ok(Client { inner: Arc::new(inner) })
    }
}

/// A handle to Taskline on one Redis: producer, admin and worker-side
/// protocol calls. Cheap to clone; clones share one multiplexed connection
/// that reconnects by itself. Its only background tasks are the lanes that
/// merge concurrent calls (see [`ClientOptions::coalesce_calls`]); they end
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    options: ClientOptions,
    /// Queues this client has already added to the registry set.
    registered: Mutex<HashSet<String>>,
    /// What it connected to (shown with passwords masked).
    target: RedisTarget,
    /// Concurrent enqueues waiting to share a script call, per queue.
    enqueue_lanes: Lanes<EnqueueRequest>,
    /// Concurrent completions waiting to share a script call, per queue
    /// and claim settings.
    complete_lanes: Lanes<CompleteRequest>,
}

/// A reference to a client's shared state that does not keep it alive:
/// what a coalescing lane holds, so that dropping the last [`Client`]
/// ends its lanes.
#[derive(Clone)]
pub(crate) struct WeakClient(Weak<Inner>);

impl WeakClient {
    /// The client, unless every clone of it has been dropped.
    pub(crate) fn upgrade(&self) -> Option<Client> {
        self.0.upgrade().map(|inner| Client { inner })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to one Redis server with default options. `url` is
    /// `redis://[user:password@]host:port[/db]`, or `rediss://...` for TLS
    /// (verified against the system's root certificates; append `#insecure`
    /// to skip verification, e.g. for a self-signed test server). For
    /// Sentinel or a cluster, see [`Client::builder_for`].
    pub async fn connect(url: &str) -> Result<Client> {
        Self::builder(url).connect().await
    }

    /// Starts building a client for the one server at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        Self::builder_for(RedisTarget::server(url))
    }

    /// Starts building a client for `target`: one server, a primary behind
    /// Sentinel, or a Redis Cluster.
    pub fn builder_for(target: RedisTarget) -> ClientBuilder {
        ClientBuilder { target, options: ClientOptions::default() }
    }

    /// What this client is connected to.
    pub fn target(&self) -> &RedisTarget {
        &self.inner.target
    }

    /// Whether this client talks to a Redis Cluster (where a blocking
    /// command may wait on the keys of one slot only).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, RedisTarget::Cluster(_))
    }

    /// `host:port` of the node that serves `queue` now: the master of its
    /// slot on a cluster, the primary behind Sentinel; `None` on one
    /// server.
    pub async fn node_of(&self, queue: &str) -> Result<Option<String>> {
        let (_, keys) = self.queue_keys(queue)?;
        Ok(self.inner.conn.node_of(&keys.meta()).await?)
    }

    /// A new connection of its own to the node that serves `key` now (the
    /// primary, behind Sentinel), with replies awaited up to
    /// `response_timeout`: for blocking reads (`BLPOP`, `XREAD BLOCK`),
    /// which would stall the shared connection. Ask again after an error:
    /// the node may have changed (failover, moved slot).
    pub async fn blocking_connection(
        &self,
        key: &str,
        response_timeout: Duration,
    ) -> Result<redis::aio::MultiplexedConnection> {
        Ok(self.inner.conn.dedicated(key, response_timeout).await?)
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// A reference that does not keep the client alive (for lanes).
    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient(Arc::downgrade(&self.inner))
    }

    /// The lanes of concurrent enqueues (see [`crate::coalesce`]).
    pub(crate) fn enqueue_lanes(&self) -> &Lanes<EnqueueRequest> {
        &self.inner.enqueue_lanes
    }

    /// The lanes of concurrent completions (see [`crate::coalesce`]).
    pub(crate) fn complete_lanes(&self) -> &Lanes<CompleteRequest> {
        &self.inner.complete_lanes
    }

    /// A clone of the shared connection, for commands outside scripts.
    pub(crate) fn conn(&self) -> Connection {
        self.inner.conn.clone()
    }

    /// Validates a queue name and returns its keys.
    pub(crate) fn queue_keys(&self, queue: &str) -> Result<(QueueName, QueueKeys)> {
        let name = QueueName::new(queue)?;
        let keys = QueueKeys::new(&self.inner.options.prefix, &name);
        Ok((name, keys))
    }

    /// Runs `script` with `keys` and `args`: EVALSHA, and on NOSCRIPT the
    /// whole script by EVAL, which runs it and leaves it cached on the node
    /// that answered (after a restart, a failover to a replica that never
    /// loaded it, or `SCRIPT FLUSH`). Routed like any keyed command, so on
    /// a cluster both go to the node that serves the queue's slot. With
    /// [`Durability::Replicated`], a script that records something a caller
    /// relies on is followed by `WAIT` (see [`Durability`]).
    pub(crate) async fn run(&self, script: &Script, keys: &[String], args: Vec<Vec<u8>>) -> Result<Value> {
        let wait = match self.inner.options.durability {
            Durability::Replicated { replicas, timeout } if crate::scripts::records_promise(script) => {
                Some((replicas, timeout))
            }
            _ => None,
        };
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(&args);
        match self.send_script(&evalsha, wait).await {
            Err(Error::Redis(err))
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let mut eval = redis::cmd("EVAL");
                eval.arg(crate::scripts::source_of(script)).arg(keys.len()).arg(keys).arg(&args);
                self.send_script(&eval, wait).await
            }
            other => other,
        }
    }

    /// Sends one script call, followed in the same pipeline (so on the same
    /// connection, to the same node) by `WAIT replicas timeout` when `wait`
    /// says so. WAIT covers every write this connection sent before it, the
    /// script's included.
    async fn send_script(&self, script_call: &redis::Cmd, wait: Option<(u32, Duration)>) -> Result<Value> {
        let mut conn = self.conn();
        let Some((wanted, timeout)) = wait else {
            return Ok(script_call.query_async(&mut conn).await?);
        };
        let mut pipe = redis::pipe();
        pipe.add_command(script_call.clone()).cmd("WAIT").arg(wanted).arg(millis(timeout).max(1));
        let (value, acked): (Value, u32) = pipe.query_async(&mut conn).await?;
        if acked < wanted {
            return Err(Error::NotReplicated { acked, wanted, timeout });
        }
        Ok(value)
    }

    /// Adds `queue` to the registry of known queues, once per client.
    pub(crate) async fn register_queue(&self, queue: &QueueName) -> Result<()> {
        let first_time = {
            let mut registered = self.inner.registered.lock().unwrap_or_else(|p| p.into_inner());
            registered.insert(queue.as_str().to_string())
        };
        if first_time {
            let mut conn = self.conn();
            let result: redis::RedisResult<()> = redis::cmd("SADD")
                .arg(queue_registry(&self.inner.options.prefix))
                .arg(queue.as_str())
                .query_async(&mut conn)
                .await;
            if let Err(err) = result {
                self.inner.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(queue.as_str());
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// Every queue that was ever enqueued to, sorted.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(queue_registry(&self.inner.options.prefix))
            .query_async(&mut conn)
            .await?;
        names.sort();
        Ok(names)
    }
}

/// Selects rustls's `ring` crypto provider for `rediss://` URLs, once per
/// process. If the application installed a provider already, that one stays.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
