//! # leakscope-viewer
//!
//! Analysis of pprof profiles, kept apart from rendering: pure functions
//! over [`Profile`](leakscope_agent::profile::Profile)s, no I/O. This first
//! part ranks what grew between two snapshots, by function and source line.

pub mod analysis;

pub use analysis::{DiffOptions, Growth, rank_growth};
