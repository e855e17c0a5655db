//! The memory behind a buffer ring ([`BufRing`](crate::BufRing)): `count` equal buffers in one
//! page-aligned block, the leases that lend one out, and the queue that brings a buffer back
//! from a lease dropped on any thread to the ring's thread.
//!
//! # Who may write a buffer
//! Each buffer id (`bid`) is, at any moment, in exactly one of four places:
//! 1. **available** — on io_uring, in the kernel's ring of entries ([`KernelRing`]); on the
//!    readiness backends, in the return queue: the kernel (or an emulated receive) may write it;
//! 2. **being filled** — taken by an emulated receive ([`Pool::take`], a [`Taken`] guard): only
//!    that receive writes it;
//! 3. **leased** — in a [`Lease`]: only the lease reads or writes it, the kernel never does (it
//!    gave the buffer up when it posted the completion that named it);
//! 4. **returned** — in the return queue, waiting for the ring's thread to make it available.
//!
//! A bid moves 1 → 3 when the kernel names it in a completion (the in-flight table vouches
//! for that, [`Lease::from_kernel`]), 1 → 2 → 3 or back to 1 in an emulated receive, 3 → 4
//! when the lease drops, 4 → 1 on the ring's thread. So at most one party touches a buffer at
//! a time, and a lease's slice is as exclusive as a `&mut [u8]`.
//!
//! # Incremental consumption
//! Registered with `IOU_PBUF_RING_INC` (io_uring, 6.12), the kernel takes from a buffer only
//! the bytes a receive fills, and keeps the rest available for the next one (its completion
//! says `IORING_CQE_F_BUF_MORE`). A buffer is then split along its length: bytes before
//! `off` are leased in pieces (disjoint ranges, each lease its own), bytes from `off` on are
//! still the kernel's. `off` only grows while the kernel holds the buffer, so the pieces never
//! overlap each other or the kernel's part. The buffer goes to the return queue (4) when the
//! kernel has given up its part — a completion without `BUF_MORE` — and every piece is
//! dropped: `refs` counts the kernel's hold (1 while it has one) plus the live pieces, and
//! whoever brings it to 0 gives the buffer back. Only the ring's thread reads `off` and adds
//! to `refs` (always while the kernel's hold keeps it above 0), so neither races a give-back.
//!
//! # The return queue
//! A bounded queue of `count` cells, many producers (lease drops, on any thread), one
//! consumer (the ring's thread). A producer reserves a cell with one `fetch_add` on `tail` and
//! stores `bid + 1` into it; the consumer reads the cell at `head`, and stops at an empty one
//! (a producer between its reservation and its store: the bid is taken at the next look).
//! At most `count` bids exist and each is in the queue at most once, so a reservation never
//! laps a cell the consumer has not emptied.
//!
//! # Lifetime
//! The block lives as long as the [`Pool`] (an `Arc` held by the ring's table of groups, by
//! every op that draws on it, and by every lease), so a lease may outlive its op, a cancel,
//! and the ring itself. The kernel's ring of entries belongs to the io_uring driver, which
//! unregisters it before freeing it, after every op that could pick from it has ended.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

/// The most buffers one ring may hold (io_uring's limit on a provided-buffer ring).
pub(crate) const COUNT_MAX: u32 = 32_768;

/// A group of equal buffers and its return queue.
pub(crate) struct Pool {
    /// `count * size` bytes of anonymous memory (`mmap`): page-aligned, zero, and backed by
    /// pages only as buffers are first written.
    base: NonNull<u8>,
    len: usize,
    size: u32,
    count: u32,
    /// The ring this group belongs to (see `Ring`'s serial), and its id there.
    pub owner: u64,
    pub bgid: u16,
    /// The return queue: `count` cells holding `bid + 1`, or 0 when empty.
    cells: Box<[AtomicU32]>,
    /// Cells reserved by producers so far (wrapping).
    tail: AtomicU32,
    /// The consumer's next cell (only the ring's thread reads or writes it).
    head: AtomicU32,
    /// Per buffer under incremental consumption (module doc); empty otherwise.
    parts: Box<[Part]>,
}

/// A buffer's state under incremental consumption (module doc).
struct Part {
    /// Where the kernel's part begins (ring's thread only).
    off: AtomicU32,
    /// The kernel's hold (1 or 0) plus the live leases on pieces of the buffer.
    refs: AtomicU32,
}

