//! Small socket helpers for code built on the ring (the runtime's `TcpStream::connect`, say):
//! the ring's `Connect` op needs a socket that is not yet connected, which `std` cannot make.
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
