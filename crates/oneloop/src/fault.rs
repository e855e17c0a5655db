//! Faults on purpose: a seeded injector that makes the backends' system calls fail, come up
//! short, or arrive late, so tests can prove the contract holds when the kernel misbehaves
//! the way it is allowed to.
//!
//! Compiled only with the `fault-injection` cargo feature; without it every injection point is
//! a constant `false` the compiler removes. With it, nothing happens until a thread installs a
//! [`Plan`]: injection is per thread (a ring belongs to one thread), and the blocking pool's
//! workers inherit the plan of the thread that spawned them, each with its own random stream.
//!
//! Each [`Fault`] has a rate (per million chances). The decisions come from a seeded
//! generator, one stream per thread, so the same seed and the same sequence of calls make the
//! same decisions: a failing test prints its seed, and the seed replays it. (Kernel timing is
//! not replayed: a race that depends on it may take a different turn.)
//!
//! ```
//! use oneloop::fault::{Fault, Plan};
//! use oneloop::{Nop, Ring};
//!
//! let installed = Plan::new(7).rate(Fault::WaitInterrupted, 500_000).install();
//! let mut ring = Ring::new()?;
//! ring.submit(Nop, 1)?;
//! ring.wait(1, None)?; // EINTR is injected, never seen
//! assert_eq!(ring.completions().count(), 1);
//! println!("{:?}", installed.hits());
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The faults that can be injected, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// A blocking wait returns `EINTR` at once: `io_uring_enter` waiting for completions,
    /// `epoll_pwait2`, `io_getevents`.
    WaitInterrupted,
    /// Submission finds the queue busy: `io_uring_enter` answers `EBUSY`, `io_submit` `EAGAIN`
    /// (nothing submitted; the backend must reap and retry).
    SubmitBusy,
    /// `io_submit` accepts only a prefix of the batch (aio).
    SubmitPartial,
    /// A read or write (single buffer, not `O_DIRECT`-aligned) asks for fewer bytes than the
    /// buffer holds, so it comes back short.
    ShortTransfer,
    /// The readiness loop reports a registered descriptor ready when it may not be (epoll and
    /// aio's internal set): the non-blocking attempt then finds `EAGAIN`.
    SpuriousReadiness,
    /// Reaping stops after one completion this turn, so completions pile up in the kernel
    /// (with a small CQ: io_uring CQ overflow).
    ReapOne,
    /// Setting a ring up fails: io_uring with `ENOMEM`, AIO's `io_setup` with `EAGAIN` (as
    /// when `aio-max-nr` is used up). The epoll backend's set-up is not injected.
    SetupFails,
    /// The blocking pool cannot spawn a worker thread (`EAGAIN`).
    PoolSpawnFails,
    /// A pool worker sleeps up to 2 ms before running its job.
    PoolDelay,
}

impl Fault {
    /// Every fault, in declaration order.
    pub const ALL: [Fault; 9] = [
        Fault::WaitInterrupted,
        Fault::SubmitBusy,
        Fault::SubmitPartial,
        Fault::ShortTransfer,
        Fault::SpuriousReadiness,
        Fault::ReapOne,
        Fault::SetupFails,
        Fault::PoolSpawnFails,
        Fault::PoolDelay,
    ];

    fn index(self) -> usize {
        Fault::ALL
            .iter()
            .position(|&f| f == self)
            .expect("every fault is in ALL")
    }
}

/// Which faults to inject, how often, from which seed.
#[derive(Clone, Debug)]
pub struct Plan {
    seed: u64,
    rates_ppm: [u32; Fault::ALL.len()],
}

impl Plan {
    /// A plan that injects nothing yet, drawing from `seed`.
    pub fn new(seed: u64) -> Plan {
        Plan {
            seed,
            rates_ppm: [0; Fault::ALL.len()],
        }
    }

    /// Injects `fault` at `per_million` of its chances (1,000,000: every time).
    pub fn rate(mut self, fault: Fault, per_million: u32) -> Plan {
        self.rates_ppm[fault.index()] = per_million.min(1_000_000);
        self
    }

    /// How often `fault` is injected, per million chances.
    pub fn rate_of(&self, fault: Fault) -> u32 {
        self.rates_ppm[fault.index()]
    }

