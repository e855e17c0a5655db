//! One timer structure for `Timeout` ops and every op's deadline: a binary heap of 16-byte
//! entries with lazy deletion.
//!
//! An entry is the instant it is due (nanoseconds since the heap was made), the slot's key and
//! what firing does. A slot arms at most one timer of each kind in its life, and a slot's key
//! is never given to another op (generations do not wrap: `slab.rs`), so the key and the kind
//! name a timer: nothing else is stored, and a slot says whether its timer is still
//! armed with a flag. Arming is `O(log n)`; cancelling is `O(1)` (the slot clears its flag, and
//! the stale entry is skipped when it surfaces). When stale entries outnumber live ones the
//! heap is rebuilt, so a stream of deadlines that are met never grows it without bound.
//!
//! Small entries are what makes 100,000 timers cheap: a pop moves and compares 16 bytes, and
//! the heap's memory is reserved up front for the ring's usual load (`Timers::new`), so arming
//! does not reallocate in steady state.
#![forbid(unsafe_code)]

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::slab::{Key, CAPACITY_MAX};

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fire {
    /// A `Timeout` op expires.
    Timeout,
    /// An op's deadline passes.
    Deadline,
}

/// Set in [`Due::index`] for a deadline; slot indexes stay below [`CAPACITY_MAX`].
const DEADLINE_BIT: u32 = 1 << 31;
const _: () = assert!(CAPACITY_MAX as u64 <= DEADLINE_BIT as u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Due {
    /// Nanoseconds after [`Timers::origin`].
    at: u64,
    /// The slot's index, with [`DEADLINE_BIT`] for a deadline.
    index: u32,
    generation: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> Ordering {
        // Due instant first; the rest only makes the order total.
        (self.at, self.index, self.generation).cmp(&(other.at, other.index, other.generation))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Due {
    fn key(&self) -> Key {
        Key::new(self.index & !DEADLINE_BIT, self.generation)
    }

    fn fire(&self) -> Fire {
        if self.index & DEADLINE_BIT == 0 {
            Fire::Timeout
        } else {
            Fire::Deadline
        }
    }
}

/// An instant as the heap counts time (see [`Timers::tick`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick(u64);

/// The timer heap.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    /// The instant entries count from.
    origin: Instant,
    live: usize,
}

impl Timers {
    /// A heap with room for `capacity` timers before it first grows.
    pub fn new(capacity: usize) -> Timers {
        let heap = Vec::with_capacity(capacity);
        crate::sys::posix::advise_huge_pages(&heap);
        Timers {
            heap: BinaryHeap::from(heap),
            origin: Instant::now(),
            live: 0,
        }
    }

    fn since_origin(&self, at: Instant) -> u64 {
        // 2^64 ns is 584 years: the saturation is never reached by a real deadline.
        let d = at.saturating_duration_since(self.origin);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Arms a timer for slot `key` at `at`. The slot must not have armed a timer of this kind
    /// before (see the module doc); it records that it has one.
    pub fn arm(&mut self, at: Instant, key: Key, fire: Fire) {
        debug_assert!(key.index & DEADLINE_BIT == 0);
        let index = match fire {
            Fire::Timeout => key.index,
            Fire::Deadline => key.index | DEADLINE_BIT,
        };
        self.heap.push(Reverse(Due {
            at: self.since_origin(at),
            index,
            generation: key.generation,
        }));
        self.live += 1;
    }

    /// Records that a timer was cancelled (its entry becomes stale); rebuilds the heap when
    /// stale entries dominate. `is_live` says whether a slot still has its timer of a kind.
    pub fn disarm(&mut self, is_live: impl Fn(Key, Fire) -> bool) {
        self.live = self.live.saturating_sub(1);
        let stale = self.heap.len().saturating_sub(self.live);
        if stale > 1024 && stale > self.live * 2 {
            self.heap.retain(|Reverse(e)| is_live(e.key(), e.fire()));
            self.live = self.heap.len();
        }
    }

    /// Whether no entry (live or stale) is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest instant any entry (live or stale) is due: the loop wakes then at the latest.
    pub fn next_due(&self) -> Option<Instant> {
        let Reverse(e) = self.heap.peek()?;
        Some(self.origin + Duration::from_nanos(e.at))
    }

    /// `now` as the heap counts time, for [`pop_due`](Self::pop_due): converted once for a
    /// whole run of pops.
    pub fn tick(&self, now: Instant) -> Tick {
        Tick(self.since_origin(now))
    }

    /// Pops the next entry due at or before `now`: `(key, fire)`. The caller checks it is still
    /// live and calls [`fired`](Self::fired) if so.
    #[inline]
    pub fn pop_due(&mut self, now: Tick) -> Option<(Key, Fire)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now.0 => {}
            _ => return None,
        }
        let Reverse(e) = self.heap.pop().expect("peeked");
        Some((e.key(), e.fire()))
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
    use std::collections::HashSet;

    fn key(i: u32) -> Key {
        Key::new(i, 0)
    }

    #[test]
    fn fire_in_deadline_order() {
        let mut t = Timers::new(0);
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].iter().enumerate() {
            t.arm(
                now + Duration::from_millis(*ms),
                key(i as u32),
                Fire::Timeout,
            );
        }
        let later = now + Duration::from_millis(25);
        let order: Vec<u32> = std::iter::from_fn(|| t.pop_due(t.tick(later)))
            .map(|(k, _)| k.index)
            .collect();
        assert_eq!(order, [1, 2]);
        let next = t.next_due().expect("one left");
        assert!(next.duration_since(now + Duration::from_millis(30)) < Duration::from_nanos(2));
    }

    #[test]
    fn an_entry_names_its_slot_and_kind() {
        let mut t = Timers::new(4);
        let now = Instant::now();
        let big = Key::new((CAPACITY_MAX - 1) as u32, u32::MAX);
        t.arm(now, big, Fire::Deadline);
        t.arm(now, big, Fire::Timeout);
        t.arm(now - Duration::from_secs(1), key(7), Fire::Deadline);
        let popped: Vec<_> = std::iter::from_fn(|| t.pop_due(t.tick(now))).collect();
        assert_eq!(popped.len(), 3);
        assert_eq!(
            popped[0],
            (key(7), Fire::Deadline),
            "a past instant is due first"
        );
        assert!(popped.contains(&(big, Fire::Deadline)));
        assert!(popped.contains(&(big, Fire::Timeout)));
    }

    #[test]
    fn stale_entries_are_dropped_when_they_dominate() {
        let mut t = Timers::new(0);
        let now = Instant::now();
        let mut live: HashSet<Key> = (0..5000).map(key).collect();
        for i in 0..5000 {
            t.arm(now + Duration::from_secs(60), key(i), Fire::Deadline);
        }
        for i in 1..5000 {
            live.remove(&key(i));
            t.disarm(|k, fire| fire == Fire::Deadline && live.contains(&k));
        }
        assert_eq!(t.live(), 1);
        assert!(
            t.heap.len() < 2500,
            "the heap was rebuilt: {}",
            t.heap.len()
        );
        let due: Vec<_> = std::iter::from_fn(|| t.pop_due(t.tick(now + Duration::from_secs(61))))
            .filter(|(k, _)| live.contains(k))
            .collect();
        assert_eq!(
            due,
            [(key(0), Fire::Deadline)],
            "the live timer survives the rebuilds"
        );
    }
}
