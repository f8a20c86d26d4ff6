//! `leakscope check`: one leak test of a whole service under load, for CI.
//! It starts (or attaches to) the service, reads its counters and profiles
//! before a warm-up, drives load, lets the service cool down, and judges,
//! per kind of resource, what stayed behind; each leak is named with the
//! evidence the agent's naming uses.
//!
//! - [`model`]: what a check found ([`CheckReport`]), the data every report
//!   is rendered from.
//! - [`report`]: the CI reports rendered from it, JUnit XML and a
//!   self-contained HTML page.
//! - [`options`]: what a check is told to do ([`CheckOptions`]), and
//!   [`config`], the same from a TOML file.
//! - [`target`]: the processes a check starts (the service, a load
//!   command) and stops.
//! - [`observe`]: what it reads of the service (counts, count profiles,
//!   dumps, heap profiles), through the sidecar's readers.
//! - [`verdict`]: the verdict on each kind, pure.
//! - [`run`](mod@run): one check from start to end.
//! - [`summary`]: the terminal table and `--json`.

pub mod config;
pub mod model;
pub mod observe;
pub mod options;
pub mod report;
pub mod run;
pub mod summary;
pub mod target;
pub mod verdict;

pub use model::{CheckReport, Evidence, KindVerdict, LoadSummary, Outcome, Phase, Series};
pub use options::{Budgets, CheckOptions, LoadChoice, LoadEntry, OptionsError, TargetChoice};
pub use run::{Event, run};
