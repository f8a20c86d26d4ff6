//! Tests of `LeakCheck`'s rules on made-up readings, of its patterns,
//! pacing and report text, and of its /proc reading on this process.

use super::*;

#[test]
fn substring_and_glob_patterns() {
    assert!(matches("leaky", "my-leaky-thread"));
    assert!(!matches("leaky", "tidy"));
    assert!(matches("tokio-*", "tokio-runtime-w"));
    assert!(!matches("tokio-*", "my-tokio-runtime"));
    assert!(matches("*eventfd*", "anon_inode:[eventfd]"));
    assert!(matches("socket:[*]", "socket:[12345]"));
    assert!(!matches("socket:[*]", "pipe:[12345]"));
    assert!(matches("a*b*c", "aXbYc"));
    assert!(!matches("a*b*c", "aXcYb"));
    // The suffix may not reuse what a middle part consumed.
    assert!(!matches("ab*b", "ab"));
    assert!(matches("*", ""));
}

#[test]
fn long_patterns_match_cut_names() {
    let check = LeakCheck::new().ignore_thread("tokio-runtime-worker");
    assert!(check.thread_ignored("tokio-runtime-w"));
    assert!(!check.thread_ignored("tokio-runtime"));
    assert_eq!(truncate("héllo", 2), "h");
}

#[test]
fn backoff_doubles_to_200ms_and_stops_at_the_timeout() {
    let delays: Vec<u64> = (0..7)
        .map(|a| BACKOFF.delay(a, 1.0).as_millis() as u64)
        .collect();
    assert_eq!(delays, [10, 20, 40, 80, 160, 200, 200]);
    let mut pace = Pace::start(Duration::ZERO);
    assert_eq!(pace.next_delay(), None);
    let mut pace = Pace::start(Duration::from_secs(60));
    assert_eq!(pace.next_delay(), Some(Duration::from_millis(10)));
    assert_eq!(pace.next_delay(), Some(Duration::from_millis(20)));
}

#[test]
fn human_sizes() {
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(12 << 20), "12.0 MiB");
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
}

#[test]
fn report_groups_threads_and_shows_reopened_fds() {
    let report = LeakReport {
        threads: vec![
            ("leaky-thread".into(), 1234),
            ("pool".into(), 20),
            ("pool".into(), 21),
        ],
        fds: vec![(7, "/dev/null".into()), (9, "socket:[12345]".into())],
        tasks: Some((3, 4)),
        heap_growth: Some(12 << 20),
        more: Box::new(ReportDetails {
            heap_tolerance: 1 << 20,
            waited: Duration::from_secs(2),
            replaced: BTreeMap::from([(9, "/tmp/x".to_owned())]),
            notes: vec![],
        }),
    };
    let text = report.to_string();
    let want = "\
leakscope LeakCheck: leaks after the test body (waited 2.0 s):
  threads: 3 new
    leaky-thread (tid 1234)
    pool x2 (tids 20, 21)
  fds: 1 new, 1 reopened
    7 -> /dev/null
    9 -> socket:[12345] (was /tmp/x)
  tokio tasks: 3 -> 4 (+1)
  heap: +12.0 MiB allocated (tolerance 1.0 MiB)";
    assert_eq!(text, want);
}

fn reading(threads: &[(u32, &str)], fds: &[(i32, &str)]) -> Reading {
    Reading {
        threads: Some(threads.iter().map(|&(t, n)| (t, n.to_owned())).collect()),
        fds: Some(fds.iter().map(|&(f, t)| (f, t.to_owned())).collect()),
        tasks: None,
        allocated: None,
    }
}

fn names(r: &Reading) -> BTreeMap<u32, String> {
    r.threads.clone().unwrap_or_default()
}

