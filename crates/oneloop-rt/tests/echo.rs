//! The echo example serves 1,000 concurrent loopback connections, each exchanging 100
//! messages, on each backend. Bounded: the client side gives up after 120 s.
#![allow(missing_docs)]

#[path = "../examples/echo.rs"]
mod echo;

use std::time::{Duration, Instant};

use oneloop::BackendKind;
use oneloop_rt::net::{TcpListener, TcpStream};
use oneloop_rt::Runtime;

const CONNECTIONS: usize = 1000;
const MESSAGES: usize = 100;
const SIZE: usize = 64;

async fn client(addr: std::net::SocketAddr, id: usize) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(SIZE);
    for m in 0..MESSAGES {
        let msg: Vec<u8> = (0..SIZE).map(|i| (id * 31 + m * 7 + i) as u8).collect();
        let (res, _) = stream.write_all(msg.clone()).await;
        res?;
        buf.clear();
        while buf.len() < SIZE {
            let (res, back) = stream.read(buf).await;
            buf = back;
            if res? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        assert_eq!(buf, msg, "connection {id}, message {m}");
    }
    stream.shutdown(std::net::Shutdown::Write)
}

fn run(kind: BackendKind) {
    if let Err(e) = oneloop::Ring::builder().backend(kind).entries(4).build() {
        return eprintln!("SKIP {kind} echo: {e}");
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        Runtime::builder()
            .backend(kind)
            .build()
            .block_on(echo::serve(listener, Some(CONNECTIONS)))
    });
    let start = Instant::now();
    let outcome = Runtime::builder()
        .backend(kind)
        .build()
        .block_on(oneloop_rt::time::timeout(Duration::from_secs(120), async {
            let clients: Vec<_> = (0..CONNECTIONS)
                .map(|id| oneloop_rt::spawn(client(addr, id)))
                .collect();
            for c in clients {
                c.await?;
            }
            Ok::<_, std::io::Error>(())
        }));
    let took = start.elapsed();
    outcome
        .unwrap()
        .expect("clients finished within 120 s")
        .unwrap();
    server.join().unwrap().unwrap().unwrap();
    eprintln!("PASS {kind} echo: {CONNECTIONS} connections x {MESSAGES} messages in {took:?}");
}

#[test]
fn echo_serves_a_thousand_connections_on_every_backend() {
    let forced = BackendKind::from_env().unwrap();
    for kind in BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != BackendKind::Auto) {
            continue;
        }
        run(kind);
    }
}
