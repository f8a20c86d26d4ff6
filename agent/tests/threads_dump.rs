//! Thread dumps of this test process with real threads: parked threads
//! named down to the closure, file and line that parks them, grouped by
//! stack; a thread that blocks SIGURG reported as silent; totals against
//! /proc/self/task; the limit on threads; an application SIGURG handler
//! left alone; a CPU profile running beside dumps.
//!
//! Every test holds [`serial`]: thread counts and the SIGURG disposition
//! are process-wide.

use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leakscope_agent::Error;
use leakscope_agent::collect::threads as threads_profile;
use leakscope_agent::profile::Profile;
use leakscope_agent::symbolize::Symbolizer;
use leakscope_agent::threads::{self, RawThreadDump, ThreadDumpOptions};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The line of the `recv` call that parks [`Parked`] threads.
fn recv_line() -> u32 {
    let src = include_str!("threads_dump.rs");
    let (i, _) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_end().ends_with("// parked here"))
        .expect("the parking line");
    i as u32 + 1
}

/// Threads parked in `Receiver::recv` until the guard is dropped.
struct Parked {
    tids: Vec<u32>,
    stop: Vec<mpsc::Sender<()>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Parked {
    /// Starts `n` threads named `name`; `block_sigurg` makes each block
    /// SIGURG first. Returns once every thread sleeps in `recv`.
    fn start(n: usize, name: &str, block_sigurg: bool) -> Parked {
        let mut parked = Parked {
            tids: Vec::new(),
            stop: Vec::new(),
            handles: Vec::new(),
        };
        for _ in 0..n {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let handle = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if block_sigurg {
                        block_sigurg_here();
                    }
                    let _ = ready_tx.send(gettid());
                    let _ = stop_rx.recv(); // parked here
                })
                .expect("spawn");
            let tid = ready_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("thread started");
            parked.tids.push(tid);
            parked.stop.push(stop_tx);
            parked.handles.push(handle);
        }
        for &tid in &parked.tids {
            wait_until_sleeping(tid);
        }
        parked
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.stop.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn block_sigurg_here() {
    // SAFETY: a sigset_t to initialise, then a mask change of the calling
    // thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
}

/// Waits until thread `tid` is in an interruptible sleep (state S), i.e.
/// blocked in `recv` rather than still on its way there.
fn wait_until_sleeping(tid: u32) {
    for _ in 0..3000 {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('S') {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("thread {tid} never went to sleep");
}

/// Runs a dump on a thread of its own and fails the test, instead of
/// hanging it, if the dump does not return within a minute.
fn dump_or_fail(options: ThreadDumpOptions) -> Result<RawThreadDump, Error> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-dumper".into())
        .spawn(move || {
            let _ = tx.send(threads::dump(&options));
        })
        .expect("spawn dumper");
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the dump returned")
}

/// (function, file, line) of every frame of a sample, leaf first, inlined
/// frames expanded.
fn frames(p: &Profile, location_ids: &[u64]) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for id in location_ids {
        let loc = p.location.iter().find(|l| l.id == *id).expect("location");
        for line in &loc.line {
            let f = p
                .function
                .iter()
                .find(|f| f.id == line.function_id)
                .expect("function");
            out.push((
                p.string(f.name).to_owned(),
                p.string(f.filename).to_owned(),
                line.line,
            ));
        }
    }
    out
}

/// The samples whose `thread` label is `name`.
fn samples_of<'a>(
    p: &'a Profile,
    name: &'a str,
) -> impl Iterator<Item = &'a leakscope_agent::profile::Sample> + 'a {
    p.sample.iter().filter(move |s| {
        s.label
            .iter()
            .any(|l| p.string(l.key) == "thread" && p.string(l.str) == name)
    })
}

fn is_the_parking_closure(frame: &(String, String, i64)) -> bool {
    frame.0.starts_with("threads_dump::")
        && frame.0.contains("{{closure}}")
        && frame.1.ends_with("threads_dump.rs")
        && frame.2 == i64::from(recv_line())
}

