//! Pure parsers for `/proc` text formats; no I/O here, so every function can
//! be tested against captured text.
//!
//! The socket tables of the inet families are parsed by the `procfs` crate
//! (`parse_inet_table` adapts its rows); `/proc/PID/stat` and the fd limit
//! of `/proc/PID/limits`, both read by every sample, and `/proc/PID/net/unix`
//! stay hand-written: the first two are faster here (docs/decisions.md,
//! "/proc: procfs, with two fast paths kept"), and
//! procfs's unix rows drop the `Flags` column (so a listening socket cannot
//! be told apart) and cut paths at the first space.

use std::fmt;
use std::net::SocketAddr;

use super::TcpState;

/// The fields of `/proc/PID/stat` that the sampler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: u32,
    /// Command name; may contain spaces and parentheses.
    pub comm: String,
    /// Process state letter (R, S, D, Z, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// User CPU time in clock ticks.
    pub utime_ticks: u64,
    /// System CPU time in clock ticks.
    pub stime_ticks: u64,
    /// Number of threads.
    pub num_threads: u64,
    /// Start time in clock ticks after boot.
    pub start_time_ticks: u64,
    /// Virtual memory size in bytes.
    pub vsize_bytes: u64,
    /// Resident set size in pages (negative values clamp to 0).
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The comm field (2) is taken between the first
/// `(` and the LAST `)`, since it may itself contain `)` and spaces.
pub fn parse_stat(text: &str) -> Result<ProcStat, String> {
    let open = text.find('(').ok_or("no '(' before the comm field")?;
    let close = text.rfind(')').ok_or("no ')' after the comm field")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open]
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("field 1 (pid): {e}"))?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let field = |n: usize| -> Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| format!("missing field {n} (only {} fields)", rest.len() + 2))
    };
    let num = |n: usize| -> Result<u64, String> {
        let s = field(n)?;
        s.parse::<u64>()
            .map_err(|e| format!("field {n} ({s:?}): {e}"))
    };
    let state = field(3)?.chars().next().ok_or("empty state field")?;
    let ppid_s = field(4)?;
    let ppid = ppid_s
        .parse::<u32>()
        .map_err(|e| format!("field 4 ({ppid_s:?}): {e}"))?;
    let rss_s = field(24)?;
    let rss = rss_s
        .parse::<i64>()
        .map_err(|e| format!("field 24 ({rss_s:?}): {e}"))?;
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid,
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        num_threads: num(20)?,
        start_time_ticks: num(22)?,
        vsize_bytes: num(23)?,
        rss_pages: u64::try_from(rss).unwrap_or(0),
    })
}

/// Soft "Max open files" from `/proc/PID/limits`; `Ok(None)` if unlimited.
pub fn parse_max_open_files(text: &str) -> Result<Option<u64>, String> {
    const LABEL: &str = "Max open files";
    let line = text
        .lines()
        .find(|l| l.starts_with(LABEL))
        .ok_or("no \"Max open files\" line")?;
    let soft = line[LABEL.len()..]
        .split_ascii_whitespace()
        .next()
        .ok_or("\"Max open files\" has no soft limit")?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse::<u64>()
        .map(Some)
        .map_err(|e| format!("soft limit {soft:?}: {e}"))
}

/// One row of `/proc/PID/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSocket {
    /// Raw hex `st` column.
    pub state_code: u8,
    /// Socket inode.
    pub inode: u64,
    /// Local address and port. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
    /// what a dual-stack socket shows for an IPv4 peer) are given as IPv4,
    /// so `Display` reads `127.0.0.1:8080`, `[::1]:8080`.
    pub local: SocketAddr,
    /// Peer address and port; `0.0.0.0:0` / `[::]:0` when not connected.
    pub peer: SocketAddr,
}

impl InetSocket {
    /// The state as a TCP state (meaningful for the tcp tables only).
    pub fn tcp_state(&self) -> Option<TcpState> {
        TcpState::from_code(self.state_code)
    }

    /// True when the socket has a peer (a connected UDP socket, any TCP
    /// socket past LISTEN).
    pub fn is_connected(&self) -> bool {
        self.peer.port() != 0 || !self.peer.ip().is_unspecified()
    }
}

