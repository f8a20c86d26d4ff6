//! A [`TaskCensus`] as a pprof profile in the shape of Go's count profiles:
//! one sample type, `tasks/count` (or `goroutine/count`), period type the
//! same, period 1.

use std::collections::HashMap;

use super::ProfileName;
use super::census::{DumpedTask, TaskCensus, TaskDumpState};
use crate::collect::unix_nanos;
use crate::explain::frames::is_library_file;
use crate::profile::{Profile, ProfileMeta, PseudoFrame, SampleLabel, StackSample, build_profile};
use crate::symbolize::{Frame, ProcessMaps, Resolved, Symbolizer};

/// The leaf frame of a site's sample is named `tokio::spawn at` its site.
pub(super) const SPAWN_PREFIX: &str = "tokio::spawn at ";
/// Live tasks of sites beyond the registry's bound.
pub(super) const OTHER_SITES: &str = "<tokio tasks: other spawn sites (registry full)>";
/// Alive tasks no recorded site accounts for, with hooks installed.
pub(super) const NOT_RECORDED: &str = "<tokio tasks: spawn site not recorded>";

/// How the single frame of a tasks profile without spawn sites starts
/// (the rest says what to set): readers of the profile (the sidecar) look
/// for it.
pub const SITES_UNKNOWN: &str = "<tokio tasks: spawn sites unknown";

/// The single frame of a profile without spawn sites.
pub(super) fn unknown_sites_frame() -> &'static str {
    if cfg!(tokio_unstable) {
        "<tokio tasks: spawn sites unknown (call leakscope_agent::tasks::install_hooks on the runtime builder)>"
    } else {
        "<tokio tasks: spawn sites unknown (build with --cfg tokio_unstable and call leakscope_agent::tasks::install_hooks)>"
    }
}

/// The profile comment saying what to set to get spawn sites.
pub(super) fn setup_hint() -> &'static str {
    if cfg!(tokio_unstable) {
        "leakscope: spawn sites of tokio tasks are not recorded, so this profile only counts the \
         runtime's alive tasks. To see them by spawn site, build the runtime with \
         tokio::runtime::Builder and call leakscope_agent::tasks::install_hooks(&mut builder) \
         before build()."
    } else {
        "leakscope: spawn sites of tokio tasks are not recorded, so this profile only counts the \
         runtime's alive tasks. To see them by spawn site, compile with --cfg tokio_unstable \
         ([build] rustflags = [\"--cfg\", \"tokio_unstable\"] in .cargo/config.toml, or in \
         RUSTFLAGS), build the runtime with tokio::runtime::Builder and call \
         leakscope_agent::tasks::install_hooks(&mut builder) before build()."
    }
}

/// This crate's source directory as the compiler names it, so sites in it
/// (the agent's own tasks) can be labelled.
fn own_source_dir() -> Option<&'static str> {
    file!().strip_suffix("tasks/profile.rs")
}

