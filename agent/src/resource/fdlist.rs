//! Every open fd of a process and what it is: the listing behind the fds
//! profile (`collect::fds`) and the fd groups ([`group_fds`](super::group_fds)).
//!
//! [`list_fds`] `readlink`s each entry of `/proc/PID/fd` (an fd closed
//! meanwhile is skipped), then resolves socket inodes against the
//! namespace's socket tables (lazily, as the sampler does). At most
//! [`ListOptions::max_fds`] fds are read; the rest are only counted.
//! [`describe_fd`] is the pure part: a link target and the socket tables'
//! rows in, an [`OpenFd`] out.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::SystemTime;

use super::procfs::{
    FdTarget, InetProto, InetSocket, SocketEntry, UnixSocket, UnixType, classify_fd_target,
};
use super::{Target, io_error, max_open_files, tcp, vanished};
use crate::error::Error;

/// Most fds [`list_fds`] reads by default (`readlink` each, about a
/// microsecond apiece); the rest are counted in [`FdListing::not_listed`].
pub const MAX_LISTED_FDS: usize = 100_000;

/// How much [`list_fds`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Most fds to read and describe; default [`MAX_LISTED_FDS`].
    pub max_fds: usize,
}

impl Default for ListOptions {
    fn default() -> ListOptions {
        ListOptions {
            max_fds: MAX_LISTED_FDS,
        }
    }
}

/// The open fds of one process at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct FdListing {
    /// The process.
    pub pid: u32,
    /// When the listing started.
    pub time: SystemTime,
    /// The fds read, by fd number.
    pub fds: Vec<OpenFd>,
    /// Fds beyond [`ListOptions::max_fds`], counted but not read.
    pub not_listed: u64,
    /// Soft "Max open files"; `None` when unlimited.
    pub fd_limit: Option<u64>,
}

impl FdListing {
    /// Every fd seen: the ones read and the ones only counted.
    pub fn total(&self) -> u64 {
        self.fds.len() as u64 + self.not_listed
    }
}

/// One open fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFd {
    /// The fd number.
    pub fd: u32,
    /// What it refers to.
    pub object: FdObject,
}

impl OpenFd {
    /// Its kind.
    pub fn kind(&self) -> FdKind {
        self.object.kind()
    }
}

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdObject {
    /// A path: regular file, directory, device, FIFO opened by name, memfd
    /// (`/memfd:NAME (deleted)`). A deleted file keeps its ` (deleted)`.
    /// Bytes that are not UTF-8 are replaced.
    File(String),
    /// A socket found in the `tcp`, `tcp6`, `udp` or `udp6` table.
    Inet(InetProto, InetSocket),
    /// A socket found in the `unix` table.
    Unix(UnixSocket),
    /// A socket inode found in no table read (netlink, packet, ..., or one
    /// closed while being listed).
    Socket(u64),
    /// A pipe, with its inode (both ends share it).
    Pipe(u64),
    /// Anything else: anonymous inodes (`anon_inode:[eventfd]`, ...),
    /// namespace handles (`net:[4026531840]`), ... The kind says which;
    /// the link target is kept as it reads.
    Special(FdKind, String),
}

impl FdObject {
    /// Its kind.
    pub fn kind(&self) -> FdKind {
        match self {
            FdObject::File(_) => FdKind::File,
            FdObject::Inet(InetProto::Tcp, _) => FdKind::Tcp,
            FdObject::Inet(InetProto::Tcp6, _) => FdKind::Tcp6,
            FdObject::Inet(InetProto::Udp, _) => FdKind::Udp,
            FdObject::Inet(InetProto::Udp6, _) => FdKind::Udp6,
            FdObject::Unix(_) => FdKind::Unix,
            FdObject::Socket(_) => FdKind::Socket,
            FdObject::Pipe(_) => FdKind::Pipe,
            FdObject::Special(kind, _) => *kind,
        }
    }
}

