//! Folding a profile into stacks for flamegraphs: each sample's frames
//! (inlined frames expanded), root first, joined by `;`, with the chosen
//! sample type's value summed per distinct stack.

use std::collections::HashMap;
use std::sync::Arc;

use leakscope_agent::profile::{Location, Profile};

use crate::analysis::{AnalysisError, Resolver, sample_index};

/// Options of [`fold`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FoldOptions {
    /// Sample type to fold, e.g. `inuse_space`; `None` takes the profile's
    /// default (or its last sample type, as pprof does).
    pub sample_type: Option<String>,
}

impl FoldOptions {
    /// Fold `sample_type` instead of the default.
    #[must_use]
    pub fn with_sample_type(mut self, sample_type: impl Into<String>) -> Self {
        self.sample_type = Some(sample_type.into());
        self
    }
}

/// One frame of a folded stack, as shown and as looked up for tooltips.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// Function name: `0x<address in hex>` for a location without a name
    /// (not symbolized), `?` for a location the profile does not hold.
    pub function: Arc<str>,
    /// Source file, "" when unknown.
    pub file: Arc<str>,
    /// Source line, 0 when unknown.
    pub line: i64,
}

/// A profile folded for one sample type.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The sample type folded (`inuse_space`, `cpu`, ...).
    pub sample_type: String,
    /// Its unit (`bytes`, `nanoseconds`, `count`, ...).
    pub unit: String,
    /// Every sample type of the profile, in order (for a selector).
    pub sample_types: Vec<(String, String)>,
    /// `(frames root first, value)`, one entry per distinct stack, sorted
    /// by the stack's function names joined by `;` (then by files and
    /// lines); stacks summing to zero left out.
    pub stacks: Vec<(Vec<Frame>, i64)>,
}

impl Folded {
    /// Sum of all values (saturating at the `i64` bounds).
    pub fn total(&self) -> i64 {
        self.stacks
            .iter()
            .fold(0i64, |sum, (_, v)| sum.saturating_add(*v))
    }

    /// The stacks as folded text lines, `a;b;c 123` (function names only,
    /// `;` in names replaced by `:`, whitespace and control characters by
    /// `_`, so the count stays the last token), in `stacks` order: the input
    /// format of inferno and Brendan Gregg's flamegraph.pl.
    pub fn lines(&self) -> Vec<String> {
        self.stacks
            .iter()
            .map(|(frames, value)| format!("{} {value}", folded_stack(frames)))
            .collect()
    }
}

/// `frames`' function names joined by `;`, each cleaned for the folded
/// format: `;` becomes `:`, whitespace and control characters become `_`.
pub(crate) fn folded_stack(frames: &[Frame]) -> String {
    let mut out = String::new();
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        push_clean(&mut out, &frame.function);
    }
    out
}

/// Appends `name` cleaned for the folded format (see [`Folded::lines`]).
pub(crate) fn push_clean(out: &mut String, name: &str) {
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        c if c.is_whitespace() || c.is_control() => '_',
        c => c,
    }));
}

/// Sorts `items` the way [`Folded`] and [`Diff`](crate::diff::Diff) list
/// stacks: by the `;`-joined function names, then frame by frame (files,
/// lines) among stacks of the same names.
pub(crate) fn sort_by_stack<T>(items: &mut [T], frames: impl Fn(&T) -> &[Frame]) {
    items.sort_by(|a, b| frames(a).cmp(frames(b)));
    // Stable, so stacks of the same names keep the frame order above.
    items.sort_by_cached_key(|item| {
        frames(item)
            .iter()
            .map(|f| &*f.function)
            .collect::<Vec<_>>()
            .join(";")
    });
}

