//! Shared helpers: the worker binary, worker configs, producers that
//! resend, and waiting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use taskline::{Client, Error, JobId, NewJob};
use taskline_testkit::build_worker_next_to;

/// The `taskline-worker` binary, built once into this test's target dir.
pub fn worker_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            // target/<profile>/deps/e2e-<hash>: the worker goes to target/<profile>.
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
            build_worker_next_to(&profile_dir.join("e2e"))
        })
        .clone()
}

/// Polls `check` every 50 ms until it returns true, or panics after
/// `limit` with `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// What a resending producer got acknowledged, per queue, and when the
/// writes to each queue came back after failing.
#[derive(Debug, Default)]
pub struct Produced {
    /// Acknowledged job ids, by queue.
    pub acked: BTreeMap<String, Vec<JobId>>,
    /// Enqueue attempts that failed and were resent.
    pub resends: u64,
    /// Per queue, the longest time one job took to be acknowledged,
    /// resends and the client's own retries (a cluster client retries
    /// while a failover is under way) included.
    pub longest_outage: BTreeMap<String, Duration>,
}

/// Enqueues `job` to `queue` with its own id, resending on errors that
/// leave the outcome unknown (a failover, unconfirmed replication) until it
/// is acknowledged: created, or a duplicate of its own id (an earlier try
/// landed). Gives up after `limit`.
pub async fn enqueue_until_acknowledged(
    client: &Client,
    queue: &str,
    job: NewJob,
    id: &JobId,
    limit: Duration,
    produced: &mut Produced,
) {
    let started = Instant::now();
    loop {
        match client.enqueue(queue, job.clone().id(id.clone())).await {
            Ok(_) => break,
            Err(Error::DuplicateJob { existing, .. }) if existing == id.as_str() => break,
            Err(err) if err.is_connection_error() && started.elapsed() < limit => {
                produced.resends += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("enqueue {id} to {queue}: {err}"),
        }
    }
    let longest = produced.longest_outage.entry(queue.to_string()).or_default();
    *longest = (*longest).max(started.elapsed());
    produced.acked.entry(queue.to_string()).or_default().push(id.clone());
}
