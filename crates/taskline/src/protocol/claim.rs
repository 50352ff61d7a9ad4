//! `lua/claim.lua`: lease ready jobs. The decoding of its reply (the
//! claim header and the leased-job records of `lua/includes/claim_jobs.lua`)
//! serves `complete` too, whose reply carries the successors it leased.

use std::time::Duration;

use crate::args::Args;
use crate::backoff::Backoff;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::job::{JobFacts, JobId};
use crate::keys::QueueKeys;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::{from_epoch_millis, millis};

use super::{Claim, ClaimOptions, ClaimedJob, FlowLimit, Lease};

impl Client {
    /// Leases up to `options.count` ready jobs of `queue`, promoting due
    /// delayed jobs first. A paused queue leases nothing.
    pub async fn claim(&self, queue: &str, options: &ClaimOptions) -> Result<Claim> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut args = Args::default();
        args.text(keys.prefix()).push(self.options().events_max_len);
        push_claim_args(&mut args, options, self.options().promote_batch);
        let value = self.run(&SCRIPTS.claim, &claim_keys(&keys), args.0).await?;
        let mut reply = Reply::new(value, "claim")?;
        read_claim(&mut reply, queue, self.options().policy(queue).max_attempts)
    }
}

fn claim_keys(keys: &QueueKeys) -> [String; 5] {
    [keys.meta(), keys.delayed(), keys.active(), keys.levels(), keys.events()]
}

/// Appends the claim arguments shared by `claim.lua` and `complete.lua`:
/// count, lease_ms, token_prefix, worker, promote_limit.
fn push_claim_args(args: &mut Args, options: &ClaimOptions, promote_limit: u32) {
    args.push(options.count)
        .push(millis(options.lease))
        .text(&token_prefix())
        .text(&options.worker)
        .push(promote_limit);
}

/// A fresh random nonce for the lease tokens of one claiming call.
pub(super) fn token_prefix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Reads `{paused, next_due_ms, now_ms, n, limit, records...}` (see
/// `claim_jobs.lua`).
pub(super) fn read_claim(reply: &mut Reply, queue: &str, default_max_attempts: u32) -> Result<Claim> {
    let paused = reply.int("paused")? == 1;
    let next_due = reply.int("next_due_ms")?;
    let now = reply.int("now_ms")?;
    let n = reply.count("n")?;
    let limited = read_limit(reply)?;
    Ok(Claim {
        jobs: read_claimed_jobs(reply, n, queue, default_max_attempts)?,
        paused,
        next_due: (next_due >= 0).then(|| from_epoch_millis(next_due as u64)),
        server_time: (now > 0).then(|| from_epoch_millis(now as u64)),
        limited,
    })
}

fn read_limit(reply: &mut Reply) -> Result<Option<FlowLimit>> {
    Ok(match reply.string("limit")?.as_str() {
        "rate" => Some(FlowLimit::Rate),
        "concurrency" => Some(FlowLimit::Concurrency),
        "hold" => Some(FlowLimit::Hold),
        _ => None,
    })
}

/// Reads `n` leased-job records (see `claim_jobs.lua`): nine values, then
/// the count of optional fields the job has and their name, value pairs.
/// A stored `max_attempts` of 0 means the queue's default.
pub(super) fn read_claimed_jobs(
    reply: &mut Reply,
    n: u32,
    queue: &str,
    default_max_attempts: u32,
) -> Result<Vec<ClaimedJob>> {
    let mut jobs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let id = JobId::from_stored(reply.string("id")?);
        let token = reply.string("lease_token")?;
        let attempt = reply.count("attempt")?;
        let lease_deadline = from_epoch_millis(reply.int("lease_deadline")?.max(0) as u64);
        let name = reply.string("name")?;
        let payload = reply.string("payload")?;
        let version = reply.count("version")?;
        let created_at = from_epoch_millis(reply.int("created_at")?.max(0) as u64);
        let priority = reply.count("priority")?.min(u8::MAX as u32) as u8;
        let options = read_optional_fields(reply, &id)?;
        let max_attempts = match options.max_attempts {
            0 => default_max_attempts,
            n => n,
        };
        let OptionalFields { timeout_ms, backoff, correlation_id, checkpoint, releases, .. } = options;
        jobs.push(ClaimedJob {
            lease: Lease { queue: queue.to_string(), job_id: id, token },
            lease_deadline,
            facts: JobFacts {
                name,
                payload,
                version,
                priority,
                attempt,
                max_attempts,
                backoff,
                timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
                correlation_id,
                checkpoint,
                created_at,
                releases,
            },
        });
    }
    Ok(jobs)
}

