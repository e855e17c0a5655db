//! Which ops in flight work on which descriptor: what makes a cancel by fd cost in proportion
//! to that descriptor's ops, not to every op in flight.
//!
//! A server cancels by fd at every close (oneloop-rt's files and sockets do), usually with
//! nothing pending on that fd; a scan of every slot there cost 10–15 % of `serve`'s CPU at
//! 1,000 connections. Each backend adds a slot's key here when the slot is filled and removes
//! it when the slot is emptied, under the descriptor [`Op::fd`](crate::Op::fd) named at
//! submission.
//!
//! # Invariant
//! A key is listed under `fd` exactly while its slot is live and its op was submitted on `fd`.
//! Lists are short (the ops of one descriptor) and in submission order, so a removal's linear
//! search is cheap (usually the first), and they keep their capacity: steady-state traffic
//! allocates nothing.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::os::fd::RawFd;

use super::FdHasher;
use crate::slab::Key;

/// Descriptors below this are a direct index; the rare ones above, hashed.
const DENSE: usize = 1 << 16;

/// The ops in flight on each descriptor.
#[derive(Default)]
pub(crate) struct ByFd {
    dense: Vec<Vec<Key>>,
    sparse: HashMap<RawFd, Vec<Key>, BuildHasherDefault<FdHasher>>,
}

impl ByFd {
    /// Records that slot `key` works on `fd` (nothing for an op without one).
    #[inline]
    pub fn add(&mut self, fd: Option<RawFd>, key: Key) {
        let Some(fd) = fd else { return };
        match usize::try_from(fd) {
            Ok(i) if i < DENSE => {
                if i >= self.dense.len() {
                    self.dense.resize_with(i + 1, Vec::new);
                }
                self.dense[i].push(key);
            }
            _ => self.sparse.entry(fd).or_default().push(key),
        }
    }

    /// Forgets slot `key` on `fd` (what `add` was given).
    #[inline]
    pub fn remove(&mut self, fd: Option<RawFd>, key: Key) {
        let Some(fd) = fd else { return };
        let list = match usize::try_from(fd) {
            Ok(i) if i < DENSE => self.dense.get_mut(i),
            _ => self.sparse.get_mut(&fd),
        };
        if let Some(list) = list {
            // Kept in submission order: ops on one descriptor mostly end in that order (the
            // reads of one file, say), so the search usually stops at the first.
            if let Some(at) = list.iter().position(|&k| k == key) {
                list.remove(at);
            }
        }
    }

    /// The slots working on `fd`.
    pub fn keys(&self, fd: RawFd) -> &[Key] {
        let list = match usize::try_from(fd) {
            Ok(i) if i < DENSE => self.dense.get(i),
            _ => self.sparse.get(&fd),
        };
        list.map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_follow_adds_and_removes() {
        let mut by_fd = ByFd::default();
        let (a, b, c) = (Key::new(1, 0), Key::new(2, 0), Key::new(3, 7));
        by_fd.add(Some(5), a);
        by_fd.add(Some(5), b);
        by_fd.add(Some(1 << 20), c);
        by_fd.add(None, c);
        assert_eq!(by_fd.keys(5), [a, b]);
        assert_eq!(by_fd.keys(1 << 20), [c]);
        by_fd.remove(Some(5), a);
        assert_eq!(by_fd.keys(5), [b]);
        by_fd.remove(Some(5), a);
        by_fd.remove(Some(1 << 20), c);
        assert!(by_fd.keys(1 << 20).is_empty());
        assert!(by_fd.keys(6).is_empty());
        assert!(by_fd.keys(-1).is_empty());
    }
}
