//! Descriptor ops: `Close` and `OpenAt` — each declared once, with its io_uring request and
//! its readiness plan (a close is done at once; an open whose look-up is cached opens inline,
//! the rest on the pool). On aio they take the readiness path.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use io_uring::opcode;
use io_uring::types::{Fd, OpenHow};

use super::plan::{
    aio_takes_readiness, errno, no_target, one_request, one_shot_on, pool_is_final, retry, AioNext,
    AioPlan, AioStart, Lowered, Next, OpBase, ReadyCx, ReadyPlan, UringCx, UringPlan,
};
use super::Output;
use crate::sys::posix::{self as sio, FdKind};
use crate::sys::Done;

/// `openat2`'s "look up from the caches only, else `EAGAIN`" (Linux 5.12).
const RESOLVE_CACHED: u64 = 0x20;

/// Closes a descriptor the ring takes ownership of (`close(2)`). Completes with `Ok(0)`.
///
/// If the op is cancelled before it runs, the completion gives the descriptor back.
#[derive(Debug)]
pub struct Close {
    pub(crate) fd: OwnedFd,
}

impl Close {
    /// Closes `fd`.
    pub fn new(fd: OwnedFd) -> Close {
        Close { fd }
    }
}

/// Opens a file relative to a directory (`openat2(2)`), close-on-exec.
///
/// Completes with the descriptor number and the file as an owned fd in the completion.
/// `resolve` takes `RESOLVE_*` flags, e.g. `libc::RESOLVE_BENEATH` to refuse paths that
/// escape `dirfd`.
#[derive(Debug)]
pub struct OpenAt {
    pub(crate) dirfd: RawFd,
    pub(crate) path: CString,
    pub(crate) flags: i32,
    pub(crate) mode: u32,
    pub(crate) resolve: u64,
    /// The directory `dirfd` names, kept open by the op itself ([`OpenAt::in_dir`]).
    dir: Option<std::sync::Arc<OwnedFd>>,
}

impl OpenAt {
    /// Opens `path` (relative to `dirfd`, or `libc::AT_FDCWD`) with `O_*` `flags`.
    ///
    /// # Errors
    /// `InvalidInput` if `path` contains a NUL byte.
    pub fn new(dirfd: RawFd, path: impl Into<Vec<u8>>, flags: i32) -> std::io::Result<OpenAt> {
        let path = CString::new(path).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
        })?;
        Ok(OpenAt {
            dirfd,
            path,
            flags: flags | libc::O_CLOEXEC,
            mode: 0o644,
            resolve: 0,
            dir: None,
        })
    }

    /// Opens `path` relative to the directory `dir`, which the op keeps open until its final
    /// completion: a caller that gives up on the op (and closes its own handle) can never
    /// make the open land in another directory that took the descriptor's number.
    ///
    /// # Errors
    /// `InvalidInput` if `path` contains a NUL byte.
    pub fn in_dir(
        dir: std::sync::Arc<OwnedFd>,
        path: impl Into<Vec<u8>>,
        flags: i32,
    ) -> std::io::Result<OpenAt> {
        let mut op = OpenAt::new(std::os::fd::AsRawFd::as_raw_fd(&*dir), path, flags)?;
        op.dir = Some(dir);
        Ok(op)
    }
    /// The mode for a created file (default `0o644`; ignored unless `O_CREAT` or `O_TMPFILE`).
    pub fn mode(mut self, mode: u32) -> OpenAt {
        self.mode = mode;
        self
    }
    /// `RESOLVE_*` flags for path resolution.
    pub fn resolve(mut self, resolve: u64) -> OpenAt {
        self.resolve = resolve;
        self
    }

    /// The mode the kernel gets: `openat2` refuses a mode unless the open may create a file.
    pub(crate) fn effective_mode(&self) -> u32 {
        let creates =
            self.flags & libc::O_CREAT != 0 || self.flags & libc::O_TMPFILE == libc::O_TMPFILE;
        if creates {
            self.mode
        } else {
            0
        }
    }
}

impl OpBase for Close {
    no_target!();
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn is_multishot(&self) -> bool {
        false
    }
    fn finish(self, done: Done) -> Output {
        if done.raw() == -libc::ECANCELED {
            // Never ran: the descriptor is still open and still the caller's.
            Output::Fd(self.fd)
        } else {
            // Linux releases the descriptor even when close reports an error.
            let _ = self.fd.into_raw_fd();
            Output::None
        }
    }
}

