//! The peer servers `oneloop bench --peer tokio` compares against, written the way a tokio user
//! would: a current-thread runtime, one task per connection, files through `tokio::fs` (its
//! blocking pool).
//!
//! `tokio-peer echo|mixed [FILE]`: listens on 127.0.0.1 (an ephemeral port), prints
//! `LISTEN <addr>`, serves until its standard input closes, then prints `CPU <seconds>` (its own
//! user + system time) and exits. `mixed` answers each 16-byte request (an 8-byte offset first)
//! with the 4 KiB of FILE at that offset.

use std::io::{BufRead, SeekFrom, Write};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST: usize = 16;
const REPLY: usize = 4096;

fn cpu_seconds() -> f64 {
    // SAFETY: `usage` is a zeroed rusage that getrusage fills.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn mixed(mut s: TcpStream, path: String) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut req = [0u8; REQUEST];
    let mut reply = vec![0u8; REPLY];
    loop {
        if let Err(e) = s.read_exact(&mut req).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        let offset = u64::from_le_bytes(req[..8].try_into().expect("8 bytes"));
        file.seek(SeekFrom::Start(offset)).await?;
        file.read_exact(&mut reply).await?;
        s.write_all(&reply).await?;
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let file = args.get(2).cloned();
    if mode != "echo" && !(mode == "mixed" && file.is_some()) {
        eprintln!("usage: tokio-peer echo | tokio-peer mixed FILE");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTEN {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
            }
            let _ = done_tx.send(());
        });
        loop {
            tokio::select! {
                _ = &mut done_rx => break,
                accepted = listener.accept() => {
                    let (s, _) = accepted?;
                    s.set_nodelay(true)?;
                    let file = file.clone();
                    let is_echo = mode == "echo";
                    tokio::spawn(async move {
                        let _ = if is_echo { echo(s).await } else { mixed(s, file.expect("mixed has a file")).await };
                    });
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    println!("CPU {}", cpu_seconds());
    Ok(())
}
