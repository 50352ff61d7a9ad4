//! Gives the private Redis a CPU of its own.
//!
//! On a small machine the benchmark's clients (this process, the BullMQ
//! peer, worker processes) and Redis otherwise share every core, and the
//! scheduler's choices move the figures by a third from one run to the
//! next: a client thread that lands on Redis's core slows Redis and raises
//! its CPU per job. With Redis alone on the last allowed CPU and every
//! client on the others, runs repeat within about a tenth, and both
//! systems meet the same arrangement.

use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

/// Where things run, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Pinning {
    /// The CPU Redis runs on.
    pub redis_cpu: usize,
    /// The CPUs this process and every program it starts run on.
    pub client_cpus: Vec<usize>,
}

/// Pins every thread of the Redis process `redis_pid` to the last CPU this
/// process may use, and every thread of this process (so also the programs
/// it starts later) to the others. `Ok(None)` when fewer than two CPUs are
/// allowed: there is nothing to split.
pub fn pin_redis_apart(redis_pid: u32) -> Result<Option<Pinning>> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("read this process's CPU set")?;
    let cpus: Vec<usize> = (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false)).collect();
    let Some((&redis_cpu, client_cpus)) = cpus.split_last() else { return Ok(None) };
    if client_cpus.is_empty() {
        return Ok(None);
    }
    let mut redis_set = CpuSet::new();
    redis_set.set(redis_cpu)?;
    let mut client_set = CpuSet::new();
    for &cpu in client_cpus {
        client_set.set(cpu)?;
    }
    pin_threads(&format!("/proc/{redis_pid}/task"), &redis_set).context("pin redis-server")?;
    pin_threads("/proc/self/task", &client_set).context("pin the benchmark's threads")?;
    Ok(Some(Pinning { redis_cpu, client_cpus: client_cpus.to_vec() }))
}

/// Sets the CPU set of every thread listed under a `/proc/<pid>/task`
/// directory (`sched_setaffinity` applies to one thread at a time).
fn pin_threads(task_dir: &str, set: &CpuSet) -> Result<()> {
    for entry in std::fs::read_dir(Path::new(task_dir)).with_context(|| format!("list {task_dir}"))? {
        let tid: i32 = entry?.file_name().to_string_lossy().parse().context("thread id")?;
        sched_setaffinity(Pid::from_raw(tid), set)
            .with_context(|| format!("set the CPUs of thread {tid}"))?;
    }
    Ok(())
}
