//! What each job of a run does, and what must become of it.
//!
//! A behaviour is written into the job's payload for the worker's built-in
//! `simulate` handler (see `config/README.md`), and it fixes the job's
//! expected end: its terminal state, its dead-letter reason, and how many
//! executions it needs when no fault interferes.

use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};

/// Dead-letter reason the `simulate` handler gives its permanent failures.
pub const REASON_SIMULATED: &str = "simulated";
/// Dead-letter reason of a job whose attempts are spent.
pub const REASON_EXHAUSTED: &str = "attempts_exhausted";

/// Per-attempt timeout of a hanging job.
pub const HANG_TIMEOUT: Duration = Duration::from_millis(400);

/// One kind of job in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Works a few milliseconds and succeeds.
    Succeed,
    /// Fails transiently once or twice, then succeeds.
    TransientThenSucceed,
    /// Fails permanently: straight to the DLQ with reason `simulated`.
    Permanent,
    /// Panics on every attempt until the attempts are spent.
    Panic,
    /// Sleeps far past its timeout on every attempt until they are spent.
    Hang,
    /// Works longer than the lease; heartbeats must keep it alive.
    SlowPastLease,
}

/// The mix, in jobs per thousand.
pub const MIX: [(Behaviour, u32); 6] = [
    (Behaviour::Succeed, 860),
    (Behaviour::TransientThenSucceed, 60),
    (Behaviour::Permanent, 30),
    (Behaviour::Panic, 20),
    (Behaviour::Hang, 15),
    (Behaviour::SlowPastLease, 15),
];

impl Behaviour {
    /// The behaviour's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Succeed => "succeed",
            Behaviour::TransientThenSucceed => "transient_then_succeed",
            Behaviour::Permanent => "permanent",
            Behaviour::Panic => "panic",
            Behaviour::Hang => "hang",
            Behaviour::SlowPastLease => "slow_past_lease",
        }
    }

    /// Draws one behaviour from [`MIX`].
    pub fn draw(rng: &mut impl Rng) -> Behaviour {
        let mut pick = rng.random_range(0..MIX.iter().map(|(_, w)| w).sum::<u32>());
        for (behaviour, weight) in MIX {
            if pick < weight {
                return behaviour;
            }
            pick -= weight;
        }
        Behaviour::Succeed
    }
}

/// How a job must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Completed.
    Completed,
    /// Dead with this reason.
    Dead(&'static str),
}

/// One job of the workload: its id, behaviour and enqueue settings.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The caller-chosen job id, `chaos-<index>`.
    pub id: String,
    /// What it does.
    pub behaviour: Behaviour,
    /// The `simulate` payload.
    pub payload: Value,
    /// Its attempt budget.
    pub max_attempts: u32,
    /// Its per-attempt timeout, if it sets one.
    pub timeout: Option<Duration>,
    /// Executions it needs when nothing interferes.
    pub needed_executions: u32,
}

impl PlannedJob {
    /// Job number `index` with `behaviour`; `lease` sizes slow jobs.
    pub fn new(index: usize, behaviour: Behaviour, lease: Duration, rng: &mut impl Rng) -> PlannedJob {
        let id = job_id(index);
        let lease_ms = lease.as_millis() as u64;
        let (payload, max_attempts, timeout, needed) = match behaviour {
            Behaviour::Succeed => {
                (json!({"sleep_ms": rng.random_range(1..=10), "result": index}), 8, None, 1)
            }
            Behaviour::TransientThenSucceed => {
                let fail_times = rng.random_range(1..=2u32);
                let payload = json!({"sleep_ms": rng.random_range(1..=10), "fail_times": fail_times,
                    "fail_kind": "transient", "result": index});
                (payload, fail_times + 6, None, fail_times + 1)
            }
            Behaviour::Permanent => (json!({"fail_times": 1_000_000, "fail_kind": "permanent"}), 5, None, 1),
            Behaviour::Panic => (json!({"panic": true}), 3, None, 3),
            Behaviour::Hang => (json!({"sleep_ms": 600_000}), 2, Some(HANG_TIMEOUT), 2),
            Behaviour::SlowPastLease => {
                let sleep = rng.random_range(lease_ms * 3 / 2..=lease_ms * 5 / 2);
                (json!({"sleep_ms": sleep, "result": index}), 8, None, 1)
            }
        };
        PlannedJob { id, behaviour, payload, max_attempts, timeout, needed_executions: needed }
    }

    /// The terminal state this behaviour must reach.
    pub fn expected(&self) -> Expected {
        match self.behaviour {
            Behaviour::Succeed | Behaviour::TransientThenSucceed | Behaviour::SlowPastLease => {
                Expected::Completed
            }
            Behaviour::Permanent => Expected::Dead(REASON_SIMULATED),
            Behaviour::Panic | Behaviour::Hang => Expected::Dead(REASON_EXHAUSTED),
        }
    }
}

/// The id of job number `index`.
pub fn job_id(index: usize) -> String {
    format!("chaos-{index}")
}

/// The index of a job id made by [`job_id`].
pub fn job_index(id: &str) -> Option<usize> {
    id.strip_prefix("chaos-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(job_index(&job_id(4711)), Some(4711));
        assert_eq!(job_index("other-1"), None);
    }

    #[test]
    fn the_mix_is_seeded_and_covers_every_behaviour() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5_000).map(|_| Behaviour::draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let jobs = draw(7);
        for (behaviour, _) in MIX {
            assert!(jobs.contains(&behaviour), "{behaviour:?} missing");
        }
    }

    #[test]
    fn slow_jobs_outlast_the_lease_and_hangs_set_a_timeout() {
        let mut rng = StdRng::seed_from_u64(1);
        let lease = Duration::from_secs(2);
        let slow = PlannedJob::new(0, Behaviour::SlowPastLease, lease, &mut rng);
        assert!(slow.payload["sleep_ms"].as_u64().unwrap_or(0) > 2_000);
        let hang = PlannedJob::new(1, Behaviour::Hang, lease, &mut rng);
        assert_eq!(hang.timeout, Some(HANG_TIMEOUT));
        assert_eq!(hang.expected(), Expected::Dead(REASON_EXHAUSTED));
    }
}
