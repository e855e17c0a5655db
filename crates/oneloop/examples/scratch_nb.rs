use std::os::fd::AsRawFd;
use std::time::Duration;
fn main() {
    let mut ring = oneloop::Ring::builder()
        .backend(oneloop::BackendKind::Uring)
        .build()
        .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    for i in 0..3 {
        ring.submit(oneloop::Send::new(s.as_raw_fd(), vec![0u8; 8 << 20]), i)
            .unwrap();
        ring.wait(1, Some(Duration::from_millis(300))).unwrap();
        while let Some(c) = ring.next_completion() {
            println!("send {}: {:?}", c.user_data(), c.result());
        }
    }
    drop(c);
}