#[test]
fn parked_threads_group_into_one_sample_named_by_their_closure() {
    let _serial = serial();
    let parked = Parked::start(3, "parked-recv", false);
    let raw = dump_or_fail(ThreadDumpOptions::default()).expect("dump");
    let mine: Vec<_> = raw
        .threads
        .iter()
        .filter(|t| parked.tids.contains(&t.tid))
        .collect();
    assert_eq!(mine.len(), 3, "{raw:#?}");
    assert!(mine.iter().all(|t| t.name == "parked-recv"));

    let p = threads_profile::build(&raw, Symbolizer::global());
    p.validate().expect("a valid profile");
    let samples: Vec<_> = samples_of(&p, "parked-recv").collect();
    assert_eq!(samples.len(), 1, "one stack for the three threads");
    assert_eq!(samples[0].value, vec![3]);
    let stack = frames(&p, &samples[0].location_id);
    assert!(
        stack.iter().any(is_the_parking_closure),
        "no frame of the closure at threads_dump.rs:{}: {stack:#?}",
        recv_line()
    );
    // The thread is parked inside `recv`, so std's frames sit above (on
    // the leaf side of) the closure.
    let closure = stack.iter().position(is_the_parking_closure);
    let recv = stack.iter().position(|f| f.0.contains("Receiver<T>::recv"));
    assert!(
        matches!((recv, closure), (Some(r), Some(c)) if r < c),
        "{stack:#?}"
    );

    let text1 = threads_profile::text(&raw, 1, Symbolizer::global());
    let place = format!("threads_dump.rs:{}", recv_line());
    assert!(
        text1.starts_with(&format!("threads profile: total {}\n", raw.total())),
        "{text1}"
    );
    let block = text1
        .split("\n\n")
        .find(|b| b.contains("# labels: {\"thread\":\"parked-recv\"}"))
        .unwrap_or_else(|| panic!("no parked-recv group:\n{text1}"));
    assert!(block.lines().any(|l| l.starts_with("3 @ 0x")), "{block}");
    assert!(block.contains(&place), "{block}");
    let text2 = threads_profile::text(&raw, 2, Symbolizer::global());
    for tid in &parked.tids {
        let block = text2
            .split("\n\n")
            .find(|b| b.starts_with(&format!("thread {tid} [parked-recv]:\n")))
            .unwrap_or_else(|| panic!("no block for thread {tid}:\n{text2}"));
        assert!(block.contains(&place), "{block}");
    }
    drop(parked);
}

#[test]
fn a_thread_blocking_sigurg_is_reported_as_not_answering() {
    let _serial = serial();
    let deaf = Parked::start(1, "deaf-to-urg", true);
    let options = ThreadDumpOptions::default().timeout(Duration::from_millis(200));
    let raw = dump_or_fail(options).expect("dump");
    let tid = deaf.tids[0];
    assert!(raw.threads.iter().all(|t| t.tid != tid), "{raw:#?}");
    let silent: Vec<_> = raw.unanswered.iter().filter(|t| t.tid == tid).collect();
    assert_eq!(silent.len(), 1, "{raw:#?}");
    assert_eq!(silent[0].name, "deaf-to-urg");
    // It waited for the silent thread, for the timeout and no more than it
    // was told to (the upper bound is the minute `dump_or_fail` allows).
    assert!(raw.elapsed >= raw.timeout, "{:?}", raw.elapsed);

    let p = threads_profile::build(&raw, Symbolizer::global());
    let samples: Vec<_> = samples_of(&p, "deaf-to-urg").collect();
    assert_eq!(samples.len(), 1);
    let stack = frames(&p, &samples[0].location_id);
    assert_eq!(
        stack,
        vec![(
            "<thread did not answer within 200ms>".to_owned(),
            String::new(),
            0
        )]
    );
    let text1 = threads_profile::text(&raw, 1, Symbolizer::global());
    assert!(
        text1.contains(&format!("#\t1\tdeaf-to-urg\ttids {tid}\n")),
        "{text1}"
    );
    let text2 = threads_profile::text(&raw, 2, Symbolizer::global());
    assert!(
        text2.contains(&format!(
            "thread {tid} [deaf-to-urg]:\n<thread did not answer within 200ms>\n"
        )),
        "{text2}"
    );
    // The SIGURG left pending on it was discarded when the old (default)
    // disposition came back: unblocking it now must not run anything.
    drop(deaf);
}

fn count_tasks() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

