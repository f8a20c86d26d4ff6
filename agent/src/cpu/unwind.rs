//! Async-signal-safe stack walking for the CPU sampler and the thread dump
//! (`crate::threads`): a frame-pointer walk plus a table of executable
//! mappings (read from `/proc/self/maps` before any signal goes out) that the
//! signal handlers consult read-only.
//!
//! Everything called from the handler here only reads memory and registers:
//! no allocation, no locks, no libc calls.
//!
//! # The leaf heuristic
//!
//! A frame-pointer walk starts at the interrupted `rbp`. When the interrupted
//! PC is in code that keeps no frame pointer (glibc, the vDSO, jemalloc's C
//! code) or in a prologue that has not yet pushed `rbp`, the function that
//! called the leaf is not in that chain: `rbp` still names the caller's frame,
//! whose saved return address points into the caller's *caller*. So when the
//! PC is outside the main executable (which is built with frame pointers), we
//! scan a few words upward from `rsp` for a plausible return address: a word
//! pointing into an executable mapping right after a `call` instruction. A
//! candidate whose `call` provably targets the function around the PC (a
//! direct `call rel32`, or a `call *GOT(%rip)` in the main executable whose
//! GOT entry we can read) wins; otherwise the lowest plausible word is taken.
//! It is inserted as `stack[1]` unless it equals the first return address of
//! the frame-pointer chain.
//!
//! In the main executable, a leaf caught on its entry `push %rbp`, the
//! `mov %rsp,%rbp` after it, or its final `ret` has its caller's return
//! address at the top of the stack rather than in the chain: it is taken
//! from there (see `prologue_caller`).
//!
//! Limits: a stale return address left in an uninitialised stack slot below
//! the real one can be taken instead of it (a wrong caller); leaves that keep
//! more than [`SCAN_WORDS`] words on the stack lose their caller; functions
//! that do not start with `push %rbp` (an `endbr64` first, say) lose it at
//! entry;
//! code mapped after `start()` (dlopen, JIT) ends the walk when the table was
//! complete, and unloading a library during a profile makes the `call`-byte
//! check read unmapped memory (do not `dlclose` while profiling).

use crate::framechain::{self, FIRST_FP_LIMIT};

/// Maximum number of program counters recorded per sample (leaf included).
pub(crate) const MAX_DEPTH: usize = 128;
/// Capacity of the executable-mapping table.
const MAX_RANGES: usize = 256;
/// Capacity of the table of readable mappings of the main executable.
const MAX_MAIN: usize = 16;
/// How many words above `sp` the leaf heuristic looks at.
const SCAN_WORDS: u64 = 32;
/// How far past a function's entry the PC may be for a call to "target" it.
const NEAR_ENTRY: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, Default)]
struct Range {
    start: u64,
    end: u64,
    main: bool,
}

/// Executable (and main-executable readable) mappings of the process, built
/// outside the handler and never changed while the handler may read it.
pub(crate) struct ExecMaps {
    ranges: [Range; MAX_RANGES],
    len: usize,
    /// False when there were more executable mappings than fit.
    complete: bool,
    main_readable: [(u64, u64); MAX_MAIN],
    main_len: usize,
}

impl ExecMaps {
    /// Reads `/proc/self/maps`. On failure the table is empty, which turns
    /// the leaf heuristic and the return-address check off.
    pub(crate) fn from_proc() -> ExecMaps {
        let exe = std::fs::read_link("/proc/self/exe").ok();
        let exe = exe.as_ref().and_then(|p| p.to_str());
        match std::fs::read_to_string("/proc/self/maps") {
            Ok(text) => ExecMaps::parse(&text, exe),
            Err(_) => ExecMaps::parse("", None),
        }
    }

    /// Builds the table from the text of a maps file; `exe` is the path of
    /// the main executable as it appears there.
    pub(crate) fn parse(maps: &str, exe: Option<&str>) -> ExecMaps {
        let mut out = ExecMaps {
            ranges: [Range::default(); MAX_RANGES],
            len: 0,
            complete: true,
            main_readable: [(0, 0); MAX_MAIN],
            main_len: 0,
        };
        for line in maps.lines() {
            let mut parts = line.splitn(6, ' ');
            let (Some(span), Some(perms)) = (parts.next(), parts.next()) else {
                continue;
            };
            let path = parts.nth(3).map(str::trim_start).unwrap_or("");
            let Some((lo, hi)) = span.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
            else {
                continue;
            };
            let main = exe.is_some_and(|e| !e.is_empty() && e == path);
            if main && perms.starts_with('r') && out.main_len < MAX_MAIN {
                out.main_readable[out.main_len] = (start, end);
                out.main_len += 1;
            }
            if perms.starts_with("r-x") {
                if out.len < MAX_RANGES {
                    out.ranges[out.len] = Range { start, end, main };
                    out.len += 1;
                } else {
                    out.complete = false;
                }
            }
        }
        // /proc/self/maps is sorted, but keep lookups correct regardless.
        out.ranges[..out.len].sort_unstable_by_key(|r| r.start);
        out
    }

