//! A TLS echo server on oneloop-rt: rustls through `futures-rustls`, over the runtime's
//! `futures_io` adapter ([`AsyncStream`]); every connection a task on the ring.
//!
//! `cargo run --release -p oneloop-rt --example tls_echo -- 127.0.0.1:7443 cert.pem key.pem`
//! (PEM files of a certificate chain and its private key). `tests/ecosystem.rs` runs this
//! very code with a certificate made at test time.

use std::io;
use std::sync::Arc;

use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::ServerConfig;
use futures_rustls::TlsAcceptor;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use oneloop_rt::io::AsyncStream;
use oneloop_rt::net::TcpListener;

/// A rustls server configuration from a certificate chain and its key.
pub fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// Accepts TLS connections and echoes each on its own task; with `connections: Some(n)`,
/// returns after `n` have been served (for tests).
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    connections: Option<usize>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let mut handlers = Vec::new();
    let mut served = 0;
    while connections.is_none_or(|n| served < n) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        let acceptor = acceptor.clone();
        let handler = oneloop_rt::spawn(async move {
            let echo = async {
                let mut tls = acceptor.accept(AsyncStream::new(stream)).await?;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        return tls.close().await;
                    }
                    tls.write_all(&buf[..n]).await?;
                    tls.flush().await?;
                }
            };
            if let Err(e) = echo.await {
                eprintln!("tls_echo: connection failed: {e}");
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
    use futures_rustls::rustls::pki_types::pem::PemObject;
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7443".into());
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err(io::Error::other("usage: tls_echo ADDR CERT.pem KEY.pem"));
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(io::Error::other)?;
    let listener = TcpListener::bind(&addr)?;
    eprintln!("tls_echo: listening on {}", listener.local_addr()?);
    oneloop_rt::block_on(serve(listener, config(chain, key)?, None))
}
