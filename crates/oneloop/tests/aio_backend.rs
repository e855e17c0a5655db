//! What only the aio backend must show: pipe polls and `O_DIRECT` reads through one
//! `io_getevents` loop; buffered reads staying on AIO when warm and going to the pool when cold;
//! and `Auto` moving on when `io_setup` fails.
#![allow(missing_docs)]

#[path = "support/resident.rs"]
mod resident;
use resident::Mapped;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use oneloop::{AlignedBuf, BackendKind, Output, Poll, PollMask, Read, Ring};

const BLOCK: usize = 4096;

fn forced_elsewhere() -> bool {
    matches!(BackendKind::from_env(), Ok(Some(k)) if k != BackendKind::Aio && k != BackendKind::Auto)
}

fn aio_ring(entries: u32) -> Option<Ring> {
    if forced_elsewhere() {
        eprintln!("SKIP aio_backend: ONELOOP_BACKEND selects another backend");
        return None;
    }
    match Ring::builder()
        .backend(BackendKind::Aio)
        .entries(entries)
        .in_flight_max(4096)
        .build()
    {
        Ok(ring) => Some(ring),
        Err(e) => {
            eprintln!("SKIP aio_backend: {e}");
            None
        }
    }
}

fn pattern(block: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (block as usize * 13 + i) as u8)
        .collect()
}

fn temp_file(tag: &str, blocks: u64) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("oneloop-aio-{tag}-{}", std::process::id()));
    let contents: Vec<u8> = (0..blocks).flat_map(pattern).collect();
    std::fs::write(&path, contents).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    path
}

fn open_direct(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[test]
fn pipe_polls_and_direct_reads_share_one_io_getevents_loop() {
    let Some(mut ring) = aio_ring(1024) else {
        return;
    };
    const N: u64 = 1000;
    let path = temp_file("direct", N);
    let direct = match open_direct(&path) {
        Ok(fd) => fd,
        Err(e) => {
            std::fs::remove_file(&path).unwrap();
            return eprintln!(
                "SKIP aio O_DIRECT: refused in {}: {e}",
                std::env::temp_dir().display()
            );
        }
    };
    let pipes: Vec<_> = (0..N).map(|_| std::io::pipe().unwrap()).collect();
    for (i, (rd, _)) in pipes.iter().enumerate() {
        ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i as u64)
            .unwrap();
    }
    for block in 0..N {
        let buf = AlignedBuf::new(BLOCK, BLOCK).unwrap();
        ring.submit(
            Read::new(direct.as_raw_fd(), buf, block * BLOCK as u64),
            N + block,
        )
        .unwrap();
    }
    for (_, wr) in &pipes {
        std::io::Write::write_all(&mut &*wr, b"x").unwrap();
    }
    let mut seen = vec![false; 2 * N as usize];
    let mut got = 0;
    while got < 2 * N as usize {
        ring.wait(1, Some(Duration::from_secs(30))).unwrap();
        let batch: Vec<_> = ring.completions().collect();
        assert!(!batch.is_empty(), "stalled after {got} completions");
        for c in batch {
            let tag = c.user_data();
            assert!(
                !std::mem::replace(&mut seen[tag as usize], true),
                "{tag} twice"
            );
            if tag < N {
                assert!(c.poll_mask().unwrap().contains(PollMask::IN), "{c:?}");
            } else {
                assert_eq!(c.result().as_ref().unwrap(), &(BLOCK as u32), "{c:?}");
                let Output::Buf(oneloop::Buf::Aligned(b)) = c.into_output() else {
                    panic!("no buffer")
                };
                assert_eq!(b.as_slice(), pattern(tag - N));
            }
            got += 1;
        }
    }
    let stats = ring.stats();
    eprintln!("{}: {stats:?}", ring.describe());
    assert_eq!(stats.pool_jobs, 0, "direct reads never need the pool");
    assert!(
        stats.aio_requests >= 2 * N,
        "every poll and read was an AIO request: {stats:?}"
    );
    std::fs::remove_file(&path).unwrap();
}

