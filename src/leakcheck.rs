//! `LeakCheck`: a test helper that fails a test whose body leaves threads,
//! file descriptors, tokio tasks or heap behind, in the manner of Go's
//! [goleak](https://github.com/uber-go/goleak).
//!
//! # Quick start
//!
//! Wrap the body of a test in [`LeakCheck::check`]. It records what the
//! process holds, runs the body, then waits (up to
//! [`LeakCheck::DEFAULT_TIMEOUT`]) for everything to come back to that
//! baseline, and returns a [`LeakReport`] naming what did not:
//!
//! ```no_run
//! use leakscope::leakcheck::LeakCheck;
//!
//! // In a #[test] function:
//! let sum = LeakCheck::new()
//!     .check(|| {
//!         let worker = std::thread::Builder::new()
//!             .name("adder".into())
//!             .spawn(|| 2 + 2)
//!             .expect("spawn");
//!         worker.join().expect("join")
//!     })
//!     .unwrap_or_else(|report| panic!("{report}"));
//! assert_eq!(sum, 4);
//! ```
//!
//! In async tests use [`LeakCheck::check_async`], or take the baseline and
//! verify by hand around the part under test. [`LeakCheck::verify_async`]
//! waits with `tokio::time::sleep`, so it never blocks the runtime (whose
//! time driver must be enabled, as `#[tokio::test]` and `#[tokio::main]`
//! do):
//!
//! ```no_run
//! # async fn demo() {
//! use leakscope::leakcheck::LeakCheck;
//!
//! // In a #[tokio::test(flavor = "multi_thread")] function:
//! let check = LeakCheck::new();
//! let baseline = check.snapshot();
//! let task = tokio::spawn(async { 40 + 2 });
//! assert_eq!(task.await.expect("join"), 42);
//! check
//!     .verify_async(&baseline)
//!     .await
//!     .unwrap_or_else(|report| panic!("{report}"));
//! # }
//! ```
//!
//! A failing check reads like this:
//!
//! ```text
//! leakscope LeakCheck: leaks after the test body (waited 2.0 s):
//!   threads: 1 new
//!     leaky-thread (tid 1234)
//!   fds: 1 new
//!     7 -> /dev/null
//!   tokio tasks: 3 -> 4 (+1)
//!   heap: +12.0 MiB allocated (tolerance 1.0 MiB)
//! ```
//!
//! # Tuning
//!
//! What a test may legitimately leave behind is told with the builder:
//!
//! ```no_run
//! use std::time::Duration;
//! use leakscope::leakcheck::LeakCheck;
//!
//! let check = LeakCheck::new()
//!     .ignore_thread("tokio-rt-worker") // an idle blocking-pool thread
//!     .ignore_fd("anon_inode:[eventfd]") // substring of the fd target
//!     .ignore_fd("socket:[*]") // `*` makes a glob over the whole target
//!     .heap_tolerance(4 << 20) // caches filled on first use
//!     .timeout(Duration::from_secs(5)) // slow shutdowns
//!     .skip_tasks();
//! # drop(check);
//! ```
//!
//! # What "back to the baseline" means
//!
//! | resource | read from | leak when |
//! |----------|-----------|-----------|
//! | threads | `/proc/self/task/*/comm` | a thread whose tid was not in the baseline is alive, and does not take the place of a baseline thread of its name that ended |
//! | fds | `readlink /proc/self/fd/*` | an fd number that was not open, or now points at another target |
//! | tokio tasks | `Handle::try_current()`, `metrics().num_alive_tasks()` | more alive tasks than in the baseline |
//! | heap | jemalloc's `stats.allocated` | more than the baseline plus [`LeakCheck::heap_tolerance`] |
//!
//! Threads are compared by tid and reported by name. Thread pools replace
//! their threads (tokio may run a worker on another thread than the one it
//! started for it, and retire idle blocking threads), so a baseline thread
//! that ended leaves its place to one new thread of the same name. Threads
//! and fds that end or close are never a leak: a body may close what it did
//! not open.
//!
//! The checks are retried with a backoff (10 ms doubling to 200 ms) until
//! all pass or [`LeakCheck::timeout`] has passed, which gives threads a
//! moment to exit, sockets to close and tasks to be dropped after the body
//! returns. A report gives what the last reading still found.
//!
//! Tokio tasks are counted only when both the snapshot and the check run
//! inside a runtime (the same one: tokio cannot tell runtimes apart here).
//! The heap is checked only when jemalloc is the global allocator, which a
//! test binary gets from `leakscope::enable_heap_profiling!();` at the top
//! of its file; otherwise the check is skipped and [`Baseline::notes`] and
//! the report say so.
//!
//! # Tests that run in parallel
//!
//! These are readings of the whole process. The tests of one binary run on
//! parallel threads, and each one's threads, runtimes and sockets show up
//! in the others' readings. Run the checked tests one at a time (a static
//! `Mutex` held by each; build runtimes after taking it), or give a checked
//! test a binary of its own. The harness names each test's thread after the
//! test, so `ignore_thread("my_module::")` ignores the tests waiting for
//! the lock; the threads a test spawns carry its thread's name until they
//! name themselves (unnamed ones keep it), so a test holding the lock is
//! best renamed, e.g. by writing to `/proc/thread-self/comm`.
//!
//! # Caveats
//!
//! - Thread names are those the kernel keeps, cut to 15 bytes
//!   (`tokio-runtime-worker` reads `tokio-runtime-w`); a longer ignore
//!   pattern is cut the same way before it is compared with such a name.
//! - tokio's blocking pool (`spawn_blocking`, and what uses it) keeps idle
//!   threads for 10 s: shorten `Builder::thread_keep_alive` below the
//!   check's timeout, or ignore `tokio-rt-worker`.
//! - What [`LeakCheck::check`] returns is still alive when it is verified:
//!   return plain values, not the handles under test.
//! - jemalloc counts objects kept in its per-thread caches as allocated;
//!   keep the heap tolerance above a few hundred KiB.
//! - Linux only: without `/proc` the thread and fd checks are skipped with a
//!   note.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leakscope_agent::client::backoff::Backoff;

