//! Creation sites of file descriptors: for every fd the service opens, the
//! call stack of the code that opened it, so the fds profile says
//! "opened in orders::shipping::connect (src/shipping.rs:31)" rather than
//! only what the fd is.
//!
//! Opt-in twice, because it changes how the binary is linked: the cargo
//! feature `fd-sites` defines `__wrap_socket`, `__wrap_open64`, ... (see
//! [`WRAPPED`]), and the service's binary is linked with [`LINK_ARG`]
//! (`-Wl,--wrap=socket,...`), which makes the linker send every call of
//! those functions in the binary to the wrappers. One line in the
//! service's `build.rs`:
//!
//! ```text
//! println!("cargo::rustc-link-arg=-Wl,--wrap=socket,--wrap=socketpair,...");
//! ```
//!
//! (the full line is [`LINK_ARG`]; README "Building for profiling" has it).
//! The feature without the flags fails to link (`undefined symbol:
//! __real_socket`), the flags without the feature too (`undefined symbol:
//! __wrap_socket`).
//!
//! What is recorded: each wrapper calls the original and, when it returned
//! an fd, records the fd's device and inode (one `fstat`) and up to
//! [`MAX_DEPTH`] return addresses walked by frame pointers from the
//! wrapper's frame, the first being the caller's. The record sits in a
//! table indexed by fd number (below [`MAX_FD`]) in memory obtained with
//! `mmap`; writing it never allocates and never takes a lock (see
//! `table`). `close` removes the record.
//!
//! What is not: fds opened inside shared libraries and glibc itself
//! (`fopen`, `opendir`, `getaddrinfo`'s sockets), by raw `syscall`s
//! (tokio's `pidfd_open`), by functions not in [`WRAPPED`] (`memfd_create`,
//! `dup2`, `signalfd`, `inotify_init1`, C code's fortified `__open_2`, ...),
//! inherited from the parent, or numbered [`MAX_FD`] or more. [`lookup`]
//! reports them without a site;
//! an fd whose number was reused by such code since it was recorded is
//! caught by its inode (`stale`). The one case the inode cannot catch: the
//! number closed by code that is not wrapped and the *same file* opened
//! again at the same number by code that is not wrapped.

// Without the feature only the reading side is used (and unit-tested).
#[cfg_attr(not(feature = "fd-sites"), allow(dead_code))]
mod record;
#[cfg_attr(not(feature = "fd-sites"), allow(dead_code))]
mod table;
#[cfg(feature = "fd-sites")]
mod wrap;

use std::collections::HashMap;
use std::fmt;

use crate::resource::{FdListing, FdObject};
use crate::symbolize::ProcessMaps;

pub use table::{MAX_DEPTH, MAX_FD, TABLE_BYTES};
use table::{Read, Table};

/// The functions wrapped, in the order of [`LINK_ARG`]: what Rust's
/// standard library, mio and tokio call on x86_64 and AArch64 glibc to
/// make fds (`socket`, `socketpair`, `accept4`, `open64`, `openat64`,
/// `pipe2`, `epoll_create1`, `eventfd`, `dup`, `fcntl` for `try_clone`),
/// the plain C forms C code linked in calls (`accept`, `open`, `openat`,
/// `creat`, `pipe`, `timerfd_create`), and `close`, which forgets.
pub const WRAPPED: [&str; 17] = [
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "open",
    "open64",
    "openat",
    "openat64",
    "creat",
    "pipe",
    "pipe2",
    "epoll_create1",
    "eventfd",
    "timerfd_create",
    "dup",
    "fcntl",
    "close",
];

/// The linker argument a binary using the `fd-sites` feature needs
/// (through `cargo::rustc-link-arg=` in its `build.rs`, or `-C link-arg=`).
pub const LINK_ARG: &str = "-Wl,--wrap=socket,--wrap=socketpair,--wrap=accept,--wrap=accept4,\
--wrap=open,--wrap=open64,--wrap=openat,--wrap=openat64,--wrap=creat,--wrap=pipe,--wrap=pipe2,\
--wrap=epoll_create1,--wrap=eventfd,--wrap=timerfd_create,--wrap=dup,--wrap=fcntl,--wrap=close";

/// True when this build records creation sites (the `fd-sites` feature).
pub const ENABLED: bool = cfg!(feature = "fd-sites");

/// How many fds of a listing had a creation site, and why the others not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Fds with a recorded site whose inode still matches.
    pub recorded: u64,
    /// Fds with no record: opened before recording started (inherited),
    /// by code that is not wrapped, or by a wrapper while the table could
    /// not be written.
    pub not_recorded: u64,
    /// Fds whose record is of an earlier fd with the same number (another
    /// inode), reused by code that is not wrapped; or closed or being
    /// rewritten while read.
    pub stale: u64,
    /// Fds numbered [`MAX_FD`] or more.
    pub above_limit: u64,
}

impl SiteCounts {
    /// Fds without a site.
    pub fn without(&self) -> u64 {
        self.not_recorded + self.stale + self.above_limit
    }
}

