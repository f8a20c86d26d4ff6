//! Creation sites of fds in a real service binary: builds the package
//! under `tests/fd_sites/` (the agent with `fd-sites`, linked with the
//! `--wrap` line README gives) into `target/fd-sites`, runs it, and checks
//! its fds profiles and `debug=2` text: the 20 connections and 3 files name
//! the function and line that opened them, an inherited fd and fds whose
//! numbers were reused by raw syscalls have no site, `go tool pprof
//! -diff_base` ranks the 20 newer connections first and `-traces` shows the
//! function that opened them. Also builds the two binaries that must fail
//! to link: the feature without the link argument, and the argument
//! without the wrappers.
//!
//! The first run compiles the agent (without the server) once into its own
//! target directory, about a minute on two cores; later runs only link.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const SERVICE_SOURCE: &str = include_str!("fd_sites/src/main.rs");

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fd_sites")
}

fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("fd-sites")
}

/// Runs `cargo build` on the service package with `args`.
fn cargo_build(args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(package_dir())
        .args(["build", "--locked", "--target-dir"])
        .arg(target_dir())
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo")
}

/// The service binary, built once for all tests of this file.
fn service() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = cargo_build(&["--bin", "fd_sites_service"]);
        assert!(
            out.status.success(),
            "building tests/fd_sites failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir().join("debug/fd_sites_service")
    })
}

/// The line of `// site:NAME` in the service's source.
fn site_line(name: &str) -> usize {
    let marker = format!("// site:{name}");
    SERVICE_SOURCE
        .lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{marker} in the service source"))
}

/// What one run of the service left behind.
struct Run {
    dir: PathBuf,
    /// Its `key value...` lines.
    said: HashMap<String, Vec<String>>,
    stdin_path: PathBuf,
}

impl Run {
    fn fds(&self, key: &str) -> Vec<u32> {
        self.said[key]
            .iter()
            .map(|v| v.parse().expect("fd number"))
            .collect()
    }

    fn one(&self, key: &str) -> &str {
        &self.said[key][0]
    }
}

fn run_service(name: &str) -> Run {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // Opened here, inherited as the service's fd 0: before any recording.
    let stdin_path = dir.join("inherited-stdin");
    std::fs::write(&stdin_path, b"").expect("write");
    let stdin = std::fs::File::open(&stdin_path).expect("open");
    let out = Command::new(service())
        .arg(&dir)
        .stdin(stdin)
        .output()
        .expect("run the service");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "done"),
        "service failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut said: HashMap<String, Vec<String>> = HashMap::new();
    for line in stdout.lines() {
        let mut words = line.splitn(2, ' ');
        let key = words.next().unwrap_or_default().to_owned();
        let rest = words.next().unwrap_or_default();
        let values = if key == "comment" {
            vec![rest.to_owned()]
        } else {
            rest.split_whitespace().map(str::to_owned).collect()
        };
        said.entry(key).or_default().extend(values);
    }
    Run {
        dir,
        said,
        stdin_path,
    }
}

/// The `debug=2` line of fd `fd`.
fn fd_line(text: &str, fd: u32) -> &str {
    let prefix = format!("fd {fd}: ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("fd {fd} in\n{text}"))
}

#[test]
fn sites_name_the_opening_function_and_line() {
    let run = run_service("fd-sites-text");
    let text = std::fs::read_to_string(run.dir.join("fds.txt")).expect("fds.txt");
    let source = "agent/tests/fd_sites/src/main.rs";
    let port = run.one("port");

    let conns = run.fds("connections");
    assert_eq!(conns.len(), 20);
    let want = format!(
        ", opened in fd_sites_service::open_connections ({}:{})",
        package_dir().join("src/main.rs").display(),
        site_line("connections")
    );
    for fd in &conns {
        let line = fd_line(&text, *fd);
        assert!(
            line.contains(&format!("-> 127.0.0.1:{port} ")) && line.ends_with(&want),
            "{line}\nwanted it to end with {want}"
        );
    }
    let files = run.fds("files");
    assert_eq!(files.len(), 3);
    for fd in &files {
        let line = fd_line(&text, *fd);
        assert!(
            line.contains(", opened in fd_sites_service::open_files")
                && line.ends_with(&format!("{source}:{})", site_line("files"))),
            "{line}"
        );
    }

    // No site: inherited, and two numbers reused by an unwrapped openat
    // (after an unwrapped close: stale inode; after a wrapped close: no
    // record at all).
    let inherited = fd_line(&text, 0);
    assert_eq!(
        inherited,
        format!("fd 0: file {}", run.stdin_path.display()),
        "{text}"
    );
    let stale: u32 = run.one("stale").parse().unwrap();
    assert!(
        fd_line(&text, stale).ends_with("/reopened-by-syscall"),
        "{text}"
    );
    let forgotten: u32 = run.one("forgotten").parse().unwrap();
    assert!(
        fd_line(&text, forgotten).ends_with("/reopened-after-close"),
        "{text}"
    );

    // The tally, in the text and in the profile's comment.
    let tally = text
        .lines()
        .find(|l| l.starts_with("# creation sites: "))
        .unwrap_or_else(|| panic!("a tally line in\n{text}"));
    let comment = run.said["comment"]
        .iter()
        .find(|c| c.starts_with("creation sites: "))
        .expect("a tally comment");
    assert_eq!(&tally[2..], comment);
    let with_site = text.lines().filter(|l| l.contains(", opened ")).count();
    assert!(
        comment.starts_with(&format!("creation sites: {with_site} of ")),
        "{comment}\n{text}"
    );
    assert!(with_site >= 24, "{text}");
    assert!(
        comment.contains("1 stale: number reused by code not wrapped"),
        "{comment}"
    );
    assert!(comment.contains(" not recorded: "), "{comment}");
}

/// Runs `go tool pprof ARGS` in `dir`; `None` when go is missing outside CI.
fn pprof(dir: &Path, args: &[&str]) -> Option<String> {
    if Command::new("go").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`go` is not on PATH: CI needs it for go tool pprof"
        );
        eprintln!("skipping: `go` is not on PATH");
        return None;
    }
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .current_dir(dir)
        .env("PPROF_TMPDIR", dir)
        .env("PPROF_NO_BROWSER", "1")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

