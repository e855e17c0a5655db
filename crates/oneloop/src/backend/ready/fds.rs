//! Which slots wait on which descriptor, and the one epoll registration per descriptor that
//! serves them all.
//!
//! Registrations are **edge-triggered** with the union of the waiters' interests. Arming a
//! waiter always issues `EPOLL_CTL_ADD` or `EPOLL_CTL_MOD`, and `MOD` re-reports current
//! readiness, so a waiter armed on an fd that is already ready hears about it at once. Edges
//! mean a multishot poll on data nobody consumes is not reported again (no busy-spin).
//! A registration is kept when its last waiter leaves (re-arming the same fd costs one `MOD`,
//! not `DEL` + `ADD`); events that find no waiter are ignored.
//!
//! **Pinned descriptors** (`Ring::register_fd`) skip the `MOD` per wait. The caller promises
//! the fd stays open until it unregisters it, so the registration is known to be live (a
//! closed fd's registration vanishes, and its number may come back as another file: the
//! `MOD` is what detects that for unpinned fds). A pinned fd is registered once for
//! `IN | OUT | RDHUP`, and keeps a readiness cache: bits are set by every event and cleared
//! only by an attempt of that direction that saw `EAGAIN`. A waiter whose own attempt just saw
//! `EAGAIN` needs no re-report (the next arrival is a new edge), and an op on a direction the
//! cache knows is not ready waits without trying. On a TCP socket a short receive (fewer
//! bytes than asked, without `MSG_PEEK`) or a short send clears its bit too: the receive
//! queue was empty, or the send buffer full, at that instant (as tokio does; the exception is
//! a receive that stops at TCP's urgent mark, see the README's limits) — until the peer
//! closes its side: data and FIN may arrive before one event, and after it no edge comes, so
//! from the first RDHUP/HUP/ERR a short receive leaves the bit set. Unix stream sockets
//! are left out: their receives also stop where passed descriptors or credentials change. A
//! stale "ready" bit costs one attempt; a bit is cleared only on such evidence.
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
struct Registration {
    /// The interest registered with epoll (without `EPOLLET`); `None` when not registered.
    /// (An empty interest is a real registration: a poll with an empty mask still hears
    /// ERR and HUP.)
    registered: Option<u32>,
    waiters: Vec<Waiter>,
    /// Registered through `Ring::register_fd` (see the module doc).
    pinned: bool,
    /// A pinned fd's readiness cache: `IN`/`OUT` seen since the last `EAGAIN` of each.
    ready: u32,
    /// A pinned fd that is a TCP socket (short transfers clear the cache).
    tcp: bool,
    /// The peer closed its side, or the socket failed (an RDHUP, HUP or ERR was seen): from
    /// then on a receive never waits (it returns what is left, then 0), so a short one says
    /// nothing — and no edge would come to end a wait.
    closed: bool,
}

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
/// What a pinned fd is registered for.
const PINNED: u32 = IN | OUT | libc::EPOLLRDHUP as u32;

/// Descriptors below this are looked up by direct index; the rare ones above, by hash.
const DENSE: usize = 1 << 16;

/// The registration table. Descriptors are small, dense integers, so most are a direct index
/// into `dense` (hashing ran several times per op); any number above [`DENSE`] goes to
/// `sparse`, so a huge descriptor number never sizes the table.
#[derive(Default)]
pub(super) struct Fds {
    dense: Vec<Registration>,
    sparse: HashMap<RawFd, Registration>,
}

impl Fds {
    fn get(&self, fd: RawFd) -> Option<&Registration> {
        match usize::try_from(fd) {
            Ok(i) if i < DENSE => self.dense.get(i),
            Ok(_) => self.sparse.get(&fd),
            Err(_) => None,
        }
    }

    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Registration> {
        match usize::try_from(fd) {
            Ok(i) if i < DENSE => self.dense.get_mut(i),
            Ok(_) => self.sparse.get_mut(&fd),
            Err(_) => None,
        }
    }

