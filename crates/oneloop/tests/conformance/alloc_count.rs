//! A global allocator that counts live heap blocks of one tracked size, so a case can prove
//! that every buffer it gave the ring was freed: buffers of exactly [`TRACKED_SIZE`] bytes are
//! used by no one else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The capacity of a counted buffer.
pub const TRACKED_SIZE: usize = 4093;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// How many tracked blocks are alive now.
pub fn live_tracked() -> isize {
    LIVE.load(Ordering::SeqCst)
}

pub struct Counting;

// SAFETY: defers every call to `System`, only counting on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == TRACKED_SIZE {
            LIVE.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == TRACKED_SIZE {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() == TRACKED_SIZE {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
        if new_size == TRACKED_SIZE {
            LIVE.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
