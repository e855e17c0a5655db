//! The Linux AIO ABI (`linux/aio_abi.h`), defined once, and its raw system calls.
//!
//! The aio backend drives these; today `probe` uses them to tell whether `io_setup` works on
//! this machine (the system-wide `aio-max-nr` may be used up) and whether the kernel has
//! `IOCB_CMD_POLL` (4.19+), by polling an eventfd, writing it, and reaping the event, as
//! Seastar does at start-up.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// An AIO context handle, as `io_setup` returns it.
pub(crate) type AioContext = libc::c_ulong;

/// `IOCB_CMD_PREAD`.
pub(crate) const IOCB_CMD_PREAD: u16 = 0;
/// `IOCB_CMD_PWRITE`.
pub(crate) const IOCB_CMD_PWRITE: u16 = 1;
/// `IOCB_CMD_FSYNC`.
pub(crate) const IOCB_CMD_FSYNC: u16 = 2;
/// `IOCB_CMD_FDSYNC`.
pub(crate) const IOCB_CMD_FDSYNC: u16 = 3;
/// `IOCB_CMD_POLL` (Linux 4.19+).
pub(crate) const IOCB_CMD_POLL: u16 = 5;
/// `IOCB_CMD_PREADV`.
pub(crate) const IOCB_CMD_PREADV: u16 = 7;
/// `IOCB_CMD_PWRITEV`.
pub(crate) const IOCB_CMD_PWRITEV: u16 = 8;

/// `struct iocb` (little-endian layout: `aio_key` precedes `aio_rw_flags`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Iocb {
    /// Returned unchanged in the completion's `data`.
    pub aio_data: u64,
    /// Set by the kernel.
    pub aio_key: u32,
    /// `RWF_*` flags for reads and writes.
    pub aio_rw_flags: i32,
    /// One of the `IOCB_CMD_*` codes.
    pub aio_lio_opcode: u16,
    /// Request priority.
    pub aio_reqprio: i16,
    /// The descriptor the request works on.
    pub aio_fildes: u32,
    /// Buffer (or iovec array) address; for `IOCB_CMD_POLL`, the event mask.
    pub aio_buf: u64,
    /// Buffer length (or iovec count).
    pub aio_nbytes: u64,
    /// File offset.
    pub aio_offset: i64,
    /// Reserved.
    pub aio_reserved2: u64,
    /// `IOCB_FLAG_*`.
    pub aio_flags: u32,
    /// The eventfd signalled when `IOCB_FLAG_RESFD` is set.
    pub aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IoEvent {
    /// The request's `aio_data`.
    pub data: u64,
    /// The address of the request's iocb.
    pub obj: u64,
    /// The result (negative errno on failure; the mask for a poll).
    pub res: i64,
    /// Secondary result.
    pub res2: i64,
}

fn check(res: libc::c_long) -> io::Result<libc::c_long> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// `io_setup(nr_events)`: a new context.
pub(crate) fn io_setup(nr_events: u32) -> io::Result<AioContext> {
    let mut ctx: AioContext = 0;
    // SAFETY: `ctx` is a writable, zeroed context handle that outlives the call.
    check(unsafe { libc::syscall(libc::SYS_io_setup, nr_events as libc::c_long, &mut ctx) })?;
    Ok(ctx)
}

/// `io_destroy(ctx)`: waits for the context's requests and frees it.
pub(crate) fn io_destroy(ctx: AioContext) -> io::Result<()> {
    // SAFETY: no pointers; a stale `ctx` is refused with EINVAL.
    check(unsafe { libc::syscall(libc::SYS_io_destroy, ctx) }).map(drop)
}