/// Folds `new` for `sample_type` (its default when `None`) and `base` for
/// the same type: the two sides of a comparison. A base without that type
/// is [`AnalysisError::BaseLacksSampleType`].
pub fn fold_pair(
    base: &Profile,
    new: &Profile,
    sample_type: Option<&str>,
) -> Result<(Folded, Folded), AnalysisError> {
    let f_new = fold(
        new,
        &FoldOptions {
            sample_type: sample_type.map(str::to_owned),
        },
    )?;
    let f_base = fold(
        base,
        &FoldOptions::default().with_sample_type(&f_new.sample_type),
    )
    .map_err(|_| AnalysisError::BaseLacksSampleType {
        sample_type: f_new.sample_type.clone(),
        available: base
            .sample_type_names()
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    Ok((f_base, f_new))
}

/// Folds `p` for `options.sample_type`: each sample's frames root first
/// (its locations are leaf first and each location's lines innermost
/// inlined frame first, so both are reversed), values summed per distinct
/// stack. A sample without locations is charged to one `?` frame.
///
/// Fails with [`AnalysisError::MissingSampleType`] when the profile has no
/// such sample type (or, with none asked for, no sample type at all).
pub fn fold(p: &Profile, options: &FoldOptions) -> Result<Folded, AnalysisError> {
    let wanted = options.sample_type.as_deref();
    let index = sample_index(p, wanted).ok_or_else(|| {
        AnalysisError::MissingSampleType(wanted.unwrap_or("(default)").to_owned())
    })?;
    let sample_types: Vec<(String, String)> = p
        .sample_type_names()
        .into_iter()
        .map(|(t, u)| (t.to_owned(), u.to_owned()))
        .collect();
    // `sample_index` returned an index into these very names.
    let (sample_type, unit) = sample_types.get(index).cloned().unwrap_or_default();

    let resolver = Resolver::new(p);
    // Each location's frames are made once; stacks share them (`Arc<str>`).
    let mut by_location: HashMap<u64, Vec<Frame>> = HashMap::with_capacity(p.location.len());
    let mut sums: HashMap<Vec<Frame>, i64> = HashMap::new();
    for s in &p.sample {
        let value = s.value.get(index).copied().unwrap_or(0);
        let mut frames = Vec::new();
        for id in s.location_id.iter().rev() {
            let of_location = by_location.entry(*id).or_insert_with(|| {
                let mut v = Vec::new();
                match resolver.location(*id) {
                    Some(loc) => push_location(&resolver, loc, &mut v),
                    None => v.push(unknown_frame()),
                }
                v
            });
            frames.extend(of_location.iter().cloned());
        }
        if frames.is_empty() {
            frames.push(unknown_frame());
        }
        let sum = sums.entry(frames).or_default();
        *sum = sum.saturating_add(value);
    }
    let mut stacks: Vec<(Vec<Frame>, i64)> = sums.into_iter().filter(|(_, v)| *v != 0).collect();
    sort_by_stack(&mut stacks, |(frames, _)| frames);
    Ok(Folded {
        sample_type,
        unit,
        sample_types,
        stacks,
    })
}

/// Appends the frames of `loc`, outermost (the real function) first; a
/// location without lines, or a line without a named function, becomes a
/// frame named by the address in hex.
fn push_location(resolver: &Resolver<'_>, loc: &Location, frames: &mut Vec<Frame>) {
    let address = || -> Arc<str> { format!("0x{:x}", loc.address).into() };
    if loc.line.is_empty() {
        frames.push(Frame {
            function: address(),
            file: "".into(),
            line: 0,
        });
        return;
    }
    for line in loc.line.iter().rev() {
        let frame = match resolver.frame(line) {
            Some((name, file, n)) if !name.is_empty() => Frame {
                function: name.into(),
                file: file.into(),
                line: n,
            },
            Some((_, file, n)) => Frame {
                function: address(),
                file: file.into(),
                line: n,
            },
            None => Frame {
                function: address(),
                file: "".into(),
                line: 0,
            },
        };
        frames.push(frame);
    }
}

/// The frame of a location the profile does not hold.
fn unknown_frame() -> Frame {
    Frame {
        function: "?".into(),
        file: "".into(),
        line: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_profiles::{FILE, ProfileBuilder};

    fn frame(function: &str, file: &str, line: i64) -> Frame {
        Frame {
            function: function.into(),
            file: file.into(),
            line,
        }
    }

    /// The function names of each stack, `;`-joined, with its value.
    fn named(folded: &Folded) -> Vec<(String, i64)> {
        folded
            .stacks
            .iter()
            .map(|(frames, v)| (folded_stack(frames), *v))
            .collect()
    }

    #[test]
    fn inlined_frames_are_expanded_root_first() {
        let mut b = ProfileBuilder::inuse();
        // The leaf location: `alloc` inlined into `grow`, inlined into `work`.
        let leaf = b.location(
            0x1010,
            &[
                ("alloc", "alloc.rs", 3),
                ("grow", "grow.rs", 20),
                ("work", "work.rs", 7),
            ],
        );
        let caller = b.location(0x2020, &[("main", "main.rs", 1)]);
        let p = b.sample(&[leaf, caller], &[512]).build();
        let folded = fold(&p, &FoldOptions::default()).expect("fold");
        assert_eq!(
            folded.stacks,
            vec![(
                vec![
                    frame("main", "main.rs", 1),
                    frame("work", "work.rs", 7),
                    frame("grow", "grow.rs", 20),
                    frame("alloc", "alloc.rs", 3),
                ],
                512
            )]
        );
        assert_eq!(folded.lines(), ["main;work;grow;alloc 512"]);
    }

    #[test]
    fn an_unsymbolized_location_is_named_by_its_address() {
        let mut b = ProfileBuilder::inuse();
        let raw = b.location(0xdead_beef, &[]);
        let main = b.location(0x2020, &[("main", FILE, 9)]);
        let p = b.sample(&[raw, main], &[64]).sample(&[], &[8]).build();
        let folded = fold(&p, &FoldOptions::default()).expect("fold");
        assert_eq!(
            folded.stacks,
            vec![
                (vec![frame("?", "", 0)], 8),
                (vec![frame("main", FILE, 9), frame("0xdeadbeef", "", 0)], 64),
            ]
        );
    }

    #[test]
    fn identical_stacks_are_merged_and_zero_stacks_dropped() {
        let mut b = ProfileBuilder::inuse();
        let leaf = b.location(0x1000, &[("leaf", FILE, 1)]);
        // Another address of the same line: a different location, same frame.
        let leaf_again = b.location(0x1004, &[("leaf", FILE, 1)]);
        let main = b.location(0x2000, &[("main", FILE, 2)]);
        let other = b.location(0x3000, &[("other", FILE, 3)]);
        let p = b
            .sample(&[leaf, main], &[100])
            .sample(&[leaf, main], &[20])
            .sample(&[leaf_again, main], &[3])
            .sample(&[other, main], &[0])
            .sample(&[main], &[7])
            .build();
        let folded = fold(&p, &FoldOptions::default()).expect("fold");
        assert_eq!(
            named(&folded),
            [("main".to_owned(), 7), ("main;leaf".to_owned(), 123)]
        );
        assert_eq!(folded.total(), 130);
    }

    #[test]
    fn stacks_are_sorted_by_joined_names() {
        let p = ProfileBuilder::inuse()
            .stack(&["c", "main"], &[1])
            .stack(&["b", "main"], &[2])
            .stack(&["c", "b", "main"], &[3])
            .stack(&["main", "a"], &[4])
            .build();
        let folded = fold(&p, &FoldOptions::default()).expect("fold");
        assert_eq!(
            folded.lines(),
            ["a;main 4", "main;b 2", "main;b;c 3", "main;c 1"]
        );
    }

    #[test]
    fn lines_clean_separators_and_whitespace_in_names() {
        let p = ProfileBuilder::inuse()
            .stack(
                &["<Vec<u8> as Drop>::drop", "a;b", "tab\there\nnewline"],
                &[42],
            )
            .build();
        let folded = fold(&p, &FoldOptions::default()).expect("fold");
        assert_eq!(
            folded.lines(),
            ["tab_here_newline;a:b;<Vec<u8>_as_Drop>::drop 42"]
        );
        // The frames themselves keep the real names.
        assert_eq!(&*folded.stacks[0].0[1].function, "a;b");
    }

    #[test]
    fn a_missing_sample_type_is_an_error() {
        let p = ProfileBuilder::inuse().stack(&["a"], &[1]).build();
        let options = FoldOptions::default().with_sample_type("alloc_space");
        assert_eq!(
            fold(&p, &options),
            Err(AnalysisError::MissingSampleType("alloc_space".into()))
        );
        let none = ProfileBuilder::new(&[]).build();
        assert_eq!(
            fold(&none, &FoldOptions::default()),
            Err(AnalysisError::MissingSampleType("(default)".into()))
        );
    }

    /// A heap profile with the four Go heap sample types.
    fn heap(default: Option<&str>) -> Profile {
        let mut b = ProfileBuilder::new(&[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]);
        if let Some(name) = default {
            b = b.default_sample_type(name);
        }
        b.stack(&["a"], &[1, 1000, 0, 0])
            .stack(&["b"], &[2, 2000, 2, 2000])
            .build()
    }

    #[test]
    fn the_default_sample_type_is_honoured_else_the_last() {
        let folded = fold(&heap(Some("alloc_space")), &FoldOptions::default()).expect("fold");
        assert_eq!(
            (folded.sample_type.as_str(), folded.unit.as_str()),
            ("alloc_space", "bytes")
        );
        assert_eq!(folded.lines(), ["a 1000", "b 2000"]);
        assert_eq!(
            folded.sample_types,
            [
                ("alloc_objects".to_owned(), "count".to_owned()),
                ("alloc_space".to_owned(), "bytes".to_owned()),
                ("inuse_objects".to_owned(), "count".to_owned()),
                ("inuse_space".to_owned(), "bytes".to_owned()),
            ]
        );

        let folded = fold(&heap(None), &FoldOptions::default()).expect("fold");
        assert_eq!(folded.sample_type, "inuse_space");
        assert_eq!(folded.lines(), ["b 2000"]);

        let asked = FoldOptions::default().with_sample_type("alloc_objects");
        let folded = fold(&heap(Some("alloc_space")), &asked).expect("fold");
        assert_eq!(
            (folded.sample_type.as_str(), folded.unit.as_str()),
            ("alloc_objects", "count")
        );
        assert_eq!(folded.lines(), ["a 1", "b 2"]);
    }

    #[test]
    fn a_pair_is_folded_for_the_same_type_or_named_as_different() {
        let heap = ProfileBuilder::inuse()
            .stack(&["leak", "main"], &[10])
            .build();
        let cpu = ProfileBuilder::new(&[("samples", "count"), ("cpu", "nanoseconds")])
            .stack(&["spin", "main"], &[1, 10])
            .build();
        let (b, n) = fold_pair(&heap, &heap, None).unwrap();
        assert_eq!(
            (b.sample_type.as_str(), n.sample_type.as_str()),
            ("inuse_space", "inuse_space")
        );
        let e = fold_pair(&heap, &cpu, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "the base profile has no cpu samples (its types: inuse_space): compare two profiles of the same kind"
        );
    }
}
