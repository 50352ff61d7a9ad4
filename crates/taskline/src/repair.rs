//! Repairing what the invariant checker found, where that is safe.
//!
//! [`Client::repair`] fixes one [`Violation`] with one atomic script
//! (`lua/repair.lua`) that re-checks the violation before changing
//! anything: the checker reads without blocking Redis, so on a busy queue a
//! job may have moved since it was reported, and then the repair is skipped.
//! [`Client::repair_queue`] checks a queue, repairs every violation, and
//! checks again.
//!
//! What is repaired, and how:
//!
//! | violation | repair |
//! |---|---|
//! | [`Violation::Unlisted`] | the job goes back where its `state` says; an active one with an expired lease, so the reaper retries it through the normal failure path |
//! | [`Violation::MissingHash`] | the id is removed from the structure, with an `orphan` event |
//! | [`Violation::HiddenReadyLevel`] | the level is added back to `levels` |
//! | [`Violation::StateMismatch`] | the stored state is set to the structure that lists the job |
//! | [`Violation::GroupSlots`] | the group's slots are counted again and set; freed slots go to its waiting jobs |
//! | [`Violation::InSeveralPlaces`] | nothing: which place is right cannot be told safely |

use crate::args::Args;
use crate::client::Client;
use crate::doctor::{QueueReport, Violation};
use crate::error::Result;
use crate::reply::Reply;
use crate::scripts::SCRIPTS;

/// What [`Client::repair`] did about one violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Fixed; the text says how (e.g. `put back at the end of ready level 0`).
    Repaired(String),
    /// Nothing was changed; the text says why (the condition no longer
    /// holds, or it cannot be fixed safely).
    Skipped(String),
}

impl RepairOutcome {
    /// True when the violation was fixed.
    pub fn is_repaired(&self) -> bool {
        matches!(self, RepairOutcome::Repaired(_))
    }

    /// What was done, or why nothing was.
    pub fn detail(&self) -> &str {
        match self {
            RepairOutcome::Repaired(text) | RepairOutcome::Skipped(text) => text,
        }
    }
}

/// One violation and what its repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The violation as the check reported it.
    pub violation: Violation,
    /// What the repair did.
    pub outcome: RepairOutcome,
}

/// What [`Client::repair_queue`] found, did, and found afterwards.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// The check before repairing.
    pub found: QueueReport,
    /// One entry per violation repaired or skipped, in order: those found,
    /// then any group slot counts the repairs left wrong.
    pub repairs: Vec<Repair>,
    /// The check after repairing: what still needs an operator (or moved
    /// while the queue was being repaired).
    pub remaining: QueueReport,
}

impl RepairReport {
    /// How many violations were fixed.
    pub fn repaired(&self) -> usize {
        self.repairs.iter().filter(|r| r.outcome.is_repaired()).count()
    }
}

impl Client {
    /// Checks `queue` ([`Client::check_queue`]), repairs each violation
    /// ([`Client::repair`]), and checks again. Repairs can leave a mutex
    /// group's slot count wrong (a relisted job of the group takes a slot
    /// it may still have held): such violations, new in the second check,
    /// are repaired too, and the queue is checked a third time.
    pub async fn repair_queue(&self, queue: &str) -> Result<RepairReport> {
        let found = self.check_queue(queue).await?;
        let mut repairs = Vec::with_capacity(found.violations.len());
        self.repair_each(queue, &found.violations, &mut repairs).await?;
        let mut remaining = self.check_queue(queue).await?;
        let new: Vec<Violation> = remaining
            .violations
            .iter()
            .filter(|v| matches!(v, Violation::GroupSlots { .. }) && !found.violations.contains(v))
            .cloned()
            .collect();
        if !new.is_empty() {
            self.repair_each(queue, &new, &mut repairs).await?;
            remaining = self.check_queue(queue).await?;
        }
        Ok(RepairReport { found, repairs, remaining })
    }

    async fn repair_each(
        &self,
        queue: &str,
        violations: &[Violation],
        repairs: &mut Vec<Repair>,
    ) -> Result<()> {
        for violation in violations {
            let outcome = self.repair(queue, violation).await?;
            repairs.push(Repair { violation: violation.clone(), outcome });
        }
        Ok(())
    }

    /// Repairs one violation of `queue` if it still holds, in one atomic
    /// script (see the module docs for what each repair does).
    pub async fn repair(&self, queue: &str, violation: &Violation) -> Result<RepairOutcome> {
        let (action, target, place) = match violation {
            Violation::Unlisted { id, .. } => ("unlisted", id.as_str(), ""),
            Violation::MissingHash { id, place } => ("missing", id.as_str(), place.as_str()),
            Violation::HiddenReadyLevel { level } => ("hidden", level.as_str(), ""),
            Violation::StateMismatch { id, place, .. } => ("mismatch", id.as_str(), place.as_str()),
            Violation::GroupSlots { group, .. } => ("groupslots", group.as_str(), ""),
            Violation::InSeveralPlaces { .. } => {
                return Ok(RepairOutcome::Skipped(
                    "listed in several places, and which one is right cannot be told safely; \
                     inspect it with `taskline job`, then remove the wrong entries by hand"
                        .into(),
                ));
            }
        };
        let (_, keys) = self.queue_keys(queue)?;
        let script_keys = [
            keys.meta(),
            keys.levels(),
            keys.delayed(),
            keys.active(),
            keys.completed(),
            keys.dead(),
            keys.events(),
        ];
        let mut args = Args::default();
        args.text(keys.prefix()).push(self.options().events_max_len).text(action).text(target).text(place);
        let value = self.run(&SCRIPTS.repair, &script_keys, args.0).await?;
        let mut reply = Reply::new(value, "repair")?;
        let status = reply.string("status")?;
        let detail = reply.string("detail")?;
        Ok(if status == "repaired" {
            RepairOutcome::Repaired(detail)
        } else {
            RepairOutcome::Skipped(detail)
        })
    }
}
