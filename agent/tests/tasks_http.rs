//! `/debug/pprof/tasks` and `/debug/pprof/goroutine` over real HTTP on
//! loopback, from a runtime whose spawn sites are not recorded (no
//! `install_hooks`: the state of every build without `--cfg
//! tokio_unstable`): the honest fallback counts exactly the runtime's alive
//! tasks, Go's parameter handling and text forms, and the real
//! `go tool pprof` reads both profiles.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use leakscope_agent::client::{Connection, Response};
use leakscope_agent::profile::Profile;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Spawns `n` tasks that wait on channels nobody completes while the
/// returned senders live.
fn park(n: usize) -> Vec<tokio::sync::oneshot::Sender<()>> {
    (0..n)
        .map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = rx.await;
            });
            tx
        })
        .collect()
}

async fn get(conn: &mut Connection, path: &str) -> Response {
    conn.get(path, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The single sample's value and leaf frame name.
fn only_sample(p: &Profile) -> (i64, String) {
    assert_eq!(p.sample.len(), 1, "{p:?}");
    let s = &p.sample[0];
    let loc = p
        .location
        .iter()
        .find(|l| l.id == s.location_id[0])
        .expect("location");
    let f = p
        .function
        .iter()
        .find(|f| f.id == loc.line[0].function_id)
        .expect("function");
    (s.value[0], p.string(f.name).to_owned())
}

/// A fresh directory `name` under the target dir.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tasks-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `go tool pprof ARGS`, stdout; fails the test with stderr.
fn pprof(args: &[String]) -> String {
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

async fn pprof_top(addr: SocketAddr, name: &str) -> String {
    let url = format!("http://{addr}/debug/pprof/{name}");
    tokio::task::spawn_blocking(move || pprof(&["-top".into(), url]))
        .await
        .expect("pprof thread")
}

#[test]
fn tasks_and_goroutine_fall_back_to_the_runtimes_alive_count() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let agent = leakscope_agent::AgentBuilder::new()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .without_watch()
            .spawn()
            .await
            .expect("agent");
        let addr = agent.local_addr();
        // One kept-alive connection: its server task lives through every
        // request, so the runtime's task count only moves with `park`.
        let mut conn = Connection::connect(addr, TIMEOUT).await.expect("connect");
        let metrics = tokio::runtime::Handle::current().metrics();
        let _first = park(12);

        let r = get(&mut conn, "/debug/pprof/tasks").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"tasks\"")
        );
        let alive = metrics.num_alive_tasks() as i64;
        let p = Profile::decode_bytes(&r.body, "tasks").expect("valid profile");
        assert_eq!(p.sample_type_names(), vec![("tasks", "count")]);
        let (n, frame) = only_sample(&p);
        assert_eq!(n, alive, "the runtime's alive tasks");
        assert!(
            n >= 12 + 2,
            "12 parked, the listener and this connection: {n}"
        );
        assert!(
            frame.starts_with("<tokio tasks: spawn sites unknown"),
            "{frame}"
        );
        let comments: Vec<&str> = p.comment.iter().map(|c| p.string(*c)).collect();
        // What to set: the cfg (unless this build has it) and the hooks.
        assert!(
            comments.iter().any(|c| c.contains("install_hooks")
                && (cfg!(tokio_unstable)
                    || c.contains("--cfg tokio_unstable") && c.contains(".cargo/config.toml"))),
            "{comments:?}"
        );

        let _more = park(30);
        let r = get(&mut conn, "/debug/pprof/goroutine").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"goroutine\"")
        );
        let p = Profile::decode_bytes(&r.body, "goroutine").expect("valid profile");
        assert_eq!(p.sample_type_names(), vec![("goroutine", "count")]);
        let period = p.period_type.as_ref().expect("period type");
        assert_eq!(
            (p.string(period.r#type), p.string(period.unit), p.period),
            ("goroutine", "count", 1)
        );
        let (m, _) = only_sample(&p);
        assert_eq!(m, n + 30, "30 more parked tasks");
        assert_eq!(m, metrics.num_alive_tasks() as i64);

        // Go's text forms.
        let r = get(&mut conn, "/debug/pprof/goroutine?debug=1").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let text = r.text();
        assert!(
            text.starts_with(&format!("goroutine profile: total {m}\n{m} @ 0x1\n")),
            "{text}"
        );
        let r = get(&mut conn, "/debug/pprof/tasks?debug=1").await;
        assert!(r.text().starts_with(&format!("tasks profile: total {m}\n")));
        let r = get(&mut conn, "/debug/pprof/tasks?debug=2").await;
        let text = r.text();
        assert!(
            text.starts_with(&format!("{m} tasks:\n<tokio tasks: spawn sites unknown")),
            "{text}"
        );
        assert!(text.contains("# leakscope: spawn sites of tokio tasks are not recorded"));

        // `seconds`: Go's positive-integer check first, then the refusal.
        let r = get(&mut conn, "/debug/pprof/goroutine?seconds=5").await;
        assert_eq!(r.status, 400);
        assert_eq!(r.header("x-go-pprof"), Some("1"));
        assert_eq!(
            r.text(),
            "\"seconds\" parameter is not supported for this profile type\n"
        );
        let r = get(&mut conn, "/debug/pprof/tasks?seconds=x").await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.text(),
            "invalid value for \"seconds\" - must be a positive integer\n"
        );

        // The index lists both, with the count.
        let r = get(&mut conn, "/debug/pprof/").await;
        let index = r.text();
        for name in ["tasks", "goroutine"] {
            let row = format!("<td><a href=\"{name}?debug=1\">{name}</a></td>");
            let at = index
                .find(&row)
                .unwrap_or_else(|| panic!("{name} row: {index}"));
            let before = &index[..at];
            let count = before
                .rsplit("<tr><td>")
                .next()
                .and_then(|c| c.strip_suffix("</td>"))
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{name} count: {index}"));
            assert_eq!(count, m, "{name}");
        }

        // The reference client reads both: saved files (exact counts) ...
        let dir = scratch("profiles");
        for name in ["tasks", "goroutine"] {
            let r = get(&mut conn, &format!("/debug/pprof/{name}")).await;
            let path = dir.join(format!("{name}.pb.gz"));
            std::fs::write(&path, &r.body).expect("save profile");
            let top = tokio::task::spawn_blocking(move || {
                pprof(&["-top".into(), path.to_string_lossy().into_owned()])
            })
            .await
            .expect("pprof thread");
            assert!(top.contains(&format!("Type: {name}")), "{top}");
            assert!(top.contains(&format!("of {m} total")), "{top}");
            assert!(top.contains("<tokio tasks: spawn sites unknown ("), "{top}");
        }
        // ... the legacy text form (pprof's own parser) ...
        let text = get(&mut conn, "/debug/pprof/goroutine?debug=1").await.body;
        let path = dir.join("goroutine.txt");
        std::fs::write(&path, &text).expect("save text");
        let top = tokio::task::spawn_blocking(move || {
            pprof(&["-top".into(), path.to_string_lossy().into_owned()])
        })
        .await
        .expect("pprof thread");
        assert!(top.contains("Type: goroutine"), "{top}");
        assert!(top.contains(&format!("of {m} total")), "{top}");
        // ... and the live URL (its own connection is one more task).
        let top = pprof_top(addr, "goroutine").await;
        assert!(top.contains("Type: goroutine"), "{top}");
        assert!(top.contains("<tokio tasks: spawn sites unknown ("), "{top}");
        drop(conn);
        agent.shutdown().await;
    });
}