/// Pace of the re-reads after the body: 10 ms, doubling up to 200 ms.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(10),
    max: Duration::from_millis(200),
};

/// Longest thread name the kernel keeps (`TASK_COMM_LEN - 1`).
const COMM_LEN: usize = 15;

/// Most lines printed per section of a [`LeakReport`].
const MAX_LINES: usize = 50;

/// Most listings of `/proc/PID/task` in one reading.
const LISTINGS: usize = 4;

/// Checks that a test body leaves no threads, fds, tokio tasks or heap
/// behind. See the [module docs](self) for a tutorial.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeakCheck {
    timeout: Duration,
    heap_tolerance: u64,
    ignore_threads: Vec<String>,
    ignore_fds: Vec<String>,
    check_heap: bool,
    check_tasks: bool,
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl LeakCheck {
    /// How long [`verify`](Self::verify) waits for things to come back by
    /// default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Heap growth allowed by default (1 MiB).
    pub const DEFAULT_HEAP_TOLERANCE: u64 = 1 << 20;

    /// A check with the defaults: [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT),
    /// [`DEFAULT_HEAP_TOLERANCE`](Self::DEFAULT_HEAP_TOLERANCE), every
    /// resource checked, nothing ignored.
    pub fn new() -> Self {
        LeakCheck {
            timeout: Self::DEFAULT_TIMEOUT,
            heap_tolerance: Self::DEFAULT_HEAP_TOLERANCE,
            ignore_threads: Vec::new(),
            ignore_fds: Vec::new(),
            check_heap: true,
            check_tasks: true,
        }
    }

    /// Ignores new threads whose name matches `pattern`: a substring, or,
    /// when it contains `*`, a glob over the whole name (`*` stands for any
    /// run of characters). May be given several times.
    #[must_use]
    pub fn ignore_thread(mut self, pattern: &str) -> Self {
        self.ignore_threads.push(pattern.to_owned());
        self
    }

    /// Ignores new fds whose target matches `pattern` (substring, or glob
    /// with `*`, as for [`ignore_thread`](Self::ignore_thread)), e.g.
    /// `"anon_inode:[eventfd]"` or `"socket:*"`. May be given several times.
    #[must_use]
    pub fn ignore_fd(mut self, pattern: &str) -> Self {
        self.ignore_fds.push(pattern.to_owned());
        self
    }

    /// Bytes the heap may grow by before it counts as a leak.
    #[must_use]
    pub fn heap_tolerance(mut self, bytes: u64) -> Self {
        self.heap_tolerance = bytes;
        self
    }

    /// How long to wait for everything to come back to the baseline. Zero
    /// reads once, without waiting.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Does not check the heap.
    #[must_use]
    pub fn skip_heap(mut self) -> Self {
        self.check_heap = false;
        self
    }

    /// Does not check tokio tasks.
    #[must_use]
    pub fn skip_tasks(mut self) -> Self {
        self.check_tasks = false;
        self
    }

    /// Records the threads, fds, tokio tasks and heap of the process now.
    pub fn snapshot(&self) -> Baseline {
        let mut notes = Vec::new();
        let threads = read_or_note(read_threads(), "threads", &mut notes);
        let fds = read_or_note(read_fds(), "fds", &mut notes);
        let tasks = self.check_tasks.then(tokio_tasks).flatten();
        // The heap last, so the maps above are part of the baseline.
        let allocated = match self.check_heap.then(allocated_bytes) {
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(note)) => {
                notes.push(note.to_owned());
                None
            }
            None => None,
        };
        Baseline {
            reading: Reading {
                threads,
                fds,
                tasks,
                allocated,
            },
            notes,
        }
    }

    /// Waits, sleeping the thread between reads, until the process is back
    /// to `baseline`; gives the leaks of the last read after the timeout.
    ///
    /// Blocks the calling thread: inside a tokio runtime use
    /// [`verify_async`](Self::verify_async).
    pub fn verify(&self, baseline: &Baseline) -> Result<(), LeakReport> {
        let mut pace = Pace::start(self.timeout);
        let mut names = baseline.thread_names();
        loop {
            let report = self.compare(baseline, &mut names, pace.waited());
            if report.is_clean() {
                return Ok(());
            }
            match pace.next_delay() {
                Some(delay) => std::thread::sleep(delay),
                None => return Err(report),
            }
        }
    }

    /// As [`verify`](Self::verify), waiting with `tokio::time::sleep` so
    /// the runtime keeps running (and can finish the tasks being waited
    /// for). Needs a runtime with the time driver enabled.
    pub async fn verify_async(&self, baseline: &Baseline) -> Result<(), LeakReport> {
        let mut pace = Pace::start(self.timeout);
        let mut names = baseline.thread_names();
        loop {
            let report = self.compare(baseline, &mut names, pace.waited());
            if report.is_clean() {
                return Ok(());
            }
            match pace.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(report),
            }
        }
    }

    /// Takes a [`snapshot`](Self::snapshot), runs `body`, and
    /// [`verify`](Self::verify)s. A panic in `body` goes through unchecked.
    pub fn check<T>(&self, body: impl FnOnce() -> T) -> Result<T, LeakReport> {
        let baseline = self.snapshot();
        let out = body();
        self.verify(&baseline)?;
        Ok(out)
    }

    /// Takes a [`snapshot`](Self::snapshot) when first polled, awaits
    /// `body`, and [`verify_async`](Self::verify_async)s.
    pub async fn check_async<F: Future>(&self, body: F) -> Result<F::Output, LeakReport> {
        let baseline = self.snapshot();
        let out = body.await;
        self.verify_async(&baseline).await?;
        Ok(out)
    }

    /// Reads the process now and lists what differs from `baseline`.
    ///
    /// `names` holds the last names seen of the baseline's threads (a new
    /// thread carries its creator's name until it names itself); this
    /// reading updates it.
    fn compare(
        &self,
        baseline: &Baseline,
        names: &mut BTreeMap<u32, String>,
        waited: Duration,
    ) -> LeakReport {
        let base = &baseline.reading;
        let mut notes = baseline.notes.clone();
        let now = Reading {
            // The heap first, so this reading's own maps are not growth.
            allocated: (self.check_heap && base.allocated.is_some())
                .then(allocated_bytes)
                .and_then(Result::ok),
            threads: base
                .threads
                .as_ref()
                .and_then(|_| read_or_note(read_threads(), "threads", &mut notes)),
            fds: base
                .fds
                .as_ref()
                .and_then(|_| read_or_note(read_fds(), "fds", &mut notes)),
            tasks: self.check_tasks.then(tokio_tasks).flatten(),
        };
        let mut report = self.diff(base, &now, names);
        report.more.waited = waited;
        notes.append(&mut report.more.notes);
        report.more.notes = notes;
        report
    }

    /// What `now` holds beyond `base`, by the rules of the module docs;
    /// updates `names` (see [`compare`](Self::compare)).
    fn diff(&self, base: &Reading, now: &Reading, names: &mut BTreeMap<u32, String>) -> LeakReport {
        let mut report = LeakReport {
            threads: Vec::new(),
            fds: Vec::new(),
            tasks: None,
            heap_growth: None,
            more: Box::new(ReportDetails {
                heap_tolerance: self.heap_tolerance,
                waited: Duration::ZERO,
                replaced: BTreeMap::new(),
                notes: Vec::new(),
            }),
        };
        if let (Some(before), Some(after)) = (&base.threads, &now.threads) {
            // Thread pools replace threads (tokio may run a worker on
            // another thread than the one it started for it): a baseline
            // thread that ended leaves a place for one new thread of its
            // name.
            let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
            for (tid, name) in names.iter_mut() {
                match after.get(tid) {
                    Some(now) => name.clone_from(now),
                    None => *ended.entry(name.as_str()).or_default() += 1,
                }
            }
            for (&tid, name) in after {
                if before.contains_key(&tid) || self.thread_ignored(name) {
                    continue;
                }
                if let Some(places) = ended.get_mut(name.as_str())
                    && *places > 0
                {
                    *places -= 1;
                    continue;
                }
                report.threads.push((name.clone(), tid));
            }
            report.threads.sort();
        }
        if let (Some(before), Some(after)) = (&base.fds, &now.fds) {
            for (&fd, target) in after {
                let old = before.get(&fd);
                if old != Some(target) && !self.fd_ignored(target) {
                    report.fds.push((fd, target.clone()));
                    if let Some(old) = old {
                        report.more.replaced.insert(fd, old.clone());
                    }
                }
            }
        }
        match (base.tasks, now.tasks) {
            (Some(before), Some(after)) if after > before => {
                report.tasks = Some((before, after));
            }
            (Some(_), None) => report.more.notes.push(
                "tokio tasks not checked: the baseline was taken inside a runtime, \
                 the check ran outside one"
                    .to_owned(),
            ),
            _ => {}
        }
        if let (Some(before), Some(after)) = (base.allocated, now.allocated) {
            let growth = i64::try_from(after)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(before).unwrap_or(i64::MAX));
            if growth > i64::try_from(self.heap_tolerance).unwrap_or(i64::MAX) {
                report.heap_growth = Some(growth);
            }
        }
        report
    }

    fn thread_ignored(&self, name: &str) -> bool {
        self.ignore_threads.iter().any(|p| {
            // The kernel cut the name to 15 bytes: cut a longer pattern too.
            let p = if name.len() == COMM_LEN && p.len() > COMM_LEN {
                truncate(p, COMM_LEN)
            } else {
                p.as_str()
            };
            matches(p, name)
        })
    }

    fn fd_ignored(&self, target: &str) -> bool {
        self.ignore_fds.iter().any(|p| matches(p, target))
    }
}