fn read_block(ring: &mut Ring, fd: i32, block: u64) {
    ring.submit(
        Read::new(fd, Vec::with_capacity(BLOCK), block * BLOCK as u64),
        block,
    )
    .unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let mut c = ring.next_completion().unwrap();
    assert_eq!(
        c.take_buf().unwrap().into_vec().unwrap(),
        pattern(block),
        "{c:?}"
    );
}

fn fadvise(fd: i32, advice: i32) {
    // SAFETY: no pointers; `fd` is open.
    assert_eq!(unsafe { libc::posix_fadvise(fd, 0, 0, advice) }, 0);
}

#[test]
fn warm_buffered_reads_stay_on_aio_and_cold_ones_go_to_the_pool() {
    let Some(mut ring) = aio_ring(64) else { return };
    let blocks = 256;
    let path = temp_file("buffered", blocks);
    let file = std::fs::File::open(&path).unwrap();
    let fd = file.as_raw_fd();
    let before = ring.stats();
    for i in 0..1000 {
        read_block(&mut ring, fd, i % blocks);
    }
    let warm = ring.stats();
    let (warm_pool, warm_aio) = (
        warm.pool_jobs - before.pool_jobs,
        warm.aio_requests - before.aio_requests,
    );
    eprintln!("1000 warm reads: {warm_pool} pool jobs, {warm_aio} AIO requests");
    // A cached page can be locked for a moment (reclaim scanning it, under load), and a
    // no-wait read of it then says EAGAIN: seen once here, with other jobs writing gigabytes.
    assert!(
        warm_pool <= 10,
        "page-cache hits stay on AIO: {warm_pool} of 1000 did not"
    );
    assert!(warm_aio >= 1000, "each warm read is an AIO request");

    // DONTNEED is advice (a page may survive it), so each read is judged by whether its page
    // was resident just before it (mincore), not by the advice.
    fadvise(fd, libc::POSIX_FADV_RANDOM);
    let map = Mapped::new(fd, blocks as usize * BLOCK);
    let (mut cold, mut cold_pool, mut resident_pool) = (0, 0, 0);
    for i in 0..1000 {
        fadvise(fd, libc::POSIX_FADV_DONTNEED);
        let block = (i * 7) % blocks;
        let resident = map.resident(block as usize * BLOCK);
        let before = ring.stats().pool_jobs;
        read_block(&mut ring, fd, block);
        let pooled = ring.stats().pool_jobs - before;
        if resident {
            resident_pool += pooled;
        } else {
            cold += 1;
            cold_pool += pooled;
        }
    }
    eprintln!(
        "1000 reads after DONTNEED: {cold} of pages not resident, {cold_pool} of them on the pool; {resident_pool} pool jobs for resident pages"
    );
    assert!(
        cold >= 100,
        "DONTNEED evicted almost nothing ({cold} of 1000)"
    );
    // A `RWF_NOWAIT` read of a page not in memory answers EAGAIN (then the pool reads it) or,
    // on kernels whose no-wait read starts readahead and finds it done (seen on 6.18 with a
    // virtio disk: 25-75 % of such reads), completes in the kernel: both are right. The pool
    // path must be taken, and never for a resident page.
    assert!(cold_pool > 0, "no read of an evicted page reached the pool");
    assert!(cold_pool <= cold);
    assert_eq!(resident_pool, 0, "a resident page was read on the pool");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn auto_moves_on_when_io_setup_fails() {
    if BackendKind::from_env().ok().flatten().is_some() {
        return eprintln!("SKIP aio io_setup fallback: ONELOOP_BACKEND is set");
    }
    let max = std::fs::read_to_string("/proc/sys/fs/aio-max-nr")
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap();
    // More events than the whole system may have: io_setup fails with EAGAIN.
    let wanted = max + 1;
    let ring = Ring::builder()
        .exclude(BackendKind::Uring)
        .entries(u32::try_from(wanted).unwrap())
        .in_flight_max(wanted)
        .build()
        .unwrap();
    assert_eq!(ring.backend(), BackendKind::Epoll);
    let aio = ring
        .skipped()
        .iter()
        .find(|s| s.backend == BackendKind::Aio)
        .expect("aio was tried");
    eprintln!("aio skipped: {}", aio.reason);
    assert!(
        aio.reason.contains("EAGAIN") && aio.reason.contains("aio-max-nr"),
        "{}",
        aio.reason
    );
}
