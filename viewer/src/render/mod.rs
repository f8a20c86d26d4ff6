//! Rendering, kept apart from analysis: flamegraph SVGs (inferno), the
//! terminal growth table, and HTML building blocks for the web pages.
//!
//! Output is deterministic for the same input (inferno's `deterministic`
//! and `hash` options: a frame's color depends on its name only), so it can
//! be compared with golden files.

pub mod html;
pub mod table;

use inferno::flamegraph::{self, Options, Palette, color::MultiPalette};

use crate::diff::Diff;
use crate::fold::Folded;

/// Settings of a flamegraph.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FlameOptions {
    /// Title at the top.
    pub title: String,
    /// Second line under the title.
    pub subtitle: Option<String>,
    /// Width in pixels; `None` fits the page (fluid).
    pub width: Option<usize>,
    /// Frames narrower than this many pixels are left out (their time stays
    /// in their parent): what keeps huge profiles light to draw.
    pub min_width: f64,
}

impl FlameOptions {
    /// Default [`FlameOptions::min_width`], inferno's.
    pub const DEFAULT_MIN_WIDTH: f64 = 0.1;
    /// Stack counts above which [`FlameOptions::for_stacks`] widens
    /// `min_width` so the browser draws a few thousand frames, not 100k.
    pub const BIG: usize = 20_000;

    /// Options with `title`.
    pub fn new(title: impl Into<String>) -> FlameOptions {
        FlameOptions {
            title: title.into(),
            subtitle: None,
            width: None,
            min_width: Self::DEFAULT_MIN_WIDTH,
        }
    }

    /// Sets the subtitle.
    #[must_use]
    pub fn subtitle(mut self, s: impl Into<String>) -> Self {
        self.subtitle = Some(s.into());
        self
    }

    /// Sets a fixed width.
    #[must_use]
    pub fn width(mut self, px: usize) -> Self {
        self.width = Some(px);
        self
    }

    /// Widens `min_width` for profiles of more than [`Self::BIG`] stacks.
    #[must_use]
    pub fn for_stacks(mut self, stacks: usize) -> Self {
        if stacks > Self::BIG {
            self.min_width = self.min_width.max(0.5);
        }
        self
    }
}

/// Rendering failed (inferno refused the input).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the flamegraph: {0}")]
pub struct RenderError(String);

/// Which side of a differential flamegraph to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Frame widths from the new profile: what grew is red, what shrank blue.
    New,
    /// Frame widths from the base: stacks that vanished are visible.
    Base,
}

fn inferno_options<'a>(o: &FlameOptions, unit: &str) -> Options<'a> {
    let mut opts = Options::default();
    opts.title = o.title.clone();
    opts.subtitle = o.subtitle.clone();
    opts.image_width = o.width;
    opts.min_width = o.min_width;
    opts.deterministic = true;
    opts.hash = true;
    opts.colors = Palette::Multi(MultiPalette::Rust);
    opts.count_name = match unit {
        "bytes" => "bytes".into(),
        "nanoseconds" => "ns".into(),
        "" | "count" => "samples".into(),
        other => other.to_owned(),
    };
    opts
}

/// A small SVG saying there is nothing to draw.
fn empty_svg(title: &str, why: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"80\">\
         <text x=\"400\" y=\"30\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"16\">{}</text>\
         <text x=\"400\" y=\"56\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"13\">{}</text></svg>",
        html::escape(title),
        html::escape(why)
    )
}

fn run(mut opts: Options<'_>, lines: &[String]) -> Result<String, RenderError> {
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
        .map_err(|e| RenderError(e.to_string()))?;
    String::from_utf8(out).map_err(|e| RenderError(e.to_string()))
}

/// One node of the call tree built to merge narrow frames.
struct Node {
    name: std::sync::Arc<str>,
    children: std::collections::HashMap<std::sync::Arc<str>, usize>,
    /// Values of all stacks through this node (first and second count).
    total: (i64, i64),
    /// Values of stacks ending here.
    own: (i64, i64),
}

