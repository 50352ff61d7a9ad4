//! Duplicates: executions beyond what a job's behaviour needs, and the
//! fault that explains each one.
//!
//! A job's executions are its claims: the `claimed` events read from the
//! stream (which keep claims that a Redis crash rolled back), or the job
//! hash's attempts plus releases if that is more (events can be missed only
//! when the stream was trimmed unread). Each extra execution needs a cause
//! in the job's history, and each cause is matched to a fault:
//!
//! - a release: a graceful shutdown (`worker_sigterm`);
//! - an expired lease: the SIGKILL or SIGTERM of the worker that held it,
//!   if that fault ended at most one recovery window (lease, heartbeat,
//!   two reaper passes, 3 s slack) before the expiry; else the latest Redis
//!   restart, Redis pause or `CLIENT KILL` within that window;
//! - the same attempt claimed twice with no release between: a claim that
//!   a Redis restart rolled back.
//!
//! An extra execution without a matching cause is `unexplained`.

use std::collections::{BTreeMap, HashSet};

use crate::accounting::{LEASE_EXPIRED, Stored};
use crate::events::{Event, EventKind, EventLog};
use crate::faults::FaultRecord;
use crate::schedule::FaultKind;

/// The label of a duplicate no fault explains.
pub const UNEXPLAINED: &str = "unexplained";

/// Why a job ran once more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The reaper took it from `worker` at `at_ms`.
    Reaped {
        /// When.
        at_ms: u64,
        /// The worker that held the lease.
        worker: Option<String>,
    },
    /// Released unrun by `worker`.
    Released {
        /// The worker that released it.
        worker: Option<String>,
    },
    /// Attempt claimed again at `at_ms` after an earlier claim of the same
    /// attempt at `first_ms` vanished.
    Reclaimed {
        /// The vanished claim.
        first_ms: u64,
        /// The new claim.
        at_ms: u64,
    },
}

/// Matches causes to the faults of a run.
#[derive(Debug)]
pub struct Attributor<'a> {
    faults: &'a [FaultRecord],
    window_ms: u64,
    terminated: HashSet<&'a str>,
}

impl<'a> Attributor<'a> {
    /// An attributor for `faults`, with a recovery window of `window_ms`.
    pub fn new(faults: &'a [FaultRecord], window_ms: u64) -> Attributor<'a> {
        let targets = |kind: FaultKind| -> HashSet<&'a str> {
            faults.iter().filter(|f| f.kind == kind).filter_map(|f| f.target.as_deref()).collect()
        };
        Attributor { faults, window_ms, terminated: targets(FaultKind::WorkerSigterm) }
    }

    /// The fault kind that explains `cause`, or [`UNEXPLAINED`].
    pub fn attribute(&self, cause: &Cause) -> &'static str {
        match cause {
            Cause::Released { worker } => match worker {
                Some(w) if !self.terminated.contains(w.as_str()) => UNEXPLAINED,
                _ => FaultKind::WorkerSigterm.as_str(),
            },
            Cause::Reaped { at_ms, worker } => {
                let in_window =
                    |f: &&FaultRecord| f.start_ms <= *at_ms && *at_ms <= f.end_ms + self.window_ms;
                let own = self
                    .faults
                    .iter()
                    .filter(in_window)
                    .filter(|f| matches!(f.kind, FaultKind::WorkerSigkill | FaultKind::WorkerSigterm))
                    .filter(|f| f.target.is_some() && f.target == *worker)
                    .max_by_key(|f| f.start_ms);
                let redis_side = || {
                    self.faults
                        .iter()
                        .filter(in_window)
                        .filter(|f| {
                            matches!(
                                f.kind,
                                FaultKind::RedisRestart | FaultKind::RedisPause | FaultKind::ClientKill
                            )
                        })
                        .max_by_key(|f| f.start_ms)
                };
                own.or_else(redis_side).map_or(UNEXPLAINED, |f| f.kind.as_str())
            }
            Cause::Reclaimed { first_ms, at_ms } => {
                let restarted_between = self.faults.iter().any(|f| {
                    f.kind == FaultKind::RedisRestart && *first_ms <= f.end_ms && f.start_ms <= *at_ms
                });
                if restarted_between { FaultKind::RedisRestart.as_str() } else { UNEXPLAINED }
            }
        }
    }
}

/// The causes of extra executions in one job's history: from its events
/// when the stream was read whole, else from its stored errors.
pub fn causes(events: &[Event], log: &EventLog, stored: Option<&Stored>, events_whole: bool) -> Vec<Cause> {
    if events_whole && !events.is_empty() {
        return causes_from_events(events, log);
    }
    let Some(job) = stored else { return Vec::new() };
    let mut found: Vec<Cause> = job
        .errors
        .iter()
        .filter(|(message, _, _)| message == LEASE_EXPIRED)
        .map(|(_, worker, at)| Cause::Reaped { at_ms: *at, worker: Some(worker.clone()) })
        .collect();
    found.extend((0..job.releases).map(|_| Cause::Released { worker: None }));
    found
}

