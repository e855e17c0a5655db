//! A TCP echo server on oneloop-rt: every connection is a task on this thread's ring.
//!
//! `cargo run --release -p oneloop-rt --example echo -- 127.0.0.1:7000 [CONNECTIONS]`
//! (`ONELOOP_BACKEND=uring|aio|epoll` picks the backend). With `CONNECTIONS` it exits once that
//! many connections have come and gone (`bench/instructions.sh` counts its instructions so). `tests/echo.rs` drives this very
//! code with 1,000 concurrent connections on each backend.

use std::io;

use oneloop_rt::net::{TcpListener, TcpStream};

/// Accepts connections and echoes each on its own task. With `connections: Some(n)` it returns
/// once `n` connections have been served and closed (for tests); `None` serves forever.
pub async fn serve(listener: TcpListener, connections: Option<usize>) -> io::Result<()> {
    let mut handlers = Vec::new();
    let mut served = 0;
    while connections.is_none_or(|n| served < n) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        let handler = oneloop_rt::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("echo: connection failed: {e}");
            }
        });
        if connections.is_some() {
            handlers.push(handler);
        }
    }
    for handler in handlers {
        handler.await;
    }
    Ok(())
}

/// Echoes everything `stream` sends until it closes its side.
pub async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (res, back) = stream.read(buf).await;
        buf = back;
        if res? == 0 {
            return Ok(());
        }
        let (res, back) = stream.write_all(buf).await;
        buf = back;
        res?;
    }
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let connections = match std::env::args().nth(2) {
        Some(n) => Some(n.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CONNECTIONS {n:?}: {e}"),
            )
        })?),
        None => None,
    };
    let listener = TcpListener::bind(&addr)?;
    eprintln!("echo: listening on {}", listener.local_addr()?);
    oneloop_rt::block_on(serve(listener, connections))
}
