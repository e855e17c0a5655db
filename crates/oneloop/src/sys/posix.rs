//! Readiness-style system calls for the epoll backend and the blocking pool.
//!
//! Each takes the op's owned [`Buf`] and finds the memory itself, so callers stay safe code:
//! the buffer guarantees its region is valid and owned for the call. Results are raw counts;
//! callers map errors once per backend. Nothing here retries `EINTR`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{owned_fd, syscall, RawSockAddr};
use crate::buf::Buf;

/// The offset that means "the file's current position" (`oneloop::CURRENT_POSITION`).
pub(crate) const CURRENT_POSITION: u64 = u64::MAX;

/// The kernel's "current file position" offset for `preadv2`/`pwritev2`.
fn kernel_offset(offset: u64) -> libc::off_t {
    if offset == CURRENT_POSITION {
        -1
    } else {
        offset as libc::off_t
    }
}

/// `preadv2(fd, [buf's read target], offset, RWF_NOWAIT?)`.
pub(crate) fn read_at(fd: RawFd, buf: &mut Buf, offset: u64, nowait: bool) -> io::Result<usize> {
    let (ptr, len) = buf.read_target();
    let iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
    // SAFETY (syscall!): `iov` names `buf`'s spare region, writable and owned by `buf` for
    // the whole call.
    syscall!(preadv2(fd, &iov, 1, kernel_offset(offset), flags)).map(|n| n as usize)
}

/// `pwritev2(fd, [buf's bytes], offset, RWF_NOWAIT?)`.
pub(crate) fn write_at(fd: RawFd, buf: &Buf, offset: u64, nowait: bool) -> io::Result<usize> {
    let (ptr, len) = buf.write_source();
    let iov = libc::iovec {
        iov_base: ptr.cast_mut().cast(),
        iov_len: len,
    };
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
    // SAFETY (syscall!): `iov` names `buf`'s initialised bytes, readable for the call.
    syscall!(pwritev2(fd, &iov, 1, kernel_offset(offset), flags)).map(|n| n as usize)
}

/// `preadv2` into several buffers, in order.
pub(crate) fn readv_at(fd: RawFd, bufs: &mut [Buf], offset: u64) -> io::Result<usize> {
    let iovs: Vec<libc::iovec> = bufs.iter_mut().map(Buf::read_iovec).collect();
    // SAFETY (syscall!): each iovec names one buffer's spare region, owned for the call.
    syscall!(preadv2(
        fd,
        iovs.as_ptr(),
        iovs.len() as i32,
        kernel_offset(offset),
        0
    ))
    .map(|n| n as usize)
}

/// `pwritev2` from several buffers, in order.
pub(crate) fn writev_at(fd: RawFd, bufs: &[Buf], offset: u64) -> io::Result<usize> {
    let iovs: Vec<libc::iovec> = bufs.iter().map(Buf::write_iovec).collect();
    // SAFETY (syscall!): each iovec names one buffer's bytes, readable for the call.
    syscall!(pwritev2(
        fd,
        iovs.as_ptr(),
        iovs.len() as i32,
        kernel_offset(offset),
        0
    ))
    .map(|n| n as usize)
}

/// `fsync(fd)` or `fdatasync(fd)`.
pub(crate) fn fsync(fd: RawFd, data_only: bool) -> io::Result<()> {
    // SAFETY (syscall!): no pointers.
    if data_only {
        syscall!(fdatasync(fd)).map(drop)
    } else {
        syscall!(fsync(fd)).map(drop)
    }
}

