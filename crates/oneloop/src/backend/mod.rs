//! The backends, behind one closed `Driver` enum the [`Ring`](crate::Ring) dispatches to.
//!
//! Every backend keeps the same contract (see `ring.rs`): one final completion per accepted
//! op, buffers owned until then, generation-checked ids, synchronous cancel outcomes, no lost
//! completions, `EINTR` handled inside, and a draining drop.
#![deny(unsafe_code)]

pub(crate) mod aio;
mod by_fd;
pub(crate) mod epoll;
mod timers;
pub(crate) mod uring;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{BackendKind, Settings, Stats, SubmitError, WakeFd};
use crate::completion::{CancelCount, CancelOutcome, Completion, OpId};
use crate::op::Submission;

/// Hashes a descriptor number cheaply (descriptors are small, dense integers; SipHash's
/// protection against chosen keys buys nothing here and cost ~5% of an echo round trip).
#[derive(Default)]
pub(crate) struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i32(&mut self, fd: i32) {
        self.0 = (fd as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One backend's driver.
pub(crate) enum Driver {
    Uring(Box<uring::Uring>),
    /// The epoll backend, or the aio backend (the same core with an AIO engine beneath).
    Epoll(Box<epoll::Epoll>),
}

/// Opens `kind` (not `Auto`) per `config`.
pub(crate) fn open(kind: BackendKind, config: &Settings, wake: &Arc<WakeFd>) -> io::Result<Driver> {
    match kind {
        BackendKind::Uring => Ok(Driver::Uring(Box::new(uring::Uring::open(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Epoll => Ok(Driver::Epoll(Box::new(epoll::Epoll::open(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Aio => Ok(Driver::Epoll(Box::new(epoll::Epoll::open_aio(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Auto => unreachable!("Auto is resolved by the builder"),
    }
}

impl Driver {
    pub fn submit(
        &mut self,
        sub: Submission,
        user_data: u64,
        out: &mut VecDeque<Completion>,
    ) -> Result<OpId, SubmitError> {
        match self {
            Driver::Uring(d) => d.submit(sub, user_data, out),
            Driver::Epoll(d) => d.submit(sub, user_data, out),
        }
    }

    pub fn cancel(
        &mut self,
        id: OpId,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelOutcome> {
        match self {
            Driver::Uring(d) => d.cancel(id, out),
            Driver::Epoll(d) => d.cancel(id, out),
        }
    }

    pub fn cancel_nowait(&mut self, id: OpId, out: &mut VecDeque<Completion>) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.cancel_nowait(id, out),
            // Cancels here never wait for the kernel: the answer is simply not needed.
            Driver::Epoll(d) => d.cancel(id, out).map(drop),
        }
    }

    pub fn register_fd(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.register_fd(fd),
            Driver::Epoll(d) => d.pin(fd),
        }
    }

    pub fn unregister_fd(&mut self, fd: RawFd) {
        match self {
            Driver::Uring(d) => d.unregister_fd(fd),
            Driver::Epoll(d) => d.unpin(fd),
        }
    }

    pub fn cancel_where(
        &mut self,
        fd: Option<RawFd>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelCount> {
        match self {
            Driver::Uring(d) => d.cancel_where(fd, out),
            Driver::Epoll(d) => d.cancel_where(fd, out),
        }
    }

    pub fn wait(
        &mut self,
        min_complete: usize,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.wait(min_complete, timeout, out),
            Driver::Epoll(d) => d.wait(min_complete, timeout, out),
        }
    }

    pub fn in_flight(&self) -> usize {
        match self {
            Driver::Uring(d) => d.in_flight(),
            Driver::Epoll(d) => d.in_flight(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Driver::Uring(d) => d.describe(),
            Driver::Epoll(d) => d.describe(),
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Driver::Uring(_) => Stats::default(),
            Driver::Epoll(d) => d.stats(),
        }
    }

    pub fn shutdown(&mut self, out: &mut VecDeque<Completion>) {
        match self {
            Driver::Uring(d) => d.shutdown(out),
            Driver::Epoll(d) => d.shutdown(out),
        }
    }
}
