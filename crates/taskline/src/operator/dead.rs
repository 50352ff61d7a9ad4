//! Finding dead letters: by job name, by error text, by how they failed
//! ([`DeadKind`]), by time of death.
//!
//! The dead letter zset is paged oldest death first, [`OPERATOR_CHUNK`] ids
//! at a time ([`Client::list_jobs`]), and each page's records are read in one
//! round trip ([`Client::get_jobs`]). The time filter is applied on the zset
//! itself (its score is the time of death), so `since` skips straight to the
//! first job that qualifies. A scan reads with plain commands, not one
//! atomic script: a job replayed or purged during the scan may shift later
//! pages and be missed, so scan a queue nobody else is acting on, or scan
//! again.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::client::Client;
use crate::error::Result;
use crate::job::{FailureKind, Job, JobId, JobState, to_epoch_millis};
use crate::operator::OPERATOR_CHUNK;

/// Which dead letters to select. Every condition set must hold; an empty
/// filter selects every dead job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// Only jobs with exactly this name.
    pub name: Option<String>,
    /// Only jobs with this text (case-insensitive) in an attempt's error
    /// message or in the reason they died (`permanent`, `unknown_job`, ...).
    pub error_contains: Option<String>,
    /// Only jobs that died at or after this time (Redis server clock).
    pub since: Option<SystemTime>,
    /// Only jobs that failed this way: the kind of their final failure,
    /// what it was, or the reason they died.
    pub kind: Option<DeadKind>,
}

impl DeadFilter {
    /// True when the filter selects every dead job.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.error_contains.is_none() && self.since.is_none() && self.kind.is_none()
    }

    /// True when the conditions that need the job's record are unset, so a
    /// scan can select on the zset alone.
    fn needs_records(&self) -> bool {
        self.name.is_some() || self.error_contains.is_some() || self.kind.is_some()
    }

    /// True when `job` is dead and meets every condition.
    pub fn matches(&self, job: &Job) -> bool {
        if job.state != JobState::Dead {
            return false;
        }
        if self.name.as_ref().is_some_and(|name| *name != job.facts.name) {
            return false;
        }
        if let Some(since) = self.since
            && job.finished_at.is_some_and(|died| died < since)
        {
            return false;
        }
        if self.kind.as_ref().is_some_and(|kind| !kind.matches(job)) {
            return false;
        }
        match &self.error_contains {
            None => true,
            Some(needle) => {
                let needle = needle.to_lowercase();
                job.errors.iter().any(|e| e.message.to_lowercase().contains(&needle))
                    || job.dead_reason.as_ref().is_some_and(|r| r.to_lowercase().contains(&needle))
            }
        }
    }
}

/// How a dead job failed, as [`DeadFilter::kind`] selects it. Parsed from
/// its name ([`DeadKind::NAMES`]): `transient` and `permanent` are the kind
/// of the final failure; `timeout` and `lease_expired` say what the final
/// failure was; every other name is a reason the job died for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadKind {
    /// The final failure was of this kind. `permanent` matches every
    /// permanent failure, whatever reason the handler gave
    /// (`unknown_job`, `invalid_payload`, ...).
    Failure(FailureKind),
    /// The final attempt ran past its timeout (the worker cancelled it).
    Timeout,
    /// The final attempt's lease expired: its worker was lost or stalled,
    /// and the reaper recorded the failure.
    LeaseExpired,
    /// The job died for this reason: one of [`DEATH_REASONS`], or of the
    /// families `http_<status>` and `exit_<code>`.
    Reason(String),
}

/// The reasons Taskline itself records when a job dies: `fail.lua` and
/// `reap.lua` (`attempts_exhausted`), the worker's runner (`unknown_job`,
/// `unsupported_version`), typed payload decoding (`invalid_payload`) and
/// the demo `simulate` handler (`invalid_checkpoint`, `simulated`).
/// `permanent`, the reason of a permanent failure without one, is
/// [`DeadKind::Failure`] instead.
pub const DEATH_REASONS: [&str; 6] = [
    "attempts_exhausted",
    "unknown_job",
    "unsupported_version",
    "invalid_payload",
    "invalid_checkpoint",
    "simulated",
];

/// Families of reasons, a prefix and a number: the HTTP handler's
/// non-retryable status (`http_404`), the command handler's exit code
/// (`exit_3`).
const REASON_FAMILIES: [(&str, &str); 2] = [("http_", "http_<status>"), ("exit_", "exit_<code>")];

/// How the worker's runner words a timed-out attempt: `timed out after 30s`.
const TIMEOUT_MESSAGE: &str = "timed out after";