/// `openat2(dirfd, path, {flags, mode, resolve})`.
pub(crate) fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u32 as u64,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` of the given size;
    // both outlive the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if res < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `openat2` just returned this new descriptor.
    Ok(unsafe { owned_fd(res as RawFd) })
}

/// `fcntl(fd, F_DUPFD_CLOEXEC)`: another descriptor for the same open file.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY (syscall!): no pointers.
    let new = syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?;
    // SAFETY: `fcntl` just returned this new descriptor.
    Ok(unsafe { owned_fd(new) })
}

/// `accept4(fd, NULL, NULL, flags)`.
pub(crate) fn accept(fd: RawFd, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY (syscall!): null address pointers are allowed (the peer address is not wanted).
    let new = syscall!(accept4(
        fd,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        flags
    ))?;
    // SAFETY: `accept4` just returned this new descriptor.
    Ok(unsafe { owned_fd(new) })
}

/// `connect(fd, addr)`.
pub(crate) fn connect(fd: RawFd, addr: &RawSockAddr) -> io::Result<()> {
    // SAFETY (syscall!): `addr` holds `len` valid bytes of a socket address.
    syscall!(connect(fd, addr.as_ptr(), addr.len)).map(drop)
}

/// An integer socket option at `SOL_SOCKET`.
fn socket_int_option(fd: RawFd, option: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY (syscall!): `value` and `len` are writable and sized as the call expects.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        option,
        (&mut value as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(value)
}

/// The pending error of a socket (`SO_ERROR`), as a raw errno (0 for none).
pub(crate) fn socket_error(fd: RawFd) -> io::Result<i32> {
    socket_int_option(fd, libc::SO_ERROR)
}

/// Whether `fd` is a TCP socket (IPv4 or IPv6, `SOCK_STREAM`, protocol TCP — not SCTP or
/// MPTCP); `false` for anything else.
pub(crate) fn is_tcp_socket(fd: RawFd) -> bool {
    socket_int_option(fd, libc::SO_TYPE).is_ok_and(|t| t == libc::SOCK_STREAM)
        && socket_int_option(fd, libc::SO_DOMAIN)
            .is_ok_and(|d| d == libc::AF_INET || d == libc::AF_INET6)
        && socket_int_option(fd, libc::SO_PROTOCOL).is_ok_and(|p| p == libc::IPPROTO_TCP)
}

/// Whether a socket is connected (`getpeername` succeeds; `ENOTCONN`: not yet).
pub(crate) fn is_connected(fd: RawFd) -> io::Result<bool> {
    // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY (syscall!): `addr` and `len` are writable and sized as the call expects.
    match syscall!(getpeername(
        fd,
        (&mut addr as *mut libc::sockaddr_storage).cast(),
        &mut len
    )) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `recv(fd, buf's read target, flags)`.
/// Returns the bytes received and the bytes asked for.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut Buf, flags: i32) -> io::Result<(usize, usize)> {
    recv_errno(fd, buf, flags).map_err(io::Error::from_raw_os_error)
}

/// [`recv`] with the failure as a bare `errno` (no `io::Error` made and dropped on the hot
/// path of an attempt that says "not now").
#[inline]
fn recv_errno(fd: RawFd, buf: &mut Buf, flags: i32) -> Result<(usize, usize), i32> {
    let (ptr, len) = buf.read_target();
    // A raw system call: glibc's `recv` is a cancellation point, whose enable/disable costs
    // ~90 instructions per call on the hot path, and oneloop never uses thread cancellation.
    // SAFETY: `ptr..ptr+len` is `buf`'s spare region, writable for the call; the address
    // arguments are null (`recvfrom` without a source address).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            ptr,
            len,
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        return Err(errno());
    }
    Ok((n as usize, len))
}

/// The calling thread's `errno`.
#[inline]
fn errno() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno, always valid to read.
    unsafe { *libc::__errno_location() }
}

