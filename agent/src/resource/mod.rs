//! Resource sampling of one process through `/proc` (Linux only).
//!
//! [`sample`] reads a [`ResourceSample`] of this process or of any pid: thread
//! count, open file descriptors (and optionally what they are), the soft fd
//! limit, TCP socket states, memory and CPU time. The default
//! [`SampleOptions`] is the count-only fast path (a handful of small reads);
//! the fd breakdown, thread names and TCP states are opt-in because they cost
//! one syscall per fd / thread and a read of the namespace's socket tables.
//!
//! [`list_fds`] goes further for the fds profile: every open fd and what it
//! is (path, addresses and TCP state, unix path, kind), and [`group_fds`]
//! groups such a listing by what the fds are, with keys that line up across
//! listings ([`compare_listings`]).
//!
//! Parsing lives in [`procfs`] (pure functions over text), grouping in
//! `fdgroup` (pure), I/O in `fds`, `fdlist`, `tcp` and here.

mod fdgroup;
mod fdlist;
mod fds;
pub mod procfs;
pub mod prometheus;
mod tcp;

pub use fdgroup::{FdGroup, FdGroupChange, compare_groups, compare_listings, group_fds};
pub use fdlist::{
    FdKind, FdListing, FdObject, ListOptions, MAX_LINK_TEXT, MAX_LISTED_FDS, OpenFd, describe_fd,
    list_fds,
};

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Error;

/// Which process to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The calling process.
    SelfProcess,
    /// Any process by pid (thread-group id).
    Pid(u32),
}

/// What to collect beyond the cheap counts. `Default` is all `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleOptions {
    /// `readlink` every fd and classify it into [`FdKinds`].
    pub fd_breakdown: bool,
    /// Read `/proc/PID/task/*/comm` and group threads by name.
    pub thread_names: bool,
    /// Match the process's socket inodes against `/proc/PID/net/tcp{,6}`.
    pub tcp_states: bool,
}

/// One point-in-time reading of a process's resources.
///
/// Serializes (for snapshot metadata and JSON APIs) with `time` as Unix
/// seconds and TCP states by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceSample {
    /// The process id.
    pub pid: u32,
    /// Wall-clock time at the start of the sample.
    #[serde(with = "unix_seconds")]
    pub time: SystemTime,
    /// Number of threads (`num_threads` of the leader's `stat`).
    pub threads: u64,
    /// Threads grouped by `comm`, sorted by count desc then name.
    pub threads_by_name: Option<Vec<(String, u64)>>,
    /// Number of open file descriptors.
    pub open_fds: u64,
    /// Soft "Max open files"; `None` when unlimited.
    pub fd_limit: Option<u64>,
    /// Per-kind fd counts (only with `fd_breakdown`).
    pub fds_by_kind: Option<FdKinds>,
    /// TCP sockets of the process by state, non-zero states only, in state
    /// code order (only with `tcp_states`).
    pub tcp_by_state: Option<Vec<(TcpState, u64)>>,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// User + system CPU time in seconds, from the process CPU clock
    /// (nanosecond resolution) or, failing that, `stat` clock ticks.
    pub cpu_seconds: f64,
    /// Process start time as Unix seconds.
    pub start_time_seconds: f64,
}

/// What the open file descriptors point at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdKinds {
    /// TCP sockets (IPv4 and IPv6).
    pub tcp: u64,
    /// UDP sockets.
    pub udp: u64,
    /// Unix domain sockets.
    pub unix: u64,
    /// Other sockets (netlink, packet, ...).
    pub other_socket: u64,
    /// Pipes and FIFOs.
    pub pipe: u64,
    /// eventfds.
    pub eventfd: u64,
    /// epoll instances.
    pub epoll: u64,
    /// timerfds.
    pub timerfd: u64,
    /// Paths: regular files, devices, memfds.
    pub file: u64,
    /// Anything else.
    pub other: u64,
}

impl FdKinds {
    /// `(kind, count)` pairs, with the kind names used as metric labels.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("tcp", self.tcp),
            ("udp", self.udp),
            ("unix", self.unix),
            ("other_socket", self.other_socket),
            ("pipe", self.pipe),
            ("eventfd", self.eventfd),
            ("epoll", self.epoll),
            ("timerfd", self.timerfd),
            ("file", self.file),
            ("other", self.other),
        ]
        .into_iter()
    }

    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        self.tcp
            + self.udp
            + self.unix
            + self.other_socket
            + self.pipe
            + self.eventfd
            + self.epoll
            + self.timerfd
            + self.file
            + self.other
    }
}

