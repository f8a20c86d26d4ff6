//! The delta of two profiles of the same kind: `new − base`, stack by
//! stack, the way Go's `/debug/pprof/heap?seconds=N` answers but computed
//! from two saved snapshots (the sidecar pulls a heap profile on a schedule
//! and diffs consecutive ones locally).
//!
//! Stacks are matched by what they mean, not by address: each location is
//! keyed by its frames (function name, file, line), or by its address when
//! it has no symbols, so profiles of two runs of a binary (ASLR, a restart)
//! still line up. Sample labels are part of the key. Samples whose values
//! all cancel out are dropped.

use std::collections::HashMap;

use super::model::{Function, Label, Line, Location, Profile, Sample};
use crate::error::{Error, Result};

/// A location's meaning: its frames, or its address when unsymbolized.
#[derive(Clone, PartialEq, Eq, Hash)]
enum LocKey {
    Frames(Vec<(String, String, i64)>),
    Address(u64),
}

fn loc_key(p: &Profile, loc: &Location, functions: &HashMap<u64, &Function>) -> LocKey {
    if loc.line.is_empty() {
        return LocKey::Address(loc.address);
    }
    LocKey::Frames(
        loc.line
            .iter()
            .map(|l| {
                let f = functions.get(&l.function_id);
                (
                    f.map_or("", |f| p.string(f.name)).to_owned(),
                    f.map_or("", |f| p.string(f.filename)).to_owned(),
                    l.line,
                )
            })
            .collect(),
    )
}

/// A sample's identity in the output: its stack and its labels.
type SampleKey = (Vec<u64>, Vec<(i64, i64, i64, i64)>);

/// Builds the output profile: interns strings, functions and locations.
struct Builder {
    out: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    locations: HashMap<LocKey, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.out.string_table.len() as i64;
        self.out.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str, system_name: &str, start_line: i64) -> u64 {
        let key = (name.to_owned(), file.to_owned());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.out.function.len() as u64 + 1;
        let f = Function {
            id,
            name: self.string(name),
            system_name: self.string(system_name),
            filename: self.string(file),
            start_line,
        };
        self.out.function.push(f);
        self.functions.insert(key, id);
        id
    }

    /// The output location for `loc` of profile `p`.
    fn location(
        &mut self,
        p: &Profile,
        loc: &Location,
        functions: &HashMap<u64, &Function>,
    ) -> u64 {
        let key = loc_key(p, loc, functions);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let lines = loc
            .line
            .iter()
            .map(|l| {
                let (name, file, system, start) =
                    functions.get(&l.function_id).map_or(("", "", "", 0), |f| {
                        (
                            p.string(f.name),
                            p.string(f.filename),
                            p.string(f.system_name),
                            f.start_line,
                        )
                    });
                Line {
                    function_id: self.function(name, file, system, start),
                    line: l.line,
                    column: l.column,
                }
            })
            .collect();
        let id = self.out.location.len() as u64 + 1;
        self.out.location.push(Location {
            id,
            // Mappings differ between runs; the delta keeps symbols only.
            mapping_id: 0,
            address: loc.address,
            line: lines,
            is_folded: loc.is_folded,
        });
        self.locations.insert(key, id);
        id
    }

    fn labels(&mut self, p: &Profile, labels: &[Label]) -> Vec<Label> {
        labels
            .iter()
            .map(|l| Label {
                key: self.string(p.string(l.key)),
                str: self.string(p.string(l.str)),
                num: l.num,
                num_unit: self.string(p.string(l.num_unit)),
            })
            .collect()
    }
}