/// One non-blocking transfer outside any ring, retried on `EINTR`: `Ok(None)` when the
/// socket says "not now" (`EAGAIN`).
#[inline]
fn attempt(
    mut f: impl FnMut() -> Result<(usize, usize), i32>,
) -> io::Result<Option<(usize, usize)>> {
    loop {
        match f() {
            Ok(moved) => return Ok(Some(moved)),
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// [`recv`] outside any ring, for [`Recv::try_now`](crate::Recv::try_now): the bytes
/// received are added to `buf` at once, as an op's completion would add them. `Ok(None)`:
/// nothing to receive now.
#[inline]
pub(crate) fn recv_now(fd: RawFd, buf: &mut Buf, flags: i32) -> io::Result<Option<(usize, usize)>> {
    let Some((n, asked)) = attempt(|| recv_errno(fd, buf, flags))? else {
        return Ok(None);
    };
    // Linux moves at most `MAX_RW_COUNT` (below `i32::MAX`) bytes per call.
    let res = i32::try_from(n).expect("one recv moves less than 2 GiB");
    // SAFETY: `res` is what the kernel reported for exactly this recv, which wrote into
    // `buf`'s read target.
    unsafe { super::Done::new(res) }.fill(buf);
    Ok(Some((n, asked)))
}

/// `send(fd, buf's bytes, flags)`.
/// Returns the bytes sent and the bytes offered.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &Buf, flags: i32) -> io::Result<(usize, usize)> {
    send_errno(fd, buf, flags).map_err(io::Error::from_raw_os_error)
}

/// [`send`] outside any ring, for [`Send::try_now`](crate::Send::try_now); `Ok(None)`: no
/// room now.
#[inline]
pub(crate) fn send_now(fd: RawFd, buf: &Buf, flags: i32) -> io::Result<Option<(usize, usize)>> {
    attempt(|| send_errno(fd, buf, flags))
}

/// [`send`] with the failure as a bare `errno`.
#[inline]
fn send_errno(fd: RawFd, buf: &Buf, flags: i32) -> Result<(usize, usize), i32> {
    let (ptr, len) = buf.write_source();
    // SAFETY: `ptr..ptr+len` is `buf`'s initialised bytes (or their first part), readable
    // for the call.
    unsafe { sendto_raw(fd, ptr, len, flags) }
}

/// One non-blocking send of `bytes` outside any ring, for [`crate::sockets::send_now`].
#[inline]
pub(crate) fn send_bytes_now(fd: RawFd, bytes: &[u8], flags: i32) -> io::Result<Option<usize>> {
    // SAFETY: a slice's bytes are readable for the call.
    attempt(|| unsafe { sendto_raw(fd, bytes.as_ptr(), bytes.len(), flags) })
        .map(|sent| sent.map(|(n, _)| n))
}

/// `sendto(fd, ptr, len, flags)` without a destination (a connected socket): the bytes sent
/// and `len`, or `errno`.
///
/// # Safety
/// `ptr..ptr+len` must be readable for the call.
#[inline]
unsafe fn sendto_raw(
    fd: RawFd,
    ptr: *const u8,
    len: usize,
    flags: i32,
) -> Result<(usize, usize), i32> {
    // A raw system call, as `recv` above.
    // SAFETY: the caller's contract for the source; no destination address.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            ptr,
            len,
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(errno());
    }
    Ok((n as usize, len))
}

/// Sets `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): no pointers.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY (syscall!): no pointers.
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// What `fd` reports now for `events` (`poll` with a zero timeout): the bits it is ready for
/// (with `POLLERR`/`POLLHUP`/`POLLNVAL` whether asked or not), 0 if none.
pub(crate) fn poll_now(fd: RawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY (syscall!): `p` is one writable `pollfd` that outlives the call.
    syscall!(poll(&mut p, 1, 0))?;
    Ok(p.revents)
}

/// Whether input waits on `fd` now — bytes, the end of the stream, or an error (what a
/// receive would return at once).
pub(crate) fn input_waiting(fd: RawFd) -> io::Result<bool> {
    let waiting = libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP;
    Ok(poll_now(fd, libc::POLLIN)? & waiting != 0)
}

/// Clears `O_NONBLOCK` on a descriptor.
pub(crate) fn clear_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): no pointers.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    // SAFETY (syscall!): no pointers.
    syscall!(fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK))?;
    Ok(())
}

/// `close(fd)` of a descriptor whose owner (a `Close` op) hands it over to be closed; the
/// owner forgets it afterwards.
pub(crate) fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): no pointers; the `Close` op that owns `fd` never closes it again.
    syscall!(close(fd)).map(drop)
}

/// `epoll_ctl(epfd, op, fd, {events, data})`.
pub(crate) fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY (syscall!): `ev` is a valid epoll_event that outlives the call.
    syscall!(epoll_ctl(epfd, op, fd, &mut ev)).map(drop)
}

/// Set once `epoll_pwait2` turned out to be missing (kernels before 5.11, or valgrind).
static NO_PWAIT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `epoll_pwait2(epfd, events, timeout)`: `None` waits without limit. `EINTR` is returned.
/// Where `epoll_pwait2` is missing, `epoll_wait` with the timeout rounded up to milliseconds.
pub(crate) fn epoll_wait(
    epfd: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    use std::sync::atomic::Ordering;
    let max = events.len().min(i32::MAX as usize) as i32;
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // A raw system call (no cancellation-point wrapper, as `recv` above).
        // SAFETY (syscall!): `events` is writable for `max` entries; `ts_ptr` is null or points
        // to a timespec that outlives the call; a null sigmask (size 0) leaves the mask alone.
        match syscall!(syscall(
            libc::SYS_epoll_pwait2,
            epfd.as_raw_fd(),
            events.as_mut_ptr(),
            max,
            ts_ptr,
            std::ptr::null::<libc::sigset_t>(),
            0usize
        ))
        .map(|n| n as i32)
        {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_PWAIT2.store(true, Ordering::Relaxed)
            }
            other => return other.map(|n| n as usize),
        }
    }
    let ms = timeout.map_or(-1, |t| {
        t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
    });
    // SAFETY (syscall!): `events` is writable for `max` entries.
    syscall!(epoll_wait(epfd.as_raw_fd(), events.as_mut_ptr(), max, ms)).map(|n| n as usize)
}

