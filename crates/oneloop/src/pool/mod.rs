//! The blocking pool: a few threads that run the system calls a readiness loop cannot wait
//! for (buffered file I/O that misses the page cache, `fsync`, `openat2`), handing results back
//! to the ring in batches.
//!
//! Where it sits: the epoll backend (and later the aio backend) hands a job here when an op
//! cannot complete inline; the worker's result comes back through a queue plus one eventfd
//! write per batch (waking a thread on the other core costs ~60 µs here, so hand-offs batch).
//!
//! Races between the ring thread (cancel, shutdown) and workers (start, finish) are settled
//! by the [ownership protocol](protocol): exactly one party acts on each job.
#![forbid(unsafe_code)]

mod jobs;
pub(crate) mod protocol;
mod sync;

pub(crate) use protocol::{Ownership, Release};

pub(crate) use jobs::{Job, Pool, Work};
