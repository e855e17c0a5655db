//! Small socket and thread helpers for code built on the ring (the runtime, say): the ring's
//! `Connect` op needs a socket that is not yet connected, which `std` cannot make; a
//! thread-per-core server wants `SO_REUSEPORT` listeners and pinned threads.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// A new close-on-exec TCP socket of `addr`'s family, not yet connected.
///
/// # Examples
/// ```
/// let sock = oneloop::sockets::tcp_socket(&"127.0.0.1:80".parse().unwrap()).unwrap();
/// # drop(sock);
/// ```
pub fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    crate::sys::posix::socket(addr, libc::SOCK_STREAM)
}

/// Sets `SO_REUSEPORT` (and `SO_REUSEADDR`) on a socket, so several listeners (one per thread)
/// can bind the same port and the kernel spreads connections over them.
pub fn set_reuse_port(fd: &OwnedFd) -> io::Result<()> {
    crate::sys::posix::set_reuse_port(fd)
}

/// A TCP listener on `addr` with `SO_REUSEPORT` set before binding, so each thread of a
/// thread-per-core server can listen on the same port and the kernel spreads connections.
pub fn tcp_listener_reuse_port(
    addr: &SocketAddr,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    let fd = tcp_socket(addr)?;
    set_reuse_port(&fd)?;
    crate::sys::posix::bind_listen(&fd, addr, backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Pins the calling thread to CPU `core` (`sched_setaffinity`).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    crate::sys::posix::pin_current_thread(core)
}

/// `shutdown(fd, SHUT_WR)`: the peer reads end of stream.
pub fn shutdown_write(fd: std::os::fd::RawFd) -> io::Result<()> {
    crate::sys::posix::shutdown_write(fd)
}

/// Sets `O_NONBLOCK` on a descriptor (a pipe end, say).
pub fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    crate::sys::posix::set_nonblocking(fd)
}

/// Blocks `signals` in the calling thread (and in threads it starts afterwards) and returns
/// a non-blocking, close-on-exec `signalfd` that is readable while one of them is pending:
/// signals as a descriptor any ring can poll. Call it before starting other threads, or they
/// may take the signals first.
///
/// # Errors
/// `EINVAL` for a number that is not a signal (or SIGKILL/SIGSTOP, which cannot be blocked).
///
/// # Examples
/// ```
/// let fd = oneloop::sockets::signal_fd(&[libc::SIGUSR2]).unwrap();
/// # drop(fd);
/// ```
pub fn signal_fd(signals: &[i32]) -> io::Result<OwnedFd> {
    crate::sys::posix::signal_fd(signals)
}

/// `posix_fadvise(fd, 0, 0, DONTNEED)` then `RANDOM`: drops a file's clean pages from the page
/// cache and turns off readahead (for cold-cache measurements).
pub fn advise_dontneed(fd: std::os::fd::RawFd) -> io::Result<()> {
    crate::sys::posix::fadvise(fd, libc::POSIX_FADV_DONTNEED)?;
    crate::sys::posix::fadvise(fd, libc::POSIX_FADV_RANDOM)
}

/// One non-blocking `send` of `bytes` on a connected socket, outside any ring (with
/// `MSG_DONTWAIT | MSG_NOSIGNAL`, retried on `EINTR`): the bytes sent, or `None` when the send
/// buffer is full (`EAGAIN`) — then submit a [`Send`](crate::Send) of them, which waits for
/// room. For a caller that keeps its own readiness hint, as
/// [`Send::try_now`](crate::Send::try_now) but on bytes it keeps.
///
/// # Examples
/// ```
/// use std::io::Read;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// let (a, mut b) = UnixStream::pair()?;
/// assert_eq!(oneloop::sockets::send_now(a.as_raw_fd(), b"hi")?, Some(2));
/// let mut got = [0; 2];
/// b.read_exact(&mut got)?;
/// assert_eq!(&got, b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
#[inline]
pub fn send_now(fd: std::os::fd::RawFd, bytes: &[u8]) -> io::Result<Option<usize>> {
    crate::sys::posix::send_bytes_now(fd, bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}
