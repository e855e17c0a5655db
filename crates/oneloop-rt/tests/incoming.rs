//! `TcpListener::incoming`: connections from one multishot accept (`AcceptMulti`) — each
//! connection once, with its peer; the accept stops at its bound of untaken connections and
//! starts again when they are taken; dropping it closes what it accepted and nobody took.
#![allow(missing_docs)]

mod common;

use std::io::Read as _;
use std::time::Duration;

use oneloop_rt::net::{TcpListener, INCOMING_UNTAKEN};
use oneloop_rt::time::timeout;

fn submitted(name: &str) -> u64 {
    let kind = oneloop::Op::NAMES.iter().position(|n| *n == name).unwrap();
    oneloop_rt::stats().unwrap().ring.submitted[kind]
}

const LONG: Duration = Duration::from_secs(20);

/// Waits (without blocking the runtime) for the client thread, and takes its sockets.
async fn joined(
    connecting: std::thread::JoinHandle<Vec<std::net::TcpStream>>,
) -> Vec<std::net::TcpStream> {
    while !connecting.is_finished() {
        oneloop_rt::time::sleep(Duration::from_millis(5)).await;
    }
    connecting.join().unwrap()
}

/// Connects `n` clients (std sockets, from another thread): their sockets.
fn clients(
    addr: std::net::SocketAddr,
    n: usize,
) -> std::thread::JoinHandle<Vec<std::net::TcpStream>> {
    std::thread::spawn(move || {
        (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect()
    })
}

/// Every connection comes once, with its own peer address; one accept op serves many (far
/// more connections than the bound of untaken ones, so it also restarts).
#[test]
fn incoming_takes_every_connection_once() {
    common::on_every_backend("incoming", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let n = 3 * INCOMING_UNTAKEN as usize;
        let before = submitted("AcceptMulti");
        let connecting = clients(listener.local_addr().unwrap(), n);
        let mut incoming = listener.incoming();
        let mut peers = Vec::new();
        let mut kept = Vec::new();
        while peers.len() < n {
            let (stream, peer) = timeout(LONG, incoming.next())
                .await
                .expect("a connection within 20 s")
                .unwrap();
            assert_eq!(stream.peer_addr().unwrap(), peer);
            peers.push(peer);
            kept.push(stream);
        }
        let sockets = joined(connecting).await;
        let mut locals: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        peers.sort();
        locals.sort();
        assert_eq!(peers, locals, "each client's connection once");
        let ops = submitted("AcceptMulti") - before;
        assert!(
            (1..n as u64 / 4).contains(&ops),
            "{ops} accept ops for {n} connections: one serves many"
        );
    });
}

/// At the bound, the accept stops with connections waiting untaken; taken, they all come,
/// and the accept starts again for the rest (waiting in the listen backlog meanwhile).
#[test]
fn incoming_bounded_then_restarted() {
    common::on_every_backend("incoming bound", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // More than the bound, fewer than the bound plus the listen backlog (128).
        let n = INCOMING_UNTAKEN as usize + 40;
        let connecting = clients(listener.local_addr().unwrap(), n);
        let mut incoming = listener.incoming();
        // The first arms the accept; then nobody takes for a while.
        let first = timeout(LONG, incoming.next()).await.unwrap().unwrap();
        let sockets = joined(connecting).await;
        oneloop_rt::time::sleep(Duration::from_millis(50)).await;
        let in_flight = oneloop_rt::stats().unwrap().in_flight;
        assert!(
            in_flight < 8,
            "{in_flight} ops in flight: the accept stopped at its bound"
        );
        let mut got = vec![first];
        while got.len() < n {
            got.push(timeout(LONG, incoming.next()).await.unwrap().unwrap());
        }
        assert_eq!(got.len(), sockets.len());
    });
}

/// Dropped with connections accepted and untaken: those are closed (their clients read end of
/// stream), and the listener goes on accepting.
#[test]
fn incoming_dropped_closes_what_it_held() {
    common::on_every_backend("incoming dropped", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = listener.incoming();
        let connecting = clients(addr, 4);
        let (_first, _) = timeout(LONG, incoming.next()).await.unwrap().unwrap();
        let mut sockets = joined(connecting).await;
        oneloop_rt::time::sleep(Duration::from_millis(50)).await;
        drop(incoming);
        oneloop_rt::time::sleep(Duration::from_millis(20)).await;
        // Three of the four were accepted and not taken: closed (end of stream or a reset);
        // the one taken is open (its read times out).
        let (mut closed, mut open) = (0, 0);
        for s in &mut sockets {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    open += 1
                }
                other => panic!("a client read {other:?}"),
            }
        }
        assert_eq!((closed, open), (3, 1), "untaken closed, taken open");
        let later = clients(addr, 1);
        let (_s, peer) = timeout(LONG, listener.accept()).await.unwrap().unwrap();
        assert_eq!(peer, joined(later).await[0].local_addr().unwrap());
    });
}
