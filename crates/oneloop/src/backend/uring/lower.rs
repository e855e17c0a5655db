//! `Op` → SQE: one exhaustive `match`, each arm a single opcode.
#![forbid(unsafe_code)]

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, Fixed, FsyncFlags, OpenHow, Timespec};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::files::Files;
use super::inflight::Slot;
use crate::buf::Buf;
use crate::op::Op;
use crate::sys::RawSockAddr;

/// A timespec for the time left until `at` (zero if it has passed).
pub(super) fn timespec_until(at: Instant, now: Instant) -> Timespec {
    let left = at.saturating_duration_since(now);
    timespec(left)
}

/// A timespec for `d`.
pub(super) fn timespec(d: Duration) -> Timespec {
    Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

fn clamp_len(len: usize) -> u32 {
    len.min(u32::MAX as usize) as u32
}

/// What an op becomes on this backend.
pub(super) enum Lowered {
    /// A request for the kernel.
    Sqe(Entry),
    /// A timer in the ring's own heap, due at this instant: `Timeout` ops never reach the
    /// kernel (one kernel `TIMEOUT` and one `ASYNC_CANCEL` per timer cost ~10 × more).
    Timer(Instant),
}

/// Builds `$build` with `$t` bound to `$fd`'s fixed-file slot if it is registered, else to the
/// plain descriptor (the opcode builders take either type).
macro_rules! on_fd {
    ($files:expr, $fd:expr, |$t:ident| $build:expr) => {
        match $files.slot($fd) {
            Some(slot) => {
                let $t = Fixed(slot);
                $build
            }
            None => {
                let $t = Fd($fd);
                $build
            }
        }
    };
}

/// Builds the main SQE for `slot`'s op, filling the slot's `Aux` where the op needs it; ops
/// on registered fds name their fixed-file slot.
///
/// `native_epoll_wait` picks `IORING_OP_EPOLL_WAIT`; otherwise an `EpollWait` is a one-shot
/// `POLL_ADD` on the epoll fd, and the driver calls `epoll_wait(.., 0)` when it fires.
pub(super) fn lower(
    slot: &mut Slot,
    files: &Files,
    user_data: u64,
    native_epoll_wait: bool,
    now: Option<Instant>,
) -> Lowered {
    let aux = &mut slot.aux;
    let entry = match &mut slot.op {
        Op::Nop(_) => opcode::Nop::new().build(),
        Op::Read(o) => {
            let (ptr, len) = o.buf.read_target();
            on_fd!(files, o.fd, |t| opcode::Read::new(t, ptr, clamp_len(len))
                .offset(o.offset)
                .build())
        }
        Op::Write(o) => {
            let (ptr, len) = o.buf.write_source();
            on_fd!(files, o.fd, |t| opcode::Write::new(t, ptr, clamp_len(len))
                .offset(o.offset)
                .build())
        }
        Op::Readv(o) => {
            let iovecs = &mut aux.extra().iovecs;
            iovecs.clear();
            iovecs.extend(o.bufs.iter_mut().map(Buf::read_iovec));
            let n = iovecs.len() as u32;
            on_fd!(files, o.fd, |t| opcode::Readv::new(t, iovecs.as_ptr(), n)
                .offset(o.offset)
                .build())
        }
        Op::Writev(o) => {
            let iovecs = &mut aux.extra().iovecs;
            iovecs.clear();
            iovecs.extend(o.bufs.iter().map(Buf::write_iovec));
            let n = iovecs.len() as u32;
            on_fd!(files, o.fd, |t| opcode::Writev::new(t, iovecs.as_ptr(), n)
                .offset(o.offset)
                .build())
        }
        Op::Fsync(o) => {
            let flags = if o.data_only {
                FsyncFlags::DATASYNC
            } else {
                FsyncFlags::empty()
            };
            on_fd!(files, o.fd, |t| opcode::Fsync::new(t).flags(flags).build())
        }
        Op::Poll(o) => on_fd!(files, o.fd, |t| opcode::PollAdd::new(t, o.mask.bits())
            .multi(o.multishot)
            .build()),
        Op::EpollWait(o) if native_epoll_wait => opcode::EpollWait::new(
            Fd(o.epfd),
            o.events.raw.as_mut_ptr().cast(),
            o.events.capacity() as u32,
        )
        .build(),
        Op::EpollWait(o) => opcode::PollAdd::new(Fd(o.epfd), libc::POLLIN as u32).build(),
        Op::Timeout(o) => return Lowered::Timer(o.when.instant(now.unwrap_or_else(Instant::now))),
        Op::Accept(o) => on_fd!(files, o.fd, |t| opcode::Accept::new(
            t,
            std::ptr::null_mut(),
            std::ptr::null_mut()
        )
        .flags(o.flags)
        .build()),
        Op::Connect(o) => {
            let addr = &mut aux.extra().addr;
            *addr = RawSockAddr::from_socket_addr(&o.addr);
            on_fd!(files, o.fd, |t| opcode::Connect::new(
                t,
                addr.as_ptr(),
                addr.len
            )
            .build())
        }
        Op::Recv(o) => {
            let (ptr, len) = o.buf.read_target();
            on_fd!(files, o.fd, |t| opcode::Recv::new(t, ptr, clamp_len(len))
                .flags(o.flags)
                .build())
        }
        Op::Send(o) => {
            let (ptr, len) = o.buf.write_source();
            on_fd!(files, o.fd, |t| opcode::Send::new(t, ptr, clamp_len(len))
                .flags(o.flags)
                .build())
        }
        // A fixed Close would empty the table slot, not close the descriptor: always plain
        // (as are OpenAt's directory and EpollWait's epoll fd).
        Op::Close(o) => opcode::Close::new(Fd(o.fd.as_raw_fd())).build(),
        Op::OpenAt(o) => {
            let how = &mut aux.extra().how;
            *how = OpenHow::new()
                .flags(o.flags as u32 as u64)
                .mode(u64::from(o.effective_mode()))
                .resolve(o.resolve);
            opcode::OpenAt2::new(Fd(o.dirfd), o.path.as_ptr(), how).build()
        }
    };
    Lowered::Sqe(entry.user_data(user_data))
}

/// The opcode an op needs on this kernel, for the start-up probe (`None`: the op runs in
/// user space).
pub(super) fn opcode_of(op: &Op, native_epoll_wait: bool) -> Option<u8> {
    Some(match op {
        Op::Nop(_) => opcode::Nop::CODE,
        Op::Read(_) => opcode::Read::CODE,
        Op::Write(_) => opcode::Write::CODE,
        Op::Readv(_) => opcode::Readv::CODE,
        Op::Writev(_) => opcode::Writev::CODE,
        Op::Fsync(_) => opcode::Fsync::CODE,
        Op::Poll(_) => opcode::PollAdd::CODE,
        Op::EpollWait(_) if native_epoll_wait => opcode::EpollWait::CODE,
        Op::EpollWait(_) => opcode::PollAdd::CODE,
        Op::Timeout(_) => return None,
        Op::Accept(_) => opcode::Accept::CODE,
        Op::Connect(_) => opcode::Connect::CODE,
        Op::Recv(_) => opcode::Recv::CODE,
        Op::Send(_) => opcode::Send::CODE,
        Op::Close(_) => opcode::Close::CODE,
        Op::OpenAt(_) => opcode::OpenAt2::CODE,
    })
}
