//! The jemalloc side of heap profiling: `mallctl` reads of the profiler's
//! settings and `prof.dump` into an anonymous in-memory file (memfd).
//!
//! jemalloc writes a dump by `creat()`ing the path it is given. We create a
//! memfd and give it `/proc/self/fd/<fd>`, which reopens the same in-memory
//! file, then read it back from offset 0, so nothing touches the disk. If
//! that fails (no memfd, no /proc), a private temporary file in
//! `std::env::temp_dir()` is used and deleted afterwards.

use std::ffi::{CString, c_char};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tikv_jemalloc_ctl::raw;

use super::{HeapState, RawHeapProfile, dump as parser};
use crate::error::{Error, Result};

const OPT_PROF: &str = "opt.prof\0";
const OPT_LG_PROF_SAMPLE: &str = "opt.lg_prof_sample\0";
const OPT_PROF_ACCUM: &str = "opt.prof_accum\0";
const PROF_ACTIVE: &str = "prof.active\0";
const PROF_DUMP: &str = "prof.dump\0";

/// jemalloc's dumps are not meant to run concurrently; one at a time here.
static DUMP_LOCK: Mutex<()> = Mutex::new(());

/// Makes temporary file names unique within the process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The error for a failed mallctl call on `name` (given NUL-terminated).
fn ctl_error(name: &'static str, e: tikv_jemalloc_ctl::Error) -> Error {
    Error::Jemalloc {
        name: name.trim_end_matches('\0'),
        message: e.to_string(),
    }
}

fn read_bool(name: &'static str) -> Result<bool> {
    // SAFETY: `name` is NUL-terminated and each boolean control read here
    // (opt.prof, opt.prof_accum, prof.active) is a C `bool` in jemalloc, which
    // has the size and representation of Rust's `bool`.
    unsafe { raw::read::<bool>(name.as_bytes()) }.map_err(|e| ctl_error(name, e))
}

fn read_usize(name: &'static str) -> Result<usize> {
    // SAFETY: `name` is NUL-terminated and opt.lg_prof_sample is a `size_t`
    // in jemalloc; every bit pattern is a valid `usize`.
    unsafe { raw::read::<usize>(name.as_bytes()) }.map_err(|e| ctl_error(name, e))
}

fn read_state() -> Result<HeapState> {
    if !read_bool(OPT_PROF)? {
        return Ok(HeapState::Disabled);
    }
    let lg = read_usize(OPT_LG_PROF_SAMPLE)?;
    let sample_interval = u32::try_from(lg)
        .ok()
        .and_then(|lg| 1u64.checked_shl(lg))
        .ok_or_else(|| Error::Jemalloc {
            name: OPT_LG_PROF_SAMPLE.trim_end_matches('\0'),
            message: format!("out of range: {lg}"),
        })?;
    Ok(HeapState::Enabled {
        sample_interval,
        accum: read_bool(OPT_PROF_ACCUM)?,
        active: read_bool(PROF_ACTIVE)?,
    })
}

/// See [`super::state`].
pub(super) fn state() -> HeapState {
    read_state().unwrap_or(HeapState::Disabled)
}

/// Whether `opt.prof` is set; a failure to read it counts as off.
fn profiling_enabled() -> bool {
    matches!(read_bool(OPT_PROF), Ok(true))
}

/// See [`super::dump`].
pub(super) fn dump() -> Result<RawHeapProfile> {
    if !profiling_enabled() {
        return Err(Error::HeapProfilingDisabled);
    }
    let _guard = DUMP_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let time = SystemTime::now();
    let text = match dump_to_memfd() {
        Ok(text) => text,
        Err(_) => dump_to_temp_file()?,
    };
    let mut profile = parser::parse(&text)?;
    profile.time = time;
    Ok(profile)
}

/// Asks jemalloc to write its heap profile to `path`.
fn prof_dump(path: &Path) -> Result<()> {
    let c_path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::Jemalloc {
            name: PROF_DUMP.trim_end_matches('\0'),
            message: format!("dump path contains a NUL byte: {}", path.display()),
        })?;
    let ptr: *const c_char = c_path.as_ptr();
    // SAFETY: `PROF_DUMP` is NUL-terminated; prof.dump takes a
    // `const char *` (the value is passed by value, a pointer) to a
    // NUL-terminated path that it only reads during the call; `c_path`
    // outlives the call.
    unsafe { raw::write::<*const c_char>(PROF_DUMP.as_bytes(), ptr) }
        .map_err(|e| ctl_error(PROF_DUMP, e))
}

/// Dumps into an anonymous memfd and reads it back.
fn dump_to_memfd() -> Result<String> {
    let name = c"leakscope-heap";
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no
    // other memory-safety preconditions.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Io {
            context: "creating a memfd for the heap dump",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by memfd_create, is open, and nothing
    // else owns it; the OwnedFd closes it exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = File::from(fd);
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    prof_dump(&path)?;
    read_all(&mut file)
}

/// Dumps into a fresh private file in the temporary directory, reads it and
/// deletes it.
fn dump_to_temp_file() -> Result<String> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "leakscope-heap-{}-{}-{nanos}.heap",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // Create it ourselves (exclusively, mode 0600) so that jemalloc's creat()
    // only truncates our own file and never follows someone else's link.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io {
                context: "creating a temporary file for the heap dump",
                source,
            })?
    };
    let result = prof_dump(&path).and_then(|()| read_all(&mut file));
    // Best effort: the dump has been read (or failed) either way.
    let _ = std::fs::remove_file(&path);
    result
}

fn read_all(file: &mut File) -> Result<String> {
    let io = |source| Error::Io {
        context: "reading the heap dump",
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    // The memory map part may hold non-UTF-8 file names; the counts are ASCII.
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// See [`super::set_sample_interval`].
pub(super) fn set_sample_interval(bytes: u64) -> Result<()> {
    if !profiling_enabled() {
        return Err(Error::HeapProfilingDisabled);
    }
    let lg: usize = bytes.max(1).ilog2() as usize;
    let _guard = DUMP_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: "prof.reset\0" is NUL-terminated and takes a `size_t`: the new
    // lg_prof_sample. jemalloc resets its counters and samples with it from
    // now on.
    unsafe { raw::write::<usize>(b"prof.reset\0", lg) }.map_err(|e| ctl_error("prof.reset", e))
}

/// See [`super::purge`].
pub(super) fn purge() {
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    let name = b"arena.4096.purge\0";
    // SAFETY: a void mallctl: no old value, no new value; the name is
    // NUL-terminated. Purging only returns unused dirty pages to the kernel.
    let _ = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
}

/// See [`super::allocator_stats`].
pub(super) fn allocator_stats() -> Option<super::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Statistics are a snapshot refreshed by advancing the epoch.
    epoch::advance().ok()?;
    Some(super::AllocatorStats {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
    })
}
