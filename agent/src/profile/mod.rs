//! The profile model and the code that builds profiles from raw stacks.

mod build;
mod delta;
mod index;
mod model;

pub use build::{ProfileMeta, PseudoFrame, SampleLabel, StackSample, TrimFn, build_profile};
pub use delta::delta;
pub use index::{FrameRef, ProfileIndex};
pub use model::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
