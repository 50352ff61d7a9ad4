//! Redis cost, read from the server itself: `INFO commandstats` for how
//! many commands ran, `INFO cpu` for how much CPU the server spent, `INFO
//! memory` for bytes in use. A scenario takes a snapshot before and after
//! its timed part and divides the difference by the jobs it handled.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;

/// Counters read at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Commands executed, all kinds (including those run inside scripts).
    pub calls: u64,
    /// EVALSHA and EVAL calls: script invocations.
    pub script_calls: u64,
    /// BLPOP calls: idle workers' blocking waits.
    pub blocking_calls: u64,
    /// Server CPU seconds, system plus user.
    pub cpu_seconds: f64,
}

/// The cost of a stretch of work, per job.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cost {
    /// Redis commands per job, counting those run inside scripts.
    pub redis_calls_per_job: f64,
    /// Script calls (EVALSHA/EVAL) per job: round trips that did work.
    pub evalsha_calls_per_job: f64,
    /// Redis CPU microseconds per job.
    pub redis_cpu_us_per_job: f64,
}

impl Snapshot {
    /// Reads the counters now.
    pub async fn take(conn: &mut MultiplexedConnection) -> Result<Snapshot> {
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
        let mut snapshot = Snapshot::default();
        for line in stats.lines() {
            let Some((name, rest)) = line.split_once(':') else { continue };
            let calls = field(rest, "calls").unwrap_or(0.0) as u64;
            snapshot.calls += calls;
            if name == "cmdstat_evalsha" || name == "cmdstat_eval" {
                snapshot.script_calls += calls;
            }
            if name == "cmdstat_blpop" {
                snapshot.blocking_calls += calls;
            }
        }
        let info_value = |key: &str| -> Option<f64> {
            cpu.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
        };
        snapshot.cpu_seconds = info_value("used_cpu_sys").context("INFO cpu lacks used_cpu_sys")?
            + info_value("used_cpu_user").context("INFO cpu lacks used_cpu_user")?;
        Ok(snapshot)
    }

    /// The cost between `self` and `later`, spread over `jobs`. The two INFO
    /// calls of the later snapshot are not counted.
    pub fn cost_until(&self, later: &Snapshot, jobs: u64) -> Cost {
        let jobs = jobs.max(1) as f64;
        let calls = later.calls.saturating_sub(self.calls).saturating_sub(2) as f64;
        Cost {
            redis_calls_per_job: calls / jobs,
            evalsha_calls_per_job: later.script_calls.saturating_sub(self.script_calls) as f64 / jobs,
            redis_cpu_us_per_job: (later.cpu_seconds - self.cpu_seconds).max(0.0) * 1e6 / jobs,
        }
    }
}

/// One command's share of a stretch of work, per job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandCost {
    /// Command name, lower case (`evalsha`, `hset`, ...).
    pub command: String,
    /// Calls per job.
    pub calls_per_job: f64,
    /// Microseconds Redis timed for it per job. EVALSHA's time includes the
    /// commands its script ran, which are also listed under their own names.
    pub usec_per_job: f64,
}

/// Calls and microseconds of every command so far (`INFO commandstats`).
pub async fn command_times(conn: &mut MultiplexedConnection) -> Result<BTreeMap<String, (f64, f64)>> {
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    let mut times = BTreeMap::new();
    for line in stats.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let Some(command) = name.strip_prefix("cmdstat_") else { continue };
        times.insert(
            command.to_string(),
            (field(rest, "calls").unwrap_or(0.0), field(rest, "usec").unwrap_or(0.0)),
        );
    }
    Ok(times)
}

/// The commands that ran between `before` and `after`, most Redis time
/// first, per job.
pub fn command_costs(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    jobs: u64,
) -> Vec<CommandCost> {
    let jobs = jobs.max(1) as f64;
    let mut costs: Vec<CommandCost> = after
        .iter()
        .map(|(command, (calls, usec))| {
            let (calls_before, usec_before) = before.get(command).copied().unwrap_or((0.0, 0.0));
            CommandCost {
                command: command.clone(),
                calls_per_job: (calls - calls_before) / jobs,
                usec_per_job: (usec - usec_before) / jobs,
            }
        })
        .filter(|c| c.calls_per_job > 0.0)
        .collect();
    costs.sort_by(|a, b| b.usec_per_job.total_cmp(&a.usec_per_job));
    costs
}

/// `used_memory` in bytes.
pub async fn used_memory(conn: &mut MultiplexedConnection) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .context("INFO memory lacks used_memory")
}

/// Clients parked in a blocking command (`INFO clients`): an idle worker
/// holds one.
pub async fn blocked_clients(conn: &mut MultiplexedConnection) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("clients").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:")?.trim().parse().ok())
        .context("INFO clients lacks blocked_clients")
}

/// The server's version string.
pub async fn redis_version(conn: &mut MultiplexedConnection) -> Result<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    Ok(info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_string())
}

/// `name=value` out of a commandstats line (`calls=3,usec=12,...`).
fn field(text: &str, name: &str) -> Option<f64> {
    text.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{command_costs, field};

    #[test]
    fn command_costs_are_deltas_per_job_most_time_first() {
        let before = BTreeMap::from([("hset".to_string(), (10.0, 100.0))]);
        let after = BTreeMap::from([
            ("hset".to_string(), (30.0, 300.0)),
            ("evalsha".to_string(), (10.0, 500.0)),
            ("ping".to_string(), (0.0, 0.0)),
        ]);
        let costs = command_costs(&before, &after, 10);
        let names: Vec<&str> = costs.iter().map(|c| c.command.as_str()).collect();
        assert_eq!(names, ["evalsha", "hset"]);
        assert_eq!((costs[1].calls_per_job, costs[1].usec_per_job), (2.0, 20.0));
    }

    #[test]
    fn reads_commandstats_fields() {
        let line = "calls=42,usec=100,usec_per_call=2.38,rejected_calls=0,failed_calls=0";
        assert_eq!(field(line, "calls"), Some(42.0));
        assert_eq!(field(line, "usec_per_call"), Some(2.38));
        assert_eq!(field(line, "nope"), None);
    }
}
