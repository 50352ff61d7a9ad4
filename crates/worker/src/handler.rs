//! What handler authors touch: the [`Handler`] trait, the [`JobContext`]
//! each run receives, and [`JobError`], which classifies failures.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use taskline::{FailureKind, JobId, Progress};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::progress::JobReporter;

/// A boxed, sendable future: what [`Handler::handle`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler run produces: an optional JSON result, or a classified
/// error.
pub type HandlerResult = Result<Option<serde_json::Value>, JobError>;

/// Why a run failed, and whether retrying can help.
///
/// Any `std::error::Error` converts into a *transient* `JobError` (so `?`
/// works in handlers): an error the handler did not classify is treated as
/// ambiguous and retried, relying on the handler being idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// Transient (retried with backoff) or permanent (dead letter).
    pub kind: FailureKind,
    /// Short reason code recorded on a dead job (`invalid_payload`, ...).
    pub reason: Option<String>,
    /// What went wrong.
    pub message: String,
    /// For a transient error: retry after exactly this long instead of the
    /// backoff (e.g. an HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The upstream is rate limiting (see [`JobError::rate_limited`]): the
    /// job runs again after `retry_after` without spending the attempt.
    pub rate_limited: bool,
    /// With `rate_limited`: no worker starts another job of the queue
    /// until `retry_after` has passed.
    pub hold_queue: bool,
}

impl JobError {
    /// A failure worth retrying (timeouts, 5xx, connection loss).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Transient, message.into())
    }

    /// A failure retrying cannot fix (invalid input, missing resource): the
    /// job goes straight to the dead letter queue.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Permanent, message.into())
    }

    /// The upstream said "too many requests, retry after `retry_after`"
    /// (an HTTP 429, a quota error). Not a failure of the job: it runs
    /// again after `retry_after` without spending an attempt. Add
    /// [`JobError::hold_queue`] when the limit is shared by the whole
    /// queue, so that no worker starts another of its jobs meanwhile.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut err = Self::new(FailureKind::Transient, "rate limited by the upstream".into());
        err.retry_after = Some(retry_after);
        err.rate_limited = true;
        err
    }

    /// With [`JobError::rate_limited`]: holds every claim of the queue, in
    /// every worker, for the `retry_after` wait.
    pub fn hold_queue(mut self) -> Self {
        self.hold_queue = true;
        self
    }

    fn new(kind: FailureKind, message: String) -> Self {
        Self { kind, reason: None, message, retry_after: None, rate_limited: false, hold_queue: false }
    }

    /// Sets the reason code recorded if the job dies.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Retries after `delay` instead of the queue's backoff.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        JobError::transient(message)
    }
}

/// Everything a handler knows about the run it is doing.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id: use it as the idempotency key of side effects.
    pub id: JobId,
    /// The queue the job came from.
    pub queue: String,
    /// The job name.
    pub name: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// The payload's schema version.
    pub version: u32,
    /// The producer's correlation id, if any.
    pub correlation_id: Option<String>,
    /// The last checkpoint an earlier attempt saved, if any (JSON); decode
    /// it with [`JobContext::resume_from`].
    pub checkpoint: Option<String>,
    /// This worker process's instance id.
    pub worker: String,
    pub(crate) cancel: CancellationToken,
    /// Writes progress and checkpoints; `None` outside a real run (unit
    /// tests of handlers).
    pub(crate) reporter: Option<Arc<JobReporter>>,
}

impl JobContext {
    /// Resolves when the run is cancelled: timeout, lost lease or shutdown.
    /// A handler that does long work should select on it and stop early;
    /// one that ignores it is dropped at its next `.await` anyway.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// True once the run is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports that `done` of `total` `unit`s are done (`total` 0: not
    /// known). Cheap enough for a tight loop: calls are coalesced, and the
    /// worker stores the latest report at most a few times per second
    /// (`worker.progress_interval`) and once more when the handler returns,
    /// so the stored value ends exact. Each stored report is also a
    /// `progress` event on the queue's event stream.
    pub fn progress(&self, done: u64, total: u64, unit: &str) {
        self.report(Progress::new(done, total, unit));
    }

    /// [`JobContext::progress`] with a message about the current step.
    pub fn progress_with_message(&self, done: u64, total: u64, unit: &str, message: impl Into<String>) {
        self.report(Progress::new(done, total, unit).with_message(message));
    }

    fn report(&self, progress: Progress) {
        if let Some(reporter) = &self.reporter {
            reporter.report(progress);
        }
    }

    /// Saves `state` (as JSON) so that the next attempt of this job, after
    /// a failure, a lost lease or a release, starts from it
    /// ([`JobContext::resume_from`]). Written at once, not coalesced: when
    /// this returns `Ok` the checkpoint is stored. Fails with
    /// [`taskline::Error::PayloadTooLarge`] over `worker.max_checkpoint_bytes`
    /// (keep checkpoints small: an offset, a cursor, ids) and with
    /// [`taskline::Error::LeaseLost`] when another attempt owns the job;
    /// either converts into a transient [`JobError`] with `?`.
    pub async fn checkpoint<T: Serialize + ?Sized>(&self, state: &T) -> taskline::Result<()> {
        let json = serde_json::to_string(state).map_err(taskline::Error::InvalidPayload)?;
        match &self.reporter {
            Some(reporter) => reporter.checkpoint(&json).await,
            None => Err(taskline::Error::InvalidOption {
                option: "checkpoint",
                reason: "this JobContext is not attached to a running job".into(),
            }),
        }
    }

