//! The epoll backend sends only real disk waits to the blocking pool: page-cache hits complete
//! inline (`preadv2(RWF_NOWAIT)`), reads of evicted pages go to the pool. Counted with
//! `Ring::stats().pool_jobs`.
#![allow(missing_docs)]

#[path = "support/resident.rs"]
mod resident;
use resident::Mapped;

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{BackendKind, Read, Ring};

const BLOCK: usize = 4096;

fn epoll_ring() -> Option<Ring> {
    if matches!(BackendKind::from_env(), Ok(Some(k)) if k != BackendKind::Epoll && k != BackendKind::Auto)
    {
        eprintln!("SKIP epoll_pool: ONELOOP_BACKEND selects another backend");
        return None;
    }
    match Ring::builder().backend(BackendKind::Epoll).build() {
        Ok(ring) => Some(ring),
        Err(e) => {
            eprintln!("SKIP epoll_pool: {e}");
            None
        }
    }
}

fn read_block(ring: &mut Ring, fd: i32, offset: u64) -> Vec<u8> {
    ring.submit(Read::new(fd, Vec::with_capacity(BLOCK), offset), offset)
        .unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let mut c = ring.next_completion().expect("a completion");
    assert_eq!(c.result().as_ref().unwrap(), &(BLOCK as u32), "{c:?}");
    c.take_buf().unwrap().into_vec().unwrap()
}

/// Advice about the whole file.
fn fadvise(fd: i32, advice: i32) {
    // SAFETY: no pointers; `fd` is an open descriptor.
    let rc = unsafe { libc::posix_fadvise(fd, 0, 0, advice) };
    assert_eq!(rc, 0, "posix_fadvise");
}

fn pattern(block: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (block as usize * 31 + i) as u8)
        .collect()
}

#[test]
fn page_cache_hits_stay_inline_and_misses_use_the_pool() {
    let Some(mut ring) = epoll_ring() else { return };
    let path = std::env::temp_dir().join(format!("oneloop-epoll-pool-{}", std::process::id()));
    let blocks = 1024u64;
    let contents: Vec<u8> = (0..blocks).flat_map(pattern).collect();
    std::fs::write(&path, &contents).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    let fd = file.as_raw_fd();

    // Warm: every block is in the page cache (just written).
    let before = ring.stats().pool_jobs;
    for i in 0..10_000u64 {
        let block = i % blocks;
        assert_eq!(
            read_block(&mut ring, fd, block * BLOCK as u64),
            pattern(block)
        );
    }
    let warm_jobs = ring.stats().pool_jobs - before;
    eprintln!("10000 warm reads: {warm_jobs} pool jobs");
    // A cached page can be locked for a moment (reclaim scanning it, under load), and a
    // no-wait read of it then says EAGAIN; anything more than a trace is a defect.
    assert!(
        warm_jobs <= 100,
        "page-cache hits stay inline: {warm_jobs} of 10000 did not"
    );

    // Cold: drop the file's pages before each read; no readahead. DONTNEED is advice (a page
    // may survive it), so each read is judged by whether its page was resident just before.
    fadvise(fd, libc::POSIX_FADV_RANDOM);
    let map = Mapped::new(fd, blocks as usize * BLOCK);
    let (mut cold, mut cold_jobs, mut resident_jobs) = (0, 0, 0);
    for i in 0..1000u64 {
        fadvise(fd, libc::POSIX_FADV_DONTNEED);
        let block = (i * 7) % blocks;
        let resident = map.resident(block as usize * BLOCK);
        let before = ring.stats().pool_jobs;
        assert_eq!(
            read_block(&mut ring, fd, block * BLOCK as u64),
            pattern(block)
        );
        let jobs = ring.stats().pool_jobs - before;
        if resident {
            resident_jobs += jobs;
        } else {
            cold += 1;
            cold_jobs += jobs;
        }
    }
    eprintln!("1000 reads after DONTNEED: {cold} of pages not resident, {cold_jobs} of them on the pool; {resident_jobs} pool jobs for resident pages");
    assert!(
        cold >= 100,
        "DONTNEED evicted almost nothing ({cold} of 1000)"
    );
    // A RWF_NOWAIT read of an evicted page answers EAGAIN (then the pool reads it) or, on
    // kernels whose no-wait read starts readahead and finds it done (seen on 6.18: a few
    // percent), reads it inline: both are right. The pool path must be seen, and never for a
    // resident page.
    assert!(cold_jobs > 0, "no read of an evicted page reached the pool");
    assert_eq!(resident_jobs, 0, "a resident page was read on the pool");
    std::fs::remove_file(&path).unwrap();
}

