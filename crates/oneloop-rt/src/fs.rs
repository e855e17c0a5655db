//! Files: open, positional reads and writes with owned buffers, sync, close.
//!
//! Every call takes its buffer by value and gives it back with the result, in the
//! ecosystem's shape: `let (res, buf) = file.read_at(buf, pos).await`.
//!
//! # Cancellation
//! Dropping an op future cancels its op; the buffer stays with the ring until the op's final
//! completion and is then freed. On a pipe or other stream, a read whose cancel came too late
//! (the kernel had already filled the buffer) takes those bytes with it; wait for readiness
//! under a timeout instead when none may be lost. A file opened by a dropped `open` is closed, never leaked.
//! Dropping a [`File`] cancels the ops still in flight on it before its descriptor is closed.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use oneloop::{Close, Fsync, IoBuf, IoBufMut, OpenAt, Read, Readv, Write, Writev};

use crate::executor::try_with_context;
use crate::op::{clone_error, plain, run, split, with_buf};

/// An open file on this thread's ring.
#[derive(Debug)]
pub struct File {
    fd: Option<OwnedFd>,
    reg: Registration,
}

/// How to open a file (like `std::fs::OpenOptions`), including `O_DIRECT` through
/// [`custom_flags`](OpenOptions::custom_flags).
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
    resolve: u64,
    register: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off; mode `0o644`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o644,
            custom_flags: 0,
            resolve: 0,
            register: true,
        }
    }
    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }
    /// Writes go to the end (`O_APPEND`).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }
    /// Truncate to 0 on open.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }
    /// Create if missing.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }
    /// Create, failing if it exists.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }
    /// The mode of a created file.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }
    /// Extra `O_*` flags, e.g. `libc::O_DIRECT`.
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// `openat2` `RESOLVE_*` flags for the path's resolution, e.g. `libc::RESOLVE_BENEATH`
    /// (with [`open_in`](Self::open_in): refuse any path that leaves the directory, through
    /// `..`, an absolute path or a symlink) or `libc::RESOLVE_NO_MAGICLINKS`.
    pub fn resolve(&mut self, flags: u64) -> &mut Self {
        self.resolve = flags;
        self
    }

    /// Whether the opened file is registered with the ring (default on; see
    /// [`oneloop::Ring::register_fd`]). On io_uring a registered file skips the kernel's file
    /// look-up on each op but costs two system calls over its life (into the fixed-file table
    /// and out): turn it off for files opened for one or two ops, as a web server's are.
    pub fn register(&mut self, on: bool) -> &mut Self {
        self.register = on;
        self
    }

    fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "open for neither reading nor writing",
                ))
            }
        };
        let mut flags = access | self.custom_flags;
        if self.append {
            flags |= libc::O_APPEND;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        Ok(flags)
    }

    /// Opens `path` through the ring (`openat2`).
    ///
    /// # Cancellation
    /// If the future is dropped while the open is in flight, a file it opens anyway is closed.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.open_raw(libc::AT_FDCWD, path.as_ref()).await
    }

    /// Opens `path` relative to the directory `dir` through the ring (`openat2`), with the
    /// [`resolve`](Self::resolve) flags: the way a server opens files under a root it serves.
    /// The op holds its own reference to `dir`, so dropping the future and closing the
    /// directory cannot redirect an open still in flight to another directory.
    ///
    /// # Examples
    /// ```
    /// use oneloop_rt::fs::OpenOptions;
    /// use std::os::fd::OwnedFd;
    /// use std::sync::Arc;
    ///
    /// oneloop_rt::block_on(async {
    ///     let root = Arc::new(OwnedFd::from(std::fs::File::open("/etc")?));
    ///     let mut beneath = OpenOptions::new();
    ///     beneath.read(true).resolve(libc::RESOLVE_BENEATH);
    ///     // `..` may not leave the directory: the kernel answers EXDEV.
    ///     let err = beneath.open_in(&root, "../etc/hostname").await.unwrap_err();
    ///     assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Cancellation
    /// If the future is dropped while the open is in flight, a file it opens anyway is closed.
    pub async fn open_in(&self, dir: &Arc<OwnedFd>, path: impl AsRef<Path>) -> io::Result<File> {
        let op = OpenAt::in_dir(
            Arc::clone(dir),
            path.as_ref().as_os_str().as_bytes(),
            self.flags()?,
        )?;
        self.run_open(op).await
    }

    async fn open_raw(&self, dirfd: RawFd, path: &Path) -> io::Result<File> {
        let op = OpenAt::new(dirfd, path.as_os_str().as_bytes(), self.flags()?)?;
        self.run_open(op).await
    }

    async fn run_open(&self, op: OpenAt) -> io::Result<File> {
        let op = op.mode(self.mode).resolve(self.resolve);
        match run(op).await {
            Ok(mut c) => match c.result() {
                Ok(_) => {
                    let fd = c.take_fd().expect("OpenAt hands over the file");
                    Ok(if self.register {
                        File::from(fd)
                    } else {
                        File {
                            fd: Some(fd),
                            reg: Registration(None),
                        }
                    })
                }
                Err(e) => Err(clone_error(e)),
            },
            Err((e, _)) => Err(e),
        }
    }
}

