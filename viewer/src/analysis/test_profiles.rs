//! Hand-built profiles for the unit tests of the analysis modules: a small
//! builder that interns strings, functions and locations the way a
//! symbolizer would, so a test states its stacks by name.

use leakscope_agent::profile::{Function, Line, Location, Profile, Sample, ValueType};

/// File of the frames a test names without one.
pub(crate) const FILE: &str = "src/a.rs";

/// Builds a [`Profile`] sample by sample.
pub(crate) struct ProfileBuilder {
    p: Profile,
}

impl ProfileBuilder {
    /// An empty profile with these `(type, unit)` sample types.
    pub(crate) fn new(types: &[(&str, &str)]) -> Self {
        let mut b = ProfileBuilder {
            p: Profile {
                string_table: vec![String::new()],
                ..Profile::default()
            },
        };
        for (t, u) in types {
            let vt = ValueType {
                r#type: b.intern(t),
                unit: b.intern(u),
            };
            b.p.sample_type.push(vt);
        }
        b
    }

    /// An empty profile of one sample type, `inuse_space` in `bytes`.
    pub(crate) fn inuse() -> Self {
        Self::new(&[("inuse_space", "bytes")])
    }

    /// Marks `name` as the default sample type.
    pub(crate) fn default_sample_type(mut self, name: &str) -> Self {
        self.p.default_sample_type = self.intern(name);
        self
    }

    /// Sets the sampling period (bytes, for a heap profile).
    pub(crate) fn period(mut self, period: i64) -> Self {
        self.p.period = period;
        self
    }

    /// Index of `s` in the string table, added when new.
    fn intern(&mut self, s: &str) -> i64 {
        let i = match self.p.string_table.iter().position(|x| x == s) {
            Some(i) => i,
            None => {
                self.p.string_table.push(s.to_owned());
                self.p.string_table.len() - 1
            }
        };
        i as i64
    }

    /// Id of the function `(name, file)`, added when new.
    fn function(&mut self, name: &str, file: &str) -> u64 {
        let (name, filename) = (self.intern(name), self.intern(file));
        if let Some(f) = self
            .p
            .function
            .iter()
            .find(|f| f.name == name && f.filename == filename)
        {
            return f.id;
        }
        let id = self.p.function.len() as u64 + 1;
        self.p.function.push(Function {
            id,
            name,
            filename,
            ..Function::default()
        });
        id
    }

    /// A new location at `address` holding `frames` `(function, file,
    /// line)`, innermost inlined frame first; no frames: unsymbolized.
    pub(crate) fn location(&mut self, address: u64, frames: &[(&str, &str, i64)]) -> u64 {
        let line = frames
            .iter()
            .map(|(name, file, line)| Line {
                function_id: self.function(name, file),
                line: *line,
                column: 0,
            })
            .collect();
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(Location {
            id,
            address,
            line,
            ..Location::default()
        });
        id
    }

    /// A sample on `locations` (leaf first) with one value per sample type.
    pub(crate) fn sample(mut self, locations: &[u64], values: &[i64]) -> Self {
        self.p.sample.push(Sample {
            location_id: locations.to_vec(),
            value: values.to_vec(),
            label: vec![],
        });
        self
    }

    /// A sample whose stack is `functions` (leaf first), one location per
    /// function in [`FILE`], the line being the frame's depth from the leaf
    /// plus one.
    pub(crate) fn stack(mut self, functions: &[&str], values: &[i64]) -> Self {
        let ids: Vec<u64> = functions
            .iter()
            .enumerate()
            .map(|(depth, name)| {
                let frame = (*name, FILE, depth as i64 + 1);
                let address = 0x1000 + self.p.location.len() as u64 * 0x10;
                self.location(address, &[frame])
            })
            .collect();
        self.sample(&ids, values)
    }

    /// The profile, checked like a decoded one.
    pub(crate) fn build(self) -> Profile {
        if let Err(e) = self.p.validate() {
            panic!("test profile is invalid: {e}");
        }
        self.p
    }
}

/// An `inuse_space` profile with one single-frame sample per
/// `(function, line, value)`, all in [`FILE`].
pub(crate) fn flat_profile(samples: &[(&str, i64, i64)]) -> Profile {
    let mut b = ProfileBuilder::inuse();
    for (i, (name, line, value)) in samples.iter().enumerate() {
        let id = b.location(0x1000 + i as u64 * 0x10, &[(name, FILE, *line)]);
        b = b.sample(&[id], &[*value]);
    }
    b.build()
}
