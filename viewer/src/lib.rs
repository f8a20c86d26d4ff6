//! # leakscope-viewer
//!
//! Analysis of pprof profiles, kept apart from rendering: pure functions
//! over [`Profile`](leakscope_agent::profile::Profile)s, no I/O.
//!
//! - [`analysis`]: rank what grew between two snapshots, by function and line;
//! - [`fold`]: fold a profile into stacks for a flamegraph;
//! - [`diff`]: stack-by-stack differences, absolute or normalized;
//! - [`suspects`]: leak suspects across heap snapshots, by the agent's own analysis;
//! - [`render`]: flamegraph SVGs (inferno), the terminal table, HTML parts;
//! - `web` (feature `web`, on by default): the pages, over any `web::Source`.

pub mod analysis;
pub mod diff;
pub mod fold;
pub mod render;
pub mod suspects;
#[cfg(feature = "web")]
pub mod web;

pub use analysis::{DiffOptions, Growth, rank_growth};
