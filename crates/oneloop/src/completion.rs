//! What comes out of the ring: one [`Completion`] per result, buffers handed back on the last.
//!
//! The raw kernel result (a negative errno or a count) becomes a Rust result in
//! [`finish`], shared by every backend, so the mapping is written once:
//! `ECANCELED` stays `ECANCELED` ([`Completion::is_cancelled`]), an expired timer or deadline is
//! `ETIMEDOUT` (`ErrorKind::TimedOut`).
#![deny(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use crate::buf::Buf;
use crate::op::{EpollEvents, Op, PollMask};

/// An accepted submission's identity: a slot and its generation.
///
/// Ids are never reused while a stale copy could matter: a slot's generation changes every
/// time it is reused, so a cancel with an old id reports `NotFound` and touches nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The id as a number (stable for the op's lifetime; opaque otherwise).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({}g{})", self.0 & 0xFF_FFFF, self.0 >> 24)
    }
}

/// What a cancel achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The op will end with `ECANCELED` (its final completion is on its way).
    Cancelled,
    /// The op had already completed (its final completion is waiting in the ring, not yet
    /// taken), or its completion is racing the cancel, or it is running where it cannot be
    /// interrupted: its real result stands and will be delivered. (Once a wakeup has
    /// happened, the canceller gives up.)
    TooLate,
    /// No op with this id is known: it never existed, or its final completion was already
    /// taken from the ring.
    NotFound,
}

/// What a cancel by fd or of everything hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CancelCount {
    /// Ops that will end with `ECANCELED`.
    pub cancelled: usize,
    /// Ops whose real result stands (already completed, or racing the cancel).
    pub too_late: usize,
}

impl CancelCount {
    /// Every op the cancel reached.
    pub fn total(self) -> usize {
        self.cancelled + self.too_late
    }
}

/// What an op hands back with its final completion.
#[derive(Debug, Default)]
pub enum Output {
    /// Nothing (polls, timeouts, nops, fsync, connect, close).
    #[default]
    None,
    /// The op's buffer (`Read`, `Write`, `Recv`, `Send`).
    Buf(Buf),
    /// The op's buffers (`Readv`, `Writev`).
    Bufs(Vec<Buf>),
    /// The events an `EpollWait` returned.
    Events(EpollEvents),
    /// A new descriptor (`Accept`, `OpenAt`), or the descriptor of a cancelled `Close`.
    Fd(OwnedFd),
}

/// One result from the ring.
pub struct Completion {
    pub(crate) id: OpId,
    pub(crate) user_data: u64,
    pub(crate) result: io::Result<u32>,
    pub(crate) more: bool,
    pub(crate) output: Output,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("id", &self.id)
            .field("user_data", &self.user_data)
            .field("result", &self.result)
            .field("more", &self.more)
            .field("output", &self.output)
            .finish()
    }
}

impl Completion {
    /// The id `submit` returned.
    pub fn id(&self) -> OpId {
        self.id
    }
    /// The `user_data` given to `submit`.
    pub fn user_data(&self) -> u64 {
        self.user_data
    }
    /// The result: bytes transferred, a poll mask's bits, a descriptor number, an event
    /// count, or 0; or the error.
    pub fn result(&self) -> &io::Result<u32> {
        &self.result
    }
    /// Whether more completions follow for this op (a multishot poll); `false` on the final one.
    pub fn is_more(&self) -> bool {
        self.more
    }
    /// Whether the op ended with `ECANCELED`.
    pub fn is_cancelled(&self) -> bool {
        matches!(&self.result, Err(e) if e.raw_os_error() == Some(libc::ECANCELED))
    }
    /// Whether the op ended because its timer or deadline expired.
    pub fn is_timed_out(&self) -> bool {
        matches!(&self.result, Err(e) if e.kind() == io::ErrorKind::TimedOut)
    }
    /// The result as a poll mask (for `Poll`).
    pub fn poll_mask(&self) -> Option<PollMask> {
        self.result
            .as_ref()
            .ok()
            .map(|&bits| PollMask::from_bits(bits))
    }
    /// What the op hands back (buffers, events, a new descriptor); empty on `MORE` completions.
    pub fn output(&self) -> &Output {
        &self.output
    }
    /// Takes what the op hands back.
    pub fn into_output(self) -> Output {
        self.output
    }
    /// The result and what the op hands back, both by value.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Nop, Output, Ring};
    ///
    /// let mut ring = Ring::new()?;
    /// ring.submit(Nop, 0)?;
    /// ring.wait(1, None)?;
    /// let (result, output) = ring.next_completion().unwrap().into_parts();
    /// assert_eq!(result?, 0);
    /// assert!(matches!(output, Output::None));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_parts(self) -> (io::Result<u32>, Output) {
        (self.result, self.output)
    }
    /// Takes the single buffer, if the op had one.
    pub fn take_buf(&mut self) -> Option<Buf> {
        match std::mem::take(&mut self.output) {
            Output::Buf(b) => Some(b),
            other => {
                self.output = other;
                None
            }
        }
    }
    /// Takes the descriptor, if the op produced one.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        match std::mem::take(&mut self.output) {
            Output::Fd(fd) => Some(fd),
            other => {
                self.output = other;
                None
            }
        }
    }
    /// Takes the epoll events, if the op was an `EpollWait`.
    pub fn take_events(&mut self) -> Option<EpollEvents> {
        match std::mem::take(&mut self.output) {
            Output::Events(e) => Some(e),
            other => {
                self.output = other;
                None
            }
        }
    }
}

