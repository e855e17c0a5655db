//! Every system call and kernel ABI struct oneloop touches, behind small safe functions.
//!
//! This is one of the two places where `unsafe` code lives (the other is each backend's
//! in-flight table, which hands memory to the kernel). Functions here whose soundness rests
//! on their caller are `unsafe fn` with a `# Safety` section (`owned_fd`, `vec_filled`,
//! `Done::new`); each call states why its contract holds. [`Done`] is the one bridge to
//! safe code: made only by the in-flight tables, it lets an op grow its buffers and wrap its
//! new descriptor. Each function here turns a raw call into an
//! `io::Result`: `-1` becomes `io::Error::last_os_error()` in exactly one place, [`syscall!`].
//! Nothing here retries `EINTR`: callers decide, since a wait must recompute its remaining time.

pub(crate) mod aio;
mod alloc;
pub(crate) mod buf_ring;
mod done;
pub(crate) mod fixed;
pub(crate) mod posix;
pub(crate) mod uring;

pub(crate) use self::done::Done;

pub(crate) use alloc::AlignedAlloc;

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Runs a libc call and turns a `-1` return into the thread's `errno` as an `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site passes arguments that satisfy the call's contract; the
        // comment at the call site says why.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Wraps a descriptor the kernel just gave us, which nothing else owns.
///
/// # Safety
/// `fd` must be a descriptor the kernel has just returned to this process (an accepted
/// socket, an opened file, a new eventfd) that no other owner holds: it is closed on drop.
pub(crate) unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: the caller's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new non-blocking, close-on-exec eventfd with a zero count.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY (syscall!): no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: `eventfd` just returned this new descriptor.
    Ok(unsafe { owned_fd(fd) })
}

