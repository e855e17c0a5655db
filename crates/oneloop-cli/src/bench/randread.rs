//! `randread`: 4 KiB random reads of a file at a queue depth, page cache warm (or `O_DIRECT`).
//! Baseline: a synchronous `pread` loop, same file, same run.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oneloop::{AlignedBuf, BackendKind, Buf, IoBuf, Read, Ring};

use super::{measure, Row};

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

fn buffer(direct: bool) -> Result<Buf> {
    Ok(if direct {
        AlignedBuf::new(BLOCK as usize, BLOCK as usize)?.into_buf()
    } else {
        Vec::with_capacity(BLOCK as usize).into_buf()
    })
}

pub fn run(
    kind: BackendKind,
    qd: usize,
    direct: bool,
    mib: u64,
    duration: Duration,
) -> Result<Row> {
    let path = test_file(mib)?;
    let file = open(&path, direct)?;
    if !direct {
        // Warm the cache: read every block once.
        let mut b = vec![0u8; 1 << 20];
        for i in 0..mib {
            file.read_at(&mut b, i << 20)?;
        }
    }
    let ours = measure(|| ours(kind, &file, qd, direct, mib, duration))?;
    let baseline = measure(|| sync_loop(&file, direct, mib, duration))?;
    Ok(Row {
        workload: "randread",
        params: format!("qd={qd}{}", if direct { " direct" } else { " warm" }),
        backend: kind.name(),
        unit: "reads",
        ours,
        baseline_name: "synchronous pread loop",
        baseline,
    })
}

fn ours(
    kind: BackendKind,
    file: &std::fs::File,
    qd: usize,
    direct: bool,
    mib: u64,
    duration: Duration,
) -> Result<u64> {
    let mut ring = Ring::builder()
        .backend(kind)
        .entries((qd as u32).max(8))
        .build()?;
    let mut offsets = Offsets::new(mib);
    let fd = file.as_raw_fd();
    for i in 0..qd {
        ring.submit(Read::new(fd, buffer(direct)?, offsets.next()), i as u64)?;
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
                match &mut buf {
                    Buf::Vec(v) => v.clear(),
                    Buf::Aligned(a) => a.clear(),
                    Buf::Boxed(_) => {}
                }
                ring.submit(Read::new(fd, buf, offsets.next()), 0)?;
            }
        }
    }
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
