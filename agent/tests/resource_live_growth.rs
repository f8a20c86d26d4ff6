//! Live test of fd / socket / thread growth. Single test in its own binary so
//! no other test opens fds concurrently.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use leakscope_agent::resource::{SampleOptions, Target, TcpState, sample};

fn state_count(v: &[(TcpState, u64)], st: TcpState) -> u64 {
    v.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n)
}

#[test]
fn growth_is_visible() {
    let full = SampleOptions {
        fd_breakdown: true,
        thread_names: true,
        tcp_states: true,
    };
    let before = sample(Target::SelfProcess, &full).unwrap();
    let kinds0 = before.fds_by_kind.unwrap();
    println!("before: fds={} kinds={kinds0:?}", before.open_fds);
    assert_eq!(
        kinds0.total(),
        before.open_fds,
        "breakdown must match count"
    );

    let files: Vec<File> = (0..50).map(|_| File::open("/dev/null").unwrap()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(6));
    let workers: Vec<_> = (0..5)
        .map(|_| {
            let (stop, barrier) = (stop.clone(), barrier.clone());
            thread::Builder::new()
                .name("leaky-worker".into())
                .spawn(move || {
                    barrier.wait();
                    while !stop.load(Ordering::Acquire) {
                        thread::park();
                    }
                })
                .unwrap()
        })
        .collect();
    barrier.wait();

    let after = sample(Target::SelfProcess, &full).unwrap();
    let kinds = after.fds_by_kind.unwrap();
    let tcp = after.tcp_by_state.clone().unwrap();
    let names = after.threads_by_name.clone().unwrap();
    println!("after: fds={} kinds={kinds:?}", after.open_fds);
    println!("tcp: {tcp:?}");
    println!("threads {}: {names:?}", after.threads);
    assert!(after.open_fds >= before.open_fds + 53);
    assert!(kinds.file >= 50);
    assert!(kinds.tcp >= 3);
    assert_eq!(kinds.total(), after.open_fds);
    assert!(state_count(&tcp, TcpState::Listen) >= 1);
    assert!(state_count(&tcp, TcpState::Established) >= 2);
    assert!(names.contains(&("leaky-worker".to_string(), 5)));
    assert!(after.threads >= before.threads + 5);

    // Close the client side: the accepted socket goes to CLOSE_WAIT.
    drop(client);
    let mut buf = [0u8; 1];
    assert_eq!(server.read(&mut buf).unwrap(), 0, "EOF from peer");
    let tcp_only = SampleOptions {
        tcp_states: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let states = loop {
        let s = sample(Target::SelfProcess, &tcp_only).unwrap();
        let st = s.tcp_by_state.unwrap();
        if state_count(&st, TcpState::CloseWait) >= 1 || Instant::now() > deadline {
            break st;
        }
        thread::sleep(Duration::from_millis(10));
    };
    println!("after client close: {states:?}");
    assert!(state_count(&states, TcpState::CloseWait) >= 1);

    stop.store(true, Ordering::Release);
    for w in workers {
        w.thread().unpark();
        w.join().unwrap();
    }
    drop((files, listener, server));
}