/// What kind of object a descriptor names, as far as the epoll backend cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// A regular file or a directory: epoll refuses it; always "ready".
    File,
    /// A block device: I/O goes to the pool like a file's.
    Block,
    /// Pipes, sockets, ttys, eventfds, epoll fds...: readiness-driven.
    Pollable,
}

/// Whether `fd` is a `signalfd`, whose readiness depends on the task that asks (an AIO poll
/// is re-checked by a kernel worker, which never has the signal pending).
pub(crate) fn is_signalfd(fd: RawFd) -> bool {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY (syscall!): `st` is a writable `struct stat` that outlives the call.
    if syscall!(fstat(fd, &mut st)).is_err() || st.st_mode & libc::S_IFMT != 0 {
        // Only anonymous inodes (eventfd, signalfd, timerfd, ...) have no file type.
        return false;
    }
    // Without /proc, every anonymous inode is taken for one: the epoll path serves them all.
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or(true, |target| target.as_os_str() == "anon_inode:[signalfd]")
}

/// `fstat`s `fd` to learn how the epoll backend should drive it.
pub(crate) fn fd_kind(fd: RawFd) -> io::Result<FdKind> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY (syscall!): `st` is a writable `struct stat` that outlives the call.
    syscall!(fstat(fd, &mut st))?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => FdKind::File,
        libc::S_IFBLK => FdKind::Block,
        _ => FdKind::Pollable,
    })
}

/// Blocks `signals` in the calling thread and opens a non-blocking `signalfd` for them.
pub(crate) fn signal_fd(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: `set` is plain old data, initialised by `sigemptyset` before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset for the duration of each call.
    unsafe { libc::sigemptyset(&mut set) };
    for &signal in signals {
        if matches!(signal, libc::SIGKILL | libc::SIGSTOP) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: as above; a bad number is reported, not undefined.
        if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    // SAFETY: `set` is valid; a null old-mask pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY (syscall!): `set` outlives the call.
    let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
    // SAFETY: `signalfd` just returned this new descriptor.
    Ok(unsafe { owned_fd(fd) })
}

/// Blocks every signal in the calling thread (pool workers: signals go to the ring's thread).
pub(crate) fn block_signals() {
    // SAFETY: `set` is a valid sigset filled by `sigfillset`; the old mask is not wanted.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether `fd` was opened with `O_DIRECT`.
pub(crate) fn is_direct(fd: RawFd) -> io::Result<bool> {
    // SAFETY (syscall!): no pointers.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    Ok(flags & libc::O_DIRECT != 0)
}

/// `socket(family of addr, kind | SOCK_CLOEXEC, 0)`.
pub(crate) fn socket(addr: &std::net::SocketAddr, kind: i32) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY (syscall!): no pointers.
    let fd = syscall!(socket(family, kind | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: `socket` just returned this new descriptor.
    Ok(unsafe { owned_fd(fd) })
}

/// Sets `SO_REUSEADDR` and `SO_REUSEPORT` on `fd`.
pub(crate) fn set_reuse_port(fd: &OwnedFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY (syscall!): `one` is a readable c_int of the size given, outliving the call.
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t
        ))?;
    }
    Ok(())
}

/// `bind(fd, addr)` then `listen(fd, backlog)`.
pub(crate) fn bind_listen(
    fd: &OwnedFd,
    addr: &std::net::SocketAddr,
    backlog: i32,
) -> io::Result<()> {
    let raw = RawSockAddr::from_socket_addr(addr);
    // SAFETY (syscall!): `raw` holds `len` valid bytes of a socket address.
    syscall!(bind(fd.as_raw_fd(), raw.as_ptr(), raw.len))?;
    // SAFETY (syscall!): no pointers.
    syscall!(listen(fd.as_raw_fd(), backlog)).map(drop)
}

/// Pins the calling thread to CPU `core`.
pub(crate) fn pin_current_thread(core: usize) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no CPU {core}"),
        ));
    }
    // SAFETY: `core` is below the set's bit count (checked above).
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY (syscall!): `set` is a valid cpu_set_t of the size given; 0 is this thread.
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))
    .map(drop)
}