// SAFETY: the block is shared under the protocol in the module doc (one party per buffer at a
// time); everything else is atomics or immutable after construction.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("bgid", &self.bgid)
            .field("count", &self.count)
            .field("size", &self.size)
            .finish()
    }
}

impl Pool {
    /// `count` buffers (a power of two, at most [`COUNT_MAX`]) of `size` bytes each, for group
    /// `bgid` of ring `owner`. `available`: every buffer starts in the return queue (the
    /// readiness backends take from there); else none does (io_uring's kernel ring holds them).
    pub fn new(count: u32, size: u32, owner: u64, bgid: u16, available: bool) -> io::Result<Pool> {
        if !count.is_power_of_two() || count > COUNT_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a buffer ring holds a power of two of buffers, at most {COUNT_MAX} (asked for {count})"),
            ));
        }
        if size == 0 || size > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a buffer ring's buffers hold 1 byte to 2 GiB (asked for {size})"),
            ));
        }
        let len = (count as usize)
            .checked_mul(size as usize)
            .filter(|&b| b <= isize::MAX as usize / 2)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: a fresh private anonymous mapping of `len` (> 0) bytes: no pointer is passed.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let cells: Box<[AtomicU32]> = (0..count)
            .map(|bid| AtomicU32::new(if available { bid + 1 } else { 0 }))
            .collect();
        Ok(Pool {
            base,
            len,
            size,
            count,
            owner,
            bgid,
            cells,
            tail: AtomicU32::new(if available { count } else { 0 }),
            head: AtomicU32::new(0),
            parts: Box::new([]),
        })
    }

    /// Switches the group to incremental consumption (module doc), before anyone shares it.
    fn make_incremental(&mut self) {
        self.parts = (0..self.count)
            .map(|_| Part {
                off: AtomicU32::new(0),
                refs: AtomicU32::new(1),
            })
            .collect();
    }

    /// Whether the kernel consumes this group's buffers incrementally.
    pub fn incremental(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Bytes per buffer.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Buffers in the group.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Buffer `bid`'s address (for the kernel's ring of entries).
    fn addr(&self, bid: u16) -> *mut u8 {
        assert!(u32::from(bid) < self.count, "buffer id {bid} out of range");
        // SAFETY: `bid < count`, so the offset stays inside the block.
        unsafe { self.base.as_ptr().add(bid as usize * self.size as usize) }
    }

    /// Gives up one hold on `bid` (a lease's, or the kernel's last piece): the buffer goes to
    /// the return queue once no hold is left (module doc).
    fn release(&self, bid: u16) {
        if let Some(part) = self.parts.get(usize::from(bid)) {
            // AcqRel: the last holder's give-back follows every other holder's use.
            if part.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
        }
        self.give_back(bid);
    }

    /// Puts `bid` in the return queue (any thread).
    fn give_back(&self, bid: u16) {
        // AcqRel: a reservation that follows another's in `tail`'s order also follows
        // whatever emptied the cell it may reuse (see the module doc).
        let at = self.tail.fetch_add(1, Ordering::AcqRel);
        let cell = &self.cells[(at & (self.count - 1)) as usize];
        debug_assert_eq!(
            cell.load(Ordering::Relaxed),
            0,
            "a cell is reused only once empty"
        );
        cell.store(u32::from(bid) + 1, Ordering::Release);
    }

    /// Takes the oldest returned bid, if one is there. Only the ring's thread calls this.
    fn take_returned(&self) -> Option<u16> {
        let head = self.head.load(Ordering::Relaxed);
        let cell = &self.cells[(head & (self.count - 1)) as usize];
        let v = cell.load(Ordering::Acquire);
        if v == 0 {
            return None;
        }
        cell.store(0, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Relaxed);
        Some((v - 1) as u16)
    }

    /// Whether a returned bid may be waiting in the queue (a cheap look, for the ring's thread).
    pub fn has_returns(&self) -> bool {
        self.tail.load(Ordering::Acquire) != self.head.load(Ordering::Relaxed)
    }

    /// An available buffer for an emulated receive (readiness backends; the ring's thread).
    pub fn take(self: &Arc<Pool>) -> Option<Taken> {
        let bid = self.take_returned()?;
        Some(Taken {
            pool: Arc::clone(self),
            bid,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; every lease and every op holds an `Arc`,
        // and the kernel's ring was unregistered before its driver let its `Arc` go.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A buffer taken for one emulated receive; back to the return queue if no lease is made.
pub(crate) struct Taken {
    pool: Arc<Pool>,
    bid: u16,
}

impl Taken {
    /// `recv(fd, buffer, flags | MSG_DONTWAIT)`, retried on `EINTR`: the bytes, in a lease.
    pub fn recv(self, fd: RawFd, flags: i32) -> io::Result<Lease> {
        let (ptr, len) = (self.pool.addr(self.bid), self.pool.size as usize);
        let n = loop {
            // SAFETY: the buffer is taken (module doc: only this receive writes it), `len`
            // bytes long.
            let n = unsafe { libc::recv(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        Ok(self.lease(n))
    }

    /// A non-blocking `read(fd, buffer)`, retried on `EINTR`: `preadv2` with `RWF_NOWAIT` at
    /// the current position (pipes, FIFOs and sockets have it, so the descriptor's own flags
    /// stay as they are); where the file refuses that (`EOPNOTSUPP`), the descriptor is
    /// switched to `O_NONBLOCK` and read.
    pub fn read(self, fd: RawFd) -> io::Result<Lease> {
        let (ptr, len) = (self.pool.addr(self.bid), self.pool.size as usize);
        let iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        let mut nowait = true;
        let n = loop {
            // SAFETY: as in `recv`; `iov` names the taken buffer and outlives the call.
            let n = unsafe {
                if nowait {
                    libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT)
                } else {
                    libc::read(fd, ptr.cast(), len)
                }
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EOPNOTSUPP) if nowait => {
                    super::posix::set_nonblocking(fd)?;
                    nowait = false;
                }
                _ => return Err(e),
            }
        };
        Ok(self.lease(n))
    }

    /// The buffer as a lease of its first `len` bytes, which this receive wrote.
    fn lease(self, len: usize) -> Lease {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: moved out of a value that is never dropped (no double give-back).
        let pool = unsafe { std::ptr::read(&this.pool) };
        Lease {
            pool,
            bid: this.bid,
            off: 0,
            len: len.min(this.pool.size as usize) as u32,
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.pool.give_back(self.bid);
    }
}

/// One buffer of a [`BufRing`](crate::BufRing), lent with a completion: the bytes the kernel
/// put there. Dropping it gives the buffer back to its ring — on any thread, at any time,
/// even after the op, a cancel, or the ring itself.
///
/// A lease is `Send` and `Sync`, and derefs to its bytes (`&[u8]`, or `&mut [u8]`: no one else
/// touches them while they are lent).
///
/// Where the kernel consumes buffers incrementally (io_uring with `IOU_PBUF_RING_INC`, see
/// [`RingBuilder::incremental_buffers`](crate::RingBuilder::incremental_buffers)), a lease
/// may hold a piece of a buffer — the bytes one receive wrote — and later receives fill the
/// rest; the buffer returns to the ring when the kernel is done with it and every piece is
/// dropped. Two live leases may then share a [`buffer_id`](Self::buffer_id), never bytes.
///
/// # Examples
/// ```
/// use oneloop::{BufRing, Output, RecvMulti, Ring};
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// let mut ring = Ring::new()?;
/// let bufs = ring.buf_ring(8, 4096)?;
/// let (a, mut b) = UnixStream::pair()?;
/// let id = ring.submit(RecvMulti::new(a.as_raw_fd(), &bufs), 0)?;
/// b.write_all(b"hello")?;
/// ring.wait(1, None)?;
/// let c = ring.next_completion().unwrap();
/// assert!(c.is_more());
/// let Output::Lease(lease) = c.into_output() else { panic!("a receive hands a lease") };
/// assert_eq!(&lease[..], b"hello");
/// drop(lease); // the buffer goes back to `bufs`
/// ring.cancel(id)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Lease {
    pool: Arc<Pool>,
    bid: u16,
    /// Where the piece begins in the buffer (0 unless consumed incrementally).
    off: u32,
    len: u32,
}

impl Lease {
    /// The buffer the kernel named in a completion, holding `len` bytes it wrote; `kept`:
    /// the kernel keeps the rest of an incrementally consumed buffer ([`KernelRing::take`]
    /// decides, by the kernel's own rule).
    ///
    /// # Safety
    /// The kernel must have just reported, for an op that picks from `pool`'s group, that it
    /// wrote `len` bytes into buffer `bid` (a completion carrying `IORING_CQE_F_BUFFER` with
    /// this id), and — unless the group is consumed incrementally and `kept` is set — given
    /// the buffer up. Under incremental consumption the bytes are those from where the last
    /// piece of `bid` ended (module doc); completions are taken in the kernel's order.
    pub(crate) unsafe fn from_kernel(pool: Arc<Pool>, bid: u16, len: u32, kept: bool) -> Lease {
        assert!(
            u32::from(bid) < pool.count,
            "kernel named buffer {bid} out of range"
        );
        let Some(part) = pool.parts.get(usize::from(bid)) else {
            let len = len.min(pool.size);
            return Lease {
                pool,
                bid,
                off: 0,
                len,
            };
        };
        let off = part.off.load(Ordering::Relaxed);
        let len = len.min(pool.size - off);
        if kept {
            // The kernel keeps the rest; the piece adds a hold.
            part.off.store(off + len, Ordering::Relaxed);
            part.refs.fetch_add(1, Ordering::Relaxed);
        }
        // Else the kernel's hold passes to this, its last piece.
        Lease {
            pool,
            bid,
            off,
            len,
        }
    }

    /// The buffer's id in its ring.
    pub fn buffer_id(&self) -> u16 {
        self.bid
    }

    /// How many bytes the buffer holds from where this lease's bytes begin (its whole size,
    /// unless the lease is a piece of an incrementally consumed buffer — then bytes past
    /// [`len`](<[u8]>::len) may belong to later pieces or to the kernel: the lease reaches
    /// only its own).
    pub fn capacity(&self) -> usize {
        (self.pool.size - self.off) as usize
    }

    /// Where this lease's bytes begin in its buffer (0, unless the lease is a piece of an
    /// incrementally consumed buffer).
    pub fn offset(&self) -> usize {
        self.off as usize
    }
}

impl Deref for Lease {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the bytes are leased (module doc: only this lease touches them), `off + len
        // <= size` of them, all initialised (anonymous memory is zero when mapped, then
        // written by the kernel).
        unsafe {
            std::slice::from_raw_parts(
                self.pool.addr(self.bid).add(self.off as usize),
                self.len as usize,
            )
        }
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.addr(self.bid).add(self.off as usize),
                self.len as usize,
            )
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.bid);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("bgid", &self.pool.bgid)
            .field("bid", &self.bid)
            .field("off", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

/// The kernel's ring of entries for one group (io_uring, `IORING_REGISTER_PBUF_RING`): the
/// ring's thread writes entries and publishes them by storing the tail; the kernel reads them.
///
/// # Which buffers a completion names
/// The kernel takes entries in ring order, from its head. A completion names the first
/// buffer it used; a bundle (`IORING_RECVSEND_BUNDLE`) goes on through the entries after
/// it, as many as its bytes fill. So the ring remembers, per position, the bid it wrote there
/// and whether the kernel still has it *unreported* (written, and no completion has given it
/// up yet); per bid, the position it was written at. An entry is rewritten only once its bid
/// is reported: a bid given back while the entry at the tail is still unreported (the
/// kernel took it, its completion is not processed yet) waits in `waiting`, so the entries a
/// bundle's completion walks are always the ones the kernel took.
///
/// Both this walk and incremental offsets rest on completions being processed in the order
/// the kernel took the entries: the ring's thread reaps in CQ order, and the kernel posts a
/// receive's completion in the same pass as it takes its buffers (the issuing task, with
/// `DEFER_TASKRUN`). Kernels before the 2025 fix that flushes deferred completions ahead of
/// a multishot's next could post a final one late (README, known limits). Nothing here may
/// send a buffer-ring op to the kernel's worker threads (`IOSQE_ASYNC`), where the take and
/// the post come apart.
pub(crate) struct KernelRing {
    entries: NonNull<io_uring::types::BufRingEntry>,
    layout: Layout,
    mask: u16,
    /// The next entry to write (published up to here).
    tail: u16,
    /// Per position (`pos & mask`): the bid written there, and whether it is unreported.
    slots: Box<[(u16, bool)]>,
    /// Per bid: the position it was last written at.
    pos_of: Box<[u16]>,
    /// Given-back bids whose entry is not free yet (see the type's doc), oldest first.
    waiting: std::collections::VecDeque<u16>,
    pub pool: Arc<Pool>,
    /// Registered with the kernel: dropping it then leaks the entries and the buffers (the
    /// kernel might still use them); [`unregister`](Self::unregister) is the way out.
    registered: bool,
}

impl KernelRing {
    /// Registers `pool`'s group with `submitter`'s ring and makes every buffer available;
    /// `incremental`: asks for incremental consumption (module doc), and registers without
    /// it where the kernel refuses it (`EINVAL`, before 6.12) — [`Pool::incremental`] says
    /// which.
    pub fn register(
        submitter: &io_uring::Submitter<'_>,
        mut pool: Pool,
        incremental: bool,
    ) -> io::Result<KernelRing> {
        let count = pool.count;
        let layout = Layout::from_size_align(
            count as usize * std::mem::size_of::<io_uring::types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: non-zero size (count >= 1).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let entries =
            NonNull::new(raw.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let bgid = pool.bgid;
        // SAFETY: `entries` is page-aligned, `count` entries long, zeroed (tail 0), and lives
        // until `unregister` (or is leaked if that fails): valid while registered.
        let register = |flags: u16| unsafe {
            submitter.register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count as u16,
                bgid,
                flags,
            )
        };
        let mut registered = Err(io::Error::from_raw_os_error(libc::EINVAL));
        if incremental {
            registered = register(io_uring::types::IOU_PBUF_RING_INC as u16);
            if registered.is_ok() {
                pool.make_incremental();
            }
        }
        if matches!(&registered, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
            registered = register(0);
        }
        let mut ring = KernelRing {
            entries,
            layout,
            mask: (count - 1) as u16,
            tail: 0,
            slots: vec![(0, false); count as usize].into_boxed_slice(),
            pos_of: vec![0; count as usize].into_boxed_slice(),
            waiting: std::collections::VecDeque::new(),
            pool: Arc::new(pool),
            registered: false,
        };
        // Refused: `ring` drops unregistered, freeing the entries.
        registered.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("IORING_REGISTER_PBUF_RING of {count} buffers: {e}"),
            )
        })?;
        ring.registered = true;
        for bid in 0..count {
            let pushed = ring.push(bid as u16);
            debug_assert!(pushed, "a fresh ring has every entry free");
        }
        ring.publish();
        Ok(ring)
    }

    /// Whether this kernel registers a provided-buffer ring with `flags` (e.g.
    /// `IOU_PBUF_RING_INC`, 2): one of 8 buffers is registered on a throwaway io_uring and
    /// unregistered again.
    pub fn probe_flags(flags: u16) -> io::Result<()> {
        let ring = io_uring::IoUring::new(4)?;
        Self::probe_flags_on(&ring.submitter(), flags)
    }

    /// [`probe_flags`](Self::probe_flags) on an existing ring, with the last group id
    /// (65,535, which `Ring::buf_ring` never hands out): registered and unregistered again.
    pub fn probe_flags_on(submitter: &io_uring::Submitter<'_>, flags: u16) -> io::Result<()> {
        let layout = Layout::from_size_align(8 * 16, 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        if raw.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // SAFETY: page-aligned, 8 zeroed entries (an empty ring: tail 0), alive until the
        // io_uring is dropped below, after it is unregistered.
        let registered =
            unsafe { submitter.register_buf_ring_with_flags(raw as u64, 8, u16::MAX, flags) };
        if registered.is_ok() && submitter.unregister_buf_ring(u16::MAX).is_err() {
            // Still registered: the entries must stay.
            return registered;
        }
        // SAFETY: allocated above with this layout; no longer registered.
        unsafe { alloc::dealloc(raw, layout) };
        registered
    }

    /// Writes an entry making `bid` available (published by [`publish`](Self::publish)), if
    /// the entry at the tail is free (its bid reported); `false` if not.
    fn push(&mut self, bid: u16) -> bool {
        let slot = &mut self.slots[usize::from(self.tail & self.mask)];
        if slot.1 {
            return false;
        }
        *slot = (bid, true);
        self.pos_of[usize::from(bid)] = self.tail;
        if let Some(part) = self.pool.parts.get(usize::from(bid)) {
            // Back from the return queue: no piece is out, the kernel holds it whole again.
            part.off.store(0, Ordering::Relaxed);
            part.refs.store(1, Ordering::Relaxed);
        }
        let at = (self.tail & self.mask) as usize;
        // SAFETY: `at < count`; the kernel does not read entries past the published tail, so
        // this one is ours to write.
        let entry = unsafe { &mut *self.entries.as_ptr().add(at) };
        entry.set_addr(self.pool.addr(bid) as u64);
        entry.set_len(self.pool.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        true
    }

    /// Lets the kernel see every entry written so far.
    fn publish(&mut self) {
        // SAFETY: the tail field overlays entry 0's reserved field, in memory we own; the
        // kernel reads it concurrently, so it is written atomically, after the entries.
        let tail = unsafe {
            AtomicU16::from_ptr(
                io_uring::types::BufRingEntry::tail(self.entries.as_ptr()) as *mut u16
            )
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// Whether [`refill`](Self::refill) has anything to do: a buffer given back, or one
    /// waiting for its entry.
    pub fn wants_refill(&self) -> bool {
        self.pool.has_returns() || !self.waiting.is_empty()
    }

    /// Makes every returned buffer available to the kernel again.
    pub fn refill(&mut self) {
        let mut any = false;
        while let Some(&bid) = self.waiting.front() {
            if !self.push(bid) {
                break;
            }
            self.waiting.pop_front();
            any = true;
        }
        while let Some(bid) = self.pool.take_returned() {
            if !self.waiting.is_empty() || !self.push(bid) {
                self.waiting.push_back(bid);
                continue;
            }
            any = true;
        }
        if any {
            self.publish();
        }
    }

    /// The leases of a completion that names buffer `bid` and `len` bytes (`more`: it said
    /// `IORING_CQE_F_BUF_MORE`), in order, handed to `each`: one for a plain receive, one per
    /// buffer for a bundle (every buffer full but the last). Buffers the kernel gave up are
    /// marked reported; one it keeps (an incrementally consumed buffer, partly filled) is not.
    ///
    /// # Safety
    /// As [`Lease::from_kernel`]: a completion of an op that picks from this group, taken in
    /// the kernel's order, whose `len` bytes the kernel wrote from buffer `bid` on.
    ///
    /// # Panics
    /// If the kernel names a buffer it does not hold (a broken kernel contract).
    pub unsafe fn take(&mut self, bid: u16, len: u32, more: bool, mut each: impl FnMut(Lease)) {
        let (size, incremental) = (self.pool.size, self.pool.incremental());
        let mut at = self.pos_of[usize::from(bid)];
        let mut bid = bid;
        let mut left = len;
        loop {
            let slot = &mut self.slots[usize::from(at & self.mask)];
            assert!(
                *slot == (bid, true),
                "the kernel named buffer {bid}, which it does not hold"
            );
            let room = size
                - self
                    .pool
                    .parts
                    .get(usize::from(bid))
                    .map_or(0, |p| p.off.load(Ordering::Relaxed));
            let n = left.min(room);
            left -= n;
            let last = left == 0;
            // Kept: a piece of an incrementally consumed buffer the kernel goes on filling —
            // by the kernel's own rule (`io_kbuf_inc_commit`: room left, or nothing taken),
            // not by `BUF_MORE`, which kernels without the fix for CVE-2026-53191 carry over
            // from an earlier pass of a bundle receive (set on a buffer they gave up, or left
            // off one they kept). `more` only cross-checks.
            let kept = incremental && last && (n < room || n == 0);
            if incremental && last && kept != more && n > 0 {
                tracing::debug!(
                    bid,
                    n,
                    room,
                    more,
                    "BUF_MORE disagrees with the bytes taken"
                );
            }
            if !kept {
                slot.1 = false;
            }
            // SAFETY: the caller's contract; the entries walked are those the kernel took
            // (the type's doc), each full but the last.
            each(unsafe { Lease::from_kernel(Arc::clone(&self.pool), bid, n, kept) });
            if last {
                return;
            }
            at = at.wrapping_add(1);
            bid = self.slots[usize::from(at & self.mask)].0;
        }
    }

    /// Unregisters the group (call it once no op can pick from it): the entries are freed
    /// with `self` if that worked, leaked if not.
    pub fn unregister(mut self, submitter: &io_uring::Submitter<'_>) {
        match submitter.unregister_buf_ring(self.pool.bgid) {
            Ok(()) => self.registered = false,
            Err(e) => {
                tracing::error!(error = %e, bgid = self.pool.bgid, "cannot unregister a buffer ring: leaking it")
            }
        }
    }
}

impl Drop for KernelRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still read the entries and write the buffers: both stay.
            std::mem::forget(Arc::clone(&self.pool));
            return;
        }
        // SAFETY: allocated in `register` with this layout, and no longer registered.
        unsafe { alloc::dealloc(self.entries.as_ptr().cast(), self.layout) }
    }
}
