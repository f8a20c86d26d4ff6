//! The fd listing and its groups on real fds of this process and of a
//! child: a TCP listener, connections to it and their accepted ends, a
//! pipe, a file, a UDP socket, a unix socket pair. Each test makes its own
//! listener, so groups keyed by its port are the test's own even while
//! other tests open fds in parallel.

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use leakscope_agent::collect::fds::{build, fds_text, groups_text};
use leakscope_agent::resource::{
    FdGroup, FdKind, FdObject, ListOptions, Target, compare_listings, list_fds,
};

fn find<'a>(groups: &'a [FdGroup], text: &str) -> Option<&'a FdGroup> {
    groups.iter().find(|g| g.text == text)
}

fn scratch_file(name: &str) -> (std::path::PathBuf, File) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let mut f = File::create(&path).expect("create scratch file");
    writeln!(f, "leakscope").expect("write");
    (path, f)
}

#[test]
fn outbound_inbound_listen_pipe_and_file() {
    const N: usize = 7;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..N {
        clients.push(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        accepted.push(listener.accept().expect("accept").0);
    }
    let (reader, writer) = std::io::pipe().expect("pipe");
    let (path, file) = scratch_file("fds-live");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let (ua, ub) = UnixStream::pair().expect("socketpair");

    let listing = list_fds(Target::SelfProcess, &ListOptions::default()).expect("list");
    let groups = listing.groups();
    let shown = groups_text(&listing);

    let outbound = find(&groups, &format!("tcp ESTABLISHED to 127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("outbound group in\n{shown}"));
    let mut want: Vec<u32> = clients.iter().map(|c| c.as_raw_fd() as u32).collect();
    want.sort_unstable();
    assert_eq!(outbound.fds, want);
    assert_eq!(outbound.kind, FdKind::Tcp);

    let inbound = find(
        &groups,
        &format!("tcp ESTABLISHED from 127.0.0.1 to 127.0.0.1:{port}"),
    )
    .unwrap_or_else(|| panic!("inbound group in\n{shown}"));
    let mut want: Vec<u32> = accepted.iter().map(|c| c.as_raw_fd() as u32).collect();
    want.sort_unstable();
    assert_eq!(inbound.fds, want);
    assert!(
        inbound
            .labels
            .contains(&("direction", "inbound".to_owned()))
    );

    let listen = find(&groups, &format!("tcp LISTEN 127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("listener group in\n{shown}"));
    assert_eq!(listen.fds, vec![listener.as_raw_fd() as u32]);

    let file_group = find(&groups, &format!("file {}", path.display()))
        .unwrap_or_else(|| panic!("file group in\n{shown}"));
    assert_eq!(file_group.fds, vec![file.as_raw_fd() as u32]);

    let pipes = find(&groups, "pipe").unwrap_or_else(|| panic!("pipe group in\n{shown}"));
    for fd in [reader.as_raw_fd() as u32, writer.as_raw_fd() as u32] {
        assert!(pipes.fds.contains(&fd), "pipe fd {fd} in {pipes:?}");
    }
    let udp_text = format!("udp {}", udp.local_addr().unwrap());
    let udp_group = find(&groups, &udp_text).unwrap_or_else(|| panic!("{udp_text} in\n{shown}"));
    assert_eq!(udp_group.fds, vec![udp.as_raw_fd() as u32]);
    let unix =
        find(&groups, "unix unnamed CONNECTED").unwrap_or_else(|| panic!("socketpair in\n{shown}"));
    for fd in [ua.as_raw_fd() as u32, ub.as_raw_fd() as u32] {
        assert!(unix.fds.contains(&fd), "unix fd {fd} in {unix:?}");
    }

    // The summary and the count lines.
    let first = shown.lines().next().unwrap();
    assert!(first.starts_with("fds profile: total "), "{first}");
    assert!(shown.contains(&format!("\n{N} tcp ESTABLISHED to 127.0.0.1:{port}\n")));

    // debug=2 names each fd with both addresses and the inode.
    let every = fds_text(&listing);
    let c = &clients[0];
    let prefix = format!(
        "fd {}: tcp ESTABLISHED {} -> 127.0.0.1:{port} (inode ",
        c.as_raw_fd(),
        c.local_addr().unwrap()
    );
    assert!(
        every.lines().any(|l| l.starts_with(&prefix)),
        "{prefix} in\n{every}"
    );

    // The profile has one sample per group, the count as value.
    let profile = build(&listing, None);
    profile.validate().expect("valid profile");
    assert_eq!(profile.sample.len(), groups.len());
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, listing.fds.len() as i64);

    drop((clients, accepted, reader, writer, file, udp, ua, ub));
    let _ = std::fs::remove_file(path);
}

#[test]
fn growth_of_one_upstream_is_the_top_change() {
    // An upstream that never accepts: the kernel completes the handshakes
    // into its backlog, so only the connecting ends are fds of ours.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = upstream.local_addr().unwrap().port();
    let opts = ListOptions::default();
    let before = list_fds(Target::SelfProcess, &opts).expect("list");
    let conns: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let after = list_fds(Target::Pid(std::process::id()), &opts).expect("list");
    let changes = compare_listings(&before, &after);
    // Other tests of this binary open and close fds meanwhile; ours is the
    // group of this upstream, and the changes come largest growth first.
    let want = format!("tcp ESTABLISHED to 127.0.0.1:{port}");
    let ours = changes
        .iter()
        .find(|c| c.text == want)
        .unwrap_or_else(|| panic!("no change for {want}: {changes:?}"));
    let deltas: Vec<i64> = changes.iter().map(|c| c.delta()).collect();
    assert!(deltas.windows(2).all(|w| w[0] >= w[1]), "{changes:?}");
    assert_eq!((ours.before, ours.after), (0, 12));
    assert_eq!(
        ours.to_string(),
        format!("+12 tcp ESTABLISHED to 127.0.0.1:{port}")
    );
    drop(conns);
}

#[test]
fn another_process_is_listed_by_pid() {
    let (path, _file) = scratch_file("fds-child");
    let stdin = File::open(&path).expect("open");
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let listing = list_fds(Target::Pid(child.id()), &ListOptions::default());
    let _ = child.kill();
    let _ = child.wait();
    let listing = listing.expect("list the child");
    assert_eq!(listing.pid, child.id());
    let fd0 = listing.fds.iter().find(|f| f.fd == 0).expect("fd 0");
    assert_eq!(fd0.object, FdObject::File(path.display().to_string()));
    assert!(listing.fds.iter().any(|f| f.fd == 1));
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_gone_process_is_an_error() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    let err = list_fds(Target::Pid(pid), &ListOptions::default()).expect_err("gone");
    assert!(
        matches!(err, leakscope_agent::Error::ProcessGone { pid: p } if p == pid),
        "{err}"
    );
}
