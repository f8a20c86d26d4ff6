//! Ranking growth between two profiles of the same kind: for each leaf
//! site (function, file, line of the innermost frame of a sample's first
//! location), the value in the base and in the new profile, sorted by
//! growth.

use std::collections::HashMap;

use leakscope_agent::explain::frames::own_frame;
use leakscope_agent::profile::{Function, Line, Location, Profile, Sample};

/// Options of [`rank_growth`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Sample type to compare, e.g. `inuse_space`; `None` takes the
    /// profile's default (or its last sample type, as pprof does).
    pub sample_type: Option<String>,
    /// Name a site by the first frame, from the leaf up, of the program's
    /// own code (not the standard library, a dependency such as tokio, or
    /// leakscope), else the first not in the standard library: the code
    /// that asked for the memory, or runs the thread, rather than `Vec`'s
    /// plumbing or a futex wait.
    pub skip_std: bool,
    /// Scale the base to the new profile's total before comparing, so that
    /// a profile that is simply bigger (more load) shows no growth.
    pub normalize: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            sample_type: None,
            skip_std: true,
            normalize: false,
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

    /// Scale the base to the new total first (see [`DiffOptions::normalize`]).
    #[must_use]
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
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
    /// The sample type is not in the profile (or not in both profiles).
    #[error(
        "sample type `{0}` is not in the profile (or not in both profiles compared): \
         pick one of the types the profile lists"
    )]
    MissingSampleType(String),
    /// The base profile of a comparison lacks the sample type the new one is
    /// read in (a heap profile against a CPU profile, say).
    #[error(
        "the base profile has no {sample_type} samples (its types: {available}): \
         compare two profiles of the same kind"
    )]
    BaseLacksSampleType {
        /// The sample type wanted.
        sample_type: String,
        /// The base's sample types, comma separated.
        available: String,
    },
    /// Two folded profiles of different sample types (or units) were
    /// compared; the fields name the base's and the new profile's.
    #[error("cannot compare {base} with {new}: the profiles must have the same sample type")]
    SampleTypeMismatch {
        /// Sample type of the base (with its unit when only units differ).
        base: String,
        /// Sample type of the new profile (with its unit when only units
        /// differ).
        new: String,
    },
}

/// Index of the sample type to read in `p`: `wanted`, else the profile's
/// default, else its last sample type (as pprof does).
pub(crate) fn sample_index(p: &Profile, wanted: Option<&str>) -> Option<usize> {
    let names = p.sample_type_names();
    let name = match wanted {
        Some(w) => w,
        None if p.default_sample_type != 0 => p.string(p.default_sample_type),
        None => names.last()?.0,
    };
    names.iter().position(|(t, _)| *t == name)
}

/// One resolved frame, borrowed from its profile: function name, file, line.
pub(crate) type RawFrame<'p> = (&'p str, &'p str, i64);

/// A profile's locations and functions by id, to turn samples into frames;
/// shared by the flat views here and [`fold`](crate::fold).
pub(crate) struct Resolver<'p> {
    p: &'p Profile,
    locations: HashMap<u64, &'p Location>,
    functions: HashMap<u64, &'p Function>,
}

impl<'p> Resolver<'p> {
    /// Indexes `p`.
    pub(crate) fn new(p: &'p Profile) -> Self {
        Resolver {
            p,
            locations: p.location.iter().map(|l| (l.id, l)).collect(),
            functions: p.function.iter().map(|f| (f.id, f)).collect(),
        }
    }

    /// The location `id`, `None` when the profile has none of that id.
    pub(crate) fn location(&self, id: u64) -> Option<&'p Location> {
        self.locations.get(&id).copied()
    }

    /// The frame of one line of a location, `None` when its function is
    /// not in the profile.
    pub(crate) fn frame(&self, line: &Line) -> Option<RawFrame<'p>> {
        let f = self.functions.get(&line.function_id)?;
        Some((self.p.string(f.name), self.p.string(f.filename), line.line))
    }

    /// The symbolized frames of `s` from the leaf up, innermost inlined
    /// frame first; unsymbolized locations give none.
    fn leaf_first<'s>(&'s self, s: &'s Sample) -> impl Iterator<Item = RawFrame<'p>> + Clone + 's {
        s.location_id
            .iter()
            .filter_map(|id| self.location(*id))
            .flat_map(|loc| loc.line.iter())
            .filter_map(|line| self.frame(line))
    }
}

/// A site: function, file ("" when unknown) and line (0 when unknown).
pub(crate) type Site = (String, String, i64);

