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
/// allowed: there is nothing to split. On an error nothing stays pinned,
/// so a report that says the CPUs are shared is true.
pub fn pin_redis_apart(redis_pid: u32) -> Result<Option<Pinning>> {
    pin_apart(redis_pid, "/proc/self/task")
}

/// [`pin_redis_apart`], with the clients' threads listed under
/// `client_task_dir`.
fn pin_apart(redis_pid: u32, client_task_dir: &str) -> Result<Option<Pinning>> {
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
    let redis_task_dir = format!("/proc/{redis_pid}/task");
    let pinned = pin_threads(&redis_task_dir, &redis_set)
        .context("pin redis-server")
        .and_then(|()| pin_threads(client_task_dir, &client_set).context("pin the benchmark's threads"));
    if let Err(e) = pinned {
        // Undo what was done: half a pinning would go unreported.
        let _ = pin_threads(&redis_task_dir, &allowed);
        let _ = pin_threads(client_task_dir, &allowed);
        return Err(e);
    }
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

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    /// A child process standing in for Redis, killed when dropped.
    struct Sleeper(Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn cpus_of(pid: u32) -> CpuSet {
        sched_getaffinity(Pid::from_raw(pid as i32)).expect("read a CPU set")
    }

    fn same(a: &CpuSet, b: &CpuSet) -> bool {
        (0..CpuSet::count()).all(|c| a.is_set(c).unwrap_or(false) == b.is_set(c).unwrap_or(false))
    }

    #[test]
    fn a_failed_pinning_leaves_redis_on_every_cpu() {
        let allowed = sched_getaffinity(Pid::from_raw(0)).expect("own CPU set");
        let redis = Sleeper(Command::new("sleep").arg("30").spawn().expect("spawn sleep"));
        let pid = redis.0.id();
        match pin_apart(pid, "/nonexistent/task") {
            // One CPU: nothing to split, nothing done.
            Ok(None) => {}
            Ok(Some(p)) => panic!("pinning succeeded without the clients' threads: {p:?}"),
            // The clients' half fails here, or, where affinity changes are
            // refused, already Redis's.
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("pin the benchmark's threads") || e.contains("pin redis-server"), "{e}");
            }
        }
        assert!(same(&cpus_of(pid), &allowed), "Redis's stand-in was left pinned");
    }
}
