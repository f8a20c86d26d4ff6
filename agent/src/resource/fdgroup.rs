//! Open fds grouped by what they are, with keys that stay the same from one
//! listing to the next so two listings line up (pure code, no I/O).
//!
//! | fd | grouped by | text |
//! |----|------------|------|
//! | file | path | `file /var/log/app.log` |
//! | TCP LISTEN | local address | `tcp LISTEN 127.0.0.1:8080` |
//! | TCP, local port one this process listens on (*inbound*) | state, the listener's address, peer IP (not its ephemeral port) | `tcp ESTABLISHED from 10.0.0.7 to :8080` |
//! | other TCP (*outbound*) | state, peer address and port | `tcp ESTABLISHED to 127.0.0.1:9000` |
//! | TCP with no peer | state, local address | `tcp CLOSE 0.0.0.0:0` |
//! | UDP, connected | peer address | `udp to 10.0.0.2:53` |
//! | UDP, not connected | local address | `udp 0.0.0.0:5353` |
//! | unix | type (when not stream), path or `unnamed`, state | `unix /run/app.sock LISTEN`, `unix unnamed CONNECTED` |
//! | socket in no table, pipe, eventfd, epoll, timerfd, signalfd, inotify | kind | `pipe` |
//! | other anonymous inode | its name | `anon_inode [pidfd]` |
//! | anything else | the link without its `[inode]` | `other net` |
//!
//! A listener's address reads `:PORT` when it is bound to every address
//! (`0.0.0.0`, `::`). `tcp6` is a socket of the IPv6 table; on a dual-stack
//! socket an IPv4 peer reads as IPv4. Connected UDP sockets are grouped by
//! peer only, so a client leaking sockets to one server is one group even
//! though each socket has its own local port.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use super::TcpState;
use super::fdlist::{FdKind, FdListing, FdObject, OpenFd, TcpStateName};
use super::procfs::{InetSocket, UnixType};

/// Fds that are the same kind of thing: one line of `?debug=1`, one sample
/// of the fds profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FdGroup {
    /// What they are, e.g. `tcp ESTABLISHED to 127.0.0.1:9000`; the key.
    pub text: String,
    /// Their kind.
    pub kind: FdKind,
    /// `kind`, `state`, `direction` (`listen`, `inbound`, `outbound`),
    /// `peer`, `local`, `path`: those that apply, each a part of the key.
    pub labels: Vec<(&'static str, String)>,
    /// The fd numbers, ascending.
    pub fds: Vec<u32>,
}

impl FdGroup {
    /// Number of fds in the group.
    pub fn count(&self) -> u64 {
        self.fds.len() as u64
    }
}

impl FdListing {
    /// The listing's fds grouped, see [`group_fds`].
    pub fn groups(&self) -> Vec<FdGroup> {
        group_fds(&self.fds)
    }
}

/// Groups `fds` (see the module docs for the keys), largest group first,
/// then by text.
pub fn group_fds(fds: &[OpenFd]) -> Vec<FdGroup> {
    let listeners = Listeners::of(fds);
    let mut groups: HashMap<String, FdGroup> = HashMap::new();
    for f in fds {
        let text = group_text(&f.object, &listeners);
        match groups.get_mut(&text) {
            Some(g) => g.fds.push(f.fd),
            None => {
                let group = FdGroup {
                    labels: group_labels(&f.object, &listeners),
                    kind: f.kind(),
                    fds: vec![f.fd],
                    text: text.clone(),
                };
                groups.insert(text, group);
            }
        }
    }
    let mut out: Vec<FdGroup> = groups.into_values().collect();
    for g in &mut out {
        g.fds.sort_unstable();
    }
    out.sort_by(|a, b| b.count().cmp(&a.count()).then_with(|| a.text.cmp(&b.text)));
    out
}

/// The addresses this process listens on (TCP), by port.
struct Listeners(HashMap<u16, Vec<SocketAddr>>);

