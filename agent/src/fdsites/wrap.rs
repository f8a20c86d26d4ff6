//! The `__wrap_*` functions the linker's `--wrap=NAME` routes every call of
//! `NAME` in the binary to (feature `fd-sites`).
//!
//! Each recording wrapper is a naked trampoline that builds a standard
//! frame record (so the stack walk's first return address is exactly the
//! caller's, however this crate was compiled), shifts the arguments by one
//! register and calls its Rust half with the frame's address first. The
//! Rust half calls `__real_NAME` (the linker's name for the original),
//! records the fd on success and returns the result unchanged. `open`,
//! `openat` and `fcntl` are variadic in C: their optional last argument is
//! taken as an ordinary one, which the x86_64 and AArch64 Linux calling
//! conventions make the same register, and passed on to the variadic
//! `__real_*`. `close` only forgets the fd, so a number reused by code
//! that is not wrapped finds nothing.
//!
//! A constructor (`.init_array`) refers to every `__real_*` symbol, so a
//! binary built with this feature but without the `--wrap` flags fails to
//! link (`undefined symbol: __real_socket`) instead of running without
//! recording.

use std::ffi::{c_char, c_int, c_uint, c_ulong};

use super::record::{forget, record};

// Defined by the linker under `--wrap=NAME`: the original `NAME`.
unsafe extern "C" {
    fn __real_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn __real_socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int;
    fn __real_accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int;
    fn __real_accept4(
        fd: c_int,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
        flags: c_int,
    ) -> c_int;
    fn __real_open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn __real_open64(path: *const c_char, flags: c_int, ...) -> c_int;
    fn __real_openat(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    fn __real_openat64(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    fn __real_creat(path: *const c_char, mode: libc::mode_t) -> c_int;
    fn __real_pipe(fds: *mut c_int) -> c_int;
    fn __real_pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn __real_epoll_create1(flags: c_int) -> c_int;
    fn __real_eventfd(initval: c_uint, flags: c_int) -> c_int;
    fn __real_timerfd_create(clock: c_int, flags: c_int) -> c_int;
    fn __real_dup(fd: c_int) -> c_int;
    fn __real_fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn __real_close(fd: c_int) -> c_int;
}

/// A naked trampoline `__wrap_NAME` in front of `$inner`: a frame record,
/// the arguments moved up one register, the frame's address as the first
/// argument.
#[cfg(target_arch = "x86_64")]
macro_rules! trampoline {
    ($(#[$doc:meta])* $wrap:ident => $inner:ident) => {
        $(#[$doc])*
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $wrap() {
            core::arch::naked_asm!(
                ".cfi_startproc",
                "push rbp",
                ".cfi_def_cfa_offset 16",
                ".cfi_offset rbp, -16",
                "mov rbp, rsp",
                ".cfi_def_cfa_register rbp",
                "mov r9, r8",
                "mov r8, rcx",
                "mov rcx, rdx",
                "mov rdx, rsi",
                "mov rsi, rdi",
                "mov rdi, rbp",
                "call {inner}",
                "pop rbp",
                ".cfi_def_cfa rsp, 8",
                "ret",
                ".cfi_endproc",
                inner = sym $inner,
            )
        }
    };
}

/// As on x86_64; `hint #34` is `bti c` (a no-op without branch target
/// identification).
#[cfg(target_arch = "aarch64")]
macro_rules! trampoline {
    ($(#[$doc:meta])* $wrap:ident => $inner:ident) => {
        $(#[$doc])*
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $wrap() {
            core::arch::naked_asm!(
                ".cfi_startproc",
                "hint #34",
                "stp x29, x30, [sp, #-16]!",
                ".cfi_def_cfa_offset 16",
                ".cfi_offset w30, -8",
                ".cfi_offset w29, -16",
                "mov x29, sp",
                ".cfi_def_cfa w29, 16",
                "mov x7, x6",
                "mov x6, x5",
                "mov x5, x4",
                "mov x4, x3",
                "mov x3, x2",
                "mov x2, x1",
                "mov x1, x0",
                "mov x0, x29",
                "bl {inner}",
                ".cfi_def_cfa wsp, 16",
                "ldp x29, x30, [sp], #16",
                ".cfi_def_cfa_offset 0",
                ".cfi_restore w30",
                ".cfi_restore w29",
                "ret",
                ".cfi_endproc",
                inner = sym $inner,
            )
        }
    };
}

/// Records the fds a successful `pipe`, `pipe2` or `socketpair` wrote.
///
/// # Safety
/// `fds` points to the two ints the call filled; `fp` as for [`record`].
unsafe fn record_pair(rc: c_int, fds: *const c_int, fp: usize) {
    if rc == 0 && !fds.is_null() {
        // SAFETY: the call succeeded, so it wrote both ints.
        let (a, b) = unsafe { (*fds, *fds.add(1)) };
        // SAFETY: per this function's contract.
        unsafe {
            record(a, fp);
            record(b, fp);
        }
    }
}

/// Defines the Rust half `$inner` of a wrapper whose result is the new fd.
macro_rules! fd_returning {
    ($inner:ident, $real:ident ($($arg:ident : $ty:ty),*) $(, variadic $last:ident : $lty:ty)?) => {
        /// The Rust half of the trampoline of the same name.
        ///
        /// # Safety
        /// Called only by its trampoline, with the caller's arguments.
        unsafe extern "C" fn $inner(fp: usize $(, $arg: $ty)* $(, $last: $lty)?) -> c_int {
            // SAFETY: the caller's own arguments, passed on unchanged.
            let fd = unsafe { $real($($arg),* $(, $last)?) };
            // SAFETY: `fp` is the trampoline's frame on this thread.
            unsafe { record(fd, fp) };
            fd
        }
    };
}

fd_returning!(socket_inner, __real_socket(domain: c_int, ty: c_int, protocol: c_int));
fd_returning!(accept_inner, __real_accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t));
fd_returning!(accept4_inner, __real_accept4(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int));
fd_returning!(open_inner, __real_open(path: *const c_char, flags: c_int), variadic mode: c_uint);
fd_returning!(open64_inner, __real_open64(path: *const c_char, flags: c_int), variadic mode: c_uint);
fd_returning!(openat_inner, __real_openat(dirfd: c_int, path: *const c_char, flags: c_int), variadic mode: c_uint);
fd_returning!(openat64_inner, __real_openat64(dirfd: c_int, path: *const c_char, flags: c_int), variadic mode: c_uint);
fd_returning!(creat_inner, __real_creat(path: *const c_char, mode: libc::mode_t));
fd_returning!(epoll_create1_inner, __real_epoll_create1(flags: c_int));
fd_returning!(eventfd_inner, __real_eventfd(initval: c_uint, flags: c_int));
fd_returning!(timerfd_create_inner, __real_timerfd_create(clock: c_int, flags: c_int));
fd_returning!(dup_inner, __real_dup(fd: c_int));

/// The Rust half of `__wrap_socketpair`.
///
/// # Safety
/// Called only by its trampoline, with the caller's arguments.
unsafe extern "C" fn socketpair_inner(
    fp: usize,
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: the caller's own arguments, passed on unchanged.
    let rc = unsafe { __real_socketpair(domain, ty, protocol, sv) };
    // SAFETY: on success `sv` holds the two fds; `fp` is our trampoline's.
    unsafe { record_pair(rc, sv, fp) };
    rc
}

/// The Rust half of `__wrap_pipe`.
///
/// # Safety
/// Called only by its trampoline, with the caller's arguments.
unsafe extern "C" fn pipe_inner(fp: usize, fds: *mut c_int) -> c_int {
    // SAFETY: the caller's own argument, passed on unchanged.
    let rc = unsafe { __real_pipe(fds) };
    // SAFETY: on success `fds` holds the two fds; `fp` is our trampoline's.
    unsafe { record_pair(rc, fds, fp) };
    rc
}

/// The Rust half of `__wrap_pipe2`.
///
/// # Safety
/// Called only by its trampoline, with the caller's arguments.
unsafe extern "C" fn pipe2_inner(fp: usize, fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's own arguments, passed on unchanged.
    let rc = unsafe { __real_pipe2(fds, flags) };
    // SAFETY: on success `fds` holds the two fds; `fp` is our trampoline's.
    unsafe { record_pair(rc, fds, fp) };
    rc
}

/// The Rust half of `__wrap_fcntl`: records the new fd of `F_DUPFD` and
/// `F_DUPFD_CLOEXEC` (what `try_clone` uses), passes everything else on.
///
/// # Safety
/// Called only by its trampoline, with the caller's arguments.
unsafe extern "C" fn fcntl_inner(fp: usize, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's own arguments; the optional one is passed in the
    // same register it came in, whatever its C type.
    let rc = unsafe { __real_fcntl(fd, cmd, arg) };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        // SAFETY: `fp` is our trampoline's frame.
        unsafe { record(rc, fp) };
    }
    rc
}

trampoline!(
    /// `socket`, recorded.
    __wrap_socket => socket_inner
);
trampoline!(
    /// `socketpair`, both ends recorded.
    __wrap_socketpair => socketpair_inner
);
trampoline!(
    /// `accept`, recorded.
    __wrap_accept => accept_inner
);
trampoline!(
    /// `accept4`, recorded.
    __wrap_accept4 => accept4_inner
);
trampoline!(
    /// `open`, recorded.
    __wrap_open => open_inner
);
trampoline!(
    /// `open64`, recorded.
    __wrap_open64 => open64_inner
);
trampoline!(
    /// `openat`, recorded.
    __wrap_openat => openat_inner
);
trampoline!(
    /// `openat64`, recorded.
    __wrap_openat64 => openat64_inner
);
trampoline!(
    /// `creat`, recorded.
    __wrap_creat => creat_inner
);
trampoline!(
    /// `pipe`, both ends recorded.
    __wrap_pipe => pipe_inner
);
trampoline!(
    /// `pipe2`, both ends recorded.
    __wrap_pipe2 => pipe2_inner
);
trampoline!(
    /// `epoll_create1`, recorded.
    __wrap_epoll_create1 => epoll_create1_inner
);
trampoline!(
    /// `eventfd`, recorded.
    __wrap_eventfd => eventfd_inner
);
trampoline!(
    /// `timerfd_create`, recorded.
    __wrap_timerfd_create => timerfd_create_inner
);
trampoline!(
    /// `dup`, recorded.
    __wrap_dup => dup_inner
);
trampoline!(
    /// `fcntl`; `F_DUPFD` and `F_DUPFD_CLOEXEC` recorded.
    __wrap_fcntl => fcntl_inner
);

/// `close`: forgets the fd's record first (while the number is still
/// ours), then closes it.
///
/// # Safety
/// As `close`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __wrap_close(fd: c_int) -> c_int {
    forget(fd);
    // SAFETY: the caller's own argument.
    unsafe { __real_close(fd) }
}

/// The addresses of every `__real_*` symbol, in [`super::LINK_ARG`] order.
struct Reals([*const (); 17]);

// SAFETY: function addresses, never written.
unsafe impl Sync for Reals {}

/// Referred to by the constructor, so its relocations (one undefined
/// symbol per missing `--wrap` flag) are always part of the link.
static REALS: Reals = Reals([
    __real_socket as *const (),
    __real_socketpair as *const (),
    __real_accept as *const (),
    __real_accept4 as *const (),
    __real_open as *const (),
    __real_open64 as *const (),
    __real_openat as *const (),
    __real_openat64 as *const (),
    __real_creat as *const (),
    __real_pipe as *const (),
    __real_pipe2 as *const (),
    __real_epoll_create1 as *const (),
    __real_eventfd as *const (),
    __real_timerfd_create as *const (),
    __real_dup as *const (),
    __real_fcntl as *const (),
    __real_close as *const (),
]);

/// Runs before `main`: keeps [`REALS`] (and so the link check) alive.
extern "C" fn require_wrap_flags() {
    std::hint::black_box(REALS.0.as_ptr());
}

/// `.init_array` sections are kept by every linker even with
/// `--gc-sections`, and rustc links `#[used]` statics of every crate.
#[used]
#[unsafe(link_section = ".init_array")]
static REQUIRE_WRAP_FLAGS: extern "C" fn() = require_wrap_flags;

#[cfg(test)]
mod tests {
    #[test]
    fn every_wrapped_name_has_a_real_symbol() {
        assert_eq!(super::super::WRAPPED.len(), super::REALS.0.len());
        assert!(super::REALS.0.iter().all(|p| !p.is_null()));
    }
}
