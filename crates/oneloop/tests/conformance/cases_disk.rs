//! Cases 22–23: file I/O, `O_DIRECT`, and bad input.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oneloop::{AlignedBuf, Fsync, Output, Poll, PollMask, Read, Readv, Ring, Write, Writev};

use crate::harness::*;

/// Runs one op to its final completion.
fn run_one(ring: &mut Ring, op: impl Into<oneloop::Submission>) -> oneloop::Completion {
    let id = ring.submit(op, 0).unwrap();
    final_of(ring, id).1
}

fn vec_of(c: &mut oneloop::Completion) -> Vec<u8> {
    c.take_buf().unwrap().into_vec().unwrap()
}

/// Case 22: Read at an offset, a short read at EOF, a read past EOF, write then read back,
/// readv/writev, fsync and fdatasync.
pub fn c22_disk_read_write_vectored_sync(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let file = TempFile::new("disk", b"");
    let fd = file.fd();
    let mut c = run_one(&mut ring, Write::new(fd, b"hello world".to_vec(), 0));
    assert_eq!(c.result().as_ref().unwrap(), &11);
    assert_eq!(
        vec_of(&mut c),
        b"hello world",
        "a write hands its buffer back unchanged"
    );

    let mut c = run_one(&mut ring, Read::new(fd, Vec::with_capacity(64), 0));
    assert_eq!(c.result().as_ref().unwrap(), &11);
    assert_eq!(vec_of(&mut c), b"hello world");

    let mut c = run_one(&mut ring, Read::new(fd, Vec::with_capacity(64), 6));
    assert_eq!(c.result().as_ref().unwrap(), &5, "short read at EOF");
    assert_eq!(vec_of(&mut c), b"world");

    let mut c = run_one(&mut ring, Read::new(fd, Vec::with_capacity(64), 1000));
    assert_eq!(c.result().as_ref().unwrap(), &0, "read past EOF");
    assert!(vec_of(&mut c).is_empty());

    // A Vec with bytes already in it is appended to; a boxed slice is filled from 0.
    let mut prefix = Vec::with_capacity(16);
    prefix.extend_from_slice(b">>");
    let mut c = run_one(&mut ring, Read::new(fd, prefix, 0));
    assert_eq!(c.result().as_ref().unwrap(), &11);
    assert_eq!(vec_of(&mut c), b">>hello world");
    let boxed: Box<[u8]> = vec![b'.'; 5].into_boxed_slice();
    let c = run_one(&mut ring, Read::new(fd, boxed, 0));
    match c.into_output() {
        Output::Buf(oneloop::Buf::Boxed(b)) => assert_eq!(&*b, b"hello"),
        other => panic!("{other:?}"),
    }

    let c = run_one(
        &mut ring,
        Writev::new(fd, vec![b"abc".to_vec(), b"defg".to_vec()], 100),
    );
    assert_eq!(c.result().as_ref().unwrap(), &7);
    let c = run_one(
        &mut ring,
        Readv::new(fd, vec![Vec::with_capacity(2), Vec::with_capacity(10)], 100),
    );
    assert_eq!(c.result().as_ref().unwrap(), &7);
    match c.into_output() {
        Output::Bufs(bufs) => {
            let parts: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            assert_eq!(parts, [&b"ab"[..], &b"cdefg"[..]]);
        }
        other => panic!("{other:?}"),
    }

    let c = run_one(&mut ring, Fsync::new(fd));
    assert_eq!(c.result().as_ref().unwrap(), &0);
    let c = run_one(&mut ring, Fsync::new(fd).data_only());
    assert_eq!(c.result().as_ref().unwrap(), &0);
    assert_eq!(std::fs::metadata(&file.path).unwrap().len(), 107);
    Outcome::Pass
}

