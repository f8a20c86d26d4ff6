//! Golden-file tests of rendered output: a flamegraph, both sides of a
//! differential flamegraph and the terminal table, from hand-built input,
//! compared line by line with `tests/data/render/*`. After a deliberate
//! change, rewrite them with `LEAKSCOPE_BLESS=1 cargo test -p leakscope-viewer`
//! and look at the new files before committing.

use std::path::PathBuf;

use leakscope_viewer::analysis::Growth;
use leakscope_viewer::diff::{DiffStacksOptions, diff};
use leakscope_viewer::fold::{Folded, Frame};
use leakscope_viewer::render::table::growth_table;
use leakscope_viewer::render::{FlameOptions, Side, diff_flamegraph, flamegraph};

fn frame(function: &str, line: i64) -> Frame {
    Frame {
        function: function.into(),
        file: "src/app.rs".into(),
        line,
    }
}

fn folded(stacks: &[(&[&str], i64)]) -> Folded {
    Folded {
        sample_type: "inuse_space".into(),
        unit: "bytes".into(),
        sample_types: vec![("inuse_space".into(), "bytes".into())],
        stacks: stacks
            .iter()
            .map(|(names, v)| {
                (
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| frame(n, i as i64 + 1))
                        .collect(),
                    *v,
                )
            })
            .collect(),
    }
}

fn base() -> Folded {
    folded(&[
        (&["main", "serve", "handle", "parse"], 4096),
        (&["main", "serve", "handle", "cache_insert"], 2048),
        (&["main", "serve", "old_path"], 1024),
        (&["main", "init"], 512),
    ])
}

fn new() -> Folded {
    folded(&[
        (&["main", "serve", "handle", "parse"], 4096),
        (&["main", "serve", "handle", "cache_insert"], 1024),
        (&["main", "serve", "handle", "leak_buffer"], 65536),
        (&["main", "init"], 512),
    ])
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/render")
        .join(name);
    if std::env::var_os("LEAKSCOPE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with LEAKSCOPE_BLESS=1 to create it)",
            path.display()
        )
    });
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "{name}: line {} differs", i + 1);
    }
    assert_eq!(
        actual.lines().count(),
        expected.lines().count(),
        "{name}: line count differs"
    );
}

#[test]
fn flamegraph_svg() {
    let svg =
        flamegraph(&new(), &FlameOptions::new("heap (inuse_space)").width(800)).expect("render");
    assert!(svg.contains("leak_buffer"));
    check("flame.svg", &svg);
}

#[test]
fn differential_flamegraph_svgs() {
    let d = diff(&base(), &new(), DiffStacksOptions::default()).expect("diff");
    let new_side = diff_flamegraph(
        &d,
        &FlameOptions::new("diff, sized by new").width(800),
        Side::New,
    )
    .expect("render");
    let base_side = diff_flamegraph(
        &d,
        &FlameOptions::new("diff, sized by base").width(800),
        Side::Base,
    )
    .expect("render");
    // The vanished stack is drawn only on the base side.
    assert!(!new_side.contains("old_path"));
    assert!(base_side.contains("old_path"));
    check("diff-new.svg", &new_side);
    check("diff-base.svg", &base_side);
}

#[test]
fn growth_table_text() {
    let rows = vec![
        Growth {
            function: "app::handle::leak_buffer".into(),
            file: "src/app.rs".into(),
            line: 4,
            base: 0,
            new: 65536,
        },
        Growth {
            function: "app::handle::cache_insert".into(),
            file: "src/app.rs".into(),
            line: 4,
            base: 2048,
            new: 1024,
        },
        Growth {
            function: "app::serve::old_path".into(),
            file: "src/app.rs".into(),
            line: 3,
            base: 1024,
            new: 0,
        },
    ];
    check("table-80.txt", &growth_table(&rows, "bytes", 80, 10));
}
