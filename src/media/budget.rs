//! A memory budget in whole units (MiB) that does not let one large waiting job hold up
//! small ones for nothing, and does not let small ones starve it either.
//!
//! Waiters are served first come, first served, with one exception: a job that arrives
//! while the oldest waiter could not start even if every job that overtook it ended
//! (the memory it needs is held by jobs that started before it began waiting) may
//! start at once if it fits. As soon as those earlier jobs have ended enough for the
//! oldest waiter, nothing overtakes any more; it waits at most for the overtakers
//! already running.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Debug)]
pub(super) struct Budget {
    total: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: u32,
    /// Units held by jobs that started while others were waiting.
    overtakers: u32,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    units: u32,
    /// Sent when started: whether as an overtaker.
    grant: oneshot::Sender<bool>,
}

/// Units of the budget, given back on drop.
#[derive(Debug)]
pub(super) struct Reservation {
    budget: Arc<Budget>,
    units: u32,
    overtaker: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.give_back(self.units, self.overtaker);
        state.serve_queue(self.budget.total);
    }
}

/// Removes a waiter whose future was dropped, or gives back what it was granted.
struct Waiting {
    budget: Arc<Budget>,
    id: u64,
    units: u32,
    granted: Option<oneshot::Receiver<bool>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut granted) = self.granted.take() else {
            return;
        };
        let mut state = self.budget.lock();
        if let Some(i) = state.queue.iter().position(|w| w.id == self.id) {
            state.queue.remove(i);
        } else if let Ok(overtaker) = granted.try_recv() {
            // Granted after we stopped waiting: give it back.
            state.give_back(self.units, overtaker);
        }
        state.serve_queue(self.budget.total);
    }
}

impl State {
    fn give_back(&mut self, units: u32, overtaker: bool) {
        self.free += units;
        if overtaker {
            self.overtakers -= units;
        }
    }

    /// Whether a job may start ahead of the oldest waiter: the oldest could not start
    /// even if every overtaker ended, because of what was held before it waited.
    fn may_overtake(&self, total: u32) -> bool {
        let held_before = total - self.free - self.overtakers;
        self.queue
            .front()
            .is_some_and(|oldest| oldest.units > total - held_before)
    }

    /// Start waiters from the front while they fit, then any later ones that fit and
    /// may overtake.
    fn serve_queue(&mut self, total: u32) {
        while self.queue.front().is_some_and(|w| w.units <= self.free) {
            let waiter = self.queue.pop_front().expect("front exists");
            self.start(waiter, false);
        }
        let mut i = 1;
        while i < self.queue.len() && self.may_overtake(total) {
            if self.queue[i].units <= self.free {
                let waiter = self.queue.remove(i).expect("index in range");
                self.start(waiter, true);
            } else {
                i += 1;
            }
        }
    }

    fn take(&mut self, units: u32, overtaker: bool) {
        self.free -= units;
        if overtaker {
            self.overtakers += units;
        }
    }

    fn start(&mut self, waiter: Waiter, overtaker: bool) {
        self.take(waiter.units, overtaker);
        if waiter.grant.send(overtaker).is_err() {
            // Its future is gone (and found nothing to remove in the queue).
            self.give_back(waiter.units, overtaker);
        }
    }
}

impl Budget {
    pub(super) fn new(total: u32) -> Arc<Self> {
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free: total,
                overtakers: 0,
                queue: VecDeque::new(),
                next_id: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The budget's size in units.
    pub(super) fn total(&self) -> u32 {
        self.total
    }

    /// Wait for `units`; an ask larger than the whole budget waits for all of it (the
    /// job then runs alone).
    pub(super) async fn reserve(self: &Arc<Self>, units: u32) -> Reservation {
        let units = units.min(self.total);
        let (id, granted) = {
            let mut state = self.lock();
            if state.free >= units && (state.queue.is_empty() || state.may_overtake(self.total)) {
                let overtaker = !state.queue.is_empty();
                state.take(units, overtaker);
                return Reservation {
                    budget: self.clone(),
                    units,
                    overtaker,
                };
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Waiter { id, units, grant });
            (id, granted)
        };
        let mut waiting = Waiting {
            budget: self.clone(),
            id,
            units,
            granted: Some(granted),
        };
        let overtaker = waiting
            .granted
            .as_mut()
            .expect("set above")
            .await
            .expect("waiters are only dropped from the queue when granted or cancelled");
        waiting.granted = None;
        Reservation {
            budget: self.clone(),
            units,
            overtaker,
        }
    }

    #[cfg(test)]
    fn free(&self) -> u32 {
        self.lock().free
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Ask for `units` in a task of its own, and let it get in line.
    async fn queue(budget: &Arc<Budget>, units: u32) -> tokio::task::JoinHandle<Reservation> {
        let budget = budget.clone();
        let task = tokio::spawn(async move { budget.reserve(units).await });
        tokio::task::yield_now().await;
        task
    }

    async fn soon<T>(f: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .ok()
    }

    #[tokio::test]
    async fn small_jobs_overtake_a_large_one_that_cannot_start_anyway() {
        let budget = Budget::new(100);
        let earlier = budget.reserve(60).await;
        let large = queue(&budget, 80).await;
        // 40 free, but the large job needs 80 and 60 are held by a job that started
        // before it: it cannot start anyway, so a small job may use 30 meanwhile.
        let small = soon(budget.reserve(30)).await.expect("overtakes");
        drop(earlier);
        // 70 free: the large job could start once the overtaker ends, so nothing more
        // overtakes it.
        assert!(!large.is_finished());
        assert!(soon(budget.reserve(10)).await.is_none());
        drop(small);
        let large = soon(large).await.expect("runs").unwrap();
        assert_eq!(budget.free(), 20);
        drop(large);
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn queued_small_jobs_overtake_when_memory_frees() {
        let budget = Budget::new(100);
        let earlier = budget.reserve(60).await;
        let large = queue(&budget, 80).await;
        let first_small = soon(budget.reserve(40)).await.expect("overtakes");
        let second_small = queue(&budget, 20).await;
        assert!(!second_small.is_finished(), "nothing free yet");
        drop(first_small);
        // 40 free, the large job still blocked by the earlier 60: the queued small job
        // goes ahead of it.
        let second_small = soon(second_small).await.expect("starts").unwrap();
        assert!(!large.is_finished());
        drop((earlier, second_small));
        soon(large).await.expect("runs").unwrap();
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order() {
        let budget = Budget::new(10);
        let all = budget.reserve(10).await;
        let first = queue(&budget, 6).await;
        let second = queue(&budget, 6).await;
        drop(all);
        let first = soon(first).await.expect("first runs").unwrap();
        assert!(!second.is_finished());
        drop(first);
        soon(second).await.expect("second runs").unwrap();
        assert_eq!(budget.free(), 10);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let budget = Budget::new(10);
        let all = budget.reserve(10).await;
        assert!(soon(budget.reserve(5)).await.is_none());
        drop(all);
        assert_eq!(budget.free(), 10);
        let again = soon(budget.reserve(10)).await.expect("nothing is queued");
        drop(again);
    }
}
