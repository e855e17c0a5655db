//! The cp example copies a 256 MiB file byte-exactly on each backend.
#![allow(missing_docs)]

#[path = "../examples/cp.rs"]
mod cp;

use std::io::{Read, Write};
use std::path::Path;

use oneloop::BackendKind;
use oneloop_rt::Runtime;

const SIZE: usize = 256 << 20;

/// Writes `SIZE` pseudo-random bytes (xorshift, so nothing compresses or repeats by block).
fn make_source(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..SIZE / block.len() {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// Compares two files byte for byte, a MiB at a time.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn cp_copies_256_mib_exactly_on_every_backend() {
    let dir = std::env::temp_dir();
    let src = dir.join(format!("oneloop-rt-cp-src-{}", std::process::id()));
    make_source(&src);
    let forced = BackendKind::from_env().unwrap();
    for kind in BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != BackendKind::Auto) {
            continue;
        }
        if let Err(e) = oneloop::Ring::builder().backend(kind).entries(4).build() {
            eprintln!("SKIP {kind} cp: {e}");
            continue;
        }
        let dst = dir.join(format!("oneloop-rt-cp-dst-{}-{kind}", std::process::id()));
        let start = std::time::Instant::now();
        let copied = Runtime::builder()
            .backend(kind)
            .build()
            .block_on(cp::copy(&src, &dst, 16, 256 * 1024))
            .unwrap()
            .unwrap();
        let took = start.elapsed();
        assert_eq!(copied, SIZE as u64);
        assert!(same_bytes(&src, &dst), "{kind}: the copy differs");
        eprintln!("PASS {kind} cp: 256 MiB in {took:?}");
        std::fs::remove_file(&dst).unwrap();
    }
    std::fs::remove_file(&src).unwrap();
}
