//! Heap and allocs profiles read by the real `go tool pprof`, live and from
//! saved files: Go's sample types and order, period type, default type, the
//! `bytes` label, mappings with build IDs and symbolization flags, the
//! leaking function with its file and line, no allocator frame as a leaf,
//! `-proto` round-trips, deltas and `-diff_base`.

mod support;

use leakscope::agent::profile::Profile;
use support::{get, leak_heap, leak_line, pprof, save, scratch, url};

// A fine sample interval (16 KiB) so that a few leaks give many samples.
leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

const GO_HEAP_TYPES: &str =
    "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes";

/// Leaf function of each trace printed by `go tool pprof -traces`.
fn trace_leaves(traces: &str) -> Vec<String> {
    let mut leaves = Vec::new();
    let mut at_start = false;
    for line in traces.lines() {
        if line.starts_with("-----------+") {
            at_start = true;
            continue;
        }
        let t = line.trim();
        if at_start && !t.is_empty() && !t.contains(':') || at_start && t.contains("  ") {
            // A sample line: "<value>   <leaf function>".
            if let Some((_, f)) = t.split_once("   ") {
                leaves.push(f.trim().to_owned());
                at_start = false;
            }
        }
    }
    leaves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_profile_is_go_shaped_and_names_the_leak() {
    leak_heap(20, 256).await;
    let heap = url("/debug/pprof/heap");

    let raw = pprof(&["-raw", "-symbolize=none", &heap]);
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains("Period: 16384"), "{raw}");
    assert!(
        raw.contains(GO_HEAP_TYPES),
        "sample types in Go's order:\n{raw}"
    );
    assert!(
        raw.contains("bytes:["),
        "every sample has a bytes label:\n{raw}"
    );

    // Mappings: the main binary first, with its GNU build ID and all flags.
    let mappings = raw.split("Mappings\n").nth(1).expect("Mappings section");
    let first = mappings.lines().next().expect("a mapping");
    let exe = std::env::current_exe().expect("exe");
    assert!(first.starts_with("1: "), "{first}");
    assert!(
        first.contains(&*exe.to_string_lossy()),
        "main binary first: {first}"
    );
    let build_id = first.split_whitespace().nth(3).expect("build id field");
    assert!(
        build_id.len() == 40 && build_id.chars().all(|c| c.is_ascii_hexdigit()),
        "build id: {first}"
    );
    assert!(first.ends_with("[FN][FL][LN][IN]"), "flags: {first}");

    // The leak, by function, file and line.
    let lines = pprof(&["-top", "-lines", "-symbolize=none", "-nodecount=200", &heap]);
    let expected = format!("src/leaky.rs:{}", leak_line());
    assert!(
        lines
            .lines()
            .any(|l| l.contains("leakscope::leaky::leak_heap_kib") && l.contains(&expected)),
        "leak_heap_kib at {expected} in:\n{lines}"
    );

    // No allocator frame is a leaf.
    let traces = pprof(&["-traces", "-symbolize=none", &heap]);
    let leaves = trace_leaves(&traces);
    assert!(!leaves.is_empty(), "no traces parsed from:\n{traces}");
    for leaf in &leaves {
        let name = leaf.trim_start_matches('<');
        for bad in [
            "_rjem_",
            "je_",
            "prof_",
            "__rust_alloc",
            "__rustc::",
            "alloc::alloc::",
            "alloc::raw_vec::",
            "tikv_jemallocator::",
        ] {
            assert!(
                !name.starts_with(bad),
                "allocator frame {leaf:?} is a leaf:\n{traces}"
            );
        }
    }
    assert!(
        leaves
            .iter()
            .any(|l| l == "leakscope::leaky::leak_heap_kib"),
        "leak_heap_kib is the leaf of its stacks: {leaves:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocs_defaults_to_alloc_space_and_proto_round_trips() {
    leak_heap(4, 64).await;
    let res = get("/debug/pprof/allocs").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"allocs\"")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    let ours = Profile::decode_bytes(&res.body, "allocs").expect("valid profile");
    assert_eq!(ours.string(ours.default_sample_type), "alloc_space");

    let dir = scratch("allocs");
    let file = save(&dir, "allocs.pb.gz", &res.body);
    let raw = pprof(&["-raw", "-symbolize=none", &file]);
    assert!(raw.contains("alloc_space/bytes[dflt]"), "{raw}");

    // -proto writes the profile back out; nothing is lost on the way.
    let out = dir.join("roundtrip.pb.gz");
    pprof(&[
        "-proto",
        "-symbolize=none",
        "-output",
        &out.to_string_lossy(),
        &file,
    ]);
    let back = Profile::decode_bytes(&std::fs::read(&out).expect("read"), "roundtrip")
        .expect("valid after round trip");
    assert_eq!(back.sample_type_names(), ours.sample_type_names());
    let total = |p: &Profile, i: usize| p.sample.iter().map(|s| s.value[i]).sum::<i64>();
    for i in 0..4 {
        assert_eq!(total(&back, i), total(&ours, i), "sample type {i}");
    }
    let names = |p: &Profile| {
        let mut v: Vec<String> = p
            .function
            .iter()
            .map(|f| p.string(f.name).to_owned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(names(&back), names(&ours));
    // pprof drops mappings no location uses; the used ones keep their build IDs.
    let used = |p: &Profile| {
        let mut v: Vec<(String, String)> = p
            .mapping
            .iter()
            .filter(|m| p.location.iter().any(|l| l.mapping_id == m.id))
            .map(|m| {
                (
                    p.string(m.filename).to_owned(),
                    p.string(m.build_id).to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(used(&back), used(&ours));
    assert!(
        used(&ours).iter().all(|(_, id)| id.len() == 40),
        "{:?}",
        used(&ours)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_base_between_snapshots_puts_the_leak_on_top() {
    let dir = scratch("diffbase");
    let before = get("/debug/pprof/heap").await;
    assert_eq!(before.status, 200);
    leak_heap(40, 256).await;
    let after = get("/debug/pprof/heap").await;
    assert_eq!(after.status, 200);
    let b = save(&dir, "before.pb.gz", &before.body);
    let a = save(&dir, "after.pb.gz", &after.body);
    let top = pprof(&[
        "-top",
        "-symbolize=none",
        "-sample_index=inuse_space",
        "-diff_base",
        &b,
        &a,
    ]);
    let first_row = support::top_first_row(&top);
    assert!(
        first_row.contains("leakscope::leaky::leak_heap_kib"),
        "top growth:\n{top}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_delta_over_seconds() {
    let leaker = tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        leak_heap(20, 256).await;
    });
    let res = get("/debug/pprof/heap?seconds=2").await;
    leaker.await.expect("leaker");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"heap-delta\"")
    );
    let p = Profile::decode_bytes(&res.body, "heap-delta").expect("valid");
    assert!(
        p.duration_nanos >= 1_900_000_000,
        "duration {}",
        p.duration_nanos
    );
    assert!(p.time_nanos > 0);
    assert!(
        p.sample.iter().all(|s| s.value.iter().any(|v| *v != 0)),
        "zero samples dropped"
    );
    let dir = scratch("delta");
    let file = save(&dir, "delta.pb.gz", &res.body);
    let top = pprof(&[
        "-top",
        "-symbolize=none",
        "-sample_index=inuse_space",
        &file,
    ]);
    let first_row = support::top_first_row(&top);
    assert!(first_row.contains("leak_heap_kib"), "{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_text_heap_is_parsed_by_go_tool_pprof() {
    leak_heap(4, 64).await;
    let res = get("/debug/pprof/heap?debug=1").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let text = res.text();
    assert!(
        text.starts_with("heap profile: "),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        text.contains("@ heap/32768"),
        "2 x the sample interval, as Go writes it"
    );
    assert!(
        text.contains("leakscope::leaky::leak_heap_kib"),
        "comment lines name functions"
    );
    let dir = scratch("legacy");
    let file = save(&dir, "heap.txt", text.as_bytes());
    let raw = pprof(&["-raw", "-symbolize=none", &file]);
    assert!(raw.contains(GO_HEAP_TYPES), "{raw}");
}

fn assert_go_error(res: &leakscope::client::Response, status: u16, message: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    assert_eq!(res.text(), format!("{message}\n"));
    assert_eq!(res.header("x-go-pprof"), Some("1"));
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("content-disposition"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_gos_status_and_message() {
    let positive = r#"invalid value for "seconds" - must be a positive integer"#;
    for q in ["0", "-1", "x", "1.5"] {
        assert_go_error(
            &get(&format!("/debug/pprof/heap?seconds={q}")).await,
            400,
            positive,
        );
        assert_go_error(
            &get(&format!("/debug/pprof/allocs?seconds={q}")).await,
            400,
            positive,
        );
    }
    let res = get("/debug/pprof/heap?seconds=1000").await;
    assert_eq!(res.status, 400);
    assert!(
        res.text()
            .starts_with("profile duration exceeds server's maximum of 20s"),
        "{}",
        res.text()
    );
    assert_go_error(
        &get("/debug/pprof/heap?seconds=1&debug=1").await,
        400,
        "seconds and debug params are incompatible",
    );
    assert_go_error(&get("/debug/pprof/nosuch").await, 404, "Unknown profile");
    assert_go_error(
        &get("/debug/pprof/heap/extra").await,
        404,
        "Unknown profile",
    );
    // gc=1 is accepted, as in Go.
    assert_eq!(get("/debug/pprof/heap?gc=1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_redirect_cmdline_and_symbol() {
    let res = get("/debug/pprof").await;
    assert_eq!(res.status, 301);
    assert_eq!(res.header("location"), Some("/debug/pprof/"));

    let index = get("/debug/pprof/").await;
    assert_eq!(index.status, 200);
    let html = index.text();
    for name in ["allocs", "heap", "cmdline", "profile", "symbol"] {
        assert!(
            html.contains(&format!("href=\"{name}?debug=1\"")),
            "{name} in {html}"
        );
    }

    let cmd = get("/debug/pprof/cmdline").await;
    assert_eq!(cmd.status, 200);
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(cmd.text(), args.join("\0"));

    let addr = leakscope::leaky::leak_heap_kib as *const () as usize;
    let got = get(&format!("/debug/pprof/symbol?{addr:#x}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.text(),
        format!("num_symbols: 1\n{addr:#x} leakscope::leaky::leak_heap_kib\n")
    );
    let posted = support::post(
        "/debug/pprof/symbol",
        format!("{addr:#x}+0x1+{:#x}", addr + 1).as_bytes(),
    )
    .await;
    let text = posted.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("num_symbols: 1"));
    assert_eq!(
        lines.next(),
        Some(format!("{addr:#x} leakscope::leaky::leak_heap_kib").as_str())
    );
    assert_eq!(
        lines.next(),
        Some(format!("{:#x} leakscope::leaky::leak_heap_kib", addr + 1).as_str())
    );
    assert_eq!(
        lines.next(),
        None,
        "0x1 resolves to nothing and is left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_lines_are_stable_across_dumps_and_inlining_is_kept() {
    leak_heap(4, 64).await;
    let a = Profile::decode_bytes(&get("/debug/pprof/heap").await.body, "first").expect("valid");
    leak_heap(4, 64).await;
    let b = Profile::decode_bytes(&get("/debug/pprof/heap").await.body, "second").expect("valid");
    // address -> [(function, file, line)], innermost first
    let frames = |p: &Profile| -> std::collections::HashMap<u64, Vec<(String, String, i64)>> {
        p.location
            .iter()
            .map(|l| {
                let lines = l
                    .line
                    .iter()
                    .map(|ln| {
                        let f = p
                            .function
                            .iter()
                            .find(|f| f.id == ln.function_id)
                            .expect("function");
                        (
                            p.string(f.name).to_owned(),
                            p.string(f.filename).to_owned(),
                            ln.line,
                        )
                    })
                    .collect();
                (l.address, lines)
            })
            .collect()
    };
    let (fa, fb) = (frames(&a), frames(&b));
    let mut shared = 0;
    for (addr, lines) in &fa {
        if let Some(other) = fb.get(addr) {
            shared += 1;
            assert_eq!(
                lines, other,
                "address {addr:#x} resolved differently in two dumps"
            );
        }
    }
    assert!(shared > 10, "the two dumps share addresses ({shared})");
    // Inlined frames are expanded as pprof represents them: several lines on
    // one location, the real function last.
    let inlined = a.location.iter().filter(|l| l.line.len() > 1).count();
    assert!(inlined > 0, "some location carries inlined frames");
    // Each location has a mapping, and the addresses are real ones in it.
    for l in &a.location {
        let m = a
            .mapping
            .iter()
            .find(|m| m.id == l.mapping_id)
            .expect("mapping of location");
        assert!(m.memory_start <= l.address && l.address < m.memory_limit);
    }
}