/// What the process held when [`LeakCheck::snapshot`] was taken.
#[derive(Debug, Clone)]
pub struct Baseline {
    reading: Reading,
    notes: Vec<String>,
}

impl Baseline {
    /// Threads by tid, with their names; `None` when `/proc` could not be
    /// read.
    pub fn threads(&self) -> Option<&BTreeMap<u32, String>> {
        self.reading.threads.as_ref()
    }

    /// Open fds with their `readlink` targets; `None` when `/proc` could not
    /// be read.
    pub fn fds(&self) -> Option<&BTreeMap<i32, String>> {
        self.reading.fds.as_ref()
    }

    /// Alive tasks of the current tokio runtime, `None` outside one (or
    /// with [`LeakCheck::skip_tasks`]).
    pub fn tokio_tasks(&self) -> Option<usize> {
        self.reading.tasks
    }

    /// jemalloc's `stats.allocated`, `None` when the heap is not checked.
    pub fn allocated(&self) -> Option<u64> {
        self.reading.allocated
    }

    /// Names of the baseline's threads by tid (empty when unread).
    fn thread_names(&self) -> BTreeMap<u32, String> {
        self.reading.threads.clone().unwrap_or_default()
    }

    /// Why some check will be skipped, e.g. "heap not checked: jemalloc is
    /// not the global allocator ...". Empty when every check can run.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// One reading of the process; `None` for what could not be read (or is
/// not checked).
#[derive(Debug, Clone)]
struct Reading {
    threads: Option<BTreeMap<u32, String>>,
    fds: Option<BTreeMap<i32, String>>,
    tasks: Option<usize>,
    allocated: Option<u64>,
}

/// What was still leaked when [`LeakCheck::verify`] gave up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeakReport {
    /// New threads as `(name, tid)`, sorted by name then tid.
    pub threads: Vec<(String, u32)>,
    /// New or reopened fds as `(fd, target)`, sorted by fd.
    pub fds: Vec<(i32, String)>,
    /// Alive tokio tasks `(before, after)`, when there are more after.
    pub tasks: Option<(usize, usize)>,
    /// Growth of jemalloc's allocated bytes, when above the tolerance.
    pub heap_growth: Option<i64>,
    /// The rest, boxed to keep `Result<_, LeakReport>` small.
    more: Box<ReportDetails>,
}