#[test]
fn new_threads_count_unless_they_replace_an_ended_one() {
    let check = LeakCheck::new();
    let base = reading(&[(1, "main"), (2, "pool"), (3, "pool")], &[]);
    // 2 ended and 5 took its place: no leak.
    let now = reading(&[(1, "main"), (3, "pool"), (5, "pool")], &[]);
    let report = check.diff(&base, &now, &mut names(&base));
    assert!(report.is_clean(), "{report}");
    // One place, two new threads: the later one is a leak.
    let now = reading(&[(1, "main"), (3, "pool"), (5, "pool"), (6, "pool")], &[]);
    let report = check.diff(&base, &now, &mut names(&base));
    assert_eq!(report.threads, [("pool".to_owned(), 6)]);
    // A place is only for the same name.
    let now = reading(&[(1, "main"), (3, "pool"), (5, "other")], &[]);
    let report = check.diff(&base, &now, &mut names(&base));
    assert_eq!(report.threads, [("other".to_owned(), 5)]);
    // Ignored names are never leaks.
    let report = check
        .clone()
        .ignore_thread("oth*")
        .diff(&base, &now, &mut names(&base));
    assert!(report.is_clean(), "{report}");
}

#[test]
fn ended_threads_leave_the_place_of_their_last_name() {
    let check = LeakCheck::new();
    // Thread 2 had not yet named itself in the baseline.
    let base = reading(&[(1, "main"), (2, "main")], &[]);
    let mut names = names(&base);
    let now = reading(&[(1, "main"), (2, "worker")], &[]);
    assert!(check.diff(&base, &now, &mut names).is_clean());
    let now = reading(&[(1, "main"), (7, "worker")], &[]);
    let report = check.diff(&base, &now, &mut names);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn new_and_reopened_fds_count_closed_ones_do_not() {
    let check = LeakCheck::new();
    let base = reading(&[], &[(0, "/dev/pts/0"), (3, "/dev/null"), (5, "pipe:[9]")]);
    let now = reading(
        &[],
        &[(0, "/dev/pts/0"), (3, "socket:[1]"), (4, "/dev/null")],
    );
    let report = check.diff(&base, &now, &mut BTreeMap::new());
    assert_eq!(
        report.fds,
        [(3, "socket:[1]".to_owned()), (4, "/dev/null".to_owned())]
    );
    assert_eq!(
        report.more.replaced,
        BTreeMap::from([(3, "/dev/null".to_owned())])
    );
    let report = check
        .ignore_fd("socket:[*]")
        .diff(&base, &now, &mut BTreeMap::new());
    assert_eq!(report.fds, [(4, "/dev/null".to_owned())]);
}

#[test]
fn tasks_and_heap_count_only_above_the_baseline() {
    let check = LeakCheck::new().heap_tolerance(100);
    let at = |tasks, allocated| Reading {
        threads: None,
        fds: None,
        tasks: Some(tasks),
        allocated: Some(allocated),
    };
    let base = at(3, 1000);
    let diff = |now: Reading| check.diff(&base, &now, &mut BTreeMap::new());
    assert!(diff(at(3, 1100)).is_clean());
    assert!(diff(at(2, 0)).is_clean());
    let report = diff(at(4, 1101));
    assert_eq!(report.tasks, Some((3, 4)));
    assert_eq!(report.heap_growth, Some(101));
    // Outside a runtime the tasks are not compared, and that is said.
    let now = Reading {
        tasks: None,
        ..at(9, 1000)
    };
    let report = diff(now);
    assert!(report.is_clean());
    assert!(
        report.notes()[0].starts_with("tokio tasks not checked"),
        "{:?}",
        report.notes()
    );
}

#[test]
fn reads_this_process() {
    let threads = read_threads().expect("threads");
    assert!(threads.contains_key(&std::process::id()));
    let file = fs::File::open("/dev/null").expect("open");
    let fds = read_fds().expect("fds");
    assert!(fds.values().any(|t| t == "/dev/null"), "{fds:?}");
    drop(file);
}

#[test]
fn async_checks_can_be_spawned() {
    fn send<T: Send>(_: &T) {}
    let check = LeakCheck::new();
    let baseline = check.snapshot();
    send(&check.verify_async(&baseline));
    send(&check.check_async(async { 1 }));
}