#[test]
fn go_tool_pprof_diff_ranks_the_new_connections_with_their_opener() {
    let run = run_service("fd-sites-pprof");
    let group = format!("tcp ESTABLISHED to 127.0.0.1:{}", run.one("port"));
    let Some(top) = pprof(
        &run.dir,
        &["-top", "-diff_base", "before.pb.gz", "after.pb.gz"],
    ) else {
        return;
    };
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("a first row in\n{top}"));
    assert!(
        first.trim_end().ends_with(&group),
        "{group} first in\n{top}"
    );
    assert_eq!(first.split_whitespace().next(), Some("20"), "{top}");

    let traces = pprof(
        &run.dir,
        &["-traces", "-diff_base", "before.pb.gz", "after.pb.gz"],
    )
    .expect("go is there");
    let blocks: Vec<&str> = traces.split("-----------+").collect();
    let grown = blocks
        .iter()
        .find(|b| {
            !b.contains("pprof::base")
                && b.contains(&format!("20   {group}\n"))
                && b.contains("fd_sites_service::open_more_connections")
        })
        .unwrap_or_else(|| panic!("+20 {group} opened in open_more_connections in\n{traces}"));
    // Leaf first: the group, its kind, then the code that called socket
    // (the standard library's), never the wrapper itself.
    let frames: Vec<&str> = grown
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.ends_with(&group))
        .skip(1)
        .collect();
    assert_eq!(frames.first(), Some(&"tcp"), "{grown}");
    assert!(frames[1].contains("std::"), "{grown}");
    assert!(
        !traces.contains("__wrap_") && !traces.contains("leakscope_agent::fdsites"),
        "no wrapper frames:\n{traces}"
    );
    // The files' groups name their opener too.
    let after = pprof(&run.dir, &["-traces", "after.pb.gz"]).expect("go is there");
    for i in 0..3 {
        let file = format!("file {}", run.dir.join(format!("file-{i}")).display());
        let block = after
            .split("-----------+")
            .find(|b| b.contains(&file))
            .unwrap_or_else(|| panic!("{file} in\n{after}"));
        assert!(block.contains("fd_sites_service::open_files"), "{block}");
    }
}

#[test]
fn the_feature_without_the_link_argument_fails_to_link() {
    service();
    let out = cargo_build(&["--features", "link-errors", "--bin", "without_link_arg"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "linked without --wrap:\n{stderr}");
    // rust-lld: "undefined symbol: __real_socket"; GNU ld: "undefined
    // reference to `__real_socket'".
    assert!(
        stderr.contains("undefined") && stderr.contains("__real_socket"),
        "{stderr}"
    );
}

#[test]
fn the_link_argument_without_the_wrappers_fails_to_link() {
    service();
    let out = cargo_build(&["--features", "link-errors", "--bin", "without_wrappers"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "linked without __wrap_*:\n{stderr}");
    assert!(
        stderr.contains("undefined") && stderr.contains("__wrap_open64"),
        "{stderr}"
    );
}

/// The service's build.rs gives the linker exactly `fdsites::LINK_ARG`.
#[test]
fn the_service_uses_the_agents_link_argument() {
    // Rust string continuations (`\` at a line's end) joined.
    let build_rs = include_str!("fd_sites/build.rs").replace("\\\n", "");
    let arg = leakscope_agent::fdsites::LINK_ARG;
    assert!(build_rs.contains(&format!("\"{arg}\"")), "{build_rs}");
}
