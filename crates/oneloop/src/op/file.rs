//! File I/O at an offset: `Read`, `Write`, `Readv`, `Writev`, `Fsync` — each declared once,
//! with its io_uring request, its readiness plan (a page-cache hit done at once with
//! `RWF_NOWAIT`, a pipe or socket waiting for readiness, a file that would block on the pool)
//! and its AIO request.
#![forbid(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};

use io_uring::opcode;
use io_uring::types::FsyncFlags;

use super::plan::{
    clamp_len, done, no_target, on_fd, one_request, one_shot_on, pool_is_final, raw, retry,
    would_block, AioNext, AioPlan, AioStart, Lowered, Next, OpBase, ReadyCx, ReadyPlan, UringCx,
    UringPlan, IN, OUT,
};
use super::{Output, CURRENT_POSITION};
use crate::buf::{Buf, IoBuf, IoBufMut};
use crate::sys::aio::{self as aio_abi, Iocb};
use crate::sys::posix::{self as sio, FdKind};
use crate::sys::Done;

/// Reads from `fd` at `offset` into an owned buffer (`pread(2)`).
///
/// Completes with the number of bytes read (0 at end of file); the buffer comes back in the
/// completion with its length grown by that much (see [`crate::buf`] for where bytes go).
/// Use [`CURRENT_POSITION`] for pipes, sockets and other streams.
///
/// # Errors
/// The kernel's: `EBADF` (fd closed or not open for reading), `EINVAL` (misaligned
/// `O_DIRECT`), `EISDIR`, ...
///
/// # Backends
/// `uring`: `READ`; `READ_FIXED` for a [`FixedBuf`](crate::FixedBuf) of the ring's registered
/// pool. `epoll`: `preadv2(RWF_NOWAIT)` at submission, so a page-cache hit
/// completes inline; a miss goes to the blocking pool; a pipe, socket or tty waits for
/// readiness and then reads. `aio`: at an offset, `IOCB_CMD_PREAD` with `RWF_NOWAIT` (a hit
/// completes in the kernel at once); on `EAGAIN` an `O_DIRECT` file is read again without the
/// flag, a buffered one on the pool; at [`CURRENT_POSITION`], as on epoll. A submitted AIO
/// read cannot be cancelled (`TooLate`).
#[derive(Debug)]
pub struct Read {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) offset: u64,
}

impl Read {
    /// Reads into `buf` from `fd` at `offset`.
    pub fn new(fd: RawFd, buf: impl IoBufMut, offset: u64) -> Read {
        Read {
            fd,
            buf: buf.into_buf(),
            offset,
        }
    }
}

/// Writes an owned buffer's bytes to `fd` at `offset` (`pwrite(2)`).
///
/// Completes with the number of bytes written (a short write is possible); the buffer comes
/// back unchanged. Use [`CURRENT_POSITION`] for streams and `O_APPEND` files.
///
/// # Errors
/// The kernel's: `EBADF`, `EINVAL`, `ENOSPC`, `EPIPE`, ...
///
/// # Backends
/// `uring`: `WRITE`, `WRITE_FIXED` for a [`FixedBuf`](crate::FixedBuf) of the ring's
/// registered pool (a pipe or socket is written in full unless an error intervenes).
/// `epoll`: `pwritev2(RWF_NOWAIT)` at submission, the blocking pool when the filesystem cannot
/// take the write without blocking; a pipe or socket waits for readiness and may complete
/// with a short count. `aio`: at an offset, `IOCB_CMD_PWRITE` with `RWF_NOWAIT`, then as for
/// `Read` (`EOPNOTSUPP`, e.g. buffered writes on ext4, also means the pool).
#[derive(Debug)]
pub struct Write {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) offset: u64,
}

impl Write {
    /// Writes `buf` to `fd` at `offset`.
    pub fn new(fd: RawFd, buf: impl IoBuf, offset: u64) -> Write {
        Write {
            fd,
            buf: buf.into_buf(),
            offset,
        }
    }
}

/// Reads from `fd` at `offset` into several buffers in order (`preadv(2)`).
///
/// Completes with the total bytes read; the buffers come back, each grown by its share.
#[derive(Debug)]
pub struct Readv {
    pub(crate) fd: RawFd,
    pub(crate) bufs: Vec<Buf>,
    pub(crate) offset: u64,
}

