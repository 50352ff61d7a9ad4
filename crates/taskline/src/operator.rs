//! Operator actions: what the `taskline` CLI needs beyond [`crate::admin`].
//!
//! - [`Client::queue_summary`] and [`Client::queue_known`]: one queue at a
//!   glance (counts, counters, recent throughput), and whether a name is a
//!   queue at all (so a typo is reported, not shown as an empty queue).
//! - [`Client::get_jobs`]: many job records in one round trip.
//! - [`Client::purge_dead`]: the only way a dead letter leaves (`lua/purge.lua`).
//! - [`Client::drain_ready`]: remove every ready job of a queue (`lua/drain.lua`).
//! - [`events`]: read and follow the per-queue lifecycle event stream.
//! - [`dead`]: find dead letters by name, error text and time of death.
//!
//! Bulk actions work in chunks of [`OPERATOR_CHUNK`] ids per script call, so
//! no call holds Redis for long, and report progress through callbacks so a
//! caller can draw a progress bar.

pub mod dead;
pub mod events;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::admin::Counts;
use crate::args::Args;
use crate::client::Client;
use crate::error::Result;
use crate::job::{Job, JobId};
use crate::keys::queue_registry;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::to_epoch_millis;

/// Ids (or ready jobs) handled per script call by bulk operator actions.
pub const OPERATOR_CHUNK: usize = 1_000;

/// The window of [`QueueSummary::completed_last_minute`].
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// The result of [`Client::purge_dead`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Dead jobs removed for good.
    pub purged: u32,
    /// Ids that were not in the dead letter queue (left alone).
    pub not_dead: Vec<JobId>,
}

/// The result of [`Client::drain_ready`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Ready jobs deleted.
    pub drained: u64,
    /// Ids dropped from the ready lists that had no ready job behind them
    /// (a missing hash, or a stray entry of a job that lives elsewhere).
    pub skipped: u64,
}

/// One queue at a glance, for `taskline queues`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// The queue name.
    pub queue: String,
    /// Jobs per state, and the paused flag.
    pub counts: Counts,
    /// Lifetime counters from the queue's `meta` hash (`enqueued`,
    /// `completed`, `retried`, `dead`, `replayed`, `purged`, `drained`, ...);
    /// a counter never written is absent.
    pub counters: BTreeMap<String, u64>,
    /// Jobs that completed in the last [`THROUGHPUT_WINDOW`], on the Redis
    /// server's clock, counted in the completed set.
    pub completed_last_minute: u64,
    /// True when retention may have trimmed jobs that completed within the
    /// window (every kept completed job is inside it and more completed in
    /// all), so `completed_last_minute` is a lower bound.
    pub completed_last_minute_is_lower_bound: bool,
}

impl QueueSummary {
    /// A lifetime counter, 0 when never written.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

impl Client {
    /// The Redis server's clock: the one clock Taskline measures time on.
    /// Compare job and event times with this, not with the local clock.
    pub async fn server_time(&self) -> Result<SystemTime> {
        let mut conn = self.conn();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    /// True when `queue` is in the registry of queues or has any key: a name
    /// for which this is false is most likely a typo.
    pub async fn queue_known(&self, queue: &str) -> Result<bool> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let registered: bool = redis::cmd("SISMEMBER")
            .arg(queue_registry(&self.options().prefix))
            .arg(queue)
            .query_async(&mut conn)
            .await?;
        if registered {
            return Ok(true);
        }
        // One slot: every key of the queue carries its hash tag.
        let existing: u64 = redis::cmd("EXISTS")
            .arg(keys.meta())
            .arg(keys.levels())
            .arg(keys.delayed())
            .arg(keys.active())
            .arg(keys.completed())
            .arg(keys.dead())
            .arg(keys.events())
            .query_async(&mut conn)
            .await?;
        Ok(existing > 0)
    }

