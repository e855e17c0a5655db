//! Where completions go when a backend makes them: the ring's queue, or — for an op whose
//! owner *claimed* it — the op's own slot, beside the owner's waker.
//!
//! An op is one record from `submit` to the moment its final completion is taken: the
//! backend's slot (a [`Slab`](crate::slab) entry) while it runs, then, retired at the final
//! completion, the same index here until the completion is taken. The index is not reused
//! meanwhile, so a claim needs no generation of its own and an id stays unambiguous.
//!
//! # Invariants
//! - A claim exists only for a live or retired slot: it is made for a live op
//!   ([`Ring::set_waker`](crate::Ring::set_waker)) and cleared, with the slot's release, when
//!   the final completion is taken or dropped.
//! - Every final completion leaves exactly once: from the queue, taken from its claim, or
//!   dropped on arrival (abandoned); each of those releases the slot (`released` lists the
//!   ones the ring must release after the backend's call returns).
//! - A completion leaving the ring carries the ring's tag in its id's spare bits, so an id is
//!   never mistaken for another ring's (see [`tag`](Sink::tag)).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use crate::completion::Completion;
use crate::op::OpId;

/// The top bit marks the id of an op that finished inside `submit` without taking a slot (the
/// readiness backends'): such an id names no slot, is never claimed, and frees nothing.
pub(crate) const INLINE: u64 = 1 << 63;

/// The ring's tag: 7 bits above the slot's index and generation (56 bits), below `INLINE`.
const TAG_BITS: u64 = 0x7F << 56;

/// The bits of an id the backend knows.
pub(crate) const KEY_BITS: u64 = !TAG_BITS;

/// What the ring keeps for a claimed op.
#[derive(Default)]
pub(crate) enum Claim {
    /// Not claimed: completions go to the queue.
    #[default]
    Unclaimed,
    /// Claimed; nothing arrived yet. The waker is woken when something does.
    Waiting { id: OpId, waker: Waker },
    /// One completion waiting to be taken: the final one, or a multishot op's `MORE` (a
    /// second one makes it a `Stream`).
    Done(Completion),
    /// A multishot op's completions, oldest first (the final one last, once it came).
    Stream {
        id: OpId,
        waker: Option<Waker>,
        queue: VecDeque<Completion>,
    },
    /// A multishot op claimed by [`Sink::watch`]: its `MORE`s fold into one until taken —
    /// `fired` holds the union of their results (a poll's event masks). The waker stays when
    /// woken or when events are taken: a watch's owner parks on it again and again.
    Watch {
        id: OpId,
        waker: Option<Waker>,
        fired: Option<u32>,
        user_data: u64,
    },
    /// Nobody will take the final completion: it is dropped on arrival (buffers freed,
    /// descriptors closed) and the slot released.
    Abandoned { id: OpId },
    /// Handed over (`Ring::hand_over`): every completion goes to `to`; the slot is released
    /// when the final one has gone.
    Forwarded {
        id: OpId,
        to: std::sync::Arc<crate::Handover>,
    },
}

/// The completions a ring holds: its queue and its claims.
pub(crate) struct Sink {
    pub(crate) queue: VecDeque<Completion>,
    /// By slot index; grown on demand.
    claims: Vec<Claim>,
    /// Final completions of abandoned ops dropped on arrival: slots to release.
    pub(crate) released: Vec<OpId>,
    /// Completions handed to claims since [`reset_delivered`](Self::reset_delivered).
    delivered: usize,
    /// This ring's tag, in the bits above [`KEY_BITS`].
    tag: u64,
    /// By slot index: the most unread `MORE`s a claimed multishot op may have before the
    /// ring asks it to end (0: no bound). See [`bound`](Self::bound).
    bounds: Vec<u16>,
    /// Ops past their bound: the ring cancels them (`cancel_nowait`) when it settles.
    pub(crate) over: Vec<OpId>,
    /// Empty stream queues, kept with their capacity: a claimed multishot op whose completions
    /// pile up (two or more untaken: one waits in place, see `Claim::Done`) takes its queue
    /// from here, and gives it back when the op ends — so steady streams allocate nothing.
    spare_queues: Vec<VecDeque<Completion>>,
}