fn causes_from_events(events: &[Event], log: &EventLog) -> Vec<Cause> {
    let mut found = Vec::new();
    // The latest claim: (attempt, time, worker); a release gives the
    // attempt number back, so the next claim may repeat it.
    let mut last_claim: Option<(u32, u64, u32)> = None;
    let mut released = false;
    for event in events {
        let worker = log.worker(event.worker).map(str::to_string);
        match event.kind {
            EventKind::Claimed => {
                if let Some((attempt, at, _)) = last_claim
                    && event.attempt <= attempt
                    && !released
                {
                    found.push(Cause::Reclaimed { first_ms: at, at_ms: event.at_ms });
                }
                last_claim = Some((event.attempt, event.at_ms, event.worker));
                released = false;
            }
            EventKind::LeaseExpired => found.push(Cause::Reaped { at_ms: event.at_ms, worker }),
            EventKind::Released => {
                let holder = last_claim.and_then(|(_, _, w)| log.worker(w)).map(str::to_string);
                found.push(Cause::Released { worker: holder });
                released = true;
            }
            EventKind::Retrying | EventKind::Completed | EventKind::Dead => {}
        }
    }
    found
}

/// Spreads `extra` duplicates of one job over its `causes`, in order, into
/// `tally` by fault kind; duplicates beyond the causes are unexplained.
/// Returns how many were unexplained.
pub fn tally(
    extra: u32,
    causes: &[Cause],
    attributor: &Attributor<'_>,
    tally: &mut BTreeMap<String, u64>,
) -> u32 {
    let mut unexplained = 0;
    for n in 0..extra as usize {
        let label = causes.get(n).map_or(UNEXPLAINED, |c| attributor.attribute(c));
        unexplained += u32::from(label == UNEXPLAINED);
        *tally.entry(label.to_string()).or_insert(0) += 1;
    }
    unexplained
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, start_ms: u64, end_ms: u64, target: Option<&str>) -> FaultRecord {
        FaultRecord {
            kind,
            start_ms,
            end_ms,
            target: target.map(str::to_string),
            in_flight: 0,
            detail: String::new(),
        }
    }

    #[test]
    fn expiries_go_to_the_killed_worker_or_the_redis_fault_before_them() {
        let faults = [
            fault(FaultKind::WorkerSigkill, 1_000, 1_500, Some("w1-g0")),
            fault(FaultKind::RedisPause, 10_000, 12_000, None),
        ];
        let a = Attributor::new(&faults, 5_000);
        let reaped = |at_ms, w: &str| Cause::Reaped { at_ms, worker: Some(w.into()) };
        assert_eq!(a.attribute(&reaped(3_500, "w1-g0")), "worker_sigkill");
        assert_eq!(a.attribute(&reaped(13_000, "w2-g0")), "redis_pause");
        assert_eq!(a.attribute(&reaped(30_000, "w2-g0")), UNEXPLAINED);
        assert_eq!(
            a.attribute(&reaped(3_500, "w2-g0")),
            UNEXPLAINED,
            "a SIGKILL explains only its own worker"
        );
        assert_eq!(a.attribute(&reaped(900, "w1-g0")), UNEXPLAINED, "nor what happened before it");
        assert_eq!(a.attribute(&reaped(11_000, "w1-g0")), "redis_pause");
    }

    #[test]
    fn releases_and_rollbacks() {
        let faults = [
            fault(FaultKind::WorkerSigterm, 1_000, 1_500, Some("w0-g0")),
            fault(FaultKind::RedisRestart, 5_000, 5_400, None),
        ];
        let a = Attributor::new(&faults, 5_000);
        assert_eq!(a.attribute(&Cause::Released { worker: Some("w0-g0".into()) }), "worker_sigterm");
        assert_eq!(a.attribute(&Cause::Released { worker: Some("w3-g0".into()) }), UNEXPLAINED);
        assert_eq!(a.attribute(&Cause::Reclaimed { first_ms: 4_900, at_ms: 6_000 }), "redis_restart");
        assert_eq!(a.attribute(&Cause::Reclaimed { first_ms: 7_000, at_ms: 8_000 }), UNEXPLAINED);
        let mut counts = BTreeMap::new();
        assert_eq!(tally(2, &[Cause::Released { worker: None }], &a, &mut counts), 1);
        assert_eq!(counts.get("worker_sigterm"), Some(&1));
        assert_eq!(counts.get(UNEXPLAINED), Some(&1));
    }
}
