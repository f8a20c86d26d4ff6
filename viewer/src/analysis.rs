//! Ranking growth between two profiles of the same kind: for each leaf
//! site (function, file, line of the innermost frame of a sample's first
//! location), the value in the base and in the new profile, sorted by
//! growth.

use std::collections::HashMap;

use leakscope_agent::profile::Profile;

/// Options of [`rank_growth`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Sample type to compare, e.g. `inuse_space`; `None` takes the
    /// profile's default (or its last sample type, as pprof does).
    pub sample_type: Option<String>,
    /// Name a site by the first frame, from the leaf up, that is not in the
    /// Rust standard library (files under `/rustc/`): the code that asked
    /// for the memory rather than `Vec`'s plumbing inlined into it.
    pub skip_std: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            sample_type: None,
            skip_std: true,
        }
    }
}

impl DiffOptions {
    /// Compare `sample_type` (e.g. `inuse_space`) instead of the default.
    #[must_use]
    pub fn with_sample_type(mut self, sample_type: impl Into<String>) -> Self {
        self.sample_type = Some(sample_type.into());
        self
    }
}

/// How much one site grew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// Function name of the innermost frame.
    pub function: String,
    /// Source file, "" when unknown.
    pub file: String,
    /// Source line, 0 when unknown.
    pub line: i64,
    /// Value in the base profile.
    pub base: i64,
    /// Value in the new profile.
    pub new: i64,
}

impl Growth {
    /// `new − base`.
    pub fn delta(&self) -> i64 {
        self.new - self.base
    }
}

/// Errors of the analysis.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnalysisError {
    /// The sample type is not in one of the profiles.
    #[error("sample type `{0}` is not in both profiles")]
    MissingSampleType(String),
}

/// Index of the sample type to read in `p`.
fn sample_index(p: &Profile, wanted: Option<&str>) -> Option<usize> {
    let names = p.sample_type_names();
    let name = match wanted {
        Some(w) => w,
        None if p.default_sample_type != 0 => p.string(p.default_sample_type),
        None => names.last()?.0,
    };
    names.iter().position(|(t, _)| *t == name)
}

type Site = (String, String, i64);

/// Sum of the chosen value per leaf site.
fn flat_by_site(p: &Profile, index: usize, skip_std: bool) -> HashMap<Site, i64> {
    let locations: HashMap<u64, &leakscope_agent::profile::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let functions: HashMap<u64, &leakscope_agent::profile::Function> =
        p.function.iter().map(|f| (f.id, f)).collect();
    let mut out: HashMap<Site, i64> = HashMap::new();
    for s in &p.sample {
        let value = s.value.get(index).copied().unwrap_or(0);
        // Frames from the leaf up, innermost inlined frame first.
        let mut frames = s
            .location_id
            .iter()
            .filter_map(|id| locations.get(id))
            .flat_map(|loc| loc.line.iter())
            .filter_map(|line| {
                let f = functions.get(&line.function_id)?;
                Some((p.string(f.name), p.string(f.filename), line.line))
            });
        let leaf = frames.clone().next();
        let chosen = if skip_std {
            frames
                .find(|(_, file, _)| !file.starts_with("/rustc/"))
                .or(leaf)
        } else {
            leaf
        };
        let site = chosen.map_or_else(
            || ("<unknown>".to_owned(), String::new(), 0),
            |(name, file, line)| (name.to_owned(), file.to_owned(), line),
        );
        *out.entry(site).or_default() += value;
    }
    out
}

