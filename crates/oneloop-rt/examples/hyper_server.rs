//! An HTTP/1.1 server with hyper on oneloop-rt: every connection a task on this thread's ring,
//! hyper's timer on the ring's timers.
//!
//! `cargo run --release -p oneloop-rt --features hyper --example hyper_server -- 127.0.0.1:3000`
//! then `curl http://127.0.0.1:3000/`. `tests/ecosystem.rs` drives this very code with a real
//! HTTP client on each backend.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use oneloop_rt::io::AsyncStream;
use oneloop_rt::net::TcpListener;

/// Answers `GET /` with a greeting naming the path, anything else with 404.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match req.uri().path() {
        "/" => Response::new(Full::new(Bytes::from_static(b"hello from oneloop-rt\n"))),
        path => {
            let mut r = Response::new(Full::new(Bytes::from(format!("no page at {path}\n"))));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(response)
}

/// Serves HTTP/1.1 on `listener`; with `connections: Some(n)`, returns after `n` connections
/// have been served (for tests); `None` serves forever.
pub async fn serve(listener: TcpListener, connections: Option<usize>) -> io::Result<()> {
    let mut handlers = Vec::new();
    let mut served = 0;
    while connections.is_none_or(|n| served < n) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        let conn = http1::Builder::new()
            .timer(oneloop_rt::hyper_rt::Timer)
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(AsyncStream::new(stream), service_fn(handle));
        let handler = oneloop_rt::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("hyper_server: connection failed: {e}");
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

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr)?;
    eprintln!(
        "hyper_server: listening on http://{}/",
        listener.local_addr()?
    );
    oneloop_rt::block_on(serve(listener, None))
}
