//! The job model: ids, states, what a producer submits and what became
//! of it, what is stored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::names::validate_job_id;
// Kept at this path for the operator modules that read times this way.
pub(crate) use crate::time::{from_epoch_millis, to_epoch_millis};

/// Highest priority level; levels run from 0 (the default) to this, and
/// higher levels are served first.
pub const MAX_PRIORITY: u8 = 9;

/// A job's id: a UUIDv7 by default (time-ordered), or any caller-chosen
/// string of 1 to 200 bytes without whitespace. Use it as the idempotency key
/// of side effects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A fresh UUIDv7 id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// A caller-chosen id, validated.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        validate_job_id(&id)?;
        Ok(Self(id))
    }

    /// Wraps an id read back from Redis (already validated on the way in).
    pub(crate) fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Where a job is. At every moment a job is in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in a ready list to be claimed.
    Ready,
    /// Scheduled for later: a delayed job or a retry backing off.
    Delayed,
    /// Leased by a worker.
    Active,
    /// Finished successfully; kept by retention.
    Completed,
    /// In the dead letter queue; kept until an operator replays or purges it.
    Dead,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] =
        [JobState::Ready, JobState::Delayed, JobState::Active, JobState::Completed, JobState::Dead];

    /// The state's name as stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            format!("unknown job state {s:?}; expected one of ready, delayed, active, completed, dead")
        })
    }
}

/// How a unique key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueMode {
    /// Held until the job completes or dies (with a 24 h backstop TTL after
    /// its due time, so a lost job cannot hold the key forever).
    UntilFinished,
    /// Held for this long from enqueue, whatever happens to the job.
    For(Duration),
}

/// Options of one enqueue. The defaults run the job now, at priority 0,
/// with the client's default attempts and the worker's default backoff.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Caller-chosen id; a UUIDv7 when `None`. Enqueueing an id that exists
    /// fails with [`Error::DuplicateJob`].
    pub job_id: Option<JobId>,
    /// Run after this delay, measured on the Redis server's clock.
    pub delay: Option<Duration>,
    /// Run at this time (interpreted on the Redis server's clock); wins over
    /// `delay`.
    pub run_at: Option<SystemTime>,
    /// Priority level 0..=9; higher levels are served first.
    pub priority: u8,
    /// Attempts before the job is dead; the client's default when `None`.
    pub max_attempts: Option<u32>,
    /// Retry backoff for this job; the queue's when `None`.
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout the worker enforces; the handler's or queue's
    /// when `None`.
    pub timeout: Option<Duration>,
    /// Deduplication key and how long it is held.
    pub unique: Option<(String, UniqueMode)>,
    /// Caller's correlation id, carried into logs and events.
    pub correlation_id: Option<String>,
    /// Payload schema version, so workers can handle jobs enqueued by older
    /// or newer code during a deploy. Defaults to 0.
    pub version: u32,
    /// Mutex group: at most [`Group::limit`] jobs of the group run at once
    /// across all workers; jobs of other groups flow past a busy one.
    pub group: Option<Group>,
}

/// A mutex group key (say `account:42`) and how many of its jobs may run
/// at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group key.
    pub key: String,
    /// Most jobs of the group active at once across all workers (>= 1).
    pub limit: u32,
}

impl Group {
    /// A group that runs one job at a time.
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into(), limit: 1 }
    }

    /// A group that runs up to `limit` jobs at a time.
    pub fn with_limit(key: impl Into<String>, limit: u32) -> Self {
        Self { key: key.into(), limit }
    }
}

/// A job to enqueue: its name (which routes it to a handler), its JSON
/// payload and its options.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) name: String,
    pub(crate) payload: String,
    pub(crate) options: EnqueueOptions,
}

impl NewJob {
    /// A job named `name` carrying `payload` serialized as JSON.
    pub fn new(name: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::to_string(payload).map_err(Error::InvalidPayload)?;
        Ok(Self { name: name.into(), payload, options: EnqueueOptions::default() })
    }

    /// A job whose payload is already JSON text; it is checked to be valid
    /// JSON.
    pub fn from_json(name: impl Into<String>, json: impl Into<String>) -> Result<Self> {
        let payload = json.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&payload).map_err(Error::InvalidPayload)?;
        Ok(Self { name: name.into(), payload, options: EnqueueOptions::default() })
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: EnqueueOptions) -> Self {
        self.options = options;
        self
    }

    /// Uses a caller-chosen id.
    pub fn id(mut self, id: JobId) -> Self {
        self.options.job_id = Some(id);
        self
    }

    /// Runs the job after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }

    /// Runs the job at `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.options.run_at = Some(at);
        self
    }

    /// Sets the priority level (0..=9, higher first).
    pub fn priority(mut self, level: u8) -> Self {
        self.options.priority = level;
        self
    }

    /// Sets the attempt budget.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = Some(attempts);
        self
    }

    /// Overrides the retry backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.options.backoff = Some(backoff);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Deduplicates on `key` while the job is pending or running.
    pub fn unique(mut self, key: impl Into<String>, mode: UniqueMode) -> Self {
        self.options.unique = Some((key.into(), mode));
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.options.correlation_id = Some(id.into());
        self
    }

    /// Sets the payload version.
    pub fn version(mut self, version: u32) -> Self {
        self.options.version = version;
        self
    }

    /// Puts the job in a mutex group (see [`Group`]).
    pub fn group(mut self, group: Group) -> Self {
        self.options.group = Some(group);
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The payload as JSON text.
    pub fn payload_json(&self) -> &str {
        &self.payload
    }
}

