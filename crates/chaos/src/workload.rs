//! The workload: a seeded list of jobs with unique ids, and its enqueue.
//!
//! Ids are chosen by the runner, so an enqueue whose reply was lost can be
//! sent again: a job that already went in comes back as a duplicate id,
//! which counts as enqueued.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use taskline::{Client, EnqueueOutcome, JobId, NewJob};

use crate::behaviour::{Behaviour, PlannedJob};
use crate::worker_config::{JOB_NAME, QUEUE};

/// Jobs per bulk enqueue call.
const CHUNK: usize = 1_000;
/// Sends of one chunk before the enqueue gives up.
const ATTEMPTS: u32 = 20;

/// `jobs` jobs drawn from the mix with `seed`.
pub fn plan(jobs: usize, seed: u64, lease: Duration) -> Vec<PlannedJob> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..jobs)
        .map(|index| {
            let behaviour = Behaviour::draw(&mut rng);
            PlannedJob::new(index, behaviour, lease, &mut rng)
        })
        .collect()
}

/// How many planned jobs have each behaviour.
pub fn census(plan: &[PlannedJob]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for job in plan {
        *counts.entry(job.behaviour.as_str().to_string()).or_insert(0) += 1;
    }
    counts
}

/// Enqueues every planned job, resending a chunk whose reply was lost.
pub async fn enqueue(client: &Client, plan: &[PlannedJob]) -> Result<()> {
    for chunk in plan.chunks(CHUNK) {
        let jobs = chunk.iter().map(new_job).collect::<taskline::Result<Vec<_>>>()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match client.enqueue_bulk(QUEUE, jobs.clone()).await {
                Ok(outcomes) => {
                    if let Some(bad) =
                        outcomes.iter().find(|o| matches!(o, EnqueueOutcome::DuplicateUnique(_)))
                    {
                        bail!("unexpected unique-key clash while enqueueing: {bad:?}");
                    }
                    break;
                }
                Err(err) if attempt < ATTEMPTS => {
                    eprintln!("chaos: enqueue failed ({err}); resending the chunk");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => bail!("enqueue failed {ATTEMPTS} times: {err}"),
            }
        }
    }
    Ok(())
}

fn new_job(job: &PlannedJob) -> taskline::Result<NewJob> {
    let mut new =
        NewJob::new(JOB_NAME, &job.payload)?.id(JobId::new(&job.id)?).max_attempts(job.max_attempts);
    if let Some(timeout) = job.timeout {
        new = new.timeout(timeout);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_seeded_and_ids_unique() {
        let lease = Duration::from_secs(2);
        let a = plan(2_000, 42, lease);
        let b = plan(2_000, 42, lease);
        assert!(a.iter().zip(&b).all(|(x, y)| x.id == y.id && x.behaviour == y.behaviour));
        let ids: std::collections::HashSet<_> = a.iter().map(|j| &j.id).collect();
        assert_eq!(ids.len(), 2_000);
        assert_eq!(census(&a).values().sum::<u64>(), 2_000);
    }
}