/// The error a timer or deadline expiry is reported as.
pub(crate) fn timed_out() -> io::Error {
    io::Error::from_raw_os_error(libc::ETIMEDOUT)
}

/// Turns a raw result (`>= 0` value, or `-errno`) into a Rust result. Allocation-free.
pub(crate) fn raw_result(res: i32) -> io::Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else if res == -libc::ETIME {
        Err(timed_out())
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}

/// Ends an op: maps its raw result and hands back what it owned, updated by that result.
///
/// # Safety
/// `res` must be what the kernel (or a pool thread) reported for exactly this op, as the
/// backend lowered it: a count `>= 0` is the bytes written into the op's read buffers, and
/// for `Accept`/`OpenAt` a new descriptor nobody else owns (the output closes it on drop).
/// A negative `res` (an errno) is always sound.
#[allow(unsafe_code)]
pub(crate) unsafe fn finish(op: Op, res: i32) -> (io::Result<u32>, Output) {
    let result = raw_result(res);
    let n = *result.as_ref().unwrap_or(&0) as usize;
    let ok = result.is_ok();
    let output = match op {
        Op::Nop(_) | Op::Fsync(_) | Op::Poll(_) | Op::Timeout(_) | Op::Connect(_) => Output::None,
        Op::Read(mut o) => {
            if ok {
                // SAFETY: the caller's contract: the kernel wrote `n` bytes there.
                unsafe { o.buf.filled(n) };
            }
            Output::Buf(o.buf)
        }
        Op::Recv(mut o) => {
            if ok {
                // SAFETY: as for `Read`.
                unsafe { o.buf.filled(n) };
            }
            Output::Buf(o.buf)
        }
        Op::Write(o) => Output::Buf(o.buf),
        Op::Send(o) => Output::Buf(o.buf),
        Op::Readv(mut o) => {
            if ok {
                // SAFETY: as for `Read`, across the buffers in order.
                unsafe { distribute(&mut o.bufs, n) };
            }
            Output::Bufs(o.bufs)
        }
        Op::Writev(o) => Output::Bufs(o.bufs),
        Op::EpollWait(mut o) => {
            o.events.len = if ok { n.min(o.events.capacity()) } else { 0 };
            Output::Events(o.events)
        }
        Op::Accept(_) | Op::OpenAt(_) => {
            if ok {
                // SAFETY: the caller's contract: a new descriptor nobody else owns.
                Output::Fd(unsafe { crate::sys::owned_fd(n as i32) })
            } else {
                Output::None
            }
        }
        Op::Close(o) => {
            if res == -libc::ECANCELED {
                // Never ran: the descriptor is still open and still the caller's.
                Output::Fd(o.fd)
            } else {
                // Linux releases the descriptor even when close reports an error.
                let _ = std::os::fd::IntoRawFd::into_raw_fd(o.fd);
                Output::None
            }
        }
    };
    (result, output)
}

impl Op {
    /// What the op owns (its buffers, event array or descriptor), as a completion would hand it
    /// back, for an op that never ran (a refused submission): buffers untouched, a `Close`'s
    /// descriptor.
    #[allow(unsafe_code)]
    pub fn into_output(self) -> Output {
        // SAFETY: an errno: nothing is filled and no descriptor is wrapped.
        unsafe { finish(self, -libc::ECANCELED) }.1
    }
}

/// Grows each buffer of a vectored read by its share of `n` bytes, in order.
///
/// # Safety
/// The kernel must have written `n` bytes across the buffers' read targets, in order.
#[allow(unsafe_code)]
unsafe fn distribute(bufs: &mut [Buf], mut n: usize) {
    for buf in bufs {
        if n == 0 {
            break;
        }
        let room = buf.room();
        let take = room.min(n);
        // SAFETY: the caller's contract, for this buffer's share.
        unsafe { buf.filled(take) };
        n -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Close, Readv};

    #[test]
    fn raw_results_map_once() {
        assert_eq!(raw_result(7).unwrap(), 7);
        assert_eq!(
            raw_result(-libc::ETIME).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            raw_result(-libc::ECANCELED).unwrap_err().raw_os_error(),
            Some(libc::ECANCELED)
        );
        assert_eq!(
            raw_result(-libc::EBADF).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn vectored_reads_fill_buffers_in_order() {
        // Aligned buffers are zero-initialised, so growing their length needs no kernel write.
        let bufs = [2, 3, 4].map(|cap| crate::AlignedBuf::new(cap, 1).unwrap());
        let op = Readv::new(0, bufs.into(), 0);
        // SAFETY: aligned buffers are zero-initialised: their bytes are initialised whoever
        // wrote them.
        #[allow(unsafe_code)]
        let (result, output) = unsafe { finish(Op::Readv(op), 4) };
        assert_eq!(result.unwrap(), 4);
        let Output::Bufs(bufs) = output else {
            panic!("{output:?}")
        };
        let lens: Vec<usize> = bufs.iter().map(Buf::len).collect();
        assert_eq!(lens, [2, 2, 0]);
    }

    #[test]
    fn a_cancelled_close_gives_the_fd_back() {
        let fd = crate::sys::eventfd().unwrap();
        // SAFETY: an errno: nothing is filled and no descriptor is wrapped.
        #[allow(unsafe_code)]
        let (result, output) = unsafe { finish(Op::Close(Close::new(fd)), -libc::ECANCELED) };
        assert!(result.is_err());
        assert!(
            matches!(output, Output::Fd(_)),
            "the descriptor is still the caller's"
        );
    }
}
