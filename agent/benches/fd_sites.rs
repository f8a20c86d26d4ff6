//! The cost of recording fd creation sites (feature `fd-sites`), side by
//! side in one process: the wrapped call (`socket` + `close`, `open64` +
//! `close`, through the `__wrap_*` functions the linker routes them to)
//! against the original (`__real_socket`, `__real_open64`, `__real_close`:
//! what a build without the feature calls). Rounds alternate between the
//! two so that drift (CPU frequency, a neighbour on the machine) hits both;
//! each line gives the median per pair, the ratio of the medians, and the
//! spread of the per-round ratios (10th to 90th percentile). Each case runs
//! from a shallow stack and from one 40 frames deep (the walk keeps 32);
//! one more line times the recorder's `fstat` alone (original `open64` +
//! `fstat` + `close` against `open64` + `close`).
//! Last, the table's memory with 10,000 fds recorded.
//!
//! Run with: `cargo bench -p leakscope-agent --bench fd_sites --features fd-sites`

use std::ffi::{CString, c_char, c_int};
use std::hint::black_box;
use std::time::Instant;

use leakscope_agent::fdsites;

unsafe extern "C" {
    fn __real_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn __real_open64(path: *const c_char, flags: c_int, ...) -> c_int;
    fn __real_close(fd: c_int) -> c_int;
}

const ROUNDS: usize = 31;
const PER_ROUND: u32 = 4000;

/// Ways of opening and closing an fd.
#[derive(Clone, Copy)]
enum Pair {
    /// `socket` + `close`.
    Socket,
    /// `open64` + `close`.
    Open,
    /// `open64` + `fstat` + `close`, all originals: the recorder's one
    /// syscall on its own.
    OpenFstat,
}

/// One open+close pair, wrapped or not.
///
/// # Safety
/// `path` must be a file that can be opened read-only.
#[inline(always)]
unsafe fn pair_once(pair: Pair, wrapped: bool, path: &CString) {
    const SOCK: c_int = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    const OPEN: c_int = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: plain libc calls on fds this function owns, closed at once.
    unsafe {
        let fd = match (pair, wrapped) {
            (Pair::Socket, true) => libc::socket(libc::AF_INET, SOCK, 0),
            (Pair::Socket, false) => __real_socket(libc::AF_INET, SOCK, 0),
            (Pair::Open, true) => libc::open64(path.as_ptr(), OPEN),
            (Pair::Open | Pair::OpenFstat, false) => __real_open64(path.as_ptr(), OPEN),
            (Pair::OpenFstat, true) => {
                let fd = __real_open64(path.as_ptr(), OPEN);
                let mut st: libc::stat = std::mem::zeroed();
                libc::fstat(fd, &mut st);
                black_box(st.st_ino);
                fd
            }
        };
        assert!(fd >= 0);
        match (pair, wrapped) {
            (Pair::Socket | Pair::Open, true) => libc::close(black_box(fd)),
            _ => __real_close(black_box(fd)),
        };
    }
}

/// `PER_ROUND` pairs; nanoseconds per pair.
fn round(pair: Pair, wrapped: bool, path: &CString) -> f64 {
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        // SAFETY: `path` is the bench's regular file.
        unsafe { pair_once(pair, wrapped, path) };
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

/// Runs `f` `depth` frames further down the stack.
#[inline(never)]
fn at_depth<T>(depth: u32, f: &mut dyn FnMut() -> T) -> T {
    if depth == 0 {
        f()
    } else {
        black_box(at_depth(black_box(depth - 1), f))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn compare(name: &str, pair: Pair, depth: u32, path: &CString) {
    let mut wrapped = Vec::with_capacity(ROUNDS);
    let mut real = Vec::with_capacity(ROUNDS);
    // Warm up both paths (the table, page cache, socket slabs).
    at_depth(depth, &mut || {
        (round(pair, true, path), round(pair, false, path))
    });
    for i in 0..ROUNDS {
        let (w, r) = at_depth(depth, &mut || {
            if i % 2 == 0 {
                let w = round(pair, true, path);
                (w, round(pair, false, path))
            } else {
                let r = round(pair, false, path);
                (round(pair, true, path), r)
            }
        });
        wrapped.push(w);
        real.push(r);
    }
    let mut ratios: Vec<f64> = wrapped.iter().zip(&real).map(|(w, r)| w / r).collect();
    ratios.sort_by(f64::total_cmp);
    let (w, r) = (median(&wrapped), median(&real));
    let (a, b) = match pair {
        Pair::OpenFstat => ("with fstat", "without"),
        _ => ("wrapped", "original"),
    };
    println!(
        "{name:<32} {a} {w:6.0} ns, {b} {r:6.0} ns: +{:4.0} ns, ratio {:.3} (p10 {:.3}, p90 {:.3})",
        w - r,
        w / r,
        percentile(&ratios, 0.1),
        percentile(&ratios, 0.9),
    );
}

fn memory() {
    const FDS: usize = 10_000;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur < FDS as u64 + 100 {
        println!(
            "memory: skipped, RLIMIT_NOFILE {} < {}",
            limit.rlim_cur,
            FDS + 100
        );
        return;
    }
    let before = fdsites::table_memory().expect("a table after the rounds");
    let fds: Vec<c_int> = (0..FDS)
        // SAFETY: a plain socket call; every fd is closed below.
        .map(|_| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })
        .collect();
    assert!(fds.iter().all(|fd| *fd >= 0));
    let after = fdsites::table_memory().expect("a table");
    let highest = fds.iter().max().copied().unwrap_or(0);
    for fd in fds {
        // SAFETY: closing the fds opened above, once each.
        unsafe { libc::close(fd) };
    }
    println!(
        "memory: table reserves {:.1} MiB of address space ({} fds x {} B); resident {} KiB before, \
         {} KiB with {FDS} sockets open (highest fd {highest}): {:.0} B per fd",
        before.reserved as f64 / (1 << 20) as f64,
        fdsites::MAX_FD,
        fdsites::TABLE_BYTES / fdsites::MAX_FD,
        before.resident / 1024,
        after.resident / 1024,
        after.resident as f64 / highest.max(1) as f64,
    );
}

fn main() {
    let file =
        std::env::temp_dir().join(format!("leakscope-fd-sites-bench-{}", std::process::id()));
    std::fs::write(&file, b"leakscope").unwrap();
    let path = CString::new(file.to_str().unwrap()).unwrap();
    compare("socket+close, shallow stack", Pair::Socket, 0, &path);
    compare("socket+close, 40 frames deeper", Pair::Socket, 40, &path);
    compare("open64+close, shallow stack", Pair::Open, 0, &path);
    compare("open64+close, 40 frames deeper", Pair::Open, 40, &path);
    compare("open64+close: fstat alone", Pair::OpenFstat, 0, &path);
    memory();
    let _ = std::fs::remove_file(file);
}
