//! The seeded fault schedule: which fault comes next, with its parameters,
//! and how long to wait before it.
//!
//! The first faults are every kind `min_per_kind` times in a seeded
//! shuffled order, so even a short run injects each kind; after that each
//! fault's kind is drawn uniformly. The seed fixes the sequence of kinds,
//! gaps and parameters; which jobs a fault hits depends on timing.

use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A fault the runner can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL of the worker holding the most leases, then a restart.
    WorkerSigkill,
    /// SIGTERM (graceful shutdown) of the worker holding the most leases,
    /// then a restart.
    WorkerSigterm,
    /// SIGKILL of `redis-server`, then a start on the same data (AOF).
    RedisRestart,
    /// `CLIENT KILL TYPE normal`: every client connection dropped.
    ClientKill,
    /// SIGSTOP of `redis-server` for 1 to 3 s, then SIGCONT.
    RedisPause,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::WorkerSigkill,
        FaultKind::WorkerSigterm,
        FaultKind::RedisRestart,
        FaultKind::ClientKill,
        FaultKind::RedisPause,
    ];

    /// The kind's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::WorkerSigkill => "worker_sigkill",
            FaultKind::WorkerSigterm => "worker_sigterm",
            FaultKind::RedisRestart => "redis_restart",
            FaultKind::ClientKill => "client_kill",
            FaultKind::RedisPause => "redis_pause",
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Copy)]
pub struct PlannedFault {
    /// What to inject.
    pub kind: FaultKind,
    /// How long Redis stays paused, or how long a killed worker stays down.
    pub hold: Duration,
    /// Tie-break among equally busy workers.
    pub pick: u64,
}

/// The schedule of a run.
#[derive(Debug)]
pub struct Schedule {
    rng: StdRng,
    guaranteed: Vec<FaultKind>,
    gap: (Duration, Duration),
}

impl Schedule {
    /// A schedule from `seed` that starts with every kind `min_per_kind`
    /// times, with gaps drawn between `gap_min` and `gap_max`.
    pub fn new(seed: u64, min_per_kind: usize, gap_min: Duration, gap_max: Duration) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6661_756c_7473);
        let mut guaranteed: Vec<FaultKind> =
            FaultKind::ALL.iter().flat_map(|k| std::iter::repeat_n(*k, min_per_kind)).collect();
        guaranteed.shuffle(&mut rng);
        guaranteed.reverse(); // popped from the end
        Schedule { rng, guaranteed, gap: (gap_min, gap_max.max(gap_min)) }
    }

    /// True once every kind has been handed out `min_per_kind` times.
    pub fn quota_met(&self) -> bool {
        self.guaranteed.is_empty()
    }

    /// The wait before the next fault.
    pub fn gap(&mut self) -> Duration {
        let (min, max) = (self.gap.0.as_millis() as u64, self.gap.1.as_millis() as u64);
        Duration::from_millis(self.rng.random_range(min..=max))
    }

    /// The next fault.
    pub fn next_fault(&mut self) -> PlannedFault {
        let kind = self
            .guaranteed
            .pop()
            .unwrap_or_else(|| FaultKind::ALL[self.rng.random_range(0..FaultKind::ALL.len())]);
        let hold = match kind {
            FaultKind::RedisPause => Duration::from_millis(self.rng.random_range(1_000..=3_000)),
            _ => Duration::from_millis(self.rng.random_range(100..=800)),
        };
        PlannedFault { kind, hold, pick: self.rng.random() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_faults_cover_every_kind_the_quota_times() {
        let mut schedule = Schedule::new(9, 2, Duration::from_secs(1), Duration::from_secs(3));
        let first: Vec<FaultKind> = (0..10).map(|_| schedule.next_fault().kind).collect();
        assert!(schedule.quota_met());
        for kind in FaultKind::ALL {
            assert_eq!(first.iter().filter(|k| **k == kind).count(), 2, "{kind:?} in {first:?}");
        }
    }

    #[test]
    fn the_schedule_is_seeded() {
        let kinds = |seed| {
            let mut s = Schedule::new(seed, 2, Duration::from_secs(1), Duration::from_secs(3));
            (0..30).map(|_| (s.next_fault().kind, s.gap())).collect::<Vec<_>>()
        };
        assert_eq!(kinds(5), kinds(5));
        assert_ne!(kinds(5), kinds(6));
    }

    #[test]
    fn pauses_last_one_to_three_seconds() {
        let mut s = Schedule::new(1, 0, Duration::ZERO, Duration::ZERO);
        for _ in 0..200 {
            let f = s.next_fault();
            if f.kind == FaultKind::RedisPause {
                assert!((1_000..=3_000).contains(&(f.hold.as_millis() as u64)));
            }
        }
    }
}
