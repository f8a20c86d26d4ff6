//! `/debug/pprof/threads` over a real socket, read by the real `go tool
//! pprof`: the live URL, a diff of two snapshots that names the closure of
//! five newly parked threads, the `debug=1` and `debug=2` text forms, Go's
//! answers to `seconds`, the index entry, and thread dumps while a CPU
//! profile runs.
//!
//! The service runs in this test process, so the threads a test parks are
//! threads of the service. Each test runs through [`serial`]: one at a
//! time, on a current-thread runtime that is gone before the next test
//! starts, so no test's threads come or go inside another's before/after
//! pair.

mod support;

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use leakscope::agent::profile::Profile;
use support::{cpu_lock, get, pprof, save, scratch};

/// Runs `test` alone, on a runtime with no threads of its own.
fn serial<F: Future>(test: F) -> F::Output {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Dropped before the lock is released.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime");
    rt.block_on(test)
}

/// The line of the `recv` call that parks [`Parked`] threads.
fn recv_line() -> u32 {
    let src = include_str!("pprof_threads.rs");
    let (i, _) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_end().ends_with("// parked here"))
        .expect("the parking line");
    i as u32 + 1
}

/// Threads parked in `Receiver::recv` until the guard is dropped.
struct Parked {
    stop: Vec<mpsc::Sender<()>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Parked {
    /// Starts `n` threads named `name`; returns once each sleeps in `recv`.
    fn start(n: usize, name: &str) -> Parked {
        let mut parked = Parked {
            stop: Vec::new(),
            handles: Vec::new(),
        };
        let mut tids = Vec::new();
        for _ in 0..n {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let handle = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    // SAFETY: gettid takes no arguments and cannot fail.
                    let _ = ready_tx.send(unsafe { libc::syscall(libc::SYS_gettid) });
                    let _ = stop_rx.recv(); // parked here
                })
                .expect("spawn");
            tids.push(
                ready_rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("thread started"),
            );
            parked.stop.push(stop_tx);
            parked.handles.push(handle);
        }
        for tid in tids {
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

/// Waits until thread `tid` is in an interruptible sleep (state S).
fn wait_until_sleeping(tid: i64) {
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

async fn threads_pb() -> Vec<u8> {
    let res = get("/debug/pprof/threads").await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.body
}

#[test]
fn threads_profile_is_go_shaped_and_read_by_go_tool_pprof() {
    serial(async {
        let _parked = Parked::start(2, "parked-live");
        let res = get("/debug/pprof/threads").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            res.header("content-disposition"),
            Some("attachment; filename=\"threads\"")
        );
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        let p = Profile::decode_bytes(&res.body, "threads").expect("valid profile");
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert!(total >= 4, "the test's and the service's threads: {total}");

        let dir = scratch("threads-live");
        let file = save(&dir, "threads.pb.gz", &res.body);
        let raw = pprof(&["-raw", "-symbolize=none", &file]);
        assert!(raw.contains("PeriodType: threads count"), "{raw}");
        assert!(raw.contains("Period: 1\n"), "{raw}");
        assert!(raw.contains("thread:[parked-live]"), "{raw}");
        let comments = pprof(&["-comments", &file]);
        assert!(comments.contains("leakscope: "), "{comments}");
        assert!(comments.contains(" answered, "), "{comments}");

        // The live URL, as a user would type it (pprof blocks this
        // runtime's only thread; the service runs on its own).
        let url = support::url("/debug/pprof/threads");
        let top = pprof(&["-top", "-tagfocus=thread=parked-live", &url]);
        assert!(top.contains("Type: threads"), "{top}");
        assert!(
            top.contains("pprof_threads::Parked::start::{{closure}}"),
            "{top}"
        );
    });
}

#[test]
fn diff_of_two_snapshots_ranks_the_new_threads_closure_first() {
    serial(async {
        let before = threads_pb().await;
        let parked = Parked::start(5, "leaked-worker");
        let after = threads_pb().await;
        let dir = scratch("threads-diff");
        let before = save(&dir, "before.pb.gz", &before);
        let after = save(&dir, "after.pb.gz", &after);
        // Parked threads all have the same leaf (libc's `syscall`, in the
        // futex wait), as Go's parked goroutines all end in
        // `runtime.gopark`: `-prune_from` cuts each stack at its innermost
        // frame of the service's own code, so the flat column ranks the
        // code that runs the threads.
        let top = pprof(&[
            "-top",
            "-prune_from=^pprof_threads::",
            "-diff_base",
            &before,
            &after,
        ]);
        let first = support::top_first_row(&top);
        assert!(
            first.contains("pprof_threads::Parked::start::{{closure}}"),
            "{top}"
        );
        assert_eq!(first.split_whitespace().next(), Some("5"), "{top}");
        // Without it the five are one trace, with the thread label, under
        // the leaf.
        let traces = pprof(&["-traces", "-diff_base", &before, &after]);
        let added = traces
            .split("-----------+-------------------------------------------------------")
            .find(|t| t.contains("thread:  leaked-worker"))
            .unwrap_or_else(|| panic!("no leaked-worker trace:\n{traces}"));
        assert!(
            added
                .lines()
                .nth(2)
                .is_some_and(|l| l.trim_start().starts_with("5 ")),
            "{added}"
        );
        assert!(
            added.contains("\n             pprof_threads::Parked::start::{{closure}}\n"),
            "{added}"
        );
        drop(parked);
    });
}

#[test]
fn text_forms_name_the_closure_file_and_line() {
    serial(async {
        let parked = Parked::start(3, "parked-text");
        let place = format!("tests/pprof_threads.rs:{}", recv_line());

        let res = get("/debug/pprof/threads?debug=1").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let text = res.text();
        assert!(text.starts_with("threads profile: total "), "{text}");
        let block = text
            .split("\n\n")
            .find(|b| b.contains("# labels: {\"thread\":\"parked-text\"}"))
            .unwrap_or_else(|| panic!("no parked-text group:\n{text}"));
        assert!(block.lines().any(|l| l.starts_with("3 @ 0x")), "{block}");
        assert!(
            block.lines().any(|l| l.starts_with("#\t0x")
                && l.contains("\tpprof_threads::Parked::start::{{closure}}\t")
                && l.ends_with(&place)),
            "{block}"
        );

        let res = get("/debug/pprof/threads?debug=2").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.text();
        let blocks: Vec<&str> = text
            .split("\n\n")
            .filter(|b| b.contains(" [parked-text]:\n"))
            .collect();
        assert_eq!(blocks.len(), 3, "{text}");
        for b in blocks {
            assert!(b.starts_with("thread "), "{b}");
            assert!(
                b.contains("\npprof_threads::Parked::start::{{closure}}\n\t") && b.contains(&place),
                "{b}"
            );
        }
        drop(parked);
    });
}

#[test]
fn seconds_is_refused_like_go() {
    serial(async {
        let res = get("/debug/pprof/threads?seconds=5").await;
        assert_eq!(res.status, 400);
        assert_eq!(res.header("x-go-pprof"), Some("1"));
        assert_eq!(
            res.text(),
            "\"seconds\" parameter is not supported for this profile type\n"
        );
        // Go checks the value first.
        let res = get("/debug/pprof/threads?seconds=abc").await;
        assert_eq!(res.status, 400);
        assert_eq!(
            res.text(),
            "invalid value for \"seconds\" - must be a positive integer\n"
        );
    });
}

#[test]
fn index_lists_threads_with_a_count() {
    serial(async {
        let res = get("/debug/pprof/").await;
        assert_eq!(res.status, 200);
        let html = res.text();
        let row = html
            .lines()
            .find(|l| l.contains("href=\"threads?debug=1\""))
            .unwrap_or_else(|| panic!("no threads row:\n{html}"));
        let count: usize = row
            .strip_prefix("<tr><td>")
            .and_then(|r| r.split('<').next())
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no count in {row}"));
        assert!(count >= 3, "{row}");
    });
}

#[test]
fn thread_dumps_while_a_cpu_profile_runs() {
    serial(async {
        let _cpu = cpu_lock().await;
        let cpu = tokio::spawn(get("/debug/pprof/profile?seconds=2"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..5 {
            let p = Profile::decode_bytes(&threads_pb().await, "threads").expect("valid");
            assert!(!p.sample.is_empty());
        }
        let cpu = cpu.await.expect("cpu request");
        assert_eq!(cpu.status, 200, "{}", cpu.text());
        let p = Profile::decode_bytes(&cpu.body, "profile").expect("valid CPU profile");
        assert!(p.duration_nanos >= 1_900_000_000, "{}", p.duration_nanos);
    });
}

extern "C" fn application_sigurg_handler(_: libc::c_int) {}

#[test]
fn an_application_sigurg_handler_makes_the_dump_refuse() {
    serial(async {
        let ours = application_sigurg_handler as *const () as libc::sighandler_t;
        // SAFETY: installs a handler that does nothing; SIG_DFL is put back
        // below.
        let old = unsafe { libc::signal(libc::SIGURG, ours) };
        assert_eq!(old, libc::SIG_DFL);
        let res = get("/debug/pprof/threads").await;
        let debug = get("/debug/pprof/threads?debug=1").await;
        // SAFETY: the default disposition again; nothing else changed it
        // (the dump refused, so the handler found is ours).
        let found = unsafe { libc::signal(libc::SIGURG, libc::SIG_DFL) };
        assert_eq!(found, ours, "the dump replaced the application's handler");
        for res in [res, debug] {
            assert_eq!(res.status, 500);
            assert_eq!(res.header("x-go-pprof"), Some("1"));
            assert_eq!(res.header("content-disposition"), None);
            let text = res.text();
            assert!(
                text.starts_with("Could not dump threads: thread dumps are off in this process: it has its own SIGURG handler"),
                "{text}"
            );
        }
        assert_eq!(get("/debug/pprof/threads").await.status, 200);
    });
}
