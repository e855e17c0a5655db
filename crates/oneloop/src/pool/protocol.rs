//! The ownership protocol: one atomic word decides who may act on a request that several
//! threads can touch.
//!
//! The word holds a reference count (low bits) and the flags `CANCEL` and `DONE` (high bits).
//!
//! * **Ownership** goes to whoever raises the count from 0. Only the owner touches the
//!   request's result, work or re-arm state.
//! * A party that fails to get ownership (a second wakeup, a cancel) **leaves its increment
//!   behind**. The owner, when done with what it saw, releases exactly the references it
//!   handled; if more arrived meanwhile the release returns [`Release::Again`] and the owner
//!   keeps ownership and handles them. So no wakeup is lost and nothing is handled twice.
//! * A cancel sets `CANCEL` first and then tries for ownership: if it wins, the request never
//!   started and the canceller ends it; if it loses, the owner is already at work and the
//!   canceller gives up responsibility (Viro's rule) — the owner sees `CANCEL` at its next
//!   re-check, between units of work, never in the middle of one.
//! * `DONE` marks the end: nobody becomes owner of a finished request.
//!
//! Lifetime is separate from ownership: the request lives in an `Arc`, and whoever drops the
//! last reference frees it (a cancelled job whose worker still holds it stays alive until the
//! worker lets go).
//!
//! This file is compiled twice: in the library over `std` atomics, and in the loom tests
//! (`tests/loom_protocol.rs`) over loom's, which check every interleaving of its races:
//! wakeup during arming, double wakeup, cancel during wakeup, cancel racing and after
//! completion, and a dropped handle while a worker holds the request.

use super::sync::{AtomicU32, Ordering};

/// Set once a cancel has been requested.
pub(crate) const CANCEL: u32 = 1 << 31;
/// Set once the request has ended; no one may own it afterwards.
pub(crate) const DONE: u32 = 1 << 30;
const REFS: u32 = DONE - 1;

/// What the owner must do after trying to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Ownership is given up; someone else may take it.
    Released,
    /// `refs` more references arrived while owning: still the owner, handle them, then
    /// release those. `cancelled` says whether a cancel is among what arrived or came before.
    Again { refs: u32, cancelled: bool },
}

/// The state word of one request.
#[derive(Debug)]
pub(crate) struct Ownership {
    state: AtomicU32,
}

impl Ownership {
    /// A request nobody owns yet (a queued pool job).
    pub(crate) fn new() -> Ownership {
        Ownership {
            state: AtomicU32::new(0),
        }
    }

    /// A request its creator owns while arming it (the count starts at 1).
    #[allow(dead_code)] // used by the model checks (tests/loom_protocol.rs)
    pub(crate) fn owned() -> Ownership {
        Ownership {
            state: AtomicU32::new(1),
        }
    }

    /// Makes a finished request new again, for reuse. Only its sole holder may call this.
    pub(crate) fn reset(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// Adds a reference; `true` if that made the caller the owner.
    pub(crate) fn try_own(&self) -> bool {
        let prev = self.state.fetch_add(1, Ordering::AcqRel);
        prev & REFS == 0 && prev & DONE == 0
    }

    /// Requests cancellation, then tries for ownership: `true` if the canceller now owns the
    /// request (and must end it); `false` if an owner is at work or it is done.
    pub(crate) fn cancel(&self) -> bool {
        self.state.fetch_or(CANCEL, Ordering::AcqRel);
        self.try_own()
    }

    /// The owner releases the `refs` references it handled (1 for its own).
    pub(crate) fn release(&self, refs: u32) -> Release {
        let prev = self.state.fetch_sub(refs, Ordering::AcqRel);
        let left = (prev & REFS) - refs;
        if left == 0 {
            Release::Released
        } else {
            Release::Again {
                refs: left,
                cancelled: prev & CANCEL != 0,
            }
        }
    }

    /// References held now (the owner's and any left behind).
    pub(crate) fn refs(&self) -> u32 {
        self.state.load(Ordering::Acquire) & REFS
    }

    /// The owner ends the request: from now on nobody becomes its owner.
    pub(crate) fn finish(&self) {
        self.state.fetch_or(DONE, Ordering::AcqRel);
    }

    /// Whether a cancel was requested.
    #[allow(dead_code)] // used by the model checks (tests/loom_protocol.rs)
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) & CANCEL != 0
    }

    /// Whether the request has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }

    /// The deliberately broken variant the loom tests must catch: release everything
    /// without re-checking what arrived meanwhile.
    #[cfg(test)]
    #[allow(dead_code)] // used by the model checks (tests/loom_protocol.rs)
    pub(crate) fn release_without_recheck(&self) -> Release {
        self.state.fetch_and(!REFS, Ordering::AcqRel);
        Release::Released
    }
}