/// `io_submit(ctx, iocbs)`: how many of `iocbs` the kernel accepted (a prefix).
///
/// # Safety
/// Every iocb and every buffer, iovec array and descriptor it names must stay valid until the
/// kernel posts the request's event (or `io_cancel` consumes it).
pub(crate) unsafe fn io_submit(ctx: AioContext, iocbs: &[*mut Iocb]) -> io::Result<usize> {
    // SAFETY: `iocbs` is a readable array of `len` iocb pointers; the caller vouches for the
    // memory they name.
    let res = unsafe {
        libc::syscall(
            libc::SYS_io_submit,
            ctx,
            iocbs.len() as libc::c_long,
            iocbs.as_ptr(),
        )
    };
    check(res).map(|n| n as usize)
}

/// `io_getevents(ctx, min, events, timeout)`: how many events were written into `events`.
pub(crate) fn io_getevents(
    ctx: AioContext,
    min: usize,
    events: &mut [IoEvent],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `events` is a writable array of `len` io_event entries and `ts_ptr` is null or
    // points to a timespec; both outlive the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            min as libc::c_long,
            events.len() as libc::c_long,
            events.as_mut_ptr(),
            ts_ptr,
        )
    };
    check(res).map(|n| n as usize)
}

/// `io_cancel(ctx, iocb)`: `Ok(())` means the kernel started cancelling (its event still
/// comes); the raw error otherwise (`EINVAL`: not cancellable or already completed;
/// `EINPROGRESS` is mapped to `Ok`).
pub(crate) fn io_cancel(ctx: AioContext, iocb: *const Iocb) -> io::Result<()> {
    let mut event = IoEvent::default();
    // SAFETY: the kernel only compares `iocb`'s address with its in-flight requests and reads
    // its `aio_key`; `event` is writable and outlives the call.
    let res = unsafe { libc::syscall(libc::SYS_io_cancel, ctx, iocb, &mut event) };
    if res == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(())
    } else {
        Err(e)
    }
}

/// The head of the completion ring the kernel maps at an AIO context's address.
#[repr(C)]
struct RingHeader {
    id: u32,
    nr: u32,
    head: u32,
    tail: u32,
    magic: u32,
    compat_features: u32,
    incompat_features: u32,
    header_length: u32,
}

const AIO_RING_MAGIC: u32 = 0xa10a_10a1;

/// Reads completions straight from the kernel's mapped ring, without a system call.
///
/// # Invariant
/// `header` is the address the kernel returned as the context id, mapped for as long as the
/// context lives (the owner destroys the context only after dropping this), and the layout
/// was checked (`magic`, no incompatible features) at construction.
pub(crate) struct UserRing {
    header: *mut RingHeader,
}

impl UserRing {
    /// The ring of `ctx`, if its layout is the one this code knows.
    ///
    /// # Safety
    /// `ctx` must be a live context from `io_setup`, and the `UserRing` must be dropped before
    /// the context is destroyed.
    pub(crate) unsafe fn new(ctx: AioContext) -> Option<UserRing> {
        let header = ctx as *mut RingHeader;
        // SAFETY: the caller vouches that `ctx` is a live context, whose id is the address of
        // its mapped ring header.
        let (magic, incompat) = unsafe { ((*header).magic, (*header).incompat_features) };
        (magic == AIO_RING_MAGIC && incompat == 0).then_some(UserRing { header })
    }

