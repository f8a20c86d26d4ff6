//! Watching resource counters: bounded time series and threshold rules with
//! hysteresis evaluated on each new sample.

pub mod baselines;
pub mod config;
pub mod evidence;
pub mod monitor;
pub mod rules;
pub mod series;

// The names a service's code uses, where the docs name them
// (`watch::MonitorOptions`, `watch::Rule`).
pub use monitor::{Monitor, MonitorOptions, TargetStatus, WatchHook, WatchTarget};
pub use rules::{Condition, Level, Rule, default_rules};
