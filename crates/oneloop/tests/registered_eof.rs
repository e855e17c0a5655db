//! A registered TCP socket whose peer sent a few bytes and closed, both seen in one event:
//! the first receive is short (5 of 64 bytes), and the next must still end — with 0, end of
//! stream — although no further readiness edge will ever come. (The readiness cache once took
//! that short receive for "drained" and left the second waiting forever.)
#![allow(missing_docs)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{Recv, Ring};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_with;

#[test]
fn a_short_read_before_end_of_stream_does_not_hide_it() {
    for (kind, mut ring) in rings_with(|kind| Ring::builder().backend(kind)) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ring.register_fd(ours.as_raw_fd()).unwrap();
        peer.write_all(b"hello").unwrap();
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        // Let the ring take the data + hang-up event with nobody waiting (a wait with
        // nothing in flight runs to its timeout).
        assert_eq!(ring.wait(1, Some(Duration::from_millis(50))).unwrap(), 0);
        for (want, round) in [(5, 1), (0, 2)] {
            ring.submit(Recv::new(ours.as_raw_fd(), Vec::with_capacity(64)), round)
                .unwrap();
            ring.wait(1, Some(Duration::from_secs(5))).unwrap();
            let c = ring
                .next_completion()
                .unwrap_or_else(|| panic!("{kind}: receive {round} never ended"));
            assert_eq!(
                c.result().as_ref().unwrap(),
                &want,
                "{kind} receive {round}"
            );
        }
        ring.unregister_fd(ours.as_raw_fd());
        eprintln!("PASS {kind}");
    }
}
