//! [`TaskCensus`]: what the tasks profile is made of, read at one moment —
//! the runtime's alive-task count, the registry's counts by spawn site and,
//! with dumps, each task's trace. Plain data, so the profile and text
//! builders are tested without tokio's unstable API.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::registry::{Counts, Registry, SpawnSite};

/// Live tokio tasks at one moment. See the module documentation of
/// [`tasks`](crate::tasks).
#[derive(Debug, Clone)]
pub struct TaskCensus {
    pub(super) time: SystemTime,
    pub(super) alive: Option<u64>,
    pub(super) hooks: bool,
    pub(super) counts: Counts,
    pub(super) dump: TaskDumpState,
}

/// Whether a census has a task dump.
#[derive(Debug, Clone, Default)]
pub enum TaskDumpState {
    /// None was asked for (or none can be taken in this build).
    #[default]
    NotTaken,
    /// Every task of the runtime with its trace.
    Taken(Vec<DumpedTask>),
    /// The dump was asked for and failed; why.
    Failed(String),
}

/// One task of a task dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedTask {
    /// tokio's task id.
    pub id: u64,
    /// Where it was spawned, when the hooks recorded it.
    pub site: Option<SpawnSite>,
    /// Its traces (one per leaf future it waits on), each as return
    /// addresses, innermost first.
    pub traces: Vec<Vec<u64>>,
}

impl TaskCensus {
    /// Reads the process-wide registry now; `alive` is the runtime's
    /// `num_alive_tasks()`, if there is a runtime to ask.
    pub fn take(alive: Option<u64>) -> TaskCensus {
        let hooks = super::hooks_installed();
        let counts = if hooks {
            Registry::global().counts()
        } else {
            Counts::default()
        };
        TaskCensus::from_parts(alive, hooks, counts)
    }

    /// A census of given counts (`hooks`: whether spawn sites are being
    /// recorded at all).
    pub fn from_parts(alive: Option<u64>, hooks: bool, counts: Counts) -> TaskCensus {
        TaskCensus {
            time: SystemTime::now(),
            alive,
            hooks,
            counts,
            dump: TaskDumpState::NotTaken,
        }
    }

    /// Adds a task dump.
    #[must_use]
    pub fn with_dump(mut self, dump: TaskDumpState) -> TaskCensus {
        self.dump = dump;
        self
    }

    /// The runtime's alive-task count, if one was read.
    pub fn alive(&self) -> Option<u64> {
        self.alive
    }

    /// Whether spawn sites were being recorded.
    pub fn hooks(&self) -> bool {
        self.hooks
    }

    /// The registry's counts (empty without hooks).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The task dump, if any.
    pub fn dump(&self) -> &TaskDumpState {
        &self.dump
    }

    /// The tasks the profile counts: the sum of its sample values.
    pub fn total(&self) -> u64 {
        self.totals().total()
    }

    /// Per site (and for tasks of unknown site) what the profile counts,
    /// before splitting by parked-at frame.
    pub(super) fn totals(&self) -> Totals<'_> {
        let mut t = Totals::default();
        if !self.hooks {
            t.unknown = self.alive.unwrap_or(0);
            return t;
        }
        let mut dumped: BTreeMap<Option<SpawnSite>, Vec<&DumpedTask>> = BTreeMap::new();
        if let TaskDumpState::Taken(tasks) = &self.dump {
            for task in tasks {
                dumped.entry(task.site).or_default().push(task);
            }
        }
        for s in &self.counts.sites {
            let tasks = dumped.remove(&Some(s.site)).unwrap_or_default();
            // The dump and the counters are read at slightly different
            // moments; the larger of the two is what the profile shows.
            let value = s.live.max(tasks.len() as u64);
            if value > 0 {
                t.sites.push(SiteTotal {
                    count: s,
                    value,
                    tasks,
                });
            }
        }
        t.other = self.counts.other_live;
        // Dumped tasks whose site is not in the counts: spawned where the
        // hooks did not see them (another runtime, a LocalSet), or at a
        // site counted as other.
        t.unsited = dumped.into_values().flatten().collect();
        let counted =
            t.sites.iter().map(|s| s.value).sum::<u64>() + t.other + t.unsited.len() as u64;
        t.unknown = self.alive.unwrap_or(0).saturating_sub(counted);
        t
    }
}

/// What the profile counts, by site.
#[derive(Debug, Default)]
pub(super) struct Totals<'a> {
    /// Sites with live tasks, most first.
    pub(super) sites: Vec<SiteTotal<'a>>,
    /// Live tasks of sites beyond the registry's bound.
    pub(super) other: u64,
    /// Dumped tasks of no recorded site.
    pub(super) unsited: Vec<&'a DumpedTask>,
    /// Alive tasks of the runtime that no site accounts for (all of them
    /// without hooks).
    pub(super) unknown: u64,
}

impl Totals<'_> {
    pub(super) fn total(&self) -> u64 {
        self.sites.iter().map(|s| s.value).sum::<u64>()
            + self.other
            + self.unsited.len() as u64
            + self.unknown
    }
}

/// One site's share.
#[derive(Debug)]
pub(super) struct SiteTotal<'a> {
    pub(super) count: &'a super::registry::SiteCount,
    /// Live tasks shown for the site.
    pub(super) value: u64,
    /// Its tasks in the dump.
    pub(super) tasks: Vec<&'a DumpedTask>,
}
