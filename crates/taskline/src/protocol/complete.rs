//! `lua/complete.lua`: record completions, several per call when
//! concurrent ones share a batch (see [`crate::coalesce`]), and lease the
//! successors of each in the same round trip.

use tokio::sync::oneshot;

use crate::args::Args;
use crate::client::{Client, WeakClient};
use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::requests::{CompleteEntry, CompleteRequest};
use crate::scripts::SCRIPTS;
use crate::time::millis;

use super::claim::{read_claim, read_claimed_jobs, token_prefix};
use super::{Claim, ClaimOptions, ClaimedJob, Completion, Lease};

impl Client {
    /// Marks the leased job completed, storing `result` (JSON) if given.
    pub async fn complete(&self, lease: &Lease, result: Option<&serde_json::Value>) -> Result<Completion> {
        self.complete_inner(lease, result, None).await.map(|(completion, _)| completion)
    }

    /// Completes the leased job and leases the next jobs in the same round
    /// trip.
    pub async fn complete_and_claim(
        &self,
        lease: &Lease,
        result: Option<&serde_json::Value>,
        claim: &ClaimOptions,
    ) -> Result<(Completion, Claim)> {
        self.complete_inner(lease, result, Some(claim)).await
    }

    async fn complete_inner(
        &self,
        lease: &Lease,
        result: Option<&serde_json::Value>,
        claim: Option<&ClaimOptions>,
    ) -> Result<(Completion, Claim)> {
        self.queue_keys(&lease.queue)?;
        let result = match result {
            Some(value) => serde_json::to_string(value).map_err(Error::InvalidPayload)?,
            None => String::new(),
        };
        let limit = self.options().max_payload_bytes;
        if result.len() > limit {
            return Err(Error::PayloadTooLarge { what: "result", size: result.len(), limit });
        }
        let entry = CompleteEntry { lease: lease.clone(), result, want: claim.map_or(0, |c| c.count) };
        if !self.options().coalesce_calls {
            let mut answers = self.complete_batch(&lease.queue, claim, std::slice::from_ref(&entry)).await?;
            return answers.pop().unwrap_or_else(|| {
                Err(Error::Protocol { script: "complete", detail: "no answer for the job".into() })
            });
        }
        // One lane per queue and claim settings: a batch shares its claim.
        let lane = match claim {
            Some(c) => format!("{}\n{}\n{}", lease.queue, millis(c.lease), c.worker),
            None => lease.queue.clone(),
        };
        let (reply, answer) = oneshot::channel();
        let client = self.downgrade();
        let queue = lease.queue.clone();
        let claim = claim.cloned();
        self.complete_lanes().submit(&lane, CompleteRequest { entry, reply }, move |batch| {
            complete_batch_coalesced(client.clone(), queue.clone(), claim.clone(), batch)
        });
        answer.await.map_err(|_| Error::Protocol {
            script: "complete",
            detail: "the batch of this call was dropped unanswered (runtime shutting down?)".into(),
        })?
    }

    /// Runs `lua/complete.lua` for the completions in `entries` (all of
    /// `queue`), leasing `want` successors for each from `claim` (whose
    /// `count` is ignored). The outer error is the call's; each entry gets
    /// its own answer: a lost lease or a missing job fails that entry only.
    async fn complete_batch(
        &self,
        queue: &str,
        claim: Option<&ClaimOptions>,
        entries: &[CompleteEntry],
    ) -> Result<Vec<Result<(Completion, Claim)>>> {
        let (_, keys) = self.queue_keys(queue)?;
        let policy = self.options().policy(queue);
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .push(policy.retention.keep_last)
            .push(policy.retention.max_age.map(millis).unwrap_or(0));
        match claim {
            Some(options) => {
                args.push(millis(options.lease))
                    .text(&token_prefix())
                    .text(&options.worker)
                    .push(self.options().promote_batch);
            }
            None => {
                args.push(0).text("").text("").push(0);
            }
        }
        args.push(entries.len());
        for entry in entries {
            args.text(entry.lease.job_id.as_str())
                .text(&entry.lease.token)
                .text(&entry.result)
                .push(if claim.is_some() { entry.want } else { 0 });
        }
        let script_keys =
            [keys.meta(), keys.delayed(), keys.active(), keys.levels(), keys.events(), keys.completed()];
        let value = self.run(&SCRIPTS.complete, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "complete")?;
        // The successors leased now, then those handed back to resends;
        // each completion takes its share in order.
        let mut header = read_claim(&mut reply, queue, policy.max_attempts)?;
        let mut fresh = std::mem::take(&mut header.jobs).into_iter();
        let handed_back = reply.count("handed_back")?;
        let mut back = read_claimed_jobs(&mut reply, handed_back, queue, policy.max_attempts)?.into_iter();
        let mut answers = Vec::with_capacity(entries.len());
        for entry in entries {
            let status = reply.string("status")?;
            let k = reply.count("k")? as usize;
            let share = |from: &mut std::vec::IntoIter<ClaimedJob>| -> Result<Claim> {
                let jobs: Vec<ClaimedJob> = from.by_ref().take(k).collect();
                if jobs.len() < k {
                    return Err(Error::Protocol {
                        script: "complete",
                        detail: "fewer records than shares".into(),
                    });
                }
                Ok(Claim { jobs, ..header.clone() })
            };
            let job_id = entry.lease.job_id.as_str();
            answers.push(match status.as_str() {
                "completed" => Ok((Completion::Completed, share(&mut fresh)?)),
                "already" => Ok((Completion::AlreadyCompleted, share(&mut back)?)),
                // Lease lost or job gone: this entry's answer, not the batch's.
                other => match Error::refused(other, queue, job_id) {
                    Some(refusal) => Err(refusal),
                    None => {
                        return Err(Error::Protocol {
                            script: "complete",
                            detail: format!("status {other:?}"),
                        });
                    }
                },
            });
        }
        Ok(answers)
    }
}

/// Runs one batch of coalesced completions and answers each caller.
async fn complete_batch_coalesced(
    client: WeakClient,
    queue: String,
    claim: Option<ClaimOptions>,
    batch: Vec<CompleteRequest>,
) {
    let Some(client) = client.upgrade() else { return };
    let (entries, replies): (Vec<CompleteEntry>, Vec<_>) =
        batch.into_iter().map(|r| (r.entry, r.reply)).unzip();
    match client.complete_batch(&queue, claim.as_ref(), &entries).await {
        // complete_batch answers every entry or fails as a whole.
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_batch_member("complete")));
            }
        }
    }
}
