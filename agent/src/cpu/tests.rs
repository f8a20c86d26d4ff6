//! Tests of the CPU sampler against real SIGPROF sampling of this process.
//! They share the process-wide timer, so each takes [`LOCK`] first.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::unwind::ExecMaps;
use super::{CpuSampler, RawCpuProfile};
use crate::error::Error;

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Address of a function, and whether `pc` falls in the 4 KiB after it.
fn in_fn(pc: u64, f: usize) -> bool {
    pc >= f as u64 && pc < f as u64 + 4096
}

/// Pure register arithmetic, so that even unoptimized builds call nothing
/// from inside the loop (`wrapping_*`, `black_box` and `Range::next` are
/// calls there).
#[inline(never)]
fn spin_leaf(x: u64) -> u64 {
    let mut a = black_box(x) | 1;
    let mut i = 0;
    while i < 20_000 {
        a ^= a << 13;
        a ^= a >> 7;
        a ^= a << 17;
        i += 1;
    }
    a
}

#[inline(never)]
fn burn_caller(until: Instant) -> u64 {
    let mut acc = 1;
    while Instant::now() < until {
        acc ^= spin_leaf(acc);
    }
    acc
}

#[inline(never)]
fn writer_fn(fd: libc::c_int) -> isize {
    let buf = [b'x'];
    // SAFETY: `buf` is valid for one byte; fd is an open file.
    unsafe { libc::write(fd, buf.as_ptr().cast(), 1) }
}

/// Samples of the thread named `name`.
fn of_thread<'a>(p: &'a RawCpuProfile, name: &'a str) -> impl Iterator<Item = (&'a [u64], u64)> {
    p.samples
        .iter()
        .filter(move |s| s.thread_name == name)
        .map(|s| (s.stack.as_slice(), s.count))
}

#[test]
fn busy_thread_is_sampled_with_exact_leaf() {
    let _g = serial();
    let hz = 100;
    let sampler = CpuSampler::start(hz).expect("start");
    let burner = std::thread::Builder::new()
        .name("burner".into())
        .spawn(|| {
            let c0 = thread_cpu();
            black_box(burn_caller(Instant::now() + Duration::from_secs(1)));
            thread_cpu() - c0
        })
        .expect("spawn");
    let cpu = burner.join().expect("burner");
    let profile = sampler.stop();

    let got: u64 = of_thread(&profile, "burner").map(|(_, c)| c).sum();
    let expected = cpu.as_secs_f64() * f64::from(hz);
    let ratio = got as f64 / expected;
    println!(
        "burner: {got} samples, cpu {:.3}s, expected {expected:.1}, ratio {ratio:.3}, lost {}",
        cpu.as_secs_f64(),
        profile.lost
    );
    assert!(ratio >= 0.9, "sampled {ratio:.3} of expected");

    let leaf = spin_leaf as *const () as usize;
    let caller = burn_caller as *const () as usize;
    let (mut in_leaf, mut with_caller) = (0, 0);
    for (stack, count) in of_thread(&profile, "burner") {
        if in_fn(stack[0], leaf) {
            in_leaf += count;
            if stack[1..].iter().any(|&pc| in_fn(pc, caller)) {
                with_caller += count;
            }
        }
    }
    let depth = of_thread(&profile, "burner").map(|(s, _)| s.len()).max();
    println!("deepest burner stack: {depth:?} frames");
    let leaf_share = in_leaf as f64 / got as f64;
    let caller_share = with_caller as f64 / in_leaf.max(1) as f64;
    println!(
        "leaf in spin_leaf: {leaf_share:.3}; of those, burn_caller in stack: {caller_share:.3}"
    );
    assert!(leaf_share >= 0.8);
    assert!(caller_share >= 0.9);
}

#[test]
fn caller_of_libc_leaf_is_found() {
    let _g = serial();
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let fd = devnull.as_raw_fd();
    let sampler = CpuSampler::start(100).expect("start");
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                for _ in 0..100 {
                    black_box(writer_fn(fd));
                }
            }
        })
        .expect("spawn");
    writer.join().expect("writer");
    let profile = sampler.stop();
    drop(devnull);

    let maps = ExecMaps::from_proc();
    let f = writer_fn as *const () as usize;
    let (mut total, mut outside, mut found) = (0, 0, 0);
    for (stack, count) in of_thread(&profile, "writer") {
        total += count;
        if maps.is_main(stack[0]) {
            continue;
        }
        outside += count;
        if stack.iter().take(3).any(|&pc| in_fn(pc, f)) {
            found += count;
        }
    }
    let share = found as f64 / outside.max(1) as f64;
    println!(
        "writer: {total} samples, {outside} with leaf outside the executable, \
         writer_fn in first 3 frames of {found}: share {share:.3}"
    );
    assert!(outside >= 10, "too few samples in libc: {outside}");
    assert!(share >= 0.5);
}

#[test]
fn start_stop_under_allocation_stress() {
    let _g = serial();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::Acquire) {
                if t0.elapsed() > Duration::from_secs(60) {
                    eprintln!("stress test hung for 60 s: aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            let done = Arc::clone(&done);
            std::thread::Builder::new()
                .name(format!("alloc-{i}"))
                .spawn(move || {
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ i;
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let v = vec![seed as u8; (seed % 65_536) as usize];
                        if keep.len() < 64 {
                            keep.push(v);
                        } else {
                            keep[(seed % 64) as usize] = v;
                        }
                    }
                    keep.len()
                })
                .expect("spawn")
        })
        .collect();
    let mut samples = 0;
    let mut lost = 0;
    for _ in 0..20 {
        let sampler = CpuSampler::start(1000).expect("start");
        std::thread::sleep(Duration::from_millis(50));
        let p = sampler.stop();
        samples += p.samples.iter().map(|s| s.count).sum::<u64>();
        lost += p.lost;
    }
    done.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("worker");
    }
    watchdog.join().expect("watchdog");
    println!("stress: 20 start/stop cycles, {samples} samples, {lost} lost");
    assert!(samples > 0);
}

/// The current SIGPROF handler address.
fn sigprof_handler() -> libc::sighandler_t {
    // SAFETY: plain data, all-zero is valid.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries the current one.
    let rc = unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut cur) };
    assert_eq!(rc, 0);
    cur.sa_sigaction
}

#[test]
fn only_one_sampler_at_a_time() {
    let _g = serial();
    let before = sigprof_handler();
    let first = CpuSampler::start(100).expect("start");
    assert!(matches!(
        CpuSampler::start(100),
        Err(Error::CpuProfilingInUse)
    ));
    assert_ne!(sigprof_handler(), before);
    let p = first.stop();
    assert_eq!(p.period_ns, 10_000_000);
    assert_eq!(sigprof_handler(), before, "old SIGPROF action restored");
    let again = CpuSampler::start(50).expect("restart");
    drop(again);
    let third = CpuSampler::start(1000).expect("start after drop");
    assert_eq!(third.stop().period_ns, 1_000_000);
    assert_eq!(sigprof_handler(), before);
}

#[test]
fn rejects_bad_rates() {
    let _g = serial();
    assert!(matches!(CpuSampler::start(0), Err(Error::Config { .. })));
    assert!(matches!(CpuSampler::start(1001), Err(Error::Config { .. })));
}