/// One fd as `debug=2` prints it: `tcp ESTABLISHED 127.0.0.1:40112 ->
/// 127.0.0.1:9000 (inode 1234)`, `file /var/log/app.log`, `pipe (inode 7)`.
impl fmt::Display for FdObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdObject::File(path) => write!(f, "file {path}"),
            FdObject::Inet(proto, s) => {
                write!(f, "{proto}")?;
                if proto.is_tcp() {
                    write!(f, " {}", TcpStateName(s.state_code))?;
                }
                write!(f, " {}", s.local)?;
                if s.is_connected() {
                    write!(f, " -> {}", s.peer)?;
                }
                write!(f, " (inode {})", s.inode)
            }
            FdObject::Unix(u) => {
                f.write_str("unix")?;
                if u.socket_type != UnixType::Stream {
                    write!(f, " {}", u.socket_type)?;
                }
                let path = u.path.as_deref().unwrap_or("unnamed");
                write!(f, " {path} {} (inode {})", u.state, u.inode)
            }
            FdObject::Socket(inode) => write!(f, "socket (inode {inode}, in no socket table)"),
            FdObject::Pipe(inode) => write!(f, "pipe (inode {inode})"),
            FdObject::Special(kind, link) => match kind {
                FdKind::AnonInode | FdKind::Other => write!(f, "{kind} {link}"),
                _ => write!(f, "{kind}"),
            },
        }
    }
}

impl fmt::Display for InetProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TCP `st` code by name (`ESTABLISHED`), or `STATE_0C` when unknown.
pub(super) struct TcpStateName(pub(super) u8);

impl fmt::Display for TcpStateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match super::TcpState::from_code(self.0) {
            Some(st) => f.write_str(st.as_str()),
            None => write!(f, "STATE_{:02X}", self.0),
        }
    }
}

/// The kinds of fds, as the `kind` label and the root frame of the fds
/// profile name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    /// A path.
    File,
    /// IPv4 TCP socket.
    Tcp,
    /// IPv6 TCP socket (also dual-stack sockets talking IPv4).
    Tcp6,
    /// IPv4 UDP socket.
    Udp,
    /// IPv6 UDP socket.
    Udp6,
    /// Unix domain socket.
    Unix,
    /// A socket in no table read (netlink, packet, ...).
    Socket,
    /// A pipe.
    Pipe,
    /// `anon_inode:[eventfd]`.
    EventFd,
    /// `anon_inode:[eventpoll]`.
    Epoll,
    /// `anon_inode:[timerfd]`.
    TimerFd,
    /// `anon_inode:[signalfd]`.
    SignalFd,
    /// `anon_inode:inotify`.
    Inotify,
    /// Any other anonymous inode (`[pidfd]`, `[io_uring]`, `bpf-map`, ...).
    AnonInode,
    /// Anything else (`net:[...]` namespace handles, ...).
    Other,
}

