//! Pure parsers for `/proc` text formats; no I/O here, so every function can
//! be tested against captured text.

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

/// `btime` (boot time, Unix seconds) from `/proc/stat`.
pub fn parse_btime(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("btime "))
        .ok_or("no btime line")?;
    let v = line["btime ".len()..].trim();
    v.parse::<u64>().map_err(|e| format!("btime {v:?}: {e}"))
}

/// One row of `/proc/PID/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSocket {
    /// Raw hex `st` column.
    pub state_code: u8,
    /// Socket inode.
    pub inode: u64,
}

impl InetSocket {
    /// The state as a TCP state (meaningful for the tcp tables only).
    pub fn tcp_state(&self) -> Option<TcpState> {
        TcpState::from_code(self.state_code)
    }
}

/// Parses a `/proc/net/tcp`-style table (also tcp6, udp, udp6): skips the
/// header, reads `st` (4th field, hex) and `inode` (10th field).
pub fn parse_inet_table(text: &str) -> Result<Vec<InetSocket>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 {
            return Err(format!("line {}: {} fields, need 10", i + 1, f.len()));
        }
        let state_code = u8::from_str_radix(f[3], 16)
            .map_err(|e| format!("line {}: st {:?}: {e}", i + 1, f[3]))?;
        let inode = f[9]
            .parse::<u64>()
            .map_err(|e| format!("line {}: inode {:?}: {e}", i + 1, f[9]))?;
        out.push(InetSocket { state_code, inode });
    }
    Ok(out)
}

/// Socket inodes from `/proc/PID/net/unix` (7th field; header skipped).
pub fn parse_unix_table(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f = line
            .split_ascii_whitespace()
            .nth(6)
            .ok_or_else(|| format!("line {}: no inode field", i + 1))?;
        let inode = f
            .parse::<u64>()
            .map_err(|e| format!("line {}: inode {f:?}: {e}", i + 1))?;
        out.push(inode);
    }
    Ok(out)
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
