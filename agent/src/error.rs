//! The one error type of the agent crate.
//!
//! Every failure a caller can see is a variant here, with a message that says
//! what happened and, where there is one, what to do about it. The HTTP layer
//! maps these to Go's status codes in `http::error`.

use std::path::PathBuf;

/// Errors from collecting, symbolizing or encoding profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CPU profile is already being taken; only one runs at a time, as in Go.
    #[error("cpu profiling already in use")]
    CpuProfilingInUse,

    /// The SIGPROF handler or the profiling timer could not be installed.
    #[error("could not start the CPU profiling timer: {0}")]
    CpuTimer(#[source] std::io::Error),

    /// The application handles SIGURG itself, and a thread dump would have to
    /// replace its handler.
    #[error(
        "thread dumps are off in this process: it has its own SIGURG handler, which a dump would \
         replace (leakscope interrupts each thread once with SIGURG to read its stack); remove \
         that handler, or read thread stacks from outside (gdb -p PID -batch -ex 'thread apply \
         all bt')"
    )]
    ThreadDumpSignalTaken,

    /// jemalloc heap profiling is not enabled in this process.
    #[error(
        "heap profiling is off: use jemalloc as the global allocator and start the process with \
         prof:true (add `leakscope_agent::enable_heap_profiling!();` to your binary, or set \
         _RJEM_MALLOC_CONF=prof:true,prof_accum:true)"
    )]
    HeapProfilingDisabled,

    /// The agent was built without the `heap` feature.
    #[error("heap profiling is not compiled in: enable the `heap` feature of leakscope-agent")]
    HeapFeatureOff,

    /// The agent was built without the `cpu` feature.
    #[error("CPU profiling is not compiled in: enable the `cpu` feature of leakscope-agent")]
    CpuFeatureOff,

    /// A jemalloc control (mallctl) call failed.
    #[error("jemalloc control `{name}` failed: {message}")]
    Jemalloc {
        /// The mallctl name, such as `prof.dump`.
        name: &'static str,
        /// jemalloc's description of the failure.
        message: String,
    },

    /// A jemalloc heap dump could not be parsed.
    #[error("could not parse jemalloc heap dump at line {line}: {message}")]
    HeapDumpParse {
        /// 1-based line number in the dump.
        line: usize,
        /// What was wrong with it.
        message: String,
    },

    /// A profile file or body is not a valid pprof profile.
    #[error("{origin}: not a valid pprof profile: {message}")]
    InvalidProfile {
        /// Where the bytes came from (a file name, "request body", ...).
        origin: String,
        /// What was wrong with them.
        message: String,
    },

    /// An I/O operation on a file failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An I/O operation that is not about one file failed.
    #[error("{context}: {source}")]
    Io {
        /// What the agent was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The symbolizer thread is gone or overloaded.
    #[error("symbolizer unavailable: {0}")]
    Symbolizer(&'static str),

    /// The watched process does not exist (any more).
    #[error("process {pid} has exited")]
    ProcessGone {
        /// Its pid.
        pid: u32,
    },

    /// The agent may not read the watched process's /proc files.
    #[error(
        "permission denied reading {path} of process {pid}: run as the same user as the \
         target process or with CAP_SYS_PTRACE"
    )]
    ProcessNoAccess {
        /// Its pid.
        pid: u32,
        /// The file that could not be read.
        path: String,
    },

    /// A /proc file did not have the expected format.
    #[error("cannot parse {path}: {message}")]
    ProcParse {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },

    /// A configuration file is not valid.
    #[error("{origin}: {message}")]
    ConfigFile {
        /// The file (or other source) of the configuration.
        origin: String,
        /// What is wrong, and where.
        message: String,
    },

    /// The snapshot store's directory cannot be created, read or written.
    #[error(
        "cannot use {} as the snapshot directory: {source}; create it or choose a directory \
         this user can write",
        path.display()
    )]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Another store (in this process or another one) has the directory open.
    #[error(
        "the snapshot directory {} is in use by another leakscope store: give each process its \
         own directory, or share one `Store` (it is `Clone`) within a process",
        path.display()
    )]
    StoreLocked {
        /// The directory.
        path: PathBuf,
    },

    /// A stored snapshot failed its size or checksum check; it was moved to
    /// the store's quarantine directory and is no longer listed.
    #[error(
        "{}: corrupt snapshot, not served: {message}; take a new snapshot, or inspect the \
         quarantined files",
        path.display()
    )]
    CorruptSnapshot {
        /// The snapshot's data file (where it was before quarantine).
        path: PathBuf,
        /// What did not match, and where the files went.
        message: String,
    },

    /// The store has no snapshot with this id.
    #[error(
        "no snapshot `{id}` in the store: list the store for the ids it holds (retention may \
         have removed it)"
    )]
    UnknownSnapshot {
        /// The id asked for.
        id: String,
    },

    /// A snapshot handed to the store, or a value meant for one, is not valid.
    #[error("invalid snapshot {field} `{value}`: {message}")]
    InvalidSnapshot {
        /// The field: `kind`, `time`, `trigger`, ...
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is accepted.
        message: String,
    },

    /// No task dump can be taken here (feature `taskdump`); the tasks
    /// profile is served without parked-at frames.
    #[error("no tokio task dump: {reason}")]
    TaskDumpUnavailable {
        /// Why, and what would allow one.
        reason: &'static str,
    },

    /// A builder setting is out of range.
    #[error("invalid setting `{setting}`: {message}")]
    Config {
        /// The setting's name.
        setting: &'static str,
        /// Why the value was refused.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
