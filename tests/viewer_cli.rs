//! `leakscope diff` and `leakscope view` on saved heap profiles of the
//! leaky example: the ranked table names the leak first and fits the
//! terminal, `-o` writes a self-contained report or SVG, and bad files get
//! a message naming them while the rest keeps working.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{leak_heap, save, scratch};

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

fn leakscope(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("run leakscope");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two heap profiles of the leaky service, before and after 40 leaks of
/// 256 KiB, plus a CPU-like and a broken file.
async fn profiles(dir: &Path) -> (PathBuf, PathBuf) {
    let base = support::get("/debug/pprof/heap").await;
    assert_eq!(base.status, 200);
    leak_heap(40, 256).await;
    let new = support::get("/debug/pprof/heap").await;
    assert_eq!(new.status, 200);
    (
        PathBuf::from(save(dir, "base.pb.gz", &base.body)),
        PathBuf::from(save(dir, "new.pb.gz", &new.body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_ranks_the_leak_first_and_writes_reports() {
    let dir = scratch("viewer-cli-diff");
    let (base, new) = profiles(&dir).await;
    let (b, n) = (base.to_str().expect("utf-8"), new.to_str().expect("utf-8"));

    let (code, out, err) = leakscope(&["diff", b, n]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("inuse_space: "), "{out}");
    let first = out.lines().nth(3).expect("first row");
    assert!(
        first.contains("leak_heap_kib") && first.contains("src/leaky.rs:"),
        "{out}"
    );
    // 40 leaks of 256 KiB, plus whatever the other test of this binary
    // leaked meanwhile: at least 10 MiB.
    let mib: f64 = first
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.trim_start_matches('+').parse().ok())
        .expect("change");
    assert!(
        first.contains("MiB") && mib >= 9.5,
        "about +10 MiB or more: {out}"
    );
    assert!(
        out.lines().all(|l| l.chars().count() <= 100),
        "fits COLUMNS=100:\n{out}"
    );

    let html = dir.join("report.html");
    let (code, out, err) = leakscope(&["diff", b, n, "-o", html.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("wrote "), "{out}");
    let text = std::fs::read_to_string(&html).expect("report");
    assert!(text.starts_with("<!doctype html>"), "{}", &text[..100]);
    assert_eq!(text.matches("<iframe class=\"flame\"").count(), 2);
    assert_eq!(
        text.matches("srcdoc=\"&lt;!doctype html&gt;").count(),
        2,
        "flamegraphs embedded as documents of their own"
    );
    assert!(text.contains("leak_heap_kib"));
    assert!(
        !text.contains("src=\"http"),
        "self-contained: no external resources"
    );

    let svg = dir.join("diff.svg");
    let (code, _, err) = leakscope(&["diff", b, n, "-o", svg.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    let text = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        text.contains("<svg") && text.contains("leak_heap_kib"),
        "{}",
        &text[..200]
    );

    // Other sample types and normalization.
    let (code, out, err) = leakscope(&[
        "diff",
        b,
        n,
        "--type",
        "alloc_space",
        "--normalize",
        "--top",
        "3",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("alloc_space: ") && out.contains("normalized"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_named_with_the_problem() {
    let dir = scratch("viewer-cli-bad");
    let (base, _) = profiles(&dir).await;
    let b = base.to_str().expect("utf-8");
    let junk = dir.join("junk.pb.gz");
    std::fs::write(&junk, b"this is not a profile").expect("write");
    let truncated = dir.join("truncated.pb.gz");
    let bytes = std::fs::read(&base).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let goroutine = dir.join("goroutine.pb.gz");
    let mut p = leakscope::agent::profile::Profile {
        string_table: vec!["".into(), "goroutine".into(), "count".into()],
        sample_type: vec![leakscope::agent::profile::ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    p.sample.clear();
    std::fs::write(&goroutine, p.encode_gzip()).expect("write");

    for (file, want) in [
        (&junk, "junk.pb.gz: not a valid pprof profile"),
        (&truncated, "truncated.pb.gz: not a valid pprof profile"),
        (&dir.join("missing.pb.gz"), "cannot read"),
    ] {
        let (code, _, err) = leakscope(&["diff", b, file.to_str().expect("utf-8")]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    let (code, _, err) = leakscope(&["diff", goroutine.to_str().expect("utf-8"), b]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("has no inuse_space samples") && err.contains("same kind"),
        "{err}"
    );

    // `view` names the bad files and serves the good one.
    let (code, out, err) = leakscope(&["view", dir.to_str().expect("utf-8"), "--duration", "1s"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("skipped") && err.contains("junk.pb.gz"),
        "{err}"
    );
    assert!(out.contains("profile(s) at http://127.0.0.1:"), "{out}");
    let (code, _, err) = leakscope(&["view", junk.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no readable pprof profile"), "{err}");
}
