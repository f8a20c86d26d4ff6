//! Diff + render time of two large profiles (100,000 samples each), side
//! by side in one run with `go tool pprof -top -diff_base` on the same
//! files, as a ratio.
//!
//! leakscope's side is what the diff page costs the server: decode both,
//! fold, rank what grew, and draw both differential flamegraphs (new side
//! and base side). pprof's side is one `go tool pprof -top -diff_base`
//! process (decode both, diff, print the table; no drawing).
//!
//! Run with: `cargo bench --bench viewer` (needs `go` on PATH).

use std::process::Command;
use std::time::Instant;

use leakscope::agent::profile::{Function, Line, Location, Profile, Sample, ValueType};
use leakscope::viewer::diff::{DiffStacksOptions, diff};
use leakscope::viewer::fold::{FoldOptions, fold};
use leakscope::viewer::render::{FlameOptions, Side, diff_flamegraph};
use leakscope::viewer::{DiffOptions, rank_growth};

const SAMPLES: usize = 100_000;
const FUNCTIONS: u64 = 5_000;
const ROUNDS: usize = 5;

/// A heap-like profile: `SAMPLES` stacks 8–24 frames deep over `FUNCTIONS`
/// functions (a tree-shaped call graph, so stacks share prefixes as real
/// ones do); `grow` makes one leaf much bigger.
fn profile(seed: u64, grow: bool) -> Profile {
    let mut p = Profile {
        string_table: vec![
            "".into(),
            "inuse_space".into(),
            "bytes".into(),
            "src/app.rs".into(),
        ],
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Profile::default()
    };
    for f in 0..FUNCTIONS {
        p.string_table
            .push(format!("app::module{}::function_{f}", f % 97));
        p.function.push(Function {
            id: f + 1,
            name: p.string_table.len() as i64 - 1,
            filename: 3,
            ..Function::default()
        });
        p.location.push(Location {
            id: f + 1,
            address: 0x10_0000 + f * 16,
            line: vec![Line {
                function_id: f + 1,
                line: (f % 400) as i64 + 1,
                column: 0,
            }],
            ..Location::default()
        });
    }
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..SAMPLES {
        let depth = 8 + (next() % 17) as usize;
        // Root first: walk down a tree where each function's children are
        // 8 functions picked from its id.
        let mut frames = Vec::with_capacity(depth);
        let mut f = next() % 16;
        for _ in 0..depth {
            frames.push(f + 1);
            f = (f * 8 + 1 + next() % 8) % FUNCTIONS;
        }
        frames.reverse(); // leaf first
        let mut value = (next() % 65_536) as i64;
        if grow && i % 50 == 0 {
            frames[0] = 4242;
            value *= 20;
        }
        p.sample.push(Sample {
            location_id: frames,
            value: vec![value],
            label: vec![],
        });
    }
    p
}

fn main() {
    let dir = std::env::temp_dir().join(format!("leakscope-bench-viewer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (base_path, new_path) = (dir.join("base.pb.gz"), dir.join("new.pb.gz"));
    std::fs::write(&base_path, profile(7, false).encode_gzip()).expect("write");
    std::fs::write(&new_path, profile(11, true).encode_gzip()).expect("write");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "== diff + render of two profiles of {SAMPLES} samples ({} KiB and {} KiB gzipped), {ROUNDS} rounds each, alternated ==",
        size(&base_path) / 1024,
        size(&new_path) / 1024
    );

    // LEAKSCOPE_BENCH_STEPS=1 prints the time of each step.
    let steps = std::env::var_os("LEAKSCOPE_BENCH_STEPS").is_some();
    let ours = || {
        let t = Instant::now();
        let mut last = Instant::now();
        let mut lap = |name: &str| {
            if steps {
                println!("    {name}: {:.3} s", last.elapsed().as_secs_f64());
            }
            last = Instant::now();
        };
        let base =
            Profile::decode_bytes(&std::fs::read(&base_path).expect("read"), "base").expect("base");
        let new =
            Profile::decode_bytes(&std::fs::read(&new_path).expect("read"), "new").expect("new");
        lap("decode");
        let fo = FoldOptions::default().with_sample_type("inuse_space");
        let (fb, fnew) = (
            fold(&base, &fo).expect("fold"),
            fold(&new, &fo).expect("fold"),
        );
        lap("fold");
        let ranked = rank_growth(
            &base,
            &new,
            &DiffOptions::default().with_sample_type("inuse_space"),
        )
        .expect("rank");
        lap("rank");
        let d = diff(&fb, &fnew, DiffStacksOptions::default()).expect("diff");
        lap("diff");
        let new_svg = diff_flamegraph(&d, &FlameOptions::new("new"), Side::New).expect("svg");
        let base_svg = diff_flamegraph(&d, &FlameOptions::new("base"), Side::Base).expect("svg");
        lap("render");
        let secs = t.elapsed().as_secs_f64();
        (
            secs,
            ranked[0].function.clone(),
            d.stacks.len(),
            new_svg.len() + base_svg.len(),
            new_svg.matches("<g>").count(),
        )
    };
    let pprof = || {
        let t = Instant::now();
        let out = Command::new("go")
            .args([
                "tool",
                "pprof",
                "-top",
                "-sample_index=inuse_space",
                "-diff_base",
            ])
            .arg(&base_path)
            .arg(&new_path)
            .env("HOME", &dir)
            .env("PPROF_TMPDIR", &dir)
            .output()
            .expect("run go tool pprof (install golang-go)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secs = t.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        (secs, first)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (s, top, stacks, bytes, frames) = ours();
        let (p, ptop) = pprof();
        if round == 0 {
            println!(
                "  leakscope: top grower {top}; {stacks} distinct stacks; SVGs {} KiB, {frames} frames drawn (new side)",
                bytes / 1024
            );
            println!("  pprof:     top grower {ptop}");
        }
        println!(
            "  round {}: leakscope {:.3} s, pprof {:.3} s, ratio {:.2}",
            round + 1,
            s,
            p,
            s / p
        );
        a.push(s);
        b.push(p);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!(
        "median: leakscope diff+render {ma:.3} s, go tool pprof -top -diff_base {mb:.3} s, ratio {:.2}",
        ma / mb
    );
    let _ = std::fs::remove_dir_all(&dir);
}
