//! `OpenAt::in_dir` keeps its directory open for as long as the op is in flight, and lets go
//! at the final completion: a caller that gives up on the open and closes its own handle can
//! never have the open land in another directory that reuses the number. Shown with an open
//! that waits (a FIFO's read end waits for a writer), on every backend.
#![allow(missing_docs)]

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use oneloop::{OpenAt, Ring};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_with;

#[test]
fn an_open_in_a_directory_holds_the_directory_until_it_ends() {
    let dir = std::env::temp_dir().join(format!("oneloop-open-in-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = std::ffi::CString::new(dir.join("f").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
    assert_eq!(rc, 0);
    for (kind, mut ring) in rings_with(|kind| Ring::builder().backend(kind)) {
        let handle = Arc::new(OwnedFd::from(std::fs::File::open(&dir).unwrap()));
        let open = OpenAt::in_dir(Arc::clone(&handle), "f", libc::O_RDONLY).unwrap();
        ring.submit(open, 1).unwrap();
        ring.wait(0, Some(Duration::from_millis(50))).unwrap();
        // (io_uring's kernel opens a FIFO's read end without waiting for a writer.)
        let waited = ring.ready() == 0;
        if waited {
            assert_eq!(
                Arc::strong_count(&handle),
                2,
                "{kind}: the op holds the directory"
            );
        }
        // The writer lets the open finish; its completion lets go of the directory.
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("f"))
            .unwrap();
        if waited {
            ring.wait(1, Some(Duration::from_secs(10))).unwrap();
        }
        let mut c = ring.next_completion().expect("the open ends");
        assert!(c.result().is_ok(), "{kind}: {c:?}");
        drop(c.take_fd());
        drop(c);
        assert_eq!(
            Arc::strong_count(&handle),
            1,
            "{kind}: the directory was not let go"
        );
        drop(writer);
        eprintln!("PASS {kind} (the open waited for a writer: {waited})");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
