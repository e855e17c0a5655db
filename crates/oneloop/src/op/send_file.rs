//! `SendFile`: bytes of a file to a socket without a copy through user space — on io_uring
//! an op of several requests (file → pipe → socket, a poll when the socket is full), on
//! epoll and aio `sendfile` on the loop with the pool reading an uncached range in first.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::opcode;

use super::plan::{
    aio_takes_readiness, clamp_len, errno, no_target, on_fd, one_shot_on, raw, retry, AioNext,
    AioPlan, AioStart, Lowered, Next, OpBase, ReadyCx, ReadyPlan, Step, UringCx, UringPlan, OUT,
};
use super::Output;
use crate::buf::Buf;
use crate::sys::posix as sio;
use crate::sys::Done;

/// Where a `SendFile` on io_uring stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// File → pipe.
    ToPipe,
    /// Pipe → socket.
    ToSock,
    /// Waiting for the socket to take more (a non-blocking socket said `EAGAIN`: io_uring
    /// does not wait on an `O_NONBLOCK` file's behalf).
    Writable,
}

/// Sends bytes of a file to a socket without copying them through user space
/// (`sendfile(2)`; on io_uring, `SPLICE` from the file through a pipe to the socket).
///
/// Completes with the bytes that reached the socket: up to `len`, fewer when the socket took
/// fewer or the file ends sooner (send the rest with another op, as with `sendfile(2)`), 0 at
/// the end of the file. A cancel or deadline that lands mid-transfer ends it once: with the
/// bytes that reached the socket if there were any, else `ECANCELED` (`TimedOut`). Bytes read
/// from the file but not yet sent go with the op's pipe: none are left behind.
///
/// # Backends
/// `uring`: `SPLICE` from `file` at `offset` into a pipe the op owns (made at its first
/// request; capacity up to `len`, at most 1 MiB where `pipe-max-size` allows), then `SPLICE`
/// from the pipe to the socket until the pipe is empty: one pipe-full per op (a short splice
/// to the socket is followed by another for the rest). `epoll`, `aio`: the socket is switched
/// to `O_NONBLOCK`; when the range is in the page cache (`cachestat(2)`, Linux 6.5)
/// `sendfile` runs inline (or once the socket is writable); otherwise the blocking pool reads
/// the range (at most 1 MiB) into the page cache first, and `sendfile` follows on the loop. An
/// offset past `i64::MAX` ([`CURRENT_POSITION`](super::CURRENT_POSITION)) is `EINVAL`.
///
/// # Examples
/// ```
/// use oneloop::{Ring, SendFile};
/// use std::io::{Read, Write};
/// use std::os::fd::AsRawFd;
///
/// let mut ring = Ring::new()?;
/// let path = std::env::temp_dir().join(format!("sendfile-doc-{}", std::process::id()));
/// std::fs::write(&path, b"hello, socket")?;
/// let file = std::fs::File::open(&path)?;
/// let (mut peer, sock) = std::os::unix::net::UnixStream::pair()?;
/// let done = ring.call(SendFile::new(sock.as_raw_fd(), file.as_raw_fd(), 7, 6))?;
/// assert_eq!(done.result().as_ref().unwrap(), &6);
/// let mut got = [0; 6];
/// peer.read_exact(&mut got)?;
/// assert_eq!(&got, b"socket");
/// # std::fs::remove_file(path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SendFile {
    sock: RawFd,
    file: RawFd,
    offset: u64,
    len: usize,
    /// io_uring's transfer: its pipe and where it stands (made at the first request).
    splice: Option<Box<Splice>>,
    /// The socket was switched to `O_NONBLOCK` (readiness backends).
    nonblocking: bool,
    /// The file, when the op keeps it open itself ([`SendFile::owning`]).
    owned: Option<OwnedFd>,
    /// The pool has read the range in (readiness backends): send it, cached or not.
    paged_in: bool,
}

/// A `SendFile` on io_uring: the pipe the bytes pass through, and how far they got.
#[derive(Debug)]
struct Splice {
    rd: OwnedFd,
    wr: OwnedFd,
    capacity: usize,
    /// What the next request does.
    phase: Phase,
    /// Bytes in the pipe, not yet sent.
    in_pipe: usize,
    /// Bytes that reached the socket.
    sent: usize,
}

impl SendFile {
    /// The file's number, for the pool hand-off (see `Op::pool_fd_mut`).
    pub(crate) fn file_mut(&mut self) -> &mut RawFd {
        &mut self.file
    }
}

impl SendFile {
    /// Sends up to `len` bytes of `file`, from `offset`, to the socket `sock`.
    pub fn new(sock: RawFd, file: RawFd, offset: u64, len: usize) -> SendFile {
        SendFile {
            sock,
            file,
            offset,
            len,
            splice: None,
            nonblocking: false,
            owned: None,
            paged_in: false,
        }
    }

    /// As [`new`](Self::new), with the op owning `file` until its final completion (then
    /// closing it): a caller that gives up on the op and closes its own handle can never
    /// have the op read another file that took the descriptor's number. Give it a duplicate
    /// (`try_clone`) to keep your own.
    pub fn owning(sock: RawFd, file: OwnedFd, offset: u64, len: usize) -> SendFile {
        let mut op = SendFile::new(sock, file.as_raw_fd(), offset, len);
        op.owned = Some(file);
        op
    }

