//! Prints the cost of sampling this process through /proc (count-only, with
//! the fd breakdown, and with everything), then checks two targets on child
//! processes:
//!
//! - a count-only sample of a large process (1000 threads, 10,000 fds) in
//!   <= 20 us, next to a small one (200 threads, 1,000 fds), with the cost of
//!   `stat` and of listing `/proc/PID/fd` side by side;
//! - 200 processes sampled once a second at < 5% of one core;
//! - the fd listing of the fds profile (`list_fds`, grouping, profile
//!   build + gzip) for 10,000 fds: files, and TCP sockets (5,000
//!   connections of a child to itself, both ends).
//!
//! All children are killed at the end, and on panic (a guard with `Drop`);
//! they also get SIGKILL if this process dies (`PR_SET_PDEATHSIG`).
//!
//! Run with: `cargo bench -p leakscope-agent --bench resource`

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leakscope_agent::collect::fds;
use leakscope_agent::resource::procfs::parse_stat;
use leakscope_agent::resource::{ListOptions, SampleOptions, Target, group_fds, list_fds, sample};

fn mean_us(opts: &SampleOptions, n: u32) -> f64 {
    sample(Target::SelfProcess, opts).unwrap(); // warm caches (btime, sysconf)
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sample(Target::SelfProcess, opts).unwrap());
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    self_process();
    large_process();
    many_processes();
    fd_listing();
}

