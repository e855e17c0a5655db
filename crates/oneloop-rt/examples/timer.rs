//! Timers on oneloop-rt: `sleep`, `interval`, `timeout`, and a task aborted mid-sleep.
//!
//! `cargo run -p oneloop-rt --example timer`

use std::time::{Duration, Instant};

use oneloop_rt::time::{interval, sleep, timeout};

fn main() {
    let start = Instant::now();
    let ms = move || start.elapsed().as_secs_f64() * 1000.0;
    oneloop_rt::block_on(async move {
        let ticker = oneloop_rt::spawn(async move {
            let mut every = interval(Duration::from_millis(20));
            for i in 0..5 {
                every.tick().await;
                println!("{:7.2} ms  tick {i}", ms());
            }
        });
        let sleeper = oneloop_rt::spawn(async move {
            sleep(Duration::from_secs(3600)).await;
            println!("never printed: this task is aborted");
        });
        let slow = timeout(Duration::from_millis(30), sleep(Duration::from_secs(10))).await;
        println!(
            "{:7.2} ms  a 10 s sleep under a 30 ms timeout: {slow:?}",
            ms()
        );
        let fast = timeout(Duration::from_millis(30), async { 42 }).await;
        println!(
            "{:7.2} ms  an instant answer under the same timeout: {fast:?}",
            ms()
        );
        ticker.await;
        sleeper.abort();
        println!(
            "{:7.2} ms  aborted the hour-long sleeper; its timer op is cancelled",
            ms()
        );
    });
}
