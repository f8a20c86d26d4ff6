//! The SIGPROF side of the CPU profiler: the preallocated ring of sample
//! slots, the async-signal-safe signal handler that fills it, the
//! `setitimer`/`timer_create`/`sigaction` plumbing, and the drain that
//! empties the ring.
//!
//! The handler reaches the ring only through [`RING`], and only while
//! [`ACTIVE`] is set; it counts itself in [`IN_FLIGHT`] so that teardown can
//! wait until no handler is running before the ring is freed.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use super::unwind::{self, ExecMaps, MAX_DEPTH, Regs};

/// Number of slots in the ring.
pub(crate) const SLOTS: usize = 4096;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// The ring the handler writes to; null when no profile runs.
static RING: AtomicPtr<Ring> = AtomicPtr::new(ptr::null_mut());
/// Set while the handler may use [`RING`].
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Number of handler invocations currently between entry and exit.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What one sample holds. Written only by the handler that moved the slot
/// from EMPTY to WRITING; read only by the drain once it is READY.
struct SlotData {
    len: usize,
    name: [u8; 16],
    pcs: [u64; MAX_DEPTH],
}

struct Slot {
    state: AtomicU8,
    data: UnsafeCell<SlotData>,
}

/// Everything the handler touches, allocated before the timer starts.
pub(crate) struct Ring {
    slots: Box<[Slot]>,
    next: AtomicUsize,
    lost: AtomicU64,
    maps: ExecMaps,
}

// SAFETY: `SlotData` is accessed by at most one party at a time, as ruled by
// the slot's atomic state (EMPTY -> WRITING by CAS in the handler, READY
// published with Release and observed with Acquire by the drain, EMPTY
// handed back with Release). Everything else is atomic or immutable.
unsafe impl Sync for Ring {}

impl Ring {
    pub(crate) fn new(maps: ExecMaps) -> Ring {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                state: AtomicU8::new(EMPTY),
                data: UnsafeCell::new(SlotData {
                    len: 0,
                    name: [0; 16],
                    pcs: [0; MAX_DEPTH],
                }),
            })
            .collect();
        Ring {
            slots,
            next: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            maps,
        }
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Moves every READY slot into `into`, keyed by (stack, thread name).
    pub(crate) fn drain(&self, into: &mut HashMap<(Vec<u64>, String), u64>) {
        for slot in self.slots.iter() {
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            // SAFETY: READY was published with Release by the handler after
            // it finished writing; no one writes a READY slot, and we are the
            // only reader (one drain at a time, see `CpuSampler`).
            let data = unsafe { &*slot.data.get() };
            let len = data.len.min(MAX_DEPTH);
            let stack = data.pcs[..len].to_vec();
            let end = data.name.iter().position(|&b| b == 0).unwrap_or(16);
            let name = String::from_utf8_lossy(&data.name[..end]).into_owned();
            slot.state.store(EMPTY, Ordering::Release);
            *into.entry((stack, name)).or_insert(0) += 1;
        }
    }
}

/// The SIGPROF handler. Async-signal-safe: atomics, plain memory reads and
/// writes into preallocated memory, and the `prctl` system call.
extern "C" fn on_sigprof(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: the pointer is valid for the thread's lifetime.
    let saved_errno = unsafe { *errno };
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    if ACTIVE.load(Ordering::SeqCst) {
        let ring = RING.load(Ordering::Acquire);
        // SAFETY: while ACTIVE is set and we are counted in IN_FLIGHT, the
        // ring stays alive: teardown clears ACTIVE, then waits for
        // IN_FLIGHT to reach 0 before dropping it (SeqCst orders the two).
        if let Some(ring) = unsafe { ring.as_ref() } {
            // SAFETY: ctx is the ucontext the kernel passed for this signal.
            unsafe { record(ring, ctx) };
        }
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *errno = saved_errno };
}

