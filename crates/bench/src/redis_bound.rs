//! What the same Redis does for `redis-benchmark`: requests per second and
//! Redis CPU per request for a round trip (PING), a primitive write (HSET),
//! a script that does nothing (EVALSHA of `return 1`), and a script with as
//! many cheap inner calls as a processed job makes (EVALSHA of 16 HINCRBYs).
//!
//! `redis-benchmark` repeats one command with fixed arguments, so it cannot
//! run Taskline's own scripts (each call needs fresh job ids and keys). The
//! two scripts bracket them instead: a job costs one script call of about
//! 16 inner commands (see the `process` scenario), but Taskline's inner
//! commands (HMGET of several fields, ZADD, XADD, ...) cost more than an
//! HINCRBY. Read both the same way as the saturation scenario: Redis CPU µs
//! per request, and 1e6 / that as the single-threaded bound.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::redis_stats::Snapshot;
use crate::scenarios::Bench;

/// Inner calls of the heavier script: about the 17 Redis commands per job
/// that the `process` scenario counts, less the EVALSHA itself.
pub const INNER_CALLS: u32 = 16;

/// One `redis-benchmark` test.
#[derive(Debug, Clone, Serialize)]
pub struct BoundTest {
    /// What was repeated.
    pub command: String,
    /// Requests sent.
    pub requests: u64,
    /// What `redis-benchmark` reports.
    pub requests_per_sec: f64,
    /// Redis CPU µs per request (`INFO cpu` around the run).
    pub redis_cpu_us_per_request: f64,
    /// Redis CPU seconds per wall second during the run.
    pub redis_cpu_utilisation: f64,
    /// 1e6 / Redis CPU µs per request.
    pub redis_cpu_bound_per_sec: f64,
}

/// Every test, by name, or why none ran.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// `ping`, `hset`, `evalsha_noop`, `evalsha_16`.
    pub tests: std::collections::BTreeMap<String, BoundTest>,
    /// Clients `redis-benchmark` used (`-c`).
    pub clients: u32,
    /// Set when `redis-benchmark` is not installed.
    pub skipped: Option<String>,
}

impl Bench {
    /// Runs `redis-benchmark` against the benchmark's Redis, if installed.
    pub async fn redis_bound(&mut self) -> Result<Bound> {
        let clients = self.params.concurrency.max(1);
        let mut bound = Bound { tests: Default::default(), clients, skipped: None };
        if Command::new("redis-benchmark").arg("--version").output().is_err() {
            bound.skipped =
                Some("redis-benchmark is not on PATH (Debian: apt-get install redis-tools)".into());
            return Ok(bound);
        }
        let noop: String =
            redis::cmd("SCRIPT").arg("LOAD").arg("return 1").query_async(&mut self.raw).await?;
        let loop_script =
            "for i = 1, tonumber(ARGV[1]) do redis.call('HINCRBY', KEYS[1], 'n', 1) end return 1";
        let looping: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(loop_script).query_async(&mut self.raw).await?;
        let key = format!("bench-{}-redis-bound", self.run_id);
        let inner = INNER_CALLS.to_string();
        let tests: [(&str, Vec<&str>); 4] = [
            ("ping", vec!["PING"]),
            ("hset", vec!["HSET", &key, "f", "v"]),
            ("evalsha_noop", vec!["EVALSHA", &noop, "0"]),
            ("evalsha_16", vec!["EVALSHA", &looping, "1", &key, &inner]),
        ];
        for (name, command) in tests {
            eprintln!("redis-benchmark: {} ...", command.join(" "));
            let test = self.redis_benchmark(&command, clients).await?;
            bound.tests.insert(name.to_string(), test);
        }
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut self.raw).await?;
        Ok(bound)
    }

    async fn redis_benchmark(&mut self, command: &[&str], clients: u32) -> Result<BoundTest> {
        let requests = self.params.redis_benchmark_requests.max(1);
        let before = Snapshot::take(&mut self.raw).await?;
        let started = Instant::now();
        // Blocking, but the scenario has nothing else to do meanwhile.
        let output = Command::new("redis-benchmark")
            .args(["-u", &self.url, "-n", &requests.to_string(), "-c", &clients.to_string(), "--csv"])
            .args(command)
            .output()
            .context("cannot run redis-benchmark")?;
        let seconds = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&mut self.raw).await?;
        if !output.status.success() {
            bail!("redis-benchmark failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let requests_per_sec = parse_csv_rps(&stdout)
            .with_context(|| format!("no requests per second in redis-benchmark's output:\n{stdout}"))?;
        let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
        let us = cpu * 1e6 / requests as f64;
        Ok(BoundTest {
            command: command.join(" "),
            requests,
            requests_per_sec,
            redis_cpu_us_per_request: us,
            redis_cpu_utilisation: cpu / seconds.max(1e-9),
            redis_cpu_bound_per_sec: 1e6 / us.max(1e-9),
        })
    }
}

/// The `rps` column of `redis-benchmark --csv`: a header line, then
/// `"<test>","<rps>",...` per test.
fn parse_csv_rps(csv: &str) -> Option<f64> {
    let line = csv.lines().find(|l| !l.starts_with("\"test\"") && l.starts_with('"'))?;
    // The test name may hold commas but no quotes; the second quoted field
    // is the rate.
    line.split('"').nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_csv_rps;

    #[test]
    fn reads_the_rate_out_of_the_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"EVALSHA e0e1 0\",\"12210.01\",\"2.634\"\n";
        assert_eq!(parse_csv_rps(csv), Some(12210.01));
        assert_eq!(parse_csv_rps("\"test\",\"rps\"\n"), None);
    }
}
