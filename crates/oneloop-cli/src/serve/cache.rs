//! Each thread's cache of small files: what a hot static site is mostly made of.
//!
//! A regular file of at most [`BODY_MAX`] bytes, once opened (beneath the root, as every open
//! is) and read whole, is kept under its checked relative path ([`Target::rel`]) with what its
//! answers need: the bytes, the length, the `ETag`, the `Last-Modified` text and the
//! `Content-Type`. For [`FRESH`] after that read, a request for the path is answered from
//! memory: no open, `fstat`, read or close. The first request after it opens and reads the
//! file again and replaces the entry, so whatever changes on disk — the content, a removal, a
//! permission, a symlink now pointing out of the root — is what requests see within `FRESH`
//! (as with nginx's `open_file_cache_valid`, here one second).
//!
//! **Bounded:** at most `bytes_max` bytes of bodies and [`ENTRIES_MAX`] entries per thread; a
//! new entry that does not fit pushes out the oldest (first in, first out). `bytes_max` 0
//! turns the cache off (`oneloop serve --cache-mib 0`).
//!
//! [`Target::rel`]: super::files::Target::rel

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::files::{About, Meta};

/// The largest body kept: below the size that goes out with `SendFile`.
pub const BODY_MAX: u64 = 16 * 1024;
/// How long an entry answers without a look at the disk.
pub const FRESH: Duration = Duration::from_secs(1);
/// The most entries per thread, whatever their size.
pub const ENTRIES_MAX: usize = 65_536;

/// A small file as its answers need it.
#[derive(Debug)]
pub struct Cached {
    pub about: About,
    pub body: Vec<u8>,
    /// When the file was read.
    read_at: Instant,
}

impl Cached {
    pub fn new(meta: Meta, body: Vec<u8>, name: &str, read_at: Instant) -> Cached {
        Cached {
            about: About::of(meta, name),
            body,
            read_at,
        }
    }
}

/// One thread's cache.
pub struct Cache {
    entries: HashMap<String, Rc<Cached>>,
    /// Paths in the order they were first put in (the eviction order).
    order: VecDeque<String>,
    bytes: usize,
    bytes_max: usize,
}

impl Cache {
    pub fn new(bytes_max: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Whether files are kept at all.
    pub fn enabled(&self) -> bool {
        self.bytes_max > 0
    }

    /// The entry for `rel`, if it was read less than [`FRESH`] before `now`.
    pub fn get(&self, rel: &str, now: Instant) -> Option<Rc<Cached>> {
        let hit = self.entries.get(rel)?;
        (now.saturating_duration_since(hit.read_at) < FRESH).then(|| Rc::clone(hit))
    }

    /// Keeps `entry` for `rel` (replacing an older one), pushing out the oldest entries until it
    /// fits; a body over [`BODY_MAX`] or the whole budget is not kept.
    pub fn put(&mut self, rel: &str, entry: Rc<Cached>) {
        let size = entry.body.len();
        if !self.enabled() || size as u64 > BODY_MAX || size > self.bytes_max {
            return;
        }
        if let Some(old) = self.entries.get_mut(rel) {
            self.bytes = self.bytes - old.body.len() + size;
            *old = entry;
        } else {
            self.entries.insert(rel.to_string(), entry);
            self.order.push_back(rel.to_string());
            self.bytes += size;
        }
        while self.bytes > self.bytes_max || self.entries.len() > ENTRIES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.body.len();
            }
        }
    }

    /// Forgets `rel` (its file could not be opened as a small file any more).
    pub fn forget(&mut self, rel: &str) {
        if let Some(gone) = self.entries.remove(rel) {
            self.bytes -= gone.body.len();
            self.order.retain(|p| p != rel);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::Kind;
    use super::*;
    use std::time::SystemTime;

    fn entry(len: usize, at: Instant) -> Rc<Cached> {
        let meta = Meta {
            len: len as u64,
            mtime: SystemTime::UNIX_EPOCH,
            kind: Kind::File,
        };
        Rc::new(Cached::new(meta, vec![7; len], "a.html", at))
    }

    #[test]
    fn an_entry_answers_for_one_second_then_not() {
        let t0 = Instant::now();
        let mut c = Cache::new(1 << 20);
        c.put("a.html", entry(10, t0));
        let hit = c.get("a.html", t0 + FRESH / 2).expect("fresh");
        assert_eq!(hit.about.content_type, "text/html; charset=utf-8");
        assert_eq!(hit.about.etag, "\"0.0-a\"");
        assert!(c.get("a.html", t0 + FRESH).is_none(), "stale at FRESH");
        assert!(c.get("b.html", t0).is_none());
        // A re-read replaces the entry and answers again.
        c.put("a.html", entry(20, t0 + FRESH));
        assert_eq!(c.get("a.html", t0 + FRESH).unwrap().body.len(), 20);
        assert_eq!((c.len(), c.bytes), (1, 20));
    }

    #[test]
    fn the_oldest_go_when_the_budget_is_spent() {
        let t0 = Instant::now();
        let mut c = Cache::new(100);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            c.put(name, entry(40, t0 + Duration::from_millis(i as u64)));
        }
        assert!(c.get("a", t0).is_none(), "the first in went first");
        assert!(c.get("b", t0).is_some() && c.get("c", t0).is_some());
        assert_eq!(c.bytes, 80);
        c.forget("b");
        assert_eq!((c.len(), c.bytes), (1, 40));
        // Too big for the budget or for a cached body: not kept, nothing pushed out.
        c.put("big", entry(101, t0));
        c.put("huge", entry(BODY_MAX as usize + 1, t0));
        assert_eq!((c.len(), c.bytes), (1, 40));
        let mut off = Cache::new(0);
        off.put("a", entry(1, t0));
        assert!(off.get("a", t0).is_none());
    }
}
