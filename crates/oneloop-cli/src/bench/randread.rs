//! `randread`: 4 KiB random reads of a file at a queue depth, page cache warm (or `O_DIRECT`),
//! into the ring's registered buffers (`RingBuilder::fixed_buffers`: `READ_FIXED` on uring).
//! Baseline: a synchronous `pread` loop, same file, same run. On uring a second row compares
//! the same measurement with what io_uring itself does on this kernel: a loop on the
//! `io-uring` crate at the same queue depth, with the file and buffers registered
//! (`READ_FIXED`), batched submission and `DEFER_TASKRUN`. The sides run in alternating
//! rounds, as in `nop`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oneloop::{AlignedBuf, BackendKind, Buf, Read, Ring};

use super::{measure, Row, Sample};

/// Alternating rounds per side.
const ROUNDS: u32 = 5;

const BLOCK: u64 = 4096;

/// Test files this run created, removed by [`remove_test_files`].
static CREATED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the test files this run created.
pub fn remove_test_files() {
    for path in CREATED.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// The shared test file (created once per run, sized `mib` MiB).
pub fn test_file(mib: u64) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("oneloop-bench-{}-{mib}MiB", std::process::id()));
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.clone());
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(mib << 20) {
        let file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let chunk = vec![0xA5u8; 1 << 20];
        for i in 0..mib {
            file.write_all_at(&chunk, i << 20)?;
        }
        file.sync_all()?;
    }
    Ok(path)
}

/// Deterministic offsets in the file, 4 KiB aligned.
pub struct Offsets {
    x: u64,
    blocks: u64,
}

impl Offsets {
    pub fn new(mib: u64) -> Offsets {
        Offsets {
            x: 0x9E37_79B9_7F4A_7C15,
            blocks: (mib << 20) / BLOCK,
        }
    }
    pub fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % self.blocks) * BLOCK
    }
}

fn open(path: &PathBuf, direct: bool) -> Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
        .with_context(|| format!("open {} (direct: {direct})", path.display()))
}

pub fn run(
    kind: BackendKind,
    qd: usize,
    direct: bool,
    mib: u64,
    duration: Duration,
) -> Result<Vec<Row>> {
    let path = test_file(mib)?;
    let file = open(&path, direct)?;
    if !direct {
        // Warm the cache: read every block once.
        let mut b = vec![0u8; 1 << 20];
        for i in 0..mib {
            file.read_at(&mut b, i << 20)?;
        }
    }
    // Alternating rounds (ours, pread, raw, ours, ...), so the shared machine's drift falls on
    // every side alike; each side's figure is its total.
    let round = duration / ROUNDS;
    let uring = kind == BackendKind::Uring;
    let (mut ours_total, mut baseline, mut raw) =
        (Sample::default(), Sample::default(), Sample::default());
    for _ in 0..ROUNDS {
        ours_total.absorb(measure(|| ours(kind, &file, qd, mib, round))?);
        baseline.absorb(measure(|| sync_loop(&file, direct, mib, round))?);
        if uring {
            raw.absorb(measure(|| raw_uring_loop(&file, qd, mib, round))?);
        }
    }
    let ours = ours_total;
    let params = format!("qd={qd}{}", if direct { " direct" } else { " warm" });
    let mut rows = vec![Row {
        workload: "randread",
        params: params.clone(),
        backend: kind.name(),
        unit: "reads",
        ours,
        baseline_name: "synchronous pread loop",
        baseline,
    }];
    if uring {
        rows.push(Row {
            workload: "randread",
            params: format!("{params} vs raw"),
            backend: kind.name(),
            unit: "reads",
            ours,
            baseline_name: "raw io-uring loop, registered file and buffers",
            baseline: raw,
        });
    }
    Ok(rows)
}

