//! `leakscope::leakcheck::LeakCheck` against real leaks: a clean body
//! passes (sync and async); a leaked thread, fd, tokio task or heap block
//! fails with a report naming it; a thread that ends late passes thanks to
//! the retry; the ignore options let a matching leak pass.
//!
//! The checks read the whole process, so the tests run one at a time (each
//! holds [`serial`]) and ignore the harness threads of the tests waiting for
//! their turn (all in `mod cases`). The async tests build their runtime
//! after taking the lock, so no other test's runtime threads and fds appear
//! in the middle of a check. Leaked threads and fds stay leaked: later
//! tests' baselines include them.

// jemalloc as the global allocator: the heap check reads its statistics.
leakscope::enable_heap_profiling!();

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leakscope::leakcheck::{LeakCheck, LeakReport};

/// Holds the lock that runs this file's tests one at a time, and renames
/// the test's thread once it has the lock.
///
/// The harness names each test's thread after the test (`cases::...`, cut to
/// 15 bytes), and the checks ignore those names: they are the tests waiting
/// for their turn. A new thread carries its creator's name until it names
/// itself (and keeps it if it never does), so the running test's thread
/// takes another name: the threads its body spawns are not ignored.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the others still run.
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::write("/proc/thread-self/comm", "checked-test").expect("rename the test thread");
    guard
}

/// A check that ignores the threads of the tests waiting for the lock.
fn leak_check() -> LeakCheck {
    LeakCheck::new().ignore_thread("cases::")
}

/// A check for a leak that stays: no use waiting long.
fn failing_check() -> LeakCheck {
    leak_check().timeout(Duration::from_millis(100))
}

/// A multi-thread runtime, as `#[tokio::test(flavor = "multi_thread")]`
/// builds it, but built once the test holds the lock.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Spawns a thread named `name` that never ends; returns its tid.
fn leak_thread(name: &str) -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            tx.send(tid as u32).expect("send tid");
            loop {
                std::thread::park();
            }
        })
        .expect("spawn thread");
    rx.recv().expect("tid")
}

/// Opens /dev/null and never closes it; returns the fd.
fn leak_fd() -> i32 {
    use std::os::fd::IntoRawFd;
    std::fs::File::open("/dev/null")
        .expect("open /dev/null")
        .into_raw_fd()
}

/// The report of a check that must fail, and its text (printed, for
/// `--nocapture`).
fn expect_leak<T: std::fmt::Debug>(result: Result<T, LeakReport>) -> (LeakReport, String) {
    let report = result.expect_err("the leak is reported");
    let text = report.to_string();
    eprintln!("{text}");
    (report, text)
}

mod cases {
    use super::*;

    #[test]
    fn clean_sync_body_passes() {
        let _serial = serial();
        let check = leak_check();
        let baseline = check.snapshot();
        assert_eq!(baseline.notes(), &[] as &[String], "every check runs");
        assert!(baseline.allocated().is_some(), "jemalloc is detected");

        let out = check
            .check(|| {
                let worker = std::thread::Builder::new()
                    .name("short-lived".into())
                    .spawn(|| {
                        let file = std::fs::File::open("/dev/null").expect("open");
                        let buf = vec![1u8; 8 << 20];
                        drop(file);
                        buf.iter().map(|&b| u64::from(b)).sum::<u64>()
                    })
                    .expect("spawn");
                worker.join().expect("join")
            })
            .unwrap_or_else(|report| panic!("{report}"));
        assert_eq!(out, 8 << 20);
    }

