//! [`Done`]: an op's raw result, vouched for — the proof that lets safe code grow a read's
//! buffer by the bytes the kernel wrote and wrap a descriptor it made.
//!
//! Ops (`op/`) finish themselves with it in safe code; only the backends' in-flight tables
//! make one (`Done::new` is `unsafe`), each from what the kernel, a pool thread or the op's
//! own attempt reported for exactly that op.
//!
//! What the proof does not carry: *which* buffer the kernel wrote. An op's `finish` grows the
//! buffer whose read target its lowering (or attempt, or AIO request) handed over — that
//! pairing, written once per op in `op/`, is part of the safety argument, as the lowering
//! itself is (it chooses the pointers the kernel writes through). `forbid(unsafe_code)` in
//! `op/` means no raw pointer is dereferenced there, not that `op/` is outside the trusted
//! code: a `finish` that called [`Done::fill`] on a write buffer would expose uninitialised
//! bytes.

use std::os::fd::OwnedFd;

use crate::buf::Buf;

/// A raw result vouched for: what the kernel, a pool thread or a non-blocking attempt reported
/// for exactly one op, as its backend made the request. Making one is the single `unsafe`
/// step of ending an op (each backend's in-flight table does it, once per op); using it is
/// safe, and consumes it, so a read's buffer is grown once and a new descriptor wrapped once.
#[derive(Debug)]
pub(crate) struct Done {
    res: i32,
}

impl Done {
    /// Vouches for `res`.
    ///
    /// # Safety
    /// `res` must be what the kernel (or a pool thread, or the backend's own non-blocking
    /// attempt) reported for exactly the op it will finish, as the backend lowered it: a count
    /// `>= 0` is the bytes written into the op's read buffers, and for `Accept`/`OpenAt` a new
    /// descriptor nobody else owns. A negative `res` (an errno) is always sound: use
    /// [`Done::error`].
    #[inline]
    pub(crate) unsafe fn new(res: i32) -> Done {
        Done { res }
    }

    /// An op ended with `errno` (nothing filled, no descriptor).
    pub(crate) fn error(errno: i32) -> Done {
        Done {
            res: -errno.abs().max(1),
        }
    }

    /// The raw result (`>= 0`, or `-errno`).
    pub(crate) fn raw(&self) -> i32 {
        self.res
    }

    /// The count, if the op succeeded.
    pub(crate) fn count(&self) -> Option<usize> {
        usize::try_from(self.res).ok()
    }

    /// Grows a read's buffer by the bytes the kernel wrote (nothing on an error).
    #[inline]
    pub(crate) fn fill(self, buf: &mut Buf) {
        if let Some(n) = self.count() {
            grow(buf, n);
        }
    }

    /// Grows each buffer of a vectored read by its share of the bytes, in order.
    pub(crate) fn fill_in_order(self, bufs: &mut [Buf]) {
        let mut n = self.count().unwrap_or(0);
        for buf in bufs {
            if n == 0 {
                break;
            }
            // `new`'s contract: the kernel wrote `n` bytes across the buffers' read targets,
            // in order; this is this buffer's share.
            let take = buf.room().min(n);
            grow(buf, take);
            n -= take;
        }
    }

    /// The new descriptor an `Accept` or `OpenAt` produced, if it succeeded.
    pub(crate) fn into_fd(self) -> Option<OwnedFd> {
        // SAFETY: `new`'s contract: a count from these ops is a new descriptor nobody else
        // owns; `self` is consumed, so it is wrapped once.
        self.count()
            .map(|n| unsafe { crate::sys::owned_fd(n as i32) })
    }
}

/// Grows `buf` by `n` bytes written at the start of its read target.
///
/// Private to this module: only a [`Done`], made under `new`'s contract, calls it.
fn grow(buf: &mut Buf, n: usize) {
    match buf {
        // SAFETY: `Done::new`'s contract: the kernel wrote `n` bytes into the spare capacity.
        Buf::Vec(v) => unsafe { super::vec_filled(v, n) },
        Buf::Boxed(_) => {}
        Buf::Aligned(a) => a.set_len(a.len() + n),
        Buf::Fixed(f) => f.set_len(f.len() + n),
    }
}

#[cfg(test)]
impl Done {
    /// For tests on zero-initialised buffers (aligned ones), where any count is sound.
    pub(crate) fn zeroed(res: i32) -> Done {
        Done { res }
    }
}
