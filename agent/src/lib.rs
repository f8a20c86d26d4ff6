//! # leakscope-agent
//!
//! The in-process half of leakscope: Go-compatible `/debug/pprof/*`
//! endpoints for a Rust service, so that `go tool pprof` reads it exactly as
//! it reads a Go service, with profiles that carry real addresses, mappings
//! with build IDs, demangled names, files, lines and inlined frames.
//!
//! ## Quick start
//!
//! ```ignore
//! // 1. jemalloc with heap profiling on, in the binary (once):
//! leakscope_agent::enable_heap_profiling!();
//!
//! #[tokio::main]
//! async fn main() {
//!     // 2a. Its own listener on 127.0.0.1:6060 ...
//!     let _agent = leakscope_agent::AgentBuilder::new().spawn().await.unwrap();
//!     // 2b. ... or the routes on the service's router:
//!     let app = axum::Router::new().merge(leakscope_agent::AgentBuilder::new().router());
//! #   drop(app);
//! }
//! ```
//!
//! Then `go tool pprof http://127.0.0.1:6060/debug/pprof/heap`.
//!
//! Build with frame pointers (`RUSTFLAGS="-C force-frame-pointers=yes"`, or
//! `[build] rustflags` in `.cargo/config.toml`) so CPU stacks are complete,
//! and keep debug info (`debug = "limited"` in the release profile) so
//! profiles name functions in full, with files, lines and inlined frames.
//!
//! ## Features
//!
//! | feature  | default | what it adds |
//! |----------|---------|--------------|
//! | `cpu`    | yes     | `/debug/pprof/profile`: a SIGPROF sampler unwinding by frame pointers; `/debug/pprof/threads`: every thread's stack, by the same unwinder |
//! | `heap`   | yes     | `/debug/pprof/heap`, `/allocs`: jemalloc's sampling heap profiler |
//! | `server` | yes     | the axum routes and the listener |
//! | `taskdump` | no    | task dumps in `/debug/pprof/tasks` (with `--cfg tokio_unstable`, current-thread runtimes; see [`tasks`]) |
//! | `fd-sites` | no    | the code that opened each fd, in the fds profile; the binary must be linked with [`fdsites::LINK_ARG`] (see [`fdsites`]) |
//!
//! ## Safety for the service
//!
//! Nothing here panics the service. Dumping, symbolizing and encoding run on
//! blocking threads, at most [`http::HEAVY_JOBS`] at a time. The signal
//! handler only reads the interrupted thread's stack and writes into a
//! preallocated buffer. The symbolizer's cache is bounded and its parsed
//! debug info is released after each profile.

#[cfg(feature = "server")]
mod agent;
#[cfg(feature = "server")]
pub mod alert;
#[cfg(feature = "server")]
pub mod client;
pub mod collect;
#[cfg(feature = "cpu")]
pub mod cpu;
pub mod error;
pub mod explain;
pub mod fdsites;
#[cfg_attr(not(any(feature = "cpu", feature = "fd-sites")), allow(dead_code))]
mod framechain;
#[cfg(feature = "heap")]
pub mod heap;
#[cfg(feature = "server")]
pub mod http;
pub mod profile;
pub mod resource;
pub mod store;
pub mod symbolize;
pub mod tasks;
#[cfg(feature = "cpu")]
pub mod threads;
pub mod watch;

#[cfg(feature = "server")]
pub use agent::{Agent, AgentBuilder, AgentParts};
pub use error::{Error, Result};

/// Makes jemalloc the global allocator with heap profiling on, the one step
/// a binary needs for `/debug/pprof/heap` and `/allocs`.
///
/// Put it once at the top level of the binary crate (`main.rs`). With no
/// argument it uses `prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19`
/// (a sample every 512 KiB on average, cumulative counts kept for
/// `alloc_*`); pass a jemalloc configuration string to change that.
/// `_RJEM_MALLOC_CONF` in the environment still overrides it at run time.
#[cfg(feature = "heap")]
#[macro_export]
macro_rules! enable_heap_profiling {
    () => {
        $crate::enable_heap_profiling!(
            "prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19"
        );
    };
    ($conf:literal) => {
        #[global_allocator]
        static LEAKSCOPE_GLOBAL_ALLOCATOR: $crate::__private::Jemalloc =
            $crate::__private::Jemalloc;

        /// jemalloc's start-up configuration, read once before `main`.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static LEAKSCOPE_MALLOC_CONF: $crate::__private::MallocConf =
            $crate::__private::MallocConf::new(concat!($conf, "\0"));
    };
}

#[doc(hidden)]
#[cfg(feature = "heap")]
pub mod __private {
    pub use tikv_jemallocator::Jemalloc;

    /// A `const char *` to a NUL-terminated static string, the type jemalloc
    /// expects behind `_rjem_malloc_conf`.
    #[repr(transparent)]
    pub struct MallocConf(*const std::ffi::c_char);

    // SAFETY: the pointer refers to an immutable `'static` string.
    unsafe impl Sync for MallocConf {}

    impl MallocConf {
        /// Wraps `conf`, which must end with a NUL byte (checked at compile time).
        pub const fn new(conf: &'static str) -> MallocConf {
            let bytes = conf.as_bytes();
            assert!(
                !bytes.is_empty() && bytes[bytes.len() - 1] == 0,
                "the jemalloc configuration must end with a NUL byte"
            );
            MallocConf(bytes.as_ptr().cast())
        }
    }
}
