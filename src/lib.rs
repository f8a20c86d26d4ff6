//! # leakscope
//!
//! Finds the leak that appears under load in a Rust service: heap that only
//! grows, threads and tasks that never end, file descriptors never closed.
//!
//! This facade crate re-exports the parts:
//!
//! - [`agent`] (crate `leakscope-agent`): Go-compatible `/debug/pprof/*`
//!   endpoints with symbolized CPU and jemalloc heap profiles;
//! - [`viewer`] (crate `leakscope-viewer`): analysis of profiles, such as
//!   ranking what grew between two snapshots;
//! - [`sidecar`]: the engine of `leakscope watch`, which watches other
//!   processes through /proc and pulls their pprof profiles into a store;
//! - [`ui`]: the web viewer wired to the agent (`/debug/pprof/ui/`) and to
//!   the sidecar (`/ui/`);
//! - [`check`]: `leakscope check`, a leak test of a whole service under load,
//!   for CI;
//! - [`load`]: the load generator behind `leakscope load` and the demo;
//! - [`leakcheck`]: `LeakCheck`, which fails a test that leaks threads,
//!   fds, tokio tasks or heap (like Go's goleak);
//! - [`leaky`]: a service that leaks on purpose, used by `leakscope demo`,
//!   the examples and the tests;
//!
//! and hosts the `leakscope` command-line tool (`cargo run --release -- demo`).
//! See README.md for the quick start.

pub mod check;
pub mod leakcheck;
pub mod leaky;
pub mod load;
pub mod sidecar;
#[cfg(feature = "viewer")]
pub mod ui;

pub use leakscope_agent::client;

pub use leakscope_agent as agent;
pub use leakscope_viewer as viewer;

#[cfg(feature = "heap")]
pub use leakscope_agent::enable_heap_profiling;
pub use leakscope_agent::{Agent, AgentBuilder};
