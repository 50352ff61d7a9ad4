//! The process group of a command handler's child, so that the child and
//! everything it started are stopped together and none is left behind.
//!
//! The child is started as the leader of a new process group (its pgid is
//! its pid). Signals go to the whole group. Dropping a [`ProcessGroup`]
//! that is still armed kills the group with SIGKILL: whatever path a run
//! takes (cancelled, panicked, the runtime shutting down), no process of it
//! outlives it.

use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tracing::warn;

/// The process group led by a spawned child.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
    armed: bool,
}

impl ProcessGroup {
    /// The group of `child`, spawned with `process_group(0)`. `None` when
    /// the child has already been reaped (it has no id any more).
    pub fn of(child: &Child) -> Option<Self> {
        let pid = i32::try_from(child.id()?).ok()?;
        Some(Self { pgid: Pid::from_raw(pid), armed: true })
    }

    /// Sends `signal` to every process of the group. A group that is gone
    /// already is not an error.
    pub fn signal(&self, signal: Signal) {
        if let Err(err) = killpg(self.pgid, signal)
            && err != nix::errno::Errno::ESRCH
        {
            warn!(pgid = self.pgid.as_raw(), %signal, error = %err, "cannot signal a command's process group");
        }
    }

    /// After the leader exited: kills what it left running (background
    /// processes that still hold its pipes) and disarms the guard.
    pub fn kill_leftovers(mut self) {
        self.signal(Signal::SIGKILL);
        self.armed = false;
    }

    /// Stops the group: SIGTERM, then SIGKILL if `leader` has not exited
    /// after `grace`. Waits for the leader, so it leaves no zombie.
    pub async fn terminate(mut self, mut leader: Child, grace: Duration) {
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, leader.wait()).await.is_err() {
            warn!(pgid = self.pgid.as_raw(), grace = ?grace, "command ignored SIGTERM; sending SIGKILL");
        }
        // Also for a leader that exited on SIGTERM: its children may not have.
        self.signal(Signal::SIGKILL);
        let _ = leader.wait().await;
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}
