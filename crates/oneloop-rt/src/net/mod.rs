//! Sockets on the ring: TCP, Unix-domain streams, UDP.
//!
//! # Cancellation
//! Dropping an op future cancels its op; its buffer stays with the ring until the op's final
//! completion. A connection accepted by a dropped `accept` is closed, never leaked. Dropping a
//! socket cancels the ops still in flight on it before its descriptor is closed.
#![forbid(unsafe_code)]

mod tcp;
mod udp;
mod unix;

pub use tcp::{OwnedReadHalf, OwnedWriteHalf, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use std::io;
use std::os::fd::RawFd;

use oneloop::Send;

pub(crate) use crate::fs::Registration;
use crate::op::{run, with_buf};

/// Sends all of `buf` on a connected socket.
pub(crate) async fn write_all(fd: RawFd, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let (res, buf) = with_buf::<Vec<u8>>(run(Send::new(fd, buf)).await);
    match res {
        Ok(n) if n == buf.len() => (Ok(()), buf),
        Ok(0) => (Err(io::Error::from(io::ErrorKind::WriteZero)), buf),
        Ok(n) => {
            let rest = buf[n..].to_vec();
            let (res, _) = Box::pin(write_all(fd, rest)).await;
            (res, buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Shuts down the writing half of a socket given by descriptor.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    oneloop::sockets::shutdown_write(fd)
}
