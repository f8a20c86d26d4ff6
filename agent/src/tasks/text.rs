//! The text forms of the tasks profile: `debug=1` in the layout of Go's
//! count profiles (`goroutine profile: total N`, then `count @ addresses`
//! records with `#` frame lines, which pprof's legacy parser reads), and
//! `debug=2`, one block per sample and, with a task dump, per task.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::ProfileName;
use super::census::{TaskCensus, TaskDumpState};
use crate::profile::{Location, Profile, Sample};
use crate::symbolize::{ProcessMaps, Symbolizer};

/// Most task blocks in a `debug=2` answer; the rest are counted.
pub const MAX_TEXT_TASKS: usize = 10_000;

impl TaskCensus {
    /// Go's text forms: `debug` 1 is the count profile, 2 and above one block
    /// per spawn site (and per task with a dump). Symbolizes; run it off
    /// async workers.
    pub fn text(&self, name: ProfileName, debug: i64, symbolizer: &Symbolizer) -> String {
        let profile = self.profile(name, symbolizer);
        if debug >= 2 {
            blocks_text(self, &profile, symbolizer)
        } else {
            count_text(&profile, name)
        }
    }
}

/// Samples, most tasks first.
fn records(profile: &Profile) -> Vec<&Sample> {
    let mut r: Vec<&Sample> = profile.sample.iter().collect();
    r.sort_by_key(|s| std::cmp::Reverse(s.value.first().copied().unwrap_or(0)));
    r
}

fn locations(profile: &Profile) -> HashMap<u64, &Location> {
    profile.location.iter().map(|l| (l.id, l)).collect()
}

/// `(function, file, line)` of each line of a location, innermost first.
fn lines<'p>(profile: &'p Profile, loc: &Location) -> Vec<(&'p str, &'p str, i64)> {
    loc.line
        .iter()
        .filter_map(|ln| {
            let f = profile.function.iter().find(|f| f.id == ln.function_id)?;
            Some((profile.string(f.name), profile.string(f.filename), ln.line))
        })
        .collect()
}

/// String labels as Go prints them: `{"k":"v", "k2":"v2"}`, keys sorted.
fn go_labels(profile: &Profile, s: &Sample) -> Option<String> {
    let mut kv: Vec<String> = s
        .label
        .iter()
        .filter(|l| l.str != 0)
        .map(|l| format!("{:?}:{:?}", profile.string(l.key), profile.string(l.str)))
        .collect();
    if kv.is_empty() {
        return None;
    }
    kv.sort();
    Some(format!("{{{}}}", kv.join(", ")))
}

fn comments(profile: &Profile, out: &mut String) {
    for c in &profile.comment {
        let _ = writeln!(out, "# {}", profile.string(*c));
    }
}

/// `debug=1`: Go's count profile layout. Addresses on the `@` line are
/// return addresses (pprof's parser moves each back by one); frames with no
/// address (spawn sites, parked-at frames) show as `0x0` in the `#` lines.
/// pprof's parser wants at least one address per record: a record with
/// none (only such frames) gets `0x1`, which it reads as address 0.
pub(super) fn count_text(profile: &Profile, name: ProfileName) -> String {
    let locs = locations(profile);
    let total: i64 = profile
        .sample
        .iter()
        .map(|s| s.value.first().copied().unwrap_or(0))
        .sum();
    let mut out = format!("{} profile: total {total}\n", name.as_str());
    for s in records(profile) {
        let _ = write!(out, "{} @", s.value.first().copied().unwrap_or(0));
        let stack: Vec<&Location> = s
            .location_id
            .iter()
            .filter_map(|id| locs.get(id).copied())
            .collect();
        let mut addresses = stack.iter().filter(|l| l.address != 0).peekable();
        if addresses.peek().is_none() {
            out.push_str(" 0x1");
        }
        for l in addresses {
            let _ = write!(out, " {:#x}", l.address + 1);
        }
        out.push('\n');
        if let Some(labels) = go_labels(profile, s) {
            let _ = writeln!(out, "# labels: {labels}");
        }
        for l in &stack {
            for (func, file, line) in lines(profile, l) {
                let _ = write!(out, "#\t{:#x}\t{func}", l.address);
                if !file.is_empty() {
                    let _ = write!(out, "\t{file}:{line}");
                }
                out.push('\n');
            }
        }
        out.push('\n');
    }
    comments(profile, &mut out);
    out
}

/// `debug=2`: one block per sample, then, with a task dump, one per task.
fn blocks_text(census: &TaskCensus, profile: &Profile, symbolizer: &Symbolizer) -> String {
    let locs = locations(profile);
    let mut out = String::new();
    for s in records(profile) {
        let label = |key: &str| {
            s.label
                .iter()
                .find(|l| profile.string(l.key) == key)
                .map(|l| (profile.string(l.str), l.num))
        };
        let n = s.value.first().copied().unwrap_or(0);
        let _ = write!(out, "{n} tasks");
        let mut about = Vec::new();
        if let Some((at, _)) = label("spawned_at") {
            about.push(format!("spawned at {at}"));
        }
        if let Some((_, total)) = label("spawned") {
            about.push(format!("{total} spawned there in all"));
        }
        if let Some((at, _)) = label("parked_at") {
            about.push(format!("parked at {at}"));
        }
        if !about.is_empty() {
            let _ = write!(out, " [{}]", about.join(", "));
        }
        out.push_str(":\n");
        for id in &s.location_id {
            let Some(l) = locs.get(id) else { continue };
            for (func, file, line) in lines(profile, l) {
                let _ = writeln!(out, "{func}");
                if !file.is_empty() {
                    let _ = writeln!(out, "\t{file}:{line}");
                }
            }
        }
        out.push('\n');
    }
    if let TaskDumpState::Taken(tasks) = census.dump() {
        let maps = ProcessMaps::current().unwrap_or_default();
        let mut addrs: Vec<u64> = tasks
            .iter()
            .take(MAX_TEXT_TASKS)
            .flat_map(|t| t.traces.iter().flatten())
            .map(|a| a.saturating_sub(1))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let resolved = symbolizer.resolve(&maps, &addrs);
        for t in tasks.iter().take(MAX_TEXT_TASKS) {
            let _ = write!(out, "task {}", t.id);
            match t.site {
                Some(site) => {
                    let _ = writeln!(out, " [spawned at {site}]:");
                }
                None => out.push_str(" [spawn site not recorded]:\n"),
            }
            for (i, trace) in t.traces.iter().enumerate() {
                if i > 0 {
                    out.push_str("-- also waiting on --\n");
                }
                for a in trace {
                    let frames = resolved.get(&a.saturating_sub(1)).map(|r| &r.frames[..]);
                    match frames {
                        Some(frames) if !frames.is_empty() => {
                            for f in frames {
                                let _ = writeln!(out, "{}", f.name);
                                if let Some(file) = &f.file {
                                    let _ = writeln!(out, "\t{file}:{}", f.line);
                                }
                            }
                        }
                        _ => {
                            let _ = writeln!(out, "{a:#x}");
                        }
                    }
                }
            }
            out.push('\n');
        }
        if tasks.len() > MAX_TEXT_TASKS {
            let _ = writeln!(out, "... and {} more tasks\n", tasks.len() - MAX_TEXT_TASKS);
        }
    }
    comments(profile, &mut out);
    out
}
