//! The synchronisation types the pool is written against: `std`'s here; loom's in
//! `tests/loom_protocol.rs`, which compiles the same `protocol.rs` and `jobs.rs` over loom.

pub(crate) use std::sync::atomic::{AtomicU32, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
pub(crate) use std::thread;