/// What happened to one job of a bulk enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Enqueued under this id.
    Created(JobId),
    /// Not enqueued: a job with the same id exists.
    DuplicateId(JobId),
    /// Not enqueued: this job holds the same unique key.
    DuplicateUnique(JobId),
}

impl EnqueueOutcome {
    /// The id of the job that is in the queue now (new or existing).
    pub fn id(&self) -> &JobId {
        match self {
            EnqueueOutcome::Created(id)
            | EnqueueOutcome::DuplicateId(id)
            | EnqueueOutcome::DuplicateUnique(id) => id,
        }
    }

    /// True when the job was enqueued.
    pub fn is_created(&self) -> bool {
        matches!(self, EnqueueOutcome::Created(_))
    }
}

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Timeouts, 5xx, connection loss, and anything ambiguous: retried with
    /// backoff while attempts remain.
    Transient,
    /// Invalid input, a missing resource: straight to the DLQ.
    Permanent,
}

impl FailureKind {
    /// The kind's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
        }
    }
}

/// One failed attempt, as kept in the job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Which attempt failed (1 for the first).
    pub attempt: u32,
    /// Transient or permanent.
    pub kind: FailureKind,
    /// The error text.
    pub message: String,
    /// The worker instance that ran the attempt.
    pub worker: String,
    /// When it failed, on the Redis server's clock.
    #[serde(rename = "at", with = "crate::time::epoch_millis")]
    pub at: SystemTime,
}

/// The facts of a job that both its stored record ([`Job::facts`]) and a
/// worker's lease of it ([`crate::ClaimedJob::facts`]) carry: what it is,
/// how it may run, and how far it got.
#[derive(Debug, Clone)]
pub struct JobFacts {
    /// The job name (routes to a handler).
    pub name: String,
    /// The payload, as JSON text.
    pub payload: String,
    /// Payload schema version.
    pub version: u32,
    /// Priority level.
    pub priority: u8,
    /// Attempts started since enqueue or the last replay; in a claimed job,
    /// the number of the attempt it starts (1 for the first).
    pub attempt: u32,
    /// The attempt budget (the queue's default when the job set none).
    pub max_attempts: u32,
    /// Per-job backoff override, if set at enqueue.
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout, if set at enqueue.
    pub timeout: Option<Duration>,
    /// Correlation id, if any.
    pub correlation_id: Option<String>,
    /// Latest checkpoint (JSON) saved by an attempt, if any.
    pub checkpoint: Option<String>,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// How many times a worker released it without running it (releases
    /// for rate limiting are not counted).
    pub releases: u32,
}

impl JobFacts {
    /// Deserializes the payload.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// A job's full stored record.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Where the job is now.
    pub state: JobState,
    /// Name, payload, attempts and the other facts a claim hands a worker.
    pub facts: JobFacts,
    /// Unique key, if any.
    pub unique_key: Option<String>,
    /// Mutex group key, if any.
    pub group: Option<String>,
    /// When it is (or was) due to run.
    pub due_at: Option<SystemTime>,
    /// When its latest attempt started.
    pub started_at: Option<SystemTime>,
    /// When it completed or died.
    pub finished_at: Option<SystemTime>,
    /// The worker instance of the latest attempt.
    pub worker: Option<String>,
    /// The handler's JSON result, for a completed job.
    pub result: Option<String>,
    /// Every failed attempt, oldest first, across replays.
    pub errors: Vec<AttemptError>,
    /// Why it died, for a dead job (`permanent`, `attempts_exhausted`, or a
    /// worker's reason such as `unknown_job`).
    pub dead_reason: Option<String>,
    /// Why it died before its last replay.
    pub last_dead_reason: Option<String>,
    /// How many times it was replayed from the DLQ.
    pub replays: u32,
    /// When it was last replayed.
    pub replayed_at: Option<SystemTime>,
    /// Latest progress report (JSON), if any.
    pub progress: Option<String>,
}