#[test]
fn total_matches_proc_self_task() {
    let _serial = serial();
    let _parked = Parked::start(4, "parked-count", false);
    // Other tests of this binary start and end threads (the test harness
    // too): retry until the count was the same before and after the dump
    // and no thread came or went during it.
    for _ in 0..50 {
        let before = count_tasks();
        // On this thread: the dump counts the dumping thread itself.
        let raw = threads::dump(&ThreadDumpOptions::default()).expect("dump");
        let after = count_tasks();
        if before != after || raw.gone != 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert_eq!(raw.total() + raw.skipped, before, "{raw:#?}");
        assert_eq!(raw.skipped, 0);
        assert!(raw.unanswered.is_empty(), "{raw:#?}");
        let me = gettid();
        let own = raw
            .threads
            .iter()
            .find(|t| t.tid == me)
            .expect("own thread");
        // The dumping thread signalled itself: its stack shows the dump.
        let p = threads_profile::build(
            &RawThreadDump {
                threads: vec![own.clone()],
                unanswered: Vec::new(),
                ..raw.clone()
            },
            Symbolizer::global(),
        );
        let stack = frames(&p, &p.sample[0].location_id);
        assert!(
            stack
                .iter()
                .any(|f| f.0 == "leakscope_agent::threads::dump"),
            "{stack:#?}"
        );
        assert!(
            stack
                .iter()
                .any(|f| f.0 == "threads_dump::total_matches_proc_self_task"),
            "{stack:#?}"
        );
        return;
    }
    panic!("the thread count never held still over a dump");
}

#[test]
fn threads_beyond_the_limit_are_counted_as_skipped() {
    let _serial = serial();
    let _parked = Parked::start(3, "parked-limit", false);
    let raw = threads::dump(&ThreadDumpOptions::default().max_threads(2)).expect("dump");
    assert!(raw.total() + raw.gone <= 2, "{raw:#?}");
    assert!(raw.skipped >= 3, "{raw:#?}");
    let me = gettid();
    assert!(raw.threads.iter().any(|t| t.tid == me), "{raw:#?}");
    let p = threads_profile::build(&raw, Symbolizer::global());
    assert!(
        p.comment.iter().any(|c| p
            .string(*c)
            .contains(&format!("{} skipped (limit 2)", raw.skipped))),
        "{:?}",
        p.string_table
    );
}

fn sigurg_action() -> libc::sigaction {
    // SAFETY: a null new action only reads the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGURG, std::ptr::null(), &mut old), 0);
        old
    }
}

extern "C" fn application_handler(_: libc::c_int) {}

#[test]
fn an_application_sigurg_handler_is_left_alone() {
    let _serial = serial();
    assert_eq!(sigurg_action().sa_sigaction, libc::SIG_DFL);
    // SAFETY: installs a handler that does nothing, then puts SIG_DFL back.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = application_handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()),
            0
        );
    }
    let err = threads::dump(&ThreadDumpOptions::default()).expect_err("refused");
    assert!(matches!(err, Error::ThreadDumpSignalTaken), "{err:?}");
    assert!(err.to_string().contains("own SIGURG handler"), "{err}");
    assert_eq!(
        sigurg_action().sa_sigaction,
        application_handler as *const () as libc::sighandler_t
    );
    // SAFETY: back to the default disposition.
    unsafe {
        libc::signal(libc::SIGURG, libc::SIG_DFL);
    }
    // And after a dump the default disposition is back too.
    threads::dump(&ThreadDumpOptions::default()).expect("dump");
    assert_eq!(sigurg_action().sa_sigaction, libc::SIG_DFL);
}

#[inline(never)]
fn burn(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut x: u64 = 1;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

#[test]
fn dumps_beside_a_running_cpu_profile() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let burner = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("burner".into())
            .spawn(move || burn(&stop))
            .expect("spawn burner")
    };
    let sampler = leakscope_agent::cpu::CpuSampler::start(200).expect("CPU profile");
    let mut burner_seen = 0;
    for _ in 0..20 {
        let raw = dump_or_fail(ThreadDumpOptions::default()).expect("dump");
        burner_seen += raw.threads.iter().filter(|t| t.name == "burner").count();
        std::thread::sleep(Duration::from_millis(25));
    }
    let cpu = sampler.stop();
    stop.store(true, Ordering::Relaxed);
    burner.join().expect("burner");
    // Every dump caught the busy thread, between SIGPROFs or inside one.
    assert_eq!(burner_seen, 20);
    let burner_samples: u64 = cpu
        .samples
        .iter()
        .filter(|s| s.thread_name == "burner")
        .map(|s| s.count)
        .sum();
    assert!(burner_samples > 0, "{cpu:?}");
    let p = leakscope_agent::collect::cpu::build(cpu, Symbolizer::global());
    p.validate().expect("a valid CPU profile");
}