    /// Counts, lifetime counters and recent throughput of `queue`.
    pub async fn queue_summary(&self, queue: &str) -> Result<QueueSummary> {
        let counts = self.counts(queue).await?;
        let (_, keys) = self.queue_keys(queue)?;
        let now = to_epoch_millis(self.server_time().await?);
        let since = now.saturating_sub(THROUGHPUT_WINDOW.as_millis() as u64);
        let mut conn = self.conn();
        let (meta, recent, oldest): (BTreeMap<String, String>, u64, Vec<(String, f64)>) = redis::pipe()
            .cmd("HGETALL")
            .arg(keys.meta())
            .cmd("ZCOUNT")
            .arg(keys.completed())
            .arg(since)
            .arg("+inf")
            .cmd("ZRANGE")
            .arg(keys.completed())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let counters: BTreeMap<String, u64> =
            meta.into_iter().filter_map(|(k, v)| v.parse::<u64>().ok().map(|n| (k, n))).collect();
        let oldest_kept_is_recent = oldest.first().is_some_and(|(_, score)| *score as u64 >= since);
        let completed_total = counters.get("completed").copied().unwrap_or(0);
        Ok(QueueSummary {
            queue: queue.to_string(),
            counts,
            completed_last_minute: recent,
            completed_last_minute_is_lower_bound: oldest_kept_is_recent && completed_total > recent,
            counters,
        })
    }

    /// The records of `ids` in `queue`, in order, in one round trip; `None`
    /// for an id without a job.
    pub async fn get_jobs(&self, queue: &str, ids: &[JobId]) -> Result<Vec<Option<Job>>> {
        let (name, keys) = self.queue_keys(queue)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(keys.job(id.as_str()));
        }
        let mut conn = self.conn();
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await?;
        let default_attempts = self.options().policy(queue).max_attempts;
        hashes
            .into_iter()
            .map(|fields| {
                let mut job = Job::from_fields(name.as_str(), fields)?;
                if let Some(job) = job.as_mut().filter(|job| job.facts.max_attempts == 0) {
                    job.facts.max_attempts = default_attempts;
                }
                Ok(job)
            })
            .collect()
    }

    /// Removes the named dead jobs of `queue` for good: each leaves the dead
    /// letter queue and its record is deleted, with a `purged` event. Ids
    /// that are not dead are reported and left alone. Sent in chunks of
    /// [`OPERATOR_CHUNK`] ids.
    pub async fn purge_dead(&self, queue: &str, ids: &[JobId]) -> Result<Purged> {
        let (_, keys) = self.queue_keys(queue)?;
        let script_keys = [keys.meta(), keys.dead(), keys.events()];
        let mut purged = Purged::default();
        for chunk in ids.chunks(OPERATOR_CHUNK) {
            let mut args = Args::default();
            args.text(keys.prefix()).push(self.options().events_max_len);
            for id in chunk {
                args.text(id.as_str());
            }
            let value = self.run(&SCRIPTS.purge, &script_keys, args.0).await?;
            let mut reply = Reply::new(value, "purge")?;
            purged.purged += reply.count("purged")?;
            while reply.remaining() > 0 {
                purged.not_dead.push(JobId::from_stored(reply.string("id")?));
            }
        }
        Ok(purged)
    }

    /// Deletes every ready job of `queue` (delayed, active, completed and
    /// dead jobs are untouched), [`OPERATOR_CHUNK`] jobs per script call.
    /// See [`Client::drain_ready_with_progress`].
    pub async fn drain_ready(&self, queue: &str) -> Result<Drained> {
        self.drain_ready_with_progress(queue, |_| {}).await
    }

    /// [`Client::drain_ready`], calling `progress` with the running total of
    /// ids handled after each call. It stops once the ready lists are empty
    /// or it has handled as many ids as were ready when it started, so a
    /// producer enqueueing all the while cannot keep it running forever.
    pub async fn drain_ready_with_progress(
        &self,
        queue: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<Drained> {
        let (_, keys) = self.queue_keys(queue)?;
        let ready_at_start = self.counts(queue).await?.ready;
        let script_keys = [keys.meta(), keys.levels(), keys.events()];
        let mut drained = Drained::default();
        loop {
            let mut args = Args::default();
            args.text(keys.prefix()).push(self.options().events_max_len).push(OPERATOR_CHUNK);
            let value = self.run(&SCRIPTS.drain, &script_keys, args.0).await?;
            let mut reply = Reply::new(value, "drain")?;
            drained.drained += u64::from(reply.count("drained")?);
            drained.skipped += u64::from(reply.count("skipped")?);
            let more = reply.int("more")? == 1;
            let handled = drained.drained + drained.skipped;
            progress(handled);
            if !more || handled >= ready_at_start {
                return Ok(drained);
            }
        }
    }
}