/// Adds one to an eventfd's count. A full counter (`EAGAIN`) already means "woken".
pub(crate) fn eventfd_write(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY (syscall!): `one` is 8 readable bytes that outlive the call.
    match syscall!(write(fd, (&one as *const u64).cast(), 8)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resets an eventfd's count to zero (a zero count is fine: nothing to reset).
pub(crate) fn eventfd_reset(fd: RawFd) -> io::Result<()> {
    let mut count: u64 = 0;
    // SAFETY (syscall!): `count` is 8 writable bytes that outlive the call.
    match syscall!(read(fd, (&mut count as *mut u64).cast(), 8)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// `epoll_wait(epfd, events, 0)`: collects whatever is ready now, never blocks.
pub(crate) fn epoll_wait_now(epfd: RawFd, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    loop {
        // SAFETY (syscall!): `events` is a writable array of `max` epoll_event entries.
        match syscall!(epoll_wait(epfd, events.as_mut_ptr(), max, 0)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `fd` is an epoll instance: `Ok` if so; `EINVAL` if it is some other file, `EBADF`
/// if it is not open. Emulated `EpollWait`s check this at submission, as io_uring's native
/// `EPOLL_WAIT` does, so a wrong descriptor fails at once instead of waiting on it.
///
/// One `epoll_ctl(fd, EPOLL_CTL_DEL, probe)` where `probe` is the ring's own wake eventfd,
/// which no epoll set a caller owns can hold (it never leaves the ring): an epoll instance
/// answers `ENOENT`, anything else `EINVAL` (or `EBADF`). The ring's own epoll instance
/// (epoll backend), which does hold it, is refused by the caller before this is asked.
pub(crate) fn epoll_check(fd: RawFd, probe: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): `EPOLL_CTL_DEL` reads no event (null is allowed since Linux 2.6.9).
    match syscall!(epoll_ctl(
        fd,
        libc::EPOLL_CTL_DEL,
        probe,
        std::ptr::null_mut()
    )) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
        // The probe was in `fd`'s set: only a set of the ring's own holds it, and that set is
        // an epoll instance all the same.
        Ok(_) => Ok(()),
    }
}

/// Marks `len` more bytes of `vec` as initialised after the kernel wrote them.
///
/// Reads into a `Vec<u8>` fill its spare capacity; this records what was filled.
///
/// # Safety
/// The kernel (or a pool thread's system call) must have written `len` bytes into the spare
/// capacity that starts at `vec.len()`.
pub(crate) unsafe fn vec_filled(vec: &mut Vec<u8>, len: usize) {
    let new_len = vec.len() + len;
    assert!(
        new_len <= vec.capacity(),
        "kernel reported more bytes than the buffer holds"
    );
    // SAFETY: by the caller's contract the kernel wrote `len` bytes into the spare capacity
    // that starts at `vec.len()`, so `..new_len` is initialised, and `new_len <= capacity`
    // was just checked.
    unsafe { vec.set_len(new_len) }
}

/// A socket address in the kernel's layout, plus its length.
#[derive(Clone, Copy)]
pub(crate) struct RawSockAddr {
    /// The address, as `sockaddr_in` or `sockaddr_in6` inside the storage.
    pub storage: libc::sockaddr_storage,
    /// How many bytes of `storage` are meaningful.
    pub len: libc::socklen_t,
}

impl RawSockAddr {
    /// An empty address (family `AF_UNSPEC`, length 0).
    pub fn empty() -> Self {
        // SAFETY: `sockaddr_storage` is plain old data; all-zero is `AF_UNSPEC`.
        let storage = unsafe { mem::zeroed() };
        RawSockAddr { storage, len: 0 }
    }

    /// Converts a Rust socket address to the kernel layout.
    pub fn from_socket_addr(addr: &SocketAddr) -> Self {
        let mut raw = RawSockAddr::empty();
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
                unsafe {
                    std::ptr::write(&mut raw.storage as *mut _ as *mut libc::sockaddr_in, sin)
                };
                raw.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in6`.
                unsafe {
                    std::ptr::write(&mut raw.storage as *mut _ as *mut libc::sockaddr_in6, sin6)
                };
                raw.len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        raw
    }

    /// A pointer the kernel can read the address from.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }
}

/// Reads a small sysctl file such as `/proc/sys/fs/aio-max-nr` as a number.
pub(crate) fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The soft and hard `RLIMIT_MEMLOCK`, in bytes (`u64::MAX` for unlimited).
pub(crate) fn memlock_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (syscall!): `lim` is a writable `rlimit` that outlives the call.
    syscall!(getrlimit(libc::RLIMIT_MEMLOCK, &mut lim))?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Whether this process holds `CAP_IPC_LOCK` in its effective set (then io_uring charges
/// nothing to `RLIMIT_MEMLOCK`).
pub(crate) fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The running kernel's release string (`uname -r`).
pub(crate) fn kernel_release() -> String {
    // SAFETY: `utsname` is plain old data; all-zero is valid.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY (syscall!): `uts` is a writable `utsname` that outlives the call.
    if syscall!(uname(&mut uts)).is_err() {
        return "unknown".into();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A new epoll instance (close-on-exec).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY (syscall!): no pointers.
    let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: `epoll_create1` just returned this new descriptor.
    Ok(unsafe { owned_fd(fd) })
}

/// An io_uring SQE with its `len` and op-flags fields set: what the io-uring crate's builders
/// leave out for some requests — `POLL_REMOVE` with `IORING_POLL_UPDATE_EVENTS` takes its
/// update flags in `len` and the new mask in `poll32_events` (the op-flags union), and the
/// crate's `PollRemove` sets neither.
///
/// The kernel's layout (`include/uapi/linux/io_uring.h`): `len` is the `u32` at byte 24,
/// the op-flags union the `u32` at byte 28.
pub(crate) fn sqe_with_len_and_flags(
    entry: io_uring::squeue::Entry,
    len: u32,
    op_flags: u32,
) -> io_uring::squeue::Entry {
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`
    // (transmute checks the size), plain integers whatever the bytes: every bit pattern is a
    // valid value both ways.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    raw[28..32].copy_from_slice(&op_flags.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], io_uring::squeue::Entry>(raw) }
}

#[cfg(test)]
mod sqe_tests {
    #[test]
    fn len_and_flags_land_where_the_kernel_reads_them() {
        let entry = io_uring::opcode::PollRemove::new(0x1234)
            .build()
            .user_data(7);
        let entry = super::sqe_with_len_and_flags(entry, 0b11, 0x45);
        // SAFETY: as in `sqe_with_len_and_flags`.
        let raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
        assert_eq!(raw[0], io_uring::opcode::PollRemove::CODE);
        assert_eq!(
            u64::from_ne_bytes(raw[16..24].try_into().unwrap()),
            0x1234,
            "addr"
        );
        assert_eq!(
            u32::from_ne_bytes(raw[24..28].try_into().unwrap()),
            0b11,
            "len"
        );
        assert_eq!(
            u32::from_ne_bytes(raw[28..32].try_into().unwrap()),
            0x45,
            "op flags"
        );
        assert_eq!(
            u64::from_ne_bytes(raw[32..40].try_into().unwrap()),
            7,
            "user_data"
        );
    }
}
