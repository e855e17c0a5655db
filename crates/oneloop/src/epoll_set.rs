//! Safe `epoll_create1`/`epoll_ctl`, for code that keeps an epoll set and waits on it with
//! [`EpollWait`](crate::EpollWait) (the runtime's `EpollSet`, say).
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A new epoll instance (close-on-exec).
pub fn create() -> io::Result<OwnedFd> {
    crate::sys::epoll_create()
}

/// Adds `fd` to `epfd` for `events` (`EPOLLIN`, ...), reported with `data`.
pub fn add(epfd: &impl AsRawFd, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    crate::sys::posix::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, events, data)
}

/// Changes what `fd` is watched for in `epfd`.
pub fn modify(epfd: &impl AsRawFd, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    crate::sys::posix::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, events, data)
}

/// Removes `fd` from `epfd`.
pub fn delete(epfd: &impl AsRawFd, fd: RawFd) -> io::Result<()> {
    crate::sys::posix::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0)
}

/// `epoll_wait(epfd, events, timeout)`: blocks up to `timeout` (`None`: no limit) and returns
/// the events written into `events` (for plain epoll loops, e.g. benchmark baselines).
/// An interrupted wait returns 0 events.
pub fn wait(
    epfd: &OwnedFd,
    events: &mut crate::EpollEvents,
    timeout: Option<std::time::Duration>,
) -> io::Result<usize> {
    match crate::sys::posix::epoll_wait(epfd, &mut events.raw, timeout) {
        Ok(n) => {
            events.len = n;
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.len = 0;
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
