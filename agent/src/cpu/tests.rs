//! Tests of the CPU sampler against real SIGPROF sampling of this process.
//! They share the process-wide timer, so each takes [`LOCK`] first.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sampler::{self, TIMERS_CREATED, TIMERS_DELETED};
use super::unwind::ExecMaps;
use super::{CpuSampler, RawCpuProfile, TIMER_PER_THREAD, TIMER_PROCESS};
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
    assert_no_leaked_timers();
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

/// Every POSIX timer the sampler created has been deleted, and (where
/// /proc/self/timers is readable) the process has none left. Call with
/// [`LOCK`] held and no sampler alive.
fn assert_no_leaked_timers() {
    let created = TIMERS_CREATED.load(Ordering::Relaxed);
    let deleted = TIMERS_DELETED.load(Ordering::Relaxed);
    let listed = std::fs::read_to_string("/proc/self/timers")
        .ok()
        .map(|t| t.lines().filter(|l| l.starts_with("ID:")).count());
    println!("timers: {created} created, {deleted} deleted, /proc/self/timers lists {listed:?}");
    assert_eq!(created, deleted, "leaked per-thread timers");
    if let Some(listed) = listed {
        assert_eq!(listed, 0, "timers left in /proc/self/timers");
    }
}

/// The calling thread's name as the handler records it.
fn own_name() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    assert_eq!(rc, 0);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn count_of(p: &RawCpuProfile, name: &str) -> u64 {
    of_thread(p, name).map(|(_, c)| c).sum()
}

/// Three busy threads on (typically) two cores for `secs`: two burners and
/// the calling thread. Returns (captured / expected, burner-a's share of the
/// burners' samples, the timer mode).
fn contention(per_thread: bool, hz: u32, secs: f64) -> (f64, f64, &'static str) {
    let dur = Duration::from_secs_f64(secs);
    // The burners exist before start() so that they have timers from the
    // first instant (new threads get theirs at the next rescan, which
    // `thread_started_after_start_is_sampled` covers).
    let go = Arc::new(Barrier::new(3));
    let burners: Vec<_> = ["burner-a", "burner-b"]
        .into_iter()
        .map(|name| {
            let go = Arc::clone(&go);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    go.wait();
                    let c0 = thread_cpu();
                    black_box(burn_caller(Instant::now() + dur));
                    thread_cpu() - c0
                })
                .expect("spawn")
        })
        .collect();
    let sampler = if per_thread {
        CpuSampler::start(hz)
    } else {
        CpuSampler::start_process_timer(hz)
    }
    .expect("start");
    let mode = sampler.timer();
    go.wait();
    let c0 = thread_cpu();
    black_box(burn_caller(Instant::now() + dur));
    let mut cpu = thread_cpu() - c0;
    for b in burners {
        cpu += b.join().expect("burner");
    }
    let profile = sampler.stop();
    assert_eq!(profile.timer, mode);
    let me = own_name();
    let (a, b, m) = (
        count_of(&profile, "burner-a"),
        count_of(&profile, "burner-b"),
        count_of(&profile, &me),
    );
    let expected = cpu.as_secs_f64() * f64::from(hz);
    let ratio = (a + b + m) as f64 / expected;
    let share = a as f64 / (a + b).max(1) as f64;
    println!(
        "contention [{mode:>10}]: burner-a {a}, burner-b {b}, {me:?} {m}; cpu {:.3}s, \
         expected {expected:.1}, ratio {ratio:.3}, burner-a share {share:.3}, lost {}",
        cpu.as_secs_f64(),
        profile.lost
    );
    (ratio, share, mode)
}

#[test]
fn contention_per_thread_vs_process_timer() {
    let _g = serial();
    let (old_ratio, old_share, old_mode) = contention(false, 100, 2.0);
    let (new_ratio, new_share, new_mode) = contention(true, 100, 2.0);
    assert_eq!(old_mode, TIMER_PROCESS);
    println!(
        "captured/expected: {old_mode} {old_ratio:.3} (burner-a share {old_share:.3}) | \
         {new_mode} {new_ratio:.3} (burner-a share {new_share:.3})"
    );
    if new_mode != TIMER_PER_THREAD {
        println!("per-thread timers unavailable here: nothing more to check");
        return;
    }
    assert!(
        new_ratio >= 0.95,
        "per-thread timers sampled {new_ratio:.3} of expected"
    );
    assert!(
        (0.35..=0.65).contains(&new_share),
        "burner-a has {new_share:.3} of the burners' samples"
    );
}

#[test]
fn thread_started_after_start_is_sampled() {
    let _g = serial();
    let hz = 100;
    let sampler = CpuSampler::start(hz).expect("start");
    std::thread::sleep(Duration::from_millis(100));
    let late = std::thread::Builder::new()
        .name("late-burner".into())
        .spawn(|| {
            let c0 = thread_cpu();
            black_box(burn_caller(Instant::now() + Duration::from_secs(1)));
            thread_cpu() - c0
        })
        .expect("spawn");
    let cpu = late.join().expect("late burner");
    let profile = sampler.stop();
    let got = count_of(&profile, "late-burner");
    let expected = cpu.as_secs_f64() * f64::from(hz);
    let ratio = got as f64 / expected;
    println!(
        "late-burner [{}]: {got} samples, cpu {:.3}s, expected {expected:.1}, ratio {ratio:.3}",
        profile.timer,
        cpu.as_secs_f64()
    );
    assert!(
        ratio >= 0.7,
        "thread started after start() sampled {ratio:.3} of expected"
    );
}

#[test]
fn thread_clock_id_matches_pthread_getcpuclockid() {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is this thread; `clock` is a valid out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0);
    let tid = sampler::gettid();
    println!(
        "tid {tid}: pthread_getcpuclockid {clock}, formula {}",
        sampler::thread_cpu_clock(tid)
    );
    assert_eq!(sampler::thread_cpu_clock(tid), clock);
}