impl Job {
    /// Decodes a job hash (`HGETALL`). `None` when the hash is empty.
    pub(crate) fn from_fields(queue: &str, mut f: BTreeMap<String, String>) -> Result<Option<Job>> {
        if f.is_empty() {
            return Ok(None);
        }
        let id = f.remove("id").unwrap_or_default();
        let corrupt =
            |field: &'static str, detail: String| Error::CorruptJob { id: id.clone(), field, detail };
        let mut take = |field: &str| f.remove(field).filter(|v| !v.is_empty());
        fn num<T: FromStr>(
            v: Option<String>,
            field: &'static str,
        ) -> Result<Option<T>, (&'static str, String)> {
            v.map(|s| s.parse::<T>().map_err(|_| (field, format!("{s:?} is not a number")))).transpose()
        }
        let parsed = (|| -> Result<Job, (&'static str, String)> {
            let state_text = take("state").unwrap_or_default();
            let state = state_text.parse::<JobState>().map_err(|e| ("state", e))?;
            let errors_count: u32 = num(take("errors"), "errors")?.unwrap_or(0);
            let mut errors = Vec::with_capacity(errors_count as usize);
            for n in 1..=errors_count {
                if let Some(text) = take(&format!("error:{n}")) {
                    let entry: AttemptError =
                        serde_json::from_str(&text).map_err(|e| ("errors", e.to_string()))?;
                    errors.push(entry);
                }
            }
            let backoff = take("backoff")
                .map(|b| serde_json::from_str::<Backoff>(&b).map_err(|e| ("backoff", e.to_string())))
                .transpose()?;
            let ms = |v: Option<u64>| v.map(from_epoch_millis);
            Ok(Job {
                id: JobId::from_stored(String::new()),
                queue: queue.to_string(),
                state,
                facts: JobFacts {
                    name: take("name").unwrap_or_default(),
                    payload: take("payload").unwrap_or_else(|| "null".into()),
                    version: num(take("version"), "version")?.unwrap_or(0),
                    priority: num(take("priority"), "priority")?.unwrap_or(0),
                    attempt: num(take("attempt"), "attempt")?.unwrap_or(0),
                    max_attempts: num(take("max_attempts"), "max_attempts")?.unwrap_or(0),
                    backoff,
                    timeout: num::<u64>(take("timeout_ms"), "timeout_ms")?
                        .filter(|t| *t > 0)
                        .map(Duration::from_millis),
                    correlation_id: take("correlation_id"),
                    checkpoint: take("checkpoint"),
                    created_at: ms(num(take("created_at"), "created_at")?).unwrap_or(UNIX_EPOCH),
                    releases: num(take("releases"), "releases")?.unwrap_or(0),
                },
                unique_key: take("unique_key"),
                group: take("group"),
                due_at: ms(num(take("due_at"), "due_at")?),
                started_at: ms(num(take("started_at"), "started_at")?),
                finished_at: ms(num(take("finished_at"), "finished_at")?),
                worker: take("worker"),
                result: take("result"),
                errors,
                dead_reason: take("dead_reason"),
                last_dead_reason: take("last_dead_reason"),
                replays: num(take("replays"), "replays")?.unwrap_or(0),
                replayed_at: ms(num(take("replayed_at"), "replayed_at")?),
                progress: take("progress"),
            })
        })();
        match parsed {
            Ok(mut job) => {
                job.id = JobId::from_stored(id);
                Ok(Some(job))
            }
            Err((field, detail)) => Err(corrupt(field, detail)),
        }
    }

    /// Deserializes the payload (see [`JobFacts::payload_as`]).
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.facts.payload_as()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_time_ordered_uuids() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
        assert!(a < b, "UUIDv7 ids sort by creation: {a} then {b}");
    }

    #[test]
    fn job_state_round_trips() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("finished".parse::<JobState>().is_err());
    }

    #[test]
    fn new_job_rejects_invalid_json_text() {
        assert!(NewJob::from_json("x", r#"{"a":1}"#).is_ok());
        let err = NewJob::from_json("x", "{not json").expect_err("invalid");
        assert!(matches!(err, Error::InvalidPayload(_)));
    }

    #[test]
    fn attempt_errors_decode_cjson_floats() {
        let e: AttemptError = serde_json::from_str(
            r#"{"attempt":2,"kind":"transient","message":"boom","worker":"w1","at":1.7e+12}"#,
        )
        .expect("decode");
        assert_eq!(to_epoch_millis(e.at), 1_700_000_000_000);
        assert_eq!(e.kind, FailureKind::Transient);
    }

    #[test]
    fn corrupt_fields_are_named() {
        let fields: BTreeMap<String, String> = [("id", "j1"), ("state", "active"), ("attempt", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = Job::from_fields("q", fields).expect_err("corrupt");
        assert!(matches!(err, Error::CorruptJob { field: "attempt", .. }), "{err}");
    }
}
