//! The tasks profile with spawn sites recorded: a runtime built with
//! `leakscope_agent::tasks::install_hooks`, 50 tasks spawned from one
//! function that wait on channels nobody completes, and short tasks that
//! finish. Needs `--cfg tokio_unstable` (tokio's task hooks); run with
//!
//! ```text
//! RUSTFLAGS="-C force-frame-pointers=yes --cfg tokio_unstable" \
//!     cargo test -p leakscope-agent --target-dir target/unstable --test tasks_hooks
//! ```
//!
//! and again with `--features taskdump` for task dumps (current-thread
//! runtimes only). A separate target dir keeps the main one from being
//! rebuilt with other flags. The tests share the process-wide registry, so
//! they run one at a time.

#![cfg(tokio_unstable)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use leakscope_agent::client::{Connection, Response};
use leakscope_agent::profile::Profile;
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(60);
const PARKED: usize = 50;

/// Held by each test: the registry of spawn sites is process-wide.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for a value that never comes while the sender lives.
async fn wait_forever(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Spawns the leak: `n` tasks parked in `wait_forever`.
#[inline(never)]
fn spawn_parked_waiters(n: usize) -> Vec<oneshot::Sender<()>> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(wait_forever(rx));
        senders.push(tx);
    }
    senders
}

/// Tasks that end: their site must not stay in the profile.
#[inline(never)]
async fn run_short_tasks(n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i * 2 })).collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.expect("short task");
    }
    sum
}

/// `file:line:` of the first line of this file containing `needle`, with
/// the column where it starts, as tokio reports a spawn there.
fn site_of(needle: &str) -> (String, String) {
    let src = include_str!("tasks_hooks.rs");
    let (i, line) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle) && !l.contains("site_of("))
        .unwrap_or_else(|| panic!("{needle} in this file"));
    let column = line.find(needle).expect("column") + 1;
    let at = format!("{}:{}", file!(), i + 1);
    (at.clone(), format!("{at}:{column}"))
}

fn runtime() -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    leakscope_agent::tasks::install_hooks(&mut builder);
    builder.build().expect("runtime")
}

