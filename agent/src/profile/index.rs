//! Reading a decoded profile: its locations and functions by id, a
//! sample's frames from the leaf up (inlined frames expanded), its labels.

use std::collections::HashMap;

use super::model::{Function, Line, Location, Profile, Sample};

/// One frame of a sample, borrowed from its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'p> {
    /// Function name ("" when the location has none).
    pub function: &'p str,
    /// Source file, "" when unknown.
    pub file: &'p str,
    /// Source line, 0 when unknown.
    pub line: i64,
    /// The location's address (0 for pseudo frames, see
    /// [`PseudoFrame`](super::PseudoFrame)).
    pub address: u64,
    /// True for a frame with no address and no mapping: a name given to
    /// what a sample is (`tcp ESTABLISHED to ...`) rather than code.
    pub pseudo: bool,
}

/// A profile's locations and functions by id.
pub struct ProfileIndex<'p> {
    profile: &'p Profile,
    locations: HashMap<u64, &'p Location>,
    functions: HashMap<u64, &'p Function>,
}

impl<'p> ProfileIndex<'p> {
    /// Indexes `profile`.
    pub fn new(profile: &'p Profile) -> Self {
        ProfileIndex {
            profile,
            locations: profile.location.iter().map(|l| (l.id, l)).collect(),
            functions: profile.function.iter().map(|f| (f.id, f)).collect(),
        }
    }

    /// The profile indexed.
    pub fn profile(&self) -> &'p Profile {
        self.profile
    }

    /// The location `id`, if the profile holds it.
    pub fn location(&self, id: u64) -> Option<&'p Location> {
        self.locations.get(&id).copied()
    }

    /// Function name, file and line of one line of a location.
    pub fn line(&self, line: &Line) -> Option<(&'p str, &'p str, i64)> {
        let f = self.functions.get(&line.function_id)?;
        Some((
            self.profile.string(f.name),
            self.profile.string(f.filename),
            line.line,
        ))
    }

    /// The frames of `sample` from the leaf up, the innermost inlined frame
    /// of each location first. A location with no lines gives one frame
    /// with an empty name.
    pub fn frames(&self, sample: &Sample) -> Vec<FrameRef<'p>> {
        let mut out = Vec::with_capacity(sample.location_id.len());
        for id in &sample.location_id {
            let Some(loc) = self.location(*id) else {
                continue;
            };
            let pseudo = loc.address == 0 && loc.mapping_id == 0;
            if loc.line.is_empty() {
                out.push(FrameRef {
                    function: "",
                    file: "",
                    line: 0,
                    address: loc.address,
                    pseudo,
                });
            }
            for l in &loc.line {
                if let Some((function, file, line)) = self.line(l) {
                    out.push(FrameRef {
                        function,
                        file,
                        line,
                        address: loc.address,
                        pseudo,
                    });
                }
            }
        }
        out
    }

    /// The string label `key` of `sample`, if it has one.
    pub fn label(&self, sample: &'p Sample, key: &str) -> Option<&'p str> {
        sample
            .label
            .iter()
            .find(|l| self.profile.string(l.key) == key && l.str != 0)
            .map(|l| self.profile.string(l.str))
    }

    /// Index of the sample type `name`.
    pub fn sample_type(&self, name: &str) -> Option<usize> {
        self.profile
            .sample_type_names()
            .iter()
            .position(|(t, _)| *t == name)
    }
}
