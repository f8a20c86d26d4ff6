//! Live sampling of this process and of a vanished pid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leakscope_agent::Error;
use leakscope_agent::resource::{SampleOptions, Target, sample};

#[test]
fn self_count_only() {
    let s = sample(Target::SelfProcess, &SampleOptions::default()).unwrap();
    println!("{s:#?}");
    assert_eq!(s.pid, std::process::id());
    assert!(s.threads >= 1);
    assert!(s.open_fds > 0);
    assert!(s.rss_bytes > 0);
    assert!(s.virtual_bytes >= s.rss_bytes);
    assert!(s.cpu_seconds >= 0.0);
    assert!(s.fd_limit.is_none_or(|l| l > 0));
    assert!(s.threads_by_name.is_none() && s.fds_by_kind.is_none() && s.tcp_by_state.is_none());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        s.start_time_seconds <= now + 1.0,
        "{} > {now}",
        s.start_time_seconds
    );
    assert!(s.start_time_seconds > now - 3600.0, "started > 1h ago?");
}

#[test]
fn pid_of_self_equals_self() {
    let a = sample(Target::Pid(std::process::id()), &SampleOptions::default()).unwrap();
    assert_eq!(a.pid, std::process::id());
    assert!(a.open_fds > 0);
}

#[test]
fn vanished_process_is_gone() {
    let mut child = std::process::Command::new("sleep")
        .arg("0.01")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let opts = SampleOptions {
        fd_breakdown: true,
        thread_names: true,
        tcp_states: true,
    };
    match sample(Target::Pid(pid), &opts) {
        Err(e @ Error::ProcessGone { pid: p }) => {
            assert_eq!(p, pid);
            assert_eq!(e.to_string(), format!("process {pid} has exited"));
        }
        other => panic!("expected Gone, got {other:?}"),
    }
}

#[test]
fn no_access_message() {
    // pid 1 is usually another user's; only check the message when denied.
    let opts = SampleOptions {
        fd_breakdown: true,
        ..Default::default()
    };
    match sample(Target::Pid(1), &opts) {
        Err(e @ Error::ProcessNoAccess { .. }) => {
            println!("{e}");
            assert!(e.to_string().contains("CAP_SYS_PTRACE"));
        }
        other => println!("pid 1 accessible here: {:?}", other.map(|s| s.open_fds)),
    }
    let _ = Duration::ZERO;
}