/// Takes one sample into a free slot, or counts it lost.
///
/// # Safety
/// Only from the signal handler, with `ctx` the signal's ucontext.
unsafe fn record(ring: &Ring, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t with SA_SIGINFO.
    let Some(regs) = (unsafe { Regs::from_ucontext(ctx) }) else {
        ring.lost.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let idx = ring.next.fetch_add(1, Ordering::Relaxed) % ring.slots.len();
    let slot = &ring.slots[idx];
    if slot
        .state
        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        ring.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: we own the slot while it is WRITING.
    let data = unsafe { &mut *slot.data.get() };
    // SAFETY: on this thread, with registers from its own ucontext.
    data.len = unsafe { unwind::walk(&regs, &ring.maps, &mut data.pcs) };
    data.name = [0; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer; it is a
    // plain system call.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, data.name.as_mut_ptr()) };
    if rc != 0 {
        data.name = [0; 16];
    }
    slot.state.store(READY, Ordering::Release);
}

/// Publishes `ring` to the handler and installs it for SIGPROF; returns the
/// previous action. The caller keeps `ring` alive until [`uninstall`].
pub(crate) fn install(ring: &Ring) -> io::Result<libc::sigaction> {
    RING.store(ptr::from_ref(ring).cast_mut(), Ordering::Release);
    ACTIVE.store(true, Ordering::SeqCst);
    // SAFETY: sigaction is plain data; all-zero is a valid starting value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigprof as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to valid sigaction structs.
    if unsafe { libc::sigaction(libc::SIGPROF, &action, &mut old) } != 0 {
        let err = io::Error::last_os_error();
        deactivate();
        return Err(err);
    }
    Ok(old)
}

/// Starts (interval > 0) or stops (0) the ITIMER_PROF timer.
pub(crate) fn set_timer(interval_us: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: (interval_us / 1_000_000) as libc::time_t,
        tv_usec: (interval_us % 1_000_000) as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: `it` is a valid itimerval; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the handler a no-op and waits until no invocation is still inside
/// it; afterwards nothing touches the ring.
pub(crate) fn deactivate() {
    ACTIVE.store(false, Ordering::SeqCst);
    wait_for_handlers(&IN_FLIGHT);
    RING.store(ptr::null_mut(), Ordering::Release);
}

/// Waits (spinning, then yielding) until no signal handler counted in
/// `in_flight` is still running: after its `ACTIVE` flag is cleared, the
/// last step before the memory handlers use may be freed.
pub(crate) fn wait_for_handlers(in_flight: &AtomicUsize) {
    let mut spins = 0u32;
    while in_flight.load(Ordering::SeqCst) != 0 {
        spins += 1;
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Restores the SIGPROF action saved by [`install`]. The timer must be off.
///
/// A SIGPROF generated before the timer stopped may still be pending; if the
/// old action is the default (terminate), delivering it would kill the
/// process. Setting SIG_IGN first discards pending SIGPROFs (POSIX), so the
/// old action is restored with none left over.
pub(crate) fn restore(old: &libc::sigaction) {
    // SAFETY: plain data, all-zero is valid.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // Errors are impossible for SIGPROF with valid pointers, so ignored.
    // SAFETY: a valid sigaction struct; a null old-action pointer is allowed.
    unsafe { libc::sigaction(libc::SIGPROF, &ignore, ptr::null_mut()) };
    // SAFETY: as above; `old` is what sigaction returned in `install`.
    unsafe { libc::sigaction(libc::SIGPROF, old, ptr::null_mut()) };
}

/// POSIX timers created by [`create_thread_timer`] (for leak checks).
pub(crate) static TIMERS_CREATED: AtomicU64 = AtomicU64::new(0);
/// POSIX timers successfully deleted by [`delete_thread_timer`].
pub(crate) static TIMERS_DELETED: AtomicU64 = AtomicU64::new(0);

/// The kernel's clock id for the CPU-time clock of thread `tid` of this
/// process: `(~tid << 3) | CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2)`,
/// which is what glibc's `pthread_getcpuclockid` returns.
pub(crate) fn thread_cpu_clock(tid: libc::pid_t) -> libc::clockid_t {
    ((!tid) << 3) | 6
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Creates a POSIX timer on the CPU-time clock of thread `tid` (of this
/// process) that sends SIGPROF to that thread every `interval_ns` of its CPU
/// time, and arms it. Returns the kernel timer id.
pub(crate) fn create_thread_timer(tid: libc::pid_t, interval_ns: u64) -> io::Result<libc::c_int> {
    // SAFETY: sigevent is plain data; all-zero is a valid starting value.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = libc::SIGPROF;
    sev.sigev_notify_thread_id = tid;
    let mut id: libc::c_int = 0;
    // SAFETY: raw timer_create(clockid, struct sigevent *, kernel_timer_t *)
    // with a valid sigevent and a valid int to receive the id.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            thread_cpu_clock(tid),
            &mut sev as *mut libc::sigevent,
            &mut id as *mut libc::c_int,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    TIMERS_CREATED.fetch_add(1, Ordering::Relaxed);
    let ts = libc::timespec {
        tv_sec: (interval_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (interval_ns % 1_000_000_000) as _,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: raw timer_settime(id, flags, new, old) with a valid itimerspec
    // and a null old value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            id,
            0,
            &spec as *const libc::itimerspec,
            ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        delete_thread_timer(id);
        return Err(err);
    }
    Ok(id)
}

/// Disarms and deletes a timer from [`create_thread_timer`]. Errors are
/// ignored (there is nothing to do about them); they show up as a mismatch
/// between [`TIMERS_CREATED`] and [`TIMERS_DELETED`].
pub(crate) fn delete_thread_timer(id: libc::c_int) {
    // SAFETY: raw timer_delete on an id we own; an invalid id only returns
    // EINVAL.
    if unsafe { libc::syscall(libc::SYS_timer_delete, id) } == 0 {
        TIMERS_DELETED.fetch_add(1, Ordering::Relaxed);
    }
}
