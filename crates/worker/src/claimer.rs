//! The claimer: keeps every free slot busy, and idles without polling.
//!
//! One turn of its loop ([`Claimer::step`]) either claims or idles:
//! 1. reserve the free slots the [`Scheduler`] gives out (up to a batch),
//!    queue by queue;
//! 2. claim that many jobs of each queue and start a runner per job
//!    leased; a queue that came back short is marked empty and yields its
//!    share until something wakes it;
//! 3. when nothing could be reserved, idle: wake the queues whose next job
//!    is due, else wait for the first of a wake token (a blocking wait on
//!    its own connection, under a watchdog: [`WakeListener`]), a freed
//!    slot, the next due job or allowed start, the idle limit, or shutdown.
//!
//! A Redis error backs off, 100 ms doubling to 5 s, then looks at every
//! queue again. The claimer stops at shutdown, between two calls; the jobs
//! it started go on under the supervisor (see `worker`).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskline::{Claim, ClaimOptions, Client, QueueName};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::metrics::Metrics;
use crate::runner::{self, RunnerContext};
use crate::scheduler::Scheduler;
use crate::waiter::{Waiter, WakeListener, Woken, wake_groups};

/// How often an idle claimer looks at every queue although no wake token
/// came (the safety net for a lost token).
const FULL_LOOK_EVERY: Duration = Duration::from_secs(60);

/// How the claimer claims, from the worker configuration.
#[derive(Debug, Clone)]
pub(crate) struct ClaimSettings {
    /// Most jobs reserved and claimed in one turn.
    pub batch: u32,
    /// Lease length of each claimed job.
    pub lease: Duration,
    /// This worker's instance id, written into its leases.
    pub worker_id: String,
    /// Longest blocking wait for a wake token.
    pub idle_wait: Duration,
}

/// Fills free slots with claims and starts their runners.
pub(crate) struct Claimer {
    client: Client,
    scheduler: Arc<Scheduler>,
    metrics: Metrics,
    settings: ClaimSettings,
    /// Queue names and their wake lists, by scheduler index.
    names: Vec<String>,
    wake_keys: Vec<String>,
    listener: WakeListener,
    /// What each runner gets, and where the runners are tracked.
    jobs: Arc<RunnerContext>,
    runners: TaskTracker,
    /// The current pause after Redis errors; zero after a success.
    trouble: Duration,
    last_full_look: Instant,
}

impl Claimer {
    /// A claimer of the queues in `jobs.scheduler` that starts runners on
    /// `runners` and idles on the queues' wake lists. Call within a Tokio
    /// runtime: each wake group's waiter gets a task of its own.
    pub(crate) fn new(settings: ClaimSettings, jobs: Arc<RunnerContext>, runners: TaskTracker) -> Self {
        let names = jobs.scheduler.names();
        let prefix = &jobs.client.options().prefix;
        let wake_keys: Vec<String> = names
            .iter()
            .map(|name| {
                let queue = QueueName::new(name).expect("queue names are validated with the config");
                taskline::keys::QueueKeys::new(prefix, &queue).wake()
            })
            .collect();
        Self {
            client: jobs.client.clone(),
            scheduler: jobs.scheduler.clone(),
            metrics: jobs.metrics.clone(),
            settings,
            names,
            listener: WakeListener::spawn(
                wake_groups(&jobs.client, &wake_keys)
                    .into_iter()
                    .map(|keys| (Waiter::new(jobs.client.clone()), keys))
                    .collect(),
            ),
            wake_keys,
            jobs,
            runners,
            trouble: Duration::ZERO,
            last_full_look: Instant::now(),
        }
    }