impl Listeners {
    fn of(fds: &[OpenFd]) -> Listeners {
        let mut by_port: HashMap<u16, Vec<SocketAddr>> = HashMap::new();
        for f in fds {
            if let FdObject::Inet(proto, s) = &f.object
                && proto.is_tcp()
                && s.tcp_state() == Some(TcpState::Listen)
            {
                by_port.entry(s.local.port()).or_default().push(s.local);
            }
        }
        Listeners(by_port)
    }

    /// The listener that accepted a connection with local address `local`:
    /// same port, and the same IP or a wildcard one (an exact IP first).
    fn accepting(&self, local: SocketAddr) -> Option<SocketAddr> {
        let candidates = self.0.get(&local.port())?;
        candidates
            .iter()
            .find(|l| l.ip() == local.ip())
            .or_else(|| candidates.iter().find(|l| l.ip().is_unspecified()))
            .copied()
    }
}

/// What a TCP socket is to this process.
enum TcpRole {
    Listen,
    /// Accepted on the listener at this address.
    Inbound(SocketAddr),
    Outbound,
    /// No peer: created, bound or closed without a connection.
    Unconnected,
}

fn tcp_role(s: &InetSocket, listeners: &Listeners) -> TcpRole {
    if s.tcp_state() == Some(TcpState::Listen) {
        TcpRole::Listen
    } else if !s.is_connected() {
        TcpRole::Unconnected
    } else if let Some(l) = listeners.accepting(s.local) {
        TcpRole::Inbound(l)
    } else {
        TcpRole::Outbound
    }
}

/// A listener's address: `:PORT` when bound to every address.
struct ListenAddr(SocketAddr);

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.ip().is_unspecified() {
            write!(f, ":{}", self.0.port())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The group's text, which is also its key.
fn group_text(object: &FdObject, listeners: &Listeners) -> String {
    match object {
        FdObject::File(path) => format!("file {path}"),
        FdObject::Inet(proto, s) if proto.is_tcp() => {
            let st = TcpStateName(s.state_code);
            match tcp_role(s, listeners) {
                TcpRole::Listen => format!("{proto} {st} {}", s.local),
                TcpRole::Inbound(l) => {
                    format!("{proto} {st} from {} to {}", s.peer.ip(), ListenAddr(l))
                }
                TcpRole::Outbound => format!("{proto} {st} to {}", s.peer),
                TcpRole::Unconnected => format!("{proto} {st} {}", s.local),
            }
        }
        FdObject::Inet(proto, s) if s.is_connected() => format!("{proto} to {}", s.peer),
        FdObject::Inet(proto, s) => format!("{proto} {}", s.local),
        FdObject::Unix(u) => {
            let path = u.path.as_deref().unwrap_or("unnamed");
            match u.socket_type {
                UnixType::Stream => format!("unix {path} {}", u.state),
                t => format!("unix {t} {path} {}", u.state),
            }
        }
        FdObject::Special(FdKind::AnonInode, link) => {
            format!(
                "anon_inode {}",
                link.strip_prefix("anon_inode:").unwrap_or(link)
            )
        }
        FdObject::Special(FdKind::Other, link) => format!("other {}", without_inode(link)),
        FdObject::Socket(_) | FdObject::Pipe(_) | FdObject::Special(..) => {
            object.kind().as_str().to_owned()
        }
    }
}

/// `net:[4026531840]` → `net`: the inode names one object, not a kind.
fn without_inode(link: &str) -> &str {
    match link.split_once(":[") {
        Some((name, rest))
            if rest.len() > 1
                && rest.ends_with(']')
                && rest[..rest.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => link,
    }
}

/// The group's labels: the parts of its key.
fn group_labels(object: &FdObject, listeners: &Listeners) -> Vec<(&'static str, String)> {
    let mut labels = vec![("kind", object.kind().as_str().to_owned())];
    match object {
        FdObject::File(path) => labels.push(("path", path.clone())),
        FdObject::Inet(proto, s) if proto.is_tcp() => {
            labels.push(("state", TcpStateName(s.state_code).to_string()));
            match tcp_role(s, listeners) {
                TcpRole::Listen => {
                    labels.push(("direction", "listen".into()));
                    labels.push(("local", s.local.to_string()));
                }
                TcpRole::Inbound(l) => {
                    labels.push(("direction", "inbound".into()));
                    labels.push(("peer", s.peer.ip().to_string()));
                    labels.push(("local", ListenAddr(l).to_string()));
                }
                TcpRole::Outbound => {
                    labels.push(("direction", "outbound".into()));
                    labels.push(("peer", s.peer.to_string()));
                }
                TcpRole::Unconnected => labels.push(("local", s.local.to_string())),
            }
        }
        FdObject::Inet(_, s) if s.is_connected() => labels.push(("peer", s.peer.to_string())),
        FdObject::Inet(_, s) => labels.push(("local", s.local.to_string())),
        FdObject::Unix(u) => {
            labels.push(("state", u.state.to_string()));
            if let Some(path) = &u.path {
                labels.push(("path", path.clone()));
            }
        }
        FdObject::Socket(_) | FdObject::Pipe(_) | FdObject::Special(..) => {}
    }
    labels
}

/// How one group changed between two listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdGroupChange {
    /// The group's text.
    pub text: String,
    /// Its kind.
    pub kind: FdKind,
    /// Fds in the group before (0 if it did not exist).
    pub before: u64,
    /// Fds in the group after (0 if it is gone).
    pub after: u64,
}

impl FdGroupChange {
    /// `after − before`.
    pub fn delta(&self) -> i64 {
        i64::try_from(self.after)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.before).unwrap_or(i64::MAX))
    }
}