/// Kernel TCP states, as in the hex `st` column of `/proc/net/tcp`.
/// Serialized by name (`"CLOSE_WAIT"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// ESTABLISHED (01).
    Established,
    /// SYN_SENT (02).
    SynSent,
    /// SYN_RECV (03).
    SynRecv,
    /// FIN_WAIT1 (04).
    FinWait1,
    /// FIN_WAIT2 (05).
    FinWait2,
    /// TIME_WAIT (06).
    TimeWait,
    /// CLOSE (07).
    Close,
    /// CLOSE_WAIT (08): the peer closed, this process has not.
    CloseWait,
    /// LAST_ACK (09).
    LastAck,
    /// LISTEN (0A).
    Listen,
    /// CLOSING (0B).
    Closing,
}

impl TcpState {
    /// All states in kernel code order (0x01..=0x0B).
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// State for a kernel code (`st` column), `None` outside 0x01..=0x0B.
    pub fn from_code(code: u8) -> Option<TcpState> {
        match code {
            1..=11 => Some(Self::ALL[usize::from(code) - 1]),
            _ => None,
        }
    }

    /// Kernel code of this state (0x01..=0x0B).
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    /// Conventional upper-case name, e.g. `"CLOSE_WAIT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SystemTime` as fractional Unix seconds in serialized samples.
mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        s.serialize_f64(secs)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(serde::de::Error::custom(
                "time must be non-negative Unix seconds",
            ));
        }
        Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

/// Maps an I/O error on a `/proc/PID/...` path: ENOENT/ESRCH mean the process
/// is gone, EACCES/EPERM mean we lack ptrace access.
pub(crate) fn io_error(pid: u32, path: &Path, err: io::Error) -> Error {
    let gone = matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
        || err.kind() == io::ErrorKind::NotFound;
    let denied = matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM))
        || err.kind() == io::ErrorKind::PermissionDenied;
    if gone {
        Error::ProcessGone { pid }
    } else if denied {
        Error::ProcessNoAccess {
            pid,
            path: path.display().to_string(),
        }
    } else {
        Error::File {
            path: path.to_path_buf(),
            source: err,
        }
    }
}

/// Paths of the entries of a `/proc/PID/...` directory. Entries that vanish
/// while it is listed (a thread ending, an fd closing) are skipped: that race
/// is normal on /proc.
pub(crate) fn proc_entries(pid: u32, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(pid, dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => out.push(e.path()),
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(io_error(pid, dir, e)),
        }
    }
    Ok(out)
}

/// True for errors meaning "this entry disappeared meanwhile" (fd closed,
/// thread exited); such entries are skipped.
pub(crate) fn vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

pub(crate) fn parse_error(path: &Path, message: String) -> Error {
    Error::ProcParse {
        path: path.display().to_string(),
        message,
    }
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf takes no pointers and has no preconditions; it only
        // reads a configuration value.
        let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if v > 0 { v as u64 } else { 100 }
    })
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf takes no pointers and has no preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 { v as u64 } else { 4096 }
    })
}

/// Most bytes read of `/proc/stat` (a line per CPU, and an `intr` line
/// whose length grows with the number of interrupts).
const MAX_PROC_STAT: u64 = 1 << 20;
/// Most bytes read of `/proc/PID/limits` (about 1.6 KiB in practice).
const MAX_LIMITS: u64 = 16 << 10;

/// What procfs needs to know about this machine to parse some files: the
/// byte order of the socket tables' addresses. Boot time, ticks and page
/// size are filled in for completeness; nothing parsed here reads them.
pub(crate) fn system_info() -> ::procfs::ExplicitSystemInfo {
    ::procfs::ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: clock_ticks_per_second(),
        page_size: page_size(),
        is_little_endian: cfg!(target_endian = "little"),
    }
}

/// Reads at most `max` bytes of a `/proc` file; a longer file is an error
/// (procfs itself reads files whole, so every read of /proc text that
/// procfs parses goes through here first).
pub(crate) fn read_bounded(pid: u32, path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| io_error(pid, path, e))?;
    // Room for a small file up front: an empty Vec makes `read_to_end` probe
    // with short reads, and each read of a /proc file is a syscall that
    // formats the text again.
    let mut bytes = Vec::with_capacity(max.saturating_add(1).min(16 << 10) as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(pid, path, e))?;
    if bytes.len() as u64 > max {
        return Err(parse_error(
            path,
            format!("larger than the {max} bytes leakscope reads of it"),
        ));
    }
    Ok(bytes)
}

/// Maps a procfs error on `path` of process `pid` like [`io_error`] does.
pub(crate) fn proc_error(pid: u32, path: &Path, err: ::procfs::ProcError) -> Error {
    match err {
        ::procfs::ProcError::NotFound(_) => Error::ProcessGone { pid },
        ::procfs::ProcError::PermissionDenied(_) => Error::ProcessNoAccess {
            pid,
            path: path.display().to_string(),
        },
        ::procfs::ProcError::Io(e, _) => io_error(pid, path, e),
        other => parse_error(path, other.to_string()),
    }
}

