//! The fleet: `taskline-worker` processes, each in a numbered slot.
//!
//! Every process gets its own instance id, `w<slot>-g<generation>`, passed
//! as `TASKLINE_WORKER__ID`, so a lease lost by a killed process names that
//! process in the job's history. A slot's generation grows with each
//! restart. A process that exits without being told to is an anomaly: it
//! is recorded and restarted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One worker slot.
#[derive(Debug)]
struct Slot {
    generation: u32,
    instance: String,
    child: Option<Child>,
}

/// The worker processes of a run.
#[derive(Debug)]
pub struct Fleet {
    binary: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    log_level: String,
    slots: Vec<Slot>,
}

/// How a stopped process ended.
#[derive(Debug)]
pub struct Stopped {
    /// Its instance id.
    pub instance: String,
    /// Its exit status, `None` if it had to be killed after the limit.
    pub status: Option<ExitStatus>,
}

impl Fleet {
    /// Starts `count` workers of `binary` with `config`, logging into `logs`
    /// at `log_level` (`RUST_LOG`).
    pub fn start(binary: &Path, config: &Path, logs: &Path, log_level: &str, count: usize) -> Result<Fleet> {
        std::fs::create_dir_all(logs).with_context(|| format!("cannot create {}", logs.display()))?;
        let mut fleet = Fleet {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            logs: logs.to_path_buf(),
            log_level: log_level.to_string(),
            slots: Vec::new(),
        };
        for index in 0..count {
            fleet.slots.push(Slot { generation: 0, instance: instance_id(index, 0), child: None });
            fleet.spawn(index)?;
        }
        Ok(fleet)
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The instance id of the process in `slot`.
    pub fn instance(&self, slot: usize) -> &str {
        &self.slots[slot].instance
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let slot = &mut self.slots[index];
        let log_path = self.logs.join(format!("{}.log", slot.instance));
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(&self.config);
        // Overrides from the caller's environment would change the config.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("TASKLINE_") && key.contains("__") {
                command.env_remove(key);
            }
        }
        let child = command
            .env("TASKLINE_WORKER__ID", &slot.instance)
            .env("RUST_LOG", &self.log_level)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        slot.child = Some(child);
        Ok(())
    }

    /// Starts the next generation of `slot`, whose process must be gone.
    pub fn restart(&mut self, slot: usize) -> Result<()> {
        let s = &mut self.slots[slot];
        s.generation += 1;
        s.instance = instance_id(slot, s.generation);
        self.spawn(slot)
    }

    /// Sends `signal` (`KILL`, `TERM`) to `slot` and waits up to `limit` for
    /// it to exit; a process still there then is killed.
    pub async fn stop(&mut self, slot: usize, signal: &str, limit: Duration) -> Stopped {
        if let Some(child) = &self.slots[slot].child {
            send_signal(child.id(), signal);
        }
        self.wait_exit(slot, limit).await
    }

    /// Waits up to `limit` for the process of `slot` to exit, then kills it.
    async fn wait_exit(&mut self, slot: usize, limit: Duration) -> Stopped {
        let instance = self.slots[slot].instance.clone();
        let Some(mut child) = self.slots[slot].child.take() else {
            return Stopped { instance, status: None };
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Stopped { instance, status: Some(status) };
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Stopped { instance, status: None };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Processes that exited on their own since the last call, with their
    /// status; their slots are empty until [`Fleet::restart`].
    pub fn exited(&mut self) -> Vec<(usize, String, ExitStatus)> {
        let mut gone = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(child) = slot.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                slot.child = None;
                gone.push((index, slot.instance.clone(), status));
            }
        }
        gone
    }

    /// Stops every process gracefully (SIGTERM, then SIGKILL after `limit`).
    pub async fn stop_all(&mut self, limit: Duration) -> Vec<Stopped> {
        for slot in &self.slots {
            if let Some(child) = &slot.child {
                send_signal(child.id(), "TERM");
            }
        }
        let mut stopped = Vec::new();
        for slot in 0..self.slots.len() {
            if self.slots[slot].child.is_some() {
                stopped.push(self.wait_exit(slot, limit).await);
            }
        }
        stopped
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The instance id of generation `generation` of slot `slot`.
pub fn instance_id(slot: usize, generation: u32) -> String {
    format!("w{slot}-g{generation}")
}

/// Sends `signal` to `pid` with the `kill` utility (no unsafe code here).
fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
