//! `lua/reap.lua`: recover the jobs of expired leases.

use std::time::{Duration, SystemTime};

use crate::args::Args;
use crate::client::Client;
use crate::error::Result;
use crate::job::JobId;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::{from_epoch_millis, millis, to_epoch_millis};

use super::Reaped;

impl Client {
    /// Recovers up to `limit` jobs of `queue` whose lease expired: each is
    /// retried after `retry_delay` (zero: at once) or, with its attempts
    /// spent, dead.
    pub async fn reap(&self, queue: &str, limit: u32, retry_delay: Duration) -> Result<Reaped> {
        Ok(self.reap_before(queue, limit, retry_delay, None).await?.0)
    }

    /// Like [`Client::reap`], but only leases whose deadline is before
    /// `cutoff` (server clock; `None` or a later time: now). Also returns
    /// the server time of the call.
    ///
    /// A periodic reaper passes the time its previous pass returned: after
    /// Redis was frozen or down for longer than a lease, every lease in
    /// flight is past its deadline, and reaping against now would take the
    /// leases of live workers whose heartbeats are about to land. Against
    /// the previous pass's time, only leases that had expired before the
    /// stall are taken (see `lua/reap.lua`).
    pub async fn reap_before(
        &self,
        queue: &str,
        limit: u32,
        retry_delay: Duration,
        cutoff: Option<SystemTime>,
    ) -> Result<(Reaped, SystemTime)> {
        let (_, keys) = self.queue_keys(queue)?;
        let cutoff_ms = cutoff.map(|t| to_epoch_millis(t).max(1)).unwrap_or(0);
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .push(limit)
            .push(millis(retry_delay))
            .push(self.options().policy(queue).max_attempts)
            .push(cutoff_ms);
        let script_keys =
            [keys.meta(), keys.active(), keys.delayed(), keys.dead(), keys.levels(), keys.events()];
        let value = self.run(&SCRIPTS.reap, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "reap")?;
        let mut reaped =
            Reaped { retried: reply.count("retried")?, dead: reply.count("dead")?, ids: Vec::new() };
        let now = from_epoch_millis(reply.int("now_ms")?.max(0) as u64);
        while reply.remaining() > 0 {
            reaped.ids.push(JobId::from_stored(reply.string("id")?));
        }
        Ok((reaped, now))
    }
}
