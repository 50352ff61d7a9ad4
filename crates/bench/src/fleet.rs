//! Real `taskline-worker` processes for the multi-process scenarios: the
//! TOML they run with, starting and stopping them, and what `/proc` says
//! about each (resident memory, CPU time).
//!
//! The processes run the built-in `simulate` handler, which does nothing
//! for a payload without its fields, so the figures are the queue's cost
//! and not a handler's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The job name the benchmark enqueues and the `simulate` handler runs.
pub const JOB_NAME: &str = "noop";

/// How long a worker may take to finish after SIGTERM before it is killed.
/// Its queue is empty by then, so a graceful stop is quick.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which is
/// 100 on every Linux architecture Rust supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// The worker configuration: the same slots and claim batch as the
/// in-process worker of the `process` scenario, so the two are comparable.
pub fn worker_toml(url: &str, queue: &str, concurrency: u32, coalesce_calls: bool) -> String {
    let concurrency = concurrency.max(1);
    format!(
        "[redis]\nurl = \"{url}\"\ncoalesce_calls = {coalesce_calls}\n\n\
         [worker]\nconcurrency = {concurrency}\nclaim_batch = {batch}\nidle_wait = \"1s\"\n\n\
         [queues.\"{queue}\"]\nconcurrency = {concurrency}\n\n\
         [handlers.{JOB_NAME}]\nqueue = \"{queue}\"\nkind = \"simulate\"\n",
        batch = concurrency.min(50),
    )
}

/// `taskline-worker` in the directory of this executable, where
/// `cargo build --release -p taskline-bench -p taskline-worker` puts it.
pub fn sibling_worker() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    Ok(dir.join(format!("taskline-worker{}", std::env::consts::EXE_SUFFIX)))
}

/// Running worker processes; dropping it kills any still running.
pub struct Fleet {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Fleet {
    /// Starts `count` workers of `binary` with the config file `config`,
    /// each logging (warnings and errors only) to `dir/worker-<i>.log`.
    pub fn start(binary: &Path, config: &Path, dir: &Path, count: u32) -> Result<Fleet> {
        if !binary.is_file() {
            bail!(
                "no taskline-worker binary at {}; build it (cargo build --release -p taskline-worker) \
                 or pass --worker-bin",
                binary.display()
            );
        }
        let mut fleet = Fleet { children: Vec::new(), logs: Vec::new() };
        for index in 0..count {
            let log_path = dir.join(format!("worker-{index}.log"));
            let log =
                File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
            let mut command = Command::new(binary);
            command.arg("--config").arg(config);
            // Overrides in the caller's environment would change the config.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy().into_owned();
                if key.starts_with("TASKLINE_") && key.contains("__") {
                    command.env_remove(key);
                }
            }
            let child = command
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            fleet.children.push(child);
            fleet.logs.push(log_path);
        }
        Ok(fleet)
    }

    /// Process ids, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Fails, with the end of its log, if a worker has already exited: a
    /// worker never stops on its own while the benchmark runs.
    pub fn check_running(&mut self) -> Result<()> {
        for (child, log) in self.children.iter_mut().zip(&self.logs) {
            if let Some(status) = child.try_wait()? {
                bail!("taskline-worker {} exited early ({status}); its log ends:\n{}", child.id(), tail(log));
            }
        }
        Ok(())
    }

    /// Sum of the workers' CPU time (user and system), seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.children.iter().map(|c| cpu_seconds(c.id()).unwrap_or(0.0)).sum()
    }

    /// The largest resident set among the workers, KiB.
    pub fn max_rss_kib(&self) -> u64 {
        self.children.iter().map(|c| rss_kib(c.id()).unwrap_or(0)).max().unwrap_or(0)
    }

    /// SIGTERM to every worker, then waits for each; fails if one did not
    /// exit cleanly in time.
    pub async fn stop(mut self) -> Result<()> {
        for child in &self.children {
            // The `kill` utility, so this crate needs no unsafe code or libc.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = Instant::now() + STOP_LIMIT;
        let mut failures = Vec::new();
        for (child, log) in self.children.iter_mut().zip(&self.logs) {
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        failures.push(format!("worker {} exited with {status}:\n{}", child.id(), tail(log)));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    failures.push(format!("worker {} did not stop within {STOP_LIMIT:?}", child.id()));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Resident set size of process `pid` (`"self"` for this one), KiB.
pub fn rss_kib(pid: impl std::fmt::Display) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// CPU time (user plus system) process `pid` has used, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime out of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted from the
/// last `)`: utime and stime are fields 14 and 15 of the line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The last lines of a worker's log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (taskline (w) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(168));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_a_resident_set_and_cpu_time() {
        assert!(rss_kib("self").unwrap_or(0) > 0);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn the_config_runs_simulate_for_the_queue() {
        let text = worker_toml("redis://127.0.0.1:1/", "bench-x-saturate-2", 50, true);
        assert!(text.contains("[queues.\"bench-x-saturate-2\"]\nconcurrency = 50"), "{text}");
        assert!(
            text.contains("[handlers.noop]\nqueue = \"bench-x-saturate-2\"\nkind = \"simulate\""),
            "{text}"
        );
        assert!(text.contains("claim_batch = 50"), "{text}");
    }
}
