//! Job slots and queue selection: which queue the next free slot serves.
//!
//! - Per-queue concurrency and the process-wide concurrency are never
//!   exceeded: a slot is reserved before a claim and freed when its job ends.
//! - Strict queues are served first, in configuration order.
//! - Weighted queues share the remaining slots by smooth weighted round-robin
//!   (the nginx algorithm): over any run of picks, each queue gets its weight's
//!   share, interleaved rather than in bursts.
//! - A queue whose last claim came back short is marked empty and yields its
//!   share until something says it may have work again (a wake token, a due
//!   delayed job, the end of a rate-limit wait, the idle timeout).
//! - Each queue remembers when its next job is due (the earliest delayed
//!   job, or the next start a rate limit allows), from whichever claim saw
//!   it last: the claimer's or a runner's complete-and-claim. Both hand
//!   their claims to [`Scheduler::note_claim`].
//!
//! Pure bookkeeping under a std mutex (never held across an `.await`), so a
//! test can drive it directly.

use std::sync::Mutex;
use std::time::Instant;

use taskline::Claim;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Settings of one queue, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct QueueShare {
    /// Queue name.
    pub name: String,
    /// Share of slots under contention (>= 1).
    pub weight: u32,
    /// Served before every weighted queue.
    pub strict: bool,
    /// Most jobs of this queue running at once in this process.
    pub concurrency: u32,
}

#[derive(Debug)]
struct Slot {
    share: QueueShare,
    in_flight: u32,
    current: i64,
    empty: bool,
    due: Option<Instant>,
}

#[derive(Debug)]
struct State {
    queues: Vec<Slot>,
    total: u32,
    in_flight: u32,
}

/// The slot table. Queue indexes follow the order of the shares given to
/// [`Scheduler::new`].
#[derive(Debug)]
pub struct Scheduler {
    state: Mutex<State>,
    freed: Notify,
}

