//! Heap dumps from a process started with jemalloc profiling on: the conf
//! symbol below takes effect, a real dump parses and shows the allocations of
//! `leak_here`, and `go tool pprof` reads the legacy text written from it.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use leakscope_agent::heap::{self, HeapState, RawHeapProfile, RawHeapSample};

// The one documented step: jemalloc as the global allocator with profiling
// on (here with a fine sample interval so small tests get samples).
leakscope_agent::enable_heap_profiling!(
    "prof:true,prof_active:true,lg_prof_sample:12,prof_accum:true"
);

const LEAKS: usize = 64;
const LEAK_SIZE: usize = 64 * 1024;

static LEAKED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn leak_here() {
    let mut leaked = LEAKED.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..LEAKS {
        let v = std::hint::black_box(vec![i as u8 | 1; LEAK_SIZE]);
        leaked.push(v);
    }
}

/// Start and end of the code of `leak_here` (an estimate: 2 KiB).
fn leak_here_range() -> (u64, u64) {
    let start = leak_here as fn() as usize as u64;
    (start, start + 2048)
}

fn in_leak_here(s: &RawHeapSample) -> bool {
    let (start, end) = leak_here_range();
    s.stack.iter().any(|&a| a >= start && a < end)
}

/// Leaks once per test binary and returns a dump taken after it.
fn dump_after_leak() -> RawHeapProfile {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(leak_here);
    heap::dump().expect("heap dump")
}

#[test]
fn conf_takes_effect() {
    // SAFETY: opt.prof is a C bool and the name is NUL-terminated.
    let prof = unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.prof\0") }.expect("opt.prof");
    assert!(prof, "the _rjem_malloc_conf symbol did not take effect");
    assert_eq!(
        heap::state(),
        HeapState::Enabled {
            sample_interval: 4096,
            accum: true,
            active: true
        }
    );
}

#[test]
fn real_dump_shows_leak() {
    let before = std::time::SystemTime::now();
    let p = dump_after_leak();
    assert_eq!(p.period, 4096);
    assert!(p.time >= before);
    assert!(!p.samples.is_empty());

    let leak: Vec<&RawHeapSample> = p
        .samples
        .iter()
        .filter(|s| s.inuse_bytes > 0 && in_leak_here(s))
        .collect();
    assert!(
        !leak.is_empty(),
        "no sample with a return address in leak_here {:#x?}",
        leak_here_range()
    );

    // The 64 KiB blocks; the other stacks through leak_here are the growth of
    // the Vec that keeps them.
    let blocks: Vec<&&RawHeapSample> = leak
        .iter()
        .filter(|s| s.inuse_bytes / s.inuse_objects.max(1) >= LEAK_SIZE as u64)
        .collect();
    let (mut raw_objs, mut raw_bytes, mut scaled_objs, mut scaled_bytes) = (0, 0, 0f64, 0f64);
    for s in &blocks {
        raw_objs += s.inuse_objects;
        raw_bytes += s.inuse_bytes;
        let (c, b) = heap::scale(s.inuse_objects, s.inuse_bytes, p.period);
        scaled_objs += c;
        scaled_bytes += b;
        assert!(s.alloc_bytes >= s.inuse_bytes, "prof_accum is on: {s:?}");
    }
    let all_leak_scaled: f64 = leak
        .iter()
        .map(|s| heap::scale(s.inuse_objects, s.inuse_bytes, p.period).1)
        .sum();
    let actual = (LEAKS * LEAK_SIZE) as f64;
    let total: f64 = p
        .samples
        .iter()
        .map(|s| heap::scale(s.inuse_objects, s.inuse_bytes, p.period).1)
        .sum();
    println!(
        "64 KiB blocks from leak_here: {} stack(s), raw {raw_objs} objects / {raw_bytes} B, \
         scaled {scaled_objs:.2} objects / {scaled_bytes:.0} B, actual {LEAKS} objects / {actual} B \
         ({:+.3}%)",
        blocks.len(),
        100.0 * (scaled_bytes - actual) / actual,
    );
    println!(
        "all {} stacks through leak_here: scaled in use {all_leak_scaled:.0} B; \
         whole process: {} stacks, scaled in use {total:.0} B",
        leak.len(),
        p.samples.len()
    );
    // 64 KiB allocations with a 4 KiB period are all sampled (p = 1 - e^-16).
    assert!(
        (scaled_bytes - actual).abs() <= actual * 0.01,
        "scaled {scaled_bytes} vs actual {actual}"
    );
    assert!(all_leak_scaled >= actual * 0.99);
}

