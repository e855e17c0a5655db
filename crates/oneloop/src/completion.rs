//! What comes out of the ring: one [`Completion`] per result, buffers handed back on the last.
//!
//! The raw kernel result (a negative errno or a count) becomes a Rust result in
//! [`finish`], shared by every backend, so the mapping is written once:
//! `ECANCELED` stays `ECANCELED` ([`Completion::is_cancelled`]), an expired timer or deadline is
//! `ETIMEDOUT` (`ErrorKind::TimedOut`).
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use crate::buf::Buf;
use crate::op::{EpollEvents, Op, OpId, Output, PollMask};
use crate::sys::Done;

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
    /// Op `id`'s final completion, from what [`finish`] made of it: its result and what it
    /// hands back.
    #[inline]
    pub(crate) fn last(
        id: OpId,
        user_data: u64,
        finished: (io::Result<u32>, Output),
    ) -> Completion {
        let (result, output) = finished;
        Completion {
            id,
            user_data,
            result,
            more: false,
            output,
        }
    }

    /// One of op `id`'s `MORE` completions (a multishot op's): its result and what it carries.
    #[inline]
    pub(crate) fn more(
        id: OpId,
        user_data: u64,
        result: io::Result<u32>,
        output: Output,
    ) -> Completion {
        Completion {
            id,
            user_data,
            result,
            more: true,
            output,
        }
    }

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
    /// Whether more completions follow for this op (a multishot poll, receive, read or
    /// accept); `false` on the final one.
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
    /// What the op hands back (buffers, events, a new descriptor). On `MORE` completions:
    /// what that one result produced (a [`Lease`](crate::Lease), an accepted socket), or
    /// nothing (a multishot poll).
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

/// Ends an op: its result as a Rust result, and what it hands back, updated by that result.
pub(crate) fn finish(op: Op, done: Done) -> (io::Result<u32>, Output) {
    (raw_result(done.raw()), op.finish(done))
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
        // Aligned buffers are zero-initialised: their bytes are initialised whoever wrote them.
        let (result, output) = finish(Op::Readv(op), Done::zeroed(4));
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
        let (result, output) = finish(Op::Close(Close::new(fd)), Done::error(libc::ECANCELED));
        assert!(result.is_err());
        assert!(
            matches!(output, Output::Fd(_)),
            "the descriptor is still the caller's"
        );
    }
}