impl FdKind {
    /// The name: `file`, `tcp`, `tcp6`, `udp`, `udp6`, `unix`, `socket`,
    /// `pipe`, `eventfd`, `epoll`, `timerfd`, `signalfd`, `inotify`,
    /// `anon_inode`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Tcp => "tcp",
            FdKind::Tcp6 => "tcp6",
            FdKind::Udp => "udp",
            FdKind::Udp6 => "udp6",
            FdKind::Unix => "unix",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::EventFd => "eventfd",
            FdKind::Epoll => "epoll",
            FdKind::TimerFd => "timerfd",
            FdKind::SignalFd => "signalfd",
            FdKind::Inotify => "inotify",
            FdKind::AnonInode => "anon_inode",
            FdKind::Other => "other",
        }
    }
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest link text kept, in bytes; longer paths are cut (on a character
/// boundary) and end in `...`. Keeps a listing of 100,000 fds within tens of
/// MB even when every path is near `PATH_MAX`.
pub const MAX_LINK_TEXT: usize = 1024;

/// Describes fd `fd` from its link target (raw bytes of `readlink
/// /proc/PID/fd/N`) and the socket-table rows of the process's sockets.
/// Paths and other link texts are kept as text: bytes that are not UTF-8
/// replaced, control characters escaped (`\n`), cut at [`MAX_LINK_TEXT`].
pub fn describe_fd(fd: u32, link: &[u8], sockets: &HashMap<u64, SocketEntry>) -> OpenFd {
    let text = || link_text(link);
    let special = |kind| FdObject::Special(kind, text());
    let object = match classify_fd_target(link) {
        FdTarget::Socket(inode) => match sockets.get(&inode) {
            Some(SocketEntry::Inet(proto, s)) => FdObject::Inet(*proto, *s),
            Some(SocketEntry::Unix(u)) => FdObject::Unix(u.clone()),
            None => FdObject::Socket(inode),
        },
        FdTarget::Pipe => FdObject::Pipe(bracketed_inode(link).unwrap_or(0)),
        FdTarget::File => FdObject::File(text()),
        FdTarget::EventFd => special(FdKind::EventFd),
        FdTarget::Epoll => special(FdKind::Epoll),
        FdTarget::TimerFd => special(FdKind::TimerFd),
        FdTarget::Other => match link {
            b"anon_inode:[signalfd]" => special(FdKind::SignalFd),
            b"anon_inode:inotify" => special(FdKind::Inotify),
            _ if link.starts_with(b"anon_inode:") => special(FdKind::AnonInode),
            _ => special(FdKind::Other),
        },
    };
    OpenFd { fd, object }
}

/// `link` as one line of bounded text.
fn link_text(link: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(link);
    let mut out = String::with_capacity(lossy.len().min(MAX_LINK_TEXT + 3));
    for c in lossy.chars() {
        if out.len() >= MAX_LINK_TEXT {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The number in `name:[N]`.
fn bracketed_inode(link: &[u8]) -> Option<u64> {
    let start = link.iter().position(|b| *b == b'[')? + 1;
    let digits = link.get(start..)?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Lists the open fds of `target`. Fds closed while being listed are
/// skipped; sockets closed before their table is read stay
/// [`FdObject::Socket`]. Errors only when the process is gone
/// ([`Error::ProcessGone`]), may not be read ([`Error::ProcessNoAccess`]) or
/// its /proc files do not parse.
///
/// Cost: one `readlink` per fd plus, when there are sockets, the socket
/// tables of its namespace (see the resource bench).
pub fn list_fds(target: Target, opts: &ListOptions) -> Result<FdListing, Error> {
    let time = SystemTime::now();
    let own_pid = std::process::id();
    let pid = match target {
        Target::SelfProcess => own_pid,
        Target::Pid(p) => p,
    };
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let fd_dir = dir.join("fd");

    let mut links: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut not_listed = 0u64;
    let is_self = pid == own_pid;
    let mut saw_own_handle = false;
    let entries = fs::read_dir(&fd_dir).map_err(|e| io_error(pid, &fd_dir, e))?;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(io_error(pid, &fd_dir, e)),
        };
        let Some(fd) = std::str::from_utf8(entry.file_name().as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if links.len() >= opts.max_fds {
            not_listed += 1;
            continue;
        }
        let path = entry.path();
        let link = match fs::read_link(&path) {
            Ok(l) => l,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(io_error(pid, &path, e)),
        };
        // The handle of this very listing, when listing ourselves.
        if is_self && link == fd_dir {
            saw_own_handle = true;
            continue;
        }
        links.push((fd, link.into_os_string().into_vec()));
    }
    if is_self && !saw_own_handle {
        // It was among the fds only counted.
        not_listed = not_listed.saturating_sub(1);
    }
    links.sort_unstable_by_key(|(fd, _)| *fd);

    let inodes = links
        .iter()
        .filter_map(|(_, l)| match classify_fd_target(l) {
            FdTarget::Socket(inode) => Some(inode),
            _ => None,
        });
    let sockets = tcp::resolve(pid, &dir, inodes)?;
    let fds = links
        .iter()
        .map(|(fd, link)| describe_fd(*fd, link, &sockets))
        .collect();

    let fd_limit = max_open_files(pid, &dir)?;
    Ok(FdListing {
        pid,
        time,
        fds,
        not_listed,
        fd_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_described() {
        let none = HashMap::new();
        let d = |link: &str| describe_fd(3, link.as_bytes(), &none).object;
        assert_eq!(d("/var/log/a.log"), FdObject::File("/var/log/a.log".into()));
        assert_eq!(
            d("/tmp/x (deleted)"),
            FdObject::File("/tmp/x (deleted)".into())
        );
        assert_eq!(d("pipe:[70001]"), FdObject::Pipe(70001));
        assert_eq!(d("socket:[42]"), FdObject::Socket(42));
        assert_eq!(d("anon_inode:[eventfd]").kind(), FdKind::EventFd);
        assert_eq!(d("anon_inode:[eventpoll]").kind(), FdKind::Epoll);
        assert_eq!(d("anon_inode:[timerfd]").kind(), FdKind::TimerFd);
        assert_eq!(d("anon_inode:[signalfd]").kind(), FdKind::SignalFd);
        assert_eq!(d("anon_inode:inotify").kind(), FdKind::Inotify);
        assert_eq!(
            d("anon_inode:[pidfd]"),
            FdObject::Special(FdKind::AnonInode, "anon_inode:[pidfd]".into())
        );
        assert_eq!(d("net:[4026531840]").kind(), FdKind::Other);
        assert_eq!(
            d("anon_inode:[pidfd]").to_string(),
            "anon_inode anon_inode:[pidfd]"
        );
        assert_eq!(d("pipe:[7]").to_string(), "pipe (inode 7)");
        assert_eq!(d("anon_inode:[eventfd]").to_string(), "eventfd");
        // One line, bounded.
        assert_eq!(
            d("/tmp/a\nfd 9: b\x07"),
            FdObject::File("/tmp/a\\nfd 9: b\\u{7}".into())
        );
        let long = format!("/{}", "é".repeat(3000));
        let FdObject::File(cut) = d(&long) else {
            panic!("a file")
        };
        assert!(
            cut.ends_with("...") && cut.len() <= MAX_LINK_TEXT + 4,
            "{}",
            cut.len()
        );
        assert_eq!(
            describe_fd(1, b"/tmp/\xff", &none).object,
            FdObject::File("/tmp/\u{fffd}".into())
        );
    }

    #[test]
    fn listing_of_self_sees_a_fresh_pipe() {
        let mut ends = [0; 2];
        // SAFETY: `ends` is a valid array of two c_ints for pipe to fill.
        assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
        let listing = list_fds(Target::SelfProcess, &ListOptions::default()).unwrap();
        for fd in ends {
            let found = listing.fds.iter().find(|f| f.fd == fd as u32);
            // SAFETY: closing the two fds this test opened, once each.
            unsafe { libc::close(fd) };
            assert!(
                matches!(found, Some(OpenFd { object: FdObject::Pipe(i), .. }) if *i > 0),
                "fd {fd}: {found:?}"
            );
        }
        assert!(listing.fds.windows(2).all(|w| w[0].fd < w[1].fd));
        assert_eq!(listing.not_listed, 0);
    }

    #[test]
    fn listing_is_bounded() {
        let listing = list_fds(Target::SelfProcess, &ListOptions { max_fds: 1 }).unwrap();
        assert_eq!(listing.fds.len(), 1);
        // stdin, stdout and stderr at least, minus the one listed.
        assert!(listing.not_listed >= 2, "{listing:?}");
        assert_eq!(
            listing.total(),
            listing.fds.len() as u64 + listing.not_listed
        );
    }
}
