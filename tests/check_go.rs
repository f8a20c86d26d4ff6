//! `leakscope check` on the Go inventory service (tests/data/inventory,
//! built with the real `go build`): reservations park goroutines for good,
//! recorded items keep their spec sheets for good, and item pages go
//! through a bounded cache. The check spawns it, loads it, and exits 1 with
//! the goroutine and heap leaks named by function and file:line, never the
//! cache. The same service loaded by an external tool (`ab`, from Debian's
//! apache2-utils, which .ci/run installs) through `--load-cmd`: the
//! goroutine leak it drives is found, and the command's output is kept.

mod support;

use support::check::{check, free_port};
use support::sidecar::go_binary;

/// The 1-based line of `file` (in tests/data/inventory) holding `needle`.
fn line_of(file: &str, needle: &str) -> i64 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inventory")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("inventory source");
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in {}", path.display())) as i64
        + 1
}

#[test]
fn go_goroutine_and_heap_leaks_are_named_and_fail_the_check() {
    let bin = go_binary("inventory");
    let addr = format!("127.0.0.1:{}", free_port());
    let spawn = format!("{} -addr {addr}", bin.display());
    let url = format!("http://{addr}");
    let health = format!("{url}/items/1");
    let loads = [
        format!("{url}/reserve?sku=blue-mug=6"),
        format!("{url}/items?name=spec=12"),
        format!("{url}/items/{{n}}=6"),
    ];
    let mut args = vec![
        "--spawn",
        &spawn,
        "--health",
        &health,
        "--pprof-url",
        &url,
        "--rate",
        "60",
        "--warmup",
        "6s",
        "--duration",
        "20s",
        "--cooldown",
        "8s",
        "--json",
    ];
    for l in &loads {
        args.extend(["--load", l.as_str()]);
    }
    let r = check(&args, &[]);
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, Some(1), "{}", r.output());
    let json = r.json.as_ref().expect("JSON");
    assert_eq!(json["flavor"], "go", "{}", r.output());

    let g = r.kind("goroutines");
    assert_eq!(g["leaked"], true, "{g:#}");
    let f = &g["finding"];
    assert_eq!(f["site"]["function"], "main.awaitRestock", "{g:#}");
    let wait_line = line_of("restock.go", "qty := <-restocked");
    assert_eq!(f["site"]["line"], wait_line, "{g:#}");
    assert!(
        f["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("created by main.(*shop).reserve"),
        "{g:#}"
    );

    let h = r.kind("heap");
    assert_eq!(h["leaked"], true, "{h:#}");
    let f = &h["finding"];
    assert_eq!(f["site"]["function"], "main.recordItem", "{h:#}");
    assert!(
        f["site"]["file"]
            .as_str()
            .is_some_and(|p| p.ends_with("tests/data/inventory/catalog.go")),
        "{h:#}"
    );
    let make_line = line_of("catalog.go", "make([]byte, specSheetBytes)");
    assert_eq!(f["site"]["line"], make_line, "{h:#}");

    // The terminal names both, at their file:line; the cache nowhere.
    for (kind, needle) in [
        (
            "goroutines",
            format!("main.awaitRestock (tests/data/inventory/restock.go:{wait_line})"),
        ),
        (
            "heap",
            format!("main.recordItem (tests/data/inventory/catalog.go:{make_line})"),
        ),
    ] {
        let row = r
            .stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{kind} ")))
            .unwrap_or_else(|| panic!("no {kind} row:\n{}", r.stderr));
        assert!(row.contains("LEAK") && row.contains(&needle), "{row}");
    }
    assert!(
        !r.stdout.contains("renderPage") && !r.stderr.contains("renderPage"),
        "the cache named:\n{}",
        r.output()
    );
    eprintln!("the Go check took {:.0} s", r.secs);
}

#[test]
fn an_external_load_tool_drives_the_check() {
    let bin = go_binary("inventory");
    let addr = format!("127.0.0.1:{}", free_port());
    let spawn = format!("{} -addr {addr}", bin.display());
    let url = format!("http://{addr}");
    let health = format!("{url}/items/1");
    // ab sends as fast as it can: 100 reservations, a pause, again, until
    // the check stops it at the end of the load phase.
    let load =
        format!("while true; do ab -q -n 100 -c 2 '{url}/reserve?sku=ab' || exit 1; sleep 1; done");
    let r = check(
        &[
            "--spawn",
            &spawn,
            "--health",
            &health,
            "--pprof-url",
            &url,
            "--load-cmd",
            &load,
            "--warmup",
            "3s",
            "--duration",
            "10s",
            "--cooldown",
            "5s",
            "--json",
        ],
        &[],
    );
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, Some(1), "{}", r.output());
    let json = r.json.as_ref().expect("JSON");
    assert_eq!(json["load"]["source"], load);
    // ab's own report is the output kept (its last line names the
    // longest request).
    let tail = json["load"]["output_tail"].to_string();
    assert!(tail.contains("longest request"), "{}", r.output());
    let g = r.kind("goroutines");
    assert_eq!(g["leaked"], true, "{g:#}");
    assert_eq!(
        g["finding"]["site"]["function"], "main.awaitRestock",
        "{g:#}"
    );
    assert!(g["after"].as_f64() > Some(500.0), "{g:#}");
}
