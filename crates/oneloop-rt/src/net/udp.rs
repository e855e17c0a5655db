//! UDP: `UdpSocket` (bind, send_to, recv_from), by readiness through the ring plus
//! non-blocking datagram calls (the ring has no datagram ops).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};

use crate::fs::cancel_ops_on;

/// A UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    inner: std::net::UdpSocket,
}

impl UdpSocket {
    /// Binds to `addr` (non-blocking: waits go through the ring).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let inner = std::net::UdpSocket::bind(addr)?;
        inner.set_nonblocking(true)?;
        Ok(UdpSocket { inner })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sends `buf` to `target`; returns the bytes sent and the buffer.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match self.inner.send_to(&buf, target) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = crate::poll::writable(&self.inner).await {
                        return (Err(e), buf);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return (other, buf),
            }
        }
    }

    /// Receives one datagram into `buf`'s spare capacity (its length grows by the datagram's
    /// size); returns the size and the sender.
    ///
    /// # Cancellation
    /// Dropping the future cancels its readiness wait; no datagram is consumed unless it
    /// completes.
    pub async fn recv_from(&self, mut buf: Vec<u8>) -> (io::Result<(usize, SocketAddr)>, Vec<u8>) {
        let start = buf.len();
        loop {
            buf.resize(buf.capacity().max(start + 1), 0);
            let got = self.inner.recv_from(&mut buf[start..]);
            match got {
                Ok((n, from)) => {
                    buf.truncate(start + n);
                    return (Ok((n, from)), buf);
                }
                Err(e) => {
                    buf.truncate(start);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            if let Err(e) = crate::poll::readable(&self.inner).await {
                                return (Err(e), buf);
                            }
                        }
                        io::ErrorKind::Interrupted => {}
                        _ => return (Err(e), buf),
                    }
                }
            }
        }
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        cancel_ops_on(self.inner.as_raw_fd());
    }
}
