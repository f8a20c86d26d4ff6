//! Watching resource counters: bounded time series and threshold rules with
//! hysteresis evaluated on each new sample.

pub mod baselines;
pub mod config;
pub mod evidence;
pub mod monitor;
pub mod rules;
pub mod series;