#[test]
fn raw_dump_text_parses() {
    // Write a dump as jemalloc does, into the target's temporary directory,
    // show its first lines and parse it with the public parser.
    leak_once_and_ignore();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("raw_dump.heap");
    let c_path = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("no NUL");
    let ptr: *const std::ffi::c_char = c_path.as_ptr();
    // SAFETY: prof.dump takes a NUL-terminated `const char *` that outlives the call.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", ptr) }.expect("prof.dump");
    let text = std::fs::read_to_string(&path).expect("read dump");
    let _ = std::fs::remove_file(&path);
    println!("--- first lines of a real dump ---");
    for line in text.lines().take(12) {
        println!("{line}");
    }
    println!("--- ({} lines) ---", text.lines().count());
    assert!(text.starts_with("heap_v2/4096\n  t*: "), "{text:.200}");
    assert!(text.contains("\nMAPPED_LIBRARIES:\n"));
    let p = heap::parse_dump(&text).expect("parse real dump");
    assert_eq!(p.period, 4096);
    assert!(p.samples.iter().any(in_leak_here));
    let stacks = text.lines().filter(|l| l.starts_with('@')).count();
    assert_eq!(p.samples.len(), stacks);
}

fn leak_once_and_ignore() {
    let _ = dump_after_leak();
}

#[test]
fn concurrent_dumps_are_serialized() {
    let handles: Vec<_> = (0..3).map(|_| std::thread::spawn(heap::dump)).collect();
    for h in handles {
        let p = h.join().expect("thread").expect("dump");
        assert_eq!(p.period, 4096);
    }
}

/// Runs `go tool pprof -raw -symbolize=none` on `text` and returns its output,
/// or None when go is missing outside CI.
fn go_pprof_raw(name: &str, text: &str) -> Option<String> {
    if Command::new("go").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`go` is not on PATH: it is needed to check the legacy heap format in CI"
        );
        eprintln!("skipping: `go` is not on PATH");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write legacy profile");
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw", "-symbolize=none"])
        .arg(&path)
        .env("PPROF_TMPDIR", dir)
        .env("PPROF_NO_BROWSER", "1")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed on {}: {}\n{stdout}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

fn sample_types(raw: &str) -> Option<String> {
    let mut lines = raw.lines();
    lines.by_ref().find(|l| l.trim() == "Samples:")?;
    lines.next().map(|l| l.replace("[dflt]", ""))
}

const FOUR_TYPES: &str =
    "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes";

#[test]
fn go_pprof_reads_synthetic_legacy_text() {
    let p = RawHeapProfile {
        period: 524288,
        samples: vec![
            RawHeapSample {
                stack: vec![0x401000, 0x402000],
                inuse_objects: 2,
                inuse_bytes: 2 << 20,
                alloc_objects: 3,
                alloc_bytes: 3 << 20,
            },
            RawHeapSample {
                stack: vec![0x403000],
                inuse_objects: 0,
                inuse_bytes: 0,
                alloc_objects: 1,
                alloc_bytes: 16,
            },
        ],
        time: std::time::SystemTime::now(),
    };
    let text = heap::write_legacy_text(&p, &mut |a| Some(format!("f{a:x}")), None);
    let Some(raw) = go_pprof_raw("synthetic.heap", &text) else {
        return;
    };
    assert_eq!(sample_types(&raw).as_deref(), Some(FOUR_TYPES), "{raw}");
    assert!(raw.contains("Period: 524288"), "{raw}");
    // 1 MiB objects at a 512 KiB period: scaled by 1/(1-e^-2).
    let k = 1.0 / (1.0 - (-2.0f64).exp());
    let inuse = ((2u64 << 20) as f64 * k) as u64;
    assert!(
        raw.contains(&inuse.to_string()),
        "expected {inuse} in\n{raw}"
    );
}

#[test]
fn go_pprof_reads_real_legacy_text() {
    let p = dump_after_leak();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let (start, end) = leak_here_range();
    let mut describe =
        |a: u64| (a >= start && a < end).then(|| format!("leak_here+{:#x}", a - start));
    let text = heap::write_legacy_text(&p, &mut describe, Some(&maps));
    println!("--- legacy text (first lines) ---");
    for line in text.lines().take(6) {
        println!("{line}");
    }
    assert!(text.contains("\tleak_here+0x"));
    let Some(raw) = go_pprof_raw("real.heap", &text) else {
        return;
    };
    assert_eq!(
        sample_types(&raw).as_deref(),
        Some(FOUR_TYPES),
        "{raw:.2000}"
    );
    assert!(raw.contains("Period: 4096"), "{raw:.2000}");
    assert!(raw.contains("Mappings"), "{raw:.2000}");
    let n = raw
        .lines()
        .skip_while(|l| l.trim() != "Samples:")
        .skip(2)
        .take_while(|l| l.trim() != "Locations")
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("bytes:"))
        .count();
    println!(
        "go tool pprof read {n} sample lines for {} samples",
        p.samples.len()
    );
    assert!(n >= 1);
}