/// Which socket table an [`InetSocket`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InetProto {
    /// `/proc/PID/net/tcp`.
    Tcp,
    /// `/proc/PID/net/tcp6`.
    Tcp6,
    /// `/proc/PID/net/udp`.
    Udp,
    /// `/proc/PID/net/udp6`.
    Udp6,
}

impl InetProto {
    /// The table's file name, also the fd kind's name: `tcp`, `tcp6`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            InetProto::Tcp => "tcp",
            InetProto::Tcp6 => "tcp6",
            InetProto::Udp => "udp",
            InetProto::Udp6 => "udp6",
        }
    }

    /// TCP (either family).
    pub fn is_tcp(self) -> bool {
        matches!(self, InetProto::Tcp | InetProto::Tcp6)
    }
}

/// Parses a `/proc/net/{tcp,tcp6,udp,udp6}` table with procfs (header
/// skipped), keeping each row's local and peer address, state code and
/// inode. IPv4-mapped IPv6 addresses come back as IPv4.
///
/// Addresses are written by the kernel as hex words in the host's byte
/// order (`0100007F:1F90` is 127.0.0.1:8080 on little-endian machines), so
/// they are read back in the byte order of the machine this runs on: parse
/// a table on the machine that produced it.
pub fn parse_inet_table(
    proto: InetProto,
    text: impl AsRef<[u8]>,
) -> Result<Vec<InetSocket>, String> {
    use ::procfs::FromReadSI;
    use ::procfs::net::{TcpNetEntries, UdpNetEntries};
    let text = text.as_ref();
    let info = super::system_info();
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let row = |state_code: u8, inode: u64, local: SocketAddr, peer: SocketAddr| InetSocket {
        state_code,
        inode,
        local: canonical(local),
        peer: canonical(peer),
    };
    let rows = if proto.is_tcp() {
        TcpNetEntries::from_read(text, &info)
            .map_err(|e| e.to_string())?
            .0
            .into_iter()
            .map(|e| row(e.state.to_u8(), e.inode, e.local_address, e.remote_address))
            .collect()
    } else {
        UdpNetEntries::from_read(text, &info)
            .map_err(|e| e.to_string())?
            .0
            .into_iter()
            .map(|e| row(e.state.to_u8(), e.inode, e.local_address, e.remote_address))
            .collect()
    };
    Ok(rows)
}

/// One row of `/proc/PID/net/unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// Socket inode.
    pub inode: u64,
    /// The bound path (`@name` for the abstract namespace); `None` when
    /// unnamed. A connection accepted on a bound socket shows its
    /// listener's path; the connecting end is unnamed.
    pub path: Option<String>,
    /// `stream`, `dgram` or `seqpacket` (`Type` column).
    pub socket_type: UnixType,
    /// Connection state (`St` column, and `Flags` for listening sockets).
    pub state: UnixState,
}

/// Type of a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixType {
    /// SOCK_STREAM (1).
    Stream,
    /// SOCK_DGRAM (2).
    Dgram,
    /// SOCK_SEQPACKET (5).
    SeqPacket,
    /// Any other code.
    Other(u16),
}

impl UnixType {
    fn from_code(code: u16) -> UnixType {
        match code {
            1 => UnixType::Stream,
            2 => UnixType::Dgram,
            5 => UnixType::SeqPacket,
            n => UnixType::Other(n),
        }
    }
}

impl fmt::Display for UnixType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixType::Stream => f.write_str("stream"),
            UnixType::Dgram => f.write_str("dgram"),
            UnixType::SeqPacket => f.write_str("seqpacket"),
            UnixType::Other(n) => write!(f, "type{n}"),
        }
    }
}

/// State of a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixState {
    /// Listening (`__SO_ACCEPTCON` in `Flags`).
    Listen,
    /// SS_UNCONNECTED (1).
    Unconnected,
    /// SS_CONNECTING (2).
    Connecting,
    /// SS_CONNECTED (3).
    Connected,
    /// SS_DISCONNECTING (4).
    Disconnecting,
    /// Any other code.
    Other(u8),
}