    fn find(&self, addr: u64) -> Option<Range> {
        let ranges = &self.ranges[..self.len];
        let i = ranges.partition_point(|r| r.start <= addr);
        let r = *ranges.get(i.checked_sub(1)?)?;
        (addr < r.end).then_some(r)
    }

    /// True if `addr` is in the text of the main executable.
    pub(crate) fn is_main(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|r| r.main)
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn main_readable(&self, addr: u64, len: u64) -> bool {
        self.main_readable[..self.main_len]
            .iter()
            .any(|&(s, e)| addr >= s && addr.checked_add(len).is_some_and(|end| end <= e))
    }

    /// True if `ret` could be a return address: it is in a known executable
    /// mapping, or the table is incomplete so we cannot tell.
    fn plausible_ret(&self, ret: u64) -> bool {
        !self.complete || self.len == 0 || self.find(ret).is_some()
    }
}

/// Registers of the interrupted thread.
pub(crate) struct Regs {
    pub(crate) pc: u64,
    pub(crate) fp: u64,
    pub(crate) sp: u64,
    /// The link register (aarch64); 0 where there is none.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) lr: u64,
}

impl Regs {
    /// PC, frame pointer and stack pointer of the interrupted code, from the
    /// ucontext a `SA_SIGINFO` handler receives; `None` for a null context.
    ///
    /// # Safety
    /// `ctx` must be null or point to the `ucontext_t` of the current signal.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn from_ucontext(ctx: *mut libc::c_void) -> Option<Regs> {
        // SAFETY: per the contract, non-null ctx is a valid ucontext_t.
        let uc = unsafe { (ctx as *const libc::ucontext_t).as_ref() }?;
        let g = &uc.uc_mcontext.gregs;
        Some(Regs {
            pc: g[libc::REG_RIP as usize] as u64,
            fp: g[libc::REG_RBP as usize] as u64,
            sp: g[libc::REG_RSP as usize] as u64,
            lr: 0,
        })
    }

    /// PC, frame pointer, stack pointer and link register of the interrupted
    /// code, from the signal's ucontext; `None` for a null context.
    ///
    /// # Safety
    /// `ctx` must be null or point to the `ucontext_t` of the current signal.
    #[cfg(target_arch = "aarch64")]
    pub(crate) unsafe fn from_ucontext(ctx: *mut libc::c_void) -> Option<Regs> {
        // SAFETY: per the contract, non-null ctx is a valid ucontext_t.
        let uc = unsafe { (ctx as *const libc::ucontext_t).as_ref() }?;
        let m = &uc.uc_mcontext;
        Some(Regs {
            pc: m.pc,
            fp: m.regs[29],
            sp: m.sp,
            lr: m.regs[30],
        })
    }
}

/// Reads a word of the interrupted thread's stack or code.
///
/// # Safety
/// `addr` must be readable; callers check that it lies in the thread's stack
/// (by the bounds described in [`walk`]) or in a known mapping.
#[inline(always)]
unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: the caller guarantees `addr..addr+8` is mapped and readable;
    // `[u8; 8]` has alignment 1, so unaligned code addresses are fine too.
    u64::from_ne_bytes(unsafe { core::ptr::read_volatile(addr as *const [u8; 8]) })
}

/// Reads one byte at `addr`.
///
/// # Safety
/// `addr` must be readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn read_u8(addr: u64) -> u8 {
    // SAFETY: guaranteed readable by the caller.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Walks the stack of the interrupted thread into `out`, leaf first; returns
