//! [`Client::watch`]: follow one job as it changes, until it completes or
//! dies; [`Client::wait_for`]: wait for its final outcome.
//!
//! Events are best-effort transport (the stream is capped, a reader can
//! fall behind or lose its connection); the job record is the truth. So a
//! watch reads the record first, then follows the queue's event stream
//! from the point it read, and reads the record again whenever the events
//! may have missed something: after a connection error, and after
//! [`RECHECK_EVERY`] without an event about the job. Every step is one
//! [`JobUpdate`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use futures_util::stream::{BoxStream, StreamExt};
use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::job::{JobId, JobState};
use crate::operator::events::{Event, EventFollower};
use crate::progress::Progress;
use crate::status::JobStatus;
use crate::time::to_epoch_millis;

/// Longest time a watch trusts the event stream without reading the
/// record again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Longest pause between retries while Redis is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// One thing a watch saw. Serializes with a `type` tag (`status`,
/// `progress`, `state`, `removed`): what `taskline serve` streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobUpdate {
    /// The job's record as read: first, after a gap in the events, and at
    /// the end (the terminal status, with the result or the last error).
    Status(Box<JobStatus>),
    /// A progress report of the running attempt.
    Progress {
        /// The attempt that reported.
        attempt: u32,
        /// The report.
        progress: Progress,
    },
    /// The job moved to `state`, as an event told.
    State {
        /// The event (`claimed`, `retrying`, `released`, ...).
        event: String,
        /// The state the job moved to.
        state: JobState,
        /// Attempts started so far.
        attempt: u32,
        /// When, in ms since the Unix epoch (server clock).
        at_ms: u64,
    },
    /// The job was removed (purged, drained, or no longer found): the
    /// watch ends without a terminal status.
    Removed {
        /// Why: `purged`, `drained` or `missing`.
        event: String,
    },
}

impl JobUpdate {
    /// The state this update tells of, if it tells one.
    pub fn state(&self) -> Option<JobState> {
        match self {
            JobUpdate::Status(status) => Some(status.state),
            JobUpdate::State { state, .. } => Some(*state),
            JobUpdate::Progress { .. } | JobUpdate::Removed { .. } => None,
        }
    }
}

/// The updates of one job; a [`Stream`] that ends after the job reached a
/// terminal state (or was removed). Made by [`Client::watch`].
pub struct JobWatch {
    inner: BoxStream<'static, Result<JobUpdate>>,
}

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWatch").finish_non_exhaustive()
    }
}

impl JobWatch {
    /// The next update; `None` once the job is finished.
    pub async fn next(&mut self) -> Option<Result<JobUpdate>> {
        self.inner.next().await
    }
}

impl Stream for JobWatch {
    type Item = Result<JobUpdate>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
    /// Follows job `id` of `queue`: first its [`JobUpdate::Status`] now,
    /// then every progress report and state change, ending after the
    /// terminal status (completed or dead). Fails at once with
    /// [`Error::JobNotFound`] when there is no such job. While Redis is
    /// unreachable the watch waits and retries; other errors end it.
    ///
    /// Uses a connection of its own for the blocking reads.
    pub async fn watch(&self, queue: &str, id: &JobId) -> Result<JobWatch> {
        // Follow from the stream's end *before* reading the record, so that
        // nothing after the read can be missed.
        let mut follower = self.follow_events(queue, None).await?;
        follower.set_block(RECHECK_EVERY);
        let mut watcher = Watcher {
            client: self.clone(),
            queue: queue.to_string(),
            id: id.clone(),
            follower,
            pending: VecDeque::new(),
            last: None,
            last_progress: None,
            last_look: Instant::now(),
            done: false,
        };
        watcher.look().await?;
        let stream = futures_util::stream::unfold(watcher, |mut w| async move {
            let update = w.step().await?;
            Some((update, w))
        });
        Ok(JobWatch { inner: stream.boxed() })
    }

    /// Waits up to `timeout` for job `id` to finish. Returns its result
    /// (`None` when the handler returned none) once it completes;
    /// [`Error::JobDead`] with the final error once it dies;
    /// [`Error::WaitTimedOut`] when neither happened in time (the job goes
    /// on; wait again or watch it).
    pub async fn wait_for(
        &self,
        queue: &str,
        id: &JobId,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>> {
        let outcome = tokio::time::timeout(timeout, async {
            let mut watch = self.watch(queue, id).await?;
            let mut last = None;
            while let Some(update) = watch.next().await {
                last = Some(update?);
            }
            Ok::<_, Error>(last)
        })
        .await;
        let last = match outcome {
            Ok(last) => last?,
            Err(_) => {
                return Err(Error::WaitTimedOut { queue: queue.into(), id: id.to_string(), waited: timeout });
            }
        };
        match last {
            Some(JobUpdate::Status(status)) if status.state == JobState::Dead => Err(Error::JobDead {
                queue: queue.into(),
                id: id.to_string(),
                reason: status.dead_reason.unwrap_or_default(),
                last_error: status.last_error.map(|e| e.message),
            }),
            Some(JobUpdate::Status(status)) => Ok(status.result),
            // Completed and removed at once (retention keep_last = 0): done,
            // its result is gone with it.
            Some(JobUpdate::State { state: JobState::Completed, .. }) => Ok(None),
            other => Err(Error::Protocol {
                script: "watch",
                detail: format!("a watch ended on {other:?} instead of a terminal status"),
            }),
        }
    }
}

/// The state machine behind a [`JobWatch`].
struct Watcher {
    client: Client,
    queue: String,
    id: JobId,
    follower: EventFollower,
    pending: VecDeque<JobUpdate>,
    /// The last state and attempt reported.
    last: Option<(JobState, u32)>,
    last_progress: Option<Progress>,
    last_look: Instant,
    done: bool,
}

impl Watcher {
    async fn step(&mut self) -> Option<Result<JobUpdate>> {
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            if self.done {
                return None;
            }
            match self.advance().await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(err) if err.is_connection_error() => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    // The events may have a gap now: the record tells.
                    self.last_look = Instant::now() - RECHECK_EVERY;
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }

