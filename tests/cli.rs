//! The `leakscope` command line as a user runs it: `--help`, and the demo
//! (the README's main command) finding the leak by function, file and line.
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
fn demo_names_every_leak_kind_by_function_file_and_line() {
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
    let heap_line = line_of("let block = vec![0x5au8;");
    let expected =
        format!("FOUND: heap leak at leakscope::leaky::leak_heap_kib (src/leaky.rs:{heap_line})");
    assert!(
        stdout.contains(&expected),
        "expected {expected:?} in:\n{stdout}"
    );
    for (kind, function) in [
        ("thread", "leakscope::leaky::leak_thread"),
        ("task", "leakscope::leaky::leak_task"),
        ("fd", "leakscope::leaky::leak_fd"),
    ] {
        let found = stdout
            .lines()
            .find(|l| l.contains(&format!("FOUND: {kind} leak at ")))
            .unwrap_or_else(|| panic!("no {kind} line in:\n{stdout}"));
        assert!(
            found.contains(function) && found.contains("(src/leaky.rs:"),
            "{found}"
        );
    }
    // The scorecard lists the four kinds as found, and the viewer's diff.
    for kind in ["heap", "threads", "tasks", "fds"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(kind) && l.contains(" yes ")),
            "{kind} in the scorecard:\n{stdout}"
        );
    }
    assert!(stdout.contains("/debug/pprof/ui/diff?base="), "{stdout}");
    // Counters moved and alerts fired while it ran.
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