/// Sites ranked by growth from `base` to `new`, largest growth first; sites
/// that did not change are left out.
pub fn rank_growth(
    base: &Profile,
    new: &Profile,
    options: &DiffOptions,
) -> Result<Vec<Growth>, AnalysisError> {
    let wanted = options.sample_type.as_deref();
    let missing = || AnalysisError::MissingSampleType(wanted.unwrap_or("(default)").to_owned());
    let ni = sample_index(new, wanted).ok_or_else(missing)?;
    let type_name = new.sample_type_names()[ni].0.to_owned();
    let bi = sample_index(base, Some(&type_name)).ok_or_else(missing)?;
    let before = flat_by_site(base, bi, options.skip_std);
    let after = flat_by_site(new, ni, options.skip_std);
    let mut sites: Vec<Growth> = after
        .iter()
        .map(|(site, v)| (site, before.get(site).copied().unwrap_or(0), *v))
        .chain(
            before
                .iter()
                .filter(|(site, _)| !after.contains_key(*site))
                .map(|(site, v)| (site, *v, 0)),
        )
        .filter(|(_, b, n)| b != n)
        .map(|((function, file, line), base, new)| Growth {
            function: function.clone(),
            file: file.clone(),
            line: *line,
            base,
            new,
        })
        .collect();
    sites.sort_by(|a, b| {
        b.delta()
            .cmp(&a.delta())
            .then_with(|| a.function.cmp(&b.function))
            .then_with(|| a.line.cmp(&b.line))
    });
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_agent::profile::{Function, Line, Location, Sample, ValueType};

    /// A profile with one sample per (function, line, value).
    fn profile(samples: &[(&str, i64, i64)]) -> Profile {
        let mut p = Profile {
            string_table: vec![
                "".into(),
                "inuse_space".into(),
                "bytes".into(),
                "src/a.rs".into(),
            ],
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            ..Profile::default()
        };
        for (i, (name, line, value)) in samples.iter().enumerate() {
            let id = i as u64 + 1;
            p.string_table.push((*name).to_owned());
            p.function.push(Function {
                id,
                name: p.string_table.len() as i64 - 1,
                filename: 3,
                ..Function::default()
            });
            p.location.push(Location {
                id,
                line: vec![Line {
                    function_id: id,
                    line: *line,
                    column: 0,
                }],
                ..Location::default()
            });
            p.sample.push(Sample {
                location_id: vec![id],
                value: vec![*value],
                label: vec![],
            });
        }
        p
    }

    #[test]
    fn ranks_growth_and_keeps_vanished_sites() {
        let base = profile(&[("a", 1, 100), ("b", 2, 50), ("gone", 3, 10)]);
        let new = profile(&[("a", 1, 150), ("b", 2, 5000), ("fresh", 4, 70)]);
        let ranked = rank_growth(&base, &new, &DiffOptions::default()).expect("rank");
        let order: Vec<(&str, i64)> = ranked
            .iter()
            .map(|g| (g.function.as_str(), g.delta()))
            .collect();
        assert_eq!(
            order,
            [("b", 4950), ("fresh", 70), ("a", 50), ("gone", -10)]
        );
        assert_eq!(ranked[0].file, "src/a.rs");
        assert_eq!(ranked[0].line, 2);
    }

    #[test]
    fn std_frames_are_skipped_when_naming_a_site() {
        let mut p = profile(&[("alloc::vec::from_elem", 9, 100)]);
        // Put the std frame in a /rustc/ file, inlined into `my::leak`.
        p.string_table
            .push("/rustc/abc/library/alloc/src/vec/mod.rs".into());
        p.function[0].filename = p.string_table.len() as i64 - 1;
        p.string_table.push("my::leak".into());
        p.function.push(Function {
            id: 2,
            name: p.string_table.len() as i64 - 1,
            filename: 3,
            ..Function::default()
        });
        p.location[0].line.push(Line {
            function_id: 2,
            line: 42,
            column: 0,
        });
        let empty = profile(&[]);
        let ranked = rank_growth(&empty, &p, &DiffOptions::default()).expect("rank");
        assert_eq!(
            (ranked[0].function.as_str(), ranked[0].line),
            ("my::leak", 42)
        );
        let raw = DiffOptions {
            skip_std: false,
            ..DiffOptions::default()
        };
        let ranked = rank_growth(&empty, &p, &raw).expect("rank");
        assert_eq!(ranked[0].function, "alloc::vec::from_elem");
    }

    #[test]
    fn unknown_sample_type_is_an_error() {
        let p = profile(&[("a", 1, 1)]);
        let opts = DiffOptions {
            sample_type: Some("alloc_space".into()),
            ..DiffOptions::default()
        };
        assert_eq!(
            rank_growth(&p, &p, &opts),
            Err(AnalysisError::MissingSampleType("alloc_space".into()))
        );
    }
}
