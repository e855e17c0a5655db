//! Registered files: the descriptors `Ring::register_fd` names, in io_uring's fixed-file table.
//!
//! An op on a registered fd is submitted with `IOSQE_FIXED_FILE` and the fd's table slot, so
//! the kernel skips looking the descriptor up and taking a file reference per request. The
//! table holds its own reference to each file: the file stays open until the fd is
//! unregistered, which is why `register_fd` is a promise to unregister before closing. (A
//! number closed without it and reused would otherwise name the old file here.)
//!
//! The table is sparse, sized at ring set-up (`IORING_REGISTER_FILES_SPARSE`, Linux 5.19+);
//! where the kernel refuses it, or when every slot is taken, `register_fd` changes nothing
//! and ops use plain descriptors.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use io_uring::IoUring;

use crate::backend::FdHasher;

/// Slots in the fixed-file table.
pub(super) const SLOTS: u32 = 4096;

/// Descriptors below this find their slot by direct index (every op looks it up); the rare
/// ones above, hashed.
const DENSE: usize = 1 << 16;

/// The fixed-file table: which fd sits in which slot.
pub(super) struct Files {
    /// `None` if the kernel has no sparse table for us (the reason, for `describe`).
    enabled: Result<(), String>,
    /// Slot + 1 of each fd below [`DENSE`] (0: not registered).
    dense: Vec<u32>,
    sparse: HashMap<RawFd, u32, std::hash::BuildHasherDefault<FdHasher>>,
    /// How many fds are registered.
    count: usize,
    free: Vec<u32>,
}

impl Files {
    /// Sets up the sparse table on `ring`; a refusal leaves registration off, with its reason.
    pub fn open(ring: &IoUring) -> Files {
        let enabled = ring
            .submitter()
            .register_files_sparse(SLOTS)
            .map_err(|e| format!("sparse file table refused: {e}"));
        Files {
            free: if enabled.is_ok() {
                (0..SLOTS).rev().collect()
            } else {
                Vec::new()
            },
            enabled,
            dense: Vec::new(),
            sparse: HashMap::default(),
            count: 0,
        }
    }

    fn dense_index(fd: RawFd) -> Option<usize> {
        usize::try_from(fd).ok().filter(|&i| i < DENSE)
    }

    /// Records `fd` in `slot`, or (`None`) forgets it; what it was in before.
    fn set(&mut self, fd: RawFd, slot: Option<u32>) -> Option<u32> {
        let old = match Self::dense_index(fd) {
            Some(i) => {
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, 0);
                }
                let old = std::mem::replace(&mut self.dense[i], slot.map_or(0, |s| s + 1));
                old.checked_sub(1)
            }
            None => match slot {
                Some(s) => self.sparse.insert(fd, s),
                None => self.sparse.remove(&fd),
            },
        };
        self.count = self.count + usize::from(slot.is_some()) - usize::from(old.is_some());
        old
    }

    /// A line for `describe`.
    pub fn describe(&self) -> String {
        match &self.enabled {
            Ok(()) => format!("registered files {}/{SLOTS}", self.count),
            Err(why) => format!("registered files off ({why})"),
        }
    }

    /// `fd`'s slot, if it is registered.
    #[inline]
    pub fn slot(&self, fd: RawFd) -> Option<u32> {
        if self.count == 0 {
            return None;
        }
        match Self::dense_index(fd) {
            Some(i) => self.dense.get(i).and_then(|s| s.checked_sub(1)),
            None => self.sparse.get(&fd).copied(),
        }
    }

    /// Puts `fd` in a free slot (nothing if it is there already, the table is off or full).
    ///
    /// # Errors
    /// The kernel's refusal of the file (`EBADF`, say).
    pub fn register(&mut self, ring: &IoUring, fd: RawFd) -> io::Result<()> {
        if self.slot(fd).is_some() || self.enabled.is_err() {
            return Ok(());
        }
        let Some(slot) = self.free.pop() else {
            return Ok(());
        };
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => {
                self.set(fd, Some(slot));
                Ok(())
            }
            Err(e) => {
                self.free.push(slot);
                Err(e)
            }
        }
    }

    /// Takes `fd` out of the table, dropping the table's reference to its file.
    ///
    /// SQEs still queued may name the slot: the kernel resolves a fixed file when it takes the
    /// request, so they are submitted first — else they would find the slot empty (`EBADF`)
    /// or, once it is reused, another file. Requests the kernel has taken keep the file they
    /// resolved.
    pub fn unregister(&mut self, ring: &IoUring, fd: RawFd) {
        let Some(slot) = self.set(fd, None) else {
            return;
        };
        if let Err(e) = ring.submitter().submit() {
            // The slot stays as it is, taken and never reused: the queued requests keep
            // their file, at the cost of holding it open until the ring is dropped.
            tracing::error!(fd, slot, error = %e, "cannot submit before clearing a fixed-file slot");
            return;
        }
        match ring.submitter().register_files_update(slot, &[-1]) {
            Ok(_) => self.free.push(slot),
            // The slot stays taken (never reused) rather than risk naming the old file.
            Err(e) => tracing::error!(fd, slot, error = %e, "cannot clear a fixed-file slot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_low_and_high_descriptors() {
        let mut files = Files {
            enabled: Ok(()),
            dense: Vec::new(),
            sparse: HashMap::default(),
            count: 0,
            free: Vec::new(),
        };
        assert_eq!(files.slot(5), None);
        assert_eq!(files.set(5, Some(0)), None);
        assert_eq!(files.set(1 << 20, Some(7)), None);
        assert_eq!(
            (files.slot(5), files.slot(1 << 20), files.count),
            (Some(0), Some(7), 2)
        );
        assert_eq!(files.slot(4), None);
        assert_eq!(files.slot(-1), None);
        assert_eq!(files.set(5, None), Some(0));
        assert_eq!(files.set(5, None), None);
        assert_eq!(files.set(1 << 20, None), Some(7));
        assert_eq!(
            (files.slot(5), files.slot(1 << 20), files.count),
            (None, None, 0)
        );
    }
}
