//! Process rounds: Taskline's and BullMQ's `process` scenarios run in turn,
//! a few times, so that each pair meets about the same machine.
//!
//! On a shared host the CPU time an instruction takes drifts by a third
//! within minutes, and the main run measures the two systems minutes apart
//! (every Taskline scenario, then every BullMQ one). A round runs the two
//! `process` scenarios back to back, seconds apart, and alternates which
//! goes first, so a drift favours neither; the report gives each round's
//! ratios and their median.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::peer::{self, Peer};
use crate::scenarios::Bench;

/// One pair of `process` runs.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Which ran first.
    pub first: &'static str,
    /// Jobs per second, Taskline and BullMQ.
    pub taskline_jobs_per_sec: f64,
    /// Jobs per second of the BullMQ run.
    pub bullmq_jobs_per_sec: f64,
    /// Taskline's jobs/s over BullMQ's.
    pub throughput_ratio: f64,
    /// Redis CPU microseconds per job, Taskline.
    pub taskline_redis_cpu_us_per_job: f64,
    /// Redis CPU microseconds per job, BullMQ.
    pub bullmq_redis_cpu_us_per_job: f64,
    /// BullMQ's Redis CPU per job over Taskline's (> 1: Taskline is cheaper).
    pub redis_cpu_ratio: f64,
}

/// The rounds and the medians of their ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    /// Every round, in order.
    pub rounds: Vec<Round>,
    /// Median of the rounds' throughput ratios.
    pub median_throughput_ratio: f64,
    /// Median of the rounds' Redis CPU ratios.
    pub median_redis_cpu_ratio: f64,
}

/// Runs `count` rounds. `prefix` names the peer's queues (one per round).
pub async fn run(bench: &mut Bench, count: u32, prefix: &str) -> Result<Rounds> {
    let mut rounds = Vec::new();
    for i in 0..count {
        let taskline_first = i % 2 == 0;
        eprintln!(
            "round {}/{count}: process, {} first ...",
            i + 1,
            if taskline_first { "taskline" } else { "bullmq" }
        );
        let (taskline, bullmq) = if taskline_first {
            let t = taskline_process(bench).await?;
            (t, bullmq_process(bench, &format!("{prefix}-r{i}"))?)
        } else {
            let b = bullmq_process(bench, &format!("{prefix}-r{i}"))?;
            (taskline_process(bench).await?, b)
        };
        rounds.push(Round {
            first: if taskline_first { "taskline" } else { "bullmq" },
            taskline_jobs_per_sec: taskline.0,
            bullmq_jobs_per_sec: bullmq.0,
            throughput_ratio: taskline.0 / bullmq.0,
            taskline_redis_cpu_us_per_job: taskline.1,
            bullmq_redis_cpu_us_per_job: bullmq.1,
            redis_cpu_ratio: bullmq.1 / taskline.1,
        });
    }
    let median_throughput_ratio = median(rounds.iter().map(|r| r.throughput_ratio).collect());
    let median_redis_cpu_ratio = median(rounds.iter().map(|r| r.redis_cpu_ratio).collect());
    Ok(Rounds { rounds, median_throughput_ratio, median_redis_cpu_ratio })
}

/// The rounds as table rows.
pub fn table(rounds: &Rounds) -> String {
    let mut text = format!(
        "{:<8} {:>9} {:>14} {:>14} {:>10} {:>16} {:>10}\n",
        "round", "first", "taskline j/s", "bullmq j/s", "ratio", "CPU us/job T/B", "CPU ratio"
    );
    for (i, r) in rounds.rounds.iter().enumerate() {
        text.push_str(&format!(
            "{:<8} {:>9} {:>14.0} {:>14.0} {:>9.2}x {:>7.1} / {:<6.1} {:>9.2}x\n",
            i + 1,
            r.first,
            r.taskline_jobs_per_sec,
            r.bullmq_jobs_per_sec,
            r.throughput_ratio,
            r.taskline_redis_cpu_us_per_job,
            r.bullmq_redis_cpu_us_per_job,
            r.redis_cpu_ratio
        ));
    }
    text.push_str(&format!(
        "{:<8} {:>9} {:>14} {:>14} {:>9.2}x {:>16} {:>9.2}x\n",
        "median", "", "", "", rounds.median_throughput_ratio, "", rounds.median_redis_cpu_ratio
    ));
    text
}

/// Jobs/s and Redis CPU µs per job of one Taskline `process` run.
async fn taskline_process(bench: &mut Bench) -> Result<(f64, f64)> {
    let (throughput, _) = bench.process().await?;
    bench.remove_run_queues().await?;
    let figures = (throughput.jobs_per_sec, throughput.cost.redis_cpu_us_per_job);
    if figures.0 <= 0.0 || figures.1 <= 0.0 {
        bail!("the Taskline round measured nothing: {figures:?}");
    }
    Ok(figures)
}

/// The same for one BullMQ `process` run.
fn bullmq_process(bench: &Bench, prefix: &str) -> Result<(f64, f64)> {
    let report = match peer::run(&bench.url, &bench.params, &["process"], prefix) {
        Peer::Ran(report) => report,
        Peer::Skipped(why) => bail!("the BullMQ round did not run: {why}"),
    };
    let figure = |field: &str| report.get("results")?.get("process")?.get(field)?.as_f64();
    match (figure("jobs_per_sec"), figure("redis_cpu_us_per_job")) {
        (Some(jobs), Some(cpu)) if jobs > 0.0 && cpu > 0.0 => Ok((jobs, cpu)),
        _ => bail!("the BullMQ round's report lacks process figures: {report}"),
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