    /// One `sendfile` on the non-blocking socket if the range is cached (or the pool has just
    /// read it in); otherwise the pool reads it in first. The pool never sends: a socket
    /// found full waits on the loop, where a cancel or a closed socket reaches it.
    fn attempt(&mut self) -> Next {
        // Non-blocking, so a full socket buffer never holds the loop (or a pool thread).
        if !self.nonblocking {
            if let Err(e) = sio::set_nonblocking(self.sock) {
                return Next::Done(-errno(&e));
            }
            self.nonblocking = true;
        }
        if !self.paged_in && !sio::cached(self.file, self.offset, self.len as u64) {
            return Next::Pool;
        }
        match sio::sendfile(self.sock, self.file, self.offset, self.len) {
            Ok(n) => Next::Done(n.min(i32::MAX as usize) as i32),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(OUT),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.attempt(),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
}

impl OpBase for SendFile {
    no_target!();
    one_shot_on!(sock);
    fn finish(self, _: Done) -> Output {
        // The pipe closes here, with whatever it still held.
        Output::None
    }
}

impl UringPlan for SendFile {
    const OPCODES: &'static [(&'static str, u8)] = &[("SPLICE", opcode::Splice::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Splice::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        use io_uring::types::Fd;
        // As `sendfile(2)` answers a negative offset (a splice would read at the position).
        if self.offset > i64::MAX as u64 {
            return Lowered::Done(-libc::EINVAL);
        }
        let splice = match &mut self.splice {
            Some(splice) => splice,
            None => match sio::pipe_for(self.len) {
                Ok((rd, wr, capacity)) => self.splice.insert(Box::new(Splice {
                    rd,
                    wr,
                    capacity,
                    phase: Phase::ToPipe,
                    in_pipe: 0,
                    sent: 0,
                })),
                Err(e) => return Lowered::Done(-errno(&e)),
            },
        };
        let entry = match splice.phase {
            Phase::ToPipe => {
                let n = clamp_len(self.len.min(splice.capacity));
                let (file, wr) = (Fd(self.file), Fd(splice.wr.as_raw_fd()));
                opcode::Splice::new(file, self.offset as i64, wr, -1, n).build()
            }
            Phase::ToSock => {
                let (rd, n) = (Fd(splice.rd.as_raw_fd()), clamp_len(splice.in_pipe));
                on_fd!(cx, self.sock, |t| opcode::Splice::new(rd, -1, t, -1, n)
                    .build())
            }
            Phase::Writable => on_fd!(cx, self.sock, |t| opcode::PollAdd::new(t, OUT).build()),
        };
        Lowered::Sqe(entry)
    }
    fn plain(_: bool) -> bool {
        false
    }
    fn step(&mut self, res: i32, stop: bool) -> Step {
        let Some(splice) = &mut self.splice else {
            return Step::Done(res);
        };
        let sent = splice.sent.min(i32::MAX as usize) as i32;
        // Ended early: with what reached the socket, if anything did.
        let end = |res: i32| Step::Done(if sent > 0 { sent } else { res });
        // A kernel worker's splice interrupted (a cancel's signal: `EINTR`, or the kernel's
        // internal `ERESTARTSYS`, which io_uring passes on for splice) is not a result.
        const ERESTARTSYS: i32 = 512;
        match (splice.phase, res) {
            (_, ..0) if res == -libc::EINTR || res == -ERESTARTSYS => {
                if stop {
                    end(-libc::ECANCELED)
                } else {
                    Step::Again
                }
            }
            (_, ..0) if res == -libc::EAGAIN && splice.phase == Phase::ToSock && !stop => {
                splice.phase = Phase::Writable;
                Step::Again
            }
            (_, ..0) if res == -libc::EAGAIN => end(-libc::ECANCELED),
            (_, ..0) => end(res),
            // Pipe → socket: these bytes are sent whatever comes next.
            (Phase::ToSock, n) => {
                splice.sent += n as usize;
                splice.in_pipe -= (n as usize).min(splice.in_pipe);
                if splice.in_pipe == 0 || n == 0 || stop {
                    Step::Done(splice.sent.min(i32::MAX as usize) as i32)
                } else {
                    Step::Again
                }
            }
            (_, _) if stop => end(-libc::ECANCELED),
            // File → pipe: 0 is the end of the file.
            (Phase::ToPipe, 0) => Step::Done(0),
            (Phase::ToPipe, n) => {
                splice.in_pipe = n as usize;
                splice.phase = Phase::ToSock;
                Step::Again
            }
            (Phase::Writable, _) => {
                splice.phase = Phase::ToSock;
                Step::Again
            }
        }
    }
}

impl ReadyPlan for SendFile {
    fn direction(&self) -> Option<(RawFd, u32)> {
        Some((self.sock, OUT))
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.attempt()
    }
    fn again(&mut self, _: bool) -> Next {
        self.attempt()
    }
    /// Reads the range into the page cache (at most 1 MiB of it: what this op then sends).
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        self.len = self.len.min(1 << 20);
        let mut scratch = Buf::Vec(Vec::with_capacity(self.len));
        raw(retry(|| {
            sio::read_at(self.file, &mut scratch, self.offset, false)
        }))
    }
    fn after_pool(&mut self, res: i32) -> Next {
        match res {
            // A read error is the op's; 0: the file ends at `offset`.
            ..=0 => Next::Done(res),
            n => {
                self.len = self.len.min(n as usize);
                self.paged_in = true;
                self.attempt()
            }
        }
    }
    fn pool_is_final(&self) -> bool {
        false
    }
}

impl AioPlan for SendFile {
    aio_takes_readiness!();
}
