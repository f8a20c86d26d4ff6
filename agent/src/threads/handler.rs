//! The SIGURG side of a thread dump: the preallocated table with one slot
//! per thread, the async-signal-safe handler that fills a thread's own slot,
//! and the `sigaction` plumbing that installs it for one dump and puts the
//! old disposition back.
//!
//! The handler reaches the table only through [`TABLE`], and only while
//! [`ACTIVE`] is set; it counts itself in [`IN_FLIGHT`] so that teardown can
//! wait until no handler is running before the table is freed (the same
//! protocol as the CPU sampler's ring).

use std::cell::UnsafeCell;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use crate::cpu::sampler::gettid;
use crate::cpu::unwind::{self, ExecMaps, MAX_DEPTH, Regs};

/// The signal a dump sends. Its default action is to ignore it, so a late
/// or stray delivery after the dump can never kill the process (Go's
/// runtime preempts goroutines with it for the same reason).
pub(crate) const SIGNAL: libc::c_int = libc::SIGURG;

/// `si_code` of a signal sent with `tgkill` (`SI_TKILL` in the Linux uapi).
const SI_TKILL: libc::c_int = -6;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// The table the handler writes to; null when no dump runs.
static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());
/// Set while the handler may use [`TABLE`].
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Number of handler invocations currently between entry and exit.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What one thread's answer holds. Written only by the handler that moved
/// the slot from EMPTY to WRITING; read only once it is READY.
struct SlotData {
    len: usize,
    name: [u8; 16],
    pcs: [u64; MAX_DEPTH],
}

struct Slot {
    tid: libc::pid_t,
    state: AtomicU8,
    data: UnsafeCell<SlotData>,
}

/// Everything the handler touches, allocated before any signal is sent.
pub(crate) struct Table {
    /// Sorted by tid, so the handler finds its slot by binary search.
    slots: Box<[Slot]>,
    maps: ExecMaps,
    answered: AtomicUsize,
}

// SAFETY: `SlotData` is accessed by at most one party at a time, as ruled by
// the slot's atomic state (EMPTY -> WRITING by CAS in the handler, READY
// published with Release and read after an Acquire load, never written
// again). Everything else is atomic or immutable.
unsafe impl Sync for Table {}

/// A thread's stack and name as its handler recorded them.
pub(crate) struct Answer {
    /// Program counters, leaf first, raw (callers are return addresses).
    pub(crate) stack: Vec<u64>,
    /// The name from `prctl(PR_GET_NAME)`.
    pub(crate) name: String,
}

impl Table {
    /// One empty slot per thread id in `tids` (duplicates are dropped).
    pub(crate) fn new(mut tids: Vec<libc::pid_t>, maps: ExecMaps) -> Table {
        tids.sort_unstable();
        tids.dedup();
        let slots = tids
            .into_iter()
            .map(|tid| Slot {
                tid,
                state: AtomicU8::new(EMPTY),
                data: UnsafeCell::new(SlotData {
                    len: 0,
                    name: [0; 16],
                    pcs: [0; MAX_DEPTH],
                }),
            })
            .collect();
        Table {
            slots,
            maps,
            answered: AtomicUsize::new(0),
        }
    }

    /// Number of threads that have answered so far.
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }

    /// The thread ids of the table, ascending.
    pub(crate) fn tids(&self) -> impl Iterator<Item = libc::pid_t> + '_ {
        self.slots.iter().map(|s| s.tid)
    }

    /// What thread `tid` recorded, if it has answered.
    pub(crate) fn answer(&self, tid: libc::pid_t) -> Option<Answer> {
        let slot = self.find(tid)?;
        if slot.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY was published with Release by the handler after it
        // finished writing; nothing writes a READY slot again.
        let data = unsafe { &*slot.data.get() };
        let len = data.len.min(MAX_DEPTH);
        let end = data.name.iter().position(|&b| b == 0).unwrap_or(16);
        Some(Answer {
            stack: data.pcs[..len].to_vec(),
            name: String::from_utf8_lossy(&data.name[..end]).into_owned(),
        })
    }

    /// The slot of `tid`. Only reads immutable memory: callable from the
    /// handler.
    fn find(&self, tid: libc::pid_t) -> Option<&Slot> {
        let i = self.slots.binary_search_by_key(&tid, |s| s.tid).ok()?;
        self.slots.get(i)
    }
}

/// The SIGURG handler. Async-signal-safe: atomics, plain memory reads and
/// writes into preallocated memory, and the `getpid`, `gettid` and `prctl`
/// system calls. errno is preserved.
extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: the pointer is valid for the thread's lifetime.
    let saved_errno = unsafe { *errno };
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    if ACTIVE.load(Ordering::SeqCst) {
        let table = TABLE.load(Ordering::Acquire);
        // SAFETY: while ACTIVE is set and we are counted in IN_FLIGHT, the
        // table stays alive: teardown clears ACTIVE, then waits for
        // IN_FLIGHT to reach 0 before dropping it (SeqCst orders the two).
        let table = unsafe { table.as_ref() };
        // SAFETY: `info` is what the kernel passed with SA_SIGINFO.
        let ours = unsafe { sent_by_dump(info) };
        if let Some(table) = table
            && ours
        {
            // SAFETY: on the signalled thread, with its own ucontext.
            unsafe { record(table, ctx) };
        }
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *errno = saved_errno };
}