/// `creation sites: 45 of 57 fds; 12 without (9 not recorded: opened
/// before recording or by code not wrapped; 2 stale; 1 numbered 65536 or
/// more)`, the zero parts left out.
impl fmt::Display for SiteCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.recorded + self.without();
        write!(f, "creation sites: {} of {total} fds", self.recorded)?;
        if self.without() == 0 {
            return Ok(());
        }
        write!(f, "; {} without (", self.without())?;
        let mut parts = Vec::new();
        if self.not_recorded > 0 {
            parts.push(format!(
                "{} not recorded: opened before recording or by code not wrapped",
                self.not_recorded
            ));
        }
        if self.stale > 0 {
            parts.push(format!(
                "{} stale: number reused by code not wrapped",
                self.stale
            ));
        }
        if self.above_limit > 0 {
            parts.push(format!("{} numbered {MAX_FD} or more", self.above_limit));
        }
        write!(f, "{})", parts.join("; "))
    }
}

/// The creation sites recorded for the fds of a listing of this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedSites {
    /// By fd number, for fds whose record matches the live fd: addresses
    /// innermost first, each a return address minus one (a call site),
    /// ready for `collect::fds::CreationSites`.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// The tally.
    pub counts: SiteCounts,
}

impl RecordedSites {
    /// Cuts each stack before its first address outside the executable
    /// mappings `maps` (the end of a frame-pointer chain in code built
    /// without frame pointers can leave a word that is no return address).
    pub fn keep_mapped(&mut self, maps: &ProcessMaps) {
        for stack in self.stacks.values_mut() {
            let keep = stack
                .iter()
                .position(|a| maps.find(*a).is_none())
                .unwrap_or(stack.len());
            stack.truncate(keep);
        }
    }
}

/// The recorded creation sites of `listing`'s fds, when it lists this
/// process and this build records them (feature `fd-sites`); `None`
/// otherwise. Each record is checked against the live fd (`fstat`: same
/// device and inode, and the listing's inode where it has one), so a
/// number reused by code that is not wrapped is never given the old
/// site. One `fstat` per fd below [`MAX_FD`].
pub fn lookup(listing: &FdListing) -> Option<RecordedSites> {
    if !ENABLED || listing.pid != std::process::id() {
        return None;
    }
    match table::global() {
        Some(t) => Some(lookup_in(t, listing)),
        // Nothing wrapped ran yet: nothing recorded.
        None => Some(RecordedSites {
            stacks: HashMap::new(),
            counts: SiteCounts {
                not_recorded: listing.fds.len() as u64,
                ..SiteCounts::default()
            },
        }),
    }
}

/// [`lookup`] against the table `t`.
fn lookup_in(t: Table<'_>, listing: &FdListing) -> RecordedSites {
    let mut out = RecordedSites::default();
    for f in &listing.fds {
        let Ok(fd) = i32::try_from(f.fd) else {
            out.counts.above_limit += 1;
            continue;
        };
        if f.fd as usize >= MAX_FD {
            out.counts.above_limit += 1;
            continue;
        }
        let record = match t.read(fd) {
            Read::Empty => {
                out.counts.not_recorded += 1;
                continue;
            }
            Read::Busy => {
                out.counts.stale += 1;
                continue;
            }
            Read::Found(r) => r,
        };
        let live = fstat(fd);
        let listed = listed_inode(&f.object);
        let same = live == Some((record.dev, record.ino)) && listed.is_none_or(|i| i == record.ino);
        if !same {
            out.counts.stale += 1;
            continue;
        }
        out.counts.recorded += 1;
        let stack = record.stack.iter().map(|a| a.saturating_sub(1)).collect();
        out.stacks.insert(f.fd, stack);
    }
    out
}

/// Device and inode of our fd `fd`, `None` if it is closed.
fn fstat(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer; fstat on any int is defined.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// The inode the listing read for an fd, where it shows one.
fn listed_inode(object: &FdObject) -> Option<u64> {
    match object {
        FdObject::Inet(_, s) => Some(s.inode),
        FdObject::Unix(u) => Some(u.inode),
        FdObject::Socket(i) => Some(*i),
        FdObject::Pipe(i) if *i > 0 => Some(*i),
        _ => None,
    }
}

/// Memory of the creation-site table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMemory {
    /// Address space reserved ([`TABLE_BYTES`]).
    pub reserved: usize,
    /// Bytes in memory now: the pages holding entries written so far,
    /// about `MAX_DEPTH * 8 + 24` bytes per fd number up to the highest
    /// recorded.
    pub resident: usize,
}

/// The table's memory, `None` when there is no table (feature off, or no
/// wrapped call yet).
pub fn table_memory() -> Option<TableMemory> {
    table::global().map(|t| TableMemory {
        reserved: TABLE_BYTES,
        resident: t.resident_bytes(),
    })
}

#[cfg(test)]
mod tests;
