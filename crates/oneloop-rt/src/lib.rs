//! **oneloop-rt**: a thread-per-core async runtime on the [`oneloop`] Ring.
//!
//! Files, sockets, timers and readiness polls as `async fn`s, on whichever backend the machine
//! offers (io_uring, Linux AIO or epoll; `ONELOOP_BACKEND` forces one). Each thread has its own
//! ring; tasks stay on their thread (`!Send` futures are fine).
//!
//! **Dropping a future cancels its op.** Buffers are owned: each call takes its buffer and
//! gives it back (`let (res, buf) = file.read_at(buf, pos).await`), and the ring keeps it until
//! the op's final completion, so a cancelled read can never write into freed memory. A socket
//! accepted or a file opened after its future was dropped is closed, never leaked.
//!
//! ```
//! use oneloop_rt::fs::File;
//!
//! let text = oneloop_rt::block_on(async {
//!     let path = std::env::temp_dir().join(format!("oneloop-rt-doc-{}", std::process::id()));
//!     let file = File::create(&path).await?;
//!     let (res, _) = file.write_all_at(b"hello, ring".to_vec(), 0).await;
//!     res?;
//!     file.close().await?;
//!     let file = File::open(&path).await?;
//!     let (res, buf) = file.read_at(Vec::with_capacity(64), 0).await;
//!     res?;
//!     std::fs::remove_file(&path)?;
//!     Ok::<_, std::io::Error>(String::from_utf8(buf).unwrap())
//! })?;
//! assert_eq!(text, "hello, ring");
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod blocking;
pub mod epoll;
mod executor;
pub mod fs;
#[cfg(feature = "hyper")]
pub mod hyper_rt;
pub mod io;
mod join_set;
pub mod net;
mod op;
pub mod poll;
pub mod signal;
pub mod time;

pub use blocking::{spawn_blocking, BlockingHandle};
pub use executor::{
    block_on, fixed_buffers, spawn, stats, Builder, JoinHandle, Runtime, RuntimeStats,
};
pub use join_set::JoinSet;

/// The README's examples (the Ring's and the runtime's), compiled and run as doctests so they
/// stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