/// `shutdown(fd, SHUT_WR)`.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): no pointers.
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// User plus system CPU time of this process.
pub(crate) fn cpu_time() -> io::Result<std::time::Duration> {
    rusage(libc::RUSAGE_SELF)
}

/// User plus system CPU time of the calling thread.
pub(crate) fn thread_cpu_time() -> io::Result<std::time::Duration> {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: i32) -> io::Result<std::time::Duration> {
    // SAFETY: `rusage` is plain old data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY (syscall!): `usage` is writable and outlives the call.
    syscall!(getrusage(who, &mut usage))?;
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// `posix_fadvise(fd, 0, 0, advice)` on the whole file.
pub(crate) fn fadvise(fd: RawFd, advice: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    match unsafe { libc::posix_fadvise(fd, 0, 0, advice) } {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// `sendfile(sock, file, offset, count)`: up to `count` bytes of `file` at `offset` to `sock`,
/// without a copy through user space; how many went.
pub(crate) fn sendfile(sock: RawFd, file: RawFd, offset: u64, count: usize) -> io::Result<usize> {
    let mut offset = offset as libc::off_t;
    // SAFETY (syscall!): `offset` is a writable `off_t` that outlives the call.
    syscall!(sendfile(sock, file, &mut offset, count)).map(|n| n as usize)
}

/// `cachestat(2)` (Linux 6.5): whether every page of `len` bytes at `offset` of `fd` is in
/// the page cache now. `false` when the kernel cannot say (older kernels, other files).
pub(crate) fn cached(fd: RawFd, offset: u64, len: u64) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct CacheStat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    if len == 0 {
        return true;
    }
    let range = Range { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY (syscall!): `range` and `stat` are the kernel's `cachestat_range` and `cachestat`,
    // alive for the call; it reads one and writes the other.
    let rc = syscall!(syscall(
        SYS_CACHESTAT,
        fd,
        &range as *const Range,
        &mut stat as *mut CacheStat,
        0u32
    ));
    let page = 4096;
    let pages = (offset.saturating_add(len)).div_ceil(page) - offset / page;
    rc.is_ok() && stat.nr_cache >= pages
}

/// A pipe (close-on-exec), its capacity raised toward `want` bytes where the system lets it
/// (`F_SETPIPE_SZ`, up to `pipe-max-size`): (read end, write end, capacity).
pub(crate) fn pipe_for(want: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [-1; 2];
    // SAFETY (syscall!): `fds` has room for the two descriptors.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
    // SAFETY: `pipe2` just made both descriptors; nothing else owns them.
    let (rd, wr) = unsafe { (owned_fd(fds[0]), owned_fd(fds[1])) };
    let want = want.clamp(4096, 1 << 20) as libc::c_int;
    // SAFETY (syscall!): no pointers. Refused (over `pipe-max-size`): the default stays.
    let _ = syscall!(fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, want));
    // SAFETY (syscall!): no pointers.
    let capacity = syscall!(fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ))?;
    Ok((rd, wr, capacity as usize))
}

/// Asks the kernel to back the 2 MiB-aligned part of `v`'s reserved capacity with huge pages
/// (`MADV_HUGEPAGE`). A ring's tables are reserved whole and touched as its load grows: one
/// huge-page fault then stands for 512 small ones, and the tables take fewer TLB entries.
/// Advice only: where huge pages are off, or the reservation holds no aligned 2 MiB (a table
/// under 2 MiB never does), nothing changes.
pub(crate) fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let addr = v.as_ptr() as usize;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + v.capacity() * std::mem::size_of::<T>()) & !(HUGE - 1);
    if end > start {
        // SAFETY: advice on memory `v` owns; MADV_HUGEPAGE never changes its contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod sendfile_tests {
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd;

    #[test]
    fn sendfile_pipe_and_cachestat() {
        let path = std::env::temp_dir().join(format!("oneloop-sendfile-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[7; 10_000])
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // Just written: its pages are cached (where the kernel can say at all).
        let _ = super::cached(file.as_raw_fd(), 0, 10_000);
        assert!(
            super::cached(file.as_raw_fd(), 0, 0),
            "an empty range is cached"
        );
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent = super::sendfile(b.as_raw_fd(), file.as_raw_fd(), 100, 50).unwrap();
        assert_eq!(sent, 50);
        let mut got = [0; 50];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got, [7; 50]);
        let (_rd, _wr, capacity) = super::pipe_for(256 * 1024).unwrap();
        assert!(capacity >= 4096, "{capacity}");
        std::fs::remove_file(path).unwrap();
    }
}
