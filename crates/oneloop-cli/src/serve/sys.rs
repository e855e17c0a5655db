//! What `serve` needs that neither the ring nor a crate offers safely: whether a file's range
//! is in the page cache.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// `cachestat(2)` (Linux 6.5): whether every page of `len` bytes at `offset` of `fd` is in the
/// page cache now. `false` when the kernel cannot say (older kernels, other file systems).
pub fn cached(fd: BorrowedFd<'_>, offset: u64, len: u64) -> bool {
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
    // SAFETY: `range` and `stat` are valid `cachestat_range` / `cachestat` structs that
    // outlive the call; the kernel reads one and writes the other.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    let page = 4096;
    let pages = (offset + len).div_ceil(page) - offset / page;
    rc == 0 && stat.nr_cache >= pages
}
