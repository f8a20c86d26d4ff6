//! The table of creation sites: one entry per fd number below [`MAX_FD`],
//! in memory from `mmap` (never the global allocator: the wrappers run
//! inside jemalloc's own start-up), each holding the fd's device and inode
//! and the return addresses of the code that opened it.
//!
//! Entries are written under a per-entry sequence counter (a seqlock): a
//! writer makes the counter odd, writes, makes it even again; a reader
//! copies the entry and keeps the copy only if the counter was even and
//! unchanged around it, so it never sees a torn stack. Writers never wait:
//! one that finds the entry being written (an odd counter, or a lost
//! compare-and-swap) gives up, which can only leave an entry the reader's
//! inode check refuses. All fields are atomics, so racing accesses are
//! defined behaviour.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// Fds numbered this or higher are not recorded.
pub const MAX_FD: usize = 65_536;
/// Most return addresses kept per fd (the innermost ones).
pub const MAX_DEPTH: usize = 32;

/// `Entry::len` bit saying the entry holds a record.
const PRESENT: u32 = 1 << 31;

/// One fd number's record.
#[repr(C)]
pub(crate) struct Entry {
    /// Even when stable, odd while being written.
    seq: AtomicU32,
    /// `PRESENT | depth`, or 0 when empty.
    len: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    stack: [AtomicU64; MAX_DEPTH],
}

/// A consistent copy of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// `st_dev` of the fd when it was recorded.
    pub(crate) dev: u64,
    /// `st_ino` of the fd when it was recorded.
    pub(crate) ino: u64,
    /// Return addresses, innermost first.
    pub(crate) stack: Vec<u64>,
}

/// What reading an entry gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// Nothing recorded for this number (or the record was removed).
    Empty,
    /// Being written during every attempt.
    Busy,
    /// A record.
    Found(Record),
}

/// Bytes of the whole table (address space; pages are touched as fds are
/// recorded, so memory in use follows the highest fd number recorded).
pub const TABLE_BYTES: usize = MAX_FD * std::mem::size_of::<Entry>();

/// A view of a table: `MAX_FD` entries in an anonymous private mapping,
/// valid for `'a` (the global one for `'static`; see [`Mapped`]).
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    entries: *const Entry,
    mapping: PhantomData<&'a Entry>,
}

// SAFETY: the entries are atomics only, and the lifetime keeps the view
// within its mapping's life.
unsafe impl Sync for Table<'_> {}
// SAFETY: as above.
unsafe impl Send for Table<'_> {}

/// A table that unmaps its memory when dropped.
pub(crate) struct Mapped(*const Entry);

// SAFETY: as for `Table`.
unsafe impl Sync for Mapped {}
// SAFETY: as for `Table`.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps a zeroed table (all entries empty); `None` when `mmap` fails.
    /// Async-signal-safe: one `mmap`.
    pub(crate) fn new() -> Option<Mapped> {
        // SAFETY: an anonymous private mapping of TABLE_BYTES, no fd; the
        // result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TABLE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Mapped(p.cast::<Entry>()))
    }

    /// The table, for as long as it is mapped (tests use their own).
    #[cfg(test)]
    pub(crate) fn table(&self) -> Table<'_> {
        Table {
            entries: self.0,
            mapping: PhantomData,
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping of TABLE_BYTES; views of it borrow this
        // value, so none outlives it.
        unsafe { libc::munmap(self.0.cast_mut().cast(), TABLE_BYTES) };
    }
}

