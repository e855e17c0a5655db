//! `io_uring_enter` as the driver makes it, through the ring's descriptor or through its
//! registered index (`IORING_REGISTER_RING_FDS`, Linux 5.18).
//!
//! A registered ring descriptor is an index into the *calling thread's* table of rings (at
//! most 16 per thread). Entering through it skips the look-up of the descriptor in the
//! process's file table — and, in a process with threads, the reference count taken on the
//! file for the call. The `io-uring` crate keeps such an index in a `Submitter`, which borrows
//! the ring for one call; the driver keeps it for the ring's life, so the call is made here.
//!
//! # Invariants
//! * A [`RingFd`] is made, used and dropped on one thread: it lives in a `Ring`, which is
//!   `!Send`. On another thread the index would name that thread's ring, or none.
//! * Dropping it unregisters the index, so the thread's table does not keep the ring open
//!   (the registration holds a reference to the ring's file) and does not fill up.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::IoUring;

const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_ENTER_EXT_ARG: u32 = 8;
const IORING_ENTER_REGISTERED_RING: u32 = 16;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg` (`min_wait_usec` was padding before 6.12).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// The ring's descriptor registered with the calling thread: its index there.
#[derive(Debug)]
pub(crate) struct RingFd {
    index: u32,
    ring: RawFd,
}

impl RingFd {
    /// Registers `ring`'s descriptor with this thread. Fails with `EINVAL` before 5.18 and
    /// `EBUSY` when the thread already has 16.
    pub(crate) fn register(ring: &IoUring) -> io::Result<RingFd> {
        let fd = ring.as_raw_fd();
        let mut update = RsrcUpdate {
            // Any free index.
            offset: u32::MAX,
            resv: 0,
            data: fd as u64,
        };
        // SAFETY: `update` is a valid `io_uring_rsrc_update` the kernel reads and writes (the
        // index it picked) during the call; `nr_args` is 1.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                IORING_REGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1,
            )
        };
        match res {
            1 => Ok(RingFd {
                index: update.offset,
                ring: fd,
            }),
            -1 => Err(io::Error::last_os_error()),
            n => Err(io::Error::other(format!(
                "IORING_REGISTER_RING_FDS registered {n} descriptors, not 1"
            ))),
        }
    }
}

impl Drop for RingFd {
    fn drop(&mut self) {
        let mut update = RsrcUpdate {
            offset: self.index,
            resv: 0,
            data: 0,
        };
        // SAFETY: as in `register`; the kernel only reads `update`. Made on the registering
        // thread (type invariant), so the index is this ring's.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring,
                IORING_UNREGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1,
            )
        };
        if res != 1 {
            tracing::warn!(
                "unregistering ring descriptor index {}: {}",
                self.index,
                io::Error::last_os_error()
            );
        }
    }
}

/// One `io_uring_enter`: submits every queued SQE and waits for `want` CQEs, at most for
/// `timeout`; with `min_wait_usec` > 0 (`IORING_FEAT_MIN_TIMEOUT`) the kernel returns after
/// that long with fewer than `want` if at least one has come. Enters through `registered`
/// where there is one. Returns how many SQEs the kernel took.
pub(crate) fn enter(
    ring: &mut IoUring,
    registered: Option<&RingFd>,
    want: u32,
    timeout: Option<Duration>,
    min_wait_usec: u32,
) -> io::Result<usize> {
    let (to_submit, overflow, taskrun) = {
        let sq = ring.submission();
        (sq.len() as u32, sq.cq_overflow(), sq.taskrun())
    };
    let mut flags = 0;
    // Deferred task work (and the overflow list) is only run by an enter that gets events.
    if want > 0 || overflow || taskrun {
        flags |= IORING_ENTER_GETEVENTS;
    }
    let fd = match registered {
        Some(r) => {
            flags |= IORING_ENTER_REGISTERED_RING;
            r.index as libc::c_long
        }
        None => ring.as_raw_fd() as libc::c_long,
    };
    let ts = timeout.map(|d| KernelTimespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    let arg = (ts.is_some() || min_wait_usec > 0).then(|| GeteventsArg {
        sigmask: 0,
        sigmask_sz: 0,
        min_wait_usec,
        ts: ts.as_ref().map_or(0, |t| t as *const KernelTimespec as u64),
    });
    let (argp, argsz) = match &arg {
        Some(a) => {
            flags |= IORING_ENTER_EXT_ARG;
            (
                a as *const GeteventsArg as *const libc::c_void,
                std::mem::size_of::<GeteventsArg>(),
            )
        }
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the SQEs counted in `to_submit` were written in full and published (the SQ's tail
    // is stored when the `SubmissionQueue` handles are dropped); `arg` and `ts` outlive the call;
    // a registered index is this thread's (`RingFd` invariant).
    let res = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            to_submit,
            want,
            flags,
            argp,
            argsz,
        )
    };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    fn nop_round(ring: &mut IoUring, registered: Option<&RingFd>) -> io::Result<u64> {
        let nop = opcode::Nop::new().build().user_data(7);
        // SAFETY: a NOP refers to no memory.
        unsafe { ring.submission().push(&nop).expect("room") };
        enter(ring, registered, 1, Some(Duration::from_secs(5)), 0)?;
        Ok(ring.completion().next().expect("a CQE").user_data())
    }

    #[test]
    fn a_registered_ring_is_entered_through_its_index() {
        let mut ring = IoUring::new(4).unwrap();
        let reg = match RingFd::register(&ring) {
            Ok(r) => r,
            Err(e) => {
                println!("SKIP: IORING_REGISTER_RING_FDS refused ({e}; Linux 5.18+)");
                return;
            }
        };
        assert_eq!(nop_round(&mut ring, Some(&reg)).unwrap(), 7);
        // The kernel did look the index up: a bogus one is refused, the SQE stays queued.
        let bogus = RingFd {
            index: reg.index + 1,
            ring: ring.as_raw_fd(),
        };
        let err = nop_round(&mut ring, Some(&bogus)).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EINVAL | libc::EBADF)),
            "{err}"
        );
        std::mem::forget(bogus);
        // Through the descriptor, after the index is gone: the queued NOP and a new one.
        drop(reg);
        assert_eq!(nop_round(&mut ring, None).unwrap(), 7);
    }

    #[test]
    fn a_dropped_registration_frees_its_place() {
        // A thread has 16 places: registering and dropping many times never runs out.
        let ring = IoUring::new(2).unwrap();
        for _ in 0..40 {
            match RingFd::register(&ring) {
                Ok(r) => drop(r),
                Err(e) => {
                    println!("SKIP: IORING_REGISTER_RING_FDS refused ({e}; Linux 5.18+)");
                    return;
                }
            }
        }
        // And while held, the 17th is refused: the places are the thread's.
        let held: Vec<_> = (0..16)
            .map_while(|_| RingFd::register(&ring).ok())
            .collect();
        assert_eq!(held.len(), 16);
        assert!(RingFd::register(&ring).is_err());
    }
}