/// True if the signal was sent with `tgkill` by this process, as the dump
/// sends it (not by the kernel for out-of-band socket data, not by another
/// process).
///
/// # Safety
/// `info` must be null or the siginfo of the current signal.
unsafe fn sent_by_dump(info: *const libc::siginfo_t) -> bool {
    // SAFETY: per the contract.
    let Some(info) = (unsafe { info.as_ref() }) else {
        return false;
    };
    // SAFETY: for SI_TKILL the kernel fills the sender fields, so reading
    // si_pid reads initialised memory.
    info.si_code == SI_TKILL && unsafe { info.si_pid() } == unsafe { libc::getpid() }
}

/// Records the calling thread's stack and name into its slot, once.
///
/// # Safety
/// Only from the signal handler, with `ctx` the signal's ucontext.
unsafe fn record(table: &Table, ctx: *mut libc::c_void) {
    let Some(slot) = table.find(gettid()) else {
        return;
    };
    // SAFETY: the kernel passes a valid ucontext_t with SA_SIGINFO.
    let Some(regs) = (unsafe { Regs::from_ucontext(ctx) }) else {
        return;
    };
    if slot
        .state
        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // SAFETY: we own the slot while it is WRITING.
    let data = unsafe { &mut *slot.data.get() };
    // SAFETY: on this thread, with registers from its own ucontext.
    data.len = unsafe { unwind::walk(&regs, &table.maps, &mut data.pcs) };
    data.name = [0; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer; it is a
    // plain system call.
    if unsafe { libc::prctl(libc::PR_GET_NAME, data.name.as_mut_ptr()) } != 0 {
        data.name = [0; 16];
    }
    slot.state.store(READY, Ordering::Release);
    table.answered.fetch_add(1, Ordering::AcqRel);
}

/// What `install` found in place of the default disposition.
pub(crate) enum InstallError {
    /// The application handles SIGURG itself; nothing was changed.
    Taken,
    /// `sigaction` failed.
    Os(io::Error),
}

/// True if `action` is the application's own handler (not SIG_DFL/SIG_IGN,
/// not ours).
fn foreign(action: &libc::sigaction) -> bool {
    let h = action.sa_sigaction;
    h != libc::SIG_DFL && h != libc::SIG_IGN && h != on_signal as *const () as libc::sighandler_t
}

/// Publishes `table` to the handler and installs it for SIGURG; returns the
/// previous action. Refuses, changing nothing, when the application has its
/// own SIGURG handler. The caller keeps `table` alive until [`deactivate`].
pub(crate) fn install(table: &Table) -> Result<libc::sigaction, InstallError> {
    // SAFETY: sigaction is plain data; all-zero is a valid starting value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    if unsafe { libc::sigaction(SIGNAL, ptr::null(), &mut current) } != 0 {
        return Err(InstallError::Os(io::Error::last_os_error()));
    }
    if foreign(&current) {
        return Err(InstallError::Taken);
    }
    TABLE.store(ptr::from_ref(table).cast_mut(), Ordering::Release);
    ACTIVE.store(true, Ordering::SeqCst);
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
    // SA_RESTART: interrupted system calls that can be restarted are.
    // SA_ONSTACK: on a thread with an alternate signal stack (std gives one
    // to every thread it starts), the handler's own frame does not land on
    // a stack that may be nearly exhausted.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to valid sigaction structs.
    if unsafe { libc::sigaction(SIGNAL, &action, &mut old) } != 0 {
        let err = io::Error::last_os_error();
        deactivate();
        return Err(InstallError::Os(err));
    }
    if foreign(&old) {
        // The application installed its handler between the two calls:
        // give it back at once.
        restore(&old);
        deactivate();
        return Err(InstallError::Taken);
    }
    Ok(old)
}

/// Makes the handler a no-op and waits until no invocation is still inside
/// it; afterwards nothing touches the table.
pub(crate) fn deactivate() {
    ACTIVE.store(false, Ordering::SeqCst);
    crate::cpu::sampler::wait_for_handlers(&IN_FLIGHT);
    TABLE.store(ptr::null_mut(), Ordering::Release);
}

/// Puts back the SIGURG action saved by [`install`]. If the application
/// replaced our handler while the dump ran, its handler is kept instead.
///
/// With the old action back (default or ignore, both of which ignore
/// SIGURG), signals still pending for threads that had SIGURG blocked are
/// discarded by the kernel; none of them can reach a later dump's table.
pub(crate) fn restore(old: &libc::sigaction) {
    // SAFETY: plain data, all-zero is valid.
    let mut replaced: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is what sigaction returned in `install`; `replaced`
    // receives the action that was in place. Errors are impossible for
    // SIGURG with valid pointers.
    unsafe { libc::sigaction(SIGNAL, old, &mut replaced) };
    if foreign(&replaced) {
        // SAFETY: as above; `replaced` is the application's own action.
        unsafe { libc::sigaction(SIGNAL, &replaced, ptr::null_mut()) };
    }
}

/// Sends the dump's signal to thread `tid` of this process.
pub(crate) fn signal(tid: libc::pid_t) -> io::Result<()> {
    // SAFETY: raw tgkill(tgid, tid, sig) with plain integers; it only
    // sends a signal whose disposition we control.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, SIGNAL) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
