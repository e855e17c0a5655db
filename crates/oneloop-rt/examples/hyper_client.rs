//! An HTTP/1.1 client with hyper on oneloop-rt: connect on the ring, hand the socket to
//! hyper, drive the connection as a task.
//!
//! `cargo run --release -p oneloop-rt --features hyper --example hyper_client -- 127.0.0.1:3000 /`

use std::io;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::Request;
use oneloop_rt::io::AsyncStream;
use oneloop_rt::net::TcpStream;

/// GETs `path` from `addr`: the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = http1::handshake(AsyncStream::new(stream))
        .await
        .map_err(io::Error::other)?;
    // The connection does the I/O; it ends when `sender` is dropped.
    let driver = oneloop_rt::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("hyper_client: connection failed: {e}");
        }
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    let response = sender.send_request(req).await.map_err(io::Error::other)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes()
        .to_vec();
    drop(sender);
    driver.await;
    Ok((status, body))
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .map_err(io::Error::other)?;
    let path = args.next().unwrap_or_else(|| "/".into());
    let (status, body) = oneloop_rt::block_on(get(addr, &path))?;
    println!("{status}");
    print!("{}", String::from_utf8_lossy(&body));
    Ok(())
}
