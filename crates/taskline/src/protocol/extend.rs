//! `lua/extend.lua`: renew leases, the worker's heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::args::Args;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::{from_epoch_millis, millis};

use super::{Extended, Lease};

impl Client {
    /// Renews every lease in `leases` for `lease` from now, one call per
    /// queue. Leases that were lost are returned in [`Extended::lost`].
    pub async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Extended> {
        let mut by_queue: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for l in leases {
            by_queue.entry(l.queue.as_str()).or_default().push(l);
        }
        let mut extended = Extended::default();
        for (queue, group) in by_queue {
            let (_, keys) = self.queue_keys(queue)?;
            let mut args = Args::default();
            args.text(keys.prefix()).push(millis(lease));
            for l in &group {
                args.text(l.job_id.as_str()).text(&l.token);
            }
            let value = self.run(&SCRIPTS.extend, &[keys.active()], args.0).await?;
            let mut reply = Reply::new(value, "extend")?;
            let deadline = from_epoch_millis(reply.int("deadline")?.max(0) as u64);
            extended.deadline = Some(extended.deadline.map_or(deadline, |d| d.min(deadline)));
            while reply.remaining() > 0 {
                let position = reply.count("lost position")? as usize;
                let lost =
                    position.checked_sub(1).and_then(|i| group.get(i)).ok_or_else(|| Error::Protocol {
                        script: "extend",
                        detail: format!("lost position {position} outside 1..={}", group.len()),
                    })?;
                extended.lost.push((*lost).clone());
            }
        }
        Ok(extended)
    }
}
