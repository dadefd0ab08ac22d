//! The outcomes that `send` and `request` futures wait for, by message id.
//!
//! One slot per awaited message, in a `VecDeque` in id order, under the lock that already
//! guards the core, instead of a `HashMap` of oneshot channels: per message, that saves the
//! channel's allocation, its atomics and tokio's cooperative-budget bookkeeping, and the
//! map's hashing. Ids are handed out in increasing order under the same lock, so pushing at
//! the back keeps the order; acknowledgements settle the oldest first, so the slot sought is
//! nearly always where `id - front` says, and a binary search finds any other.
//!
//! A finished slot in the middle becomes a `Free` gap rather than being removed (a removal
//! there moves half the deque); gaps at either end are popped at once, and the deque is
//! compacted when gaps are half of it (and at least `COMPACT_MIN`). So the slots stay within
//! twice those in use plus `COMPACT_MIN`, however the futures finish, and every operation is
//! O(1) amortized (a lookup off the usual path is a binary search). A slot is in use from the
//! call until its outcome is taken, or, for a dropped future, until its outcome comes: the
//! core gives every message one (acknowledgement, failure, timeout or close).
//!
//! Semantics kept from the oneshot channels: a future dropped before its outcome leaves an
//! `Abandoned` slot that takes the outcome silently (as a oneshot whose receiver is gone);
//! an outcome for an id without a live slot is given back to the caller (the driver emits
//! unawaited `Delivered`/`Failed` as events); once the driver is gone, every waiting future
//! resolves with `Error::Closed` (as the channels' senders were dropped with the client).
//!
//! Wakers are never dropped or woken under the lock: a waker's code belongs to the executor,
//! and may poll or drop a future whose own poll or drop takes that lock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::{Error, Shared, State};

/// Gaps are compacted away once they are half of the deque and at least this many, so that
/// a few futures finishing out of order do not make every call move the deque.
const COMPACT_MIN: usize = 32;

/// Slots whose buffer is kept however few are in use: a burst above this many is given back
/// once it is over (shrinking below would reallocate with every burst of a usual window).
const KEEP: usize = 1024;

/// Awaited messages' slots, oldest id first.
pub(super) struct Waiters<T> {
    slots: VecDeque<Slot<T>>,
    /// How many slots are `Free`.
    free: usize,
    /// The driver is gone: nothing will settle a new slot, so none is made (its future
    /// resolves as closed).
    closed: bool,
}

struct Slot<T> {
    id: u64,
    state: SlotState<T>,
}

enum SlotState<T> {
    /// No outcome yet; the waker of the last poll, if polled.
    Waiting(Option<Waker>),
    /// The outcome, until the future takes it.
    Done(T),
    /// The future was dropped: the outcome, when it comes, is nobody's (as a oneshot whose
    /// receiver is gone), and is not reported as an unawaited event either.
    Abandoned,
    /// Finished (taken, or abandoned and settled): a gap kept to spare moving the deque.
    Free,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            slots: VecDeque::new(),
            free: 0,
            closed: false,
        }
    }
}

impl<T> Waiters<T> {
    /// Somebody will await the outcome of message `id`, a higher id than any before.
    pub(super) fn register(&mut self, id: u64) {
        if self.closed {
            return;
        }
        debug_assert!(
            self.slots.back().is_none_or(|slot| slot.id < id),
            "ids are registered in increasing order: lookups binary-search them"
        );
        self.slots.push_back(Slot {
            id,
            state: SlotState::Waiting(None),
        });
    }

    /// Where the slot of `id` is (in whatever state). Ids are usually consecutive (every
    /// message awaited, none compacted away), so the slot is first looked for `id - front`
    /// places in; a binary search finds it otherwise.
    fn index(&self, id: u64) -> Option<usize> {
        let front = self.slots.front()?.id;
        let guess = usize::try_from(id.checked_sub(front)?).ok()?;
        match self.slots.get(guess) {
            Some(slot) if slot.id == id => Some(guess),
            _ => self.slots.binary_search_by_key(&id, |slot| slot.id).ok(),
        }
    }

