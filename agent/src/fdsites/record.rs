//! Recording one fd from inside a wrapper: a thread-local guard against
//! reentry, one `fstat`, a frame-pointer walk from the wrapper's
//! trampoline frame, one seqlock write. No allocation, no locks, errno
//! left as the wrapped call set it; everything here is async-signal-safe
//! (`open` may be called from a signal handler).

use std::cell::Cell;
use std::ffi::c_int;

use super::table::{self, MAX_DEPTH, MAX_FD};
use crate::framechain;

thread_local! {
    /// Set while this thread records: a wrapper entered meanwhile (from a
    /// signal handler) passes through without recording.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Records fd `fd`, just returned by a wrapped call, with the stack above
/// the trampoline frame at `fp`. Does nothing for a negative fd, one at or
/// above [`MAX_FD`], when called while recording on this thread, or when
/// the table cannot be mapped.
///
/// # Safety
/// `fp` must be the address of a live frame record on this thread's
/// stack (`[fp]` the caller's frame pointer, `[fp + 8]` the return address
/// into the caller): the trampoline's own frame.
pub(crate) unsafe fn record(fd: c_int, fp: usize) {
    if fd < 0 || fd as usize >= MAX_FD {
        return;
    }
    let Ok(entered) = RECORDING.try_with(|r| !r.replace(true)) else {
        return;
    };
    if !entered {
        return;
    }
    // SAFETY: __errno_location returns this thread's errno, always valid.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    if let Some(table) = table::global_or_map() {
        // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid stat buffer; fstat on any int is defined.
        if unsafe { libc::fstat(fd, &mut st) } == 0 {
            let mut stack = [0u64; MAX_DEPTH];
            // SAFETY: per this function's contract.
            let n = unsafe { walk(fp as u64, &mut stack) };
            table.write(fd, st.st_dev, st.st_ino, &stack[..n.min(MAX_DEPTH)]);
        }
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
    let _ = RECORDING.try_with(|r| r.set(false));
}

/// Forgets fd `fd` (about to be closed), so a number reused by code that
/// is not wrapped finds no record at all.
pub(crate) fn forget(fd: c_int) {
    if let Some(table) = table::global() {
        table.remove(fd);
    }
}

/// Return addresses above the frame record at `fp`, innermost first: the
/// first is `[fp + 8]`, the return address into the code that called the
/// wrapper. Every read stays below the top of this thread's stack when it
/// is known (see [`stack_top`]).
///
/// # Safety
/// As for [`record`].
pub(crate) unsafe fn walk(fp: u64, out: &mut [u64]) -> usize {
    if fp == 0 || !fp.is_multiple_of(8) {
        return 0;
    }
    let top = stack_top(fp);
    if fp.checked_add(16).is_none_or(|end| end > top) {
        return 0;
    }
    // SAFETY: fp..fp+16 is the caller's live frame record; `follow` keeps
    // every further read below `top` (or within its step limit).
    unsafe { framechain::follow(fp, top, out, |_| true) }
}

/// The lowest known address above `fp` that ends this thread's stack:
/// the thread pointer (glibc puts a thread's control block at the top of
/// its stack mapping, so everything from the stack pointer up to it is
/// mapped), or for the main thread, whose control block is elsewhere,
/// glibc's `__libc_stack_end`. `u64::MAX` when neither is above `fp` (a
/// stack glibc did not allocate: then only the step limit bounds the walk,
/// as in the CPU sampler).
fn stack_top(fp: u64) -> u64 {
    [thread_pointer(), main_stack_end()]
        .into_iter()
        .filter(|b| *b > fp)
        .min()
        .unwrap_or(u64::MAX)
}

/// The thread pointer: `%fs:0` (the control block's pointer to itself).
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads the first word of this thread's TCB, which the x86_64
    // TLS ABI requires to hold the TCB's own address.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// The thread pointer: `TPIDR_EL0`.
#[cfg(target_arch = "aarch64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags));
    }
    tp
}

#[cfg(target_env = "gnu")]
fn main_stack_end() -> u64 {
    unsafe extern "C" {
        /// glibc: the main thread's stack pointer at program start.
        static __libc_stack_end: *const std::ffi::c_void;
    }
    // SAFETY: glibc sets it once before any user code runs and never
    // changes it.
    unsafe { __libc_stack_end as u64 }
}

#[cfg(not(target_env = "gnu"))]
fn main_stack_end() -> u64 {
    0
}

/// The frame pointer of the calling function's frame (for tests: the
/// wrappers' trampolines pass theirs explicitly).
#[cfg(test)]
#[inline(always)]
pub(crate) fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads a register.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn walk_here(out: &mut [u64]) -> usize {
        let fp = frame_pointer();
        // SAFETY: this function's own frame (built with frame pointers).
        unsafe { walk(fp as u64, out) }
    }

    #[inline(never)]
    fn caller_of_walk(out: &mut [u64]) -> usize {
        std::hint::black_box(walk_here(out))
    }

    #[test]
    fn walks_to_the_callers_on_this_and_other_threads() {
        let check = || {
            let mut out = [0u64; MAX_DEPTH];
            let n = caller_of_walk(&mut out);
            // The first address returns into caller_of_walk.
            let f = caller_of_walk as *const () as u64;
            assert!(n >= 2, "{n}");
            assert!(out[0] > f && out[0] < f + 512, "{:#x} vs {f:#x}", out[0]);
            n
        };
        check();
        std::thread::spawn(check).join().unwrap();
    }

    #[test]
    fn stack_top_is_above_the_stack() {
        let local = 0u64;
        let here = &local as *const u64 as u64;
        let top = stack_top(here);
        assert!(top > here);
        assert!(top < u64::MAX, "glibc gives a bound");
        let on_thread = std::thread::spawn(|| {
            let local = 0u64;
            let here = &local as *const u64 as u64;
            (here, stack_top(here))
        })
        .join()
        .unwrap();
        assert!(on_thread.1 > on_thread.0 && on_thread.1 - on_thread.0 < 64 << 20);
    }
}
