//! Builds a [`Profile`] from raw stacks: symbolizes every address once,
//! trims allocator frames off the top of stacks, dedupes functions and
//! locations, and writes mappings with their build IDs and symbolization
//! flags (main binary first).

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::symbolize::{Frame, ProcessMaps, Resolved, Symbolizer};

/// One sample before symbolization.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSample {
    /// Addresses, leaf first, already adjusted for symbolization: the leaf of
    /// a CPU sample is the interrupted PC; every caller is its return
    /// address minus one.
    pub stack: Vec<u64>,
    /// One value per sample type.
    pub values: Vec<i64>,
    /// Labels of the sample.
    pub labels: Vec<SampleLabel>,
    /// Named frames with no address, put on the leaf side of `stack`
    /// (leaf first): what a sample is when no code address says it
    /// (`tcp ESTABLISHED to 127.0.0.1:9000`, `thread did not answer`).
    pub pseudo: Vec<PseudoFrame>,
}

/// A frame known by name (and optionally file and line) rather than by
/// address. It becomes a location with address 0 and no mapping, so pprof
/// clients show it as it is and never try to symbolize it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PseudoFrame {
    /// The function name shown.
    pub name: String,
    /// Source file, if the frame stands for a place in the code.
    pub file: Option<String>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

impl PseudoFrame {
    /// A frame with only a name.
    pub fn named(name: impl Into<String>) -> PseudoFrame {
        PseudoFrame {
            name: name.into(),
            file: None,
            line: 0,
        }
    }
}

/// A label on a [`StackSample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleLabel {
    /// A string label, e.g. `thread = "tokio-runtime-w"`.
    Str(&'static str, String),
    /// A numeric label, e.g. `bytes = 4096`.
    Num(&'static str, i64),
}

/// What a profile measures and when: everything but the samples.
#[derive(Debug, Clone)]
pub struct ProfileMeta {
    /// `(type, unit)` of each value, in order.
    pub sample_types: Vec<(&'static str, &'static str)>,
    /// `(type, unit)` of the period.
    pub period_type: (&'static str, &'static str),
    /// Events between samples.
    pub period: i64,
    /// Preferred sample type, by type name.
    pub default_sample_type: Option<&'static str>,
    /// Collection time, ns since the Unix epoch.
    pub time_nanos: i64,
    /// Collection duration in ns.
    pub duration_nanos: i64,
}

/// Frames for which `trim` returns true are removed from the top (leaf end)
/// of every stack, as long as they are on top: the allocator's own frames.
/// Whole addresses go first; then, in the new leaf location, inlined
/// allocator frames above the caller's own frame.
pub type TrimFn<'a> = &'a dyn Fn(&Frame) -> bool;

/// Symbolizes `samples` against `maps` and builds the profile.
pub fn build_profile(
    meta: &ProfileMeta,
    samples: Vec<StackSample>,
    maps: &ProcessMaps,
    symbolizer: &Symbolizer,
    trim: Option<TrimFn<'_>>,
) -> Profile {
    let mut addrs: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.stack.iter().copied())
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    // A profile of pseudo frames only (fds) does not wait for the
    // symbolizer's lock.
    let resolved = if addrs.is_empty() {
        HashMap::new()
    } else {
        symbolizer.resolve(maps, &addrs)
    };

    let mut trimmed: HashMap<u64, Resolved> = HashMap::new();
    let mut b = Builder::new(meta);
    b.add_mappings(maps, symbolizer);
    for sample in samples {
        let mut stack: &[u64] = &sample.stack;
        if let Some(trim) = trim {
            while let Some((first, rest)) = stack.split_first() {
                let frames = resolved.get(first).map(|r| &r.frames[..]).unwrap_or(&[]);
                if !rest.is_empty() && !frames.is_empty() && frames.iter().all(trim) {
                    stack = rest;
                } else {
                    break;
                }
            }
        }
        // The new leaf may still carry allocator frames inlined into the
        // caller's code: keep only the caller's part of that location.
        if let (Some(trim), Some(first)) = (trim, stack.first())
            && let Some(r) = resolved.get(first)
            && !trimmed.contains_key(first)
        {
            let keep = r.frames.iter().position(|f| !trim(f)).unwrap_or(0);
            if keep > 0 {
                let frames: Arc<[Frame]> = r.frames[keep..].into();
                trimmed.insert(
                    *first,
                    Resolved {
                        mapping: r.mapping,
                        frames,
                    },
                );
            }
        }
        let mut location_id: Vec<u64> =
            sample.pseudo.iter().map(|f| b.pseudo_location(f)).collect();
        for addr in stack {
            location_id.push(b.location(*addr, trimmed.get(addr).or_else(|| resolved.get(addr))));
        }
        let label = sample
            .labels
            .iter()
            .map(|l| match l {
                SampleLabel::Str(k, v) => Label {
                    key: b.string(k),
                    str: b.string(v),
                    ..Label::default()
                },
                SampleLabel::Num(k, n) => Label {
                    key: b.string(k),
                    num: *n,
                    ..Label::default()
                },
            })
            .collect();
        b.profile.sample.push(Sample {
            location_id,
            value: sample.values,
            label,
        });
    }
    b.finish()
}

struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<u64, u64>,
    pseudo_locations: HashMap<PseudoFrame, u64>,
    /// Per mapping id: (locations, with functions).
    coverage: HashMap<u64, [u32; 2]>,
    /// Mapping ids whose object has DWARF line tables.
    debug_lines: std::collections::HashSet<u64>,
}

impl Builder {
    fn new(meta: &ProfileMeta) -> Builder {
        let mut b = Builder {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            pseudo_locations: HashMap::new(),
            coverage: HashMap::new(),
            debug_lines: std::collections::HashSet::new(),
        };
        b.profile.string_table.push(String::new());
        b.strings.insert(String::new(), 0);
        let sample_type = meta
            .sample_types
            .iter()
            .map(|(t, u)| b.value_type(t, u))
            .collect();
        b.profile.sample_type = sample_type;
        b.profile.period_type = Some(b.value_type(meta.period_type.0, meta.period_type.1));
        b.profile.period = meta.period;
        b.profile.time_nanos = meta.time_nanos;
        b.profile.duration_nanos = meta.duration_nanos;
        if let Some(name) = meta.default_sample_type {
            b.profile.default_sample_type = b.string(name);
        }
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn value_type(&mut self, t: &str, u: &str) -> ValueType {
        ValueType {
            r#type: self.string(t),
            unit: self.string(u),
        }
    }

    fn add_mappings(&mut self, maps: &ProcessMaps, symbolizer: &Symbolizer) {
        for (i, e) in maps.entries.iter().enumerate() {
            let info = symbolizer.object_info(&e.path).unwrap_or_default();
            let build_id = info.build_id.unwrap_or_default();
            if info.has_debug_lines {
                self.debug_lines.insert(i as u64 + 1);
            }
            let mapping = Mapping {
                id: i as u64 + 1,
                memory_start: e.start,
                memory_limit: e.end,
                file_offset: e.offset,
                filename: self.string(&e.path),
                build_id: self.string(&build_id),
                ..Mapping::default()
            };
            self.profile.mapping.push(mapping);
        }
    }

    fn location(&mut self, addr: u64, resolved: Option<&Resolved>) -> u64 {
        if let Some(&id) = self.locations.get(&addr) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let mapping_id = resolved.and_then(|r| r.mapping).map_or(0, |i| i as u64 + 1);
        let frames: &[Frame] = resolved.map(|r| &r.frames[..]).unwrap_or(&[]);
        let line = frames
            .iter()
            .map(|f| Line {
                function_id: self.function(f),
                line: i64::from(f.line),
                column: 0,
            })
            .collect();
        if mapping_id != 0 {
            let c = self.coverage.entry(mapping_id).or_default();
            c[0] += 1;
            c[1] += u32::from(!frames.is_empty());
        }
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: addr,
            line,
            is_folded: false,
        });
        self.locations.insert(addr, id);
        id
    }

    fn pseudo_location(&mut self, f: &PseudoFrame) -> u64 {
        if let Some(&id) = self.pseudo_locations.get(f) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        // No system name: pprof clients take a function whose system name
        // equals its name for not yet demangled and "simplify" it, cutting
        // everything inside `<...>` and `(...)` (all of `<tokio tasks: ...>`).
        let frame = Frame {
            name: Arc::from(f.name.as_str()),
            system_name: Arc::from(""),
            file: f.file.as_deref().map(Arc::from),
            line: f.line,
        };
        let line = vec![Line {
            function_id: self.function(&frame),
            line: i64::from(f.line),
            column: 0,
        }];
        self.profile.location.push(Location {
            id,
            mapping_id: 0,
            address: 0,
            line,
            is_folded: false,
        });
        self.pseudo_locations.insert(f.clone(), id);
        id
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let name = self.string(&f.name);
        let system_name = self.string(&f.system_name);
        let filename = self.string(f.file.as_deref().unwrap_or(""));
        let next = self.profile.function.len() as u64 + 1;
        let id = *self
            .functions
            .entry((name, system_name, filename))
            .or_insert(next);
        if id == next {
            self.profile.function.push(Function {
                id,
                name,
                system_name,
                filename,
                start_line: 0,
            });
        }
        id
    }

    fn finish(mut self) -> Profile {
        // Flags say what symbolization was done, so that pprof clients
        // re-symbolize exactly what we could not: functions when every
        // location in the mapping has one; files, lines and inlined frames
        // when, in addition, the object has line tables we looked them up in
        // (an address may still have none: then there is none to find).
        for m in &mut self.profile.mapping {
            let [n, funcs] = self.coverage.get(&m.id).copied().unwrap_or_default();
            m.has_functions = n > 0 && funcs == n;
            let lines = m.has_functions && self.debug_lines.contains(&m.id);
            m.has_filenames = lines;
            m.has_line_numbers = lines;
            m.has_inline_frames = lines;
        }
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_frames_sit_on_the_leaf_side_with_no_address() {
        let meta = ProfileMeta {
            sample_types: vec![("fds", "count")],
            period_type: ("fds", "count"),
            period: 1,
            default_sample_type: None,
            time_nanos: 0,
            duration_nanos: 0,
        };
        let what = PseudoFrame::named("tcp ESTABLISHED to 127.0.0.1:9000");
        let site = PseudoFrame {
            name: "spawned at".into(),
            file: Some("src/jobs.rs".into()),
            line: 42,
        };
        let samples = vec![
            StackSample {
                stack: Vec::new(),
                values: vec![950],
                labels: vec![SampleLabel::Str("kind", "tcp".into())],
                pseudo: vec![what.clone(), PseudoFrame::named("tcp")],
            },
            StackSample {
                stack: Vec::new(),
                values: vec![3],
                labels: Vec::new(),
                pseudo: vec![site, PseudoFrame::named("tcp")],
            },
        ];
        let maps = ProcessMaps::default();
        let p = build_profile(&meta, samples, &maps, Symbolizer::global(), None);
        p.validate().expect("a valid profile");
        // Three distinct pseudo frames, the shared root only once.
        assert_eq!(p.location.len(), 3);
        assert!(
            p.location
                .iter()
                .all(|l| l.address == 0 && l.mapping_id == 0)
        );
        let name_of = |loc_id: u64| {
            let loc = &p.location[loc_id as usize - 1];
            let f = &p.function[loc.line[0].function_id as usize - 1];
            (
                p.string(f.name).to_owned(),
                p.string(f.filename).to_owned(),
                loc.line[0].line,
            )
        };
        let first = &p.sample[0].location_id;
        assert_eq!(name_of(first[0]).0, what.name);
        assert_eq!(name_of(first[1]).0, "tcp");
        assert_eq!(p.sample[0].location_id[1], p.sample[1].location_id[1]);
        assert!(
            p.function
                .iter()
                .all(|f| p.string(f.system_name).is_empty()),
            "no system name, so pprof does not demangle the names"
        );
        assert_eq!(
            name_of(p.sample[1].location_id[0]),
            ("spawned at".to_owned(), "src/jobs.rs".to_owned(), 42)
        );
    }
}
