//! `lua/trim.lua`: apply a queue's completed-job retention.

use crate::args::Args;
use crate::client::Client;
use crate::error::Result;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::millis;

impl Client {
    /// Applies `queue`'s completed-job retention exactly: at most
    /// `keep_last` completed jobs, none older than `max_age` (see
    /// [`crate::Retention`]). Completions trim in batches as they go; the
    /// worker's maintenance calls this so the bound holds even when no job
    /// finishes. Returns how many jobs were removed.
    pub async fn trim_completed(&self, queue: &str) -> Result<u64> {
        const LIMIT: u64 = 1_000;
        let (_, keys) = self.queue_keys(queue)?;
        let retention = self.options().policy(queue).retention;
        let mut removed = 0;
        loop {
            let mut args = Args::default();
            args.text(keys.prefix())
                .push(retention.keep_last)
                .push(retention.max_age.map(millis).unwrap_or(0))
                .push(LIMIT);
            let value = self.run(&SCRIPTS.trim, &[keys.completed()], args.0).await?;
            let n = Reply::new(redis::Value::Array(vec![value]), "trim")?.int("removed")?.max(0) as u64;
            removed += n;
            if n < LIMIT {
                return Ok(removed);
            }
        }
    }
}