/// Boot time (`btime` of `/proc/stat`), read once per process.
fn boot_time() -> Result<u64, Error> {
    use ::procfs::FromReadSI;
    static BTIME: OnceLock<u64> = OnceLock::new();
    if let Some(b) = BTIME.get() {
        return Ok(*b);
    }
    let path = Path::new("/proc/stat");
    let text = read_bounded(std::process::id(), path, MAX_PROC_STAT)?;
    let stats = ::procfs::KernelStats::from_read(&text[..], &system_info())
        .map_err(|e| parse_error(path, e.to_string()))?;
    Ok(*BTIME.get_or_init(|| stats.btime))
}

/// The soft "Max open files" of `/proc/PID/limits`; `None` when unlimited.
/// Parsed by hand: procfs parses all sixteen limits into a map, 15 us where
/// finding the one line takes 0.4 us, and the breakdown reads this file on
/// every sample.
pub(crate) fn max_open_files(pid: u32, dir: &Path) -> Result<Option<u64>, Error> {
    let path = dir.join("limits");
    let bytes = read_bounded(pid, &path, MAX_LIMITS)?;
    let text = String::from_utf8_lossy(&bytes);
    procfs::parse_max_open_files(&text).map_err(|m| parse_error(&path, m))
}

/// Threads grouped by name. The names are the `comm` field of each thread's
/// own `stat` (the same text as `task/TID/comm`); a thread that ends while
/// the list is read is left out.
fn threads_by_name(pid: u32, dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    let task_dir = dir.join("task");
    let process = ::procfs::process::Process::new_with_root(dir.to_path_buf())
        .map_err(|e| proc_error(pid, dir, e))?;
    let tasks = process.tasks().map_err(|e| proc_error(pid, &task_dir, e))?;
    let mut names = Vec::new();
    for task in tasks {
        let stat = match task.and_then(|t| t.stat()) {
            Ok(stat) => stat,
            Err(::procfs::ProcError::NotFound(_)) => continue,
            Err(::procfs::ProcError::Io(e, _)) if vanished(&e) => continue,
            Err(e) => return Err(proc_error(pid, &task_dir, e)),
        };
        names.push(stat.comm);
    }
    Ok(procfs::group_counts(names))
}

/// How long a process's fd limit is reused before `/proc/PID/limits` is
/// read again (it changes only through `setrlimit`/`prlimit`).
const LIMIT_TTL: Duration = Duration::from_secs(10);
/// Most processes whose fd limit is remembered.
const LIMIT_CACHE: usize = 4096;

/// The soft fd limit of `pid`, read from `/proc/PID/limits` at most every
/// [`LIMIT_TTL`] per process (keyed by pid and start time, so a reused pid is
/// read afresh), and always when `fresh`. Reading the file is about half the
/// cost of a count-only sample.
fn fd_limit(pid: u32, dir: &Path, start_ticks: u64, fresh: bool) -> Result<Option<u64>, Error> {
    type Cache = HashMap<(u32, u64), (Instant, Option<u64>)>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (pid, start_ticks);
    if !fresh {
        let c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, limit)) = c.get(&key)
            && at.elapsed() < LIMIT_TTL
        {
            return Ok(*limit);
        }
    }
    let limit = max_open_files(pid, dir)?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= LIMIT_CACHE {
        c.clear();
    }
    c.insert(key, (Instant::now(), limit));
    Ok(limit)
}

/// The process's `stat` fields and its CPU seconds, read the cheap way.
///
/// `/proc/PID/stat` sums CPU time and page faults over every thread, which
/// made it most of a count-only sample's cost on a 1000-thread process. The
/// group leader's own `/proc/PID/task/PID/stat` has the same process-wide
/// thread count, memory and start time without those loops, and the process
/// CPU clock (`clock_getcpuclockid`) gives the CPU time in nanoseconds with a
/// single loop and no text. When either is refused the whole-process file is
/// read. (A leader that has exited shows 0 memory in both files alike.)
fn stat_and_cpu(pid: u32, dir: &Path) -> Result<(procfs::ProcStat, f64), Error> {
    let ticks = clock_ticks_per_second() as f64;
    let leader_path = dir.join(format!("task/{pid}/stat"));
    let leader = match read_line_file(&leader_path) {
        Ok(text) => Some(procfs::parse_stat(&text).map_err(|m| parse_error(&leader_path, m))?),
        Err(e) if vanished(&e) => None,
        Err(e) => return Err(io_error(pid, &leader_path, e)),
    };
    if let Some(stat) = leader
        && let Some(cpu) = process_cpu_seconds(pid)
    {
        return Ok((stat, cpu));
    }
    let stat_path = dir.join("stat");
    let stat_text = read_line_file(&stat_path).map_err(|e| io_error(pid, &stat_path, e))?;
    let stat = procfs::parse_stat(&stat_text).map_err(|m| parse_error(&stat_path, m))?;
    let cpu = (stat.utime_ticks + stat.stime_ticks) as f64 / ticks;
    Ok((stat, cpu))
}

