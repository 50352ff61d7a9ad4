//! A `taskline-worker` child process owned by a test: its logs in a file,
//! signals by name, killed on drop (with its log printed if the test is
//! failing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `taskline-worker` child process; killed on drop if still running.
pub struct WorkerProcess {
    /// The child.
    pub child: Child,
    /// Where its stderr (the logs) goes.
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `binary` (a `taskline-worker`) with `--config path`, logs to
    /// `log`.
    pub fn spawn(binary: &Path, config: &Path, log: &Path) -> WorkerProcess {
        Self::spawn_with_env(binary, config, log, &[])
    }

    /// [`WorkerProcess::spawn`] with extra environment variables.
    pub fn spawn_with_env(binary: &Path, config: &Path, log: &Path, env: &[(&str, &Path)]) -> WorkerProcess {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn taskline-worker");
        WorkerProcess { child, log: log.to_path_buf() }
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "worker did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- worker log {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}