/// The parts of a [`LeakReport`] read through its methods.
#[derive(Debug, Clone)]
struct ReportDetails {
    heap_tolerance: u64,
    waited: Duration,
    /// Previous targets of the reopened fds.
    replaced: BTreeMap<i32, String>,
    notes: Vec<String>,
}

impl LeakReport {
    /// How long the check waited before giving up.
    pub fn waited(&self) -> Duration {
        self.more.waited
    }

    /// Checks that were skipped, and why.
    pub fn notes(&self) -> &[String] {
        &self.more.notes
    }

    fn is_clean(&self) -> bool {
        self.threads.is_empty()
            && self.fds.is_empty()
            && self.tasks.is_none()
            && self.heap_growth.is_none()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "leakscope LeakCheck: leaks after the test body (waited {:.1} s):",
            self.more.waited.as_secs_f64()
        )?;
        if !self.threads.is_empty() {
            write!(f, "\n  threads: {} new", self.threads.len())?;
            let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (name, tid) in &self.threads {
                groups.entry(name).or_default().push(*tid);
            }
            for (i, (name, tids)) in groups.iter().enumerate() {
                if i == MAX_LINES {
                    write!(f, "\n    ... and {} more names", groups.len() - i)?;
                    break;
                }
                match tids.as_slice() {
                    [tid] => write!(f, "\n    {name} (tid {tid})")?,
                    _ => {
                        let shown: Vec<String> = tids.iter().take(8).map(u32::to_string).collect();
                        let more = if tids.len() > 8 { ", ..." } else { "" };
                        write!(
                            f,
                            "\n    {name} x{} (tids {}{more})",
                            tids.len(),
                            shown.join(", ")
                        )?;
                    }
                }
            }
        }
        if !self.fds.is_empty() {
            let reopened = self.more.replaced.len();
            let new = self.fds.len() - reopened;
            match (new, reopened) {
                (_, 0) => write!(f, "\n  fds: {new} new")?,
                (0, _) => write!(f, "\n  fds: {reopened} reopened")?,
                _ => write!(f, "\n  fds: {new} new, {reopened} reopened")?,
            }
            for (i, (fd, target)) in self.fds.iter().enumerate() {
                if i == MAX_LINES {
                    write!(f, "\n    ... and {} more", self.fds.len() - i)?;
                    break;
                }
                match self.more.replaced.get(fd) {
                    Some(old) => write!(f, "\n    {fd} -> {target} (was {old})")?,
                    None => write!(f, "\n    {fd} -> {target}")?,
                }
            }
        }
        if let Some((before, after)) = self.tasks {
            write!(
                f,
                "\n  tokio tasks: {before} -> {after} (+{})",
                after.saturating_sub(before)
            )?;
        }
        if let Some(growth) = self.heap_growth {
            write!(
                f,
                "\n  heap: +{} allocated (tolerance {})",
                human_bytes(growth.unsigned_abs()),
                human_bytes(self.more.heap_tolerance)
            )?;
        }
        for note in &self.more.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LeakReport {}

/// The clock and backoff of one verification.
struct Pace {
    start: Instant,
    timeout: Duration,
    attempt: u32,
}

impl Pace {
    fn start(timeout: Duration) -> Pace {
        Pace {
            start: Instant::now(),
            timeout,
            attempt: 0,
        }
    }