    /// The checkpoint an earlier attempt saved, decoded; `Ok(None)` when
    /// there is none (the first attempt, or nothing was saved).
    pub fn resume_from<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.checkpoint.as_deref().map(serde_json::from_str).transpose()
    }
}

/// A job handler, registered under a queue and a job name.
///
/// Most handlers are plain async functions wrapped by [`handler_fn`]; a
/// type can implement this trait directly to work on the raw JSON payload.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of a job. `payload` is the job's JSON text.
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult>;

    /// The newest payload version this handler understands. A job with a
    /// newer version is handed back (a rolling deploy may be under way) and
    /// dead-lettered only after a bounded number of returns.
    fn max_version(&self) -> u32 {
        u32::MAX
    }
}

/// A [`Handler`] made from an async function of the deserialized payload.
pub struct FnHandler<F, P> {
    f: F,
    max_version: u32,
    _payload: PhantomData<fn(P)>,
}

/// Wraps `f(ctx, payload)` as a handler. The payload is deserialized from
/// JSON; one that does not decode fails the job permanently with reason
/// `invalid_payload` (retrying cannot fix it).
///
/// ```
/// use taskline_worker::{JobContext, JobError, handler_fn};
///
/// #[derive(serde::Deserialize)]
/// struct Email { to: String }
///
/// let handler = handler_fn(|ctx: JobContext, email: Email| async move {
///     if !email.to.contains('@') {
///         return Err(JobError::permanent(format!("{} is not an address", email.to)));
///     }
///     println!("job {} sends to {}", ctx.id, email.to);
///     Ok(None)
/// });
/// ```
pub fn handler_fn<F, Fut, P>(f: F) -> FnHandler<F, P>
where
    F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
    P: DeserializeOwned + Send + 'static,
{
    FnHandler { f, max_version: u32::MAX, _payload: PhantomData }
}

impl<F, P> FnHandler<F, P> {
    /// Declares the newest payload version this handler understands.
    pub fn max_version(mut self, version: u32) -> Self {
        self.max_version = version;
        self
    }
}

impl<F, Fut, P> Handler for FnHandler<F, P>
where
    F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
    P: DeserializeOwned + Send + 'static,
{
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult> {
        match serde_json::from_str::<P>(&payload) {
            Ok(decoded) => Box::pin((self.f)(ctx, decoded)),
            Err(err) => Box::pin(async move {
                Err(JobError::permanent(format!("payload does not decode: {err}"))
                    .with_reason("invalid_payload"))
            }),
        }
    }

    fn max_version(&self) -> u32 {
        self.max_version
    }
}

/// A handler with a declared newest payload version, for handlers that do
/// not declare one themselves (configured ones: `max_version` in TOML).
pub struct WithMaxVersion<H> {
    inner: H,
    max_version: u32,
}

impl<H: Handler> WithMaxVersion<H> {
    /// Wraps `inner`, accepting payload versions up to `max_version`.
    pub fn new(inner: H, max_version: u32) -> Self {
        Self { inner, max_version }
    }
}

impl<H: Handler> Handler for WithMaxVersion<H> {
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult> {
        self.inner.handle(ctx, payload)
    }

    fn max_version(&self) -> u32 {
        self.max_version.min(self.inner.max_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> JobContext {
        JobContext {
            id: JobId::generate(),
            queue: "q".into(),
            name: "n".into(),
            attempt: 1,
            max_attempts: 5,
            version: 0,
            correlation_id: None,
            checkpoint: None,
            worker: "w".into(),
            cancel: CancellationToken::new(),
            reporter: None,
        }
    }

    #[tokio::test]
    async fn typed_handler_decodes_the_payload() {
        let h = handler_fn(|_ctx, n: u32| async move { Ok(Some(serde_json::json!(n * 2))) });
        assert_eq!(h.handle(ctx(), "21".into()).await, Ok(Some(serde_json::json!(42))));
    }

    #[tokio::test]
    async fn undecodable_payload_is_a_permanent_invalid_payload() {
        let h = handler_fn(|_ctx, _n: u32| async move { Ok(None) });
        let err = h.handle(ctx(), r#"{"not":"a number"}"#.into()).await.expect_err("must fail");
        assert_eq!(err.kind, FailureKind::Permanent);
        assert_eq!(err.reason.as_deref(), Some("invalid_payload"));
    }

    #[test]
    fn plain_errors_are_transient_with_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out");
        let err = JobError::from(io);
        assert_eq!(err.kind, FailureKind::Transient);
        assert!(err.message.contains("upstream timed out"));
    }
}