/// The most empty stream queues kept for reuse.
const SPARE_QUEUES: usize = 1024;
/// Stream queues a sink makes when it is made.
const SPARES_MADE: usize = 8;

/// An empty stream queue: a spare, or a new one with room for a few.
fn spare_queue(spares: &mut Vec<VecDeque<Completion>>) -> VecDeque<Completion> {
    spares.pop().unwrap_or_else(|| VecDeque::with_capacity(4))
}

impl Sink {
    /// A sink for a ring tagged `tag` (1 to 127).
    pub(crate) fn new(capacity: usize, tag: u8) -> Sink {
        let queue = Vec::with_capacity(capacity);
        crate::sys::posix::advise_huge_pages(&queue);
        Sink {
            queue: VecDeque::from(queue),
            claims: Vec::new(),
            released: Vec::new(),
            delivered: 0,
            tag: (u64::from(tag) << 56) & TAG_BITS,
            bounds: Vec::new(),
            over: Vec::new(),
            // A few made up front: a stream's queue is needed at its end too (its last data
            // and its final completion, untaken together), which steady state reaches first.
            spare_queues: (0..SPARES_MADE)
                .map(|_| VecDeque::with_capacity(4))
                .collect(),
        }
    }

    /// The id a backend's `key_bits` has outside the ring.
    #[inline]
    pub(crate) fn tag(&self, key_bits: u64) -> OpId {
        OpId(key_bits | self.tag)
    }

    /// The backend's id for `id`, if `id` is this ring's.
    #[inline]
    pub(crate) fn untag(&self, id: OpId) -> Option<OpId> {
        (id.0 & TAG_BITS == self.tag).then_some(OpId(id.0 & KEY_BITS))
    }