    /// Moves completed events into `out` until it holds `max` (or its capacity); returns how
    /// many it moved.
    pub(crate) fn reap(&mut self, out: &mut Vec<IoEvent>, max: usize) -> usize {
        let max = max.min(out.capacity());
        use std::sync::atomic::{AtomicU32, Ordering};
        let header = self.header;
        // SAFETY: `header` is mapped and laid out as checked (invariant). No reference to the
        // whole header is made (the kernel writes `tail` concurrently): `nr` is read once (it
        // never changes), and `head`/`tail` are 4-byte aligned words accessed only atomically.
        let (nr, head_word, tail_word) = unsafe {
            let nr = std::ptr::addr_of!((*header).nr).read_volatile();
            let head_word = &*(std::ptr::addr_of!((*header).head) as *const AtomicU32);
            let tail_word = &*(std::ptr::addr_of!((*header).tail) as *const AtomicU32);
            (nr, head_word, tail_word)
        };
        // SAFETY: the event array follows the header in the same mapping (invariant).
        let events = unsafe { (header as *const u8).add(std::mem::size_of::<RingHeader>()) }
            as *const IoEvent;
        let mut head = head_word.load(Ordering::Relaxed);
        let tail = tail_word.load(Ordering::Acquire);
        let mut n = 0;
        if nr == 0 {
            return 0;
        }
        while head != tail && out.len() < max {
            // SAFETY: `head < nr` (the kernel keeps both in range), so the event is in the ring;
            // the Acquire load of `tail` orders this read after the kernel's write.
            out.push(unsafe { std::ptr::read_volatile(events.add(head as usize)) });
            head = (head + 1) % nr;
            n += 1;
        }
        if n > 0 {
            head_word.store(head, Ordering::Release);
        }
        n
    }
}

/// Polls an eventfd with `IOCB_CMD_POLL`, writes it, and waits for the event: proves the
/// kernel has AIO poll. Errors say which step failed.
pub(crate) fn probe_poll() -> Result<(), String> {
    let ctx = io_setup(4).map_err(|e| describe_setup_error(&e, 4))?;
    let result = probe_poll_in(ctx);
    let _ = io_destroy(ctx);
    result
}

fn probe_poll_in(ctx: AioContext) -> Result<(), String> {
    let efd = super::eventfd().map_err(|e| format!("eventfd: {e}"))?;
    let mut iocb = Iocb {
        aio_data: 0x5eed,
        aio_lio_opcode: IOCB_CMD_POLL,
        aio_fildes: efd.as_raw_fd() as u32,
        aio_buf: libc::POLLIN as u64,
        ..Iocb::default()
    };
    let list = [&mut iocb as *mut Iocb];
    // SAFETY: `iocb` and `efd` outlive the request: we either reap its event below or
    // destroy the context (which waits for it) before they drop.
    match unsafe { io_submit(ctx, &list) } {
        Ok(1) => {}
        Ok(n) => return Err(format!("io_submit accepted {n} of 1 poll iocbs")),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err("IOCB_CMD_POLL refused (EINVAL): kernel older than 4.19".into())
        }
        Err(e) => return Err(format!("io_submit(IOCB_CMD_POLL): {e}")),
    }
    super::eventfd_write(efd.as_raw_fd()).map_err(|e| format!("eventfd write: {e}"))?;
    let mut events = [IoEvent::default(); 1];
    let n = io_getevents(ctx, 1, &mut events, Some(Duration::from_secs(1)))
        .map_err(|e| format!("io_getevents: {e}"))?;
    if n == 1 && events[0].data == 0x5eed && events[0].res & libc::POLLIN as i64 != 0 {
        Ok(())
    } else {
        Err(format!(
            "IOCB_CMD_POLL gave no POLLIN event within 1 s (got {n} events)"
        ))
    }
}

/// Says why `io_setup(requested)` failed, in the machine's terms.
pub(crate) fn describe_setup_error(e: &io::Error, requested: u32) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => {
            let max = super::read_sysctl("/proc/sys/fs/aio-max-nr");
            let used = super::read_sysctl("/proc/sys/fs/aio-nr");
            format!(
                "io_setup({requested}): EAGAIN, more AIO events than the system has free (aio-nr {} of aio-max-nr {})",
                used.map_or("?".into(), |v| v.to_string()),
                max.map_or("?".into(), |v| v.to_string())
            )
        }
        Some(libc::ENOSYS) => "io_setup: ENOSYS, kernel built without AIO (CONFIG_AIO)".into(),
        Some(libc::EPERM) => "io_setup: EPERM, refused by a seccomp profile".into(),
        _ => format!("io_setup({requested}): {e}"),
    }
}