impl UnixState {
    /// Upper-case name, e.g. `CONNECTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnixState::Listen => "LISTEN",
            UnixState::Unconnected => "UNCONNECTED",
            UnixState::Connecting => "CONNECTING",
            UnixState::Connected => "CONNECTED",
            UnixState::Disconnecting => "DISCONNECTING",
            UnixState::Other(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for UnixState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `__SO_ACCEPTCON` in the `Flags` column: the socket listens.
const UNIX_ACCEPTCON: u32 = 1 << 16;

/// Parses `/proc/PID/net/unix` (header skipped): `Flags` (4th field, hex),
/// `Type` (5th, hex), `St` (6th, hex), `Inode` (7th) and the path, which is
/// the rest of the line and may contain spaces.
pub fn parse_unix_table(text: &str) -> Result<Vec<UnixSocket>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut rest = line.trim_start();
        let mut f = [""; 7];
        for (n, slot) in f.iter_mut().enumerate() {
            let end = rest.find(' ').unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("line {}: {n} fields, need 7", i + 1));
            }
            *slot = &rest[..end];
            rest = rest[end..].trim_start_matches(' ');
        }
        let hex = |n: usize| {
            u32::from_str_radix(f[n], 16)
                .map_err(|e| format!("line {}: field {} {:?}: {e}", i + 1, n + 1, f[n]))
        };
        let flags = hex(3)?;
        let socket_type = UnixType::from_code(hex(4)? as u16);
        let st = hex(5)?;
        let inode = f[6]
            .parse::<u64>()
            .map_err(|e| format!("line {}: inode {:?}: {e}", i + 1, f[6]))?;
        let state = if flags & UNIX_ACCEPTCON != 0 {
            UnixState::Listen
        } else {
            match st {
                1 => UnixState::Unconnected,
                2 => UnixState::Connecting,
                3 => UnixState::Connected,
                4 => UnixState::Disconnecting,
                n => UnixState::Other(n as u8),
            }
        };
        let path = (!rest.is_empty()).then(|| rest.to_string());
        out.push(UnixSocket {
            inode,
            path,
            socket_type,
            state,
        });
    }
    Ok(out)
}

/// A socket inode found in one of the process's socket tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEntry {
    /// A row of `tcp`, `tcp6`, `udp` or `udp6`.
    Inet(InetProto, InetSocket),
    /// A row of `unix`.
    Unix(UnixSocket),
}

/// What an fd's `readlink` target says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FdTarget {
    /// `socket:[INODE]`; the protocol is found by looking the inode up.
    Socket(u64),
    /// `pipe:[...]`.
    Pipe,
    /// `anon_inode:[eventfd]`.
    EventFd,
    /// `anon_inode:[eventpoll]`.
    Epoll,
    /// `anon_inode:[timerfd]`.
    TimerFd,
    /// A path starting with `/` (regular files, devices, deleted files, memfd).
    File,
    /// Anything else (other anon inodes, `net:[...]`, ...).
    Other,
}

/// Classifies a `/proc/PID/fd/N` link target (raw bytes: paths need not be
/// UTF-8).
pub fn classify_fd_target(link: &[u8]) -> FdTarget {
    if let Some(rest) = link.strip_prefix(b"socket:[") {
        let digits = rest.strip_suffix(b"]").unwrap_or(rest);
        return std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(FdTarget::Other, FdTarget::Socket);
    }
    if link.starts_with(b"pipe:[") {
        return FdTarget::Pipe;
    }
    match link {
        b"anon_inode:[eventfd]" => FdTarget::EventFd,
        b"anon_inode:[eventpoll]" => FdTarget::Epoll,
        b"anon_inode:[timerfd]" => FdTarget::TimerFd,
        _ if link.starts_with(b"/") => FdTarget::File,
        _ => FdTarget::Other,
    }
}

/// Counts equal names; sorted by count desc, then name asc.
pub fn group_counts<I: IntoIterator<Item = String>>(names: I) -> Vec<(String, u64)> {
    let mut map = std::collections::HashMap::<String, u64>::new();
    for n in names {
        *map.entry(n).or_insert(0) += 1;
    }
    let mut v: Vec<(String, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}