async fn get(conn: &mut Connection, path: &str) -> Response {
    let r = conn
        .get(path, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

fn label(p: &Profile, s: usize, key: &str) -> Option<String> {
    p.sample[s]
        .label
        .iter()
        .find(|l| p.string(l.key) == key)
        .map(|l| p.string(l.str).to_owned())
}

/// Function names of sample `s`, leaf first.
fn names(p: &Profile, s: usize) -> Vec<String> {
    p.sample[s]
        .location_id
        .iter()
        .flat_map(|id| {
            let loc = p.location.iter().find(|l| l.id == *id).expect("location");
            loc.line.iter().map(|ln| {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == ln.function_id)
                    .expect("function");
                p.string(f.name).to_owned()
            })
        })
        .collect()
}

/// Samples (indexes) whose `spawned_at` label is `site`.
fn at_site(p: &Profile, site: &str) -> Vec<usize> {
    (0..p.sample.len())
        .filter(|i| label(p, *i, "spawned_at").as_deref() == Some(site))
        .collect()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tasks-hooks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `go tool pprof ARGS`, stdout; fails the test with stderr.
fn pprof(args: &[&str]) -> String {
    let home = scratch("pprof-home");
    let out = Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .env("GOCACHE", home.join("gocache"))
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go tool pprof` (install golang-go): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_profile_names_the_function_and_line_that_spawned_the_parked_tasks() {
    let _one = one_at_a_time();
    let rt = runtime();
    assert!(leakscope_agent::tasks::hooks_installed());
    let (spawn_line, spawn_site) = site_of("tokio::spawn(wait_forever(rx))");
    let (_, short_site) = site_of("tokio::spawn(async move { i * 2 })");
    rt.block_on(async {
        let agent = leakscope_agent::AgentBuilder::new()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .without_watch()
            .spawn()
            .await
            .expect("agent");
        let mut conn = Connection::connect(agent.local_addr(), TIMEOUT)
            .await
            .expect("connect");
        assert_eq!(run_short_tasks(20).await, 380);
        let before = get(&mut conn, "/debug/pprof/tasks").await.body;
        let senders = spawn_parked_waiters(PARKED);
        let after = get(&mut conn, "/debug/pprof/tasks").await.body;

        let p = Profile::decode_bytes(&after, "tasks").expect("valid profile");
        assert_eq!(p.sample_type_names(), vec![("tasks", "count")]);
        let here = at_site(&p, &spawn_site);
        assert!(!here.is_empty(), "no sample spawned at {spawn_site}: {p:?}");
        let total: i64 = here.iter().map(|i| p.sample[*i].value[0]).sum();
        assert_eq!(total, PARKED as i64);
        for &i in &here {
            let n = names(&p, i);
            // Leaf first: the parked-at frame (with dumps), then the site,
            // then the function that spawned and its callers.
            let at = n
                .iter()
                .position(|f| f == &format!("tokio::spawn at {spawn_site}"))
                .unwrap_or_else(|| panic!("{n:?}"));
            assert!(
                n[at + 1].ends_with("spawn_parked_waiters"),
                "the spawning function right after the site: {n:?}"
            );
            assert!(
                n.iter()
                    .any(|f| f.contains("the_profile_names_the_function")),
                "and its callers: {n:?}"
            );
            assert_eq!(at, 0, "the site is the leaf: {n:?}");
        }
        if cfg!(feature = "taskdump") {
            let comments: Vec<&str> = p.comment.iter().map(|c| p.string(*c)).collect();
            assert!(
                comments
                    .iter()
                    .any(|c| c.contains("no tokio task dump") && c.contains("current-thread")),
                "a multi-thread runtime is not dumped, and the profile says why: {comments:?}"
            );
        }
        assert!(
            at_site(&p, &short_site).is_empty(),
            "the short tasks ended, their site has no live task"
        );
        // The agent's own listener task is recognisable.
        assert!(
            (0..p.sample.len()).any(|i| label(&p, i, "owner").as_deref() == Some("leakscope")),
            "the agent's listener task: {p:?}"
        );

        // The same under Go's name, and Go's text forms.
        let g = get(&mut conn, "/debug/pprof/goroutine").await.body;
        let g = Profile::decode_bytes(&g, "goroutine").expect("valid profile");
        assert_eq!(g.sample_type_names(), vec![("goroutine", "count")]);
        let text = get(&mut conn, "/debug/pprof/goroutine?debug=1")
            .await
            .text();
        assert!(text.starts_with("goroutine profile: total "), "{text}");
        assert!(
            text.contains(&format!("\"spawned_at\":\"{spawn_site}\"}}\n")),
            "{text}"
        );
        let blocks = get(&mut conn, "/debug/pprof/tasks?debug=2").await.text();
        assert!(
            blocks.contains(&format!(
                "{PARKED} tasks [spawned at {spawn_site}, {PARKED} spawned there in all]:\n\
                 tokio::spawn at {spawn_site}\n"
            )),
            "{blocks}"
        );

        // go tool pprof ranks the leak first between before and after.
        let dir = scratch("profiles");
        let (b, a) = (dir.join("before.pb.gz"), dir.join("after.pb.gz"));
        std::fs::write(&b, &before).expect("save");
        std::fs::write(&a, &after).expect("save");
        let top = tokio::task::spawn_blocking(move || {
            let (b, a) = (b.to_string_lossy(), a.to_string_lossy());
            let top = pprof(&["-top", "-diff_base", &b, &a]);
            let traces = pprof(&["-traces", &a]);
            (top, traces)
        })
        .await
        .expect("pprof thread");
        let (top, traces) = top;
        eprintln!("TOP\n{top}\nBLOCKS\n{blocks}\nTEXT\n{text}");
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_else(|| panic!("no rows: {top}"));
        assert!(
            first.trim_start().starts_with(&format!("{PARKED} ")),
            "{top}"
        );
        let leaf = format!("tokio::spawn at {spawn_line}:");
        assert!(first.contains(&leaf), "{leaf} first: {top}");
        assert!(traces.contains("spawn_parked_waiters"), "{traces}");

        // Completing the channels ends the tasks: the site goes away.
        drop(senders);
        let mut gone = false;
        for _ in 0..200 {
            let body = get(&mut conn, "/debug/pprof/tasks").await.body;
            let p = Profile::decode_bytes(&body, "tasks").expect("valid profile");
            if at_site(&p, &spawn_site).is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the parked tasks ended but their site stayed");
        drop(conn);
        agent.shutdown().await;
    });
}

/// Spawns `n` tasks parked in `wait_forever`, from a site of its own.
#[cfg(feature = "taskdump")]
#[inline(never)]
fn spawn_waiters_on_current_thread(n: usize) -> Vec<oneshot::Sender<()>> {
    (0..n)
        .map(|_| {
            let (tx, rx) = oneshot::channel();
            tokio::task::spawn(wait_forever(rx));
            tx
        })
        .collect()
}

/// With the `taskdump` feature, a current-thread runtime is dumped: each
/// site's tasks are split by where they are parked, and `debug=2` lists
/// every task with its trace.
#[cfg(feature = "taskdump")]
#[test]
fn a_current_thread_dump_says_where_the_tasks_are_parked() {
    const WAITERS: usize = 20;
    let _one = one_at_a_time();
    let (_, site) = site_of("tokio::task::spawn(wait_forever(rx))");
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    leakscope_agent::tasks::install_hooks(&mut builder);
    let rt = builder.build().expect("runtime");
    rt.block_on(async {
        let agent = leakscope_agent::AgentBuilder::new()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .without_watch()
            .spawn()
            .await
            .expect("agent");
        let mut conn = Connection::connect(agent.local_addr(), TIMEOUT)
            .await
            .expect("connect");
        let senders = spawn_waiters_on_current_thread(WAITERS);
        let body = get(&mut conn, "/debug/pprof/tasks").await.body;
        let p = Profile::decode_bytes(&body, "tasks").expect("valid profile");
        let here = at_site(&p, &site);
        let total: i64 = here.iter().map(|i| p.sample[*i].value[0]).sum();
        assert_eq!(total, WAITERS as i64, "{p:?}");
        for &i in &here {
            let n = names(&p, i);
            let parked = label(&p, i, "parked_at").unwrap_or_default();
            assert!(
                parked.contains("wait_forever"),
                "parked at {parked:?}: {n:?}"
            );
            assert!(
                n[0].contains("wait_forever"),
                "the parked-at frame is the leaf: {n:?}"
            );
            assert_eq!(n[1], format!("tokio::spawn at {site}"), "{n:?}");
            assert!(n[2].contains("spawn_waiters_on_current_thread"), "{n:?}");
        }
        let comments: Vec<&str> = p.comment.iter().map(|c| p.string(*c)).collect();
        assert!(
            comments.iter().any(|c| c.contains("task dump of")),
            "{comments:?}"
        );

        let blocks = get(&mut conn, "/debug/pprof/tasks?debug=2").await.text();
        let per_task = blocks.matches(&format!("[spawned at {site}]:\n")).count();
        assert_eq!(per_task, WAITERS, "{blocks}");
        assert!(blocks.contains("wait_forever"), "{blocks}");
        drop(senders);
        drop(conn);
        agent.shutdown().await;
    });
}
