//! The synchronisation types the pool is written against: `std`'s here; loom's in
//! `tests/loom_protocol.rs`, which compiles the same `protocol.rs` and `jobs.rs` over loom.

pub(crate) use std::sync::atomic::{AtomicU32, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
pub(crate) use std::thread;

/// Where the pool meets fault injection (the loom build supplies no-ops).
pub(crate) mod faults {
    use crate::fault::{self, Fault};

    pub(crate) use crate::fault::inherit;

    /// Whether spawning a worker fails now (injected `EAGAIN`).
    pub(crate) fn spawn_fails() -> bool {
        fault::hit(Fault::PoolSpawnFails)
    }

    /// Sleeps a worker for up to 2 ms before its job runs (injected).
    pub(crate) fn delay() {
        if fault::hit(Fault::PoolDelay) {
            std::thread::sleep(std::time::Duration::from_micros(fault::below(2_000)));
        }
    }
}