impl File {
    /// Opens `path` read-only.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Creates (or truncates) `path` for writing.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().expect("an open file").as_raw_fd()
    }

    /// Reads into `buf` at `pos`; returns the count (0 at end of file) and the buffer.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> (io::Result<usize>, B) {
        with_buf(run(Read::new(self.raw(), buf, pos)).await)
    }

    /// Reads until `buf` is full (a `Vec` to its capacity); `UnexpectedEof` if the file ends
    /// first.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn read_exact_at(&self, buf: Vec<u8>, mut pos: u64) -> (io::Result<()>, Vec<u8>) {
        let mut buf = buf;
        while buf.len() < buf.capacity() {
            let (res, back) = self.read_at(buf, pos).await;
            buf = back;
            match res {
                Ok(0) => return (Err(io::Error::from(io::ErrorKind::UnexpectedEof)), buf),
                Ok(n) => pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes `buf`'s bytes at `pos`; returns the count written and the buffer.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> (io::Result<usize>, B) {
        with_buf(run(Write::new(self.raw(), buf, pos)).await)
    }

    /// Writes all of `buf` at `pos` (a short write continues with the rest).
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = self.write_at(buf, pos).await;
        match res {
            Ok(n) if n == buf.len() => (Ok(()), buf),
            Ok(0) => (Err(io::Error::from(io::ErrorKind::WriteZero)), buf),
            // Rare for files (a full disk, a signal): finish with a copy of the rest.
            Ok(n) => {
                let rest = buf[n..].to_vec();
                let (res, _) = Box::pin(self.write_all_at(rest, pos + n as u64)).await;
                (res, buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Reads into several buffers in order at `pos`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn readv_at(
        &self,
        bufs: Vec<Vec<u8>>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<Vec<u8>>) {
        vectored(run(Readv::new(self.raw(), bufs, pos)).await)
    }

    /// Writes several buffers in order at `pos`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn writev_at(
        &self,
        bufs: Vec<Vec<u8>>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<Vec<u8>>) {
        vectored(run(Writev::new(self.raw(), bufs, pos)).await)
    }

    /// Flushes data and metadata to stable storage (`fsync`).
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn sync_all(&self) -> io::Result<()> {
        plain(run(Fsync::new(self.raw())).await).map(drop)
    }

    /// Flushes data to stable storage (`fdatasync`).
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn sync_data(&self) -> io::Result<()> {
        plain(run(Fsync::new(self.raw()).data_only()).await).map(drop)
    }

    /// Closes the file through the ring, reporting the close's error if any.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn close(mut self) -> io::Result<()> {
        let fd = self.fd.take().expect("an open file");
        cancel_ops_on(fd.as_raw_fd());
        self.reg.release(fd.as_raw_fd());
        plain(run(Close::new(fd)).await).map(drop)
    }
}

fn vectored(
    done: Result<oneloop::Completion, (io::Error, oneloop::Op)>,
) -> (io::Result<usize>, Vec<Vec<u8>>) {
    let (result, output) = split(done);
    let oneloop::Output::Bufs(bufs) = output else {
        unreachable!("vectored ops return their buffers")
    };
    let bufs = bufs
        .into_iter()
        .map(|b| {
            b.into_vec()
                .expect("the ring returns the Vecs it was given")
        })
        .collect();
    (result, bufs)
}

/// A file or socket registered with the ring of the thread that made it (`Ring::register_fd`):
/// on io_uring a fixed file (no per-op file look-up), on epoll and aio one registration with a
/// readiness cache (no `epoll_ctl` per wait). Released before the descriptor is closed, from
/// whichever thread drops it.
#[derive(Debug, Default)]
pub(crate) struct Registration(Option<oneloop::Waker>);

impl Registration {
    /// Registers `fd` with this thread's ring; none outside a runtime or if the ring refuses.
    pub(crate) fn new(fd: RawFd) -> Registration {
        Registration(
            try_with_context(|ctx| {
                let mut ring = ctx.try_ring_mut()?;
                ring.register_fd(fd).ok()?;
                Some(ring.waker())
            })
            .flatten(),
        )
    }

    /// Unregisters `fd` (directly on its own ring's thread, else through that ring's waker);
    /// call before it is closed.
    pub(crate) fn release(&mut self, fd: RawFd) {
        let Some(waker) = self.0.take() else {
            return;
        };
        let here = try_with_context(|ctx| match ctx.try_ring_mut() {
            Some(mut ring) if waker.wakes(&ring) => {
                ring.unregister_fd(fd);
                true
            }
            _ => false,
        });
        if here != Some(true) {
            waker.unregister_fd(fd);
        }
    }
}

/// Cancels every op in flight on `fd` (before it is closed).
pub(crate) fn cancel_ops_on(fd: RawFd) {
    try_with_context(|ctx| {
        if let Some(mut ring) = ctx.try_ring_mut() {
            let _ = ring.cancel_fd(fd);
        }
    });
}

impl From<OwnedFd> for File {
    /// Wraps an open descriptor (a pipe end works too: read and write it at
    /// [`oneloop::CURRENT_POSITION`]).
    fn from(fd: OwnedFd) -> File {
        let reg = Registration::new(fd.as_raw_fd());
        File { fd: Some(fd), reg }
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("an open file").as_fd()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Some(fd) = &self.fd {
            cancel_ops_on(fd.as_raw_fd());
            self.reg.release(fd.as_raw_fd());
        }
    }
}