    /// The seed this plan draws from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Installs the plan for the calling thread (and the pool workers it spawns from now on)
    /// until the returned guard drops. A plan installed earlier on this thread is replaced
    /// and comes back when the guard drops.
    pub fn install(self) -> Installed {
        let state = Arc::new(State {
            plan: self,
            hits: Default::default(),
            chances: Default::default(),
            streams: AtomicU64::new(1),
        });
        let previous = CURRENT.with(|c| c.replace(Some(Stream::new(Arc::clone(&state), 0))));
        Installed { state, previous }
    }
}

/// An installed plan; dropping it uninstalls it. Counts what was injected.
pub struct Installed {
    state: Arc<State>,
    previous: Option<Stream>,
}

impl Installed {
    /// How many times each fault has been injected so far (on every thread of this plan).
    pub fn hits(&self) -> Vec<(Fault, u64)> {
        Fault::ALL.iter().map(|&f| (f, self.hits_of(f))).collect()
    }

    /// How many chances `fault` has had so far (times its injection point was reached while
    /// its rate was not zero), injected or not.
    pub fn chances_of(&self, fault: Fault) -> u64 {
        self.state.chances[fault.index()].load(Ordering::Relaxed)
    }

    /// How many times `fault` has been injected so far.
    pub fn hits_of(&self, fault: Fault) -> u64 {
        self.state.hits[fault.index()].load(Ordering::Relaxed)
    }

    /// The plan's seed.
    pub fn seed(&self) -> u64 {
        self.state.plan.seed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed")
            .field("seed", &self.seed())
            .field("hits", &self.hits())
            .finish()
    }
}

struct State {
    plan: Plan,
    hits: [AtomicU64; Fault::ALL.len()],
    chances: [AtomicU64; Fault::ALL.len()],
    /// The next stream number for a thread that inherits the plan.
    streams: AtomicU64,
}

/// One thread's view of a plan: the shared state and its own random stream.
struct Stream {
    state: Arc<State>,
    rng: u64,
}

impl Stream {
    fn new(state: Arc<State>, stream: u64) -> Stream {
        let rng = splitmix(state.plan.seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Stream { state, rng }
    }

    fn next(&mut self) -> u64 {
        self.rng = splitmix(self.rng);
        self.rng
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

thread_local! {
    static CURRENT: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// Whether to inject `fault` now (counted when it is). Without the feature: never, at no cost.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn hit(_fault: Fault) -> bool {
    false
}

/// Whether to inject `fault` now (counted when it is).
#[cfg(feature = "fault-injection")]
pub(crate) fn hit(fault: Fault) -> bool {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(stream) = c.as_mut() else {
            return false;
        };
        let rate = stream.state.plan.rates_ppm[fault.index()];
        if rate == 0 {
            return false;
        }
        stream.state.chances[fault.index()].fetch_add(1, Ordering::Relaxed);
        if stream.next() % 1_000_000 >= u64::from(rate) {
            return false;
        }
        stream.state.hits[fault.index()].fetch_add(1, Ordering::Relaxed);
        true
    })
}

/// A number in `0..n` from the thread's stream (0 without a plan).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn below(_n: u64) -> u64 {
    0
}

/// A number in `0..n` from the thread's stream (0 without a plan).
#[cfg(feature = "fault-injection")]
pub(crate) fn below(n: u64) -> u64 {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(stream) if n > 0 => stream.next() % n,
        _ => 0,
    })
}

/// The calling thread's plan, for a thread it is about to spawn.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn inherit() -> Option<Inherited> {
    None
}

/// The calling thread's plan, for a thread it is about to spawn.
#[cfg(feature = "fault-injection")]
pub(crate) fn inherit() -> Option<Inherited> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|s| {
            let stream = s.state.streams.fetch_add(1, Ordering::Relaxed);
            Inherited(Stream::new(Arc::clone(&s.state), stream))
        })
    })
}

/// A plan handed to a new thread; [`adopt`](Inherited::adopt) it there.
pub(crate) struct Inherited(Stream);

impl Inherited {
    /// Installs the plan on the calling thread for the rest of its life.
    pub(crate) fn adopt(self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.0));
    }
}
