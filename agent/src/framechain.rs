//! The frame-pointer chain walk, one copy shared by the CPU sampler's
//! unwinder (`cpu::unwind`, inside signal handlers) and the recorder of fd
//! creation sites (`fdsites`, inside the wrapped `socket`, `open`, ...).
//!
//! Only reads memory: no allocation, no locks, no libc calls, so it is
//! async-signal-safe. Every read stays inside bounds the caller vouches for
//! (see [`follow`]).

/// How far above the stack pointer the first frame pointer may be.
#[cfg_attr(not(feature = "cpu"), allow(dead_code))]
pub(crate) const FIRST_FP_LIMIT: u64 = 8 << 20;
/// How far apart two consecutive frame pointers may be.
pub(crate) const STEP_LIMIT: u64 = 1 << 20;

/// Reads an 8-byte-aligned word of a stack in one load (a volatile read
/// of `[u8; 8]`, as `cpu::unwind` does for unaligned code, is eight).
///
/// # Safety
/// `addr` must be 8-byte aligned and `addr..addr + 8` readable.
#[inline(always)]
unsafe fn read_stack_word(addr: u64) -> u64 {
    // SAFETY: aligned and readable, per the caller.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Follows the frame-pointer chain from the frame at `fp`, writing each
/// frame's return address into `out` (innermost first); returns how many
/// were written.
///
/// A frame is two words, the caller's frame pointer at `fp` and the return
/// address at `fp + 8`. The walk stops at a zero return address or one
/// `accept` refuses (written: no), and before moving to a next frame pointer
/// that is zero, not 8-byte aligned, not strictly above the current one,
/// [`STEP_LIMIT`] or more away from it, or whose frame would end above
/// `top` (`u64::MAX`: no such bound).
///
/// # Safety
/// `fp` must be 8-byte aligned and `fp..fp + 16` readable; every address
/// from `fp` up to the next `STEP_LIMIT` steps, and below `top`, must be
/// readable too. For a thread's own stack that holds when `top` is the
/// top of its stack (the CPU sampler relies on the step limit alone).
pub(crate) unsafe fn follow(
    mut fp: u64,
    top: u64,
    out: &mut [u64],
    accept: impl Fn(u64) -> bool,
) -> usize {
    let mut n = 0;
    while n < out.len() {
        // SAFETY: `fp` is the first frame (vouched for by the caller) or
        // passed the checks below, so fp..fp+16 is readable and aligned.
        let next = unsafe { read_stack_word(fp) };
        // SAFETY: as above.
        let ret = unsafe { read_stack_word(fp + 8) };
        if ret == 0 || !accept(ret) {
            break;
        }
        out[n] = ret;
        n += 1;
        if next == 0
            || !next.is_multiple_of(8)
            || next <= fp
            || next - fp >= STEP_LIMIT
            || next.checked_add(16).is_none_or(|end| end > top)
        {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stack of frames `[next, ret]` in a buffer.
    fn stack(frames: &[(usize, u64)]) -> Vec<u64> {
        let mut words = vec![0u64; 64];
        for (i, (next_index, ret)) in frames.iter().enumerate() {
            let base = words.as_ptr() as u64;
            words[i * 4] = if *next_index == 0 {
                0
            } else {
                base + (*next_index * 4 * 8) as u64
            };
            words[i * 4 + 1] = *ret;
        }
        words
    }

    #[test]
    fn follows_and_stops() {
        // Frames at words 0, 4, 8; the third has no caller.
        let words = stack(&[(1, 0x100), (2, 0x200), (0, 0x300)]);
        let fp = words.as_ptr() as u64;
        let mut out = [0u64; 8];
        // SAFETY: every frame lies in `words`.
        let n = unsafe { follow(fp, u64::MAX, &mut out, |_| true) };
        assert_eq!(&out[..n], &[0x100, 0x200, 0x300]);
        // A top below the third frame's end stops before it.
        let top = fp + 8 * 8 + 8;
        // SAFETY: as above.
        let n = unsafe { follow(fp, top, &mut out, |_| true) };
        assert_eq!(&out[..n], &[0x100, 0x200]);
        // A refused return address ends the walk without being written.
        // SAFETY: as above.
        let n = unsafe { follow(fp, u64::MAX, &mut out, |r| r != 0x200) };
        assert_eq!(&out[..n], &[0x100]);
        // Bounded by `out`.
        let mut two = [0u64; 2];
        // SAFETY: as above.
        let n = unsafe { follow(fp, u64::MAX, &mut two, |_| true) };
        assert_eq!(n, 2);
    }

    #[test]
    fn a_chain_going_down_stops() {
        let mut words = stack(&[(1, 0x100), (0, 0x200)]);
        // The second frame points back to the first.
        words[4] = words.as_ptr() as u64;
        let mut out = [0u64; 8];
        // SAFETY: every frame lies in `words`.
        let n = unsafe { follow(words.as_ptr() as u64, u64::MAX, &mut out, |_| true) };
        assert_eq!(&out[..n], &[0x100, 0x200]);
    }
}