    #[test]
    fn clean_async_body_passes() {
        let _serial = serial();
        runtime().block_on(async {
            let out = leak_check()
                .check_async(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    let server = tokio::spawn(async move {
                        let (stream, _) = listener.accept().await.expect("accept");
                        drop(stream);
                    });
                    let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    server.await.expect("server task");
                    drop(client);
                    7
                })
                .await
                .unwrap_or_else(|report| panic!("{report}"));
            assert_eq!(out, 7);
        });
    }

    #[test]
    fn async_check_lets_the_runtime_finish_tasks() {
        let _serial = serial();
        // One thread: the straggler only ends if the wait yields to it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            leak_check()
                .check_async(async {
                    tokio::spawn(tokio::time::sleep(Duration::from_millis(100)));
                })
                .await
                .unwrap_or_else(|report| panic!("{report}"));
        });
    }

    #[test]
    fn leaked_thread_is_named() {
        let _serial = serial();
        let mut tid = 0;
        let (report, text) =
            expect_leak(failing_check().check(|| tid = leak_thread("leaky-thread")));
        assert_eq!(report.threads, [("leaky-thread".to_owned(), tid)], "{text}");
        assert!(
            report.fds.is_empty() && report.heap_growth.is_none(),
            "{text}"
        );
        assert!(text.contains("threads: 1 new"), "{text}");
        assert!(
            text.contains(&format!("leaky-thread (tid {tid})")),
            "{text}"
        );
    }

    #[test]
    fn leaked_fd_is_named() {
        let _serial = serial();
        let mut fd = -1;
        let (report, text) = expect_leak(failing_check().check(|| fd = leak_fd()));
        assert_eq!(report.fds, [(fd, "/dev/null".to_owned())], "{text}");
        assert!(report.threads.is_empty(), "{text}");
        assert!(text.contains("fds: 1 new"), "{text}");
        assert!(text.contains(&format!("{fd} -> /dev/null")), "{text}");
    }

    #[test]
    fn leaked_tokio_task_is_counted() {
        let _serial = serial();
        runtime().block_on(async {
            let leak = || async {
                tokio::spawn(std::future::pending::<()>());
            };
            let before = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            let (report, text) = expect_leak(failing_check().check_async(leak()).await);
            assert_eq!(report.tasks, Some((before, before + 1)), "{text}");
            assert!(report.threads.is_empty() && report.fds.is_empty(), "{text}");
            let line = format!("tokio tasks: {before} -> {} (+1)", before + 1);
            assert!(text.contains(&line), "{line:?} in:\n{text}");
            // The same leak passes when tasks are not checked.
            failing_check()
                .skip_tasks()
                .check_async(leak())
                .await
                .unwrap_or_else(|report| panic!("{report}"));
        });
    }

    #[test]
    fn leaked_heap_is_measured_and_tolerated_when_asked() {
        const LEAK: usize = 16 << 20;
        let _serial = serial();
        let leak = || {
            // Written bytes, so they are really allocated.
            let block: &'static mut [u8] = Box::leak(vec![0x5au8; LEAK].into_boxed_slice());
            std::hint::black_box(block);
        };
        let (report, text) = expect_leak(failing_check().check(leak));
        let growth = report.heap_growth.expect("heap growth");
        // Other threads may free or allocate a little meanwhile.
        assert!(
            growth > LEAK as i64 * 3 / 4 && growth < LEAK as i64 * 5 / 4,
            "{growth}: {text}"
        );
        assert!(report.threads.is_empty() && report.fds.is_empty(), "{text}");
        assert!(text.contains("heap: +1"), "{text}");
        assert!(
            text.contains(" MiB allocated (tolerance 1.0 MiB)"),
            "{text}"
        );

        leak_check()
            .heap_tolerance(64 << 20)
            .check(leak)
            .unwrap_or_else(|report| panic!("{report}"));
    }

    #[test]
    fn late_thread_passes_thanks_to_the_retry() {
        let _serial = serial();
        // Returns once the thread runs (under its own name).
        let late = || {
            let (started, wait) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("late-thread".into())
                .spawn(move || {
                    started.send(()).expect("started");
                    std::thread::sleep(Duration::from_millis(150));
                })
                .expect("spawn");
            wait.recv().expect("thread started");
            thread
        };
        let first = leak_check()
            .check(late)
            .unwrap_or_else(|report| panic!("{report}"));
        // Waiting less than it lives, the same thread is a leak.
        let short = leak_check().timeout(Duration::from_millis(50));
        let (report, text) = expect_leak(short.check(late));
        assert_eq!(report.threads.len(), 1, "{text}");
        assert_eq!(report.threads[0].0, "late-thread", "{text}");
        first.join().expect("join");
    }

    #[test]
    fn ignored_leaks_pass() {
        let _serial = serial();
        let check = leak_check()
            .ignore_thread("ignored-*")
            .ignore_fd("/dev/null")
            .timeout(Duration::from_millis(100));
        let baseline = check.snapshot();
        let tid = leak_thread("ignored-leaker");
        let fd = leak_fd();
        check
            .verify(&baseline)
            .unwrap_or_else(|report| panic!("{report}"));
        // Without the ignores the same leaks fail.
        let (report, text) = expect_leak(failing_check().verify(&baseline));
        assert_eq!(
            report.threads,
            [("ignored-leaker".to_owned(), tid)],
            "{text}"
        );
        assert_eq!(report.fds, [(fd, "/dev/null".to_owned())], "{text}");
    }
}
