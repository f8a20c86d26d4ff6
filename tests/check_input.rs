//! `leakscope check` refuses what it cannot run, with exit code 2 and a
//! message naming the problem: a spawned service that exits at once, a
//! health URL that never answers, a bad budget, a load command that fails
//! (its output kept), a process that is not there.

mod support;

use support::check::{check, free_port};

fn assert_refused(r: &support::check::Run, needles: &[&str]) {
    assert_eq!(r.code, Some(2), "{}", r.output());
    for n in needles {
        assert!(
            r.stdout.contains(n) || r.stderr.contains(n),
            "{n:?} not said:\n{}",
            r.output()
        );
    }
}

#[test]
fn a_service_that_exits_at_once() {
    let health = format!("http://127.0.0.1:{}/", free_port());
    let r = check(
        &[
            "--spawn",
            "echo 'no config file' >&2; exit 3",
            "--health",
            &health,
            "--load-cmd",
            "true",
        ],
        &[],
    );
    assert_refused(
        &r,
        &[
            "exited (exit status 3) before its health URL answered",
            "no config file",
        ],
    );
}

#[test]
fn a_health_url_that_never_answers() {
    let health = format!("http://127.0.0.1:{}/healthz", free_port());
    let r = check(
        &[
            "--spawn",
            "exec sleep 60",
            "--health",
            &health,
            "--health-timeout",
            "2s",
            "--load-cmd",
            "true",
        ],
        &[],
    );
    assert_refused(
        &r,
        &[&format!(
            "the health URL {health} did not answer 2xx within 2 s"
        )],
    );
}

#[test]
fn bad_budgets_and_missing_parts() {
    let me = std::process::id().to_string();
    for (args, said) in [
        (
            vec!["--pid", &me, "--load-cmd", "true", "--allow", "sockets=3"],
            "unknown kind \"sockets\"",
        ),
        (
            vec!["--pid", &me, "--load-cmd", "true", "--allow", "heap=lots"],
            "--allow heap=lots",
        ),
        (vec!["--pid", &me], "no load"),
        (
            vec!["--load-cmd", "true"],
            "give --spawn CMD, --pid PID or --name",
        ),
        (
            vec!["--pid", &me, "--load", "http://h:1/=0"],
            "weight \"0\"",
        ),
    ] {
        let r = check(&args, &[]);
        assert_refused(&r, &[said]);
        assert!(r.stderr.starts_with("leakscope check: "), "{}", r.output());
    }
}

#[test]
fn a_failing_load_command_is_reported() {
    // This test process is the target; the load fails in the warm-up.
    let me = std::process::id().to_string();
    let r = check(
        &[
            "--pid",
            &me,
            "--load-cmd",
            "echo 'cannot reach the service'; exit 4",
            "--warmup",
            "5s",
            "--json",
        ],
        &[],
    );
    assert_refused(
        &r,
        &[
            "the load command failed (exit status 4)",
            "cannot reach the service",
        ],
    );
    let json = r.json.as_ref().expect("a JSON report, even of an error");
    assert_eq!(json["outcome"], "error");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exit status 4")
    );
}

#[test]
fn a_process_that_is_not_there() {
    let r = check(
        &[
            "--name",
            "^no-such-process-leakscope$",
            "--load-cmd",
            "true",
        ],
        &[],
    );
    assert_refused(&r, &["no running process matches"]);
}
