//! Group commit for concurrent calls. Requests of one kind on one queue
//! (enqueues, completions) that arrive while earlier ones are in flight
//! travel together in one script call. A lone request goes out at once, so
//! nothing waits for company; under load, batches grow by themselves, and
//! Redis runs one script call per batch instead of one per request.
//!
//! Each kind of request has a lane per queue: a task that takes what has
//! queued up (at most [`MAX_BATCH`]), runs it as one batch, and lets up to
//! a few batches be on their way at once (the kind's [`Shape`]). The batch function
//! answers every request through the reply channel the request carries.
//! Lanes end when their [`Lanes`] is dropped (with the client).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};

/// Most requests in one batch: enough to amortize a script call, few
/// enough that a batch never holds Redis for long (about a millisecond).
pub(crate) const MAX_BATCH: usize = 100;

/// How the lanes of one kind of request batch it. Each kind has its own,
/// measured with `taskline-bench` (alternated builds, BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Batches of one lane on their way at once: enough to keep Redis busy
    /// while a reply travels back and the next batch fills up.
    pub(crate) in_flight: usize,
    /// When a batch is cut.
    pub(crate) gather: Gather,
}

/// Enqueues: three in flight, gathered after a yield. Producers wait for
/// their previous enqueue, so the next batch fills only from a reply's
/// callers; with two in flight Redis sat idle between batches (three:
/// 142k against 117k single enqueues/s, 200k jobs, 4 alternated rounds;
/// four: no better).
pub(crate) const ENQUEUE: Shape = Shape { in_flight: 3, gather: Gather::AfterYield };

/// Completions: two in flight, cut at once. A completion's successors come
/// back in its reply, so the worker's slots keep the lane fed; three in
/// flight made batches smaller and cost more Redis CPU per job (44k
/// against 52k jobs/s).
pub(crate) const COMPLETE: Shape = Shape { in_flight: 2, gather: Gather::AtOnce };

/// The lanes of one kind of request, by lane key (queue name and whatever
/// else the batch must share).
pub(crate) struct Lanes<R> {
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<R>>>,
    shape: Shape,
}

/// Whether a lane's task, once a request arrives, yields one turn of the
/// scheduler before it cuts the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gather {
    /// Cut at once (completions: yielding measured 4 to 8% slower).
    AtOnce,
    /// Yield first, so that the tasks woken by the same reply (producers
    /// awaiting their previous enqueue) queue their requests too. Without
    /// it, Tokio's LIFO slot runs the lane right after the first caller and
    /// each caller goes out alone (measured: 6 to 15% more single enqueues
    /// per second with the yield, 4 to 7% less Redis CPU per job). A yield,
    /// not a timer: nothing waits for company.
    AfterYield,
}

impl<R: Send + 'static> Lanes<R> {
    pub(crate) fn new(shape: Shape) -> Self {
        Self { senders: Mutex::new(HashMap::new()), shape }
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
        tokio::spawn(drive(receiver, run, self.shape));
    }
}

/// A lane's task: waits for a free in-flight slot, then for the first
/// request, takes whatever else has queued up, and sends the batch off.
async fn drive<R, F, Fut>(mut receiver: mpsc::UnboundedReceiver<R>, run: F, shape: Shape)
where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(shape.in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = receiver.recv().await else { return };
        if shape.gather == Gather::AfterYield {
            tokio::task::yield_now().await;
        }
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
        let lanes: Lanes<(u32, oneshot::Sender<(u32, usize)>)> = Lanes::new(COMPLETE);
        let batches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut answers = Vec::new();
        for i in 0..(COMPLETE.in_flight as u32 + 10) {
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
        assert!(
            total < COMPLETE.in_flight + 10,
            "no request shared a batch: {total} batches, sizes {sizes:?}"
        );
        assert!(sizes.iter().any(|&s| s > 1), "every batch held one request: {sizes:?}");
    }

    /// Producers woken by one reply all queue before the enqueue lane cuts
    /// its batch, instead of the first going out alone (on a one-thread
    /// multi-thread runtime, as a pinned worker runs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_enqueue_lane_gathers_the_requests_of_tasks_woken_together() {
        let tasks = 10;
        let lanes: Arc<Lanes<oneshot::Sender<()>>> = Arc::new(Lanes::new(ENQUEUE));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let sizes = sizes.clone();
            move |batch: Vec<oneshot::Sender<()>>| {
                let sizes = sizes.clone();
                async move {
                    sizes.lock().unwrap().push(batch.len());
                    for reply in batch {
                        let _ = reply.send(());
                    }
                }
            }
        };
        // Start the lane first, so that its start is not part of the test.
        let (tx, rx) = oneshot::channel();
        lanes.submit("q", tx, run.clone());
        rx.await.expect("answered");
        sizes.lock().unwrap().clear();

        let (go, gate) = tokio::sync::watch::channel(false);
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (lanes, run, mut gate) = (lanes.clone(), run.clone(), gate.clone());
            waiting.spawn(async move {
                gate.wait_for(|open| *open).await.expect("gate");
                let (tx, rx) = oneshot::channel();
                lanes.submit("q", tx, run);
                rx.await.expect("answered");
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Woken from a task, as a reply wakes its callers, not from outside
        // the runtime.
        tokio::spawn(async move { go.send(true).expect("tasks wait") }).await.expect("waker");
        while let Some(done) = waiting.join_next().await {
            done.expect("task");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes, [tasks], "one batch for the {tasks} woken tasks: {sizes:?}");
    }

    /// A lane whose task died with its runtime is started again.
    #[test]
    fn a_lane_is_restarted_on_a_new_runtime() {
        let lanes: Lanes<oneshot::Sender<u32>> = Lanes::new(COMPLETE);
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