/// Folded lines for inferno with every frame narrower than `min_width`
/// pixels (on both sides of a diff) merged into its parent: the parent
/// keeps the value, the narrow subtree is not drawn. This keeps
/// a 100k-stack profile to the few thousand frames one can see, and inferno
/// fast. `two` writes both counts (`stack A B`), else `stack B`.
fn merged_lines<'a>(
    stacks: impl Iterator<Item = (&'a [crate::fold::Frame], i64, i64)>,
    width_px: f64,
    min_width: f64,
    two: bool,
) -> Vec<String> {
    let mut nodes = vec![Node {
        name: "".into(),
        children: Default::default(),
        total: (0, 0),
        own: (0, 0),
    }];
    for (frames, a, b) in stacks {
        let mut at = 0;
        nodes[0].total.0 += a;
        nodes[0].total.1 += b;
        for f in frames {
            let next = match nodes[at].children.get(&f.function) {
                Some(&i) => i,
                None => {
                    nodes.push(Node {
                        name: f.function.clone(),
                        children: Default::default(),
                        total: (0, 0),
                        own: (0, 0),
                    });
                    let i = nodes.len() - 1;
                    nodes[at].children.insert(f.function.clone(), i);
                    i
                }
            };
            at = next;
            nodes[at].total.0 += a;
            nodes[at].total.1 += b;
        }
        nodes[at].own.0 += a;
        nodes[at].own.1 += b;
    }
    let root = nodes[0].total.0.abs().max(nodes[0].total.1.abs()) as f64;
    let threshold = root * min_width / width_px.max(1.0);
    let mut out = Vec::new();
    let line = |path: &str, (a, b): (i64, i64)| {
        if two {
            format!("{path} {a} {b}")
        } else {
            format!("{path} {b}")
        }
    };
    // Depth-first, children in name order (the output is deterministic).
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut top: Vec<&usize> = nodes[0].children.values().collect();
    top.sort_by(|x, y| nodes[**x].name.cmp(&nodes[**y].name));
    for &i in top.iter().rev() {
        let mut path = String::new();
        crate::fold::push_clean(&mut path, &nodes[*i].name);
        stack.push((*i, path));
    }
    let narrow = |n: &Node| (n.total.0.abs().max(n.total.1.abs()) as f64) < threshold;
    while let Some((i, path)) = stack.pop() {
        let n = &nodes[i];
        // Narrow children become part of this frame.
        let mut own = n.own;
        let mut kids: Vec<&usize> = Vec::new();
        for k in n.children.values() {
            if narrow(&nodes[*k]) {
                own.0 += nodes[*k].total.0;
                own.1 += nodes[*k].total.1;
            } else {
                kids.push(k);
            }
        }
        if own != (0, 0) {
            out.push(line(&path, own));
        }
        kids.sort_by(|x, y| nodes[**x].name.cmp(&nodes[**y].name));
        for &k in kids.iter().rev() {
            let mut p = path.clone();
            p.push(';');
            crate::fold::push_clean(&mut p, &nodes[*k].name);
            stack.push((*k, p));
        }
    }
    out
}

/// Width assumed for a fluid flamegraph when deciding what is too narrow.
const FLUID_WIDTH_PX: f64 = 1200.0;

/// The flamegraph of one folded profile, as an interactive SVG (click to
/// zoom, Ctrl-F or `search(term)` to highlight, tooltips on hover).
pub fn flamegraph(folded: &Folded, o: &FlameOptions) -> Result<String, RenderError> {
    if folded.stacks.is_empty() {
        return Ok(empty_svg(&o.title, "no samples of this type"));
    }
    let o = o.clone().for_stacks(folded.stacks.len());
    let width = o.width.map_or(FLUID_WIDTH_PX, |w| w as f64);
    let lines = merged_lines(
        folded.stacks.iter().map(|(f, v)| (f.as_slice(), 0, *v)),
        width,
        o.min_width,
        false,
    );
    run(inferno_options(&o, &folded.unit), &lines)
}