    /// Message `id` has its outcome. Returns the waker to wake (outside the lock), or gives
    /// the outcome back when no future waits for `id`: none registered, or its slot already
    /// had an outcome (the oneshot was used up then, and the map entry gone).
    pub(super) fn settle(&mut self, id: u64, outcome: T) -> Result<Option<Waker>, T> {
        let Some(index) = self.index(id) else {
            return Err(outcome);
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return Err(outcome);
        };
        match slot.state {
            SlotState::Waiting(_) => {
                match std::mem::replace(&mut slot.state, SlotState::Done(outcome)) {
                    SlotState::Waiting(waker) => Ok(waker),
                    // Matched just above.
                    _ => Ok(None),
                }
            }
            SlotState::Abandoned => {
                self.release(index);
                Ok(None)
            }
            SlotState::Done(_) | SlotState::Free => Err(outcome),
        }
    }

    /// The outcome of `id` if it has come (the slot is then released), otherwise remembers
    /// `waker`; a waker it replaces goes to `stale`, to be dropped outside the lock.
    /// `None`: there is no live slot for `id` (the client's driver is gone).
    fn poll(&mut self, id: u64, waker: &Waker, stale: &mut Option<Waker>) -> Option<Poll<T>> {
        let index = self.index(id)?;
        let slot = self.slots.get_mut(index)?;
        match &mut slot.state {
            SlotState::Waiting(current) => {
                if !current.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *stale = current.replace(waker.clone());
                }
                Some(Poll::Pending)
            }
            SlotState::Done(_) => {
                let outcome = std::mem::replace(&mut slot.state, SlotState::Free);
                self.release(index);
                match outcome {
                    SlotState::Done(outcome) => Some(Poll::Ready(outcome)),
                    // Matched just above.
                    _ => None,
                }
            }
            SlotState::Abandoned | SlotState::Free => None,
        }
    }

    /// The future of `id` was dropped before it took its outcome. Returns its waker, to be
    /// dropped outside the lock.
    fn abandon(&mut self, id: u64) -> Option<Waker> {
        let index = self.index(id)?;
        let slot = self.slots.get_mut(index)?;
        match &mut slot.state {
            SlotState::Waiting(waker) => {
                let waker = waker.take();
                slot.state = SlotState::Abandoned;
                waker
            }
            SlotState::Done(_) => {
                self.release(index);
                None
            }
            SlotState::Abandoned | SlotState::Free => None,
        }
    }

    /// The driver is gone: every waiting future gets `outcome()` (their wakers are pushed to
    /// `wakers`, to be woken outside the lock), abandoned slots are released, and no slot is
    /// made from now on.
    pub(super) fn close(&mut self, outcome: impl Fn() -> T, wakers: &mut Vec<Waker>) {
        self.closed = true;
        for slot in &mut self.slots {
            match &mut slot.state {
                SlotState::Waiting(waker) => {
                    wakers.extend(waker.take());
                    slot.state = SlotState::Done(outcome());
                }
                SlotState::Abandoned => slot.state = SlotState::Free,
                SlotState::Done(_) | SlotState::Free => {}
            }
        }
        self.slots
            .retain(|slot| !matches!(slot.state, SlotState::Free));
        self.free = 0;
    }

    /// Whether [`close`](Self::close) was called: the driver is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Frees the slot at `index`: at either end it is popped, with the gaps behind it;
    /// in the middle it becomes a gap, and the deque is compacted when half of it is gaps.
    fn release(&mut self, index: usize) {
        let is_free = |slot: &Slot<T>| matches!(slot.state, SlotState::Free);
        if index == 0 {
            // The usual case: acknowledgements come oldest first.
            self.slots.pop_front();
            while self.slots.front().is_some_and(is_free) {
                self.slots.pop_front();
                self.free -= 1;
            }
        } else if index + 1 == self.slots.len() {
            self.slots.pop_back();
            while self.slots.back().is_some_and(is_free) {
                self.slots.pop_back();
                self.free -= 1;
            }
        } else if let Some(slot) = self.slots.get_mut(index) {
            slot.state = SlotState::Free;
            self.free += 1;
            if self.free >= COMPACT_MIN && self.free * 2 >= self.slots.len() {
                self.slots.retain(|slot| !is_free(slot));
                self.free = 0;
            }
        }
        // A burst of futures (up to `max_enqueued_messages`) leaves a large buffer behind;
        // a usual window of messages in flight keeps its buffer.
        let capacity = self.slots.capacity();
        if capacity > KEEP && capacity > 8 * self.slots.len() {
            self.slots.shrink_to(KEEP.max(2 * self.slots.len()));
        }
    }

    /// Slots held, gaps included (for the tests' bounds).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The future of one `send` or `request` outcome: the slot of message `id` in the waiters
