//! The diff page, its flamegraphs and the self-contained report of
//! `leakscope diff -o`: two snapshots of the same kind, what grew ranked,
//! and both sides of the differential flamegraph.

use std::fmt::Write;

use axum::http::StatusCode;
use leakscope_agent::profile::Profile;

use super::DiffQuery;
use super::Source;
use super::pages::{PageError, load, nav, search_box, type_nav};
use crate::analysis::{AnalysisError, DiffOptions, rank_growth};
use crate::diff::{Change, DiffStacksOptions, diff as diff_stacks};
use crate::fold::{Folded, fold_pair};
use crate::render::html::{escape, page, url_encode};
use crate::render::table::{format_delta, format_percent, format_value};
use crate::render::{FlameOptions, Side, diff_flamegraph, flame_document};

/// Loads both sides and folds them for the same sample type.
fn load_pair(
    source: &dyn Source,
    q: &DiffQuery,
) -> Result<(Profile, Profile, Folded, Folded), PageError> {
    let base = load(source, &q.base)?;
    let new = load(source, &q.new)?;
    let (f_base, f_new) = fold_pair(&base, &new, q.kind.as_deref()).map_err(|e| match e {
        AnalysisError::BaseLacksSampleType { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Different kinds of profile".into(),
            format!("{}: {e}", q.base),
        ),
        e => (
            StatusCode::BAD_REQUEST,
            "Unknown sample type".into(),
            format!("{}: {e}", q.new),
        ),
    })?;
    Ok((base, new, f_base, f_new))
}

/// The ranked growth table, with new/vanished flags, of `base` → `new`.
fn ranked_table(
    base: &Profile,
    new: &Profile,
    f_base: &Folded,
    f_new: &Folded,
    normalize: bool,
) -> Result<String, PageError> {
    let unit = f_new.unit.clone();
    let growth = rank_growth(
        base,
        new,
        &DiffOptions::default()
            .with_sample_type(&f_new.sample_type)
            .with_normalize(normalize),
    )
    .map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Diff".into(),
            e.to_string(),
        )
    })?;
    // New and vanished stacks, by leaf function, for the flags.
    let d = diff_stacks(f_base, f_new, DiffStacksOptions::default()).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Diff".into(),
            e.to_string(),
        )
    })?;
    let mut new_leaves = std::collections::HashSet::new();
    let mut gone_leaves = std::collections::HashSet::new();
    for s in &d.stacks {
        if let Some(leaf) = s.frames.last() {
            match s.change {
                Change::New => {
                    new_leaves.insert(leaf.function.clone());
                }
                Change::Vanished => {
                    gone_leaves.insert(leaf.function.clone());
                }
                Change::Changed => {}
            }
        }
    }
    let mut body = String::from(
        "<table id=\"ranked\"><tr><th>#</th><th>function</th><th>file:line</th><th>change</th><th>%</th><th>base</th><th>new</th><th></th></tr>",
    );
    for (i, g) in growth.iter().take(40).enumerate() {
        let class = if g.delta() > 0 { "grew" } else { "shrank" };
        let mut flags = String::new();
        if g.base == 0 || new_leaves.contains(g.function.as_str()) {
            flags.push_str("<span class=\"flag\">new stack</span> ");
        }
        if g.new == 0 || gone_leaves.contains(g.function.as_str()) {
            flags.push_str("<span class=\"flag\">vanished stack</span>");
        }
        let at = if g.file.is_empty() {
            String::new()
        } else {
            format!("{}:{}", g.file, g.line)
        };
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td class=\"mono fn\">{}</td><td class=\"mono\">{}</td>\
             <td class=\"num {class}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{flags}</td></tr>",
            i + 1,
            escape(&g.function),
            escape(&at),
            format_delta(g.delta(), &unit),
            format_percent(g),
            format_value(g.base, &unit),
            format_value(g.new, &unit),
        );
    }
    if growth.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">Nothing changed.</td></tr>");
    }
    body.push_str("</table>");
    Ok(body)
}

/// `inuse_space 1.0 MiB → 26.5 MiB (+25.5 MiB)`.
fn totals_line(f_base: &Folded, f_new: &Folded) -> String {
    let (bt, nt) = (f_base.total(), f_new.total());
    format!(
        "{} {} → {} (<b class=\"{}\">{}</b>)",
        escape(&f_new.sample_type),
        format_value(bt, &f_new.unit),
        format_value(nt, &f_new.unit),
        if nt >= bt { "grew" } else { "shrank" },
        format_delta(nt - bt, &f_new.unit),
    )
}

const FLAME_NOTE: &str = "<h2>Differential flamegraphs</h2><p class=\"muted\">Red grew, blue shrank. \
    The first is sized by the new profile, the second by the base, so stacks that vanished show there.</p>";

