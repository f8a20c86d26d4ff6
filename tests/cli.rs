//! The `leakscope` command line as a user runs it: `--help`, and the demo
//! (the README's main command): one `leakscope check` that finds each
//! leak and names it.
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
    assert!(text.contains("check"), "{text}");
}

#[test]
fn check_help_documents_the_exit_codes() {
    let out = leakscope()
        .args(["check", "--help"])
        .output()
        .expect("run leakscope check --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "0  clean",
        "1  a leak",
        "2  the check could not run",
        "--spawn <CMD>",
        "--load <[METHOD ]URL[=WEIGHT]>",
        "--load-cmd <CMD>",
        "--allow <KIND=AMOUNT,...>",
        "--config <FILE>",
        "--junit <FILE>",
        "--report <FILE>",
        "--json",
        "--load 'http://127.0.0.1:8080/items/{n}=20'",
        "In a load URL, {n} is the request's number",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let out = leakscope().arg("nosuch").output().expect("run leakscope");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn demo_is_one_check_that_names_every_leak() {
    let page = std::env::temp_dir().join(format!(
        "leakscope-cli-{}/demo/report.html",
        std::process::id()
    ));
    let out = leakscope()
        .args(["demo", "--exit", "--duration", "6s", "--report"])
        .arg(&page)
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
    // It is a check, says how it differs from a CI one, and gives the
    // command line.
    assert!(stdout.contains("Shorter than a CI check"), "{stdout}");
    assert!(stdout.contains("leakscope check --pid "), "{stdout}");
    assert!(
        stdout.contains("leakscope check: LEAK: 4 of 4 kinds leaked"),
        "{stdout}"
    );
    for phase in ["[warm-up]", "[load]", "[cool-down]"] {
        assert!(stdout.contains(phase), "{phase}: {stdout}");
    }
    // Each kind's row of the table: LEAK, and what and where.
    let row = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{kind} ")) && l.contains(" → "))
            .unwrap_or_else(|| panic!("no {kind} row in:\n{stdout}"))
            .to_owned()
    };
    let heap = row("heap");
    let heap_at = format!(
        "leakscope::leaky::leak_heap_kib (src/leaky.rs:{})",
        line_of("let block = vec![0x5au8;")
    );
    assert!(heap.contains("LEAK") && heap.contains(&heap_at), "{heap}");
    let thread = row("threads");
    let thread_at = format!("(src/leaky.rs:{})", line_of("std::thread::park();"));
    assert!(
        thread.contains("LEAK")
            && thread
                .contains("thread 'leaky-thread' in leakscope::leaky::leak_thread::{{closure}}")
            && thread.contains(&thread_at),
        "{thread}"
    );
    // fds are named by what they are; tasks by spawn site only with
    // tokio's unstable hooks, which this build does not have: it says so.
    let fds = row("fds");
    assert!(
        fds.contains("LEAK") && fds.contains("file /dev/null"),
        "{fds}"
    );
    let tasks = row("tasks");
    assert!(
        tasks.contains("LEAK") && tasks.contains("tokio_unstable"),
        "{tasks}"
    );
    // The HTML report is written where asked, and says so.
    assert!(
        stdout.contains(&format!("file://{}", page.display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).expect("the demo's HTML report");
    assert!(
        html.contains("leak_heap_kib"),
        "the report names the heap leak"
    );
    let _ = std::fs::remove_dir_all(page.parent().and_then(|p| p.parent()).unwrap());
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

/// The README's service example is `examples/readme_service.rs` exactly, so
/// what a newcomer copies is what `cargo test` compiles.
#[test]
fn readme_example_is_the_compiled_one() {
    let readme = include_str!("../README.md");
    let start = "<!-- example: examples/readme_service.rs -->\n```rust\n";
    let a = readme
        .find(start)
        .expect("the example's marker in README.md")
        + start.len();
    let b = a + readme[a..]
        .find("```\n<!-- /example -->")
        .expect("the example's end marker");
    assert_eq!(
        &readme[a..b],
        include_str!("../examples/readme_service.rs"),
        "README.md's service example and examples/readme_service.rs differ"
    );
}