impl Readv {
    /// Reads into `bufs`, in order, from `fd` at `offset`.
    pub fn new<B: IoBufMut>(fd: RawFd, bufs: Vec<B>, offset: u64) -> Readv {
        Readv {
            fd,
            bufs: bufs.into_iter().map(IoBuf::into_buf).collect(),
            offset,
        }
    }
}

/// Writes several buffers in order to `fd` at `offset` (`pwritev(2)`).
#[derive(Debug)]
pub struct Writev {
    pub(crate) fd: RawFd,
    pub(crate) bufs: Vec<Buf>,
    pub(crate) offset: u64,
}

impl Writev {
    /// Writes `bufs`, in order, to `fd` at `offset`.
    pub fn new<B: IoBuf>(fd: RawFd, bufs: Vec<B>, offset: u64) -> Writev {
        Writev {
            fd,
            bufs: bufs.into_iter().map(IoBuf::into_buf).collect(),
            offset,
        }
    }
}

/// Flushes a file to stable storage: `fsync(2)`, or `fdatasync(2)` with [`Fsync::data_only`].
///
/// # Backends
/// `uring`: `FSYNC`. `epoll`: the blocking pool (as are `Readv`, `Writev` and `OpenAt`); a
/// cancel reaches it only before a worker has started it, else it reports `TooLate`. `aio`:
/// `IOCB_CMD_FSYNC`/`FDSYNC`, the pool where the filesystem refuses them (`Readv`/`Writev` at
/// an offset are `PREADV`/`PWRITEV` with `RWF_NOWAIT`, like `Read`).
#[derive(Debug, Clone, Copy)]
pub struct Fsync {
    pub(crate) fd: RawFd,
    pub(crate) data_only: bool,
}

impl Fsync {
    /// `fsync(fd)`.
    pub fn new(fd: RawFd) -> Fsync {
        Fsync {
            fd,
            data_only: false,
        }
    }
    /// `fdatasync(fd)`: skips metadata not needed to read the data back.
    pub fn data_only(mut self) -> Fsync {
        self.data_only = true;
        self
    }
}

/// An AIO read or write request of `len` bytes at `ptr` (or of the iovecs the engine sets).
fn rw_iocb(opcode: u16, fd: RawFd, ptr: u64, len: usize, offset: u64, nowait: bool) -> Iocb {
    Iocb {
        aio_lio_opcode: opcode,
        aio_fildes: fd as u32,
        aio_buf: ptr,
        aio_nbytes: len as u64,
        aio_offset: offset as i64,
        aio_rw_flags: if nowait { libc::RWF_NOWAIT } else { 0 },
        ..Iocb::default()
    }
}

/// A request of `iocb` (with `iovecs` for vectored I/O), or the readiness path for I/O at
/// the current position (AIO has no file position).
fn aio_at(offset: u64, nowait: bool, make: impl FnOnce() -> (Iocb, Vec<libc::iovec>)) -> AioStart {
    if offset == CURRENT_POSITION {
        return AioStart::Ready;
    }
    let (iocb, iovecs) = make();
    AioStart::Request {
        iocb,
        iovecs,
        nowait,
    }
}

/// A file request's event: with `RWF_NOWAIT`, `EAGAIN` (it would block) and `EOPNOTSUPP` (the
/// file cannot say: buffered writes on ext4) are not answers to give the caller. Direct I/O
/// goes again without the flag, a buffered file to the pool, a pipe or socket waits for
/// `readiness` (vectored I/O has none: the pool).
fn aio_file_event(fd: RawFd, res: i32, nowait: bool, readiness: Option<u32>) -> AioNext {
    if !(nowait && (res == -libc::EAGAIN || res == -libc::EOPNOTSUPP)) {
        return AioNext::Done(res);
    }
    match (sio::fd_kind(fd), readiness) {
        // The EAGAIN was seen in the kernel, perhaps before an edge the loop has consumed
        // since: the registration must report current readiness.
        (Ok(FdKind::Pollable), Some(bits)) => AioNext::Arm(bits),
        (Ok(FdKind::Pollable), None) => AioNext::Pool,
        (Ok(_), _) if sio::is_direct(fd).unwrap_or(false) => AioNext::Again { nowait: false },
        (Ok(_), _) => AioNext::Pool,
        (Err(e), _) => AioNext::Done(-e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

impl OpBase for Read {
    no_target!();
    one_shot_on!(fd);
    fn finish(mut self, done: Done) -> Output {
        done.fill(&mut self.buf);
        Output::Buf(self.buf)
    }
}

impl UringPlan for Read {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[
        ("READ", opcode::Read::CODE),
        ("READ_FIXED", opcode::ReadFixed::CODE),
    ];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Read::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let (ptr, len) = self.buf.read_target();
        if let Some(index) = self.buf.fixed_index(cx.fixed_pool) {
            cx.fixed_op = true;
            return Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::ReadFixed::new(
                t,
                ptr,
                clamp_len(len),
                index
            )
            .offset(self.offset)
            .build()));
        }
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Read::new(
            t,
            ptr,
            clamp_len(len)
        )
        .offset(self.offset)
        .build()))
    }
}

