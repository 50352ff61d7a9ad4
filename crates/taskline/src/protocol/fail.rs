//! `lua/fail.lua`: record a failed attempt, to be retried or dead.

use crate::args::truncate;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::scripts::SCRIPTS;
use crate::time::{from_epoch_millis, millis};

use super::{FailOutcome, Failure, Lease, MAX_ERROR_MESSAGE_BYTES};

impl Client {
    /// Records a failed attempt: retried later or dead, as the script decides
    /// from the kind and the attempts left.
    pub async fn fail(&self, lease: &Lease, failure: &Failure) -> Result<FailOutcome> {
        let (_, keys) = self.queue_keys(&lease.queue)?;
        let mut args = self.outcome_args(&keys, lease);
        args.text(failure.kind.as_str())
            .text(failure.reason.as_deref().unwrap_or(""))
            .text(truncate(&failure.message, MAX_ERROR_MESSAGE_BYTES))
            .push(millis(failure.retry_delay))
            .push(self.options().policy(&lease.queue).max_attempts);
        let script_keys =
            [keys.meta(), keys.active(), keys.delayed(), keys.dead(), keys.events(), keys.levels()];
        let value = self
            .run(&SCRIPTS.fail, &script_keys, args.0)
            .await
            .map_err(|e| Error::from_script(e, &lease.queue, lease.job_id.as_str()))?;
        let mut reply = Reply::new(value, "fail")?;
        let outcome = reply.string("outcome")?;
        let at = from_epoch_millis(reply.int("at")?.max(0) as u64);
        let reason = reply.string("reason")?;
        match outcome.as_str() {
            "retrying" => Ok(FailOutcome::Retrying { at }),
            "dead" => Ok(FailOutcome::Dead { at, reason }),
            other => Err(Error::Protocol { script: "fail", detail: format!("outcome {other:?}") }),
        }
    }
}
