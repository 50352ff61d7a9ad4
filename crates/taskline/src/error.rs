//! The one error type of the client crate.
//!
//! Variants are named after domain facts so that a caller can act on them;
//! every message says what went wrong and what to do next. A script's
//! refusal of a job, raised as an error code (`LEASE_LOST`,
//! `JOB_NOT_FOUND`) or answered as a per-job status (`lease_lost`,
//! `not_found`), is mapped to a variant in exactly one place,
//! `Error::refused`.

use std::time::Duration;

/// Result alias of the client crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to Taskline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue name cannot be used in Redis keys.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The job name cannot be used.
    #[error("invalid job name {name:?}: {reason}")]
    InvalidJobName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A caller-chosen job id cannot be used.
    #[error("invalid job id {id:?}: {reason}")]
    InvalidJobId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An option is out of range (priority, attempts, prefix, ...).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// The payload (or result) could not be serialized to JSON.
    #[error(
        "the job payload is not valid JSON: {0}; pass JSON text that parses, or a value serde_json can serialize"
    )]
    InvalidPayload(#[source] serde_json::Error),

    /// The serialized payload (or result) exceeds the client's size limit.
    /// Nothing was sent to Redis.
    #[error(
        "the job {what} is {size} bytes, over the {limit}-byte limit; store large data \
         elsewhere and enqueue a reference, or raise max_payload_bytes"
    )]
    PayloadTooLarge {
        /// `payload` or `result`.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A job with this id, or holding this unique key, already exists; the
    /// new job was not enqueued. `existing` names the job that is there.
    #[error("job not enqueued: {cause} is already held by job {existing}")]
    DuplicateJob {
        /// The job that is already there.
        existing: String,
        /// `id "<id>"` or `unique key "<key>"`.
        cause: String,
    },

    /// No job with this id exists in the queue (never enqueued, removed by
    /// retention, or purged).
    #[error("job {id} not found in queue {queue}; it may have been removed by retention or purged")]
    JobNotFound {
        /// The queue searched.
        queue: String,
        /// The missing job id.
        id: String,
    },

    /// The lease token no longer holds the job: the lease expired and the
    /// job was recovered, or it was released. The outcome was not recorded;
    /// another attempt owns the job now, so the caller must stop working on
    /// it and discard its result.
    #[error(
        "lease lost on job {id} in queue {queue}: another attempt owns it now; discard this attempt's outcome"
    )]
    LeaseLost {
        /// The job's queue.
        queue: String,
        /// The job id.
        id: String,
    },

    /// A reply from Redis did not have the shape the script documents: the
    /// scripts on the server differ from this client's (mixed versions?).
    #[error(
        "unexpected reply from script {script}: {detail}; are all clients and workers on the same Taskline version?"
    )]
    Protocol {
        /// The script whose reply was malformed.
        script: &'static str,
        /// What was wrong with it.
        detail: String,
    },

    /// A stored job record could not be decoded.
    #[error("job {id} has a malformed field {field}: {detail}")]
    CorruptJob {
        /// The job id.
        id: String,
        /// The field that failed to decode.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// Redis could not be reached, or answered with an error.
    #[error("redis error: {0}; check that Redis is reachable at the configured URL")]
    Redis(#[from] redis::RedisError),

    /// The Redis deployment is not what the client was told it is (one
    /// server given as a cluster, a cluster node given as one server, a
    /// cluster that is down, sentinels that name no primary). The message
    /// says what to change.
    #[error("{0}")]
    WrongDeployment(String),

    /// With [`crate::Durability::Replicated`]: the change was made on the
    /// primary, but fewer replicas than required confirmed it in time, so it
    /// may or may not survive a failover. Resending the same call is safe
    /// (same job id, same lease token): it changes nothing twice and waits
    /// for the replicas again.
    #[error(
        "the change was made on the primary, but only {acked} of {wanted} replicas confirmed it within \
         {timeout:?}: it may or may not survive a failover; resending the same call (same job id, same \
         lease) is safe, and check the replicas' health"
    )]
    NotReplicated {
        /// Replicas that confirmed the write (`WAIT`'s answer).
        acked: u32,
        /// Replicas required.
        wanted: u32,
        /// How long the client waited for them.
        timeout: Duration,
    },

    /// Connecting took longer than allowed.
    #[error("could not connect to Redis within {0:?}; check the URL and that the server is up")]
    ConnectTimeout(Duration),

    /// The job waited for died: it is in the dead letter queue.
    #[error(
        "job {id} in queue {queue} is dead ({reason}){}; inspect it with `taskline dlq show`, fix the cause, then replay it",
        last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    JobDead {
        /// The job's queue.
        queue: String,
        /// The job id.
        id: String,
        /// Why it died (`permanent`, `attempts_exhausted`, ...).
        reason: String,
        /// The last attempt's error message, if one was recorded.
        last_error: Option<String>,
    },

    /// The job did not finish within the wait. It goes on; nothing was
    /// changed.
    #[error("job {id} in queue {queue} did not finish within {waited:?}; it goes on: wait again or watch it")]
    WaitTimedOut {
        /// The job's queue.
        queue: String,
        /// The job id.
        id: String,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl Error {
    /// Maps an error raised by a Lua script to a domain error (through
    /// [`Error::refused`]). `queue` and `id` name the job the call was
    /// about.
    pub(crate) fn from_script(err: Error, queue: &str, id: &str) -> Self {
        match &err {
            Error::Redis(redis_err) => {
                redis_err.code().and_then(|code| Error::refused(code, queue, id)).unwrap_or(err)
            }
            _ => err,
        }
    }

    /// The error for a job that a script refused to act on, from the
    /// script's word for why: the error code an outcome script raises
    /// (`LEASE_LOST`, `JOB_NOT_FOUND`; see `lua/includes/fence.lua`) or the
    /// status `complete.lua` answers per job of a batch (`lease_lost`,
    /// `not_found`). `None` for any other word. The one place where a
    /// script's answer becomes [`Error::LeaseLost`] or [`Error::JobNotFound`].
    pub(crate) fn refused(word: &str, queue: &str, id: &str) -> Option<Error> {
        match word {
            "LEASE_LOST" | "lease_lost" => Some(Error::LeaseLost { queue: queue.into(), id: id.into() }),
            "JOB_NOT_FOUND" | "not_found" => Some(Error::JobNotFound { queue: queue.into(), id: id.into() }),
            _ => None,
        }
    }

    /// A copy of this error for each request of a batch that failed as a
    /// whole (see [`crate::coalesce`]): the kinds a batch call can return
    /// are copied exactly; any other is described in a `Protocol` error.
    pub(crate) fn for_batch_member(&self, script: &'static str) -> Error {
        match self {
            Error::Redis(err) => Error::Redis(err.clone()),
            Error::ConnectTimeout(after) => Error::ConnectTimeout(*after),
            Error::NotReplicated { acked, wanted, timeout } => {
                Error::NotReplicated { acked: *acked, wanted: *wanted, timeout: *timeout }
            }
            Error::Protocol { script, detail } => Error::Protocol { script, detail: detail.clone() },
            other => Error::Protocol { script, detail: other.to_string() },
        }
    }

    /// True when the error came from the connection (refused, dropped,
    /// timed out) or from a server that is briefly unable to serve
    /// (`LOADING` its data after a restart, `TRYAGAIN`, `MASTERDOWN`,
    /// `CLUSTERDOWN`, `READONLY` from a primary just demoted by a failover),
    /// or when a change was made but not confirmed by enough replicas
    /// ([`Error::NotReplicated`]), rather than from Taskline's rules: the operation's
    /// outcome is unknown and the same call may be retried. Every outcome
    /// script is safe to resend.
    pub fn is_connection_error(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || matches!(
                        e.kind(),
                        ErrorKind::Server(
                            ServerErrorKind::BusyLoading
                                | ServerErrorKind::TryAgain
                                | ServerErrorKind::MasterDown
                                | ServerErrorKind::ClusterDown
                                | ServerErrorKind::ReadOnly
                        )
                    )
            }
            Error::ConnectTimeout(_) | Error::NotReplicated { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_raised_code_and_a_batch_status_of_a_refusal_map_alike() {
        for word in ["LEASE_LOST", "lease_lost"] {
            match Error::refused(word, "q", "j1") {
                Some(Error::LeaseLost { queue, id }) => {
                    assert_eq!((queue.as_str(), id.as_str()), ("q", "j1"))
                }
                other => panic!("{word}: expected a lost lease, got {other:?}"),
            }
        }
        for word in ["JOB_NOT_FOUND", "not_found"] {
            assert!(matches!(Error::refused(word, "q", "j1"), Some(Error::JobNotFound { .. })), "{word}");
        }
        for word in ["completed", "already", "NOSCRIPT", "ERR"] {
            assert!(Error::refused(word, "q", "j1").is_none(), "{word} is no refusal");
        }
    }
}