/// `new − base`: every value of every stack, with `new`'s sample types,
/// period and time, and a duration from `base`'s time to `new`'s.
///
/// Both profiles must have the same sample types (names and units, in
/// order); otherwise the error names both lists.
pub fn delta(base: &Profile, new: &Profile) -> Result<Profile> {
    let types = |p: &Profile| -> Vec<(String, String)> {
        p.sample_type_names()
            .into_iter()
            .map(|(t, u)| (t.to_owned(), u.to_owned()))
            .collect()
    };
    if types(base) != types(new) {
        return Err(Error::InvalidProfile {
            origin: "delta".into(),
            message: format!(
                "the profiles have different sample types: base {:?}, new {:?}",
                types(base),
                types(new)
            ),
        });
    }
    let mut b = Builder {
        out: Profile {
            string_table: vec![String::new()],
            ..Profile::default()
        },
        strings: HashMap::from([(String::new(), 0)]),
        functions: HashMap::new(),
        locations: HashMap::new(),
    };
    b.out.sample_type = new
        .sample_type
        .iter()
        .map(|t| super::model::ValueType {
            r#type: b.string(new.string(t.r#type)),
            unit: b.string(new.string(t.unit)),
        })
        .collect::<Vec<_>>();
    if let Some(pt) = new.period_type {
        let t = b.string(new.string(pt.r#type));
        let u = b.string(new.string(pt.unit));
        b.out.period_type = Some(super::model::ValueType { r#type: t, unit: u });
    }
    b.out.period = new.period;
    b.out.default_sample_type = if new.default_sample_type != 0 {
        b.string(new.string(new.default_sample_type))
    } else {
        0
    };
    b.out.time_nanos = new.time_nanos;
    b.out.duration_nanos = (new.time_nanos - base.time_nanos).max(0);

    // Stack (output location ids) + labels -> index of the output sample.
    let mut index: HashMap<SampleKey, usize> = HashMap::new();
    for (p, sign) in [(new, 1i64), (base, -1i64)] {
        let functions: HashMap<u64, &Function> = p.function.iter().map(|f| (f.id, f)).collect();
        let locations: HashMap<u64, &Location> = p.location.iter().map(|l| (l.id, l)).collect();
        for s in &p.sample {
            let mut stack = Vec::with_capacity(s.location_id.len());
            for id in &s.location_id {
                let Some(loc) = locations.get(id) else {
                    return Err(Error::InvalidProfile {
                        origin: "delta".into(),
                        message: format!(
                            "a sample refers to location {id}, which is not in the profile"
                        ),
                    });
                };
                stack.push(b.location(p, loc, &functions));
            }
            let labels = b.labels(p, &s.label);
            let key_labels = labels
                .iter()
                .map(|l| (l.key, l.str, l.num, l.num_unit))
                .collect();
            let i = *index.entry((stack.clone(), key_labels)).or_insert_with(|| {
                b.out.sample.push(Sample {
                    location_id: stack,
                    value: vec![0; new.sample_type.len()],
                    label: labels,
                });
                b.out.sample.len() - 1
            });
            for (acc, v) in b.out.sample[i].value.iter_mut().zip(&s.value) {
                *acc = acc.saturating_add(sign.saturating_mul(*v));
            }
        }
    }
    b.out.sample.retain(|s| s.value.iter().any(|&v| v != 0));
    let comment = b.string(&format!(
        "leakscope delta: new minus base, {:.1} s apart",
        b.out.duration_nanos as f64 / 1e9
    ));
    b.out.comment.push(comment);
    Ok(b.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ValueType;

    /// A heap-like profile: `stacks` are (function names leaf first, address
    /// offset, inuse bytes) with every location in its own function.
    fn profile(stacks: &[(&[&str], u64, i64)], time_s: i64) -> Profile {
        let mut p = Profile {
            string_table: vec!["".into(), "inuse_space".into(), "bytes".into()],
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            time_nanos: time_s * 1_000_000_000,
            ..Profile::default()
        };
        for (names, offset, bytes) in stacks {
            let mut ids = Vec::new();
            for name in *names {
                let fi = p
                    .function
                    .iter()
                    .position(|f| p.string_table[f.name as usize] == *name);
                let fid = match fi {
                    Some(i) => p.function[i].id,
                    None => {
                        p.string_table.push((*name).into());
                        let id = p.function.len() as u64 + 1;
                        p.function.push(Function {
                            id,
                            name: p.string_table.len() as i64 - 1,
                            ..Function::default()
                        });
                        id
                    }
                };
                let id = p.location.len() as u64 + 1;
                p.location.push(Location {
                    id,
                    address: 0x1000 * id + offset,
                    line: vec![Line {
                        function_id: fid,
                        line: 7,
                        column: 0,
                    }],
                    ..Location::default()
                });
                ids.push(id);
            }
            p.sample.push(Sample {
                location_id: ids,
                value: vec![*bytes],
                label: vec![],
            });
        }
        p
    }

    fn by_leaf(p: &Profile) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = p
            .sample
            .iter()
            .map(|s| {
                let loc = &p.location[s.location_id[0] as usize - 1];
                let f = &p.function[loc.line[0].function_id as usize - 1];
                (p.string(f.name).to_owned(), s.value[0])
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn subtracts_by_symbols_not_addresses() {
        // The same stacks at other addresses (a restart), one grown, one
        // freed, one unchanged, one new, one vanished.
        let base = profile(
            &[
                (&["grow", "main"], 0, 100),
                (&["free", "main"], 0, 50),
                (&["same", "main"], 0, 10),
                (&["gone", "main"], 0, 5),
            ],
            100,
        );
        let new = profile(
            &[
                (&["grow", "main"], 7, 300),
                (&["free", "main"], 7, 20),
                (&["same", "main"], 7, 10),
                (&["fresh", "main"], 7, 40),
            ],
            160,
        );
        let d = delta(&base, &new).unwrap();
        assert_eq!(
            by_leaf(&d),
            vec![
                ("free".into(), -30),
                ("fresh".into(), 40),
                ("gone".into(), -5),
                ("grow".into(), 200)
            ]
        );
        assert_eq!(d.duration_nanos, 60_000_000_000);
        assert!(d.validate().is_ok(), "{:?}", d.validate());
        // It encodes and decodes as a pprof profile.
        let back = Profile::decode_bytes(&d.encode_gzip(), "delta").unwrap();
        assert_eq!(by_leaf(&back), by_leaf(&d));
    }

    #[test]
    fn different_sample_types_are_an_error() {
        let base = profile(&[(&["a"], 0, 1)], 0);
        let mut new = profile(&[(&["a"], 0, 1)], 1);
        new.string_table[1] = "alloc_space".into();
        let e = delta(&base, &new).unwrap_err().to_string();
        assert!(e.contains("different sample types"), "{e}");
    }

    #[test]
    fn identical_profiles_cancel_out() {
        let p = profile(&[(&["a", "b"], 0, 10), (&["c"], 0, 3)], 5);
        let d = delta(&p, &p).unwrap();
        assert!(d.sample.is_empty());
    }
}