impl Scheduler {
    /// A table for `queues` with `total` slots in all.
    pub fn new(queues: Vec<QueueShare>, total: u32) -> Self {
        let queues = queues
            .into_iter()
            .map(|share| Slot { share, in_flight: 0, current: 0, empty: false, due: None })
            .collect();
        Self { state: Mutex::new(State { queues, total, in_flight: 0 }), freed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue names, by index.
    pub fn names(&self) -> Vec<String> {
        self.lock().queues.iter().map(|q| q.share.name.clone()).collect()
    }

    /// Reserves up to `max` slots and says how many each queue got, as
    /// `(queue index, count)`. Empty when no slot is free or every queue
    /// with room is marked empty.
    pub fn reserve(&self, max: u32) -> Vec<(usize, u32)> {
        let mut state = self.lock();
        let mut picks: Vec<(usize, u32)> = Vec::new();
        for _ in 0..max {
            let Some(index) = pick(&mut state) else { break };
            match picks.iter_mut().find(|(i, _)| *i == index) {
                Some((_, n)) => *n += 1,
                None => picks.push((index, 1)),
            }
        }
        picks
    }

    /// A job of `queue` ended. If the policy gives its freed slot to `queue`
    /// again, the slot stays reserved for a successor and this returns true:
    /// the finishing job may complete-and-claim in one round trip without
    /// bending the shares. Otherwise the slot is freed for the claimer.
    pub fn hand_over(&self, queue: usize) -> bool {
        let mut state = self.lock();
        release(&mut state, queue);
        let snapshot: Vec<i64> = state.queues.iter().map(|q| q.current).collect();
        let kept = match pick(&mut state) {
            Some(index) if index == queue => true,
            Some(index) => {
                // Undo: the slot belongs to another queue; the claimer takes it.
                release(&mut state, index);
                for (q, current) in state.queues.iter_mut().zip(snapshot) {
                    q.current = current;
                }
                false
            }
            None => false,
        };
        drop(state);
        if !kept {
            self.freed.notify_one();
        }
        kept
    }

    /// Gives back `count` reserved slots of `queue` that were not used, and
    /// marks it empty if `empty`.
    pub fn unreserve(&self, queue: usize, count: u32, empty: bool) {
        let mut state = self.lock();
        for _ in 0..count {
            release(&mut state, queue);
        }
        if empty {
            state.queues[queue].empty = true;
        }
        drop(state);
        if count > 0 {
            self.freed.notify_one();
        }
    }

    /// Frees the slot of a job of `queue` that ended.
    pub fn finish(&self, queue: usize) {
        release(&mut self.lock(), queue);
        self.freed.notify_one();
    }

    /// Marks `queue` as possibly having work.
    pub fn wake(&self, queue: usize) {
        self.lock().queues[queue].empty = false;
    }

    /// Records when `queue`'s next job is due (`None`: nothing scheduled),
    /// as the latest claim reported.
    pub fn set_due(&self, queue: usize, due: Option<Instant>) {
        self.lock().queues[queue].due = due;
    }

    /// Takes note of what a claim of `queue` reported besides its jobs:
    /// when the queue's next job is due (or its next start allowed), and,
    /// counted into `metrics`, whether a queue-wide limit held it back.
    pub fn note_claim(&self, queue: usize, claim: &Claim, metrics: &Metrics) {
        self.set_due(queue, claim.next_due_in().map(|d| Instant::now() + d));
        if let Some(limit) = claim.limited {
            let name = self.lock().queues[queue].share.name.clone();
            metrics.flow_limited(&name, limit);
        }
    }

    /// Wakes every queue whose due time has come; true if any did.
    pub fn wake_due(&self, now: Instant) -> bool {
        let mut woke = false;
        for q in self.lock().queues.iter_mut() {
            if q.due.is_some_and(|at| at <= now) {
                q.due = None;
                q.empty = false;
                woke = true;
            }
        }
        woke
    }

    /// The earliest due time of any queue.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().queues.iter().filter_map(|q| q.due).min()
    }

    /// Marks every queue as possibly having work.
    pub fn wake_all(&self) {
        for q in self.lock().queues.iter_mut() {
            q.empty = false;
        }
    }

    /// Jobs running (or reserved) now, in all and per queue index.
    pub fn in_flight(&self) -> (u32, Vec<u32>) {
        let state = self.lock();
        (state.in_flight, state.queues.iter().map(|q| q.in_flight).collect())
    }

    /// Resolves after the next slot is freed (immediately if one was freed
    /// since the last call).
    pub async fn slot_freed(&self) {
        self.freed.notified().await;
    }
}

/// Picks the queue for one slot and reserves it.
fn pick(state: &mut State) -> Option<usize> {
    if state.in_flight >= state.total {
        return None;
    }
    let open = |q: &Slot| !q.empty && q.in_flight < q.share.concurrency;
    let chosen = match state.queues.iter().position(|q| q.share.strict && open(q)) {
        Some(strict) => strict,
        None => {
            let candidates: Vec<usize> = (0..state.queues.len())
                .filter(|&i| !state.queues[i].share.strict && open(&state.queues[i]))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let total: i64 = candidates.iter().map(|&i| i64::from(state.queues[i].share.weight)).sum();
            for &i in &candidates {
                state.queues[i].current += i64::from(state.queues[i].share.weight);
            }
            let best = candidates
                .iter()
                .copied()
                .max_by_key(|&i| (state.queues[i].current, std::cmp::Reverse(i)))?;
            state.queues[best].current -= total;
            best
        }
    };
    state.queues[chosen].in_flight += 1;
    state.in_flight += 1;
    Some(chosen)
}

fn release(state: &mut State, queue: usize) {
    let q = &mut state.queues[queue];
    q.in_flight = q.in_flight.saturating_sub(1);
    state.in_flight = state.in_flight.saturating_sub(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: &str, weight: u32, strict: bool, concurrency: u32) -> QueueShare {
        QueueShare { name: name.into(), weight, strict, concurrency }
    }

    /// Reserves and immediately finishes `n` single slots, counting picks.
    fn run_picks(s: &Scheduler, n: usize) -> Vec<usize> {
        let mut counts = vec![0; s.names().len()];
        for _ in 0..n {
            let picks = s.reserve(1);
            let (q, _) = picks[0];
            counts[q] += 1;
            s.finish(q);
        }
        counts
    }

    #[test]
    fn weighted_queues_get_their_share_exactly() {
        let s = Scheduler::new(
            vec![share("a", 3, false, 100), share("b", 1, false, 100), share("c", 6, false, 100)],
            100,
        );
        assert_eq!(run_picks(&s, 1_000), vec![300, 100, 600]);
    }

    #[test]
    fn picks_interleave_instead_of_bursting() {
        let s = Scheduler::new(vec![share("a", 1, false, 10), share("b", 1, false, 10)], 10);
        let order: Vec<usize> = (0..6)
            .map(|_| {
                let (q, _) = s.reserve(1)[0];
                s.finish(q);
                q
            })
            .collect();
        assert_eq!(order, vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn an_empty_queue_yields_its_share() {
        let s = Scheduler::new(vec![share("a", 1, false, 100), share("b", 9, false, 100)], 100);
        let picks = s.reserve(1);
        s.unreserve(picks[0].0, 1, true);
        let counts = run_picks(&s, 100);
        assert_eq!(counts.iter().sum::<usize>(), 100);
        assert_eq!(counts[picks[0].0], 0, "the empty queue got slots: {counts:?}");
        s.wake_all();
        assert_eq!(run_picks(&s, 10).iter().filter(|&&c| c > 0).count(), 2);
    }

    #[test]
    fn strict_queues_come_first_until_full_or_empty() {
        let s = Scheduler::new(vec![share("bulk", 5, false, 10), share("critical", 1, true, 2)], 10);
        let picks = s.reserve(5);
        assert_eq!(picks.iter().find(|(q, _)| *q == 1), Some(&(1, 2)), "critical fills first: {picks:?}");
        assert_eq!(picks.iter().find(|(q, _)| *q == 0), Some(&(0, 3)));
    }

    #[test]
    fn concurrency_limits_hold() {
        let s = Scheduler::new(vec![share("a", 1, false, 3), share("b", 1, false, 50)], 5);
        let picks = s.reserve(100);
        let (total, per_queue) = s.in_flight();
        assert_eq!(total, 5);
        assert!(per_queue[0] <= 3 && per_queue[1] <= 50);
        assert_eq!(picks.iter().map(|(_, n)| n).sum::<u32>(), 5);
        assert!(s.reserve(1).is_empty(), "no slot left");
        s.finish(0);
        assert_eq!(s.reserve(1).len(), 1, "the freed slot can be reserved again");
        let (total, per_queue) = s.in_flight();
        assert_eq!(total, 5);
        assert!(per_queue[0] <= 3);
    }

    #[test]
    fn hand_over_only_when_the_policy_agrees() {
        let s = Scheduler::new(vec![share("a", 1, false, 10), share("b", 1, false, 10)], 10);
        let (first, _) = s.reserve(1)[0];
        assert!(!s.hand_over(first), "round-robin gives the next slot to the other queue");
        assert_eq!(s.in_flight().0, 0, "a refused hand-over frees the slot");
        let (second, _) = s.reserve(1)[0];
        assert_eq!(second, 1 - first);
        assert!(!s.hand_over(second), "the next slot goes back to the first queue");
        assert_eq!(s.in_flight().0, 0);
    }

    #[test]
    fn hand_over_works_for_a_queue_at_its_limit() {
        let s = Scheduler::new(vec![share("only", 1, false, 2)], 10);
        assert_eq!(s.reserve(5), vec![(0, 2)]);
        assert!(s.hand_over(0), "the finishing job's own slot passes to its successor");
        assert_eq!(s.in_flight(), (2, vec![2]));
    }
}
