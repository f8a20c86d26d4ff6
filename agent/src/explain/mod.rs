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
//! - [`finding`]: the [`Finding`] an alert carries.

pub mod counts;
pub mod finding;
pub mod frames;
pub mod trend;

pub use finding::{Confidence, Finding, Group, Site};