    /// How many completions arrived: queued, plus delivered to claims since the last reset.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.delivered
    }

    pub(crate) fn reset_delivered(&mut self) {
        self.delivered = 0;
    }

    /// Takes a completion the backend made (its id is the backend's).
    #[inline(always)]
    pub(crate) fn push_back(&mut self, mut c: Completion) {
        let index = index_of(c.id);
        c.id = self.tag(c.id.0);
        match self.claims.get(index) {
            Some(claim) if c.id.0 & INLINE == 0 && !matches!(claim, Claim::Unclaimed) => {
                self.push_claimed(c, index);
            }
            _ => self.queue.push_back(c),
        }
    }

    /// [`push_back`](Self::push_back) of a completion whose op is claimed (out of line: the
    /// queue's path stays short).
    #[inline(never)]
    fn push_claimed(&mut self, c: Completion, index: usize) {
        if let Some(bound) = self.bounds.get_mut(index).filter(|b| **b != 0) {
            // The final completion ends the op's bound; a `MORE` may reach it.
            let unread = match &self.claims[index] {
                Claim::Stream { queue, .. } => queue.len() + 1,
                Claim::Done(_) => 2,
                _ => 1,
            };
            if !c.more {
                *bound = 0;
            } else if unread >= usize::from(*bound) {
                *bound = 0;
                self.over.push(c.id);
            }
        }
        let claim = &mut self.claims[index];
        match claim {
            Claim::Unclaimed => unreachable!("claimed"),
            Claim::Abandoned { .. } if c.more => return,
            Claim::Abandoned { .. } => {
                *claim = Claim::Unclaimed;
                self.released.push(c.id);
                return;
            }
            Claim::Forwarded { to, .. } => {
                let (last, id) = (!c.more, c.id);
                to.push(c);
                if last {
                    *claim = Claim::Unclaimed;
                    self.released.push(id);
                }
                return;
            }
            Claim::Waiting { .. } => {
                let Claim::Waiting { waker, .. } = std::mem::take(claim) else {
                    unreachable!("matched above")
                };
                // One completion, `MORE` or final, waits in place (no queue is made for it).
                *claim = Claim::Done(c);
                waker.wake();
            }
            // Nothing waiting and no queue (the last one was taken from `Done`): this one
            // waits in place too.
            Claim::Stream { waker, queue, .. } if queue.capacity() == 0 => {
                let waker = waker.take();
                *claim = Claim::Done(c);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Claim::Stream { waker, queue, .. } => {
                queue.push_back(c);
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
            Claim::Watch {
                waker,
                fired,
                user_data,
                ..
            } if c.more => {
                *fired = Some(fired.unwrap_or(0) | c.result.as_ref().map_or(0, |&r| r));
                *user_data = c.user_data;
                // The waker stays: a watch's owner parks on it again and again.
                if let Some(w) = waker {
                    w.wake_by_ref();
                }
            }
            Claim::Watch {
                waker,
                fired,
                user_data,
                id,
            } => {
                let waker = waker.take();
                // Events not yet taken are taken before the final completion, as a `MORE`.
                *claim = match fired.take() {
                    Some(bits) => Claim::Stream {
                        id: *id,
                        waker: None,
                        queue: VecDeque::from([
                            Completion {
                                id: *id,
                                user_data: *user_data,
                                result: Ok(bits),
                                more: true,
                                output: Default::default(),
                            },
                            c,
                        ]),
                    },
                    None => Claim::Done(c),
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Claim::Done(first) if first.more => {
                // A second completion before the first was taken: now they need a queue.
                let Claim::Done(first) = std::mem::take(claim) else {
                    unreachable!("matched above")
                };
                let mut queue = spare_queue(&mut self.spare_queues);
                let id = first.id;
                queue.push_back(first);
                queue.push_back(c);
                *claim = Claim::Stream {
                    id,
                    waker: None,
                    queue,
                };
            }
            Claim::Done(_) => unreachable!("a completion after the final one"),
        }
        self.delivered += 1;
    }

    /// A multishot poll fired with `events` (the backend's id): folded into its watch, if it
    /// has one, without making a completion; otherwise a `MORE` completion as any other.
    #[inline]
    pub(crate) fn push_event(&mut self, id: OpId, user_data: u64, events: u32) {
        // A claim belongs to its slot's current op (cleared when the slot is released), and
        // a `MORE` comes from the op that runs in its slot: no id to compare.
        if let Some(Claim::Watch {
            waker,
            fired,
            user_data: u,
            ..
        }) = self.claims.get_mut(index_of(id))
        {
            *fired = Some(fired.unwrap_or(0) | events);
            *u = user_data;
            if let Some(w) = waker {
                w.wake_by_ref();
            }
            self.delivered += 1;
            return;
        }
        self.push_unwatched_event(id, user_data, events);
    }

    /// [`push_event`](Self::push_event) for a poll without a watch: a `MORE` completion (out
    /// of line, so that the watch's path stays small enough to inline where events arrive).
    #[inline(never)]
    fn push_unwatched_event(&mut self, id: OpId, user_data: u64, events: u32) {
        self.push_back(Completion {
            id,
            user_data,
            result: Ok(events),
            more: true,
            output: Default::default(),
        });
    }

    /// The claim of slot `index`, made on demand.
    fn claim_mut(&mut self, index: usize) -> &mut Claim {
        if index >= self.claims.len() {
            self.claims.resize_with(index + 1, Claim::default);
        }
        &mut self.claims[index]
    }

    /// The claim of op `id` (the ring's id), if it has one.
    fn claim_of(&self, id: OpId) -> Option<&Claim> {
        let claim = self.claims.get(index_of(id))?;
        let ours = match claim {
            Claim::Unclaimed => false,
            Claim::Waiting { id: i, .. }
            | Claim::Stream { id: i, .. }
            | Claim::Watch { id: i, .. }
            | Claim::Abandoned { id: i }
            | Claim::Forwarded { id: i, .. } => *i == id,
            Claim::Done(c) => c.id == id,
        };
        ours.then_some(claim)
    }

    /// Claims op `id` (the ring's id) for `waker`, or replaces its waker. `live` says whether
    /// the backend still runs an unclaimed `id` (a stale id is ignored). What already arrived
    /// for it in the queue moves into the claim (and `waker` is woken).
    #[inline]
    pub(crate) fn set_waker(&mut self, id: OpId, waker: &Waker, live: impl FnOnce() -> bool) {
        self.claim(id, waker, false, live);
    }

    /// Bounds claimed multishot op `id`'s unread `MORE` completions to `max` (0: no bound):
    /// when that many wait in its claim, `id` joins [`over`](Self::over) once.
    pub(crate) fn bound(&mut self, id: OpId, max: u16, live: impl FnOnce() -> bool) {
        if id.0 & INLINE != 0 || !live() {
            return;
        }
        let index = index_of(id);
        if index >= self.bounds.len() {
            // As long as the claims (which this op's claim has grown already), so that later
            // ops in slots below theirs never grow it again.
            let len = (index + 1).max(self.claims.capacity());
            self.bounds.resize(len, 0);
        }
        self.bounds[index] = max;
    }

    /// Claims multishot op `id` as [`set_waker`](Self::set_waker) does, but its `MORE`s fold:
    /// until taken they are one completion whose result is the union of theirs (for a poll,
    /// every event seen since the last take). A claim made by `set_waker` stays as it is.
    #[inline]
    pub(crate) fn watch(&mut self, id: OpId, waker: &Waker, live: impl FnOnce() -> bool) {
        self.claim(id, waker, true, live);
    }

    #[inline]
    fn claim(&mut self, id: OpId, waker: &Waker, fold: bool, live: impl FnOnce() -> bool) {
        if id.0 & INLINE != 0 {
            // Finished inside `submit`: it waits in the queue (`take` finds it there).
            if self.queue.iter().any(|c| c.id == id) {
                waker.wake_by_ref();
            }
            return;
        }
        let index = index_of(id);
        if index >= self.claims.len() {
            self.claims.resize_with(index + 1, Claim::default);
        }
        // A claim other than `Unclaimed` belongs to the slot's current op (it is cleared when
        // the slot is released): one with another id means `id` is stale.
        match &mut self.claims[index] {
            Claim::Unclaimed => {}
            Claim::Waiting { id: i, waker: w } if *i == id => {
                keep(w, waker);
                return;
            }
            Claim::Stream {
                id: i,
                waker: w,
                queue,
            } if *i == id => {
                if queue.is_empty() {
                    *w = Some(waker.clone());
                } else {
                    waker.wake_by_ref();
                }
                return;
            }
            Claim::Watch {
                id: i,
                waker: w,
                fired,
                ..
            } if *i == id => {
                keep_some(w, waker);
                if fired.is_some() {
                    waker.wake_by_ref();
                }
                return;
            }
            Claim::Done(c) if c.id == id => {
                waker.wake_by_ref();
                return;
            }
            _ => return,
        }
        if self.queue.iter().any(|c| c.id == id) {
            self.claim_arrived(id, index, waker, fold);
        } else if live() {
            self.claims[index] = if fold {
                Claim::Watch {
                    id,
                    waker: Some(waker.clone()),
                    fired: None,
                    user_data: 0,
                }
            } else {
                Claim::Waiting {
                    id,
                    waker: waker.clone(),
                }
            };
        }
    }

    /// The op finished, or a multishot op fired, before it was claimed: what it queued moves
    /// into its claim, and `waker` is woken.
    #[cold]
    fn claim_arrived(&mut self, id: OpId, index: usize, waker: &Waker, fold: bool) {
        let mut mine = VecDeque::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].id == id {
                mine.extend(self.queue.remove(i));
            } else {
                i += 1;
            }
        }
        let ended = mine.back().is_some_and(|c| !c.more);
        self.claims[index] = match mine.len() {
            1 if ended => Claim::Done(mine.pop_front().expect("one")),
            _ if fold && !ended => Claim::Watch {
                id,
                // A watch keeps its waker for the events still to come.
                waker: Some(waker.clone()),
                fired: Some(
                    mine.iter()
                        .fold(0, |bits, c| bits | c.result.as_ref().map_or(0, |&r| r)),
                ),
                user_data: mine.back().map_or(0, |c| c.user_data),
            },
            _ => Claim::Stream {
                id,
                waker: None,
                queue: mine,
            },
        };
        waker.wake_by_ref();
    }

    /// Takes claimed op `id`'s next completion: a multishot op's oldest, or the final one.
    /// A final completion taken ends the claim; the caller releases the slot.
    #[inline]
    pub(crate) fn take(&mut self, id: OpId) -> Option<Completion> {
        if id.0 & INLINE != 0 {
            let at = self.queue.iter().rposition(|c| c.id == id)?;
            return self.queue.remove(at);
        }
        let claim = self.claims.get_mut(index_of(id))?;
        match claim {
            Claim::Done(c) if c.id == id => match std::mem::take(claim) {
                Claim::Done(c) => {
                    if c.more {
                        // Still claimed, nothing waiting: what comes next waits here.
                        *claim = Claim::Stream {
                            id,
                            waker: None,
                            queue: VecDeque::new(),
                        };
                    }
                    Some(c)
                }
                _ => unreachable!("matched above"),
            },
            Claim::Stream { queue, .. } if queue.front().is_some_and(|c| c.id == id) => {
                let c = queue.pop_front().expect("checked");
                if !c.more {
                    // The op's end: its queue goes back to the spares for another stream.
                    if self.spare_queues.len() < SPARE_QUEUES {
                        self.spare_queues.push(std::mem::take(queue));
                    }
                    *claim = Claim::Unclaimed;
                }
                Some(c)
            }
            Claim::Watch {
                id: i,
                fired,
                user_data,
                ..
            } if *i == id => fired.take().map(|bits| Completion {
                id,
                user_data: *user_data,
                result: Ok(bits),
                more: true,
                output: Default::default(),
            }),
            _ => None,
        }
    }

    /// Takes claimed op `id`'s next completion as [`take`](Self::take) does, or — if nothing
    /// arrived — leaves `waker` to be woken when something does, as
    /// [`set_waker`](Self::set_waker) does: one look-up for an executor's poll.
    #[inline]
    pub(crate) fn poll_take(
        &mut self,
        id: OpId,
        waker: &Waker,
        live: impl FnOnce() -> bool,
    ) -> Option<Completion> {
        if let Some(Claim::Waiting { id: i, waker: w }) = self.claims.get_mut(index_of(id)) {
            if *i == id && id.0 & INLINE == 0 {
                keep(w, waker);
                return None;
            }
        }
        let taken = self.take(id);
        if taken.is_none() {
            self.claim(id, waker, false, live);
        }
        taken
    }

    /// [`poll_take`](Self::poll_take) for op `id` if its claim is a watch: `Some(Ready((events,
    /// user_data)))` for what folded since the last take, `Some(Pending)` if nothing did —
    /// either way `waker` is left in the claim — and `None` if `id` has no watch here.
    #[inline]
    pub(crate) fn poll_watch(&mut self, id: OpId, waker: &Waker) -> Option<Poll<(u32, u64)>> {
        let Some(Claim::Watch {
            id: i,
            waker: w,
            fired,
            user_data,
        }) = self.claims.get_mut(index_of(id))
        else {
            return None;
        };
        if *i != id || id.0 & INLINE != 0 {
            return None;
        }
        // The waker is left in place whether something is taken or not: until the ring next
        // reaps completions, nothing else can arrive, so a caller that took events and found
        // nothing more to do is parked already.
        keep_some(w, waker);
        Some(match fired.take() {
            Some(bits) => Poll::Ready((bits, *user_data)),
            None => Poll::Pending,
        })
    }

    /// Marks op `id` (the ring's id) abandoned: its final completion will be dropped on
    /// arrival. What already arrived for it is dropped now. Returns whether that included the
    /// final completion (the caller releases the slot) — `None` if `id` is unknown here and
    /// `live` says the backend does not run it either (a stale id: nothing is marked).
    pub(crate) fn abandon(&mut self, id: OpId, live: impl FnOnce() -> bool) -> Option<bool> {
        if self.queue.iter().any(|c| c.id == id && !c.more) {
            self.queue.retain(|c| c.id != id);
            return Some(true);
        }
        if self.claim_of(id).is_none() {
            if id.0 & INLINE != 0 || !live() {
                return None;
            }
            // Its MOREs that are queued go now; the final is dropped when it comes.
            self.queue.retain(|c| c.id != id);
        }
        let claim = self.claim_mut(index_of(id));
        let had_final = match std::mem::replace(claim, Claim::Abandoned { id }) {
            Claim::Done(c) => !c.more,
            Claim::Forwarded { to, .. } => {
                to.close();
                false
            }
            Claim::Stream { queue, .. } => queue.back().is_some_and(|c| !c.more),
            _ => false,
        };
        if had_final {
            *claim = Claim::Unclaimed;
        }
        Some(had_final)
    }

    /// Hands op `id` over to `to` (see `Ring::hand_over`): what arrived for it moves there now,
    /// in order, and what comes later goes there too. `Some(true)`: its final completion was
    /// among what moved (the ring releases its slot); `Some(false)`: it still runs (the ring
    /// ends it); `None`: no such op (`to` is closed).
    pub(crate) fn hand_over(
        &mut self,
        id: OpId,
        to: std::sync::Arc<crate::Handover>,
        live: impl FnOnce() -> bool,
    ) -> Option<bool> {
        // Unclaimed: its completions wait in the queue.
        if self.claim_of(id).is_none() {
            let mut ended = false;
            let mut i = 0;
            while i < self.queue.len() {
                if self.queue[i].id == id {
                    let c = self.queue.remove(i).expect("in range");
                    ended |= !c.more;
                    to.push(c);
                } else {
                    i += 1;
                }
            }
            if ended {
                return Some(true);
            }
            if id.0 & INLINE != 0 || !live() {
                to.close();
                return None;
            }
        } else {
            while let Some(c) = self.take(id) {
                let last = !c.more;
                to.push(c);
                if last {
                    return Some(true);
                }
            }
            if matches!(
                self.claim_of(id),
                Some(Claim::Abandoned { .. } | Claim::Forwarded { .. })
            ) {
                // Given up on, or handed over already: nothing more will come here.
                to.close();
                return None;
            }
        }
        *self.claim_mut(index_of(id)) = Claim::Forwarded { id, to };
        Some(false)
    }

    /// Closes every hand-over still open (the ring is gone: what was to come will not).
    pub(crate) fn close_forwarded(&mut self) {
        for claim in &mut self.claims {
            if let Claim::Forwarded { to, .. } = claim {
                to.close();
            }
        }
    }

    /// Op `id`'s final completion, if it is here (queued or in its claim), not yet taken.
    /// `id` may be the ring's or the backend's.
    pub(crate) fn final_of(&self, id: OpId) -> Option<&Completion> {
        let id = self.tag(id.0 & KEY_BITS);
        match self.claims.get(index_of(id)) {
            Some(Claim::Done(c)) if c.id == id => Some(c).filter(|c| !c.more),
            Some(Claim::Stream { queue, .. }) if queue.back().is_some_and(|c| c.id == id) => {
                queue.back().filter(|c| !c.more)
            }
            _ => self.queue.iter().rev().find(|c| c.id == id && !c.more),
        }
    }
}

/// Makes `w` a waker that wakes what `waker` wakes (cloned only when it is another).
#[inline]
fn keep(w: &mut Waker, waker: &Waker) {
    if !w.will_wake(waker) {
        *w = waker.clone();
    }
}

/// [`keep`] for a claim that may hold no waker yet.
#[inline]
fn keep_some(w: &mut Option<Waker>, waker: &Waker) {
    match w {
        Some(w) => keep(w, waker),
        None => *w = Some(waker.clone()),
    }
}

/// The backend's id of the slot a ring id names; `None` for an op that finished inside
/// `submit` (it took no slot).
#[inline]
pub(crate) fn slot_of(id: OpId) -> Option<OpId> {
    (id.0 & INLINE == 0).then_some(OpId(id.0 & KEY_BITS))
}

/// The slot index in an id.
#[inline]
fn index_of(id: OpId) -> usize {
    (id.0 & 0xFF_FFFF) as usize
}
