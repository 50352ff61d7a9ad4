//! The invariant checker: every job in exactly one place.
//!
//! [`Client::check_queue`] reads a queue's structures and job hashes and
//! reports each violation of the promise "a job is at every moment in
//! exactly one of ready, delayed, active, completed, dead, and its stored
//! state says which". It reads with SCAN and plain reads, not one atomic
//! script (which would block Redis on a large queue), so on a busy queue a
//! job moving during the check can show up as a false positive: run it on a
//! quiet queue, or run it twice and trust what both runs report.
//! [`Client::repair_queue`] fixes what can be fixed safely (`repair`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::Result;
use crate::keys::QueueKeys;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The id is listed in more than one structure (or twice in one).
    InSeveralPlaces {
        /// The job id.
        id: String,
        /// Every place it was found.
        places: Vec<String>,
    },
    /// A job hash that no structure lists: nothing will ever run it.
    Unlisted {
        /// The job id.
        id: String,
        /// Its stored state.
        state: String,
    },
    /// A structure lists an id whose job hash is missing.
    MissingHash {
        /// The job id.
        id: String,
        /// Where it is listed.
        place: String,
    },
    /// The stored state disagrees with the structure that lists the job.
    StateMismatch {
        /// The job id.
        id: String,
        /// The `state` field.
        stored: String,
        /// The structure it is in.
        place: String,
    },
    /// A non-empty ready list whose level is missing from `levels`: claims
    /// would never look at it.
    HiddenReadyLevel {
        /// The level.
        level: String,
    },
    /// A mutex group's slot count disagrees with its jobs in the ready
    /// lists and `active` (see `lua/includes/groups.lua`): too high holds
    /// the group's waiting jobs back, too low lets too many run.
    GroupSlots {
        /// The group key.
        group: String,
        /// Slots recorded in `groups`.
        recorded: u64,
        /// Jobs of the group in the ready lists or active.
        holders: u64,
    },
}

impl Violation {
    /// A short name of the kind of violation, for tables and JSON:
    /// `in_several_places`, `unlisted`, `missing_hash`, `state_mismatch`,
    /// `hidden_ready_level`, `group_slots`.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::InSeveralPlaces { .. } => "in_several_places",
            Violation::Unlisted { .. } => "unlisted",
            Violation::MissingHash { .. } => "missing_hash",
            Violation::StateMismatch { .. } => "state_mismatch",
            Violation::HiddenReadyLevel { .. } => "hidden_ready_level",
            Violation::GroupSlots { .. } => "group_slots",
        }
    }

    /// The job the violation is about; `None` for a hidden ready level and
    /// a group's slot count.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Violation::InSeveralPlaces { id, .. }
            | Violation::Unlisted { id, .. }
            | Violation::MissingHash { id, .. }
            | Violation::StateMismatch { id, .. } => Some(id),
            Violation::HiddenReadyLevel { .. } | Violation::GroupSlots { .. } => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::InSeveralPlaces { id, places } => {
                write!(f, "job {id} is in several places: {}", places.join(", "))
            }
            Violation::Unlisted { id, state } => write!(f, "job {id} (state {state}) is in no structure"),
            Violation::MissingHash { id, place } => {
                write!(f, "{place} lists job {id} but its hash is missing")
            }
            Violation::StateMismatch { id, stored, place } => {
                write!(f, "job {id} is in {place} but its state says {stored}")
            }
            Violation::HiddenReadyLevel { level } => {
                write!(f, "ready list of level {level} holds jobs but the level is not in `levels`")
            }
            Violation::GroupSlots { group, recorded, holders } => write!(
                f,
                "mutex group {group:?} records {recorded} slots but {holders} of its jobs are ready or active"
            ),
        }
    }
}

/// What [`Client::check_queue`] found.
#[derive(Debug, Clone, Default)]
pub struct QueueReport {
    /// Job hashes read.
    pub jobs: u64,
    /// Every violation found; empty when the queue is sound.
    pub violations: Vec<Violation>,
}

impl QueueReport {
    /// True when no invariant is broken.
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }
}

impl Client {
    /// Checks every invariant of `queue` (see the module docs).
    pub async fn check_queue(&self, queue: &str) -> Result<QueueReport> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let mut places: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut report = QueueReport::default();

