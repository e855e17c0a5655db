//! One timer structure for `Timeout` ops and every op's deadline: a binary heap with lazy
//! deletion.
//!
//! Arming is `O(log n)`; cancelling is `O(1)` (the slot forgets its timer's sequence number, and
//! the stale entry is skipped when it surfaces). When stale entries outnumber live ones the
//! heap is rebuilt, so a stream of deadlines that are met never grows it without bound.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::slab::Key;

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fire {
    /// A `Timeout` op expires.
    Timeout,
    /// An op's deadline passes.
    Deadline,
}

/// A timer's identity, kept by its slot; stale if the slot no longer holds it.
pub(crate) type TimerSeq = u64;

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: TimerSeq,
    key: (u32, u32),
    fire: Fire,
}

/// The timer heap.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    next_seq: TimerSeq,
    live: usize,
}

impl Timers {
    pub fn new() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            next_seq: 1,
            live: 0,
        }
    }

    /// Arms a timer for slot `key` at `at`; the returned sequence number identifies it.
    pub fn arm(&mut self, at: Instant, key: Key, fire: Fire) -> TimerSeq {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Due {
            at,
            seq,
            key: (key.index, key.generation),
            fire,
        }));
        self.live += 1;
        seq
    }

    /// Records that a timer was cancelled (its entry becomes stale); rebuilds the heap when
    /// stale entries dominate. `is_live` says whether a heap entry's slot still holds it.
    pub fn disarm(&mut self, is_live: impl Fn(Key, TimerSeq) -> bool) {
        self.live = self.live.saturating_sub(1);
        let stale = self.heap.len() - self.live;
        if stale > 1024 && stale > self.live * 2 {
            let entries = std::mem::take(&mut self.heap).into_vec();
            self.heap = entries
                .into_iter()
                .filter(|Reverse(e)| is_live(Key::new(e.key.0, e.key.1), e.seq))
                .collect();
            self.live = self.heap.len();
        }
    }

    /// The earliest instant any entry (live or stale) is due: the loop wakes then at the latest.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Pops the next entry due at or before `now`: `(key, seq, fire)`. The caller checks it
    /// is still live and calls [`fired`](Self::fired) if so.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Key, TimerSeq, Fire)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => {}
            _ => return None,
        }
        let Reverse(e) = self.heap.pop().expect("peeked");
        Some((Key::new(e.key.0, e.key.1), e.seq, e.fire))
    }

    /// Records that a popped entry was live and has fired.
    pub fn fired(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Live timers.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(i: u32) -> Key {
        Key::new(i, 0)
    }

    #[test]
    fn fire_in_deadline_order() {
        let mut t = Timers::new();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].iter().enumerate() {
            t.arm(
                now + Duration::from_millis(*ms),
                key(i as u32),
                Fire::Timeout,
            );
        }
        let later = now + Duration::from_millis(25);
        let order: Vec<u32> = std::iter::from_fn(|| t.pop_due(later))
            .map(|(k, _, _)| k.index)
            .collect();
        assert_eq!(order, [1, 2]);
        assert_eq!(t.next_due(), Some(now + Duration::from_millis(30)));
    }

    #[test]
    fn stale_entries_are_dropped_when_they_dominate() {
        let mut t = Timers::new();
        let now = Instant::now();
        let mut live: std::collections::HashSet<TimerSeq> = (0..5000)
            .map(|i| t.arm(now + Duration::from_secs(60), key(i), Fire::Deadline))
            .collect();
        let mut all: Vec<TimerSeq> = live.iter().copied().collect();
        all.sort();
        for seq in &all[1..] {
            live.remove(seq);
            t.disarm(|_, s| live.contains(&s));
        }
        assert_eq!(t.live(), 1);
        assert!(
            t.heap.len() < 2500,
            "the heap was rebuilt: {}",
            t.heap.len()
        );
        let due: Vec<_> = std::iter::from_fn(|| t.pop_due(now + Duration::from_secs(61)))
            .filter(|(_, s, _)| live.contains(s))
            .collect();
        assert_eq!(due.len(), 1, "the live timer survives the rebuilds");
    }
}
