//! The `epoll` backend: the readiness core (`backend/ready`) with nothing beneath it —
//! readiness from an epoll set, time from the timer heap, the disk from the blocking pool.
//! The backend that works wherever io_uring is disabled.
//!
//! Where it sits: [`Ring`](crate::Ring) → `backend::Driver::Epoll` → `Ready<Epoll>` →
//! `epoll_pwait2`, non-blocking syscalls and the [pool](crate::pool). The wake eventfd and
//! the pool's eventfd sit in the core's epoll set, edge-triggered.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use super::ready::{Beneath, Ready, State, DATA_POOL, DATA_WAKE};
use crate::common::{Settings, WakeFd};
use crate::completion::CancelOutcome;
use crate::op::Op;
use crate::sink::Sink;
use crate::slab::Key;
use crate::sys::posix as sio;

/// What the epoll backend has beneath the readiness core: nothing.
pub(crate) struct Epoll;

impl Epoll {
    /// Opens the epoll backend: the core's epoll set with the wake and pool eventfds in it.
    pub fn open(config: &Settings, wake: Arc<WakeFd>) -> io::Result<Ready<Epoll>> {
        let ready = Ready::open(config, wake, Epoll)?;
        let et_in = (libc::EPOLLIN | libc::EPOLLET) as u32;
        let epfd = ready.epfd.as_raw_fd();
        sio::epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            ready.wake.raw(),
            et_in,
            DATA_WAKE,
        )?;
        let pool_fd = ready.pool_fd.as_raw_fd();
        sio::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, pool_fd, et_in, DATA_POOL)?;
        Ok(ready)
    }
}

impl Beneath for Epoll {
    type Request = Infallible;
    const REQUESTS: bool = false;

    fn describe(ready: &Ready<Epoll>) -> String {
        let (max, running) = ready.pool_threads();
        format!(
            "epoll (edge-triggered, timer heap, blocking pool of up to {max} threads, {running} running)"
        )
    }

    fn requests(&self) -> u64 {
        0
    }

    fn start(_: &mut Ready<Epoll>, _: Key, _: &mut Sink) -> bool {
        false
    }

    fn end_early(ready: &mut Ready<Epoll>, key: Key, _: i32, _: &mut Sink) -> CancelOutcome {
        match ready.slot(key).state {
            State::Request(never) => match never {},
            _ => unreachable!("only requests beneath are ended here"),
        }
    }

    fn restart(
        ready: &mut Ready<Epoll>,
        key: Key,
        _: &mut dyn FnMut(&mut Op) -> i32,
        _: &mut Sink,
    ) -> i32 {
        match ready.slot(key).state {
            State::Request(never) => match never {},
            _ => unreachable!("only requests beneath are restarted"),
        }
    }

    fn wait_once(
        ready: &mut Ready<Epoll>,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()> {
        ready.epoll_once(timeout, out)
    }

    fn close(&mut self) {}
}
