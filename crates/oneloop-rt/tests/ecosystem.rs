//! Crates users bring, on every backend: hyper (server and client, with a real HTTP client
//! that nobody here wrote on the other end), rustls through `futures-rustls` (a certificate
//! made at test time with `rcgen`), and tokio-I/O crates (`tokio_util::codec::LinesCodec`).
#![allow(missing_docs)]

#[path = "../examples/hyper_client.rs"]
mod hyper_client;
#[path = "../examples/hyper_server.rs"]
mod hyper_server;
#[path = "../examples/tls_echo.rs"]
mod tls_echo;

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::{SinkExt, StreamExt};
use oneloop_rt::io::AsyncStream;
use oneloop_rt::net::{TcpListener, TcpStream};
use oneloop_rt::Runtime;

#[test]
fn hyper_serves_a_real_client_and_its_own_client() {
    let forced = oneloop::BackendKind::from_env().unwrap();
    for kind in oneloop::BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != oneloop::BackendKind::Auto) {
            continue;
        }
        if let Err(e) = oneloop::Ring::builder().backend(kind).entries(4).build() {
            eprintln!("SKIP {kind} hyper: {e}");
            continue;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // ureq makes 3 connections (one per call), hyper's client one more.
        let server = std::thread::spawn(move || {
            Runtime::builder()
                .backend(kind)
                .build()
                .block_on(hyper_server::serve(listener, Some(4)))
        });
        for (path, want) in [("/", 200), ("/missing", 404), ("/", 200)] {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let url = format!("http://{addr}{path}");
            let (code, body) = match agent.get(&url).set("Connection", "close").call() {
                Ok(r) => (r.status(), r.into_string().unwrap()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
                Err(e) => panic!("{kind}: {e}"),
            };
            assert_eq!(code, want, "{kind} {path}");
            if want == 200 {
                assert_eq!(body, "hello from oneloop-rt\n");
            } else {
                assert_eq!(body, "no page at /missing\n");
            }
        }
        let (status, body) = Runtime::builder()
            .backend(kind)
            .build()
            .block_on(hyper_client::get(addr, "/"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (200, &b"hello from oneloop-rt\n"[..])
        );
        server.join().unwrap().unwrap().unwrap();
        eprintln!("PASS {kind} hyper: ureq x3 and hyper's client");
    }
}

/// hyper's header-read timeout runs on the ring's timers: a client that sends half a head
/// is cut off.
#[test]
fn hyper_header_timeout_fires_on_the_ring_timer() {
    common::on_every_backend("hyper timer", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = oneloop_rt::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(oneloop_rt::hyper_rt::Timer)
                .header_read_timeout(Duration::from_millis(200))
                .serve_connection(
                    AsyncStream::new(stream),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                    }),
                );
            let start = std::time::Instant::now();
            let outcome = conn.await;
            (outcome.is_err(), start.elapsed())
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let (res, _) = client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec())
            .await;
        res.unwrap();
        let (failed, took) = server.await;
        assert!(failed, "the connection ended without the timeout");
        assert!(took >= Duration::from_millis(150), "cut off after {took:?}");
        assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    });
}

/// A certificate for `localhost`, made now.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    (der, key)
}

#[test]
fn tls_echo_round_trips_with_rustls() {
    common::on_every_backend("tls echo", |_| async {
        let (cert, key) = certificate();
        let config = tls_echo::config(vec![cert.clone()], key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = oneloop_rt::spawn(tls_echo::serve(listener, config, Some(2)));
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = futures_rustls::TlsConnector::from(Arc::new(client_config));
        for round in 0..2 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector
                .connect(name, AsyncStream::new(stream))
                .await
                .unwrap();
            let message: Vec<u8> = (0..100_000).map(|i| (i * 13 + round) as u8).collect();
            tls.write_all(&message).await.unwrap();
            tls.flush().await.unwrap();
            let mut back = vec![0u8; message.len()];
            tls.read_exact(&mut back).await.unwrap();
            assert!(back == message, "round {round}: the echo differs");
            tls.close().await.unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
        server.await.unwrap();
    });
}

#[test]
fn tokio_util_lines_codec_runs_on_the_ring() {
    use tokio_util::codec::{Framed, LinesCodec};
    common::on_every_backend("tokio LinesCodec", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server answers each line with it upper-cased, until "bye".
        let server = oneloop_rt::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut lines = Framed::new(AsyncStream::new(stream), LinesCodec::new());
            let mut seen = 0;
            while let Some(line) = lines.next().await {
                let line = line.unwrap();
                if line == "bye" {
                    break;
                }
                seen += 1;
                lines.send(line.to_uppercase()).await.unwrap();
            }
            seen
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut lines = Framed::new(AsyncStream::new(stream), LinesCodec::new());
        for word in ["ring", "one loop", "ü"] {
            lines.send(word).await.unwrap();
            assert_eq!(lines.next().await.unwrap().unwrap(), word.to_uppercase());
        }
        lines.send("bye").await.unwrap();
        assert_eq!(server.await, 3);
    });
}