/// Reads a one-line `/proc` file (such as `stat`) with one `read` into a
/// stack buffer: `fs::read_to_string` also `statx`es the file and reads again
/// to see EOF, and on this kind of machine each syscall is over a microsecond.
/// A seq_file that fits hands over its whole text, ending in `\n`, in the
/// first read; anything else is read on to EOF, up to [`MAX_STAT_LINE`]
/// bytes in all.
fn read_line_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = [0u8; 1024];
    let n = file.read(&mut buf)?;
    let mut bytes = buf[..n].to_vec();
    if !(n > 0 && n < buf.len() && bytes.ends_with(b"\n")) {
        file.take(MAX_STAT_LINE - n as u64)
            .read_to_end(&mut bytes)?;
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Most bytes read of a `stat` file: 52 numbers and a comm of at most 64
/// bytes fit in well under this.
const MAX_STAT_LINE: u64 = 4096;

/// User + system CPU seconds of the whole process from its CPU clock, or
/// `None` when the kernel refuses (the process is gone, or lives in another
/// pid namespace than the one `/proc` shows).
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t for the call.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; an invalid clock id only
    // makes the call fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Takes one sample of `target`. Errors with [`Error::ProcessGone`] if the
/// process does not exist (or exits while being sampled).
pub fn sample(target: Target, opts: &SampleOptions) -> Result<ResourceSample, Error> {
    let time = SystemTime::now();
    let own_pid = std::process::id();
    let pid = match target {
        Target::SelfProcess => own_pid,
        Target::Pid(p) => p,
    };
    let is_self = pid == own_pid;
    let dir = PathBuf::from(format!("/proc/{pid}"));

    let (stat, cpu_seconds) = stat_and_cpu(pid, &dir)?;

    let open_fds = fds::count(pid, &dir, is_self)?;

    let fd_limit = fd_limit(pid, &dir, stat.start_time_ticks, opts.fd_breakdown)?;

    let (fds_by_kind, tcp_by_state) = if opts.fd_breakdown || opts.tcp_states {
        let targets = fds::targets(pid, &dir, is_self)?;
        let inodes = fds::socket_inodes(&targets);
        let sockets = tcp::resolve(pid, &dir, inodes.iter().copied())?;
        let kinds = opts
            .fd_breakdown
            .then(|| fds::breakdown(&targets, &sockets));
        let states = opts.tcp_states.then(|| tcp::states(&inodes, &sockets));
        (kinds, states)
    } else {
        (None, None)
    };

    let threads_by_name = if opts.thread_names {
        Some(threads_by_name(pid, &dir)?)
    } else {
        None
    };

    let ticks = clock_ticks_per_second() as f64;
    let btime = boot_time()?;
    Ok(ResourceSample {
        pid,
        time,
        threads: stat.num_threads,
        threads_by_name,
        open_fds,
        fd_limit,
        fds_by_kind,
        tcp_by_state,
        rss_bytes: stat.rss_pages.saturating_mul(page_size()),
        virtual_bytes: stat.vsize_bytes,
        cpu_seconds,
        start_time_seconds: btime as f64 + stat.start_time_ticks as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soft fd limit through procfs, from captured `limits` files laid
    /// out as a `/proc/PID` directory.
    #[test]
    fn max_open_files_from_captured_limits() {
        let dir = std::env::temp_dir().join(format!("leakscope-limits-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let limits = dir.join("limits");
        fs::write(
            &limits,
            include_str!("../../tests/data/resource/limits.txt"),
        )
        .unwrap();
        assert_eq!(max_open_files(1, &dir).unwrap(), Some(1024));
        let unlimited = include_str!("../../tests/data/resource/limits_unlimited.txt");
        fs::write(&limits, unlimited).unwrap();
        assert_eq!(max_open_files(1, &dir).unwrap(), None);
        fs::write(&limits, "Limit Soft Hard Units\n").unwrap();
        assert!(matches!(
            max_open_files(1, &dir),
            Err(Error::ProcParse { .. })
        ));
        fs::write(&limits, vec![b'x'; MAX_LIMITS as usize + 1]).unwrap();
        assert!(matches!(
            max_open_files(1, &dir),
            Err(Error::ProcParse { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            max_open_files(1, &dir),
            Err(Error::ProcessGone { pid: 1 })
        ));
    }
}
