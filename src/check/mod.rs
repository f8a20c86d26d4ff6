//! `leakscope check`: one leak test of a whole service under load, for CI.
//! It starts (or attaches to) the service, reads its counters and profiles
//! before a warm-up, drives load, lets the service cool down, and judges,
//! per kind of resource, what stayed behind; each leak is named with the
//! evidence the agent's naming uses.
//!
//! - [`model`]: what a check found ([`CheckReport`]), the data every report
//!   is rendered from;
//! - [`report`]: the CI reports rendered from it, JUnit XML and a
//!   self-contained HTML page.

pub mod model;
pub mod report;

pub use model::{CheckReport, Evidence, KindVerdict, LoadSummary, Outcome, Phase, Series};
