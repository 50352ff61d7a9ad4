//! Read paths and operator actions: one job's record, counts per state,
//! dead-letter replay.

use std::collections::BTreeMap;

use crate::args::Args;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, JobState};
use crate::reply::Reply;
use crate::scripts::SCRIPTS;

/// How many jobs of a queue are in each state, read in one atomic snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting to be claimed.
    pub ready: u64,
    /// Scheduled or backing off.
    pub delayed: u64,
    /// Leased by workers.
    pub active: u64,
    /// Completed and kept by retention.
    pub completed: u64,
    /// In the dead letter queue.
    pub dead: u64,
    /// The queue is paused.
    pub paused: bool,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Jobs moved back to ready.
    pub replayed: u32,
    /// Ids that were not in the dead letter queue (left alone).
    pub not_dead: Vec<JobId>,
}

impl Client {
    /// The full record of one job.
    pub async fn get_job(&self, queue: &str, id: &JobId) -> Result<Job> {
        let (name, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let fields: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(keys.job(id.as_str())).query_async(&mut conn).await?;
        let mut job = Job::from_fields(name.as_str(), fields)?
            .ok_or_else(|| Error::JobNotFound { queue: queue.to_string(), id: id.to_string() })?;
        if job.facts.max_attempts == 0 {
            job.facts.max_attempts = self.options().policy(queue).max_attempts;
        }
        Ok(job)
    }

    /// How many jobs of `queue` are in each state.
    pub async fn counts(&self, queue: &str) -> Result<Counts> {
        let (_, keys) = self.queue_keys(queue)?;
        let script_keys =
            [keys.meta(), keys.levels(), keys.delayed(), keys.active(), keys.completed(), keys.dead()];
        let mut args = Args::default();
        args.text(keys.prefix());
        let value = self.run(&SCRIPTS.counts, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "counts")?;
        let mut next = |what| reply.int(what).map(|n| n.max(0) as u64);
        Ok(Counts {
            ready: next("ready")?,
            delayed: next("delayed")?,
            active: next("active")?,
            completed: next("completed")?,
            dead: next("dead")?,
            paused: next("paused")? == 1,
        })
    }

    /// Moves dead jobs back to ready with a fresh attempt budget, keeping
    /// their history. Ids not in the dead letter queue are reported.
    pub async fn replay(&self, queue: &str, ids: &[JobId]) -> Result<Replayed> {
        let (_, keys) = self.queue_keys(queue)?;
        let script_keys = [keys.meta(), keys.dead(), keys.levels(), keys.events()];
        let mut replayed = Replayed::default();
        for chunk in ids.chunks(1_000) {
            let mut args = Args::default();
            args.text(keys.prefix()).push(self.options().events_max_len);
            for id in chunk {
                args.text(id.as_str());
            }
            let value = self.run(&SCRIPTS.replay, &script_keys, args.0).await?;
            let mut reply = Reply::new(value, "replay")?;
            replayed.replayed += reply.count("replayed")?;
            while reply.remaining() > 0 {
                replayed.not_dead.push(JobId::from_stored(reply.string("id")?));
            }
        }
        Ok(replayed)
    }

    /// Ids of up to `limit` jobs of `queue` in `state`, skipping the first
    /// `offset`. Ready jobs come in the order claims take them; delayed by
    /// due time; active by lease deadline; completed and dead oldest first.
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<JobId>> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let zset = match state {
            JobState::Ready => None,
            JobState::Delayed => Some(keys.delayed()),
            JobState::Active => Some(keys.active()),
            JobState::Completed => Some(keys.completed()),
            JobState::Dead => Some(keys.dead()),
        };
        let ids: Vec<String> = match zset {
            // By rank, which finds the page's start in O(log n) however deep
            // it is; `active` also holds its skiplist anchor at +inf
            // (lua/includes/active.lua), which is not a job and always
            // sorts last, so the last page drops it.
            Some(key) => {
                let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(offset)
                    .arg(offset + limit - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                page.into_iter().filter(|(_, score)| score.is_finite()).map(|(id, _)| id).collect()
            }
            None => {
                // Highest level first; within a level the right end is the
                // front, so the page is read with negative indexes, reversed.
                let levels: Vec<u8> =
                    redis::cmd("ZREVRANGE").arg(keys.levels()).arg(0).arg(-1).query_async(&mut conn).await?;
                let (mut skip, mut ids) = (offset, Vec::new());
                for level in levels {
                    let len: u64 = redis::cmd("LLEN").arg(keys.ready(level)).query_async(&mut conn).await?;
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    let want = (limit - ids.len() as u64).min(len - skip);
                    let (first, last) = (-((skip + want) as i64), -(skip as i64) - 1);
                    let mut page: Vec<String> = redis::cmd("LRANGE")
                        .arg(keys.ready(level))
                        .arg(first)
                        .arg(last)
                        .query_async(&mut conn)
                        .await?;
                    page.reverse();
                    ids.extend(page);
                    skip = 0;
                    if ids.len() as u64 >= limit {
                        break;
                    }
                }
                ids
            }
        };
        Ok(ids.into_iter().map(JobId::from_stored).collect())
    }

    /// Pauses `queue` across all workers: claims lease nothing until
    /// [`Client::resume`]; running jobs finish and enqueue still works.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, true).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, false).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic().hset(keys.meta(), "paused", if paused { "1" } else { "0" }).ignore();
        if !paused {
            // Idle workers treat a paused queue as empty and block: wake one
            // (the wake list stays tiny: claims consume tokens, LTRIM caps it).
            pipe.lpush(keys.wake(), "1").ignore().ltrim(keys.wake(), 0, 3).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}