impl ReadyPlan for Read {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, aio: bool) -> bool {
        !aio || self.offset == CURRENT_POSITION
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.again(true)
    }
    fn again(&mut self, first_time: bool) -> Next {
        let (fd, offset) = (self.fd, self.offset);
        match retry(|| sio::read_at(fd, &mut self.buf, offset, true)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block(fd, IN, true),
            // No RWF_NOWAIT here: after readiness a plain read does not block.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && first_time => {
                would_block(fd, IN, false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                done(retry(|| sio::read_at(fd, &mut self.buf, offset, false)))
            }
            r => done(r),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        raw(retry(|| {
            sio::read_at(self.fd, &mut self.buf, self.offset, false)
        }))
    }
}

impl AioPlan for Read {
    fn aio_start(&mut self, _: &ReadyCx, nowait: bool) -> AioStart {
        aio_at(self.offset, nowait, || {
            let (ptr, len) = self.buf.read_target();
            let iocb = rw_iocb(
                aio_abi::IOCB_CMD_PREAD,
                self.fd,
                ptr as u64,
                len,
                self.offset,
                nowait,
            );
            (iocb, Vec::new())
        })
    }
    fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext {
        aio_file_event(self.fd, res, nowait, Some(IN))
    }
}

impl OpBase for Write {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, _: Done) -> Output {
        Output::Buf(self.buf)
    }
}

impl UringPlan for Write {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[
        ("WRITE", opcode::Write::CODE),
        ("WRITE_FIXED", opcode::WriteFixed::CODE),
    ];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Write::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let (ptr, len) = self.buf.write_source();
        if let Some(index) = self.buf.fixed_index(cx.fixed_pool) {
            cx.fixed_op = true;
            return Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::WriteFixed::new(
                t,
                ptr,
                clamp_len(len),
                index
            )
            .offset(self.offset)
            .build()));
        }
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Write::new(
            t,
            ptr,
            clamp_len(len)
        )
        .offset(self.offset)
        .build()))
    }
}

impl ReadyPlan for Write {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, aio: bool) -> bool {
        !aio || self.offset == CURRENT_POSITION
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.again(true)
    }
    fn again(&mut self, first_time: bool) -> Next {
        let (fd, offset) = (self.fd, self.offset);
        match retry(|| sio::write_at(fd, &self.buf, offset, true)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block(fd, OUT, true),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && first_time => {
                would_block(fd, OUT, false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                done(retry(|| sio::write_at(fd, &self.buf, offset, false)))
            }
            r => done(r),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        raw(retry(|| {
            sio::write_at(self.fd, &self.buf, self.offset, false)
        }))
    }
}

impl AioPlan for Write {
    fn aio_start(&mut self, _: &ReadyCx, nowait: bool) -> AioStart {
        aio_at(self.offset, nowait, || {
            let (ptr, len) = self.buf.write_source();
            let iocb = rw_iocb(
                aio_abi::IOCB_CMD_PWRITE,
                self.fd,
                ptr as u64,
                len,
                self.offset,
                nowait,
            );
            (iocb, Vec::new())
        })
    }
    fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext {
        aio_file_event(self.fd, res, nowait, Some(OUT))
    }
}

impl OpBase for Readv {
    no_target!();
    one_shot_on!(fd);
    fn finish(mut self, done: Done) -> Output {
        done.fill_in_order(&mut self.bufs);
        Output::Bufs(self.bufs)
    }
}

impl UringPlan for Readv {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("READV", opcode::Readv::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Readv::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let iovecs = &mut cx.scratch().iovecs;
        iovecs.clear();
        iovecs.extend(self.bufs.iter_mut().map(Buf::read_iovec));
        let (ptr, n) = (iovecs.as_ptr(), iovecs.len() as u32);
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Readv::new(t, ptr, n)
            .offset(self.offset)
            .build()))
    }
}