/// A differential flamegraph of `diff`: frames sized by `side`, colored by
/// the change (red grew, blue shrank; the deeper the color, the bigger).
pub fn diff_flamegraph(diff: &Diff, o: &FlameOptions, side: Side) -> Result<String, RenderError> {
    let drawn = diff.stacks.iter().any(|s| match side {
        Side::New => s.new != 0,
        Side::Base => s.base != 0,
    });
    if !drawn {
        return Ok(empty_svg(&o.title, "nothing on this side"));
    }
    let o = o.clone().for_stacks(diff.stacks.len());
    let width = o.width.map_or(FLUID_WIDTH_PX, |w| w as f64);
    let mut opts = inferno_options(&o, &diff.unit);
    // inferno sizes frames by the second count and colors by second − first.
    // The base side swaps the counts and negates, so red still means "grew".
    let swap = side == Side::Base;
    opts.negate_differentials = swap;
    let lines = merged_lines(
        diff.stacks.iter().map(|s| {
            let (a, b) = if swap {
                (s.new, s.base)
            } else {
                (s.base, s.new)
            };
            (s.frames.as_slice(), a, b)
        }),
        width,
        o.min_width,
        true,
    );
    // Stacks absent on the drawn side have width 0 and are skipped by inferno.
    run(opts, &lines)
}

/// A flamegraph SVG (of [`flamegraph()`] or [`diff_flamegraph`]) as an HTML
/// document of its own, for an `<iframe srcdoc>` (the offline report of
/// `leakscope diff -o`), drawn at the frame's full width.
///
/// inferno's fluid drawing removes the root `<svg>`'s width when it loads,
/// so that it fits its parent. As the root of an SVG document (served as
/// `image/svg+xml`) that is the frame's width; but a `srcdoc` is parsed as
/// HTML, where an inline `<svg>` without a width is 300 px wide (CSS's
/// default size of a replaced element): the flamegraph was a strip at the
/// left of its frame. The style here gives it the body's width, which the
/// script then reads to lay the frames out.
pub fn flame_document(svg: &str) -> String {
    // The XML declaration and DOCTYPE mean nothing in HTML: drop them.
    let svg = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{QUIET_HISTORY}<style>\
         html,body{{margin:0;padding:0;background:#fff}}body>svg{{display:block;width:100%}}\
         </style></head><body>{svg}</body></html>"
    )
}

/// inferno's zoom records the zoomed frame in the URL with
/// `history.replaceState`, which an `about:srcdoc` frame refuses with a
/// `SecurityError` (after the zoom itself has happened): a wrapper that
/// lets the refusal pass quietly.
const QUIET_HISTORY: &str = "<script>(function(){var h=window.history,r=h.replaceState;\
    h.replaceState=function(){try{return r.apply(h,arguments);}catch(e){}};})();</script>";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::Frame;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame {
                function: (*n).into(),
                file: "".into(),
                line: 0,
            })
            .collect()
    }

    #[test]
    fn narrow_frames_are_merged_into_their_parent_keeping_the_total() {
        // One wide stack and 1000 tiny ones under `main;many`.
        let wide = frames(&["main", "big"]);
        let tiny: Vec<Vec<Frame>> = (0..1000)
            .map(|i| frames(&["main", "many", &format!("f{i}")]))
            .collect();
        let mut input: Vec<(&[Frame], i64, i64)> = vec![(wide.as_slice(), 0, 1_000_000)];
        input.extend(tiny.iter().map(|f| (f.as_slice(), 0, 10)));
        // 1000 px wide, 1 px minimum: anything under 1,010 (0.1%) merges.
        let lines = merged_lines(input.iter().copied(), 1000.0, 1.0, false);
        assert_eq!(
            lines,
            vec!["main;big 1000000".to_owned(), "main;many 10000".to_owned()]
        );
        // Wide enough: every stack kept.
        let lines = merged_lines(input.iter().copied(), 1000.0, 0.001, false);
        assert_eq!(lines.len(), 1001);
        let sum: i64 = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(sum, 1_010_000);
    }

    #[test]
    fn a_diff_merges_only_what_is_narrow_on_both_sides() {
        let gone = frames(&["main", "gone"]);
        let grew = frames(&["main", "grew"]);
        let input = vec![
            (gone.as_slice(), 500_000, 0),
            (grew.as_slice(), 1, 1_000_000),
        ];
        let lines = merged_lines(input.into_iter(), 1000.0, 1.0, true);
        assert_eq!(
            lines,
            vec![
                "main;gone 500000 0".to_owned(),
                "main;grew 1 1000000".to_owned()
            ]
        );
    }
}