/// how many entries were written (at least 1: the PC).
///
/// The frame-pointer chain is followed while each frame pointer is 8-byte
/// aligned, the first is at or above `sp` and less than 8 MiB above it, each
/// next one is strictly above the previous and less than 1 MiB from it, and
/// every return address is non-zero (and in a known executable mapping when
/// the table is complete). This keeps every read on the thread's stack.
///
/// # Safety
/// Must be called on the thread whose registers `regs` holds (from the
/// signal's ucontext), while that thread is stopped in the handler.
pub(crate) unsafe fn walk(regs: &Regs, maps: &ExecMaps, out: &mut [u64; MAX_DEPTH]) -> usize {
    out[0] = regs.pc;
    let fp_ok =
        regs.fp.is_multiple_of(8) && regs.fp >= regs.sp && regs.fp - regs.sp < FIRST_FP_LIMIT;
    // Reserve out[1] for the heuristic caller; the chain goes to out[2..].
    let mut n = 2;
    if fp_ok {
        // SAFETY: fp passed the bounds above, so fp..fp+16 is on the stack;
        // `follow` keeps each next frame within its step limit.
        n += unsafe {
            framechain::follow(regs.fp, u64::MAX, &mut out[2..], |ret| {
                maps.plausible_ret(ret)
            })
        };
    }
    let first_ret = if n > 2 { Some(out[2]) } else { None };
    // SAFETY: same thread, registers from its ucontext.
    let caller = unsafe { leaf_caller(regs, maps, fp_ok) };
    match caller {
        Some(c) if Some(c) != first_ret => {
            out[1] = c;
            n
        }
        _ => {
            out.copy_within(2..n, 1);
            n - 1
        }
    }
}

/// Walks the calling thread's own frame-pointer chain from `fp` (a frame
/// pointer of a function still running on this thread) into `out`: the
/// return addresses of the callers, innermost first. Outside a signal
/// handler, so stricter than [`walk`]: every frame must lie between `sp` and
/// `stack_top`, the live part of this thread's stack, which keeps every read
/// inside memory that is mapped even when `fp` is not a frame pointer at all
/// (code built without them). Returns how many addresses were written.
///
/// # Safety
/// `sp..stack_top` must be the live, mapped part of the calling thread's
/// stack (`sp` at or below the caller's current stack pointer).
#[cfg_attr(not(all(tokio_unstable, feature = "server")), allow(dead_code))]
pub(crate) unsafe fn walk_own_stack(
    fp: u64,
    sp: u64,
    stack_top: u64,
    maps: &ExecMaps,
    out: &mut [u64],
) -> usize {
    if !fp.is_multiple_of(8) || fp < sp || fp.checked_add(16).is_none_or(|end| end > stack_top) {
        return 0;
    }
    // SAFETY: fp..fp+16 lies in sp..stack_top, which the caller guarantees
    // is mapped; `follow` keeps every next frame below `stack_top`.
    unsafe { framechain::follow(fp, stack_top, out, |ret| maps.plausible_ret(ret)) }
}

/// The leaf heuristic (see the module documentation) on x86_64.
///
/// # Safety
/// As for [`walk`].
#[cfg(target_arch = "x86_64")]
unsafe fn leaf_caller(regs: &Regs, maps: &ExecMaps, fp_ok: bool) -> Option<u64> {
    if maps.len == 0 || !regs.sp.is_multiple_of(8) || regs.sp == 0 {
        return None;
    }
    if maps.is_main(regs.pc) {
        // SAFETY: same thread, registers from its ucontext; pc is in the
        // main executable's text.
        return unsafe { prologue_caller(regs, maps) };
    }
    // Words between sp and the caller's frame belong to the leaf; when rbp
    // looks like a frame pointer, do not scan past it.
    let mut limit = regs.sp.saturating_add(SCAN_WORDS * 8);
    if fp_ok && regs.fp > regs.sp {
        limit = limit.min(regs.fp);
    }
    let mut fallback = None;
    let mut addr = regs.sp;
    while addr < limit {
        // SAFETY: sp is the interrupted stack pointer of this thread and the
        // words just above it are its current frame, so they are mapped
        // (whether the kernel pushed the signal frame below sp or, with
        // SA_ONSTACK, on the alternate signal stack).
        let word = unsafe { read_u64(addr) };
        addr += 8;
        let Some(range) = maps.find(word) else {
            continue;
        };
        // SAFETY: `word` lies in `range`, a readable executable mapping.
        match unsafe { call_before(word, range, maps) } {
            Call::None => {}
            Call::Plain => {
                fallback = fallback.or(Some(word));
            }
            Call::To(target) => {
                if target <= regs.pc && regs.pc - target < NEAR_ENTRY {
                    return Some(word);
                }
                fallback = fallback.or(Some(word));
            }
        }
    }
    fallback
}