/// The site `frames` (from the leaf up) are charged to: the leaf, or with
/// `skip_std` the first frame of the program's own code (not the standard
/// library, a dependency or leakscope: `explain::frames::own_frame`, the
/// rule alerts name leaks by), else the first frame not in a `/rustc/`
/// file, else the leaf; `<unknown>` without frames.
fn site_of<'p>(frames: impl Iterator<Item = RawFrame<'p>> + Clone, skip_std: bool) -> Site {
    let leaf = frames.clone().next();
    let chosen = if skip_std {
        let all: Vec<RawFrame<'p>> = frames.collect();
        own_frame(all.iter().map(|(f, file, _)| (*f, *file)))
            .map(|i| all[i])
            .or_else(|| {
                all.iter()
                    .copied()
                    .find(|(_, file, _)| !file.starts_with("/rustc/"))
            })
            .or(leaf)
    } else {
        leaf
    };
    chosen.map_or_else(
        || ("<unknown>".to_owned(), String::new(), 0),
        |(name, file, line)| (name.to_owned(), file.to_owned(), line),
    )
}

/// Sum of the value at `index` per site (see [`site_of`]).
fn flat_by_site(p: &Profile, index: usize, skip_std: bool) -> HashMap<Site, i64> {
    let resolver = Resolver::new(p);
    let mut out: HashMap<Site, i64> = HashMap::new();
    for s in &p.sample {
        let value = s.value.get(index).copied().unwrap_or(0);
        let site = site_of(resolver.leaf_first(s), skip_std);
        let sum = out.entry(site).or_default();
        *sum = sum.saturating_add(value);
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
    let mut before = flat_by_site(base, bi, options.skip_std);
    let after = flat_by_site(new, ni, options.skip_std);
    if options.normalize {
        let base_total: i64 = before.values().sum();
        let new_total: i64 = after.values().sum();
        if base_total != 0 {
            for v in before.values_mut() {
                *v = crate::diff::scaled(*v, new_total, base_total);
            }
        }
    }
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
pub(crate) mod test_profiles;

#[cfg(test)]
mod tests {
    use super::test_profiles::{FILE, ProfileBuilder, flat_profile as profile};
    use super::*;

    #[test]
    fn normalized_ranking_cancels_growth_proportional_to_load() {
        // Everything doubled, and `leak` grew on top of that.
        let base = profile(&[("a", 1, 100), ("b", 2, 300), ("leak", 3, 100)]);
        let new = profile(&[("a", 1, 200), ("b", 2, 600), ("leak", 3, 1200)]);
        let opts = DiffOptions::default().with_normalize(true);
        let ranked = rank_growth(&base, &new, &opts).expect("rank");
        // Base total 500 scaled to 2000: a 400, b 1200, leak 400.
        let order: Vec<(&str, i64, i64)> = ranked
            .iter()
            .map(|g| (g.function.as_str(), g.base, g.new))
            .collect();
        assert_eq!(
            order,
            [("leak", 400, 1200), ("a", 400, 200), ("b", 1200, 600)]
        );
        let absolute = rank_growth(&base, &new, &DiffOptions::default()).expect("rank");
        assert_eq!(absolute[0].function, "leak");
        assert_eq!(absolute[0].delta(), 1100);
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
        // A std frame in a /rustc/ file, inlined into `my::leak`.
        let mut b = ProfileBuilder::inuse();
        let std_file = "/rustc/abc/library/alloc/src/vec/mod.rs";
        let loc = b.location(
            0x1000,
            &[
                ("alloc::vec::from_elem", std_file, 9),
                ("my::leak", FILE, 42),
            ],
        );
        let p = b.sample(&[loc], &[100]).build();
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
    fn dependencies_are_skipped_too_when_naming_a_site() {
        // A thread parked in a futex, through tokio, in the app's closure.
        let mut b = ProfileBuilder::inuse();
        let loc = b.location(
            0x1000,
            &[
                ("syscall", "", 0),
                (
                    "std::sys::futex::futex_wait",
                    "/rustc/abc/library/std/src/sys/futex.rs",
                    9,
                ),
                (
                    "tokio::runtime::park::Inner::park",
                    "/root/.cargo/registry/src/x/tokio-1.54.1/src/runtime/park.rs",
                    70,
                ),
                ("my::worker::{{closure}}", FILE, 42),
            ],
        );
        let p = b.sample(&[loc], &[3]).build();
        let ranked = rank_growth(&profile(&[]), &p, &DiffOptions::default()).expect("rank");
        assert_eq!(
            (ranked[0].function.as_str(), ranked[0].line),
            ("my::worker::{{closure}}", 42)
        );
    }

    #[test]
    fn a_stack_entirely_in_std_is_charged_to_its_leaf() {
        let mut b = ProfileBuilder::inuse();
        let loc = b.location(0x1000, &[("alloc::alloc", "/rustc/abc/alloc.rs", 7)]);
        let p = b.sample(&[loc], &[64]).build();
        let sites = flat_by_site(&p, 0, true);
        let expected: HashMap<Site, i64> =
            [(("alloc::alloc".into(), "/rustc/abc/alloc.rs".into(), 7), 64)].into();
        assert_eq!(sites, expected);
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
