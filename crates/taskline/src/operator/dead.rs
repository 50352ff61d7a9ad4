//! Finding dead letters: by job name, by error text, by time of death.
//!
//! The dead letter zset is paged oldest death first, [`OPERATOR_CHUNK`] ids
//! at a time ([`Client::list_jobs`]), and each page's records are read in one
//! round trip ([`Client::get_jobs`]). The time filter is applied on the zset
//! itself (its score is the time of death), so `since` skips straight to the
//! first job that qualifies. A scan reads with plain commands, not one
//! atomic script: a job replayed or purged during the scan may shift later
//! pages and be missed, so scan a queue nobody else is acting on, or scan
//! again.

use std::time::SystemTime;

use crate::client::Client;
use crate::error::Result;
use crate::job::{Job, JobId, JobState, to_epoch_millis};
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
}

impl DeadFilter {
    /// True when the filter selects every dead job.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.error_contains.is_none() && self.since.is_none()
    }

    /// True when the conditions that need the job's record are unset, so a
    /// scan can select on the zset alone.
    fn needs_records(&self) -> bool {
        self.name.is_some() || self.error_contains.is_some()
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
