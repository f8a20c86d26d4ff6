//! Differences between two folded profiles of the same sample type, stack
//! by stack: what grew, what shrank, what is new and what vanished, in
//! absolute terms or normalized (the base scaled to the new total, so a
//! profile that is simply bigger shows no difference).

use std::collections::HashMap;

use crate::analysis::AnalysisError;
use crate::fold::{Folded, Frame, folded_stack, sort_by_stack};

/// How a stack changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the new profile.
    New,
    /// Only in the base profile.
    Vanished,
    /// In both (the values may still be equal).
    Changed,
}

/// One stack in both profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffStack {
    /// Frames, root first.
    pub frames: Vec<Frame>,
    /// Value in the base (scaled when normalized).
    pub base: i64,
    /// Value in the new profile.
    pub new: i64,
    /// New, vanished or changed.
    pub change: Change,
}

/// Options of [`diff`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DiffStacksOptions {
    /// Scale the base to the new profile's total before comparing.
    pub normalize: bool,
}

impl DiffStacksOptions {
    /// Scale the base to the new profile's total (or not).
    #[must_use]
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }
}

/// The stack-by-stack difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// Sample type and unit compared.
    pub sample_type: String,
    /// Unit of the values.
    pub unit: String,
    /// Base total (before any scaling) and new total.
    pub base_total: i64,
    /// New total.
    pub new_total: i64,
    /// Whether the base was scaled: normalization was asked for and the
    /// base total is not zero.
    pub normalized: bool,
    /// Every stack of either side, sorted by stack like
    /// [`Folded::stacks`].
    pub stacks: Vec<DiffStack>,
}

impl Diff {
    /// Folded lines with two counts, `a;b;c BASE NEW`: inferno's
    /// differential input (names cleaned as in [`Folded::lines`]).
    pub fn lines(&self) -> Vec<String> {
        self.stacks
            .iter()
            .map(|s| format!("{} {} {}", folded_stack(&s.frames), s.base, s.new))
            .collect()
    }
}

/// `new` against `base`. Both must fold the same sample type (the error
/// names both).
///
/// With `options.normalize`, every base value `b` becomes
/// `round(b × new_total / base_total)` (halves away from zero), unless the
/// base total is zero.
pub fn diff(
    base: &Folded,
    new: &Folded,
    options: DiffStacksOptions,
) -> Result<Diff, AnalysisError> {
    if base.sample_type != new.sample_type || base.unit != new.unit {
        let name = |f: &Folded| {
            if base.sample_type == new.sample_type {
                format!("{} ({})", f.sample_type, f.unit)
            } else {
                f.sample_type.clone()
            }
        };
        return Err(AnalysisError::SampleTypeMismatch {
            base: name(base),
            new: name(new),
        });
    }
    let base_total = base.total();
    let new_total = new.total();
    let normalized = options.normalize && base_total != 0;
    let scale = |v: i64| {
        if normalized {
            scaled(v, new_total, base_total)
        } else {
            v
        }
    };

    // Frames → (base, new), either side absent when the stack is not there.
    let mut union: HashMap<&[Frame], (Option<i64>, Option<i64>)> = HashMap::new();
    for (frames, v) in &base.stacks {
        let side = &mut union.entry(frames).or_default().0;
        *side = Some(side.unwrap_or(0).saturating_add(*v));
    }
    for (frames, v) in &new.stacks {
        let side = &mut union.entry(frames).or_default().1;
        *side = Some(side.unwrap_or(0).saturating_add(*v));
    }
    let mut stacks: Vec<DiffStack> = union
        .into_iter()
        .map(|(frames, sides)| {
            let (base, new, change) = match sides {
                (Some(b), Some(n)) => (scale(b), n, Change::Changed),
                (Some(b), None) => (scale(b), 0, Change::Vanished),
                (None, n) => (0, n.unwrap_or(0), Change::New),
            };
            DiffStack {
                frames: frames.to_vec(),
                base,
                new,
                change,
            }
        })
        .collect();
    sort_by_stack(&mut stacks, |s| &s.frames);
    Ok(Diff {
        sample_type: new.sample_type.clone(),
        unit: new.unit.clone(),
        base_total,
        new_total,
        normalized,
        stacks,
    })
}