/// How `lua/reap.lua` words a lost lease.
const LEASE_EXPIRED_MESSAGE: &str = "lease expired";

impl DeadKind {
    /// Every name [`DeadKind::from_str`] accepts, families as
    /// `http_<status>`.
    pub const NAMES: [&str; 12] = [
        "transient",
        "permanent",
        "timeout",
        "lease_expired",
        DEATH_REASONS[0],
        DEATH_REASONS[1],
        DEATH_REASONS[2],
        DEATH_REASONS[3],
        DEATH_REASONS[4],
        DEATH_REASONS[5],
        REASON_FAMILIES[0].1,
        REASON_FAMILIES[1].1,
    ];

    /// True when dead `job` failed this way.
    pub fn matches(&self, job: &Job) -> bool {
        let last = job.errors.last();
        match self {
            DeadKind::Failure(kind) => last.is_some_and(|e| e.kind == *kind),
            DeadKind::Timeout => last.is_some_and(|e| e.message.starts_with(TIMEOUT_MESSAGE)),
            DeadKind::LeaseExpired => last.is_some_and(|e| e.message == LEASE_EXPIRED_MESSAGE),
            DeadKind::Reason(reason) => job.dead_reason.as_deref() == Some(reason.as_str()),
        }
    }
}

impl FromStr for DeadKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(kind) =
            [FailureKind::Transient, FailureKind::Permanent].into_iter().find(|k| k.as_str() == s)
        {
            return Ok(DeadKind::Failure(kind));
        }
        let in_family = |(prefix, _): &(&str, &str)| {
            s.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        match s {
            "timeout" => Ok(DeadKind::Timeout),
            "lease_expired" => Ok(DeadKind::LeaseExpired),
            _ if DEATH_REASONS.contains(&s) || REASON_FAMILIES.iter().any(in_family) => {
                Ok(DeadKind::Reason(s.to_string()))
            }
            _ => Err(format!("unknown kind {s:?}; expected one of {}", DeadKind::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for DeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadKind::Failure(kind) => f.write_str(kind.as_str()),
            DeadKind::Timeout => f.write_str("timeout"),
            DeadKind::LeaseExpired => f.write_str("lease_expired"),
            DeadKind::Reason(reason) => f.write_str(reason),
        }
    }
}

/// What [`Client::find_dead`] found.
#[derive(Debug, Clone, Default)]
pub struct DeadMatches {
    /// The matching jobs, oldest death first, at most the limit asked for.
    pub jobs: Vec<Job>,
    /// How many dead jobs match in all (may exceed `jobs.len()`).
    pub matched: u64,
}

impl Client {
    /// The dead jobs of `queue` that match `filter`, oldest death first: at
    /// most `limit` records (all when `None`), and how many match in all.
    pub async fn find_dead(
        &self,
        queue: &str,
        filter: &DeadFilter,
        limit: Option<usize>,
    ) -> Result<DeadMatches> {
        let limit = limit.unwrap_or(usize::MAX);
        let start = self.dead_offset(queue, filter).await?;
        let mut found = DeadMatches::default();
        if !filter.needs_records() {
            found.matched = self.dead_len(queue).await?.saturating_sub(start);
            let take = found.matched.min(limit as u64);
            let mut offset = start;
            while (found.jobs.len() as u64) < take {
                let page = (take - found.jobs.len() as u64).min(OPERATOR_CHUNK as u64);
                let ids = self.list_jobs(queue, JobState::Dead, offset, page).await?;
                if ids.is_empty() {
                    break;
                }
                offset += ids.len() as u64;
                found.jobs.extend(self.get_jobs(queue, &ids).await?.into_iter().flatten());
            }
            return Ok(found);
        }
        let visit = |job| {
            found.matched += 1;
            if found.jobs.len() < limit {
                found.jobs.push(job);
            }
        };
        self.scan_dead(queue, filter, start, visit, |_, _| {}).await?;
        Ok(found)
    }

    /// The ids of every dead job of `queue` that matches `filter`, oldest
    /// death first: what a bulk replay or purge acts on. `progress` is
    /// called after each page with (dead jobs looked at, dead jobs to look
    /// at in all).
    pub async fn find_dead_ids(
        &self,
        queue: &str,
        filter: &DeadFilter,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Vec<JobId>> {
        let start = self.dead_offset(queue, filter).await?;
        let mut ids = Vec::new();
        if !filter.needs_records() {
            // The zset alone decides: no record needs reading.
            let total = self.dead_len(queue).await?.saturating_sub(start);
            let mut offset = start;
            loop {
                let page = self.list_jobs(queue, JobState::Dead, offset, OPERATOR_CHUNK as u64).await?;
                offset += page.len() as u64;
                let done = page.len() < OPERATOR_CHUNK;
                ids.extend(page);
                progress(ids.len() as u64, total.max(ids.len() as u64));
                if done {
                    return Ok(ids);
                }
            }
        }
        self.scan_dead(queue, filter, start, |job| ids.push(job.id), progress).await?;
        Ok(ids)
    }

    /// Pages through the dead zset from `start`, calling `visit` with each
    /// matching record and, after each page, `page_done` with (dead jobs
    /// looked at, dead jobs to look at).
    async fn scan_dead(
        &self,
        queue: &str,
        filter: &DeadFilter,
        start: u64,
        mut visit: impl FnMut(Job),
        mut page_done: impl FnMut(u64, u64),
    ) -> Result<()> {
        let total = self.dead_len(queue).await?.saturating_sub(start);
        let (mut offset, mut seen) = (start, 0u64);
        loop {
            let ids = self.list_jobs(queue, JobState::Dead, offset, OPERATOR_CHUNK as u64).await?;
            offset += ids.len() as u64;
            let done = ids.len() < OPERATOR_CHUNK;
            let page_len = ids.len() as u64;
            for job in self.get_jobs(queue, &ids).await?.into_iter().flatten() {
                if filter.matches(&job) {
                    visit(job);
                }
            }
            seen += page_len;
            page_done(seen, total.max(seen));
            if done {
                return Ok(());
            }
        }
    }

    /// Where in the dead zset (oldest first) jobs that died at or after
    /// `filter.since` begin.
    async fn dead_offset(&self, queue: &str, filter: &DeadFilter) -> Result<u64> {
        let Some(since) = filter.since else { return Ok(0) };
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let before: u64 = redis::cmd("ZCOUNT")
            .arg(keys.dead())
            .arg("-inf")
            .arg(format!("({}", to_epoch_millis(since)))
            .query_async(&mut conn)
            .await?;
        Ok(before)
    }

    async fn dead_len(&self, queue: &str) -> Result<u64> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        Ok(redis::cmd("ZCARD").arg(keys.dead()).query_async(&mut conn).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A dead job whose last failure is `(kind, message)`, dead for `reason`.
    fn dead(kind: &str, message: &str, reason: &str) -> Job {
        let error = format!(r#"{{"attempt":1,"kind":"{kind}","message":"{message}","worker":"w1","at":1}}"#);
        let fields =
            [("id", "j1"), ("state", "dead"), ("errors", "1"), ("error:1", &error), ("dead_reason", reason)];
        let fields: BTreeMap<String, String> =
            fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Job::from_fields("q", fields).expect("decodes").expect("a job")
    }

    #[test]
    fn every_kind_name_parses_and_prints_back() {
        for name in DeadKind::NAMES.iter().filter(|n| !n.contains('<')) {
            let kind: DeadKind = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(kind.to_string(), *name);
        }
        assert_eq!("http_404".parse(), Ok(DeadKind::Reason("http_404".into())));
        assert_eq!("exit_3".parse(), Ok(DeadKind::Reason("exit_3".into())));
        for bad in ["bogus", "http_", "http_x", "exit_-1", "Permanent", ""] {
            let err = bad.parse::<DeadKind>().expect_err(bad);
            assert!(err.contains("expected one of transient, permanent, timeout"), "{bad}: {err}");
        }
    }

    #[test]
    fn kinds_match_the_final_failure_or_the_reason() {
        let unknown = dead("permanent", "no handler for job name", "unknown_job");
        let timed_out = dead("transient", "timed out after 30s", "attempts_exhausted");
        let lost = dead("transient", "lease expired", "attempts_exhausted");
        let kind = |name: &str| name.parse::<DeadKind>().expect("a kind");
        assert!(kind("permanent").matches(&unknown) && kind("unknown_job").matches(&unknown));
        assert!(!kind("transient").matches(&unknown) && !kind("timeout").matches(&unknown));
        assert!(kind("timeout").matches(&timed_out) && !kind("lease_expired").matches(&timed_out));
        assert!(kind("lease_expired").matches(&lost) && kind("transient").matches(&lost));
        assert!(kind("attempts_exhausted").matches(&lost) && !kind("http_500").matches(&lost));

        let filter = DeadFilter { kind: Some(kind("permanent")), ..DeadFilter::default() };
        assert!(!filter.is_empty() && filter.needs_records());
        assert!(filter.matches(&unknown) && !filter.matches(&timed_out));
    }
}
