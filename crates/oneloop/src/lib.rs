//! **oneloop**: one completion queue for every kind of Linux I/O.
//!
//! Disk reads and writes, readiness polls of any descriptor (one-shot and multishot),
//! `epoll_wait` as an operation, timeouts, deadlines and cancellation all complete through one
//! [`Ring`], with the same semantics on io_uring, Linux AIO (`IOCB_CMD_POLL`) and epoll plus a
//! blocking pool, chosen at run time ([`BackendKind::Auto`], or `ONELOOP_BACKEND`).
//!
//! ```
//! use std::time::Duration;
//! use oneloop::{PollMask, Poll, Read, Ring, Timeout};
//!
//! let mut ring = Ring::new()?;
//! let file = std::fs::File::open("/proc/self/stat")?;
//! let (rd, wr) = std::io::pipe()?;
//! use std::os::fd::AsRawFd;
//!
//! ring.submit(Read::new(file.as_raw_fd(), Vec::with_capacity(4096), 0), 1)?;
//! ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(), 2)?;
//! ring.submit(Timeout::after(Duration::from_millis(5)), 3)?;
//! std::io::Write::write_all(&mut &wr, b"x")?;
//!
//! let mut seen = Vec::new();
//! while seen.len() < 3 {
//!     ring.wait(1, None)?;
//!     for c in ring.completions() {
//!         seen.push(c.user_data());
//!     }
//! }
//! seen.sort();
//! assert_eq!(seen, [1, 2, 3]);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Where `unsafe` lives: `sys/` (system calls, ABI structs, and `Done`, a raw result vouched
//! for) and the backends' in-flight tables — `backend/uring/inflight.rs`,
//! `backend/ready/inflight.rs` and the submission module of `backend/aio/engine.rs` — which
//! hand op memory to the kernel and vouch for what it reported. Every other module is
//! `#![forbid(unsafe_code)]`, except the modules above those tables (`backend/`, its
//! `uring/`, `ready/` and `aio/` roots, `aio/engine.rs`), which `#![deny]` it — a `forbid`
//! would reach into the table below — and hold none. Which buffer an op's result grows is
//! still decided in `op/` (safe code that the argument relies on: see `sys/done.rs`). Using
//! the ring needs no `unsafe`.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod backend;
pub mod buf;
pub mod buf_ring;
mod common;
mod completion;
pub mod epoll_set;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
#[allow(dead_code)]
mod fault;
pub mod fixed_buf;
mod handover;
pub mod op;
mod pool;
pub mod probe;
mod ring;
mod sink;
mod slab;
pub mod sockets;
mod sys;

pub use buf::{AlignedBuf, Buf, IoBuf, IoBufMut};
pub use buf_ring::{BufRing, Lease};
pub use common::{BackendKind, Stats, SubmitError};
pub use completion::{CancelCount, CancelOutcome, Completion};
pub use fixed_buf::{FixedBuf, FixedBufPool};
pub use handover::Handover;
// Every op, its builder types and answers (a new op needs no line here).
pub use op::*;
pub use ring::{Completions, Ring, RingBuilder, Skipped, Waker};
