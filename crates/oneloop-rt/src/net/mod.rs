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

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;

use oneloop::{IoBuf, IoBufMut, Recv, Send, Transfer};

use crate::executor::{op_budget_left, spend_op_budget};
pub(crate) use crate::fs::Registration;
use crate::op::{run, typed, with_buf};

/// What a stream last learnt of its socket, per direction: whether a transfer tried straight
/// from the future's first poll may succeed. Tokio's way: try first, and go to the ring —
/// which waits for readiness, then transfers — only when the socket says "not now".
///
/// A direction is marked *blocked* when an attempt saw `EAGAIN` or came back short (a receive
/// that drained the socket, a send that filled its buffer): the next transfer then goes to the
/// ring without trying. It is unmarked when a transfer through the ring fills its whole
/// buffer (more may be waiting). The hint only decides whether to try first; the ring path is
/// always right, so a wrong hint costs one system call, never a lost wake-up.
#[derive(Debug, Default)]
pub(crate) struct Hint(Cell<u8>);

const READ: u8 = 1;
const WRITE: u8 = 2;

impl Hint {
    /// Whether a transfer in `direction` is worth trying now (the running task's op budget
    /// counts it: past the budget every transfer takes the ring, and the task yields).
    fn try_first(&self, direction: u8) -> bool {
        self.0.get() & direction == 0 && op_budget_left()
    }

    /// Records what a transfer in `direction` learnt: `open` if it filled its whole buffer.
    fn learn(&self, direction: u8, open: bool) {
        let bits = self.0.get();
        self.0.set(if open {
            bits & !direction
        } else {
            bits | direction
        });
    }

    /// Records an attempt's answer; `Some` is the transfer's result, `None` "not now".
    fn attempt(&self, direction: u8, res: io::Result<Transfer>) -> Option<io::Result<usize>> {
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.learn(direction, false);
                None
            }
            res => {
                spend_op_budget();
                if let Ok(t) = &res {
                    self.learn(direction, t.done == t.asked);
                }
                Some(res.map(|t| t.done))
            }
        }
    }
}

/// Receives into `buf` from a stream socket: at once if bytes are there, else through the ring.
pub(crate) async fn recv<B: IoBufMut>(fd: RawFd, hint: &Hint, buf: B) -> (io::Result<usize>, B) {
    let mut op = Recv::new(fd, buf);
    if hint.try_first(READ) {
        if let Some(res) = hint.attempt(READ, op.try_now()) {
            return (res, typed(op.into_buf()));
        }
    }
    let room = op.room();
    let (res, buf) = with_buf(run(op).await);
    if let Ok(n) = res {
        hint.learn(READ, n == room && n > 0);
    }
    (res, buf)
}

/// Sends `buf`'s bytes on a stream socket (maybe fewer): at once if there is room, else through
/// the ring.
pub(crate) async fn send<B: IoBuf>(fd: RawFd, hint: &Hint, buf: B) -> (io::Result<usize>, B) {
    let mut op = Send::new(fd, buf);
    if hint.try_first(WRITE) {
        if let Some(res) = hint.attempt(WRITE, op.try_now()) {
            return (res, typed(op.into_buf()));
        }
    }
    let (res, buf) = with_buf::<B>(run(op).await);
    if res.is_ok() {
        // The ring waited for room, and the send took what it could.
        hint.learn(WRITE, true);
    }
    (res, buf)
}

/// Sends all of `buf` on a connected stream socket.
pub(crate) async fn write_all(fd: RawFd, hint: &Hint, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let (res, buf) = send(fd, hint, buf).await;
    match res {
        Ok(n) if n == buf.len() => (Ok(()), buf),
        Ok(0) => (Err(io::Error::from(io::ErrorKind::WriteZero)), buf),
        Ok(n) => {
            let rest = buf[n..].to_vec();
            let (res, _) = Box::pin(write_all(fd, hint, rest)).await;
            (res, buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Shuts down the writing half of a socket given by descriptor.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    oneloop::sockets::shutdown_write(fd)
}
