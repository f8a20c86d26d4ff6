//! Prints the cost of sampling this process through /proc (count-only, with
//! the fd breakdown, and with everything).
//!
//! Run with: `cargo bench -p leakscope-agent --bench resource`

use std::time::Instant;

use leakscope_agent::resource::{SampleOptions, Target, sample};

fn mean_us(opts: &SampleOptions, n: u32) -> f64 {
    sample(Target::SelfProcess, opts).unwrap(); // warm caches (btime, sysconf)
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sample(Target::SelfProcess, opts).unwrap());
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let fds = sample(Target::SelfProcess, &SampleOptions::default())
        .unwrap()
        .open_fds;
    let count_only = mean_us(&SampleOptions::default(), 1000);
    let breakdown = mean_us(
        &SampleOptions {
            fd_breakdown: true,
            ..Default::default()
        },
        1000,
    );
    let all = mean_us(
        &SampleOptions {
            fd_breakdown: true,
            thread_names: true,
            tcp_states: true,
        },
        200,
    );
    println!("open fds: {fds}");
    let pid = std::process::id();
    for f in [
        "stat", "limits", "net/tcp", "net/tcp6", "net/udp", "net/unix",
    ] {
        let path = format!("/proc/{pid}/{f}");
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(std::fs::read(&path).unwrap());
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / 50.0;
        println!("  read {path}: mean {us:.1} us");
    }
    println!("count-only:   mean {count_only:.1} us/sample (1000 samples)");
    println!("fd_breakdown: mean {breakdown:.1} us/sample (1000 samples)");
    println!("everything:   mean {all:.1} us/sample (200 samples)");

    // With sockets the tables must be read (udp first, tcp last).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_only = mean_us(
        &SampleOptions {
            fd_breakdown: true,
            ..Default::default()
        },
        200,
    );
    println!("fd_breakdown + 1 udp socket: mean {udp_only:.1} us/sample (200 samples)");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let with_tcp = mean_us(
        &SampleOptions {
            fd_breakdown: true,
            tcp_states: true,
            ..Default::default()
        },
        200,
    );
    println!(
        "fd_breakdown+tcp_states + udp + tcp listener: mean {with_tcp:.1} us/sample (200 samples)"
    );
    drop((udp, tcp));
}