/// The optional fields of a leased-job record, as stored (absent: 0 or
/// `None`).
#[derive(Default)]
struct OptionalFields {
    max_attempts: u32,
    timeout_ms: i64,
    backoff: Option<Backoff>,
    correlation_id: Option<String>,
    checkpoint: Option<String>,
    releases: u32,
}

/// Reads a record's count of optional fields and their name, value pairs.
fn read_optional_fields(reply: &mut Reply, id: &JobId) -> Result<OptionalFields> {
    let mut fields = OptionalFields::default();
    for _ in 0..reply.count("optional field count")? {
        let field = reply.string("optional field name")?;
        match field.as_str() {
            "max_attempts" => fields.max_attempts = reply.count("max_attempts")?,
            "timeout_ms" => fields.timeout_ms = reply.int("timeout_ms")?,
            // An empty stored backoff reads as none, as an absent one.
            "backoff" => {
                if let Some(text) = reply.opt_string("backoff")? {
                    let backoff = serde_json::from_str(&text).map_err(|e| Error::CorruptJob {
                        id: id.to_string(),
                        field: "backoff",
                        detail: e.to_string(),
                    })?;
                    fields.backoff = Some(backoff);
                }
            }
            "correlation_id" => fields.correlation_id = reply.opt_string("correlation_id")?,
            "checkpoint" => fields.checkpoint = reply.opt_string("checkpoint")?,
            "releases" => fields.releases = reply.count("releases")?,
            other => {
                return Err(
                    reply.protocol_error(format!("record of job {id}: unknown optional field {other:?}"))
                );
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::read_claimed_jobs;
    use crate::error::Error;
    use crate::reply::Reply;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A record as claim_jobs.lua writes it, with `optional` name, value pairs.
    fn record(id: &str, optional: &[(&str, &str)]) -> Vec<Value> {
        let mut values: Vec<Value> =
            [id, "tok.1", "2", "1700000000000", "send", "{}", "1", "1690000000000", "5"].map(text).to_vec();
        values.push(Value::Int(optional.len() as i64));
        for (field, value) in optional {
            values.extend([text(field), text(value)]);
        }
        values
    }

    #[test]
    fn claimed_records_carry_only_the_optional_fields_a_job_has() {
        let mut values = record("a", &[]);
        values.extend(record("b", &[("releases", "3"), ("max_attempts", "7"), ("correlation_id", "c-1")]));
        let mut reply = Reply::new(Value::Array(values), "claim").expect("array");
        let jobs = read_claimed_jobs(&mut reply, 2, "q", 25).expect("two records");
        assert_eq!(reply.remaining(), 0, "every value read");
        let (a, b) = (&jobs[0], &jobs[1]);
        assert_eq!((a.lease.job_id.as_str(), a.facts.attempt, a.facts.priority), ("a", 2, 5));
        assert_eq!(
            (a.facts.max_attempts, a.facts.releases, a.facts.correlation_id.as_deref()),
            (25, 0, None),
            "defaults"
        );
        assert_eq!(
            (a.facts.timeout, a.facts.backoff.is_none(), a.facts.checkpoint.as_deref()),
            (None, true, None)
        );
        assert_eq!(
            (b.facts.max_attempts, b.facts.releases, b.facts.correlation_id.as_deref()),
            (7, 3, Some("c-1"))
        );
    }

    #[test]
    fn an_empty_backoff_reads_as_none_and_a_garbled_one_names_the_job() {
        let mut reply = Reply::new(Value::Array(record("a", &[("backoff", "")])), "claim").expect("array");
        let jobs = read_claimed_jobs(&mut reply, 1, "q", 25).expect("one record");
        assert!(jobs[0].facts.backoff.is_none());
        let mut reply =
            Reply::new(Value::Array(record("b", &[("backoff", "{not json")])), "claim").expect("array");
        match read_claimed_jobs(&mut reply, 1, "q", 25) {
            Err(Error::CorruptJob { id, field, .. }) => assert_eq!((id.as_str(), field), ("b", "backoff")),
            other => panic!("expected a corrupt-job error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_optional_field_is_a_protocol_error() {
        let mut reply = Reply::new(Value::Array(record("a", &[("colour", "red")])), "claim").expect("array");
        match read_claimed_jobs(&mut reply, 1, "q", 25) {
            Err(Error::Protocol { script, detail }) => {
                assert_eq!(script, "claim");
                assert!(detail.contains("colour"), "{detail}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}
