//! Pure parser tests against captured /proc text in tests/data/resource/.

use leakscope_agent::resource::TcpState;
use leakscope_agent::resource::procfs::*;

const STAT: &str = include_str!("data/resource/stat.txt");
const LIMITS: &str = include_str!("data/resource/limits.txt");
const LIMITS_UNLIMITED: &str = include_str!("data/resource/limits_unlimited.txt");
const NET_TCP: &str = include_str!("data/resource/net_tcp.txt");
const NET_TCP6: &str = include_str!("data/resource/net_tcp6.txt");
const NET_UNIX: &str = include_str!("data/resource/net_unix.txt");
const FD_TARGETS: &str = include_str!("data/resource/fd_targets.txt");

#[test]
fn stat_with_parens_and_spaces_in_comm() {
    let s = parse_stat(STAT).unwrap();
    assert_eq!(
        s,
        ProcStat {
            pid: 4242,
            comm: "my (weird) proc".into(),
            state: 'S',
            ppid: 1,
            utime_ticks: 250,
            stime_ticks: 75,
            num_threads: 7,
            start_time_ticks: 123456,
            vsize_bytes: 987654144,
            rss_pages: 2048,
        }
    );
}

#[test]
fn stat_comm_that_looks_like_fields() {
    let text = STAT.replace("(my (weird) proc)", "(a) S 9 9 9 (b)");
    let s = parse_stat(&text).unwrap();
    assert_eq!(s.comm, "a) S 9 9 9 (b");
    assert_eq!(s.num_threads, 7);
    assert_eq!(s.ppid, 1);
}

#[test]
fn stat_errors() {
    assert!(parse_stat("").is_err());
    assert!(
        parse_stat("12 (x) S 1 2 3")
            .unwrap_err()
            .contains("missing field")
    );
    assert!(parse_stat(&STAT.replace(" 7 0 123456", " x 0 123456")).is_err());
}

#[test]
fn limits_max_open_files() {
    assert_eq!(parse_max_open_files(LIMITS), Ok(Some(1024)));
    assert_eq!(parse_max_open_files(LIMITS_UNLIMITED), Ok(None));
    assert!(parse_max_open_files("Limit Soft Hard Units\n").is_err());
}

#[test]
fn tcp_tables() {
    let v4 = parse_inet_table(InetProto::Tcp, NET_TCP).unwrap();
    let got: Vec<(u64, Option<TcpState>)> = v4.iter().map(|s| (s.inode, s.tcp_state())).collect();
    assert_eq!(
        got,
        vec![
            (51001, Some(TcpState::Listen)),
            (51002, Some(TcpState::Established)),
            (51003, Some(TcpState::Established)),
            (51004, Some(TcpState::CloseWait)),
            (0, Some(TcpState::TimeWait)),
            (51005, Some(TcpState::SynSent)),
        ]
    );
    let v6 = parse_inet_table(InetProto::Tcp6, NET_TCP6).unwrap();
    let got: Vec<(u64, Option<TcpState>)> = v6.iter().map(|s| (s.inode, s.tcp_state())).collect();
    assert_eq!(
        got,
        vec![
            (62001, Some(TcpState::Listen)),
            (62002, Some(TcpState::Established)),
            (62003, Some(TcpState::LastAck)),
            (62004, Some(TcpState::Closing)),
        ]
    );
    assert!(parse_inet_table(InetProto::Tcp, "header\n 0: a b 0A\n").is_err());
    assert_eq!(
        parse_inet_table(InetProto::Tcp, "header only\n"),
        Ok(vec![])
    );
}

#[test]
fn tcp_state_codes_and_names() {
    assert_eq!(TcpState::from_code(0), None);
    assert_eq!(TcpState::from_code(0x0C), None);
    for (i, st) in TcpState::ALL.iter().enumerate() {
        assert_eq!(st.code() as usize, i + 1);
        assert_eq!(TcpState::from_code(st.code()), Some(*st));
    }
    assert_eq!(TcpState::Established.as_str(), "ESTABLISHED");
    assert_eq!(TcpState::CloseWait.as_str(), "CLOSE_WAIT");
    assert_eq!(TcpState::FinWait2.to_string(), "FIN_WAIT2");
    assert_eq!(TcpState::from_code(0x0A).unwrap().as_str(), "LISTEN");
}

#[test]
fn unix_table() {
    let rows = parse_unix_table(NET_UNIX).unwrap();
    let inodes: Vec<u64> = rows.iter().map(|u| u.inode).collect();
    assert_eq!(inodes, vec![23456, 23460, 23470]);
    assert_eq!(rows[0].path.as_deref(), Some("/run/systemd/notify"));
    assert_eq!(rows[1].path, None);
    assert_eq!(rows[2].path.as_deref(), Some("@/tmp/.X11-unix/X0"));
}

#[test]
fn fd_targets() {
    let got: Vec<FdTarget> = FD_TARGETS
        .lines()
        .map(|l| classify_fd_target(l.as_bytes()))
        .collect();
    use FdTarget::*;
    assert_eq!(
        got,
        vec![
            File,
            File,
            File,
            Socket(51001),
            Socket(23456),
            Socket(999999),
            Pipe,
            Pipe,
            EventFd,
            Epoll,
            TimerFd,
            Other,
            Other,
            Other,
            File,
            Other,
        ]
    );
    // Non-UTF-8 paths are still files.
    assert_eq!(classify_fd_target(b"/tmp/\xff\xfe"), File);
}

#[test]
fn thread_name_grouping() {
    let names = [
        "tokio-rt", "main", "leaky", "tokio-rt", "leaky", "tokio-rt", "a",
    ];
    let got = group_counts(names.iter().map(|s| s.to_string()));
    let want: Vec<(String, u64)> = vec![
        ("tokio-rt".into(), 3),
        ("leaky".into(), 2),
        ("a".into(), 1),
        ("main".into(), 1),
    ];
    assert_eq!(got, want);
}
