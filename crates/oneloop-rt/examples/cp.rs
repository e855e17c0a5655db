//! `cp` on oneloop-rt: copies a file with a queue depth of reads and writes in flight.
//!
//! `cargo run --release -p oneloop-rt --example cp -- SRC DST [QUEUE_DEPTH] [CHUNK_BYTES]`
//! (defaults 16 and 256 KiB). `tests/cp.rs` copies 256 MiB with it on each backend and
//! compares the bytes.

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use oneloop_rt::fs::{File, OpenOptions};

/// Copies `src` to `dst` with `queue_depth` chunk copies in flight; returns the bytes copied.
pub async fn copy(src: &Path, dst: &Path, queue_depth: usize, chunk: usize) -> io::Result<u64> {
    let len = std::fs::metadata(src)?.len();
    let src = Rc::new(File::open(src).await?);
    let dst = Rc::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dst)
            .await?,
    );
    let next = Rc::new(Cell::new(0u64));
    let workers: Vec<_> = (0..queue_depth.max(1))
        .map(|_| {
            let (src, dst, next) = (Rc::clone(&src), Rc::clone(&dst), Rc::clone(&next));
            oneloop_rt::spawn(async move {
                let mut buf = Vec::with_capacity(chunk);
                loop {
                    let pos = next.get();
                    if pos >= len {
                        return Ok::<_, io::Error>(buf);
                    }
                    next.set(pos + chunk as u64);
                    buf.clear();
                    let want = (len - pos).min(chunk as u64) as usize;
                    buf.reserve_exact(want);
                    let (res, back) = src.read_at(buf, pos).await;
                    buf = back;
                    let n = res?;
                    if n != want {
                        // A short read: finish this chunk exactly.
                        buf.truncate(n);
                        let mut rest = Vec::with_capacity(want - n);
                        let (res, r) = src
                            .read_exact_at(std::mem::take(&mut rest), pos + n as u64)
                            .await;
                        res?;
                        buf.extend_from_slice(&r);
                    }
                    let (res, back) = dst.write_all_at(buf, pos).await;
                    buf = back;
                    res?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    dst.sync_data().await?;
    Ok(len)
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: cp SRC DST [QUEUE_DEPTH] [CHUNK_BYTES]");
        std::process::exit(2);
    }
    let qd = args
        .get(3)
        .map_or(Ok(16), |s| s.parse())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("queue depth: {e}")))?;
    let chunk = args
        .get(4)
        .map_or(Ok(256 * 1024), |s| s.parse())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("chunk: {e}")))?;
    let start = std::time::Instant::now();
    let n = oneloop_rt::block_on(copy(Path::new(&args[1]), Path::new(&args[2]), qd, chunk))?;
    eprintln!("cp: {n} bytes in {:?}", start.elapsed());
    Ok(())
}
