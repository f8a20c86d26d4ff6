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

/// The flamegraph of one folded profile, as an interactive SVG (click to
/// zoom, Ctrl-F or `search(term)` to highlight, tooltips on hover).
pub fn flamegraph(folded: &Folded, o: &FlameOptions) -> Result<String, RenderError> {
    if folded.stacks.is_empty() {
        return Ok(empty_svg(&o.title, "no samples of this type"));
    }
    let opts = inferno_options(&o.clone().for_stacks(folded.stacks.len()), &folded.unit);
    run(opts, &folded.lines())
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
    let mut opts = inferno_options(&o.clone().for_stacks(diff.stacks.len()), &diff.unit);
    // inferno sizes frames by the second count and colors by second − first.
    // The base side swaps the counts and negates, so red still means "grew".
    let lines = match side {
        Side::New => diff.lines(),
        Side::Base => {
            opts.negate_differentials = true;
            diff.lines().iter().map(|l| swap_counts(l)).collect()
        }
    };
    // Stacks absent on the drawn side have width 0 and are skipped by inferno.
    run(opts, &lines)
}

/// `stack A B` → `stack B A`.
fn swap_counts(line: &str) -> String {
    let mut parts = line.rsplitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(b), Some(a), Some(stack)) => format!("{stack} {b} {a}"),
        _ => line.to_owned(),
    }
}