/// A FIFO in the temp dir: opening it for reading blocks until a writer comes.
fn fifo(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("oneloop-fifo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    path
}

#[test]
fn a_running_pool_job_reports_too_late_and_its_real_result_arrives() {
    let Some(mut ring) = epoll_ring() else { return };
    let path = fifo("running");
    let open = oneloop::OpenAt::new(
        libc::AT_FDCWD,
        path.as_os_str().as_encoded_bytes(),
        libc::O_RDONLY,
    )
    .unwrap();
    let id = ring.submit(open, 1).unwrap();
    // The worker is now blocked inside openat2 until a writer opens the FIFO.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ring.stats().pool_jobs, 1);
    assert_eq!(ring.cancel(id).unwrap(), oneloop::CancelOutcome::TooLate);
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let mut c = ring.next_completion().expect("the real result");
    assert!(c.result().is_ok(), "{c:?}");
    assert!(c.take_fd().is_some(), "the opened FIFO is handed over");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn dropping_a_ring_does_not_hang_on_a_blocked_pool_job() {
    let Some(mut ring) = epoll_ring() else { return };
    let path = fifo("blocked");
    let open = oneloop::OpenAt::new(
        libc::AT_FDCWD,
        path.as_os_str().as_encoded_bytes(),
        libc::O_RDONLY,
    )
    .unwrap();
    ring.submit(open, 1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = std::time::Instant::now();
    drop(ring);
    let took = start.elapsed();
    eprintln!("drop with a blocked pool job took {took:?}");
    assert!(took < Duration::from_secs(30), "the drop hung");
    // Release the worker: it finishes its open and closes the descriptor it produced.
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// An open whose path is in the kernel's caches finishes inside `submit` (no pool job); one
/// that creates a file goes to the pool; `RESOLVE_BENEATH` still holds.
#[test]
fn cached_opens_stay_inline_and_creating_ones_use_the_pool() {
    use oneloop::OpenAt;
    use std::os::unix::ffi::OsStrExt;
    let Some(mut ring) = epoll_ring() else { return };
    let dir = std::env::temp_dir().join(format!("oneloop-open-inline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hot"), b"x").unwrap();
    let root = std::fs::File::open(&dir).unwrap();
    let _ = std::fs::metadata(dir.join("hot")).unwrap(); // the look-up is cached now
    let beneath = libc::RESOLVE_BENEATH;

    let open = OpenAt::new(root.as_raw_fd(), "hot", libc::O_RDONLY)
        .unwrap()
        .resolve(beneath);
    let id = ring.submit(open, 1).unwrap();
    let mut c = ring
        .take_completion(id)
        .expect("a cached open finishes inside submit");
    assert!(c.result().is_ok(), "{c:?}");
    assert!(c.take_fd().is_some());
    assert_eq!(ring.stats().pool_jobs, 0);

    let escape = OpenAt::new(root.as_raw_fd(), "../", libc::O_RDONLY)
        .unwrap()
        .resolve(beneath);
    // (The kernel may decline `..` from its caches: then the pool gives the same answer.)
    ring.submit(escape, 2).unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let c = ring.next_completion().unwrap();
    assert_eq!(
        c.result().as_ref().unwrap_err().raw_os_error(),
        Some(libc::EXDEV)
    );

    let create = OpenAt::new(
        libc::AT_FDCWD,
        dir.as_os_str().as_bytes(),
        libc::O_TMPFILE | libc::O_RDWR,
    )
    .unwrap();
    let jobs = ring.stats().pool_jobs;
    ring.submit(create, 3).unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let c = ring.next_completion().unwrap();
    assert!(c.result().is_ok(), "{c:?}");
    assert_eq!(
        ring.stats().pool_jobs,
        jobs + 1,
        "a creating open runs on the pool"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