impl UringPlan for Close {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("CLOSE", opcode::Close::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Close::CODE)
    }
    fn lower(&mut self, _: &mut UringCx<'_>) -> Lowered {
        // A fixed Close would empty the table slot, not close the descriptor: always plain.
        Lowered::Sqe(opcode::Close::new(Fd(self.fd.as_raw_fd())).build())
    }
}

impl ReadyPlan for Close {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        match sio::close(self.fd.as_raw_fd()) {
            Ok(()) => Next::Done(0),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("Close is done at once")
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Close is done at once")
    }
}

impl AioPlan for Close {
    aio_takes_readiness!();
}

impl OpBase for OpenAt {
    no_target!();
    one_shot_on!(dirfd);
    fn finish(self, done: Done) -> Output {
        done.into_fd().map_or(Output::None, Output::Fd)
    }
}

impl UringPlan for OpenAt {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("OPENAT2", opcode::OpenAt2::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::OpenAt2::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let how = &mut cx.scratch().how;
        *how = OpenHow::new()
            .flags(self.flags as u32 as u64)
            .mode(u64::from(self.effective_mode()))
            .resolve(self.resolve);
        // The directory is always plain (never a fixed slot).
        Lowered::Sqe(opcode::OpenAt2::new(Fd(self.dirfd), self.path.as_ptr(), how).build())
    }
}

impl ReadyPlan for OpenAt {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.open_cached()
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("OpenAt is not readiness-driven")
    }
    fn blocking(&mut self, produced: &mut Option<OwnedFd>) -> i32 {
        let opened = retry(|| {
            sio::openat2(
                self.dirfd,
                &self.path,
                self.flags,
                self.effective_mode(),
                self.resolve,
            )
        });
        match opened {
            Ok(fd) => {
                let raw = fd.as_raw_fd();
                *produced = Some(fd);
                raw
            }
            Err(e) => -errno(&e),
        }
    }
}

impl AioPlan for OpenAt {
    aio_takes_readiness!();
}

impl OpenAt {
    /// The inline try: the look-up from the kernel's caches only (`RESOLVE_CACHED`, else
    /// `EAGAIN`), and the open itself non-blocking, so that neither waits for the disk nor
    /// for a FIFO's other end. An open that asked for `O_NONBLOCK` is kept as it is (no
    /// `fstat`: it is what the pool would open). Otherwise only a regular file or directory
    /// is kept (its `O_NONBLOCK` cleared); anything else — a look-up that would block, a
    /// creating open (which the kernel never does from the caches), a FIFO or device, an
    /// error the non-blocking open may have caused — is opened as asked on the pool. (A FIFO
    /// or device found this way was opened non-blocking once and closed before the pool
    /// opens it.) Errors of the look-up itself stand.
    fn open_cached(&self) -> Next {
        let flags = self.flags | libc::O_NONBLOCK;
        let resolve = self.resolve | RESOLVE_CACHED;
        let mode = self.effective_mode();
        match retry(|| sio::openat2(self.dirfd, &self.path, flags, mode, resolve)) {
            // Asked for non-blocking: whatever it opened is what the pool would have opened.
            Ok(fd) if self.flags & libc::O_NONBLOCK != 0 => Next::Done(fd.into_raw_fd()),
            Ok(fd) => match sio::fd_kind(fd.as_raw_fd()) {
                Ok(FdKind::File) => {
                    if let Err(e) = sio::clear_nonblocking(fd.as_raw_fd()) {
                        return Next::Done(-errno(&e));
                    }
                    Next::Done(fd.into_raw_fd())
                }
                Ok(FdKind::Block | FdKind::Pollable) | Err(_) => Next::Pool,
            },
            Err(e) => match errno(&e) {
                code @ (libc::ENOENT
                | libc::ENOTDIR
                | libc::EXDEV
                | libc::ELOOP
                | libc::EACCES
                | libc::ENAMETOOLONG
                | libc::EISDIR
                | libc::EBADF) => Next::Done(-code),
                // EAGAIN: not cached (or a creating open); EINVAL: a kernel before 5.12.
                _ => Next::Pool,
            },
        }
    }
}
