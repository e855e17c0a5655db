//! Which slots wait on which descriptor, and the one epoll registration per descriptor that
//! serves them all.
//!
//! Registrations are **edge-triggered** with the union of the waiters' interests. Arming a
//! waiter always issues `EPOLL_CTL_ADD` or `EPOLL_CTL_MOD`, and `MOD` re-reports current
//! readiness, so a waiter armed on an fd that is already ready hears about it at once. Edges
//! mean a multishot poll on data nobody consumes is not reported again (no busy-spin).
//! A registration is kept when its last waiter leaves (re-arming the same fd costs one `MOD`,
//! not `DEL` + `ADD`); events that find no waiter are ignored.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::slab::Key;
use crate::sys::posix as sio;

/// Bits reported whether asked or not (as io_uring's poll does).
pub(super) const UNMASKED: u32 =
    (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 | libc::POLLNVAL as u32;

/// The `epoll_event.data` of a descriptor's registration.
pub(super) fn fd_data(fd: RawFd) -> u64 {
    (1 << 32) | fd as u32 as u64
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Waiter {
    pub key: Key,
    pub interest: u32,
}

#[derive(Default)]
struct Entry {
    /// The interest registered with epoll (without `EPOLLET`); `None` when not registered.
    /// (An empty interest is a real registration: a poll with an empty mask still hears
    /// ERR and HUP.)
    registered: Option<u32>,
    waiters: Vec<Waiter>,
}

/// Hashes a descriptor number cheaply (descriptors are small, dense integers; SipHash's
/// protection against chosen keys buys nothing here and cost ~5% of an echo round trip).
#[derive(Default)]
pub(super) struct FdHasher(u64);

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

/// The registration table.
#[derive(Default)]
pub(super) struct Fds {
    map: HashMap<RawFd, Entry, std::hash::BuildHasherDefault<FdHasher>>,
}

impl Fds {
    /// Adds a waiter and (re)registers `fd` so that its current readiness is reported.
    ///
    /// # Errors
    /// `epoll_ctl`'s: `EPERM` for a regular file or directory, `EBADF`, ... (the waiter is not
    /// added then).
    pub fn add(&mut self, epfd: &OwnedFd, fd: RawFd, waiter: Waiter) -> io::Result<()> {
        let entry = self.map.entry(fd).or_default();
        let interest = entry
            .waiters
            .iter()
            .fold(waiter.interest, |acc, w| acc | w.interest);
        let events = interest | libc::EPOLLET as u32;
        let data = fd_data(fd);
        let result = if entry.registered.is_none() {
            sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, events, data)
        } else {
            match sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, events, data) {
                // The fd was closed (and maybe reused) since: register it afresh.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, events, data)
                }
                other => other,
            }
        };
        match result {
            Ok(()) => {
                entry.registered = Some(interest);
                entry.waiters.push(waiter);
                Ok(())
            }
            Err(e) => {
                if entry.waiters.is_empty() {
                    self.map.remove(&fd);
                }
                Err(e)
            }
        }
    }

    /// Removes `key`'s waiter from `fd` (a cancel or a deadline).
    pub fn remove(&mut self, fd: RawFd, key: Key) {
        if let Some(entry) = self.map.get_mut(&fd) {
            entry.waiters.retain(|w| w.key != key);
        }
    }

    /// The `n`-th registered descriptor that has waiters (modulo their number), if any: where
    /// injected spurious readiness lands.
    pub fn pick(&self, n: u64) -> Option<RawFd> {
        let waiting = self.map.iter().filter(|(_, e)| !e.waiters.is_empty());
        let count = waiting.clone().count() as u64;
        if count == 0 {
            return None;
        }
        waiting.map(|(&fd, _)| fd).nth((n % count) as usize)
    }

    /// Takes `fd`'s waiters out for dispatch; give them back with [`put_back`](Self::put_back).
    pub fn take(&mut self, fd: RawFd) -> Vec<Waiter> {
        self.map
            .get_mut(&fd)
            .map(|e| std::mem::take(&mut e.waiters))
            .unwrap_or_default()
    }

    /// Returns the waiters still waiting after a dispatch.
    pub fn put_back(&mut self, fd: RawFd, mut waiters: Vec<Waiter>) {
        if let Some(entry) = self.map.get_mut(&fd) {
            waiters.append(&mut entry.waiters);
            entry.waiters = waiters;
        }
    }
}