pub(super) fn diff(prefix: &str, source: &dyn Source, q: &DiffQuery) -> Result<String, PageError> {
    let (base, new, f_base, f_new) = load_pair(source, q)?;
    let link = |normalize: bool, kind: &str| {
        format!(
            "{prefix}/diff?base={}&new={}&type={}{}",
            url_encode(&q.base),
            url_encode(&q.new),
            url_encode(kind),
            if normalize { "&normalize=1" } else { "" }
        )
    };
    let mut body = type_nav(
        &|t| link(q.normalize, t),
        &f_new.sample_types,
        &f_new.sample_type,
    );
    let _ = write!(
        body,
        "<p>base <a href=\"{prefix}/profile/{}\" class=\"mono\">{}</a> → new <a href=\"{prefix}/profile/{}\" class=\"mono\">{}</a>: \
         {}. <a id=\"toggle-normalize\" href=\"{}\">{}</a></p>",
        url_encode(&q.base),
        escape(&q.base),
        url_encode(&q.new),
        escape(&q.new),
        totals_line(&f_base, &f_new),
        escape(&link(!q.normalize, &f_new.sample_type)),
        if q.normalize {
            "normalized (base scaled to the new total): show absolute"
        } else {
            "absolute: show normalized"
        }
    );
    body.push_str("<h2>What grew</h2>");
    body.push_str(&ranked_table(&base, &new, &f_base, &f_new, q.normalize)?);
    body.push_str(FLAME_NOTE);
    body.push_str(search_box());
    let svg_src = |side: &str| {
        format!(
            "{prefix}/diff/flame.svg?base={}&new={}&type={}{}&side={side}",
            url_encode(&q.base),
            url_encode(&q.new),
            url_encode(&f_new.sample_type),
            if q.normalize { "&normalize=1" } else { "" }
        )
    };
    let _ = write!(
        body,
        "<h2>New</h2><iframe class=\"flame\" id=\"flame-new\" style=\"height:520px\" src=\"{}\"></iframe>\
         <h2>Base</h2><iframe class=\"flame\" id=\"flame-base\" style=\"height:520px\" src=\"{}\"></iframe>",
        escape(&svg_src("new")),
        escape(&svg_src("base"))
    );
    Ok(page("Diff", &nav(prefix), &body))
}

/// A self-contained HTML report of `base` → `new` (the `leakscope diff -o`
/// file): totals, the ranked table and both differential flamegraphs, each
/// in an `srcdoc` frame so their scripts (zoom, search) work offline.
pub fn diff_report(
    base: &Profile,
    new: &Profile,
    names: (&str, &str),
    kind: Option<&str>,
    normalize: bool,
) -> Result<String, String> {
    let (f_base, f_new) = fold_pair(base, new, kind).map_err(|e| match e {
        AnalysisError::BaseLacksSampleType { .. } => format!("{}: {e}", names.0),
        e => format!("{}: {e}", names.1),
    })?;
    let mut body = format!(
        "<p>base <span class=\"mono\">{}</span> → new <span class=\"mono\">{}</span>: {}{}</p>",
        escape(names.0),
        escape(names.1),
        totals_line(&f_base, &f_new),
        if normalize { " (normalized)" } else { "" }
    );
    body.push_str("<h2>What grew</h2>");
    body.push_str(&ranked_table(base, new, &f_base, &f_new, normalize).map_err(|e| e.2)?);
    body.push_str(FLAME_NOTE);
    body.push_str(search_box());
    let o = DiffStacksOptions::default().with_normalize(normalize);
    let d = diff_stacks(&f_base, &f_new, o).map_err(|e| e.to_string())?;
    for (side, label, id) in [
        (Side::New, "New", "flame-new"),
        (Side::Base, "Base", "flame-base"),
    ] {
        // The file names only: a title wider than its frame is cut.
        let short = |n: &'_ str| n.rsplit('/').next().unwrap_or(n).to_owned();
        let title = format!(
            "{} → {} ({}), sized by {}",
            short(names.0),
            short(names.1),
            d.sample_type,
            label.to_lowercase()
        );
        let svg =
            diff_flamegraph(&d, &FlameOptions::new(title), side).map_err(|e| e.to_string())?;
        let _ = write!(
            body,
            "<h2>{label}</h2><iframe class=\"flame\" id=\"{id}\" style=\"height:520px\" srcdoc=\"{}\"></iframe>",
            escape(&flame_document(&svg))
        );
    }
    Ok(page("leakscope diff", &[], &body))
}

pub(super) fn diff_svg(
    source: &dyn Source,
    q: &DiffQuery,
    side: Side,
) -> Result<String, PageError> {
    let (_, _, f_base, f_new) = load_pair(source, q)?;
    let o = DiffStacksOptions::default().with_normalize(q.normalize);
    let d = diff_stacks(&f_base, &f_new, o).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Diff".into(),
            e.to_string(),
        )
    })?;
    let title = match side {
        Side::New => format!("{} → {} ({}), sized by new", q.base, q.new, d.sample_type),
        Side::Base => format!("{} → {} ({}), sized by base", q.base, q.new, d.sample_type),
    };
    diff_flamegraph(&d, &FlameOptions::new(title), side).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Render".into(),
            e.to_string(),
        )
    })
}