/// The readiness plan of vectored I/O and `Fsync`: always the pool.
macro_rules! pool_only {
    () => {
        fn direction(&self) -> Option<(RawFd, u32)> {
            None
        }
        fn tried_inline(&self, _: bool) -> bool {
            false
        }
        fn first(&mut self, _: &ReadyCx) -> Next {
            Next::Pool
        }
        fn again(&mut self, _: bool) -> Next {
            unreachable!("the pool does it")
        }
    };
}

impl ReadyPlan for Readv {
    pool_is_final!();
    pool_only!();
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        raw(retry(|| {
            sio::readv_at(self.fd, &mut self.bufs, self.offset)
        }))
    }
}

impl AioPlan for Readv {
    fn aio_start(&mut self, _: &ReadyCx, nowait: bool) -> AioStart {
        aio_at(self.offset, nowait, || {
            let iovecs = self.bufs.iter_mut().map(Buf::read_iovec).collect();
            let iocb = rw_iocb(aio_abi::IOCB_CMD_PREADV, self.fd, 0, 0, self.offset, nowait);
            (iocb, iovecs)
        })
    }
    fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext {
        aio_file_event(self.fd, res, nowait, None)
    }
}

impl OpBase for Writev {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, _: Done) -> Output {
        Output::Bufs(self.bufs)
    }
}

impl UringPlan for Writev {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("WRITEV", opcode::Writev::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Writev::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let iovecs = &mut cx.scratch().iovecs;
        iovecs.clear();
        iovecs.extend(self.bufs.iter().map(Buf::write_iovec));
        let (ptr, n) = (iovecs.as_ptr(), iovecs.len() as u32);
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Writev::new(t, ptr, n)
            .offset(self.offset)
            .build()))
    }
}

impl ReadyPlan for Writev {
    pool_is_final!();
    pool_only!();
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        raw(retry(|| sio::writev_at(self.fd, &self.bufs, self.offset)))
    }
}

impl AioPlan for Writev {
    fn aio_start(&mut self, _: &ReadyCx, nowait: bool) -> AioStart {
        aio_at(self.offset, nowait, || {
            let iovecs = self.bufs.iter().map(Buf::write_iovec).collect();
            let iocb = rw_iocb(
                aio_abi::IOCB_CMD_PWRITEV,
                self.fd,
                0,
                0,
                self.offset,
                nowait,
            );
            (iocb, iovecs)
        })
    }
    fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext {
        aio_file_event(self.fd, res, nowait, None)
    }
}

impl OpBase for Fsync {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, _: Done) -> Output {
        Output::None
    }
}

impl UringPlan for Fsync {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("FSYNC", opcode::Fsync::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Fsync::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let flags = if self.data_only {
            FsyncFlags::DATASYNC
        } else {
            FsyncFlags::empty()
        };
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Fsync::new(t)
            .flags(flags)
            .build()))
    }
}

impl ReadyPlan for Fsync {
    pool_is_final!();
    pool_only!();
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        raw(retry(|| sio::fsync(self.fd, self.data_only)).map(|()| 0))
    }
}

impl AioPlan for Fsync {
    fn aio_start(&mut self, _: &ReadyCx, _: bool) -> AioStart {
        let opcode = if self.data_only {
            aio_abi::IOCB_CMD_FDSYNC
        } else {
            aio_abi::IOCB_CMD_FSYNC
        };
        let iocb = Iocb {
            aio_lio_opcode: opcode,
            aio_fildes: self.fd as u32,
            ..Iocb::default()
        };
        AioStart::Request {
            iocb,
            iovecs: Vec::new(),
            nowait: false,
        }
    }
    fn aio_event(&mut self, res: i32, _: bool) -> AioNext {
        // Where the filesystem refuses AIO fsync, the pool does it.
        if res == -libc::EINVAL {
            AioNext::Pool
        } else {
            AioNext::Done(res)
        }
    }
}
