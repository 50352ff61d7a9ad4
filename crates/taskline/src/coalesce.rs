//! Group commit for concurrent calls. Requests of one kind on one queue
//! (enqueues, completions) that arrive while earlier ones are in flight
//! travel together in one script call. A lone request goes out at once, so
//! nothing waits for company; under load, batches grow by themselves, and
//! Redis runs one script call per batch instead of one per request.
//!
//! Each kind of request has a lane per queue: a task that takes what has
//! queued up (at most [`MAX_BATCH`]), runs it as one batch, and lets up to
//! [`IN_FLIGHT`] batches be on their way at once. The batch function
//! answers every request through the reply channel the request carries.
//! Lanes end when their [`Lanes`] is dropped (with the client).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};

/// Most requests in one batch: enough to amortize a script call, few
/// enough that a batch never holds Redis for long (about a millisecond).
pub(crate) const MAX_BATCH: usize = 100;

/// Batches of one lane on their way at once. Two keep Redis busy while the
/// reply of the previous batch travels back and the next one fills up.
pub(crate) const IN_FLIGHT: usize = 2;

/// The lanes of one kind of request, by lane key (queue name and whatever
/// else the batch must share).
pub(crate) struct Lanes<R> {
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<R>>>,
}

impl<R: Send + 'static> Lanes<R> {
    pub(crate) fn new() -> Self {
        Self { senders: Mutex::new(HashMap::new()) }
    }

    /// Queues `request` on the lane `key`. When the lane has no task yet
    /// (or its task ended with the runtime it was started on), starts one
    /// that runs batches with `run`.
    pub(crate) fn submit<F, Fut>(&self, key: &str, request: R, run: F)
    where
        F: Fn(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        let request = match senders.get(key) {
            Some(sender) => match sender.send(request) {
                Ok(()) => return,
                Err(mpsc::error::SendError(request)) => request,
            },
            None => request,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        // A fresh channel's receiver is alive until the task below starts.
        let _ = sender.send(request);
        senders.insert(key.to_string(), sender);
        tokio::spawn(drive(receiver, run));
    }
}

/// A lane's task: waits for a free in-flight slot, then for the first
/// request, takes whatever else has queued up, and sends the batch off.
async fn drive<R, F, Fut>(mut receiver: mpsc::UnboundedReceiver<R>, run: F)
where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = receiver.recv().await else { return };
        let mut batch = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let sent = run(batch);
        tokio::spawn(async move {
            sent.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    /// Requests queued while a batch is in flight go out together, and
    /// every request gets its own answer.
    #[tokio::test]
    async fn queued_requests_share_a_batch_and_each_gets_its_answer() {
        let lanes: Lanes<(u32, oneshot::Sender<(u32, usize)>)> = Lanes::new();
        let batches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut answers = Vec::new();
        for i in 0..(IN_FLIGHT as u32 + 10) {
            let (tx, rx) = oneshot::channel();
            let batches = batches.clone();
            let gate = gate.clone();
            lanes.submit("q", (i, tx), move |batch: Vec<(u32, oneshot::Sender<(u32, usize)>)>| {
                let batches = batches.clone();
                let gate = gate.clone();
                async move {
                    batches.fetch_add(1, Ordering::SeqCst);
                    // Hold every batch until the test lets them go, so the
                    // later requests queue up behind the first ones.
                    gate.notified().await;
                    let size = batch.len();
                    for (value, reply) in batch {
                        let _ = reply.send((value * 2, size));
                    }
                }
            });
            answers.push((i, rx));
            tokio::task::yield_now().await;
        }
        // Let every batch through (one permit per notified waiter; loop
        // until all answers are in).
        let mut sizes = Vec::new();
        for (i, mut rx) in answers {
            let (doubled, size) = loop {
                gate.notify_waiters();
                tokio::select! {
                    got = &mut rx => break got.expect("answered"),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
            };
            assert_eq!(doubled, i * 2, "request {i} got another request's answer");
            sizes.push(size);
        }
        let total = batches.load(Ordering::SeqCst);
        assert!(total < IN_FLIGHT + 10, "no request shared a batch: {total} batches, sizes {sizes:?}");
        assert!(sizes.iter().any(|&s| s > 1), "every batch held one request: {sizes:?}");
    }

    /// A lane whose task died with its runtime is started again.
    #[test]
    fn a_lane_is_restarted_on_a_new_runtime() {
        let lanes: Lanes<oneshot::Sender<u32>> = Lanes::new();
        for round in 0..2u32 {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let got = runtime.block_on(async {
                let (tx, rx) = oneshot::channel();
                lanes.submit("q", tx, move |batch: Vec<oneshot::Sender<u32>>| async move {
                    for reply in batch {
                        let _ = reply.send(round);
                    }
                });
                rx.await
            });
            assert_eq!(got, Ok(round), "round {round} was not answered");
        }
    }
}