/// `+950 tcp ESTABLISHED to 127.0.0.1:9000`, `-3 pipe`.
impl fmt::Display for FdGroupChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+} {}", self.delta(), self.text)
    }
}

/// The groups whose size changed from `before` to `after` (new and vanished
/// groups included), largest growth first, shrinking groups last, ties by
/// text.
pub fn compare_groups(before: &[FdGroup], after: &[FdGroup]) -> Vec<FdGroupChange> {
    let mut changes: HashMap<&str, FdGroupChange> = HashMap::new();
    for (g, is_after) in before
        .iter()
        .map(|g| (g, false))
        .chain(after.iter().map(|g| (g, true)))
    {
        let c = changes.entry(&g.text).or_insert_with(|| FdGroupChange {
            text: g.text.clone(),
            kind: g.kind,
            before: 0,
            after: 0,
        });
        if is_after {
            c.after += g.count();
        } else {
            c.before += g.count();
        }
    }
    let mut out: Vec<FdGroupChange> = changes
        .into_values()
        .filter(|c| c.before != c.after)
        .collect();
    out.sort_by(|a, b| b.delta().cmp(&a.delta()).then_with(|| a.text.cmp(&b.text)));
    out
}

/// [`compare_groups`] of two listings.
pub fn compare_listings(before: &FdListing, after: &FdListing) -> Vec<FdGroupChange> {
    compare_groups(&before.groups(), &after.groups())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::procfs::{InetProto, UnixSocket, UnixState};

    fn tcp(fd: u32, proto: InetProto, st: TcpState, local: &str, peer: &str) -> OpenFd {
        OpenFd {
            fd,
            object: FdObject::Inet(
                proto,
                InetSocket {
                    state_code: st.code(),
                    inode: 1000 + u64::from(fd),
                    local: local.parse().unwrap(),
                    peer: peer.parse().unwrap(),
                },
            ),
        }
    }

    fn udp(fd: u32, local: &str, peer: &str) -> OpenFd {
        OpenFd {
            fd,
            object: FdObject::Inet(
                InetProto::Udp,
                InetSocket {
                    state_code: 7,
                    inode: 2000 + u64::from(fd),
                    local: local.parse().unwrap(),
                    peer: peer.parse().unwrap(),
                },
            ),
        }
    }

    fn texts(groups: &[FdGroup]) -> Vec<(String, u64)> {
        groups.iter().map(|g| (g.text.clone(), g.count())).collect()
    }

    use InetProto::{Tcp, Tcp6};
    use TcpState::{CloseWait, Established, Listen};

    #[test]
    fn inbound_outbound_and_listen() {
        let fds = vec![
            tcp(3, Tcp, Listen, "127.0.0.1:8080", "0.0.0.0:0"),
            tcp(4, Tcp6, Listen, "[::]:9090", "[::]:0"),
            // Accepted on 127.0.0.1:8080 from two ephemeral ports of one peer.
            tcp(5, Tcp, Established, "127.0.0.1:8080", "127.0.0.1:40001"),
            tcp(6, Tcp, Established, "127.0.0.1:8080", "127.0.0.1:40002"),
            // Accepted on the wildcard listener, IPv4 through dual stack.
            tcp(7, Tcp6, Established, "10.0.0.5:9090", "10.0.0.7:5000"),
            tcp(8, Tcp6, CloseWait, "[fd00::2]:9090", "[fd00::9]:5000"),
            // Outbound: two to one upstream, one elsewhere.
            tcp(9, Tcp, Established, "127.0.0.1:50001", "127.0.0.1:9000"),
            tcp(10, Tcp, Established, "127.0.0.1:50002", "127.0.0.1:9000"),
            tcp(11, Tcp, CloseWait, "10.0.0.5:50003", "10.0.0.2:5432"),
            // Port 8080 but another address than the listener's: outbound.
            tcp(12, Tcp, Established, "10.0.0.5:8080", "10.0.0.9:80"),
            tcp(13, Tcp, TcpState::Close, "0.0.0.0:0", "0.0.0.0:0"),
        ];
        let groups = group_fds(&fds);
        assert_eq!(
            texts(&groups),
            vec![
                ("tcp ESTABLISHED from 127.0.0.1 to 127.0.0.1:8080".into(), 2),
                ("tcp ESTABLISHED to 127.0.0.1:9000".into(), 2),
                ("tcp CLOSE 0.0.0.0:0".into(), 1),
                ("tcp CLOSE_WAIT to 10.0.0.2:5432".into(), 1),
                ("tcp ESTABLISHED to 10.0.0.9:80".into(), 1),
                ("tcp LISTEN 127.0.0.1:8080".into(), 1),
                ("tcp6 CLOSE_WAIT from fd00::9 to :9090".into(), 1),
                ("tcp6 ESTABLISHED from 10.0.0.7 to :9090".into(), 1),
                ("tcp6 LISTEN [::]:9090".into(), 1),
            ]
        );
        let inbound = &groups[0];
        assert_eq!(inbound.fds, vec![5, 6]);
        assert_eq!(
            inbound.labels,
            vec![
                ("kind", "tcp".to_owned()),
                ("state", "ESTABLISHED".to_owned()),
                ("direction", "inbound".to_owned()),
                ("peer", "127.0.0.1".to_owned()),
                ("local", "127.0.0.1:8080".to_owned()),
            ]
        );
        assert_eq!(
            groups[1].labels,
            vec![
                ("kind", "tcp".to_owned()),
                ("state", "ESTABLISHED".to_owned()),
                ("direction", "outbound".to_owned()),
                ("peer", "127.0.0.1:9000".to_owned()),
            ]
        );
    }

    #[test]
    fn udp_unix_files_and_the_rest() {
        let unix = |fd, path: Option<&str>, socket_type, state| OpenFd {
            fd,
            object: FdObject::Unix(UnixSocket {
                inode: 3000 + u64::from(fd),
                path: path.map(str::to_owned),
                socket_type,
                state,
            }),
        };
        let other = |fd, object| OpenFd { fd, object };
        let fds = vec![
            udp(3, "0.0.0.0:5353", "0.0.0.0:0"),
            udp(4, "10.0.0.5:41000", "10.0.0.2:53"),
            udp(5, "10.0.0.5:41001", "10.0.0.2:53"),
            unix(
                6,
                Some("/run/app.sock"),
                UnixType::Stream,
                UnixState::Listen,
            ),
            unix(
                7,
                Some("/run/app.sock"),
                UnixType::Stream,
                UnixState::Connected,
            ),
            unix(8, None, UnixType::Stream, UnixState::Connected),
            unix(9, Some("@notify"), UnixType::Dgram, UnixState::Unconnected),
            other(10, FdObject::File("/var/log/app.log".into())),
            other(11, FdObject::File("/var/log/app.log".into())),
            other(12, FdObject::File("/tmp/x (deleted)".into())),
            other(13, FdObject::Pipe(1)),
            other(14, FdObject::Pipe(1)),
            other(15, FdObject::Socket(77)),
            other(
                16,
                FdObject::Special(FdKind::EventFd, "anon_inode:[eventfd]".into()),
            ),
            other(
                17,
                FdObject::Special(FdKind::AnonInode, "anon_inode:[pidfd]".into()),
            ),
            other(
                18,
                FdObject::Special(FdKind::Other, "net:[4026531840]".into()),
            ),
            other(
                19,
                FdObject::Special(FdKind::Other, "net:[4026532000]".into()),
            ),
        ];
        let groups = group_fds(&fds);
        assert_eq!(
            texts(&groups),
            vec![
                ("file /var/log/app.log".into(), 2),
                ("other net".into(), 2),
                ("pipe".into(), 2),
                ("udp to 10.0.0.2:53".into(), 2),
                ("anon_inode [pidfd]".into(), 1),
                ("eventfd".into(), 1),
                ("file /tmp/x (deleted)".into(), 1),
                ("socket".into(), 1),
                ("udp 0.0.0.0:5353".into(), 1),
                ("unix /run/app.sock CONNECTED".into(), 1),
                ("unix /run/app.sock LISTEN".into(), 1),
                ("unix dgram @notify UNCONNECTED".into(), 1),
                ("unix unnamed CONNECTED".into(), 1),
            ]
        );
        let file = &groups[0];
        assert_eq!(
            file.labels,
            vec![
                ("kind", "file".to_owned()),
                ("path", "/var/log/app.log".to_owned())
            ]
        );
        assert_eq!(groups[2].labels, vec![("kind", "pipe".to_owned())]);
    }

    #[test]
    fn keys_are_stable_across_listings_and_changes_rank_growth_first() {
        let before = vec![
            tcp(3, Tcp, Listen, "0.0.0.0:8080", "0.0.0.0:0"),
            tcp(4, Tcp, Established, "127.0.0.1:50001", "127.0.0.1:9000"),
            tcp(5, Tcp, Established, "127.0.0.1:8080", "127.0.0.1:40001"),
            OpenFd {
                fd: 6,
                object: FdObject::Pipe(9),
            },
        ];
        // Other fd numbers, other ephemeral ports, other inodes: the same
        // groups, grown.
        let mut after = vec![
            tcp(13, Tcp, Listen, "0.0.0.0:8080", "0.0.0.0:0"),
            tcp(17, Tcp, Established, "127.0.0.1:8080", "127.0.0.1:41111"),
        ];
        for i in 0..3 {
            after.push(tcp(
                20 + i,
                Tcp,
                Established,
                &format!("127.0.0.1:{}", 52000 + i),
                "127.0.0.1:9000",
            ));
        }
        let changes = compare_groups(&group_fds(&before), &group_fds(&after));
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec!["+2 tcp ESTABLISHED to 127.0.0.1:9000", "-1 pipe"]
        );
        assert_eq!(changes[0].before, 1);
        assert_eq!(changes[0].after, 3);
        assert_eq!(changes[1].delta(), -1);
    }

    #[test]
    fn inode_is_not_part_of_other_keys() {
        assert_eq!(without_inode("net:[4026531840]"), "net");
        assert_eq!(without_inode("net:[x]"), "net:[x]");
        assert_eq!(without_inode("net:[]"), "net:[]");
        assert_eq!(without_inode("weird"), "weird");
    }
}
