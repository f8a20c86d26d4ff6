//! The spawner's stack: return addresses of the calling thread's frames,
//! taken by the CPU sampler's frame-pointer walker (its checks, plus the
//! bounds of this thread's stack), not by `std::backtrace`, which unwinds
//! through DWARF tables and costs far more than a spawn should.
//!
//! Complete stacks need frame pointers (`-C force-frame-pointers=yes`, as
//! for CPU profiles). Without the `cpu` feature, or off Linux x86_64 and
//! aarch64, no stack is taken and profiles name spawn sites by file and
//! line only.

// Only the runtime hooks (`--cfg tokio_unstable`) take stacks; the walk is
// unit-tested in every build.
#![cfg_attr(not(all(tokio_unstable, feature = "server")), allow(dead_code))]

/// Prepares what the walk needs (the table of executable mappings) so that
/// the first spawn does not read `/proc/self/maps` on an async worker.
pub(crate) fn prepare() {
    #[cfg(all(feature = "cpu", any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = imp::exec_maps();
}

/// Return addresses of the caller's frames, innermost first, at most
/// `max`. Empty when the stack cannot be walked.
#[inline(never)]
pub(crate) fn spawner_stack(max: usize) -> Vec<u64> {
    #[cfg(all(feature = "cpu", any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        imp::walk(max)
    }
    #[cfg(not(all(feature = "cpu", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        let _ = max;
        Vec::new()
    }
}

#[cfg(all(feature = "cpu", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    use std::cell::Cell;
    use std::sync::OnceLock;

    use crate::cpu::unwind::{ExecMaps, walk_own_stack};

    /// Executable mappings, read once. Code mapped later (dlopen) ends a
    /// walk early when its return address is met; nothing is read there.
    pub(super) fn exec_maps() -> &'static ExecMaps {
        static MAPS: OnceLock<Box<ExecMaps>> = OnceLock::new();
        MAPS.get_or_init(|| Box::new(ExecMaps::from_proc()))
    }

    thread_local! {
        /// This thread's stack as `(lowest, top)`, `(0, 0)` until asked,
        /// `(1, 1)` when it cannot be known.
        static STACK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    /// The bounds of the calling thread's stack, from pthread.
    fn stack_bounds() -> Option<(u64, u64)> {
        let known = STACK.try_with(|c| c.get()).ok()?;
        let bounds = if known == (0, 0) {
            let b = read_bounds().unwrap_or((1, 1));
            let _ = STACK.try_with(|c| c.set(b));
            b
        } else {
            known
        };
        (bounds != (1, 1)).then_some(bounds)
    }

    fn read_bounds() -> Option<(u64, u64)> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: pthread_getattr_np initialises `attr` for the calling
        // thread when it returns 0; it is destroyed below in that case only.
        if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: `attr` was initialised above; `addr` and `size` are valid
        // places for the answer.
        let rc = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
        // SAFETY: initialised above, destroyed once.
        unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
        if rc != 0 || addr.is_null() || size == 0 {
            return None;
        }
        let lo = addr as u64;
        Some((lo, lo.checked_add(size as u64)?))
    }

    /// The frame pointer and stack pointer of the calling function. Inlined
    /// into [`super::spawner_stack`], which is never inlined, so the frame
    /// pointer is that function's own frame (when frame pointers are kept).
    #[inline(always)]
    fn registers() -> (u64, u64) {
        let fp: u64;
        let sp: u64;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: reads two registers, touches no memory.
        unsafe {
            std::arch::asm!(
                "mov {fp}, rbp",
                "mov {sp}, rsp",
                fp = out(reg) fp,
                sp = out(reg) sp,
                options(nomem, nostack, preserves_flags)
            );
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: reads two registers, touches no memory.
        unsafe {
            std::arch::asm!(
                "mov {fp}, x29",
                "mov {sp}, sp",
                fp = out(reg) fp,
                sp = out(reg) sp,
                options(nomem, nostack, preserves_flags)
            );
        }
        (fp, sp)
    }

    #[inline(always)]
    pub(super) fn walk(max: usize) -> Vec<u64> {
        let (fp, sp) = registers();
        let Some((lo, top)) = stack_bounds() else {
            return Vec::new();
        };
        // On another stack (a signal or coroutine stack), the thread's
        // bounds say nothing about this one: take no stack.
        if sp < lo || sp >= top {
            return Vec::new();
        }
        let mut out = vec![0u64; max];
        // SAFETY: sp is this thread's current stack pointer, inside its
        // stack (checked above), so sp..top is the live, mapped part of it.
        let n = unsafe { walk_own_stack(fp, sp, top, exec_maps(), &mut out) };
        out.truncate(n);
        out
    }

    #[cfg(test)]
    mod tests {
        #[inline(never)]
        fn outer() -> Vec<u64> {
            let s = inner();
            std::hint::black_box(s)
        }

        #[inline(never)]
        fn inner() -> Vec<u64> {
            std::hint::black_box(super::super::spawner_stack(32))
        }

        #[test]
        fn walks_this_threads_frames_within_bounds() {
            let stack = outer();
            // With frame pointers (this workspace builds with them) the walk
            // sees at least inner's and outer's callers.
            assert!(stack.len() >= 2, "{stack:x?}");
            assert!(stack.len() <= 32);
            let maps = super::exec_maps();
            assert!(stack.iter().all(|a| *a != 0));
            // The first return address is in inner (which called
            // spawner_stack), the second in outer: both in this executable,
            // a little after the function's entry.
            let inner_at = inner as fn() -> Vec<u64> as usize as u64;
            let outer_at = outer as fn() -> Vec<u64> as usize as u64;
            assert!(maps.is_main(stack[0]), "{:#x}", stack[0]);
            assert!(
                stack[0] > inner_at && stack[0] - inner_at < 0x1000,
                "{:#x} is not in inner at {inner_at:#x}",
                stack[0]
            );
            assert!(
                stack[1] > outer_at && stack[1] - outer_at < 0x1000,
                "{:#x} is not in outer at {outer_at:#x}",
                stack[1]
            );
            assert!(super::stack_bounds().is_some());
        }
    }
}
