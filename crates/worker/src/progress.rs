//! Progress reports and checkpoints of one running job.
//!
//! A handler may call `ctx.progress(..)` in a tight loop: each call only
//! replaces the latest value in a [`watch`] channel, which costs no Redis
//! call. One [`ProgressFlusher`] per job writes the latest value at most
//! once per `progress_interval`, and the runner flushes once more when the
//! handler returns, so the stored value ends exact however few writes were
//! made. Checkpoints are not coalesced: a handler that saves one must know
//! it landed before it moves on.

use std::time::Duration;

use taskline::{Client, Error, Lease, Progress};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest wait for the final progress write after the handler returned:
/// the outcome must not wait long for a progress report.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The handler's side: what `JobContext` calls.
#[derive(Debug)]
pub(crate) struct JobReporter {
    client: Client,
    lease: Lease,
    latest: watch::Sender<Option<Progress>>,
}

impl JobReporter {
    /// A reporter for the job under `lease`, and the flusher that writes
    /// its reports at most once per `interval`.
    pub(crate) fn new(client: Client, lease: Lease, interval: Duration) -> (JobReporter, ProgressFlusher) {
        let (latest, rx) = watch::channel(None);
        let flusher = ProgressFlusher { client: client.clone(), lease: lease.clone(), rx, interval };
        (JobReporter { client, lease, latest }, flusher)
    }

    /// Replaces the latest report; the flusher writes it soon.
    pub(crate) fn report(&self, progress: Progress) {
        self.latest.send_replace(Some(progress));
    }

    /// Writes `checkpoint` (JSON text) now, fenced by the lease.
    pub(crate) async fn checkpoint(&self, checkpoint: &str) -> taskline::Result<()> {
        self.client.save_checkpoint(&self.lease, checkpoint).await
    }
}

/// Writes one job's latest progress report, at most once per interval.
#[derive(Debug)]
pub(crate) struct ProgressFlusher {
    client: Client,
    lease: Lease,
    rx: watch::Receiver<Option<Progress>>,
    interval: Duration,
}

impl ProgressFlusher {
    /// Writes reports as they come, spaced by the interval, until `stop`;
    /// returns itself so the runner can make the final flush.
    pub(crate) async fn run(mut self, stop: CancellationToken) -> Self {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return self,
                // Closed: the handler is done; the final flush writes the rest.
                changed = self.rx.changed() => if changed.is_err() { return self },
            }
            if !self.flush().await {
                return self;
            }
            tokio::select! {
                _ = stop.cancelled() => return self,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Writes the latest report if it has not been written yet; bounded in
    /// time, for when the handler has returned and its outcome waits.
    pub(crate) async fn final_flush(mut self) {
        // Not `rx.has_changed()`: it reports an error once the handler's
        // context (the sender) is dropped, which it is by now.
        let pending = self.rx.borrow().has_changed();
        if pending {
            let _ = tokio::time::timeout(FINAL_FLUSH_LIMIT, self.flush()).await;
        }
    }

    /// Writes the latest report. False when no report of this attempt can
    /// land any more (its lease is gone), so the flusher stops.
    async fn flush(&mut self) -> bool {
        let Some(progress) = self.rx.borrow_and_update().clone() else {
            return true;
        };
        match self.client.report_progress(&self.lease, &progress).await {
            Ok(()) => true,
            Err(Error::LeaseLost { .. } | Error::JobNotFound { .. }) => {
                debug!("progress not stored: this attempt no longer holds the job");
                false
            }
            // Best effort: marked unwritten, so the next turn (or the final
            // flush) tries again.
            Err(err) => {
                warn!(error = %err, "could not store progress");
                self.rx.mark_changed();
                true
            }
        }
    }
}
