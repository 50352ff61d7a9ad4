//! Producer API: enqueue one job or many.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::args::Args;
use crate::client::{Client, WeakClient};
use crate::error::{Error, Result};
use crate::job::{JobId, MAX_PRIORITY, NewJob, UniqueMode};
use crate::names::validate_job_name;
use crate::reply::Reply;
use crate::requests::EnqueueRequest;
use crate::scripts::SCRIPTS;
use crate::time::{millis, to_epoch_millis};

pub use crate::job::EnqueueOutcome;
pub use crate::time::MAX_SCHEDULE;

/// Jobs sent per script call by [`Client::enqueue_bulk`]: large enough to
/// amortize the round trip, small enough not to stall Redis for long.
pub const BULK_CHUNK: usize = 1_000;

/// Longest unique key or correlation id accepted, in bytes.
const MAX_TAG_LEN: usize = 200;

impl Client {
    /// Enqueues one job on `queue` and returns its id. A job whose id or
    /// unique key is already taken is not enqueued:
    /// [`Error::DuplicateJob`] names the existing job.
    ///
    /// ```no_run
    /// # async fn demo() -> taskline::Result<()> {
    /// use taskline::{Client, NewJob};
    /// let client = Client::connect("redis://127.0.0.1:6379").await?;
    /// let job = NewJob::new("send_email", &serde_json::json!({"to": "ada@example.com"}))?;
    /// let id = client.enqueue("emails", job).await?;
    /// println!("enqueued {id}");
    /// # Ok(()) }
    /// ```
    ///
    /// Concurrent calls for one queue share script calls (see
    /// [`crate::ClientOptions::coalesce_calls`]); each job is still created,
    /// or reported as a duplicate, on its own.
    pub async fn enqueue(&self, queue: &str, job: NewJob) -> Result<JobId> {
        self.queue_keys(queue)?;
        self.validate(&job)?;
        let unique_key = job.options.unique.as_ref().map(|(key, _)| key.clone());
        let outcome = if self.options().coalesce_calls {
            self.enqueue_coalesced(queue, job).await?
        } else {
            self.enqueue_chunk(queue, std::slice::from_ref(&job)).await?.pop()
        };
        match outcome {
            Some(EnqueueOutcome::Created(id)) => Ok(id),
            Some(EnqueueOutcome::DuplicateId(existing)) => Err(Error::DuplicateJob {
                cause: format!("id {:?}", existing.as_str()),
                existing: existing.to_string(),
            }),
            Some(EnqueueOutcome::DuplicateUnique(existing)) => Err(Error::DuplicateJob {
                cause: format!("unique key {:?}", unique_key.unwrap_or_default()),
                existing: existing.to_string(),
            }),
            None => Err(Error::Protocol { script: "enqueue", detail: "empty reply".into() }),
        }
    }

