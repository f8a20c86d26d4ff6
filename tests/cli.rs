//! The `leakscope` command line as a user runs it: `--help`, and the demo
//! (the README's main command) finding each leak and naming it from its
//! alert.
//! Also checks that README.md still gives the two commands.

use std::process::Command;

fn leakscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakscope"))
}

#[test]
fn help_lists_the_demo() {
    let out = leakscope().arg("--help").output().expect("run leakscope");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: leakscope"), "{text}");
    assert!(text.contains("demo"), "{text}");
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let out = leakscope().arg("nosuch").output().expect("run leakscope");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn demo_names_every_leak_kind_from_its_alert() {
    let out = leakscope()
        .args(["demo", "--exit", "--duration", "5s"])
        .output()
        .expect("run leakscope demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    let src = include_str!("../src/leaky.rs");
    let line_of = |needle: &str| {
        src.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} in src/leaky.rs"))
            + 1
    };
    // It says which settings differ from the built-in ones.
    assert!(
        stdout.contains("Settings that differ from leakscope's built-in defaults"),
        "{stdout}"
    );
    // Heap and threads are named by code, from the alerts' findings.
    let found = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("FOUND: {kind} leak")))
            .unwrap_or_else(|| panic!("no {kind} line in:\n{stdout}"))
            .to_owned()
    };
    let heap = found("heap");
    let heap_at = format!(
        "at leakscope::leaky::leak_heap_kib (src/leaky.rs:{})",
        line_of("let block = vec![0x5au8;")
    );
    assert!(heap.contains(&heap_at), "{heap}");
    let thread = found("thread");
    let thread_at = format!("(src/leaky.rs:{})", line_of("std::thread::park();"));
    assert!(
        thread.contains("at leakscope::leaky::leak_thread::{{closure}}")
            && thread.contains(&thread_at),
        "{thread}"
    );
    // fds are named by what they are; tasks by spawn site only with
    // tokio's unstable hooks, which this build does not have: it says so.
    assert!(found("fd").contains("file /dev/null"), "{stdout}");
    assert!(found("task").contains("tokio_unstable"), "{stdout}");
    // Every kind was detected during the load.
    for kind in ["heap", "threads", "tasks", "fds"] {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(kind) && l.contains(" s  "))
            .unwrap_or_else(|| panic!("{kind} in the scorecard:\n{stdout}"));
        assert!(!row.contains("not detected"), "{row}");
    }
    assert!(stdout.contains("/debug/pprof/ui/diff?base="), "{stdout}");
    assert!(stdout.contains("alert "), "{stdout}");
}

#[test]
fn readme_gives_both_commands() {
    let readme = include_str!("../README.md");
    let block = |name: &str| {
        let start = format!("<!-- {name} -->");
        let end = format!("<!-- /{name} -->");
        let a = readme
            .find(&start)
            .unwrap_or_else(|| panic!("no {start} in README.md"));
        let b = readme
            .find(&end)
            .unwrap_or_else(|| panic!("no {end} in README.md"));
        readme[a + start.len()..b]
            .lines()
            .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(block("main-command"), "cargo run --release -- demo --exit");
    assert_eq!(block("test-command"), "cargo test --workspace --locked");
    let ci = include_str!("../.ci/run");
    assert!(
        ci.contains("<!-- test-command -->"),
        ".ci/run reads the README's test command"
    );
}