    fn waited(&self) -> Duration {
        self.start.elapsed()
    }

    /// The wait before the next read, `None` once the timeout has passed.
    /// The last wait is cut short so that the last read falls on the
    /// timeout.
    fn next_delay(&mut self) -> Option<Duration> {
        let left = self.timeout.checked_sub(self.start.elapsed())?;
        if left.is_zero() {
            return None;
        }
        let delay = BACKOFF.delay(self.attempt, 1.0).min(left);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

/// Keeps a reading, or notes why it failed (the check is then skipped).
fn read_or_note<T>(read: io::Result<T>, what: &str, notes: &mut Vec<String>) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("{what} not checked: /proc could not be read: {e}"));
            None
        }
    }
}

/// True for errors meaning "this entry disappeared meanwhile" (a thread
/// exited, an fd was closed between the listing and the read).
fn vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// Threads of this process by tid, with their names (`comm`).
///
/// A listing of `/proc/PID/task` can skip a live thread when another one
/// exits meanwhile, so the directory is listed until two listings agree (at
/// most [`LISTINGS`] times) and every thread seen is kept: a thread missing
/// from the baseline would later look new, one missing from a check would
/// go unseen.
fn read_threads() -> io::Result<BTreeMap<u32, String>> {
    let dir = PathBuf::from(format!("/proc/{}/task", std::process::id()));
    let mut seen = list_threads(&dir)?;
    for _ in 1..LISTINGS {
        let again = list_threads(&dir)?;
        let same = again.keys().eq(seen.keys());
        seen.extend(again);
        if same {
            break;
        }
    }
    Ok(seen)
}