    /// Runs until `shutdown`. Stopping it first keeps new jobs from
    /// starting while the supervisor lets the running ones end.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if self.step(&shutdown).await.is_break() {
                return;
            }
        }
    }

    /// One turn: claim for the free slots, or idle when none can be
    /// reserved. Breaks at shutdown.
    pub(crate) async fn step(&mut self, shutdown: &CancellationToken) -> ControlFlow<()> {
        let picks = self.scheduler.reserve(self.settings.batch);
        if picks.is_empty() { self.idle(shutdown).await } else { self.claim(picks, shutdown).await }
    }

    /// Claims the reserved `picks`, `(queue index, count)`, one queue after
    /// the other, and starts a runner per job leased.
    async fn claim(&mut self, picks: Vec<(usize, u32)>, shutdown: &CancellationToken) -> ControlFlow<()> {
        for (q, count) in picks {
            let options =
                ClaimOptions { count, lease: self.settings.lease, worker: self.settings.worker_id.clone() };
            match self.client.claim(&self.names[q], &options).await {
                Ok(claim) => self.start_runners(q, count, claim),
                Err(err) => {
                    self.metrics.redis_error("claim");
                    self.scheduler.unreserve(q, count, true);
                    let pause = self.next_pause();
                    warn!(queue = %self.names[q], error = %err, retry_in = ?pause, "claim failed; backing off");
                    self.back_off(pause, shutdown).await?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Gives back the `count` slots of queue `q` that `claim` left unused
    /// (marking the queue empty if it came back short), then starts a
    /// runner per job leased, each in one of the slots.
    fn start_runners(&mut self, q: usize, count: u32, claim: Claim) {
        self.metrics.redis_ok();
        self.trouble = Duration::ZERO;
        self.scheduler.note_claim(q, &claim, &self.metrics);
        let got = claim.jobs.len() as u32;
        self.scheduler.unreserve(q, count - got.min(count), got < count);
        for job in claim.jobs {
            self.runners.spawn(runner::run(self.jobs.clone(), q, job));
        }
    }

    /// No queue with room has known work. Wakes the due ones, else waits
    /// for whichever comes first: a wake token, a freed slot (a busy queue
    /// may take more), the next due job or allowed start, or the idle limit
    /// (a safety net for a missed token).
    async fn idle(&mut self, shutdown: &CancellationToken) -> ControlFlow<()> {
        let now = Instant::now();
        if self.scheduler.wake_due(now) {
            return ControlFlow::Continue(());
        }
        let until_due = self.scheduler.next_due().map(|at| at.saturating_duration_since(now));
        let due_timer = async {
            match until_due {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // The listener's wait survives the other branches winning: its
        // result comes with the next call.
        let woken = tokio::select! {
            woken = self.listener.next(self.settings.idle_wait) => woken,
            _ = self.scheduler.slot_freed() => return ControlFlow::Continue(()),
            _ = due_timer => return ControlFlow::Continue(()),
            _ = shutdown.cancelled() => return ControlFlow::Break(()),
        };
        self.on_woken(woken, shutdown).await
    }

    /// Marks the queues a finished wait says may have work.
    async fn on_woken(&mut self, woken: Woken, shutdown: &CancellationToken) -> ControlFlow<()> {
        match woken {
            Woken::Key(key) => match self.wake_keys.iter().position(|k| *k == key) {
                Some(q) => self.scheduler.wake(q),
                None => self.scheduler.wake_all(),
            },
            // The safety net for a missed wake token (a worker that took
            // one and died): look at every queue now and then, not on every
            // timeout, so that idle costs stay flat whatever the number of
            // queues.
            Woken::Timeout if self.last_full_look.elapsed() >= FULL_LOOK_EVERY => {
                self.last_full_look = Instant::now();
                self.scheduler.wake_all();
            }
            Woken::Timeout => {}
            Woken::Failed => {
                self.metrics.redis_error("wait");
                let pause = self.next_pause();
                self.back_off(pause, shutdown).await?;
            }
        }
        ControlFlow::Continue(())
    }

    /// The pause after one more Redis failure: 100 ms doubling to 5 s.
    fn next_pause(&mut self) -> Duration {
        self.trouble = (self.trouble * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        self.trouble
    }

    /// Sleeps `pause` after a Redis failure, then marks every queue as
    /// possibly having work (the failure hid what they hold). Breaks if
    /// shutdown began meanwhile.
    async fn back_off(&self, pause: Duration, shutdown: &CancellationToken) -> ControlFlow<()> {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return ControlFlow::Break(()),
        }
        self.scheduler.wake_all();
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use taskline::{Backoff, Counts, NewJob};
    use taskline_testkit::RedisServer;

    use super::*;
    use crate::handler::{JobContext, handler_fn};
    use crate::leases::HeldLeases;
    use crate::queues::{QueueRuntime, Registered};
    use crate::runner::JobStops;
    use crate::scheduler::QueueShare;

    const QUEUE: &str = "q";
    /// Longer than any test: a step that returns came from a wake token,
    /// a freed slot or shutdown, never from the idle limit.
    const IDLE_WAIT: Duration = Duration::from_secs(60);
    const LIMIT: Duration = Duration::from_secs(10);

    /// A claimer of queue `q` with `slots` slots whose handler of `hold`
    /// jobs runs until it is cancelled, with its runners and their context.
    async fn claimer(server: &RedisServer, slots: u32) -> (Claimer, Arc<RunnerContext>, TaskTracker) {
        let client = Client::connect(&server.url()).await.expect("connect");
        let share = QueueShare { name: QUEUE.into(), weight: 1, strict: false, concurrency: slots };
        let hold = handler_fn(|ctx: JobContext, _: serde_json::Value| async move {
            ctx.cancelled().await;
            Ok(None)
        });
        let handlers =
            HashMap::from([("hold".to_string(), Registered { handler: Arc::new(hold), timeout: None })]);
        let jobs = Arc::new(RunnerContext {
            client,
            scheduler: Arc::new(Scheduler::new(vec![share], 100)),
            leases: Arc::new(HeldLeases::default()),
            metrics: Metrics::disabled(),
            queues: vec![QueueRuntime {
                name: QUEUE.into(),
                backoff: Backoff::default(),
                timeout: None,
                handlers,
            }],
            worker_id: "test-worker".into(),
            lease: Duration::from_secs(30),
            version_retry_delay: Duration::from_secs(1),
            max_version_retries: 3,
            log_payloads: false,
            progress_interval: Duration::from_secs(1),
            stops: JobStops::default(),
        });
        let settings = ClaimSettings {
            batch: 10,
            lease: jobs.lease,
            worker_id: jobs.worker_id.clone(),
            idle_wait: IDLE_WAIT,
        };
        let runners = TaskTracker::new();
        let claimer = Claimer::new(settings, jobs.clone(), runners.clone());
        (claimer, jobs, runners)
    }

    async fn enqueue_holds(client: &Client, n: usize) {
        let jobs = (0..n).map(|i| NewJob::new("hold", &i).expect("job")).collect();
        client.enqueue_bulk(QUEUE, jobs).await.expect("enqueue");
    }

    async fn counts(client: &Client) -> Counts {
        client.counts(QUEUE).await.expect("counts")
    }

    /// Releases every running job (as shutdown does) and waits for the
    /// runners to record it.
    async fn release_all(jobs: &RunnerContext, runners: &TaskTracker) {
        jobs.stops.abort_jobs.cancel();
        runners.close();
        tokio::time::timeout(LIMIT, runners.wait()).await.expect("runners release their jobs");
    }

    #[tokio::test]
    async fn a_step_leases_what_fits_the_free_slots_and_no_more() {
        let server = RedisServer::start();
        let (mut claimer, jobs, runners) = claimer(&server, 2).await;
        enqueue_holds(&jobs.client, 5).await;
        let shutdown = CancellationToken::new();

        assert!(claimer.step(&shutdown).await.is_continue());

        let after = counts(&jobs.client).await;
        assert_eq!((after.active, after.ready), (2, 3), "two slots, two leases: {after:?}");
        assert_eq!(jobs.scheduler.in_flight(), (2, vec![2]), "both slots are taken by runners");
        assert_eq!(runners.len(), 2, "one runner per leased job");
        assert!(jobs.scheduler.reserve(10).is_empty(), "no slot is left for another claim");

        release_all(&jobs, &runners).await;
        let after = counts(&jobs.client).await;
        assert_eq!((after.active, after.ready), (0, 5), "released, not lost: {after:?}");
        assert_eq!(jobs.scheduler.in_flight(), (0, vec![0]), "the runners freed their slots");
    }

    #[tokio::test]
    async fn a_queue_that_came_back_short_idles_until_a_job_arrives() {
        let server = RedisServer::start();
        let (mut claimer, jobs, runners) = claimer(&server, 10).await;
        enqueue_holds(&jobs.client, 1).await;
        let shutdown = CancellationToken::new();
        assert!(claimer.step(&shutdown).await.is_continue());
        assert_eq!(counts(&jobs.client).await.active, 1);
        assert!(jobs.scheduler.reserve(10).is_empty(), "the short claim marked the queue empty");

        // Idle steps end only on a wake token, a freed slot (the unused
        // reservations of the first claim) or shutdown: the idle limit is
        // longer than this test. So the second job is claimed because its
        // enqueue woke the claimer, not because it polled.
        let step_until_two_active = async {
            enqueue_holds(&jobs.client, 1).await;
            while counts(&jobs.client).await.active < 2 {
                assert!(claimer.step(&shutdown).await.is_continue());
            }
        };
        tokio::time::timeout(LIMIT, step_until_two_active).await.expect("the new job is claimed");
        assert_eq!(jobs.scheduler.in_flight().0, 2);

        release_all(&jobs, &runners).await;
    }

    #[tokio::test]
    async fn a_failed_claim_gives_its_slots_back_and_stops_at_shutdown() {
        let server = RedisServer::start();
        let (mut claimer, jobs, runners) = claimer(&server, 2).await;
        server.kill();
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        let step = tokio::time::timeout(LIMIT, claimer.step(&shutdown)).await.expect("a step ends");

        assert!(step.is_break(), "the back-off pause ends at shutdown");
        assert_eq!(
            jobs.scheduler.in_flight(),
            (0, vec![0]),
            "the failed claim's reservations are given back"
        );
        assert!(runners.is_empty(), "no runner started");
        assert_eq!(claimer.trouble, Duration::from_millis(100), "the first pause after an error");
    }
}
