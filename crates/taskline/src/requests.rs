//! What waits in a client's coalescing lanes (see [`crate::coalesce`]):
//! one enqueue or one completion, and where its answer goes.
//!
//! They have a module of their own so that the client, which owns the
//! lanes, need not import the producer or the protocol that fill them.

use tokio::sync::oneshot;

use crate::error::Result;
use crate::job::{EnqueueOutcome, NewJob};
use crate::protocol::{Claim, Completion, Lease};

/// One coalesced `enqueue` call: the validated job and where its outcome
/// goes.
pub(crate) struct EnqueueRequest {
    /// The job, validated.
    pub(crate) job: NewJob,
    /// Where its outcome goes.
    pub(crate) reply: oneshot::Sender<Result<EnqueueOutcome>>,
}

/// One completion of a batch: the lease, the result's JSON text ("" for
/// none) and how many successors to lease for it.
pub(crate) struct CompleteEntry {
    /// The lease of the job completed.
    pub(crate) lease: Lease,
    /// The result's JSON text, "" for none.
    pub(crate) result: String,
    /// Successors to lease for it.
    pub(crate) want: u32,
}

/// One coalesced completion call and where its answer goes.
pub(crate) struct CompleteRequest {
    /// The completion.
    pub(crate) entry: CompleteEntry,
    /// Where its answer goes.
    pub(crate) reply: oneshot::Sender<Result<(Completion, Claim)>>,
}
