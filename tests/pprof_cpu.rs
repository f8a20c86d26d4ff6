//! CPU profiles read by the real `go tool pprof`: Go's sample and period
//! types, the thread label, the running function as the leaf; one profile
//! at a time, early stop when the client goes away, Go's answers to bad
//! `seconds`; and a bounded stress run beside jemalloc's heap profiler.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leakscope::agent::profile::Profile;
use support::{cpu_lock, get, pprof, save, scratch, service};
use tokio::io::AsyncWriteExt;

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

/// Spins in a function of its own until `stop` is set.
#[inline(never)]
fn burn_cpu_in_test(stop: &AtomicBool) -> u64 {
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

/// A named thread burning CPU for as long as the guard lives.
struct Burner {
    stop: std::sync::Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Burner {
    fn start() -> Burner {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("burner".into())
            .spawn(move || burn_cpu_in_test(&s))
            .expect("spawn burner");
        Burner {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_is_go_shaped_and_names_the_running_function() {
    let _cpu = cpu_lock().await;
    let burner = Burner::start();
    let res = get("/debug/pprof/profile?seconds=2").await;
    drop(burner);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));

    let p = Profile::decode_bytes(&res.body, "profile").expect("valid profile");
    assert!(
        p.duration_nanos >= 1_900_000_000,
        "duration {}",
        p.duration_nanos
    );
    let samples: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert!(
        samples >= 100,
        "2 s of one busy thread at 100 Hz gave {samples} samples"
    );

    let dir = scratch("cpu");
    let file = save(&dir, "profile.pb.gz", &res.body);
    let raw = pprof(&["-raw", "-symbolize=none", &file]);
    assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
    assert!(raw.contains("Period: 10000000"), "{raw}");
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("thread:[burner]"), "thread label: {raw}");
    let comments = pprof(&["-comments", &file]);
    assert!(
        comments.contains("leakscope: per-thread timer, 0 samples lost"),
        "comments: {comments}"
    );
    let mappings = raw.split("Mappings\n").nth(1).expect("mappings");
    assert!(
        mappings
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("[FN][FL][LN][IN]")),
        "{mappings}"
    );

    // The burner's own function is the leaf (flat), not its caller.
    let top = pprof(&["-top", "-symbolize=none", "-tagfocus=thread=burner", &file]);
    let burner_row = top
        .lines()
        .find(|l| l.ends_with("pprof_cpu::burn_cpu_in_test"))
        .unwrap_or_else(|| panic!("no burner row:\n{top}"));
    let pct = |field: usize| -> f64 {
        burner_row
            .split_whitespace()
            .nth(field)
            .and_then(|s| s.trim_end_matches('%').parse().ok())
            .expect("percentage column")
    };
    // Its caller never takes the leaf's samples (the leaf heuristic and the
    // prologue/`ret` cases put them on the burner or the callees it was
    // in: debug builds call out for `Range::next`, which shows as its own
    // leaf, so the burner's own flat share depends on the build) ...
    let caller_flat: f64 = top
        .lines()
        .find(|l| l.ends_with("pprof_cpu::Burner::start::{{closure}}"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.trim_end_matches('%').parse().ok())
        .unwrap_or(0.0);
    assert!(caller_flat < 3.0, "the caller's flat share:\n{top}");
    assert!(pct(1) > 15.0, "burner's flat share:\n{top}");
    // ... and no sample caught in one of its callees (in a prologue or at a
    // `ret` included) lost the burner from its stack.
    assert!(pct(4) >= 80.0, "burner's cumulative share:\n{top}");
    let index = leakscope::agent::profile::ProfileIndex::new(&p);
    let callees = [
        "Range",
        "Step",
        "overflowing_add",
        "checked_add",
        "atomic_load",
    ];
    let mut in_callees = 0;
    for s in p
        .sample
        .iter()
        .filter(|s| index.label(s, "thread") == Some("burner"))
    {
        let frames = index.frames(s);
        let Some(leaf) = frames.first() else { continue };
        if callees.iter().any(|c| leaf.function.contains(c)) {
            in_callees += s.value[0];
            assert!(
                frames
                    .iter()
                    .any(|f| f.function == "pprof_cpu::burn_cpu_in_test"),
                "a sample in {} lost the burner: {:?}",
                leaf.function,
                frames.iter().map(|f| f.function).collect::<Vec<_>>()
            );
        }
    }
    assert!(in_callees > 0, "no sample in the burner's callees:\n{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_url_works_with_go_tool_pprof() {
    let _cpu = cpu_lock().await;
    let _burner = Burner::start();
    let url = support::url("/debug/pprof/profile?seconds=1");
    let top = tokio::task::spawn_blocking(move || pprof(&["-top", "-symbolize=none", &url]))
        .await
        .expect("pprof");
    assert!(top.contains("burn_cpu_in_test"), "{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cpu_profile_at_a_time() {
    let _cpu = cpu_lock().await;
    let first = tokio::spawn(get("/debug/pprof/profile?seconds=2"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = get("/debug/pprof/profile?seconds=1").await;
    assert_eq!(second.status, 500);
    assert_eq!(
        second.text(),
        "Could not enable CPU profiling: cpu profiling already in use\n"
    );
    assert_eq!(second.header("x-go-pprof"), Some("1"));
    assert_eq!(second.header("content-disposition"), None);
    assert_eq!(first.await.expect("first").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seconds_follow_go_rules() {
    let _cpu = cpu_lock().await;
    // Too long for the configured maximum (20 s in these tests).
    let res = get("/debug/pprof/profile?seconds=21").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("x-go-pprof"), Some("1"));
    assert!(
        res.text()
            .starts_with("profile duration exceeds server's maximum of 20s"),
        "{}",
        res.text()
    );
    // Go treats 0, negative and non-numbers as "the default, 30 s", which is
    // then over this server's maximum too.
    for q in ["0", "-5", "abc"] {
        let res = get(&format!("/debug/pprof/profile?seconds={q}")).await;
        assert_eq!(res.status, 400, "seconds={q}");
        assert!(
            res.text().contains("maximum of 20s"),
            "seconds={q}: {}",
            res.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_stops_when_the_client_goes_away() {
    let _cpu = cpu_lock().await;
    let mut conn = tokio::net::TcpStream::connect(service())
        .await
        .expect("connect");
    conn.write_all(b"GET /debug/pprof/profile?seconds=15 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(conn);
    // A new profile can start within a few seconds, not after 15.
    let started = Instant::now();
    loop {
        let res = get("/debug/pprof/profile?seconds=1").await;
        if res.status == 200 {
            break;
        }
        assert!(res.text().contains("already in use"), "{}", res.text());
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the abandoned profile kept running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Regression guard for the deadlock pprof-rs users hit beside jemalloc:
/// CPU profiles back to back while threads allocate with heap profiling
/// on, and heap dumps at the same time. A watchdog fails the run instead of
/// letting CI hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profiles_beside_heap_profiling_under_allocation_stress() {
    let _cpu = cpu_lock().await;
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog_done = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while !watchdog_done.load(Ordering::Relaxed) {
            if start.elapsed() > Duration::from_secs(120) {
                eprintln!("watchdog: stress test stuck for 120 s (deadlock?)");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let allocators: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("allocator-{t}"))
                .spawn(move || {
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    let mut n: usize = t;
                    while !stop.load(Ordering::Relaxed) {
                        n = n
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        keep.push(vec![1u8; 16 + (n >> 40) % 65536]);
                        if keep.len() > 64 {
                            keep.swap_remove(n % 64);
                        }
                    }
                })
                .expect("spawn allocator")
        })
        .collect();
    let dumper = tokio::spawn(async {
        for _ in 0..10 {
            assert_eq!(get("/debug/pprof/heap").await.status, 200);
        }
    });
    for _ in 0..5 {
        let res = get("/debug/pprof/profile?seconds=1").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let p = Profile::decode_bytes(&res.body, "profile").expect("valid");
        assert!(!p.sample.is_empty());
    }
    dumper.await.expect("heap dumps");
    stop.store(true, Ordering::Relaxed);
    for a in allocators {
        a.join().expect("allocator thread");
    }
    done.store(true, Ordering::Relaxed);
}