    /// Enqueues many jobs, [`BULK_CHUNK`] per round trip, each chunk atomic.
    /// Every job is validated before anything is sent, so one bad job
    /// enqueues nothing. Returns one outcome per job, in order; duplicates
    /// are reported, not errors.
    pub async fn enqueue_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>> {
        self.queue_keys(queue)?;
        for job in &jobs {
            self.validate(job)?;
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(BULK_CHUNK) {
            outcomes.extend(self.enqueue_chunk(queue, chunk).await?);
        }
        Ok(outcomes)
    }

    /// Queues one validated job on the queue's enqueue lane and waits for
    /// the batch it travels in.
    async fn enqueue_coalesced(&self, queue: &str, job: NewJob) -> Result<Option<EnqueueOutcome>> {
        let (reply, answer) = oneshot::channel();
        let client = self.downgrade();
        let lane_queue = queue.to_string();
        self.enqueue_lanes().submit(queue, EnqueueRequest { job, reply }, move |batch| {
            enqueue_batch(client.clone(), lane_queue.clone(), batch)
        });
        let outcome = answer.await.map_err(|_| Error::Protocol {
            script: "enqueue",
            detail: "the batch of this call was dropped unanswered (runtime shutting down?)".into(),
        })??;
        Ok(Some(outcome))
    }

    /// Sends one chunk of already validated jobs.
    async fn enqueue_chunk(&self, queue: &str, jobs: &[NewJob]) -> Result<Vec<EnqueueOutcome>> {
        let (name, keys) = self.queue_keys(queue)?;
        let options = self.options();
        let mut args = Args::default();
        args.text(keys.prefix()).push(options.events_max_len).push(jobs.len());
        for job in jobs {
            self.push_job_args(&mut args, job)?;
        }
        self.register_queue(&name).await?;
        let script_keys = [keys.meta(), keys.delayed(), keys.levels(), keys.events()];
        let value = self.run(&SCRIPTS.enqueue, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "enqueue")?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for _ in jobs {
            let status = reply.string("status")?;
            let id = JobId::from_stored(reply.string("id")?);
            outcomes.push(match status.as_str() {
                "created" => EnqueueOutcome::Created(id),
                "duplicate_id" => EnqueueOutcome::DuplicateId(id),
                "duplicate_unique" => EnqueueOutcome::DuplicateUnique(id),
                other => {
                    return Err(Error::Protocol {
                        script: "enqueue",
                        detail: format!("unknown status {other:?}"),
                    });
                }
            });
        }
        Ok(outcomes)
    }

    /// Checks everything about a job that Redis would otherwise store
    /// blindly.
    fn validate(&self, job: &NewJob) -> Result<()> {
        validate_job_name(&job.name)?;
        let limit = self.options().max_payload_bytes;
        if job.payload.len() > limit {
            return Err(Error::PayloadTooLarge { what: "payload", size: job.payload.len(), limit });
        }
        let o = &job.options;
        if o.priority > MAX_PRIORITY {
            return Err(Error::InvalidOption {
                option: "priority",
                reason: format!("{} is above the highest level {MAX_PRIORITY}", o.priority),
            });
        }
        if o.max_attempts == Some(0) {
            return Err(Error::InvalidOption { option: "max_attempts", reason: "must be at least 1".into() });
        }
        if let Some(backoff) = &o.backoff {
            backoff.validate()?;
        }
        if let Some((key, mode)) = &o.unique {
            check_tag("unique key", key)?;
            if *mode == UniqueMode::For(Duration::ZERO) {
                return Err(Error::InvalidOption {
                    option: "unique",
                    reason: "a TTL of zero holds nothing".into(),
                });
            }
            if let UniqueMode::For(ttl) = mode {
                check_schedule("unique", *ttl)?;
            }
        }
        if let Some(delay) = o.delay {
            check_schedule("delay", delay)?;
        }
        if let Some(at) = o.run_at {
            let distance = match at.duration_since(SystemTime::now()) {
                Ok(ahead) => ahead,
                Err(past) => past.duration(),
            };
            check_schedule("run_at", distance)?;
        }
        if let Some(correlation_id) = &o.correlation_id {
            check_tag("correlation id", correlation_id)?;
        }
        if let Some(group) = &o.group {
            check_tag("group", &group.key)?;
            if group.limit == 0 {
                return Err(Error::InvalidOption {
                    option: "group",
                    reason: "a group limit of 0 would never run a job; use at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// Appends one job's arguments of `enqueue.lua`: the 7 fixed values,
    /// then only the options that are set, as name, value pairs.
    fn push_job_args(&self, args: &mut Args, job: &NewJob) -> Result<()> {
        let o = &job.options;
        // A generated id is a fresh UUIDv7: the script need not look for
        // an existing job under it.
        let (id, fresh) = match &o.job_id {
            Some(id) => (id.clone(), "0"),
            None => (JobId::generate(), "1"),
        };
        let mut options: Vec<(&str, String)> = Vec::new();
        let delay = o.delay.unwrap_or_default();
        if !delay.is_zero() {
            options.push(("delay_ms", millis(delay).to_string()));
        }
        if let Some(at) = o.run_at {
            options.push(("run_at_ms", to_epoch_millis(at).to_string()));
        }
        if let Some(attempts) = o.max_attempts {
            options.push(("max_attempts", attempts.to_string()));
        }
        if let Some(timeout) = o.timeout {
            options.push(("timeout_ms", millis(timeout).to_string()));
        }
        if let Some(backoff) = &o.backoff {
            options.push(("backoff", serde_json::to_string(backoff).map_err(Error::InvalidPayload)?));
        }
        if let Some((key, mode)) = &o.unique {
            let (ttl, mode) = match mode {
                UniqueMode::For(ttl) => (*ttl, "ttl"),
                UniqueMode::UntilFinished => {
                    let until_due = match o.run_at {
                        Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
                        None => delay,
                    };
                    (until_due.saturating_add(self.options().unique_backstop), "until_finished")
                }
            };
            options.push(("unique_key", key.clone()));
            options.push(("unique_ttl_ms", millis(ttl).max(1).to_string()));
            options.push(("unique_mode", mode.to_string()));
        }
        if let Some(correlation_id) = &o.correlation_id {
            options.push(("correlation_id", correlation_id.clone()));
        }
        if let Some(group) = &o.group {
            options.push(("group", group.key.clone()));
            options.push(("group_max", group.limit.to_string()));
        }
        args.text(id.as_str())
            .text(fresh)
            .text(&job.name)
            .text(&job.payload)
            .push(o.version)
            .push(o.priority)
            .push(options.len());
        for (name, value) in &options {
            args.text(name).text(value);
        }
        Ok(())
    }
}

/// Runs one batch of coalesced enqueues as one chunk and answers each
/// caller with its own job's outcome.
async fn enqueue_batch(client: WeakClient, queue: String, batch: Vec<EnqueueRequest>) {
    let Some(client) = client.upgrade() else { return };
    let (jobs, replies): (Vec<NewJob>, Vec<_>) = batch.into_iter().map(|r| (r.job, r.reply)).unzip();
    match client.enqueue_chunk(&queue, &jobs).await {
        // enqueue_chunk reads exactly one outcome per job.
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_batch_member("enqueue")));
            }
        }
    }
}

fn check_schedule(what: &'static str, span: Duration) -> Result<()> {
    if span > MAX_SCHEDULE {
        return Err(Error::InvalidOption {
            option: what,
            reason: format!("{span:?} is more than 100 years away; use a shorter time"),
        });
    }
    Ok(())
}

fn check_tag(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_TAG_LEN || value.chars().any(char::is_control) {
        return Err(Error::InvalidOption {
            option: what,
            reason: format!("{value:?} must be 1 to {MAX_TAG_LEN} bytes without control characters"),
        });
    }
    Ok(())
}