/// In frame-pointer code, the caller's return address is missing from the
/// chain at three instructions: the entry `push %rbp` (0x55) and the
/// following `mov %rsp,%rbp` (48 89 e5), where `rbp` is still the caller's,
/// and the final `ret` (0xc3), where `rbp` is already restored. The return
/// address is then at `[rsp]`, `[rsp+8]` and `[rsp]` respectively.
///
/// # Safety
/// As for [`walk`]; `regs.pc` must be in a known executable mapping.
#[cfg(target_arch = "x86_64")]
unsafe fn prologue_caller(regs: &Regs, maps: &ExecMaps) -> Option<u64> {
    let range = maps.find(regs.pc)?;
    let pc = regs.pc;
    if pc.checked_add(3)? > range.end {
        return None;
    }
    // SAFETY: pc..pc+3 lies in `range`, a readable executable mapping.
    let code = unsafe { [read_u8(pc), read_u8(pc + 1), read_u8(pc + 2)] };
    // SAFETY: pc - 1 is checked to be inside `range` first.
    let before = (pc > range.start).then(|| unsafe { read_u8(pc - 1) });
    let slot = match code {
        [0x55, ..] | [0xc3, ..] => regs.sp,
        [0x48, 0x89, 0xe5] if before == Some(0x55) => regs.sp + 8,
        _ => return None,
    };
    // SAFETY: sp (and sp + 8) is the live top of this thread's stack.
    let word = unsafe { read_u64(slot) };
    let target = maps.find(word)?;
    // SAFETY: `word` lies in `target`, a readable executable mapping.
    match unsafe { call_before(word, target, maps) } {
        Call::None => None,
        Call::Plain | Call::To(_) => Some(word),
    }
}

/// The leaf heuristic on aarch64: the link register holds the caller's
/// return address until the leaf saves it and calls something else.
///
/// # Safety
/// As for [`walk`].
#[cfg(target_arch = "aarch64")]
unsafe fn leaf_caller(regs: &Regs, maps: &ExecMaps, _fp_ok: bool) -> Option<u64> {
    if maps.len == 0 || maps.is_main(regs.pc) {
        return None;
    }
    maps.find(regs.lr).map(|_| regs.lr)
}

/// What precedes a candidate return address.
#[cfg(target_arch = "x86_64")]
enum Call {
    /// Not a call instruction.
    None,
    /// A call whose target we cannot compute.
    Plain,
    /// A call to this address.
    To(u64),
}

/// Decodes the call instruction that would end right before `ret`.
///
/// # Safety
/// `ret` must be inside `range`, a readable mapping.
#[cfg(target_arch = "x86_64")]
unsafe fn call_before(ret: u64, range: Range, maps: &ExecMaps) -> Call {
    let back = ret - range.start;
    // Every use below checks k <= back, so ret-k stays inside `range`.
    // SAFETY: `range` is a readable mapping and ret-k lies in it.
    let at = |k: u64| unsafe { read_u8(ret - k) };
    if back >= 5 && at(5) == 0xE8 {
        // call rel32
        let rel = i32::from_le_bytes([at(4), at(3), at(2), at(1)]);
        return Call::To(ret.wrapping_add_signed(i64::from(rel)));
    }
    if back >= 6 && at(6) == 0xFF && at(5) == 0x15 {
        // call *disp32(%rip): the target is in the GOT slot.
        let rel = i32::from_le_bytes([at(4), at(3), at(2), at(1)]);
        let slot = ret.wrapping_add_signed(i64::from(rel));
        if maps.main_readable(slot, 8) {
            // SAFETY: the slot is inside a readable mapping of the main
            // executable, recorded before the timer started.
            return Call::To(unsafe { read_u64(slot) });
        }
        return Call::Plain;
    }
    let plain = (back >= 2 && at(2) == 0xFF && at(1) & 0xF8 == 0xD0) // call *%reg
        || (back >= 3 && at(3) == 0xFF && at(2) & 0xF8 == 0x50) // call *disp8(%reg)
        || (back >= 4 && at(4) == 0xFF && at(3) == 0x54) // call *disp8(%reg,%reg)
        || (back >= 6 && at(6) == 0xFF && at(5) & 0xF8 == 0x90) // call *disp32(%reg)
        || (back >= 7 && at(7) == 0xFF && at(6) == 0x94); // call *disp32(sib)
    if plain { Call::Plain } else { Call::None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps() {
        let text = "\
5600-5700 r--p 00000000 08:01 12 /bin/app
5700-5800 r-xp 00001000 08:01 12 /bin/app
5800-5900 rw-p 00002000 08:01 12 /bin/app
7f00-7f10 r-xp 00000000 08:01 13                 /lib/libc.so.6
7ff0-7ff1 r-xp 00000000 00:00 0                  [vdso]
";
        let m = ExecMaps::parse(text, Some("/bin/app"));
        assert_eq!(m.len, 3);
        assert!(m.is_main(0x5750));
        assert!(!m.is_main(0x7f05));
        assert!(m.find(0x7f05).is_some());
        assert!(m.find(0x7ff0).is_some());
        assert!(m.find(0x7f10).is_none());
        assert!(m.find(0x5650).is_none());
        assert!(m.main_readable(0x5800, 8));
        assert!(!m.main_readable(0x58fc, 8));
    }
}
