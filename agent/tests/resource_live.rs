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

/// The sampler reads CPU time from the process CPU clock and the rest from the
/// leader's own `stat`; both must agree with the whole-process
/// `/proc/PID/stat` of a child that burns CPU on several threads.
#[test]
fn fast_path_agrees_with_whole_process_stat() {
    let script = "import threading,time\n\
        def burn():\n    t=time.thread_time()\n    while time.thread_time()-t<0.2: pass\n\
        ts=[threading.Thread(target=burn) for _ in range(3)]\n\
        [t.start() for t in ts]\n[t.join() for t in ts]\n\
        ev=[threading.Thread(target=time.sleep,args=(30,),daemon=True) for _ in range(5)]\n\
        [t.start() for t in ev]\nprint('ready',flush=True)\ntime.sleep(30)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = child.id();
    let s = sample(Target::Pid(pid), &SampleOptions::default()).unwrap();
    let whole = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = whole
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields after the comm start at field 3 (state): utime is 14, stime 15,
    // num_threads 20, vsize 23.
    let ticks = 100.0; // USER_HZ is 100 on Linux for every architecture we build.
    let stat_cpu =
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks;
    let stat_threads: u64 = fields[17].parse().unwrap();
    let vsize: u64 = fields[20].parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    println!("clock {:.3} s, stat {stat_cpu:.3} s", s.cpu_seconds);
    // Three burners of 0.2 s of their own CPU time each (CPU time, not wall
    // time, so a busy machine does not shorten them).
    assert!(
        s.cpu_seconds > 0.55,
        "3 x 0.2 s of burning, got {}",
        s.cpu_seconds
    );
    assert!(
        (s.cpu_seconds - stat_cpu).abs() < 0.1,
        "clock {} vs stat {stat_cpu}",
        s.cpu_seconds
    );
    assert_eq!(s.threads, stat_threads);
    assert_eq!(s.threads, 6, "main + 5 sleepers");
    assert_eq!(s.virtual_bytes, vsize);
}

/// A sample survives a JSON round trip (snapshot metadata stores it), with
/// the time in Unix seconds and TCP states by name.
#[test]
fn sample_round_trips_through_json() {
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = SampleOptions {
        fd_breakdown: true,
        thread_names: true,
        tcp_states: true,
    };
    let s = sample(Target::SelfProcess, &opts).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["time"].as_f64().unwrap() > 1.7e9, "{json}");
    assert!(json.to_string().contains("\"LISTEN\""), "{json}");
    let back: leakscope_agent::resource::ResourceSample = serde_json::from_value(json).unwrap();
    assert_eq!(back.threads, s.threads);
    assert_eq!(back.tcp_by_state, s.tcp_by_state);
    let drift = back
        .time
        .duration_since(s.time)
        .unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_micros(2), "{drift:?}");
}