impl<'a> Table<'a> {
    /// The entry of fd number `fd`, if below [`MAX_FD`].
    fn entry(&self, fd: i32) -> Option<&'a Entry> {
        let i = usize::try_from(fd).ok().filter(|i| *i < MAX_FD)?;
        // SAFETY: `i < MAX_FD` and the mapping holds MAX_FD entries, zeroed
        // memory being a valid (empty) Entry of atomics.
        Some(unsafe { &*self.entries.add(i) })
    }

    /// Records `stack` (innermost first, cut at [`MAX_DEPTH`]) for fd `fd`
    /// with its device and inode. Never waits: gives up when the entry is
    /// being written by someone else. Async-signal-safe.
    pub(crate) fn write(&self, fd: i32, dev: u64, ino: u64, stack: &[u64]) -> bool {
        let Some(e) = self.entry(fd) else {
            return false;
        };
        let Some(seq) = begin(e) else {
            return false;
        };
        let depth = stack.len().min(MAX_DEPTH);
        for (slot, addr) in e.stack.iter().zip(&stack[..depth]) {
            slot.store(*addr, Ordering::Relaxed);
        }
        e.dev.store(dev, Ordering::Relaxed);
        e.ino.store(ino, Ordering::Relaxed);
        e.len.store(PRESENT | depth as u32, Ordering::Relaxed);
        e.seq.store(seq.wrapping_add(2), Ordering::Release);
        true
    }

    /// Empties fd `fd`'s entry (the fd is being closed). Does nothing when
    /// it is empty already or being written. Async-signal-safe.
    pub(crate) fn remove(&self, fd: i32) {
        let Some(e) = self.entry(fd) else {
            return;
        };
        if e.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(seq) = begin(e) else {
            return;
        };
        e.len.store(0, Ordering::Relaxed);
        e.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy of fd `fd`'s entry ([`Read::Busy`] after a few
    /// attempts that each overlapped a write).
    pub(crate) fn read(&self, fd: i32) -> Read {
        let Some(e) = self.entry(fd) else {
            return Read::Empty;
        };
        for _ in 0..8 {
            let before = e.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = e.len.load(Ordering::Relaxed);
            let dev = e.dev.load(Ordering::Relaxed);
            let ino = e.ino.load(Ordering::Relaxed);
            let depth = ((len & !PRESENT) as usize).min(MAX_DEPTH);
            let mut stack = [0u64; MAX_DEPTH];
            for (out, slot) in stack.iter_mut().zip(&e.stack[..depth]) {
                *out = slot.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if e.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if len & PRESENT == 0 {
                return Read::Empty;
            }
            return Read::Found(Record {
                dev,
                ino,
                stack: stack[..depth].to_vec(),
            });
        }
        Read::Busy
    }

    /// Bytes of the table in memory now (pages touched), by `mincore`.
    pub(crate) fn resident_bytes(&self) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(1);
        let pages = TABLE_BYTES.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is our mapping (page-aligned by mmap) and `vec`
        // has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                self.entries.cast_mut().cast(),
                TABLE_BYTES,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return 0;
        }
        vec.iter().filter(|b| **b & 1 == 1).count() * page
    }
}

/// Starts a write: makes the counter odd with one compare-and-swap and
/// returns the even value it had; `None` when someone else is writing.
fn begin(e: &Entry) -> Option<u32> {
    let seq = e.seq.load(Ordering::Relaxed);
    if seq % 2 == 1 {
        return None;
    }
    e.seq
        .compare_exchange(
            seq,
            seq.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .ok()?;
    // The odd counter is ordered before the field stores that follow: a
    // reader that sees any of them sees the counter changed.
    fence(Ordering::Release);
    Some(seq)
}

/// The process's table: 0 before first use, 1 when `mmap` failed, else the
/// address of its entries (a mapping never unmapped).
static GLOBAL: AtomicUsize = AtomicUsize::new(0);
const FAILED: usize = 1;

/// The process's table, mapped on first use (by the first wrapped call);
/// `None` if mapping failed. Async-signal-safe, never allocates.
pub(crate) fn global_or_map() -> Option<Table<'static>> {
    match GLOBAL.load(Ordering::Acquire) {
        FAILED => None,
        0 => {
            let Some(mapped) = Mapped::new() else {
                // Unless another thread mapped one meanwhile: then use it.
                return match GLOBAL.compare_exchange(0, FAILED, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) | Err(FAILED) => None,
                    Err(addr) => Some(at(addr)),
                };
            };
            let addr = mapped.0 as usize;
            match GLOBAL.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // The process's table from now on: never unmapped.
                    std::mem::forget(mapped);
                    Some(at(addr))
                }
                // Another thread mapped one first: use theirs, unmap ours.
                Err(FAILED) => None,
                Err(addr) => Some(at(addr)),
            }
        }
        addr => Some(at(addr)),
    }
}

/// The process's table if some wrapper mapped it.
pub(crate) fn global() -> Option<Table<'static>> {
    match GLOBAL.load(Ordering::Acquire) {
        0 | FAILED => None,
        addr => Some(at(addr)),
    }
}

/// The global table at `addr` (never unmapped).
fn at(addr: usize) -> Table<'static> {
    Table {
        entries: addr as *const Entry,
        mapping: PhantomData,
    }
}