/// One listing of the task directory `dir`.
fn list_threads(dir: &Path) -> io::Result<BTreeMap<u32, String>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let name = match fs::read(entry.path().join("comm")) {
            Ok(bytes) => String::from_utf8_lossy(&bytes)
                .trim_end_matches('\n')
                .to_owned(),
            Err(e) if vanished(&e) => continue,
            // Still a thread, even if its name cannot be read.
            Err(_) => String::from("?"),
        };
        out.insert(tid, name);
    }
    Ok(out)
}

/// Open fds of this process with their `readlink` targets.
fn read_fds() -> io::Result<BTreeMap<i32, String>> {
    let dir = PathBuf::from(format!("/proc/{}/fd", std::process::id()));
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let target = match fs::read_link(entry.path()) {
            Ok(t) => t,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        // The handle of a listing of this very directory (this one, or
        // another thread's) is not the body's.
        if target == dir {
            continue;
        }
        out.insert(fd, target.to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Alive tasks of the tokio runtime the caller runs in.
fn tokio_tasks() -> Option<usize> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.metrics().num_alive_tasks())
}

/// jemalloc's `stats.allocated`, or why the heap cannot be checked.
#[cfg(feature = "heap")]
fn allocated_bytes() -> Result<u64, &'static str> {
    if !jemalloc_is_global() {
        return Err("heap not checked: jemalloc is not the global allocator \
                    (put `leakscope::enable_heap_profiling!();` at the top of the test file)");
    }
    leakscope_agent::heap::allocator_stats()
        .map(|s| s.allocated)
        .ok_or("heap not checked: jemalloc's statistics could not be read")
}

#[cfg(not(feature = "heap"))]
fn allocated_bytes() -> Result<u64, &'static str> {
    Err("heap not checked: leakscope was built without its `heap` feature")
}

/// Whether jemalloc serves Rust's allocations. Linking it (the `heap`
/// feature) makes its statistics readable even when the system allocator is
/// the global one, so ask once: does an 8 MiB allocation show up in them?
/// (Tried three times, in case another thread frees as much meanwhile.)
#[cfg(feature = "heap")]
fn jemalloc_is_global() -> bool {
    use std::sync::OnceLock;
    static GLOBAL: OnceLock<bool> = OnceLock::new();
    *GLOBAL.get_or_init(|| {
        const PROBE: usize = 8 << 20;
        (0..3).any(|_| {
            let Some(before) = leakscope_agent::heap::allocator_stats() else {
                return false;
            };
            let probe: Vec<u8> = std::hint::black_box(Vec::with_capacity(PROBE));
            let after = leakscope_agent::heap::allocator_stats();
            drop(std::hint::black_box(probe));
            after.is_some_and(|a| a.allocated >= before.allocated + PROBE as u64 / 2)
        })
    })
}

/// `pattern` as a substring of `text`, or, when it has a `*`, as a glob over
/// the whole of `text`.
fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let mut rest: Vec<&str> = parts.collect();
    let Some(last) = rest.pop() else {
        return text.contains(pattern);
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    for middle in rest {
        match tail.find(middle) {
            Some(at) => tail = &tail[at + middle.len()..],
            None => return false,
        }
    }
    tail.ends_with(last)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `12.0 MiB`, `3.5 KiB`, `512 B`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
