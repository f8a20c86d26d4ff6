//! The fd listing's parsers and grouping on /proc files captured from one
//! process (tests/data/resource/fds_*.txt): a TCP listener on 127.0.0.1 and
//! a dual-stack one on `[::]`, connections to each from this process (over
//! IPv4, IPv4 through the dual-stack socket, `::1` and `fd00::2`), one left
//! in CLOSE_WAIT, UDP sockets (bound, connected, IPv6), unix sockets (a
//! listener, both ends of a connection to it, an abstract datagram socket,
//! a socketpair) and a pipe. The two log paths of fds 1 and 2 replace the
//! capturing shell's own files; the rest is as captured.
//!
//! The tables hold addresses in host byte order; they were captured on
//! x86_64, so these tests run on little-endian machines only.
#![cfg(target_endian = "little")]

use std::collections::HashMap;
use std::net::SocketAddr;

use leakscope_agent::resource::procfs::*;
use leakscope_agent::resource::{FdKind, FdObject, OpenFd, TcpState, describe_fd, group_fds};

const TCP: &str = include_str!("data/resource/fds_net_tcp.txt");
const TCP6: &str = include_str!("data/resource/fds_net_tcp6.txt");
const UDP: &str = include_str!("data/resource/fds_net_udp.txt");
const UDP6: &str = include_str!("data/resource/fds_net_udp6.txt");
const UNIX: &str = include_str!("data/resource/fds_net_unix.txt");
const LINKS: &str = include_str!("data/resource/fds_links.txt");

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (local, peer, state, inode) of each row.
fn rows(proto: InetProto, text: &str) -> Vec<(SocketAddr, SocketAddr, u8, u64)> {
    parse_inet_table(proto, text)
        .unwrap()
        .iter()
        .map(|s| (s.local, s.peer, s.state_code, s.inode))
        .collect()
}

#[test]
fn ipv4_addresses() {
    assert_eq!(
        rows(InetProto::Tcp, TCP),
        vec![
            (addr("127.0.0.1:35883"), addr("0.0.0.0:0"), 0x0A, 28699),
            (
                addr("127.0.0.1:40434"),
                addr("127.0.0.1:43629"),
                0x01,
                28703
            ),
            (
                addr("127.0.0.1:43498"),
                addr("127.0.0.1:35883"),
                0x01,
                28700
            ),
            (
                addr("127.0.0.1:35883"),
                addr("127.0.0.1:43498"),
                0x01,
                28701
            ),
        ]
    );
    assert_eq!(
        rows(InetProto::Udp, UDP),
        vec![
            (addr("127.0.0.1:40496"), addr("0.0.0.0:0"), 0x07, 28711),
            (addr("127.0.0.1:57411"), addr("127.0.0.1:53"), 0x01, 28712),
        ]
    );
}

#[test]
fn ipv6_addresses_with_mapped_ipv4_shown_as_ipv4() {
    assert_eq!(
        rows(InetProto::Tcp6, TCP6),
        vec![
            (addr("[::]:43629"), addr("[::]:0"), 0x0A, 28702),
            (
                addr("127.0.0.1:43629"),
                addr("127.0.0.1:40434"),
                0x01,
                28704
            ),
            (addr("[::1]:43629"), addr("[::1]:60160"), 0x01, 28706),
            (addr("[::1]:60160"), addr("[::1]:43629"), 0x01, 28705),
            (addr("[::1]:43629"), addr("[::1]:60164"), 0x08, 28710),
            (
                addr("[fd00::2]:56280"),
                addr("[fd00::2]:43629"),
                0x01,
                28707
            ),
            (
                addr("[fd00::2]:43629"),
                addr("[fd00::2]:56280"),
                0x01,
                28708
            ),
        ]
    );
    assert_eq!(
        rows(InetProto::Udp6, UDP6),
        vec![(addr("[::1]:38509"), addr("[::]:0"), 0x07, 28713)]
    );
    let s = parse_inet_table(InetProto::Tcp6, TCP6).unwrap();
    assert_eq!(s[1].local.to_string(), "127.0.0.1:43629");
    assert_eq!(s[5].local.to_string(), "[fd00::2]:56280");
    assert!(!s[0].is_connected());
    assert!(s[1].is_connected());
}

#[test]
fn address_errors() {
    let bad = |addr: &str| parse_inet_table(InetProto::Tcp, TCP.replace("0100007F:8C2B", addr));
    assert!(bad("0100007F:8C2B").is_ok(), "the row as captured");
    assert!(bad("0100007F").is_err(), "no port");
    assert!(bad("0100007:8C2B").is_err(), "7 digits");
    assert!(bad("0100007G:8C2B").is_err(), "not hex");
    assert!(bad("0100007F:8C2B00").is_err(), "port too big");
    assert!(bad("zz:8C2B").is_err());
}

#[test]
fn unix_paths_types_and_states() {
    let got: Vec<(u64, Option<String>, UnixType, UnixState)> = parse_unix_table(UNIX)
        .unwrap()
        .into_iter()
        .map(|u| (u.inode, u.path, u.socket_type, u.state))
        .collect();
    let path = Some("/tmp/leakscope-cap.sock".to_owned());
    use UnixState::*;
    use UnixType::*;
    assert_eq!(
        got,
        vec![
            (28714, path.clone(), Stream, Listen),
            (28718, None, Stream, Connected),
            (28716, path, Stream, Connected),
            (28719, None, Stream, Connected),
            (28715, None, Stream, Connected),
            (
                28717,
                Some("@leakscope-abstract".into()),
                Dgram,
                Unconnected
            ),
        ]
    );
    // A path with spaces is the rest of the line.
    let spaced = "Num RefCount Protocol Flags Type St Inode Path\n\
                  0000000000000000: 00000002 00000000 00010000 0001 01 5 /run/my app.sock\n";
    let u = &parse_unix_table(spaced).unwrap()[0];
    assert_eq!(u.path.as_deref(), Some("/run/my app.sock"));
    assert!(parse_unix_table("header\n0000: 2 0 0 1 01 notanumber\n").is_err());
    assert!(parse_unix_table("header\n0000: 2 0\n").is_err());
}

