//! `EpollSet`: an epoll instance — new, or one existing code already has — whose events are
//! awaited through the ring, so epoll-based code joins the same loop as files and timers.
//!
//! # Cancellation
//! Dropping a `wait` future cancels its `EpollWait` op; its event buffer stays with the ring
//! until the op's final completion.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use oneloop::{EpollEvents, EpollWait, Output};

use crate::fs::cancel_ops_on;
use crate::op::{run, split};

/// An epoll instance awaited on the ring.
///
/// # Examples
/// ```
/// oneloop_rt::block_on(async {
///     let set = oneloop_rt::epoll::EpollSet::new().unwrap();
///     let (rd, wr) = std::io::pipe().unwrap();
///     use std::os::fd::AsRawFd;
///     set.add(rd.as_raw_fd(), libc::EPOLLIN as u32, 7).unwrap();
///     std::io::Write::write_all(&mut &wr, b"x").unwrap();
///     let (n, events) = set.wait(oneloop::EpollEvents::with_capacity(4)).await;
///     assert_eq!(n.unwrap(), 1);
///     assert_eq!(events.iter().next().unwrap().1, 7);
/// });
/// ```
#[derive(Debug)]
pub struct EpollSet {
    epfd: OwnedFd,
}

impl EpollSet {
    /// A new, empty epoll instance.
    pub fn new() -> io::Result<EpollSet> {
        Ok(EpollSet {
            epfd: oneloop::epoll_set::create()?,
        })
    }

    /// Takes over an epoll instance existing code created.
    pub fn from_fd(epfd: OwnedFd) -> EpollSet {
        EpollSet { epfd }
    }

    /// Watches `fd` for `events`, reported with `data`.
    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        oneloop::epoll_set::add(&self.epfd, fd, events, data)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        oneloop::epoll_set::modify(&self.epfd, fd, events, data)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        oneloop::epoll_set::delete(&self.epfd, fd)
    }

    /// Waits until at least one watched fd is ready; returns how many events were written into
    /// `events` (which comes back either way).
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn wait(&self, events: EpollEvents) -> (io::Result<usize>, EpollEvents) {
        let capacity = events.capacity();
        match split(run(EpollWait::new(self.epfd.as_raw_fd(), events)).await) {
            (result, Output::Events(events)) => (result, events),
            // Only a refused op without its event array could get here; give fresh room back.
            (result, _) => (
                result.and(Err(io::Error::other("EpollWait lost its events"))),
                EpollEvents::with_capacity(capacity),
            ),
        }
    }
}

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }
}

impl Drop for EpollSet {
    fn drop(&mut self) {
        cancel_ops_on(self.epfd.as_raw_fd());
    }
}
