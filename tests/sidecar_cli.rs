//! `leakscope watch` as a user meets it: its help, its refusals (each a
//! clear message and exit code 1, before anything starts), the bearer
//! token, and a process it may not read shown as "no access".

mod support;

use std::process::Command;
use std::time::Duration;

use leakscope::client;
use support::scratch;
use support::sidecar::{start_sidecar, wait_until};

fn watch(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .arg("watch")
        .args(args)
        .output()
        .expect("run leakscope watch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_targets_and_schedules() {
    let (code, out, _) = watch(&["--help"]);
    assert_eq!(code, Some(0));
    for want in [
        "--pid",
        "--name",
        "--pprof-url",
        "--config",
        "--data-dir",
        "--heap-every",
        "--token",
        "Examples:",
        "docs/sidecar.md",
    ] {
        assert!(out.contains(want), "{want} in:\n{out}");
    }
    let (_, top, _) = {
        let o = Command::new(env!("CARGO_BIN_EXE_leakscope"))
            .arg("--help")
            .output()
            .expect("run");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            (),
        )
    };
    assert!(top.contains("watch"), "{top}");
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let dir = scratch("sidecar-refusals");
    let bad_config = dir.join("bad.toml");
    std::fs::write(&bad_config, "[[target]]\nname = \"api\"\n").expect("write");
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "nothing to watch"),
        (
            vec!["--pprof-url".into(), "http://127.0.0.1:1".into()],
            "--pprof-url needs a process",
        ),
        (
            vec![
                "--pid".into(),
                "1".into(),
                "--pprof-url".into(),
                "ftp://x".into(),
            ],
            "expected an http:// or https:// URL",
        ),
        (
            vec!["--name".into(), "(".into()],
            "not a valid regular expression",
        ),
        (
            vec![
                "--pid".into(),
                "1".into(),
                "--listen".into(),
                "0.0.0.0:0".into(),
            ],
            "set a bearer token",
        ),
        (
            vec!["--config".into(), bad_config.display().to_string()],
            "bad.toml: target `api`: give exactly one of `pid` or `match`",
        ),
        (
            vec![
                "--config".into(),
                dir.join("missing.toml").display().to_string(),
            ],
            "missing.toml",
        ),
    ];
    for (args, want) in cases {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--data-dir", data]);
        if !args.iter().any(|a| a == "--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        let (code, _, err) = watch(&all);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err:?}");
        assert!(err.starts_with("leakscope: "), "{args:?}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_the_api() {
    let dir = scratch("sidecar-token");
    let data = dir.join("data");
    let me = std::process::id().to_string();
    let (_sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--token",
        "s3cret",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    let t = Duration::from_secs(10);
    let r = client::get(addr, "/api/targets", t).await.expect("get");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.text().contains("bearer token"), "{}", r.text());
    let r = client::get(addr, "/healthz", t).await.expect("get");
    assert_eq!(r.status, 200);
    let wrong = [("Authorization", "Bearer nope")];
    let r = client::post_with_headers(addr, "/api/targets/x/snapshot", b"", &wrong, t)
        .await
        .expect("post");
    assert_eq!(r.status, 401);
    // The GET helper has no headers; a POST with the token reaches the
    // route (which answers 404 for an unknown target).
    let right = [("Authorization", "Bearer s3cret")];
    let r = client::post_with_headers(addr, "/api/targets/x/snapshot", b"", &right, t)
        .await
        .expect("post");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("no target called \\\"x\\\""),
        "{}",
        r.text()
    );
}

/// As root, the sidecar drops to `nobody` to watch pid 1; as anyone else it
/// may not read pid 1's fds anyway. The counts need no such access (the fd
/// count is the size of /proc/1/fd), the fd/socket/thread breakdown does:
/// one clear message, the target shown as limited to counts, no flapping
/// between states, and the sidecar keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_it_may_not_inspect_is_watched_by_counts_only() {
    let dir = scratch("sidecar-access");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if root {
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir, &data] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
    }
    let (sidecar, addr) = support::sidecar::start_sidecar_as(
        &[
            "--pid",
            "1",
            "--target-name",
            "init",
            "--interval",
            "50ms",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        root.then_some(65534),
    );
    let v = wait_until(
        addr,
        "/api/targets/init",
        "the limit to be seen",
        Duration::from_secs(20),
        |v| v["limited"].is_string() && v["last"].is_object(),
    )
    .await;
    let why = v["limited"].as_str().unwrap_or_default();
    assert!(
        why.contains("permission denied reading /proc/1/fd"),
        "{v:#}"
    );
    assert!(why.contains("CAP_SYS_PTRACE"), "says what to do: {v:#}");
    assert_eq!(v["status"], "running", "{v:#}");
    assert!(v["last"]["open_fds"].as_u64() > Some(0), "{v:#}");
    assert!(v["last"]["fds_by_kind"].is_null(), "{v:#}");
    // Many samples later (breakdown every 10th): said once, no flapping.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = sidecar.output();
    let said = out.lines().filter(|l| l.contains("counts only")).count();
    assert_eq!(said, 1, "{out}");
    assert!(!out.contains("init: no access"), "{out}");
}
