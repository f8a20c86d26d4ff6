//! The sidecar's own cost: CPU (as a share of one core) and memory of
//! `leakscope watch` watching 50 processes through /proc, at the default
//! 1 s interval and, for scale, at 100 ms, measured side by side in one run.
//! Each watched process is a `sleep` child; the sidecar is the release
//! binary, started once per setting, warmed up for 3 s, then measured over
//! 15 s from its /proc/PID/stat and /proc/PID/status.
//!
//! Run with: `cargo bench --bench sidecar`

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGETS: usize = 50;
const WARMUP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(15);

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime")) / hz
}

/// A `Vm...:` line of /proc/PID/status, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Figures {
    cpu_share: f64,
    rss_mib: f64,
    hwm_mib: f64,
    threads: usize,
}

fn measure(interval: &str, pids: &[u32], data: &std::path::Path) -> Figures {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakscope"));
    cmd.args([
        "watch",
        "--interval",
        interval,
        "--heap-every",
        "0",
        "--counts-every",
        "0",
    ])
    .args([
        "--listen",
        "127.0.0.1:0",
        "--status-every",
        "0",
        "--data-dir",
    ])
    .arg(data);
    for p in pids {
        cmd.args(["--pid", &p.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start leakscope watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("sidecar output").expect("line");
        if line.contains("API on http://") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    let _guard = Kill(vec![child]);
    std::thread::sleep(WARMUP);
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(MEASURE);
    let cpu = cpu_seconds(pid) - c0;
    let wall = t0.elapsed().as_secs_f64();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    Figures {
        cpu_share: cpu / wall,
        rss_mib: status_mib(pid, "VmRSS:"),
        hwm_mib: status_mib(pid, "VmHWM:"),
        threads,
    }
}

fn main() {
    let mut children = Kill(Vec::new());
    for _ in 0..TARGETS {
        let c = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        children.0.push(c);
    }
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
    let data = std::env::temp_dir().join(format!("leakscope-bench-sidecar-{}", std::process::id()));
    println!(
        "== leakscope watch, {TARGETS} processes, measured over {MEASURE:?} after {WARMUP:?} =="
    );
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>8} {:>22}",
        "interval", "CPU % core", "RSS MiB", "peak MiB", "threads", "CPU us/target/sample"
    );
    let mut rows = Vec::new();
    for (interval, per_second) in [("1s", 1.0), ("100ms", 10.0)] {
        let f = measure(interval, &pids, &data);
        let per_sample_us = f.cpu_share * 1e6 / (TARGETS as f64 * per_second);
        println!(
            "{interval:<12} {:>12.3} {:>10.1} {:>10.1} {:>8} {:>22.1}",
            f.cpu_share * 100.0,
            f.rss_mib,
            f.hwm_mib,
            f.threads,
            per_sample_us
        );
        rows.push(f);
    }
    println!(
        "CPU ratio 100ms/1s: {:.1}x for 10x the samples",
        rows[1].cpu_share / rows[0].cpu_share.max(1e-9)
    );
    let _ = std::fs::remove_dir_all(&data);
}