/// io_uring's own ceiling here: `qd` `READ_FIXED`s of a registered file into registered
/// buffers, every completion answered by a new read, one `io_uring_enter` per batch.
#[allow(unsafe_code)]
fn raw_uring_loop(file: &std::fs::File, qd: usize, mib: u64, duration: Duration) -> Result<u64> {
    use io_uring::{opcode, types, IoUring};
    let entries = (qd as u32).next_power_of_two().max(8);
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))?;
    ring.submitter().register_files(&[file.as_raw_fd()])?;
    let mut bufs = (0..qd)
        .map(|_| AlignedBuf::new(BLOCK as usize, BLOCK as usize))
        .collect::<std::io::Result<Vec<_>>>()?;
    let iovecs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| {
            b.set_len(BLOCK as usize);
            libc::iovec {
                iov_base: b.as_mut_slice().as_mut_ptr().cast(),
                iov_len: BLOCK as usize,
            }
        })
        .collect();
    // SAFETY: the iovecs point into `bufs`, which live (unmoved: heap allocations) until the
    // ring is dropped at the end of this function, after every read has completed.
    unsafe { ring.submitter().register_buffers(&iovecs)? };
    // The registered buffers are aligned: right for O_DIRECT and buffered files alike.
    let mut offsets = Offsets::new(mib);
    let read = |i: usize, offset: u64| {
        opcode::ReadFixed::new(
            types::Fixed(0),
            iovecs[i].iov_base.cast(),
            BLOCK as u32,
            i as u16,
        )
        .offset(offset)
        .build()
        .user_data(i as u64)
    };
    for i in 0..qd {
        // SAFETY: the SQ has room for `qd` entries; the read names buffer `i`, registered above
        // and not reused until its completion is reaped.
        unsafe { ring.submission().push(&read(i, offsets.next())) }
            .map_err(|_| anyhow::anyhow!("SQ full"))?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut in_flight = qd;
    let mut stop = false;
    let mut finished = Vec::with_capacity(qd);
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        stop |= start.elapsed() >= duration;
        finished.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for (i, res) in finished.drain(..) {
            anyhow::ensure!(res as u64 == BLOCK, "raw read failed: {res}");
            done += 1;
            if stop {
                in_flight -= 1;
            } else {
                // SAFETY: as above; buffer `i` was just handed back by its completion.
                unsafe { ring.submission().push(&read(i, offsets.next())) }
                    .map_err(|_| anyhow::anyhow!("SQ full"))?;
            }
        }
    }
    drop(ring);
    drop(bufs);
    Ok(done)
}

#[inline(never)]
fn ours(
    kind: BackendKind,
    file: &std::fs::File,
    qd: usize,
    mib: u64,
    duration: Duration,
) -> Result<u64> {
    // As a user would: the ring's registered buffers (READ_FIXED on io_uring; page-aligned,
    // so right for O_DIRECT too), and the file registered (a fixed file on io_uring).
    let mut ring = Ring::builder()
        .backend(kind)
        .entries((qd as u32).max(8))
        .fixed_buffers(qd, BLOCK as usize)
        .build()?;
    let pool = ring.fixed_buffers().expect("asked for").clone();
    if kind == BackendKind::Uring {
        if let Err(why) = pool.registered() {
            eprintln!("randread: buffers not registered: {why}");
        }
    }
    let mut offsets = Offsets::new(mib);
    let fd = file.as_raw_fd();
    ring.register_fd(fd)?;
    for i in 0..qd {
        let buf = pool.take().expect("a buffer per read in flight");
        ring.submit(Read::new(fd, buf, offsets.next()), i as u64)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut stop = false;
    let mut batch = Vec::with_capacity(qd);
    while ring.in_flight() > 0 || ring.ready() > 0 {
        ring.wait(1, None)?;
        if !stop && start.elapsed() >= duration {
            stop = true;
        }
        batch.extend(ring.completions());
        for mut c in batch.drain(..) {
            anyhow::ensure!(
                c.result().as_ref().is_ok_and(|&n| n as u64 == BLOCK),
                "read failed: {c:?}"
            );
            done += 1;
            if !stop {
                let mut buf = c.take_buf().expect("Read returns its buffer");
                if let Buf::Fixed(f) = &mut buf {
                    f.clear();
                }
                ring.submit(Read::new(fd, buf, offsets.next()), 0)?;
            }
        }
    }
    ring.unregister_fd(fd);
    Ok(done)
}

fn sync_loop(file: &std::fs::File, direct: bool, mib: u64, duration: Duration) -> Result<u64> {
    let mut offsets = Offsets::new(mib);
    let mut aligned = AlignedBuf::new(BLOCK as usize, BLOCK as usize)?;
    aligned.set_len(BLOCK as usize);
    let mut plain = vec![0u8; BLOCK as usize];
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            let buf: &mut [u8] = if direct {
                aligned.as_mut_slice()
            } else {
                &mut plain
            };
            let n = file.read_at(buf, offsets.next())?;
            anyhow::ensure!(n as u64 == BLOCK, "short read");
            done += 1;
        }
    }
    Ok(done)
}