    /// Reads one batch of events and turns those about the job into
    /// updates; reads the record when the events said nothing for a while.
    async fn advance(&mut self) -> Result<()> {
        if self.last_look.elapsed() >= RECHECK_EVERY {
            self.look().await?;
            if self.done {
                return Ok(());
            }
        }
        let mut events = self.follower.next_batch().await?;
        events.retain(|e| e.job_id == self.id.as_str());
        for event in events {
            self.last_look = Instant::now();
            self.on_event(event).await?;
            if self.done {
                break;
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<()> {
        let state = match event.event.as_str() {
            "progress" => {
                self.on_progress(&event);
                return Ok(());
            }
            // Not state changes: `failed` is followed by `retrying` or `dead`.
            "checkpoint" | "failed" | "orphan" => return Ok(()),
            "completed" => return self.finish(&event, JobState::Completed).await,
            "dead" => return self.finish(&event, JobState::Dead).await,
            "purged" | "drained" => {
                self.pending.push_back(JobUpdate::Removed { event: event.event });
                self.done = true;
                return Ok(());
            }
            "claimed" => JobState::Active,
            "retrying" => JobState::Delayed,
            "replayed" => JobState::Ready,
            "released" => match event.extra.get("delay_ms").map(String::as_str) {
                Some("0") | None => JobState::Ready,
                Some(_) => JobState::Delayed,
            },
            "enqueued" => match event.extra.get("state").and_then(|s| s.parse().ok()) {
                Some(state) => state,
                None => return self.look().await,
            },
            // `lease_expired` (ready or delayed: the reaper's choice) and
            // events this version does not know: the record tells.
            _ => return self.look().await,
        };
        self.transition(event.event, state, event.attempt, to_epoch_millis(event.at));
        Ok(())
    }

    fn on_progress(&mut self, event: &Event) {
        let number = |k: &str| event.extra.get(k).and_then(|v| v.parse::<u64>().ok());
        let (Some(done), Some(total)) = (number("done"), number("total")) else {
            return;
        };
        let mut progress = Progress::new(done, total, event.extra.get("unit").cloned().unwrap_or_default());
        progress.message = event.extra.get("message").cloned();
        if self.last_progress.as_ref() != Some(&progress) {
            self.last_progress = Some(progress.clone());
            self.pending.push_back(JobUpdate::Progress { attempt: event.attempt, progress });
        }
    }

    fn transition(&mut self, event: String, state: JobState, attempt: u32, at_ms: u64) {
        if self.last != Some((state, attempt)) {
            self.last = Some((state, attempt));
            self.pending.push_back(JobUpdate::State { event, state, attempt, at_ms });
        }
    }

    /// The job reached a terminal state: report its final record (or, when
    /// retention already removed it, the state alone) and end.
    async fn finish(&mut self, event: &Event, state: JobState) -> Result<()> {
        self.done = true;
        match self.client.job_status(&self.queue, &self.id).await {
            Ok(status) if status.state == state => {
                self.pending.push_back(JobUpdate::Status(Box::new(status)))
            }
            // Removed by retention, or replayed already: the event tells.
            Ok(_) | Err(Error::JobNotFound { .. }) => self.pending.push_back(JobUpdate::State {
                event: event.event.clone(),
                state,
                attempt: event.attempt,
                at_ms: to_epoch_millis(event.at),
            }),
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Reads the record; reports it when it differs from what was last
    /// reported (always, the first time), and ends at a terminal state.
    async fn look(&mut self) -> Result<()> {
        self.last_look = Instant::now();
        let status = match self.client.job_status(&self.queue, &self.id).await {
            Ok(status) => status,
            Err(Error::JobNotFound { .. }) if self.last.is_some() => {
                self.pending.push_back(JobUpdate::Removed { event: "missing".into() });
                self.done = true;
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let changed = self.last != Some((status.state, status.attempt))
            || (status.progress.is_some() && status.progress != self.last_progress);
        self.done = status.is_terminal();
        if changed || self.done {
            self.last = Some((status.state, status.attempt));
            self.last_progress = status.progress.clone();
            self.pending.push_back(JobUpdate::Status(Box::new(status)));
        }
        Ok(())
    }
}
