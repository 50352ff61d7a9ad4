//! The configured queues at run time, by scheduler index: what the
//! [`WorkerBuilder`](crate::WorkerBuilder) registers and the runners read.
//!
//! A module of its own so that the supervisor (`worker`), which builds
//! these, and the runners, which use them, depend on it and not on each
//! other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use taskline::Backoff;

use crate::handler::Handler;

/// A handler with its per-handler settings.
pub(crate) struct Registered {
    pub handler: Arc<dyn Handler>,
    /// Default per-attempt timeout of this handler's jobs.
    pub timeout: Option<Duration>,
}

/// One queue's settings and handlers, as its runners use them.
pub(crate) struct QueueRuntime {
    pub name: String,
    /// Retry delays of jobs that set no backoff of their own.
    pub backoff: Backoff,
    /// Per-attempt timeout when neither the job nor its handler sets one.
    pub timeout: Option<Duration>,
    /// By job name: the runner looks a handler up per job without building
    /// a key.
    pub handlers: HashMap<String, Registered>,
}