/// `v × numerator / denominator` rounded to the nearest integer, halves
/// away from zero, saturating at the `i64` bounds; `denominator` is not 0.
pub(crate) fn scaled(v: i64, numerator: i64, denominator: i64) -> i64 {
    let num = i128::from(v) * i128::from(numerator);
    let den = i128::from(denominator);
    let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
    let q = if num >= 0 {
        (2 * num + den) / (2 * den)
    } else {
        -((-2 * num + den) / (2 * den))
    };
    i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_profiles::ProfileBuilder;
    use crate::fold::{FoldOptions, fold};

    /// Folds an `inuse_space` profile of `(stack leaf first, value)`.
    fn folded(stacks: &[(&[&str], i64)]) -> Folded {
        let mut b = ProfileBuilder::inuse();
        for (functions, value) in stacks {
            b = b.stack(functions, &[*value]);
        }
        fold(&b.build(), &FoldOptions::default()).expect("fold")
    }

    /// `(stack, base, new, change)` of each stack.
    fn rows(d: &Diff) -> Vec<(String, i64, i64, Change)> {
        d.stacks
            .iter()
            .map(|s| (folded_stack(&s.frames), s.base, s.new, s.change))
            .collect()
    }

    #[test]
    fn grew_shrank_new_and_vanished() {
        let base = folded(&[
            (&["a", "main"], 100),
            (&["b", "main"], 50),
            (&["gone", "main"], 10),
        ]);
        let new = folded(&[
            (&["a", "main"], 150),
            (&["b", "main"], 20),
            (&["fresh", "main"], 70),
        ]);
        let d = diff(&base, &new, DiffStacksOptions::default()).expect("diff");
        assert_eq!(
            rows(&d),
            [
                ("main;a".to_owned(), 100, 150, Change::Changed),
                ("main;b".to_owned(), 50, 20, Change::Changed),
                ("main;fresh".to_owned(), 0, 70, Change::New),
                ("main;gone".to_owned(), 10, 0, Change::Vanished),
            ]
        );
        assert_eq!((d.base_total, d.new_total, d.normalized), (160, 240, false));
        assert_eq!(
            (d.sample_type.as_str(), d.unit.as_str()),
            ("inuse_space", "bytes")
        );
        assert_eq!(
            d.lines(),
            [
                "main;a 100 150",
                "main;b 50 20",
                "main;fresh 0 70",
                "main;gone 10 0"
            ]
        );
    }

    #[test]
    fn normalizing_a_uniformly_doubled_profile_shows_no_difference() {
        let base = folded(&[(&["a", "main"], 100), (&["b", "main"], 51)]);
        let new = folded(&[(&["a", "main"], 200), (&["b", "main"], 102)]);
        let options = DiffStacksOptions::default().with_normalize(true);
        let d = diff(&base, &new, options).expect("diff");
        assert!(d.normalized);
        assert_eq!((d.base_total, d.new_total), (151, 302));
        assert!(d.stacks.iter().all(|s| s.base == s.new), "{:?}", rows(&d));
        assert_eq!(d.lines(), ["main;a 200 200", "main;b 102 102"]);

        // Without normalizing, everything doubled.
        let d = diff(&base, &new, DiffStacksOptions::default()).expect("diff");
        assert_eq!(d.lines(), ["main;a 100 200", "main;b 51 102"]);
    }

    #[test]
    fn normalized_values_are_rounded_to_the_nearest() {
        // Scale 5/3: 1 → 1.67 → 2, 2 → 3.33 → 3; vanished stacks scale too.
        let base = folded(&[(&["a"], 1), (&["b"], 2)]);
        let new = folded(&[(&["a"], 5)]);
        let d = diff(
            &base,
            &new,
            DiffStacksOptions::default().with_normalize(true),
        )
        .expect("diff");
        assert_eq!(d.lines(), ["a 2 5", "b 3 0"]);
        assert_eq!((d.base_total, d.new_total), (3, 5));
        assert_eq!(scaled(1, 1, 2), 1);
        assert_eq!(scaled(-1, 1, 2), -1);
        assert_eq!(scaled(7, 3, -2), -11);
        assert_eq!(scaled(i64::MAX, 4, 1), i64::MAX);
    }

    #[test]
    fn an_empty_base_is_not_scaled() {
        let base = folded(&[]);
        let new = folded(&[(&["a"], 5)]);
        let d = diff(
            &base,
            &new,
            DiffStacksOptions::default().with_normalize(true),
        )
        .expect("diff");
        assert!(!d.normalized);
        assert_eq!(rows(&d), [("a".to_owned(), 0, 5, Change::New)]);
    }

    #[test]
    fn different_sample_types_cannot_be_compared() {
        let p = ProfileBuilder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")])
            .stack(&["a"], &[10, 5])
            .build();
        let alloc =
            fold(&p, &FoldOptions::default().with_sample_type("alloc_space")).expect("fold");
        let inuse = fold(&p, &FoldOptions::default()).expect("fold");
        let err = diff(&alloc, &inuse, DiffStacksOptions::default()).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "cannot compare alloc_space with inuse_space: the profiles must have the same sample type"
        );

        let mut counted = inuse.clone();
        counted.unit = "count".into();
        assert_eq!(
            diff(&inuse, &counted, DiffStacksOptions::default()),
            Err(AnalysisError::SampleTypeMismatch {
                base: "inuse_space (bytes)".into(),
                new: "inuse_space (count)".into(),
            })
        );
    }

    #[test]
    fn lines_clean_names_like_folded_lines() {
        let base = folded(&[(&["a b", "x;y"], 1)]);
        let new = folded(&[(&["a b", "x;y"], 4)]);
        let d = diff(&base, &new, DiffStacksOptions::default()).expect("diff");
        assert_eq!(d.lines(), ["x:y;a_b 1 4"]);
    }
}