/// Frames between a spawn site and the hook that saw it: the hook (this
/// crate's `tasks` module), tokio's spawn path, and the standard library's
/// closure calls. They are trimmed off the leaf end of spawner stacks, so
/// the first frame left is the code that called `tokio::spawn`.
fn spawn_machinery(f: &Frame) -> bool {
    let name = f.name.strip_prefix('<').unwrap_or(&f.name);
    const PREFIXES: [&str; 7] = [
        "tokio::",
        "core::",
        "alloc::",
        "std::",
        "leakscope_agent::tasks::hooks::",
        "leakscope_agent::tasks::registry::",
        "leakscope_agent::tasks::stack::",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name.contains(" as core::ops::function::")
}

impl TaskCensus {
    /// The profile: see the module documentation of
    /// [`tasks`](crate::tasks). Symbolizes (tens of ms); run it off async
    /// workers.
    pub fn profile(&self, name: ProfileName, symbolizer: &Symbolizer) -> Profile {
        let totals = self.totals();
        let dumped = totals.sites.iter().any(|s| !s.tasks.is_empty()) || !totals.unsited.is_empty();
        let stacks = totals.sites.iter().any(|s| !s.count.stack.is_empty());
        let maps = if dumped || stacks {
            ProcessMaps::current().unwrap_or_default()
        } else {
            ProcessMaps::default()
        };
        let parked = ParkedAt::resolve(
            totals
                .sites
                .iter()
                .flat_map(|s| s.tasks.iter().copied())
                .chain(totals.unsited.iter().copied()),
            &maps,
            symbolizer,
        );

        let own_dir = own_source_dir();
        let mut samples = Vec::new();
        for s in &totals.sites {
            let site = s.count.site;
            let spawn = PseudoFrame {
                name: format!("{SPAWN_PREFIX}{site}"),
                file: Some(site.file.to_owned()),
                line: site.line,
            };
            let stack: Vec<u64> = s.count.stack.iter().map(|a| a.saturating_sub(1)).collect();
            let mut labels = vec![
                SampleLabel::Str("spawned_at", site.to_string()),
                SampleLabel::Num(
                    "spawned",
                    i64::try_from(s.count.spawned).unwrap_or(i64::MAX),
                ),
            ];
            if own_dir.is_some_and(|d| site.file.starts_with(d)) {
                labels.push(SampleLabel::Str("owner", "leakscope".into()));
            }
            let rest = s.value - s.tasks.len() as u64;
            for (at, n) in parked.groups(&s.tasks, rest) {
                let mut labels = labels.clone();
                let mut pseudo = Vec::with_capacity(2);
                if let Some(f) = at {
                    labels.push(SampleLabel::Str("parked_at", describe(&f)));
                    pseudo.push(f);
                }
                pseudo.push(spawn.clone());
                samples.push(StackSample {
                    stack: stack.clone(),
                    values: vec![count(n)],
                    labels,
                    pseudo,
                });
            }
        }
        if totals.other > 0 {
            samples.push(named_sample(OTHER_SITES, totals.other));
        }
        for (at, n) in parked.groups(&totals.unsited, 0) {
            let mut sample = named_sample(NOT_RECORDED, n);
            if let Some(f) = at {
                sample
                    .labels
                    .push(SampleLabel::Str("parked_at", describe(&f)));
                sample.pseudo.insert(0, f);
            }
            samples.push(sample);
        }
        if totals.unknown > 0 || (!self.hooks && samples.is_empty()) {
            let frame = if self.hooks {
                NOT_RECORDED
            } else {
                unknown_sites_frame()
            };
            samples.push(named_sample(frame, totals.unknown));
        }

        let meta = ProfileMeta {
            sample_types: vec![(name.as_str(), "count")],
            period_type: (name.as_str(), "count"),
            period: 1,
            default_sample_type: None,
            time_nanos: unix_nanos(self.time),
            duration_nanos: 0,
        };
        let mut profile = build_profile(&meta, samples, &maps, symbolizer, Some(&spawn_machinery));
        for c in self.comments(&totals) {
            profile.add_comment(&c);
        }
        profile
    }

    fn comments(&self, totals: &super::census::Totals<'_>) -> Vec<String> {
        let alive = match self.alive {
            Some(n) => format!("the runtime asked has {n} alive tasks"),
            None => "no runtime was asked for its alive tasks".to_owned(),
        };
        if !self.hooks {
            return vec![setup_hint().to_owned(), format!("leakscope: {alive}")];
        }
        let mut out = vec![format!(
            "leakscope: live tokio tasks by spawn site, over every runtime built with \
             install_hooks (spawn sites with live tasks: {}); {alive}",
            totals.sites.len()
        )];
        if self.counts.full {
            out.push(format!(
                "leakscope: the spawn-site registry is full ({} sites): tasks of further sites \
                 are counted under {OTHER_SITES}",
                super::Registry::DEFAULT_MAX_SITES
            ));
        }
        if totals.unknown > 0 {
            out.push(format!(
                "leakscope: {} alive tasks have no recorded spawn site: spawned on a runtime \
                 without install_hooks, or in a LocalSet",
                totals.unknown
            ));
        }
        match &self.dump {
            TaskDumpState::NotTaken => {}
            TaskDumpState::Taken(tasks) => out.push(format!(
                "leakscope: task dump of {} tasks: each site's tasks split by the first frame \
                 of the program's own code where they are parked",
                tasks.len()
            )),
            TaskDumpState::Failed(why) => out.push(format!(
                "leakscope: no task dump, so no parked-at frames: {why}"
            )),
        }
        out
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn named_sample(name: &str, n: u64) -> StackSample {
    StackSample {
        stack: Vec::new(),
        values: vec![count(n)],
        labels: Vec::new(),
        pseudo: vec![PseudoFrame::named(name)],
    }
}

/// `function file:line`, or the function alone.
fn describe(f: &PseudoFrame) -> String {
    match &f.file {
        Some(file) => format!("{} {}:{}", f.name, file, f.line),
        None => f.name.clone(),
    }
}

/// Where each dumped task is parked.
#[derive(Default)]
struct ParkedAt {
    by_task: HashMap<u64, PseudoFrame>,
}

impl ParkedAt {
    /// Symbolizes the traces of `tasks` and finds each one's parked-at frame.
    fn resolve<'a>(
        tasks: impl Iterator<Item = &'a DumpedTask>,
        maps: &ProcessMaps,
        symbolizer: &Symbolizer,
    ) -> ParkedAt {
        let tasks: Vec<&DumpedTask> = tasks.collect();
        if tasks.is_empty() {
            return ParkedAt::default();
        }
        let mut addrs: Vec<u64> = tasks
            .iter()
            .flat_map(|t| t.traces.iter().flatten())
            .map(|a| a.saturating_sub(1))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let resolved = symbolizer.resolve(maps, &addrs);
        let mut by_task = HashMap::new();
        for t in tasks {
            if let Some(f) = parked_frame(t, &resolved) {
                by_task.insert(t.id, f);
            }
        }
        ParkedAt { by_task }
    }

    /// `tasks` grouped by parked-at frame, most first, plus `rest` tasks
    /// with none.
    fn groups(&self, tasks: &[&DumpedTask], rest: u64) -> Vec<(Option<PseudoFrame>, u64)> {
        let mut by: HashMap<Option<&PseudoFrame>, u64> = HashMap::new();
        for t in tasks {
            *by.entry(self.by_task.get(&t.id)).or_default() += 1;
        }
        if rest > 0 {
            *by.entry(None).or_default() += rest;
        }
        let mut out: Vec<(Option<PseudoFrame>, u64)> =
            by.into_iter().map(|(f, n)| (f.cloned(), n)).collect();
        out.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| {
                    a.0.as_ref()
                        .map(|f| &f.name)
                        .cmp(&b.0.as_ref().map(|f| &f.name))
                })
                .then_with(|| {
                    a.0.as_ref()
                        .map(|f| f.line)
                        .cmp(&b.0.as_ref().map(|f| f.line))
                })
        });
        out
    }
}

/// The first frame of the program's own code from the leaf of a task's
/// traces, else its innermost named frame.
fn parked_frame(task: &DumpedTask, resolved: &HashMap<u64, Resolved>) -> Option<PseudoFrame> {
    let frames = || {
        task.traces
            .iter()
            .flatten()
            .filter_map(|a| resolved.get(&a.saturating_sub(1)))
            .flat_map(|r| r.frames.iter())
    };
    let own = frames().find(|f| f.file.as_deref().is_some_and(|file| !is_library_file(file)));
    own.or_else(|| frames().next()).map(|f| PseudoFrame {
        name: f.name.to_string(),
        file: f.file.as_deref().map(str::to_owned),
        line: f.line,
    })
}
