//! The event queue: events ordered by virtual time, ties broken by the order they were
//! scheduled, so that a run never depends on how a heap happens to order equal keys.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    at_us: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    /// Reversed, because `BinaryHeap` pops the largest and we want the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// A min-queue of events by (time, sequence number).
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Schedules `event` at `at_us`; among events at the same time, earlier pushes pop first.
    pub(crate) fn push(&mut self, at_us: u64, event: E) {
        self.heap.push(Scheduled {
            at_us,
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    /// The time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.at_us)
    }

    /// Every scheduled event, in no particular order (for tests of the cluster).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &E> {
        self.heap.iter().map(|s| &s.event)
    }

    /// Removes the earliest event.
    pub(crate) fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|s| (s.at_us, s.event))
    }
}

#[cfg(test)]
mod tests {
    use super::EventQueue;

    /// Events pop by time, and events at the same time pop in the order they were pushed.
    #[test]
    fn pops_by_time_then_by_push_order() {
        let mut q = EventQueue::new();
        q.push(20, "c");
        q.push(10, "a");
        q.push(20, "d");
        q.push(10, "b");
        q.push(5, "first");
        assert_eq!(q.peek_time(), Some(5));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![(5, "first"), (10, "a"), (10, "b"), (20, "c"), (20, "d")]
        );
    }
}
