//! `lua/release.lua`: give a leased job back without spending an attempt.

use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::millis;

use super::{Lease, Released};

impl Client {
    /// Gives the leased job back without spending an attempt: to the front
    /// of its level now, or delayed by `delay`.
    pub async fn release(&self, lease: &Lease, delay: Option<Duration>) -> Result<Released> {
        self.release_inner(lease, delay.unwrap_or_default(), "release", Duration::ZERO).await
    }

    /// Gives the leased job back because its upstream is rate limiting: it
    /// runs again after `retry_after`, without spending an attempt (and
    /// without counting towards [`JobFacts::releases`](crate::JobFacts::releases)). With
    /// `hold_queue`, no job of the queue is leased by any worker until
    /// `retry_after` has passed.
    pub async fn release_rate_limited(
        &self,
        lease: &Lease,
        retry_after: Duration,
        hold_queue: bool,
    ) -> Result<Released> {
        let hold = if hold_queue { retry_after } else { Duration::ZERO };
        self.release_inner(lease, retry_after, "rate_limited", hold).await
    }

    async fn release_inner(
        &self,
        lease: &Lease,
        delay: Duration,
        reason: &str,
        hold: Duration,
    ) -> Result<Released> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let mut args = self.outcome_args(&keys, lease);
        args.push(millis(delay)).text(reason).push(millis(hold));
        let script_keys = [keys.meta(), keys.active(), keys.delayed(), keys.levels(), keys.events()];
        let value = self
            .run(&SCRIPTS.release, &script_keys, args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        let mut reply = Reply::new(value, "release")?;
        let now = reply.string("status")? == "released";
        Ok(Released { now, releases: reply.count("releases")? })
    }
}
