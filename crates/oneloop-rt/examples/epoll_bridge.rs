//! An existing epoll set, awaited beside file reads: code built on epoll joins the same loop
//! as the disk.
//!
//! `cargo run -p oneloop-rt --example epoll_bridge`

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use oneloop::EpollEvents;
use oneloop_rt::epoll::EpollSet;
use oneloop_rt::fs::File;

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let ms = move || start.elapsed().as_secs_f64() * 1000.0;
    let path = std::env::temp_dir().join(format!("epoll_bridge-{}.txt", std::process::id()));
    std::fs::write(&path, "a line from the disk\n".repeat(1000))?;

    oneloop_rt::block_on(async {
        // The "existing" epoll code: an epoll instance watching two datagram sockets.
        let (rx_a, tx_a) = UnixDatagram::pair()?;
        let (rx_b, tx_b) = UnixDatagram::pair()?;
        let set = EpollSet::new()?;
        set.add(rx_a.as_raw_fd(), libc::EPOLLIN as u32, 1)?;
        set.add(rx_b.as_raw_fd(), libc::EPOLLIN as u32, 2)?;

        // Another thread plays the network.
        let net = std::thread::spawn(move || {
            for i in 0..3 {
                std::thread::sleep(Duration::from_millis(10));
                let tx = if i % 2 == 0 { &tx_a } else { &tx_b };
                tx.send(format!("datagram {i}").as_bytes()).unwrap();
            }
        });

        // File reads run as their own task on the same ring.
        let reader = oneloop_rt::spawn(async move {
            let file = File::open(&path).await?;
            let mut total = 0;
            let mut pos = 0;
            loop {
                let (res, buf) = file.read_at(Vec::with_capacity(4096), pos).await;
                let n = res?;
                if n == 0 {
                    break;
                }
                total += buf.iter().filter(|&&b| b == b'\n').count();
                pos += n as u64;
            }
            println!("{:7.2} ms  file: {total} lines read", ms());
            std::fs::remove_file(&path)?;
            Ok::<_, std::io::Error>(())
        });

        let mut seen = 0;
        let mut events = EpollEvents::with_capacity(8);
        while seen < 3 {
            let (res, back) = set.wait(events).await;
            events = back;
            res?;
            for (_, data) in events.iter() {
                let sock = if data == 1 { &rx_a } else { &rx_b };
                let mut buf = [0u8; 64];
                let n = sock.recv(&mut buf)?;
                println!(
                    "{:7.2} ms  epoll set: socket {data} says {:?}",
                    ms(),
                    String::from_utf8_lossy(&buf[..n])
                );
                seen += 1;
            }
        }
        reader.await?;
        net.join().expect("network thread");
        std::io::stdout().flush()
    })
}