/// The original output: sampling this very process.
fn self_process() {
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
    limits_parse(pid);
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

/// Python child: raises the soft RLIMIT_NOFILE to the hard limit, opens
/// `argv[2]` fds on /dev/null (or, with `argv[3] == "tcp"`, half as many
/// loopback TCP connections to its own listener, both ends kept), starts
/// `argv[1]` sleeping threads, prints `ready <fds opened> <soft limit>
/// <hard limit>` and sleeps.
const PY_CHILD: &str = r#"
import resource, socket, sys, threading, time
n_threads, n_fds = int(sys.argv[1]), int(sys.argv[2])
tcp = len(sys.argv) > 3 and sys.argv[3] == 'tcp'

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY or hard > soft:
    for want in (hard, n_fds + 64):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            break
        except (ValueError, OSError):
            pass
files = []
try:
    if tcp:
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        listener.listen(1024)
        for _ in range(n_fds // 2):
            files.append(socket.create_connection(listener.getsockname()))
            files.append(listener.accept()[0])
    else:
        for _ in range(n_fds):
            files.append(open('/dev/null', 'rb'))
except OSError:
    pass
threading.stack_size(256 * 1024)
for _ in range(n_threads):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print('ready', len(files), soft, hard, flush=True)
time.sleep(600)
"#;

/// Children killed (and reaped, with a timeout) on drop, including on panic.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn kill_all(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for mut c in self.0.drain(..) {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    _ => {
                        eprintln!("warning: child {} not reaped", c.id());
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Has the child killed if this process dies without running destructors.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // prctl, which is async-signal-safe and does not allocate or take locks.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// What a python child reported when ready.
struct Big {
    pid: u32,
    fds_opened: u64,
    soft: String,
    hard: String,
}

/// Starts a python child with `threads` threads and `fds` open fds and waits
/// (at most 60 s) for it to be ready.
fn spawn_big(children: &mut Children, threads: u32, fds: u32) -> Big {
    spawn_child(children, threads, fds, "files")
}

/// [`spawn_big`] with the kind of fds: `files` or `tcp`.
fn spawn_child(children: &mut Children, threads: u32, fds: u32, kind: &str) -> Big {
    let mut child = die_with_parent(
        Command::new("python3")
            .args(["-c", PY_CHILD, &threads.to_string(), &fds.to_string(), kind])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .spawn()
    .expect("spawn python3");
    let stdout = child.stdout.take().expect("piped stdout");
    let pid = child.id();
    children.0.push(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(r.map(|_| line));
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("python3 child not ready within 60 s")
        .expect("read python3 stdout");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(
        f.len() == 4 && f[0] == "ready",
        "python3 child exited or said {line:?}"
    );
    Big {
        pid,
        fds_opened: f[1].parse().expect("fd count"),
        soft: f[2].to_string(),
        hard: f[3].to_string(),
    }
}

/// Runs `f` `n` times, timing each call; returns microseconds.
fn time_each<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// (mean, median).
fn mean_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (mean, median)
}

/// Count-only sample vs fd_breakdown vs `stat` vs listing `/proc/PID/fd`.
fn bench_child(label: &str, big: &Big, want_threads: u32, want_fds: u32) {
    let pid = big.pid;
    let target = Target::Pid(pid);
    let count_opts = SampleOptions::default();
    let breakdown_opts = SampleOptions {
        fd_breakdown: true,
        ..Default::default()
    };
    let s = sample(target, &breakdown_opts).expect("sample child");
    let kinds = s.fds_by_kind.expect("breakdown");
    println!(
        "{label} (pid {pid}): wanted {want_threads} threads / {want_fds} fds; \
         opened {} fds, RLIMIT_NOFILE soft {} hard {}",
        big.fds_opened, big.soft, big.hard
    );
    if big.fds_opened < u64::from(want_fds) {
        println!(
            "  NOTE: only {} of {want_fds} fds could be opened",
            big.fds_opened
        );
    }
    println!(
        "  sample: threads {}, open_fds {}, fd_limit {:?}, breakdown total {} (file {})",
        s.threads,
        s.open_fds,
        s.fd_limit,
        kinds.total(),
        kinds.file
    );
    let fd_dir = format!("/proc/{pid}/fd");
    let st_size = std::fs::metadata(&fd_dir).expect("stat fd dir").len();
    println!("  st_size of {fd_dir}: {st_size} (0 = kernel < 6.2, count falls back to listing)");

    sample(target, &count_opts).expect("warm");
    let (c_mean, c_med) = mean_median(time_each(2000, || sample(target, &count_opts).unwrap()));
    let (b_mean, b_med) = mean_median(time_each(50, || sample(target, &breakdown_opts).unwrap()));
    let (m_mean, m_med) = mean_median(time_each(2000, || {
        std::fs::metadata(&fd_dir).unwrap().len()
    }));
    let stat_path = format!("/proc/{pid}/stat");
    let (s_mean, s_med) = mean_median(time_each(2000, || std::fs::read(&stat_path).unwrap()));
    let leader_path = format!("/proc/{pid}/task/{pid}/stat");
    let (l_mean, l_med) = mean_median(time_each(2000, || std::fs::read(&leader_path).unwrap()));
    let (k_mean, k_med) = mean_median(time_each(2000, || process_clock_seconds(pid)));
    // The same readings through procfs, for docs/decisions.md.
    let (pp_mean, pp_med) = mean_median(time_each(2000, || {
        procfs::process::Process::new(pid as i32)
            .unwrap()
            .stat()
            .unwrap()
    }));
    let (pl_mean, pl_med) = mean_median(time_each(2000, || {
        procfs::process::Process::new(pid as i32)
            .unwrap()
            .task_from_tid(pid as i32)
            .unwrap()
            .stat()
            .unwrap()
    }));
    let (ol_mean, ol_med) = mean_median(time_each(2000, || read_parse_leader_stat(&leader_path)));
    let leader_text = std::fs::read(&leader_path).unwrap();
    let (pparse_mean, pparse_med) = mean_median(time_each(2000, || {
        use procfs::FromRead;
        procfs::process::Stat::from_read(&leader_text[..]).unwrap()
    }));
    let (oparse_mean, oparse_med) = mean_median(time_each(2000, || {
        parse_stat(std::str::from_utf8(&leader_text).unwrap()).unwrap()
    }));
    let (pf_mean, pf_med) = mean_median(time_each(2000, || {
        procfs::process::Process::new(pid as i32)
            .unwrap()
            .fd_count()
            .unwrap()
    }));
    let (r_mean, r_med) = mean_median(time_each(50, || {
        std::fs::read_dir(&fd_dir)
            .unwrap()
            .filter(|e| e.is_ok())
            .count()
    }));
    println!(
        "  {:<36} {:>10} {:>10} {:>14}",
        "", "mean us", "median us", "mean/count-only"
    );
    for (name, mean, med) in [
        ("count-only sample (2000)", c_mean, c_med),
        ("fd_breakdown sample (50)", b_mean, b_med),
        ("metadata(fd dir).len() (2000)", m_mean, m_med),
        ("read_dir(fd dir) count (50)", r_mean, r_med),
        ("read /proc/PID/stat (2000)", s_mean, s_med),
        ("read /proc/PID/task/PID/stat (2000)", l_mean, l_med),
        ("process CPU clock_gettime (2000)", k_mean, k_med),
        ("ours: 1 read + parse_stat, leader", ol_mean, ol_med),
        ("procfs: Process::stat() (2000)", pp_mean, pp_med),
        ("procfs: leader Task::stat() (2000)", pl_mean, pl_med),
        ("parse only: parse_stat (2000)", oparse_mean, oparse_med),
        ("parse only: procfs Stat (2000)", pparse_mean, pparse_med),
        ("procfs: Process::fd_count() (2000)", pf_mean, pf_med),
    ] {
        println!(
            "  {name:<36} {mean:>10.2} {med:>10.2} {:>14.3}",
            mean / c_mean
        );
    }
    let ok = |v: f64| if v <= 20.0 { "met" } else { "NOT met" };
    println!(
        "  target count-only <= 20 us: mean {} ({c_mean:.2} us), median {} ({c_med:.2} us)",
        ok(c_mean),
        ok(c_med)
    );
}

/// Target 1: count-only sample of a large process in <= 20 us.
fn large_process() {
    println!();
    println!("== count-only sample of child processes (target <= 20 us for the large one) ==");
    let mut children = Children::default();
    let started = Instant::now();
    let large = spawn_big(&mut children, 1000, 10_000);
    let small = spawn_big(&mut children, 200, 1000);
    println!("children ready in {:.2} s", started.elapsed().as_secs_f64());
    bench_child("large", &large, 1000, 10_000);
    bench_child("small", &small, 200, 1000);
    children.kill_all();
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `ru` is a valid, writable rusage; getrusage fills it on success
    // (checked below) and reads nothing from it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage returned 0, so it initialized `ru`.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Target 2: 200 processes sampled once a second at < 5% of one core.
fn many_processes() {
    const N: usize = 200;
    const ROUNDS: u32 = 5;
    println!();
    println!("== {N} processes sampled once a second, count-only (target < 5% of one core) ==");
    let mut children = Children::default();
    for _ in 0..N {
        let child = die_with_parent(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("spawn sleep");
        children.0.push(child);
    }
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
    thread::sleep(Duration::from_millis(200));
    let opts = SampleOptions::default();
    let mut errors = 0u32;
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for round in 0..ROUNDS {
        let due = wall0 + Duration::from_secs(u64::from(round));
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let c = cpu_seconds();
        let t = Instant::now();
        for &pid in &pids {
            match sample(Target::Pid(pid), &opts) {
                Ok(s) => {
                    std::hint::black_box(s);
                }
                Err(_) => errors += 1,
            }
        }
        let wall_ms = t.elapsed().as_secs_f64() * 1e3;
        let cpu_ms = (cpu_seconds() - c) * 1e3;
        println!(
            "  round {}: {N} samples in {wall_ms:.2} ms wall, {cpu_ms:.2} ms CPU ({:.1} us/process){}",
            round + 1,
            cpu_ms * 1e3 / N as f64,
            if round == 0 {
                " [first round also reads /proc/PID/limits]"
            } else {
                ""
            }
        );
    }
    let end = wall0 + Duration::from_secs(u64::from(ROUNDS));
    thread::sleep(end.saturating_duration_since(Instant::now()));
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    let pct = cpu / wall * 100.0;
    println!(
        "  total: {:.2} ms CPU over {wall:.2} s wall = {pct:.3}% of one core ({}), {errors} sample errors",
        cpu * 1e3,
        if pct < 5.0 {
            "target < 5% met"
        } else {
            "target < 5% NOT met"
        }
    );
    children.kill_all();
}

/// CPU seconds of `pid` from its process CPU clock, as the sampler reads it.
/// Parsing `/proc/PID/limits`: procfs (which the sampler uses) next to a
/// scan for the one line it needs.
fn limits_parse(pid: u32) {
    let text = std::fs::read(format!("/proc/{pid}/limits")).unwrap();
    let (p_mean, _) = mean_median(time_each(2000, || {
        use procfs::FromRead;
        procfs::process::Limits::from_read(&text[..]).unwrap()
    }));
    let (s_mean, _) = mean_median(time_each(2000, || {
        std::str::from_utf8(&text)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l[14..].split_ascii_whitespace().next())
            .map(str::len)
    }));
    println!("  parse limits: procfs {p_mean:.2} us, line scan {s_mean:.2} us");
}

/// What the sampler does for the leader's `stat`: one `read` into a stack
/// buffer, then the hand-written parser.
fn read_parse_leader_stat(path: &str) -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(path).unwrap().read(&mut buf).unwrap();
    parse_stat(std::str::from_utf8(&buf[..n]).unwrap())
        .unwrap()
        .num_threads
}

fn process_clock_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both out-pointers are valid locals; failures are checked.
    unsafe {
        assert_eq!(libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock), 0);
        assert_eq!(libc::clock_gettime(clock, &mut ts), 0);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The fds profile's cost for 10,000 fds: listing (readlink per fd, socket
/// tables), grouping, and building + gzipping the profile.
fn fd_listing() {
    println!();
    println!("== fd listing for the fds profile, 10,000 fds ==");
    let mut children = Children::default();
    let files = spawn_child(&mut children, 1, 10_000, "files");
    let tcp = spawn_child(&mut children, 1, 10_000, "tcp");
    for (label, big) in [
        ("files (/dev/null)", &files),
        ("tcp (5,000 connections)", &tcp),
    ] {
        let target = Target::Pid(big.pid);
        let opts = ListOptions::default();
        let listing = list_fds(target, &opts).expect("list child");
        let groups = group_fds(&listing.fds);
        println!(
            "{label} (pid {}): {} fds listed in {} groups",
            big.pid,
            listing.fds.len(),
            groups.len()
        );
        let (l_mean, l_med) = mean_median(time_each(20, || list_fds(target, &opts).unwrap()));
        let (g_mean, g_med) = mean_median(time_each(20, || group_fds(&listing.fds)));
        let (b_mean, b_med) =
            mean_median(time_each(20, || fds::build(&listing, None).encode_gzip()));
        let (t_mean, t_med) = mean_median(time_each(20, || fds::groups_text(&listing)));
        println!("  {:<36} {:>10} {:>10}", "", "mean ms", "median ms");
        for (name, mean, med) in [
            ("list_fds (20)", l_mean, l_med),
            ("group_fds (20)", g_mean, g_med),
            ("build + encode_gzip (20)", b_mean, b_med),
            ("debug=1 text (20)", t_mean, t_med),
        ] {
            println!("  {name:<36} {:>10.2} {:>10.2}", mean / 1e3, med / 1e3);
        }
    }
    children.kill_all();
}
