//! Naming leaks: pure code over profiles and series that says what grew,
//! where in the program's own code, and how sure that is. The watch loop
//! attaches the result, a [`Finding`], to every alert.
//!
//! - [`frames`]: whose code a frame is (the program's, a library's,
//!   leakscope's own);
//! - [`trend`]: is a sampled quantity still growing, above its sampling
//!   noise, or has it levelled off;
//! - [`counts`]: what grew between two count profiles (threads, tasks,
//!   fds, goroutines);
//! - [`heap`]: which allocation site keeps growing across heap snapshots;
//! - [`finding`]: the [`Finding`] an alert carries.

pub mod counts;
pub mod finding;
pub mod frames;
pub mod heap;
pub mod trend;

pub use finding::{Confidence, Finding, Group, Site};

/// Bytes with a binary unit and one decimal: `12.3 MiB`.
pub fn format_bytes(bytes: f64) -> String {
    format_bytes_with(bytes, 1)
}

/// Bytes with a binary unit and `digits` decimals.
pub fn format_bytes_with(bytes: f64, digits: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.digits$} {}", UNITS[unit])
}