    /// `fd`'s entry, made (empty) if need be; `EBADF` for a negative fd.
    fn entry(&mut self, fd: RawFd) -> io::Result<&mut Registration> {
        match usize::try_from(fd) {
            Ok(i) if i < DENSE => {
                if i >= self.dense.len() {
                    self.dense.resize_with(i + 1, Registration::default);
                }
                Ok(&mut self.dense[i])
            }
            Ok(_) => Ok(self.sparse.entry(fd).or_default()),
            Err(_) => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Forgets `fd`'s entry (nothing registered, no waiters).
    fn clear(&mut self, fd: RawFd) {
        match usize::try_from(fd) {
            Ok(i) if i < DENSE => {
                if let Some(entry) = self.dense.get_mut(i) {
                    *entry = Registration::default();
                }
            }
            Ok(_) => {
                self.sparse.remove(&fd);
            }
            Err(_) => {}
        }
    }

    /// Adds a waiter and (re)registers `fd` so that its current readiness is reported.
    ///
    /// # Errors
    /// `epoll_ctl`'s: `EPERM` for a regular file or directory, `EBADF`, ... (the waiter is not
    /// added then).
    pub fn add(&mut self, epfd: &OwnedFd, fd: RawFd, waiter: Waiter) -> io::Result<()> {
        let entry = self.entry(fd)?;
        let interest = entry
            .waiters
            .iter()
            .fold(waiter.interest, |acc, w| acc | w.interest);
        let interest = if entry.pinned {
            interest | PINNED
        } else {
            interest
        };
        match register(epfd, fd, entry.registered.is_some(), interest) {
            Ok(()) => {
                entry.registered = Some(interest);
                entry.waiters.push(waiter);
                Ok(())
            }
            Err(e) => {
                if entry.waiters.is_empty() && !entry.pinned {
                    self.clear(fd);
                }
                Err(e)
            }
        }
    }

    /// Adds a waiter whose own attempt just saw `EAGAIN` for `waiter.interest`: on a pinned fd
    /// registered for it, without a system call (the next arrival is a new edge); otherwise
    /// as [`add`](Self::add).
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_blocked(&mut self, epfd: &OwnedFd, fd: RawFd, waiter: Waiter) -> io::Result<()> {
        if let Some(entry) = self.get_mut(fd) {
            let covered = entry
                .registered
                .is_some_and(|r| r & waiter.interest == waiter.interest);
            if entry.pinned && covered {
                entry.ready &= !waiter.interest;
                entry.waiters.push(waiter);
                return Ok(());
            }
        }
        self.add(epfd, fd, waiter)
    }

    /// Whether `fd` is pinned and its cache says `interest` is not ready: an op may then wait
    /// without trying first.
    pub fn known_blocked(&self, fd: RawFd, interest: u32) -> bool {
        self.get(fd)
            .is_some_and(|e| e.pinned && e.ready & interest == 0)
    }

    /// Pins `fd` (see the module doc): one registration for `IN | OUT | RDHUP`, kept until
    /// [`unpin`](Self::unpin). A descriptor epoll refuses (a regular file, a directory:
    /// always ready) is left unpinned without an error.
    ///
    /// # Errors
    /// `epoll_ctl`'s, e.g. `EBADF`.
    pub fn pin(&mut self, epfd: &OwnedFd, fd: RawFd) -> io::Result<()> {
        let entry = self.entry(fd)?;
        let interest = entry.waiters.iter().fold(PINNED, |acc, w| acc | w.interest);
        match register(epfd, fd, entry.registered.is_some(), interest) {
            Ok(()) => {
                entry.registered = Some(interest);
                entry.pinned = true;
                entry.ready = IN | OUT;
                entry.tcp = sio::is_tcp_socket(fd);
                entry.closed = false;
                Ok(())
            }
            Err(e) => {
                if entry.waiters.is_empty() {
                    self.clear(fd);
                }
                match e.raw_os_error() {
                    Some(libc::EPERM) => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    /// A receive (`IN`) or send (`OUT`) on `fd` moved fewer bytes than asked: on a pinned
    /// TCP socket that direction is not ready now.
    pub fn short_transfer(&mut self, fd: RawFd, direction: u32) {
        if let Some(entry) = self.get_mut(fd) {
            if entry.pinned && entry.tcp && !(direction == IN && entry.closed) {
                entry.ready &= !direction;
            }
        }
    }

    /// Ends `fd`'s pinning (it is about to be closed): from now on each wait re-registers it.
    pub fn unpin(&mut self, fd: RawFd) {
        if let Some(entry) = self.get_mut(fd) {
            entry.pinned = false;
        }
    }

    /// Removes `key`'s waiter from `fd` (a cancel or a deadline).
    pub fn remove(&mut self, fd: RawFd, key: Key) {
        if let Some(entry) = self.get_mut(fd) {
            entry.waiters.retain(|w| w.key != key);
        }
    }

    /// The `n`-th registered descriptor that has waiters (modulo their number), if any: where
    /// injected spurious readiness lands.
    pub fn pick(&self, n: u64) -> Option<RawFd> {
        let waiting = self
            .dense
            .iter()
            .enumerate()
            .map(|(fd, e)| (fd as RawFd, e))
            .chain(self.sparse.iter().map(|(&fd, e)| (fd, e)))
            .filter(|(_, e)| !e.waiters.is_empty());
        let count = waiting.clone().count() as u64;
        if count == 0 {
            return None;
        }
        waiting.map(|(fd, _)| fd).nth((n % count) as usize)
    }

    /// `events` arrived for `fd`: records them in its cache and, if it has exactly one
    /// waiter, returns it (left in place: a dispatch that ends it removes it as any other
    /// end does). `None`: no waiter, or several — then [`take`](Self::take) them.
    #[inline]
    pub fn note(&mut self, fd: RawFd, events: u32) -> Option<Waiter> {
        let e = self.get_mut(fd)?;
        // An error or hang-up is news for both directions: the next attempt returns it.
        e.ready |= if events & UNMASKED != 0 {
            e.closed = true;
            events | IN | OUT
        } else {
            events
        };
        match e.waiters.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Takes `fd`'s waiters out for dispatch (after [`note`](Self::note)); give them back with
    /// [`put_back`](Self::put_back).
    pub fn take(&mut self, fd: RawFd) -> Vec<Waiter> {
        self.get_mut(fd)
            .map(|e| std::mem::take(&mut e.waiters))
            .unwrap_or_default()
    }

    /// The directions whose attempts saw `EAGAIN` during a dispatch on `fd`.
    #[inline]
    pub fn blocked(&mut self, fd: RawFd, blocked: u32) {
        if let Some(entry) = self.get_mut(fd) {
            entry.ready &= !blocked;
        }
    }

    /// Returns the waiters still waiting after a dispatch; `blocked`: the directions whose
    /// attempts saw `EAGAIN` during it.
    pub fn put_back(&mut self, fd: RawFd, mut waiters: Vec<Waiter>, blocked: u32) {
        if let Some(entry) = self.get_mut(fd) {
            entry.ready &= !blocked;
            waiters.append(&mut entry.waiters);
            entry.waiters = waiters;
        }
    }
}

/// Registers `fd` for `interest`, edge-triggered: `ADD`, or `MOD` if it `was_registered`
/// (which also re-reports its current readiness).
fn register(epfd: &OwnedFd, fd: RawFd, was_registered: bool, interest: u32) -> io::Result<()> {
    let events = interest | libc::EPOLLET as u32;
    let data = fd_data(fd);
    if !was_registered {
        return match sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, events, data) {
            // Registered by an earlier entry that was dropped after an error: update it.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, events, data)
            }
            other => other,
        };
    }
    match sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, events, data) {
        // The fd was closed (and maybe reused) since: register it afresh.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            sio::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, events, data)
        }
        other => other,
    }
}