/// Opens a new file with `O_DIRECT` in the temp dir, or says why it cannot.
pub fn open_direct(tag: &str) -> Result<(TempFile, OwnedFd), String> {
    let file = TempFile::new(tag, &vec![7u8; 8192]);
    let path = std::ffi::CString::new(file.path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "O_DIRECT refused in {}: {e}",
            std::env::temp_dir().display()
        ));
    }
    // SAFETY: `fd` was just opened above and nothing else owns it.
    Ok((file, unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Case 22 (O_DIRECT): Aligned writes and reads through `O_DIRECT`, where the filesystem allows it.
pub fn c22_disk_o_direct(h: &Harness) -> Outcome {
    let (_file, fd) = match open_direct("direct") {
        Ok(v) => v,
        Err(why) => return Outcome::Skip(why),
    };
    let mut ring = h.ring();
    let mut out = AlignedBuf::new(4096, 4096).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
    out.extend_from_slice(&pattern);
    let c = run_one(&mut ring, Write::new(fd.as_raw_fd(), out, 4096));
    assert_eq!(c.result().as_ref().unwrap(), &4096, "{c:?}");
    let c = run_one(
        &mut ring,
        Read::new(fd.as_raw_fd(), AlignedBuf::new(8192, 4096).unwrap(), 0),
    );
    assert_eq!(c.result().as_ref().unwrap(), &8192, "{c:?}");
    match c.into_output() {
        Output::Buf(oneloop::Buf::Aligned(a)) => {
            assert_eq!(&a.as_slice()[..4096], &[7u8; 4096][..]);
            assert_eq!(&a.as_slice()[4096..], &pattern[..]);
        }
        other => panic!("{other:?}"),
    }
    Outcome::Pass
}

/// Case 23: Bad input gives a clear error completion: a write-only fd, a closed fd, an unaligned
/// `O_DIRECT` buffer; never a panic, never a lost completion.
pub fn c23_disk_bad_input(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let file = TempFile::new("badinput", b"some bytes");
    let wronly = std::fs::OpenOptions::new()
        .write(true)
        .open(&file.path)
        .unwrap();
    let c = run_one(
        &mut ring,
        Read::new(wronly.as_raw_fd(), Vec::with_capacity(8), 0),
    );
    assert_eq!(errno(&c), Some(libc::EBADF), "{c:?}");
    let rdonly = std::fs::File::open(&file.path).unwrap();
    let c = run_one(&mut ring, Write::new(rdonly.as_raw_fd(), b"x".to_vec(), 0));
    assert_eq!(errno(&c), Some(libc::EBADF), "{c:?}");
    // Above RLIMIT_NOFILE, so never open in this process, whatever other threads do.
    let closed = 1 << 30;
    let c = run_one(&mut ring, Read::new(closed, Vec::with_capacity(8), 0));
    assert_eq!(errno(&c), Some(libc::EBADF), "{c:?}");
    let c = run_one(&mut ring, Poll::new(closed, PollMask::IN));
    assert_eq!(errno(&c), Some(libc::EBADF), "{c:?}");
    let c = run_one(&mut ring, Fsync::new(closed));
    assert_eq!(errno(&c), Some(libc::EBADF), "{c:?}");
    let mut c = run_one(&mut ring, Read::new(file.fd(), Vec::with_capacity(8), 0));
    assert_eq!(
        vec_of(&mut c),
        b"some byt",
        "the ring still works after errors"
    );
    match open_direct("unaligned") {
        Ok((_file, fd)) => {
            // One byte in use: the read target starts one byte past an aligned address.
            let mut buf = AlignedBuf::new(8192, 4096).unwrap();
            buf.set_len(1);
            let c = run_one(&mut ring, Read::new(fd.as_raw_fd(), buf, 0));
            assert_eq!(errno(&c), Some(libc::EINVAL), "{c:?}");
            Outcome::Pass
        }
        Err(why) => Outcome::Skip(format!(
            "EBADF checks passed; unaligned O_DIRECT not checked: {why}"
        )),
    }
}