/// that `board` picks out of the shared state.
pub(super) struct Outcome<V: 'static> {
    shared: Arc<Shared>,
    id: u64,
    board: fn(&mut State) -> &mut Waiters<Result<V, Error>>,
    finished: bool,
}

impl<V> Outcome<V> {
    /// Awaits the slot of `id`, which the caller registered under the same lock that queued
    /// the message (so its outcome cannot come before the slot exists).
    pub(super) fn new(
        shared: Arc<Shared>,
        id: u64,
        board: fn(&mut State) -> &mut Waiters<Result<V, Error>>,
    ) -> Self {
        Outcome {
            shared,
            id,
            board,
            finished: false,
        }
    }
}

impl<V> Future for Outcome<V> {
    type Output = Result<V, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            // Polled after completion: the contract allows anything, and a panic is unkind.
            return Poll::Pending;
        }
        let mut stale = None;
        let polled = (this.board)(&mut this.shared.lock()).poll(this.id, cx.waker(), &mut stale);
        drop(stale);
        // No slot: the driver is gone (`Waiters::close`), so the client is closed.
        let result = polled.unwrap_or(Poll::Ready(Err(Error::Closed)));
        this.finished = result.is_ready();
        result
    }
}

impl<V> Drop for Outcome<V> {
    fn drop(&mut self) {
        if !self.finished {
            let waker = (self.board)(&mut self.shared.lock()).abandon(self.id);
            drop(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn waker() -> Waker {
        Waker::noop().clone()
    }

    /// Polls `id` and drops any replaced waker.
    fn poll<T>(waiters: &mut Waiters<T>, id: u64) -> Option<Poll<T>> {
        waiters.poll(id, &waker(), &mut None)
    }

    #[test]
    fn outcomes_settled_in_order_reach_their_futures() {
        let mut waiters = Waiters::default();
        for id in 1..=3 {
            waiters.register(id);
            assert_eq!(poll(&mut waiters, id), Some(Poll::Pending));
        }
        for id in 1..=3 {
            assert!(
                matches!(waiters.settle(id, id * 10), Ok(Some(_))),
                "polled: a waker"
            );
            assert_eq!(poll(&mut waiters, id), Some(Poll::Ready(id * 10)));
        }
        assert_eq!(waiters.len(), 0);
        assert_eq!(waiters.free, 0);
    }

    #[test]
    fn outcomes_settled_out_of_order_reach_their_futures() {
        let mut waiters = Waiters::default();
        for id in [2, 5, 7, 9] {
            waiters.register(id);
        }
        assert_eq!(poll(&mut waiters, 5), Some(Poll::Pending));
        assert!(matches!(waiters.settle(5, "five"), Ok(Some(_))));
        assert!(
            matches!(waiters.settle(9, "nine"), Ok(None)),
            "never polled"
        );
        assert!(
            matches!(waiters.settle(3, "three"), Err("three")),
            "no slot"
        );
        assert!(
            matches!(waiters.settle(10, "ten"), Err("ten")),
            "past the back"
        );
        assert!(
            matches!(waiters.settle(1, "one"), Err("one")),
            "before the front"
        );
        assert!(
            matches!(waiters.settle(5, "again"), Err("again")),
            "settled already"
        );
        assert_eq!(poll(&mut waiters, 5), Some(Poll::Ready("five")));
        assert_eq!(poll(&mut waiters, 5), None, "taken");
        assert!(
            matches!(waiters.settle(5, "late"), Err("late")),
            "taken already"
        );
        assert_eq!(poll(&mut waiters, 9), Some(Poll::Ready("nine")));
        assert!(matches!(waiters.settle(2, "two"), Ok(None)));
        assert_eq!(poll(&mut waiters, 7), Some(Poll::Pending));
        assert!(matches!(waiters.settle(7, "seven"), Ok(Some(_))));
        assert_eq!(poll(&mut waiters, 7), Some(Poll::Ready("seven")));
        assert_eq!(poll(&mut waiters, 2), Some(Poll::Ready("two")));
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn a_future_dropped_before_its_outcome_takes_it_silently() {
        let mut waiters = Waiters::default();
        waiters.register(1);
        waiters.register(2);
        assert_eq!(poll(&mut waiters, 1), Some(Poll::Pending));
        assert!(
            waiters.abandon(1).is_some(),
            "the waker comes back, to drop unlocked"
        );
        assert_eq!(poll(&mut waiters, 1), None);
        assert!(
            matches!(waiters.settle(1, "one"), Ok(None)),
            "an abandoned slot takes its outcome: not reported as unawaited"
        );
        assert!(
            matches!(waiters.settle(1, "again"), Err("again")),
            "slot gone"
        );
        assert_eq!(waiters.len(), 1, "only 2 is left");
        assert!(matches!(waiters.settle(2, "two"), Ok(None)));
        assert_eq!(poll(&mut waiters, 2), Some(Poll::Ready("two")));
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn a_future_dropped_after_its_outcome_frees_the_slot() {
        let mut waiters = Waiters::default();
        for id in 1..=3 {
            waiters.register(id);
        }
        assert!(matches!(waiters.settle(2, "two"), Ok(None)));
        assert!(waiters.abandon(2).is_none());
        assert_eq!(waiters.len(), 3, "a gap in the middle");
        assert_eq!(waiters.free, 1);
        assert!(matches!(waiters.settle(2, "again"), Err("again")));
        assert!(matches!(waiters.settle(1, "one"), Ok(None)));
        assert!(waiters.abandon(1).is_none());
        assert_eq!(waiters.len(), 1, "the gaps at the front are popped");
        assert_eq!(waiters.free, 0);
        waiters.abandon(3);
        assert_eq!(waiters.len(), 1, "abandoned, waiting for its outcome");
        assert!(matches!(waiters.settle(3, "three"), Ok(None)));
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn slots_stay_bounded_when_futures_finish_out_of_order() {
        let mut waiters = Waiters::default();
        let mut next = 0;
        // One old future that never finishes holds the front, while thousands of later ones
        // come and go around it: taken, dropped after or before their outcome.
        waiters.register(next);
        for round in 0..10_000u64 {
            next += 1;
            waiters.register(next);
            match round % 3 {
                0 => {
                    assert!(waiters.settle(next, round).is_ok());
                    assert_eq!(poll(&mut waiters, next), Some(Poll::Ready(round)));
                }
                1 => {
                    assert!(waiters.settle(next, round).is_ok());
                    waiters.abandon(next);
                }
                _ => {
                    waiters.abandon(next);
                    assert!(waiters.settle(next, round).is_ok());
                }
            }
            // Every finished one is popped from the back at once here.
            assert!(waiters.len() <= 2, "{} slots", waiters.len());
        }
        // Now finish a burst of 5000 in an order that leaves gaps in the middle.
        let first = next + 1;
        for _ in 0..5000 {
            next += 1;
            waiters.register(next);
        }
        let mut live = 1 + 5000;
        for id in (first..=next)
            .step_by(2)
            .chain((first + 1..=next).step_by(2))
        {
            assert!(waiters.settle(id, 0).is_ok());
            waiters.abandon(id);
            live -= 1;
            assert!(
                waiters.len() <= 2 * live + COMPACT_MIN,
                "{} slots",
                waiters.len()
            );
        }
        assert_eq!(waiters.len(), 1, "only the old future's slot is left");
        assert!(
            waiters.slots.capacity() <= KEEP,
            "the burst's buffer is given back"
        );
        assert_eq!(poll(&mut waiters, 0), Some(Poll::Pending));
        assert!(waiters.settle(0, 0).is_ok());
        assert_eq!(poll(&mut waiters, 0), Some(Poll::Ready(0)));
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn lookups_find_slots_after_compaction() {
        let mut waiters = Waiters::default();
        for id in 0..200 {
            waiters.register(id);
        }
        // Odd ids finish: compaction leaves the even ones, so `id - front` no longer points
        // at them and the binary search must.
        for id in (1..200).step_by(2) {
            assert!(waiters.settle(id, id).is_ok());
            assert_eq!(poll(&mut waiters, id), Some(Poll::Ready(id)));
        }
        assert!(waiters.len() < 200, "compacted");
        for id in (0..100).rev().map(|half| 2 * half) {
            assert!(waiters.settle(id, id).is_ok());
        }
        for id in (0..200).step_by(2) {
            assert_eq!(poll(&mut waiters, id), Some(Poll::Ready(id)));
        }
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn closing_settles_waiting_slots_and_refuses_new_ones() {
        let mut waiters = Waiters::default();
        for id in 1..=4 {
            waiters.register(id);
        }
        assert_eq!(poll(&mut waiters, 1), Some(Poll::Pending));
        assert!(waiters.settle(2, "two").is_ok());
        waiters.abandon(3);
        let mut wakers = Vec::new();
        waiters.close(|| "closed", &mut wakers);
        assert_eq!(wakers.len(), 1, "1 was polled");
        assert_eq!(poll(&mut waiters, 1), Some(Poll::Ready("closed")));
        assert_eq!(
            poll(&mut waiters, 2),
            Some(Poll::Ready("two")),
            "its own outcome"
        );
        assert_eq!(poll(&mut waiters, 4), Some(Poll::Ready("closed")));
        assert_eq!(waiters.len(), 0, "the abandoned slot is gone");
        waiters.register(5);
        assert_eq!(poll(&mut waiters, 5), None, "no slot after close");
    }

    #[test]
    fn wakers_are_kept_per_poll_and_handed_back_to_wake_or_drop_outside() {
        let mut waiters: Waiters<()> = Waiters::default();
        waiters.register(1);
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut stale = None;
        let polled = waiters.poll(1, &Waker::from(Arc::clone(&first)), &mut stale);
        assert_eq!(polled, Some(Poll::Pending));
        assert!(stale.is_none());
        // Polled again by the same task: nothing replaced.
        let polled = waiters.poll(1, &Waker::from(Arc::clone(&first)), &mut stale);
        assert_eq!(polled, Some(Poll::Pending));
        assert!(stale.is_none());
        // Moved to another task: the first waker comes back, to be dropped unlocked.
        let polled = waiters.poll(1, &Waker::from(Arc::clone(&second)), &mut stale);
        assert_eq!(polled, Some(Poll::Pending));
        assert!(stale
            .take()
            .is_some_and(|w| w.will_wake(&Waker::from(Arc::clone(&first)))));
        let Ok(Some(waker)) = waiters.settle(1, ()) else {
            panic!("the second waker is handed back to wake");
        };
        waker.wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut waiters, 1), Some(Poll::Ready(())));
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