/// The captured process's fds, described against its captured tables.
fn captured_fds() -> Vec<OpenFd> {
    let mut sockets = HashMap::new();
    for (proto, text) in [
        (InetProto::Tcp, TCP),
        (InetProto::Tcp6, TCP6),
        (InetProto::Udp, UDP),
        (InetProto::Udp6, UDP6),
    ] {
        for s in parse_inet_table(proto, text).unwrap() {
            sockets.insert(s.inode, SocketEntry::Inet(proto, s));
        }
    }
    for u in parse_unix_table(UNIX).unwrap() {
        sockets.insert(u.inode, SocketEntry::Unix(u));
    }
    LINKS
        .lines()
        .map(|l| {
            let (fd, link) = l.split_once(' ').unwrap();
            describe_fd(fd.parse().unwrap(), link.as_bytes(), &sockets)
        })
        .collect()
}

#[test]
fn every_captured_fd_described() {
    let fds = captured_fds();
    let line = |fd: u32| {
        let f = fds.iter().find(|f| f.fd == fd).unwrap();
        format!("fd {fd}: {}", f.object)
    };
    assert_eq!(line(2), "fd 2: file /var/log/app.log.1 (deleted)");
    assert_eq!(line(3), "fd 3: tcp LISTEN 127.0.0.1:35883 (inode 28699)");
    assert_eq!(
        line(4),
        "fd 4: tcp ESTABLISHED 127.0.0.1:43498 -> 127.0.0.1:35883 (inode 28700)"
    );
    assert_eq!(
        line(8),
        "fd 8: tcp6 ESTABLISHED 127.0.0.1:43629 -> 127.0.0.1:40434 (inode 28704)"
    );
    assert_eq!(
        line(15),
        "fd 15: tcp6 CLOSE_WAIT [::1]:43629 -> [::1]:60164 (inode 28710)"
    );
    assert_eq!(line(14), "fd 14: udp 127.0.0.1:40496 (inode 28711)");
    assert_eq!(
        line(16),
        "fd 16: udp 127.0.0.1:57411 -> 127.0.0.1:53 (inode 28712)"
    );
    assert_eq!(line(17), "fd 17: udp6 [::1]:38509 (inode 28713)");
    assert_eq!(
        line(18),
        "fd 18: unix /tmp/leakscope-cap.sock LISTEN (inode 28714)"
    );
    assert_eq!(
        line(21),
        "fd 21: unix dgram @leakscope-abstract UNCONNECTED (inode 28717)"
    );
    assert_eq!(line(251), "fd 251: pipe (inode 27661)");
    assert!(
        fds.iter().all(|f| !matches!(f.object, FdObject::Socket(_))),
        "every socket is in a table: {fds:?}"
    );
    let f8 = fds.iter().find(|f| f.fd == 8).unwrap();
    assert_eq!(f8.kind(), FdKind::Tcp6);
    if let FdObject::Inet(_, s) = &f8.object {
        assert_eq!(s.tcp_state(), Some(TcpState::Established));
    }
}

#[test]
fn captured_fds_grouped() {
    let groups = group_fds(&captured_fds());
    let got: Vec<(String, u64)> = groups.iter().map(|g| (g.text.clone(), g.count())).collect();
    let want: Vec<(&str, u64)> = vec![
        ("unix unnamed CONNECTED", 3),
        ("file /dev/null", 2),
        ("file /var/log/app.log", 1),
        ("file /var/log/app.log.1 (deleted)", 1),
        ("pipe", 1),
        ("tcp ESTABLISHED from 127.0.0.1 to 127.0.0.1:35883", 1),
        ("tcp ESTABLISHED to 127.0.0.1:35883", 1),
        ("tcp ESTABLISHED to 127.0.0.1:43629", 1),
        ("tcp LISTEN 127.0.0.1:35883", 1),
        ("tcp6 CLOSE_WAIT from ::1 to :43629", 1),
        ("tcp6 ESTABLISHED from 127.0.0.1 to :43629", 1),
        ("tcp6 ESTABLISHED from ::1 to :43629", 1),
        ("tcp6 ESTABLISHED from fd00::2 to :43629", 1),
        ("tcp6 ESTABLISHED to [::1]:43629", 1),
        ("tcp6 ESTABLISHED to [fd00::2]:43629", 1),
        ("tcp6 LISTEN [::]:43629", 1),
        ("udp 127.0.0.1:40496", 1),
        ("udp to 127.0.0.1:53", 1),
        ("udp6 [::1]:38509", 1),
        ("unix /tmp/leakscope-cap.sock CONNECTED", 1),
        ("unix /tmp/leakscope-cap.sock LISTEN", 1),
        ("unix dgram @leakscope-abstract UNCONNECTED", 1),
    ];
    let want: Vec<(String, u64)> = want.into_iter().map(|(t, n)| (t.to_owned(), n)).collect();
    assert_eq!(got, want);
    let total: u64 = groups.iter().map(|g| g.count()).sum();
    assert_eq!(total, LINKS.lines().count() as u64);
}