        let levels: BTreeSet<String> =
            redis::cmd("ZRANGE").arg(keys.levels()).arg(0).arg(-1).query_async(&mut conn).await?;
        for list_key in scan(&conn, &keys.ready_pattern()).await? {
            let level = list_key.rsplit(':').next().unwrap_or_default().to_string();
            let ids: Vec<String> =
                redis::cmd("LRANGE").arg(&list_key).arg(0).arg(-1).query_async(&mut conn).await?;
            if !ids.is_empty() && !levels.contains(&level) {
                report.violations.push(Violation::HiddenReadyLevel { level });
            }
            for id in ids {
                places.entry(id).or_default().push("ready".into());
            }
        }
        // Mutex group jobs waiting for a slot are ready too, in their
        // group's own list; they hold no slot.
        let mut waiting = BTreeSet::new();
        for list_key in scan(&conn, &keys.gwait_pattern()).await? {
            let ids: Vec<String> =
                redis::cmd("LRANGE").arg(&list_key).arg(0).arg(-1).query_async(&mut conn).await?;
            for id in ids {
                waiting.insert(id.clone());
                places.entry(id).or_default().push("ready".into());
            }
        }
        for (place, key) in zset_places(&keys) {
            // Finite scores only: `active` also holds its skiplist anchor at
            // +inf (lua/includes/active.lua), which is not a job.
            let ids: Vec<String> =
                redis::cmd("ZRANGEBYSCORE").arg(&key).arg("-inf").arg("(+inf").query_async(&mut conn).await?;
            for id in ids {
                places.entry(id).or_default().push(place.to_string());
            }
        }

        let job_prefix = keys.job("");
        let mut hashed = BTreeSet::new();
        let mut group_holders: BTreeMap<String, u64> = BTreeMap::new();
        for job_key in scan(&conn, &format!("{job_prefix}*")).await? {
            let id = job_key[job_prefix.len()..].to_string();
            let (state, group): (Option<String>, Option<String>) =
                redis::cmd("HMGET").arg(&job_key).arg("state").arg("group").query_async(&mut conn).await?;
            let state = state.unwrap_or_default();
            report.jobs += 1;
            if let Some(group) = group.filter(|g| !g.is_empty())
                && (state == "ready" || state == "active")
                && !waiting.contains(&id)
            {
                *group_holders.entry(group).or_default() += 1;
            }
            match places.get(&id).map(Vec::as_slice) {
                None | Some([]) => report.violations.push(Violation::Unlisted { id: id.clone(), state }),
                Some([place]) if *place != state => report.violations.push(Violation::StateMismatch {
                    id: id.clone(),
                    stored: state,
                    place: place.clone(),
                }),
                Some([_]) => {}
                Some(several) => report
                    .violations
                    .push(Violation::InSeveralPlaces { id: id.clone(), places: several.to_vec() }),
            }
            hashed.insert(id);
        }
        for (id, found) in places {
            if !hashed.contains(&id) {
                for place in found {
                    report.violations.push(Violation::MissingHash { id: id.clone(), place });
                }
            }
        }
        let recorded: BTreeMap<String, u64> =
            redis::cmd("HGETALL").arg(keys.groups()).query_async(&mut conn).await?;
        let groups: BTreeSet<&String> = recorded.keys().chain(group_holders.keys()).collect();
        for group in groups {
            let (recorded, holders) =
                (recorded.get(group).copied().unwrap_or(0), group_holders.get(group).copied().unwrap_or(0));
            if recorded != holders {
                report.violations.push(Violation::GroupSlots { group: group.clone(), recorded, holders });
            }
        }
        Ok(report)
    }
}

fn zset_places(keys: &QueueKeys) -> [(&'static str, String); 4] {
    [
        ("delayed", keys.delayed()),
        ("active", keys.active()),
        ("completed", keys.completed()),
        ("dead", keys.dead()),
    ]
}

/// Every key matching `pattern`, by SCAN. The pattern starts with a
/// queue's key prefix, hash tag included; on a cluster the scan runs on the
/// master that serves that tag's slot, where all the queue's keys live.
async fn scan(conn: &Connection, pattern: &str) -> Result<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1_000);
        let (next, batch): (u64, Vec<String>) = conn.query_for_key(pattern, &cmd).await?;
        found.extend(batch);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}
